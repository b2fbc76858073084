//! Response headers the gateway adds: helmet's security headers and the `cors` package's
//! CORS answers. Names and values are built once from the config; per response they are
//! only copied in.

use std::collections::HashSet;

use http::{HeaderName, HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::config::{CorsSection, Origin, SecurityHeadersSection};

/// helmet's defaults, in the order helmet sends them.
const HELMET_DEFAULTS: [(&str, &str); 12] = [
    (
        "Content-Security-Policy",
        "default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests",
    ),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Origin-Agent-Cluster", "?1"),
    ("Referrer-Policy", "no-referrer"),
    ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-DNS-Prefetch-Control", "off"),
    ("X-Download-Options", "noopen"),
    ("X-Frame-Options", "SAMEORIGIN"),
    ("X-Permitted-Cross-Domain-Policies", "none"),
    ("X-XSS-Protection", "0"),
];

/// A header to add: the name as users spell it (sent as is on HTTP/1) and its value.
#[derive(Debug, Clone)]
struct Field {
    /// Lower-case, for lookups.
    name: HeaderName,
    /// As written, for the wire.
    spelled: &'static str,
    value: HeaderValue,
}

impl Field {
    fn new(spelled: &'static str, value: &str) -> Result<Field, String> {
        let name = HeaderName::from_bytes(spelled.as_bytes())
            .map_err(|_| format!("\"{spelled}\" is not a valid header name"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("the value of {spelled} is not a valid header value"))?;
        Ok(Field {
            name,
            spelled,
            value,
        })
    }

    /// Set the header, replacing what is there.
    fn insert(&self, resp: &mut ResponseHeader) {
        // the name and value were validated when the config was compiled
        let _ = resp.insert_header(self.spelled, self.value.clone());
    }

    /// Set the header unless the response already has one.
    fn insert_if_absent(&self, resp: &mut ResponseHeader) {
        if !resp.headers.contains_key(&self.name) {
            self.insert(resp);
        }
    }
}

/// helmet's headers, added where the upstream did not set them, and headers stripped from
/// upstream responses.
#[derive(Debug, Clone, Default)]
pub struct SecurityHeaders {
    add: Vec<Field>,
    remove: Vec<HeaderName>,
}

impl SecurityHeaders {
    pub fn from_config(section: &SecurityHeadersSection) -> Result<Self, String> {
        let remove = section
            .remove
            .iter()
            .map(|t| {
                HeaderName::from_bytes(t.0.as_bytes())
                    .map_err(|_| format!("\"{}\" is not a valid header name", t.0))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !section.enabled {
            return Ok(SecurityHeaders {
                add: Vec::new(),
                remove,
            });
        }
        let mut add: Vec<Field> = Vec::new();
        let overridden = |name: &str| {
            section
                .set
                .iter()
                .find(|(k, _)| k.0.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.0.as_str())
        };
        for (name, value) in HELMET_DEFAULTS {
            let value = overridden(name).unwrap_or(value);
            if !value.is_empty() {
                add.push(Field::new(name, value)?);
            }
        }
        for (name, value) in &section.set {
            let is_default = HELMET_DEFAULTS
                .iter()
                .any(|(d, _)| d.eq_ignore_ascii_case(&name.0));
            if !is_default && !value.0.is_empty() {
                // leaked once at start, so responses can borrow the spelling for the life
                // of the process instead of copying it per response
                let spelled: &'static str = Box::leak(name.0.clone().into_boxed_str());
                add.push(Field::new(spelled, &value.0)?);
            }
        }
        Ok(SecurityHeaders { add, remove })
    }

    /// Strip the configured headers from an upstream response.
    pub fn strip(&self, resp: &mut ResponseHeader) {
        for name in &self.remove {
            resp.remove_header(name);
        }
    }

    /// Add every security header the response does not already carry.
    pub fn add(&self, resp: &mut ResponseHeader) {
        for field in &self.add {
            field.insert_if_absent(resp);
        }
    }
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

const ACAO: &str = "Access-Control-Allow-Origin";
const ACAC: &str = "Access-Control-Allow-Credentials";
const ACAM: &str = "Access-Control-Allow-Methods";
const ACAH: &str = "Access-Control-Allow-Headers";
const ACEH: &str = "Access-Control-Expose-Headers";
const ACMA: &str = "Access-Control-Max-Age";
const ACRM: &str = "access-control-request-method";
const ACRH: &str = "access-control-request-headers";

impl Cors {
    pub fn from_config(section: &CorsSection) -> Result<Self, String> {
        let join = |items: &[crate::config::Token]| {
            let text = items
                .iter()
                .map(|t| t.0.as_str())
                .collect::<Vec<_>>()
                .join(",");
            HeaderValue::from_str(&text).map_err(|_| format!("cannot build a header from {text:?}"))
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
            expose_headers: if section.expose_headers.is_empty() {
                None
            } else {
                Some(join(&section.expose_headers)?)
            },
            allow_credentials: *section.allow_credentials.get_ref(),
            max_age: section.max_age.map(|m| HeaderValue::from(m.0)),
        })
    }

    /// A CORS preflight: OPTIONS with Origin and Access-Control-Request-Method.
    pub fn is_preflight(&self, req: &RequestHeader) -> bool {
        self.enabled
            && req.method == Method::OPTIONS
            && req.headers.contains_key("origin")
            && req.headers.contains_key(ACRM)
    }

    /// Decide once per request what the Origin earns.
    pub fn allow_origin(&self, req: &RequestHeader) -> AllowOrigin {
        if !self.enabled {
            return AllowOrigin::Off;
        }
        if self.any_origin {
            return AllowOrigin::Any;
        }
        match req.headers.get("origin") {
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
    pub fn apply(&self, decision: &AllowOrigin, resp: &mut ResponseHeader) {
        match decision {
            AllowOrigin::Off => return,
            AllowOrigin::Any => {
                let _ = resp.insert_header(ACAO, HeaderValue::from_static("*"));
            }
            AllowOrigin::Echo(origin) => {
                let _ = resp.insert_header(ACAO, origin.clone());
                add_vary(resp, "Origin");
            }
            AllowOrigin::Refused => {
                resp.remove_header(ACAO);
                add_vary(resp, "Origin");
            }
        }
        if self.allow_credentials && !matches!(decision, AllowOrigin::Refused) {
            let _ = resp.insert_header(ACAC, HeaderValue::from_static("true"));
        }
        if let Some(expose) = &self.expose_headers {
            let _ = resp.insert_header(ACEH, expose.clone());
        }
    }

    /// The 204 answer to a preflight (`decision` from [`Self::allow_origin`]).
    pub fn preflight(
        &self,
        decision: &AllowOrigin,
        req: &RequestHeader,
        resp: &mut ResponseHeader,
    ) {
        self.apply(decision, resp);
        let _ = resp.insert_header(ACAM, self.allow_methods.clone());
        match (&self.allow_headers, req.headers.get(ACRH)) {
            (Some(configured), _) => {
                let _ = resp.insert_header(ACAH, configured.clone());
            }
            (None, Some(requested)) => {
                let _ = resp.insert_header(ACAH, requested.clone());
                add_vary(resp, "Access-Control-Request-Headers");
            }
            (None, None) => {}
        }
        if let Some(max_age) = &self.max_age {
            let _ = resp.insert_header(ACMA, max_age.clone());
        }
    }
}

/// Remove the hop-by-hop fields of an upstream response: they describe the connection to
/// the upstream, not the one to the client (Pingora writes the client's own `Connection`).
/// A 101 keeps `Upgrade` and `Connection`, which the protocol switch needs.
pub fn strip_hop_by_hop(resp: &mut ResponseHeader) {
    if resp.status.as_u16() == 101 {
        resp.remove_header("keep-alive");
        resp.remove_header("proxy-connection");
        return;
    }
    let nominated: Vec<HeaderName> = resp
        .headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in &nominated {
        resp.remove_header(name);
    }
    for name in ["connection", "keep-alive", "proxy-connection", "upgrade"] {
        resp.remove_header(name);
    }
}

/// Add a token to Vary unless it is there already.
fn add_vary(resp: &mut ResponseHeader, token: &'static str) {
    let present = resp.headers.get_all("vary").iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case(token))
        })
    });
    if !present {
        let _ = resp.append_header("Vary", HeaderValue::from_static(token));
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

    fn request(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/x", None).unwrap();
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn response() -> ResponseHeader {
        ResponseHeader::build(200, None).unwrap()
    }

    #[test]
    fn helmet_defaults_are_added_unless_present() {
        let s = SecurityHeaders::from_config(&section("").security_headers).unwrap();
        let mut r = response();
        r.insert_header("X-Frame-Options", "DENY").unwrap();
        s.add(&mut r);
        assert_eq!(r.headers["x-frame-options"], "DENY");
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
        assert_eq!(r.headers["origin-agent-cluster"], "?1");
        assert_eq!(r.headers["x-xss-protection"], "0");
        assert!(r.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'self'"));
        assert_eq!(r.headers.len(), 12);
    }

    #[test]
    fn set_overrides_drops_and_adds() {
        let c = section(
            "[security_headers]\nset = { \"content-security-policy\" = \"default-src 'none'\", \"X-Frame-Options\" = \"\", \"Permissions-Policy\" = \"camera=()\" }\n",
        );
        let s = SecurityHeaders::from_config(&c.security_headers).unwrap();
        let mut r = response();
        s.add(&mut r);
        assert_eq!(r.headers["content-security-policy"], "default-src 'none'");
        assert!(!r.headers.contains_key("x-frame-options"));
        assert_eq!(r.headers["permissions-policy"], "camera=()");
    }

    #[test]
    fn disabled_adds_nothing_but_still_strips() {
        let c = section("[security_headers]\nenabled = false\n");
        let s = SecurityHeaders::from_config(&c.security_headers).unwrap();
        let mut r = response();
        r.insert_header("Server", "nginx").unwrap();
        r.insert_header("X-Powered-By", "Express").unwrap();
        s.strip(&mut r);
        s.add(&mut r);
        assert!(r.headers.is_empty());
    }

    #[test]
    fn cors_defaults_allow_any_origin() {
        let cors = Cors::from_config(&section("").cors).unwrap();
        let req = request("GET", &[]);
        let d = cors.allow_origin(&req);
        assert_eq!(d, AllowOrigin::Any);
        let mut r = response();
        cors.apply(&d, &mut r);
        assert_eq!(r.headers["access-control-allow-origin"], "*");
        assert!(!r.headers.contains_key("vary"));
    }

    #[test]
    fn preflight_reflects_requested_headers() {
        let cors = Cors::from_config(&section("").cors).unwrap();
        let req = request(
            "OPTIONS",
            &[
                ("Origin", "https://a.example"),
                ("Access-Control-Request-Method", "PUT"),
                ("Access-Control-Request-Headers", "x-token, content-type"),
            ],
        );
        assert!(cors.is_preflight(&req));
        let mut r = response();
        cors.preflight(&cors.allow_origin(&req), &req, &mut r);
        assert_eq!(
            r.headers["access-control-allow-methods"],
            "GET,HEAD,PUT,PATCH,POST,DELETE"
        );
        assert_eq!(
            r.headers["access-control-allow-headers"],
            "x-token, content-type"
        );
        assert_eq!(r.headers["vary"], "Access-Control-Request-Headers");
        assert!(!cors.is_preflight(&request("OPTIONS", &[("Origin", "https://a.example")])));
    }

    #[test]
    fn origin_list_echoes_matches_with_vary() {
        let c = section(
            "[cors]\nallow_origins = [\"https://a.example\"]\nallow_credentials = true\nexpose_headers = [\"X-Total\"]\nmax_age = \"10m\"\n",
        );
        let cors = Cors::from_config(&c.cors).unwrap();
        let ok = request("GET", &[("Origin", "https://a.example")]);
        let mut r = response();
        r.insert_header("Access-Control-Allow-Origin", "*").unwrap();
        cors.apply(&cors.allow_origin(&ok), &mut r);
        assert_eq!(
            r.headers["access-control-allow-origin"],
            "https://a.example"
        );
        assert_eq!(r.headers["access-control-allow-credentials"], "true");
        assert_eq!(r.headers["access-control-expose-headers"], "X-Total");
        assert_eq!(r.headers["vary"], "Origin");

        let other = request("GET", &[("Origin", "https://evil.example")]);
        let mut r = response();
        r.insert_header("Access-Control-Allow-Origin", "*").unwrap();
        cors.apply(&cors.allow_origin(&other), &mut r);
        assert!(!r.headers.contains_key("access-control-allow-origin"));
        assert!(!r.headers.contains_key("access-control-allow-credentials"));
        assert_eq!(r.headers["vary"], "Origin");

        let pre = request(
            "OPTIONS",
            &[
                ("Origin", "https://a.example"),
                ("Access-Control-Request-Method", "GET"),
            ],
        );
        let mut r = response();
        cors.preflight(&cors.allow_origin(&pre), &pre, &mut r);
        assert_eq!(r.headers["access-control-max-age"], "600");
    }

    #[test]
    fn hop_by_hop_response_fields_are_dropped() {
        let mut r = response();
        r.insert_header("Connection", "keep-alive, X-Conn-Only")
            .unwrap();
        r.insert_header("X-Conn-Only", "1").unwrap();
        r.insert_header("Keep-Alive", "timeout=5").unwrap();
        r.insert_header("Upgrade", "h2c").unwrap();
        r.insert_header("X-Kept", "1").unwrap();
        strip_hop_by_hop(&mut r);
        assert_eq!(r.headers.len(), 1);
        assert!(r.headers.contains_key("x-kept"));

        let mut switching = ResponseHeader::build(101, None).unwrap();
        switching.insert_header("Connection", "Upgrade").unwrap();
        switching.insert_header("Upgrade", "websocket").unwrap();
        strip_hop_by_hop(&mut switching);
        assert_eq!(switching.headers.len(), 2);
    }

    #[test]
    fn vary_is_not_repeated() {
        let mut r = response();
        r.insert_header("Vary", "Accept-Encoding, origin").unwrap();
        add_vary(&mut r, "Origin");
        assert_eq!(r.headers.get_all("vary").iter().count(), 1);
        add_vary(&mut r, "Access-Control-Request-Headers");
        assert_eq!(r.headers.get_all("vary").iter().count(), 2);
    }

    #[test]
    fn disabled_cors_does_nothing() {
        let cors = Cors::from_config(&section("[cors]\nenabled = false\n").cors).unwrap();
        let req = request(
            "OPTIONS",
            &[
                ("Origin", "https://a.example"),
                ("Access-Control-Request-Method", "GET"),
            ],
        );
        assert!(!cors.is_preflight(&req));
        let mut r = response();
        cors.apply(&cors.allow_origin(&req), &mut r);
        assert!(r.headers.is_empty());
    }
}
