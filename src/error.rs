//! The library's typed errors. main.rs turns them into one-line messages and
//! the documented exit codes.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or configuration value that cannot be used.
    #[error("{flag}: {message}")]
    Usage { flag: String, message: String },

    /// A data source that cannot be read as what it claims to be.
    #[error("{source_name}:{location}: {message}")]
    Data {
        source_name: String,
        location: String,
        message: String,
    },

    /// A report file (for `gate` or `--baseline`) that cannot be used.
    #[error("{}: {message}", path.display())]
    ReportFile { path: PathBuf, message: String },

    /// A run directory (plan, artifacts) that cannot be used.
    #[error("{}: {message}", path.display())]
    RunDir { path: PathBuf, message: String },

    /// An output that could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },

    /// Training produced something unusable (e.g. a non-finite loss).
    #[error("training model {model} failed at step {step}: {message}")]
    Training {
        model: usize,
        step: u64,
        message: String,
    },

    /// libtorch refused an operation.
    #[error("libtorch: {}", torch_message(.0))]
    Torch(#[from] tch::TchError),
}

/// libtorch's message alone: its first line, without the C++ stack trace
/// that follows it.
pub fn torch_message(err: &tch::TchError) -> String {
    let text = err.to_string();
    let first = text.lines().next().unwrap_or_default();
    first
        .strip_prefix("Internal torch error: ")
        .unwrap_or(first)
        .to_owned()
}

impl Error {
    pub fn usage(flag: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Usage {
            flag: flag.into(),
            message: message.into(),
        }
    }

    /// Exit codes, as documented in README and `--help`: 2 for anything the user
    /// can fix in the invocation or inputs, 3 when training itself failed.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage { .. }
            | Error::Data { .. }
            | Error::ReportFile { .. }
            | Error::RunDir { .. }
            | Error::Output { .. } => 2,
            Error::Training { .. } | Error::Torch(_) => 3,
        }
    }
}
