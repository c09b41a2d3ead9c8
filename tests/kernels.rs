//! Kernel tests: for each kernel family, on proptest-generated problems, the JIT must equal the
//! loop-IR interpreter exactly (both execute the same f32 operations in the same order, fma
//! fused in both), and both must match a naive direct reference computed here in f64 within
//! [`REF_TOL`]. Also: the whole unoptimised MobileNetV2 at a small size, JIT == interpreter.

use std::collections::BTreeMap;

use mnv2c::codegen::{Arg, Isa, JitOptions, JitProgram};
use mnv2c::graph::{Const, ConstDef, Conv2d, Epilogue, Graph, Op, Pads, TensorType};
use mnv2c::loops::{self, Program};
use mnv2c::{Tensor, TensorMap};
use proptest::prelude::*;

/// Tolerance against the naive f64 reference: `|a - b| <= REF_TOL * max(1, |ref|)`.
const REF_TOL: f32 = 1e-4;

/// Deterministic pseudo-random values in `[-1, 1)` (a 64-bit LCG).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn param(g: &mut Graph, consts: &mut TensorMap, name: &str, dims: Vec<usize>, data: Vec<f32>) {
    g.add_const(
        name,
        Const {
            ty: TensorType::new(dims.clone()),
            def: ConstDef::Param,
        },
    )
    .expect("fresh constant");
    consts.insert(
        name.into(),
        Tensor::new(dims, data).expect("shape fits data"),
    );
}

/// Lowers, runs in the interpreter and the JIT, asserts they agree exactly; returns the outputs.
fn run_both(
    g: &Graph,
    consts: &TensorMap,
    inputs: &BTreeMap<String, Vec<f32>>,
) -> BTreeMap<String, Vec<f32>> {
    let p: Program = mnv2c::lower::lower(g, consts).expect("lowering succeeds");
    let interp = loops::run_program(&p, inputs).expect("interpreter runs");
    for isa in tiers() {
        let opts = JitOptions {
            isa,
            ..JitOptions::default()
        };
        let jit = JitProgram::compile_kernels(&p.kernels, &opts).expect("JIT compiles");
        check_tier(g, consts, inputs, &p, &interp, &jit);
    }
    interp
}

/// Every concrete tier this CPU runs; the others are reported as skipped, by name.
fn tiers() -> Vec<Isa> {
    for isa in [Isa::Avx512, Isa::Avx2] {
        if let Some(f) = isa.missing() {
            eprintln!("skipped: {} (CPU lacks {f})", isa.name());
        }
    }
    Isa::available()
}

/// One tier against the interpreter (bit for bit), split over threads, fenced by canaries, and
/// the graph interpreter within tolerance.
fn check_tier(
    g: &Graph,
    consts: &TensorMap,
    inputs: &BTreeMap<String, Vec<f32>>,
    p: &Program,
    interp: &BTreeMap<String, Vec<f32>>,
    jit: &JitProgram,
) {
    let native = jit.run_program(p, inputs).expect("JIT runs");
    let tier = jit.isa().name();
    let bits = |m: &BTreeMap<String, Vec<f32>>| -> Vec<(String, Vec<u32>)> {
        m.iter()
            .map(|(k, v)| (k.clone(), v.iter().map(|x| x.to_bits()).collect()))
            .collect()
    };
    // The same, each kernel split over 2, 3 and 4 threads where proven safe: bit-identical.
    for threads in [2, 3, 4] {
        let split = loops::interp::execute(p, inputs, |i, _, bufs| {
            let mut args: Vec<Arg<'_>> = bufs.iter_mut().map(|b| Arg::Write(b)).collect();
            jit.run_kernel_threads(i, &mut args, threads)
        })
        .expect("split JIT runs");
        assert_eq!(
            bits(&split),
            bits(&native),
            "{tier}: split over {threads} threads differs"
        );
    }
    // And once more with every buffer inside a larger allocation fenced by canaries: the
    // generated code must never write outside the buffers it was given.
    let fenced = loops::interp::execute(p, inputs, |i, _, bufs| run_fenced(jit, i, bufs))
        .expect("fenced JIT runs");
    assert_eq!(bits(&fenced), bits(&native), "{tier}: fenced run differs");
    for (name, a) in interp {
        let b = &native[name];
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
                "{tier}: {name}[{i}]: interpreter {x} != JIT {y}\n{p}"
            );
        }
    }
    // And against the graph IR's reference interpreter (f64 reductions), within REF_TOL.
    let graph_out = mnv2c::graph::interp::run(g, consts, &inputs_tensors(g, inputs))
        .expect("graph interpreter runs");
    for (&o, want) in g.outputs().iter().zip(&graph_out) {
        let name = &g.node(o).name;
        let want: Vec<f64> = want.data().iter().map(|&v| f64::from(v)).collect();
        if want.iter().all(|v| v.is_finite()) {
            assert_close(&format!("{name} (vs graph::interp)"), &native[name], &want);
        }
    }
}

/// Canary elements on each side of a fenced buffer, and their bit pattern (a NaN no kernel
/// computes).
const FENCE: usize = 64;
const CANARY: u32 = 0x7fc0_dead;

/// Runs kernel `i` on copies of `bufs` that sit between canary regions, checks every canary
/// after the call, and copies the results back.
fn run_fenced(jit: &JitProgram, i: usize, bufs: &mut [&mut [f32]]) -> mnv2c::Result<()> {
    let canary = f32::from_bits(CANARY);
    let mut fenced: Vec<Vec<f32>> = bufs
        .iter()
        .map(|b| {
            let mut v = vec![canary; FENCE];
            v.extend_from_slice(b);
            v.extend(std::iter::repeat_n(canary, FENCE));
            v
        })
        .collect();
    {
        let mut args: Vec<Arg<'_>> = fenced
            .iter_mut()
            .map(|v| {
                let len = v.len() - 2 * FENCE;
                Arg::Write(&mut v[FENCE..FENCE + len])
            })
            .collect();
        jit.run_kernel(i, &mut args)?;
    }
    for (b, (v, out)) in fenced.iter().zip(bufs.iter_mut()).enumerate() {
        let len = v.len() - 2 * FENCE;
        let (head, rest) = v.split_at(FENCE);
        let (body, tail) = rest.split_at(len);
        for (side, fence) in [("before", head), ("after", tail)] {
            if let Some(j) = fence.iter().position(|x| x.to_bits() != CANARY) {
                panic!("kernel #{i} wrote {side} buffer #{b} (canary {j} of {FENCE})");
            }
        }
        out.copy_from_slice(body);
    }
    Ok(())
}

