//! The cache key: method (HEAD is GET's), host, path, query and, on a route with
//! authenticators, the caller's identity, each part length-prefixed so that no two
//! requests' parts can run together into one key. The route's prefix is the key's tag:
//! the store counts each route's bytes by it.

use pingora::cache::CacheKey;

/// The key of a request.
pub fn key(
    host: &str,
    path: &str,
    query: Option<&str>,
    identity: Option<&str>,
    route: &str,
) -> CacheKey {
    let mut primary = Vec::with_capacity(host.len() + path.len() + 64);
    for part in [
        "GET",
        host,
        path,
        query.unwrap_or(""),
        identity.unwrap_or(""),
    ] {
        primary.extend_from_slice(part.len().to_string().as_bytes());
        primary.push(b':');
        primary.extend_from_slice(part.as_bytes());
    }
    CacheKey::new(primary, route)
}

/// The path a key was made for (its third part).
pub fn path_of(primary: &[u8]) -> Option<&str> {
    let mut rest = primary;
    let mut part = None;
    for _ in 0..3 {
        let colon = rest.iter().position(|&b| b == b':')?;
        let len: usize = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
        let body = rest.get(colon + 1..colon + 1 + len)?;
        part = Some(body);
        rest = &rest[colon + 1 + len..];
    }
    std::str::from_utf8(part?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cannot_run_together_and_the_path_comes_back() {
        let a = key("h", "/a", Some("b=1"), None, "/a");
        let b = key("h", "/a?b=1", None, None, "/a");
        assert_ne!(a.primary_key(), b.primary_key());
        let c = key("h", "/a", None, Some("alice"), "/a");
        let d = key("h", "/a", None, Some("bob"), "/a");
        assert_ne!(c.primary_key(), d.primary_key());
        assert_eq!(path_of(a.primary_key()), Some("/a"));
        assert_eq!(path_of(b.primary_key()), Some("/a?b=1"));
        assert_eq!(path_of(b"garbage"), None);
    }
}
