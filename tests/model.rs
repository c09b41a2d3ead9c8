//! The whole model through the JIT (`CompiledModel`) against the reference interpreter, at a
//! small size and at 224x224, and against TensorFlow's golden numbers.

mod common;

mod golden_dir;

use common::{random_inputs, random_weights};
use mnv2c::codegen::Isa;
use mnv2c::frontend::{Config, mobilenet_v2, weights};
use mnv2c::graph::interp;
use mnv2c::tolerance::{LOGITS_ABS, LOGITS_REL, PROBS_ABS, argmax, compare};
use mnv2c::{CompiledModel, Options, Tensor, npy};

/// Every concrete tier this CPU runs; the others are reported as skipped, by name.
fn tiers() -> Vec<Isa> {
    for isa in [Isa::Avx512, Isa::Avx2] {
        if let Some(f) = isa.missing() {
            eprintln!("skipped: {} (CPU lacks {f})", isa.name());
        }
    }
    Isa::available()
}

/// Bits of a tensor, every NaN as one pattern (NaN payloads are not part of the contract).
fn bits(t: &Tensor) -> Vec<u32> {
    t.data()
        .iter()
        .map(|v| if v.is_nan() { u32::MAX } else { v.to_bits() })
        .collect()
}

/// The full-size model gives the same logit bits on every tier at 1 thread (in bands, folded)
/// and 2 (layer by layer), also for an input with NaN, infinities and negative zeros in it (no
/// flush-to-zero, the same NaN propagation everywhere).
#[test]
fn tiers_and_threads_give_bit_identical_logits() {
    let g = mobilenet_v2(&Config::default()).unwrap();
    let w = random_weights(&g, 5);
    let x = random_inputs(&g, 5).remove(0);
    let mut special = x.data().to_vec();
    for (i, v) in special.iter_mut().enumerate().step_by(997) {
        *v = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 1e-40][i % 5];
    }
    let special = Tensor::new(x.dims().to_vec(), special).unwrap();
    for input in [&x, &special] {
        let mut first: Option<(String, Vec<u32>)> = None;
        for isa in tiers() {
            for threads in [1, 2] {
                let opts = Options::new().with_threads(threads).with_isa(isa);
                let model = CompiledModel::compile(&g, &w, &opts).unwrap();
                // One thread runs the large layers in bands, with the largest activations in
                // fold windows (Linux); two layer by layer, nothing folded.
                let runs = model.schedule().runs.len();
                let kernels = model.layers().count();
                assert_eq!(
                    runs > kernels,
                    threads == 1,
                    "{runs} runs of {kernels} kernels"
                );
                let folds = model.folds().len();
                let expected = threads == 1 && cfg!(target_os = "linux");
                assert_eq!(folds > 0, expected, "{folds} folded activations");
                let got = bits(&model.run(input).unwrap().logits);
                let name = format!("{} x{threads}", isa.name());
                match &first {
                    None => first = Some((name, got)),
                    Some((n0, want)) => assert!(got == *want, "{name} differs from {n0}"),
                }
            }
        }
    }
}

/// Asking for a tier the CPU lacks is a usage error before any code runs (never SIGILL).
#[test]
fn a_tier_the_cpu_lacks_is_a_usage_error() {
    let g = mobilenet_v2(&Config::default()).unwrap();
    let w = random_weights(&g, 1);
    for isa in [Isa::Avx512, Isa::Avx2] {
        let res = CompiledModel::compile(&g, &w, &Options::new().with_isa(isa));
        match isa.missing() {
            Some(f) => {
                let e = res.unwrap_err();
                assert!(matches!(e, mnv2c::Error::Usage(_)), "{e}");
                assert!(e.to_string().contains(f), "{e}");
            }
            None => assert_eq!(res.unwrap().jit().isa(), isa),
        }
    }
}

fn assert_close(what: &str, actual: &Tensor, reference: &Tensor, rel: f32, abs: f32) {
    assert_eq!(actual.dims(), reference.dims(), "{what}: shape");
    let c = compare(actual.data(), reference.data(), rel, abs).unwrap();
    assert!(c.passed(), "{what}: {c:?}");
}

