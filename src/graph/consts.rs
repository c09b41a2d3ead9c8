//! Values for a graph's constants: the check that a set of parameter values fits the graph
//! ([`check`]), and binding ([`bind`]): the value of every constant, derived ones evaluated.
//!
//! Derived constants are part of the graph IR ([`ConstDef`]); the rule each definition states
//! (the batch-norm fold, computed in f64 and rounded once to f32) is evaluated here, next to the
//! IR, so that later stages (the interpreter, lowering, the runtime) need only this module, not
//! a front end. What must hold: a bound map has exactly one tensor per constant of the graph,
//! with its declared shape ([`bind_referenced`]: per constant an op references).
//!
//! A derived value that is not finite (a moving variance + epsilon <= 0) is an
//! [`Error::Weights`] naming the derived constant: the values it was computed from are at fault.

use std::collections::BTreeSet;

use super::{ConstDef, Graph};
use crate::{Error, Result, Tensor, TensorMap};

/// Checks that `weights` has exactly the graph's parameters, each with its declared shape.
/// The first problem found is the error; missing and mis-shaped tensors are reported before
/// unexpected ones, in the graph's declaration order.
pub fn check(graph: &Graph, weights: &TensorMap) -> Result<()> {
    let params: Vec<(&str, &crate::graph::TensorType)> = graph
        .consts()
        .filter(|(_, c)| c.def == ConstDef::Param)
        .map(|(n, c)| (n, &c.ty))
        .collect();
    let missing: Vec<&str> = params
        .iter()
        .filter(|(n, _)| !weights.contains_key(*n))
        .map(|(n, _)| *n)
        .collect();
    if let Some((first, ty)) = params.iter().find(|(n, _)| !weights.contains_key(*n)) {
        let more = match missing.len() {
            1 => String::new(),
            k => format!(" ({} more missing)", k - 1),
        };
        return Err(Error::Weights {
            tensor: first.to_string(),
            message: format!("missing from the weights (expected {ty}){more}"),
        });
    }
    for (name, ty) in &params {
        let t = &weights[*name];
        if t.dims() != ty.dims.as_slice() {
            return Err(Error::Weights {
                tensor: name.to_string(),
                message: format!("has shape {}, expected {ty}", t.ty()),
            });
        }
    }
    let known: BTreeSet<&str> = params.iter().map(|(n, _)| *n).collect();
    let extra: Vec<&String> = weights
        .keys()
        .filter(|k| !known.contains(k.as_str()))
        .collect();
    if let Some(first) = extra.first() {
        let more = match extra.len() {
            1 => String::new(),
            k => format!(" ({} more unexpected)", k - 1),
        };
        return Err(Error::Weights {
            tensor: first.to_string(),
            message: format!(
                "unexpected: the graph '{}' has no such parameter (shape {}){more}",
                graph.name,
                weights[*first].ty()
            ),
        });
    }
    Ok(())
}

/// The value of every constant of `graph`: parameters taken from `weights` (which must fit, see
/// [`check`]), derived constants evaluated from them in f64 and rounded once to f32. A derived
/// value that is not finite is an error naming the derived constant.
pub fn bind(graph: &Graph, weights: &TensorMap) -> Result<TensorMap> {
    bind_values(graph, weights, true, false)
}

/// [`bind`] for compiling: only the constants the graph's ops reference (what lowering reads).
/// Parameters that only derive others (a conv's weights and batch-norm statistics once batch
/// norm is folded) are read where they are, not copied: for the seed model that leaves 5 of its
/// 14 MB to copy, and the copies were about half of binding's time (8-10 of 17-19 ms, timed
/// 2026-12-02).
pub fn bind_referenced(graph: &Graph, weights: &TensorMap) -> Result<TensorMap> {
    bind_values(graph, weights, true, true)
}

/// [`bind`] for placeholder weights (`--emit` levels, which bind seeded values only to have
/// something to pack): derived values may be non-finite. Generated code does not depend on
/// values, and a graph's seeded values are mnv2c's choice, so a folded -inf there is not the
/// user's fault and must not be reported as bad weights.
pub fn bind_placeholders(graph: &Graph, weights: &TensorMap) -> Result<TensorMap> {
    bind_values(graph, weights, false, false)
}

