//! Code generation: a total, boring translation of verified loop IR into Cranelift IR.
//!
//! One Cranelift function per kernel (compiled at the kernel's `OptLevel`, see [`jit`]), `fn(bufs: *const *mut f32, begin: i64, end: i64)`:
//! `bufs[i]` is the base of the kernel's buffer `i`, and `begin..end` (within `0..=items`) the
//! work items to run: iterations of the top-level loops, numbered in order, each loop clamped to
//! its own range, so the bounds proof holds for any values. All cleverness lives in the schedule;
//! this module only translates:
//! - a serial loop becomes a do-while loop over an i64 counter block parameter (`lo < hi` is a
//!   verifier invariant, so the body runs at least once and no entry test is needed);
//! - an unrolled loop repeats its body with the variable a constant;
//! - a vector loop emits its body once on f32x4 values (loads with lane stride 1 are vector
//!   loads, stride 0 a scalar load and a splat);
//! - each local element (or f32x4 of a vector local) is one SSA `Variable`, zeroed at entry so an
//!   unwritten local reads 0.0 as in the interpreter;
//! - `max`/`min` use the compare-and-bitselect idiom the x64 backend turns into one
//!   `vmaxps`/`vminps` (see `cranelift-notes.md`), with exactly the IR's select semantics
//!   (a NaN first operand propagates);
//! - `exp` calls [`mnv2c_expf`], imported by name;
//! - a micro-kernel statement is a call of its raw avx2/avx512 kernel (see [`micro`]) with the
//!   addresses of its operands when the program is compiled for a wide tier, else its portable
//!   body translated in place;
//! - within a loop body (and the bodies nested in it), an address with the same buffer and
//!   dynamic terms is computed once (constant terms fold into the load/store offset), and an
//!   element of a read-only buffer is loaded (and splat) once. Scopes end with their loop, so a
//!   reused value dominates its uses. This is the only "optimisation" done here, and it is what
//!   lets kernels compiled at `opt_level=none` (the schedule's choice for register-tiled
//!   families, see `lower::schedule`) keep the loop IR's order without redundant work.
//!
//! Nothing here is unsafe and nothing here checks bounds: the code is only sound to run on a
//! kernel `loops::verify` accepted (see [`jit`] for the calling contract). Translation is written
//! against the `cranelift_module::Module` trait: `codegen/compile.rs` drives it into the
//! JIT's module ([`jit`]) or an object file's ([`object`]), for the host or a [`target::Target`].

mod compile;
mod cpuid;
#[allow(unsafe_code)]
pub mod jit;
pub mod micro;
pub mod object;
pub mod target;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    AbiParam, Endianness, FuncRef, InstBuilder, MemFlagsData, Signature, Type, Value, types,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_module::{Linkage, Module};

use std::collections::BTreeMap;

use cranelift_module::FuncId;

use crate::loops::{Affine, BinOp, Expr, Kernel, LoopMode, Mem, Role, Stmt, UnOp, Var};
use crate::{Error, Result};

pub use crate::loops::MAX_KERNEL_BUFFERS;
pub use jit::{
    Arg, Executor, FoldWindow, JitOptions, JitProgram, MAX_SPLIT_PARTS, Team, WidePeak, emit_asm,
    emit_clif,
};
pub(crate) use jit::{HUGE_PAGE, advise_huge_pages, release_free_heap};
pub use micro::Isa;

/// The `exp` that generated code calls (and the interpreter matches: `f32::exp`).
pub extern "C" fn mnv2c_expf(x: f32) -> f32 {
    x.exp()
}

/// The symbol name under which [`mnv2c_expf`] is imported.
pub const EXPF_SYMBOL: &str = "mnv2c_expf";

/// The signature of every kernel function: `(bufs, begin, end)`, a pointer to the array of buffer
/// base pointers and the range of work items to run (see `loops::verify::work_items`).
pub fn kernel_signature<M: Module>(m: &M) -> Signature {
    let mut sig = m.make_signature();
    sig.params
        .push(AbiParam::new(m.target_config().pointer_type()));
    sig.params.push(AbiParam::new(types::I64));
    sig.params.push(AbiParam::new(types::I64));
    sig
}

