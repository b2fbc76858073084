//! `[auth.NAME]` as users write it, and its compilation into an [`Authenticator`].
//!
//! One struct with optional fields rather than an enum tagged by `type`: serde's internally
//! tagged enums buffer the table and lose the toml spans, and the spans are what let an error
//! point at the value that is wrong. Which fields a `type` takes is checked here, after
//! parsing, so `header` on a jwt authenticator is refused with its own span.
//!
//! Compiling reads environment variables and key files and decodes every key; it does no
//! network I/O (JWKS URLs are fetched by [`super::JwksRefresher`]). Messages name variables
//! and files, never what they hold.

use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use toml::Spanned;

use super::api_key::{ApiKeys, KeyLocation};
use super::fetch::Clients;
use super::introspection::{Introspector, IntrospectorSettings};
use super::jwt::jwks::{key_from_pem, KeySet, RemoteJwks};
use super::jwt::{Alg, JwtSettings, JwtVerifier, KeySource};
use super::{AuthError, Authenticator, Clock, EnvLookup, Method};
use crate::config::DurationValue;
use crate::config::{AuthKind, AuthSection};
use crate::wire::{static_name, static_value};

const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
const MIN_JWKS_REFRESH: Duration = Duration::from_secs(1);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);
/// How long a verified JWT is remembered at most (never past its `exp`).
const DEFAULT_JWT_CACHE_TTL: Duration = Duration::from_secs(300);
/// Scopes are tracked in a 64-bit mask per request.
const MAX_REQUIRED_SCOPES: usize = 64;

/// Headers a claim may not be forwarded in: HTTP framing, hop-by-hop fields, and the
/// ones the gateway sets itself.
const RESERVED_HEADERS: [&str; 16] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "authorization",
    "cookie",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
];

/// Builds errors for one authenticator: `auth.NAME.FIELD`, with the section's span for
/// fields that are missing.
struct Errors<'a> {
    name: &'a str,
    section: Range<usize>,
}

impl Errors<'_> {
    fn at(&self, span: Range<usize>, field: &str, message: impl Into<String>) -> AuthError {
        AuthError {
            span,
            key: if field.is_empty() {
                format!("auth.{}", self.name)
            } else {
                format!("auth.{}.{field}", self.name)
            },
            message: message.into(),
        }
    }

    fn missing(&self, field: &str, message: impl Into<String>) -> AuthError {
        self.at(self.section.clone(), field, message)
    }
}

/// What compiling needs besides the section: the environment, the clock, the HTTP clients.
pub(crate) struct Context<'a> {
    pub env: EnvLookup<'a>,
    pub clock: Clock,
    pub clients: &'a mut Clients,
}

/// Compile one `[auth.NAME]`; JWKS URLs are returned for the refresher through the method.
pub(crate) fn compile(
    name: &str,
    section: &Spanned<AuthSection>,
    cx: &mut Context<'_>,
) -> Result<Authenticator, AuthError> {
    let errors = Errors {
        name,
        section: section.span(),
    };
    let s = section.get_ref();
    check_name(name, &errors)?;
    let kind = *s.kind.get_ref();
    for (field, span, kinds) in s.present_fields() {
        if !kinds.contains(&kind) {
            let owners: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
            return Err(errors.at(
                span,
                field,
                format!(
                    "`{field}` does not apply to type = \"{}\"; it belongs to {}",
                    kind.name(),
                    owners.join(" and ")
                ),
            ));
        }
    }
    let strip = s.strip_credentials.as_ref().is_some_and(|b| *b.get_ref());
    let forward = forward_claims(s, &errors)?;
    let forwarded: Vec<HeaderName> = forward.iter().map(|(_, h)| h.clone()).collect();
    let required_scopes = required_scopes(s, &errors)?;
    let method = match kind {
        AuthKind::Jwt => Method::Jwt(jwt(s, &errors, cx, forward, &required_scopes)?),
        AuthKind::ApiKey => Method::ApiKey(api_key(s, &errors)?),
        AuthKind::Oauth2Introspection => {
            Method::Introspection(introspection(s, &errors, cx, forward, &required_scopes)?)
        }
    };
    let unauthorized = match &method {
        Method::ApiKey(keys) => static_value(&keys.challenge())
            .map_err(|m| errors.missing("", format!("cannot build the challenge: {m}")))?,
        _ => HeaderValue::from_static(super::BEARER_CHALLENGE),
    };
    let forbidden = if required_scopes.is_empty() {
        HeaderValue::from_static(super::BEARER_CHALLENGE)
    } else {
        static_value(&format!(
            "Bearer realm=\"pylon\", error=\"insufficient_scope\", scope=\"{}\"",
            required_scopes.join(" ")
        ))
        .map_err(|m| errors.missing("required_scopes", m))?
    };
    Ok(Authenticator {
        name: Arc::from(name),
        method,
        strip,
        forwarded,
        unauthorized,
        forbidden,
    })
}

