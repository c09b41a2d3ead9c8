//! # mnv2c — a graph compiler for the MobileNetV2 of a TensorFlow tutorial
//!
//! The pipeline, one module per stage, each a plain function call with a typed result:
//!
//! ```text
//! frontend ──► graph IR ──► passes ──► lower ──► loop IR ──► codegen ──► runtime
//! ```
//!
//! - [`frontend`] builds the seed's MobileNetV2 as a [`graph::Graph`] from the tutorial's blocks;
//!   [`frontend::keras`] reads a trained Keras model (`.h5` or `.keras`) into the same graph IR,
//!   with its weights; [`classify`] turns photos into its input (Pillow-exact resize).
//! - [`graph`] is the dataflow IR: ops, typing rules, text form ([`graph::parse()`] and `Display`),
//!   and the verifier every later stage relies on; [`graph::interp`] is its reference
//!   interpreter, the oracle for every faster path.
//! - [`passes`] rewrites the graph (batch-norm folding, epilogue fusion, pad folding, dead-code
//!   elimination),
//!   verifying it after every pass.
//! - [`frontend::weights`] gives the graph's constants values (seeded, or `.safetensors`);
//!   [`graph::consts`] binds them (and evaluates derived constants); [`npy`] reads and writes
//!   input and output arrays.
//! - [`lower`] turns each compute node into a loop-IR kernel shaped by a [`lower::Schedule`]
//!   ([`lower::lower`] for a whole graph, giving a [`loops::Program`]).
//! - [`loops`] is the loop IR: kernels over named buffers, its verifier (the bounds proof that
//!   makes generated code safe to call), its interpreter and its text form (`--emit loops`).
//! - [`codegen`] translates loop IR to Cranelift IR; [`codegen::JitProgram`] compiles and runs it
//!   (the crate's only `unsafe` lives in `codegen::jit`).
//! - [`runtime`] holds [`CompiledModel`]: the whole pipeline in one call, a static memory plan,
//!   a team of worker threads. [`emit`] gives what `mnv2c compile --emit` prints.
//! - [`aot`] writes the same code ahead of time: an object file and a C header.
//!
//! Every error is an [`Error`]; no function panics on user input.
//!
//! ## The API
//! - [`CompiledModel::compile`]`(&graph, &weights, &Options)`; [`Options`] is built with
//!   `Options::new().with_threads(n)`.
//! - [`CompiledModel::inputs`] and [`CompiledModel::outputs`] describe the ports (name, shape,
//!   layout: [`TensorInfo`]).
//! - [`CompiledModel::run`] for a classifier (logits and probabilities),
//!   [`CompiledModel::run_named`] for any graph (outputs by name), [`CompiledModel::run_all`]
//!   (outputs in order), and the fast path [`CompiledModel::run_into`], which writes into
//!   outputs the caller made once and allocates nothing per call. Inputs are owned
//!   [`Tensor`]s or borrowed [`TensorView`]s (a shape and a slice).
//! - The IR modules ([`graph`], [`passes`], [`lower`], [`loops`], [`codegen`]) are public for
//!   tools that inspect or drive the pipeline stage by stage. The `bench` and `tolerance`
//!   modules serve the `mnv2c` command and the tests; they are hidden from these docs and are
//!   not part of the API.
//! - `examples/classify.rs` compiles a model and classifies a batch with the library alone:
//!   `cargo run --release --example classify`.
//!
//! The whole flow — build the model, give it weights, compile, run:
//!
//! ```
//! use mnv2c::frontend::{Config, mobilenet_v2, weights};
//! use mnv2c::{CompiledModel, Options};
//!
//! let config = Config { num_classes: 10, batch: 1, height: 96, width: 96 };
//! let graph = mobilenet_v2(&config)?;
//! // The text form, as `mnv2c compile --emit ir -O0` prints it, parses back to the same graph.
//! let text = graph.to_string();
//! assert!(text.contains("%prob = softmax(%logits) : f32[1,10]"));
//! assert_eq!(mnv2c::graph::parse(&text, "model.ir")?, graph);
//!
//! // Seeded weights as the tutorial initialises them (or `weights::load` a .safetensors file).
//! let params = weights::seeded(&graph, 0)?;
//! // Optimise, lower, JIT-compile; two threads per call.
//! let model = CompiledModel::compile(&graph, &params, &Options::new().with_threads(2))?;
//! assert_eq!(model.inputs()[0].dims, [1, 96, 96, 3]);
//! assert_eq!(model.outputs()[1].name, "prob");
//! let input = weights::synthetic_input(&config)?; // [1, 96, 96, 3], NHWC
//! let out = model.run(&input)?;
//! assert_eq!(out.probs.dims(), [1, 10]);
//! let total: f32 = out.probs.data().iter().sum();
//! assert!((total - 1.0).abs() < 1e-5);
//! // A wrong input shape is an error, not a crash.
//! let e = model.run(&mnv2c::Tensor::zeros(vec![1, 95, 96, 3])?).unwrap_err();
//! assert_eq!(e.to_string(), "input: input %input must be f32[1,96,96,3], got f32[1,95,96,3]");
//! # Ok::<(), mnv2c::Error>(())
//! ```

#![deny(unsafe_code)]
#![warn(missing_debug_implementations, rust_2018_idioms)]
#![deny(
    clippy::dbg_macro,
    clippy::todo,
    clippy::print_stdout,
    clippy::print_stderr
)]

pub mod aot;
#[doc(hidden)]
pub mod bench;
pub mod classify;
pub mod codegen;
pub mod emit;
pub mod error;
pub mod files;
pub mod frontend;
pub mod graph;
pub mod loops;
pub mod lower;
pub mod npy;
pub mod passes;
pub mod runtime;
pub mod tensor;
#[doc(hidden)]
pub mod tolerance;

pub use error::{Error, Result};
pub use runtime::{CompiledModel, Layout, Options, Output, TensorInfo};
pub use tensor::{AsTensorView, Tensor, TensorMap, TensorView};