/// The signature of every raw micro-kernel: `(x, w, bias, res, out, pf)` pointers (see
/// [`micro`]).
pub fn micro_signature<M: Module>(m: &M) -> Signature {
    let mut sig = m.make_signature();
    for _ in micro_slots() {
        sig.params
            .push(AbiParam::new(m.target_config().pointer_type()));
    }
    sig
}

fn micro_slots() -> [crate::loops::micro::Slot; 6] {
    crate::loops::micro::Slot::ALL
}

/// The raw micro-kernels of a wide tier, by [`micro::key`], already defined in the module.
pub type MicroFns = BTreeMap<String, FuncId>;

/// Every micro-kernel statement of `body`, in program order.
pub fn micros(body: &[Stmt]) -> Vec<&crate::loops::micro::Micro> {
    let mut out = Vec::new();
    for s in body {
        match s {
            Stmt::Loop(l) => out.extend(micros(&l.body)),
            Stmt::Micro(m) => out.push(&**m),
            Stmt::Store { .. } => {}
        }
    }
    out
}

fn expf_signature<M: Module>(m: &M) -> Signature {
    let mut sig = m.make_signature();
    sig.params.push(AbiParam::new(types::F32));
    sig.returns.push(AbiParam::new(types::F32));
    sig
}

/// Translates `k` into `func` (which must be empty and have [`kernel_signature`]). The kernel
/// must have passed `loops::verify`; this function re-checks that to stay total. `exp` calls
/// the imported function `expf_symbol` (`f32 -> f32`): [`EXPF_SYMBOL`] in the JIT, libm's
/// `expf` in an object file (the function `f32::exp` itself calls on Linux).
///
/// A micro-kernel statement becomes a call to its raw kernel when `raw` has one for `isa` (a
/// wide tier), else its portable body is translated in place.
pub fn translate<M: Module>(
    m: &mut M,
    k: &Kernel,
    func: &mut cranelift_codegen::ir::Function,
    fctx: &mut FunctionBuilderContext,
    isa: Isa,
    raw: &MicroFns,
    expf_symbol: &str,
) -> Result<()> {
    crate::loops::verify(k)?;
    let mut calls = BTreeMap::new();
    for mc in micros(&k.body) {
        let key = micro::key(isa, &mc.op);
        if let Some(&id) = raw.get(&key)
            && !calls.contains_key(&key)
        {
            calls.insert(key, m.declare_func_in_func(id, func));
        }
    }
    let expf = if uses_exp(&k.body) {
        let id = m
            .declare_function(expf_symbol, Linkage::Import, &expf_signature(m))
            .map_err(|e| Error::Codegen(format!("declaring {expf_symbol}: {e}")))?;
        Some(m.declare_func_in_func(id, func))
    } else {
        None
    };
    let ptr = m.target_config().pointer_type();
    let mut b = FunctionBuilder::new(func, fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let bufs_arg = b.block_params(entry)[0];
    let mut bases = Vec::with_capacity(k.buffers.len());
    for i in 0..k.buffers.len() {
        let off = i32::try_from(i * 8).map_err(|_| Error::Codegen("too many buffers".into()))?;
        bases.push(b.ins().load(
            ptr,
            MemFlagsData::trusted().with_readonly().with_can_move(),
            bufs_arg,
            off,
        ));
    }
    let mut locals = Vec::with_capacity(k.locals.len());
    let zero = b.ins().f32const(0.0);
    let vzero = b.ins().splat(types::F32X4, zero);
    for l in &k.locals {
        let (n, ty, z) = if l.vector {
            (l.len / 4, types::F32X4, vzero)
        } else {
            (l.len, types::F32, zero)
        };
        let vars: Vec<Variable> = (0..n)
            .map(|_| {
                let v = b.declare_var(ty);
                b.def_var(v, z);
                v
            })
            .collect();
        locals.push(vars);
    }
    let mut t = Translator {
        k,
        b,
        bases,
        locals,
        env: vec![Binding::Unbound; k.vars.len()],
        expf,
        ptr,
        lane: None,
        addrs: vec![Vec::new()],
        loads: vec![Vec::new()],
        isa,
        calls,
    };
    let (begin, end) = (t.b.block_params(entry)[1], t.b.block_params(entry)[2]);
    t.top_level(&k.body, begin, end)?;
    t.b.ins().return_(&[]);
    t.b.seal_all_blocks();
    t.b.finalize(m.target_config());
    Ok(())
}

fn uses_exp(body: &[Stmt]) -> bool {
    fn e(x: &Expr) -> bool {
        match x {
            Expr::Const(_) | Expr::Load(_) => false,
            Expr::Unary(UnOp::Exp, _) => true,
            Expr::Binary(_, a, b) => e(a) || e(b),
            Expr::Fma(a, b, c) => e(a) || e(b) || e(c),
        }
    }
    body.iter().any(|s| match s {
        Stmt::Loop(l) => uses_exp(&l.body),
        Stmt::Micro(m) => uses_exp(&m.body),
        Stmt::Store { value, .. } => e(value),
    })
}

#[derive(Clone, Copy)]
enum Binding {
    Unbound,
    /// A serial loop's counter.
    Dyn(Value),
    /// An unrolled loop's current value, or a vector loop's first lane.
    Const(i64),
}

struct Translator<'k, 'f> {
    k: &'k Kernel,
    b: FunctionBuilder<'f>,
    bases: Vec<Value>,
    locals: Vec<Vec<Variable>>,
    env: Vec<Binding>,
    expf: Option<FuncRef>,
    ptr: Type,
    /// The variable of the vector loop being translated, if any.
    lane: Option<Var>,
    /// Addresses already computed, per open serial loop (outermost first): buffer, the dynamic
    /// terms of the index (SSA value, coefficient), and the address `base + 4 * sum`. An entry
    /// of an enclosing loop's scope dominates the current position; a scope is dropped when its
    /// loop is closed, since values of a loop body do not dominate what follows the loop.
    addrs: Vec<Vec<AddrKey>>,
    /// Loads of read-only buffers already emitted, scoped like `addrs`: address, constant
    /// offset, what was loaded, and the value. Read-only buffers are never stored during a call
    /// (verified; the JIT's calling contract), so an earlier load of the same element is the
    /// same value; reusing it keeps `opt_level=none` code from reloading a weight vector or
    /// re-broadcasting an input scalar for every FMA of a register tile.
    loads: Vec<Vec<(Value, i32, LoadKind, Value)>>,
    isa: Isa,
    /// The raw micro-kernels this function calls, by key.
    calls: BTreeMap<String, FuncRef>,
}

/// How a cached load was done.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LoadKind {
    /// One f32.
    Scalar,
    /// One f32, splat to f32x4.
    Splat,
    /// Four contiguous f32 as an f32x4.
    Vector,
}