/// The graph's inputs as tensors, in graph order.
fn inputs_tensors(g: &Graph, inputs: &BTreeMap<String, Vec<f32>>) -> Vec<Tensor> {
    g.inputs()
        .into_iter()
        .map(|i| {
            let n = g.node(i);
            Tensor::new(n.ty.dims.clone(), inputs[&n.name].clone()).expect("input fits its type")
        })
        .collect()
}

fn assert_close(name: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (&a, &r)) in got.iter().zip(want).enumerate() {
        let r32 = r as f32;
        assert!(
            (a - r32).abs() <= REF_TOL * r32.abs().max(1.0),
            "{name}[{i}]: got {a}, reference {r}"
        );
    }
}

#[derive(Clone, Debug)]
struct ConvProblem {
    n: usize,
    h: usize,
    w: usize,
    cin: usize,
    cout: usize,
    k: usize,
    stride: [usize; 2],
    pads: Pads,
    groups: usize,
    bias: bool,
    epilogue: Epilogue,
    seed: u64,
}

impl ConvProblem {
    fn out_hw(&self) -> (usize, usize) {
        let oh = (self.h + self.pads.top + self.pads.bottom - self.k) / self.stride[0] + 1;
        let ow = (self.w + self.pads.left + self.pads.right - self.k) / self.stride[1] + 1;
        (oh, ow)
    }

    fn wlen(&self) -> usize {
        self.k * self.k * (self.cin / self.groups) * self.cout
    }

    /// The naive direct convolution, in f64.
    fn reference(&self, x: &[f32], w: &[f32], b: Option<&[f32]>, r: Option<&[f32]>) -> Vec<f64> {
        let (oh, ow) = self.out_hw();
        let (cin_g, cout_g) = (self.cin / self.groups, self.cout / self.groups);
        let mut out = Vec::with_capacity(self.n * oh * ow * self.cout);
        for n in 0..self.n {
            for y in 0..oh {
                for xo in 0..ow {
                    for co in 0..self.cout {
                        let g = co / cout_g;
                        let mut acc = b.map_or(0.0, |b| f64::from(b[co]));
                        for ky in 0..self.k {
                            for kx in 0..self.k {
                                let iy =
                                    (y * self.stride[0] + ky) as isize - self.pads.top as isize;
                                let ix =
                                    (xo * self.stride[1] + kx) as isize - self.pads.left as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy >= self.h as isize
                                    || ix >= self.w as isize
                                {
                                    continue;
                                }
                                for ci in 0..cin_g {
                                    let xi = ((n * self.h + iy as usize) * self.w + ix as usize)
                                        * self.cin
                                        + g * cin_g
                                        + ci;
                                    let wi = ((ky * self.k + kx) * cin_g + ci) * self.cout + co;
                                    acc += f64::from(x[xi]) * f64::from(w[wi]);
                                }
                            }
                        }
                        let oi = ((n * oh + y) * ow + xo) * self.cout + co;
                        if let Some(r) = r {
                            acc += f64::from(r[oi]);
                        }
                        if let Some((lo, hi)) = self.epilogue.clamp() {
                            acc = acc.clamp(f64::from(lo), f64::from(hi));
                        }
                        out.push(acc);
                    }
                }
            }
        }
        out
    }

    fn check(&self) {
        let mut g = Graph::new("conv_test");
        let mut consts = TensorMap::new();
        let xd = vec![self.n, self.h, self.w, self.cin];
        let xlen: usize = xd.iter().product();
        let x = g.add_node("x", Op::Input, TensorType::new(xd), &[]);
        let wd = vec![self.k, self.k, self.cin / self.groups, self.cout];
        let wv = values(self.seed ^ 1, self.wlen());
        param(&mut g, &mut consts, "w", wd, wv.clone());
        let bv = values(self.seed ^ 2, self.cout);
        if self.bias {
            param(&mut g, &mut consts, "b", vec![self.cout], bv.clone());
        }
        let (oh, ow) = self.out_hw();
        let od = vec![self.n, oh, ow, self.cout];
        let olen: usize = od.iter().product();
        let mut operands = vec![x];
        let mut inputs = BTreeMap::new();
        let xv: Vec<f32> = values(self.seed ^ 3, xlen)
            .iter()
            .map(|v| v * 3.0)
            .collect();
        inputs.insert("x".to_string(), xv.clone());
        let rv: Vec<f32> = values(self.seed ^ 4, olen)
            .iter()
            .map(|v| v * 4.0)
            .collect();
        if self.epilogue.has_residual() {
            operands.push(g.add_node("r", Op::Input, TensorType::new(od), &[]));
            inputs.insert("r".to_string(), rv.clone());
        }
        let conv = Conv2d {
            weight: "w".into(),
            bias: self.bias.then(|| "b".to_string()),
            stride: self.stride,
            pads: self.pads,
            groups: self.groups,
            epilogue: self.epilogue,
        };
        let y = g
            .add_typed("y", Op::Conv2d(conv), &operands)
            .expect("conv types");
        g.set_outputs(vec![y]);
        let out = run_both(&g, &consts, &inputs);
        let want = self.reference(
            &xv,
            &wv,
            self.bias.then_some(&bv[..]),
            self.epilogue.has_residual().then_some(&rv[..]),
        );
        assert_close("y", &out["y"], &want);
    }
}

fn epilogue() -> impl Strategy<Value = Epilogue> {
    prop::sample::select(Epilogue::ALL.to_vec())
}

/// Full and grouped convolutions, kernel 1 and 3, stride 1 and 2, asymmetric pads.
fn conv_problem() -> impl Strategy<Value = ConvProblem> {
    (
        (1usize..=2, 1usize..=9, 1usize..=9),
        (
            prop::sample::select(vec![1usize, 3]),
            1usize..=2,
            1usize..=2,
        ),
        (0usize..3, 0usize..3, 0usize..3, 0usize..3),
        (1usize..=3, 1usize..=12, 1usize..=13),
        (any::<bool>(), epilogue(), any::<u64>()),
    )
        .prop_filter_map(
            "pads smaller than the kernel, output non-empty",
            |(
                (n, h, w),
                (k, sh, sw),
                (pt, pb, pl, pr),
                (groups, cin_g, cout_g),
                (bias, epilogue, seed),
            )| {
                let p = ConvProblem {
                    n,
                    h,
                    w,
                    cin: groups * cin_g,
                    cout: groups * cout_g,
                    k,
                    stride: [sh, sw],
                    pads: Pads {
                        top: pt.min(k - 1),
                        bottom: pb.min(k - 1),
                        left: pl.min(k - 1),
                        right: pr.min(k - 1),
                    },
                    groups,
                    bias,
                    epilogue,
                    seed,
                };
                (h + p.pads.top + p.pads.bottom >= k && w + p.pads.left + p.pads.right >= k)
                    .then_some(p)
            },
        )
}

