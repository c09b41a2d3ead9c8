//! [`CompiledModel`]: a graph and its weights, compiled to native code, ready to run.
//!
//! Compiling runs the whole pipeline as plain calls: verify, (optionally) the default passes,
//! bind the weights, lower to loop IR, JIT-compile, and plan memory. What the model owns:
//! - the JIT code ([`JitProgram`], freed when the model is dropped);
//! - the constant buffers (weights, folded and packed at compile time);
//! - a static memory plan: every activation at a fixed offset of one 64-byte-aligned arena,
//!   chosen from liveness ([`memplan`]); flatten is a view and takes no memory; graph inputs are
//!   read in place from the caller's tensors;
//! - at one thread, fold windows for the activations the band schedule folds
//!   (`runtime::fold`): each lives in a few hundred KB that stay in L2, not in the arena.
//!
//! What must hold when a kernel runs: each buffer it writes is an arena range (or a fold
//! window) that no buffer it reads overlaps. The memory plan guarantees this, because a
//! kernel's operands and its result are live at the kernel's step; [`CompiledModel::compile`]
//! checks it once more per kernel, so a planning bug is an error, never aliasing. The JIT then
//! checks every slice length and every fold window's span.
//!
//! Concurrency: `run` takes `&self`; each call borrows an arena and its fold windows from a
//! small free list (or allocates them the first time), so any number of threads may run one
//! model at once.
//!
//! Threads: with `threads > 1` the model owns a [`Team`] of worker threads, which spin between
//! the kernels of a call and sleep between calls; a call splits each kernel over its *work
//! items* (its top-level output tiles), never over a reduction, and only when the loop-IR
//! verifier proved that distinct items write disjoint elements. The team serves one call at a
//! time: concurrent calls on a multi-threaded model take turns. Every output element is computed by the same code in the same order whatever the
//! split, so results are bit-identical for any thread count.

use std::sync::Mutex;

use super::bands::Schedule;
use super::calls::{CallPlan, Port, Slot};
use super::fold::Fold;
use super::memplan::{self, MemPlan};
use crate::codegen::{Arg, FoldWindow, HUGE_PAGE, Isa, JitOptions, JitProgram, Team};
use crate::graph::{self, Graph};
use crate::loops::{Family, Kernel, MAX_KERNEL_BUFFERS, Program};
use crate::tensor::AsTensorView;
use crate::{Error, Result, Tensor, TensorMap, lower, passes};

/// How to compile. `#[non_exhaustive]`: build one with [`Options::default`] (or
/// [`Options::new`]) and the `with_*` setters, so that new options do not break callers:
///
/// ```
/// let options = mnv2c::Options::new().with_threads(2).with_optimize(false);
/// assert_eq!((options.threads, options.optimize), (2, false));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// Run the default pass pipeline (fold batch norm, fuse relu6 and residual adds) first.
    pub optimize: bool,
    /// Threads that run each call (1 = the calling thread only). With more, the model owns a
    /// team of that many threads (the caller's included) and splits every kernel it can over
    /// them.
    pub threads: usize,
    /// The vector tier of the micro-kernels (the 1x1 GEMM strips and depthwise rows; `Auto`:
    /// the widest this CPU runs; a tier the CPU lacks is a usage error). Every tier gives
    /// bit-identical results.
    pub isa: Isa,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            optimize: true,
            threads: 1,
            isa: Isa::Auto,
        }
    }
}

impl Options {
    /// The defaults: the default pass pipeline, one thread.
    pub fn new() -> Options {
        Options::default()
    }

    /// Whether to run the default pass pipeline first (see [`Options::optimize`]).
    pub fn with_optimize(mut self, optimize: bool) -> Options {
        self.optimize = optimize;
        self
    }

    /// Threads per call, between 1 and [`MAX_THREADS`] (see [`Options::threads`]).
    pub fn with_threads(mut self, threads: usize) -> Options {
        self.threads = threads;
        self
    }

    /// The vector tier of the micro-kernels (see [`Options::isa`]).
    pub fn with_isa(mut self, isa: Isa) -> Options {
        self.isa = isa;
        self
    }
}

/// The most threads a model may ask for: far above any useful count, low enough to be a typo.
pub const MAX_THREADS: usize = 256;

/// The two outputs of a classifier: logits and probabilities, each `[N, classes]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub logits: Tensor,
    pub probs: Tensor,
}

