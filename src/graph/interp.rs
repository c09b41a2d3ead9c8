//! The reference interpreter of the graph IR: evaluates every op with plain loops.
//!
//! This is the oracle the fast path is judged against, so it shares no code with lowering or
//! codegen and favours obvious correctness over speed. What it promises:
//! - **Semantics are the op docs, literally.** A convolution is
//!   `y = relu6?(sum over taps and input channels of x * w + bias + residual)` with the weight
//!   indexed as `((ky * kw + kx) * (cin / groups) + ci) * cout + co` (the flat index shared by
//!   HWIO-with-groups and TF depthwise `[kh, kw, C, mult]`, see [`super::op`]); zero padding
//!   from the explicit four-sided pads; batch norm is
//!   `gamma * (x - mean) / sqrt(variance + epsilon) + beta`.
//! - **Precision.** Reductions (conv sums, batch norm, average pooling, softmax) are carried out
//!   in f64 and rounded once to f32 when the value is stored, so the interpreter's own rounding
//!   error is far below any tolerance in [`crate::tolerance`]; differences against it are the
//!   other side's. Element-wise `add` and `relu6` are exact in f32.
//! - **NaN propagates.** `relu6(NaN)` is NaN (not 0, as `f32::max` would give), so a NaN
//!   anywhere shows in the outputs instead of being hidden by a clamp.
//! - **Softmax is stable**: the row maximum is subtracted before `exp`, so logits near 100 (or
//!   1e4) do not overflow.
//! - **Errors, not panics.** Inputs of the wrong number or shape are [`Error::Input`] naming the
//!   expected and found shapes; a missing or mis-shaped constant is [`Error::Weights`] naming it.
//!   The graph must be verified ([`super::verify()`]); the interpreter re-checks what it indexes
//!   with, so an unverified graph gives an error rather than an out-of-bounds panic.
//!
//! Loop order is chosen so the 224x224 model runs in well under a second in release (about
//! 0.2-0.4 s on the 2-core dev machine): the innermost loop walks output channels, contiguous in
//! both the weights and the accumulator. Dead values are dropped as soon as their last user ran.

use std::collections::HashMap;

use super::{BatchNorm, Conv2d, ConvGeometry, Graph, Op, ValueId};
use crate::{Error, Result, Tensor, TensorMap};

/// Evaluates `graph` on `inputs` (one per input node, in [`Graph::inputs`] order) with every
/// constant bound in `consts` (see [`bind`](super::consts::bind)). Returns the outputs in the
/// graph's output order.
pub fn run(graph: &Graph, consts: &TensorMap, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    let (values, _) = evaluate(graph, consts, inputs, false)?;
    Ok(values)
}

/// Like [`run`], but returns the value of every node by its name (inputs included), for
/// comparing intermediate results, e.g. block outputs against the golden intermediates.
pub fn run_all(graph: &Graph, consts: &TensorMap, inputs: &[Tensor]) -> Result<TensorMap> {
    let (_, all) = evaluate(graph, consts, inputs, true)?;
    Ok(all)
}