/// Depthwise convolutions (groups = channels, multiplier 1), the model's 3x3 stride 1 and 2.
fn depthwise_problem() -> impl Strategy<Value = ConvProblem> {
    (
        // Up to 21 channels (tails), or 30-70 (the avx512 row's blocks of 2 and 4 vectors,
        // the latter from 16 columns on).
        (
            1usize..=2,
            1usize..=10,
            1usize..=20,
            prop_oneof![2usize..=21, 30usize..=70],
        ),
        // Windows of 1 (narrower than stride 2: input columns no output reads), 3 and 5; 13
        // in `depthwise_windows_wider_than_the_register_taps`.
        (prop::sample::select(vec![1usize, 3, 3, 5]), 1usize..=2),
        (0usize..3, 0usize..3, 0usize..3, 0usize..3),
        (any::<bool>(), epilogue(), any::<u64>()),
    )
        .prop_filter_map(
            "output non-empty",
            |((n, h, w, c), (k, s), (pt, pb, pl, pr), (bias, epilogue, seed))| {
                let p = ConvProblem {
                    n,
                    h,
                    w,
                    cin: c,
                    cout: c,
                    k,
                    stride: [s, s],
                    pads: Pads {
                        top: pt.min(k - 1),
                        bottom: pb.min(k - 1),
                        left: pl.min(k - 1),
                        right: pr.min(k - 1),
                    },
                    groups: c,
                    bias,
                    epilogue,
                    seed,
                };
                (h + p.pads.top + p.pads.bottom >= k && w + p.pads.left + p.pads.right >= k)
                    .then_some(p)
            },
        )
}

/// A 13x13 depthwise window has more columns than the avx512 row keeps weight vectors in
/// registers (12), so its rows take the per-tap loop; checked at strides 1 and 2, with padding,
/// channel tails and 2- and 4-vector blocks.
#[test]
fn depthwise_windows_wider_than_the_register_taps() {
    for (c, stride, epilogue) in [
        (37, 1, Epilogue::Relu6),
        (70, 2, Epilogue::AddRelu6),
        (64, 1, Epilogue::None),
    ] {
        let p = ConvProblem {
            n: 1,
            h: 15,
            w: 19,
            cin: c,
            cout: c,
            k: 13,
            stride: [stride, stride],
            pads: Pads {
                top: 6,
                bottom: 6,
                left: 6,
                right: 5,
            },
            groups: c,
            bias: true,
            epilogue,
            seed: c as u64,
        };
        p.check();
    }
}

/// 1x1 stride-1 unpadded convolutions: the pointwise GEMM family with 4x8 register tiles and its
/// pixel and channel remainders.
fn pointwise_problem() -> impl Strategy<Value = ConvProblem> {
    (
        (1usize..=2, 1usize..=9, 1usize..=9),
        // Up to 100 output channels: full 48- and 16-channel blocks and every tail width.
        // Reductions short, or around the wide tiers' unrolling threshold (64 steps, unrolled
        // x4) with every remainder.
        (prop_oneof![1usize..=20, 60usize..=70], 1usize..=100),
        (any::<bool>(), epilogue(), any::<u64>()),
    )
        .prop_map(
            |((n, h, w), (cin, cout), (bias, epilogue, seed))| ConvProblem {
                n,
                h,
                w,
                cin,
                cout,
                k: 1,
                stride: [1, 1],
                pads: Pads::default(),
                groups: 1,
                bias,
                epilogue,
                seed,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn conv_direct_and_grouped(p in conv_problem()) {
        p.check();
    }

    #[test]
    fn conv_depthwise(p in depthwise_problem()) {
        p.check();
    }

    #[test]
    fn conv_pointwise(p in pointwise_problem()) {
        p.check();
    }

    #[test]
    fn elementwise_pool_softmax(
        (n, h, w, c) in (1usize..=2, 1usize..=5, 1usize..=5, 1usize..=19),
        seed in any::<u64>(),
    ) {
        check_unfused_ops(n, h, w, c, seed);
    }
}

/// Batch norm -> relu6 -> add (with the input) -> global average pool -> flatten -> softmax.
fn check_unfused_ops(n: usize, h: usize, w: usize, c: usize, seed: u64) {
    let mut g = Graph::new("ops_test");
    let mut consts = TensorMap::new();
    let xd = vec![n, h, w, c];
    let xlen: usize = xd.iter().product();
    let x = g.add_node("x", Op::Input, TensorType::new(xd), &[]);
    let gamma = values(seed ^ 5, c);
    let beta = values(seed ^ 6, c);
    let mean = values(seed ^ 7, c);
    let var: Vec<f32> = values(seed ^ 8, c).iter().map(|v| v.abs() + 0.1).collect();
    for (name, v) in [
        ("gamma", &gamma),
        ("beta", &beta),
        ("mean", &mean),
        ("var", &var),
    ] {
        param(&mut g, &mut consts, name, vec![c], v.clone());
    }
    let eps = 1e-5f32;
    let bn = g
        .add_typed(
            "bn",
            Op::BatchNorm(mnv2c::graph::BatchNorm {
                gamma: "gamma".into(),
                beta: "beta".into(),
                mean: "mean".into(),
                variance: "var".into(),
                epsilon: eps,
            }),
            &[x],
        )
        .expect("bn types");
    let r6 = g.add_typed("r6", Op::Relu6, &[bn]).expect("relu6 types");
    let sum = g.add_typed("sum", Op::Add, &[r6, x]).expect("add types");
    let pool = g
        .add_typed("pool", Op::GlobalAvgPool, &[sum])
        .expect("pool types");
    let flat = g
        .add_typed("flat", Op::Flatten, &[pool])
        .expect("flatten types");
    let prob = g
        .add_typed("prob", Op::Softmax, &[flat])
        .expect("softmax types");
    g.set_outputs(vec![sum, flat, prob]);
    let xv: Vec<f32> = values(seed ^ 9, xlen).iter().map(|v| v * 8.0).collect();
    let inputs = BTreeMap::from([("x".to_string(), xv.clone())]);
    let out = run_both(&g, &consts, &inputs);

    // The naive reference, in f64.
    let sum_ref: Vec<f64> = xv
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = i % c;
            let v = f64::from(v);
            let y = f64::from(gamma[ch]) * (v - f64::from(mean[ch]))
                / (f64::from(var[ch]) + f64::from(eps)).sqrt()
                + f64::from(beta[ch]);
            y.clamp(0.0, 6.0) + v
        })
        .collect();
    let mut pool_ref = vec![0.0f64; n * c];
    for (i, v) in sum_ref.iter().enumerate() {
        pool_ref[(i / (h * w * c)) * c + i % c] += v / (h * w) as f64;
    }
    let mut prob_ref = Vec::new();
    for row in pool_ref.chunks(c) {
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        prob_ref.extend(e.iter().map(|v| v / s));
    }
    assert_close("sum", &out["sum"], &sum_ref);
    assert_close("flat", &out["flat"], &pool_ref);
    assert_close("prob", &out["prob"], &prob_ref);
}

