//! Ahead-of-time compilation: a graph and its weights into an object file and a C header, so
//! the model ships without the compiler.
//!
//! [`compile`] runs the JIT's pipeline up to machine code (verify, optionally the default
//! passes, bind the weights, lower, plan memory with the runtime's `CallPlan`) and hands the
//! result to [`codegen::object`], which writes the kernels, the constants and the C entry points
//! into one object; [`header`] writes the matching header. The object holds the portable tier of
//! its [`Target`]: Cranelift's f32x4 code, the same code the JIT runs at that tier.
//!
//! What must hold: the prefix is a C identifier (every global symbol is `PREFIX_*`, so two
//! prefixes link into one program); the model has one input and its final output is computed
//! into the arena (the entry copies it out); the tier exists for the target.

pub mod header;

use std::str::FromStr;

use crate::codegen::object::{self, ObjectSpec, Source};
use crate::codegen::target::Target;
use crate::graph::{self, Graph};
use crate::runtime::calls::{CallPlan, Slot};
use crate::{Error, Result, TensorMap, codegen, lower, passes};

/// The code tier asked for with `--isa`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// The portable tier: an object may run on another machine than the one that built it.
    Auto,
    Portable,
    Avx2,
    Avx512,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Auto => "auto",
            Tier::Portable => "portable",
            Tier::Avx2 => "avx2",
            Tier::Avx512 => "avx512",
        }
    }

    /// The tier an object for `target` holds, or why there is none.
    pub fn resolve(self, target: Target) -> Result<Tier> {
        match (self, target) {
            (Tier::Auto | Tier::Portable, _) => Ok(Tier::Portable),
            (Tier::Avx2 | Tier::Avx512, Target::Aarch64) => Err(Error::Usage(format!(
                "--isa {} does not exist for --target aarch64 (it has the portable tier only)",
                self.name()
            ))),
            (Tier::Avx2 | Tier::Avx512, Target::X86_64) => Err(Error::Usage(format!(
                "--isa {} is not available in object files yet: they hold the portable tier only (use --isa portable or auto; the JIT runs it: mnv2c run --isa)",
                self.name()
            ))),
        }
    }
}

impl FromStr for Tier {
    type Err = Error;
    fn from_str(s: &str) -> Result<Tier> {
        [Tier::Auto, Tier::Portable, Tier::Avx2, Tier::Avx512]
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "unknown tier '{s}' (valid tiers: auto, portable, avx2, avx512)"
                ))
            })
    }
}

/// How to compile an object. `#[non_exhaustive]`: start from [`AotOptions::new`] and the
/// `with_*` setters:
///
/// ```
/// use mnv2c::aot::{AotOptions, Tier};
/// use mnv2c::codegen::target::Target;
/// let o = AotOptions::new().with_prefix("net").with_target(Target::Aarch64).with_tier(Tier::Auto);
/// assert_eq!((o.prefix.as_str(), o.target, o.optimize), ("net", Target::Aarch64, true));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AotOptions {
    /// Every global symbol starts with `prefix_`; a C identifier.
    pub prefix: String,
    pub target: Target,
    pub tier: Tier,
    /// Run the default pass pipeline first.
    pub optimize: bool,
}

/// The default prefix of the generated symbols.
pub const DEFAULT_PREFIX: &str = "mnv2c_model";

impl Default for AotOptions {
    fn default() -> AotOptions {
        AotOptions {
            prefix: DEFAULT_PREFIX.into(),
            target: Target::host().unwrap_or(Target::X86_64),
            tier: Tier::Auto,
            optimize: true,
        }
    }
}

impl AotOptions {
    /// The defaults: prefix [`DEFAULT_PREFIX`], the host's target, tier `auto`, optimised.
    pub fn new() -> AotOptions {
        AotOptions::default()
    }

    pub fn with_prefix(mut self, prefix: impl Into<String>) -> AotOptions {
        self.prefix = prefix.into();
        self
    }

    pub fn with_target(mut self, target: Target) -> AotOptions {
        self.target = target;
        self
    }

