//! Reading the files users name (IR text, weights, `.npy` arrays): regular files only.
//!
//! What must hold: a file is read only if it is a regular file, whose size is known before
//! reading. A device (`/dev/zero`), a pipe or a socket would be read until memory runs out; it
//! is refused with an [`Error::Format`] naming the path. A directory gives the operating
//! system's own error. Large regular files (an ONNX model) are fine: they are read whole.

use std::path::Path;

use crate::{Error, Result};

/// The bytes of the regular file at `path`.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() && !meta.is_dir() {
        return Err(Error::Format {
            path: path.to_path_buf(),
            message: "not a regular file (a device, pipe or socket): mnv2c reads only files \
                      whose size is known before reading"
                .into(),
        });
    }
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: reading `/dev/zero` as an input or IR file ran until memory was exhausted.
    #[test]
    fn devices_are_refused_before_reading() {
        let e = read(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(e.exit_status(), 3);
        assert_eq!(
            e.to_string(),
            "/dev/zero: not a regular file (a device, pipe or socket): mnv2c reads only files \
             whose size is known before reading"
        );
    }
}
