//! The one error type of the library.
//!
//! Every failure a user can cause — a malformed IR file, a graph that breaks an invariant, a
//! weights or `.npy` file that does not fit the model, an input of the wrong shape — is a variant
//! of [`Error`]. Messages are written for the person who has to fix the input: they name the file
//! and `line:col`, the value or tensor as it is printed, and what was expected against what was
//! found. Nothing in the library panics on user input; a panic is a bug in mnv2c.
//!
//! `docs/errors.md` lists every variant with a real message and the CLI's exit status for it.

use std::path::PathBuf;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text form of the graph IR could not be read.
    #[error("{file}:{line}:{col}: {message}")]
    Parse {
        file: String,
        line: usize,
        col: usize,
        message: String,
    },

    /// A graph breaks one of the invariants of `graph` (see its module doc). `value` is the
    /// printed name of the offending value or constant (`%res5_1/pw`, `@conv1_1/conv2d/w`).
    /// With `pass: Some(_)` a pass broke a graph that verified before it: a bug in mnv2c.
    /// `location` is `file:line:col` of the value's definition when the graph came from a file.
    #[error("{}{}{value}: {message}", match location { Some(l) => format!("{l}: "), None => String::new() }, match pass { Some(p) => format!("verification failed after {p}: "), None => "invalid graph: ".to_string() })]
    Verify {
        pass: Option<String>,
        value: String,
        message: String,
        location: Option<String>,
    },

    /// The model cannot be built from the requested configuration.
    #[error("invalid model configuration: {0}")]
    Config(String),

    /// A weights file (or a weights set) does not fit the graph: `tensor` is the variable name.
    #[error("weights: tensor '{tensor}': {message}")]
    Weights { tensor: String, message: String },

    /// A file is not in the format it claims (truncated, bad header, wrong dtype or layout).
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },

    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The input given at run time does not fit the compiled model.
    #[error("input: {0}")]
    Input(String),

    /// A request the tool cannot serve as asked (an unknown pass name, an option that needs
    /// another one, ...).
    #[error("{0}")]
    Usage(String),

    /// Code generation failed. On a verified graph this is a bug in mnv2c.
    #[error("internal error in code generation: {0}")]
    Codegen(String),
}

impl Error {
    /// Shorthand for a [`Error::Verify`] outside any pass.
    pub fn verify(value: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Verify {
            pass: None,
            value: value.into(),
            message: message.into(),
            location: None,
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
