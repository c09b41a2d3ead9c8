//! `fold-rescale`: `conv(scale_offset(x) {s, o}, w, b) {pads = 0} => conv(x, w', b')` with
//! `w' = w * s` and `b'[co] = b[co] + o * sum of w over the taps and input channels of co`.
//!
//! ## Math
//! With no padding every tap of the conv reads a real input pixel, so
//! `sum w * (s * x + o) = s * sum w * x + o * sum w`: scaling the weights by `s` and adding
//! `o * sum w` (per output channel) to the bias is exact up to rounding (one f64 evaluation,
//! rounded once). With zero padding it is not: the padded taps read 0, not `s * 0 + o`, so the
//! border outputs would change; such a conv keeps its `scale_offset` (a one-FMA kernel).
//! MobileNetV2's first conv pads (TF `SAME`, stride 2), so there the Rescaling stays.
//!
//! ## Guards
//! - the `scale_offset`'s only use is operand 0 of a `conv2d` (not a graph output);
//! - the conv has no padding on any side.
//!
//! ## Names
//! The conv keeps its name and reads the `scale_offset`'s operand; its new constants are
//! `<weight>.rescaled` and `<weight>.rescaled_bias` (made unique as `fold-batchnorm`'s are).

use super::{fresh_const_name, sole_user};
use crate::Result;
use crate::graph::{Const, ConstDef, Graph, Op, Pads, TensorType};

/// Folds every `scale_offset` that feeds only an unpadded conv. Returns whether any was folded.
pub fn run(graph: &mut Graph) -> Result<bool> {
    let order = graph
        .topo_order()
        .unwrap_or_else(|_| graph.node_ids().collect());
    let mut changed = false;
    for so_id in order {
        if !graph.contains(so_id) {
            continue;
        }
        let Op::ScaleOffset(so) = graph.node(so_id).op else {
            continue;
        };
        let [x] = graph.operands(so_id)[..] else {
            continue;
        };
        let Some((conv_id, 0)) = sole_user(graph, so_id) else {
            continue;
        };
        let Op::Conv2d(conv) = &graph.node(conv_id).op else {
            continue;
        };
        if conv.pads != Pads::default() {
            continue;
        }
        let (weight, bias) = (conv.weight.clone(), conv.bias.clone());
        let Some(wty) = graph.const_decl(&weight).map(|c| c.ty.clone()) else {
            continue;
        };
        let cout = *graph.node(conv_id).ty.dims.last().unwrap_or(&1);
        let w_name = fresh_const_name(graph, &format!("{weight}.rescaled"));
        graph.add_const(
            &w_name,
            Const {
                ty: wty,
                def: ConstDef::ScaleWeight {
                    weight: weight.clone(),
                    scale: so.scale,
                },
            },
        )?;
        let b_name = fresh_const_name(graph, &format!("{weight}.rescaled_bias"));
        graph.add_const(
            &b_name,
            Const {
                ty: TensorType::new(vec![cout]),
                def: ConstDef::ScaleBias {
                    weight,
                    bias,
                    offset: so.offset,
                },
            },
        )?;
        let mut operands = graph.operands(conv_id);
        operands[0] = x;
        if let Op::Conv2d(c) = &mut graph.node_mut(conv_id).op {
            c.weight = w_name;
            c.bias = Some(b_name);
        }
        graph.set_operands(conv_id, &operands);
        graph.remove_node(so_id);
        changed = true;
    }
    Ok(changed)
}