/// Names end up in rate-limit keys (`NAME:subject`) and logs: keep them plain.
fn check_name(name: &str, errors: &Errors<'_>) -> Result<(), AuthError> {
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if plain {
        Ok(())
    } else {
        Err(errors.missing(
            "",
            format!(
                "authenticator name \"{name}\" may hold only letters, digits, '_', '-' and '.'"
            ),
        ))
    }
}

fn duration_or(
    value: &Option<Spanned<DurationValue>>,
    default: Duration,
) -> (Duration, Option<Range<usize>>) {
    match value {
        Some(v) => (v.get_ref().0, Some(v.span())),
        None => (default, None),
    }
}

fn forward_claims(
    s: &AuthSection,
    errors: &Errors<'_>,
) -> Result<Vec<(Box<str>, HeaderName)>, AuthError> {
    let Some(map) = &s.forward_claims else {
        return Ok(Vec::new());
    };
    let mut out: Vec<(Box<str>, HeaderName)> = Vec::new();
    for (claim, header) in map.get_ref() {
        let field = format!("forward_claims.{claim}");
        if claim.is_empty() {
            return Err(errors.at(map.span(), "forward_claims", "a claim name is empty"));
        }
        let name =
            static_name(header.get_ref()).map_err(|m| errors.at(header.span(), &field, m))?;
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(errors.at(
                header.span(),
                &field,
                format!(
                    "{} cannot carry a claim: HTTP or the gateway itself sets it",
                    header.get_ref()
                ),
            ));
        }
        if let Some((other, _)) = out.iter().find(|(_, h)| *h == name) {
            return Err(errors.at(
                header.span(),
                &field,
                format!(
                    "{} already carries the claim \"{other}\": give each claim its own header",
                    header.get_ref()
                ),
            ));
        }
        out.push((claim.as_str().into(), name));
    }
    Ok(out)
}

