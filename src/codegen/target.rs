//! Which machine code is generated for: the host (the JIT) or a named target (an object file).
//!
//! The JIT compiles for the running CPU with every feature Cranelift detects. An object may run
//! on another machine, so its ISA has a fixed, documented feature set and the object checks at
//! run time that the CPU has it (see [`X86_PORTABLE`]). What must hold: every feature flag an
//! object ISA enables is listed in [`X86_PORTABLE`] with the CPUID bit that proves it, so the
//! object's check covers exactly what its code assumes.

use std::str::FromStr;

use cranelift_codegen::isa::{self, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable};

use super::compile::{Isas, err};
use crate::loops::OptLevel;
use crate::{Error, Result};

/// A target architecture for ahead-of-time code (ELF, Linux calling convention).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    X86_64,
    Aarch64,
}

impl Target {
    /// The architecture this program runs on, if it is one of the targets.
    pub fn host() -> Option<Target> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Target::X86_64),
            "aarch64" => Some(Target::Aarch64),
            _ => None,
        }
    }

    /// The name used on the command line and in the header.
    pub fn name(self) -> &'static str {
        match self {
            Target::X86_64 => "x86_64",
            Target::Aarch64 => "aarch64",
        }
    }

    fn triple(self) -> &'static str {
        match self {
            Target::X86_64 => "x86_64-unknown-linux-gnu",
            Target::Aarch64 => "aarch64-unknown-linux-gnu",
        }
    }
}

impl FromStr for Target {
    type Err = Error;
    fn from_str(s: &str) -> Result<Target> {
        match s {
            "x86_64" => Ok(Target::X86_64),
            "aarch64" => Ok(Target::Aarch64),
            _ => Err(Error::Usage(format!(
                "unknown target '{s}' (valid targets: x86_64, aarch64)"
            ))),
        }
    }
}

/// A CPU feature the portable x86-64 object needs: Cranelift's flag, and the CPUID bit that
/// shows it (`leaf`, subleaf 0, register, bit).
#[derive(Clone, Copy, Debug)]
pub struct CpuFeature {
    pub flag: &'static str,
    pub leaf: u32,
    pub reg: CpuidReg,
    pub bit: u32,
}

/// A register of CPUID's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuidReg {
    Ebx,
    Ecx,
}

const fn feature(flag: &'static str, leaf: u32, reg: CpuidReg, bit: u32) -> CpuFeature {
    CpuFeature {
        flag,
        leaf,
        reg,
        bit,
    }
}

/// The portable x86-64 tier: Cranelift's f32x4 code with VEX encodings and fused
/// multiply-add, i.e. the x86-64-v3 level (Haswell, Zen 1 and later). FMA is what keeps the
/// object bit-identical with the interpreter's `mul_add` (without it Cranelift calls `fmaf`
/// per element); the rest are what Cranelift's x64 backend uses when present, the same flags
/// the JIT gets on such a host (minus AVX-512, which it does not use for these kernels). The
/// object also checks that the OS saves the AVX state (OSXSAVE, then XCR0 bits 1 and 2).
pub const X86_PORTABLE: &[CpuFeature] = &[
    feature("has_sse3", 1, CpuidReg::Ecx, 0),
    feature("has_ssse3", 1, CpuidReg::Ecx, 9),
    feature("has_fma", 1, CpuidReg::Ecx, 12),
    feature("has_sse41", 1, CpuidReg::Ecx, 19),
    feature("has_sse42", 1, CpuidReg::Ecx, 20),
    feature("has_popcnt", 1, CpuidReg::Ecx, 23),
    feature("has_avx", 1, CpuidReg::Ecx, 28),
    feature("has_bmi1", 7, CpuidReg::Ebx, 3),
    feature("has_avx2", 7, CpuidReg::Ebx, 5),
    feature("has_bmi2", 7, CpuidReg::Ebx, 8),
    feature("has_lzcnt", 0x8000_0001, CpuidReg::Ecx, 5),
];

/// CPUID leaf 1, ECX: the OS has enabled XSAVE (XGETBV may be executed).
pub const OSXSAVE_BIT: u32 = 27;

/// What an x86-64 object's code needs of the CPU and the OS: CPUID feature bits, and the XCR0
/// bits of the register state the OS must save (SSE and AVX: bits 1 and 2; an AVX-512 tier adds
/// the opmask and upper-ZMM state, bits 5 to 7, and its own CPUID bits).
#[derive(Clone, Copy, Debug)]
pub struct X86Needs {
    pub features: &'static [CpuFeature],
    pub xcr0: u64,
}

/// The needs of the portable tier.
pub const X86_PORTABLE_NEEDS: X86Needs = X86Needs {
    features: X86_PORTABLE,
    xcr0: 0b110,
};

/// The value of Cranelift's `opt_level` setting for a kernel's [`OptLevel`].
fn cranelift_opt_level(level: OptLevel) -> &'static str {
    match level {
        OptLevel::None => "none",
        OptLevel::Speed => "speed",
    }
}

/// Shared flags: `opt_level`, the verifier, and the relocation model.
fn shared_flags(level: OptLevel, verifier: bool, pic: bool) -> Result<settings::Flags> {
    let mut fb = settings::builder();
    for (k, v) in [
        ("opt_level", cranelift_opt_level(level)),
        ("enable_verifier", if verifier { "true" } else { "false" }),
        ("is_pic", if pic { "true" } else { "false" }),
        ("use_colocated_libcalls", "false"),
    ] {
        fb.set(k, v)
            .map_err(|e| err(&format!("setting {k}={v}"), e))?;
    }
    Ok(settings::Flags::new(fb))
}

