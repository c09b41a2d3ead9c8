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

use super::{
    Access, Affine, Expr, Kernel, LoopKind, LoopMode, MAX_KERNEL_BUFFERS, Mem, Program, Stmt, UnOp,
    Var, micro,
};
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
    if k.buffers.len() > MAX_KERNEL_BUFFERS {
        return Err(fail(format!(
            "{} buffers (at most {MAX_KERNEL_BUFFERS})",
            k.buffers.len()
        )));
    }
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
    let mut c = Checker::new(k);
    c.stmts(&k.body).map_err(fail)?;
    for s in &k.body {
        let top_ok =
            matches!(s, Stmt::Loop(l) if l.kind == LoopKind::Spatial && l.mode == LoopMode::Serial);
        if !top_ok {
            return Err(fail(
                "the top level must be spatial serial loops (the kernel's work items)".into(),
            ));
        }
    }
    work_items(k).ok_or_else(|| fail("the number of work items overflows".into()))?;
    Ok(())
}

/// The number of work items of a kernel: the iterations of its top-level loops, numbered in
/// order (the first loop's iterations first). A call may run any sub-range of them.
pub fn work_items(k: &Kernel) -> Option<i64> {
    k.body.iter().try_fold(0i64, |acc, s| match s {
        Stmt::Loop(l) => acc.checked_add(l.hi.checked_sub(l.lo)?),
        Stmt::Store { .. } | Stmt::Micro(_) => Some(acc),
    })
}

/// Whether distinct work items of a verified kernel touch disjoint elements of every writable
/// buffer, so that calls running disjoint item ranges may run concurrently on the same buffers.
///
/// The proof, per writable buffer, by either of two rules (`false` only means "not proven": run
/// such a kernel on one thread):
/// - **Intervals.** Inside each top-level loop `t`, every access (load or store) has the same
///   coefficient `c != 0` on `t`, and the rest of its index (over the inner loops) spans fewer
///   than `|c|` elements, so iteration `t` stays inside `c*t + [rmin, rmax]`, and those windows
///   are disjoint; and the whole ranges accessed by different top-level loops are disjoint.
/// - **Columns of a period.** For some period `S`, write every index as `S*q + rho` by dropping
///   the terms whose coefficient is a multiple of `S` (and a micro-kernel operand's rows when
///   their stride is). If, inside each top-level loop `t` (coefficient `c > 0`), `rho` stays in
///   `c*t + [rmin, rmax]` with `rmax - rmin < c`, and every such window lies in `0..S`, then
///   `rho` is the index's remainder mod `S`, so distinct iterations touch distinct remainders:
///   disjoint elements. Different top-level loops need disjoint windows too. This is the shape
///   of a kernel whose work items are channel blocks of an NHWC tensor (`S` = its channels).
pub fn parallel_safe(k: &Kernel) -> bool {
    if verify(k).is_err() {
        return false;
    }
    (0..k.buffers.len())
        .filter(|&b| k.buffers[b].role.writable())
        .all(|b| {
            let mem = Mem::Buf(super::BufId(b));
            disjoint_windows(k, mem, None)
                || periods(k, mem)
                    .into_iter()
                    .any(|s| disjoint_windows(k, mem, Some(s)))
        })
}

/// The hull `(lowest, highest)` of the elements of buffer `buf` that work items `items` of a
/// verified kernel access (loads and stores; items are numbered as in [`work_items`]). `None`
/// when the range is empty or past the last item, or the items do not access `buf`.
pub fn item_hull(k: &Kernel, buf: usize, items: std::ops::Range<i64>) -> Option<(i128, i128)> {
    if items.start < 0 || items.start >= items.end {
        return None;
    }
    let mem = Mem::Buf(super::BufId(buf));
    let mut hull: Option<(i128, i128)> = None;
    let mut first = 0i64;
    for s in &k.body {
        let Stmt::Loop(l) = s else { continue };
        let n = l.hi.checked_sub(l.lo)?;
        let (from, to) = (items.start.max(first), items.end.min(first.checked_add(n)?));
        if from < to {
            let mut c = Checker::new(k);
            c.bound.insert(
                l.var,
                Bound {
                    lo: l.lo.checked_add(from - first)?,
                    hi: l.lo.checked_add(to - first - 1)?,
                    kind: l.kind,
                    mode: l.mode,
                },
            );
            for r in c.access_ranges(&l.body, mem, None)? {
                hull = Some(hull.map_or(r, |h| (h.0.min(r.0), h.1.max(r.1))));
            }
        }
        first += n;
    }
    if items.end > first {
        return None;
    }
    hull
}

