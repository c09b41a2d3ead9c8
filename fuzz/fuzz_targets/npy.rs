//! Fuzz target: the `.npy` reader on arbitrary bytes. Any panic is a bug; an array that loads
//! must write and read back bit for bit.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = mnv2c::npy::parse(data, Path::new("fuzz.npy")) else {
        return;
    };
    let back = mnv2c::npy::parse(&mnv2c::npy::to_bytes(&t), Path::new("written.npy"))
        .expect("a written array reads back");
    assert_eq!(back.dims(), t.dims());
    let bits = |t: &mnv2c::Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert!(bits(&back) == bits(&t), "write/read changed the data");
});
