//! The JIT: compiles kernels into executable memory and calls them. This is the only module of
//! the crate allowed to use `unsafe`, and every `unsafe` block carries a `SAFETY:` note.
//!
//! ## The soundness argument for calling generated code
//! Generated code does no bounds checks. It is safe to call because:
//! 1. every kernel compiled here passed [`loops::verify`](fn@crate::loops::verify), which proves each
//!    load and store inside `0..len` of its buffer for every iteration (lanes included), and that
//!    only `Output`/`Scratch` buffers are stored;
//! 2. [`JitProgram::run_kernel`] checks, before every call, that it got exactly one slice per
//!    declared buffer, each of exactly the declared length, and a mutable slice for every buffer
//!    the kernel writes; or, for a folded buffer, a [`FoldWindow`] (`len` elements mapped twice)
//!    that the call's accesses, from their closed form, span at most `len` elements of, so
//!    that they all land in its mapping;
//! 3. Rust's borrow rules make a mutable slice alias nothing else passed, so the code's
//!    read-only/`can_move` loads read memory nobody writes during the call;
//! 4. a raw micro-kernel (the avx2/avx512 tiers, `codegen::micro`) is called only by the
//!    Cranelift code of a verified kernel, at operand addresses whose footprints
//!    (`loops::micro::Op::footprint`) `loops::verify` proved inside the buffers, and it touches
//!    exactly that footprint (masked lanes do not access memory); it is defined only for a tier
//!    [`Isa::resolve`] found on the running CPU, so it never executes an unknown instruction.
//!
//! ## Compiling
//! [`JitProgram::compile_kernels`] runs the pipeline shared with object files
//! (`codegen/compile.rs`): it translates every kernel on the calling thread, compiles the
//! Cranelift functions on up to [`JitOptions::compile_threads`] scoped threads (each with its own
//! `Context`; the `JITModule` is only touched by the calling thread), then defines the bytes and
//! relocations in kernel order, so the code is the same for any thread count. Each kernel is
//! compiled at its own [`OptLevel`] (a schedule decision) unless
//! [`JitOptions::opt_level`] overrides it; Cranelift's IR verifier runs only if
//! [`JitOptions::verifier`] (default: debug builds).
//!
//! ## Calls allocate nothing
//! A call checks its arguments into a stack array of [`MAX_KERNEL_BUFFERS`] pointers (verified
//! kernels declare no more), and a split call records its claimed parts in one `AtomicU64`
//! (at most [`MAX_SPLIT_PARTS`] parts), so [`JitProgram::run_kernel`] and
//! [`JitProgram::run_kernel_split`] never touch the heap (the executor may).
//!
//! ## Threads
//! A kernel can also be split into ranges of its work items run on several threads at once
//! ([`JitProgram::run_kernel_split`] with any executor, [`JitProgram::run_kernel_team`] on a
//! model's [`Team`] of spinning workers); that is done only for a kernel whose items were
//! proven to write disjoint memory (`loops::verify::parallel_safe`), otherwise it runs in one
//! piece.
//!
//! ## Tiers
//! [`JitOptions::isa`] picks the vector tier. For avx2/avx512, phase 0 assembles one raw
//! kernel per distinct micro-kernel key (`micro::key`: tier and op parameters) and defines its
//! bytes in the same module (local linkage, no relocations); the Cranelift kernels call them.
//! [`JitProgram::kernel_isa`] tells which kernels do. [`WidePeak`] is the tier's FMA-throughput
//! kernel for `mnv2c bench`.
//!
//! `JITModule` is `Send` but not `Sync`; it is kept in a `Mutex` that only `Drop` touches, and
//! the running code is reached through plain `extern "C"` function pointers, which are `Send +
//! Sync` (the code is re-entrant: it has no state outside its arguments). So a [`JitProgram`] can
//! be shared by reference between threads and run concurrently. The code memory is released
//! (`free_memory`) when the `JitProgram` is dropped, which cannot happen while a borrow runs it.

mod fold_window;
mod team;

pub use fold_window::FoldWindow;
pub use team::{Session, Team};

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};

use super::compile::{Isas, compile_into, err};
use super::micro::{self, Isa};
use super::{EXPF_SYMBOL, MicroFns, micro_signature, micros, mnv2c_expf};
use crate::loops::verify::LoopWindow;
use crate::loops::{self, Kernel, MAX_KERNEL_BUFFERS, OptLevel, Program, Role};
use crate::{Error, Result};

/// A compiled kernel: `fn(bufs, begin, end)` (see [`codegen`](super)).
type KernelFn = unsafe extern "C" fn(*const *mut f32, i64, i64);

