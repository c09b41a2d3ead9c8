//! The ONNX front end against ONNX Runtime: every fixture of `tests/fixtures/onnx/` (made by
//! `tools/onnx_fixtures.py` with real exporters) imported, run through the reference
//! interpreter and the JIT, and compared with ONNX Runtime's logits and probabilities
//! (`src/tolerance.rs`), top-5 classes included.

use std::path::{Path, PathBuf};

use mnv2c::frontend::onnx::{self, ImportOptions};
use mnv2c::frontend::weights;
use mnv2c::graph::interp;
use mnv2c::tolerance::{self, LOGITS_ABS, LOGITS_REL, PROBS_ABS};
use mnv2c::{CompiledModel, Options, Tensor, npy};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/onnx")
        .join(name)
}

fn top5(row: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    order.truncate(5);
    order
}

fn check(what: &str, got: &Tensor, want: &Tensor, rel: f32, abs: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let c = tolerance::compare(got.data(), want.data(), rel, abs).unwrap();
    assert!(c.passed(), "{what}: {c:?}");
}

/// Imports `name.onnx` with the fixture input's shape, runs it both ways, compares.
fn matches_onnx_runtime(name: &str) {
    let x = npy::read(&fixture(&format!("{name}.x.npy"))).unwrap();
    let want_logits = npy::read(&fixture(&format!("{name}.logits.npy"))).unwrap();
    let want_probs = npy::read(&fixture(&format!("{name}.probs.npy"))).unwrap();
    let options = ImportOptions {
        input_shape: Some(x.dims().to_vec()),
    };
    let mut m = onnx::read(&fixture(&format!("{name}.onnx")), &options).unwrap();
    m.classifier().unwrap();
    let consts = weights::bind(&m.graph, &m.params).unwrap();
    let by_interp = interp::run(&m.graph, &consts, std::slice::from_ref(&x)).unwrap();
    let model = CompiledModel::compile(&m.graph, &m.params, &Options::default()).unwrap();
    let by_jit = model.run_all(std::slice::from_ref(&x)).unwrap();
    for (how, out) in [("interpreter", &by_interp), ("jit", &by_jit)] {
        check(
            &format!("{name} {how} logits"),
            &out[0],
            &want_logits,
            LOGITS_REL,
            LOGITS_ABS,
        );
        check(
            &format!("{name} {how} probs"),
            &out[1],
            &want_probs,
            0.0,
            PROBS_ABS,
        );
        let classes = want_logits.dims()[1];
        for (got, want) in out[0]
            .data()
            .chunks_exact(classes)
            .zip(want_logits.data().chunks_exact(classes))
        {
            assert_eq!(top5(got), top5(want), "{name} {how}: top-5 classes");
        }
    }
}

#[test]
fn tutorial_model_matches_onnx_runtime() {
    matches_onnx_runtime("tutorial_small");
}

#[test]
fn tf2onnx_nhwc_model_matches_onnx_runtime() {
    matches_onnx_runtime("keras_nhwc_op13");
}

#[test]
fn tf2onnx_nchw_models_match_onnx_runtime_at_opsets_9_and_18() {
    matches_onnx_runtime("keras_nchw_op9");
    matches_onnx_runtime("keras_nchw_op18");
}

#[test]
fn every_supported_operator_matches_onnx_runtime() {
    matches_onnx_runtime("ops_mix_op13");
}

#[test]
fn external_data_next_to_the_model_is_read() {
    matches_onnx_runtime("ops_mix_ext");
}

/// The imported graph prints and parses back to itself (names, layouts, the transpose op).
#[test]
fn imported_graph_round_trips_through_the_text_form() {
    let m = onnx::read(&fixture("tutorial_small.onnx"), &ImportOptions::default()).unwrap();
    let text = m.graph.to_string();
    assert!(
        text.contains("transpose(%input) {perm = [0, 2, 3, 1]}"),
        "{text}"
    );
    let back = mnv2c::graph::parse(&text, "printed.ir").unwrap();
    assert_eq!(back, m.graph);
    assert_eq!(m.inputs, vec![("input".to_string(), vec![1, 3, 32, 32])]);
    assert_eq!(
        m.outputs,
        vec![("output".to_string(), "output".to_string())]
    );
}

/// Every prefix of a real model and every single-byte change in its first kilobyte is an
/// error or a model, never a panic.
#[test]
fn truncated_and_corrupted_files_never_panic() {
    let bytes = std::fs::read(fixture("ops_mix_op13.onnx")).unwrap();
    let options = ImportOptions {
        input_shape: Some(vec![1, 3, 20, 20]),
    };
    let path = Path::new("m.onnx");
    for len in 0..bytes.len() {
        let r = onnx::import(&bytes[..len], path, None, &options);
        if len < 100 {
            assert!(r.is_err(), "a {len}-byte prefix imported");
        }
    }
    for at in 0..1024.min(bytes.len()) {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[at] ^= flip;
            let _ = onnx::import(&b, path, None, &options);
        }
    }
}

