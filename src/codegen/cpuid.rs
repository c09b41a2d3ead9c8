//! The x86-64 object's CPU check: does this CPU have every feature the object's code was
//! compiled to use ([`X86Needs`]: for the portable tier, [`X86_PORTABLE_NEEDS`])?
//!
//! Cranelift IR has no `cpuid` or `xgetbv` instruction, so two tiny leaf functions are assembled
//! with iced-x86 (no relocations, no stack frame) and defined with `define_function_bytes`,
//! like any machine code that does not come from Cranelift IR. The decision itself is Cranelift
//! IR: check the highest standard and extended leaves, then leaf 1 (with OSXSAVE, without which
//! `xgetbv` would fault), then XCR0 (the OS saves the SSE and AVX state), then leaves 7 and
//! 0x8000_0001. The answer is cached in a local word (0 unknown, 1 yes, 2 no) with atomic loads
//! and stores: racing first calls store the same value, so the check runs about once and the
//! entry stays re-entrant.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    AbiParam, Block, FuncRef, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value, types,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, FuncId, Linkage, Module};
use cranelift_object::ObjectModule;
use iced_x86::code_asm::{
    CodeAssembler, dword_ptr, eax, ebx, ecx, edi, edx, esi, r8, rax, rbx, rdx,
};

use super::compile::{KernelCode, define, err};
use super::object::define_fn;
#[cfg(doc)]
use super::target::X86_PORTABLE_NEEDS;
use super::target::{CpuidReg, OSXSAVE_BIT, X86Needs};
use crate::Result;

/// `void cpuid(u32 leaf, u32 subleaf, u32 out[4])`: EAX, EBX, ECX, EDX of `cpuid` into `out`.
fn assemble_cpuid() -> std::result::Result<Vec<u8>, iced_x86::IcedError> {
    let mut a = CodeAssembler::new(64)?;
    a.push(rbx)?; // callee-saved in SysV, and cpuid writes it
    a.mov(r8, rdx)?;
    a.mov(eax, edi)?;
    a.mov(ecx, esi)?;
    a.cpuid()?;
    a.mov(dword_ptr(r8), eax)?;
    a.mov(dword_ptr(r8 + 4), ebx)?;
    a.mov(dword_ptr(r8 + 8), ecx)?;
    a.mov(dword_ptr(r8 + 12), edx)?;
    a.pop(rbx)?;
    a.ret()?;
    a.assemble(0)
}

/// `u64 xgetbv0(void)`: XCR0 (only valid to call when CPUID reports OSXSAVE).
fn assemble_xgetbv() -> std::result::Result<Vec<u8>, iced_x86::IcedError> {
    let mut a = CodeAssembler::new(64)?;
    a.xor(ecx, ecx)?;
    a.xgetbv()?;
    a.shl(rdx, 32)?;
    a.or(rax, rdx)?;
    a.ret()?;
    a.assemble(0)
}

/// Declares and defines one assembled leaf function.
fn define_asm(
    module: &mut ObjectModule,
    name: &str,
    params: &[types::Type],
    ret: Option<types::Type>,
    bytes: std::result::Result<Vec<u8>, iced_x86::IcedError>,
) -> Result<FuncId> {
    let bytes = bytes.map_err(|e| err(&format!("assembling {name}"), e))?;
    let mut sig = module.make_signature();
    sig.params.extend(params.iter().map(|&t| AbiParam::new(t)));
    sig.returns.extend(ret.map(AbiParam::new));
    let id = module
        .declare_function(name, Linkage::Local, &sig)
        .map_err(|e| err(&format!("declaring {name}"), e))?;
    let code = KernelCode {
        id,
        align: 16,
        bytes,
        relocs: Vec::new(),
        listing: String::new(),
    };
    define(module, &code, name)?;
    Ok(id)
}

/// The features of `needs` found in `leaf`'s `reg`, as a bit mask.
fn mask(needs: &X86Needs, leaf: u32, reg: CpuidReg) -> i64 {
    needs
        .features
        .iter()
        .filter(|f| f.leaf == leaf && f.reg == reg)
        .fold(0, |m, f| m | (1i64 << f.bit))
}