#[derive(Debug)]
struct Step {
    /// One slot per buffer the kernel declares, in declaration order.
    slots: Vec<Slot>,
    /// The single buffer the kernel writes (an arena range or a fold window).
    output: Slot,
    layer: Layer,
}

/// What a kernel computes, for benchmarks: the graph node, its family and its work, as
/// lowering recorded them on the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// The graph node the kernel computes.
    pub name: String,
    pub family: Family,
    /// Floating-point operations (2 per multiply-add of a convolution; 0 for other ops).
    pub flops: u64,
    /// The vector tier its kernel runs in (`Portable` unless it calls wide micro-kernels).
    pub isa: Isa,
}

impl Layer {
    fn of(k: &Kernel, isa: Isa) -> Result<Layer> {
        let s = k.schedule.as_ref().ok_or_else(|| {
            Error::Internal(format!("kernel '{}' was not made by lowering", k.name))
        })?;
        Ok(Layer {
            name: k.name.clone(),
            family: s.family,
            flops: k.flops,
            isa,
        })
    }
}

/// A model input or output as a caller sees it: its graph name, shape and layout.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TensorInfo {
    /// The graph value's name (`input`, `prob`; printed `%input` in the IR).
    pub name: String,
    pub dims: Vec<usize>,
    pub layout: Layout,
}

/// How a tensor's elements are ordered (always row-major f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Layout {
    /// `[N, H, W, C]`, channels last: every 4-D activation in mnv2c.
    Nhwc,
    /// Any other rank, row-major over the dimensions as given (`[N, classes]`).
    RowMajor,
}

impl TensorInfo {
    fn of(port: &Port) -> TensorInfo {
        let name = crate::loops::value_of_buffer(&port.name).unwrap_or_else(|| port.name.clone());
        TensorInfo {
            name,
            dims: port.dims.clone(),
            layout: if port.dims.len() == 4 {
                Layout::Nhwc
            } else {
                Layout::RowMajor
            },
        }
    }
}

/// A compiled model; see the module doc. Its `Debug` prints a summary (ports, kernels, memory),
/// not its weights.
pub struct CompiledModel {
    jit: JitProgram,
    program: Program,
    steps: Vec<Step>,
    /// The order of the kernel calls, each on a range of work items (`runtime::bands`).
    schedule: Schedule,
    consts: Consts,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
    input_info: Vec<TensorInfo>,
    output_info: Vec<TensorInfo>,
    plan: MemPlan,
    /// Arena length in f32 elements.
    arena_len: usize,
    /// The folded activations (`runtime::fold`), window `i` for fold `i`.
    folds: Vec<Fold>,
    /// Activation memory not in use by a running call.
    free_memory: Mutex<Vec<Memory>>,
    /// The model's worker threads, when it has more than one (one call at a time).
    team: Option<Mutex<Team>>,
    threads: usize,
}

/// The activation memory of one call: the arena and the fold windows.
#[derive(Debug)]
struct Memory {
    arena: Arena,
    windows: Vec<FoldWindow>,
}

/// A 64-byte-aligned run of f32 inside an over-allocated vector (no `unsafe` needed).
#[derive(Debug)]
struct Arena {
    storage: Vec<f32>,
    start: usize,
    len: usize,
}

impl Arena {
    /// `what` names the block in errors ("the activation arena"). `huge`: start at a 2 MB
    /// boundary and ask for transparent huge pages (`codegen::advise_huge_pages`) when the
    /// block spans at least two of them (the activation arena: on the seed model the
    /// 56x56-input 1x1 layers ran 5-12% faster with huge pages).
    fn new(len: usize, what: &str, huge: bool) -> Result<Arena> {
        let mut a = Arena::reserve(len, what, huge)?;
        a.storage.resize(a.start + len, 0.0);
        Ok(a)
    }