/// ONNX names outside the bare grammar keep their spelling: printed quoted, parsed back equal.
#[test]
fn onnx_names_keep_their_spelling_through_quoted_names() {
    let options = ImportOptions {
        input_shape: Some(vec![1, 32, 32, 3]),
    };
    let m = onnx::read(&fixture("keras_nhwc_op13.onnx"), &options).unwrap();
    let text = m.graph.to_string();
    assert!(text.contains("%\"Conv__339:0\" = conv2d("), "{text}");
    assert_eq!(mnv2c::graph::parse(&text, "printed.ir").unwrap(), m.graph);
    let escaped = "graph g {\n  %\"x \\\"1\\\" \\\\ y\" = input : f32[1,2]\n  %\"s:0\" = softmax(%\"x \\\"1\\\" \\\\ y\") : f32[1,2]\n  output %\"s:0\"\n}\n";
    let g = mnv2c::graph::parse(escaped, "quoted.ir").unwrap();
    assert!(g.find("x \"1\" \\ y").is_some());
    assert_eq!(g.to_string(), escaped);
    for bad in ["%\"\" = input", "%\"open = input", "%\"a\\n\" = input"] {
        let text = format!("graph g {{\n  {bad} : f32[1]\n  output %a\n}}\n");
        assert!(mnv2c::graph::parse(&text, "bad.ir").is_err(), "{bad}");
    }
}

/// `mnv2c run --model FILE` on an ONNX file and a Keras file (told apart by their bytes):
/// `--logits`, `--probs` and `--output NAME=FILE.npy` write what the exporters' runtimes computed.
#[test]
fn run_model_file_writes_logits_probs_and_named_outputs() {
    let dir = std::env::temp_dir().join(format!("mnv2c-onnx-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keras = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keras");
    let cases = [
        (
            fixture("ops_mix_op13.onnx"),
            fixture("ops_mix_op13"),
            Some("prob"),
        ),
        (
            keras.join("a035_32_top.h5"),
            keras.join("a035_32_top"),
            None,
        ),
    ];
    for (model, refs, named) in cases {
        let refs = refs.to_str().unwrap();
        let (l, p, o) = (dir.join("l.npy"), dir.join("p.npy"), dir.join("o.npy"));
        let mut args = vec![
            "run".to_string(),
            "--model".into(),
            model.display().to_string(),
            "--input".into(),
            format!("{refs}.x.npy"),
            "--logits".into(),
            l.display().to_string(),
            "--probs".into(),
            p.display().to_string(),
        ];
        if let Some(name) = named {
            args.extend(["--output".into(), format!("{name}={}", o.display())]);
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mnv2c"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want_logits = npy::read(Path::new(&format!("{refs}.logits.npy"))).unwrap();
        let want_probs = npy::read(Path::new(&format!("{refs}.probs.npy"))).unwrap();
        check(
            refs,
            &npy::read(&l).unwrap(),
            &want_logits,
            LOGITS_REL,
            LOGITS_ABS,
        );
        check(refs, &npy::read(&p).unwrap(), &want_probs, 0.0, PROBS_ABS);
        if named.is_some() {
            check(refs, &npy::read(&o).unwrap(), &want_probs, 0.0, PROBS_ABS);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `classify` feeds images in the layout the file declares: the same Keras model exported
/// NHWC (opset 13) and NCHW (opset 9) gives the same probabilities for the same photos.
#[test]
fn classify_feeds_nchw_and_nhwc_models_alike() {
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keras/images");
    let probs = |model: &str| -> Vec<f64> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mnv2c"))
            .args(["classify", "--json", "--top", "5", "--model"])
            .arg(fixture(model))
            .arg(images.join("chelsea_160.png"))
            .arg(images.join("astronaut_160.png"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        // Every `"prob":` number, in order (image by image, rank by rank).
        text.split("\"prob\":")
            .skip(1)
            .map(|s| {
                let end = s.find(['}', ',']).unwrap();
                s[..end].trim().parse().unwrap()
            })
            .collect()
    };
    let (nhwc, nchw) = (probs("keras_nhwc_op13.onnx"), probs("keras_nchw_op9.onnx"));
    assert_eq!(nhwc.len(), 10);
    for (a, b) in nhwc.iter().zip(&nchw) {
        assert!(
            (a - b).abs() <= f64::from(PROBS_ABS),
            "{nhwc:?} vs {nchw:?}"
        );
    }
}