/// How the work items of one top-level loop access a buffer: item `first + j` (iteration
/// `lo + j`) only within `coef * (lo + j) + [rmin, rmax]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoopWindow {
    pub first: i64,
    pub items: i64,
    pub lo: i64,
    pub coef: i64,
    pub rmin: i128,
    pub rmax: i128,
}

/// [`item_hull`] in closed form, for a kernel whose every access to `buf` has one positive
/// coefficient on its top-level loop's variable (per loop): one [`LoopWindow`] per loop that
/// accesses `buf`. `None` for other kernels (callers fall back to [`item_hull`]). Computing a
/// hull from these is a few multiplications instead of a walk of the kernel.
pub fn loop_windows(k: &Kernel, buf: usize) -> Option<Vec<LoopWindow>> {
    let mem = Mem::Buf(super::BufId(buf));
    let mut out = Vec::new();
    let mut first = 0i64;
    for s in &k.body {
        let Stmt::Loop(l) = s else { return None };
        let n = l.hi.checked_sub(l.lo)?;
        let mut accesses = Vec::new();
        collect_accesses(&l.body, mem, &mut accesses);
        if let Some(a0) = accesses.first() {
            let coef = a0.coef(l.var);
            if coef <= 0 || accesses.iter().any(|a| a.coef(l.var) != coef) {
                return None;
            }
            let mut c = Checker::new(k);
            let ranges = c.access_ranges(&l.body, mem, None)?;
            out.push(LoopWindow {
                first,
                items: n,
                lo: l.lo,
                coef,
                rmin: ranges.iter().map(|r| r.0).min()?,
                rmax: ranges.iter().map(|r| r.1).max()?,
            });
        }
        first = first.checked_add(n)?;
    }
    Some(out)
}

/// The hull of the elements items `items` access, from [`loop_windows`] (as [`item_hull`]).
pub fn windows_hull(windows: &[LoopWindow], items: std::ops::Range<i64>) -> Option<(i128, i128)> {
    let mut hull: Option<(i128, i128)> = None;
    for w in windows {
        let (from, to) = (items.start.max(w.first), items.end.min(w.first + w.items));
        if from < to {
            let at = |t: i64| i128::from(w.coef) * i128::from(w.lo + t - w.first);
            let h = (at(from) + w.rmin, at(to - 1) + w.rmax);
            hull = Some(hull.map_or(h, |g| (g.0.min(h.0), g.1.max(h.1))));
        }
    }
    hull
}

/// Whether the work items of a verified kernel (the result means nothing for another) access
/// buffer `buf` in ascending, disjoint
/// windows: inside each top-level loop, item `t` only within `c*t + [rmin, rmax]` with `c > 0`
/// and `rmax - rmin < c`, and each loop's items below the next loop's. Then, once items `0..a`
/// ran, no later item touches an element below item `a`'s window: what the band schedule
/// (`runtime::bands`) relies on to run a consumer while its producer is still running.
pub fn ascending_windows(k: &Kernel, buf: usize) -> bool {
    let mem = Mem::Buf(super::BufId(buf));
    if !disjoint_windows(k, mem, None) {
        return false;
    }
    let mut first = 0i64;
    let mut below: Option<i128> = None;
    for s in &k.body {
        let Stmt::Loop(l) = s else { return false };
        let mut accesses = Vec::new();
        collect_accesses(&l.body, mem, &mut accesses);
        let n = l.hi - l.lo;
        if accesses.is_empty() || accesses.iter().any(|a| a.coef(l.var) <= 0) {
            return false;
        }
        let Some(h) = item_hull(k, buf, first..first + n) else {
            return false;
        };
        if below.is_some_and(|b| h.0 <= b) {
            return false;
        }
        below = Some(h.1);
        first += n;
    }
    below.is_some()
}

