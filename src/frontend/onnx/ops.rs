//! Translation of the ONNX operators that compute on activations into graph IR nodes.
//!
//! Each handler reads its inputs as [`Act`]ivations (materialising pending work) or as
//! constants known at import, checks the attributes the IR can express, and binds the node's
//! output. What must hold: an attribute or shape the IR cannot express exactly is an error
//! naming the node (never a silent approximation); weights are converted to the IR's layouts at
//! import (conv OIHW -> HWIO); a value's layout changes only through [`Importer::relayout`].

use super::proto::NodeProto;
use super::tensors::{ConstVal, Data};
use super::{Act, Importer, NCHW_AS_NHWC, Pending, Val};
use crate::Result;
use crate::graph::{BatchNorm, Conv2d, Dense, Op, Pads, ScaleOffset};

/// Attribute readers.
pub(crate) fn attr<'n>(n: &'n NodeProto, name: &str) -> Option<&'n super::proto::AttributeProto> {
    n.attribute.iter().find(|a| a.name.as_deref() == Some(name))
}

pub(crate) fn attr_i(n: &NodeProto, name: &str) -> Option<i64> {
    attr(n, name).and_then(|a| a.i)
}

pub(crate) fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}

fn attr_f(n: &NodeProto, name: &str) -> Option<f32> {
    attr(n, name).and_then(|a| a.f)
}

fn attr_s(n: &NodeProto, name: &str) -> Option<String> {
    attr(n, name).and_then(|a| {
        a.s.as_ref()
            .map(|s| String::from_utf8_lossy(s).into_owned())
    })
}

/// Normalises a possibly negative axis of a rank-`rank` tensor.
pub(crate) fn axis(a: i64, rank: usize) -> Option<usize> {
    let r = i64::try_from(rank).ok()?;
    let a = if a < 0 { a + r } else { a };
    (0..r).contains(&a).then_some(a as usize)
}

pub(crate) fn translate(imp: &mut Importer<'_>, n: &NodeProto) -> Result<()> {
    let op = n.op_type.as_deref().unwrap_or("");
    let out = match op {
        "Conv" => conv(imp, n)?,
        "BatchNormalization" => batch_norm(imp, n)?,
        "Clip" => clip(imp, n)?,
        "Add" | "Mul" | "Sub" | "Div" => arith(imp, n, op)?,
        "GlobalAveragePool" => {
            let x = imp.act_in(n, 0, &NCHW_AS_NHWC)?;
            Val::Act(imp.unary(n, Op::GlobalAvgPool, x, NCHW_AS_NHWC.to_vec())?)
        }
        "ReduceMean" => reduce_mean(imp, n)?,
        "Flatten" => flatten(imp, n)?,
        "Reshape" | "Squeeze" => reshape(imp, n, op)?,
        "Softmax" => softmax(imp, n)?,
        "Transpose" => transpose(imp, n)?,
        "Pad" => pad(imp, n)?,
        "Relu" => {
            let x = imp.act_in(n, 0, &NCHW_AS_NHWC)?;
            let perm = x.perm.clone();
            Val::Act(imp.unary(n, Op::Relu, x, perm)?)
        }
        "Gemm" | "MatMul" => dense(imp, n, op)?,
        "Identity" | "Dropout" => imp.input(n, 0)?,
        _ => return Err(imp.node_error(n, "unsupported operator")),
    };
    let name = n.output.first().cloned().unwrap_or_default();
    imp.set(&name, out);
    Ok(())
}

