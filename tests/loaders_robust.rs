//! The weights and `.npy` loaders never panic, whatever the bytes: they return an error or a
//! value, and a value they return survives a write and a read unchanged.
//!
//! Random bytes alone rarely get past the first check (the magic string, the header length), so
//! each loader also gets files that are well-formed up to one random part: a header with random
//! dtypes, shapes and offsets, or a valid file with a random byte range overwritten or cut.
//! The cargo-fuzz targets in `fuzz/` search the same space far longer (`docs/fuzzing.md`).

use std::path::Path;

use mnv2c::frontend::weights;
use mnv2c::{Tensor, TensorMap, npy};
use proptest::prelude::*;

fn weights_roundtrip(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(w) = weights::parse(bytes, Path::new("fuzz.safetensors")) {
        let back = weights::parse(&weights::to_bytes(&w).unwrap(), Path::new("saved")).unwrap();
        prop_assert!(back == w);
        let _ = weights::num_classes(&w);
    }
    Ok(())
}

fn npy_roundtrip(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(t) = npy::parse(bytes, Path::new("fuzz.npy")) {
        let back = npy::parse(&npy::to_bytes(&t), Path::new("written.npy")).unwrap();
        prop_assert_eq!(back.dims(), t.dims());
        let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&back), bits(&t));
    }
    Ok(())
}

/// A small valid weights file: two tensors with shapes from `dims`.
fn valid_weights(dims: &[usize]) -> Vec<u8> {
    let mut w = TensorMap::new();
    let n: usize = dims.iter().product();
    w.insert(
        "a".into(),
        Tensor::new(dims.to_vec(), (0..n).map(|i| i as f32).collect()).unwrap(),
    );
    w.insert("b/c".into(), Tensor::new(vec![2], vec![1.5, -2.0]).unwrap());
    weights::to_bytes(&w).unwrap()
}

/// A header value for safetensors' JSON: a dtype, shape and offsets, any of which may be wrong.
fn tensor_entry() -> impl Strategy<Value = String> {
    let dtype = prop::sample::select(vec!["F32", "F16", "BF16", "I64", "U8", "BOOL", "F64", "X"]);
    let dim = prop_oneof![0usize..5, Just(usize::MAX), Just(1usize << 62)];
    (
        dtype,
        prop::collection::vec(dim, 0..4),
        0usize..64,
        0usize..64,
    )
        .prop_map(|(d, shape, a, b)| {
            format!(r#"{{"dtype":"{d}","shape":{shape:?},"data_offsets":[{a},{b}]}}"#)
        })
}

fn npy_file(header: &str, data: &[u8], version: u8) -> Vec<u8> {
    let mut out = b"\x93NUMPY".to_vec();
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn weights_random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        weights_roundtrip(&bytes)?;
    }

    /// A plausible length prefix and JSON header with random entries, then random data.
    #[test]
    fn weights_random_headers_never_panic(
        entries in prop::collection::vec(("[a-c]{1,2}", tensor_entry()), 0..4),
        data in prop::collection::vec(any::<u8>(), 0..64),
        lie in prop_oneof![Just(0i64), -3i64..3, Just(i64::MAX)],
    ) {
        let body: Vec<String> = entries.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        let header = format!("{{{}}}", body.join(","));
        let len = (header.len() as i64).saturating_add(lie) as u64;
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&data);
        weights_roundtrip(&bytes)?;
    }

    /// A valid file with a byte range overwritten, and cut at a random length.
    #[test]
    fn weights_damaged_files_never_panic(
        dims in prop::collection::vec(0usize..4, 0..4),
        at in any::<prop::sample::Index>(),
        patch in prop::collection::vec(any::<u8>(), 0..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = valid_weights(&dims);
        let start = at.index(bytes.len());
        for (i, b) in patch.iter().enumerate() {
            if let Some(slot) = bytes.get_mut(start + i) {
                *slot = *b;
            }
        }
        weights_roundtrip(&bytes)?;
        weights_roundtrip(&bytes[..cut.index(bytes.len() + 1)])?;
    }

    #[test]
    fn npy_random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        npy_roundtrip(&bytes)?;
        // The same bytes after a valid preamble reach the header parser.
        let mut with_magic = b"\x93NUMPY\x01\x00".to_vec();
        with_magic.extend_from_slice(&bytes);
        npy_roundtrip(&with_magic)?;
    }

    /// Headers built from the dict's own tokens in random order, with random shapes.
    #[test]
    fn npy_random_headers_never_panic(
        tokens in prop::collection::vec(prop::sample::select(vec![
            "{", "}", "(", ")", ",", ":", " ", "'descr'", "'<f4'", "'<f8'", "'fortran_order'",
            "True", "False", "'shape'", "1", "3", "0", "-1", "18446744073709551616", "'", "\"",
        ]), 0..24),
        shape in prop::collection::vec(prop_oneof![0usize..4, Just(usize::MAX)], 0..5),
        data in prop::collection::vec(any::<u8>(), 0..64),
        version in prop::sample::select(vec![1u8, 2, 3, 4]),
    ) {
        npy_roundtrip(&npy_file(&tokens.concat(), &data, version))?;
        let dims: Vec<String> = shape.iter().map(|d| format!("{d},")).collect();
        let header = format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}\n",
            dims.concat()
        );
        npy_roundtrip(&npy_file(&header, &data, version))?;
    }

    /// A valid file with a byte range overwritten, and cut at a random length.
    #[test]
    fn npy_damaged_files_never_panic(
        dims in prop::collection::vec(0usize..4, 0..4),
        at in any::<prop::sample::Index>(),
        patch in prop::collection::vec(any::<u8>(), 0..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let n: usize = dims.iter().product();
        let mut bytes = npy::to_bytes(&Tensor::new(dims, vec![0.25; n]).unwrap());
        let start = at.index(bytes.len());
        for (i, b) in patch.iter().enumerate() {
            if let Some(slot) = bytes.get_mut(start + i) {
                *slot = *b;
            }
        }
        npy_roundtrip(&bytes)?;
        npy_roundtrip(&bytes[..cut.index(bytes.len() + 1)])?;
    }
}