/// Named cases the model needs (regression anchors beside the random ones).
#[test]
fn model_shapes() {
    let base = ConvProblem {
        n: 1,
        h: 9,
        w: 9,
        cin: 3,
        cout: 32,
        k: 3,
        stride: [2, 2],
        // TensorFlow SAME for odd input, stride 2: 1 before, 1 after.
        pads: Pads {
            top: 1,
            bottom: 1,
            left: 1,
            right: 1,
        },
        groups: 1,
        bias: true,
        epilogue: Epilogue::Relu6,
        seed: 11,
    };
    base.check();
    // Even input, stride 2: TensorFlow pads 0 before, 1 after.
    ConvProblem {
        h: 8,
        w: 8,
        pads: Pads {
            top: 0,
            bottom: 1,
            left: 0,
            right: 1,
        },
        ..base.clone()
    }
    .check();
    // Depthwise 3x3 stride 1 with 144 channels, residual + relu6.
    ConvProblem {
        cin: 144,
        cout: 144,
        groups: 144,
        stride: [1, 1],
        epilogue: Epilogue::AddRelu6,
        ..base.clone()
    }
    .check();
    // Depthwise rows in the avx512 tier's blocks of 4 and 2 channel vectors (then single
    // vectors and a masked tail), at stride 1 and 2, from 16 output columns on.
    for (c, w, s, epilogue) in [
        (70, 35, 1, Epilogue::AddRelu6),
        (70, 33, 2, Epilogue::Relu6),
        (96, 20, 1, Epilogue::None),
        (40, 9, 1, Epilogue::AddRelu6),
        (40, 40, 2, Epilogue::None),
    ] {
        ConvProblem {
            h: 5,
            w,
            cin: c,
            cout: c,
            groups: c,
            stride: [s, s],
            epilogue,
            ..base.clone()
        }
        .check();
    }
    // A 1x1 conv with a long reduction (the avx512 strip's 2-vector blocks: 200 rows of 48
    // channels outgrow L1), every channel tail kind, and a residual.
    ConvProblem {
        h: 3,
        w: 7,
        k: 1,
        cin: 200,
        cout: 100,
        stride: [1, 1],
        pads: Pads::default(),
        epilogue: Epilogue::AddRelu6,
        ..base.clone()
    }
    .check();
    // Reductions the wide tiers unroll x4 (64 steps and more), with 1-3 remaining steps after
    // the loop, a merged 24-channel tail (avx512) and the masked tails of 100 channels.
    for (cin, cout) in [
        (63, 24),
        (64, 24),
        (65, 100),
        (66, 24),
        (67, 100),
        (131, 40),
    ] {
        ConvProblem {
            h: 3,
            w: 5,
            k: 1,
            cin,
            cout,
            stride: [1, 1],
            pads: Pads::default(),
            epilogue: Epilogue::AddRelu6,
            ..base.clone()
        }
        .check();
    }
    // GEMVs (one pixel) in blocks of 4 weight tiles (avx2: 8 vectors as memory operands),
    // with a channel tail, and a 2-pixel one.
    for (n, cout) in [(1, 100), (1, 72), (2, 100)] {
        ConvProblem {
            n,
            h: 1,
            w: 1,
            k: 1,
            cin: 67,
            cout,
            stride: [1, 1],
            pads: Pads::default(),
            epilogue: Epilogue::Relu6,
            ..base.clone()
        }
        .check();
    }
    // The logits conv on a 1x1 image: 1x1 GEMM with only the pixel remainder.
    ConvProblem {
        h: 1,
        w: 1,
        k: 1,
        cin: 40,
        cout: 10,
        stride: [1, 1],
        pads: Pads::default(),
        epilogue: Epilogue::None,
        ..base.clone()
    }
    .check();
}

/// The whole unoptimised MobileNetV2 at 32x32: JIT == interpreter, bit for bit.
#[test]
fn mobilenet_v2_small_jit_matches_interpreter() {
    // 100 classes: the logits GEMV (one pixel) splits into blocks of output channels.
    let cfg = mnv2c::frontend::Config {
        num_classes: 100,
        batch: 1,
        height: 32,
        width: 32,
    };
    let g = mnv2c::frontend::mobilenet_v2(&cfg).expect("model builds");
    let mut consts = TensorMap::new();
    for (i, (name, c)) in g.consts().enumerate() {
        let len = c.ty.num_elements().expect("fits");
        let mut v = values(i as u64, len);
        if name.ends_with("moving_variance") {
            v.iter_mut().for_each(|x| *x = x.abs() + 0.5);
        } else {
            v.iter_mut().for_each(|x| *x *= 0.2);
        }
        consts.insert(
            name.to_string(),
            Tensor::new(c.ty.dims.clone(), v).expect("fits"),
        );
    }
    let input = g.inputs()[0];
    let x = g.node(input);
    let len = x.ty.num_elements().expect("fits");
    let inputs = BTreeMap::from([(x.name.clone(), values(99, len))]);
    let out = run_both(&g, &consts, &inputs);
    for v in out.values() {
        assert!(v.iter().all(|x| x.is_finite()));
    }
    // Lowered for two threads, every kernel's items are proven disjoint, and a kernel with 8
    // or more output pixels splits into several of them, as does the logits GEMV (by channel
    // blocks).
    let p = mnv2c::lower::lower_for_threads(&g, &consts, 2).expect("lowers");
    let jit = JitProgram::compile(&p).expect("compiles");
    for (i, k) in p.kernels.iter().enumerate() {
        let items = jit.work_items(i).expect("kernel exists");
        assert_eq!(jit.parallel_safe(i), Some(true), "{}", k.name);
        let dims = &p.buffers[&mnv2c::loops::value_buffer(&k.name)].0;
        let pixels: usize = dims[..dims.len() - 1].iter().product();
        if pixels >= 8 || k.name.starts_with("logits") {
            assert!(items > 1, "{} has {items} work items", k.name);
        }
    }
}

/// A small pointwise conv graph, for the API tests below.
fn pointwise_graph() -> (Graph, TensorMap) {
    pointwise_graph_sized(3)
}

