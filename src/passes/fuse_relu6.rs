//! `fuse-relu6`: `relu6(conv(x, ..) {epilogue = e}) => conv(x, ..) {epilogue = e + relu6}`.
//!
//! ## Math
//! A conv computes `y = act(conv(x, w) + bias + residual)` with the clamp last (see
//! [`graph::op`](crate::graph::op)). Appending `relu6(v) = min(max(v, 0), 6)` to an epilogue that
//! does not clamp yet is exactly applying it to the conv's result:
//! `none -> relu6` and `add -> add_relu6`. An epilogue that already clamps is left alone
//! (`relu6(relu6(v)) = relu6(v)`, but that is a different rewrite and no model needs it).
//!
//! ## Guards
//! - the relu6's operand is a `conv2d` whose epilogue does not clamp yet;
//! - the conv has exactly one use, the relu6, and is not a graph output: nobody may observe the
//!   unclamped value once the clamp is inside the conv.
//!
//! ## Names
//! The conv keeps its name and takes over the relu6's uses; the relu6 node is removed. When the relu6
//! is a graph output, the conv takes its name instead (see `passes::absorb`).

use super::sole_user;
use crate::Result;
use crate::graph::{Graph, Op};

/// Fuses every relu6 that follows a fusable conv. Returns whether any was fused.
pub fn run(graph: &mut Graph) -> Result<bool> {
    let order = graph
        .topo_order()
        .unwrap_or_else(|_| graph.node_ids().collect());
    let mut changed = false;
    for relu_id in order {
        if !graph.contains(relu_id) || graph.node(relu_id).op != Op::Relu6 {
            continue;
        }
        let [conv_id] = graph.operands(relu_id)[..] else {
            continue;
        };
        let Op::Conv2d(conv) = &graph.node(conv_id).op else {
            continue;
        };
        let Some(epilogue) = conv.epilogue.with_relu6() else {
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
