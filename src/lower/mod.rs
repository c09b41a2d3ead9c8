//! Lowering: each compute node of a verified graph becomes one loop-IR [`Kernel`].
//!
//! [`lower`] turns a whole graph into a [`Program`]: kernels in topological order, over buffers
//! named after graph values (`%name`) and constants (`@name`) as the loop IR's module doc
//! describes. Flatten is a view (no kernel), an input is a buffer the caller fills.
//! [`lower_node`] lowers one node. Work items (what a team of threads shares out) are cut for
//! a thread count: [`lower`] for one thread (what `--emit` prints and an object file runs),
//! [`lower_for_threads`] for a model's own count (see [`schedule::gemm_split`]).
//!
//! What lowering promises: every kernel it returns passes [`loops::verify`](fn@loops::verify), and computes its node
//! as the graph IR defines it (checked by the kernel tests against the interpreter and a naive
//! reference). The shape of each nest comes from a [`Schedule`] (see [`schedule`] for the table,
//! the register tile and the tail policy); the kernel families live in one file each.
//!
//! Constants may be packed at lowering: a kernel may read a constant computed here (batch norm's
//! per-channel scale and shift, a conv's packed weights), named `@<node>#<what>` — a name no
//! graph value or constant can have — and stored in [`Program::constants`].

pub mod conv;
pub mod dense;
pub mod depthwise;
pub mod elementwise;
pub mod pool;
mod prefetch;
pub mod schedule;
pub mod softmax;
pub mod transpose;

use std::collections::BTreeMap;

use crate::graph::{Graph, Op, ValueId};
use crate::loops::{
    self, Access, Affine, BufId, BufferKind, Expr, Kernel, LoopKind, LoopMode, Mem, Program, Role,
    Stmt, Var,
};
use crate::{Error, Result, TensorMap};
pub use schedule::{Family, Schedule};

