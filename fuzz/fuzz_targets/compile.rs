//! Fuzz target: the invariant "a graph the verifier accepts always compiles". Arbitrary text is
//! parsed; a graph that verifies is emitted at every `--emit` level, before and after the
//! default passes, and each must succeed or fail with a user-facing error (exit status 3 or 4),
//! never an internal one (70), and never hang (libFuzzer's `-timeout` catches that). The
//! property test `tests/compile_always.rs` checks the same on generated graphs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnv2c::emit::{Level, emit};

fn check(graph: &mnv2c::graph::Graph) {
    for level in Level::ALL {
        if let Err(e) = emit(graph, level) {
            assert!(
                matches!(e.exit_status(), 3 | 4),
                "--emit {level:?} of a verified graph failed with status {}: {e}\n{graph}",
                e.exit_status()
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut graph) = mnv2c::graph::parse(text, "fuzz.ir") else {
        return;
    };
    if mnv2c::graph::verify(&graph).is_err() {
        return;
    }
    check(&graph);
    if mnv2c::passes::optimize(&mut graph).is_ok() {
        check(&graph);
    }
});
