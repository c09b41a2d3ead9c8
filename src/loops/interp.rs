//! The loop-IR interpreter: runs a kernel the plain way, one scalar at a time.
//!
//! It exists to tell "the lowering is wrong" (interpreter differs from the graph's meaning) from
//! "codegen is wrong" (JIT differs from the interpreter). Vector loops run lane by lane, which the
//! verifier's vector rules make equivalent to running all lanes at once. Locals start at 0.0 in
//! every invocation, as in codegen.

use std::collections::BTreeMap;

use super::{BinOp, BufferKind, Expr, Kernel, Mem, Program, Stmt, UnOp, micro};
use crate::{Error, Result};

/// Runs `k` over `bufs` (one slice per declared buffer, of the declared length). The kernel is
/// verified first.
pub fn run_kernel(k: &Kernel, bufs: &mut [&mut [f32]]) -> Result<()> {
    super::verify(k)?;
    check_buffers(k, bufs.iter().map(|b| b.len()))?;
    let mut m = Machine {
        vars: vec![0; k.vars.len()],
        locals: k.locals.iter().map(|l| vec![0.0; l.len]).collect(),
        bufs,
    };
    m.stmts(&k.body);
    Ok(())
}

/// Runs work items `items` of `k` only (numbered as in [`super::verify::work_items`]): what one
/// run of the band schedule does. Running consecutive ranges that cover every item, in order,
/// is running the kernel.
pub fn run_kernel_items(
    k: &Kernel,
    bufs: &mut [&mut [f32]],
    items: std::ops::Range<i64>,
) -> Result<()> {
    super::verify(k)?;
    check_buffers(k, bufs.iter().map(|b| b.len()))?;
    let total = super::verify::work_items(k).unwrap_or(0);
    if items.start < 0 || items.start > items.end || items.end > total {
        return Err(Error::Usage(format!(
            "work items {}..{} of kernel '{}', which has 0..{total}",
            items.start, items.end, k.name
        )));
    }
    let mut m = Machine {
        vars: vec![0; k.vars.len()],
        locals: k.locals.iter().map(|l| vec![0.0; l.len]).collect(),
        bufs,
    };
    let mut first = 0i64;
    for s in &k.body {
        // The verifier made every top-level statement a loop.
        let Stmt::Loop(l) = s else { continue };
        let n = l.hi - l.lo;
        for t in items.start.max(first)..items.end.min(first + n) {
            m.vars[l.var.0] = l.lo + t - first;
            m.stmts(&l.body);
        }
        first += n;
    }
    Ok(())
}

/// Checks that the buffers passed match the kernel's declarations in number and length.
pub(crate) fn check_buffers(k: &Kernel, lens: impl ExactSizeIterator<Item = usize>) -> Result<()> {
    if lens.len() != k.buffers.len() {
        return Err(Error::Codegen(format!(
            "kernel '{}' takes {} buffers, got {}",
            k.name,
            k.buffers.len(),
            lens.len()
        )));
    }
    for (b, len) in k.buffers.iter().zip(lens) {
        if b.len() != Some(len) {
            return Err(Error::Codegen(format!(
                "kernel '{}': buffer {} has {} elements, expected {:?} = {}",
                k.name,
                b.name,
                len,
                b.dims,
                b.len().unwrap_or(0)
            )));
        }
    }
    Ok(())
}

struct Machine<'a, 'b> {
    vars: Vec<i64>,
    locals: Vec<Vec<f32>>,
    bufs: &'a mut [&'b mut [f32]],
}

impl Machine<'_, '_> {
    // Indices are in bounds: the kernel passed `verify`, whose bounds proof covers every access.
    // The proof is over exact integers and the true index fits in i64, so computing it modulo
    // 2^64 (wrapping) gives exactly that index, whatever the intermediate sums.
    fn index(&self, idx: &super::Affine) -> usize {
        let i = idx.terms.iter().fold(idx.offset, |acc, &(v, c)| {
            acc.wrapping_add(c.wrapping_mul(self.vars[v.0]))
        });
        i as usize
    }

