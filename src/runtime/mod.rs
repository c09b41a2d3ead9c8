//! The runtime: what a compiled model owns and does when it runs.
//!
//! - [`model`]: [`CompiledModel`], compiled from a graph and its weights, run with `run(&input)`;
//! - `calls`: the plan applied to a lowered program, every kernel argument resolved to an
//!   arena range, a constant or an input (shared by the JIT runner and the AOT object);
//! - [`memplan`]: the static memory plan, one 64-byte-aligned arena for all activations with
//!   offsets fixed at compile time from liveness;
//! - [`bands`]: the band schedule, the order of the kernel calls of a one-thread model;
//! - [`fold`]: which activations of a band schedule live in small double-mapped fold windows
//!   instead of the arena.

pub mod bands;
pub(crate) mod calls;
pub mod fold;
pub mod memplan;
pub mod model;

pub use calls::plan_memory;
pub use model::{CompiledModel, Layer, Layout, Options, Output, TensorInfo};
