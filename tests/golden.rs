//! The interpreter against TensorFlow's reference outputs (`shared/golden/`, see its README).
//!
//! `#[ignore]`d: needs `MNV2C_GOLDEN_DIR` naming the golden folder, and `.ci/run` runs it
//! (`../shared/golden`; locally `/work/shared/golden`) with `-- --ignored`. Tolerances come from
//! `mnv2c::tolerance`. On a mismatch the first diverging block is named, so a padding or layout
//! bug points at its layer instead of only at the logits.

use mnv2c::frontend::{Config, mobilenet_v2, weights};
use mnv2c::graph::{Graph, interp};
use mnv2c::tolerance::{self, BLOCK_ABS, BLOCK_REL, LOGITS_ABS, LOGITS_REL, PROBS_ABS};
use mnv2c::{Tensor, npy};

mod golden_dir;
use golden_dir::golden_dir;

/// The graph node whose value the golden file stores under `key`: after the residual add where
/// a block has one, after relu6 for `conv1_1`/`conv9_1`, the last batch norm of a block without
/// a shortcut.
fn node_for_block(graph: &Graph, key: &str) -> String {
    for candidate in [
        format!("{key}/add"),
        format!("{key}/relu6"),
        format!("{key}/pw_linear_bn"),
        key.to_string(),
    ] {
        if graph.find(&candidate).is_some() {
            return candidate;
        }
    }
    panic!("no node for golden block {key}");
}

const BLOCKS: [&str; 21] = [
    "conv1_1",
    "res2_1",
    "res3_1",
    "res3_2",
    "res4_1",
    "res4_2",
    "res4_3",
    "res5_1",
    "res5_2",
    "res5_3",
    "res5_4",
    "res6_1",
    "res6_2",
    "res6_3",
    "res7_1",
    "res7_2",
    "res7_3",
    "res8_1",
    "conv9_1",
    "global_avg",
    "logits",
];

#[test]
#[ignore = "needs TensorFlow's golden data: set MNV2C_GOLDEN_DIR (docs/testing.md); .ci/run runs it"]
fn interpreter_matches_tensorflow_on_config_a() {
    let dir = golden_dir();
    let a = dir.join("a");
    let graph = mobilenet_v2(&Config::default()).unwrap();
    let w = weights::load(&a.join("weights.safetensors"), &graph).unwrap();
    let consts = weights::bind(&graph, &w).unwrap();
    let input = npy::read(&a.join("input_0.npy")).unwrap();
    let values = interp::run_all(&graph, &consts, &[input]).unwrap();

    // Block by block, so the first divergence is named.
    let inter = weights::read(&a.join("intermediates_0.safetensors")).unwrap();
    let mut report = Vec::new();
    let mut first_bad = None;
    for key in BLOCKS {
        let reference = inter
            .get(key)
            .unwrap_or_else(|| panic!("golden intermediates lack {key}"));
        let node = node_for_block(&graph, key);
        let ours = &values[&node];
        assert_eq!(
            ours.data().len(),
            reference.data().len(),
            "{key} (%{node}): {:?} vs golden {:?}",
            ours.dims(),
            reference.dims()
        );
        let c = tolerance::compare(ours.data(), reference.data(), BLOCK_REL, BLOCK_ABS).unwrap();
        report.push(format!(
            "{key:>10} %{node:<22} max|diff| {:.3e} (bound {:.3e}, rel to max {:.2e})",
            c.max_abs_diff,
            c.bound,
            c.max_abs_diff / tolerance::max_abs(reference.data()).max(f32::MIN_POSITIVE)
        ));
        if !c.passed() && first_bad.is_none() {
            first_bad = Some(format!(
                "{key} (%{node}) first diverges: max|diff| {} > {} at flat index {}",
                c.max_abs_diff, c.bound, c.worst_index
            ));
        }
    }
    eprintln!("{}", report.join("\n"));
    if let Some(bad) = first_bad {
        panic!("{bad}");
    }

    let logits = &values["logits"];
    let probs = &values["prob"];
    check_outputs(logits, probs, &a);
}

