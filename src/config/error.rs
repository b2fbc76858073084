//! A configuration that could not be loaded, located by file, line, column and key.

use std::path::PathBuf;

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the configuration file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
    /// A problem that belongs to the environment rather than to a line of the file.
    #[error("{path}: {message}")]
    Environment { path: PathBuf, message: String },
    /// Several problems, in file order, one per line.
    #[error("{}", list(.0))]
    Many(Vec<ConfigError>),
}

/// A value a component's compiler refuses: where it is in the text, its key path
/// (`routes[2].methods`, `auth.users.secret_env`) and why. Compilers take their own section
/// and return this; the runtime turns it into a [`ConfigError`] with the file, line and
/// column ([`super::FileConfig::locate`]), in one place. The message never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key `{key}`: {message}")]
pub struct LocatedError {
    pub span: std::ops::Range<usize>,
    pub key: String,
    pub message: String,
}

impl LocatedError {
    pub fn new(
        span: std::ops::Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> LocatedError {
        LocatedError {
            span,
            key: key.into(),
            message: message.into(),
        }
    }
}

pub(super) fn list(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

pub(super) type Located = (std::ops::Range<usize>, String, String);

/// 1-based line and column of a byte offset.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    (line, offset - line_start + 1)
}
