//! Reads the members of a `.keras` file: a zip archive whose members Keras writes *stored*
//! (uncompressed), so reading one is locating it through the central directory and slicing.
//!
//! What must hold: every offset and length read from the archive is checked against the bytes
//! before use (a truncated or corrupted archive is an [`Error::Format`], never a panic or an
//! out-of-bounds slice); a compressed, encrypted or ZIP64 member is refused by name.

use std::path::Path;

use crate::{Error, Result};

/// The local file header signature, which every zip archive starts with.
pub const MAGIC: &[u8; 4] = b"PK\x03\x04";

const EOCD_SIG: u32 = 0x0605_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;

fn u16_at(b: &[u8], at: usize) -> Option<usize> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(usize::from(u16::from_le_bytes([s[0], s[1]])))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn usize_at(b: &[u8], at: usize) -> Option<usize> {
    usize::try_from(u32_at(b, at)?).ok()
}

/// The bytes of member `name` of the zip archive `bytes` (read from `path`).
pub fn member<'a>(bytes: &'a [u8], name: &str, path: &Path) -> Result<&'a [u8]> {
    let bad = |m: String| Error::Format {
        path: path.to_path_buf(),
        message: m,
    };
    let corrupt = || bad("corrupted zip archive (a .keras file is a zip)".into());
    // The end-of-central-directory record: 22 bytes plus a comment of up to 65535.
    let min = bytes.len().saturating_sub(22 + 65535);
    let eocd = (min..=bytes.len().saturating_sub(22))
        .rev()
        .find(|&i| u32_at(bytes, i) == Some(EOCD_SIG))
        .ok_or_else(|| bad("truncated zip archive: no end of central directory".into()))?;
    let entries = u16_at(bytes, eocd + 10).ok_or_else(corrupt)?;
    let mut at = usize_at(bytes, eocd + 16).ok_or_else(corrupt)?;
    for _ in 0..entries {
        if u32_at(bytes, at) != Some(CENTRAL_SIG) {
            return Err(corrupt());
        }
        let field = |off: usize| u16_at(bytes, at + off).ok_or_else(corrupt);
        let (flags, method) = (field(8)?, field(10)?);
        let size = usize_at(bytes, at + 20).ok_or_else(corrupt)?;
        let (name_len, extra_len, comment_len) = (field(28)?, field(30)?, field(32)?);
        let local = usize_at(bytes, at + 42).ok_or_else(corrupt)?;
        let this = bytes.get(at + 46..at + 46 + name_len).ok_or_else(corrupt)?;
        at += 46 + name_len + extra_len + comment_len;
        if this != name.as_bytes() {
            continue;
        }
        if flags & 1 != 0 || method != 0 || size == 0xffff_ffff {
            return Err(bad(format!(
                "zip member '{name}' is compressed, encrypted or ZIP64 (method {method}); Keras stores members uncompressed"
            )));
        }
        if u32_at(bytes, local) != Some(LOCAL_SIG) {
            return Err(corrupt());
        }
        let start = local
            .checked_add(30)
            .and_then(|s| s.checked_add(u16_at(bytes, local + 26)?))
            .and_then(|s| s.checked_add(u16_at(bytes, local + 28)?))
            .ok_or_else(corrupt)?;
        return bytes
            .get(start..start.checked_add(size).ok_or_else(corrupt)?)
            .ok_or_else(|| bad(format!("truncated zip archive: member '{name}' is cut off")));
    }
    Err(bad(format!(
        "the archive has no '{name}' (not a Keras .keras file)"
    )))
}