/// A pointwise conv graph over a `side x side` image, 8 -> 12 channels.
fn pointwise_graph_sized(side: usize) -> (Graph, TensorMap) {
    let mut g = Graph::new("pw");
    let mut consts = TensorMap::new();
    let x = g.add_node("x", Op::Input, TensorType::new(vec![1, side, side, 8]), &[]);
    param(&mut g, &mut consts, "w", vec![1, 1, 8, 12], values(1, 96));
    let conv = Conv2d {
        weight: "w".into(),
        bias: None,
        stride: [1, 1],
        pads: Pads::default(),
        groups: 1,
        epilogue: Epilogue::Relu6,
    };
    let y = g.add_typed("y", Op::Conv2d(conv), &[x]).expect("types");
    g.set_outputs(vec![y]);
    (g, consts)
}

/// A small map's 1x1 conv (7x7: fewer pixels than 8 strips) is one work item when lowered
/// for one thread (its weights read once) and two for more; both give the same bits on every
/// tier, and the interpreter's.
#[test]
fn small_map_items_follow_the_thread_count() {
    let (g, consts) = pointwise_graph_sized(7);
    let x = values(7, 7 * 7 * 8);
    let mut outs = Vec::new();
    for (threads, want_items) in [(1, 1), (2, 2), (3, 2)] {
        let p = mnv2c::lower::lower_for_threads(&g, &consts, threads).expect("lowers");
        let interp = loops::run_program(&p, &BTreeMap::from([("x".to_string(), x.clone())]))
            .expect("interpreter runs");
        let w = p.constants["@y#w_packed"].clone();
        for isa in tiers() {
            let opts = JitOptions {
                isa,
                ..JitOptions::default()
            };
            let jit = JitProgram::compile_kernels(&p.kernels, &opts).expect("JIT compiles");
            assert_eq!(jit.work_items(0), Some(want_items), "{threads} threads");
            let mut y = vec![0.0; 7 * 7 * 12];
            jit.run_kernel(0, &mut [Arg::Read(&x), Arg::Read(&w), Arg::Write(&mut y)])
                .expect("runs");
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&y),
                bits(&interp["y"]),
                "{threads} threads, {}",
                isa.name()
            );
            outs.push(bits(&y));
        }
    }
    assert!(outs.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn jit_checks_buffers_before_calling() {
    let (g, consts) = pointwise_graph();
    let p = mnv2c::lower::lower(&g, &consts).expect("lowers");
    let jit = JitProgram::compile(&p).expect("compiles");
    let k = &p.kernels[0];
    let names: Vec<&str> = k.buffers.iter().map(|b| b.name.as_str()).collect();
    // The 1x1 weights are packed per register tile at lowering.
    assert_eq!(names, ["%x", "@y#w_packed", "%y"]);
    let x = values(2, 72);
    let w = p.constants["@y#w_packed"].clone();
    let mut y = vec![0.0; 108];
    // Too short an output.
    let mut short = vec![0.0; 107];
    let e = jit
        .run_kernel(
            0,
            &mut [Arg::Read(&x), Arg::Read(&w), Arg::Write(&mut short)],
        )
        .expect_err("length mismatch");
    assert!(
        e.to_string().contains("has 107 elements, expected 108"),
        "{e}"
    );
    // The output passed read-only.
    let e = jit
        .run_kernel(0, &mut [Arg::Read(&x), Arg::Read(&w), Arg::Read(&y)])
        .expect_err("read-only output");
    assert!(e.to_string().contains("passed read-only"), "{e}");
    // Missing a buffer; no such kernel.
    let e = jit
        .run_kernel(0, &mut [Arg::Read(&x), Arg::Read(&w)])
        .expect_err("a buffer short");
    assert!(
        e.to_string().contains("kernel 'y' takes 3 buffers, got 2"),
        "{e}"
    );
    let e = jit.run_kernel(1, &mut []).expect_err("no such kernel");
    assert!(e.to_string().contains("no kernel #1"), "{e}");
    // Item ranges outside the kernel's work items are usage errors; nothing is written.
    let items = jit.work_items(0).expect("kernel 0") as i64;
    // A start past the end (written as a struct: the `2..1` literal is a lint error).
    let backwards = std::ops::Range { start: 2, end: 1 };
    for bad in [-1..1, 0..items + 1, backwards] {
        let e = jit
            .run_kernel_items(
                0,
                &mut [Arg::Read(&x), Arg::Read(&w), Arg::Write(&mut y)],
                bad.clone(),
            )
            .expect_err("bad item range");
        assert!(matches!(e, mnv2c::Error::Usage(_)), "{e:?}");
        assert!(
            e.to_string().contains("of kernel 'y', which has 0.."),
            "{e}"
        );
        assert!(y.iter().all(|&v| v == 0.0), "{bad:?} wrote");
        // The interpreter refuses them the same way.
        let (mut xi, mut wi) = (x.clone(), w.clone());
        let e = loops::interp::run_kernel_items(k, &mut [&mut xi, &mut wi, &mut y], bad.clone())
            .expect_err("bad item range in the interpreter");
        assert!(matches!(e, mnv2c::Error::Usage(_)), "{e:?}");
        assert!(y.iter().all(|&v| v == 0.0), "{bad:?} wrote");
    }
    // Consecutive item ranges compute what one call on all items computes.
    let mut whole = vec![0.0; 108];
    jit.run_kernel(
        0,
        &mut [Arg::Read(&x), Arg::Read(&w), Arg::Write(&mut whole)],
    )
    .expect("runs");
    for part in [0..items / 2, items / 2..items] {
        jit.run_kernel_items(
            0,
            &mut [Arg::Read(&x), Arg::Read(&w), Arg::Write(&mut y)],
            part,
        )
        .expect("runs a range");
    }
    assert_eq!(y, whole);
    jit.run_kernel(0, &mut [Arg::Read(&x), Arg::Read(&w), Arg::Write(&mut y)])
        .expect("runs");
    assert!(y.iter().all(|v| (0.0..=6.0).contains(v)) && y.iter().any(|&v| v > 0.0));
}

#[test]
fn jit_runs_from_several_threads() {
    let (g, consts) = pointwise_graph();
    let p = mnv2c::lower::lower(&g, &consts).expect("lowers");
    let jit = JitProgram::compile(&p).expect("compiles");
    let inputs = BTreeMap::from([("x".to_string(), values(3, 72))]);
    let want = loops::run_program(&p, &inputs).expect("interprets");
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    (0..50)
                        .map(|_| jit.run_program(&p, &inputs))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for got in h.join().expect("thread finished") {
                assert_eq!(got.expect("runs"), want);
            }
        }
    });
}

