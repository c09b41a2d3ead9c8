//! The one error type of the library.
//!
//! Every failure a user can cause — a malformed IR file, a graph that breaks an invariant, a
//! weights or `.npy` file that does not fit the model, an input of the wrong shape — is a variant
//! of [`Error`]. Messages are written for the person who has to fix the input: they name the file
//! and `line:col` (a [`Location`]), the value or tensor as it is printed, and what was expected
//! against what was found. Nothing in the library panics on user input; a panic is a bug in mnv2c.
//!
//! Two kinds say that mnv2c itself failed, not the input: [`Error::Codegen`] (code generation
//! rejected a verified graph) and [`Error::Internal`] (any other broken promise, or the system
//! refusing a resource such as a thread). [`Error::OutOfMemory`] and [`Error::TooLarge`] say that
//! a valid model does not fit this machine or the address space.
//!
//! Both types are `#[non_exhaustive]`: new kinds may be added without a breaking release, so a
//! `match` outside the crate needs a wildcard arm. `docs/errors.md` lists every variant with a
//! real message and the CLI's exit status for it.

use std::fmt;
use std::path::PathBuf;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where in a text file something is: `file:line:col`, lines and columns counted from 1.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file as the user named it (used in messages only).
    pub file: String,
    pub line: usize,
    pub col: usize,
}

impl Location {
    pub fn new(file: impl Into<String>, line: usize, col: usize) -> Location {
        Location {
            file: file.into(),
            line,
            col,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// Everything that can go wrong; see the module doc.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text form of the graph IR could not be read.
    #[error("{location}: {message}")]
    Parse { location: Location, message: String },

    /// A graph breaks one of the invariants of `graph` (see its module doc). `value` is the
    /// printed name of the offending value or constant (`%res5_1/pw`, `@conv1_1/conv2d/w`).
    /// With `pass: Some(_)` a pass broke a graph that verified before it: a bug in mnv2c.
    /// `location` is where the value is defined when the graph came from a file.
    #[error("{}{}{value}: {message}", match location { Some(l) => format!("{l}: "), None => String::new() }, match pass { Some(p) => format!("verification failed after {p}: "), None => "invalid graph: ".to_string() })]
    Verify {
        pass: Option<String>,
        value: String,
        message: String,
        location: Option<Location>,
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

    /// The input given at run time does not fit the compiled model (wrong shape, a
    /// zero-element shape, a non-finite value).
    #[error("input: {0}")]
    Input(String),

    /// A request the tool cannot serve as asked (an unknown pass name, an option that needs
    /// another one, ...).
    #[error("{0}")]
    Usage(String),

    /// A size computed from a valid model (an arena, a tensor's byte count) does not fit the
    /// address space: found at compile time, so the model, not an input, is too large.
    #[error("too large: {0}")]
    TooLarge(String),

    /// Memory for `what` (`bytes` bytes) could not be allocated.
    #[error("out of memory: cannot allocate {bytes} bytes for {what}")]
    OutOfMemory { what: String, bytes: usize },

    /// Code generation failed. On a verified graph this is a bug in mnv2c.
    #[error("internal error in code generation: {0}")]
    Codegen(String),

    /// mnv2c broke one of its own promises, or the system refused a resource it needs (a
    /// thread). Not the input's fault.
    #[error("internal error: {0}")]
    Internal(String),
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

    /// The exit status the `mnv2c` command uses for this error (the table of `docs/errors.md`):
    /// 2 usage, 3 an invalid model, IR, weights or file (or one too large for this machine),
    /// 4 an input that does not fit the model, 70 an internal error.
    pub fn exit_status(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::Parse { .. }
            | Error::Verify { pass: None, .. }
            | Error::Config(_)
            | Error::Weights { .. }
            | Error::Format { .. }
            | Error::Io { .. }
            | Error::TooLarge(_)
            | Error::OutOfMemory { .. } => 3,
            Error::Input(_) => 4,
            // A graph that verified when it was read and fails after a pass was broken by mnv2c.
            Error::Verify { pass: Some(_), .. } | Error::Codegen(_) | Error::Internal(_) => 70,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statuses of `docs/errors.md`; in particular a verifier failure after a pass is an
    /// internal error (the input verified before the pass ran), not an invalid model.
    #[test]
    fn exit_statuses_follow_the_documented_kinds() {
        let verify_after = |pass: Option<&str>| Error::Verify {
            pass: pass.map(str::to_string),
            value: "%x".into(),
            message: "m".into(),
            location: None,
        };
        assert_eq!(Error::Usage("u".into()).exit_status(), 2);
        assert_eq!(verify_after(None).exit_status(), 3);
        assert_eq!(Error::Config("c".into()).exit_status(), 3);
        assert_eq!(Error::TooLarge("t".into()).exit_status(), 3);
        let oom = Error::OutOfMemory {
            what: "the activation arena".into(),
            bytes: 1 << 40,
        };
        assert_eq!(oom.exit_status(), 3);
        assert_eq!(
            oom.to_string(),
            "out of memory: cannot allocate 1099511627776 bytes for the activation arena"
        );
        assert_eq!(Error::Input("i".into()).exit_status(), 4);
        assert_eq!(verify_after(Some("fuse-relu6")).exit_status(), 70);
        assert_eq!(Error::Codegen("c".into()).exit_status(), 70);
        assert_eq!(Error::Internal("i".into()).exit_status(), 70);
    }

    #[test]
    fn locations_print_as_file_line_col() {
        let e = Error::Parse {
            location: Location::new("g.ir", 3, 14),
            message: "expected `=`".into(),
        };
        assert_eq!(e.to_string(), "g.ir:3:14: expected `=`");
    }
}
