//! What the policy tests share: a parsed config, and a request's header map.

use std::path::Path;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config;

/// `text` parsed as a whole config file.
pub(crate) fn section(text: &str) -> config::FileConfig {
    config::parse(Path::new("t.toml"), text).unwrap()
}

/// A header map with these fields, in order.
pub(crate) fn request(headers: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}
