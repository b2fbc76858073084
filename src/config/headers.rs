//! `[cors]` and `[security_headers]`: the fields the gateway adds to its answers.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::default_true;
use super::values::HeaderText;
use super::values::MaxAge;
use super::values::Origin;
use super::values::Token;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSection {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// `["*"]` or a list of origins such as `"https://app.example.com"`.
    #[serde(default = "default_origins")]
    pub allow_origins: Spanned<Vec<Origin>>,
    #[serde(default = "default_methods")]
    pub allow_methods: Vec<Token>,
    /// Absent: a preflight's Access-Control-Request-Headers are allowed as asked.
    #[serde(default)]
    pub allow_headers: Option<Vec<Token>>,
    /// Absent: the gateway's own fields (X-Request-Id, the RateLimit fields, Retry-After),
    /// so that scripts in a browser can read them; `[]`: none.
    #[serde(default)]
    pub expose_headers: Option<Vec<Token>>,
    #[serde(default = "no_credentials")]
    pub allow_credentials: Spanned<bool>,
    #[serde(default)]
    pub max_age: Option<MaxAge>,
}

impl Default for CorsSection {
    fn default() -> Self {
        CorsSection {
            enabled: true,
            allow_origins: default_origins(),
            allow_methods: default_methods(),
            allow_headers: None,
            expose_headers: None,
            allow_credentials: no_credentials(),
            max_age: None,
        }
    }
}

pub(super) fn default_origins() -> Spanned<Vec<Origin>> {
    Spanned::new(0..0, vec![Origin::Any])
}

pub(super) fn no_credentials() -> Spanned<bool> {
    Spanned::new(0..0, false)
}

pub(super) fn default_methods() -> Vec<Token> {
    ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE"]
        .into_iter()
        .map(|m| Token(m.to_string()))
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityHeadersSection {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Headers stripped from upstream responses.
    #[serde(default = "default_remove")]
    pub remove: Vec<Token>,
    /// Replace the value of a default header (an empty value leaves that header out) or add one.
    #[serde(default)]
    pub set: BTreeMap<Token, HeaderText>,
}

impl Default for SecurityHeadersSection {
    fn default() -> Self {
        SecurityHeadersSection {
            enabled: true,
            remove: default_remove(),
            set: BTreeMap::new(),
        }
    }
}

pub(super) fn default_remove() -> Vec<Token> {
    vec![
        Token("Server".to_string()),
        Token("X-Powered-By".to_string()),
    ]
}