/// RFC 6749 §3.3: a scope token is printable ASCII without space, '"' and '\'.
fn required_scopes(s: &AuthSection, errors: &Errors<'_>) -> Result<Vec<String>, AuthError> {
    let Some(list) = &s.required_scopes else {
        return Ok(Vec::new());
    };
    if list.get_ref().len() > MAX_REQUIRED_SCOPES {
        return Err(errors.at(
            list.span(),
            "required_scopes",
            format!("at most {MAX_REQUIRED_SCOPES} scopes can be required"),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for (i, scope) in list.get_ref().iter().enumerate() {
        let text = scope.get_ref();
        let valid = !text.is_empty()
            && text
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !valid {
            return Err(errors.at(
                scope.span(),
                &format!("required_scopes[{i}]"),
                format!("\"{text}\" is not a scope: printable ASCII without spaces, '\"' or '\\'"),
            ));
        }
        if !out.contains(text) {
            out.push(text.clone());
        }
    }
    Ok(out)
}

/// The value of an environment variable that holds a secret.
fn secret_from_env(
    var: &Spanned<String>,
    field: &str,
    errors: &Errors<'_>,
    cx: &Context<'_>,
) -> Result<Vec<u8>, AuthError> {
    let name = var.get_ref();
    if name.is_empty() || name.contains('=') || name.contains('\0') {
        return Err(errors.at(
            var.span(),
            field,
            format!("\"{name}\" is not an environment variable name"),
        ));
    }
    let value = (cx.env)(name).ok_or_else(|| {
        errors.at(
            var.span(),
            field,
            format!("the environment variable {name} is not set"),
        )
    })?;
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return Err(errors.at(
            var.span(),
            field,
            format!("the environment variable {name} is empty"),
        ));
    }
    Ok(bytes.to_vec())
}

fn read_file(
    path: &Spanned<String>,
    field: &str,
    errors: &Errors<'_>,
) -> Result<Vec<u8>, AuthError> {
    crate::config::read_capped(path.get_ref(), crate::config::MAX_SIDE_FILE).map_err(|e| {
        errors.at(
            path.span(),
            field,
            format!("cannot read {field} \"{}\": {e}", path.get_ref()),
        )
    })
}

/// An http or https URL without credentials in it (they would end up in logs).
fn endpoint_url(
    url: &Spanned<String>,
    field: &str,
    errors: &Errors<'_>,
) -> Result<reqwest::Url, AuthError> {
    let text = url.get_ref();
    let bad = |why: &str| {
        errors.at(
            url.span(),
            field,
            format!("invalid {field} \"{text}\": {why}"),
        )
    };
    let parsed = reqwest::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("write an http:// or https:// URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("the URL has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(errors.at(
            url.span(),
            field,
            format!("{field} must not hold credentials: they would be logged with the URL"),
        ));
    }
    Ok(parsed)
}

fn jwt(
    s: &AuthSection,
    errors: &Errors<'_>,
    cx: &mut Context<'_>,
    forward: Vec<(Box<str>, HeaderName)>,
    required_scopes: &[String],
) -> Result<JwtVerifier, AuthError> {
    let list = s.algorithms.as_ref().ok_or_else(|| {
        errors.missing(
            "algorithms",
            "type = \"jwt\" needs `algorithms`, the algorithms tokens may be signed with, like [\"RS256\"]",
        )
    })?;
    if list.get_ref().is_empty() {
        return Err(errors.at(
            list.span(),
            "algorithms",
            "`algorithms` is empty: list the algorithms tokens may be signed with, like [\"RS256\"]",
        ));
    }
    let mut algorithms: Vec<(Alg, Range<usize>, String)> = Vec::new();
    for (i, entry) in list.get_ref().iter().enumerate() {
        let field = format!("algorithms[{i}]");
        let text = entry.get_ref();
        let alg = Alg::from_name(text).ok_or_else(|| {
            let message = if text.eq_ignore_ascii_case("none") {
                "\"none\" is never accepted: an unsigned token would admit anyone".to_string()
            } else {
                format!(
                    "unknown algorithm \"{text}\": write one of {}",
                    Alg::ALL
                        .iter()
                        .map(|a| a.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            errors.at(entry.span(), &field, message)
        })?;
        if !algorithms.iter().any(|(a, _, _)| *a == alg) {
            algorithms.push((alg, entry.span(), field));
        }
    }

    // The sources of public keys exclude each other.
    let sources = [
        ("jwks_url", &s.jwks_url),
        ("jwks_file", &s.jwks_file),
        ("public_key_file", &s.public_key_file),
    ];
    let mut present = sources
        .iter()
        .filter_map(|(n, v)| v.as_ref().map(|v| (*n, v)));
    let source = present.next();
    if let Some((second, value)) = present.next() {
        return Err(errors.at(
            value.span(),
            second,
            "use one of jwks_url, jwks_file and public_key_file",
        ));
    }
    if let (Some(v), None) = (&s.jwks_refresh, &s.jwks_url) {
        return Err(errors.at(
            v.span(),
            "jwks_refresh",
            "jwks_refresh is used only with jwks_url",
        ));
    }
    if s.jwks_url.is_none() {
        if let Some(v) = &s.timeout {
            return Err(errors.at(
                v.span(),
                "timeout",
                "on a jwt authenticator, timeout is used only with jwks_url",
            ));
        }
    }

    // HS* takes the secret, everything else a public key: a key never crosses over.
    let hmac_algs: Vec<&(Alg, Range<usize>, String)> =
        algorithms.iter().filter(|(a, _, _)| a.is_hmac()).collect();
    let public_algs: Vec<&(Alg, Range<usize>, String)> =
        algorithms.iter().filter(|(a, _, _)| !a.is_hmac()).collect();
    let mut hmac = Vec::new();
    match (&s.secret_env, hmac_algs.first()) {
        (None, Some((alg, span, field))) => {
            return Err(errors.at(
                span.clone(),
                field,
                format!(
                    "{} needs `secret_env`, the environment variable that holds the shared secret",
                    alg.name()
                ),
            ))
        }
        (Some(var), None) => {
            return Err(errors.at(
                var.span(),
                "secret_env",
                "secret_env holds an HMAC secret, used only with HS256, HS384 or HS512, and `algorithms` lists none of them",
            ))
        }
        (Some(var), Some(_)) => {
            let secret = secret_from_env(var, "secret_env", errors, cx)?;
            for (alg, _, _) in &hmac_algs {
                let need = alg.min_secret_len();
                if secret.len() < need {
                    return Err(errors.at(
                        var.span(),
                        "secret_env",
                        format!(
                            "the secret in {} is shorter than the {need} bytes {} needs (RFC 7518 §3.2)",
                            var.get_ref(),
                            alg.name()
                        ),
                    ));
                }
                hmac.push((*alg, alg.hmac_key(&secret)));
            }
        }
        (None, None) => {}
    }

    let keys = match (source, public_algs.first()) {
        (None, Some((alg, span, field))) => {
            return Err(errors.at(
                span.clone(),
                field,
                format!(
                    "{} verifies with a public key: add jwks_url, jwks_file or public_key_file (secret_env serves only HS algorithms)",
                    alg.name()
                ),
            ))
        }
        (Some((field, value)), None) => {
            return Err(errors.at(
                value.span(),
                field,
                format!("{field} gives public keys, for RS*, PS*, ES* or EdDSA, and `algorithms` lists none of them"),
            ))
        }
        (None, None) => KeySource::None,
        (Some(("public_key_file", path)), Some(_)) => {
            let pem = read_file(path, "public_key_file", errors)?;
            let material = key_from_pem(&pem).map_err(|m| {
                errors.at(path.span(), "public_key_file", format!("\"{}\": {m}", path.get_ref()))
            })?;
            for (alg, span, field) in &public_algs {
                if !material.fits(*alg) {
                    return Err(errors.at(
                        span.clone(),
                        field,
                        format!(
                            "{} needs {}, but public_key_file holds {}",
                            alg.name(),
                            alg.key_description(),
                            material.describe()
                        ),
                    ));
                }
            }
            KeySource::Static(Arc::new(KeySet::single(material)))
        }
        (Some(("jwks_file", path)), Some(_)) => {
            let json = read_file(path, "jwks_file", errors)?;
            let (set, _skipped) = KeySet::from_jwks(&json).map_err(|m| {
                errors.at(path.span(), "jwks_file", format!("\"{}\": {m}", path.get_ref()))
            })?;
            for (alg, span, field) in &public_algs {
                if !set.has_key_for(*alg) {
                    return Err(errors.at(
                        span.clone(),
                        field,
                        format!(
                            "no key in jwks_file \"{}\" can verify {} (it needs {})",
                            path.get_ref(),
                            alg.name(),
                            alg.key_description()
                        ),
                    ));
                }
            }
            KeySource::Static(Arc::new(set))
        }
        (Some((_, url)), Some(_)) => {
            let parsed = endpoint_url(url, "jwks_url", errors)?;
            let (refresh, refresh_span) = duration_or(&s.jwks_refresh, DEFAULT_JWKS_REFRESH);
            if refresh < MIN_JWKS_REFRESH {
                return Err(errors.at(
                    refresh_span.unwrap_or(url.span()),
                    "jwks_refresh",
                    "jwks_refresh must be at least 1s",
                ));
            }
            let (timeout, _) = duration_or(&s.timeout, DEFAULT_TIMEOUT);
            let client = cx
                .clients
                .jwks()
                .map_err(|m| errors.at(url.span(), "jwks_url", m))?;
            KeySource::Remote(Arc::new(RemoteJwks::new(
                errors.name,
                parsed,
                client,
                timeout,
                refresh,
                cx.clock.clone(),
            )))
        }
    };

    let issuer = match &s.issuer {
        Some(v) if v.get_ref().is_empty() => {
            return Err(errors.at(v.span(), "issuer", "issuer is empty"))
        }
        Some(v) => Some(v.get_ref().as_str().into()),
        None => None,
    };
    let audience = match &s.audience {
        Some(v) if v.get_ref().0.is_empty() || v.get_ref().0.iter().any(String::is_empty) => {
            return Err(errors.at(
                v.span(),
                "audience",
                "audience needs one or more non-empty values",
            ))
        }
        Some(v) => v.get_ref().0.iter().map(|a| a.as_str().into()).collect(),
        None => Vec::new(),
    };
    let (leeway, _) = duration_or(&s.leeway, DEFAULT_LEEWAY);
    let (cache_ttl, _) = duration_or(&s.cache_ttl, DEFAULT_JWT_CACHE_TTL);
    Ok(JwtVerifier::new(JwtSettings {
        algorithms: algorithms.iter().map(|(a, _, _)| *a).collect(),
        hmac,
        keys,
        issuer,
        audience,
        leeway,
        forward,
        required_scopes: required_scopes.iter().map(|s| s.as_str().into()).collect(),
        clock: cx.clock.clone(),
        cache_ttl,
    }))
}

fn api_key(s: &AuthSection, errors: &Errors<'_>) -> Result<ApiKeys, AuthError> {
    let location = match (&s.header, &s.query) {
        (Some(_), Some(q)) => {
            return Err(errors.at(q.span(), "query", "use either header or query, not both"))
        }
        (None, None) => return Err(errors.missing(
            "header",
            "type = \"api_key\" needs `header` (like \"X-Api-Key\") or `query` (like \"api_key\")",
        )),
        (Some(h), None) => {
            let name = static_name(h.get_ref()).map_err(|m| errors.at(h.span(), "header", m))?;
            if matches!(
                name.as_str(),
                "host" | "content-length" | "transfer-encoding" | "connection" | "te" | "upgrade"
            ) {
                return Err(errors.at(
                    h.span(),
                    "header",
                    format!("{} cannot carry an API key", h.get_ref()),
                ));
            }
            KeyLocation::Header {
                name,
                display: h.get_ref().clone(),
            }
        }
        (None, Some(q)) => {
            let text = q.get_ref();
            let plain = !text.is_empty()
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
            if !plain {
                return Err(errors.at(
                    q.span(),
                    "query",
                    format!("\"{text}\" is not a plain query parameter name: letters, digits, '-', '.', '_', '~'"),
                ));
            }
            KeyLocation::Query(text.as_str().into())
        }
    };
    let keys = s.keys.as_ref().ok_or_else(|| {
        errors.missing(
            "keys",
            "type = \"api_key\" needs `keys`, like { acme = \"sha256:<hex of the key's SHA-256>\" }",
        )
    })?;
    if keys.get_ref().is_empty() {
        return Err(errors.at(keys.span(), "keys", "`keys` is empty"));
    }
    let mut hashes: Vec<([u8; 32], Box<str>)> = Vec::new();
    for (consumer, hash) in keys.get_ref() {
        let field = format!("keys.{consumer}");
        if consumer.is_empty() {
            return Err(errors.at(keys.span(), "keys", "a consumer name is empty"));
        }
        // The value is never echoed: a plain key pasted here by mistake must not reach a log.
        let digest = parse_sha256(hash.get_ref()).ok_or_else(|| {
            errors.at(
                hash.span(),
                &field,
                "expected \"sha256:\" and the 64 hex digits of the key's SHA-256 (printf %s \"$KEY\" | sha256sum); plain keys are not stored",
            )
        })?;
        if let Some((_, other)) = hashes.iter().find(|(d, _)| *d == digest) {
            return Err(errors.at(
                hash.span(),
                &field,
                format!("this is the same key as consumer \"{other}\""),
            ));
        }
        hashes.push((digest, consumer.as_str().into()));
    }
    Ok(ApiKeys::new(location, hashes))
}

/// "sha256:" and 64 hex digits.
fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix("sha256:")?.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

fn introspection(
    s: &AuthSection,
    errors: &Errors<'_>,
    cx: &mut Context<'_>,
    forward: Vec<(Box<str>, HeaderName)>,
    required_scopes: &[String],
) -> Result<Introspector, AuthError> {
    let url = s.introspection_url.as_ref().ok_or_else(|| {
        errors.missing(
            "introspection_url",
            "type = \"oauth2_introspection\" needs `introspection_url`",
        )
    })?;
    let parsed = endpoint_url(url, "introspection_url", errors)?;
    let client_id = s.client_id.as_ref().ok_or_else(|| {
        errors.missing(
            "client_id",
            "type = \"oauth2_introspection\" needs `client_id`, the gateway's client at the introspection endpoint",
        )
    })?;
    if client_id.get_ref().is_empty() {
        return Err(errors.at(client_id.span(), "client_id", "client_id is empty"));
    }
    let secret_var = s.client_secret_env.as_ref().ok_or_else(|| {
        errors.missing(
            "client_secret_env",
            "type = \"oauth2_introspection\" needs `client_secret_env`, the environment variable that holds the client secret",
        )
    })?;
    let secret = secret_from_env(secret_var, "client_secret_env", errors, cx)?;
    let secret = String::from_utf8(secret).map_err(|_| {
        errors.at(
            secret_var.span(),
            "client_secret_env",
            format!(
                "the environment variable {} is not UTF-8",
                secret_var.get_ref()
            ),
        )
    })?;
    let (cache_ttl, _) = duration_or(&s.cache_ttl, DEFAULT_CACHE_TTL);
    let (timeout, _) = duration_or(&s.timeout, DEFAULT_TIMEOUT);
    let client = cx
        .clients
        .introspection()
        .map_err(|m| errors.at(url.span(), "introspection_url", m))?;
    Introspector::new(IntrospectorSettings {
        name: errors.name,
        url: parsed,
        client,
        client_id: client_id.get_ref(),
        client_secret: &secret,
        timeout,
        cache_ttl,
        required_scopes: required_scopes.iter().map(|s| s.as_str().into()).collect(),
        forward,
        clock: cx.clock.clone(),
    })
    .map_err(|m| errors.at(secret_var.span(), "client_secret_env", m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testkit::{env_with, parse_sections};
    use crate::auth::Authenticators;

    /// Compile `text`, expecting an error; return it with the text it points at.
    fn error_of(text: &str) -> (AuthError, String) {
        let env = env_with(&[
            (
                "JWT_SECRET",
                b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            ),
            ("SHORT_SECRET", b"s3cr3t-short-value"),
            ("CLIENT_SECRET", b"client-s3cr3t"),
        ]);
        let sections = parse_sections(text).unwrap();
        let e = Authenticators::from_config_with(&sections, &env, Clock::system()).unwrap_err();
        let pointed = text.get(e.span.clone()).unwrap_or_default().to_string();
        (e, pointed)
    }

    fn assert_error(text: &str, key: &str, pointed: &str, says: &str) {
        let (e, at) = error_of(text);
        assert_eq!(e.key, key, "{text}: {e}");
        assert!(
            at.contains(pointed),
            "{text}: the span points at {at:?}, not {pointed:?}"
        );
        assert!(e.message.contains(says), "{text}: {e}");
        for secret in ["0123456789abcdef", "s3cr3t", "client-s3cr3t"] {
            assert!(!e.to_string().contains(secret), "{e} leaks a secret");
        }
    }

    const JWT_HS: &str =
        "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"JWT_SECRET\"\n";

    #[test]
    fn a_valid_hs_section_compiles() {
        let env = env_with(&[("JWT_SECRET", &[7u8; 32])]);
        let sections = parse_sections(JWT_HS).unwrap();
        let auths = Authenticators::from_config_with(&sections, &env, Clock::system()).unwrap();
        assert_eq!(auths.get("users").unwrap().name(), "users");
        assert!(auths.get("other").is_none());
    }

    #[test]
    fn missing_secret_env_var_names_the_key() {
        assert_error(
            "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"NOT_SET_ANYWHERE\"\n",
            "auth.users.secret_env",
            "NOT_SET_ANYWHERE",
            "is not set",
        );
    }

    #[test]
    fn short_secret_is_refused_without_showing_it() {
        assert_error(
            "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"HS512\"]\nsecret_env = \"SHORT_SECRET\"\n",
            "auth.users.secret_env",
            "SHORT_SECRET",
            "64 bytes",
        );
    }

    #[test]
    fn unreadable_key_files_are_refused() {
        assert_error(
            "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\npublic_key_file = \"/nonexistent/key.pem\"\n",
            "auth.users.public_key_file",
            "/nonexistent/key.pem",
            "cannot read",
        );
        assert_error(
            "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\njwks_file = \"/nonexistent/jwks.json\"\n",
            "auth.users.jwks_file",
            "/nonexistent/jwks.json",
            "cannot read",
        );
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a key").unwrap();
        let text = format!(
            "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\npublic_key_file = \"{}\"\n",
            garbage.display()
        );
        assert_error(
            &text,
            "auth.users.public_key_file",
            "garbage.pem",
            "not a PEM public key",
        );
        let empty = dir.path().join("empty.json");
        std::fs::write(&empty, "{\"keys\": []}").unwrap();
        let text = format!(
            "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\njwks_file = \"{}\"\n",
            empty.display()
        );
        assert_error(&text, "auth.users.jwks_file", "empty.json", "no usable key");
    }

    #[test]
    fn unknown_type_is_refused_by_the_parser_with_its_path() {
        let text = "[auth.users]\ntype = \"saml\"\n";
        let e = parse_sections(text).unwrap_err();
        assert_eq!(e.0, "auth.users.type");
        assert!(text[e.1.clone()].contains("saml"), "{:?}", e);
        assert!(e.2.contains("unknown auth type \"saml\""), "{}", e.2);
    }

    #[test]
    fn unknown_keys_are_refused_by_the_parser() {
        let e =
            parse_sections("[auth.users]\ntype = \"jwt\"\nalgorithm = [\"RS256\"]\n").unwrap_err();
        assert_eq!(e.0, "auth.users.algorithm");
    }

    #[test]
    fn keys_of_another_type_are_refused() {
        assert_error(
            &format!("{JWT_HS}header = \"X-Api-Key\"\n"),
            "auth.users.header",
            "X-Api-Key",
            "does not apply to type = \"jwt\"",
        );
        assert_error(
            "[auth.p]\ntype = \"api_key\"\nheader = \"X-Api-Key\"\nkeys = {}\nissuer = \"x\"\n",
            "auth.p.issuer",
            "\"x\"",
            "belongs to jwt",
        );
        assert_error(
            "[auth.p]\ntype = \"api_key\"\nheader = \"X-Api-Key\"\nforward_claims = { sub = \"X-Sub\" }\n",
            "auth.p.forward_claims",
            "X-Sub",
            "does not apply",
        );
    }

    #[test]
    fn algorithm_lists_are_checked() {
        assert_error(
            "[auth.users]\ntype = \"jwt\"\nalgorithms = []\nsecret_env = \"JWT_SECRET\"\n",
            "auth.users.algorithms",
            "[]",
            "empty",
        );
        assert_error(
            "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"HS256\", \"none\"]\nsecret_env = \"JWT_SECRET\"\n",
            "auth.users.algorithms[1]",
            "none",
            "never accepted",
        );
        assert_error(
            "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"HS257\"]\n",
            "auth.users.algorithms[0]",
            "HS257",
            "unknown algorithm",
        );
        assert_error(
            "[auth.users]\ntype = \"jwt\"\nsecret_env = \"JWT_SECRET\"\n",
            "auth.users.algorithms",
            "[auth.users]",
            "needs `algorithms`",
        );
    }

    #[test]
    fn hs_needs_a_secret_and_public_key_algorithms_need_public_keys() {
        assert_error(
            "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"RS256\", \"HS384\"]\njwks_url = \"https://idp.example/jwks\"\n",
            "auth.users.algorithms[1]",
            "HS384",
            "needs `secret_env`",
        );
        assert_error(
            "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\nsecret_env = \"JWT_SECRET\"\n",
            "auth.users.secret_env",
            "JWT_SECRET",
            "used only with HS256",
        );
        assert_error(
            "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"HS256\", \"ES256\"]\nsecret_env = \"JWT_SECRET\"\n",
            "auth.users.algorithms[1]",
            "ES256",
            "public key",
        );
        assert_error(
            "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\nsecret_env = \"JWT_SECRET\"\njwks_url = \"https://idp.example/jwks\"\n",
            "auth.users.secret_env",
            "JWT_SECRET",
            "used only with HS256",
        );
        assert_error(
            "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"JWT_SECRET\"\njwks_url = \"https://idp.example/jwks\"\n",
            "auth.users.jwks_url",
            "idp.example",
            "lists none of them",
        );
        assert_error(
            "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\njwks_url = \"https://idp.example/jwks\"\njwks_file = \"/tmp/x.json\"\n",
            "auth.users.jwks_file",
            "/tmp/x.json",
            "one of jwks_url",
        );
    }

    #[test]
    fn endpoint_urls_are_checked() {
        for (url, says) in [
            ("ftp://idp.example/jwks", "http:// or https://"),
            ("not a url", "invalid jwks_url"),
            ("https://user:pw@idp.example/jwks", "credentials"),
        ] {
            assert_error(
                &format!("[auth.users]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\njwks_url = \"{url}\"\n"),
                "auth.users.jwks_url",
                url,
                says,
            );
        }
        assert_error(
            "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\njwks_url = \"https://idp.example/jwks\"\njwks_refresh = \"100ms\"\n",
            "auth.users.jwks_refresh",
            "100ms",
            "at least 1s",
        );
        assert_error(
            &format!("{JWT_HS}jwks_refresh = \"1m\"\n"),
            "auth.users.jwks_refresh",
            "1m",
            "only with jwks_url",
        );
    }

    #[test]
    fn api_key_sections_are_checked() {
        let hash = format!("sha256:{}", "ab".repeat(32));
        assert_error(
            &format!("[auth.p]\ntype = \"api_key\"\nkeys = {{ acme = \"{hash}\" }}\n"),
            "auth.p.header",
            "[auth.p]",
            "needs `header`",
        );
        assert_error(
            &format!("[auth.p]\ntype = \"api_key\"\nheader = \"X-Key\"\nquery = \"key\"\nkeys = {{ acme = \"{hash}\" }}\n"),
            "auth.p.query",
            "\"key\"",
            "not both",
        );
        assert_error(
            &format!("[auth.p]\ntype = \"api_key\"\nheader = \"Bad Header\"\nkeys = {{ acme = \"{hash}\" }}\n"),
            "auth.p.header",
            "Bad Header",
            "not a valid header name",
        );
        assert_error(
            "[auth.p]\ntype = \"api_key\"\nheader = \"X-Key\"\n",
            "auth.p.keys",
            "[auth.p]",
            "needs `keys`",
        );
        // a plain key pasted where its hash belongs is refused and never repeated
        let (e, at) = error_of(
            "[auth.p]\ntype = \"api_key\"\nheader = \"X-Key\"\nkeys = { acme = \"plain-SECRET-key\" }\n",
        );
        assert_eq!(e.key, "auth.p.keys.acme");
        assert!(at.contains("plain-SECRET-key"));
        assert!(!e.to_string().contains("plain-SECRET-key"), "{e}");
        for bad in [
            format!("sha256:{}", "ab".repeat(31)),
            format!("sha256:{}", "zz".repeat(32)),
            format!("md5:{}", "ab".repeat(32)),
        ] {
            assert_error(
                &format!("[auth.p]\ntype = \"api_key\"\nheader = \"X-Key\"\nkeys = {{ acme = \"{bad}\" }}\n"),
                "auth.p.keys.acme",
                &bad,
                "64 hex digits",
            );
        }
        assert_error(
            &format!("[auth.p]\ntype = \"api_key\"\nheader = \"X-Key\"\nkeys = {{ a = \"{hash}\", b = \"{hash}\" }}\n"),
            "auth.p.keys.b",
            &hash,
            "same key as consumer \"a\"",
        );
        assert_error(
            &format!(
                "[auth.p]\ntype = \"api_key\"\nquery = \"api key\"\nkeys = {{ a = \"{hash}\" }}\n"
            ),
            "auth.p.query",
            "api key",
            "not a plain query parameter",
        );
    }

    #[test]
    fn introspection_sections_are_checked() {
        let base = "[auth.corp]\ntype = \"oauth2_introspection\"\n";
        assert_error(
            base,
            "auth.corp.introspection_url",
            "[auth.corp]",
            "needs `introspection_url`",
        );
        let with_url = format!("{base}introspection_url = \"https://idp.example/introspect\"\n");
        assert_error(
            &with_url,
            "auth.corp.client_id",
            "[auth.corp]",
            "needs `client_id`",
        );
        let with_id = format!("{with_url}client_id = \"pylon\"\n");
        assert_error(
            &with_id,
            "auth.corp.client_secret_env",
            "[auth.corp]",
            "needs `client_secret_env`",
        );
        assert_error(
            &format!("{with_id}client_secret_env = \"NOPE\"\n"),
            "auth.corp.client_secret_env",
            "NOPE",
            "is not set",
        );
        assert_error(
            &format!("{with_id}client_secret_env = \"CLIENT_SECRET\"\nrequired_scopes = [\"orders:read\", \"bad scope\"]\n"),
            "auth.corp.required_scopes[1]",
            "bad scope",
            "is not a scope",
        );
        assert_error(
            &format!("{with_id}client_secret_env = \"CLIENT_SECRET\"\nalgorithms = [\"RS256\"]\n"),
            "auth.corp.algorithms",
            "RS256",
            "belongs to jwt",
        );
    }

    #[test]
    fn forward_claims_are_checked() {
        assert_error(
            &format!("{JWT_HS}forward_claims = {{ sub = \"Bad Header\" }}\n"),
            "auth.users.forward_claims.sub",
            "Bad Header",
            "not a valid header name",
        );
        assert_error(
            &format!("{JWT_HS}forward_claims = {{ sub = \"Host\" }}\n"),
            "auth.users.forward_claims.sub",
            "Host",
            "cannot carry a claim",
        );
        assert_error(
            &format!("{JWT_HS}forward_claims = {{ sub = \"X-User\", email = \"x-user\" }}\n"),
            "auth.users.forward_claims.sub",
            "X-User",
            "already carries the claim \"email\"",
        );
    }

    #[test]
    fn names_must_be_plain() {
        assert_error(
            "[auth.\"a b\"]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"JWT_SECRET\"\n",
            "auth.a b",
            "",
            "may hold only",
        );
    }

    #[test]
    fn sha256_hashes_parse() {
        let hex = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";
        let d = parse_sha256(&format!("sha256:{hex}")).unwrap();
        assert_eq!(d[0], 0x9f);
        assert_eq!(d[31], 0x08);
        assert!(parse_sha256(hex).is_none());
    }
}
