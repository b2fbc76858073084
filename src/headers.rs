//! Response headers the gateway adds: helmet's security headers and the `cors` package's
//! CORS answers, plus the hop-by-hop cleanup of upstream responses.
//!
//! Everything works on a plain [`HeaderMap`] with names and values built once from the
//! config. Values derived from the config are made from `'static` strings (see
//! [`static_value`]), so copying one into a response is free: no allocation and no shared
//! reference count for the worker threads to fight over.

use std::collections::HashSet;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use crate::config::{CorsSection, Origin, SecurityHeadersSection, Token};

/// Header names the gateway uses, built at compile time.
pub mod names {
    use http::header::HeaderName;

    pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
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

/// What `Access-Control-Expose-Headers` lists unless `cors.expose_headers` says otherwise:
/// the gateway's own fields, which a script could not read otherwise.
const DEFAULT_EXPOSE: &str = "X-Request-Id, RateLimit, RateLimit-Policy, Retry-After";

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

/// What the CORS policy says about a request's Origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowOrigin {
    /// CORS is off: add nothing.
    #[default]
    Off,
    /// `Access-Control-Allow-Origin: *`.
    Any,
    /// Echo this origin (it is on the list), with `Vary: Origin`.
    Echo(HeaderValue),
    /// Origin missing or not on the list: no allow header, but still `Vary: Origin`.
    Refused,
}

/// The `cors` package's behaviour, compiled.
#[derive(Debug, Clone)]
pub struct Cors {
    enabled: bool,
    any_origin: bool,
    origins: HashSet<String>,
    allow_methods: HeaderValue,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    allow_credentials: bool,
    max_age: Option<HeaderValue>,
}

const ANY: HeaderValue = HeaderValue::from_static("*");
const TRUE: HeaderValue = HeaderValue::from_static("true");
const VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");
const VARY_REQUEST_HEADERS: HeaderValue =
    HeaderValue::from_static("Access-Control-Request-Headers");

impl Cors {
    pub fn from_config(section: &CorsSection) -> Result<Self, String> {
        let join = |items: &[Token]| {
            static_value(
                &items
                    .iter()
                    .map(|t| t.0.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            )
        };
        let origins = section.allow_origins.get_ref();
        Ok(Cors {
            enabled: section.enabled,
            any_origin: origins.contains(&Origin::Any),
            origins: origins
                .iter()
                .filter_map(|o| match o {
                    Origin::Exact(s) => Some(s.clone()),
                    Origin::Any => None,
                })
                .collect(),
            allow_methods: join(&section.allow_methods)?,
            allow_headers: section.allow_headers.as_deref().map(join).transpose()?,
            expose_headers: match &section.expose_headers {
                None => Some(HeaderValue::from_static(DEFAULT_EXPOSE)),
                Some(list) if list.is_empty() => None,
                Some(list) => Some(join(list)?),
            },
            allow_credentials: *section.allow_credentials.get_ref(),
            max_age: section
                .max_age
                .map(|m| static_value(&m.0.to_string()))
                .transpose()?,
        })
    }

    /// A CORS preflight: OPTIONS with Origin and Access-Control-Request-Method.
    pub fn is_preflight(&self, method: &Method, headers: &HeaderMap) -> bool {
        self.enabled
            && *method == Method::OPTIONS
            && headers.contains_key(header::ORIGIN)
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// Decide once per request what the Origin earns.
    pub fn allow_origin(&self, headers: &HeaderMap) -> AllowOrigin {
        if !self.enabled {
            return AllowOrigin::Off;
        }
        if self.any_origin {
            return AllowOrigin::Any;
        }
        match headers.get(header::ORIGIN) {
            Some(origin) => match origin.to_str() {
                Ok(text) if self.origins.contains(&text.to_ascii_lowercase()) => {
                    AllowOrigin::Echo(origin.clone())
                }
                _ => AllowOrigin::Refused,
            },
            None => AllowOrigin::Refused,
        }
    }

    /// Headers for an actual (non-preflight) response. The gateway's policy replaces any
    /// CORS headers the upstream set, so the upstream cannot widen it.
    pub fn apply(&self, decision: &AllowOrigin, headers: &mut HeaderMap) {
        match decision {
            AllowOrigin::Off => return,
            AllowOrigin::Any => {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, ANY);
            }
            AllowOrigin::Echo(origin) => {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                add_vary(headers, VARY_ORIGIN);
            }
            AllowOrigin::Refused => {
                headers.remove(header::ACCESS_CONTROL_ALLOW_ORIGIN);
                headers.remove(header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
                add_vary(headers, VARY_ORIGIN);
            }
        }
        if self.allow_credentials && !matches!(decision, AllowOrigin::Refused) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
        }
        if let Some(expose) = &self.expose_headers {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }

    /// The headers of the 204 answer to a preflight (`decision` from
    /// [`Self::allow_origin`], `request` the preflight's headers).
    pub fn preflight(&self, decision: &AllowOrigin, request: &HeaderMap, headers: &mut HeaderMap) {
        self.apply(decision, headers);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods.clone(),
        );
        match (
            &self.allow_headers,
            request.get(header::ACCESS_CONTROL_REQUEST_HEADERS),
        ) {
            (Some(configured), _) => {
                headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, configured.clone());
            }
            (None, Some(requested)) => {
                headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
                add_vary(headers, VARY_REQUEST_HEADERS);
            }
            (None, None) => {}
        }
        if let Some(max_age) = &self.max_age {
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, max_age.clone());
        }
    }
}

