//! The `mnv2c` command line as a user meets it: outputs, one-line errors, exit statuses.

use std::path::Path;

mod cli_support;
use cli_support::{assert_one_line_error, mnv2c, stderr, stdout};

/// `file` must equal the CLI's output for `model_args`, and compiling `file` with `file_args`
/// must reproduce it byte for byte.
fn assert_example_in_sync(file: &str, model_args: &[&str], file_args: &[&str]) {
    let mut args = vec!["compile", "--model", "mobilenetv2", "--emit", "ir"];
    args.extend(model_args);
    let out = mnv2c(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
    assert!(
        stdout(&out) == text,
        "{file} is stale: regenerate it with `cargo run --release -- {} -o {file}`",
        args.join(" ")
    );
    let mut again_args = vec!["compile", file, "--emit", "ir"];
    again_args.extend(file_args);
    let again = mnv2c(&again_args);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again) == text,
        "`mnv2c {}` does not reproduce {file}",
        again_args.join(" ")
    );
}

#[test]
fn ir_examples_of_the_model_are_in_sync_with_the_cli() {
    // The CLI's default output: the optimised graph. The default pipeline leaves it unchanged,
    // so compiling the file reproduces it.
    assert_example_in_sync("ir-examples/mobilenetv2.ir", &[], &[]);
    // The front end's graph before any pass: the passes' input, snapshotted after each pass.
    assert_example_in_sync("ir-examples/mobilenetv2_seed.ir", &["-O0"], &["-O0"]);
}

#[test]
fn every_invalid_example_fails_with_its_expected_message() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("ir-examples/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ir"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "only {} invalid examples", files.len());
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let expected = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| {
                panic!("{}: first line must be `# expect: <error>`", path.display())
            });
        let rel = format!(
            "ir-examples/invalid/{}",
            path.file_name().unwrap().to_string_lossy()
        );
        let out = mnv2c(&["compile", &rel, "--emit", "ir"]);
        let err = assert_one_line_error(&out, 3, &[]);
        assert_eq!(err.trim_end(), format!("error: {expected}"), "{rel}");
        assert!(stdout(&out).is_empty(), "{rel} printed output");
    }
}

#[test]
fn usage_errors_are_one_line() {
    for args in [
        &[
            "compile",
            "--model",
            "mobilenetv2",
            "--emit",
            "ir",
            "--bogus",
        ][..],
        &["compile", "--model", "resnet50", "--emit", "ir"],
        &["compile", "--model", "mobilenetv2", "--emit", "pdf"],
        &["compile", "--model", "mobilenetv2"],
        &[
            "compile",
            "--model",
            "mobilenetv2",
            "--emit",
            "ir",
            "--height",
            "-3",
        ],
        &["compile", "--emit", "ir"],
        &[
            "compile",
            "ir-examples/head.ir",
            "--model",
            "mobilenetv2",
            "--emit",
            "ir",
        ],
        &[
            "compile",
            "ir-examples/head.ir",
            "--num-classes",
            "3",
            "--emit",
            "ir",
        ],
        &["frobnicate"],
        &[],
    ] {
        let out = mnv2c(args);
        assert_one_line_error(&out, 2, &[]);
    }
}

#[test]
fn bad_model_configurations_and_files_are_one_line_errors() {
    for (args, status) in [
        (
            &[
                "compile",
                "--model",
                "mobilenetv2",
                "--emit",
                "ir",
                "--num-classes",
                "0",
            ][..],
            3,
        ),
        (
            &[
                "compile",
                "--model",
                "mobilenetv2",
                "--emit",
                "ir",
                "--batch",
                "0",
            ],
            3,
        ),
        (&["compile", "no/such/file.ir", "--emit", "ir"], 3),
        (&["compile", "README.md", "--emit", "ir"], 3),
        (
            &[
                "compile",
                "--model",
                "mobilenetv2",
                "--emit",
                "ir",
                "-o",
                "no/such/dir/out.ir",
            ],
            3,
        ),
    ] {
        let out = mnv2c(args);
        assert_one_line_error(&out, status, &[]);
    }
}

#[test]
fn huge_model_dimensions_are_rejected_not_overflowed() {
    let big = (usize::MAX / 2).to_string();
    let out = mnv2c(&[
        "compile",
        "--model",
        "mobilenetv2",
        "--emit",
        "ir",
        "--height",
        &big,
    ]);
    let err = assert_one_line_error(&out, 3, &[]);
    assert!(
        err.contains("overflow") || err.contains("too large"),
        "{err}"
    );
}

#[test]
fn output_goes_to_the_file_named_by_dash_o() {
    let dir = std::env::temp_dir().join(format!("mnv2c-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("head.ir");
    let out = mnv2c(&[
        "compile",
        "ir-examples/head.ir",
        "--emit",
        "ir",
        "-o",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.starts_with("graph head {"), "{written}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--emit memplan` lists the activations a one-thread model keeps in fold windows, and the
/// arena does not place them.
#[test]
fn memplan_lists_the_fold_windows_outside_the_arena() {
    let out = mnv2c(&["compile", "--model", "mobilenetv2", "--emit", "memplan"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let (arena, rest) = text.split_once("# fold windows: ").expect("a fold listing");
    let (count, rest) = rest.split_once(' ').unwrap();
    let count: usize = count.parse().unwrap();
    assert!(
        count > 0,
        "the seed model at 224x224 folds its largest activations"
    );
    let (listing, _) = rest
        .split_once("# schedule:")
        .expect("the schedule after the folds");
    // The rest of the header line, a column header, then one line per folded activation.
    let folded: Vec<&str> = listing
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(folded.len(), count, "{listing}");
    for name in folded {
        assert!(name.starts_with('%'), "{name}");
        let placed = arena
            .lines()
            .any(|l| l.split_whitespace().last() == Some(name));
        assert!(!placed, "{name} is both folded and in the arena");
    }
}

#[test]
fn every_emit_level_prints_for_the_model_and_every_example() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("ir-examples");
    let mut sources: Vec<Vec<String>> = vec![vec!["--model".into(), "mobilenetv2".into()]];
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "ir") {
            sources.push(vec![format!(
                "ir-examples/{}",
                path.file_name().unwrap().to_string_lossy()
            )]);
        }
    }
    // What each level's text must contain.
    let marks = [
        ("loops", "kernel \""),
        ("clif", "function "),
        ("asm", "ret"),
        ("memplan", "# arena "),
    ];
    for source in &sources {
        for (level, mark) in marks {
            let mut args: Vec<&str> = vec!["compile"];
            args.extend(source.iter().map(String::as_str));
            args.extend(["--emit", level]);
            let out = mnv2c(&args);
            assert!(out.status.success(), "{args:?}: {}", stderr(&out));
            assert!(stdout(&out).contains(mark), "{args:?} printed no `{mark}`");
        }
    }
}
