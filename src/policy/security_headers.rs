//! helmet's security headers, added to every answer, and the hop-by-hop cleanup of
//! upstream responses.
//!
//! Everything works on a plain [`HeaderMap`] with names and values built once from the
//! config (see [`crate::wire::static_value`]).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use crate::config::SecurityHeadersSection;
use crate::wire::{names, static_name, static_value};

/// helmet's defaults, in the order helmet sends them.
const HELMET_DEFAULTS: [(&str, &str); 12] = [
    (
        "content-security-policy",
        "default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests",
    ),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("origin-agent-cluster", "?1"),
    ("referrer-policy", "no-referrer"),
    ("strict-transport-security", "max-age=31536000; includeSubDomains"),
    ("x-content-type-options", "nosniff"),
    ("x-dns-prefetch-control", "off"),
    ("x-download-options", "noopen"),
    ("x-frame-options", "SAMEORIGIN"),
    ("x-permitted-cross-domain-policies", "none"),
    ("x-xss-protection", "0"),
];

/// helmet's headers, added where the upstream did not set them, and headers stripped from
/// upstream responses.
#[derive(Debug, Clone, Default)]
pub struct SecurityHeaders {
    remove: Vec<HeaderName>,
    /// The headers to add: a response starts as a copy of this map, so the defaults cost a
    /// copy rather than a hash and an insert each.
    template: HeaderMap,
    /// The same without `Strict-Transport-Security`, for plain HTTP: RFC 6797 §7.2 forbids
    /// sending it over an insecure transport.
    template_plain: HeaderMap,
}

impl SecurityHeaders {
    pub fn from_config(section: &SecurityHeadersSection) -> Result<Self, String> {
        let remove = section
            .remove
            .iter()
            .map(|t| static_name(&t.0))
            .collect::<Result<Vec<_>, _>>()?;
        if !section.enabled {
            return Ok(SecurityHeaders {
                remove,
                template: HeaderMap::new(),
                template_plain: HeaderMap::new(),
            });
        }
        let overridden = |name: &str| {
            section
                .set
                .iter()
                .find(|(k, _)| k.0.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.0.as_str())
        };
        let mut add = Vec::new();
        for (name, value) in HELMET_DEFAULTS {
            match overridden(name) {
                Some("") => {}
                Some(value) => add.push((HeaderName::from_static(name), static_value(value)?)),
                None => add.push((
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )),
            }
        }
        for (name, value) in &section.set {
            let is_default = HELMET_DEFAULTS
                .iter()
                .any(|(d, _)| d.eq_ignore_ascii_case(&name.0));
            if !is_default && !value.0.is_empty() {
                add.push((static_name(&name.0)?, static_value(&value.0)?));
            }
        }
        // room for an upstream answer's own fields and the gateway's: a response starts from a
        // clone of this map, and a clone keeps its index table, so it is never rehashed
        let mut template = HeaderMap::with_capacity(add.len() + 40);
        for (name, value) in add {
            template.insert(name, value);
        }
        let mut template_plain = template.clone();
        template_plain.remove(header::STRICT_TRANSPORT_SECURITY);
        Ok(SecurityHeaders {
            remove,
            template,
            template_plain,
        })
    }

    /// A new header map holding the defaults, for the gateway's own answers (`tls`: the
    /// client connection is TLS).
    pub fn defaults(&self, tls: bool) -> HeaderMap {
        self.template_for(tls).clone()
    }

    fn template_for(&self, tls: bool) -> &HeaderMap {
        if tls {
            &self.template
        } else {
            &self.template_plain
        }
    }

    /// Whether `name` is one of the security headers every response gets.
    pub fn sets(&self, name: &HeaderName) -> bool {
        self.template.contains_key(name)
    }

    /// The headers of an upstream response as the client gets them: the upstream's own,
    /// over helmet's defaults (an upstream's value wins), without hop-by-hop fields and the
    /// `remove` list. Only the upstream's headers are hashed in; the defaults are copied.
    /// Over plain HTTP an upstream's `Strict-Transport-Security` is dropped too.
    pub fn merge_upstream(&self, upstream: HeaderMap, status: StatusCode, tls: bool) -> HeaderMap {
        let switching = status == StatusCode::SWITCHING_PROTOCOLS;
        let nominated = if switching {
            Vec::new()
        } else {
            connection_nominated(&upstream)
        };
        let dropped = |name: &HeaderName| {
            *name == names::KEEP_ALIVE
                || *name == names::PROXY_CONNECTION
                || (!switching && (*name == header::CONNECTION || *name == header::UPGRADE))
                || self.remove.contains(name)
                || nominated.contains(name)
                || (!tls && *name == header::STRICT_TRANSPORT_SECURITY)
        };
        let mut out = self.template_for(tls).clone();
        out.reserve(upstream.len() + 8);
        let mut items = upstream.into_iter().peekable();
        let mut current: Option<HeaderName> = None;
        while let Some((name, value)) = items.next() {
            match name {
                Some(name) => {
                    let more = matches!(items.peek(), Some((None, _)));
                    if dropped(&name) {
                        current = more.then_some(name);
                        continue;
                    }
                    if more {
                        // a multi-valued field: keep its name for the values that follow
                        out.insert(name.clone(), value);
                        current = Some(name);
                    } else {
                        out.insert(name, value);
                        current = None;
                    }
                }
                None => {
                    if let Some(name) = &current {
                        if !dropped(name) {
                            out.append(name.clone(), value);
                        }
                    }
                }
            }
        }
        out
    }
}