/// Add a token to Vary unless it is there already.
fn add_vary(headers: &mut HeaderMap, token: HeaderValue) {
    let wanted = token.to_str().unwrap_or_default();
    let present = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.eq_ignore_ascii_case(wanted))
        })
    });
    if !present {
        headers.append(header::VARY, token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use std::path::Path;

    fn section(text: &str) -> config::FileConfig {
        config::parse(Path::new("t.toml"), text).unwrap()
    }

    fn request(headers: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

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

    #[test]
    fn cors_defaults_allow_any_origin() {
        let cors = Cors::from_config(&section("").cors).unwrap();
        let d = cors.allow_origin(&HeaderMap::new());
        assert_eq!(d, AllowOrigin::Any);
        let mut r = HeaderMap::new();
        cors.apply(&d, &mut r);
        assert_eq!(r["access-control-allow-origin"], "*");
        assert!(!r.contains_key("vary"));
    }

    #[test]
    fn preflight_reflects_requested_headers() {
        let cors = Cors::from_config(&section("").cors).unwrap();
        let req = request(&[
            ("Origin", "https://a.example"),
            ("Access-Control-Request-Method", "PUT"),
            ("Access-Control-Request-Headers", "x-token, content-type"),
        ]);
        assert!(cors.is_preflight(&Method::OPTIONS, &req));
        assert!(!cors.is_preflight(&Method::GET, &req));
        let mut r = HeaderMap::new();
        cors.preflight(&cors.allow_origin(&req), &req, &mut r);
        assert_eq!(
            r["access-control-allow-methods"],
            "GET,HEAD,PUT,PATCH,POST,DELETE"
        );
        assert_eq!(r["access-control-allow-headers"], "x-token, content-type");
        assert_eq!(r["vary"], "Access-Control-Request-Headers");
        let no_method = request(&[("Origin", "https://a.example")]);
        assert!(!cors.is_preflight(&Method::OPTIONS, &no_method));
    }

    #[test]
    fn origin_list_echoes_matches_with_vary() {
        let c = section(
            "[cors]\nallow_origins = [\"https://a.example\"]\nallow_credentials = true\nexpose_headers = [\"X-Total\"]\nmax_age = \"10m\"\n",
        );
        let cors = Cors::from_config(&c.cors).unwrap();
        let ok = request(&[("Origin", "https://a.example")]);
        let mut r = request(&[("Access-Control-Allow-Origin", "*")]);
        cors.apply(&cors.allow_origin(&ok), &mut r);
        assert_eq!(r["access-control-allow-origin"], "https://a.example");
        assert_eq!(r["access-control-allow-credentials"], "true");
        assert_eq!(r["access-control-expose-headers"], "X-Total");
        assert_eq!(r["vary"], "Origin");

        let other = request(&[("Origin", "https://evil.example")]);
        let mut r = request(&[
            ("Access-Control-Allow-Origin", "*"),
            ("Access-Control-Allow-Credentials", "true"),
        ]);
        cors.apply(&cors.allow_origin(&other), &mut r);
        assert!(!r.contains_key("access-control-allow-origin"));
        assert!(!r.contains_key("access-control-allow-credentials"));
        assert_eq!(r["vary"], "Origin");

        let pre = request(&[
            ("Origin", "https://a.example"),
            ("Access-Control-Request-Method", "GET"),
        ]);
        let mut r = HeaderMap::new();
        cors.preflight(&cors.allow_origin(&pre), &pre, &mut r);
        assert_eq!(r["access-control-max-age"], "600");
    }

    #[test]
    fn vary_is_not_repeated() {
        let mut r = request(&[("Vary", "Accept-Encoding, origin")]);
        add_vary(&mut r, VARY_ORIGIN);
        assert_eq!(r.get_all("vary").iter().count(), 1);
        add_vary(&mut r, VARY_REQUEST_HEADERS);
        assert_eq!(r.get_all("vary").iter().count(), 2);
    }

    #[test]
    fn disabled_cors_does_nothing() {
        let cors = Cors::from_config(&section("[cors]\nenabled = false\n").cors).unwrap();
        let req = request(&[
            ("Origin", "https://a.example"),
            ("Access-Control-Request-Method", "GET"),
        ]);
        assert!(!cors.is_preflight(&Method::OPTIONS, &req));
        let mut r = HeaderMap::new();
        cors.apply(&cors.allow_origin(&req), &mut r);
        assert!(r.is_empty());
    }

    #[test]
    fn static_values_are_checked() {
        assert!(static_value("ok value").is_ok());
        assert!(static_value("bad\nvalue").is_err());
        assert_eq!(static_name("X-Api-Key").unwrap(), "x-api-key");
        assert!(static_name("bad name").is_err());
    }
}