    fn stmts(&mut self, body: &[Stmt]) {
        for s in body {
            match s {
                Stmt::Loop(l) => {
                    for i in l.lo..l.hi {
                        self.vars[l.var.0] = i;
                        self.stmts(&l.body);
                    }
                }
                Stmt::Micro(m) => self.micro(m),
                Stmt::Store { dst, value } => {
                    let v = self.eval(value);
                    let i = self.index(&dst.index);
                    match dst.mem {
                        Mem::Buf(b) => self.bufs[b.0][i] = v,
                        Mem::Local(l) => self.locals[l.0][i] = v,
                    }
                }
            }
        }
    }

    /// Runs a micro-kernel by its meaning ([`micro::reference`]), not its portable body.
    fn micro(&mut self, m: &micro::Micro) {
        let base = |slot| m.operand(slot).map(|o| (o.buf.0, self.index(&o.base)));
        let bases: Vec<Option<(usize, usize)>> =
            micro::Slot::ALL.iter().map(|&s| base(s)).collect();
        let slot_of = |s: micro::Slot| micro::Slot::ALL.iter().position(|&t| t == s).unwrap_or(0);
        let Some((ob, oi)) = bases[slot_of(micro::Slot::Out)] else {
            return;
        };
        // The output is written only after the reads of its own element (the residual may be
        // the same buffer only in the sense of aliasing, which verified kernels exclude).
        let mut writes: Vec<(usize, f32)> = Vec::new();
        {
            let bufs = &*self.bufs;
            let get = |s: micro::Slot, i: usize| match bases[slot_of(s)] {
                Some((b, at)) => bufs[b][at + i],
                None => 0.0,
            };
            micro::run(&m.op, &get, &mut |i, v| writes.push((i, v)));
        }
        for (i, v) in writes {
            self.bufs[ob][oi + i] = v;
        }
    }

    fn eval(&self, e: &Expr) -> f32 {
        match e {
            Expr::Const(c) => *c,
            Expr::Load(a) => {
                let i = self.index(&a.index);
                match a.mem {
                    Mem::Buf(b) => self.bufs[b.0][i],
                    Mem::Local(l) => self.locals[l.0][i],
                }
            }
            Expr::Unary(UnOp::Exp, a) => self.eval(a).exp(),
            Expr::Binary(op, a, b) => {
                let (a, b) = (self.eval(a), self.eval(b));
                match op {
                    BinOp::Add => a + b,
                    BinOp::Sub => a - b,
                    BinOp::Mul => a * b,
                    BinOp::Div => a / b,
                    BinOp::Max => {
                        if a < b {
                            b
                        } else {
                            a
                        }
                    }
                    BinOp::Min => {
                        if b < a {
                            b
                        } else {
                            a
                        }
                    }
                }
            }
            Expr::Fma(a, b, c) => self.eval(a).mul_add(self.eval(b), self.eval(c)),
        }
    }
}

/// Runs a whole program with `exec` running each kernel, on freshly allocated buffers: inputs
/// from `inputs` (by graph input name, `x` for buffer `%x`), constants from the program.
/// Returns the graph outputs by graph name. This is the simple executor for tests and tools; the runtime has its own memory plan.
pub fn execute(
    p: &Program,
    inputs: &BTreeMap<String, Vec<f32>>,
    mut exec: impl FnMut(usize, &Kernel, &mut [&mut [f32]]) -> Result<()>,
) -> Result<BTreeMap<String, Vec<f32>>> {
    let mut store = initial_store(p, inputs)?;
    for (i, k) in p.kernels.iter().enumerate() {
        with_buffers(&mut store, p, k, |bufs| exec(i, k, bufs))?;
    }
    outputs(p, &store)
}

