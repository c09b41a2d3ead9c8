//! Fuzz target: the ONNX importer (protobuf decoding, tensor decoding, shape folding, operator
//! translation) on arbitrary bytes. Any panic is a bug; a model that imports must verify and
//! its printed IR must parse back to an equal graph.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mnv2c::frontend::onnx::{self, ImportOptions};

fuzz_target!(|data: &[u8]| {
    // Also a fixed shape for symbolic inputs (the seed's), so more models get past the input
    // declaration. No
    // directory: external data is refused, never read from the fuzzer's disk.
    let options = ImportOptions { input_shape: None };
    let path = Path::new("fuzz.onnx");
    for options in [
        options,
        ImportOptions {
            input_shape: Some(vec![1, 3, 20, 20]),
        },
    ] {
        let Ok(mut m) = onnx::import(data, path, None, &options) else {
            continue;
        };
        mnv2c::graph::verify(&m.graph).expect("an imported graph verifies");
        let text = m.graph.to_string();
        let back = mnv2c::graph::parse(&text, "printed.ir").expect("printed IR parses");
        assert!(back == m.graph, "print/parse changed the graph");
        let _ = m.classifier();
    }
});
