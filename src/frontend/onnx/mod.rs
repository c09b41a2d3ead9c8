//! placeholder during build
pub mod proto;
pub mod tensors;
