//! Which front end reads a model file, decided by its first bytes, never by its extension alone:
//! an HDF5 signature or a zip signature is a Keras file; anything else must decode as an ONNX
//! protobuf. A file none of them reads is one [`Error::Format`] saying what was tried.

use std::path::Path;

use super::keras::{self, FileKind, InputSize};
use super::onnx::{self, ImportOptions, Imported};
use crate::{Error, Result};

/// Reads a model file in any supported format.
pub fn load(path: &Path, options: &ImportOptions) -> Result<Imported> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.is_empty() {
        return Err(Error::Format {
            path: path.to_path_buf(),
            message: "an empty file, not a model".into(),
        });
    }
    match keras::file_kind(&bytes) {
        FileKind::Hdf5 | FileKind::Zip => keras_model(bytes, path, options),
        FileKind::Other => {
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

/// A Keras file as an [`Imported`] model: the input shape (NHWC, Keras's layout) fixes the free
/// sizes; the outputs keep their names.
fn keras_model(bytes: Vec<u8>, path: &Path, options: &ImportOptions) -> Result<Imported> {
    let size = match options.input_shape.as_deref() {
        None => InputSize::default(),
        Some(&[n, h, w, _]) => InputSize {
            batch: Some(n),
            height: Some(h),
            width: Some(w),
        },
        Some(other) => {
            return Err(Error::Usage(format!(
                "the input shape {other:?} of the Keras model {} must be [N, H, W, C]",
                path.display()
            )));
        }
    };
    let m = keras::parse(bytes, path, size)?;
    let g = &m.graph;
    let inputs: Vec<(String, Vec<usize>)> = g
        .inputs()
        .iter()
        .map(|&i| (g.node(i).name.clone(), g.node(i).ty.dims.clone()))
        .collect();
    if let (Some(given), Some((name, dims))) = (&options.input_shape, inputs.first())
        && given != dims
    {
        return Err(Error::Input(format!(
            "the input shape {given:?} does not fit input '{name}' of {}, which is {dims:?}",
            path.display()
        )));
    }
    let outputs = g
        .outputs()
        .iter()
        .map(|&o| (g.node(o).name.clone(), g.node(o).name.clone()))
        .collect();
    Ok(Imported {
        graph: m.graph,
        params: m.weights,
        outputs,
        inputs,
        notes: Vec::new(),
    })
}