/// How to compile.
#[derive(Clone, Debug)]
pub struct JitOptions {
    /// Compile every kernel at this level instead of its own `Kernel::opt_level`.
    pub opt_level: Option<OptLevel>,
    /// Keep the Cranelift IR text of every function (for `--emit clif`).
    pub keep_clif: bool,
    /// Keep Cranelift's disassembly listing of every function (for `--emit asm`).
    pub keep_asm: bool,
    /// Run Cranelift's IR verifier on every function. It costs 10-30% of compile time and has
    /// never fired on translated kernels; default on in debug builds only (the kernel tests
    /// also compile every model kernel with it on).
    pub verifier: bool,
    /// Threads that compile functions (the results do not depend on it).
    pub compile_threads: usize,
    /// The vector tier of micro-kernels (`Auto`: the widest this CPU runs). A tier the CPU
    /// lacks is an error before any code exists.
    pub isa: Isa,
}

impl Default for JitOptions {
    fn default() -> JitOptions {
        JitOptions {
            opt_level: None,
            keep_clif: false,
            keep_asm: false,
            verifier: cfg!(debug_assertions),
            compile_threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            isa: Isa::Auto,
        }
    }
}

/// Runs the parts of a split kernel call: `exec(parts, task)` calls `task(part)` for every
/// `part` in `0..parts`, on any threads, and returns when all calls have finished.
pub type Executor<'a> = dyn Fn(usize, &(dyn Fn(usize) + Sync)) + 'a;

/// One argument buffer of a kernel call.
#[derive(Debug)]
pub enum Arg<'a> {
    /// A buffer the kernel only reads (`Input`, `Const`).
    Read(&'a [f32]),
    /// A buffer the kernel may write (`Output`, `Scratch`); also accepted for read-only ones.
    Write(&'a mut [f32]),
    /// A folded buffer the kernel only reads, in its window (`runtime::fold`).
    Folded(&'a FoldWindow),
    /// A folded buffer the kernel may write.
    FoldedMut(&'a mut FoldWindow),
}

#[derive(Debug)]
struct JitKernel {
    name: String,
    /// The verified buffer declarations: name, length, role.
    buffers: Vec<(String, usize, Role)>,
    f: KernelFn,
    code_size: usize,
    /// Work items (iterations of the top-level loops).
    items: i64,
    /// Whether distinct work items write disjoint memory (`loops::verify::parallel_safe`).
    parallel_safe: bool,
    /// The tier its micro-kernels run in (`Portable` if it has none or they fell back).
    isa: Isa,
    /// Per buffer, its accesses in closed form (`loops::verify::loop_windows`), if they have
    /// one: what a call with a fold window is checked against.
    windows: Vec<Option<Vec<LoopWindow>>>,
}

/// The most parts a split call runs in (see [`JitProgram::run_kernel_split`]): one bit each of
/// the `u64` that records which parts were claimed, so a split call allocates nothing. Far more
/// than the threads of this machine times the parts per thread a caller asks for.
pub const MAX_SPLIT_PARTS: usize = 64;

/// The buffer pointers of one call (the first `k.buffers.len()` entries; the rest null), on the
/// caller's stack and shared by (or copied to) the threads of a split call.
#[derive(Clone, Copy)]
struct CallPtrs([*mut f32; MAX_KERNEL_BUFFERS]);

impl CallPtrs {
    /// The array the kernel takes (a method, so closures capture the whole `Sync` wrapper).
    fn array(&self) -> *const *mut f32 {
        self.0.as_ptr()
    }
}

// SAFETY: the pointers are only dereferenced by the kernel code in `run_kernel_split`, while
// the slices they come from are borrowed by that call; concurrent calls on them run disjoint
// work-item ranges of a kernel whose items were proven (`parallel_safe`) to touch disjoint
// elements of every written buffer, and read-only buffers are only read. So sharing them between
// the threads of one split call creates no data race.
unsafe impl Sync for CallPtrs {}

// SAFETY: as for `Sync`: a copy sent to a `Team` worker is only dereferenced (by the kernel) for
// a part that worker claimed while the call that checked the pointers waits in `Team::run`.
unsafe impl Send for CallPtrs {}

/// Compiled kernels in JIT memory, callable from several threads at once.
pub struct JitProgram {
    module: Option<Mutex<JITModule>>,
    kernels: Vec<JitKernel>,
    clif: String,
    asm: String,
    isa: Isa,
    /// Bytes of the raw micro-kernels (shared by the kernels that call them).
    micro_bytes: usize,
}

impl std::fmt::Debug for JitProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitProgram")
            .field("kernels", &self.kernels)
            .finish_non_exhaustive()
    }
}

// `JitProgram` must stay shareable between threads (see the module doc).
const _: fn() = || {
    fn check<T: Send + Sync>() {}
    check::<JitProgram>();
};

/// The callable kernels of a finalized module: entry points, buffer lengths, work items, and
/// the tier each runs in (`raw`: the micro-kernels defined for `isa`).
fn finalized_kernels(
    module: &JITModule,
    kernels: &[Kernel],
    defined: &[(FuncId, usize)],
    (isa, raw): (Isa, &MicroFns),
) -> Result<Vec<JitKernel>> {
    let mut out = Vec::with_capacity(kernels.len());
    for (k, &(id, code_size)) in kernels.iter().zip(defined) {
        let ptr = module.get_finalized_function(id);
        // SAFETY: `ptr` is the entry of a function just compiled and finalized (executable)
        // in `module`, with `kernel_signature`: one pointer argument, no result, the host's
        // default (System V / C) calling convention, which is what `KernelFn` declares. The
        // pointer stays valid until `free_memory`, which only `Drop` calls, after every
        // borrow of `self` (and so every call) has ended.
        let f = unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) };
        let buffers = k
            .buffers
            .iter()
            .map(|b| {
                let len = b
                    .len()
                    .ok_or_else(|| Error::Codegen(format!("buffer {} overflows", b.name)))?;
                Ok((b.name.clone(), len, b.role))
            })
            .collect::<Result<Vec<_>>>()?;
        let items = loops::verify::work_items(k)
            .ok_or_else(|| Error::Codegen(format!("kernel '{}': too many work items", k.name)))?;
        out.push(JitKernel {
            name: k.name.clone(),
            buffers,
            f,
            code_size,
            items,
            parallel_safe: loops::verify::parallel_safe(k),
            isa: kernel_tier(k, isa, raw),
            windows: (0..k.buffers.len())
                .map(|b| match k.buffers[b].role {
                    Role::Const => None,
                    _ => loops::verify::loop_windows(k, b),
                })
                .collect(),
        });
    }
    Ok(out)
}

