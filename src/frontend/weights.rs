//! Weight values for a graph: seeded initialisation as the seed does it, `.safetensors` load and
//! save with the TensorFlow variable names, validation against the graph, and binding (the value
//! of every constant, derived ones included) for the interpreter and the JIT.
//!
//! What must hold:
//! - A weights set ([`TensorMap`]) fits a graph when it has exactly one f32 tensor per
//!   *parameter* constant of the graph ([`ConstDef::Param`]), under the constant's name (the TF
//!   variable name, e.g. `mobilenetv2/res5_1/pw/w`) and with its declared shape (depthwise
//!   `[3, 3, C, 1]`). A missing tensor, an unexpected one, a wrong shape or a non-f32 dtype is an
//!   [`Error::Weights`] naming the tensor with the expected and found shape or dtype. Nothing is
//!   silently ignored.
//! - **NaN and infinite values are rejected** when a file is read ([`read`]), naming the tensor
//!   and the first bad element: a trained model has none, and a NaN would otherwise surface as
//!   NaN logits far from its cause.
//! - A file that is not a readable safetensors file (truncated, garbage header, offsets past the
//!   end) is an [`Error::Format`] naming the path.
//! - [`bind`] gives a value to *every* constant of the graph: parameters from the weights, the
//!   derived constants that `fold-batchnorm` creates evaluated in f64 from their operands and
//!   rounded once to f32, exactly as [`ConstDef`]'s docs state. Later stages take that map.
//!   [`check`] and [`bind`] belong to the graph IR (`graph::consts`, next to the rules of the
//!   derived constants); they are re-exported here, where weights are read.
//!
//! Seeded initialisation follows the tutorial: every kernel from a truncated normal with stddev
//! 0.02 (values beyond 2 stddev re-drawn, as TF's `truncated_normal` does); batch norm gamma 1,
//! beta 0, moving mean 0, moving variance 1. Batch norm parameters are recognised by how the
//! graph uses them (operands of a `batch_norm` op, or of a fold definition), not by their names.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, View};

use super::Config;
pub use crate::graph::consts::{bind, check};
use crate::graph::{ConstDef, Graph, Op};
use crate::{Error, Result, Tensor, TensorMap};

/// The stddev of the tutorial's truncated-normal kernel initialiser.
pub const INIT_STDDEV: f32 = 0.02;

/// The name of the classifier's kernel, `[1, 1, 1280, num_classes]`.
pub const LOGITS_WEIGHT: &str = "mobilenetv2/logits/w";

/// Reads every tensor of a `.safetensors` file. Each must be F32 with finite values; the set is
/// not checked against a graph here (see [`check`] and [`load`]).
pub fn read(path: &Path) -> Result<TensorMap> {
    let bytes = crate::files::read(path)?;
    parse(&bytes, path)
}

/// [`read`] on bytes already in memory; `path` is only used in error messages.
pub fn parse(bytes: &[u8], path: &Path) -> Result<TensorMap> {
    // The crate checks the header length against the buffer, the JSON, and that every tensor's
    // offsets lie inside the buffer and match its dtype and shape, before we touch any data.
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Format {
        path: path.to_path_buf(),
        message: format!("not a readable safetensors file: {e}"),
    })?;
    let mut out = TensorMap::new();
    for (name, view) in st.iter() {
        if view.dtype() != Dtype::F32 {
            return Err(Error::Weights {
                tensor: name.to_string(),
                message: format!(
                    "dtype {:?} with shape {:?}, expected F32 (in {})",
                    view.dtype(),
                    view.shape(),
                    path.display()
                ),
            });
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::Weights {
                tensor: name.to_string(),
                message: format!(
                    "element {i} is {} (NaN and infinite weights are rejected; in {})",
                    data[i],
                    path.display()
                ),
            });
        }
        let t = Tensor::new(view.shape().to_vec(), data).map_err(|_| Error::Format {
            path: path.to_path_buf(),
            message: format!("tensor '{name}': data length does not match its shape"),
        })?;
        out.insert(name.to_string(), t);
    }
    Ok(out)
}

/// Reads a weights file and checks it fits `graph` ([`read`] then [`check`]).
pub fn load(path: &Path, graph: &Graph) -> Result<TensorMap> {
    let w = read(path)?;
    check(graph, &w)?;
    Ok(w)
}

/// Writes `weights` as a `.safetensors` file of F32 tensors under their names.
pub fn save(path: &Path, weights: &TensorMap) -> Result<()> {
    std::fs::write(path, to_bytes(weights)?).map_err(|e| Error::io(path, e))
}

/// The bytes of a `.safetensors` file holding `weights`.
pub fn to_bytes(weights: &TensorMap) -> Result<Vec<u8>> {
    let views = weights.iter().map(|(name, t)| (name.as_str(), F32View(t)));
    safetensors::serialize(views, None).map_err(|e| Error::Weights {
        tensor: String::new(),
        message: format!("cannot serialise: {e}"),
    })
}

/// A [`Tensor`] seen as an F32 safetensors view (little-endian bytes).
struct F32View<'a>(&'a Tensor);

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.0.dims()
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.data().iter().flat_map(|v| v.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.0.data().len() * 4
    }
}

