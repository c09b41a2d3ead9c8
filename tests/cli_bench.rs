//! `mnv2c bench` as scripts read it: the `--json` keys and their meaning (the tier, the peak's
//! width, FLOP totals that add up, every layer in one family), the text tables, and one-line
//! errors for bad settings. Timings are never compared with a bound (speed is measured, not
//! asserted); only their consistency is checked.

mod cli_support;

use cli_support::{assert_one_line_error, mnv2c, mnv2c_ok};
use mnv2c::codegen::Isa;
use serde_json::Value;

/// A small model: batch 2, an odd 40x33 input, 7 classes, so that nothing is the default.
const SMALL: [&str; 12] = [
    "bench",
    "--batch",
    "2",
    "--height",
    "40",
    "--width",
    "33",
    "--num-classes",
    "7",
    "--runs",
    "3",
    "--warmup",
];

fn bench_json(isa: Isa, threads: usize) -> Value {
    let threads = threads.to_string();
    let mut args = SMALL.to_vec();
    args.extend(["1", "--json", "--isa", isa.name(), "--threads", &threads]);
    serde_json::from_slice(&mnv2c_ok(&args).stdout).expect("one JSON object")
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

/// Every tier this CPU runs, at 1 and 2 threads: the keys of issue 10 and what they must say.
/// A tier the CPU lacks is named as skipped.
#[test]
fn json_reports_the_tier_its_peak_and_consistent_totals() {
    for isa in [Isa::Avx512, Isa::Avx2, Isa::Portable] {
        if let Some(missing) = isa.missing() {
            eprintln!("skipped: tier {} (this CPU lacks {missing})", isa.name());
            continue;
        }
        for threads in [1, 2] {
            let d = bench_json(isa, threads);
            let at = format!("{} at {threads} thread(s)", isa.name());
            assert_eq!(d["isa"], isa.name(), "{at}");
            assert_eq!(num(&d, "peak_bits"), isa.bits() as f64, "{at}");
            assert_eq!(num(&d, "threads"), threads as f64, "{at}");
            assert_eq!(num(&d, "runs"), 3.0, "{at}");
            assert_eq!(d["model"], "mobilenetv2 [2,40,33,3] -> 7 classes", "{at}");
            for key in ["compile_ms", "median_ms", "gflop", "peak_gflops_per_core"] {
                assert!(num(&d, key) > 0.0, "{at}: {key} in {d}");
            }
            assert!(num(&d, "p90_ms") >= num(&d, "median_ms"), "{at}");

            let families = d["families"].as_array().expect("families[]");
            let layers = d["layers"].as_array().expect("layers[]");
            let names: Vec<&str> = families
                .iter()
                .map(|f| f["family"].as_str().expect("family name"))
                .collect();
            for want in ["conv1x1", "conv", "depthwise"] {
                assert!(names.contains(&want), "{at}: no {want} family in {names:?}");
            }
            // Each layer is counted in exactly one family, and the families add up to the model.
            let counted: f64 = families.iter().map(|f| num(f, "layers")).sum();
            assert_eq!(counted, layers.len() as f64, "{at}");
            let mflop: f64 = families.iter().map(|f| num(f, "mflop")).sum();
            assert!(
                (mflop - 1e3 * num(&d, "gflop")).abs() <= 1e-3 * mflop + 1e-3,
                "{at}: families {mflop} MFLOP, model {} GFLOP",
                num(&d, "gflop")
            );
            for f in families {
                let p = num(f, "percent_of_peak");
                assert!(p.is_finite() && p >= 0.0, "{at}: {f}");
            }
            // The logits GEMV counts among the 1x1 convs, and runs in the requested tier there;
            // the layers with no micro-kernel say portable.
            let logits = layers
                .iter()
                .find(|l| l["name"] == "logits/conv")
                .expect("a logits layer");
            assert_eq!(logits["family"], "conv1x1", "{at}");
            assert_eq!(logits["isa"], isa.name(), "{at}");
            for l in layers {
                let tier = l["isa"].as_str().expect("a layer's isa");
                assert!(tier == isa.name() || tier == "portable", "{at}: {l}");
                assert!(
                    num(l, "ms") >= 0.0 && num(l, "percent_of_peak") >= 0.0,
                    "{l}"
                );
            }
        }
    }
}

/// The text form: the summary, the tier and its peak, and both tables.
#[test]
fn text_report_names_the_tier_and_has_both_tables() {
    let mut args = SMALL.to_vec();
    args.extend(["0", "--isa", "portable"]);
    let out = mnv2c_ok(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("mobilenetv2 [2,40,33,3] -> 7 classes: 1 thread(s), 3 runs;"),
        "{text}"
    );
    assert!(text.contains("isa portable: 128-bit FMA peak"), "{text}");
    assert!(text.contains("\nfamily "), "{text}");
    assert!(text.contains("\nlayer "), "{text}");
    assert!(text.contains("\nlogits/conv "), "{text}");
}

/// Bad settings: a one-line error naming what is wrong, the usual status (2 for usage, 3 for a
/// model that cannot be built or read), and nothing on stdout.
#[test]
fn bad_settings_are_one_line_errors() {
    let cases: [(&[&str], i32, &str); 5] = [
        (&["bench", "--runs", "0"], 2, "--runs"),
        (&["bench", "--isa", "sse9"], 2, "sse9"),
        (
            &["bench", "--threads", "0", "--height", "32", "--width", "32"],
            2,
            "threads",
        ),
        (&["bench", "--height", "0"], 3, "height"),
        (&["bench", "--model", "no/such/model.h5"], 2, "no such file"),
    ];
    for (args, status, needle) in cases {
        let out = mnv2c(args);
        assert_one_line_error(&out, status, &[needle]);
        assert!(out.stdout.is_empty(), "{args:?} printed a report");
    }
}