#[test]
fn emits_loops_clif_and_asm() {
    let (g, consts) = pointwise_graph();
    let p = mnv2c::lower::lower(&g, &consts).expect("lowers");
    let loops_text = p.to_string();
    assert!(
        loops_text.contains("schedule: pointwise conv (GEMM): register tile 2 px x 16 ch"),
        "{loops_text}"
    );
    assert!(
        loops_text.contains("(spatial vector4)") && loops_text.contains("(reduce)"),
        "{loops_text}"
    );
    let clif = mnv2c::codegen::emit_clif(&p.kernels, Isa::Portable).expect("clif");
    assert!(
        clif.contains("fma.f32x4") || clif.contains("fma v"),
        "{clif}"
    );
    assert!(clif.contains("f32x4"), "{clif}");
    if Isa::Avx512.missing().is_none() {
        // The wide tier: the raw micro-kernel is listed, with 512-bit FMAs and a tail mask
        // (12 channels), and the kernel calls it.
        let wide = mnv2c::codegen::emit_asm(&p.kernels, Isa::Avx512).expect("asm");
        assert!(
            wide.contains("; micro-kernel avx512_gemm_p9_k8_n12"),
            "{wide}"
        );
        assert!(
            wide.contains("vfmadd231ps zmm") && wide.contains("{k1}"),
            "{wide}"
        );
        assert!(wide.contains("vzeroupper"), "{wide}");
    } else {
        eprintln!("skipped: avx512 listing (CPU lacks avx512f)");
    }
    let asm = mnv2c::codegen::emit_asm(&p.kernels, Isa::Portable).expect("asm");
    assert!(asm.contains("fmadd"), "{asm}");
    // relu6 is one vmaxps and one vminps per vector, not the NaN-fixing fmax/fmin sequences.
    assert!(asm.contains("vmaxps") && asm.contains("vminps"), "{asm}");
    assert!(!asm.contains("vcmpunordps"), "{asm}");
}

#[test]
fn lowering_errors_name_the_culprit() {
    // A missing constant value.
    let (g, _) = pointwise_graph();
    let e = mnv2c::lower::lower(&g, &TensorMap::new()).expect_err("no weights");
    assert_eq!(
        e.to_string(),
        "weights: tensor 'w': no value bound for this constant"
    );
}

/// Regression: lowering named buffers after graph values and constants alike, and packed
/// weights `<node>/w_packed`, so a value and a constant both named `w` were rejected (exit 70),
/// and a user bias named `y/w_packed` silently shared storage with the packed weights of `y`.
/// Buffer names now keep the sigil and lowering's own constants are `@node#what`.
#[test]
fn user_names_never_collide_with_each_other_or_with_lowering_names() {
    let mut g = Graph::new("clash");
    let mut consts = TensorMap::new();
    let x = g.add_node("w", Op::Input, TensorType::new(vec![1, 1, 2, 4]), &[]);
    param(&mut g, &mut consts, "w", vec![1, 1, 4, 4], values(1, 16));
    param(&mut g, &mut consts, "y/w_packed", vec![4], values(2, 4));
    let conv = Conv2d {
        weight: "w".into(),
        bias: Some("y/w_packed".into()),
        stride: [1, 1],
        pads: Pads::default(),
        groups: 1,
        epilogue: Epilogue::None,
    };
    let y = g.add_typed("y", Op::Conv2d(conv), &[x]).expect("types");
    g.set_outputs(vec![y]);
    let p = mnv2c::lower::lower(&g, &consts).expect("lowers");
    let names: Vec<&str> = p.kernels[0]
        .buffers
        .iter()
        .map(|b| b.name.as_str())
        .collect();
    assert_eq!(names, ["%w", "@y#w_packed", "@y/w_packed", "%y"]);
    // run_both compares the JIT and the loop-IR interpreter with the graph interpreter, which
    // knows nothing of buffers: shared storage would show up as a wrong sum.
    let inputs = BTreeMap::from([("w".to_string(), values(3, 8))]);
    run_both(&g, &consts, &inputs);
}

/// The loop IR text of small kernels of each family (what `--emit loops` prints).
#[test]
fn loops_text_snapshot() {
    let mut text = String::new();
    // Pointwise 1x1, 5 pixels x 10 channels: one 4x8 tile, vector and scalar tails.
    let (g, consts) = pointwise_graph();
    text.push_str(
        &mnv2c::lower::lower(&g, &consts)
            .expect("lowers")
            .to_string(),
    );
    // Depthwise 3x3 stride 2 on 4x4x6 with TF SAME pads (0 before, 1 after).
    let p = ConvProblem {
        n: 1,
        h: 4,
        w: 4,
        cin: 6,
        cout: 6,
        k: 3,
        stride: [2, 2],
        pads: Pads {
            top: 0,
            bottom: 1,
            left: 0,
            right: 1,
        },
        groups: 6,
        bias: true,
        epilogue: Epilogue::AddRelu6,
        seed: 0,
    };
    let mut g = Graph::new("dw");
    let mut consts = TensorMap::new();
    let x = g.add_node("x", Op::Input, TensorType::new(vec![1, 4, 4, 6]), &[]);
    let r = g.add_node("r", Op::Input, TensorType::new(vec![1, 2, 2, 6]), &[]);
    param(&mut g, &mut consts, "w", vec![3, 3, 6, 1], values(1, 54));
    param(&mut g, &mut consts, "b", vec![6], values(2, 6));
    let conv = Conv2d {
        weight: "w".into(),
        bias: Some("b".into()),
        stride: p.stride,
        pads: p.pads,
        groups: p.groups,
        epilogue: p.epilogue,
    };
    let y = g.add_typed("y", Op::Conv2d(conv), &[x, r]).expect("types");
    g.set_outputs(vec![y]);
    text.push_str(
        &mnv2c::lower::lower(&g, &consts)
            .expect("lowers")
            .to_string(),
    );
    insta::assert_snapshot!(text);
}

