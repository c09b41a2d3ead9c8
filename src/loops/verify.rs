//! The loop-IR verifier: checks every invariant listed in the [`loops`](super) module doc.
//!
//! The central check is the bounds proof: for each load and store, interval arithmetic of its
//! affine index over the static ranges of the enclosing loops (vector lanes included) must lie
//! within the buffer or local. Codegen emits no bounds checks, so JIT code is sound to call only
//! on a kernel this function accepted, with buffers of the declared lengths.
//!
//! What is not checked: that the kernel computes what its graph node means (that is what the
//! interpreter and the kernel tests are for), and that locals are written before they are read
//! (an unwritten local reads as 0.0 in both the interpreter and codegen).

use std::collections::HashMap;

use super::{Access, Affine, Expr, Kernel, LoopKind, LoopMode, Mem, Program, Stmt, UnOp, Var};
use crate::{Error, Result};

/// The largest local array (in f32) a kernel may declare: locals are registers.
pub const MAX_LOCAL_LEN: usize = 256;

#[derive(Clone, Copy)]
struct Bound {
    lo: i64,
    /// Inclusive.
    hi: i64,
    kind: LoopKind,
    mode: LoopMode,
}

struct Checker<'k> {
    k: &'k Kernel,
    bound: HashMap<Var, Bound>,
    /// Enclosing loops, outermost first.
    stack: Vec<Var>,
    seen: Vec<bool>,
}

/// Verifies one kernel; the error names the kernel and the offending access.
pub fn verify(k: &Kernel) -> Result<()> {
    let fail =
        |m: String| Error::Codegen(format!("loop IR of kernel '{}' is invalid: {m}", k.name));
    for b in &k.buffers {
        let len = b
            .len()
            .ok_or_else(|| fail(format!("buffer {} size overflows", b.name)))?;
        if len == 0 || len.checked_mul(4).is_none_or(|n| n > isize::MAX as usize) {
            return Err(fail(format!(
                "buffer {} has an invalid size of {len} elements",
                b.name
            )));
        }
    }
    for l in &k.locals {
        if l.len == 0 || l.len > MAX_LOCAL_LEN || (l.vector && l.len % 4 != 0) {
            return Err(fail(format!(
                "local {} has length {} (must be 1..={MAX_LOCAL_LEN}, a multiple of 4 if vector)",
                l.name, l.len
            )));
        }
    }
    let mut c = Checker {
        k,
        bound: HashMap::new(),
        stack: Vec::new(),
        seen: vec![false; k.vars.len()],
    };
    c.stmts(&k.body).map_err(fail)
}

/// Verifies every kernel of a program and that each kernel's buffers match the program's.
pub fn verify_program(p: &Program) -> Result<()> {
    for k in &p.kernels {
        verify(k)?;
        for b in &k.buffers {
            let Some((dims, _)) = p.buffers.get(&b.name) else {
                return Err(Error::Codegen(format!(
                    "kernel '{}' uses buffer {} that the program does not declare",
                    k.name, b.name
                )));
            };
            let want = b.len();
            let have = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if want != have {
                return Err(Error::Codegen(format!(
                    "kernel '{}' declares buffer {} with shape {:?}, the program with {:?}",
                    k.name, b.name, b.dims, dims
                )));
            }
        }
    }
    Ok(())
}

