//! The runtime: what a compiled model owns and does when it runs.
//!
//! - [`model`]: [`CompiledModel`], compiled from a graph and its weights, run with `run(&input)`;
//! - [`memplan`]: the static memory plan, one 64-byte-aligned arena for all activations with
//!   offsets fixed at compile time from liveness.

pub mod memplan;
pub mod model;

pub use model::{CompiledModel, Layer, Layout, Options, Output, TensorInfo, plan_memory};
