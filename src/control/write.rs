//! `PUT /config`: a new policy document, checked, then applied: in the node's file
//! (rewritten atomically, its own sections kept byte for byte, the previous file kept as
//! `FILE.prev`), or in the fleet's store (a compare-and-set, then a notification).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::config::{self, ConfigError};

use super::{Current, Document, SENT_DOCUMENT};

/// A write that did not happen, and why.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(
        "If-Match is needed: send the ETag of GET /config (or * to replace whatever is there)"
    )]
    PreconditionRequired,
    #[error(
        "the document changed since {given}: it is {current} now; GET /config again and merge"
    )]
    Stale { given: String, current: String },
    #[error("{0}")]
    Invalid(ConfigError),
    #[error("the fleet's store is unreachable, so nothing was changed: {0}")]
    StoreUnavailable(String),
    #[error("the configuration file could not be written, so nothing was changed: {0}")]
    Io(String),
}

/// A write that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    Applied {
        hash: String,
        previous: String,
        generation: u64,
    },
    /// The document in force already has this text.
    Unchanged { hash: String, generation: u64 },
}

impl Current {
    /// Replace the policy document with `text` when `if_match` (an ETag, or `*`) names the
    /// one in force (the fleet's, with a store).
    pub async fn write(&self, text: &str, if_match: Option<&str>) -> Result<Written, WriteError> {
        let _one = self.writing.lock().await;
        let if_match = if_match.ok_or(WriteError::PreconditionRequired)?;
        let hash = config::content_hash(text);
        match &self.fleet {
            None => self.write_file(text, if_match, hash),
            Some(fleet) => fleet.write(self, text, if_match, hash).await,
        }
    }

    fn write_file(&self, text: &str, if_match: &str, hash: String) -> Result<Written, WriteError> {
        let before = self.document();
        if !matches_etag(if_match, &before.hash) {
            return Err(WriteError::Stale {
                given: if_match.to_string(),
                current: before.hash.to_string(),
            });
        }
        if *before.hash == hash {
            return Ok(Written::Unchanged {
                hash,
                generation: self.status().generation,
            });
        }
        let loaded = self.checked(text).map_err(WriteError::Invalid)?;
        let joined = config::join(&loaded.node_text, text);
        if config::split(&joined).node != loaded.node_text {
            return Err(WriteError::Invalid(ConfigError::Environment {
                path: SENT_DOCUMENT.into(),
                message: "the document opens with keys outside any table, which would join the file's last section: write each section under its [table] header".into(),
            }));
        }
        replace_file(self.source.path(), &joined).map_err(WriteError::Io)?;
        let (generation, _) = self.install(loaded).map_err(WriteError::Invalid)?;
        Ok(Written::Applied {
            hash,
            previous: before.hash.to_string(),
            generation,
        })
    }
}

/// Whether an `If-Match` value names `hash`: `*`, or a list of quoted (or bare, or weak)
/// entity tags one of which is it.
pub fn matches_etag(if_match: &str, hash: &str) -> bool {
    if_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || entity_tag(tag) == hash)
}

/// An entity tag's opaque part: `W/"abc"`, `"abc"` and `abc` are all `abc`.
pub(super) fn entity_tag(tag: &str) -> &str {
    tag.trim().trim_start_matches("W/").trim_matches('"')
}

/// Write `text` to `path` atomically: a temporary file beside it (with its permissions),
/// flushed, then renamed over it; the previous content stays as `PATH.prev`.
fn replace_file(path: &Path, text: &str) -> Result<(), String> {
    let with_suffix = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let temporary = with_suffix(".tmp");
    let previous = with_suffix(".prev");
    let named = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
    let permissions = std::fs::metadata(path)
        .map_err(|e| named(path, e))?
        .permissions();
    let mut file = std::fs::File::create(&temporary).map_err(|e| named(&temporary, e))?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.set_permissions(permissions))
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(named(&temporary, e));
    }
    std::fs::copy(path, &previous).map_err(|e| named(&previous, e))?;
    std::fs::rename(&temporary, path).map_err(|e| named(path, e))?;
    Ok(())
}

impl Document {
    /// The `ETag` of this document.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_names_the_hash_or_anything() {
        assert!(matches_etag("\"abc\"", "abc"));
        assert!(matches_etag("abc", "abc"));
        assert!(matches_etag("W/\"abc\"", "abc"));
        assert!(matches_etag("\"x\", \"abc\"", "abc"));
        assert!(matches_etag("*", "abc"));
        assert!(!matches_etag("\"abd\"", "abc"));
        assert!(!matches_etag("", "abc"));
    }

    #[test]
    fn a_replaced_file_keeps_the_previous_one_and_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pylon-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pylon.toml");
        std::fs::write(&path, "old\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        replace_file(&path, "new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(
            std::fs::read_to_string(dir.join("pylon.toml.prev")).unwrap(),
            "old\n"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert!(!dir.join("pylon.toml.tmp").exists());
        let err = replace_file(&dir.join("missing.toml"), "x").unwrap_err();
        assert!(err.contains("missing.toml"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