impl Importer<'_> {
    /// The value of input `i` (an error if it is absent).
    pub(crate) fn input(&self, n: &NodeProto, i: usize) -> Result<Val> {
        let name = n.input.get(i).filter(|s| !s.is_empty());
        let name = name.ok_or_else(|| self.node_error(n, format!("input {i} is missing")))?;
        self.val(name)
            .cloned()
            .ok_or_else(|| self.node_error(n, format!("input '{name}' is not defined")))
    }

    /// Input `i` as a constant known at import (`None` when the input is omitted).
    pub(crate) fn const_in(&self, n: &NodeProto, i: usize) -> Result<Option<ConstVal>> {
        if n.input.get(i).is_none_or(|s| s.is_empty()) {
            return Ok(None);
        }
        match self.input(n, i)? {
            Val::Const(c) => Ok(Some(c)),
            _ => Err(self.node_error(
                n,
                format!(
                    "input {i} ('{}') must be a constant (an initializer)",
                    n.input[i]
                ),
            )),
        }
    }

    /// Input `i` as a float constant.
    fn weight_in(&self, n: &NodeProto, i: usize) -> Result<(Vec<usize>, Vec<f32>)> {
        match self.const_in(n, i)? {
            Some(ConstVal {
                dims,
                data: Data::F32(v),
            }) => Ok((dims, v)),
            Some(_) => Err(self.node_error(n, format!("input {i} must be a float32 tensor"))),
            None => Err(self.node_error(n, format!("input {i} is missing"))),
        }
    }

    /// Input `i` as an activation in IR layout `want` (for its rank), materialising pending
    /// work; the materialised value replaces the ONNX name's binding, so it is made once.
    pub(crate) fn act_in(&mut self, n: &NodeProto, i: usize, want: &[usize]) -> Result<Act> {
        let v = self.input(n, i)?;
        let name = n.input[i].clone();
        if let Val::Const(_) = v {
            return Err(self.node_error(
                n,
                format!("input '{name}' is a constant; mnv2c expects a value computed from the model's input here"),
            ));
        }
        let a = self.act(v, &name)?;
        let want = if a.perm.len() == want.len() {
            want.to_vec()
        } else {
            (0..a.perm.len()).collect()
        };
        let a = self.relayout(a, &want, &name, "to_nhwc")?;
        self.set(&name, Val::Act(a.clone()));
        Ok(a)
    }

    /// An activation from a non-constant value, materialising pending work.
    pub(crate) fn act(&mut self, v: Val, name: &str) -> Result<Act> {
        match v {
            Val::Act(a) => Ok(a),
            Val::Const(_) => Err(self.format(format!(
                "'{name}' is a constant where an activation is expected"
            ))),
            Val::Pending(Pending::Pad { act, pads }) => {
                let a = self.relayout(act, &NCHW_AS_NHWC, name, "to_nhwc")?;
                let [top, left, bottom, right] = pads;
                let op = Op::Pad(Pads {
                    top,
                    bottom,
                    left,
                    right,
                });
                let id = self.node(name, op, &[a.id])?;
                Ok(Act { id, perm: a.perm })
            }
            Val::Pending(Pending::Affine { act, scale, shift })
                if scale.windows(2).all(|w| w[0] == w[1])
                    && shift.windows(2).all(|w| w[0] == w[1]) =>
            {
                // One scale and one shift for every channel: element-wise, in any layout.
                let op = Op::ScaleOffset(ScaleOffset {
                    scale: scale[0],
                    offset: shift[0],
                });
                let id = self.node(name, op, &[act.id])?;
                Ok(Act { id, perm: act.perm })
            }
            Val::Pending(Pending::Affine { act, scale, shift }) => {
                let rank = act.perm.len();
                let want: Vec<usize> = if rank == 4 {
                    NCHW_AS_NHWC.to_vec()
                } else {
                    (0..rank).collect()
                };
                let a = self.relayout(act, &want, name, "to_nhwc")?;
                let c = scale.len();
                let base = format!("{name}/affine");
                let gamma = self.param(&format!("{base}/scale"), vec![c], scale)?;
                let beta = self.param(&format!("{base}/shift"), vec![c], shift)?;
                let mean = self.param(&format!("{base}/zero"), vec![c], vec![0.0; c])?;
                let variance = self.param(&format!("{base}/one"), vec![c], vec![1.0; c])?;
                let op = Op::BatchNorm(BatchNorm {
                    gamma,
                    beta,
                    mean,
                    variance,
                    epsilon: 0.0,
                });
                let id = self.node(name, op, &[a.id])?;
                Ok(Act { id, perm: a.perm })
            }
        }
    }

    /// A one-operand IR node computing output 0 of `n`.
    pub(crate) fn unary(&mut self, n: &NodeProto, op: Op, x: Act, perm: Vec<usize>) -> Result<Act> {
        let name = n.output.first().cloned().unwrap_or_default();
        let id = self
            .node(&name, op, &[x.id])
            .map_err(|e| self.node_error(n, e))?;
        Ok(Act { id, perm })
    }

    /// The channel count of an activation of ONNX rank 4 (NCHW) or 2 (`[N, C]`).
    fn channels(&self, n: &NodeProto, a: &Act) -> Result<usize> {
        let d = self.dims(a);
        match d.len() {
            2 | 4 => Ok(d[1]),
            r => Err(self.node_error(n, format!("expected an NCHW or [N, C] input, got rank {r}"))),
        }
    }
}

