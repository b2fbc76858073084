//! The admin listener: read-only, loopback by default, on its own port.
//!
//! - `GET /healthz`: 200 while the process runs.
//! - `GET /readyz`: 200 while it serves; 503 from the moment it starts draining (SIGTERM,
//!   or SIGQUIT handing over to a new process), so that a load balancer stops first.
//! - `GET /metrics`: Prometheus text (see [`crate::metrics`]).
//! - `GET /api/status`: the loaded config, listeners, routes and instances as JSON
//!   ([`status`]); never a secret.
//! - `GET /`: a status page for a person, which refreshes itself from /api/status; it and
//!   its script and style come from this binary and run under a strict CSP.
//!
//! With `token_env`, /metrics and /api/status need `Authorization: Bearer <token>`; the
//! page's shell holds no data and loads without it, then asks for the token.

pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use subtle::ConstantTimeEq;

use crate::config::{ConfigError, FileConfig};
use crate::reload::Current;

const PAGE: &str = include_str!("assets/status.html");
const SCRIPT: &str = include_str!("assets/status.js");
const STYLE: &str = include_str!("assets/status.css");
/// The page's policy: its own script, style and API, nothing else, no framing.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `[admin]` compiled.
#[derive(Clone)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// The bearer token that guards the data endpoints; `None`: open (to whoever can
    /// reach the listener).
    token: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .finish()
    }
}

impl AdminSettings {
    /// `[admin]`, or its older name `[metrics]` (listen only); both is an error.
    pub fn from_config(file: &FileConfig) -> Result<Option<AdminSettings>, ConfigError> {
        match (&file.admin, &file.metrics) {
            (Some(_), Some(old)) => Err(file.error_at(
                old.span(),
                "metrics".into(),
                "set here and as [admin]: [metrics] is the older name of [admin]; keep [admin] and its listen".into(),
            )),
            (None, Some(old)) => Ok(Some(AdminSettings {
                listen: old.get_ref().listen.0,
                token: None,
            })),
            (None, None) => Ok(None),
            (Some(admin), None) => {
                let token = match &admin.get_ref().token_env {
                    None => None,
                    Some(var) => Some(token_from_env(file, var)?),
                };
                let settings = AdminSettings {
                    listen: admin.get_ref().listen.0,
                    token,
                };
                if token_missing_off_loopback(&settings) {
                    log::warn!(
                        "admin listener on {} is not on loopback and has no token_env: anyone who reaches it reads the status API",
                        settings.listen
                    );
                }
                Ok(Some(settings))
            }
        }
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether a request may read the data endpoints.
    fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let Some(given) = authorization.and_then(|a| a.strip_prefix(b"Bearer ")) else {
            return false;
        };
        bool::from(given.ct_eq(token))
    }
}

fn token_missing_off_loopback(s: &AdminSettings) -> bool {
    s.token.is_none() && !s.listen.ip().is_loopback()
}

fn token_from_env(
    file: &FileConfig,
    var: &toml::Spanned<String>,
) -> Result<Arc<[u8]>, ConfigError> {
    let name = var.get_ref();
    let refuse = |message: String| file.error_at(var.span(), "admin.token_env".into(), message);
    if name.is_empty() || name.contains('=') || name.contains('\0') {
        return Err(refuse(format!(
            "\"{name}\" is not an environment variable name"
        )));
    }
    let value = std::env::var_os(name)
        .ok_or_else(|| refuse(format!("the environment variable {name} is not set")))?;
    let bytes = value.as_encoded_bytes();
    if bytes.len() < 16 {
        return Err(refuse(format!(
            "the token in {name} is {} bytes long: use at least 16 (e.g. openssl rand -hex 32)",
            bytes.len()
        )));
    }
    Ok(Arc::from(bytes))
}

/// The admin listener's app.
pub struct AdminApp {
    current: Arc<Current>,
}

impl AdminApp {
    pub fn new(current: Arc<Current>) -> AdminApp {
        AdminApp { current }
    }
}

/// One answer: status, content type, body, and whether it is the page (with its CSP).
struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
    page: bool,
}