    pub fn with_tier(mut self, tier: Tier) -> AotOptions {
        self.tier = tier;
        self
    }

    /// Whether to run the default pass pipeline first.
    pub fn with_optimize(mut self, optimize: bool) -> AotOptions {
        self.optimize = optimize;
        self
    }
}

/// An object file and its header.
#[derive(Debug)]
pub struct Artifact {
    /// The ELF object.
    pub object: Vec<u8>,
    /// The C header.
    pub header: String,
    /// Machine code of the kernels, in bytes.
    pub kernel_code_bytes: usize,
    /// The packed and folded constants, in bytes.
    pub const_bytes: usize,
    pub kernels: usize,
}

/// The longest prefix accepted (symbols stay readable; C compilers take far longer).
const MAX_PREFIX: usize = 64;

/// Checks that `prefix` can start C identifiers: `[A-Za-z_][A-Za-z0-9_]*`, not reserved
/// (a leading `__` or `_` + capital), at most 64 characters.
pub fn check_prefix(prefix: &str) -> Result<()> {
    let mut chars = prefix.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    let reserved = prefix.starts_with("__")
        || (prefix.starts_with('_') && prefix[1..].starts_with(|c: char| c.is_ascii_uppercase()));
    if !first_ok || !rest_ok || reserved || prefix.len() > MAX_PREFIX {
        return Err(Error::Usage(format!(
            "--prefix '{prefix}' is not a usable C identifier (letters, digits and _, not starting with a digit, __ or _ and a capital, at most {MAX_PREFIX} characters)"
        )));
    }
    Ok(())
}

/// Compiles `graph` with `weights` into an object file and its header (see the module doc).
pub fn compile(graph: &Graph, weights: &TensorMap, opts: &AotOptions) -> Result<Artifact> {
    check_prefix(&opts.prefix)?;
    opts.tier.resolve(opts.target)?;
    graph::verify(graph)?;
    let mut graph = graph.clone();
    if opts.optimize {
        passes::optimize(&mut graph)?;
    }
    // Only what the ops read, as `CompiledModel::compile` binds.
    let consts = graph::consts::bind_referenced(&graph, weights)?;
    // Verified by `lower` (`loops::verify_program`).
    let mut program = lower::lower(&graph, &consts)?;
    // The object walks its kernels layer by layer (`codegen::object`).
    let layout = CallPlan::new(&mut program, false, false)?;
    let (input, output) = match (&layout.inputs[..], layout.outputs.last()) {
        ([input], Some(output)) => (input, output),
        (inputs, _) => {
            return Err(Error::Usage(format!(
                "an object takes a model with one input and an output; this one has {} input(s)",
                inputs.len()
            )));
        }
    };
    let Slot::Arena(out_range) = &output.slot else {
        return Err(Error::Usage(format!(
            "the output %{} is not computed by a kernel, so the object has nothing to run",
            output.name
        )));
    };
    let calls: Vec<Vec<Source>> = layout
        .calls
        .iter()
        .map(|c| c.slots.iter().map(source).collect())
        .collect::<Result<_>>()?;
    let elems = |dims: &[usize]| dims.iter().product::<usize>();
    let spec = ObjectSpec {
        prefix: &opts.prefix,
        target: opts.target,
        kernels: &program.kernels,
        calls: &calls,
        consts: &layout.consts,
        input_elems: elems(&input.dims),
        output_elems: elems(&output.dims),
        output_offset: out_range.start * 4,
        scratch_bytes: layout.plan.arena_bytes,
    };
    let file = codegen::object::emit_object(&spec)?;
    let header = header::write(&header::HeaderSpec {
        prefix: &opts.prefix,
        target: opts.target,
        input: (&input.name, &input.dims),
        output: (&output.name, &output.dims),
        scratch_bytes: layout.plan.arena_bytes,
        scratch_align: object::SCRATCH_ALIGN,
    });
    Ok(Artifact {
        object: file.bytes,
        header,
        kernel_code_bytes: file.kernel_code_bytes,
        const_bytes: file.const_bytes,
        kernels: program.kernels.len(),
    })
}