/// `Conv`: group 1 or depthwise, dilations 1; a pending Pad is folded into the pads.
fn conv(imp: &mut Importer<'_>, n: &NodeProto) -> Result<Val> {
    let (extra, x) = match imp.input(n, 0)? {
        Val::Pending(Pending::Pad { act, pads }) => {
            let name = n.input[0].clone();
            let a = imp.relayout(act, &NCHW_AS_NHWC, &name, "to_nhwc")?;
            (pads, a)
        }
        _ => ([0; 4], imp.act_in(n, 0, &NCHW_AS_NHWC)?),
    };
    let xd = imp.dims(&x);
    let (wd, w) = imp.weight_in(n, 1)?;
    let &[m, cg, kh, kw] = wd.as_slice() else {
        return Err(imp.node_error(
            n,
            format!("weight must be 4-D [M, C/group, kH, kW], got {wd:?}"),
        ));
    };
    if xd.len() != 4 {
        return Err(imp.node_error(
            n,
            format!(
                "only 2-D convolutions (NCHW input) are supported, input has rank {}",
                xd.len()
            ),
        ));
    }
    let c = xd[1];
    let group = attr_i(n, "group").unwrap_or(1);
    let groups = if group == 1 && cg == c {
        1
    } else if group > 1 && group as usize == c && cg == 1 && m == c {
        c
    } else {
        return Err(imp.node_error(n, format!(
            "group {group} with weight {wd:?} on {c} input channels: only group 1 and depthwise (group = channels = outputs) are supported"
        )));
    };
    if attr_ints(n, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
        return Err(imp.node_error(n, "dilations other than 1 are not supported"));
    }
    let stride = match attr_ints(n, "strides").as_deref() {
        None => [1, 1],
        Some(&[a, b]) if a >= 1 && b >= 1 => [a as usize, b as usize],
        Some(s) => return Err(imp.node_error(n, format!("strides {s:?} must be two numbers >= 1"))),
    };
    let pads = conv_pads(imp, n, [xd[2], xd[3]], [kh, kw], stride)?;
    let pads = Pads {
        top: pads[0] + extra[0],
        left: pads[1] + extra[1],
        bottom: pads[2] + extra[2],
        right: pads[3] + extra[3],
    };
    // OIHW -> HWIO: out[((ky * kw + kx) * cg + ci) * m + co] = w[((co * cg + ci) * kh + ky) * kw + kx].
    let mut hwio = vec![0.0f32; w.len()];
    for co in 0..m {
        for ci in 0..cg {
            for ky in 0..kh {
                for kx in 0..kw {
                    hwio[((ky * kw + kx) * cg + ci) * m + co] =
                        w[((co * cg + ci) * kh + ky) * kw + kx];
                }
            }
        }
    }
    let weight = imp.param(&n.input[1], vec![kh, kw, cg, m], hwio)?;
    let bias = match imp.const_in(n, 2)? {
        Some(b) if b.dims == [m] => Some(imp.param(&n.input[2], vec![m], b.floats())?),
        Some(b) => {
            return Err(imp.node_error(n, format!("bias has shape {:?}, expected [{m}]", b.dims)));
        }
        None => None,
    };
    let op = Op::Conv2d(Conv2d {
        weight,
        bias,
        stride,
        pads,
        groups,
        epilogue: Default::default(),
    });
    Ok(Val::Act(imp.unary(n, op, x, NCHW_AS_NHWC.to_vec())?))
}

/// A conv's `[top, left, bottom, right]` from `pads` or `auto_pad`.
fn conv_pads(
    imp: &Importer<'_>,
    n: &NodeProto,
    hw: [usize; 2],
    k: [usize; 2],
    s: [usize; 2],
) -> Result<[usize; 4]> {
    let auto = attr_s(n, "auto_pad").unwrap_or_default();
    match auto.as_str() {
        "" | "NOTSET" => match attr_ints(n, "pads").as_deref() {
            None => Ok([0; 4]),
            Some(&[a, b, c, d]) if [a, b, c, d].iter().all(|&v| v >= 0) => {
                Ok([a as usize, b as usize, c as usize, d as usize])
            }
            Some(p) => Err(imp.node_error(n, format!("pads {p:?} must be 4 numbers >= 0"))),
        },
        "VALID" => Ok([0; 4]),
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut out = [0; 4];
            for axis in 0..2 {
                let (lo, hi, _) = Pads::same_1d(hw[axis], k[axis], s[axis])
                    .ok_or_else(|| imp.node_error(n, "auto_pad does not fit the input"))?;
                // SAME_UPPER puts the odd pixel at the end (TensorFlow's SAME), SAME_LOWER first.
                let (lo, hi) = if auto == "SAME_LOWER" {
                    (hi, lo)
                } else {
                    (lo, hi)
                };
                out[axis] = lo;
                out[axis + 2] = hi;
            }
            Ok(out)
        }
        other => Err(imp.node_error(n, format!("auto_pad '{other}' is not supported"))),
    }
}