/// `referenced_only`: keep only the constants some op references (see [`bind_referenced`]).
fn bind_values(
    graph: &Graph,
    weights: &TensorMap,
    finite: bool,
    referenced_only: bool,
) -> Result<TensorMap> {
    check(graph, weights)?;
    let referenced: BTreeSet<&str> = graph
        .node_ids()
        .flat_map(|id| graph.node(id).op.const_refs())
        .collect();
    let keep = |name: &str| !referenced_only || referenced.contains(name);
    let mut out = TensorMap::new();
    for (name, c) in graph.consts() {
        if c.def == ConstDef::Param && keep(name) {
            out.insert(name.to_string(), weights[name].clone());
        }
    }
    for (name, c) in graph.consts() {
        // A parameter operand is read from `weights` (check passed: it is there), a derived
        // one from `out`, where it was bound before this constant, as the graph orders them.
        let operand = |o: &str| {
            let param = graph
                .const_decl(o)
                .is_some_and(|d| d.def == ConstDef::Param);
            let value = if param { weights.get(o) } else { out.get(o) };
            value.ok_or_else(|| Error::Weights {
                tensor: name.to_string(),
                message: format!("derived from '{o}', which is not a parameter"),
            })
        };
        let data = match &c.def {
            ConstDef::Param => continue,
            ConstDef::FoldBnWeight {
                weight,
                gamma,
                variance,
                epsilon,
            } => {
                let (w, g, v) = (operand(weight)?, operand(gamma)?, operand(variance)?);
                fold_bn_weight(name, weight, w, g, v, *epsilon)?
            }
            ConstDef::FoldBnBias {
                bias,
                gamma,
                beta,
                mean,
                variance,
                epsilon,
            } => {
                let b = bias.as_deref().map(operand).transpose()?;
                let per = [
                    operand(gamma)?,
                    operand(beta)?,
                    operand(mean)?,
                    operand(variance)?,
                ];
                fold_bn_bias(name, per, b, *epsilon)?
            }
            ConstDef::ScaleWeight { weight, scale } => operand(weight)?
                .data()
                .iter()
                .map(|&w| (f64::from(w) * f64::from(*scale)) as f32)
                .collect(),
            ConstDef::ScaleBias {
                weight,
                bias,
                offset,
            } => {
                let b = bias.as_deref().map(operand).transpose()?;
                scale_bias(&c.ty.dims, operand(weight)?, b, *offset)
            }
        };
        if let Some(i) = data.iter().position(|v| !v.is_finite()).filter(|_| finite) {
            return Err(Error::Weights {
                tensor: name.to_string(),
                message: format!(
                    "folding batch norm gives {} at element {i} (is a moving variance + epsilon <= 0?)",
                    data[i]
                ),
            });
        }
        let t = Tensor::new(c.ty.dims.clone(), data).map_err(|_| Error::Weights {
            tensor: name.to_string(),
            message: format!("declared {}, but its operands give another size", c.ty),
        })?;
        out.insert(name.to_string(), t);
    }
    if referenced_only {
        out.retain(|name, _| referenced.contains(name.as_str()));
    }
    Ok(out)
}

/// [`ConstDef::FoldBnWeight`]: `w[.., co] * gamma[co] / sqrt(variance[co] + epsilon)`.
fn fold_bn_weight(
    name: &str,
    weight: &str,
    w: &Tensor,
    g: &Tensor,
    v: &Tensor,
    epsilon: f32,
) -> Result<Vec<f32>> {
    let ch = per_channel_len(name, &[g, v])?;
    if !w.data().len().is_multiple_of(ch) {
        return Err(Error::Weights {
            tensor: name.to_string(),
            message: format!(
                "weight '{weight}' {} does not end in {ch} output channels",
                w.ty()
            ),
        });
    }
    let eps = f64::from(epsilon);
    // Per output channel once (the same f64 values as per element, so the same result):
    // `sqrt(variance + eps)` and gamma.
    let per_ch: Vec<(f64, f64)> = (0..ch)
        .map(|co| {
            (
                f64::from(g.data()[co]),
                (f64::from(v.data()[co]) + eps).sqrt(),
            )
        })
        .collect();
    // Written into a sized buffer row by row (not collected from a flat_map), so that the
    // loop can vectorise; the same f64 operations per element.
    let mut out = vec![0f32; w.data().len()];
    for (o_row, w_row) in out.chunks_exact_mut(ch).zip(w.data().chunks_exact(ch)) {
        for ((o, &wv), &(gc, s)) in o_row.iter_mut().zip(w_row).zip(&per_ch) {
            *o = (f64::from(wv) * gc / s) as f32;
        }
    }
    Ok(out)
}

/// [`ConstDef::ScaleBias`]: `bias[co] + offset * sum_{i % cout == co} w[i]`, in f64. `dims` is
/// the declared `[cout]` (the verifier checked it against the weight).
fn scale_bias(dims: &[usize], w: &Tensor, bias: Option<&Tensor>, offset: f32) -> Vec<f32> {
    let cout = dims.first().copied().unwrap_or(1).max(1);
    let mut sums = vec![0f64; cout];
    for (i, &v) in w.data().iter().enumerate() {
        sums[i % cout] += f64::from(v);
    }
    sums.iter()
        .enumerate()
        .map(|(co, s)| {
            let b = bias
                .and_then(|b| b.data().get(co))
                .map_or(0.0, |&v| f64::from(v));
            (b + f64::from(offset) * s) as f32
        })
        .collect()
}

/// [`ConstDef::FoldBnBias`]:
/// `beta[co] + (bias[co] - mean[co]) * gamma[co] / sqrt(variance[co] + epsilon)`, `bias = 0`
/// when absent. `per` is `[gamma, beta, mean, variance]`.
fn fold_bn_bias(
    name: &str,
    per: [&Tensor; 4],
    bias: Option<&Tensor>,
    epsilon: f32,
) -> Result<Vec<f32>> {
    let [g, be, m, v] = per;
    let mut all: Vec<&Tensor> = per.to_vec();
    all.extend(bias);
    let ch = per_channel_len(name, &all)?;
    let eps = f64::from(epsilon);
    Ok((0..ch)
        .map(|co| {
            let bv = bias.map_or(0.0, |b| f64::from(b.data()[co]));
            let s = (f64::from(v.data()[co]) + eps).sqrt();
            (f64::from(be.data()[co])
                + (bv - f64::from(m.data()[co])) * f64::from(g.data()[co]) / s) as f32
        })
        .collect())
}

/// The common length of per-channel vectors (`[C]` each), or an error naming the derived
/// constant.
fn per_channel_len(name: &str, ts: &[&Tensor]) -> Result<usize> {
    let c = ts[0].data().len();
    if c == 0 || ts.iter().any(|t| t.dims() != [c]) {
        let shapes: Vec<String> = ts.iter().map(|t| t.ty().to_string()).collect();
        return Err(Error::Weights {
            tensor: name.to_string(),
            message: format!(
                "per-channel operands must all be [C], got {}",
                shapes.join(", ")
            ),
        });
    }
    Ok(c)
}
