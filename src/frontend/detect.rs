//! Which front end reads a model file, decided by its first bytes, never by its extension alone:
//! an HDF5 signature or a zip signature is a Keras file; anything else must decode as an ONNX
//! protobuf. A file none of them reads is one [`Error::Format`] saying what was tried.

use std::path::Path;

use super::onnx::{self, ImportOptions, Imported};
use crate::{Error, Result};

/// The formats a model file can be in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// HDF5 (`.h5`, Keras 2 and 3).
    Hdf5,
    /// A zip archive (`.keras`).
    Zip,
    /// Anything else: tried as an ONNX `ModelProto`.
    Onnx,
}

/// The format of a file from its first bytes.
pub fn sniff(bytes: &[u8]) -> Format {
    if bytes.starts_with(b"\x89HDF\r\n\x1a\n") {
        Format::Hdf5
    } else if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        Format::Zip
    } else {
        Format::Onnx
    }
}

/// Reads a model file in any supported format.
pub fn load(path: &Path, options: &ImportOptions) -> Result<Imported> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    match sniff(&bytes) {
        Format::Hdf5 | Format::Zip => Err(Error::Format {
            path: path.to_path_buf(),
            message: "a Keras model file (HDF5 or zip): this build of mnv2c reads ONNX model files"
                .into(),
        }),
        Format::Onnx => {
            onnx::import(&bytes, path, onnx::model_dir(path), options).map_err(|e| match e {
                Error::Format { path, message } if message.starts_with("not an ONNX model") => {
                    Error::Format {
                        path,
                        message: format!(
                            "not a model file mnv2c reads: no HDF5 or zip signature, and {message}"
                        ),
                    }
                }
                e => e,
            })
        }
    }
}