/// relu6 and the fused epilogue propagate NaN (and clamp infinities) like the graph
/// interpreter, in both the loop-IR interpreter and the JIT.
#[test]
fn relu6_propagates_nan_like_the_graph_interpreter() {
    let mut g = Graph::new("nan");
    let x = g.add_node("x", Op::Input, TensorType::new(vec![1, 1, 3, 6]), &[]);
    let y = g.add_typed("y", Op::Relu6, &[x]).expect("types");
    g.set_outputs(vec![y]);
    let xv = vec![
        f32::NAN,
        -1.0,
        7.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        3.0,
        0.5,
        -0.0,
        f32::NAN,
        6.0,
        -f32::NAN,
        2.0,
        1.0,
        f32::NAN,
        9.0,
        -3.0,
        4.0,
        f32::NAN,
    ];
    let inputs = BTreeMap::from([("x".to_string(), xv.clone())]);
    let out = run_both(&g, &TensorMap::new(), &inputs);
    let want = mnv2c::graph::interp::run(&g, &TensorMap::new(), &inputs_tensors(&g, &inputs))
        .expect("graph interpreter runs");
    for (i, (a, b)) in out["y"].iter().zip(want[0].data()).enumerate() {
        assert!(
            a == b || (a.is_nan() && b.is_nan()),
            "y[{i}]: {a} vs graph {b} (x = {})",
            xv[i]
        );
    }
    assert!(out["y"][0].is_nan() && out["y"][3] == 6.0 && out["y"][4] == 0.0);
}

/// A 1x1 conv (pointwise `cin = 1`, or depthwise) with weight 1 and bias -0.0 stores `x` exactly
/// (NaN, infinities and -0.0 included), then its epilogue. Graph `fused` has the clamp in the
/// conv's epilogue, `unfused` the same clamp as a standalone `relu`/`relu6` after it.
fn clamp_graphs(depthwise: bool, epilogue: Epilogue, c: usize) -> [(Graph, TensorMap); 2] {
    let build = |fused: bool| {
        let mut g = Graph::new("clamp");
        let mut consts = TensorMap::new();
        let (cin, wd, groups) = if depthwise {
            (c, vec![1, 1, c, 1], c)
        } else {
            (1, vec![1, 1, 1, c], 1)
        };
        let x = g.add_node("x", Op::Input, TensorType::new(vec![1, 3, 6, cin]), &[]);
        param(&mut g, &mut consts, "w", wd, vec![1.0; c]);
        param(&mut g, &mut consts, "b", vec![c], vec![-0.0; c]);
        let mut operands = vec![x];
        if epilogue.has_residual() {
            operands.push(g.add_node("r", Op::Input, TensorType::new(vec![1, 3, 6, c]), &[]));
        }
        let (conv_epi, act) = match (fused, epilogue) {
            (true, e) => (e, None),
            (false, Epilogue::Relu) => (Epilogue::None, Some(Op::Relu)),
            (false, Epilogue::Relu6) => (Epilogue::None, Some(Op::Relu6)),
            (false, Epilogue::AddRelu) => (Epilogue::Add, Some(Op::Relu)),
            (false, Epilogue::AddRelu6) => (Epilogue::Add, Some(Op::Relu6)),
            (false, e) => (e, None),
        };
        let conv = Conv2d {
            weight: "w".into(),
            bias: Some("b".into()),
            stride: [1, 1],
            pads: Pads::default(),
            groups,
            epilogue: conv_epi,
        };
        let name = if act.is_some() { "conv" } else { "y" };
        let mut y = g
            .add_typed(name, Op::Conv2d(conv), &operands)
            .expect("conv types");
        if let Some(act) = act {
            y = g.add_typed("y", act, &[y]).expect("types");
        }
        g.set_outputs(vec![y]);
        (g, consts)
    };
    [build(true), build(false)]
}

/// The fused clamp epilogues (`relu` = clamp(0, +inf), `relu6` = clamp(0, 6), after a residual
/// or not) give bit for bit what the standalone `relu`/`relu6` kernel gives after the unfused
/// conv, on the portable tier and every raw tier this CPU runs (each tier is checked bit for bit
/// against the loop-IR interpreter by `run_both`): NaN stays NaN, -0.0 stays -0.0, +inf stays
/// +inf under relu. 20 channels make full and partial vectors on every tier.
#[test]
fn clamp_epilogues_match_the_standalone_activation_on_every_tier() {
    let c = 20;
    let special = [
        f32::NAN,
        -f32::NAN,
        -0.0,
        0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -1.5,
        7.0,
        6.0,
        3.25,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        1e30,
    ];
    let xv: Vec<f32> = (0..3 * 6 * c).map(|i| special[i % special.len()]).collect();
    for depthwise in [false, true] {
        for epilogue in [
            Epilogue::Relu,
            Epilogue::AddRelu,
            Epilogue::Relu6,
            Epilogue::AddRelu6,
        ] {
            let [(fused, consts), (unfused, _)] = clamp_graphs(depthwise, epilogue, c);
            // Pointwise: one input channel, broadcast to all 20 by the weights of 1.
            let xs = if depthwise { &xv[..] } else { &xv[..3 * 6] };
            let mut inputs = BTreeMap::from([("x".to_string(), xs.to_vec())]);
            if epilogue.has_residual() {
                inputs.insert("r".to_string(), vec![-0.0; 3 * 6 * c]);
            }
            let what = format!("{} depthwise={depthwise}", epilogue.name());
            let a = &run_both(&fused, &consts, &inputs)["y"];
            let b = &run_both(&unfused, &consts, &inputs)["y"];
            let graph =
                mnv2c::graph::interp::run(&fused, &consts, &inputs_tensors(&fused, &inputs))
                    .expect("graph interpreter runs");
            for (i, ((x, y), z)) in a.iter().zip(b).zip(graph[0].data()).enumerate() {
                assert!(
                    x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
                    "{what}: y[{i}]: fused {x} != unfused {y}"
                );
                assert!(
                    x == z || (x.is_nan() && z.is_nan()),
                    "{what}: y[{i}]: {x} vs graph {z}"
                );
            }
            let first = |v: f32| {
                let i = xs.iter().position(|x| x.to_bits() == v.to_bits()).unwrap();
                if depthwise { i } else { i * c }
            };
            assert!(a[first(f32::NAN)].is_nan(), "{what}: NaN");
            assert_eq!(
                a[first(-0.0)].to_bits(),
                (-0.0f32).to_bits(),
                "{what}: -0.0"
            );
            assert_eq!(a[first(f32::NEG_INFINITY)], 0.0, "{what}: -inf");
            let hi = epilogue.clamp().unwrap().1;
            assert_eq!(a[first(f32::INFINITY)], hi, "{what}: +inf");
        }
    }
}

