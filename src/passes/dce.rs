//! `dce`: removes every node and constant that no graph output depends on.
//!
//! ## Rule
//! A node is live if it is a graph output, an operand of a live node, or a graph input. A
//! constant is live if a live node references it, or a live derived constant reads it: the
//! weights and batch-norm parameters that `fold-batchnorm`'s constants are computed from stay
//! (they are what the weight file provides), while a constant nothing live reads goes. Everything
//! else is removed. Removing a value nobody reads cannot change any output.
//!
//! Inputs are kept even when unused: they are the graph's interface (the caller passes them by
//! position), and dropping one would change what a compiled model expects, not just how it
//! computes.

use std::collections::HashSet;

use crate::Result;
use crate::graph::{Graph, Op, ValueId};

/// Removes dead nodes and constants. Returns whether anything was removed.
pub fn run(graph: &mut Graph) -> Result<bool> {
    let mut live: HashSet<ValueId> = HashSet::new();
    let mut stack: Vec<ValueId> = graph.outputs().to_vec();
    stack.extend(graph.inputs());
    while let Some(v) = stack.pop() {
        if live.insert(v) {
            stack.extend(graph.operands(v));
        }
    }
    let dead_nodes: Vec<ValueId> = graph.node_ids().filter(|v| !live.contains(v)).collect();

    let mut live_consts: HashSet<String> = HashSet::new();
    let mut pending: Vec<String> = live
        .iter()
        .flat_map(|&v| graph.node(v).op.const_refs())
        .map(str::to_string)
        .collect();
    while let Some(name) = pending.pop() {
        if let Some(c) = graph.const_decl(&name)
            && !live_consts.contains(&name)
        {
            pending.extend(c.def.operands().into_iter().map(str::to_string));
        }
        live_consts.insert(name);
    }
    let dead_consts: Vec<String> = graph
        .consts()
        .map(|(name, _)| name)
        .filter(|name| !live_consts.contains(*name))
        .map(str::to_string)
        .collect();

    let changed = !dead_nodes.is_empty() || !dead_consts.is_empty();
    for v in dead_nodes {
        debug_assert!(graph.node(v).op != Op::Input, "inputs are always live");
        graph.remove_node(v);
    }
    for name in dead_consts {
        graph.remove_const(&name);
    }
    Ok(changed)
}