/// The windows rule of [`parallel_safe`] for one buffer: plain intervals with `period: None`,
/// remainders mod `S` with `Some(S)`.
fn disjoint_windows(k: &Kernel, mem: Mem, period: Option<i128>) -> bool {
    let mut hulls: Vec<(i128, i128)> = Vec::new();
    for s in &k.body {
        let Stmt::Loop(l) = s else { continue };
        let mut accesses = Vec::new();
        collect_accesses(&l.body, mem, &mut accesses);
        if accesses.is_empty() {
            continue;
        }
        let mut c = Checker::new(k);
        let Some(ranges) = c.access_ranges(&l.body, mem, period) else {
            return false;
        };
        let coef = accesses[0].coef(l.var);
        if coef == 0 || accesses.iter().any(|a| a.coef(l.var) != coef) {
            return false;
        }
        // Ranges of the index without the `t` term (the loop var is unbound in `ranges`).
        let rmin = ranges.iter().map(|r| r.0).min().unwrap_or(0);
        let rmax = ranges.iter().map(|r| r.1).max().unwrap_or(0);
        if rmax - rmin >= i128::from(coef).abs() {
            return false;
        }
        let (a, z) = (
            i128::from(coef) * i128::from(l.lo),
            i128::from(coef) * (i128::from(l.hi) - 1),
        );
        let hull = (a.min(z) + rmin, a.max(z) + rmax);
        if let Some(s) = period
            && (coef < 0 || hull.0 < 0 || hull.1 >= s)
        {
            return false;
        }
        hulls.push(hull);
    }
    hulls.sort();
    !hulls.windows(2).any(|w| w[1].0 <= w[0].1)
}

/// Candidate periods for the columns rule: the coefficients of the accesses to `mem` and the
/// row strides of micro-kernel operands in it.
fn periods(k: &Kernel, mem: Mem) -> Vec<i128> {
    let mut accesses = Vec::new();
    collect_accesses(&k.body, mem, &mut accesses);
    let mut out: Vec<i128> = accesses
        .iter()
        .flat_map(|a| a.terms.iter().map(|&(_, c)| i128::from(c).abs()))
        .collect();
    micro_strides(&k.body, mem, &mut out);
    out.retain(|&s| s > 1);
    out.sort_unstable();
    out.dedup();
    out
}

fn micro_strides(body: &[Stmt], mem: Mem, out: &mut Vec<i128>) {
    for s in body {
        match s {
            Stmt::Loop(l) => micro_strides(&l.body, mem, out),
            Stmt::Micro(m) => {
                for (slot, o) in &m.operands {
                    if Mem::Buf(o.buf) == mem
                        && let Some((_, stride, _)) = m.op.footprint_rows(*slot)
                    {
                        out.push(stride as i128);
                    }
                }
            }
            Stmt::Store { .. } => {}
        }
    }
}

