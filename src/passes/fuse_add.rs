//! `fuse-add`: `add(conv(x, ..), y) => conv(x, .., residual = y) {epilogue = add}` (and the same
//! with the operands of the add swapped).
//!
//! ## Math
//! A conv computes `y = act(conv(x, w) + bias + residual)` (see
//! [`graph::op`](crate::graph::op)). With no clamp and no residual yet (`epilogue = none`),
//! `conv(x, w) + bias` plus `y` is exactly the conv with `y` as its residual; addition commutes,
//! so the conv may be either operand of the add. A conv that already has a bias (a folded batch
//! norm) fuses the same way: the bias is added before the residual.
//!
//! ## Guards
//! - the add's chosen operand is a `conv2d` whose epilogue is `none`: after a clamp
//!   (`relu6`, `add_relu6`) the add would move *inside* the clamp and change the result, and an
//!   epilogue has room for one residual only;
//! - the conv has exactly one use, this add, and is not a graph output;
//! - the other operand `y` has the conv's type and does not depend on the conv (it becomes an
//!   operand of the conv; a path from the conv to `y` would make a cycle). With the single-use
//!   guard this cannot happen in a DAG, but the check is cheap and states what must hold.
//!
//! ## Which conv, when both operands could fuse
//! Operand 1 is tried first, then operand 0. The seed writes its residual as `ins + net`:
//! operand 0 is the shortcut (the block input, or the `ex_dim` projection conv), operand 1 the
//! main branch (`pw_linear` after the batch-norm fold). Preferring operand 1 makes every residual
//! block end the same way, in `pw_linear` with epilogue `add`, whether its shortcut is the
//! identity or an `ex_dim` conv (which stays a plain conv feeding the residual slot).
//!
//! ## Names
//! The conv keeps its name and takes over the add's uses; the add node is removed. When the add is
//! a graph output, the conv takes its name instead (see `passes::absorb`).

use super::{reaches, sole_user};
use crate::Result;
use crate::graph::{Epilogue, Graph, Op, ValueId};

/// Fuses every add that has a fusable conv operand. Returns whether any was fused.
pub fn run(graph: &mut Graph) -> Result<bool> {
    let order = graph
        .topo_order()
        .unwrap_or_else(|_| graph.node_ids().collect());
    let mut changed = false;
    for add_id in order {
        if !graph.contains(add_id) || graph.node(add_id).op != Op::Add {
            continue;
        }
        let operands = graph.operands(add_id);
        let [a, b] = operands[..] else {
            continue;
        };
        // Operand 1 (the seed's main branch) first; see the module doc.
        let Some((conv_id, residual)) = [(b, a, 1), (a, b, 0)]
            .into_iter()
            .find(|&(conv, other, slot)| fusable(graph, add_id, slot, conv, other))
            .map(|(conv, other, _)| (conv, other))
        else {
            continue;
        };
        let [x] = graph.operands(conv_id)[..] else {
            continue; // epilogue none means one operand; `fusable` checked it
        };
        super::absorb(graph, conv_id, add_id);
        graph.set_operands(conv_id, &[x, residual]);
        if let Op::Conv2d(c) = &mut graph.node_mut(conv_id).op {
            c.epilogue = Epilogue::Add;
        }
        changed = true;
    }
    Ok(changed)
}

/// Whether `conv`, operand `slot` of `add`, can absorb the add with `other` as its residual.
fn fusable(graph: &Graph, add: ValueId, slot: usize, conv: ValueId, other: ValueId) -> bool {
    let Op::Conv2d(c) = &graph.node(conv).op else {
        return false;
    };
    c.epilogue == Epilogue::None
        && graph.operands(conv).len() == 1
        && sole_user(graph, conv) == Some((add, slot))
        && other != conv
        && graph.node(other).ty == graph.node(conv).ty
        && !reaches(graph, conv, other)
}