fn evaluate(
    graph: &Graph,
    consts: &TensorMap,
    inputs: &[Tensor],
    keep_all: bool,
) -> Result<(Vec<Tensor>, TensorMap)> {
    check_consts(graph, consts)?;
    let input_ids = graph.inputs();
    if inputs.len() != input_ids.len() {
        return Err(Error::Input(format!(
            "the graph takes {} input(s), got {}",
            input_ids.len(),
            inputs.len()
        )));
    }
    let order = graph.topo_order().map_err(|v| {
        Error::verify(
            format!("%{}", graph.node(v).name),
            "the graph has a cycle through this value",
        )
    })?;
    // Uses left per value, so values can be dropped once dead (the 224 model's activations
    // would otherwise all stay alive).
    let mut uses: HashMap<ValueId, usize> =
        order.iter().map(|&id| (id, graph.num_uses(id))).collect();
    let mut values: HashMap<ValueId, Tensor> = HashMap::new();
    let mut all = TensorMap::new();
    for &id in &order {
        let node = graph.node(id);
        let operands = graph.operands(id);
        let args = operand_values(graph, id, &operands, &values)?;
        let at = |e: String| Error::verify(format!("%{}", node.name), e);
        let value = if node.op == Op::Input {
            let k = input_ids.iter().position(|&i| i == id).unwrap_or(0);
            let x = &inputs[k];
            if x.dims() != node.ty.dims.as_slice() {
                return Err(Error::Input(format!(
                    "input %{} expects shape {}, got {}",
                    node.name,
                    node.ty,
                    x.ty()
                )));
            }
            x.clone()
        } else {
            apply(&node.op, &args, consts).map_err(at)?
        };
        if value.dims() != node.ty.dims.as_slice() {
            return Err(at(format!(
                "evaluated to shape {}, but the node's type is {}",
                value.ty(),
                node.ty
            )));
        }
        for o in &operands {
            if let Some(n) = uses.get_mut(o) {
                *n = n.saturating_sub(1);
                if *n == 0 && !keep_all {
                    values.remove(o);
                }
            }
        }
        if keep_all {
            all.insert(node.name.clone(), value.clone());
        }
        values.insert(id, value);
    }
    let outputs = graph
        .outputs()
        .iter()
        .map(|o| {
            values.get(o).cloned().ok_or_else(|| {
                Error::verify(format!("%{}", graph.node(*o).name), "output not evaluated")
            })
        })
        .collect::<Result<_>>()?;
    Ok((outputs, all))
}

/// The values of a node's operands, checked to be as many as its op takes and evaluated.
fn operand_values<'a>(
    graph: &Graph,
    id: ValueId,
    operands: &[ValueId],
    values: &'a HashMap<ValueId, Tensor>,
) -> Result<Vec<&'a Tensor>> {
    let node = graph.node(id);
    if operands.len() != node.op.num_operands() {
        return Err(Error::verify(
            format!("%{}", node.name),
            format!(
                "{} takes {} operand(s), has {}",
                node.op.mnemonic(),
                node.op.num_operands(),
                operands.len()
            ),
        ));
    }
    operands
        .iter()
        .map(|o| {
            values.get(o).ok_or_else(|| {
                Error::verify(format!("%{}", node.name), "operand evaluated out of order")
            })
        })
        .collect()
}

/// The value of a compute op (not an input) on its operands' values.
fn apply(op: &Op, args: &[&Tensor], consts: &TensorMap) -> std::result::Result<Tensor, String> {
    match op {
        Op::Input => Err("an input has no operands to apply".into()),
        Op::Conv2d(c) => {
            let w = &consts[&c.weight];
            let bias = c.bias.as_ref().map(|b| &consts[b]);
            conv2d(args[0], w, bias, args.get(1).copied(), c)
        }
        Op::BatchNorm(b) => {
            let p = |n: &String| &consts[n];
            batch_norm(
                args[0],
                p(&b.gamma),
                p(&b.beta),
                p(&b.mean),
                p(&b.variance),
                b,
            )
        }
        Op::Relu6 => Ok(relu6(args[0])),
        Op::Add => add(args[0], args[1]),
        Op::GlobalAvgPool => global_avg_pool(args[0]),
        Op::Flatten => flatten(args[0]),
        Op::Softmax => softmax(args[0]),
    }
}

/// Every constant an op references must be bound, with its declared shape.
fn check_consts(graph: &Graph, consts: &TensorMap) -> Result<()> {
    for id in graph.node_ids() {
        for name in graph.node(id).op.const_refs() {
            let decl = graph
                .const_decl(name)
                .ok_or_else(|| Error::verify(format!("@{name}"), "referenced but not declared"))?;
            let t = consts.get(name).ok_or_else(|| Error::Weights {
                tensor: name.to_string(),
                message: format!("not bound (expected {})", decl.ty),
            })?;
            if t.dims() != decl.ty.dims.as_slice() {
                return Err(Error::Weights {
                    tensor: name.to_string(),
                    message: format!("bound with shape {}, expected {}", t.ty(), decl.ty),
                });
            }
        }
    }
    Ok(())
}