impl Checker<'_> {
    fn var_name(&self, v: Var) -> String {
        self.k
            .vars
            .get(v.0)
            .cloned()
            .unwrap_or_else(|| format!("v{}", v.0))
    }

    /// The vector loop variable enclosing the current point, if any.
    fn lane(&self) -> Option<Var> {
        self.stack.last().copied().filter(|v| {
            self.bound
                .get(v)
                .is_some_and(|b| b.mode == LoopMode::Vector)
        })
    }

    fn stmts(&mut self, body: &[Stmt]) -> Result<(), String> {
        for s in body {
            match s {
                Stmt::Loop(l) => {
                    let name = self.var_name(l.var);
                    let Some(seen) = self.seen.get_mut(l.var.0) else {
                        return Err(format!("loop variable v{} is not declared", l.var.0));
                    };
                    if *seen {
                        return Err(format!("loop variable {name} is bound twice"));
                    }
                    *seen = true;
                    if l.lo >= l.hi {
                        return Err(format!("loop {name} has empty range {}..{}", l.lo, l.hi));
                    }
                    if self.lane().is_some() {
                        return Err(format!("loop {name} is nested in a vector loop"));
                    }
                    if l.mode == LoopMode::Vector {
                        if l.kind != LoopKind::Spatial {
                            return Err(format!(
                                "reduction loop {name} is vectorised (no horizontal reduction)"
                            ));
                        }
                        let lanes = i128::from(l.hi) - i128::from(l.lo);
                        if lanes != super::VECTOR_WIDTH as i128 {
                            return Err(format!(
                                "vector loop {name} has {lanes} lanes, not {}",
                                super::VECTOR_WIDTH
                            ));
                        }
                    }
                    self.bound.insert(
                        l.var,
                        Bound {
                            lo: l.lo,
                            hi: l.hi - 1,
                            kind: l.kind,
                            mode: l.mode,
                        },
                    );
                    self.stack.push(l.var);
                    self.stmts(&l.body)?;
                    if l.mode == LoopMode::Vector {
                        self.vector_hazards(&l.body)?;
                    }
                    self.stack.pop();
                    self.bound.remove(&l.var);
                }
                Stmt::Store { dst, value } => {
                    self.expr(value)?;
                    self.access(dst, true)?;
                }
            }
        }
        Ok(())
    }

    fn expr(&self, e: &Expr) -> Result<(), String> {
        match e {
            Expr::Const(_) => Ok(()),
            Expr::Load(a) => self.access(a, false),
            Expr::Unary(op, a) => {
                if *op == UnOp::Exp && self.lane().is_some() {
                    return Err("exp appears in a vector loop (it is scalar only)".into());
                }
                self.expr(a)
            }
            Expr::Binary(_, a, b) => {
                self.expr(a)?;
                self.expr(b)
            }
            Expr::Fma(a, b, c) => {
                self.expr(a)?;
                self.expr(b)?;
                self.expr(c)
            }
        }
    }

    /// The inclusive range of an affine index over the bound loop ranges.
    fn range(&self, idx: &Affine) -> Result<(i128, i128), String> {
        let mut lo = i128::from(idx.offset);
        let mut hi = lo;
        for &(v, c) in &idx.terms {
            let b = self
                .bound
                .get(&v)
                .ok_or_else(|| format!("index uses {} outside its loop", self.var_name(v)))?;
            let (a, z) = (
                i128::from(c) * i128::from(b.lo),
                i128::from(c) * i128::from(b.hi),
            );
            let overflow = || "index arithmetic overflows".to_string();
            lo = lo.checked_add(a.min(z)).ok_or_else(overflow)?;
            hi = hi.checked_add(a.max(z)).ok_or_else(overflow)?;
        }
        Ok((lo, hi))
    }

    fn access(&self, a: &Access, store: bool) -> Result<(), String> {
        let what = if store { "store to" } else { "load from" };
        let lane = self.lane();
        let lane_coef = lane.map_or(0, |v| a.index.coef(v));
        let (lo, hi) = self.range(&a.index)?;
        match a.mem {
            Mem::Buf(b) => {
                let buf = self
                    .k
                    .buffers
                    .get(b.0)
                    .ok_or_else(|| format!("buffer #{} is not declared", b.0))?;
                let len = buf.len().unwrap_or(0);
                if lo < 0 || hi >= len as i128 {
                    return Err(format!(
                        "{what} {} is out of bounds: index ranges over {lo}..={hi}, length is {len}",
                        buf.name
                    ));
                }
                if lane.is_some() && !(lane_coef == 1 || (lane_coef == 0 && !store)) {
                    return Err(format!(
                        "{what} {} in a vector loop has lane stride {lane_coef} (must be 1{})",
                        buf.name,
                        if store { "" } else { " or 0" }
                    ));
                }
                if store {
                    if !buf.role.writable() {
                        return Err(format!("store to {} buffer {}", buf.role.name(), buf.name));
                    }
                    for &v in &self.stack {
                        let b = self.bound[&v];
                        if b.kind == LoopKind::Reduction {
                            return Err(format!(
                                "store to buffer {} inside reduction loop {}",
                                buf.name,
                                self.var_name(v)
                            ));
                        }
                        if a.index.coef(v) == 0 {
                            return Err(format!(
                                "store to {} does not depend on spatial loop {}",
                                buf.name,
                                self.var_name(v)
                            ));
                        }
                    }
                }
            }
            Mem::Local(l) => {
                let loc = self
                    .k
                    .locals
                    .get(l.0)
                    .ok_or_else(|| format!("local #{} is not declared", l.0))?;
                if lo < 0 || hi >= loc.len as i128 {
                    return Err(format!(
                        "{what} local {} is out of bounds: index ranges over {lo}..={hi}, length is {}",
                        loc.name, loc.len
                    ));
                }
                for &(v, _) in &a.index.terms {
                    if self.bound[&v].mode == LoopMode::Serial {
                        return Err(format!(
                            "local {} is indexed by serial loop {} (locals are registers)",
                            loc.name,
                            self.var_name(v)
                        ));
                    }
                }
                if loc.vector {
                    let Some(lv) = lane else {
                        return Err(format!(
                            "vector local {} accessed outside a vector loop",
                            loc.name
                        ));
                    };
                    let base = i128::from(a.index.offset)
                        + i128::from(self.bound[&lv].lo) * i128::from(lane_coef);
                    let aligned =
                        base % 4 == 0 && a.index.terms.iter().all(|&(v, c)| v == lv || c % 4 == 0);
                    if lane_coef != 1 || !aligned {
                        return Err(format!(
                            "vector local {} needs lane stride 1 and a base that is a multiple of 4",
                            loc.name
                        ));
                    }
                } else if lane_coef != 0 {
                    return Err(format!(
                        "scalar local {} is indexed by a vector lane",
                        loc.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// Invariant 3: inside a vector body, a stored location is stored at one index and read only
    /// there, so per-lane and all-lanes execution agree.
    fn vector_hazards(&self, body: &[Stmt]) -> Result<(), String> {
        let mut stores: Vec<&Access> = Vec::new();
        let mut loads: Vec<&Access> = Vec::new();
        fn collect<'a>(e: &'a Expr, out: &mut Vec<&'a Access>) {
            match e {
                Expr::Const(_) => {}
                Expr::Load(a) => out.push(a),
                Expr::Unary(_, a) => collect(a, out),
                Expr::Binary(_, a, b) => {
                    collect(a, out);
                    collect(b, out);
                }
                Expr::Fma(a, b, c) => {
                    collect(a, out);
                    collect(b, out);
                    collect(c, out);
                }
            }
        }
        for s in body {
            if let Stmt::Store { dst, value } = s {
                collect(value, &mut loads);
                stores.push(dst);
            }
        }
        for s in &stores {
            for t in stores.iter().chain(loads.iter()) {
                if t.mem == s.mem && t.index != s.index {
                    let name = match s.mem {
                        Mem::Buf(b) => self.k.buffers[b.0].name.clone(),
                        Mem::Local(l) => self.k.locals[l.0].name.clone(),
                    };
                    return Err(format!(
                        "{name} is stored in a vector loop and accessed there at another index"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loops::{BufId, Loop, Role};

    /// `for i in 0..n (kind, mode) { out[i*stride + off] = x[i] }` over buffers of length 8.
    fn copy_kernel(n: i64, stride: i64, off: i64, kind: LoopKind, mode: LoopMode) -> Kernel {
        let mut k = Kernel::new("copy", "test");
        let x = k.add_buffer("x", vec![8], Role::Input);
        let out = k.add_buffer("out", vec![8], Role::Output);
        let i = k.new_var("i");
        k.body = vec![Stmt::Loop(Loop {
            var: i,
            lo: 0,
            hi: n,
            kind,
            mode,
            body: vec![Stmt::Store {
                dst: Access {
                    mem: Mem::Buf(out),
                    index: Affine::var(i) * stride + off,
                },
                value: Expr::load(Mem::Buf(x), Affine::var(i)),
            }],
        })];
        k
    }

    fn rejects(k: &Kernel, needle: &str) {
        match verify(k) {
            Ok(()) => panic!("verifier accepted:\n{k}"),
            Err(e) => assert!(e.to_string().contains(needle), "unexpected error: {e}"),
        }
    }

    #[test]
    fn accepts_in_bounds_copy() {
        verify(&copy_kernel(8, 1, 0, LoopKind::Spatial, LoopMode::Serial)).expect("in bounds");
        verify(&copy_kernel(4, 1, 4, LoopKind::Spatial, LoopMode::Vector)).expect("in bounds");
    }

    #[test]
    fn rejects_out_of_bounds() {
        // One past the end: out[i + 1] for i in 0..8.
        rejects(
            &copy_kernel(8, 1, 1, LoopKind::Spatial, LoopMode::Serial),
            "out of bounds",
        );
        // Negative index.
        rejects(
            &copy_kernel(4, 1, -1, LoopKind::Spatial, LoopMode::Unroll),
            "out of bounds",
        );
        // The load x[i] for i in 0..9 overruns x.
        rejects(
            &copy_kernel(9, 0, 0, LoopKind::Spatial, LoopMode::Serial),
            "out of bounds",
        );
        // Vector lanes count: out[i + 5] for lanes 0..4 touches 8.
        rejects(
            &copy_kernel(4, 1, 5, LoopKind::Spatial, LoopMode::Vector),
            "out of bounds",
        );
    }

    #[test]
    fn rejects_illegal_loops() {
        rejects(
            &copy_kernel(4, 1, 0, LoopKind::Reduction, LoopMode::Vector),
            "vectorised",
        );
        rejects(
            &copy_kernel(8, 1, 0, LoopKind::Spatial, LoopMode::Vector),
            "lanes",
        );
        rejects(
            &copy_kernel(4, 2, 0, LoopKind::Spatial, LoopMode::Vector),
            "lane stride",
        );
        rejects(
            &copy_kernel(4, 1, 0, LoopKind::Reduction, LoopMode::Serial),
            "reduction loop",
        );
        rejects(
            &copy_kernel(0, 1, 0, LoopKind::Spatial, LoopMode::Serial),
            "empty range",
        );
    }

    #[test]
    fn rejects_writes_to_inputs_and_vector_hazards() {
        let mut k = copy_kernel(4, 1, 0, LoopKind::Spatial, LoopMode::Vector);
        k.buffers[1].role = Role::Const;
        rejects(&k, "store to const buffer");
        // out[l] = out[l + 1] in a vector loop: lane order would matter.
        let mut k = copy_kernel(4, 1, 0, LoopKind::Spatial, LoopMode::Vector);
        let Stmt::Loop(l) = &mut k.body[0] else {
            unreachable!()
        };
        let i = l.var;
        l.body = vec![Stmt::Store {
            dst: Access {
                mem: Mem::Buf(BufId(1)),
                index: Affine::var(i),
            },
            value: Expr::load(Mem::Buf(BufId(1)), Affine::var(i) + 1),
        }];
        rejects(&k, "another index");
    }

    #[test]
    fn rejects_locals_indexed_by_serial_loops() {
        let mut k = copy_kernel(4, 1, 0, LoopKind::Spatial, LoopMode::Serial);
        let acc = k.add_local("acc", 4, false);
        let Stmt::Loop(l) = &mut k.body[0] else {
            unreachable!()
        };
        let i = l.var;
        l.body.push(Stmt::Store {
            dst: Access {
                mem: Mem::Local(acc),
                index: Affine::var(i),
            },
            value: Expr::Const(1.0),
        });
        rejects(&k, "serial loop");
    }
}
