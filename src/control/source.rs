//! Where configuration comes from: the node's file, read at start and again on SIGHUP,
//! with `PORT` from the environment at start replacing the first listener's port (reloads
//! apply the same); and the policy document, which is the file's policy sections, or a
//! text given apart (one sent to the admin API, or a fleet's from its store). The runtime
//! never knows the file: a source delivers the parsed document and the runtime is compiled
//! from it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{self, ConfigError, FileConfig};
use crate::runtime::{Runtime, Shared};

use super::Document;

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

/// A policy document given apart from the file, and the name its errors are located by.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub text: &'a str,
    pub name: &'a Path,
}

/// What a load gives: the config to compile, the policy document in it, and the node's
/// part of the file as written.
pub struct Loaded {
    pub file: FileConfig,
    pub document: Document,
    /// The file's own sections, byte for byte (the whole file when it names a fleet).
    pub node_text: String,
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

    /// Read the file (named as given) and parse it, with `policy` as the policy document
    /// when given: in place of the file's policy sections, or of a fleet node's empty one.
    pub fn load_given(&self, policy: Option<Policy>) -> Result<Loaded, ConfigError> {
        load(&self.given, policy)
    }

    /// The same, reading the file at its absolute path (a reload, a write).
    pub fn load(&self, policy: Option<Policy>) -> Result<Loaded, ConfigError> {
        load(&self.path, policy)
    }

    /// Compile a loaded config for a new process, with new shared state.
    pub fn first(&self, loaded: &Loaded) -> Result<Runtime, ConfigError> {
        let shared = Arc::new(Shared::from_config(&loaded.file)?);
        Runtime::from_config(&loaded.file, self.port_override.as_deref(), shared)
            .map_err(|e| self.named_absolute(e))
    }

    /// A problem of the environment (PORT, an upstream's address) names the file by its
    /// absolute path, as reloads do; one located at a line names it as given.
    fn named_absolute(&self, e: ConfigError) -> ConfigError {
        match e {
            ConfigError::Environment { path, message } if path == self.given => {
                ConfigError::Environment {
                    path: self.path.clone(),
                    message,
                }
            }
            e => e,
        }
    }

    /// Compile a loaded config on the running process's shared state (a reload, a new
    /// policy document).
    pub fn compile(&self, loaded: &Loaded, shared: Arc<Shared>) -> Result<Runtime, ConfigError> {
        Runtime::from_config(&loaded.file, self.port_override.as_deref(), shared)
    }
}

fn load(path: &Path, policy: Option<Policy>) -> Result<Loaded, ConfigError> {
    let text = config::read_text(path)?;
    let whole = config::parse(path, &text)?;
    let in_fleet = whole.fleet().is_some();
    match (in_fleet, policy) {
        (false, None) => {
            let parts = config::split(&text);
            Ok(Loaded {
                file: whole,
                document: Document::new(parts.policy),
                node_text: parts.node,
            })
        }
        (false, Some(policy)) => {
            let parts = config::split(&text);
            let file = config::parse_split((path, &parts.node), (policy.name, policy.text))?;
            Ok(Loaded {
                file,
                document: Document::new(policy.text.to_string()),
                node_text: parts.node,
            })
        }
        (true, policy) => {
            let policy = policy.unwrap_or(Policy {
                text: "",
                name: Path::new("(empty policy document)"),
            });
            let file = config::parse_split((path, &text), (policy.name, policy.text))?;
            Ok(Loaded {
                file,
                document: Document::new(policy.text.to_string()),
                node_text: text,
            })
        }
    }
}
