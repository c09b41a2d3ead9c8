//! `fold-pad`: `conv(pad(x) {p}) {pads = q} => conv(x) {pads = p + q}`.
//!
//! ## Math
//! A conv reads its input through zero padding `q`; an explicit zero `pad` `p` in front of it
//! only widens that border with more zeros. Reading `x` through `p + q` (side by side) gives the
//! same padded image element for element, so the conv's result is unchanged. This is how a
//! Keras `ZeroPadding2D(((0, 1), (0, 1)))` before a `valid` stride-2 conv becomes a conv with
//! pads `[0, 1, 0, 1]`, the same pads TensorFlow's `SAME` rule gives.
//!
//! ## Guards
//! - the pad's only use is operand 0 (the input, not the residual) of a `conv2d`, and the pad
//!   is not a graph output;
//! - on each side the summed pad stays smaller than the kernel, the conv's typing rule (a
//!   window lying wholly in the padding is not a conv the kernels compute).
//!
//! ## Names
//! The conv keeps its name and reads the pad's operand; the pad node is removed.

use super::sole_user;
use crate::Result;
use crate::graph::{ConvGeometry, Graph, Op, Pads};

/// Folds every pad that feeds only a conv's input. Returns whether any was folded.
pub fn run(graph: &mut Graph) -> Result<bool> {
    let order = graph
        .topo_order()
        .unwrap_or_else(|_| graph.node_ids().collect());
    let mut changed = false;
    for pad_id in order {
        if !graph.contains(pad_id) {
            continue;
        }
        let Op::Pad(p) = graph.node(pad_id).op else {
            continue;
        };
        let [x] = graph.operands(pad_id)[..] else {
            continue;
        };
        let Some((conv_id, 0)) = sole_user(graph, pad_id) else {
            continue;
        };
        let Some(summed) = summed_pads(graph, conv_id, x, p) else {
            continue;
        };
        let mut operands = graph.operands(conv_id);
        operands[0] = x;
        if let Op::Conv2d(c) = &mut graph.node_mut(conv_id).op {
            c.pads = summed;
        }
        graph.set_operands(conv_id, &operands);
        graph.remove_node(pad_id);
        changed = true;
    }
    Ok(changed)
}

/// The conv's pads plus `p`, if the conv can take them (every side smaller than its kernel).
fn summed_pads(
    graph: &Graph,
    conv_id: crate::graph::ValueId,
    x: crate::graph::ValueId,
    p: Pads,
) -> Option<Pads> {
    let Op::Conv2d(c) = &graph.node(conv_id).op else {
        return None;
    };
    let cin = *graph.node(x).ty.dims.last()?;
    let w = graph.const_decl(&c.weight)?;
    let geo = ConvGeometry::new(&w.ty, cin, c.groups).ok()?;
    let q = c.pads;
    let s = Pads {
        top: q.top.checked_add(p.top)?,
        bottom: q.bottom.checked_add(p.bottom)?,
        left: q.left.checked_add(p.left)?,
        right: q.right.checked_add(p.right)?,
    };
    (s.top < geo.kh && s.bottom < geo.kh && s.left < geo.kw && s.right < geo.kw).then_some(s)
}
