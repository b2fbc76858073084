//! Finding credentials in a request, and taking them out of the request target.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap};

/// Tokens longer than this are refused before anything is decoded.
pub(crate) const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The token of the one `Authorization: Bearer <token>` header (RFC 6750 §2.1; the scheme
/// is case-insensitive). Two Authorization headers, another scheme, an empty or an
/// over-long token: none.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let text = value.to_str().ok()?;
    let (scheme, rest) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_matches(' ');
    if token.is_empty() || token.len() > MAX_TOKEN_LEN || token.contains(' ') {
        return None;
    }
    Some(token)
}

/// The query parameter `name` (names compared after percent-decoding), decoded. A
/// parameter given twice is ambiguous: none.
pub(crate) fn query_param<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    let mut found = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key == name {
            if found.is_some() {
                return None;
            }
            found = Some(value);
        }
    }
    found
}

/// The request target without the query parameter `name`; `None` when it has none.
pub(crate) fn strip_query_param(target: &[u8], name: &str) -> Option<Bytes> {
    let q = target.iter().position(|&b| b == b'?')?;
    let (path, query) = (&target[..q], &target[q + 1..]);
    let is_named = |pair: &[u8]| {
        let key = pair.split(|&b| b == b'=').next().unwrap_or_default();
        form_urlencoded::parse(key)
            .next()
            .is_some_and(|(k, _)| k == name)
    };
    if !query.split(|&b| b == b'&').any(is_named) {
        return None;
    }
    let mut out = BytesMut::with_capacity(target.len());
    out.put_slice(path);
    let mut first = true;
    for pair in query
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty() && !is_named(p))
    {
        out.put_u8(if first { b'?' } else { b'&' });
        out.put_slice(pair);
        first = false;
    }
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn query_parameters_are_found_decoded() {
        assert_eq!(
            query_param("a=1&api_key=abc", "api_key").as_deref(),
            Some("abc")
        );
        assert_eq!(
            query_param("api%5Fkey=a%2Bb", "api_key").as_deref(),
            Some("a+b")
        );
        assert_eq!(query_param("api_key=", "api_key").as_deref(), Some(""));
        assert_eq!(query_param("api_key=1&api_key=2", "api_key"), None);
        assert_eq!(query_param("apikey=1", "api_key"), None);
        assert_eq!(query_param("", "api_key"), None);
    }

    #[test]
    fn query_parameters_are_stripped_from_the_target() {
        let s = |t: &str| {
            strip_query_param(t.as_bytes(), "api_key")
                .map(|b| String::from_utf8(b.to_vec()).unwrap())
        };
        assert_eq!(s("/a?api_key=x").as_deref(), Some("/a"));
        assert_eq!(s("/a?x=1&api_key=x&y=2").as_deref(), Some("/a?x=1&y=2"));
        assert_eq!(s("/a?api_key=x&y=2").as_deref(), Some("/a?y=2"));
        assert_eq!(s("/a?api%5Fkey=x&api_key&z").as_deref(), Some("/a?z"));
        assert_eq!(s("/a?x=1"), None);
        assert_eq!(s("/a"), None);
        assert_eq!(s("/a?"), None);
    }

    #[test]
    fn bearer_tokens_are_read_from_one_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("BEARER  abc  "),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer a b"),
        );
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearerabc"));
        assert_eq!(bearer(&h), None);
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&long).unwrap());
        assert_eq!(bearer(&h), None);
    }
}
