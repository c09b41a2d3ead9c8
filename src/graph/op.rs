//! Operations of the graph IR, their attributes, and the typing rules.
//!
//! [`infer_type`] is the single home of every typing rule: the front end calls it to type the nodes
//! it builds, the verifier calls it to check the types a graph claims, and passes call it to type
//! the nodes they create. A rule states how many value operands an op takes, which constants it
//! references and with which shapes, and the shape of its result.
//!
//! All tensors are f32; 4-D activations are NHWC.
//!
//! ## Convolution weights
//! A convolution's weight constant is `[kh, kw, cin / groups, cout]` (TensorFlow's HWIO with groups).
//! When `groups == cin > 1` (depthwise), TensorFlow's depthwise layout `[kh, kw, cin, multiplier]`
//! with `cout = cin * multiplier` is accepted as well. Both shapes put the same element at the same
//! flat offset, `((ky * kw + kx) * (cin / groups) + ci) * cout + co`, so kernels index them alike
//! and weight files keep TensorFlow's shapes.
//!
//! ## Epilogue order
//! A conv computes `y = act(conv(x, w) + bias + residual)`: the bias (if any) is added first, then
//! the residual operand (if the epilogue has `add`), and the clamp to `[0, 6]` (if the epilogue has
//! `relu6`) comes last.

use super::TensorType;

/// Four-sided zero padding of a convolution, in input pixels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Pads {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Pads {
    /// TensorFlow's `padding='SAME'` rule for one spatial axis: returns `(before, after)` and the
    /// output size `ceil(input / stride)`. `None` when `stride` is 0.
    pub fn same_1d(input: usize, kernel: usize, stride: usize) -> Option<(usize, usize, usize)> {
        let out = input.checked_add(stride.checked_sub(1)?)? / stride;
        let needed = (out.checked_sub(1)?)
            .checked_mul(stride)?
            .checked_add(kernel)?;
        let total = needed.saturating_sub(input);
        Some((total / 2, total - total / 2, out))
    }
}

/// What a convolution does to its result before storing it (see the module doc for the order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Epilogue {
    /// Store the convolution (plus bias) as is.
    #[default]
    None,
    /// Clamp to `[0, 6]`.
    Relu6,
    /// Add the residual operand.
    Add,
    /// Add the residual operand, then clamp to `[0, 6]`.
    AddRelu6,
}

impl Epilogue {
    pub const ALL: [Epilogue; 4] = [
        Epilogue::None,
        Epilogue::Relu6,
        Epilogue::Add,
        Epilogue::AddRelu6,
    ];

    /// Whether the epilogue reads a residual operand.
    pub fn has_residual(self) -> bool {
        matches!(self, Epilogue::Add | Epilogue::AddRelu6)
    }

    /// Whether the epilogue clamps to `[0, 6]`.
    pub fn has_relu6(self) -> bool {
        matches!(self, Epilogue::Relu6 | Epilogue::AddRelu6)
    }

    /// The name used in the text form.
    pub fn name(self) -> &'static str {
        match self {
            Epilogue::None => "none",
            Epilogue::Relu6 => "relu6",
            Epilogue::Add => "add",
            Epilogue::AddRelu6 => "add_relu6",
        }
    }

    pub fn from_name(name: &str) -> Option<Epilogue> {
        Epilogue::ALL.into_iter().find(|e| e.name() == name)
    }

    /// This epilogue with a clamp appended, if it does not clamp already.
    pub fn with_relu6(self) -> Option<Epilogue> {
        match self {
            Epilogue::None => Some(Epilogue::Relu6),
            Epilogue::Add => Some(Epilogue::AddRelu6),
            Epilogue::Relu6 | Epilogue::AddRelu6 => None,
        }
    }
}

/// Attributes of a 2-D convolution (full, 1x1, grouped or depthwise).
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2d {
    /// Weight constant, `[kh, kw, cin / groups, cout]` (or TF depthwise, see the module doc).
    pub weight: String,
    /// Optional bias constant, `[cout]`.
    pub bias: Option<String>,
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
    pub pads: Pads,
    pub groups: usize,
    pub epilogue: Epilogue,
}

