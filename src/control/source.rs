//! Where configuration comes from. Today: a file, read at start and again on SIGHUP, with
//! `PORT` from the environment at start replacing the first listener's port (reloads apply
//! the same). The runtime never knows the file: a source delivers the parsed document and
//! the runtime is compiled from it, so another source (an admin API, a shared store) plugs
//! in the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{self, ConfigError};
use crate::runtime::{Runtime, Shared};

/// A configuration file and the environment's `PORT`, as taken at start.
#[derive(Debug, Clone)]
pub struct FileSource {
    /// The path as given, which the first load's messages name.
    given: PathBuf,
    /// The same, absolute: reloads and upgrades read it again, maybe after a daemon's
    /// `chdir("/")`.
    path: PathBuf,
    port_override: Option<String>,
}

impl FileSource {
    /// `path`, and `PORT` from the environment.
    pub fn from_env(path: &Path) -> FileSource {
        FileSource::new(path, std::env::var("PORT").ok())
    }

    /// `path`, with `port_override` replacing the first listener's port.
    pub fn new(path: &Path, port_override: Option<String>) -> FileSource {
        FileSource {
            given: path.to_path_buf(),
            path: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
            port_override,
        }
    }

    /// The file, as an absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Load, check and compile the file for a new process, with new shared state.
    pub fn first(&self) -> Result<Runtime, ConfigError> {
        let file = config::load(&self.given)?;
        let shared = Arc::new(Shared::from_config(&file)?);
        Runtime::from_config(&file, self.port_override.as_deref(), shared)
            .map_err(|e| self.named_absolute(e))
    }

    /// A problem of the environment (PORT, an upstream's address) names the file by its
    /// absolute path, as reloads do; one located at a line names it as given.
    fn named_absolute(&self, e: ConfigError) -> ConfigError {
        match e {
            ConfigError::Environment { message, .. } => ConfigError::Environment {
                path: self.path.clone(),
                message,
            },
            e => e,
        }
    }

    /// Load and compile the file again, on the running process's shared state (a reload).
    pub fn recompile(&self, shared: Arc<Shared>) -> Result<Runtime, ConfigError> {
        let file = config::load(&self.path)?;
        Runtime::from_config(&file, self.port_override.as_deref(), shared)
    }
}
