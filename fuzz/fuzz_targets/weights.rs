//! Fuzz target: the `.safetensors` weights loader on arbitrary bytes. Any panic is a bug; a
//! file that loads must save and load back to the same tensors.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mnv2c::frontend::weights;

fuzz_target!(|data: &[u8]| {
    let Ok(w) = weights::parse(data, Path::new("fuzz.safetensors")) else {
        return;
    };
    let bytes = weights::to_bytes(&w).expect("loaded weights serialise");
    let back = weights::parse(&bytes, Path::new("saved.safetensors")).expect("saved weights load");
    assert!(back == w, "save/load changed the weights");
    // `num_classes` looks at one tensor's shape; it must fail cleanly on any set.
    let _ = weights::num_classes(&w);
});