/// Inference-mode batch normalisation over the last axis:
/// `y = gamma * (x - mean) / sqrt(variance + epsilon) + beta`.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm {
    pub gamma: String,
    pub beta: String,
    pub mean: String,
    pub variance: String,
    pub epsilon: f32,
}

/// An operation. Value operands are the node's incoming edges (see [`Op::num_operands`]);
/// constants are referenced by name.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A graph input; its type is given, not inferred.
    Input,
    /// Operands: `x` and, when the epilogue adds, the residual.
    Conv2d(Conv2d),
    /// Operand: `x`.
    BatchNorm(BatchNorm),
    /// `min(max(x, 0), 6)`. Operand: `x`.
    Relu6,
    /// Element-wise sum of two operands of one type.
    Add,
    /// Mean over H and W: `[N, H, W, C] -> [N, 1, 1, C]`.
    GlobalAvgPool,
    /// `[N, d1, .., dk] -> [N, d1 * .. * dk]`, a reinterpretation of the same data.
    Flatten,
    /// Softmax over the last axis.
    Softmax,
}

impl Op {
    /// The mnemonic of the text form.
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Conv2d(_) => "conv2d",
            Op::BatchNorm(_) => "batch_norm",
            Op::Relu6 => "relu6",
            Op::Add => "add",
            Op::GlobalAvgPool => "global_avg_pool",
            Op::Flatten => "flatten",
            Op::Softmax => "softmax",
        }
    }

    /// How many value operands (incoming edges) the op takes.
    pub fn num_operands(&self) -> usize {
        match self {
            Op::Input => 0,
            Op::Conv2d(c) => 1 + usize::from(c.epilogue.has_residual()),
            Op::Add => 2,
            Op::BatchNorm(_) | Op::Relu6 | Op::GlobalAvgPool | Op::Flatten | Op::Softmax => 1,
        }
    }

    /// The constants the op references, in operand order.
    pub fn const_refs(&self) -> Vec<&str> {
        match self {
            Op::Conv2d(c) => std::iter::once(c.weight.as_str())
                .chain(c.bias.as_deref())
                .collect(),
            Op::BatchNorm(b) => vec![&b.gamma, &b.beta, &b.mean, &b.variance],
            _ => Vec::new(),
        }
    }
}

/// Shape of a convolution's weights, decoded: kernel size, input channels per group, outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub kh: usize,
    pub kw: usize,
    pub cin: usize,
    pub cout: usize,
    pub groups: usize,
}

impl ConvGeometry {
    /// Decodes the weight shape of a convolution whose input has `cin` channels.
    pub fn new(weight: &TensorType, cin: usize, groups: usize) -> Result<ConvGeometry, String> {
        let [kh, kw, a, b] = weight.dims[..] else {
            return Err(format!(
                "weight must have rank 4 [kh, kw, cin/groups, cout], got {weight}"
            ));
        };
        if groups == 0 {
            return Err("groups must be at least 1".into());
        }
        if !cin.is_multiple_of(groups) {
            return Err(format!(
                "{cin} input channels do not split into {groups} groups"
            ));
        }
        let depthwise_tf = groups == cin && groups > 1 && a == cin;
        let cout = if depthwise_tf {
            a.checked_mul(b).ok_or("weight size overflows")?
        } else {
            if a != cin / groups {
                return Err(format!(
                    "weight {weight} has {a} input channels per group, expected {} (input has {cin} channels, groups = {groups})",
                    cin / groups
                ));
            }
            b
        };
        if !cout.is_multiple_of(groups) {
            return Err(format!(
                "{cout} output channels do not split into {groups} groups"
            ));
        }
        Ok(ConvGeometry {
            kh,
            kw,
            cin,
            cout,
            groups,
        })
    }
}

/// Looks up the declared type of a constant by name.
pub trait ConstTypes {
    fn const_type(&self, name: &str) -> Option<&TensorType>;
}