impl Isas {
    /// The host's ISA with every detected feature (the JIT; not position-independent).
    pub(crate) fn host(verifier: bool) -> Result<Isas> {
        let make = |level| {
            cranelift_native::builder()
                .map_err(|m| err("this host is not supported by Cranelift", m))?
                .finish(shared_flags(level, verifier, false)?)
                .map_err(|e| err("building the target ISA", e))
        };
        Ok(Isas {
            speed: make(OptLevel::Speed)?,
            none: make(OptLevel::None)?,
        })
    }

    /// The portable tier of `target`, position-independent (for an object file).
    pub(crate) fn portable(target: Target, verifier: bool) -> Result<Isas> {
        let make = |level| -> Result<OwnedTargetIsa> {
            let mut b = isa::lookup_by_name(target.triple())
                .map_err(|e| err("looking up the target ISA", e))?;
            if target == Target::X86_64 {
                for f in X86_PORTABLE_NEEDS.features {
                    b.enable(f.flag)
                        .map_err(|e| err(&format!("enabling {}", f.flag), e))?;
                }
            }
            b.finish(shared_flags(level, verifier, true)?)
                .map_err(|e| err("building the target ISA", e))
        };
        Ok(Isas {
            speed: make(OptLevel::Speed)?,
            none: make(OptLevel::None)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codegen::compile::compile_function;
    use crate::codegen::micro::Isa;
    use crate::codegen::{MicroFns, kernel_signature, translate};
    use crate::frontend::{Config, mobilenet_v2, weights};
    use cranelift_frontend::FunctionBuilderContext;
    use cranelift_module::{Linkage, Module, default_libcall_names};
    use cranelift_object::{ObjectBuilder, ObjectModule};

    /// Machine code and relocation count of every kernel of a small model, compiled with `isas`.
    fn kernel_code(isas: &Isas) -> Vec<(Vec<u8>, usize)> {
        let config = Config {
            num_classes: 10,
            batch: 1,
            height: 40,
            width: 40,
        };
        let mut g = mobilenet_v2(&config).unwrap();
        crate::passes::optimize(&mut g).unwrap();
        let consts = weights::bind(&g, &weights::seeded(&g, 0).unwrap()).unwrap();
        let program = crate::lower::lower(&g, &consts).unwrap();
        let builder = ObjectBuilder::new(isas.speed.clone(), "t", default_libcall_names()).unwrap();
        let mut m = ObjectModule::new(builder);
        let mut fctx = FunctionBuilderContext::new();
        let sig = kernel_signature(&m);
        program
            .kernels
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let id = m
                    .declare_function(&format!("k{i}"), Linkage::Local, &sig)
                    .unwrap();
                let mut ctx = m.make_context();
                ctx.func.signature = sig.clone();
                translate(
                    &mut m,
                    k,
                    &mut ctx.func,
                    &mut fctx,
                    Isa::Portable,
                    &MicroFns::new(),
                    "expf",
                )
                .unwrap();
                let isa = match k.opt_level {
                    OptLevel::None => &isas.none,
                    OptLevel::Speed => &isas.speed,
                };
                let c = compile_function(ctx, id, &**isa, &k.name).unwrap();
                (c.bytes, c.relocs.len())
            })
            .collect()
    }

    /// The object's portable x86 tier is the code the JIT runs on a host that has every
    /// feature of [`X86_PORTABLE`] (and perhaps more, such as AVX-512): kernels without
    /// relocations are byte for byte the same (the one calling `expf` differs in how it reaches
    /// it: position-independent in the object).
    #[test]
    #[allow(clippy::print_stderr)] // a skipped test says so
    fn the_portable_tier_is_the_jit_code_on_a_host_that_has_it() {
        #[cfg(target_arch = "x86_64")]
        {
            let host_has_all = [
                is_x86_feature_detected!("sse3"),
                is_x86_feature_detected!("ssse3"),
                is_x86_feature_detected!("fma"),
                is_x86_feature_detected!("sse4.1"),
                is_x86_feature_detected!("sse4.2"),
                is_x86_feature_detected!("popcnt"),
                is_x86_feature_detected!("avx"),
                is_x86_feature_detected!("bmi1"),
                is_x86_feature_detected!("avx2"),
                is_x86_feature_detected!("bmi2"),
                is_x86_feature_detected!("lzcnt"),
            ]
            .iter()
            .all(|&b| b);
            if !host_has_all {
                eprintln!("skipped: this host lacks part of the portable x86 tier");
                return;
            }
            let jit = kernel_code(&Isas::host(false).unwrap());
            let obj = kernel_code(&Isas::portable(Target::X86_64, false).unwrap());
            assert_eq!(jit.len(), obj.len());
            let mut compared = 0;
            for (i, (j, o)) in jit.iter().zip(&obj).enumerate() {
                if j.1 == 0 && o.1 == 0 {
                    assert_eq!(j.0, o.0, "kernel {i}");
                    compared += 1;
                }
            }
            assert!(compared + 1 >= jit.len(), "{compared} of {}", jit.len());
        }
        #[cfg(not(target_arch = "x86_64"))]
        eprintln!("skipped: the host is not x86_64");
    }
}