fn batch_norm(imp: &mut Importer<'_>, n: &NodeProto) -> Result<Val> {
    if n.output.iter().skip(1).any(|s| !s.is_empty()) {
        return Err(imp.node_error(
            n,
            "the training form (running mean/variance outputs) is not supported",
        ));
    }
    let x = imp.act_in(n, 0, &NCHW_AS_NHWC)?;
    let c = imp.channels(n, &x)?;
    let mut names = Vec::new();
    for (i, role) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "var")] {
        let (d, v) = imp.weight_in(n, i)?;
        if d != [c] {
            return Err(imp.node_error(n, format!("{role} has shape {d:?}, expected [{c}]")));
        }
        names.push(imp.param(&n.input[i], d, v)?);
    }
    let epsilon = attr_f(n, "epsilon").unwrap_or(1e-5);
    let [gamma, beta, mean, variance]: [String; 4] = names
        .try_into()
        .map_err(|_| imp.node_error(n, "needs 5 inputs"))?;
    let perm = x.perm.clone();
    let op = Op::BatchNorm(BatchNorm {
        gamma,
        beta,
        mean,
        variance,
        epsilon,
    });
    Ok(Val::Act(imp.unary(n, op, x, perm)?))
}

/// `Clip`: bounds from attributes (opset < 11) or constant inputs.
fn clip(imp: &mut Importer<'_>, n: &NodeProto) -> Result<Val> {
    let (lo, hi) = if imp.opset < 11 {
        (
            attr_f(n, "min").unwrap_or(f32::NEG_INFINITY),
            attr_f(n, "max").unwrap_or(f32::INFINITY),
        )
    } else {
        let bound = |i: usize, default: f32| -> Result<f32> {
            match imp.const_in(n, i)? {
                None => Ok(default),
                Some(c) => c
                    .scalar()
                    .ok_or_else(|| imp.node_error(n, format!("bound {i} must be a scalar"))),
            }
        };
        (bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?)
    };
    let x = imp.act_in(n, 0, &NCHW_AS_NHWC)?;
    let perm = x.perm.clone();
    if lo == 0.0 && hi == 6.0 {
        return Ok(Val::Act(imp.unary(n, Op::Relu6, x, perm)?));
    }
    if lo == 0.0 && hi == f32::INFINITY {
        return Ok(Val::Act(imp.unary(n, Op::Relu, x, perm)?));
    }
    // Other bounds through the clamps the IR has, with scalar affine maps around them:
    // clip(x, lo, hi) = lo + (hi - lo) / 6 * relu6((x - lo) * 6 / (hi - lo)),
    // max(x, lo) = relu(x - lo) + lo, min(x, hi) = hi - relu(hi - x).
    let (pre, clamp, post) = match (lo.is_finite(), hi.is_finite()) {
        (true, true) if lo < hi => {
            let k = 6.0 / (hi - lo);
            ((k, -lo * k), Op::Relu6, ((hi - lo) / 6.0, lo))
        }
        (true, false) if hi == f32::INFINITY => ((1.0, -lo), Op::Relu, (1.0, lo)),
        (false, true) if lo == f32::NEG_INFINITY => ((-1.0, hi), Op::Relu, (-1.0, hi)),
        _ => return Err(imp.node_error(n, format!("bounds [{lo}, {hi}] are not supported"))),
    };
    let name = n.output.first().cloned().unwrap_or_default();
    let so = |(scale, offset): (f32, f32)| Op::ScaleOffset(ScaleOffset { scale, offset });
    let a = imp
        .node(&format!("{name}/pre"), so(pre), &[x.id])
        .map_err(|e| imp.node_error(n, e))?;
    let b = imp
        .node(&format!("{name}/clamp"), clamp, &[a])
        .map_err(|e| imp.node_error(n, e))?;
    let id = imp
        .node(&name, so(post), &[b])
        .map_err(|e| imp.node_error(n, e))?;
    Ok(Val::Act(Act { id, perm }))
}