/// The typing rules: the result type of `op` applied to operands of types `operands`.
///
/// Errors are sentences without the node's name; the caller prefixes it.
pub fn infer_type(
    op: &Op,
    operands: &[&TensorType],
    consts: &dyn ConstTypes,
) -> Result<TensorType, String> {
    if operands.len() != op.num_operands() {
        return Err(format!(
            "{} takes {} operand(s), got {}",
            op.mnemonic(),
            op.num_operands(),
            operands.len()
        ));
    }
    let const_type = |name: &str| {
        consts
            .const_type(name)
            .ok_or_else(|| format!("constant @{name} is not declared"))
    };
    match op {
        Op::Input => Err("an input's type is declared, not inferred".into()),
        Op::Conv2d(c) => conv_type(c, operands, consts),
        Op::BatchNorm(b) => {
            let x = operands[0];
            let Some(&c) = x.dims.last() else {
                return Err("batch_norm needs an operand of rank at least 1".into());
            };
            for (role, name) in [
                ("gamma", &b.gamma),
                ("beta", &b.beta),
                ("mean", &b.mean),
                ("variance", &b.variance),
            ] {
                expect_shape(const_type(name)?, &[c], &format!("{role} @{name}"))?;
            }
            if !(b.epsilon.is_finite() && b.epsilon >= 0.0) {
                return Err(format!(
                    "epsilon must be finite and >= 0, got {}",
                    b.epsilon
                ));
            }
            Ok(x.clone())
        }
        Op::Relu6 | Op::Softmax => Ok(operands[0].clone()),
        Op::Add => {
            if operands[0] != operands[1] {
                return Err(format!(
                    "add operands differ in type: {} and {}",
                    operands[0], operands[1]
                ));
            }
            Ok(operands[0].clone())
        }
        Op::GlobalAvgPool => {
            let [n, _, _, c] = nhwc(operands[0], "global_avg_pool input")?;
            Ok(TensorType::new(vec![n, 1, 1, c]))
        }
        Op::Flatten => {
            let dims = &operands[0].dims;
            if dims.len() < 2 {
                return Err(format!("flatten needs rank >= 2, got {}", operands[0]));
            }
            let rest =
                crate::tensor::checked_product(&dims[1..]).ok_or("flattened size overflows")?;
            Ok(TensorType::new(vec![dims[0], rest]))
        }
    }
}

fn nhwc(t: &TensorType, what: &str) -> Result<[usize; 4], String> {
    t.dims[..]
        .try_into()
        .map_err(|_| format!("{what} must be NHWC (rank 4), got {t}"))
}

fn expect_shape(t: &TensorType, dims: &[usize], what: &str) -> Result<(), String> {
    if t.dims == dims {
        Ok(())
    } else {
        Err(format!(
            "{what} has type {t}, expected {}",
            TensorType::new(dims.to_vec())
        ))
    }
}

