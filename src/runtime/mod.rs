//! The runtime: what a compiled model owns and does when it runs.
//!
//! - [`memplan`]: the static memory plan, one 64-byte-aligned arena for all activations with
//!   offsets fixed at compile time from liveness.

pub mod memplan;