    /// As [`new`](Self::new), but empty: the caller fills `storage` up to `start + len` with
    /// pushes, which never reallocate (the capacity is reserved), so the alignment holds and
    /// each page is first touched by the value written there.
    fn reserve(len: usize, what: &str, huge: bool) -> Result<Arena> {
        let huge = huge && len.saturating_mul(4) >= 2 * HUGE_PAGE;
        let align = if huge { HUGE_PAGE } else { memplan::ALIGN };
        let extra = align / 4;
        let total = len
            .checked_add(extra)
            .ok_or_else(|| Error::TooLarge(format!("{what}: the size overflows")))?;
        let mut storage: Vec<f32> = Vec::new();
        storage
            .try_reserve_exact(total)
            .map_err(|_| Error::OutOfMemory {
                what: what.into(),
                bytes: total.saturating_mul(4),
            })?;
        let start = storage.as_ptr().align_offset(align);
        if start > extra {
            return Err(Error::Internal(format!("cannot align {what}")));
        }
        if huge {
            // Before the pages are first touched.
            crate::codegen::advise_huge_pages(&mut storage.spare_capacity_mut()[start..]);
        }
        storage.resize(start, 0.0);
        Ok(Arena {
            storage,
            start,
            len,
        })
    }

    fn slice_mut(&mut self) -> &mut [f32] {
        &mut self.storage[self.start..self.start + self.len]
    }

    fn slice(&self) -> &[f32] {
        &self.storage[self.start..self.start + self.len]
    }
}

/// The constant buffers (weights, folded and packed), each at a 64-byte-aligned offset of one
/// aligned block: the micro-kernels load weight vectors whole, and a 64-byte vector that
/// straddles two cache lines costs two loads (measured: a depthwise row in L1 at 75 GFLOP/s
/// with 16-byte-aligned operands, 125 aligned). The block asks for transparent huge pages
/// (`Arena::reserve`): a model's weights (14 MB for the seed's) stream through every call, and
/// in 4 KB pages they span more than the core's second-level TLB holds beside the activations.
/// On the Zen 4 host (1 thread, two models in one process, 40 interleaved rounds in each
/// order, 2026-12-02): whole model avx512 9.41 -> 8.98 and 9.30 -> 9.03 ms, avx2 9.53 -> 9.36
/// and 9.90 -> 9.54; most on the 7x7 layers and the logits (`conv9_1` 0.445 -> 0.395 ms).
#[derive(Debug)]
struct Consts {
    block: Arena,
    /// `(start, len)` of each constant in `block`.
    ranges: Vec<(usize, usize)>,
}

impl Consts {
    /// Copies each value into the block, dropping it as it goes and handing the freed heap
    /// back to the system every 2 MB (`codegen::release_free_heap`), so compiling never holds
    /// a second copy of the weights: peak RSS of `mnv2c run` on the seed model 59.0-60.4 MB
    /// (filled beside the kernel compile, `compile_beside_consts`), against 74.0-74.4 without
    /// the hand-back and 59.2 with a block per constant (2026-12-02).
    fn new(values: Vec<Vec<f32>>) -> Result<Consts> {
        const ALIGN: usize = memplan::ALIGN / 4;
        let mut ranges = Vec::with_capacity(values.len());
        let mut len = 0usize;
        for v in &values {
            let start = len;
            len = start
                .checked_add(v.len())
                .and_then(|e| e.checked_next_multiple_of(ALIGN))
                .ok_or_else(|| Error::TooLarge("the constants: the size overflows".into()))?;
            ranges.push((start, v.len()));
        }
        let mut block = Arena::reserve(len, "the constants", true)?;
        let base = block.start;
        let mut freed = 0usize;
        for (v, &(start, n)) in values.into_iter().zip(&ranges) {
            block.storage.resize(base + start, 0.0);
            block.storage.extend_from_slice(&v);
            drop(v);
            freed = freed.saturating_add(n * 4);
            if freed >= HUGE_PAGE {
                crate::codegen::release_free_heap();
                freed = 0;
            }
        }
        block.storage.resize(base + len, 0.0);
        Ok(Consts { block, ranges })
    }

    fn get(&self, i: usize) -> &[f32] {
        let (start, n) = self.ranges[i];
        &self.block.slice()[start..start + n]
    }

    fn values(&self) -> usize {
        self.ranges.iter().map(|r| r.1).sum()
    }

    fn len(&self) -> usize {
        self.ranges.len()
    }
}