/// The typing rule of `conv2d` (see the module doc), with the limits lowering relies on: the
/// index range of a strided, padded input fits, and the border segments are few enough.
fn conv_type(
    c: &Conv2d,
    operands: &[&TensorType],
    consts: &dyn ConstTypes,
) -> Result<TensorType, String> {
    let const_type = |name: &str| {
        consts
            .const_type(name)
            .ok_or_else(|| format!("constant @{name} is not declared"))
    };
    let [n, h, w, cin] = nhwc(operands[0], "conv2d input")?;
    let geo = ConvGeometry::new(const_type(&c.weight)?, cin, c.groups)
        .map_err(|e| format!("@{}: {e}", c.weight))?;
    let [sh, sw] = c.stride;
    if sh == 0 || sw == 0 {
        return Err(format!("stride must be at least 1, got [{sh}, {sw}]"));
    }
    let oh = conv_out(h, c.pads.top, c.pads.bottom, geo.kh, sh, "height")?;
    let ow = conv_out(w, c.pads.left, c.pads.right, geo.kw, sw, "width")?;
    let padded = [
        n,
        h + c.pads.top + c.pads.bottom,
        w + c.pads.left + c.pads.right,
        cin,
    ];
    // Lowering's index coefficients are at most the padded input's size times a stride;
    // this bound keeps them in range (any stride a real model uses passes).
    if TensorType::new([&padded[..], &[sh, sw]].concat())
        .num_bytes()
        .is_none()
    {
        return Err(format!(
            "stride [{sh}, {sw}] is too large: with the padded input {} the index \
             range overflows",
            TensorType::new(padded.to_vec())
        ));
    }
    let pairs = segments(h, oh, geo.kh, sh, c.pads.top).len()
        * segments(w, ow, geo.kw, sw, c.pads.left).len();
    if pairs > MAX_CONV_SEGMENT_PAIRS {
        return Err(format!(
            "kernel {}x{} with pads [{}, {}, {}, {}] and stride [{sh}, {sw}] gives {pairs} \
             border segments (row x column), more than the {MAX_CONV_SEGMENT_PAIRS} \
             mnv2c compiles",
            geo.kh, geo.kw, c.pads.top, c.pads.bottom, c.pads.left, c.pads.right
        ));
    }
    if let Some(bias) = &c.bias {
        expect_shape(const_type(bias)?, &[geo.cout], &format!("bias @{bias}"))?;
    }
    let out = TensorType::new(vec![n, oh, ow, geo.cout]);
    if c.epilogue.has_residual() && operands[1] != &out {
        return Err(format!(
            "residual operand has type {}, expected {out} (the conv's result type)",
            operands[1]
        ));
    }
    Ok(out)
}

/// Output size of one spatial axis: `(input + before + after - kernel) / stride + 1`.
fn conv_out(
    input: usize,
    before: usize,
    after: usize,
    kernel: usize,
    stride: usize,
    axis: &str,
) -> Result<usize, String> {
    let padded = input
        .checked_add(before)
        .and_then(|s| s.checked_add(after))
        .ok_or_else(|| format!("padded {axis} overflows"))?;
    if kernel == 0 || padded < kernel {
        return Err(format!(
            "kernel {axis} {kernel} does not fit the padded input {axis} {padded}"
        ));
    }
    if before >= kernel || after >= kernel {
        return Err(format!(
            "{axis} pads {before}/{after} must be smaller than the kernel {axis} {kernel}"
        ));
    }
    Ok((padded - kernel) / stride + 1)
}

/// The most loop nests lowering emits for one convolution: one per pair of a row segment and a
/// column segment (see [`segments`]). The typing rule rejects convolutions with more, so that
/// compile time depends on the graph, not on kernel sizes and pads. A 3x3 conv has at most
/// 3 x 3 segment pairs; 9x9 with pads 8, 17 x 17.
pub const MAX_CONV_SEGMENT_PAIRS: usize = 1024;

/// A run of output rows (or columns) `lo..hi` whose valid kernel taps are `k_lo..k_hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub lo: usize,
    pub hi: usize,
    pub k_lo: usize,
    pub k_hi: usize,
}