fn nhwc(t: &Tensor, what: &str) -> std::result::Result<[usize; 4], String> {
    t.dims()
        .try_into()
        .map_err(|_| format!("{what} must be NHWC (rank 4), got {}", t.ty()))
}

/// The clamp to `[0, 6]`; `f32::clamp` returns NaN for NaN, which is what we want.
fn clamp6(v: f32) -> f32 {
    v.clamp(0.0, 6.0)
}

/// A 2-D convolution with its bias and epilogue: `y = relu6?(conv(x, w) + bias + residual)`,
/// summed in f64 and rounded once. See the module doc for the weight indexing.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    attrs: &Conv2d,
) -> std::result::Result<Tensor, String> {
    let [n, h, wd, cin] = nhwc(x, "conv2d input")?;
    let geo = ConvGeometry::new(&w.ty(), cin, attrs.groups)?;
    let ConvGeometry {
        kh,
        kw,
        cout,
        groups,
        ..
    } = geo;
    let (cin_g, cout_g) = (cin / groups, cout / groups);
    let [sh, sw] = attrs.stride;
    let p = attrs.pads;
    if sh == 0 || sw == 0 || kh == 0 || kw == 0 {
        return Err("stride and kernel must be at least 1".into());
    }
    let ph = h + p.top + p.bottom;
    let pw = wd + p.left + p.right;
    if ph < kh || pw < kw {
        return Err("kernel larger than the padded input".into());
    }
    let (oh, ow) = ((ph - kh) / sh + 1, (pw - kw) / sw + 1);
    if let Some(b) = bias
        && b.dims() != [cout]
    {
        return Err(format!("bias has shape {}, expected [{cout}]", b.ty()));
    }
    let out_dims = vec![n, oh, ow, cout];
    if attrs.epilogue.has_residual() != residual.is_some() {
        return Err("residual operand does not match the epilogue".into());
    }
    if let Some(r) = residual
        && r.dims() != out_dims.as_slice()
    {
        return Err(format!(
            "residual has shape {}, expected {out_dims:?}",
            r.ty()
        ));
    }
    let (xd, wdat) = (x.data(), w.data());
    let mut out = Tensor::zeros(out_dims).map_err(|e| e.to_string())?;
    let od = out.data_mut();
    let mut acc = vec![0f64; cout];
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                acc.iter_mut().for_each(|a| *a = 0.0);
                for ky in 0..kh {
                    // Input row of this tap; rows in the padding contribute zero.
                    let Some(iy) = (oy * sh + ky).checked_sub(p.top).filter(|&iy| iy < h) else {
                        continue;
                    };
                    for kx in 0..kw {
                        let Some(ix) = (ox * sw + kx).checked_sub(p.left).filter(|&ix| ix < wd)
                        else {
                            continue;
                        };
                        let xpix = &xd[((b * h + iy) * wd + ix) * cin..][..cin];
                        for g in 0..groups {
                            for ci in 0..cin_g {
                                let xv = f64::from(xpix[g * cin_g + ci]);
                                let wrow = &wdat
                                    [((ky * kw + kx) * cin_g + ci) * cout + g * cout_g..][..cout_g];
                                let arow = &mut acc[g * cout_g..][..cout_g];
                                for (a, &wv) in arow.iter_mut().zip(wrow) {
                                    *a += xv * f64::from(wv);
                                }
                            }
                        }
                    }
                }
                let o = ((b * oh + oy) * ow + ox) * cout;
                let residual = residual.map(|r| &r.data()[o..o + cout]);
                let relu6 = attrs.epilogue.has_relu6();
                epilogue(&mut od[o..o + cout], &acc, bias, residual, relu6);
            }
        }
    }
    Ok(out)
}

/// One output pixel of a conv: the f64 sums plus the bias, then the residual, rounded to f32,
/// then clamped (the graph IR's epilogue order).
fn epilogue(
    out: &mut [f32],
    acc: &[f64],
    bias: Option<&Tensor>,
    residual: Option<&[f32]>,
    relu6: bool,
) {
    for (co, o) in out.iter_mut().enumerate() {
        let mut v = acc[co];
        if let Some(bias) = bias {
            v += f64::from(bias.data()[co]);
        }
        if let Some(r) = residual {
            v += f64::from(r[co]);
        }
        let v = v as f32;
        *o = if relu6 { clamp6(v) } else { v };
    }
}

