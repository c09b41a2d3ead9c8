//! Shared by the pass tests: small graphs built in code with the front end's blocks, one per
//! situation the passes must handle, and the `ir-examples/*.ir` files.

#![allow(dead_code)] // each test crate uses a different part of this module

use std::path::PathBuf;

use mnv2c::frontend::{self, Builder};
use mnv2c::graph::{self, ConstDef, Graph, Op};
use mnv2c::{Tensor, TensorMap};

/// `(name, graph)` for each built-in pass example:
/// - `built-conv-bn-relu6`: the seed's `conv2d_block` (3x3 stride 1);
/// - `built-res-identity`: an inverted residual whose shortcut is the identity (`in == c`);
/// - `built-res-ex-dim`: an inverted residual with an `ex_dim` projection shortcut;
/// - `built-res-stride2`: a stride-2 inverted residual on an even size (pads 0 before, 1 after;
///   no shortcut);
/// - `built-head`: `pwise_block`, global average, logits, softmax.
pub fn built_examples() -> Vec<(&'static str, Graph)> {
    let mut out = Vec::new();

    let mut b = Builder::new("conv_bn_relu6", "");
    let x = b.input("x", vec![1, 5, 5, 3]);
    let y = frontend::conv2d_block(&mut b, x, 4, 3, 1, "c").unwrap();
    out.push(("built-conv-bn-relu6", b.finish(vec![y]).unwrap()));

    let mut b = Builder::new("res_identity", "");
    let x = b.input("x", vec![1, 4, 4, 4]);
    let y = frontend::res_block(&mut b, x, 2, 4, 1, "r", true).unwrap();
    out.push(("built-res-identity", b.finish(vec![y]).unwrap()));

    let mut b = Builder::new("res_ex_dim", "");
    let x = b.input("x", vec![1, 4, 4, 3]);
    let y = frontend::res_block(&mut b, x, 2, 5, 1, "r", true).unwrap();
    out.push(("built-res-ex-dim", b.finish(vec![y]).unwrap()));

    let mut b = Builder::new("res_stride2", "");
    let x = b.input("x", vec![1, 6, 6, 4]);
    let y = frontend::res_block(&mut b, x, 2, 6, 2, "r", true).unwrap();
    out.push(("built-res-stride2", b.finish(vec![y]).unwrap()));

    let mut b = Builder::new("head", "");
    let x = b.input("x", vec![1, 3, 3, 4]);
    let y = frontend::pwise_block(&mut b, x, 8, "p").unwrap();
    let y = frontend::global_avg(&mut b, y).unwrap();
    let logits = frontend::logits(&mut b, y, 5).unwrap();
    let prob = b.softmax("prob", logits).unwrap();
    out.push(("built-head", b.finish(vec![logits, prob]).unwrap()));

    out
}

/// `(file stem, graph)` for every `ir-examples/*.ir`, sorted by name; each parses and verifies.
pub fn ir_examples() -> Vec<(String, Graph)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ir-examples");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new(); // no examples yet
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ir"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let g = graph::parse(&text, &p.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
            graph::verify(&g).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            (stem, g)
        })
        .collect()
}

/// Every example: the built ones, then the files.
pub fn all_examples() -> Vec<(String, Graph)> {
    built_examples()
        .into_iter()
        .map(|(n, g)| (n.to_string(), g))
        .chain(ir_examples())
        .collect()
}

/// splitmix64: a small deterministic generator, so a failing seed reproduces.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    pub fn tensor(&mut self, dims: &[usize], lo: f32, hi: f32) -> Tensor {
        let n = dims.iter().product();
        Tensor::new(
            dims.to_vec(),
            (0..n).map(|_| self.uniform(lo, hi)).collect(),
        )
        .unwrap()
    }
}

/// Random values for every parameter of `g`: kernels scaled by `1/sqrt(fan-in)` so activations
/// stay O(1) through a chain, batch norms far from the identity (gamma of both signs, variance
/// in `[0.05, 2]`, so `sqrt(variance + eps)` matters).
pub fn random_weights(g: &Graph, seed: u64) -> TensorMap {
    let mut rng = Rng(seed);
    let mut role: std::collections::HashMap<&str, (f32, f32)> = Default::default();
    for id in g.node_ids() {
        if let Op::BatchNorm(b) = &g.node(id).op {
            role.insert(&b.gamma, (-1.5, 1.5));
            role.insert(&b.beta, (-1.0, 1.0));
            role.insert(&b.mean, (-1.0, 1.0));
            role.insert(&b.variance, (0.05, 2.0));
        }
    }
    g.consts()
        .filter(|(_, c)| c.def == ConstDef::Param)
        .map(|(name, c)| {
            let (lo, hi) = role.get(name).copied().unwrap_or_else(|| {
                // A kernel [kh, kw, cin/groups, cout] (or TF depthwise): scale by its fan-in.
                let fan_in: usize = c.ty.dims.iter().rev().skip(1).product();
                let a = 1.5 / (fan_in.max(1) as f32).sqrt();
                (-a, a)
            });
            (name.to_string(), rng.tensor(&c.ty.dims, lo, hi))
        })
        .collect()
}

/// Random inputs for `g`, in `[-3, 3)`.
pub fn random_inputs(g: &Graph, seed: u64) -> Vec<Tensor> {
    let mut rng = Rng(seed ^ 0x5eed);
    g.inputs()
        .into_iter()
        .map(|i| rng.tensor(&g.node(i).ty.dims, -3.0, 3.0))
        .collect()
}
