//! Where a Keras file keeps a layer's variables, for the two formats.
//!
//! - **Legacy HDF5** (`.h5`): group `model_weights/<top-level layer>` lists its variables in the
//!   `weight_names` attribute as `<layer>/<variable>` (Keras 3) or `<layer>/<variable>:0`
//!   (Keras 2), each a dataset under that group. A nested model is one top-level layer holding
//!   all of its layers' variables. The list puts trainable variables first, so variables are
//!   matched by *name*, never by position. Keras 2 calls a depthwise kernel `depthwise_kernel`,
//!   Keras 3 `kernel`; both are accepted.
//! - **`.keras`** (`model.weights.h5` in the zip): `layers/<saver name>/vars/<index>`, nested
//!   models as `layers/<saver>/layers/<saver>/vars/<index>`, variables in the layer's creation
//!   order (kernel, bias; gamma, beta, moving mean, moving variance).
//!
//! What must hold: a variable is found by its layer and name (or index) or the lookup is an
//! [`Error::Weights`] naming the layer and variable; shapes are checked by the caller.

use std::cell::RefCell;
use std::collections::HashMap;

use super::hdf5::H5;
use crate::{Error, Result, Tensor};

/// The file a model's variables come from.
#[derive(Debug)]
pub enum Source {
    /// A legacy `.h5` model file, and the `weight_names` of each group read so far (a nested
    /// model's list is read once, not once per variable).
    Legacy(H5, RefCell<HashMap<String, Vec<String>>>),
    /// The `model.weights.h5` member of a `.keras` file.
    Keras(H5),
}

/// Where in the model a layer sits: its top-level layer (for `.h5`) and its saver path (for
/// `.keras`, e.g. `layers/functional/layers/conv2d_3`).
#[derive(Clone, Debug)]
pub struct Place {
    pub top: String,
    pub layer: String,
    pub saver_path: String,
}

impl Source {
    /// Variable `name` (the `index`-th the layer creates) of the layer at `place`.
    pub fn var(&self, place: &Place, name: &str, index: usize) -> Result<Tensor> {
        let missing = |m: String| Error::Weights {
            tensor: format!("{}/{name}", place.layer),
            message: m,
        };
        match self {
            Source::Keras(h5) => {
                let path = format!("{}/vars/{index}", place.saver_path);
                h5.tensor(&path)?.ok_or_else(|| {
                    missing(format!(
                        "not in the .keras file (expected dataset '{path}')"
                    ))
                })
            }
            Source::Legacy(h5, cache) => {
                let group = format!("model_weights/{}", place.top);
                if !cache.borrow().contains_key(&group) {
                    let names = h5.attr_strings(&group, "weight_names")?.unwrap_or_default();
                    cache.borrow_mut().insert(group.clone(), names);
                }
                let cache = cache.borrow();
                let names = cache.get(&group).map(Vec::as_slice).unwrap_or_default();
                let want = |n: &str| -> bool {
                    let n = n.strip_suffix(":0").unwrap_or(n);
                    let mut parts = n.rsplit('/');
                    let var = parts.next().unwrap_or("");
                    let layer = parts.next().unwrap_or("");
                    layer == place.layer
                        && (var == name || (name == "kernel" && var == "depthwise_kernel"))
                };
                let found = names.iter().find(|n| want(n)).ok_or_else(|| {
                    missing(format!(
                        "not listed in the weight_names of '{group}' in the .h5 file"
                    ))
                })?;
                let path = format!("{group}/{found}");
                h5.tensor(&path)?
                    .ok_or_else(|| missing(format!("dataset '{path}' is missing")))
            }
        }
    }
}
