//! Shared by the command-line tests: running the `mnv2c` binary and checking a failure the way
//! the CLI promises it (a non-zero status, exactly one `error: ...` line on stderr, no panic).

#![allow(dead_code)] // each test crate uses a different part of this module

use std::process::{Command, Output};

/// Runs the `mnv2c` binary built for these tests, from the crate's root (so that relative
/// paths such as `ir-examples/...` resolve).
pub fn mnv2c(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mnv2c"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run mnv2c")
}

/// [`mnv2c`], asserting that it succeeded (its stderr in the message otherwise).
pub fn mnv2c_ok(args: &[&str]) -> Output {
    let out = mnv2c(args);
    assert!(
        out.status.success(),
        "mnv2c {}: {}",
        args.join(" "),
        stderr(&out)
    );
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failure with exit status `status` and exactly one `error: ...` line on stderr,
/// containing every string of `needles`, and no panic; returns that line.
pub fn assert_one_line_error(o: &Output, status: i32, needles: &[&str]) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(status), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in {err}");
    }
    err
}