/// The number of classes a weights set was made for: the last dimension of
/// [`LOGITS_WEIGHT`], which must be `[1, 1, C, num_classes]`.
pub fn num_classes(weights: &TensorMap) -> Result<usize> {
    let t = weights.get(LOGITS_WEIGHT).ok_or_else(|| Error::Weights {
        tensor: LOGITS_WEIGHT.into(),
        message: "missing: it gives the number of classes".into(),
    })?;
    match t.dims() {
        &[1, 1, _, n] if n >= 1 => Ok(n),
        _ => Err(Error::Weights {
            tensor: LOGITS_WEIGHT.into(),
            message: format!("has shape {}, expected [1,1,1280,num_classes]", t.ty()),
        }),
    }
}

/// What seeded initialisation puts in a parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Kernel,
    Zero,
    One,
}

/// Seeded weights for every parameter of `graph`, as the tutorial initialises them. The same
/// `(seed, parameter name, shape)` always gives the same values: each parameter draws from its
/// own stream seeded by `seed` and a hash of its name, so e.g. a 10-class and a 1000-class model
/// share every weight but the classifier's.
pub fn seeded(graph: &Graph, seed: u64) -> Result<TensorMap> {
    let mut roles: HashMap<&str, Role> = HashMap::new();
    fn bn<'g>(
        roles: &mut HashMap<&'g str, Role>,
        gamma: &'g str,
        beta: &'g str,
        mean: &'g str,
        variance: &'g str,
    ) {
        roles.insert(gamma, Role::One);
        roles.insert(beta, Role::Zero);
        roles.insert(mean, Role::Zero);
        roles.insert(variance, Role::One);
    }
    for id in graph.node_ids() {
        if let Op::BatchNorm(b) = &graph.node(id).op {
            bn(&mut roles, &b.gamma, &b.beta, &b.mean, &b.variance);
        }
    }
    // After fold-batchnorm the batch norm nodes are gone; the fold definitions still say which
    // parameters were gamma, beta, mean and variance.
    for (_, c) in graph.consts() {
        match &c.def {
            ConstDef::FoldBnWeight {
                gamma, variance, ..
            } => {
                roles.insert(gamma, Role::One);
                roles.insert(variance, Role::One);
            }
            ConstDef::FoldBnBias {
                gamma,
                beta,
                mean,
                variance,
                ..
            } => bn(&mut roles, gamma, beta, mean, variance),
            ConstDef::Param => {}
        }
    }
    let mut out = TensorMap::new();
    for (name, c) in graph.consts().filter(|(_, c)| c.def == ConstDef::Param) {
        let n = c.ty.num_elements().ok_or_else(|| Error::Weights {
            tensor: name.into(),
            message: format!("shape {} is too large", c.ty),
        })?;
        // `--num-classes` sizes the classifier: allocate fallibly, so a huge request is an
        // error rather than an abort.
        let mut data = Vec::new();
        data.try_reserve_exact(n).map_err(|_| Error::Weights {
            tensor: name.into(),
            message: format!("shape {} is too large to allocate", c.ty),
        })?;
        match roles.get(name).copied().unwrap_or(Role::Kernel) {
            Role::One => data.resize(n, 1.0),
            Role::Zero => data.resize(n, 0.0),
            Role::Kernel => {
                let mut rng = Rng::new(seed, name);
                data.extend(
                    (0..n).map(|_| (rng.truncated_normal() * f64::from(INIT_STDDEV)) as f32),
                );
            }
        }
        let t = Tensor::new(c.ty.dims.clone(), data).map_err(|_| Error::Weights {
            tensor: name.into(),
            message: "shape and data disagree".into(),
        })?;
        out.insert(name.to_string(), t);
    }
    Ok(out)
}

/// A small, well-known generator, written out so seeded weights never change with a crate
/// version: splitmix64 (Steele, Lea, Flood 2014) for uniform bits, Box-Muller for normals.
/// Statistical quality far beyond what initial weights need; not for cryptography.
struct Rng {
    state: u64,
    spare: Option<f64>,
}

impl Rng {
    /// A stream for one parameter: the seed mixed with the FNV-1a hash of its name.
    fn new(seed: u64, name: &str) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        Rng {
            state: seed ^ h.rotate_left(17),
            spare: None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: 53 random bits, never 0 (so `ln` is finite).
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal by Box-Muller, using both values of each pair.
    fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let r = (-2.0 * self.uniform().ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * self.uniform();
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }

    /// A standard normal re-drawn until it lies within 2 (TF's `truncated_normal`).
    fn truncated_normal(&mut self) -> f64 {
        loop {
            let z = self.normal();
            if z.abs() <= 2.0 {
                return z;
            }
        }
    }
}

/// The fixed synthetic input `mnv2c run` uses when no `--input` is given, `[N, H, W, 3]`:
/// `x[n, y, x, c] = sin(0.05 * y + 0.07 * x + 1.3 * c + 0.5 * n)` (computed in f64, rounded to
/// f32), a smooth, deterministic image-like pattern in [-1, 1] that differs between channels
/// and batch items.
pub fn synthetic_input(config: &Config) -> Result<Tensor> {
    let Config {
        batch,
        height,
        width,
        ..
    } = *config;
    let mut t = Tensor::zeros(vec![batch, height, width, 3])?;
    let mut i = 0;
    let d = t.data_mut();
    for n in 0..batch {
        for y in 0..height {
            for x in 0..width {
                for c in 0..3 {
                    d[i] = (0.05 * y as f64 + 0.07 * x as f64 + 1.3 * c as f64 + 0.5 * n as f64)
                        .sin() as f32;
                    i += 1;
                }
            }
        }
    }
    Ok(t)
}