/// The final outputs against `logits_0.npy` and `probs_0.npy` with the golden tolerances.
fn check_outputs(logits: &Tensor, probs: &Tensor, a: &std::path::Path) {
    let ref_logits = npy::read(&a.join("logits_0.npy")).unwrap();
    let ref_probs = npy::read(&a.join("probs_0.npy")).unwrap();
    assert_eq!(logits.dims(), ref_logits.dims());
    assert_eq!(probs.dims(), ref_probs.dims());
    let c = tolerance::compare(logits.data(), ref_logits.data(), LOGITS_REL, LOGITS_ABS).unwrap();
    eprintln!(
        "logits: max|diff| {:.3e}, bound {:.3e}",
        c.max_abs_diff, c.bound
    );
    assert!(c.passed(), "logits differ from TF: {c:?}");
    assert_eq!(
        tolerance::argmax(logits.data()),
        tolerance::argmax(ref_logits.data()),
        "argmax differs from TF"
    );
    let p = tolerance::compare(probs.data(), ref_probs.data(), 0.0, PROBS_ABS).unwrap();
    eprintln!(
        "probs: max|diff| {:.3e}, bound {:.3e}",
        p.max_abs_diff, p.bound
    );
    assert!(p.passed(), "probabilities differ from TF: {p:?}");
}

#[test]
#[ignore = "needs TensorFlow's golden data: set MNV2C_GOLDEN_DIR (docs/testing.md); .ci/run runs it"]
fn interpreter_run_gives_the_same_outputs_as_run_all() {
    let dir = golden_dir();
    let a = dir.join("a");
    let graph = mobilenet_v2(&Config::default()).unwrap();
    let w = weights::load(&a.join("weights.safetensors"), &graph).unwrap();
    let consts = weights::bind(&graph, &w).unwrap();
    let input = npy::read(&a.join("input_0.npy")).unwrap();
    let start = std::time::Instant::now();
    let out = interp::run(&graph, &consts, &[input]).unwrap();
    eprintln!("interp::run at 224x224: {:.2?}", start.elapsed());
    assert_eq!(out.len(), 2);
    check_outputs(&out[0], &out[1], &a);
}

/// Pins the classic trap: PyTorch-style 1/1 padding on the stride-2 stem instead of TF's 0/1
/// must be caught at `conv1_1` by the block comparison (so the test above can fail).
#[test]
#[ignore = "needs TensorFlow's golden data: set MNV2C_GOLDEN_DIR (docs/testing.md); .ci/run runs it"]
fn pytorch_padding_is_caught_at_conv1_1() {
    let dir = golden_dir();
    let a = dir.join("a");
    let mut graph = mobilenet_v2(&Config::default()).unwrap();
    let stem = graph.find("conv1_1/conv2d").unwrap();
    match &mut graph.node_mut(stem).op {
        mnv2c::graph::Op::Conv2d(c) => {
            assert_eq!(
                (c.pads.top, c.pads.bottom),
                (0, 1),
                "TF SAME pads 0 before, 1 after"
            );
            c.pads = mnv2c::graph::Pads {
                top: 1,
                bottom: 1,
                left: 1,
                right: 1,
            };
        }
        other => panic!("unexpected op {other:?}"),
    }
    mnv2c::graph::verify(&graph).unwrap();
    let w = weights::load(&a.join("weights.safetensors"), &graph).unwrap();
    let consts = weights::bind(&graph, &w).unwrap();
    let input = npy::read(&a.join("input_0.npy")).unwrap();
    let values = interp::run_all(&graph, &consts, &[input]).unwrap();
    let inter = weights::read(&a.join("intermediates_0.safetensors")).unwrap();
    let c = tolerance::compare(
        values["conv1_1/relu6"].data(),
        inter["conv1_1"].data(),
        BLOCK_REL,
        BLOCK_ABS,
    )
    .unwrap();
    assert!(!c.passed(), "1/1 padding went unnoticed: {c:?}");
}
