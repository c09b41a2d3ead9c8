//! Known-answer tests of the reference interpreter: tiny graphs whose results are computed by
//! hand in the comments, so a wrong padding rule, weight layout, epilogue order or an unstable
//! softmax shows up as a concrete wrong number.

use mnv2c::graph::{
    self, BatchNorm, Const, ConstDef, Conv2d, Epilogue, Graph, Op, Pads, TensorType, interp,
};
use mnv2c::{Error, Tensor, TensorMap};

fn t(dims: &[usize], data: &[f32]) -> Tensor {
    Tensor::new(dims.to_vec(), data.to_vec()).unwrap()
}

fn iota(n: usize) -> Vec<f32> {
    (1..=n).map(|i| i as f32).collect()
}

/// A graph under construction with its constant values.
struct G {
    g: Graph,
    consts: TensorMap,
}

impl G {
    fn new() -> G {
        G {
            g: Graph::new("t"),
            consts: TensorMap::new(),
        }
    }

    fn input(&mut self, dims: &[usize]) -> graph::ValueId {
        self.g
            .add_node("x", Op::Input, TensorType::new(dims.to_vec()), &[])
    }

    fn konst(&mut self, name: &str, value: Tensor) -> String {
        self.g
            .add_const(
                name,
                Const {
                    ty: value.ty(),
                    def: ConstDef::Param,
                },
            )
            .unwrap();
        self.consts.insert(name.into(), value);
        name.into()
    }

    fn node(&mut self, name: &str, op: Op, operands: &[graph::ValueId]) -> graph::ValueId {
        self.g.add_typed(name, op, operands).unwrap()
    }

    /// Runs with one output and one input.
    fn run(mut self, out: graph::ValueId, x: Tensor) -> Tensor {
        self.g.set_outputs(vec![out]);
        graph::verify(&self.g).unwrap();
        interp::run(&self.g, &self.consts, &[x])
            .unwrap()
            .pop()
            .unwrap()
    }
}

fn conv(weight: &str, stride: usize, pads: Pads, groups: usize) -> Conv2d {
    Conv2d {
        weight: weight.into(),
        bias: None,
        stride: [stride, stride],
        pads,
        groups,
        epilogue: Epilogue::None,
    }
}

fn same(h: usize, w: usize, k: usize, s: usize) -> Pads {
    let (top, bottom, _) = Pads::same_1d(h, k, s).unwrap();
    let (left, right, _) = Pads::same_1d(w, k, s).unwrap();
    Pads {
        top,
        bottom,
        left,
        right,
    }
}

#[test]
fn conv_tf_same_even_size_stride_2_pads_0_before_1_after() {
    // 4x4 input 1..16, 3x3 all-ones kernel, stride 2. TF SAME: out 2, pad total 1 -> 0/1.
    let pads = same(4, 4, 3, 2);
    assert_eq!((pads.top, pads.bottom, pads.left, pads.right), (0, 1, 0, 1));
    let mut g = G::new();
    let x = g.input(&[1, 4, 4, 1]);
    let w = g.konst("w", t(&[3, 3, 1, 1], &[1.0; 9]));
    let y = g.node("y", Op::Conv2d(conv(&w, 2, pads, 1)), &[x]);
    let out = g.run(y, t(&[1, 4, 4, 1], &iota(16)));
    // [0,0]: rows 0-2, cols 0-2 = 1+2+3+5+6+7+9+10+11 = 54
    // [0,1]: rows 0-2, cols 2-3 (+pad) = 3+4+7+8+11+12 = 45
    // [1,0]: rows 2-3 (+pad), cols 0-2 = 9+10+11+13+14+15 = 72
    // [1,1]: rows 2-3, cols 2-3 = 11+12+15+16 = 54
    // (PyTorch's 1/1 padding would give 14 at [0,0].)
    assert_eq!(out.dims(), &[1, 2, 2, 1]);
    assert_eq!(out.data(), &[54.0, 45.0, 72.0, 54.0]);
}