/// `run_kernel_split` with an executor that calls every part twice (from two threads at once):
/// each part still runs once, and the result equals the one-piece run.
#[test]
fn split_runs_each_part_once_whatever_the_executor() {
    // 25 pixels: one 14-pixel strip and the 11-pixel rest, two work items.
    let (g, consts) = pointwise_graph_sized(5);
    let p = mnv2c::lower::lower_for_threads(&g, &consts, 2).expect("lowers");
    let jit = JitProgram::compile(&p).expect("compiles");
    assert!(jit.work_items(0).expect("kernel") > 1);
    let x = values(5, 200);
    let w = p.constants[&p.kernels[0].buffers[1].name].clone();
    let mut want = vec![0.0; 300];
    jit.run_kernel(
        0,
        &mut [Arg::Read(&x), Arg::Read(&w), Arg::Write(&mut want)],
    )
    .expect("runs");
    let mut got = vec![0.0; 300];
    jit.run_kernel_split(
        0,
        &mut [Arg::Read(&x), Arg::Read(&w), Arg::Write(&mut got)],
        3,
        &|parts, task| {
            std::thread::scope(|s| {
                for p in 0..parts {
                    s.spawn(move || task(p));
                    s.spawn(move || task(p));
                }
            });
        },
    )
    .expect("runs");
    assert_eq!(got, want);
    // An executor that runs nothing leaves the output untouched (and is no error).
    let mut untouched = vec![0.0; 300];
    jit.run_kernel_split(
        0,
        &mut [Arg::Read(&x), Arg::Read(&w), Arg::Write(&mut untouched)],
        3,
        &|_, _| {},
    )
    .expect("runs");
    assert!(untouched.iter().all(|&v| v == 0.0));
}

/// The 1x1 GEMM's channel reduction is unrolled x4 with a serial remainder nest: only the
/// remainder (`cin < 4`), only the unrolled nest (`cin % 4 == 0`) and both, with channel
/// counts that are not a multiple of the 16-channel tile (24 takes the 4x8 tile) and odd pixel
/// counts.
#[test]
fn pointwise_reduction_unroll_splits() {
    for (i, cin) in [1usize, 3, 4, 5, 7, 8, 9, 12, 13, 17]
        .into_iter()
        .enumerate()
    {
        for cout in [4usize, 8, 13, 17, 24, 32] {
            ConvProblem {
                n: 1,
                h: 3,
                w: 3,
                cin,
                cout,
                k: 1,
                stride: [1, 1],
                pads: Pads::default(),
                groups: 1,
                bias: i % 2 == 0,
                epilogue: Epilogue::ALL[i % Epilogue::ALL.len()],
                seed: (cin * 100 + cout) as u64,
            }
            .check();
        }
    }
}

/// Compiling with Cranelift's IR verifier on (off by default in release builds, for compile
/// time) accepts every kernel of the optimised MobileNetV2 and gives the same machine code, and
/// compiling on one thread gives the same code as on several.
#[test]
fn model_kernels_pass_the_cranelift_verifier_and_compile_deterministically() {
    use mnv2c::codegen::JitOptions;
    let g = mnv2c::frontend::mobilenet_v2(&mnv2c::frontend::Config::default()).expect("builds");
    let mut g2 = g.clone();
    mnv2c::passes::optimize(&mut g2).expect("optimizes");
    let mut consts = TensorMap::new();
    for (name, c) in g.consts() {
        let dims = c.ty.dims.clone();
        let n: usize = dims.iter().product();
        let v = if name.ends_with("moving_variance") {
            vec![1.0; n]
        } else {
            vec![0.01; n]
        };
        consts.insert(name.to_string(), Tensor::new(dims, v).expect("fits"));
    }
    let consts = mnv2c::frontend::weights::bind(&g2, &consts).expect("binds");
    let p = mnv2c::lower::lower(&g2, &consts).expect("lowers");
    let asm = |verifier: bool, compile_threads: usize| {
        let jit = JitProgram::compile_kernels(
            &p.kernels,
            &JitOptions {
                keep_asm: true,
                verifier,
                compile_threads,
                ..JitOptions::default()
            },
        )
        .expect("compiles");
        jit.asm().to_string()
    };
    let reference = asm(true, 1);
    assert_eq!(reference, asm(false, 1));
    assert_eq!(reference, asm(false, 2));
}

/// Every strip length (1..=29 pixels: full 14-pixel strips and every tail) with channel counts
/// that take each register-block shape of the wide tiers (1, 2 or 3 vectors, masked tails),
/// on every tier, bit for bit against the interpreter. A tail of 13 pixels once overlapped
/// the avx2 accumulators with the weight registers.
#[test]
fn pointwise_every_strip_length_and_block_shape() {
    for (i, cout) in [1usize, 8, 17, 40, 56].into_iter().enumerate() {
        for w in 1..=29 {
            ConvProblem {
                n: 1,
                h: 1,
                w,
                cin: 3 + i,
                cout,
                k: 1,
                stride: [1, 1],
                pads: Pads::default(),
                groups: 1,
                bias: w % 2 == 0,
                epilogue: if w % 3 == 0 {
                    Epilogue::Relu6
                } else {
                    Epilogue::None
                },
                seed: w as u64,
            }
            .check();
        }
    }
}

/// Two 1x1 convs with 64 KB weight panels: the first kernel prefetches the second's panel (a
/// prefetch operand on its GEMM strips, `lower::prefetch`), and no value changes for it: every
/// tier, split over threads and fenced by canaries, matches the interpreter bit for bit.
#[test]
fn weight_prefetch_changes_no_value() {
    let mut g = Graph::new("prefetch");
    let mut consts = TensorMap::new();
    let x = g.add_node("x", Op::Input, TensorType::new(vec![1, 5, 6, 64]), &[]);
    param(
        &mut g,
        &mut consts,
        "w1",
        vec![1, 1, 64, 256],
        values(1, 64 * 256),
    );
    param(
        &mut g,
        &mut consts,
        "w2",
        vec![1, 1, 256, 64],
        values(2, 256 * 64),
    );
    let conv = |w: &str, epilogue| Conv2d {
        weight: w.into(),
        bias: None,
        stride: [1, 1],
        pads: Pads::default(),
        groups: 1,
        epilogue,
    };
    let h = g
        .add_typed("h", Op::Conv2d(conv("w1", Epilogue::Relu6)), &[x])
        .expect("types");
    let y = g
        .add_typed("y", Op::Conv2d(conv("w2", Epilogue::None)), &[h])
        .expect("types");
    g.set_outputs(vec![y]);
    let p = mnv2c::lower::lower(&g, &consts).expect("lowers");
    let text = p.kernels[0].to_string();
    assert!(
        text.contains("_pf") && text.contains("pf=@y#w_packed"),
        "{text}"
    );
    assert!(
        !p.kernels[1].to_string().contains("pf="),
        "{}",
        p.kernels[1]
    );
    let inputs = BTreeMap::from([("x".to_string(), values(3, 5 * 6 * 64))]);
    let out = run_both(&g, &consts, &inputs);
    assert!(out.values().all(|v| v.iter().all(|x| x.is_finite())));
}
