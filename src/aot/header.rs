//! The C header of an object file: the four entry points, the shapes and layout of the input
//! and output as comments and `#define`s, the return codes and the scratch alignment.
//!
//! What must hold: every name it declares or defines starts with the prefix (upper-cased for
//! macros), so headers of two models can be included together, and every number in it is the
//! one the object was built with.

use crate::codegen::object::{
    RUN_CPU_LACKS_TIER, RUN_MISALIGNED_SCRATCH, RUN_NULL_POINTER, RUN_OK,
};
use crate::codegen::target::Target;

/// What the header describes.
#[derive(Debug)]
pub struct HeaderSpec<'a> {
    pub prefix: &'a str,
    pub target: Target,
    /// Name and shape of the input.
    pub input: (&'a str, &'a [usize]),
    /// Name and shape of the output.
    pub output: (&'a str, &'a [usize]),
    pub scratch_bytes: usize,
    pub scratch_align: usize,
}

fn dims_text(dims: &[usize]) -> String {
    let d: Vec<String> = dims.iter().map(usize::to_string).collect();
    format!("[{}]", d.join(", "))
}

/// Layout words for a shape: the graph IR's activations are NHWC.
fn layout_text(dims: &[usize]) -> &'static str {
    match dims.len() {
        4 => "NHWC (batch, height, width, channels), row-major",
        2 => "[batch, classes], row-major",
        _ => "row-major",
    }
}

/// `#define P_NAME_RANK`, `P_NAME_DIMk` and `P_NAME_ELEMS` for one port.
fn shape_defines(out: &mut String, macro_prefix: &str, port: &str, dims: &[usize]) {
    out.push_str(&format!(
        "#define {macro_prefix}_{port}_RANK {}\n",
        dims.len()
    ));
    for (i, d) in dims.iter().enumerate() {
        out.push_str(&format!("#define {macro_prefix}_{port}_DIM{i} {d}\n"));
    }
    let elems: usize = dims.iter().product();
    out.push_str(&format!("#define {macro_prefix}_{port}_ELEMS {elems}\n"));
}

/// The header text.
pub fn write(h: &HeaderSpec<'_>) -> String {
    let p = h.prefix;
    let m = p.to_ascii_uppercase();
    let (in_name, in_dims) = h.input;
    let (out_name, out_dims) = h.output;
    let mut s = format!(
        "/* The C interface of model `{p}`, an object written by mnv2c {version} for {target}.\n\
         \x20* Generated; do not edit. Link the object with -lm (it calls expf and memcpy).\n\
         \x20*\n\
         \x20* input  %{in_name}: f32 {in_dims}, {in_layout}\n\
         \x20* output %{out_name}: f32 {out_dims}, {out_layout}\n\
         \x20*\n\
         \x20* {p}_run computes the model on one input, on the calling thread. It is re-entrant:\n\
         \x20* each concurrent caller passes its own scratch of {p}_scratch_bytes() bytes aligned to\n\
         \x20* {m}_SCRATCH_ALIGN. input, output and scratch must not overlap. Nothing is allocated.\n\
         \x20*/\n\
         #ifndef {m}_H\n#define {m}_H\n\n#include <stddef.h>\n\n",
        version = env!("CARGO_PKG_VERSION"),
        target = h.target.name(),
        in_dims = dims_text(in_dims),
        in_layout = layout_text(in_dims),
        out_dims = dims_text(out_dims),
        out_layout = layout_text(out_dims),
    );
    shape_defines(&mut s, &m, "INPUT", in_dims);
    shape_defines(&mut s, &m, "OUTPUT", out_dims);
    s.push_str(&format!(
        "#define {m}_SCRATCH_BYTES {}\n#define {m}_SCRATCH_ALIGN {}\n\n",
        h.scratch_bytes, h.scratch_align
    ));
    s.push_str(&format!(
        "/* Return codes of {p}_run. */\n\
         #define {m}_OK {RUN_OK}\n\
         #define {m}_ERR_NULL_POINTER {RUN_NULL_POINTER}         /* input, output or scratch is NULL */\n\
         #define {m}_ERR_MISALIGNED_SCRATCH {RUN_MISALIGNED_SCRATCH}   /* scratch is not {m}_SCRATCH_ALIGN-aligned */\n\
         #define {m}_ERR_CPU_LACKS_TIER {RUN_CPU_LACKS_TIER}       /* this CPU lacks the compiled tier (checked once) */\n\n\
         #ifdef __cplusplus\nextern \"C\" {{\n#endif\n\n\
         size_t {p}_input_elems(void);   /* f32 elements of the input */\n\
         size_t {p}_output_elems(void);  /* f32 elements of the output */\n\
         size_t {p}_scratch_bytes(void); /* bytes of scratch {p}_run needs */\n\
         int {p}_run(const float *input, float *output, void *scratch); /* {m}_OK on success */\n\n\
         #ifdef __cplusplus\n}}\n#endif\n\n#endif /* {m}_H */\n"
    ));
    s
}
