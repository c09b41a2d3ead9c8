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
//!    the kernel writes;
//! 3. Rust's borrow rules make a mutable slice alias nothing else passed, so the code's
//!    read-only/`can_move` loads read memory nobody writes during the call.
//!
//! ## Threads
//! `JITModule` is `Send` but not `Sync`; it is kept in a `Mutex` that only `Drop` touches, and
//! the running code is reached through plain `extern "C"` function pointers, which are `Send +
//! Sync` (the code is re-entrant: it has no state outside its arguments). So a [`JitProgram`] can
//! be shared by reference between threads and run concurrently. The code memory is released
//! (`free_memory`) when the `JitProgram` is dropped, which cannot happen while a borrow runs it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::FunctionBuilderContext;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};

use super::{EXPF_SYMBOL, kernel_signature, mnv2c_expf, symbol_name, translate};
use crate::loops::{self, Kernel, Program, Role};
use crate::{Error, Result};

/// A compiled kernel: `fn(bufs: *const *mut f32)`.
type KernelFn = unsafe extern "C" fn(*const *mut f32);

/// How to compile.
#[derive(Clone, Debug)]
pub struct JitOptions {
    /// Cranelift's `opt_level`: `"speed"` (default) or `"none"`.
    pub opt_level: &'static str,
    /// Keep the Cranelift IR text of every function (for `--emit clif`).
    pub keep_clif: bool,
    /// Keep Cranelift's disassembly listing of every function (for `--emit asm`).
    pub keep_asm: bool,
}

impl Default for JitOptions {
    fn default() -> JitOptions {
        JitOptions {
            opt_level: "speed",
            keep_clif: false,
            keep_asm: false,
        }
    }
}

