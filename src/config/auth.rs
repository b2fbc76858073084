//! `[auth.NAME]` as users write it.
//!
//! One struct with optional fields rather than an enum tagged by `type`: serde's internally
//! tagged enums buffer the table and lose the toml spans, and the spans are what let an error
//! point at the value that is wrong. Which fields a `type` takes is listed here and checked
//! when the authenticator compiles (`crate::auth`), so `header` on a jwt authenticator is
//! refused with its own span.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::DurationValue;

/// `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    Jwt,
    ApiKey,
    Oauth2Introspection,
}

impl AuthKind {
    pub fn name(self) -> &'static str {
        match self {
            AuthKind::Jwt => "jwt",
            AuthKind::ApiKey => "api_key",
            AuthKind::Oauth2Introspection => "oauth2_introspection",
        }
    }
}

impl<'de> Deserialize<'de> for AuthKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "jwt" => Ok(AuthKind::Jwt),
            "api_key" => Ok(AuthKind::ApiKey),
            "oauth2_introspection" => Ok(AuthKind::Oauth2Introspection),
            _ => Err(de::Error::custom(format!(
                "unknown auth type \"{text}\": write \"jwt\", \"api_key\" or \"oauth2_introspection\""
            ))),
        }
    }
}

/// A string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut all = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    all.push(s);
                }
                Ok(OneOrMany(all))
            }
        }
        d.deserialize_any(V)
    }
}

impl AuthSection {
    /// Every optional field that is present: its name, span and the types it belongs to.
    pub fn present_fields(&self) -> Vec<(&'static str, Range<usize>, &'static [AuthKind])> {
        fn at<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
            v.as_ref().map(Spanned::span)
        }
        let all = [
            ("algorithms", at(&self.algorithms), JWT),
            ("secret_env", at(&self.secret_env), JWT),
            ("public_key_file", at(&self.public_key_file), JWT),
            ("jwks_file", at(&self.jwks_file), JWT),
            ("jwks_url", at(&self.jwks_url), JWT),
            ("jwks_refresh", at(&self.jwks_refresh), JWT),
            ("issuer", at(&self.issuer), JWT),
            ("audience", at(&self.audience), JWT),
            ("leeway", at(&self.leeway), JWT),
            ("forward_claims", at(&self.forward_claims), TOKENS),
            ("required_scopes", at(&self.required_scopes), TOKENS),
            ("timeout", at(&self.timeout), TOKENS),
            ("header", at(&self.header), API_KEY),
            ("query", at(&self.query), API_KEY),
            ("keys", at(&self.keys), API_KEY),
            (
                "introspection_url",
                at(&self.introspection_url),
                INTROSPECTION,
            ),
            ("client_id", at(&self.client_id), INTROSPECTION),
            (
                "client_secret_env",
                at(&self.client_secret_env),
                INTROSPECTION,
            ),
            ("cache_ttl", at(&self.cache_ttl), TOKENS),
            ("strip_credentials", at(&self.strip_credentials), ANY),
        ];
        all.into_iter()
            .filter_map(|(name, span, kinds)| span.map(|s| (name, s, kinds)))
            .collect()
    }
}

/// The fields in the order they are checked, with the types they belong to.
pub(crate) const JWT: &[AuthKind] = &[AuthKind::Jwt];

pub(crate) const API_KEY: &[AuthKind] = &[AuthKind::ApiKey];

pub(crate) const INTROSPECTION: &[AuthKind] = &[AuthKind::Oauth2Introspection];

pub(crate) const TOKENS: &[AuthKind] = &[AuthKind::Jwt, AuthKind::Oauth2Introspection];

pub(crate) const ANY: &[AuthKind] = &[
    AuthKind::Jwt,
    AuthKind::ApiKey,
    AuthKind::Oauth2Introspection,
];

/// One `[auth.NAME]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    #[serde(rename = "type")]
    pub kind: Spanned<AuthKind>,

    // jwt
    /// Accepted `alg` values; a token whose header names another is refused.
    pub algorithms: Option<Spanned<Vec<Spanned<String>>>>,
    /// HS*: the environment variable that holds the shared secret.
    pub secret_env: Option<Spanned<String>>,
    /// A PEM public key (RSA, EC P-256/P-384 or Ed25519) or certificate.
    pub public_key_file: Option<Spanned<String>>,
    /// A JWKS document on disk.
    pub jwks_file: Option<Spanned<String>>,
    /// A JWKS document fetched over http or https, at start and every `jwks_refresh`.
    pub jwks_url: Option<Spanned<String>>,
    /// Default "5m".
    pub jwks_refresh: Option<Spanned<DurationValue>>,
    /// Required `iss`.
    pub issuer: Option<Spanned<String>>,
    /// `aud` must hold one of these.
    pub audience: Option<Spanned<OneOrMany>>,
    /// Clock skew allowed on exp, nbf and iat; default "30s".
    pub leeway: Option<Spanned<DurationValue>>,

    // jwt and oauth2_introspection
    /// Claim -> header sent upstream.
    pub forward_claims: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    /// Scopes that must all be granted (`scope` or `scp`), else 403.
    pub required_scopes: Option<Spanned<Vec<Spanned<String>>>>,
    /// Limit on one call to the JWKS or introspection endpoint; default "5s".
    pub timeout: Option<Spanned<DurationValue>>,

    // api_key
    /// The request header that carries the key.
    pub header: Option<Spanned<String>>,
    /// The query parameter that carries the key.
    pub query: Option<Spanned<String>>,
    /// Consumer name -> `"sha256:<hex>"`.
    pub keys: Option<Spanned<BTreeMap<String, Spanned<String>>>>,

    // oauth2_introspection
    pub introspection_url: Option<Spanned<String>>,
    pub client_id: Option<Spanned<String>>,
    pub client_secret_env: Option<Spanned<String>>,
    /// How long an active token's answer is reused; default "60s", never past its exp.
    pub cache_ttl: Option<Spanned<DurationValue>>,

    // any type
    /// Remove the credentials before proxying.
    pub strip_credentials: Option<Spanned<bool>>,
}
