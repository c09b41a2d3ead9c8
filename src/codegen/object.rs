//! An ahead-of-time object file: every kernel, the constants as read-only data, and a small C
//! interface in Cranelift IR, written with `cranelift-object` for a [`Target`].
//!
//! What the object holds (symbols `P` = the prefix):
//! - `P_input_elems`, `P_output_elems`, `P_scratch_bytes` (`size_t (void)`) and
//!   `P_run(const float *input, float *output, void *scratch) -> int`, the only global symbols;
//! - the kernels, compiled by the same pipeline as the JIT (`codegen/compile.rs`) at the
//!   target's portable tier, local;
//! - one read-only, 64-byte-aligned data object per constant buffer, local;
//! - on x86-64, the CPU probe (`codegen/cpuid.rs`) and its cached answer, local.
//!
//! `P_run` walks [`ObjectSpec::calls`] as the runtime walks its steps: for each kernel it fills
//! an array of buffer pointers on its stack (arena offsets from the memory plan into `scratch`,
//! constants, the input) and calls the kernel on all its work items, on the calling thread.
//! Then it copies the final output out of the arena. It allocates nothing and keeps no state
//! but the CPU probe's answer (an atomic word written with the same value by any racer), so it
//! is re-entrant: each caller brings its own scratch.
//!
//! What must hold for the generated code to be sound to call: the kernels passed
//! `loops::verify` (checked again by translation), each call's slots come from a checked
//! layout (one written arena range, not overlapping what the kernel reads), every arena range
//! lies inside `scratch_bytes`, and the caller's buffers have the advertised sizes and do not
//! overlap. `P_run` checks what it can: null pointers (return 1), scratch alignment (2), the
//! CPU (3).

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    AbiParam, Function, InstBuilder, Signature, StackSlotData, StackSlotKind, UserFuncName, Value,
    types,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, DataId, FuncId, Linkage, Module, default_libcall_names};
use cranelift_object::{ObjectBuilder, ObjectModule};

use super::MicroFns;
use super::compile::{Isas, compile_into, err};
use super::cpuid;
use super::jit::JitOptions;
use super::micro::Isa;
use super::target::{Target, X86_PORTABLE_NEEDS};
use crate::loops::{self, Kernel, MAX_KERNEL_BUFFERS};
use crate::{Error, Result};

/// The alignment `P_run` requires of `scratch` (the memory plan's buffer alignment).
pub const SCRATCH_ALIGN: usize = crate::runtime::memplan::ALIGN;

/// `P_run`'s return codes.
pub const RUN_OK: i64 = 0;
pub const RUN_NULL_POINTER: i64 = 1;
pub const RUN_MISALIGNED_SCRATCH: i64 = 2;
pub const RUN_CPU_LACKS_TIER: i64 = 3;

/// Where a kernel argument points during `P_run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `scratch` plus this many bytes.
    Arena(usize),
    /// Constant buffer `i` of [`ObjectSpec::consts`].
    Const(usize),
    /// The caller's `input`.
    Input,
}

/// Everything an object is made of; see the module doc.
#[derive(Debug)]
pub struct ObjectSpec<'a> {
    /// The C identifier every global symbol starts with (`P_run`, ...).
    pub prefix: &'a str,
    pub target: Target,
    pub kernels: &'a [Kernel],
    /// Per kernel, in order: where each of its declared buffers points.
    pub calls: &'a [Vec<Source>],
    pub consts: &'a [Vec<f32>],
    pub input_elems: usize,
    pub output_elems: usize,
    /// Where the final output lives in the arena (bytes from `scratch`).
    pub output_offset: usize,
    pub scratch_bytes: usize,
}

/// The bytes of the object file, and what went into it.
#[derive(Debug)]
pub struct ObjectFile {
    pub bytes: Vec<u8>,
    /// Machine code of the kernels, in bytes.
    pub kernel_code_bytes: usize,
    /// Constant data, in bytes.
    pub const_bytes: usize,
}

