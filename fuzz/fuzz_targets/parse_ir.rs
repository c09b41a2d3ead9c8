//! Fuzz target: the graph IR parser and verifier on arbitrary text. Any panic is a bug; a graph
//! that verifies must also print and parse back to itself (the text form is the IR's contract).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The CLI reads IR files with `read_to_string`, so non-UTF-8 input never reaches the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(graph) = mnv2c::graph::parse(text, "fuzz.ir") else {
        return;
    };
    if mnv2c::graph::verify(&graph).is_ok() {
        let printed = graph.to_string();
        let back = mnv2c::graph::parse(&printed, "printed.ir")
            .unwrap_or_else(|e| panic!("a verified graph does not parse back: {e}\n{printed}"));
        assert!(back == graph, "print/parse changed the graph:\n{printed}");
    }
});
