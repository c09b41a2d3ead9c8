//! Kernels into any `cranelift_module::Module`: the JIT's `JITModule` and the ahead-of-time
//! `ObjectModule` are two sinks of this one pipeline, so both hold the same machine code.
//!
//! Three phases: translate every kernel to a Cranelift function and declare it (in order, on
//! the calling thread: declarations need the module); compile the functions to machine code on
//! up to `compile_threads` scoped threads, each with its own `Context` and the ISA of the
//! kernel's [`OptLevel`] (modules are not `Sync`; compiling needs only the shared ISA); then
//! define the bytes and relocations in kernel order ([`define`]). Each function's code depends
//! only on its own IR and ISA, and the definition order is fixed, so the result is the same
//! whatever the thread count or timing.
//!
//! [`KernelCode`] is the unit phase 3 defines: machine code with module relocations. Code that
//! does not come from Cranelift IR (assembled machine code) is defined the same way, with
//! `define_function_bytes`, into either module.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use cranelift_codegen::Context;
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::isa::{OwnedTargetIsa, TargetIsa};
use cranelift_frontend::FunctionBuilderContext;
use cranelift_module::{FuncId, Linkage, Module, ModuleReloc};

use super::jit::JitOptions;
use super::micro::Isa;
use super::{MicroFns, kernel_signature, symbol_name, translate};
use crate::loops::{Kernel, OptLevel};
use crate::{Error, Result};

/// Machine code of one function, not yet in a module.
pub(crate) struct KernelCode {
    pub id: FuncId,
    pub align: u64,
    pub bytes: Vec<u8>,
    pub relocs: Vec<ModuleReloc>,
    /// Cranelift's disassembly (empty unless asked for).
    pub listing: String,
}

/// The ISAs kernels are compiled with: one per [`OptLevel`], same target and CPU flags.
pub(crate) struct Isas {
    pub speed: OwnedTargetIsa,
    pub none: OwnedTargetIsa,
}

impl Isas {
    fn for_level(&self, level: OptLevel) -> &OwnedTargetIsa {
        match level {
            OptLevel::None => &self.none,
            OptLevel::Speed => &self.speed,
        }
    }
}

/// What [`compile_into`] put into the module.
pub(crate) struct Defined {
    /// Per kernel, in order: its function and its code size in bytes.
    pub kernels: Vec<(FuncId, usize)>,
    /// Cranelift IR text of every function (when `keep_clif`).
    pub clif: String,
    /// Disassembly of every function (when `keep_asm`).
    pub asm: String,
}

/// Translates, compiles and defines `kernels` in `module` (see the module doc). Kernel `i` is
/// declared with `linkage` under `prefix` + [`symbol_name`]; `exp` calls import `expf`.
pub(crate) fn compile_into<M: Module>(
    module: &mut M,
    kernels: &[Kernel],
    isas: &Isas,
    opts: &JitOptions,
    (prefix, linkage, expf): (&str, Linkage, &str),
    (isa, raw): (Isa, &MicroFns),
) -> Result<Defined> {
    let mut clif = String::new();
    let mut fctx = FunctionBuilderContext::new();
    let mut work = Vec::with_capacity(kernels.len());
    for (i, k) in kernels.iter().enumerate() {
        let mut ctx = module.make_context();
        ctx.func.signature = kernel_signature(module);
        ctx.set_disasm(opts.keep_asm);
        translate(module, k, &mut ctx.func, &mut fctx, isa, raw, expf)?;
        if opts.keep_clif {
            clif.push_str(&format!(
                "; kernel \"{}\"\n{}\n",
                k.name,
                ctx.func.display()
            ));
        }
        let sym = format!("{prefix}{}", symbol_name(i, k));
        let id = module
            .declare_function(&sym, linkage, &kernel_signature(module))
            .map_err(|e| err(&format!("declaring kernel '{}'", k.name), e))?;
        let isa = isas.for_level(opts.opt_level.unwrap_or(k.opt_level));
        work.push(Mutex::new(Some((ctx, id, isa.clone()))));
    }
    let codes = compile_parallel(work, kernels, opts.compile_threads)?;
    let mut asm = String::new();
    let mut defined = Vec::with_capacity(kernels.len());
    for (i, (k, c)) in kernels.iter().zip(codes).enumerate() {
        define(module, &c, &k.name)?;
        if opts.keep_asm {
            asm.push_str(&format!(
                "; kernel \"{}\" ({})\n{}\n",
                k.name,
                symbol_name(i, k),
                c.listing
            ));
        }
        defined.push((c.id, c.bytes.len()));
    }
    Ok(Defined {
        kernels: defined,
        clif,
        asm,
    })
}

/// A translated function waiting to be compiled: context, its id, the ISA to use.
type Job = Mutex<Option<(Context, FuncId, OwnedTargetIsa)>>;

/// Phase 2: compiles every job on up to `threads` scoped threads; results in job order.
fn compile_parallel(work: Vec<Job>, kernels: &[Kernel], threads: usize) -> Result<Vec<KernelCode>> {
    let results: Vec<Mutex<Option<Result<KernelCode>>>> =
        (0..work.len()).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let worker = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = work.get(i) else { break };
            let job = slot.lock().ok().and_then(|mut j| j.take());
            let res = match job {
                Some((ctx, id, isa)) => compile_function(ctx, id, &*isa, &kernels[i].name),
                None => Err(Error::Codegen(format!("kernel #{i} compiled twice"))),
            };
            if let Ok(mut r) = results[i].lock() {
                *r = Some(res);
            }
        }
    };
    let threads = threads.clamp(1, work.len().max(1));
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(worker);
        }
        worker();
    });
    kernels
        .iter()
        .zip(results)
        .map(|(k, r)| {
            r.into_inner()
                .ok()
                .flatten()
                .ok_or_else(|| Error::Codegen(format!("kernel '{}' was not compiled", k.name)))?
        })
        .collect()
}

/// Compiles one translated function with `isa` (runs on any thread).
pub(crate) fn compile_function(
    mut ctx: Context,
    id: FuncId,
    isa: &dyn TargetIsa,
    name: &str,
) -> Result<KernelCode> {
    ctx.compile(isa, &mut ControlPlane::default())
        .map_err(|e| {
            err(
                &format!("compiling kernel '{name}'"),
                format!("{:?}", e.inner),
            )
        })?;
    let code = ctx
        .compiled_code()
        .ok_or_else(|| Error::Codegen(format!("kernel '{name}' has no code")))?;
    let relocs = code
        .buffer
        .relocs()
        .iter()
        .map(|r| ModuleReloc::from_mach_reloc(r, &ctx.func, id))
        .collect();
    Ok(KernelCode {
        id,
        align: u64::from(code.buffer.alignment),
        bytes: code.code_buffer().to_vec(),
        relocs,
        listing: code.vcode.clone().unwrap_or_default(),
    })
}

/// Phase 3 for one function: hands its bytes and relocations to the module.
pub(crate) fn define<M: Module>(module: &mut M, c: &KernelCode, name: &str) -> Result<()> {
    module
        .define_function_bytes(c.id, c.align, &c.bytes, &c.relocs)
        .map_err(|e| err(&format!("defining kernel '{name}'"), e))
}

pub(crate) fn err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Codegen(format!("{what}: {e}"))
}