/// Builds the object (see the module doc).
pub fn emit_object(spec: &ObjectSpec<'_>) -> Result<ObjectFile> {
    check_spec(spec)?;
    let isas = Isas::portable(spec.target, false)?;
    let builder = ObjectBuilder::new(isas.speed.clone(), spec.prefix, default_libcall_names())
        .map_err(|e| err("starting the object", e))?;
    let mut module = ObjectModule::new(builder);
    let opts = JitOptions::default();
    let local = format!("{}__", spec.prefix);
    let defined = compile_into(
        &mut module,
        spec.kernels,
        &isas,
        &opts,
        (&local, Linkage::Local, "expf"),
        (Isa::Portable, &MicroFns::new()),
    )?;
    let kernel_ids: Vec<FuncId> = defined.kernels.iter().map(|(id, _)| *id).collect();
    let kernel_code_bytes = defined.kernels.iter().map(|(_, n)| n).sum();
    let mut const_bytes = 0usize;
    let mut data_ids = Vec::with_capacity(spec.consts.len());
    for (i, c) in spec.consts.iter().enumerate() {
        let id = module
            .declare_data(&format!("{local}c{i}"), Linkage::Local, false, false)
            .map_err(|e| err("declaring a constant", e))?;
        let mut desc = DataDescription::new();
        let mut bytes = Vec::with_capacity(c.len() * 4);
        for v in c {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        desc.define(bytes.into_boxed_slice());
        desc.set_align(SCRATCH_ALIGN as u64);
        module
            .define_data(id, &desc)
            .map_err(|e| err("defining a constant", e))?;
        const_bytes += c.len() * 4;
        data_ids.push(id);
    }
    let cpu_ok = match spec.target {
        Target::X86_64 => Some(cpuid::define_cpu_check(
            &mut module,
            &local,
            &X86_PORTABLE_NEEDS,
        )?),
        Target::Aarch64 => None,
    };
    let mut fctx = FunctionBuilderContext::new();
    for (name, value) in [
        ("input_elems", spec.input_elems),
        ("output_elems", spec.output_elems),
        ("scratch_bytes", spec.scratch_bytes),
    ] {
        let name = format!("{}_{name}", spec.prefix);
        define_size_fn(&mut module, &mut fctx, &name, value)?;
    }
    let ids = Ids {
        kernels: &kernel_ids,
        data: &data_ids,
        cpu_ok,
    };
    define_run(&mut module, &mut fctx, spec, &ids)?;
    let bytes = module
        .finish()
        .emit()
        .map_err(|e| err("writing the object", e))?;
    Ok(ObjectFile {
        bytes,
        kernel_code_bytes,
        const_bytes,
    })
}

/// What `P_run` calls and reads.
struct Ids<'a> {
    kernels: &'a [FuncId],
    data: &'a [DataId],
    cpu_ok: Option<FuncId>,
}

/// The spec's promises that the generated code relies on: one call per kernel, one source per
/// declared buffer, arena ranges inside the scratch, sizes that fit the code's immediates.
fn check_spec(spec: &ObjectSpec<'_>) -> Result<()> {
    if spec.calls.len() != spec.kernels.len() {
        return Err(Error::Codegen("one call per kernel expected".into()));
    }
    let fits = |bytes: Option<usize>| bytes.is_some_and(|b| b <= spec.scratch_bytes);
    for (k, call) in spec.kernels.iter().zip(spec.calls) {
        if call.len() != k.buffers.len() || call.len() > MAX_KERNEL_BUFFERS {
            return Err(Error::Codegen(format!(
                "kernel '{}': {} sources for {} buffers",
                k.name,
                call.len(),
                k.buffers.len()
            )));
        }
        for (b, s) in k.buffers.iter().zip(call) {
            let len = b.len().and_then(|n| n.checked_mul(4));
            let ok = match *s {
                Source::Arena(off) => fits(len.and_then(|l| l.checked_add(off))),
                Source::Const(i) => spec.consts.get(i).map(|c| c.len() * 4) == len,
                Source::Input => len == spec.input_elems.checked_mul(4),
            };
            // Constants are read-only data and the input is the caller's: only the arena is
            // written.
            let writable = !b.role.writable() || matches!(s, Source::Arena(_));
            if !ok || !writable {
                return Err(Error::Codegen(format!(
                    "kernel '{}': buffer {} does not fit its storage",
                    k.name, b.name
                )));
            }
        }
    }
    let out = spec.output_elems.checked_mul(4);
    if !fits(out.and_then(|o| o.checked_add(spec.output_offset)))
        || i64::try_from(spec.scratch_bytes).is_err()
    {
        return Err(Error::Codegen("the output is not inside the arena".into()));
    }
    Ok(())
}

/// `size_t NAME(void) { return value; }`, exported.
fn define_size_fn(
    module: &mut ObjectModule,
    fctx: &mut FunctionBuilderContext,
    name: &str,
    value: usize,
) -> Result<()> {
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    sig.returns.push(AbiParam::new(ptr));
    let value = i64::try_from(value).map_err(|_| err(name, "value too large"))?;
    define_fn(module, fctx, name, Linkage::Export, sig, |_, b, _| {
        let v = b.ins().iconst(ptr, value);
        b.ins().return_(&[v]);
        Ok(())
    })?;
    Ok(())
}