/// Fields an upstream's `Connection` header names as hop-by-hop (not `close`, `keep-alive`).
fn connection_nominated(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testkit::{request, section};

    #[test]
    fn strict_transport_security_goes_over_tls_only() {
        let s = SecurityHeaders::from_config(&SecurityHeadersSection::default()).unwrap();
        let up = request(&[("Strict-Transport-Security", "max-age=1")]);
        let plain = s.merge_upstream(up.clone(), StatusCode::OK, false);
        assert!(!plain.contains_key(header::STRICT_TRANSPORT_SECURITY));
        assert_eq!(plain.len(), 11);
        let tls = s.merge_upstream(up, StatusCode::OK, true);
        assert_eq!(tls[header::STRICT_TRANSPORT_SECURITY], "max-age=1");
    }

    #[test]
    fn helmet_defaults_are_added_unless_present() {
        let s = SecurityHeaders::from_config(&section("").security_headers).unwrap();
        let r = s.merge_upstream(
            request(&[("X-Frame-Options", "DENY")]),
            StatusCode::OK,
            true,
        );
        assert_eq!(r["x-frame-options"], "DENY");
        assert_eq!(r["x-content-type-options"], "nosniff");
        assert_eq!(r["origin-agent-cluster"], "?1");
        assert_eq!(r["x-xss-protection"], "0");
        assert!(r["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'self'"));
        assert_eq!(r.len(), 12);
        assert_eq!(s.defaults(true).len(), 12);
        assert_eq!(s.defaults(false).len(), 11);
        assert!(!s
            .defaults(false)
            .contains_key(header::STRICT_TRANSPORT_SECURITY));
    }

    #[test]
    fn set_overrides_drops_and_adds() {
        let c = section(
            "[security_headers]\nset = { \"content-security-policy\" = \"default-src 'none'\", \"X-Frame-Options\" = \"\", \"Permissions-Policy\" = \"camera=()\" }\n",
        );
        let s = SecurityHeaders::from_config(&c.security_headers).unwrap();
        let r = s.defaults(true);
        assert_eq!(r["content-security-policy"], "default-src 'none'");
        assert!(!r.contains_key("x-frame-options"));
        assert_eq!(r["permissions-policy"], "camera=()");
    }

    #[test]
    fn disabled_adds_nothing_but_still_strips() {
        let c = section("[security_headers]\nenabled = false\n");
        let s = SecurityHeaders::from_config(&c.security_headers).unwrap();
        let r = s.merge_upstream(
            request(&[("Server", "nginx"), ("X-Powered-By", "Express")]),
            StatusCode::OK,
            true,
        );
        assert!(r.is_empty());
    }

    #[test]
    fn merge_keeps_upstream_values_drops_hop_by_hop_and_adds_the_rest() {
        let s = SecurityHeaders::from_config(&section("").security_headers).unwrap();
        let mut up = request(&[
            ("X-Frame-Options", "DENY"),
            ("Set-Cookie", "a=1"),
            ("Connection", "keep-alive, X-Conn-Only"),
            ("X-Conn-Only", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Server", "nginx"),
            ("Content-Type", "text/plain"),
        ]);
        up.append("set-cookie", HeaderValue::from_static("b=2"));
        let out = s.merge_upstream(up, StatusCode::OK, true);
        assert_eq!(out["x-frame-options"], "DENY");
        assert_eq!(out.get_all("x-frame-options").iter().count(), 1);
        let cookies: Vec<_> = out.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, vec!["a=1", "b=2"]);
        for gone in ["connection", "x-conn-only", "keep-alive", "server"] {
            assert!(!out.contains_key(gone), "{gone} should be dropped");
        }
        assert_eq!(out["content-type"], "text/plain");
        assert_eq!(out["x-content-type-options"], "nosniff");
        // 12 defaults, X-Frame-Options from the upstream, 2 cookies, content-type
        assert_eq!(out.len(), 12 + 2 + 1);
    }

    #[test]
    fn merge_keeps_the_upgrade_of_a_switch() {
        let s = SecurityHeaders::from_config(&section("").security_headers).unwrap();
        let up = request(&[("Connection", "Upgrade"), ("Upgrade", "websocket")]);
        let out = s.merge_upstream(up, StatusCode::SWITCHING_PROTOCOLS, true);
        assert_eq!(out["upgrade"], "websocket");
        assert_eq!(out["connection"], "Upgrade");
    }
}