/// One lowered node: its kernel and the constants packed for it (name -> (dims, data)).
#[derive(Clone, Debug)]
pub struct Lowered {
    pub kernel: Kernel,
    pub packed: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

/// Lowers one node, its work items cut for `threads` threads. `Ok(None)` for nodes that need no
/// kernel (inputs, flatten).
pub fn lower_node(
    graph: &Graph,
    id: ValueId,
    consts: &TensorMap,
    threads: usize,
) -> Result<Option<Lowered>> {
    if !graph.contains(id) {
        return Err(Error::Codegen(format!(
            "node #{} is not in the graph",
            id.index()
        )));
    }
    let node = graph.node(id);
    let mut cx = Cx {
        graph,
        id,
        consts,
        threads,
        packed: BTreeMap::new(),
    };
    let kernel = match &node.op {
        Op::Input | Op::Flatten => return Ok(None),
        Op::Conv2d(c) => conv::lower(&mut cx, c)?,
        Op::BatchNorm(b) => elementwise::batch_norm(&mut cx, b)?,
        Op::Relu6 => elementwise::relu6(&mut cx)?,
        Op::Add => elementwise::add(&mut cx)?,
        Op::GlobalAvgPool => pool::lower(&mut cx)?,
        Op::Softmax => softmax::lower(&mut cx)?,
        Op::Transpose(perm) => transpose::lower(&mut cx, perm)?,
        Op::Pad(p) => elementwise::pad(&mut cx, p)?,
        Op::Dense(d) => dense::lower(&mut cx, d)?,
        Op::Relu => elementwise::relu(&mut cx)?,
        Op::ScaleOffset(so) => elementwise::scale_offset(&mut cx, so)?,
    };
    let mut kernel = kernel;
    kernel.flops = flops(graph, id);
    loops::verify(&kernel)?;
    Ok(Some(Lowered {
        kernel,
        packed: cx.packed,
    }))
}

/// Lowers a whole verified graph to a program for one thread. `consts` holds the value of every
/// constant the graph's nodes reference (derived constants already evaluated).
pub fn lower(graph: &Graph, consts: &TensorMap) -> Result<Program> {
    lower_for_threads(graph, consts, 1)
}

/// [`lower`] for a model that splits every kernel's work items over `threads` threads: the
/// same values, computed in the same order per element, in items cut for that many threads.
/// The program it returns passed [`loops::verify_program`], so callers need not check it
/// again.
pub fn lower_for_threads(graph: &Graph, consts: &TensorMap, threads: usize) -> Result<Program> {
    crate::graph::verify(graph)?;
    let order = graph
        .topo_order()
        .map_err(|v| Error::verify(format!("%{}", graph.node(v).name), "the graph has a cycle"))?;
    let mut p = Program::default();
    for &id in &order {
        let node = graph.node(id);
        let kind = match node.op {
            Op::Input => {
                p.inputs.push(loops::value_buffer(&node.name));
                BufferKind::Input
            }
            Op::Flatten => {
                let src = graph.node(operand(graph, id, 0)?).name.clone();
                p.views
                    .push((loops::value_buffer(&node.name), loops::value_buffer(&src)));
                BufferKind::Activation
            }
            _ => BufferKind::Activation,
        };
        let name = loops::value_buffer(&node.name);
        declare(&mut p, &name, node.ty.dims.clone(), kind, false)?;
    }
    let mut packed_names = std::collections::BTreeSet::new();
    let graph_consts: BTreeMap<String, &str> = graph
        .consts()
        .map(|(name, _)| (loops::const_buffer(name), name))
        .collect();
    for &id in &order {
        let Some(l) = lower_node(graph, id, consts, threads)? else {
            continue;
        };
        for b in &l.kernel.buffers {
            if b.role == Role::Const && !l.packed.contains_key(&b.name) {
                let t = graph_consts
                    .get(&b.name)
                    .and_then(|c| consts.get(*c))
                    .ok_or_else(|| Error::Weights {
                        tensor: b.name.clone(),
                        message: "no value bound for this constant".into(),
                    })?;
                let shared = !packed_names.contains(&b.name);
                declare(
                    &mut p,
                    &b.name,
                    t.dims().to_vec(),
                    BufferKind::Const,
                    shared,
                )?;
                p.constants.insert(b.name.clone(), t.data().to_vec());
            }
        }
        for (name, (dims, data)) in l.packed {
            declare(&mut p, &name, dims, BufferKind::Const, false)?;
            packed_names.insert(name.clone());
            p.constants.insert(name, data);
        }
        p.kernels.push(l.kernel);
    }
    p.outputs = graph
        .outputs()
        .iter()
        .map(|&o| loops::value_buffer(&graph.node(o).name))
        .collect();
    prefetch::plan(&mut p);
    loops::verify_program(&p)?;
    Ok(p)
}

/// Adds a program buffer. The same graph constant may be declared by several kernels
/// (`shared`); any other repeated name is a bug in lowering (buffer names of distinct graph
/// values, constants and lowering constants cannot coincide, see the loop IR's module doc).
fn declare(
    p: &mut Program,
    name: &str,
    dims: Vec<usize>,
    kind: BufferKind,
    shared: bool,
) -> Result<()> {
    match p.buffers.get(name) {
        None => {
            p.buffers.insert(name.to_string(), (dims, kind));
            Ok(())
        }
        Some((d, BufferKind::Const)) if shared && kind == BufferKind::Const && *d == dims => Ok(()),
        Some(_) => Err(Error::Codegen(format!("buffer '{name}' is declared twice"))),
    }
}

/// Floating-point operations of a node's kernel: 2 per multiply-add of a convolution (output
/// elements x taps x input channels per group) or a dense layer (outputs x inputs), 0 for the
/// other ops. Saturates (a verified graph's counts fit easily).
fn flops(graph: &Graph, id: ValueId) -> u64 {
    let node = graph.node(id);
    if let Op::Dense(_) = &node.op {
        let k = graph
            .operands(id)
            .first()
            .and_then(|&x| graph.node(x).ty.dims.last().copied())
            .unwrap_or(0) as u64;
        let outputs = node.ty.num_elements().unwrap_or(0) as u64;
        return outputs.saturating_mul(k).saturating_mul(2);
    }
    let Op::Conv2d(conv) = &node.op else {
        return 0;
    };
    let cin = graph
        .operands(id)
        .first()
        .and_then(|&x| graph.node(x).ty.dims.last().copied());
    let geo = cin
        .zip(graph.const_decl(&conv.weight))
        .and_then(|(cin, w)| {
            crate::graph::ConvGeometry::new(&w.ty, cin, conv.groups)
                .ok()
                .map(|g| (g, cin))
        });
    let Some((geo, cin)) = geo else {
        return 0;
    };
    let outputs = node.ty.num_elements().unwrap_or(0) as u64;
    [geo.kh, geo.kw, cin / conv.groups.max(1), 2]
        .iter()
        .fold(outputs, |a, &d| a.saturating_mul(d as u64))
}

fn operand(graph: &Graph, id: ValueId, slot: usize) -> Result<ValueId> {
    graph.operands(id).get(slot).copied().ok_or_else(|| {
        Error::verify(
            format!("%{}", graph.node(id).name),
            format!("missing operand {slot}"),
        )
    })
}

/// Lowering context of one node.
pub(crate) struct Cx<'a> {
    pub graph: &'a Graph,
    pub id: ValueId,
    pub consts: &'a TensorMap,
    /// The threads the kernel's work items are cut for.
    pub threads: usize,
    pub packed: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Cx<'_> {
    pub fn name(&self) -> &str {
        &self.graph.node(self.id).name
    }

