//! The `cors` package's behaviour: preflight answers and the CORS fields of every answer,
//! compiled once from `[cors]`.

use std::collections::HashSet;

use http::header::{self, HeaderMap, HeaderValue};
use http::Method;

use crate::config::{CorsSection, Origin, Token};
use crate::wire::static_value;

/// What `Access-Control-Expose-Headers` lists unless `cors.expose_headers` says otherwise:
/// the gateway's own fields, which a script could not read otherwise.
const DEFAULT_EXPOSE: &str = "X-Request-Id, RateLimit, RateLimit-Policy, Retry-After";

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

    use http::header::HeaderMap;
    use http::Method;

    use crate::policy::testkit::{request, section};

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
}
