//! The pass flags of `mnv2c compile`: `-O0`, `--passes`, `--print-after(-all)`,
//! `--list-passes`, and their one-line usage errors (exit status 2).

use std::process::Output;

mod cli_support;
use cli_support::{mnv2c, stderr, stdout};

const MODEL: [&str; 7] = [
    "compile",
    "--model",
    "mobilenetv2",
    "--height",
    "32",
    "--width",
    "32",
];

fn compile(extra: &[&str]) -> Output {
    let args: Vec<&str> = MODEL
        .iter()
        .copied()
        .chain(["--emit", "ir"])
        .chain(extra.iter().copied())
        .collect();
    mnv2c(&args)
}

fn ops(ir: &str, mnemonic: &str) -> usize {
    ir.lines()
        .filter(|l| l.trim_start().starts_with('%') && l.contains(&format!("= {mnemonic}(")))
        .count()
}

#[test]
fn emit_ir_runs_the_default_pipeline_and_o0_runs_none() {
    let out = compile(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ir = stdout(&out);
    assert_eq!(ops(&ir, "conv2d"), 56);
    assert_eq!(
        ops(&ir, "batch_norm") + ops(&ir, "relu6") + ops(&ir, "add"),
        0
    );
    assert!(stderr(&out).is_empty());

    let ir = stdout(&compile(&["-O0"]));
    assert_eq!(
        (ops(&ir, "batch_norm"), ops(&ir, "relu6"), ops(&ir, "add")),
        (53, 36, 12)
    );
}

#[test]
fn passes_runs_exactly_the_listed_passes() {
    let ir = stdout(&compile(&["--passes", "fold-batchnorm"]));
    assert_eq!(
        (ops(&ir, "batch_norm"), ops(&ir, "relu6"), ops(&ir, "add")),
        (0, 36, 12)
    );
    let ir = stdout(&compile(&["--passes", "fuse-relu6"]));
    // relu6 follows a batch norm everywhere, so fusing alone does nothing.
    assert_eq!(ops(&ir, "relu6"), 36);
}

#[test]
fn print_after_goes_to_stderr_under_a_comment_header_and_parses() {
    let out = compile(&["--print-after", "fuse-add"]);
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(
        err.starts_with("# ----- IR after fuse-add (changed) -----\ngraph mobilenetv2 {"),
        "{err}"
    );
    // The header is a comment, so the dump parses.
    mnv2c::graph::parse(&err, "<stderr>").unwrap();
    let all = stderr(&compile(&["--print-after-all"]));
    let headers: Vec<&str> = all.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(
        headers,
        [
            "# ----- IR after fold-batchnorm (changed) -----",
            "# ----- IR after fuse-add (changed) -----",
            "# ----- IR after fuse-relu6 (changed) -----",
            "# ----- IR after fold-pad (unchanged) -----",
            "# ----- IR after fold-rescale (unchanged) -----",
            "# ----- IR after dce (unchanged) -----",
        ]
    );
}

#[test]
fn list_passes_needs_no_model() {
    let out = mnv2c(&["compile", "--list-passes"]);
    assert!(out.status.success());
    let names: Vec<String> = stdout(&out)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "fold-batchnorm",
            "fuse-add",
            "fuse-relu6",
            "fold-pad",
            "fold-rescale",
            "dce"
        ]
    );
}

#[test]
fn bad_pass_flags_are_one_line_usage_errors() {
    for (extra, message) in [
        (&["-O0", "--passes", "dce"][..], "cannot be used with"),
        (
            &["--passes", "dce,nope"][..],
            "error: unknown pass 'nope' (valid passes: fold-batchnorm, fuse-add, fuse-relu6, fold-pad, fold-rescale, dce)",
        ),
        (&["--print-after", "nope"][..], "error: unknown pass 'nope'"),
        (
            &["-O0", "--print-after", "dce"][..],
            "error: --print-after dce: the pass does not run in this pipeline",
        ),
        (&["--passes", ""][..], "error: empty pass list"),
    ] {
        let out = compile(extra);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{extra:?}: {err}");
        assert!(err.contains(message), "{extra:?}: {err}");
        assert!(stdout(&out).is_empty());
    }
}