/// Compiles `kernels` while a second thread copies `values` into the constants' block, whose
/// first touch of every page (and on huge pages any compaction the kernel does to find them)
/// is most of its cost; the two are independent. Sequential when no thread can be started.
fn compile_beside_consts(
    kernels: &[Kernel],
    options: &JitOptions,
    values: Vec<Vec<f32>>,
) -> Result<(JitProgram, Consts)> {
    let slot = Mutex::new(Some(values));
    // Taken once, by the thread or (when it could not start) by this one; `take` cannot
    // panic while holding the lock, so a poisoned one still holds the values.
    let take = || {
        slot.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .unwrap_or_default()
    };
    std::thread::scope(|s| {
        let filler = std::thread::Builder::new()
            .name("mnv2c-constants".into())
            .spawn_scoped(s, || Consts::new(take()));
        let jit = JitProgram::compile_kernels(kernels, options);
        let consts = match filler {
            Ok(h) => h
                .join()
                .map_err(|_| Error::Internal("the constants' thread panicked".into()))?,
            // The closure was dropped unrun: the values are still in the slot.
            Err(_) => Consts::new(take()),
        };
        Ok((jit?, consts?))
    })
}

impl CompiledModel {
    /// Compiles `graph` with `weights` (the graph's parameters by name, as loaded or seeded).
    pub fn compile(graph: &Graph, weights: &TensorMap, options: &Options) -> Result<CompiledModel> {
        if !(1..=MAX_THREADS).contains(&options.threads) {
            return Err(Error::Usage(format!(
                "threads must be between 1 and {MAX_THREADS}, got {}",
                options.threads
            )));
        }
        graph::verify(graph)?;
        let mut graph = graph.clone();
        if options.optimize {
            passes::optimize(&mut graph)?;
        }
        let consts = graph::consts::bind_referenced(&graph, weights)?;
        let mut program = lower::lower_for_threads(&graph, &consts, options.threads)?;
        // The program holds every value the kernels read (folded, packed): the bound values
        // are dead, and dropping them now keeps the peak memory of compiling down.
        drop(consts);
        // One thread runs in bands (`runtime::bands`); with more, each thread's own range of
        // every layer already stays in its core's L2, and bands would only add team calls
        // (measured at 2 threads: 4.19-4.42 -> 4.82-4.86 ms, see `docs/architecture.md`).
        let banded = options.threads <= 1;
        // Fold windows need double mapping (Linux); without it the band schedule still runs.
        let folded = banded && FoldWindow::new(1, 0).is_some();
        let CallPlan {
            calls,
            consts,
            inputs,
            outputs,
            plan,
            schedule,
            folds,
            arena_len,
        } = CallPlan::new(&mut program, banded, folded)?;
        let jit_options = JitOptions {
            isa: options.isa,
            ..JitOptions::default()
        };
        let (jit, consts) = compile_beside_consts(&program.kernels, &jit_options, consts)?;
        let steps = calls
            .into_iter()
            .zip(&program.kernels)
            .enumerate()
            .map(|(i, (call, k))| {
                Ok(Step {
                    slots: call.slots,
                    output: call.output,
                    layer: Layer::of(k, jit.kernel_isa(i).unwrap_or(Isa::Portable))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (team, threads) = match options.threads {
            1 => (None, 1),
            n => (Some(Mutex::new(Team::new(n)?)), n),
        };
        Ok(CompiledModel {
            jit,
            steps,
            schedule,
            consts,
            input_info: inputs.iter().map(TensorInfo::of).collect(),
            output_info: outputs.iter().map(TensorInfo::of).collect(),
            inputs,
            outputs,
            plan,
            arena_len,
            folds,
            free_memory: Mutex::new(Vec::new()),
            program,
            team,
            threads,
        })
    }

    /// Runs a classifier (a graph with the outputs logits, probabilities) on one input.
    pub fn run(&self, input: &Tensor) -> Result<Output> {
        if self.outputs.len() != 2 {
            return Err(Error::Usage(format!(
                "run() expects a model with two outputs (logits, probabilities); this one has {}: use run_all",
                self.outputs.len()
            )));
        }
        let mut outs = self.run_all(std::slice::from_ref(input))?.into_iter();
        match (outs.next(), outs.next()) {
            (Some(logits), Some(probs)) => Ok(Output { logits, probs }),
            _ => Err(Error::Codegen("a model output went missing".into())),
        }
    }

    /// Runs the model and returns its outputs by graph name (`prob`, not `%prob`): the general
    /// form of [`run`](Self::run), for a graph that is not a two-output classifier.
    pub fn run_named<T: AsTensorView>(&self, inputs: &[T]) -> Result<TensorMap> {
        let values = self.run_all(inputs)?;
        Ok(self
            .output_info
            .iter()
            .map(|i| i.name.clone())
            .zip(values)
            .collect())
    }

    /// The model's inputs, in the order the run methods take them.
    pub fn inputs(&self) -> &[TensorInfo] {
        &self.input_info
    }

    /// The model's outputs, in the order [`run_all`](Self::run_all) returns them.
    pub fn outputs(&self) -> &[TensorInfo] {
        &self.output_info
    }

    /// Runs the model on its inputs (in graph order: [`inputs`](Self::inputs)); returns the
    /// outputs in graph order ([`outputs`](Self::outputs)). Inputs may be owned [`Tensor`]s or
    /// borrowed [`TensorView`](crate::tensor::TensorView)s.
    pub fn run_all<T: AsTensorView>(&self, inputs: &[T]) -> Result<Vec<Tensor>> {
        self.run_timed(inputs, &mut |_, _| {})
    }

    /// [`run_all`](Self::run_all), reporting each kernel's wall time to `timed(step, seconds)`
    /// (the step indexes [`layers`](Self::layers)).
    pub fn run_timed<T: AsTensorView>(
        &self,
        inputs: &[T],
        timed: &mut (dyn FnMut(usize, f64) + Send),
    ) -> Result<Vec<Tensor>> {
        let mut outputs = self.new_outputs()?;
        self.run_into_timed(inputs, &mut outputs, timed)?;
        Ok(outputs)
    }

    /// Tensors of the output shapes, to pass to [`run_into`](Self::run_into).
    pub fn new_outputs(&self) -> Result<Vec<Tensor>> {
        self.outputs
            .iter()
            .map(|p| Tensor::zeros(p.dims.clone()))
            .collect()
    }

    /// Runs the model, writing the outputs into `outputs` (shaped as
    /// [`new_outputs`](Self::new_outputs) makes them). **The fast path:** with outputs made once
    /// and inputs borrowed ([`TensorView`](crate::tensor::TensorView)), a call copies no input
    /// and allocates nothing once an activation arena is free for it: arenas are kept in a
    /// free list, so after the first call (and after the first of each set of concurrent
    /// calls) none is allocated.
    pub fn run_into<T: AsTensorView>(&self, inputs: &[T], outputs: &mut [Tensor]) -> Result<()> {
        self.run_into_timed(inputs, outputs, &mut |_, _| {})
    }

    fn run_into_timed<T: AsTensorView>(
        &self,
        inputs: &[T],
        outputs: &mut [Tensor],
        timed: &mut (dyn FnMut(usize, f64) + Send),
    ) -> Result<()> {
        check_ports("input", &self.inputs, inputs)?;
        check_ports("output", &self.outputs, outputs)?;
        let mut memory = self.take_memory()?;
        let Memory { arena, windows } = &mut memory;
        let result = match &self.team {
            Some(team) => match team.lock() {
                // The workers spin between this call's kernels (the session), and sleep after.
                Ok(team) => {
                    let _session = team.session();
                    self.execute(arena.slice_mut(), windows, inputs, Some(&team), timed)
                }
                Err(_) => Err(Error::Internal(
                    "a thread of an earlier call panicked".into(),
                )),
            },
            None => self.execute(arena.slice_mut(), windows, inputs, None, timed),
        };
        let result = result.and_then(|()| {
            let data = arena.slice_mut();
            for (port, out) in self.outputs.iter().zip(outputs.iter_mut()) {
                let values: &[f32] = match &port.slot {
                    Slot::Arena(r) => &data[r.clone()],
                    Slot::Const(i) => self.consts.get(*i),
                    Slot::Input(i) => inputs[*i].as_view().data(),
                    // `runtime::fold` never folds a graph output.
                    Slot::Fold(_) => {
                        return Err(Error::Internal(format!(
                            "graph output {} is in a fold window",
                            port.name
                        )));
                    }
                };
                out.data_mut().copy_from_slice(values);
            }
            Ok(())
        });
        self.return_memory(memory);
        result
    }

    fn execute<T: AsTensorView>(
        &self,
        arena: &mut [f32],
        windows: &mut [FoldWindow],
        inputs: &[T],
        team: Option<&Team>,
        timed: &mut (dyn FnMut(usize, f64) + Send),
    ) -> Result<()> {
        for run in &self.schedule.runs {
            let i = run.kernel;
            let step = self
                .steps
                .get(i)
                .ok_or_else(|| Error::Internal(format!("no kernel {i}")))?;
            let start = std::time::Instant::now();
            // The output (checked at compile time to be an arena range or a fold window that
            // no input overlaps) borrowed mutably, everything else shared.
            let (out_range, out_fold) = match &step.output {
                Slot::Fold(f) => (0..0, *f),
                Slot::Arena(r) => (r.clone(), windows.len()),
                _ => return Err(Error::Internal(format!("kernel {i} writes no activation"))),
            };
            let (before, rest) = arena.split_at_mut(out_range.start);
            let (out, after) = rest.split_at_mut(out_range.len());
            let (before, after): (&[f32], &[f32]) = (before, after);
            let mut out = Some(out);
            let (w_before, w_rest) = windows.split_at_mut(out_fold.min(windows.len()));
            let (mut w_out, w_after): (Option<&mut FoldWindow>, &[FoldWindow]) =
                match w_rest.split_first_mut() {
                    Some((o, a)) => (Some(o), a),
                    None => (None, &[]),
                };
            let w_before: &[FoldWindow] = w_before;
            // Arguments on the stack (no allocation per kernel): the kernel's buffers, then
            // empty padding that `run_kernel` never sees (it gets `args[..n]`). A slot that
            // does not resolve (it cannot happen) gets an empty slice, which the JIT refuses.
            let n = step.slots.len();
            let mut args: [Arg<'_>; MAX_KERNEL_BUFFERS] = std::array::from_fn(|j| {
                match step.slots.get(j) {
                    Some(s @ Slot::Arena(_)) if *s == step.output => match out.take() {
                        Some(o) => Arg::Write(o),
                        // Checked at compile time: a kernel writes its output slot once.
                        None => Arg::Read(&[]),
                    },
                    Some(Slot::Arena(r)) if r.end <= out_range.start => {
                        before.get(r.clone()).map_or(Arg::Read(&[]), Arg::Read)
                    }
                    Some(Slot::Arena(r)) => {
                        let r = r.start - out_range.end..r.end - out_range.end;
                        after.get(r).map_or(Arg::Read(&[]), Arg::Read)
                    }
                    Some(Slot::Fold(f)) if *f == out_fold => match w_out.take() {
                        Some(w) => Arg::FoldedMut(w),
                        None => Arg::Read(&[]),
                    },
                    Some(Slot::Fold(f)) if *f < out_fold => {
                        w_before.get(*f).map_or(Arg::Read(&[]), Arg::Folded)
                    }
                    Some(Slot::Fold(f)) => w_after
                        .get(f - out_fold - 1)
                        .map_or(Arg::Read(&[]), Arg::Folded),
                    Some(Slot::Const(c)) => Arg::Read(self.consts.get(*c)),
                    Some(Slot::Input(x)) => Arg::Read(inputs[*x].as_view().data()),
                    None => Arg::Read(&[]),
                }
            });
            let args = &mut args[..n];
            let items = run.items.clone();
            match team {
                Some(team) => self.jit.run_kernel_team(i, args, items, team)?,
                None => self.jit.run_kernel_items(i, args, items)?,
            }
            timed(i, start.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// An arena and fold windows for one call: from the free list, or new.
    fn take_memory(&self) -> Result<Memory> {
        let reused = self.free_memory.lock().ok().and_then(|mut v| v.pop());
        if let Some(m) = reused {
            return Ok(m);
        }
        let arena = Arena::new(self.arena_len, "the activation arena", true)?;
        let windows = self
            .folds
            .iter()
            .map(|f| {
                let len = f.elems;
                FoldWindow::new(len, f.offset).ok_or_else(|| Error::OutOfMemory {
                    what: "a fold window (double-mapped memory)".into(),
                    bytes: len.saturating_mul(8),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Memory { arena, windows })
    }

    fn return_memory(&self, memory: Memory) {
        if let Ok(mut v) = self.free_memory.lock() {
            v.push(memory);
        }
    }

    /// The memory plan (what `--emit memplan` prints).
    pub fn memory_plan(&self) -> &MemPlan {
        &self.plan
    }

    /// The order of the kernel calls: the band schedule for one thread (`runtime::bands`),
    /// layer by layer for more.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The activations that live in fold windows instead of the arena (`runtime::fold`): some
    /// at one thread, where double mapping is available; none otherwise.
    pub fn folds(&self) -> &[Fold] {
        &self.folds
    }

    /// The lowered program (loop IR of every kernel).
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The JIT-compiled code.
    pub fn jit(&self) -> &JitProgram {
        &self.jit
    }

    /// The number of threads a call runs on.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// What each kernel computes, in execution order.
    pub fn layers(&self) -> impl Iterator<Item = &Layer> {
        self.steps.iter().map(|s| &s.layer)
    }

    /// Input shapes, in graph order.
    pub fn input_dims(&self) -> Vec<Vec<usize>> {
        self.inputs.iter().map(|p| p.dims.clone()).collect()
    }
}

/// Checks that `tensors` match the model's `ports` one to one, shape for shape.
fn check_ports<T: AsTensorView>(what: &str, ports: &[Port], tensors: &[T]) -> Result<()> {
    if tensors.len() != ports.len() {
        return Err(Error::Input(format!(
            "the model has {} {what}(s), got {}",
            ports.len(),
            tensors.len()
        )));
    }
    for (port, t) in ports.iter().zip(tensors) {
        let t = t.as_view();
        if t.dims() != port.dims.as_slice() {
            return Err(Error::Input(format!(
                "{what} {} must be {}, got {}",
                port.name,
                graph::TensorType::new(port.dims.clone()),
                t.ty()
            )));
        }
    }
    Ok(())
}

impl std::fmt::Debug for CompiledModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let const_values: usize = self.consts.values();
        f.debug_struct("CompiledModel")
            .field("inputs", &self.input_info)
            .field("outputs", &self.output_info)
            .field("kernels", &self.steps.len())
            .field("constants", &self.consts.len())
            .field("constant_bytes", &(const_values * 4))
            .field("arena_bytes", &self.plan.arena_bytes)
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

// A compiled model must be shareable between threads (see the module doc).
const _: fn() = || {
    fn check<T: Send + Sync>() {}
    check::<CompiledModel>();
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Arenas are zeroed and aligned: 64 bytes, or a whole huge page when asked for one that
    /// spans at least two (the rest of the block is never touched).
    #[test]
    fn arenas_are_zeroed_and_aligned() {
        for (len, huge, align) in [
            (1000, true, memplan::ALIGN),
            (HUGE_PAGE / 4, true, memplan::ALIGN),
            (HUGE_PAGE / 2 + 3, true, HUGE_PAGE),
            (HUGE_PAGE / 2 + 3, false, memplan::ALIGN),
        ] {
            let mut a = Arena::new(len, "a test arena", huge).unwrap();
            assert_eq!(a.slice().len(), len);
            assert_eq!(a.slice().as_ptr() as usize % align, 0, "{len} {huge}");
            assert!(a.slice().iter().all(|&v| v == 0.0));
            a.slice_mut()[len - 1] = 1.0;
            assert_eq!(a.slice()[len - 1], 1.0);
        }
    }

    /// The constants keep their values, each 64-byte aligned in one block (huge-page aligned
    /// once it spans two huge pages), empty ones included.
    #[test]
    fn constants_share_one_aligned_block() {
        for big in [5, HUGE_PAGE / 2] {
            let values: Vec<Vec<f32>> = [3, 0, 17, big, 1]
                .iter()
                .enumerate()
                .map(|(i, &n)| (0..n).map(|j| (i * 1000 + j) as f32).collect())
                .collect();
            let c = Consts::new(values.clone()).unwrap();
            assert_eq!(c.len(), values.len());
            assert_eq!(c.values(), values.iter().map(Vec::len).sum::<usize>());
            for (i, v) in values.iter().enumerate() {
                assert_eq!(c.get(i), &v[..]);
                assert_eq!(
                    c.get(i).as_ptr() as usize % memplan::ALIGN,
                    0,
                    "constant {i}"
                );
            }
            let huge = c.block.len * 4 >= 2 * HUGE_PAGE;
            assert_eq!(huge, big == HUGE_PAGE / 2);
            if huge {
                assert_eq!(c.get(0).as_ptr() as usize % HUGE_PAGE, 0);
            }
        }
    }
}
