//! A node's sections and the policy document.
//!
//! The node's own sections ([`NODE_SECTIONS`]: its listeners, certificates, log, admin
//! listener and where its policy comes from) stay in its file. Every other section is the
//! policy document: what `PUT /config` replaces, and what a fleet shares through its store.
//! Without a store both live in one file; [`split`] tells them apart there, by the table
//! headers, so that a new policy document replaces the policy sections and leaves the
//! node's ones as they were written, byte for byte.

use std::fmt::Write as _;

/// The top-level sections that belong to one node; every other one is policy.
pub const NODE_SECTIONS: &[&str] = &["server", "admin", "metrics", "control", "tls", "access_log"];

/// Whether a key path (`server.listen`, `routes[2].prefix`, `tls`) is in a node's section.
pub fn is_node_key(key: &str) -> bool {
    let top = key.split(['.', '[']).next().unwrap_or(key);
    NODE_SECTIONS.contains(&top)
}

/// A document's content hash, as `ETag`s and the fleet's nodes show it: the first 16 hex
/// digits of the SHA-256 of its text.
pub fn content_hash(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut out = String::with_capacity(16);
    for b in &digest.as_ref()[..8] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A file's text in two parts, each in the file's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts {
    /// The node's sections, and whatever comes before the first table header.
    pub node: String,
    /// The policy sections.
    pub policy: String,
}

/// The top-level key a table header line names (`[server]`, `[[routes]]`, `[auth.x]`,
/// `["routes"]`), or `None` for any other line.
fn header_key(line: &str) -> Option<String> {
    let t = line.trim_start();
    let inner = t.strip_prefix("[[").or_else(|| t.strip_prefix('['))?;
    let inner = inner.trim_start();
    let key = match inner.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?.to_string(),
        None => inner
            .split(|c: char| c == '.' || c == ']' || c.is_whitespace())
            .next()?
            .to_string(),
    };
    (!key.is_empty()).then_some(key)
}

/// Split a file's text at its table headers. A run of comments and blank lines before a
/// header goes with that header's section; text before the first header (a file's opening
/// comment) stays with the node. Lines inside a multi-line string are never headers.
pub fn split(text: &str) -> Parts {
    let mut parts = Parts {
        node: String::new(),
        policy: String::new(),
    };
    // the section being read is the node's; lines waiting to know their section
    let mut in_node = true;
    let mut pending = String::new();
    let mut open_string: Option<&str> = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        let header = if open_string.is_none() {
            header_key(line)
        } else {
            None
        };
        for quote in ["\"\"\"", "'''"] {
            let count = line.matches(quote).count();
            if count % 2 == 1 && open_string.is_none_or(|q| q == quote) {
                open_string = match open_string {
                    Some(_) => None,
                    None => Some(quote),
                };
            }
        }
        if let Some(key) = header {
            in_node = NODE_SECTIONS.contains(&key.as_str());
        } else if open_string.is_none() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            pending.push_str(line);
            continue;
        }
        let out = parts.of(in_node);
        out.push_str(&pending);
        out.push_str(line);
        pending.clear();
    }
    // comments at the end stay with the last section
    parts.of(in_node).push_str(&pending);
    parts
}

impl Parts {
    fn of(&mut self, node: bool) -> &mut String {
        if node {
            &mut self.node
        } else {
            &mut self.policy
        }
    }
}

/// A node's part and a policy document, joined into one file: the node's text as it was,
/// then the policy.
pub fn join(node: &str, policy: &str) -> String {
    let mut out = String::with_capacity(node.len() + policy.len() + 1);
    out.push_str(node);
    if !node.is_empty() && !node.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(policy);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# the gateway of host a\n[server]\nlisten = [\"127.0.0.1:5000\"]\n\n# limits for everyone\n[rate_limit]\nrequests = 5\nwindow = \"1m\"\n\n[admin]\nlisten = \"127.0.0.1:9180\"\n[[routes]]\nprefix = \"/a\" # a comment\nupstreams = [\"127.0.0.1:1\"]\n[auth.x]\ntype = \"api_key\"\n[access_log]\npath = \"off\"\n# the end\n";

    #[test]
    fn a_file_splits_into_node_and_policy_sections() {
        let parts = split(FILE);
        assert_eq!(
            parts.node,
            "# the gateway of host a\n[server]\nlisten = [\"127.0.0.1:5000\"]\n\n[admin]\nlisten = \"127.0.0.1:9180\"\n[access_log]\npath = \"off\"\n# the end\n",
            "blank lines and comments before a header go with its section"
        );
        assert_eq!(
            parts.policy,
            "\n# limits for everyone\n[rate_limit]\nrequests = 5\nwindow = \"1m\"\n[[routes]]\nprefix = \"/a\" # a comment\nupstreams = [\"127.0.0.1:1\"]\n[auth.x]\ntype = \"api_key\"\n"
        );
    }

    #[test]
    fn joining_then_splitting_gives_the_parts_back() {
        let file = FILE.trim_end_matches("# the end\n");
        let parts = split(file);
        assert_eq!(split(&join(&parts.node, &parts.policy)), parts);
        let policy = "# new\n[[routes]]\nprefix = \"/b\"\nupstreams = [\"127.0.0.1:2\"]\n";
        let joined = join(&parts.node, policy);
        assert_eq!(split(&joined).node, parts.node);
        assert_eq!(split(&joined).policy, policy);
    }

    #[test]
    fn comments_at_the_end_of_a_node_section_go_with_the_policy_that_follows() {
        // the one case where a join moves text: comments ending the file after a node
        // section precede the policy once it is appended, and so open it
        let parts = split(FILE);
        let joined = join(&parts.node, &parts.policy);
        assert_eq!(joined.len(), FILE.len());
        assert_eq!(
            split(&joined).policy,
            format!("# the end\n{}", parts.policy)
        );
    }

    #[test]
    fn a_header_inside_a_multiline_string_is_text() {
        let text = "[security_headers]\nset = { \"X-A\" = \"\"\"\n[server]\n\"\"\" }\n[server]\nh2c = true\n";
        let parts = split(text);
        assert_eq!(parts.node, "[server]\nh2c = true\n");
        assert!(parts.policy.contains("[server]\n\"\"\""));
    }

    #[test]
    fn header_keys() {
        assert_eq!(header_key("[server]").as_deref(), Some("server"));
        assert_eq!(header_key("  [[routes]] # x").as_deref(), Some("routes"));
        assert_eq!(header_key("[auth.users]").as_deref(), Some("auth"));
        assert_eq!(header_key("[\"tls\".x]").as_deref(), Some("tls"));
        assert_eq!(header_key("x = [1]"), None);
        assert_eq!(header_key("# [server]"), None);
    }

    #[test]
    fn keys_and_hashes() {
        assert!(is_node_key("server.listen"));
        assert!(is_node_key("tls.certificates[0].cert"));
        assert!(is_node_key("admin"));
        assert!(!is_node_key("routes[0].prefix"));
        assert!(!is_node_key("rate_limit.store"));
        assert_eq!(content_hash("").len(), 16);
        assert_eq!(content_hash(""), "e3b0c44298fc1c14");
        assert_ne!(content_hash("a"), content_hash("b"));
    }
}
