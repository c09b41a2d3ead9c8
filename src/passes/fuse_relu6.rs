//! `fuse-relu6`: `act(conv(x, ..) {epilogue = e}) => conv(x, ..) {epilogue = e + act}` for `act`
//! either `relu6` or plain `relu` (the name predates relu; it stays for existing users).
//!
//! ## Math
//! A conv computes `y = clamp(conv(x, w) + bias + residual, lo, hi)` with the clamp last (see
//! [`graph::op`](crate::graph::op)). `relu6(v) = min(max(v, 0), 6)` is the clamp `[0, 6]` and
//! `relu(v) = max(v, 0)` the clamp `[0, +inf]` (`min(v, +inf) = v` for every `v`, NaN included).
//! Appending either to an epilogue that does not clamp yet is exactly applying it to the conv's
//! result: `none -> relu6 | relu` and `add -> add_relu6 | add_relu`. An epilogue that already
//! clamps is left alone (`relu(relu6(v)) = relu6(v)`, but that is a different rewrite and no model
//! needs it).
//!
//! ## Guards
//! - the activation's operand is a `conv2d` whose epilogue does not clamp yet;
//! - the conv has exactly one use, the activation, and is not a graph output: nobody may observe
//!   the unclamped value once the clamp is inside the conv.
//!
//! ## Names
//! The conv keeps its name and takes over the activation's uses; the activation node is removed.
//! When the activation is a graph output, the conv takes its name instead (see `passes::absorb`).

use super::sole_user;
use crate::Result;
use crate::graph::{Graph, Op};

/// Fuses every relu or relu6 that follows a fusable conv. Returns whether any was fused.
pub fn run(graph: &mut Graph) -> Result<bool> {
    let order = graph
        .topo_order()
        .unwrap_or_else(|_| graph.node_ids().collect());
    let mut changed = false;
    for relu_id in order {
        if !graph.contains(relu_id) || !matches!(graph.node(relu_id).op, Op::Relu6 | Op::Relu) {
            continue;
        }
        let [conv_id] = graph.operands(relu_id)[..] else {
            continue;
        };
        let Op::Conv2d(conv) = &graph.node(conv_id).op else {
            continue;
        };
        let Some(epilogue) = conv.epilogue.then(&graph.node(relu_id).op) else {
            continue;
        };
        if sole_user(graph, conv_id) != Some((relu_id, 0)) {
            continue;
        }
        if let Op::Conv2d(c) = &mut graph.node_mut(conv_id).op {
            c.epilogue = epilogue;
        }
        super::absorb(graph, conv_id, relu_id);
        changed = true;
    }
    Ok(changed)
}