/// A cached address: `(buffer, [(value, coefficient)], address)`.
type AddrKey = (usize, Vec<(Value, i64)>, Value);

fn bug(m: &str) -> Error {
    Error::Codegen(m.to_string())
}

impl Translator<'_, '_> {
    fn stmts(&mut self, body: &[Stmt], vector: bool) -> Result<()> {
        for s in body {
            match s {
                Stmt::Loop(l) => match l.mode {
                    LoopMode::Unroll => {
                        for i in l.lo..l.hi {
                            self.env[l.var.0] = Binding::Const(i);
                            self.stmts(&l.body, vector)?;
                        }
                    }
                    LoopMode::Vector => {
                        self.env[l.var.0] = Binding::Const(l.lo);
                        self.lane = Some(l.var);
                        self.stmts(&l.body, true)?;
                        self.lane = None;
                    }
                    LoopMode::Serial => self.serial_loop(l, None, vector)?,
                },
                Stmt::Micro(mc) => match self.calls.get(&micro::key(self.isa, &mc.op)) {
                    Some(&f) => self.call_micro(f, mc)?,
                    None => self.stmts(&mc.body, vector)?,
                },
                Stmt::Store { dst, value } => {
                    let v = self.expr(value, vector)?;
                    match dst.mem {
                        Mem::Buf(buf) => {
                            let (addr, off) = self.address(buf.0, &dst.index)?;
                            self.b
                                .ins()
                                .store(MemFlagsData::new().with_notrap(), v, addr, off);
                        }
                        Mem::Local(l) => {
                            let var = self.local_var(l.0, &dst.index, vector)?;
                            self.b.def_var(var, v);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A do-while loop over `l.lo..l.hi`, or over the dynamic `start..stop` (a sub-range of it,
    /// possibly empty, hence the entry test) for a top-level loop.
    fn serial_loop(
        &mut self,
        l: &crate::loops::Loop,
        range: Option<(Value, Value)>,
        vector: bool,
    ) -> Result<()> {
        let header = self.b.create_block();
        let exit = self.b.create_block();
        let i = self.b.append_block_param(header, types::I64);
        match range {
            Some((start, stop)) => {
                let any = self.b.ins().icmp(IntCC::SignedLessThan, start, stop);
                self.b.ins().brif(any, header, &[start.into()], exit, &[]);
            }
            None => {
                let lo = self.b.ins().iconst(types::I64, l.lo);
                self.b.ins().jump(header, &[lo.into()]);
            }
        }
        self.b.switch_to_block(header);
        self.env[l.var.0] = Binding::Dyn(i);
        self.addrs.push(Vec::new());
        self.loads.push(Vec::new());
        self.stmts(&l.body, vector)?;
        self.addrs.pop();
        self.loads.pop();
        let next = self.b.ins().iadd_imm_s(i, 1);
        let more = match range {
            Some((_, stop)) => self.b.ins().icmp(IntCC::SignedLessThan, next, stop),
            None => self.b.ins().icmp_imm_s(IntCC::SignedLessThan, next, l.hi),
        };
        self.b.ins().brif(more, header, &[next.into()], exit, &[]);
        self.b.switch_to_block(exit);
        Ok(())
    }

    /// The top level: loop `j` runs the work items `first_j .. first_j + extent_j` that fall in
    /// `begin..end`, i.e. iterations `lo + clamp(begin - first, 0, extent) .. lo + clamp(end -
    /// first, 0, extent)` — always a sub-range of `lo..hi`, so the bounds proof covers it.
    fn top_level(&mut self, body: &[Stmt], begin: Value, end: Value) -> Result<()> {
        let mut first: i64 = 0;
        for s in body {
            let Stmt::Loop(l) = s else {
                return Err(bug("top-level statement is not a loop"));
            };
            let extent =
                l.hi.checked_sub(l.lo)
                    .ok_or_else(|| bug("loop extent overflows"))?;
            let clamp = |x: Value, b: &mut FunctionBuilder<'_>| {
                let d = b.ins().iadd_imm_s(x, first.wrapping_neg());
                let zero = b.ins().iconst(types::I64, 0);
                let ext = b.ins().iconst(types::I64, extent);
                let d = b.ins().smax(d, zero);
                let d = b.ins().smin(d, ext);
                b.ins().iadd_imm_s(d, l.lo)
            };
            let start = clamp(begin, &mut self.b);
            let stop = clamp(end, &mut self.b);
            self.serial_loop(l, Some((start, stop)), false)?;
            first = first
                .checked_add(extent)
                .ok_or_else(|| bug("work item count overflows"))?;
        }
        Ok(())
    }

    fn const_index(&self, idx: &Affine) -> Result<i64> {
        idx.terms
            .iter()
            .try_fold(idx.offset, |acc, &(v, c)| match self.env[v.0] {
                Binding::Const(x) => Ok(acc.wrapping_add(c.wrapping_mul(x))),
                _ => Err(bug("local indexed by a non-constant variable")),
            })
    }

    fn local_var(&self, l: usize, idx: &Affine, vector: bool) -> Result<Variable> {
        let i = self.const_index(idx)?;
        let loc = &self.k.locals[l];
        let slot = if loc.vector && vector { i / 4 } else { i };
        usize::try_from(slot)
            .ok()
            .and_then(|s| self.locals[l].get(s).copied())
            .ok_or_else(|| bug("local index out of range"))
    }

    /// Base address and constant byte offset of element `idx` (lane 0 in a vector body).
    ///
    /// All arithmetic wraps modulo 2^64: the verifier proved the exact index in `0..len`, and
    /// `4 * len` fits in `isize`, so the wrapped sum is exactly the element's byte offset.
    fn address(&mut self, buf: usize, idx: &Affine) -> Result<(Value, i32)> {
        let mut constant = idx.offset;
        let mut terms: Vec<(Value, i64)> = Vec::new();
        for &(v, c) in &idx.terms {
            match self.env[v.0] {
                Binding::Const(x) => constant = constant.wrapping_add(c.wrapping_mul(x)),
                Binding::Dyn(val) => terms.push((val, c)),
                Binding::Unbound => return Err(bug("index uses an unbound variable")),
            }
        }
        let mut addr = self.bases[buf];
        if !terms.is_empty() {
            let cached = self.addrs.iter().rev().find_map(|scope| {
                scope
                    .iter()
                    .find(|(b, t, _)| *b == buf && *t == terms)
                    .map(|e| e.2)
            });
            addr = match cached {
                Some(a) => a,
                None => {
                    // Byte offset: sum of value * (4 * coefficient), one multiply per term
                    // (a shift for powers of two).
                    let mut dynamic: Option<Value> = None;
                    for &(val, c) in &terms {
                        let bytes = c.wrapping_mul(4);
                        let term = if bytes > 0 && (bytes as u64).is_power_of_two() {
                            self.b
                                .ins()
                                .ishl_imm_u(val, i64::from(bytes.trailing_zeros()))
                        } else {
                            self.b.ins().imul_imm_s(val, bytes)
                        };
                        dynamic = Some(match dynamic {
                            Some(d) => self.b.ins().iadd(d, term),
                            None => term,
                        });
                    }
                    let a = match dynamic {
                        Some(d) => self.b.ins().iadd(addr, d),
                        None => addr,
                    };
                    if let Some(scope) = self.addrs.last_mut() {
                        scope.push((buf, terms, a));
                    }
                    a
                }
            };
        }
        let bytes = constant.wrapping_mul(4);
        match i32::try_from(bytes) {
            Ok(off) => Ok((addr, off)),
            Err(_) => {
                let c = self.b.ins().iconst(self.ptr, bytes);
                Ok((self.b.ins().iadd(addr, c), 0))
            }
        }
    }

    /// The lane stride of an index in the current vector body (0 or 1 by verification).
    fn lane_coef(&self, idx: &Affine) -> i64 {
        self.lane.map_or(0, |v| idx.coef(v))
    }

    fn splat_if(&mut self, v: Value, vector: bool) -> Value {
        if vector {
            self.b.ins().splat(types::F32X4, v)
        } else {
            v
        }
    }

    fn expr(&mut self, e: &Expr, vector: bool) -> Result<Value> {
        Ok(match e {
            Expr::Const(c) => {
                let v = self.b.ins().f32const(*c);
                self.splat_if(v, vector)
            }
            Expr::Load(a) => match a.mem {
                Mem::Buf(buf) => {
                    let role = self.k.buffers[buf.0].role;
                    let mut flags = MemFlagsData::new().with_notrap();
                    if matches!(role, Role::Input | Role::Const) {
                        // Never stored by this kernel (verified) and never aliased by a written
                        // buffer (the JIT's calling contract): loads are pure and may move.
                        flags = flags.with_readonly().with_can_move();
                    }
                    let (addr, off) = self.address(buf.0, &a.index)?;
                    let kind = if vector && self.lane_coef(&a.index) == 1 {
                        LoadKind::Vector
                    } else if vector {
                        LoadKind::Splat
                    } else {
                        LoadKind::Scalar
                    };
                    let readonly = matches!(role, Role::Input | Role::Const);
                    let key = (addr, off, kind);
                    let cached = readonly
                        .then(|| {
                            self.loads.iter().rev().find_map(|scope| {
                                scope.iter().find(|e| (e.0, e.1, e.2) == key).map(|e| e.3)
                            })
                        })
                        .flatten();
                    if let Some(v) = cached {
                        return Ok(v);
                    }
                    let v = if kind == LoadKind::Vector {
                        self.b.ins().load(types::F32X4, flags, addr, off)
                    } else {
                        let v = self
                            .b
                            .ins()
                            .load(types::F32, flags.with_aligned(), addr, off);
                        self.splat_if(v, vector)
                    };
                    if readonly && let Some(scope) = self.loads.last_mut() {
                        scope.push((addr, off, kind, v));
                    }
                    v
                }
                Mem::Local(l) => {
                    let var = self.local_var(l.0, &a.index, vector)?;
                    let v = self.b.use_var(var);
                    if self.k.locals[l.0].vector {
                        v
                    } else {
                        self.splat_if(v, vector)
                    }
                }
            },
            Expr::Unary(UnOp::Exp, a) => {
                let x = self.expr(a, vector)?;
                let f = self.expf.ok_or_else(|| bug("exp without an import"))?;
                let call = self.b.ins().call(f, &[x]);
                self.b.inst_results(call)[0]
            }
            Expr::Binary(op, a, c) => {
                let (x, y) = (self.expr(a, vector)?, self.expr(c, vector)?);
                match op {
                    BinOp::Add => self.b.ins().fadd(x, y),
                    BinOp::Sub => self.b.ins().fsub(x, y),
                    BinOp::Mul => self.b.ins().fmul(x, y),
                    BinOp::Div => self.b.ins().fdiv(x, y),
                    // max: x < y ? y : x; min: y < x ? y : x. Both are "c < d ? c : d" or
                    // "d < c ? c : d" shapes the x64 backend turns into one minps / maxps,
                    // and both return x (the first operand) when unordered.
                    BinOp::Max => self.select_lt(x, y, y, x, vector),
                    BinOp::Min => self.select_lt(y, x, y, x, vector),
                }
            }
            Expr::Fma(a, c, d) => {
                let (x, y, z) = (
                    self.expr(a, vector)?,
                    self.expr(c, vector)?,
                    self.expr(d, vector)?,
                );
                self.b.ins().fma(x, y, z)
            }
        })
    }

    /// A call of raw micro-kernel `f` with the addresses of `mc`'s operands (null for absent
    /// ones, which the kernel never reads).
    fn call_micro(&mut self, f: FuncRef, mc: &crate::loops::micro::Micro) -> Result<()> {
        let mut args = Vec::with_capacity(micro_slots().len());
        for slot in micro_slots() {
            args.push(match mc.operand(slot) {
                Some(o) => {
                    let (addr, off) = self.address(o.buf.0, &o.base)?;
                    if off == 0 {
                        addr
                    } else {
                        self.b.ins().iadd_imm_s(addr, i64::from(off))
                    }
                }
                None => self.b.ins().iconst(self.ptr, 0),
            });
        }
        self.b.ins().call(f, &args);
        Ok(())
    }

    /// `if l < r { t } else { f }`, lane-wise in a vector body.
    fn select_lt(&mut self, l: Value, r: Value, t: Value, f: Value, vector: bool) -> Value {
        let m = self.b.ins().fcmp(FloatCC::LessThan, l, r);
        if vector {
            let mf = self.b.ins().bitcast(
                types::F32X4,
                MemFlagsData::new().with_endianness(Endianness::Little),
                m,
            );
            self.b.ins().bitselect(mf, t, f)
        } else {
            self.b.ins().select(m, t, f)
        }
    }
}

/// The symbol name of kernel `i`'s function (unique by index, ASCII).
pub(crate) fn symbol_name(i: usize, k: &Kernel) -> String {
    let base: String = k
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("k{i}_{base}")
}
