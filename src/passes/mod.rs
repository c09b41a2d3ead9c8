//! Graph-to-graph optimisation passes and the pipeline that runs them.
//!
//! A pass is a kebab-case name plus a function `fn(&mut Graph) -> Result<bool>` that rewrites
//! the graph in place and reports whether it changed anything. The pipeline is a plain list of
//! passes ([`DEFAULT_PIPELINE`]); [`run_pipeline`] runs them in order as straight-line code and
//! verifies the graph after every pass, so a broken invariant is reported as
//! `verification failed after <pass>: %value: ...` and never reaches a later stage.
//!
//! Each pass lives in its own file whose module doc opens with its rewrite rule and its math.
//! Every rewrite is local and guarded: a row of early-return checks (single consumer, not a graph
//! output, constant operands, compatible epilogue), then the rewrite. A pass visits the graph once
//! in topological order and re-reads the node it is looking at, so rewrites that enable each
//! other along a chain (`conv -> batch_norm -> batch_norm`) all fire in the same run.
//!
//! ## Names
//! Rewritten nodes keep the *producer's* name: when `conv -> batch_norm` becomes one conv, the
//! node is still `%res5_1/pw` and the batch norm's users now read it; the absorbed node
//! (`batch_norm`, `relu6`, `add`) disappears. The one exception keeps graph outputs named: when
//! the absorbed node is a graph output, the producer takes its name (`absorb`), so a model
//! whose output is `%out_relu` still has an output `%out_relu` after fusion. New constants
//! derive their names from the constants they are computed from (see [`fold_batchnorm`]);
//! `fresh_const_name` keeps them
//! unique.
//!
//! ## The default pipeline and why in this order
//! 1. `fold-batchnorm` first: it only folds into a conv whose epilogue is still `none`, and it
//!    turns `conv -> batch_norm` pairs into single convs that the fusions below can see.
//! 2. `fuse-add` before `fuse-relu6`: in `conv -> add -> relu6` the relu6 reads the add, not
//!    the conv, so `fuse-relu6` can fire only after `fuse-add` has made the add part of the conv
//!    (epilogue `add`); it then turns that into `add_relu6`. In the other order the relu6 would
//!    stay standalone. (No relu6 follows an add in MobileNetV2, but this order is the right one
//!    in general; `relu6 -> add` never fuses either way, since an add cannot go after a clamp.)
//! 3. `fold-pad` after the fusions: it only widens a conv's pads and removes the pad node, which
//!    none of the rewrites above looks through, so its place is free; after them it keeps the
//!    numbering of their snapshots.
//! 4. `fold-rescale` after `fold-pad`: a pad between a Rescaling and a conv, once folded, makes
//!    the conv padded, and then folding the Rescaling would not be exact (see its module doc);
//!    after `fold-batchnorm`, whose folded weight it scales in turn.
//! 5. `dce` last: it removes whatever no output depends on — dead nodes, and constants nothing
//!    live reads. The folds' sources (weights, batch-norm parameters) stay: the derived
//!    constants read them, and they are what a weights file provides.

pub mod dce;
pub mod fold_batchnorm;
pub mod fold_pad;
pub mod fold_rescale;
pub mod fuse_add;
pub mod fuse_relu6;

use crate::graph::{Graph, ValueId, verify};
use crate::{Error, Result};

/// A named graph rewrite.
#[derive(Clone, Copy, Debug)]
pub struct Pass {
    /// The kebab-case name used on the command line and in error messages.
    pub name: &'static str,
    /// One line for `--list-passes`.
    pub summary: &'static str,
    /// Rewrites the graph in place; `Ok(true)` when something changed.
    pub run: fn(&mut Graph) -> Result<bool>,
}

pub const FOLD_BATCHNORM: Pass = Pass {
    name: "fold-batchnorm",
    summary: "fold a batch norm into the weights and bias of the conv it follows",
    run: fold_batchnorm::run,
};

pub const FOLD_PAD: Pass = Pass {
    name: "fold-pad",
    summary: "fold a zero pad into the padding of the conv it feeds",
    run: fold_pad::run,
};

pub const FOLD_RESCALE: Pass = Pass {
    name: "fold-rescale",
    summary: "fold a scale_offset (Keras Rescaling) into the unpadded conv it feeds",
    run: fold_rescale::run,
};

pub const FUSE_ADD: Pass = Pass {
    name: "fuse-add",
    summary: "fuse a residual add into the epilogue of the conv producing one of its operands",
    run: fuse_add::run,
};

pub const FUSE_RELU6: Pass = Pass {
    name: "fuse-relu6",
    summary: "fuse a relu or relu6 into the epilogue of the conv it follows",
    run: fuse_relu6::run,
};

pub const DCE: Pass = Pass {
    name: "dce",
    summary: "remove nodes and constants no output depends on",
    run: dce::run,
};

/// Every pass, in the order of the default pipeline; what [`lookup`] searches.
pub const ALL_PASSES: &[Pass] = &[
    FOLD_BATCHNORM,
    FUSE_ADD,
    FUSE_RELU6,
    FOLD_PAD,
    FOLD_RESCALE,
    DCE,
];