/// Inference batch norm over the last axis, in f64:
/// `gamma * (x - mean) / sqrt(variance + epsilon) + beta`.
pub fn batch_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    variance: &Tensor,
    attrs: &BatchNorm,
) -> std::result::Result<Tensor, String> {
    let c = *x.dims().last().ok_or("batch_norm needs rank >= 1")?;
    for (role, t) in [
        ("gamma", gamma),
        ("beta", beta),
        ("mean", mean),
        ("variance", variance),
    ] {
        if t.dims() != [c] {
            return Err(format!("{role} has shape {}, expected [{c}]", t.ty()));
        }
    }
    let eps = f64::from(attrs.epsilon);
    let mut out = x.clone();
    for row in out.data_mut().chunks_exact_mut(c) {
        for (i, v) in row.iter_mut().enumerate() {
            let g = f64::from(gamma.data()[i]);
            let d = f64::from(*v) - f64::from(mean.data()[i]);
            let s = (f64::from(variance.data()[i]) + eps).sqrt();
            *v = (g * d / s + f64::from(beta.data()[i])) as f32;
        }
    }
    Ok(out)
}

/// `min(max(x, 0), 6)`, element-wise; NaN stays NaN.
pub fn relu6(x: &Tensor) -> Tensor {
    let mut out = x.clone();
    out.data_mut().iter_mut().for_each(|v| *v = clamp6(*v));
    out
}

/// Element-wise sum of two tensors of one shape (in f32, as TF adds).
pub fn add(a: &Tensor, b: &Tensor) -> std::result::Result<Tensor, String> {
    if a.dims() != b.dims() {
        return Err(format!("add operands differ: {} and {}", a.ty(), b.ty()));
    }
    let mut out = a.clone();
    for (o, &v) in out.data_mut().iter_mut().zip(b.data()) {
        *o += v;
    }
    Ok(out)
}

/// Mean over H and W: `[N, H, W, C] -> [N, 1, 1, C]`, summed in f64.
pub fn global_avg_pool(x: &Tensor) -> std::result::Result<Tensor, String> {
    let [n, h, w, c] = nhwc(x, "global_avg_pool input")?;
    let mut out = Tensor::zeros(vec![n, 1, 1, c]).map_err(|e| e.to_string())?;
    let count = (h * w) as f64;
    for b in 0..n {
        let mut sum = vec![0f64; c];
        for pix in x.data()[b * h * w * c..][..h * w * c].chunks_exact(c) {
            for (s, &v) in sum.iter_mut().zip(pix) {
                *s += f64::from(v);
            }
        }
        for (o, s) in out.data_mut()[b * c..][..c].iter_mut().zip(sum) {
            *o = (s / count) as f32;
        }
    }
    Ok(out)
}

/// `[N, d1, .., dk] -> [N, d1 * .. * dk]`: the same data, another shape.
pub fn flatten(x: &Tensor) -> std::result::Result<Tensor, String> {
    let dims = x.dims();
    if dims.len() < 2 {
        return Err(format!("flatten needs rank >= 2, got {}", x.ty()));
    }
    let rest = dims[1..].iter().product();
    x.clone()
        .reshaped(vec![dims[0], rest])
        .map_err(|e| format!("flatten: {e}"))
}

/// Softmax over the last axis, in f64, with the row maximum subtracted first so large logits do
/// not overflow `exp`.
pub fn softmax(x: &Tensor) -> std::result::Result<Tensor, String> {
    let c = *x.dims().last().ok_or("softmax needs rank >= 1")?;
    let mut out = x.clone();
    if c == 0 {
        return Ok(out);
    }
    for row in out.data_mut().chunks_exact_mut(c) {
        let max = row
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let exps: Vec<f64> = row.iter().map(|&v| (f64::from(v) - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        for (o, e) in row.iter_mut().zip(exps) {
            *o = (e / sum) as f32;
        }
    }
    Ok(out)
}