/// JIT and interpreter agree on the model for `config`, with weights that keep activations O(1).
fn jit_matches_interpreter(config: Config, optimize: bool) {
    let g = mobilenet_v2(&config).unwrap();
    let w = random_weights(&g, 7);
    let x = random_inputs(&g, 7).remove(0);
    let model = CompiledModel::compile(&g, &w, &Options::new().with_optimize(optimize)).unwrap();
    let out = model.run(&x).unwrap();
    let consts = weights::bind(&g, &w).unwrap();
    let reference = interp::run(&g, &consts, std::slice::from_ref(&x)).unwrap();
    assert_close("logits", &out.logits, &reference[0], LOGITS_REL, LOGITS_ABS);
    assert_close("probs", &out.probs, &reference[1], 0.0, PROBS_ABS);
    let n = config.num_classes;
    for b in 0..config.batch {
        let row = |t: &Tensor| t.data()[b * n..(b + 1) * n].to_vec();
        assert_eq!(
            argmax(&row(&out.logits)),
            argmax(&row(&reference[0])),
            "item {b}"
        );
    }
}

#[test]
fn small_model_matches_the_interpreter() {
    let config = Config {
        num_classes: 10,
        batch: 2,
        height: 33,
        width: 40,
    };
    jit_matches_interpreter(config, true);
}

#[test]
fn unoptimised_model_matches_the_interpreter() {
    // -O0: every batch norm, relu6 and add runs as its own kernel.
    let config = Config {
        num_classes: 7,
        batch: 1,
        height: 21,
        width: 18,
    };
    jit_matches_interpreter(config, false);
}

#[test]
fn full_size_model_matches_the_interpreter() {
    jit_matches_interpreter(Config::default(), true);
}

#[test]
fn wrong_input_shapes_are_errors() {
    let g = mobilenet_v2(&Config {
        num_classes: 3,
        batch: 1,
        height: 16,
        width: 16,
    })
    .unwrap();
    let w = weights::seeded(&g, 1).unwrap();
    let model = CompiledModel::compile(&g, &w, &Options::default()).unwrap();
    for dims in [
        vec![1, 16, 16, 4],
        vec![2, 16, 16, 3],
        vec![16, 16, 3],
        vec![1, 17, 16, 3],
    ] {
        let x = Tensor::zeros(dims.clone()).unwrap();
        let e = model.run(&x).unwrap_err().to_string();
        assert!(e.contains("[1,16,16,3]"), "{dims:?}: {e}");
    }
    let none: [Tensor; 0] = [];
    let e = model.run_all(&none).unwrap_err();
    assert_eq!(e.to_string(), "input: the model has 1 input(s), got 0");
}

/// The API a library user relies on: port introspection, borrowed inputs, outputs by name, the
/// fast path into caller-made outputs, and a `Debug` that summarises instead of dumping weights.
#[test]
fn library_api_introspection_views_and_named_outputs() {
    use mnv2c::{Layout, TensorView};
    let g = mobilenet_v2(&Config {
        num_classes: 5,
        batch: 2,
        height: 16,
        width: 16,
    })
    .unwrap();
    let w = weights::seeded(&g, 1).unwrap();
    let model = CompiledModel::compile(&g, &w, &Options::default()).unwrap();
    let [input] = model.inputs() else {
        panic!("one input expected")
    };
    assert_eq!(
        (input.name.as_str(), &input.dims[..]),
        ("input", &[2, 16, 16, 3][..])
    );
    assert_eq!(input.layout, Layout::Nhwc);
    let names: Vec<&str> = model.outputs().iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["logits", "prob"]);
    assert_eq!(model.outputs()[1].layout, Layout::RowMajor);

    let data: Vec<f32> = (0..2 * 16 * 16 * 3).map(|i| (i % 7) as f32 * 0.1).collect();
    let view = TensorView::new(&input.dims, &data).unwrap();
    let owned = Tensor::new(input.dims.clone(), data.clone()).unwrap();
    let by_name = model.run_named(&[view]).unwrap();
    let classified = model.run(&owned).unwrap();
    assert_eq!(by_name["prob"], classified.probs);
    assert_eq!(by_name["logits"], classified.logits);
    let mut outputs = model.new_outputs().unwrap();
    model.run_into(&[view], &mut outputs).unwrap();
    assert_eq!(outputs[1], classified.probs);

    let debug = format!("{model:?}");
    assert!(
        debug.starts_with("CompiledModel { inputs: [TensorInfo { name: \"input\""),
        "{debug}"
    );
    assert!(
        debug.contains("kernels: ") && debug.contains("arena_bytes: "),
        "{debug}"
    );
    assert!(debug.len() < 2000, "Debug prints {} bytes", debug.len());
}