/// Splits `0..out` output positions into maximal runs with the same valid tap range: tap `k` of
/// output `o` reads input `o * stride + k - pad`, valid when inside `0..input`.
///
/// Work is proportional to the number of border positions (at most about `(pad + kernel) /
/// stride`), not to `out`: only positions whose window sticks out of the input are visited
/// one by one; the interior, where every tap is valid, is one segment.
pub fn segments(
    input: usize,
    out: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
) -> Vec<Segment> {
    let taps = |o: usize| {
        let start = (o as i128) * (stride as i128) - pad as i128;
        let k_lo = (-start).clamp(0, kernel as i128) as usize;
        let k_hi = (input as i128 - start).clamp(0, kernel as i128) as usize;
        (k_lo, k_hi.max(k_lo))
    };
    let s = stride.max(1);
    // Positions before `top` start in the padding; from `bottom` on they end in it.
    let top = pad.div_ceil(s).min(out);
    let bottom = match (input as u128 + pad as u128).checked_sub(kernel as u128) {
        Some(room) => usize::try_from(room / s as u128 + 1).unwrap_or(usize::MAX),
        None => 0,
    }
    .clamp(top, out);
    let mut segs: Vec<Segment> = Vec::new();
    let mut push = |lo: usize, hi: usize, (k_lo, k_hi): (usize, usize)| match segs.last_mut() {
        Some(s) if s.k_lo == k_lo && s.k_hi == k_hi && s.hi == lo => s.hi = hi,
        _ => segs.push(Segment { lo, hi, k_lo, k_hi }),
    };
    for o in 0..top {
        push(o, o + 1, taps(o));
    }
    if top < bottom {
        push(top, bottom, taps(top));
    }
    for o in bottom..out {
        push(o, o + 1, taps(o));
    }
    segs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The segments by their definition: one position at a time, merged while the tap range
    /// stays the same.
    fn segments_by_definition(
        input: usize,
        out: usize,
        k: usize,
        s: usize,
        pad: usize,
    ) -> Vec<Segment> {
        let mut segs: Vec<Segment> = Vec::new();
        for o in 0..out {
            let start = (o * s) as i64 - pad as i64;
            let k_lo = (-start).clamp(0, k as i64) as usize;
            let k_hi = ((input as i64 - start).clamp(0, k as i64) as usize).max(k_lo);
            match segs.last_mut() {
                Some(g) if g.k_lo == k_lo && g.k_hi == k_hi => g.hi = o + 1,
                _ => segs.push(Segment {
                    lo: o,
                    hi: o + 1,
                    k_lo,
                    k_hi,
                }),
            }
        }
        segs
    }

    #[test]
    fn segments_match_their_definition() {
        for input in 1..12 {
            for k in 1..6 {
                for s in 1..4 {
                    for pt in 0..k {
                        for pb in 0..k {
                            let Ok(out) = conv_out(input, pt, pb, k, s, "height") else {
                                continue;
                            };
                            assert_eq!(
                                segments(input, out, k, s, pt),
                                segments_by_definition(input, out, k, s, pt),
                                "input {input} kernel {k} stride {s} pads {pt}/{pb}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Regression: `segments` walked every output position, so a conv over a 2^40-wide row
    /// hung; the work is now the border's, whatever the extent.
    #[test]
    fn segments_of_a_huge_row_are_few_and_fast() {
        let w = 1usize << 40;
        let segs = segments(w, w, 3, 1, 1);
        assert_eq!(segs.len(), 3);
        assert_eq!(
            (segs[1].lo, segs[1].hi, segs[1].k_lo, segs[1].k_hi),
            (1, w - 1, 0, 3)
        );
    }

    #[test]
    fn same_padding_matches_tensorflow() {
        // (input, kernel, stride) -> (before, after, output)
        assert_eq!(Pads::same_1d(224, 3, 2), Some((0, 1, 112)));
        assert_eq!(Pads::same_1d(161, 3, 2), Some((1, 1, 81)));
        assert_eq!(Pads::same_1d(7, 3, 1), Some((1, 1, 7)));
        assert_eq!(Pads::same_1d(7, 1, 1), Some((0, 0, 7)));
        assert_eq!(Pads::same_1d(1, 3, 2), Some((1, 1, 1)));
        assert_eq!(Pads::same_1d(5, 3, 0), None);
        assert_eq!(Pads::same_1d(usize::MAX, 3, 2), None);
    }

    #[test]
    fn depthwise_weights_accept_both_layouts() {
        let tf = TensorType::new(vec![3, 3, 8, 2]);
        let g = ConvGeometry::new(&tf, 8, 8).unwrap();
        assert_eq!(g.cout, 16);
        let hwio = TensorType::new(vec![3, 3, 1, 16]);
        assert_eq!(ConvGeometry::new(&hwio, 8, 8).unwrap().cout, 16);
        let e = ConvGeometry::new(&TensorType::new(vec![3, 3, 2, 16]), 8, 8).unwrap_err();
        assert!(
            e.contains("has 2 input channels per group, expected 1"),
            "{e}"
        );
    }
}