/// `Gemm` (`alpha * A * B' + beta * C`, A not transposed) and `MatMul` of an `[N, K]`
/// activation by a constant: a `dense` with the weight `[K, M]` (alpha folded in) and the bias
/// `beta * C` (`[M]`, `[1, M]` or one value broadcast).
fn dense(imp: &mut Importer<'_>, n: &NodeProto, op: &str) -> Result<Val> {
    if attr_i(n, "transA").unwrap_or(0) != 0 {
        return Err(imp.node_error(n, "transA = 1 is not supported"));
    }
    let x = imp.act_in(n, 0, &[0, 1])?;
    if x.perm.len() != 2 {
        let r = x.perm.len();
        return Err(imp.node_error(
            n,
            format!("the input must be [N, K] (rank 2), got rank {r}"),
        ));
    }
    let k = imp.dims(&x)[1];
    let (wd, w) = imp.weight_in(n, 1)?;
    let trans = op == "Gemm" && attr_i(n, "transB").unwrap_or(0) != 0;
    let alpha = if op == "Gemm" {
        attr_f(n, "alpha").unwrap_or(1.0)
    } else {
        1.0
    };
    let (wk, m) = match (wd.as_slice(), trans) {
        (&[a, b], false) => (a, b),
        (&[a, b], true) => (b, a),
        _ => return Err(imp.node_error(n, format!("weight must be 2-D, got {wd:?}"))),
    };
    if wk != k {
        return Err(imp.node_error(n, format!("weight {wd:?} does not take {k} input features")));
    }
    let mut km = vec![0.0f32; w.len()];
    for r in 0..k {
        for c in 0..m {
            let v = if trans { w[c * k + r] } else { w[r * m + c] };
            km[r * m + c] = alpha * v;
        }
    }
    let weight = imp.param(&n.input[1], vec![k, m], km)?;
    let bias = match (op, imp.const_in(n, 2)?) {
        ("Gemm", Some(c)) => {
            let beta = attr_f(n, "beta").unwrap_or(1.0);
            let v = c.floats();
            let b: Vec<f32> = match (c.dims.as_slice(), v.len()) {
                (_, 1) => vec![beta * v[0]; m],
                (&[l] | &[1, l], _) if l == m => v.iter().map(|&x| beta * x).collect(),
                (d, _) => {
                    return Err(imp.node_error(
                        n,
                        format!("C of shape {d:?} does not broadcast to [N, {m}]"),
                    ));
                }
            };
            Some(imp.param(&n.input[2], vec![m], b)?)
        }
        _ => None,
    };
    Ok(Val::Act(imp.unary(
        n,
        Op::Dense(Dense { weight, bias }),
        x,
        vec![0, 1],
    )?))
}

/// `Add`, `Mul`, `Sub`, `Div`: two activations (Add only), or an activation and a per-channel
/// constant (a pending affine map).
fn arith(imp: &mut Importer<'_>, n: &NodeProto, op: &str) -> Result<Val> {
    let (a, b) = (imp.input(n, 0)?, imp.input(n, 1)?);
    match (&a, &b) {
        (Val::Const(_), Val::Const(_)) => Err(imp.node_error(
            n,
            "both operands are constants of a type that is not folded",
        )),
        (Val::Const(c), _) | (_, Val::Const(c)) => {
            let const_first = matches!(a, Val::Const(_));
            let (v, name) = if const_first {
                (b.clone(), &n.input[1])
            } else {
                (a.clone(), &n.input[0])
            };
            let c = c.clone();
            affine(imp, n, op, v, name, &c, const_first)
        }
        _ if op == "Add" => {
            let x = imp.act_in(n, 0, &NCHW_AS_NHWC)?;
            let y = imp.act_in(n, 1, &NCHW_AS_NHWC)?;
            let (dx, dy) = (imp.dims(&x), imp.dims(&y));
            if dx != dy || x.perm != y.perm {
                return Err(imp.node_error(n, format!("operands of shapes {dx:?} and {dy:?}: broadcasting between activations is not supported")));
            }
            let name = n.output.first().cloned().unwrap_or_default();
            let id = imp
                .node(&name, Op::Add, &[x.id, y.id])
                .map_err(|e| imp.node_error(n, e))?;
            Ok(Val::Act(Act { id, perm: x.perm }))
        }
        _ => Err(imp.node_error(n, "both operands are activations; only Add takes two")),
    }
}