    pub fn out_dims(&self) -> &[usize] {
        &self.graph.node(self.id).ty.dims
    }

    /// Name and dims of value operand `slot`.
    pub fn operand(&self, slot: usize) -> Result<(String, Vec<usize>)> {
        let v = operand(self.graph, self.id, slot)?;
        let n = self.graph.node(v);
        Ok((n.name.clone(), n.ty.dims.clone()))
    }

    /// The value of a graph constant, checked against its declared shape.
    pub fn constant(&self, name: &str) -> Result<&crate::Tensor> {
        let t = self.consts.get(name).ok_or_else(|| Error::Weights {
            tensor: name.to_string(),
            message: "no value bound for this constant".into(),
        })?;
        if let Some(decl) = self.graph.const_decl(name)
            && decl.ty.dims != t.dims()
        {
            return Err(Error::Weights {
                tensor: name.to_string(),
                message: format!("has shape {:?}, the graph declares {}", t.dims(), decl.ty),
            });
        }
        Ok(t)
    }

    /// The kernel's buffer for value operand `slot` (declared once even if used twice).
    pub fn input_buffer(&self, k: &mut Kernel, slot: usize) -> Result<BufId> {
        let (name, dims) = self.operand(slot)?;
        buffer(k, &loops::value_buffer(&name), dims, Role::Input)
    }

    pub fn output_buffer(&self, k: &mut Kernel) -> Result<BufId> {
        let name = loops::value_buffer(self.name());
        buffer(k, &name, self.out_dims().to_vec(), Role::Output)
    }

    /// A graph constant's buffer (its value is checked to exist now).
    pub fn const_buffer(&self, k: &mut Kernel, name: &str) -> Result<BufId> {
        let dims = self.constant(name)?.dims().to_vec();
        buffer(k, &loops::const_buffer(name), dims, Role::Const)
    }

    /// Replaces the kernel's constant buffer `id` by a constant packed at lowering from it,
    /// named `@<node>#<what>` (same `BufId`, so indices built for `id` now address the packed
    /// one).
    pub fn repack_buffer(&mut self, k: &mut Kernel, id: BufId, what: &str, data: Vec<f32>) {
        let name = loops::lowered_buffer(self.name(), what);
        let dims = vec![data.len()];
        self.packed.insert(name.clone(), (dims.clone(), data));
        k.buffers[id.0] = loops::Buffer {
            name,
            dims,
            role: Role::Const,
        };
    }

    /// A constant packed at lowering, named `@<node>#<what>`.
    pub fn packed_buffer(&mut self, k: &mut Kernel, what: &str, data: Vec<f32>) -> Result<BufId> {
        let name = loops::lowered_buffer(self.name(), what);
        let dims = vec![data.len()];
        self.packed.insert(name.clone(), (dims.clone(), data));
        buffer(k, &name, dims, Role::Const)
    }
}

/// The kernel's buffer `name`, declared on first use. The same value used twice (`add(x, x)`)
/// is one buffer.
fn buffer(k: &mut Kernel, name: &str, dims: Vec<usize>, role: Role) -> Result<BufId> {
    match k.buffer(name) {
        Some(b) if k.buffers[b.0].role == role && k.buffers[b.0].dims == dims => Ok(b),
        Some(_) => Err(Error::Codegen(format!(
            "buffer '{name}' is declared twice in kernel '{}' with another role or shape",
            k.name
        ))),
        None => Ok(k.add_buffer(name, dims, role)),
    }
}

/// A loop statement.
pub(crate) fn for_loop(
    var: Var,
    lo: usize,
    hi: usize,
    kind: LoopKind,
    mode: LoopMode,
    body: Vec<Stmt>,
) -> Stmt {
    Stmt::Loop(loops::Loop {
        var,
        lo: lo as i64,
        hi: hi as i64,
        kind,
        mode,
        body,
    })
}