impl JitProgram {
    /// Compiles every kernel of a program with default options.
    pub fn compile(p: &Program) -> Result<JitProgram> {
        loops::verify_program(p)?;
        JitProgram::compile_kernels(&p.kernels, &JitOptions::default())
    }

    /// Compiles kernels (each is verified first); kernel `i` is run as `run_kernel(i, ..)`.
    ///
    /// The kernels go through the pipeline shared with object files (`codegen/compile.rs`:
    /// translate, compile in parallel, define in kernel order), compiled for the host CPU;
    /// then the module is finalized and each kernel's entry taken as a function pointer.
    pub fn compile_kernels(kernels: &[Kernel], opts: &JitOptions) -> Result<JitProgram> {
        let isa = opts.isa.resolve()?;
        let isas = Isas::host(opts.verifier)?;
        let mut jb = JITBuilder::with_isa(isas.speed.clone(), default_libcall_names());
        jb.symbol(EXPF_SYMBOL, mnv2c_expf as *const u8);
        // From here on the module is owned by `prog`, so an early error return frees it in Drop.
        let mut prog = JitProgram {
            module: Some(Mutex::new(JITModule::new(jb))),
            kernels: Vec::new(),
            clif: String::new(),
            asm: String::new(),
            isa,
            micro_bytes: 0,
        };
        let module = prog
            .module
            .as_mut()
            .ok_or_else(|| Error::Codegen("JIT module missing".into()))?
            .get_mut()
            .map_err(|_| Error::Codegen("JIT module lock poisoned".into()))?;
        // The raw micro-kernels of a wide tier first, one per distinct key; the Cranelift
        // kernels that call them follow.
        let (raw, micro_bytes) =
            define_micros(module, kernels, isa, opts.keep_asm.then_some(&mut prog.asm))?;
        prog.micro_bytes = micro_bytes;
        let defined = compile_into(
            module,
            kernels,
            &isas,
            opts,
            ("", Linkage::Local, EXPF_SYMBOL),
            (isa, &raw),
        )?;
        module
            .finalize_definitions()
            .map_err(|e| err("finalizing JIT code", e))?;
        prog.clif = defined.clif;
        prog.asm.push_str(&defined.asm);
        prog.kernels = finalized_kernels(module, kernels, &defined.kernels, (isa, &raw))?;
        Ok(prog)
    }

    /// The concrete tier the program was compiled for.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The tier kernel `i` runs in: the program's wide tier if it calls raw micro-kernels,
    /// `Portable` otherwise.
    pub fn kernel_isa(&self, i: usize) -> Option<Isa> {
        self.kernels.get(i).map(|k| k.isa)
    }

    pub fn num_kernels(&self) -> usize {
        self.kernels.len()
    }

