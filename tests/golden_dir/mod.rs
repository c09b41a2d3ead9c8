//! Where TensorFlow's golden data is (`shared/golden/`), for the tests that compare with it.
//!
//! Those tests are `#[ignore]`d, so a plain `cargo test` reports them as ignored instead of
//! passing without checking anything. `.ci/run` runs them (`-- --ignored`) with
//! `MNV2C_GOLDEN_DIR` set; run that way, a variable that is unset or names a directory without
//! the data fails the test (see `docs/testing.md`).

use std::path::PathBuf;

/// The golden directory named by `MNV2C_GOLDEN_DIR`; panics (failing the test) if it is unset
/// or holds no data.
pub fn golden_dir() -> PathBuf {
    let Some(dir) = std::env::var_os("MNV2C_GOLDEN_DIR").map(PathBuf::from) else {
        panic!(
            "MNV2C_GOLDEN_DIR is not set: it must name the golden data (e.g. /work/shared/golden)"
        );
    };
    assert!(
        dir.join("a").join("weights.safetensors").is_file(),
        "MNV2C_GOLDEN_DIR={} holds no golden data (no a/weights.safetensors)",
        dir.display()
    );
    dir
}