/// TensorFlow's numbers through the JIT, at 1, 2 and 4 threads.
#[test]
#[ignore = "needs TensorFlow's golden data: set MNV2C_GOLDEN_DIR (docs/testing.md); .ci/run runs it"]
fn golden_logits_through_the_jit() {
    let dir = golden_dir::golden_dir();
    let a = dir.join("a");
    let g = mobilenet_v2(&Config::default()).unwrap();
    let w = weights::load(&a.join("weights.safetensors"), &g).unwrap();
    let x = npy::read(&a.join("input_0.npy")).unwrap();
    let logits = npy::read(&a.join("logits_0.npy")).unwrap();
    let probs = npy::read(&a.join("probs_0.npy")).unwrap();
    for (isa, threads) in tiers().into_iter().flat_map(|i| [(i, 1), (i, 2), (i, 4)]) {
        let opts = Options::new().with_threads(threads).with_isa(isa);
        let model = CompiledModel::compile(&g, &w, &opts).unwrap();
        let out = model.run(&x).unwrap();
        assert_close("logits", &out.logits, &logits, LOGITS_REL, LOGITS_ABS);
        assert_close("probs", &out.probs, &probs, 0.0, PROBS_ABS);
        assert_eq!(argmax(out.logits.data()), argmax(logits.data()));
    }
}

/// Splitting kernels over threads changes who computes an element, never how: outputs are
/// bit-identical for 1, 2 and 4 threads.
#[test]
fn thread_counts_give_bit_identical_outputs() {
    let config = Config {
        num_classes: 11,
        batch: 2,
        height: 45,
        width: 38,
    };
    let g = mobilenet_v2(&config).unwrap();
    let w = random_weights(&g, 3);
    let x = random_inputs(&g, 3).remove(0);
    let run = |threads: usize| {
        let opts = Options::new().with_threads(threads);
        CompiledModel::compile(&g, &w, &opts)
            .unwrap()
            .run(&x)
            .unwrap()
    };
    let one = run(1);
    for threads in [2, 4] {
        let out = run(threads);
        assert!(
            out.logits.data().iter().map(|v| v.to_bits()).eq(one
                .logits
                .data()
                .iter()
                .map(|v| v.to_bits())),
            "{threads} threads"
        );
        assert_eq!(out, one, "{threads} threads");
    }
}

/// One model, called from 8 threads at once (each 100 times, with its pool of 2): every result
/// equals the single-threaded one.
#[test]
fn concurrent_calls_share_one_model() {
    let config = Config {
        num_classes: 5,
        batch: 1,
        height: 24,
        width: 24,
    };
    let g = mobilenet_v2(&config).unwrap();
    let w = random_weights(&g, 9);
    let inputs: Vec<Tensor> = (0..8)
        .map(|i| random_inputs(&g, 100 + i).remove(0))
        .collect();
    let model = CompiledModel::compile(&g, &w, &Options::new().with_threads(2)).unwrap();
    let expected: Vec<_> = inputs.iter().map(|x| model.run(x).unwrap()).collect();
    std::thread::scope(|s| {
        for (x, want) in inputs.iter().zip(&expected) {
            let model = &model;
            s.spawn(move || {
                for _ in 0..100 {
                    assert_eq!(&model.run(x).unwrap(), want);
                }
            });
        }
    });
}

#[test]
fn thread_counts_out_of_range_are_errors() {
    let g = mobilenet_v2(&Config {
        num_classes: 2,
        batch: 1,
        height: 8,
        width: 8,
    })
    .unwrap();
    let w = weights::seeded(&g, 0).unwrap();
    for threads in [0, 100_000] {
        let e = CompiledModel::compile(&g, &w, &Options::new().with_threads(threads)).unwrap_err();
        assert!(e.to_string().contains("threads"), "{e}");
    }
}
