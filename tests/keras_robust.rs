//! The Keras model reader on damaged files (the fast, always-run sibling of the `keras_model`
//! fuzz target): bytes flipped, runs zeroed and files cut short at many places in a real `.h5`
//! and a real `.keras` must give an error or a model, never a panic.

use std::path::Path;

use mnv2c::frontend::keras::{self, InputSize};

/// splitmix64, so a failing case reproduces from its number.
fn rng(mut s: u64) -> impl FnMut() -> u64 {
    move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn damaged_never_panics(file: &str, cases: u64) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keras")
        .join(file);
    let original = std::fs::read(&path).unwrap();
    let size = InputSize {
        batch: Some(1),
        height: Some(32),
        width: Some(40),
    };
    for case in 0..cases {
        let mut next = rng(case);
        let mut bytes = original.clone();
        let len = bytes.len() as u64;
        match case % 3 {
            0 => bytes.truncate((next() % len) as usize),
            1 => {
                for _ in 0..1 + next() % 16 {
                    let i = (next() % len) as usize;
                    bytes[i] ^= 1 << (next() % 8);
                }
            }
            _ => {
                // A zeroed run early in the file, where the metadata lives.
                let start = (next() % (len / 8)) as usize;
                let end = (start + 1 + (next() % 256) as usize).min(bytes.len());
                bytes[start..end].iter_mut().for_each(|b| *b = 0);
            }
        }
        let result = std::panic::catch_unwind(|| keras::parse(bytes, Path::new(file), size));
        assert!(result.is_ok(), "{file}: damage case {case} panicked");
    }
}

#[test]
fn damaged_h5_never_panics() {
    damaged_never_panics("a020_nested_none.h5", 90);
}

#[test]
fn damaged_keras_zip_never_panics() {
    damaged_never_panics("a020_nested_none.keras", 90);
}