/// One argument buffer of a kernel call.
#[derive(Debug)]
pub enum Arg<'a> {
    /// A buffer the kernel only reads (`Input`, `Const`).
    Read(&'a [f32]),
    /// A buffer the kernel may write (`Output`, `Scratch`); also accepted for read-only ones.
    Write(&'a mut [f32]),
}

#[derive(Debug)]
struct JitKernel {
    name: String,
    /// The verified buffer declarations: name, length, role.
    buffers: Vec<(String, usize, Role)>,
    f: KernelFn,
    code_size: usize,
}

/// Compiled kernels in JIT memory, callable from several threads at once.
pub struct JitProgram {
    module: Option<Mutex<JITModule>>,
    kernels: Vec<JitKernel>,
    clif: String,
    asm: String,
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

fn err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Codegen(format!("{what}: {e}"))
}

impl JitProgram {
    /// Compiles every kernel of a program with default options.
    pub fn compile(p: &Program) -> Result<JitProgram> {
        loops::verify_program(p)?;
        JitProgram::compile_kernels(&p.kernels, &JitOptions::default())
    }

    /// Compiles kernels (each is verified first); kernel `i` is run as `run_kernel(i, ..)`.
    pub fn compile_kernels(kernels: &[Kernel], opts: &JitOptions) -> Result<JitProgram> {
        let mut fb = settings::builder();
        for (k, v) in [
            ("opt_level", opts.opt_level),
            ("is_pic", "false"),
            ("use_colocated_libcalls", "false"),
        ] {
            fb.set(k, v)
                .map_err(|e| err(&format!("setting {k}={v}"), e))?;
        }
        let isa = cranelift_native::builder()
            .map_err(|m| err("this host is not supported by Cranelift", m))?
            .finish(settings::Flags::new(fb))
            .map_err(|e| err("building the target ISA", e))?;
        let mut jb = JITBuilder::with_isa(isa, default_libcall_names());
        jb.symbol(EXPF_SYMBOL, mnv2c_expf as *const u8);
        // From here on the module is owned by `prog`, so an early error return frees it in Drop.
        let mut prog = JitProgram {
            module: Some(Mutex::new(JITModule::new(jb))),
            kernels: Vec::new(),
            clif: String::new(),
            asm: String::new(),
        };
        let module = prog
            .module
            .as_mut()
            .ok_or_else(|| Error::Codegen("JIT module missing".into()))?
            .get_mut()
            .map_err(|_| Error::Codegen("JIT module lock poisoned".into()))?;
        let mut fctx = FunctionBuilderContext::new();
        let mut ids = Vec::with_capacity(kernels.len());
        let mut sizes = Vec::with_capacity(kernels.len());
        for (i, k) in kernels.iter().enumerate() {
            let mut ctx = module.make_context();
            ctx.func.signature = kernel_signature(module);
            ctx.set_disasm(opts.keep_asm);
            translate(module, k, &mut ctx.func, &mut fctx)?;
            if opts.keep_clif {
                prog.clif.push_str(&format!(
                    "; kernel \"{}\"\n{}\n",
                    k.name,
                    ctx.func.display()
                ));
            }
            let sym = symbol_name(i, k);
            let id = module
                .declare_function(&sym, Linkage::Local, &kernel_signature(module))
                .map_err(|e| err(&format!("declaring kernel '{}'", k.name), e))?;
            module
                .define_function(id, &mut ctx)
                .map_err(|e| err(&format!("compiling kernel '{}'", k.name), format!("{e:?}")))?;
            let code = ctx.compiled_code();
            sizes.push(code.map_or(0, |c| c.code_buffer().len()));
            if opts.keep_asm {
                let listing = code.and_then(|c| c.vcode.clone()).unwrap_or_default();
                prog.asm
                    .push_str(&format!("; kernel \"{}\" ({sym})\n{listing}\n", k.name));
            }
            module.clear_context(&mut ctx);
            ids.push(id);
        }
        module
            .finalize_definitions()
            .map_err(|e| err("finalizing JIT code", e))?;
        for ((k, id), code_size) in kernels.iter().zip(ids).zip(sizes) {
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
            prog.kernels.push(JitKernel {
                name: k.name.clone(),
                buffers,
                f,
                code_size,
            });
        }
        Ok(prog)
    }

    pub fn num_kernels(&self) -> usize {
        self.kernels.len()
    }

    /// The name of kernel `i` (its graph node), if it exists.
    pub fn kernel_name(&self, i: usize) -> Option<&str> {
        self.kernels.get(i).map(|k| k.name.as_str())
    }

    /// Machine code bytes of kernel `i`.
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

    /// Runs kernel `i` on `args`, one per declared buffer, in declaration order. Checks count,
    /// lengths and writability first (see the module doc); never calls the code otherwise.
    pub fn run_kernel(&self, i: usize, args: &mut [Arg<'_>]) -> Result<()> {
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
        let mut ptrs: Vec<*mut f32> = Vec::with_capacity(args.len());
        for ((name, len, role), a) in k.buffers.iter().zip(args.iter_mut()) {
            let (got, ptr) = match a {
                Arg::Read(s) if role.writable() => {
                    return Err(Error::Codegen(format!(
                        "kernel '{}': buffer {name} is written, but was passed read-only",
                        k.name
                    )));
                }
                // The code never stores to a read-only role (verified), so the cast to `*mut`
                // is never written through.
                Arg::Read(s) => (s.len(), s.as_ptr().cast_mut()),
                Arg::Write(s) => (s.len(), s.as_mut_ptr()),
            };
            if got != *len {
                return Err(Error::Codegen(format!(
                    "kernel '{}': buffer {name} has {got} elements, expected {len}",
                    k.name
                )));
            }
            ptrs.push(ptr);
        }
        // SAFETY: `k.f` is live JIT code (see `compile_kernels`) for a kernel that passed
        // `loops::verify`, so each of its accesses is within `0..len` of the declared buffers,
        // and it stores only to `Output`/`Scratch` ones. We just checked that `ptrs` has one
        // pointer per declared buffer, each the start of a slice of exactly the declared length,
        // and that every written buffer comes from a `&mut` slice, which by Rust's borrow rules
        // overlaps no other argument for the duration of this call. Read-only slices are only
        // read. `ptrs` outlives the call, which does not retain any pointer.
        unsafe { (k.f)(ptrs.as_ptr()) };
        Ok(())
    }

    /// [`run_kernel`](JitProgram::run_kernel) with every buffer passed mutably.
    pub fn run_kernel_mut(&self, i: usize, bufs: &mut [&mut [f32]]) -> Result<()> {
        let mut args: Vec<Arg<'_>> = bufs.iter_mut().map(|b| Arg::Write(b)).collect();
        self.run_kernel(i, &mut args)
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
        if let Some(m) = self.module.take() {
            let module = m
                .into_inner()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // SAFETY: `drop` has `&mut self`, so no call into the code is running or can start
            // (calls borrow `self`), and the function pointers in `self.kernels` die with `self`
            // without being called again.
            unsafe { module.free_memory() };
        }
    }
}

/// Compiles kernels only to return the Cranelift IR text of their functions (`--emit clif`).
pub fn emit_clif(kernels: &[Kernel]) -> Result<String> {
    let p = JitProgram::compile_kernels(
        kernels,
        &JitOptions {
            keep_clif: true,
            ..JitOptions::default()
        },
    )?;
    Ok(p.clif.clone())
}

/// Compiles kernels only to return Cranelift's disassembly of their functions (`--emit asm`).
pub fn emit_asm(kernels: &[Kernel]) -> Result<String> {
    let p = JitProgram::compile_kernels(
        kernels,
        &JitOptions {
            keep_asm: true,
            ..JitOptions::default()
        },
    )?;
    Ok(p.asm.clone())
}
