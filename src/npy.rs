//! Reading and writing `.npy` arrays: little-endian f32 (`'<f4'`), C order, only.
//!
//! Format (numpy's `NEP 1`): the magic `\x93NUMPY`, a major and minor version byte, the header
//! length (`u16` little-endian in version 1.0, `u32` in 2.0 and 3.0), then an ASCII (3.0: UTF-8)
//! Python dict literal `{'descr': '<f4', 'fortran_order': False, 'shape': (1, 224, 224, 3), }`
//! padded with spaces and ended by `\n`, then the raw data.
//!
//! What must hold for a file to be read: the magic and a known version; a header that parses as
//! exactly those three keys; `descr` little-endian f32; `fortran_order` False; and exactly
//! `product(shape) * 4` data bytes after the header. Anything else is an [`Error::Format`] naming
//! the path and what was expected against what was found. The size the header claims is checked
//! against the file's length, with checked arithmetic, *before* anything is allocated, so a
//! header claiming a huge shape cannot cause a giant allocation or an overflow.
//!
//! [`write()`] writes version 1.0 (2.0 only if the header would not fit in a `u16`), header padded
//! so the data starts at a multiple of 64 bytes, as numpy does.

use std::path::Path;

use crate::{Error, Result, Tensor};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Reads an f32 array from a `.npy` file.
pub fn read(path: &Path) -> Result<Tensor> {
    let bytes = crate::files::read(path)?;
    parse(&bytes, path)
}

/// Writes `tensor` as a `.npy` file (`'<f4'`, C order).
pub fn write(path: &Path, tensor: &Tensor) -> Result<()> {
    std::fs::write(path, to_bytes(tensor)).map_err(|e| Error::io(path, e))
}

/// Parses the bytes of a `.npy` file; `path` is only used in error messages.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Tensor> {
    let err = |message: String| Error::Format {
        path: path.to_path_buf(),
        message: format!("not a readable .npy file: {message}"),
    };
    if bytes.len() < MAGIC.len() + 2 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(err("missing the magic string \\x93NUMPY".into()));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, header_start) = match (major, minor) {
        (1, 0) => {
            let b = bytes
                .get(8..10)
                .ok_or_else(|| err("truncated before the header length".into()))?;
            (usize::from(u16::from_le_bytes([b[0], b[1]])), 10usize)
        }
        (2 | 3, 0) => {
            let b = bytes
                .get(8..12)
                .ok_or_else(|| err("truncated before the header length".into()))?;
            let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let len = usize::try_from(len).map_err(|_| err("header length too large".into()))?;
            (len, 12usize)
        }
        _ => {
            return Err(err(format!(
                "unsupported format version {major}.{minor} (expected 1.0, 2.0 or 3.0)"
            )));
        }
    };
    let header_end = header_start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            err(format!(
                "truncated: the header claims {header_len} bytes, the file has {} after the preamble",
                bytes.len() - header_start.min(bytes.len())
            ))
        })?;
    let header = std::str::from_utf8(&bytes[header_start..header_end])
        .map_err(|_| err("the header is not text".into()))?;
    let h = Header::parse(header).map_err(|m| err(format!("bad header {header:?}: {m}")))?;
    if h.descr != "<f4" {
        return Err(err(format!(
            "dtype '{}' is not supported (expected '<f4', little-endian float32)",
            h.descr
        )));
    }
    if h.fortran_order {
        return Err(err(
            "Fortran order is not supported (expected C order, fortran_order: False)".into(),
        ));
    }
    let data = &bytes[header_end..];
    let expected = crate::tensor::checked_product(&h.shape)
        .and_then(|n| n.checked_mul(4))
        .ok_or_else(|| err(format!("shape {:?} is too large", h.shape)))?;
    if data.len() != expected {
        return Err(err(format!(
            "shape {:?} needs {expected} data bytes, found {}{}",
            h.shape,
            data.len(),
            if data.len() < expected {
                " (truncated)"
            } else {
                " (trailing bytes)"
            }
        )));
    }
    let values = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Tensor::new(h.shape, values).map_err(|_| err("shape and data disagree".into()))
}

