//! `[control]`: where a node's policy document comes from. Without it, from the node's own
//! file, as always; with `store` and `fleet`, from a document that a fleet of gateways
//! shares in Redis (see [`crate::config::NODE_SECTIONS`] for what stays in the file).

use serde::Deserialize;
use toml::Spanned;

use super::rate_limit::StoreSpec;
use super::values::Timeout;

/// `[control]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    /// The fleet's store: the shapes of `rate_limit.store`.
    #[serde(default)]
    pub store: Option<Spanned<StoreSpec>>,
    /// The fleet's name: several fleets can share one store.
    #[serde(default)]
    pub fleet: Option<Spanned<Name>>,
    /// This node's name in the fleet; the host name and the first listener's port when
    /// absent.
    #[serde(default)]
    pub node: Option<Spanned<Name>>,
    /// Where the last document applied is kept, to start from when the store is away.
    #[serde(default)]
    pub cache_file: Option<Spanned<String>>,
    /// The longest one call to the store may take.
    #[serde(default = "default_control_timeout")]
    pub store_timeout: Timeout,
}

pub(super) fn default_control_timeout() -> Timeout {
    Timeout(std::time::Duration::from_secs(2))
}

/// A fleet's or a node's name: 1 to 64 of letters, digits, `.`, `_`, `-` and `:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(pub String);

impl std::str::FromStr for Name {
    type Err = String;
    fn from_str(s: &str) -> Result<Name, String> {
        let fits = |b: u8| b.is_ascii_alphanumeric() || b"._-:".contains(&b);
        if s.is_empty() || s.len() > 64 || !s.bytes().all(fits) {
            return Err(format!(
                "{s:?} is not a name: use 1 to 64 letters, digits, '.', '_', '-' or ':'"
            ));
        }
        Ok(Name(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}