#[test]
fn conv_tf_same_odd_size_pads_symmetric_and_does_not_flip_the_kernel() {
    let pads = same(3, 3, 3, 1);
    assert_eq!((pads.top, pads.bottom, pads.left, pads.right), (1, 1, 1, 1));
    let mut g = G::new();
    let x = g.input(&[1, 3, 3, 1]);
    let w = g.konst("w", t(&[3, 3, 1, 1], &[1.0; 9]));
    let y = g.node("y", Op::Conv2d(conv(&w, 1, pads, 1)), &[x]);
    let out = g.run(y, t(&[1, 3, 3, 1], &iota(9)));
    // Sums of the 3x3 neighbourhoods of 1..9 with zero padding.
    assert_eq!(
        out.data(),
        &[12.0, 21.0, 16.0, 27.0, 45.0, 33.0, 24.0, 39.0, 28.0]
    );

    // A kernel with a single 1 at (ky, kx) = (0, 0) reads the input at (y - 1, x - 1):
    // cross-correlation, as TF computes, not a flipped convolution.
    let mut g = G::new();
    let x = g.input(&[1, 3, 3, 1]);
    let mut k = [0.0; 9];
    k[0] = 1.0;
    let w = g.konst("w", t(&[3, 3, 1, 1], &k));
    let y = g.node("y", Op::Conv2d(conv(&w, 1, pads, 1)), &[x]);
    let out = g.run(y, t(&[1, 3, 3, 1], &iota(9)));
    assert_eq!(out.data(), &[0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 4.0, 5.0]);
}

