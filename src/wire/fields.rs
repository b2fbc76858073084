//! HTTP field names and values the whole gateway shares, and the interning that makes
//! values built from the config free to copy.
//!
//! Values derived from the config are made from `'static` strings (see [`static_value`]),
//! so copying one into a response is free: no allocation and no shared reference count
//! for the worker threads to fight over.

use std::collections::HashSet;

use http::header::{HeaderName, HeaderValue};

/// Header names the gateway uses, built at compile time.
pub mod names {
    use http::header::HeaderName;

    pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
    pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
    pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
    pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
    pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    pub const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
}

/// Values the gateway's own answers carry.
pub mod values {
    use http::header::HeaderValue;

    pub const JSON: HeaderValue = HeaderValue::from_static("application/json; charset=utf-8");
    pub const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
    pub const CLOSE: HeaderValue = HeaderValue::from_static("close");
    /// The `Allow` of a 405: what a route takes (TRACE and CONNECT are what it refuses).
    pub const ALLOWED_METHODS: HeaderValue =
        HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
}

/// The text of a header name or value for the life of the process: each distinct text is
/// leaked once, the first time a config uses it, so that a reload that keeps a value
/// (or a thousand reloads) costs no memory.
fn interned(text: &str) -> &'static str {
    static TEXTS: std::sync::LazyLock<std::sync::Mutex<HashSet<&'static str>>> =
        std::sync::LazyLock::new(Default::default);
    let Ok(mut texts) = TEXTS.lock() else {
        return Box::leak(text.to_string().into_boxed_str());
    };
    if let Some(&known) = texts.get(text) {
        return known;
    }
    let leaked: &'static str = Box::leak(text.to_string().into_boxed_str());
    texts.insert(leaked);
    leaked
}

/// A header value for the life of the process, from text checked at config load. The text
/// is interned, so that clones are free (see the module docs).
pub fn static_value(text: &str) -> Result<HeaderValue, String> {
    // what `from_static` takes: visible ASCII, spaces and tabs (`from_str` also takes
    // bytes above 0x7f, on which `from_static` panics)
    if !text
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return Err(format!(
            "{text:?} is not a valid header value: use visible ASCII characters"
        ));
    }
    Ok(HeaderValue::from_static(interned(text)))
}

/// A header name for the life of the process (lower-cased and interned, like
/// [`static_value`]).
pub fn static_name(text: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(text.as_bytes())
        .map_err(|_| format!("\"{text}\" is not a valid header name"))?;
    Ok(HeaderName::from_static(interned(
        &text.to_ascii_lowercase(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_values_are_checked() {
        assert!(static_value("ok value").is_ok());
        assert!(static_value("bad\nvalue").is_err());
        assert_eq!(static_name("X-Api-Key").unwrap(), "x-api-key");
        assert!(static_name("bad name").is_err());
    }
}
