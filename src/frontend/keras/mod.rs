//! The Keras front end: reads a model saved by Keras (`model.save("m.h5")`, legacy HDF5, Keras 2
//! or 3; or `model.save("m.keras")`, the zip format) and produces the graph IR with the model's
//! weights bound by name.
//!
//! - [`hdf5`]: the small interface over the pure-Rust HDF5 reader;
//! - [`zip`]: the members of a `.keras` archive (`config.json`, `model.weights.h5`);
//! - [`config`]: the model's JSON config, parsed into layers and connections;
//! - [`import`] and [`layers`]: the translation into the graph IR, layer by layer;
//! - [`weights`]: where each format keeps a layer's variables.
//!
//! What must hold: the returned graph verifies, every constant it declares is in the returned
//! weights with its declared shape, and a model ending in softmax has two outputs, the softmax's
//! input (the logits) and the softmax (the probabilities), so `--logits`/`--probs` mean what a
//! Keras user expects. Every failure is an [`Error`] naming the file, layer or variable.

pub mod config;
pub mod hdf5;
pub mod import;
pub mod layers;
pub mod weights;
pub mod zip;

use std::path::Path;

use crate::graph::{self, Graph, Op};
use crate::{Error, Result, TensorMap};
pub use import::InputSize;

/// A Keras model read from a file.
#[derive(Debug)]
pub struct KerasModel {
    pub graph: Graph,
    pub weights: TensorMap,
    /// Whether the model's (single) output is a softmax; then the graph's outputs are
    /// `[logits, probabilities]`.
    pub ends_in_softmax: bool,
}

/// The model file formats mnv2c tells apart by their first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// HDF5 (a legacy Keras `.h5`).
    Hdf5,
    /// A zip archive (a `.keras` file).
    Zip,
    /// Anything else.
    Other,
}

/// The format of a model file, by signature (not by extension).
pub fn file_kind(bytes: &[u8]) -> FileKind {
    if bytes.starts_with(hdf5::MAGIC) {
        FileKind::Hdf5
    } else if bytes.starts_with(zip::MAGIC) {
        FileKind::Zip
    } else {
        FileKind::Other
    }
}

/// Reads the Keras model in `path`; `size` fills free input dimensions or must agree with the
/// file's.
pub fn load(path: &Path, size: InputSize) -> Result<KerasModel> {
    // Like `files::read`: only a regular file (a device or pipe could be read forever).
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::Format {
            path: path.to_path_buf(),
            message: "not a regular file (a model file is read from disk)".into(),
        });
    }
    let mut head = [0u8; 8];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(|e| Error::io(path, e))?;
    if file_kind(&head[..n]) == FileKind::Hdf5 {
        // Read on demand: the weights, not the optimizer state beside them.
        let (json, source) = legacy(hdf5::H5::open(path)?, path)?;
        return from_json(&json, &source, path, size);
    }
    parse(crate::files::read(path)?, path, size)
}

/// The model config and weights of a legacy `.h5` file.
fn legacy(h5: hdf5::H5, path: &Path) -> Result<(String, weights::Source)> {
    let bad = |m: &str| Error::Format {
        path: path.to_path_buf(),
        message: m.to_string(),
    };
    let json = h5.attr_string("", "model_config")?.ok_or_else(|| {
        bad("an HDF5 file with no readable 'model_config' attribute: not a Keras model saved with model.save() (a weights-only file needs its model), or a truncated or corrupted one")
    })?;
    if !h5.has_group("model_weights") {
        return Err(bad("a Keras .h5 file without 'model_weights'"));
    }
    Ok((json, weights::Source::Legacy(h5, Default::default())))
}

fn from_json(
    json: &str,
    source: &weights::Source,
    path: &Path,
    size: InputSize,
) -> Result<KerasModel> {
    let model = config::parse(json).map_err(|e| match e {
        Error::Config(m) => Error::Format {
            path: path.to_path_buf(),
            message: m,
        },
        other => other,
    })?;
    build(&model, source, size)
}

/// [`load`] on bytes already read from `path`.
pub fn parse(bytes: Vec<u8>, path: &Path, size: InputSize) -> Result<KerasModel> {
    let bad = |m: String| Error::Format {
        path: path.to_path_buf(),
        message: m,
    };
    let (json, source) = match file_kind(&bytes) {
        FileKind::Hdf5 => legacy(hdf5::H5::from_bytes(bytes, path)?, path)?,
        FileKind::Zip => {
            let json = zip::member(&bytes, "config.json", path)?;
            let json = String::from_utf8(json.to_vec())
                .map_err(|_| bad("config.json is not UTF-8".into()))?;
            let w = zip::member(&bytes, "model.weights.h5", path)?.to_vec();
            let h5 = hdf5::H5::from_bytes(w, &path.join("model.weights.h5"))?;
            (json, weights::Source::Keras(h5))
        }
        FileKind::Other => {
            return Err(bad(
                "not a Keras model file (neither HDF5 .h5 nor a .keras zip archive)".into(),
            ));
        }
    };
    from_json(&json, &source, path, size)
}

fn build(model: &config::Model, source: &weights::Source, size: InputSize) -> Result<KerasModel> {
    let mut imp = import::Importer::new(&model.name, source, size);
    let outputs = imp.top(model)?;
    let mut g = imp.graph;
    let ends_in_softmax = match outputs[..] {
        [o] => g.node(o).op == Op::Softmax,
        _ => false,
    };
    let outputs = if ends_in_softmax {
        let logits = g.operands(outputs[0])[0];
        vec![logits, outputs[0]]
    } else {
        outputs
    };
    if outputs.is_empty() {
        return Err(Error::Config(format!(
            "model '{}' has no outputs",
            model.name
        )));
    }
    g.set_outputs(outputs);
    graph::verify(&g)?;
    Ok(KerasModel {
        graph: g,
        weights: imp.weights,
        ends_in_softmax,
    })
}