/// Defines `local + "cpu_ok"`, `int (void)`: 1 if the CPU and the OS provide `needs`, else 0.
pub(crate) fn define_cpu_check(
    module: &mut ObjectModule,
    local: &str,
    needs: &X86Needs,
) -> Result<FuncId> {
    let cpuid = define_asm(
        module,
        &format!("{local}cpuid"),
        &[types::I32, types::I32, types::I64],
        None,
        assemble_cpuid(),
    )?;
    let xgetbv = define_asm(
        module,
        &format!("{local}xgetbv0"),
        &[],
        Some(types::I64),
        assemble_xgetbv(),
    )?;
    let state = module
        .declare_data(&format!("{local}cpu_state"), Linkage::Local, true, false)
        .map_err(|e| err("declaring the CPU state", e))?;
    let mut desc = DataDescription::new();
    desc.define_zeroinit(4);
    desc.set_align(4);
    module
        .define_data(state, &desc)
        .map_err(|e| err("defining the CPU state", e))?;
    let mut sig = module.make_signature();
    sig.returns.push(AbiParam::new(types::I32));
    let mut fctx = FunctionBuilderContext::new();
    let name = format!("{local}cpu_ok");
    define_fn(module, &mut fctx, &name, Linkage::Local, sig, |m, b, _| {
        let gv = m.declare_data_in_func(state, b.func);
        let addr = b.ins().symbol_value(types::I64, gv);
        let known = b
            .ins()
            .atomic_load(types::I32, MemFlagsData::trusted(), addr);
        let probe = b.create_block();
        let answer = b.create_block();
        b.append_block_param(answer, types::I32);
        b.ins().brif(known, answer, &[known.into()], probe, &[]);
        b.switch_to_block(probe);
        let fns = (
            m.declare_func_in_func(cpuid, b.func),
            m.declare_func_in_func(xgetbv, b.func),
        );
        let done = b.create_block();
        let found = b.append_block_param(done, types::I32);
        probe_features(b, fns, needs, done);
        b.switch_to_block(done);
        b.ins().atomic_store(MemFlagsData::trusted(), found, addr);
        b.ins().jump(answer, &[found.into()]);
        b.switch_to_block(answer);
        let state = b.block_params(answer)[0];
        let ok = b.ins().icmp_imm_s(IntCC::Equal, state, 1);
        let ok = b.ins().uextend(types::I32, ok);
        b.ins().return_(&[ok]);
        Ok(())
    })
}

/// The probe proper: jumps to `done` with the state to cache, 1 when every feature is present,
/// 2 as soon as one check fails.
fn probe_features(
    b: &mut FunctionBuilder<'_>,
    (cpuid, xgetbv): (FuncRef, FuncRef),
    needs: &X86Needs,
    done: Block,
) {
    let slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, 16, 2));
    let out = b.ins().stack_addr(types::I64, slot, 0);
    let fail = b.create_block();
    // Reads `reg` (0 EAX .. 3 EDX) of cpuid(leaf, 0).
    let query = |b: &mut FunctionBuilder<'_>, leaf: u32, reg: i32| {
        let l = b.ins().iconst(types::I32, i64::from(leaf));
        let zero = b.ins().iconst(types::I32, 0);
        b.ins().call(cpuid, &[l, zero, out]);
        b.ins().stack_load(types::I64, types::I32, slot, reg * 4)
    };
    let require = |b: &mut FunctionBuilder<'_>, ok: Value| {
        let next = b.create_block();
        b.ins().brif(ok, next, &[], fail, &[]);
        b.switch_to_block(next);
    };
    let has_all = |b: &mut FunctionBuilder<'_>, word: Value, m: i64| {
        // A 32-bit word takes its mask as the signed 32-bit immediate (bit 31 included).
        let m = if b.func.dfg.value_type(word) == types::I32 {
            i64::from(m as u32 as i32)
        } else {
            m
        };
        let masked = b.ins().band_imm_s(word, m);
        b.ins().icmp_imm_s(IntCC::Equal, masked, m)
    };
    let max = query(b, 0, 0);
    let c = b
        .ins()
        .icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, max, 7);
    require(b, c);
    let max_ext = query(b, 0x8000_0000, 0);
    let c = b
        .ins()
        .icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, max_ext, 0x8000_0001);
    require(b, c);
    let ecx1 = query(b, 1, 2);
    let c = has_all(b, ecx1, mask(needs, 1, CpuidReg::Ecx) | (1 << OSXSAVE_BIT));
    require(b, c);
    let xcr0 = b.ins().call(xgetbv, &[]);
    let xcr0 = b.inst_results(xcr0)[0];
    let c = has_all(b, xcr0, needs.xcr0 as i64);
    require(b, c);
    for (leaf, reg, index) in [(7, CpuidReg::Ebx, 1), (0x8000_0001, CpuidReg::Ecx, 2)] {
        let word = query(b, leaf, index);
        let c = has_all(b, word, mask(needs, leaf, reg));
        require(b, c);
    }
    let found = b.ins().iconst(types::I32, 1);
    b.ins().jump(done, &[found.into()]);
    b.switch_to_block(fail);
    let missing = b.ins().iconst(types::I32, 2);
    b.ins().jump(done, &[missing.into()]);
}
