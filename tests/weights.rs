//! Weights: seeded initialisation, safetensors save/load, validation against the graph (each
//! kind of mismatch gives its own error naming the tensor), and binding of derived constants.

use std::path::{Path, PathBuf};

use mnv2c::frontend::{Config, mobilenet_v2, weights};
use mnv2c::graph::{
    self, BatchNorm, Const, ConstDef, Conv2d, Epilogue, Graph, Op, Pads, TensorType, interp,
};
use mnv2c::{Error, Tensor, TensorMap};
use safetensors::tensor::{Dtype, TensorView};

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("weights-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn model(num_classes: usize) -> Graph {
    mobilenet_v2(&Config {
        num_classes,
        ..Config::default()
    })
    .unwrap()
}

/// The tensor and message of a weights error, or a panic naming what came instead.
fn weights_err<T: std::fmt::Debug>(r: mnv2c::Result<T>) -> (String, String) {
    match r {
        Err(Error::Weights { tensor, message }) => (tensor, message),
        other => panic!("expected a weights error, got {other:?}"),
    }
}

const DW: &str = "mobilenetv2/res5_1/dw/w";

#[test]
fn seeded_is_reproducible_truncated_and_bn_is_identity() {
    let g = model(1000);
    let a = weights::seeded(&g, 1).unwrap();
    assert_eq!(
        a,
        weights::seeded(&g, 1).unwrap(),
        "same seed, same weights"
    );
    let b = weights::seeded(&g, 2).unwrap();
    assert_ne!(a[DW], b[DW], "another seed, other weights");
    weights::check(&g, &a).unwrap();
    assert_eq!(a[DW].dims(), &[3, 3, 192, 1]);

    let mut kernels = 0;
    for (name, t) in &a {
        let leaf = name.rsplit('/').next().unwrap();
        let expect_const = match leaf {
            "gamma" | "moving_variance" => Some(1.0),
            "beta" | "moving_mean" => Some(0.0),
            _ => None,
        };
        match expect_const {
            Some(v) => assert!(t.data().iter().all(|&x| x == v), "{name}"),
            None => {
                kernels += 1;
                let bound = 2.0 * weights::INIT_STDDEV;
                assert!(
                    t.data().iter().all(|x| x.abs() <= bound),
                    "{name} beyond 2 stddev"
                );
            }
        }
    }
    assert_eq!(
        kernels,
        1 + 17 * 3 + 2 + 2,
        "stem, 17 blocks x 3, 2 ex_dim, conv9, logits"
    );

    // The statistics of a large kernel: mean ~ 0, stddev ~ 0.02 * 0.8796 (the stddev of a
    // standard normal truncated at 2).
    let big = a["mobilenetv2/conv9_1/pwb/w"].data();
    let n = big.len() as f64;
    let mean = big.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let sd = (big
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    assert!(mean.abs() < 2e-4, "mean {mean}");
    assert!((sd - 0.02 * 0.8796).abs() < 3e-4, "stddev {sd}");
    // Values near the bound exist (the distribution is not clipped to something narrower).
    assert!(big.iter().any(|v| v.abs() > 0.039));
}

#[test]
fn seeded_parameters_do_not_depend_on_the_number_of_classes() {
    let a = weights::seeded(&model(1000), 3).unwrap();
    let b = weights::seeded(&model(10), 3).unwrap();
    assert_eq!(a[DW], b[DW]);
    assert_eq!(b[weights::LOGITS_WEIGHT].dims(), &[1, 1, 1280, 10]);
    assert_eq!(weights::num_classes(&b).unwrap(), 10);
    assert_eq!(weights::num_classes(&a).unwrap(), 1000);
}

#[test]
fn save_then_load_roundtrips_with_tf_names_and_shapes() {
    let g = model(10);
    let w = weights::seeded(&g, 4).unwrap();
    let path = tmp("roundtrip.safetensors");
    weights::save(&path, &w).unwrap();
    let back = weights::load(&path, &g).unwrap();
    assert_eq!(back, w);
    // The file is a plain safetensors file: F32, TF names, TF shapes.
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor(DW).unwrap();
    assert_eq!((v.dtype(), v.shape()), (Dtype::F32, &[3, 3, 192, 1][..]));
}

#[test]
fn missing_extra_and_misshaped_tensors_are_named() {
    let g = model(10);
    let good = weights::seeded(&g, 0).unwrap();

    let mut w = good.clone();
    w.remove(DW);
    let (tensor, msg) = weights_err(weights::check(&g, &w));
    assert_eq!(tensor, DW);
    assert!(
        msg.contains("missing") && msg.contains("[3,3,192,1]"),
        "{msg}"
    );

    let mut w = good.clone();
    w.insert(
        "mobilenetv2/res5_1/dw/bias".into(),
        Tensor::zeros(vec![192]).unwrap(),
    );
    let (tensor, msg) = weights_err(weights::check(&g, &w));
    assert_eq!(tensor, "mobilenetv2/res5_1/dw/bias");
    assert!(msg.contains("unexpected") && msg.contains("[192]"), "{msg}");

    let mut w = good.clone();
    w.insert(DW.into(), Tensor::zeros(vec![3, 3, 1, 192]).unwrap());
    let (tensor, msg) = weights_err(weights::check(&g, &w));
    assert_eq!(tensor, DW);
    assert!(
        msg.contains("[3,3,1,192]") && msg.contains("[3,3,192,1]"),
        "{msg}"
    );

    // The same through a file, and bind refuses too.
    let path = tmp("misshaped.safetensors");
    weights::save(&path, &w).unwrap();
    assert_eq!(weights_err(weights::load(&path, &g)).0, DW);
    assert_eq!(weights_err(weights::bind(&g, &w)).0, DW);
}

#[test]
fn non_f32_truncated_garbage_and_nan_files_are_rejected() {
    // An F64 tensor.
    let data = [0u8; 16];
    let view = TensorView::new(Dtype::F64, vec![2], &data).unwrap();
    let bytes = safetensors::serialize([("mobilenetv2/x", view)], None).unwrap();
    let (tensor, msg) = weights_err(weights::parse(&bytes, Path::new("w.safetensors")));
    assert_eq!(tensor, "mobilenetv2/x");
    assert!(msg.contains("F64") && msg.contains("F32"), "{msg}");

    // Truncated and garbage files: a format error naming the path.
    let g = model(10);
    let good = weights::to_bytes(&weights::seeded(&g, 0).unwrap()).unwrap();
    for (what, bytes) in [
        ("truncated", &good[..good.len() - 100]),
        ("truncated header", &good[..50]),
        ("empty", &good[..0]),
        ("garbage", &b"this is not a safetensors file at all"[..]),
    ] {
        match weights::parse(bytes, Path::new("bad.safetensors")) {
            Err(e @ Error::Format { .. }) => {
                assert!(
                    e.to_string().starts_with("bad.safetensors: "),
                    "{what}: {e}"
                )
            }
            other => panic!("{what}: expected a format error, got {other:?}"),
        }
    }
    let path = tmp("truncated.safetensors");
    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    assert!(matches!(weights::read(&path), Err(Error::Format { .. })));

    // NaN and infinity.
    for bad in [f32::NAN, f32::INFINITY] {
        let mut w = weights::seeded(&g, 0).unwrap();
        w.get_mut(DW).unwrap().data_mut()[7] = bad;
        let bytes = weights::to_bytes(&w).unwrap();
        let (tensor, msg) = weights_err(weights::parse(&bytes, Path::new("n.safetensors")));
        assert_eq!(tensor, DW);
        assert!(
            msg.contains("element 7") && msg.contains(&bad.to_string()),
            "{msg}"
        );
    }
}

#[test]
fn num_classes_needs_the_logits_kernel() {
    let mut w = TensorMap::new();
    assert_eq!(
        weights_err(weights::num_classes(&w)).0,
        weights::LOGITS_WEIGHT
    );
    w.insert(
        weights::LOGITS_WEIGHT.into(),
        Tensor::zeros(vec![1280, 10]).unwrap(),
    );
    let (_, msg) = weights_err(weights::num_classes(&w));
    assert!(msg.contains("[1280,10]"), "{msg}");
}

/// A conv followed by batch norm, and the same folded by hand into derived constants, as
/// `fold-batchnorm` will write it.
fn conv_bn_graphs(with_conv_bias: bool) -> (Graph, Graph) {
    let param = |dims: Vec<usize>| Const {
        ty: TensorType::new(dims),
        def: ConstDef::Param,
    };
    let mut plain = Graph::new("plain");
    let mut folded = Graph::new("folded");
    for g in [&mut plain, &mut folded] {
        g.add_const("w", param(vec![1, 1, 2, 3])).unwrap();
        for n in ["gamma", "beta", "mean", "var"] {
            g.add_const(n, param(vec![3])).unwrap();
        }
        if with_conv_bias {
            g.add_const("cb", param(vec![3])).unwrap();
        }
    }
    let conv = |weight: &str, bias: Option<String>| {
        Op::Conv2d(Conv2d {
            weight: weight.into(),
            bias,
            stride: [1, 1],
            pads: Pads::default(),
            groups: 1,
            epilogue: Epilogue::None,
        })
    };
    let eps = 1.0;
    let x = plain.add_node("x", Op::Input, TensorType::new(vec![1, 1, 2, 2]), &[]);
    let c = plain
        .add_typed("c", conv("w", with_conv_bias.then(|| "cb".into())), &[x])
        .unwrap();
    let bn = Op::BatchNorm(BatchNorm {
        gamma: "gamma".into(),
        beta: "beta".into(),
        mean: "mean".into(),
        variance: "var".into(),
        epsilon: eps,
    });
    let y = plain.add_typed("y", bn, &[c]).unwrap();
    plain.set_outputs(vec![y]);
    graph::verify(&plain).unwrap();

    folded
        .add_const(
            "w_f",
            Const {
                ty: TensorType::new(vec![1, 1, 2, 3]),
                def: ConstDef::FoldBnWeight {
                    weight: "w".into(),
                    gamma: "gamma".into(),
                    variance: "var".into(),
                    epsilon: eps,
                },
            },
        )
        .unwrap();
    folded
        .add_const(
            "b_f",
            Const {
                ty: TensorType::new(vec![3]),
                def: ConstDef::FoldBnBias {
                    bias: with_conv_bias.then(|| "cb".into()),
                    gamma: "gamma".into(),
                    beta: "beta".into(),
                    mean: "mean".into(),
                    variance: "var".into(),
                    epsilon: eps,
                },
            },
        )
        .unwrap();
    let x = folded.add_node("x", Op::Input, TensorType::new(vec![1, 1, 2, 2]), &[]);
    let y = folded
        .add_typed("y", conv("w_f", Some("b_f".into())), &[x])
        .unwrap();
    folded.set_outputs(vec![y]);
    graph::verify(&folded).unwrap();
    (plain, folded)
}

fn vector(data: &[f32]) -> Tensor {
    Tensor::new(vec![data.len()], data.to_vec()).unwrap()
}

fn fold_weights(with_conv_bias: bool) -> TensorMap {
    let mut w = TensorMap::new();
    w.insert(
        "w".into(),
        Tensor::new(vec![1, 1, 2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap(),
    );
    w.insert("gamma".into(), vector(&[1.0, 2.0, 3.0]));
    w.insert("beta".into(), vector(&[0.0, 1.0, 2.0]));
    w.insert("mean".into(), vector(&[1.0, 1.0, 1.0]));
    // With epsilon 1: sqrt(var + 1) = [2, 1, 3].
    w.insert("var".into(), vector(&[3.0, 0.0, 8.0]));
    if with_conv_bias {
        w.insert("cb".into(), vector(&[1.0, 2.0, 3.0]));
    }
    w
}

/// Compiling binds only what the ops read: after folding, the conv's folded weight and bias (the
/// same values `bind` gives), not the parameters they were derived from; without folding, batch
/// norm reads its statistics itself, so every parameter is kept.
#[test]
fn bind_referenced_keeps_what_the_ops_read() {
    for with_bias in [false, true] {
        let (plain, folded) = conv_bn_graphs(with_bias);
        let w = fold_weights(with_bias);
        let all = weights::bind(&folded, &w).unwrap();
        let used = mnv2c::graph::consts::bind_referenced(&folded, &w).unwrap();
        assert_eq!(
            used.keys().map(String::as_str).collect::<Vec<_>>(),
            ["b_f", "w_f"],
            "with_bias {with_bias}"
        );
        for (name, value) in &used {
            assert_eq!(value, &all[name], "{name}");
        }
        let plain_used = mnv2c::graph::consts::bind_referenced(&plain, &w).unwrap();
        assert_eq!(plain_used, weights::bind(&plain, &w).unwrap());
    }
}

#[test]
fn bind_evaluates_fold_constants_by_their_documented_formulas() {
    // w'[i] = w[i] * gamma[co] / sqrt(var[co] + eps), co = i % 3:
    //   [1*1/2, 2*2/1, 3*3/3, 4*1/2, 5*2/1, 6*3/3] = [0.5, 4, 3, 2, 10, 6]
    // b'[co] = beta + (bias - mean) * gamma / sqrt(var + eps):
    //   no bias:   [0 - 1/2, 1 - 2, 2 - 1]           = [-0.5, -1, 1]
    //   bias 1..3: [0 + 0, 1 + 1*2/1, 2 + 2*3/3]     = [0, 3, 4]
    for (with_bias, expect_b) in [(false, [-0.5, -1.0, 1.0]), (true, [0.0, 3.0, 4.0])] {
        let (_, folded) = conv_bn_graphs(with_bias);
        let bound = weights::bind(&folded, &fold_weights(with_bias)).unwrap();
        assert_eq!(bound["w_f"].data(), &[0.5, 4.0, 3.0, 2.0, 10.0, 6.0]);
        assert_eq!(bound["w_f"].dims(), &[1, 1, 2, 3]);
        assert_eq!(bound["b_f"].data(), &expect_b);
        assert_eq!(
            bound["w"],
            fold_weights(with_bias)["w"],
            "parameters pass through"
        );
    }
}

#[test]
fn folded_and_unfolded_graphs_agree_in_the_interpreter() {
    for with_bias in [false, true] {
        let (plain, folded) = conv_bn_graphs(with_bias);
        let w = fold_weights(with_bias);
        let x = Tensor::new(vec![1, 1, 2, 2], vec![0.3, -1.7, 2.5, 0.125]).unwrap();
        let a = interp::run(
            &plain,
            &weights::bind(&plain, &w).unwrap(),
            std::slice::from_ref(&x),
        )
        .unwrap();
        let b = interp::run(&folded, &weights::bind(&folded, &w).unwrap(), &[x]).unwrap();
        for (p, q) in a[0].data().iter().zip(b[0].data()) {
            assert!((p - q).abs() <= 1e-5 * p.abs().max(1.0), "{a:?} vs {b:?}");
        }
    }
}

#[test]
fn seeded_recognises_bn_parameters_through_fold_definitions() {
    let (_, folded) = conv_bn_graphs(true);
    let w = weights::seeded(&folded, 9).unwrap();
    assert_eq!(w["gamma"].data(), &[1.0; 3]);
    assert_eq!(w["var"].data(), &[1.0; 3]);
    assert_eq!(w["beta"].data(), &[0.0; 3]);
    assert_eq!(w["mean"].data(), &[0.0; 3]);
    assert!(w["w"].data().iter().all(|&v| v != 0.0 && v.abs() <= 0.04));
    assert!(!w.contains_key("w_f"), "derived constants are not weights");
}

#[test]
fn bind_rejects_a_fold_that_gives_nan() {
    let (_, folded) = conv_bn_graphs(false);
    let mut w = fold_weights(false);
    // var + eps = -1: sqrt of a negative number.
    w.insert("var".into(), vector(&[3.0, -2.0, 8.0]));
    let (tensor, msg) = weights_err(weights::bind(&folded, &w));
    assert_eq!(tensor, "w_f");
    assert!(msg.contains("NaN"), "{msg}");
}