fn source(s: &Slot) -> Result<Source> {
    match s {
        Slot::Arena(r) => Ok(Source::Arena(r.start * 4)),
        Slot::Const(i) => Ok(Source::Const(*i)),
        Slot::Input(_) => Ok(Source::Input),
        // The object runs layer by layer, where nothing folds (`runtime::fold`).
        Slot::Fold(_) => Err(Error::Internal(
            "an object has no fold windows, but a buffer was folded".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::{Config, mobilenet_v2, weights};

    #[test]
    fn prefixes_must_be_usable_c_identifiers() {
        for ok in ["a", "mnv2c_model", "_net", "Net2", &"x".repeat(64)] {
            assert!(check_prefix(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "9lives",
            "a-b",
            "a b",
            "__x",
            "_X",
            "é",
            &"x".repeat(65),
        ] {
            let e = check_prefix(bad).unwrap_err();
            assert!(matches!(e, Error::Usage(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn tiers_resolve_per_target() {
        for t in [Target::X86_64, Target::Aarch64] {
            assert_eq!(Tier::Auto.resolve(t).unwrap(), Tier::Portable);
            assert_eq!(Tier::Portable.resolve(t).unwrap(), Tier::Portable);
        }
        let e = Tier::Avx512
            .resolve(Target::Aarch64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist for --target aarch64"), "{e}");
        let e = Tier::Avx2.resolve(Target::X86_64).unwrap_err().to_string();
        assert!(e.contains("not available in object files yet"), "{e}");
        assert_eq!("avx2".parse::<Tier>().unwrap(), Tier::Avx2);
        let e = "sse2".parse::<Tier>().unwrap_err();
        assert!(
            matches!(&e, Error::Usage(m) if m.contains("unknown tier 'sse2'")),
            "{e}"
        );
    }

    /// Every identifier the header declares or defines starts with the prefix, and the numbers
    /// are the model's.
    #[test]
    fn the_header_names_only_prefixed_identifiers() {
        let config = Config {
            num_classes: 7,
            batch: 2,
            height: 24,
            width: 16,
        };
        let g = mobilenet_v2(&config).unwrap();
        let w = weights::seeded(&g, 0).unwrap();
        let opts = AotOptions::new()
            .with_prefix("net")
            .with_target(Target::Aarch64);
        let art = compile(&g, &w, &opts).unwrap();
        assert_eq!(&art.object[..4], b"\x7fELF");
        let h = &art.header;
        for line in h.lines() {
            if let Some(rest) = line.strip_prefix("#define ") {
                assert!(rest.starts_with("NET_"), "{line}");
            }
            if line.starts_with("size_t ") || line.starts_with("int ") {
                assert!(
                    line.split_whitespace().nth(1).unwrap().starts_with("net_"),
                    "{line}"
                );
            }
        }
        for want in [
            "#define NET_INPUT_ELEMS 2304",
            "#define NET_OUTPUT_DIM0 2",
            "#define NET_OUTPUT_DIM1 7",
            "#define NET_SCRATCH_ALIGN 64",
            "#define NET_ERR_CPU_LACKS_TIER 3",
            "int net_run(const float *input, float *output, void *scratch);",
        ] {
            assert!(h.contains(want), "missing {want:?} in\n{h}");
        }
    }

    /// The same model and options give the same bytes: objects are reproducible build
    /// artifacts (kernels compile on several threads but are defined in kernel order).
    #[test]
    fn objects_are_reproducible() {
        let config = Config {
            num_classes: 5,
            batch: 1,
            height: 20,
            width: 20,
        };
        let g = mobilenet_v2(&config).unwrap();
        let w = weights::seeded(&g, 3).unwrap();
        for target in [Target::X86_64, Target::Aarch64] {
            let opts = AotOptions::new().with_target(target);
            let a = compile(&g, &w, &opts).unwrap();
            let b = compile(&g, &w, &opts).unwrap();
            assert!(a.object == b.object, "{target:?}");
            assert_eq!(a.header, b.header);
        }
    }
}
