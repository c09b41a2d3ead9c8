//! `mnv2c run --interp` and `mnv2c weights` from the outside: outputs written and read back,
//! configuration taken from files, and every bad file or conflicting option a one-line error
//! with a non-zero exit and no panic.

mod cli_support;
mod golden_dir;

use std::path::{Path, PathBuf};

use cli_support::{assert_one_line_error, mnv2c};
use mnv2c::frontend::{Config, mobilenet_v2, weights};
use mnv2c::graph::interp;
use mnv2c::tolerance::{self, LOGITS_ABS, LOGITS_REL, PROBS_ABS};
use mnv2c::{Tensor, npy};

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-run-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Seeded weights for a model with `num_classes`, saved with the library's `save`.
fn seeded_file(name: &str, num_classes: usize, seed: u64) -> PathBuf {
    let g = mobilenet_v2(&Config {
        num_classes,
        ..Config::default()
    })
    .unwrap();
    let path = tmp(name);
    weights::save(&path, &weights::seeded(&g, seed).unwrap()).unwrap();
    path
}

/// The two engines `run` offers: the JIT (the default) and the reference interpreter.
const ENGINES: [&[&str]; 2] = [&[], &["--interp"]];

#[test]
#[ignore = "needs TensorFlow's golden data: set MNV2C_GOLDEN_DIR (docs/testing.md); .ci/run runs it"]
fn golden_run_through_the_cli() {
    let dir = golden_dir::golden_dir();
    for engine in ENGINES {
        golden_run(&Path::new(&dir).join("a"), engine);
    }
}