/// `x op c` (or `c op x`) with `c` broadcasting along the channel axis only.
fn affine(
    imp: &mut Importer<'_>,
    n: &NodeProto,
    op: &str,
    v: Val,
    name: &str,
    c: &ConstVal,
    const_first: bool,
) -> Result<Val> {
    let (act, mut scale, mut shift) = match v {
        Val::Pending(Pending::Affine { act, scale, shift }) => (act, scale, shift),
        other => {
            let a = imp.act(other, name)?;
            let ch = imp.channels(n, &a)?;
            (a, vec![1.0; ch], vec![0.0; ch])
        }
    };
    let ch = scale.len();
    let rank = act.perm.len();
    let vals = channel_vector(&c.dims, &c.floats(), rank, ch)
        .ok_or_else(|| imp.node_error(n, format!("constant of shape {:?} does not broadcast along the channels of a rank-{rank} value with {ch} channels", c.dims)))?;
    for i in 0..ch {
        let k = vals[i];
        match (op, const_first) {
            ("Add", _) => shift[i] += k,
            ("Sub", false) => shift[i] -= k,
            ("Sub", true) => {
                scale[i] = -scale[i];
                shift[i] = k - shift[i];
            }
            ("Mul", _) => {
                scale[i] *= k;
                shift[i] *= k;
            }
            ("Div", false) => {
                scale[i] /= k;
                shift[i] /= k;
            }
            _ => {
                return Err(
                    imp.node_error(n, "a constant divided by an activation is not supported")
                );
            }
        }
    }
    Ok(Val::Pending(Pending::Affine { act, scale, shift }))
}

/// The per-channel values of a constant broadcast against an ONNX value of rank `rank` whose
/// axis 1 has `ch` channels; `None` when it varies along any other axis.
fn channel_vector(dims: &[usize], data: &[f32], rank: usize, ch: usize) -> Option<Vec<f32>> {
    if dims.len() > rank {
        return None;
    }
    // Right-align the constant's dims with the value's.
    let offset = rank - dims.len();
    let mut channel_len = 1;
    for (i, &d) in dims.iter().enumerate() {
        if offset + i == 1 {
            channel_len = d;
        } else if d != 1 {
            return None;
        }
    }
    match channel_len {
        1 => Some(vec![*data.first()?; ch]),
        l if l == ch => Some(data.to_vec()),
        _ => None,
    }
}

fn reduce_mean(imp: &mut Importer<'_>, n: &NodeProto) -> Result<Val> {
    let axes = if imp.opset >= 18 {
        imp.const_in(n, 1)?
            .and_then(|c| c.ints().map(<[i64]>::to_vec))
    } else {
        attr_ints(n, "axes")
    };
    let v = imp.input(n, 0)?;
    let x = imp.act(v, &n.input[0])?;
    let rank = x.perm.len();
    let mut axes: Vec<usize> = axes
        .unwrap_or_default()
        .iter()
        .map(|&a| axis(a, rank))
        .collect::<Option<_>>()
        .ok_or_else(|| imp.node_error(n, "an axis is out of range"))?;
    axes.sort_unstable();
    // The IR pools its NHWC axes 1 and 2: the reduced ONNX axes must land there (tf2onnx
    // reduces [N, 1, 1, C] over axes 1, 2 after a Reshape); else the value is brought to NHWC.
    let mut ir_axes: Vec<usize> = axes.iter().map(|&a| x.perm[a]).collect();
    ir_axes.sort_unstable();
    let x = if rank == 4 && x.perm[0] == 0 && ir_axes == [1, 2] {
        x
    } else if rank == 4 && axes == [2, 3] {
        imp.act_in(n, 0, &NCHW_AS_NHWC)?
    } else {
        return Err(imp.node_error(n, format!("only the mean over H and W of an NCHW value is supported (axes [2, 3]), got axes {axes:?} of rank {rank}")));
    };
    let keep = attr_i(n, "keepdims").unwrap_or(1) != 0;
    let name = n.output.first().cloned().unwrap_or_default();
    let pooled = imp
        .node(&format!("{name}/pool"), Op::GlobalAvgPool, &[x.id])
        .map_err(|e| imp.node_error(n, e))?;
    let pooled = Act {
        id: pooled,
        perm: x.perm.clone(),
    };
    if keep {
        return Ok(Val::Act(pooled));
    }
    Ok(Val::Act(imp.unary(n, Op::Flatten, pooled, vec![0, 1])?))
}