fn collect_accesses(body: &[Stmt], mem: Mem, out: &mut Vec<Affine>) {
    fn expr(e: &Expr, mem: Mem, out: &mut Vec<Affine>) {
        match e {
            Expr::Const(_) => {}
            Expr::Load(a) => {
                if a.mem == mem {
                    out.push(a.index.clone());
                }
            }
            Expr::Unary(_, a) => expr(a, mem, out),
            Expr::Binary(_, a, b) => {
                expr(a, mem, out);
                expr(b, mem, out);
            }
            Expr::Fma(a, b, c) => {
                expr(a, mem, out);
                expr(b, mem, out);
                expr(c, mem, out);
            }
        }
    }
    for s in body {
        match s {
            Stmt::Loop(l) => collect_accesses(&l.body, mem, out),
            Stmt::Micro(m) => {
                collect_accesses(&m.body, mem, out);
                for (slot, o) in &m.operands {
                    if Mem::Buf(o.buf) == mem
                        && let Some((lo, hi, _)) = m.op.footprint(*slot)
                    {
                        out.push(o.base.clone() + lo as i64);
                        out.push(o.base.clone() + hi as i64);
                    }
                }
            }
            Stmt::Store { dst, value } => {
                expr(value, mem, out);
                if dst.mem == mem {
                    out.push(dst.index.clone());
                }
            }
        }
    }
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
            let have = crate::tensor::checked_product(dims);
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

impl<'k> Checker<'k> {
    /// A checker with no loop bound yet.
    fn new(k: &'k Kernel) -> Checker<'k> {
        Checker {
            k,
            bound: HashMap::new(),
            stack: Vec::new(),
            seen: vec![false; k.vars.len()],
        }
    }

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
                Stmt::Micro(m) => {
                    self.micro(m)?;
                    self.stmts(&m.body)?;
                }
            }
        }
        Ok(())
    }

    /// A micro-kernel: valid parameters, not in a vector loop or a reduction loop, and each
    /// operand's footprint (first and last element, by [`micro::Op::footprint`]) in bounds, with
    /// the output written as any store is.
    fn micro(&self, m: &micro::Micro) -> Result<(), String> {
        m.op.check()?;
        if self.lane().is_some() {
            return Err("micro-kernel inside a vector loop".into());
        }
        for slot in micro::Slot::ALL {
            let (fp, op) = (m.op.footprint(slot), m.operand(slot));
            let (Some((lo, hi, write)), Some(o)) = (fp, op) else {
                if fp.is_some() != op.is_some() {
                    return Err(format!("micro-kernel operand {} mismatch", slot.name()));
                }
                continue;
            };
            let at = |off: usize| -> Result<Access, String> {
                let off = i64::try_from(off).map_err(|_| "micro footprint overflows")?;
                Ok(Access {
                    mem: Mem::Buf(o.buf),
                    index: o.base.clone() + off,
                })
            };
            self.access(&at(lo)?, write)?;
            self.access(&at(hi)?, write)?;
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

    /// The index ranges of every access to `mem` in `body`, with the enclosing top-level loop
    /// variable left out (its term dropped): `None` if some range cannot be computed.
    /// The index range of each access to `mem` in `body`, over the loops bound inside it. With
    /// a period `S`, terms whose coefficient is a multiple of `S` are dropped too (the range
    /// of the remainder part, see [`parallel_safe`]), and so are a micro-kernel operand's rows
    /// when their stride is one.
    fn access_ranges(
        &mut self,
        body: &[Stmt],
        mem: Mem,
        period: Option<i128>,
    ) -> Option<Vec<(i128, i128)>> {
        let mut out = Vec::new();
        for s in body {
            match s {
                Stmt::Loop(l) => {
                    self.bound.insert(
                        l.var,
                        Bound {
                            lo: l.lo,
                            hi: l.hi - 1,
                            kind: l.kind,
                            mode: l.mode,
                        },
                    );
                    out.extend(self.access_ranges(&l.body, mem, period)?);
                    self.bound.remove(&l.var);
                }
                Stmt::Micro(m) => {
                    out.extend(self.access_ranges(&m.body, mem, period)?);
                    for (slot, o) in &m.operands {
                        if Mem::Buf(o.buf) == mem
                            && let Some((lo, hi, _)) = m.op.footprint(*slot)
                        {
                            let base = self.range(&self.inner_terms(&o.base, period)).ok()?;
                            // Whole rows of a period-multiple stride only shift by periods.
                            let span = match (period, m.op.footprint_rows(*slot)) {
                                (Some(s), Some((_, stride, width)))
                                    if (stride as i128) % s == 0 =>
                                {
                                    (0, width as i128 - 1)
                                }
                                _ => (lo as i128, hi as i128),
                            };
                            out.push((base.0 + span.0, base.1 + span.1));
                        }
                    }
                }
                Stmt::Store { dst, value } => {
                    let mut idx = Vec::new();
                    collect_accesses(
                        &[Stmt::Store {
                            dst: dst.clone(),
                            value: value.clone(),
                        }],
                        mem,
                        &mut idx,
                    );
                    for a in idx {
                        // Drop the terms of unbound (outer) variables: the caller accounts for them.
                        out.push(self.range(&self.inner_terms(&a, period)).ok()?);
                    }
                }
            }
        }
        Some(out)
    }

    /// `a` without the terms of unbound (outer) variables, nor (with a period) those whose
    /// coefficient is a multiple of the period, and then with its offset reduced mod the period.
    fn inner_terms(&self, a: &Affine, period: Option<i128>) -> Affine {
        Affine {
            terms: a
                .terms
                .iter()
                .copied()
                .filter(|(v, _)| self.bound.contains_key(v))
                .filter(|&(_, c)| period.is_none_or(|s| i128::from(c) % s != 0))
                .collect(),
            // `s` is a coefficient of the kernel (an i64), so the remainder fits an i64.
            offset: period.map_or(a.offset, |s| {
                i64::try_from(i128::from(a.offset).rem_euclid(s)).unwrap_or(i64::MAX)
            }),
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
                        // A one-iteration loop has no other iteration to collide with.
                        if a.index.coef(v) == 0 && b.hi > b.lo {
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
    use crate::loops::{BufId, Loop, Role, Var};

    /// `for i in 0..n (kind, mode) { out[i*stride + off] = x[i] }` over buffers of length 8.
    fn copy_kernel(n: i64, stride: i64, off: i64, kind: LoopKind, mode: LoopMode) -> Kernel {
        let mut k = Kernel::new("copy", None);
        let x = k.add_buffer("x", vec![8], Role::Input);
        let out = k.add_buffer("out", vec![8], Role::Output);
        let o = k.new_var("o");
        let i = k.new_var("i");
        let inner = Stmt::Loop(Loop {
            var: i,
            lo: 0,
            hi: n,
            kind,
            mode,
            body: vec![Stmt::Store {
                dst: Access {
                    mem: Mem::Buf(out),
                    index: Affine::var(i) * stride + off + Affine::var(o) * 8,
                },
                value: Expr::load(Mem::Buf(x), Affine::var(i)),
            }],
        });
        // The top level is a one-item spatial loop, as the verifier requires.
        k.body = vec![Stmt::Loop(Loop {
            var: o,
            lo: 0,
            hi: 1,
            kind: LoopKind::Spatial,
            mode: LoopMode::Serial,
            body: vec![inner],
        })];
        k
    }

    /// The `i` loop of a `copy_kernel`.
    fn inner_loop(k: &mut Kernel) -> &mut Loop {
        let Stmt::Loop(o) = &mut k.body[0] else {
            unreachable!("copy_kernel starts with a loop")
        };
        let Stmt::Loop(l) = &mut o.body[0] else {
            unreachable!("copy_kernel nests a loop")
        };
        l
    }

    /// Top-level loops `for v in lo..hi { out[v] = x[v] }`, one per range.
    fn top_loops(ranges: &[(i64, i64)]) -> Kernel {
        let mut k = Kernel::new("top", None);
        let x = k.add_buffer("x", vec![8], Role::Input);
        let out = k.add_buffer("out", vec![8], Role::Output);
        for &(lo, hi) in ranges {
            let v = k.new_var("v");
            k.body.push(Stmt::Loop(Loop {
                var: v,
                lo,
                hi,
                kind: LoopKind::Spatial,
                mode: LoopMode::Serial,
                body: vec![Stmt::Store {
                    dst: Access {
                        mem: Mem::Buf(out),
                        index: Affine::var(v),
                    },
                    value: Expr::load(Mem::Buf(x), Affine::var(v)),
                }],
            }));
        }
        k
    }

    /// Column blocks of a `[rows, 8]` buffer: `for cb in 0..blocks { for r in 0..rows { for j
    /// in 0..width { out[r*8 + cb*step + j] = 0 } } }`.
    fn column_blocks(rows: i64, blocks: i64, step: i64, width: i64) -> Kernel {
        let mut k = Kernel::new("columns", None);
        let out = k.add_buffer("out", vec![4, 8], Role::Output);
        let (cb, r, j) = (k.new_var("cb"), k.new_var("r"), k.new_var("j"));
        let store = Stmt::Store {
            dst: Access {
                mem: Mem::Buf(out),
                index: Affine::var(r) * 8 + Affine::var(cb) * step + Affine::var(j),
            },
            value: Expr::Const(0.0),
        };
        let lp = |var, hi, body| {
            Stmt::Loop(Loop {
                var,
                lo: 0,
                hi,
                kind: LoopKind::Spatial,
                mode: LoopMode::Serial,
                body: vec![body],
            })
        };
        k.body = vec![lp(cb, blocks, lp(r, rows, lp(j, width, store)))];
        k
    }

    #[test]
    fn column_blocks_of_a_period_are_parallel_safe() {
        // Two blocks of 4 channels in rows of 8: the intervals overlap, the columns do not.
        let k = column_blocks(4, 2, 4, 4);
        verify(&k).expect("valid");
        assert!(parallel_safe(&k));
        // Blocks wider than their step share a column.
        let k = column_blocks(3, 2, 4, 5);
        verify(&k).expect("valid");
        assert!(!parallel_safe(&k));
        // Blocks past the row's end wrap into the next row (block 2 of row 0 is block 0 of
        // row 1): valid for the last row's bounds only with fewer rows, never parallel.
        let k = column_blocks(3, 3, 4, 4);
        verify(&k).expect("valid");
        assert!(!parallel_safe(&k));
        // One row: plain intervals already prove it.
        let k = column_blocks(1, 2, 4, 4);
        assert!(parallel_safe(&k));
    }

    #[test]
    fn work_items_and_parallel_safety() {
        let k = copy_kernel(8, 1, 0, LoopKind::Spatial, LoopMode::Serial);
        assert_eq!(work_items(&k), Some(1));
        assert!(parallel_safe(&k));
        let k = top_loops(&[(0, 5), (5, 8)]);
        verify(&k).expect("valid");
        assert_eq!(work_items(&k), Some(8));
        assert!(parallel_safe(&k));
        // Overlapping top-level loops: valid, but items 4 and 5 both write out[4].
        let k = top_loops(&[(0, 5), (4, 8)]);
        verify(&k).expect("valid");
        assert!(!parallel_safe(&k));
        // Within one loop: out[i] for i in 0..8 under `o` with coefficient 1 would overlap.
        let mut k = copy_kernel(8, 1, 0, LoopKind::Spatial, LoopMode::Serial);
        if let Stmt::Loop(o) = &mut k.body[0] {
            o.hi = 2;
            if let Some(Stmt::Loop(l)) = o.body.first_mut() {
                l.hi = 4;
                if let Some(Stmt::Store { dst, .. }) = l.body.first_mut() {
                    dst.index = Affine::var(l.var) + Affine::var(o.var) * 2;
                }
            }
        }
        verify(&k).expect("valid");
        assert!(!parallel_safe(&k));
    }

    #[test]
    fn rejects_non_loop_top_level() {
        let mut k = top_loops(&[(0, 8)]);
        k.body = vec![Stmt::Store {
            dst: Access {
                mem: Mem::Buf(BufId(1)),
                index: Affine::constant(0),
            },
            value: Expr::Const(1.0),
        }];
        rejects(&k, "top level");
        let mut k = top_loops(&[(0, 8)]);
        if let Stmt::Loop(l) = &mut k.body[0] {
            l.mode = LoopMode::Unroll;
        }
        rejects(&k, "top level");
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
        let l = inner_loop(&mut k);
        let i = l.var;
        l.body = vec![Stmt::Store {
            dst: Access {
                mem: Mem::Buf(BufId(1)),
                index: Affine::var(i) + Affine::var(Var(0)) * 8,
            },
            value: Expr::load(Mem::Buf(BufId(1)), Affine::var(i) + 1),
        }];
        rejects(&k, "another index");
    }

    #[test]
    fn rejects_locals_indexed_by_serial_loops() {
        let mut k = copy_kernel(4, 1, 0, LoopKind::Spatial, LoopMode::Serial);
        let acc = k.add_local("acc", 4, false);
        let l = inner_loop(&mut k);
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
