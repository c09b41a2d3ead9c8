//! `fold-batchnorm`: `batch_norm(conv(x, w, b)) => conv(x, w', b')`.
//!
//! ## Math
//! With `s[co] = gamma[co] / sqrt(variance[co] + epsilon)` per output channel `co`,
//!
//! ```text
//! bn(conv(x, w) + b)[co] = s[co] * (conv(x, w)[co] + b[co] - mean[co]) + beta[co]
//!                        = conv(x, w')[co] + b'[co]
//! where w'[.., co] = w[.., co] * s[co]                          (ConstDef::FoldBnWeight)
//!       b'[co]     = beta[co] + (b[co] - mean[co]) * s[co]      (ConstDef::FoldBnBias, b = 0 if absent)
//! ```
//!
//! because a convolution is linear in its weights and each output channel reads only its own
//! slice `w[.., co]` (also for grouped and depthwise convs). The graph holds no weight values, so
//! the pass only declares `w'` and `b'` as derived constants; their values are computed when the
//! weights are bound, in f64 and rounded once to f32.
//!
//! ## Guards (the fold is skipped unless all hold)
//! - the batch norm's operand is a `conv2d` whose epilogue is `none`: a residual add or a clamp
//!   already fused into the conv sits between the conv and the batch norm, and scaling the
//!   weights would scale the residual/clamp too;
//! - the conv has exactly one use, the batch norm, and is not a graph output: anyone else
//!   reading the conv would see the folded values;
//! - every batch-norm operand besides `x` is a declared constant with one value per output
//!   channel (the typing rules already require this of a verified graph; the pass re-checks
//!   rather than trusts it).
//!
//! ## Names
//! The conv keeps its name and takes over the batch norm's uses; the batch-norm node is removed
//! (when the batch norm is a graph output, the conv takes its name: see `passes::absorb`).
//! The new constants are named after the conv's weight: `<weight>.bn` for `w'` and
//! `<weight>.bn_bias` for `b'` (e.g. `@mobilenetv2/res5_1/pw/w.bn`), made unique with a `.2`,
//! `.3`, ... suffix if taken. The original constants are left alone: the derived constants read
//! them, and `dce` removes whichever end up unread.

use super::{fresh_const_name, sole_user};
use crate::Result;
use crate::graph::{Const, ConstDef, Epilogue, Graph, Op, TensorType};

/// Folds every batch norm that follows a foldable conv. Returns whether any was folded.
pub fn run(graph: &mut Graph) -> Result<bool> {
    let order = graph
        .topo_order()
        .unwrap_or_else(|_| graph.node_ids().collect());
    let mut changed = false;
    for bn_id in order {
        if !graph.contains(bn_id) {
            continue;
        }
        let Op::BatchNorm(bn) = &graph.node(bn_id).op else {
            continue;
        };
        let bn = bn.clone();
        let [conv_id] = graph.operands(bn_id)[..] else {
            continue;
        };
        let Op::Conv2d(conv) = &graph.node(conv_id).op else {
            continue;
        };
        let conv = conv.clone();
        if conv.epilogue != Epilogue::None {
            continue;
        }
        if sole_user(graph, conv_id) != Some((bn_id, 0)) {
            continue;
        }
        let Some(&cout) = graph.node(conv_id).ty.dims.last() else {
            continue;
        };
        let per_channel = TensorType::new(vec![cout]);
        let all_per_channel = [&bn.gamma, &bn.beta, &bn.mean, &bn.variance]
            .into_iter()
            .chain(conv.bias.as_ref())
            .all(|n| graph.const_decl(n).is_some_and(|c| c.ty == per_channel));
        let Some(weight_ty) = graph.const_decl(&conv.weight).map(|c| c.ty.clone()) else {
            continue;
        };
        if !all_per_channel {
            continue;
        }

        let weight = fresh_const_name(graph, &format!("{}.bn", conv.weight));
        graph.add_const(
            weight.clone(),
            Const {
                ty: weight_ty,
                def: ConstDef::FoldBnWeight {
                    weight: conv.weight.clone(),
                    gamma: bn.gamma.clone(),
                    variance: bn.variance.clone(),
                    epsilon: bn.epsilon,
                },
            },
        )?;
        let bias = fresh_const_name(graph, &format!("{}.bn_bias", conv.weight));
        graph.add_const(
            bias.clone(),
            Const {
                ty: per_channel,
                def: ConstDef::FoldBnBias {
                    bias: conv.bias.clone(),
                    gamma: bn.gamma,
                    beta: bn.beta,
                    mean: bn.mean,
                    variance: bn.variance,
                    epsilon: bn.epsilon,
                },
            },
        )?;
        if let Op::Conv2d(c) = &mut graph.node_mut(conv_id).op {
            c.weight = weight;
            c.bias = Some(bias);
        }
        super::absorb(graph, conv_id, bn_id);
        changed = true;
    }
    Ok(changed)
}