/// Runs a program's kernels in `runs`, each `(kernel, work items)` in the interpreter, in that
/// order (the meaning of a band schedule, `runtime::bands`), on buffers as [`execute`] makes
/// them; returns the graph outputs. Nothing checks the order: `runtime::bands::verify` does.
pub fn execute_runs(
    p: &Program,
    inputs: &BTreeMap<String, Vec<f32>>,
    runs: impl IntoIterator<Item = (usize, std::ops::Range<i64>)>,
) -> Result<BTreeMap<String, Vec<f32>>> {
    let mut store = initial_store(p, inputs)?;
    for (i, items) in runs {
        let k = p
            .kernels
            .get(i)
            .ok_or_else(|| Error::Codegen(format!("no kernel {i}")))?;
        with_buffers(&mut store, p, k, |bufs| run_kernel_items(k, bufs, items))?;
    }
    outputs(p, &store)
}

/// Every buffer that owns storage: inputs from `inputs`, constants from the program,
/// activations zeroed.
fn initial_store(
    p: &Program,
    inputs: &BTreeMap<String, Vec<f32>>,
) -> Result<BTreeMap<String, Vec<f32>>> {
    let mut store: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for (name, (dims, kind)) in &p.buffers {
        if p.storage_of(name) != name {
            continue;
        }
        let len = crate::tensor::checked_product(dims)
            .ok_or_else(|| Error::Codegen(format!("buffer {name} size overflows")))?;
        let data = match kind {
            BufferKind::Input => {
                let d = super::value_of_buffer(name)
                    .and_then(|v| inputs.get(&v))
                    .ok_or_else(|| Error::Input(format!("no data given for input '{name}'")))?;
                if d.len() != len {
                    return Err(Error::Input(format!(
                        "input '{name}' has {} elements, expected {dims:?} = {len}",
                        d.len()
                    )));
                }
                d.clone()
            }
            BufferKind::Const => p
                .constants
                .get(name)
                .filter(|c| c.len() == len)
                .cloned()
                .ok_or_else(|| {
                    Error::Codegen(format!("constant {name} has no data of {len} elements"))
                })?,
            BufferKind::Activation => vec![0.0; len],
        };
        store.insert(name.clone(), data);
    }
    Ok(store)
}

/// Calls `f` with kernel `k`'s buffers (views resolved to their storage), taken out of `store`
/// and put back after.
fn with_buffers(
    store: &mut BTreeMap<String, Vec<f32>>,
    p: &Program,
    k: &Kernel,
    f: impl FnOnce(&mut [&mut [f32]]) -> Result<()>,
) -> Result<()> {
    let mut taken: Vec<(String, Vec<f32>)> = Vec::with_capacity(k.buffers.len());
    let mut missing = None;
    for b in &k.buffers {
        let s = p.storage_of(&b.name).to_string();
        match store.remove(&s) {
            Some(data) => taken.push((s, data)),
            None => {
                missing = Some(b.name.clone());
                break;
            }
        }
    }
    let result = match missing {
        Some(name) => Err(Error::Codegen(format!(
            "kernel '{}': buffer {name} is missing or passed twice",
            k.name
        ))),
        None => {
            let mut slices: Vec<&mut [f32]> =
                taken.iter_mut().map(|(_, d)| d.as_mut_slice()).collect();
            f(&mut slices)
        }
    };
    for (s, d) in taken {
        store.insert(s, d);
    }
    result
}

/// The graph outputs of a finished store, by graph name.
fn outputs(p: &Program, store: &BTreeMap<String, Vec<f32>>) -> Result<BTreeMap<String, Vec<f32>>> {
    p.outputs
        .iter()
        .map(|o| {
            let d = store
                .get(p.storage_of(o))
                .cloned()
                .ok_or_else(|| Error::Codegen(format!("output {o} has no buffer")))?;
            Ok((super::value_of_buffer(o).unwrap_or_else(|| o.clone()), d))
        })
        .collect()
}

/// Runs a whole program in the interpreter (see [`execute`]).
pub fn run_program(
    p: &Program,
    inputs: &BTreeMap<String, Vec<f32>>,
) -> Result<BTreeMap<String, Vec<f32>>> {
    execute(p, inputs, |_, k, bufs| run_kernel(k, bufs))
}