/// The passes `mnv2c compile` runs unless told otherwise (see the module doc for the order).
pub const DEFAULT_PIPELINE: &[Pass] = &[
    FOLD_BATCHNORM,
    FUSE_ADD,
    FUSE_RELU6,
    FOLD_PAD,
    FOLD_RESCALE,
    DCE,
];

/// The pass called `name`, or a usage error listing the valid names.
pub fn lookup(name: &str) -> Result<Pass> {
    ALL_PASSES
        .iter()
        .find(|p| p.name == name)
        .copied()
        .ok_or_else(|| {
            let valid: Vec<&str> = ALL_PASSES.iter().map(|p| p.name).collect();
            Error::Usage(format!(
                "unknown pass '{name}' (valid passes: {})",
                valid.join(", ")
            ))
        })
}

/// Parses a comma-separated pass list (`fold-batchnorm,dce`). Blanks around names are ignored;
/// an empty list or an empty name is a usage error.
pub fn parse_pass_list(list: &str) -> Result<Vec<Pass>> {
    if list.trim().is_empty() {
        return Err(Error::Usage(
            "empty pass list (use -O0 to run no pass)".into(),
        ));
    }
    list.split(',').map(|name| lookup(name.trim())).collect()
}

/// Runs `passes` in order on `graph`, which must be valid on entry (it is verified first; a
/// failure there is reported without a pass name). After each pass the graph is verified, and
/// `observer(pass, changed, graph)` is called with the verified result — that is where
/// `--print-after` and the snapshot tests look. A verification failure, or an error raised by
/// the pass itself, names the pass. On error the graph is left as the failing pass left it.
pub fn run_pipeline(
    graph: &mut Graph,
    passes: &[Pass],
    observer: &mut dyn FnMut(&Pass, bool, &Graph),
) -> Result<()> {
    verify(graph)?;
    for pass in passes {
        let changed = (pass.run)(graph)
            .and_then(|changed| verify(graph).map(|()| changed))
            .map_err(|e| blame(e, pass.name))?;
        observer(pass, changed, graph);
    }
    Ok(())
}

/// Runs [`DEFAULT_PIPELINE`] without observing it.
pub fn optimize(graph: &mut Graph) -> Result<()> {
    run_pipeline(graph, DEFAULT_PIPELINE, &mut |_, _, _| {})
}

/// Names `pass` in a verification error that does not name one yet.
fn blame(e: Error, pass: &str) -> Error {
    match e {
        Error::Verify {
            pass: None,
            value,
            message,
            location,
        } => Error::Verify {
            pass: Some(pass.to_string()),
            value,
            message,
            location,
        },
        other => other,
    }
}

/// The header `--print-after` prints above the IR after a pass. It starts with `#`, a comment
/// in the text form, so a dump of a single pass still parses.
pub fn print_after_header(pass: &str, changed: bool) -> String {
    let what = if changed { "changed" } else { "unchanged" };
    format!("# ----- IR after {pass} ({what}) -----")
}

/// The single user of `id` as `(user, slot)`, if `id` has exactly one use and that use is an
/// operand (not a graph output). The guard of every fusion: the producer's value must not be
/// observable anywhere else once the consumer is folded into it.
pub(crate) fn sole_user(graph: &Graph, id: ValueId) -> Option<(ValueId, usize)> {
    if graph.num_uses(id) != 1 {
        return None;
    }
    match graph.users(id)[..] {
        [only] => Some(only),
        _ => None, // the one use is an output
    }
}

/// Folds `consumer` into `producer`: the producer takes over the consumer's uses and the
/// consumer is removed. When the consumer is a graph output, the producer also takes its name,
/// so graph outputs keep their names through every pass (the producer's own name had no other
/// reader: fusions require it to have the consumer as its only use).
pub(crate) fn absorb(graph: &mut Graph, producer: ValueId, consumer: ValueId) {
    let is_output = graph.outputs().contains(&consumer);
    graph.replace_all_uses(consumer, producer);
    if let Some(node) = graph.remove_node(consumer)
        && is_output
    {
        graph.node_mut(producer).name = node.name;
    }
}

/// `base` if no constant is called that yet, else `base.2`, `base.3`, ... — the first free one.
/// Derived constants are named after their sources, and two folds can derive from the same
/// source (a weight shared by two convs), so a pass must not assume the plain name is free.
pub(crate) fn fresh_const_name(graph: &Graph, base: &str) -> String {
    if graph.const_decl(base).is_none() {
        return base.to_string();
    }
    (2usize..)
        .map(|i| format!("{base}.{i}"))
        .find(|n| graph.const_decl(n).is_none())
        .expect("an unbounded sequence of names has a free one")
}

/// Whether `to` is reachable from `from` along operand edges (`from` itself counts). Fusions use
/// it to refuse a rewrite that would make a value depend on itself.
pub(crate) fn reaches(graph: &Graph, from: ValueId, to: ValueId) -> bool {
    let mut stack = vec![from];
    let mut seen = std::collections::HashSet::new();
    while let Some(v) = stack.pop() {
        if v == to {
            return true;
        }
        if seen.insert(v) {
            stack.extend(graph.users(v).into_iter().map(|(u, _)| u));
        }
    }
    false
}