    /// The name of kernel `i` (its graph node), if it exists.
    pub fn kernel_name(&self, i: usize) -> Option<&str> {
        self.kernels.get(i).map(|k| k.name.as_str())
    }

    /// Machine code bytes of the raw micro-kernels (each distinct one counted once).
    pub fn micro_code_size(&self) -> usize {
        self.micro_bytes
    }

    /// Machine code bytes of kernel `i` (its Cranelift function; see
    /// [`micro_code_size`](Self::micro_code_size) for the micro-kernels it calls).
    pub fn code_size(&self, i: usize) -> Option<usize> {
        self.kernels.get(i).map(|k| k.code_size)
    }

    /// The Cranelift IR text of every function (empty unless `keep_clif`).
    pub fn clif(&self) -> &str {
        &self.clif
    }

    /// Cranelift's disassembly of every function (empty unless `keep_asm`).
    pub fn asm(&self) -> &str {
        &self.asm
    }

    /// The number of work items of kernel `i` (see `loops::verify::work_items`).
    pub fn work_items(&self, i: usize) -> Option<usize> {
        self.kernels.get(i).map(|k| k.items as usize)
    }

    /// Whether kernel `i` may be split across threads (its items were proven disjoint).
    pub fn parallel_safe(&self, i: usize) -> Option<bool> {
        self.kernels.get(i).map(|k| k.parallel_safe)
    }