pub(crate) fn load(b: BufId, index: Affine) -> Expr {
    Expr::load(Mem::Buf(b), index)
}

pub(crate) fn store(b: BufId, index: Affine, value: Expr) -> Stmt {
    Stmt::Store {
        dst: Access {
            mem: Mem::Buf(b),
            index,
        },
        value,
    }
}

/// Converts a size to an index coefficient; sizes come from verified graph types, which fit in
/// `isize`, so this only fails on absurd shapes.
pub(crate) fn c(n: usize) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::Codegen(format!("size {n} does not fit an index")))
}

/// A channel of a register tile: its index, and the serial loop variable over full tiles when it
/// lies in one (`None` in the remainder tiles), for kernels whose constants are packed per tile.
#[derive(Clone, Debug)]
pub(crate) struct Chan {
    pub ch: Affine,
    pub tile: Option<Var>,
}

/// A reduction step: `(pixel offset, channel, reduction variables, old accumulator) -> new`.
pub(crate) type UpdateFn<'a> = dyn Fn(&Affine, &Chan, &[Var], Expr) -> Expr + 'a;

/// The callbacks of a register tile (see [`tile_nest`]). Each gets the pixel offset within the
/// tile (an affine over the unrolled pixel variable, or 0) and the channel index.
pub(crate) struct TileBody<'a> {
    /// The accumulator's initial value.
    pub init: &'a dyn Fn(&Affine, &Affine) -> Expr,
    /// The reduction step: new accumulator from the reduction variables and the old one.
    pub update: &'a UpdateFn<'a>,
    /// The final store of the accumulator.
    pub finish: &'a dyn Fn(&Affine, &Affine, Expr) -> Stmt,
}

/// Emits register tiles covering `channels` channels starting at `chan_base`, for `pixel_tile`
/// pixels, following the tail policy of [`schedule`]: full tiles of `4 * channel_vectors`
/// channels, then a vector remainder, then a scalar remainder. `red` lists the reduction loops,
/// outermost first; with none, `init` is the whole computation.
pub(crate) fn tile_nest(
    k: &mut Kernel,
    pixel_tile: usize,
    channel_vectors: usize,
    channels: usize,
    chan_base: &Affine,
    red: &[Reduction<'_>],
    body: &TileBody<'_>,
) -> Result<Vec<Stmt>> {
    let reds: &[&[Reduction<'_>]] = if red.is_empty() { &[] } else { &[red] };
    tile_nest_multi(
        k,
        pixel_tile,
        channel_vectors,
        channels,
        chan_base,
        reds,
        body,
    )
}

/// The shape of one register tile's slots: `pixel_tile` pixels x `groups` channel groups of 4
/// lanes (`vector`) or 1, from channel `base`, accumulating in local `acc`.
struct SlotShape<'a> {
    pixel_tile: usize,
    groups: usize,
    vector: bool,
    base: &'a Affine,
    acc: crate::loops::LocalId,
}

impl SlotShape<'_> {
    /// One statement per tile slot: `for p (unroll) { for u (unroll) { for l (vector) { s } } }`,
    /// `s` made by `f` from the pixel offset, the channel and the accumulator element.
    fn slot(&self, k: &mut Kernel, f: &dyn Fn(&Affine, &Affine, Access) -> Stmt) -> Result<Stmt> {
        let lanes = if self.vector { 4 } else { 1 };
        let p = (self.pixel_tile > 1).then(|| k.new_var("p"));
        let u = k.new_var(if self.vector { "cv" } else { "cs" });
        let l = self.vector.then(|| k.new_var("lane"));
        let pa = p.map_or_else(Affine::default, Affine::var);
        let mut ch = self.base.clone() + Affine::var(u) * c(lanes)?;
        let mut ai = (pa.clone() * c(self.groups)? + Affine::var(u)) * c(lanes)?;
        if let Some(l) = l {
            ch = ch + Affine::var(l);
            ai = ai + Affine::var(l);
        }
        let index = ai;
        let mut s = f(
            &pa,
            &ch,
            Access {
                mem: Mem::Local(self.acc),
                index,
            },
        );
        if let Some(l) = l {
            s = for_loop(l, 0, 4, LoopKind::Spatial, LoopMode::Vector, vec![s]);
        }
        s = for_loop(
            u,
            0,
            self.groups,
            LoopKind::Spatial,
            LoopMode::Unroll,
            vec![s],
        );
        if let Some(p) = p {
            let unroll = LoopMode::Unroll;
            s = for_loop(p, 0, self.pixel_tile, LoopKind::Spatial, unroll, vec![s]);
        }
        Ok(s)
    }
}

/// One reduction loop of a register tile: `for name in lo..hi`, run in `mode`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reduction<'a> {
    pub name: &'a str,
    pub lo: usize,
    pub hi: usize,
    pub mode: LoopMode,
}