/// A same-rank reshape that only moves size-1 axes (`[N, C, 1, 1] -> [N, 1, 1, C]`) changes no
/// data: the new ONNX axes of size > 1 keep the IR axes of the old ones, the size-1 axes take
/// the IR axes left over. `None` for any other reshape.
fn move_unit_axes(from: &[usize], to: &[usize], perm: &[usize]) -> Option<Vec<usize>> {
    let big = |d: &[usize]| -> Vec<usize> { (0..d.len()).filter(|&i| d[i] != 1).collect() };
    let (bf, bt) = (big(from), big(to));
    let same = from.len() == to.len()
        && bf.len() == bt.len()
        && bf.iter().zip(&bt).all(|(&i, &j)| from[i] == to[j]);
    if !same {
        return None;
    }
    let mut out = vec![usize::MAX; to.len()];
    for (&i, &j) in bf.iter().zip(&bt) {
        out[j] = perm[i];
    }
    let spare: Vec<usize> = (0..perm.len()).filter(|p| !out.contains(p)).collect();
    let mut spare = spare.into_iter();
    for slot in out.iter_mut().filter(|s| **s == usize::MAX) {
        *slot = spare.next()?;
    }
    Some(out)
}

/// `[N, d1, ..] -> [N, d1 * ..]` of an activation, in ONNX element order.
fn flatten_2d(imp: &mut Importer<'_>, n: &NodeProto, i: usize) -> Result<Act> {
    let v = imp.input(n, i)?;
    let name = n.input[i].clone();
    let a = imp.act(v, &name)?;
    let d = imp.dims(&a);
    // The IR value's memory order equals ONNX's when the axes of size > 1 appear in the same
    // order in both (size-1 axes do not move data).
    let moved: Vec<usize> = (0..d.len())
        .filter(|&i| d[i] > 1 || i == 0)
        .map(|i| a.perm[i])
        .collect();
    let in_order = a.perm[0] == 0 && moved.windows(2).all(|w| w[0] < w[1]);
    let a = if in_order {
        a
    } else {
        let identity: Vec<usize> = (0..d.len()).collect();
        imp.relayout(a, &identity, &name, "to_file_layout")?
    };
    if d.len() == 2 && a.perm == [0, 1] {
        return Ok(a);
    }
    imp.unary(n, Op::Flatten, a, vec![0, 1])
}

fn flatten(imp: &mut Importer<'_>, n: &NodeProto) -> Result<Val> {
    let rank = match imp.input(n, 0)? {
        Val::Act(a)
        | Val::Pending(Pending::Pad { act: a, .. })
        | Val::Pending(Pending::Affine { act: a, .. }) => a.perm.len(),
        Val::Const(c) => c.dims.len(),
    };
    let ax = attr_i(n, "axis").unwrap_or(1);
    if axis(ax, rank) != Some(1) {
        return Err(imp.node_error(
            n,
            format!("axis {ax} of a rank-{rank} value: only axis 1 ([N, rest]) is supported"),
        ));
    }
    Ok(Val::Act(flatten_2d(imp, n, 0)?))
}

/// `Reshape` and `Squeeze` of an activation: to its own shape (a no-op) or to `[N, rest]`.
fn reshape(imp: &mut Importer<'_>, n: &NodeProto, op: &str) -> Result<Val> {
    let v = imp.input(n, 0)?;
    let a = imp.act(v.clone(), &n.input[0])?;
    let d = imp.dims(&a);
    let target = if op == "Reshape" {
        let shape = imp
            .const_in(n, 1)?
            .and_then(|c| c.ints().map(<[i64]>::to_vec));
        let shape = shape.ok_or_else(|| {
            imp.node_error(n, "the shape must be an int64 constant (or fold to one)")
        })?;
        let allow_zero = attr_i(n, "allowzero").unwrap_or(0) != 0;
        super::fold::reshape_target(&d, &shape, allow_zero).map_err(|m| imp.node_error(n, m))?
    } else {
        let axes = if imp.opset >= 13 {
            imp.const_in(n, 1)?
                .and_then(|c| c.ints().map(<[i64]>::to_vec))
        } else {
            attr_ints(n, "axes")
        };
        super::fold::squeeze_dims(&d, axes.as_deref()).map_err(|m| imp.node_error(n, m))?
    };
    if target == d {
        return Ok(Val::Act(a));
    }
    if let Some(perm) = move_unit_axes(&d, &target, &a.perm) {
        return Ok(Val::Act(Act { id: a.id, perm }));
    }
    let rest: usize = d.iter().skip(1).product();
    if target.len() == 2 && target[0] == d[0] && target[1] == rest {
        return Ok(Val::Act(flatten_2d(imp, n, 0)?));
    }
    Err(imp.node_error(
        n,
        format!(
            "reshaping {d:?} to {target:?}: only a no-op or flattening to [N, rest] is supported"
        ),
    ))
}