impl Answer {
    fn text(status: StatusCode, body: &str) -> Answer {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
            page: false,
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let head = req.method == Method::HEAD;
        let answer = if req.method != Method::GET && !head {
            Answer::text(StatusCode::METHOD_NOT_ALLOWED, "read-only: GET or HEAD\n")
        } else {
            let authorization = req.headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
            self.route(req.uri.path(), authorization)
        };
        let mut builder = Response::builder()
            .status(answer.status)
            .header(header::CONTENT_TYPE, answer.content_type)
            .header(header::CONTENT_LENGTH, answer.body.len())
            .header(header::CACHE_CONTROL, "no-store")
            .header("x-content-type-options", "nosniff");
        if answer.page {
            builder = builder
                .header("content-security-policy", PAGE_CSP)
                .header("referrer-policy", "no-referrer")
                .header("x-frame-options", "DENY");
        }
        if answer.status == StatusCode::METHOD_NOT_ALLOWED {
            builder = builder.header(header::ALLOW, "GET, HEAD");
        }
        if answer.status == StatusCode::UNAUTHORIZED {
            builder = builder.header(header::WWW_AUTHENTICATE, "Bearer realm=\"pylon-admin\"");
        }
        builder
            .body(if head { Vec::new() } else { answer.body })
            .unwrap_or_default()
    }
}

impl AdminApp {
    fn route(&self, path: &str, authorization: Option<&[u8]>) -> Answer {
        let rt = self.current.load();
        match path {
            "/healthz" => return Answer::text(StatusCode::OK, "ok\n"),
            "/readyz" if rt.shared.life.is_draining() => {
                return Answer::text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            }
            "/readyz" => return Answer::text(StatusCode::OK, "ready\n"),
            "/" | "/index.html" => return asset("text/html; charset=utf-8", PAGE),
            "/status.js" => return asset("text/javascript; charset=utf-8", SCRIPT),
            "/status.css" => return asset("text/css; charset=utf-8", STYLE),
            // browsers ask for it; there is none, and a 404 would be logged as an error
            "/favicon.ico" => {
                return Answer {
                    status: StatusCode::NO_CONTENT,
                    content_type: "image/x-icon",
                    body: Vec::new(),
                    page: false,
                }
            }
            _ => {}
        }
        let admitted = rt
            .admin
            .as_ref()
            .is_none_or(|admin| admin.admits(authorization));
        if !admitted {
            return Answer::text(StatusCode::UNAUTHORIZED, "a bearer token is needed\n");
        }
        match (path, &rt.shared.metrics) {
            ("/metrics", Some(metrics)) => Answer {
                status: StatusCode::OK,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: crate::metrics::render(&rt, metrics, &self.current.status()).into_bytes(),
                page: false,
            },
            ("/api/status", _) => Answer {
                status: StatusCode::OK,
                content_type: "application/json",
                body: status::render(&rt, &self.current.status()),
                page: false,
            },
            _ => Answer::text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

fn asset(content_type: &'static str, text: &'static str) -> Answer {
    Answer {
        status: StatusCode::OK,
        content_type,
        body: text.as_bytes().to_vec(),
        page: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(token: Option<&str>) -> AdminSettings {
        AdminSettings {
            listen: "127.0.0.1:9180".parse().unwrap(),
            token: token.map(|t| Arc::from(t.as_bytes())),
        }
    }

    #[test]
    fn the_token_is_checked_whole() {
        let s = settings(Some("0123456789abcdef"));
        assert!(s.admits(Some(b"Bearer 0123456789abcdef")));
        for bad in [
            &b"Bearer 0123456789abcde"[..],
            b"Bearer 0123456789abcdefg",
            b"bearer 0123456789abcdef",
            b"0123456789abcdef",
            b"Bearer ",
        ] {
            assert!(!s.admits(Some(bad)), "{}", String::from_utf8_lossy(bad));
        }
        assert!(!s.admits(None));
        assert!(settings(None).admits(None), "no token: open");
    }

    #[test]
    fn the_page_loads_only_its_own_files() {
        assert!(PAGE.contains("src=\"/status.js\"") && PAGE.contains("href=\"/status.css\""));
        for text in [PAGE, SCRIPT, STYLE] {
            assert!(!text.contains("http://") && !text.contains("https://"));
            assert!(
                !text.contains("<script>") && !text.contains("style="),
                "nothing inline"
            );
        }
    }
}