impl<'a> Reduction<'a> {
    pub fn new(name: &'a str, lo: usize, hi: usize, mode: LoopMode) -> Reduction<'a> {
        Reduction { name, lo, hi, mode }
    }

    /// Whether the loop runs no iteration (a tap range clamped away at a border).
    pub fn is_empty(&self) -> bool {
        self.lo >= self.hi
    }
}

/// A kernel body of one serial loop `nv` over the `n` batch items, around a channel-tiled
/// reduction nest with no pixel tile (global pooling, dense layers): the shape both share.
pub(crate) fn per_item_reduction(
    k: &mut Kernel,
    (nv, n): (Var, usize),
    channel_vectors: usize,
    channels: usize,
    red: &[Reduction<'_>],
    body: &TileBody<'_>,
) -> Result<Vec<Stmt>> {
    let tiles = tile_nest(
        k,
        1,
        channel_vectors,
        channels,
        &Affine::default(),
        red,
        body,
    )?;
    Ok(vec![for_loop(
        nv,
        0,
        n,
        LoopKind::Spatial,
        LoopMode::Serial,
        tiles,
    )])
}

/// [`tile_nest`] with several reduction nests run one after the other on the same accumulators
/// (e.g. a reduction split into an unrolled main nest and a remainder nest); `update` gets the
/// variables of the nest it is called for, so it can tell them apart by their number.
pub(crate) fn tile_nest_multi(
    k: &mut Kernel,
    pixel_tile: usize,
    channel_vectors: usize,
    channels: usize,
    chan_base: &Affine,
    reds: &[&[Reduction<'_>]],
    body: &TileBody<'_>,
) -> Result<Vec<Stmt>> {
    let tile = 4 * channel_vectors;
    let full = channels / tile;
    let vecs = (channels % tile) / 4;
    let scal = channels % 4;
    let mut out = Vec::new();
    // (outer tile count, per-tile lanes groups, vector?, channel offset)
    let mut parts = Vec::new();
    if full > 0 {
        parts.push((Some(full), channel_vectors, true, 0));
    }
    if vecs > 0 {
        parts.push((None, vecs, true, full * tile));
    }
    if scal > 0 {
        parts.push((None, scal, false, full * tile + vecs * 4));
    }
    for (tiles, groups, vector, offset) in parts {
        let lanes = if vector { 4 } else { 1 };
        let acc_len = pixel_tile * groups * lanes;
        let acc = k.add_local("acc", acc_len, vector);
        let t = tiles.map(|_| k.new_var("ct"));
        let mut base = chan_base.clone() + c(offset)?;
        if let Some(t) = t {
            base = base + Affine::var(t) * c(groups * lanes)?;
        }
        let shape = SlotShape {
            pixel_tile,
            groups,
            vector,
            base: &base,
            acc,
        };
        let slot = |k: &mut Kernel, f: &dyn Fn(&Affine, &Affine, Access) -> Stmt| shape.slot(k, f);
        let mut stmts = vec![slot(k, &|p, ch, a| Stmt::Store {
            value: (body.init)(p, ch),
            dst: a,
        })?];
        for red in reds.iter().filter(|r| !r.is_empty()) {
            let vars: Vec<Var> = red.iter().map(|r| k.new_var(r.name)).collect();
            let mut s = slot(k, &|p, ch, a| Stmt::Store {
                value: (body.update)(
                    p,
                    &Chan {
                        ch: ch.clone(),
                        tile: t,
                    },
                    &vars,
                    Expr::Load(a.clone()),
                ),
                dst: a,
            })?;
            for (r, &v) in red.iter().zip(&vars).rev() {
                s = for_loop(v, r.lo, r.hi, LoopKind::Reduction, r.mode, vec![s]);
            }
            stmts.push(s);
        }
        stmts.push(slot(k, &|p, ch, a| (body.finish)(p, ch, Expr::Load(a)))?);
        match (tiles, t) {
            (Some(n), Some(t)) => out.push(for_loop(
                t,
                0,
                n,
                LoopKind::Spatial,
                LoopMode::Serial,
                stmts,
            )),
            _ => out.extend(stmts),
        }
    }
    Ok(out)
}
