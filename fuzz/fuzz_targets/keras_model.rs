//! Fuzz target: the Keras model reader (`.h5` HDF5 and `.keras` zip, told apart by signature)
//! on arbitrary bytes. Any panic is a bug; a model that loads must verify and have every
//! constant bound with its declared shape.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mnv2c::frontend::keras::{self, InputSize};

fuzz_target!(|data: &[u8]| {
    let size = InputSize {
        batch: Some(1),
        height: Some(32),
        width: Some(32),
    };
    let Ok(m) = keras::parse(data.to_vec(), Path::new("fuzz.h5"), size) else {
        return;
    };
    mnv2c::graph::verify(&m.graph).expect("a loaded model verifies");
    for (name, c) in m.graph.consts() {
        assert_eq!(m.weights[name].dims(), c.ty.dims.as_slice(), "@{name}");
    }
});
