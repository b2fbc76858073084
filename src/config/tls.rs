//! `[tls]`: the TLS listeners, their certificates and the lowest version offered.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

use super::default_true;
use super::values::Listen;

/// `[tls]`: TLS listeners and their certificates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub listen: Vec<Listen>,
    #[serde(default)]
    pub min_version: MinVersion,
    /// The plain listeners answer 308 to the https URL instead of proxying.
    #[serde(default)]
    pub redirect_http: bool,
    /// Offer HTTP/2 by ALPN.
    #[serde(default = "default_true")]
    pub h2: bool,
    pub certificates: Spanned<Vec<CertificateSection>>,
}

/// One `[[tls.certificates]]`: a PEM chain and its key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSection {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

/// `min_version`: the oldest TLS version a client may use. TLS 1.3 is always the newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinVersion {
    #[default]
    Tls12,
    Tls13,
}

impl FromStr for MinVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "1.2" => Ok(MinVersion::Tls12),
            "1.3" => Ok(MinVersion::Tls13),
            _ => Err(format!(
                "unsupported TLS min_version \"{s}\": write \"1.2\" or \"1.3\""
            )),
        }
    }
}

impl fmt::Display for MinVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MinVersion::Tls12 => "1.2",
            MinVersion::Tls13 => "1.3",
        })
    }
}

impl<'de> Deserialize<'de> for MinVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = MinVersion;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"1.2\" or \"1.3\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MinVersion, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}