fn softmax(imp: &mut Importer<'_>, n: &NodeProto) -> Result<Val> {
    let x = imp.act_in(n, 0, &[0, 1])?;
    let rank = x.perm.len();
    let default = if imp.opset < 13 { 1 } else { -1 };
    let ax = axis(attr_i(n, "axis").unwrap_or(default), rank);
    if rank != 2 || ax != Some(1) {
        return Err(imp.node_error(
            n,
            format!(
                "only the softmax over the last axis of an [N, C] value is supported (rank {rank})"
            ),
        ));
    }
    Ok(Val::Act(imp.unary(n, Op::Softmax, x, vec![0, 1])?))
}

/// `Transpose` of an activation changes only which IR axis each ONNX axis names.
fn transpose(imp: &mut Importer<'_>, n: &NodeProto) -> Result<Val> {
    let v = imp.input(n, 0)?;
    let a = imp.act(v, &n.input[0])?;
    let rank = a.perm.len();
    let p: Vec<usize> = match attr_ints(n, "perm") {
        Some(p) => p
            .iter()
            .map(|&i| axis(i, rank))
            .collect::<Option<_>>()
            .ok_or_else(|| imp.node_error(n, "perm out of range"))?,
        None => (0..rank).rev().collect(),
    };
    let mut seen = vec![false; rank];
    if p.len() != rank || p.iter().any(|&i| std::mem::replace(&mut seen[i], true)) {
        return Err(imp.node_error(n, format!("perm {p:?} is not a permutation of {rank} axes")));
    }
    Ok(Val::Act(Act {
        id: a.id,
        perm: p.iter().map(|&i| a.perm[i]).collect(),
    }))
}

/// `Pad` (constant zero) of H and W: pending, folded into the next Conv.
fn pad(imp: &mut Importer<'_>, n: &NodeProto) -> Result<Val> {
    let mode = attr_s(n, "mode").unwrap_or_else(|| "constant".into());
    let (pads, value) = if imp.opset < 11 {
        (attr_ints(n, "pads"), attr_f(n, "value").unwrap_or(0.0))
    } else {
        let p = imp
            .const_in(n, 1)?
            .and_then(|c| c.ints().map(<[i64]>::to_vec));
        let v = imp.const_in(n, 2)?.and_then(|c| c.scalar()).unwrap_or(0.0);
        if n.input.get(3).is_some_and(|s| !s.is_empty()) {
            return Err(imp.node_error(n, "the axes input is not supported"));
        }
        (p, v)
    };
    if mode != "constant" || value != 0.0 {
        return Err(imp.node_error(
            n,
            format!("only zero padding is supported (mode '{mode}', value {value})"),
        ));
    }
    let pads = pads.ok_or_else(|| imp.node_error(n, "pads must be a constant"))?;
    let v = imp.input(n, 0)?;
    let (act, mut acc) = match v {
        Val::Pending(Pending::Pad { act, pads }) => (act, pads),
        other => (imp.act(other, &n.input[0])?, [0; 4]),
    };
    let &[n0, c0, t, l, n1, c1, b, r] = pads.as_slice() else {
        return Err(imp.node_error(
            n,
            format!("pads {pads:?}: only 4-D (NCHW) padding is supported"),
        ));
    };
    if [n0, c0, n1, c1].iter().any(|&v| v != 0) || [t, l, b, r].iter().any(|&v| v < 0) {
        return Err(imp.node_error(
            n,
            format!("pads {pads:?}: only non-negative padding of H and W is supported"),
        ));
    }
    for (slot, v) in acc.iter_mut().zip([t, l, b, r]) {
        *slot += v as usize;
    }
    Ok(Val::Pending(Pending::Pad { act, pads: acc }))
}