    /// Runs kernel `i` on `args`, one per declared buffer, in declaration order. Checks count,
    /// lengths and writability first (see the module doc); never calls the code otherwise.
    pub fn run_kernel(&self, i: usize, args: &mut [Arg<'_>]) -> Result<()> {
        let items = self.kernels.get(i).map_or(0, |k| k.items);
        self.run_kernel_items(i, args, 0..items)
    }

    /// [`run_kernel`](JitProgram::run_kernel) on the work items `items` only (a sub-range of
    /// `0..work_items`, else an error): the band schedule's call.
    pub fn run_kernel_items(
        &self,
        i: usize,
        args: &mut [Arg<'_>],
        items: Range<i64>,
    ) -> Result<()> {
        let (k, ptrs) = self.check_args(i, args, &items)?;
        let (begin, end) = check_items(k, &items)?;
        // SAFETY: `k.f` is live JIT code (see `compile_kernels`) for a kernel that passed
        // `loops::verify`, so each of its accesses is within `0..len` of the declared buffers
        // for any sub-range of its work items (here all of them), and it stores only to
        // `Output`/`Scratch` ones. `check_args` checked that the first `k.buffers.len()`
        // entries of `ptrs` (the only ones the code reads: it loads `bufs[b]` for its declared
        // buffers `b`, at most `MAX_KERNEL_BUFFERS`, the array's length) are one pointer per
        // declared buffer, each the start of a slice of exactly the declared length or, for a
        // fold window, an address at which this call's accesses (items `begin..end`) land
        // inside the window's mapping, and that every written buffer comes from a `&mut`
        // slice or window, which by Rust's borrow rules overlaps no other argument for the
        // duration of this call (`args` stays borrowed). Read-only ones are only read. `ptrs`
        // (on this frame) outlives the call, which retains no pointer. `begin..end` is a
        // sub-range of the work items (`check_items`).
        unsafe { (k.f)(ptrs.array(), begin, end) };
        Ok(())
    }

    /// Runs kernel `i` split into `parts` ranges of work items: `exec(parts, task)` must call
    /// `task(part)` for every `part` in `0..parts` (on any threads, concurrently or not) before it
    /// returns. A kernel not proven [`parallel_safe`](JitProgram::parallel_safe) runs in one
    /// part on the calling thread. `parts` is clamped to `1..=`[`MAX_SPLIT_PARTS`] and to the
    /// kernel's work items; `exec` gets the clamped count. Allocates nothing itself (the buffer
    /// pointers and the claimed-part bits live on this frame). With [`std::thread::scope`] as
    /// `exec`, see
    /// [`run_kernel_threads`](JitProgram::run_kernel_threads).
    pub fn run_kernel_split(
        &self,
        i: usize,
        args: &mut [Arg<'_>],
        parts: usize,
        exec: &Executor<'_>,
    ) -> Result<()> {
        let all = 0..self.kernels.get(i).map_or(0, |k| k.items);
        let (k, ptrs) = self.check_args(i, args, &all)?;
        let items = k.items;
        let parts_i64 = i64::try_from(parts.clamp(1, MAX_SPLIT_PARTS))
            .unwrap_or(1)
            .min(items.max(1));
        if !k.parallel_safe || parts_i64 <= 1 {
            // SAFETY: as in `run_kernel`: verified code, checked arguments, all work items.
            unsafe { (k.f)(ptrs.array(), 0, items) };
            return Ok(());
        }
        // Each part runs at most once, even if `exec` calls `task` twice for it (two threads
        // running the same items would race): bit `part` of `claimed` is set by the one call
        // that runs it (`parts_i64 <= MAX_SPLIT_PARTS = 64` bits).
        let claimed = AtomicU64::new(0);
        let task = |part: usize| {
            if part >= parts_i64 as usize {
                return;
            }
            let bit = 1u64 << part;
            if claimed.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
                return;
            }
            let part = part as i64;
            // Item range of `part`, in i128 so the products cannot overflow.
            let at = |p: i64| (i128::from(items) * i128::from(p) / i128::from(parts_i64)) as i64;
            let (begin, end) = (at(part), at((part + 1).min(parts_i64)));
            // SAFETY: as in `run_kernel` (verified code, arguments checked by `check_args`,
            // borrowed for the whole of this call, and `exec` returns only after every task
            // call finished because `task` borrows locals of this frame); `begin..end` is a
            // sub-range of the work items, which the bounds proof covers, and concurrent tasks
            // run distinct parts (the `claimed` bits), i.e. disjoint item ranges of a kernel
            // whose items write disjoint elements (`parallel_safe`), so they do not race.
            unsafe { (k.f)(ptrs.array(), begin, end) };
        };
        exec(parts_i64 as usize, &task);
        Ok(())
    }

    /// [`run_kernel_split`](JitProgram::run_kernel_split) on `threads` scoped threads (the
    /// calling thread runs the first part).
    pub fn run_kernel_threads(&self, i: usize, args: &mut [Arg<'_>], threads: usize) -> Result<()> {
        self.run_kernel_split(i, args, threads, &|parts, task| {
            std::thread::scope(|s| {
                for p in 1..parts {
                    s.spawn(move || task(p));
                }
                task(0);
            });
        })
    }

    /// [`run_kernel`](JitProgram::run_kernel) split over the threads of `team`: one range of
    /// work items per thread (at most 32), thread `t` taking range `t` unless another thread
    /// got to it first (see `Team`). A kernel not proven
    /// [`parallel_safe`](JitProgram::parallel_safe), or with one work item, runs whole on the
    /// calling thread.
    pub fn run_kernel_team(
        &self,
        i: usize,
        args: &mut [Arg<'_>],
        items: Range<i64>,
        team: &Team,
    ) -> Result<()> {
        let (k, ptrs) = self.check_args(i, args, &items)?;
        let (begin, end) = check_items(k, &items)?;
        let parts = team
            .threads()
            .min(team::MAX_PARTS)
            .min(usize::try_from(end - begin).unwrap_or(0));
        if !k.parallel_safe || parts <= 1 {
            // SAFETY: as in `run_kernel`: verified code, checked arguments, a sub-range of the
            // work items (`check_items`).
            unsafe { (k.f)(ptrs.array(), begin, end) };
            return Ok(());
        }
        team.run(team::Job {
            f: k.f,
            ptrs,
            begin,
            end,
            parts,
        });
        Ok(())
    }

    /// Checks a call's arguments against kernel `i`'s verified declarations and returns the
    /// kernel and the buffer pointers (in a stack array: verified kernels declare at most
    /// [`MAX_KERNEL_BUFFERS`]; nothing is allocated). A fold window is accepted for a buffer
    /// whose accesses by `items` have a closed form spanning at most the window's length (see
    /// [`fold_pointer`]).
    fn check_args(
        &self,
        i: usize,
        args: &mut [Arg<'_>],
        items: &Range<i64>,
    ) -> Result<(&JitKernel, CallPtrs)> {
        let k = self
            .kernels
            .get(i)
            .ok_or_else(|| Error::Codegen(format!("no kernel #{i}")))?;
        if args.len() != k.buffers.len() {
            return Err(Error::Codegen(format!(
                "kernel '{}' takes {} buffers, got {}",
                k.name,
                k.buffers.len(),
                args.len()
            )));
        }
        if args.len() > MAX_KERNEL_BUFFERS {
            return Err(Error::Codegen(format!(
                "kernel '{}' takes {} buffers, more than {MAX_KERNEL_BUFFERS}",
                k.name,
                args.len()
            )));
        }
        let mut ptrs = CallPtrs([std::ptr::null_mut(); MAX_KERNEL_BUFFERS]);
        let buffers = k.buffers.iter().zip(&k.windows);
        for (((name, len, role), windows), (a, slot)) in
            buffers.zip(args.iter_mut().zip(&mut ptrs.0))
        {
            let read_only = matches!(a, Arg::Read(_) | Arg::Folded(_));
            if read_only && role.writable() {
                return Err(Error::Codegen(format!(
                    "kernel '{}': buffer {name} is written, but was passed read-only",
                    k.name
                )));
            }
            let ptr = match a {
                // The code never stores to a read-only role (verified), so the cast to `*mut`
                // is never written through.
                Arg::Read(s) => {
                    check_len(k, name, s.len(), *len)?;
                    s.as_ptr().cast_mut()
                }
                Arg::Write(s) => {
                    check_len(k, name, s.len(), *len)?;
                    s.as_mut_ptr()
                }
                Arg::Folded(w) => fold_pointer(k, name, windows.as_deref(), w, items)?,
                Arg::FoldedMut(w) => fold_pointer(k, name, windows.as_deref(), w, items)?,
            };
            *slot = ptr;
        }
        Ok((k, ptrs))
    }

    /// [`run_kernel`](JitProgram::run_kernel) with every buffer passed mutably.
    pub fn run_kernel_mut(&self, i: usize, bufs: &mut [&mut [f32]]) -> Result<()> {
        let mut args: Vec<Arg<'_>> = bufs.iter_mut().map(|b| Arg::Write(b)).collect();
        self.run_kernel(i, &mut args)
    }

    /// [`run_program`](JitProgram::run_program) with each kernel split over `threads` scoped
    /// threads (see [`run_kernel_threads`](JitProgram::run_kernel_threads)).
    pub fn run_program_threads(
        &self,
        p: &Program,
        inputs: &BTreeMap<String, Vec<f32>>,
        threads: usize,
    ) -> Result<BTreeMap<String, Vec<f32>>> {
        if p.kernels.len() != self.kernels.len() {
            return Err(Error::Codegen(format!(
                "program has {} kernels, the JIT code {}",
                p.kernels.len(),
                self.kernels.len()
            )));
        }
        loops::interp::execute(p, inputs, |i, _, bufs| {
            let mut args: Vec<Arg<'_>> = bufs.iter_mut().map(|b| Arg::Write(b)).collect();
            self.run_kernel_threads(i, &mut args, threads)
        })
    }

    /// Runs a whole program compiled from `p` on fresh buffers (see
    /// [`loops::interp::execute`]); returns the outputs by name.
    pub fn run_program(
        &self,
        p: &Program,
        inputs: &BTreeMap<String, Vec<f32>>,
    ) -> Result<BTreeMap<String, Vec<f32>>> {
        if p.kernels.len() != self.kernels.len() {
            return Err(Error::Codegen(format!(
                "program has {} kernels, the JIT code {}",
                p.kernels.len(),
                self.kernels.len()
            )));
        }
        loops::interp::execute(p, inputs, |i, _, bufs| self.run_kernel_mut(i, bufs))
    }
}

impl Drop for JitProgram {
    fn drop(&mut self) {
        // SAFETY: `drop` has `&mut self`, so no call into the code is running or can start
        // (calls borrow `self`), and the function pointers in `self.kernels` die with `self`
        // without being called again.
        unsafe { free_module(&mut self.module) };
    }
}

/// Assembles the raw kernel of every distinct micro-kernel of `kernels` for a wide `isa` and
/// defines it in `module` (local linkage; no relocations); appends their disassembly to `asm`.
/// Ops that do not fit the tier's addressing are left out (their portable body runs).
fn define_micros<M: Module>(
    module: &mut M,
    kernels: &[Kernel],
    isa: Isa,
    mut asm: Option<&mut String>,
) -> Result<(MicroFns, usize)> {
    let mut raw = MicroFns::new();
    let mut total = 0;
    if !isa.wide() {
        return Ok((raw, total));
    }
    let sig = micro_signature(module);
    for k in kernels {
        for mc in micros(&k.body) {
            let key = micro::key(isa, &mc.op);
            if raw.contains_key(&key) {
                continue;
            }
            let Some(bytes) = micro::assemble(isa, &mc.op)? else {
                continue;
            };
            let id = module
                .declare_function(&format!("micro_{key}"), Linkage::Local, &sig)
                .map_err(|e| err(&format!("declaring micro-kernel {key}"), e))?;
            module
                .define_function_bytes(id, 64, &bytes, &[])
                .map_err(|e| err(&format!("defining micro-kernel {key}"), e))?;
            if let Some(out) = asm.as_deref_mut() {
                out.push_str(&format!(
                    "; micro-kernel {key} ({} bytes, {})\n{}\n",
                    bytes.len(),
                    isa.name(),
                    micro::disassemble(&bytes)
                ));
            }
            total += bytes.len();
            raw.insert(key, id);
        }
    }
    Ok((raw, total))
}

/// The tier kernel `k` runs in (see [`JitProgram::kernel_isa`]).
fn kernel_tier(k: &Kernel, isa: Isa, raw: &MicroFns) -> Isa {
    let called = micros(&k.body)
        .iter()
        .any(|mc| raw.contains_key(&micro::key(isa, &mc.op)));
    if called { isa } else { Isa::Portable }
}

/// The FMA-throughput kernel of a wide tier (`micro::peak`), in its own JIT module.
pub struct WidePeak {
    module: Option<Mutex<JITModule>>,
    f: PeakFn,
    /// f32 the kernel writes: `PEAK_CHAINS` vectors.
    out_len: usize,
}

/// `fn(coefficients [m, c], out, steps)`, see `micro::peak`.
type PeakFn = unsafe extern "C" fn(*const f32, *mut f32, i64);

impl WidePeak {
    /// The peak kernel of `isa` (resolved first: a tier the CPU lacks is an error); `None` for
    /// the portable tier.
    pub fn new(isa: Isa) -> Result<Option<WidePeak>> {
        let isa = isa.resolve()?;
        let Some(bytes) =
            micro::peak::assemble(isa).map_err(|e| err("assembling the FMA peak kernel", e))?
        else {
            return Ok(None);
        };
        let jb = JITBuilder::with_isa(Isas::host(false)?.speed, default_libcall_names());
        let mut module = JITModule::new(jb);
        let mut sig = module.make_signature();
        let ptr = module.target_config().pointer_type();
        sig.params.push(cranelift_codegen::ir::AbiParam::new(ptr));
        sig.params.push(cranelift_codegen::ir::AbiParam::new(ptr));
        sig.params.push(cranelift_codegen::ir::AbiParam::new(
            cranelift_codegen::ir::types::I64,
        ));
        let define = |module: &mut JITModule| -> std::result::Result<FuncId, String> {
            let id = module
                .declare_function("fma_peak", Linkage::Local, &sig)
                .map_err(|e| e.to_string())?;
            module
                .define_function_bytes(id, 64, &bytes, &[])
                .map_err(|e| e.to_string())?;
            module.finalize_definitions().map_err(|e| e.to_string())?;
            Ok(id)
        };
        let defined = define(&mut module);
        let id = match defined {
            Ok(id) => id,
            Err(e) => {
                // SAFETY: nothing of the module was finalized or handed out.
                unsafe { module.free_memory() };
                return Err(err("defining the FMA peak kernel", e));
            }
        };
        let code = module.get_finalized_function(id);
        // SAFETY: `code` is the entry of the bytes just defined and finalized, assembled by
        // `micro::peak::assemble` as a System V function of `(ptr, ptr, i64)` returning nothing,
        // which is `PeakFn`. It stays valid until `free_memory` in `Drop`.
        let f = unsafe { std::mem::transmute::<*const u8, PeakFn>(code) };
        Ok(Some(WidePeak {
            module: Some(Mutex::new(module)),
            f,
            out_len: micro::peak::PEAK_CHAINS * isa.bits() / 32,
        }))
    }

    /// f32 lanes over all chains (FLOP per step = 2 x this).
    pub fn lanes(&self) -> usize {
        self.out_len
    }

    /// Runs `steps` (at least 1) steps of every chain; returns the accumulators.
    pub fn run(&self, m: f32, c: f32, steps: i64) -> Result<Vec<f32>> {
        if steps < 1 {
            return Err(Error::Codegen(format!("peak kernel: {steps} steps")));
        }
        let coefficients = [m, c];
        let mut out = vec![0.0f32; self.out_len];
        // SAFETY: `f` is live code (see `new`) that reads the two floats of `coefficients` and
        // writes `PEAK_CHAINS` vectors = `out_len` floats to `out`, which has exactly that many;
        // it loops `steps >= 1` times and touches nothing else.
        unsafe { (self.f)(coefficients.as_ptr(), out.as_mut_ptr(), steps) };
        Ok(out)
    }
}

impl Drop for WidePeak {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no call is running, and `f` dies with `self`.
        unsafe { free_module(&mut self.module) };
    }
}

/// Frees the code and data of a module (once; later calls find `None`).
///
/// # Safety
/// No function pointer taken from the module may be called afterwards.
unsafe fn free_module(module: &mut Option<Mutex<JITModule>>) {
    if let Some(m) = module.take() {
        let module = m
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // SAFETY: the caller promises no pointer into the module is used again.
        unsafe { module.free_memory() };
    }
}

impl std::fmt::Debug for WidePeak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WidePeak")
            .field("lanes", &self.out_len)
            .finish_non_exhaustive()
    }
}

/// Compiles kernels for `isa` only to return the Cranelift IR text of their functions
/// (`--emit clif`).
pub fn emit_clif(kernels: &[Kernel], isa: Isa) -> Result<String> {
    Ok(compile_for_listing(kernels, true, isa)?.clif.clone())
}

/// Compiles kernels for `isa` only to return the disassembly of their functions and of the
/// raw micro-kernels they call (`--emit asm`).
pub fn emit_asm(kernels: &[Kernel], isa: Isa) -> Result<String> {
    Ok(compile_for_listing(kernels, false, isa)?.asm.clone())
}

/// Compiles kernels keeping the Cranelift IR text (`clif`) or the disassembly (otherwise).
fn compile_for_listing(kernels: &[Kernel], clif: bool, isa: Isa) -> Result<JitProgram> {
    let opts = JitOptions {
        keep_clif: clif,
        keep_asm: !clif,
        isa,
        ..JitOptions::default()
    };
    JitProgram::compile_kernels(kernels, &opts)
}

/// Checks that a slice passed for buffer `name` has its declared length.
fn check_len(k: &JitKernel, name: &str, got: usize, len: usize) -> Result<()> {
    if got != len {
        return Err(Error::Codegen(format!(
            "kernel '{}': buffer {name} has {got} elements, expected {len}",
            k.name
        )));
    }
    Ok(())
}

/// The pointer that puts buffer `name`'s element `e` at slot `(e + offset) mod len` of fold
/// window `w` for a call on `items`: `base + ((lo + offset) mod len) - lo`, where `lo..=hi` is
/// the hull of the call's accesses to it (from their closed form, `windows`), checked to span
/// at most `len` elements. Every access then lands in `base..base + 2 * len`, the window's
/// whole mapping.
fn fold_pointer(
    k: &JitKernel,
    name: &str,
    windows: Option<&[LoopWindow]>,
    w: &FoldWindow,
    items: &Range<i64>,
) -> Result<*mut f32> {
    let windows = windows.ok_or_else(|| {
        Error::Codegen(format!(
            "kernel '{}': buffer {name} has accesses without a closed form: no fold window",
            k.name
        ))
    })?;
    let Some((lo, hi)) = loops::verify::windows_hull(windows, items.clone()) else {
        // These items do not touch the buffer.
        return Ok(w.base());
    };
    let len = i128::try_from(w.len()).unwrap_or(i128::MAX);
    if lo < 0 || hi - lo >= len {
        return Err(Error::Codegen(format!(
            "kernel '{}': items {}..{} access elements {lo}..={hi} of {name}, more than its \
             fold window of {len}",
            k.name, items.start, items.end
        )));
    }
    let offset = i128::try_from(w.offset()).unwrap_or(0);
    let shift = isize::try_from((lo + offset).rem_euclid(len) - lo)
        .map_err(|_| Error::Codegen(format!("kernel '{}': {name} is too large", k.name)))?;
    Ok(w.base().wrapping_offset(shift))
}

/// `items` as `(begin, end)` if it is a sub-range of kernel `k`'s work items.
fn check_items(k: &JitKernel, items: &Range<i64>) -> Result<(i64, i64)> {
    if items.start < 0 || items.start > items.end || items.end > k.items {
        return Err(Error::Usage(format!(
            "work items {}..{} of kernel '{}', which has 0..{}",
            items.start, items.end, k.name, k.items
        )));
    }
    Ok((items.start, items.end))
}

/// Hands the allocator's free heap memory back to the system (glibc's `malloc_trim`; elsewhere
/// nothing): memory freed while a block is built from values that die as it fills (the model's
/// constants, `runtime::model`) would otherwise stay resident beside the block's new pages,
/// since glibc returns free memory inside its heap only on request.
pub(crate) fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns whole pages of free chunks to the system, under the
    // allocator's own lock; no live allocation, and so no Rust value, is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The size of a transparent huge page on x86-64 and (with 4 KB base pages) arm64 Linux.
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// Asks Linux to back the whole 2 MB pages inside `region` with transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`), before they are first touched: a layer streaming megabytes of
/// activations then misses the TLB on one page in 512 instead of every 4 KB. Where the kernel
/// runs THP only on request (`enabled = madvise`, the common default), it is this or none; the
/// answer is ignored (no THP, or not Linux: nothing changes but speed).
pub(crate) fn advise_huge_pages<T>(region: &mut [std::mem::MaybeUninit<T>]) {
    #[cfg(target_os = "linux")]
    {
        let start = region.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(region);
        let (first, last) = (
            start.next_multiple_of(HUGE_PAGE),
            end / HUGE_PAGE * HUGE_PAGE,
        );
        if first < last {
            // SAFETY: `first..last` lies inside `region`, memory this caller borrows mutably
            // (so it is mapped and owned by its allocation), and is page-aligned as madvise
            // requires. MADV_HUGEPAGE changes how the kernel backs those pages, never their
            // contents or validity, so no Rust reference observes any change.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = region;
}