/// Declares and defines one function whose body `body(module, builder, entry params)` emits.
pub(crate) fn define_fn(
    module: &mut ObjectModule,
    fctx: &mut FunctionBuilderContext,
    name: &str,
    linkage: Linkage,
    sig: Signature,
    body: impl FnOnce(&mut ObjectModule, &mut FunctionBuilder<'_>, &[Value]) -> Result<()>,
) -> Result<FuncId> {
    let id = module
        .declare_function(name, linkage, &sig)
        .map_err(|e| err(&format!("declaring {name}"), e))?;
    let mut func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
    let mut b = FunctionBuilder::new(&mut func, fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    body(module, &mut b, &params)?;
    b.seal_all_blocks();
    b.finalize(module.target_config());
    let mut ctx = module.make_context();
    ctx.func = func;
    module
        .define_function(id, &mut ctx)
        .map_err(|e| err(&format!("compiling {name}"), format!("{e:?}")))?;
    Ok(id)
}

/// `int P_run(const float *input, float *output, void *scratch)`; see the module doc.
fn define_run(
    module: &mut ObjectModule,
    fctx: &mut FunctionBuilderContext,
    spec: &ObjectSpec<'_>,
    ids: &Ids<'_>,
) -> Result<()> {
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    sig.params.extend([AbiParam::new(ptr); 3]);
    sig.returns.push(AbiParam::new(types::I32));
    let name = format!("{}_run", spec.prefix);
    define_fn(module, fctx, &name, Linkage::Export, sig, |m, b, params| {
        let &[input, output, scratch] = params else {
            return Err(Error::Codegen("P_run takes three pointers".into()));
        };
        let null = [input, output, scratch]
            .map(|p| b.ins().icmp_imm_s(IntCC::Equal, p, 0))
            .into_iter()
            .reduce(|x, y| b.ins().bor(x, y))
            .ok_or_else(|| Error::Codegen("no pointers".into()))?;
        return_if(b, null, RUN_NULL_POINTER);
        let misaligned = b.ins().band_imm_s(scratch, (SCRATCH_ALIGN - 1) as i64);
        return_if(b, misaligned, RUN_MISALIGNED_SCRATCH);
        if let Some(cpu_ok) = ids.cpu_ok {
            let f = m.declare_func_in_func(cpu_ok, b.func);
            let call = b.ins().call(f, &[]);
            let ok = b.inst_results(call)[0];
            let lacking = b.ins().icmp_imm_s(IntCC::Equal, ok, 0);
            return_if(b, lacking, RUN_CPU_LACKS_TIER);
        }
        call_kernels(m, b, spec, ids, input, scratch)?;
        let src = b.ins().iadd_imm_s(scratch, spec.output_offset as i64);
        let size = b.ins().iconst(ptr, (spec.output_elems * 4) as i64);
        b.call_memcpy(m.target_config(), output, src, size);
        let ok = b.ins().iconst(types::I32, RUN_OK);
        b.ins().return_(&[ok]);
        Ok(())
    })?;
    Ok(())
}

/// `if cond { return code; }`, continuing in a new block.
pub(crate) fn return_if(b: &mut FunctionBuilder<'_>, cond: Value, code: i64) {
    let ret = b.create_block();
    let next = b.create_block();
    b.ins().brif(cond, ret, &[], next, &[]);
    b.switch_to_block(ret);
    let v = b.ins().iconst(types::I32, code);
    b.ins().return_(&[v]);
    b.switch_to_block(next);
}

/// Every kernel in order on all its work items, its buffer pointers in a stack array.
fn call_kernels(
    m: &mut ObjectModule,
    b: &mut FunctionBuilder<'_>,
    spec: &ObjectSpec<'_>,
    ids: &Ids<'_>,
    input: Value,
    scratch: Value,
) -> Result<()> {
    let ptr = m.target_config().pointer_type();
    let ptr_bytes = ptr.bytes();
    let slot = b.create_sized_stack_slot(StackSlotData::new(
        StackSlotKind::ExplicitSlot,
        ptr_bytes * MAX_KERNEL_BUFFERS as u32,
        3,
    ));
    let bufs = b.ins().stack_addr(ptr, slot, 0);
    let consts: Vec<_> = ids
        .data
        .iter()
        .map(|&d| m.declare_data_in_func(d, b.func))
        .collect();
    for ((k, call), &id) in spec.kernels.iter().zip(spec.calls).zip(ids.kernels) {
        for (j, s) in call.iter().enumerate() {
            let addr = match *s {
                Source::Arena(off) => b.ins().iadd_imm_s(scratch, off as i64),
                Source::Const(i) => b.ins().symbol_value(ptr, consts[i]),
                Source::Input => input,
            };
            b.ins()
                .stack_store(ptr, addr, slot, (j as u32 * ptr_bytes) as i32);
        }
        let items = loops::verify::work_items(k)
            .ok_or_else(|| Error::Codegen(format!("kernel '{}': too many work items", k.name)))?;
        let f = m.declare_func_in_func(id, b.func);
        let begin = b.ins().iconst(types::I64, 0);
        let end = b.ins().iconst(types::I64, items);
        b.ins().call(f, &[bufs, begin, end]);
    }
    Ok(())
}