#[test]
fn conv_1x1_uses_hwio_weight_layout() {
    // x = [1, 2]; w[ci][co] = [[1, 2, 3], [4, 5, 6]] -> y = [1+8, 2+10, 3+12].
    let mut g = G::new();
    let x = g.input(&[1, 1, 1, 2]);
    let w = g.konst("w", t(&[1, 1, 2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    let y = g.node("y", Op::Conv2d(conv(&w, 1, Pads::default(), 1)), &[x]);
    let out = g.run(y, t(&[1, 1, 1, 2], &[1.0, 2.0]));
    assert_eq!(out.data(), &[9.0, 12.0, 15.0]);
}

#[test]
fn depthwise_conv_tf_layout() {
    // Channel 0: all-ones 3x3 kernel; channel 1: only the centre tap, weight 2.
    // TF layout [3, 3, C, 1]: flat index (ky * 3 + kx) * 2 + c.
    let mut k = vec![0.0; 18];
    for tap in 0..9 {
        k[tap * 2] = 1.0;
    }
    k[4 * 2 + 1] = 2.0;
    let mut g = G::new();
    let x = g.input(&[1, 2, 2, 2]);
    let w = g.konst("w", t(&[3, 3, 2, 1], &k));
    let y = g.node("y", Op::Conv2d(conv(&w, 1, same(2, 2, 3, 1), 2)), &[x]);
    // Channel 0 = [1, 2, 3, 4], channel 1 = [10, 20, 30, 40], interleaved NHWC.
    let out = g.run(
        y,
        t(&[1, 2, 2, 2], &[1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0]),
    );
    // SAME on 2x2 with a 3x3 kernel pads 1/1, so every window covers all four pixels:
    // channel 0 -> 1 + 2 + 3 + 4 = 10 everywhere; channel 1 -> 2 * x.
    assert_eq!(
        out.data(),
        &[10.0, 20.0, 10.0, 40.0, 10.0, 60.0, 10.0, 80.0]
    );
}

#[test]
fn depthwise_with_multiplier_and_grouped_conv() {
    // Multiplier 2, TF layout [1, 1, C=2, 2]: output channel c * 2 + j takes w[c][j].
    let mut g = G::new();
    let x = g.input(&[1, 1, 1, 2]);
    let w = g.konst("w", t(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]));
    let y = g.node("y", Op::Conv2d(conv(&w, 1, Pads::default(), 2)), &[x]);
    let out = g.run(y, t(&[1, 1, 1, 2], &[1.0, 10.0]));
    assert_eq!(out.data(), &[1.0, 2.0, 30.0, 40.0]);

    // Two groups, 4 inputs -> 2 outputs, weight [1, 1, 2, 2] indexed [ci_in_group][co]:
    // out0 = x0 * 1 + x1 * 100 = 201; out1 = x2 * 10 + x3 * 1000 = 4030.
    let mut g = G::new();
    let x = g.input(&[1, 1, 1, 4]);
    let w = g.konst("w", t(&[1, 1, 2, 2], &[1.0, 10.0, 100.0, 1000.0]));
    let y = g.node("y", Op::Conv2d(conv(&w, 1, Pads::default(), 2)), &[x]);
    let out = g.run(y, t(&[1, 1, 1, 4], &[1.0, 2.0, 3.0, 4.0]));
    assert_eq!(out.data(), &[201.0, 4030.0]);
}

#[test]
fn batch_norm_inference_formula() {
    // Channel 0: gamma 2, beta 0.5, mean 1, var 4: 2 * (3 - 1) / 2 + 0.5 = 2.5.
    // Channel 1: gamma 1, beta -1, mean 0, var 0.25: 1 * 2 / 0.5 - 1 = 3.
    // With epsilon 1e-5: 4 / sqrt(4.00001) + 0.5 = 2.4999975; 2 / sqrt(0.25001) - 1 = 2.99992.
    for (eps, expect) in [(0.0f32, [2.5f32, 3.0]), (1e-5, [2.4999975, 2.99992])] {
        let mut g = G::new();
        let x = g.input(&[1, 1, 1, 2]);
        let op = Op::BatchNorm(BatchNorm {
            gamma: g.konst("gamma", t(&[2], &[2.0, 1.0])),
            beta: g.konst("beta", t(&[2], &[0.5, -1.0])),
            mean: g.konst("mean", t(&[2], &[1.0, 0.0])),
            variance: g.konst("var", t(&[2], &[4.0, 0.25])),
            epsilon: eps,
        });
        let y = g.node("y", op, &[x]);
        let out = g.run(y, t(&[1, 1, 1, 2], &[3.0, 2.0]));
        for (o, e) in out.data().iter().zip(expect) {
            assert!(
                (o - e).abs() < 2e-6,
                "eps {eps}: {:?} vs {expect:?}",
                out.data()
            );
        }
    }
}

#[test]
fn relu6_clamps_both_sides_and_keeps_nan() {
    let mut g = G::new();
    let x = g.input(&[1, 6]);
    let y = g.node("y", Op::Relu6, &[x]);
    let out = g.run(y, t(&[1, 6], &[-1.0, 0.0, 3.0, 6.0, 7.5, f32::NAN]));
    assert_eq!(&out.data()[..5], &[0.0, 0.0, 3.0, 6.0, 6.0]);
    assert!(out.data()[5].is_nan(), "relu6(NaN) must stay NaN");
}

#[test]
fn global_avg_pool_over_a_non_square_map() {
    // 2 x 3 map, 2 channels: channel 0 = 1..6 (mean 3.5), channel 1 = 10..60 (mean 35).
    let mut g = G::new();
    let x = g.input(&[1, 2, 3, 2]);
    let y = g.node("y", Op::GlobalAvgPool, &[x]);
    let data: Vec<f32> = (1..=6).flat_map(|i| [i as f32, 10.0 * i as f32]).collect();
    let out = g.run(y, t(&[1, 2, 3, 2], &data));
    assert_eq!(out.dims(), &[1, 1, 1, 2]);
    assert_eq!(out.data(), &[3.5, 35.0]);
}

#[test]
fn softmax_of_large_logits_does_not_overflow() {
    let mut g = G::new();
    let x = g.input(&[2, 3]);
    let y = g.node("y", Op::Softmax, &[x]);
    let out = g.run(y, t(&[2, 3], &[100.0, 101.0, 102.0, 1e4, 1e4, -1e4]));
    // [e^-2, e^-1, 1] / (1 + e^-1 + e^-2) = [0.0900306, 0.2447285, 0.6652410].
    let expect = [0.090_030_6, 0.244_728_5, 0.665_241, 0.5, 0.5, 0.0];
    for (o, e) in out.data().iter().zip(expect) {
        assert!((o - e).abs() < 1e-6, "{:?}", out.data());
    }
}

#[test]
fn flatten_and_add() {
    let mut g = G::new();
    let x = g.input(&[1, 1, 1, 3]);
    let f = g.node("f", Op::Flatten, &[x]);
    let y = g.node("y", Op::Add, &[f, f]);
    let out = g.run(y, t(&[1, 1, 1, 3], &[1.0, -2.0, 0.5]));
    assert_eq!(
        (out.dims(), out.data()),
        (&[1, 3][..], &[2.0, -4.0, 1.0][..])
    );
}

/// `y = relu6?(conv + bias + residual)`: the clamp comes last, after both additions.
#[test]
fn fused_conv_epilogue_order_is_bias_then_residual_then_clamp() {
    let cases = [
        // (x, bias, residual, epilogue, expected)
        (5.0, 3.0, -4.0, Epilogue::AddRelu6, 4.0), // clamp first would give 6 - 4 = 2
        (2.0, -5.0, 4.0, Epilogue::AddRelu6, 1.0), // clamp first would give 0 + 4 = 4
        (5.0, 2.0, 1.0, Epilogue::AddRelu6, 6.0),
        (-3.0, 1.0, -1.0, Epilogue::AddRelu6, 0.0),
        (5.0, 3.0, 4.0, Epilogue::Add, 12.0),
        (-2.0, 1.0, 0.0, Epilogue::Relu6, 0.0),
        (4.0, 3.0, 0.0, Epilogue::Relu6, 6.0),
        (4.0, 3.0, 0.0, Epilogue::None, 7.0),
    ];
    for (xv, b, r, epilogue, expect) in cases {
        let mut g = G::new();
        let x = g.input(&[1, 1, 1, 1]);
        // The residual is computed in the graph (x * 0 + r via a second 1x1 conv with bias).
        let zero = g.konst("zero", t(&[1, 1, 1, 1], &[0.0]));
        let rb = g.konst("rb", t(&[1], &[r]));
        let res = g.node(
            "res",
            Op::Conv2d(Conv2d {
                bias: Some(rb),
                ..conv(&zero, 1, Pads::default(), 1)
            }),
            &[x],
        );
        let one = g.konst("one", t(&[1, 1, 1, 1], &[1.0]));
        let bias = g.konst("bias", t(&[1], &[b]));
        let op = Op::Conv2d(Conv2d {
            bias: Some(bias),
            epilogue,
            ..conv(&one, 1, Pads::default(), 1)
        });
        let operands: Vec<_> = if epilogue.has_residual() {
            vec![x, res]
        } else {
            vec![x]
        };
        let y = g.node("y", op, &operands);
        let out = g.run(y, t(&[1, 1, 1, 1], &[xv]));
        assert_eq!(
            out.data(),
            &[expect],
            "x {xv}, bias {b}, residual {r}, {epilogue:?}"
        );
    }
}

#[test]
fn wrong_input_shape_names_expected_and_found() {
    let mut g = G::new();
    let x = g.input(&[1, 2, 2, 3]);
    let y = g.node("y", Op::Relu6, &[x]);
    g.g.set_outputs(vec![y]);
    let err = interp::run(&g.g, &g.consts, &[t(&[1, 2, 3, 3], &[0.0; 18])]).unwrap_err();
    match &err {
        Error::Input(m) => assert!(
            m.contains("f32[1,2,2,3]") && m.contains("f32[1,2,3,3]"),
            "{m}"
        ),
        other => panic!("expected an input error, got {other:?}"),
    }
    let err = interp::run(&g.g, &g.consts, &[]).unwrap_err();
    assert!(matches!(err, Error::Input(_)), "{err}");
}

#[test]
fn unbound_or_misshaped_constants_are_weights_errors() {
    let mut g = G::new();
    let x = g.input(&[1, 1, 1, 2]);
    let w = g.konst("w", t(&[1, 1, 2, 1], &[1.0, 1.0]));
    let y = g.node("y", Op::Conv2d(conv(&w, 1, Pads::default(), 1)), &[x]);
    g.g.set_outputs(vec![y]);
    let input = t(&[1, 1, 1, 2], &[1.0, 2.0]);
    let mut consts = g.consts.clone();
    consts.insert("w".into(), t(&[1, 1, 1, 2], &[1.0, 1.0]));
    match interp::run(&g.g, &consts, std::slice::from_ref(&input)).unwrap_err() {
        Error::Weights { tensor, message } => {
            assert_eq!(tensor, "w");
            assert!(
                message.contains("[1,1,1,2]") && message.contains("[1,1,2,1]"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    consts.clear();
    let err = interp::run(&g.g, &consts, &[input]).unwrap_err();
    assert!(
        matches!(&err, Error::Weights { tensor, .. } if tensor == "w"),
        "{err}"
    );
}

mod conv_property {
    //! The interpreter's convolution against a second, differently written one: pad the input
    //! explicitly, then a VALID convolution indexed output channel first. Covers odd sizes,
    //! asymmetric pads, strides, groups, TF depthwise layout, bias and every epilogue.
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    struct Problem {
        dims: [usize; 4],
        kernel: [usize; 2],
        stride: [usize; 2],
        pads: Pads,
        groups: usize,
        cout_g: usize,
        bias: bool,
        epilogue: Epilogue,
        seed: u64,
    }

    fn problem() -> impl Strategy<Value = Problem> {
        (
            (1usize..3, 1usize..8, 1usize..8, 1usize..4, 1usize..4),
            (1usize..4, 1usize..4, 1usize..4, 1usize..4),
            (0usize..3, 0usize..3, 0usize..3, 0usize..3),
            (
                1usize..4,
                any::<bool>(),
                0..Epilogue::ALL.len(),
                any::<u64>(),
            ),
        )
            .prop_filter_map(
                "pads smaller than the kernel, kernel fits",
                |(
                    (n, h, w, groups, cin_g),
                    (kh, kw, sh, sw),
                    (t, b, l, r),
                    (cout_g, bias, e, seed),
                )| {
                    let pads = Pads {
                        top: t,
                        bottom: b,
                        left: l,
                        right: r,
                    };
                    let ok = t.max(b) < kh && l.max(r) < kw && h + t + b >= kh && w + l + r >= kw;
                    ok.then_some(Problem {
                        dims: [n, h, w, groups * cin_g],
                        kernel: [kh, kw],
                        stride: [sh, sw],
                        pads,
                        groups,
                        cout_g,
                        bias,
                        epilogue: Epilogue::ALL[e],
                        seed,
                    })
                },
            )
    }

    /// Deterministic values in [-4, 4] (wide enough that relu6 clamps on both sides).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0
            })
            .collect()
    }

    fn relu6_ref(v: f32) -> f32 {
        v.clamp(0.0, 6.0)
    }

    fn reference(
        p: &Problem,
        x: &Tensor,
        w: &[f32],
        bias: Option<&[f32]>,
        res: Option<&Tensor>,
    ) -> Vec<f32> {
        let [n, h, wd, cin] = p.dims;
        let [kh, kw] = p.kernel;
        let [sh, sw] = p.stride;
        let (ph, pw) = (
            h + p.pads.top + p.pads.bottom,
            wd + p.pads.left + p.pads.right,
        );
        let mut xp = vec![0f64; n * ph * pw * cin];
        for b in 0..n {
            for y in 0..h {
                for xx in 0..wd {
                    for c in 0..cin {
                        xp[((b * ph + y + p.pads.top) * pw + xx + p.pads.left) * cin + c] =
                            f64::from(x.data()[((b * h + y) * wd + xx) * cin + c]);
                    }
                }
            }
        }
        let cin_g = cin / p.groups;
        let cout = p.groups * p.cout_g;
        let (oh, ow) = ((ph - kh) / sh + 1, (pw - kw) / sw + 1);
        let mut out = Vec::new();
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for co in 0..cout {
                        let g = co / p.cout_g;
                        let mut s = 0f64;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                for ci in 0..cin_g {
                                    let xv = xp[((b * ph + oy * sh + ky) * pw + ox * sw + kx)
                                        * cin
                                        + g * cin_g
                                        + ci];
                                    s += xv
                                        * f64::from(w[((ky * kw + kx) * cin_g + ci) * cout + co]);
                                }
                            }
                        }
                        let i = out.len();
                        let mut v = s + bias.map_or(0.0, |bb| f64::from(bb[co]));
                        if let Some(r) = res {
                            v += f64::from(r.data()[i]);
                        }
                        let v = v as f32;
                        out.push(match p.epilogue {
                            Epilogue::Relu6 | Epilogue::AddRelu6 => relu6_ref(v),
                            Epilogue::Relu | Epilogue::AddRelu if v < 0.0 => 0.0,
                            _ => v,
                        });
                    }
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn conv_matches_padded_valid_reference(p in problem()) {
            let [n, h, wd, cin] = p.dims;
            let [kh, kw] = p.kernel;
            let cin_g = cin / p.groups;
            let cout = p.groups * p.cout_g;
            let x = t(&p.dims, &values(n * h * wd * cin, p.seed));
            let wv = values(kh * kw * cin_g * cout, p.seed ^ 0x55);
            let bv = values(cout, p.seed ^ 0xaa);
            let attrs = Conv2d {
                weight: "w".into(),
                bias: p.bias.then(|| "b".into()),
                stride: p.stride,
                pads: p.pads,
                groups: p.groups,
                epilogue: p.epilogue,
            };
            let oh = (h + p.pads.top + p.pads.bottom - kh) / p.stride[0] + 1;
            let ow = (wd + p.pads.left + p.pads.right - kw) / p.stride[1] + 1;
            let res = p.epilogue.has_residual().then(|| {
                t(&[n, oh, ow, cout], &values(n * oh * ow * cout, p.seed ^ 0xf0))
            });
            let bias = p.bias.then(|| t(&[cout], &bv));
            let expect = reference(&p, &x, &wv, p.bias.then_some(&bv[..]), res.as_ref());
            // HWIO-with-groups layout, and (depthwise) TF's [kh, kw, C, multiplier]: same data.
            let mut layouts = vec![vec![kh, kw, cin_g, cout]];
            if p.groups == cin && cin > 1 {
                layouts.push(vec![kh, kw, cin, p.cout_g]);
            }
            for dims in layouts {
                let w = t(&dims, &wv);
                let got = interp::conv2d(&x, &w, bias.as_ref(), res.as_ref(), &attrs).unwrap();
                prop_assert_eq!(got.dims(), &[n, oh, ow, cout][..]);
                for (i, (a, e)) in got.data().iter().zip(&expect).enumerate() {
                    prop_assert!((a - e).abs() <= 1e-5 * e.abs().max(1.0), "element {}: {} vs {} ({:?})", i, a, e, dims);
                }
            }
        }
    }
}
