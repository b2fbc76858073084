//! The prefix table: the longest prefix that matches on a path-segment boundary wins.
//!
//! `/users` matches `/users`, `/users/` and `/users/7`, never `/usersx`. A lookup hashes the
//! path cut at each '/' from the longest candidate down, so its cost grows with the number of
//! segments in the path, not with the number of routes: 10 routes and 100,000 cost the same.

use std::collections::HashMap;

/// A compiled prefix table holding one `T` per prefix.
#[derive(Debug)]
pub struct Router<T> {
    /// Prefixes without their trailing slash; the root "/" lives in `root`.
    table: HashMap<Box<str>, T, ahash::RandomState>,
    root: Option<T>,
    /// The longest prefix in `table`; longer cuts of a path cannot match.
    longest: usize,
}

/// A matched route and where the prefix ends in the path.
#[derive(Debug, PartialEq, Eq)]
pub struct Match<'a, T> {
    pub value: &'a T,
    /// Bytes of the path the prefix covers: `&path[matched..]` is what stripping leaves.
    pub matched: usize,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router {
            table: HashMap::default(),
            root: None,
            longest: 0,
        }
    }
}

impl<T> Router<T> {
    /// Build from normalised prefixes (see [`crate::config::Prefix`]); a later duplicate
    /// replaces an earlier one, but config loading already refuses duplicates.
    pub fn new(routes: impl IntoIterator<Item = (String, T)>) -> Self {
        let mut router = Router::default();
        for (prefix, value) in routes {
            router.insert(prefix, value);
        }
        router
    }

    fn insert(&mut self, prefix: String, value: T) {
        if prefix == "/" {
            self.root = Some(value);
        } else {
            self.longest = self.longest.max(prefix.len());
            self.table.insert(prefix.into_boxed_str(), value);
        }
    }

    pub fn len(&self) -> usize {
        self.table.len() + usize::from(self.root.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The route for a request path (the path only, without the query).
    pub fn lookup(&self, path: &str) -> Option<Match<'_, T>> {
        let bytes = path.as_bytes();
        if !self.table.is_empty() {
            // candidate cut points: the whole path, then every '/' after the first byte,
            // longest first; cuts longer than the longest prefix are skipped
            let mut end = bytes.len();
            loop {
                if end <= self.longest {
                    if let Some(value) = self.table.get(&path[..end]) {
                        return Some(Match {
                            value,
                            matched: end,
                        });
                    }
                }
                match bytes[..end].iter().rposition(|&b| b == b'/') {
                    Some(i) if i > 0 => end = i,
                    _ => break,
                }
            }
        }
        self.root.as_ref().map(|value| Match { value, matched: 0 })
    }
}

/// The path an upstream sees once `matched` bytes of prefix are stripped: never empty.
pub fn stripped(path: &str, matched: usize) -> &str {
    match &path[matched..] {
        "" => "/",
        rest => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(prefixes: &[&str]) -> Router<String> {
        Router::new(prefixes.iter().map(|p| (p.to_string(), p.to_string())))
    }

    fn hit(r: &Router<String>, path: &str) -> Option<(String, usize)> {
        r.lookup(path).map(|m| (m.value.clone(), m.matched))
    }

    #[test]
    fn matches_on_segment_boundaries_only() {
        let r = router(&["/users"]);
        assert_eq!(hit(&r, "/users"), Some(("/users".into(), 6)));
        assert_eq!(hit(&r, "/users/"), Some(("/users".into(), 6)));
        assert_eq!(hit(&r, "/users/7"), Some(("/users".into(), 6)));
        assert_eq!(hit(&r, "/users/7/orders"), Some(("/users".into(), 6)));
        assert_eq!(hit(&r, "/usersx"), None);
        assert_eq!(hit(&r, "/user"), None);
        assert_eq!(hit(&r, "/"), None);
        assert_eq!(hit(&r, ""), None);
        assert_eq!(hit(&r, "/Users"), None, "matching is case-sensitive");
    }

    #[test]
    fn longest_prefix_wins() {
        let r = router(&["/api", "/api/users", "/api/users/admin"]);
        assert_eq!(hit(&r, "/api/users/7").unwrap().0, "/api/users");
        assert_eq!(hit(&r, "/api/users/admin/x").unwrap().0, "/api/users/admin");
        assert_eq!(hit(&r, "/api/usersx").unwrap().0, "/api");
        assert_eq!(hit(&r, "/api/orders").unwrap().0, "/api");
    }

    #[test]
    fn root_catches_what_nothing_else_does() {
        let r = router(&["/", "/users"]);
        assert_eq!(hit(&r, "/users/1"), Some(("/users".into(), 6)));
        assert_eq!(hit(&r, "/other"), Some(("/".into(), 0)));
        assert_eq!(hit(&r, "/"), Some(("/".into(), 0)));
    }

    #[test]
    fn stripping_keeps_a_leading_slash() {
        assert_eq!(stripped("/users/7", 6), "/7");
        assert_eq!(stripped("/users", 6), "/");
        assert_eq!(stripped("/users/", 6), "/");
        assert_eq!(stripped("/x", 0), "/x");
    }

    #[test]
    fn many_routes_still_match_exactly() {
        let prefixes: Vec<String> = (0..10_000).map(|i| format!("/svc{i}/v1")).collect();
        let r = Router::new(prefixes.iter().map(|p| (p.clone(), p.clone())));
        assert_eq!(r.len(), 10_000);
        assert_eq!(r.lookup("/svc9999/v1/items").unwrap().value, "/svc9999/v1");
        assert!(r.lookup("/svc9999/v2/items").is_none());
        assert!(r.lookup("/svc10000/v1").is_none());
    }

    #[test]
    fn odd_paths_do_not_panic() {
        let r = router(&["/a", "/a/b"]);
        for p in ["//", "///a", "/a//b", "*", "a/b", "/\u{e9}/a", "/a/\u{e9}"] {
            let _ = r.lookup(p);
        }
        assert_eq!(hit(&r, "/a//b").unwrap().0, "/a");
    }
}