fn golden_run(a: &Path, engine: &[&str]) {
    let (logits, probs) = (tmp("golden_logits.npy"), tmp("golden_probs.npy"));
    let out = mnv2c(
        &[
            &["run"],
            engine,
            &[
                "--weights",
                s(&a.join("weights.safetensors")),
                "--input",
                s(&a.join("input_0.npy")),
                "--logits",
                s(&logits),
                "--probs",
                s(&probs),
            ],
        ]
        .concat(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = npy::read(&logits).unwrap();
    let reference = npy::read(&a.join("logits_0.npy")).unwrap();
    assert_eq!(ours.dims(), reference.dims());
    let c = tolerance::compare(ours.data(), reference.data(), LOGITS_REL, LOGITS_ABS).unwrap();
    assert!(c.passed(), "{c:?}");
    let best = tolerance::argmax(reference.data()).unwrap();
    assert_eq!(tolerance::argmax(ours.data()), Some(best));
    assert!(
        stdout.contains(&format!("1. class {best:>4}")),
        "top-1 printed: {stdout}"
    );
    assert_eq!(stdout.matches(". class ").count(), 5, "top-5: {stdout}");
    let p = npy::read(&probs).unwrap();
    let ref_p = npy::read(&a.join("probs_0.npy")).unwrap();
    assert!(
        tolerance::compare(p.data(), ref_p.data(), 0.0, PROBS_ABS)
            .unwrap()
            .passed()
    );
}

#[test]
fn odd_sized_batch_with_ten_class_seeded_weights() {
    for engine in ENGINES {
        odd_sized_batch(engine);
    }
}

fn odd_sized_batch(engine: &[&str]) {
    let w = seeded_file("seeded10.safetensors", 10, 11);
    let input_path = tmp("input_2x161x193.npy");
    let n = 2 * 161 * 193 * 3;
    let data: Vec<f32> = (0..n)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let input = Tensor::new(vec![2, 161, 193, 3], data).unwrap();
    npy::write(&input_path, &input).unwrap();
    let (logits, probs) = (tmp("seeded10_logits.npy"), tmp("seeded10_probs.npy"));
    let out = mnv2c(
        &[
            &["run"],
            engine,
            &[
                "--weights",
                s(&w),
                "--input",
                s(&input_path),
                "--logits",
                s(&logits),
                "--probs",
                s(&probs),
                "--top",
                "3",
            ],
        ]
        .concat(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("input [2,161,193,3], 10 classes"),
        "{stdout}"
    );
    assert!(
        stdout.contains("item 0:") && stdout.contains("item 1:"),
        "{stdout}"
    );
    assert_eq!(stdout.matches(". class ").count(), 6, "{stdout}");

    // The CLI wrote what the library computes for the same weights and input.
    let g = mobilenet_v2(&Config {
        num_classes: 10,
        batch: 2,
        height: 161,
        width: 193,
    })
    .unwrap();
    let consts = weights::bind(&g, &weights::load(&w, &g).unwrap()).unwrap();
    let expect = interp::run(&g, &consts, &[input]).unwrap();
    let ours = npy::read(&logits).unwrap();
    assert_eq!(ours.dims(), expect[0].dims());
    let c = tolerance::compare(ours.data(), expect[0].data(), LOGITS_REL, LOGITS_ABS).unwrap();
    assert!(c.passed(), "{engine:?}: {c:?}");
    let p = npy::read(&probs).unwrap();
    let c = tolerance::compare(p.data(), expect[1].data(), 0.0, PROBS_ABS).unwrap();
    assert!(c.passed(), "{engine:?}: {c:?}");
    for row in p.data().chunks(10) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "{row:?}");
    }
}

#[test]
fn default_run_uses_seeded_weights_and_the_synthetic_input() {
    let out = mnv2c(&[
        "run",
        "--interp",
        "--height",
        "32",
        "--width",
        "48",
        "--num-classes",
        "7",
        "--top",
        "2",
        "--seed",
        "5",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("input [1,32,48,3], 7 classes; weights: seeded (5); input: synthetic"),
        "{stdout}"
    );
    assert!(
        stdout.contains("interpreter: ") && stdout.contains(" s\n"),
        "{stdout}"
    );
    assert_eq!(stdout.matches(". class ").count(), 2, "{stdout}");
}

#[test]
fn weights_subcommand_writes_the_seeded_weights() {
    let path = tmp("cli_weights.safetensors");
    let out = mnv2c(&[
        "weights",
        "--seed",
        "8",
        "--num-classes",
        "12",
        "-o",
        s(&path),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let g = mobilenet_v2(&Config {
        num_classes: 12,
        ..Config::default()
    })
    .unwrap();
    assert_eq!(
        weights::load(&path, &g).unwrap(),
        weights::seeded(&g, 8).unwrap()
    );
}

#[test]
fn truncated_weights_file_is_a_one_line_error() {
    let good = std::fs::read(seeded_file("to_truncate.safetensors", 10, 0)).unwrap();
    let path = tmp("truncated.safetensors");
    std::fs::write(&path, &good[..good.len() / 3]).unwrap();
    let out = mnv2c(&["run", "--interp", "--weights", s(&path)]);
    assert_one_line_error(&out, 3, &[s(&path), "safetensors"]);
}

#[test]
fn weights_with_other_num_classes_than_requested_is_a_one_line_error() {
    let path = seeded_file("seeded1000.safetensors", 1000, 0);
    let out = mnv2c(&[
        "run",
        "--interp",
        "--weights",
        s(&path),
        "--num-classes",
        "10",
    ]);
    assert_one_line_error(&out, 2, &["--num-classes 10", "1000 classes", s(&path)]);
}

#[test]
fn int64_input_is_a_one_line_error() {
    // A numpy int64 array of shape (1, 2, 2, 3).
    let header = "{'descr': '<i8', 'fortran_order': False, 'shape': (1, 2, 2, 3), }";
    let mut h = header.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(h.len() as u16).to_le_bytes());
    bytes.extend_from_slice(h.as_bytes());
    bytes.extend_from_slice(&[0u8; 12 * 8]);
    let path = tmp("int64.npy");
    std::fs::write(&path, bytes).unwrap();
    let out = mnv2c(&["run", "--interp", "--input", s(&path)]);
    assert_one_line_error(&out, 3, &[s(&path), "'<i8'", "'<f4'"]);
}

#[test]
fn wrong_rank_input_and_conflicting_sizes_are_errors() {
    let path = tmp("rank2.npy");
    npy::write(&path, &Tensor::zeros(vec![4, 3]).unwrap()).unwrap();
    let out = mnv2c(&["run", "--interp", "--input", s(&path)]);
    assert_one_line_error(&out, 4, &["f32[4,3]", "[N, H, W, 3]"]);

    let path = tmp("small.npy");
    npy::write(&path, &Tensor::zeros(vec![1, 8, 8, 3]).unwrap()).unwrap();
    let out = mnv2c(&["run", "--interp", "--input", s(&path), "--height", "9"]);
    assert_one_line_error(&out, 2, &["--height 9", "height 8"]);
}

#[test]
fn jit_run_prints_compile_and_inference_time() {
    let out = mnv2c(&[
        "run",
        "--height",
        "64",
        "--width",
        "48",
        "--num-classes",
        "7",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("input [1,64,48,3], 7 classes"), "{stdout}");
    assert!(
        stdout.contains("compile: ") && stdout.contains("inference on 1 thread(s): "),
        "{stdout}"
    );
    assert_eq!(stdout.matches(". class ").count(), 5, "{stdout}");
}

#[test]
fn weights_that_do_not_fit_name_the_tensor_and_the_file() {
    let g = mobilenet_v2(&Config {
        num_classes: 10,
        ..Config::default()
    })
    .unwrap();
    let mut w = weights::seeded(&g, 0).unwrap();
    w.remove("mobilenetv2/res3_1/dw_bn/gamma");
    let path = tmp("missing_gamma.safetensors");
    weights::save(&path, &w).unwrap();
    let out = mnv2c(&["run", "--interp", "--weights", s(&path)]);
    assert_one_line_error(
        &out,
        3,
        &["mobilenetv2/res3_1/dw_bn/gamma", "missing", s(&path)],
    );
}