/// The bytes of a `.npy` file holding `tensor`.
pub fn to_bytes(tensor: &Tensor) -> Vec<u8> {
    let shape = match tensor.dims() {
        [d] => format!("({d},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Version 1.0 has a u16 header length; fall back to 2.0 (u32) for very long shapes.
    let prefix_v1 = MAGIC.len() + 2 + 2;
    let fits_v1 = (header.len() + 1).next_multiple_of(64) + 64 <= usize::from(u16::MAX);
    let prefix = if fits_v1 { prefix_v1 } else { prefix_v1 + 2 };
    let total = (prefix + header.len() + 1).next_multiple_of(64);
    while prefix + header.len() + 1 < total {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(total + tensor.data().len() * 4);
    out.extend_from_slice(MAGIC);
    if fits_v1 {
        out.extend_from_slice(&[1, 0]);
        // Fits by the check above.
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    for v in tensor.data() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The three keys of a `.npy` header.
#[derive(Debug)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

impl Header {
    /// Parses the Python dict literal numpy writes: string keys; values a string, `True`/`False`
    /// or a tuple of non-negative integers; an optional trailing comma; whitespace anywhere.
    fn parse(text: &str) -> std::result::Result<Header, String> {
        let mut p = Cursor {
            s: text.as_bytes(),
            i: 0,
        };
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        p.expect(b'{')?;
        loop {
            p.skip_ws();
            if p.eat(b'}') {
                break;
            }
            let key = p.string()?;
            p.skip_ws();
            p.expect(b':')?;
            p.skip_ws();
            match key.as_str() {
                "descr" => descr = Some(p.string()?),
                "fortran_order" => fortran = Some(p.boolean()?),
                "shape" => shape = Some(p.tuple()?),
                other => return Err(format!("unexpected key '{other}'")),
            }
            p.skip_ws();
            if !p.eat(b',') {
                p.skip_ws();
                p.expect(b'}')?;
                break;
            }
        }
        p.skip_ws();
        if p.i != p.s.len() {
            return Err("text after the closing brace".into());
        }
        Ok(Header {
            descr: descr.ok_or("missing key 'descr'")?,
            fortran_order: fortran.ok_or("missing key 'fortran_order'")?,
            shape: shape.ok_or("missing key 'shape'")?,
        })
    }
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn skip_ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected '{}' at offset {}", c as char, self.i))
        }
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let quote = match self.s.get(self.i) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => return Err(format!("expected a quoted string at offset {}", self.i)),
        };
        self.i += 1;
        let start = self.i;
        while self.s.get(self.i).is_some_and(|&c| c != quote) {
            self.i += 1;
        }
        let body = &self.s[start..self.i];
        self.expect(quote)?;
        String::from_utf8(body.to_vec()).map_err(|_| "a string is not UTF-8".into())
    }

    fn boolean(&mut self) -> std::result::Result<bool, String> {
        for (word, v) in [(&b"True"[..], true), (&b"False"[..], false)] {
            if self.s[self.i..].starts_with(word) {
                self.i += word.len();
                return Ok(v);
            }
        }
        Err(format!("expected True or False at offset {}", self.i))
    }

    fn tuple(&mut self) -> std::result::Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            self.skip_ws();
            if self.eat(b')') {
                return Ok(dims);
            }
            let start = self.i;
            while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
            let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
            let d: usize = digits
                .parse()
                .map_err(|_| format!("expected a dimension at offset {start}"))?;
            dims.push(d);
            self.skip_ws();
            if !self.eat(b',') {
                self.skip_ws();
                self.expect(b')')?;
                return Ok(dims);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> &'static Path {
        Path::new("x.npy")
    }

    /// A file with the given header dict and data bytes, in version 1.0.
    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut h = header.to_string();
        h.push('\n');
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn message(r: Result<Tensor>) -> String {
        match r {
            Err(e @ Error::Format { .. }) => e.to_string(),
            other => panic!("expected a format error, got {other:?}"),
        }
    }

    #[test]
    fn roundtrip_preserves_shape_and_bits() {
        for dims in [vec![], vec![3], vec![2, 3], vec![1, 5, 4, 3], vec![2, 0, 3]] {
            let n: usize = dims.iter().product();
            let data: Vec<f32> = (0..n).map(|i| i as f32 * -0.37 + 1e-30).collect();
            let t = Tensor::new(dims.clone(), data).unwrap();
            let bytes = to_bytes(&t);
            let header_len = bytes.len() - n * 4;
            assert_eq!(header_len % 64, 0, "data must start 64-aligned");
            assert_eq!(parse(&bytes, path()).unwrap(), t, "dims {dims:?}");
        }
    }

    #[test]
    fn reads_numpy_written_header_and_version_2() {
        let data: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let t = parse(
            &file(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }      ",
                &data,
            ),
            path(),
        )
        .unwrap();
        assert_eq!((t.dims(), t.data()), (&[2][..], &[1.5, -2.0][..]));
        // Version 2.0: u32 header length; keys in another order, double quotes.
        let h = "{\"shape\": (1, 2), \"fortran_order\": False, \"descr\": \"<f4\"}\n";
        let mut v2 = MAGIC.to_vec();
        v2.extend_from_slice(&[2, 0]);
        v2.extend_from_slice(&(h.len() as u32).to_le_bytes());
        v2.extend_from_slice(h.as_bytes());
        v2.extend_from_slice(&data);
        assert_eq!(parse(&v2, path()).unwrap().dims(), &[1, 2]);
    }

    #[test]
    fn int64_and_f64_are_rejected() {
        let m = message(parse(
            &file(
                "{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }",
                &[0; 8],
            ),
            path(),
        ));
        assert!(
            m.contains("x.npy") && m.contains("'<i8'") && m.contains("'<f4'"),
            "{m}"
        );
        let m = message(parse(
            &file(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }",
                &[0; 8],
            ),
            path(),
        ));
        assert!(m.contains("'<f8'"), "{m}");
    }

    #[test]
    fn fortran_order_is_rejected() {
        let m = message(parse(
            &file(
                "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
                &[0; 16],
            ),
            path(),
        ));
        assert!(m.contains("Fortran order"), "{m}");
    }

    #[test]
    fn truncated_data_and_header_are_rejected() {
        let t = Tensor::new(vec![2, 3], vec![1.0; 6]).unwrap();
        let bytes = to_bytes(&t);
        let m = message(parse(&bytes[..bytes.len() - 1], path()));
        assert!(
            m.contains("needs 24 data bytes, found 23 (truncated)"),
            "{m}"
        );
        let m = message(parse(&bytes[..20], path()));
        assert!(m.contains("truncated"), "{m}");
        let m = message(parse(&bytes[..4], path()));
        assert!(m.contains("magic"), "{m}");
    }

    #[test]
    fn huge_shapes_fail_without_allocating() {
        let m = message(parse(
            &file(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4611686018427387904), }",
                &[0; 4],
            ),
            path(),
        ));
        assert!(m.contains("too large"), "{m}");
        let m = message(parse(
            &file(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000), }",
                &[0; 4],
            ),
            path(),
        ));
        assert!(m.contains("found 4 (truncated)"), "{m}");
    }

    #[test]
    fn malformed_headers_are_rejected() {
        for h in [
            "{'descr': '<f4', 'shape': (1,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}",
            "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
            "not a dict",
        ] {
            let m = message(parse(&file(h, &[0; 4]), path()));
            assert!(m.contains("bad header"), "{h}: {m}");
        }
        let mut bad_version = file("{}", &[]);
        bad_version[6] = 9;
        assert!(message(parse(&bad_version, path())).contains("version 9.0"));
        // Regression: 1.1 was read as 1.0; numpy knows no such version and rejects it.
        let mut v11 = file("{}", &[]);
        v11[7] = 1;
        assert!(
            message(parse(&v11, path()))
                .contains("unsupported format version 1.1 (expected 1.0, 2.0 or 3.0)")
        );
    }
}
