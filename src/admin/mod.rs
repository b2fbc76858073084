//! The admin listener: read-only, loopback by default, on its own port.
//!
//! - `GET /healthz`: 200 while the process runs.
//! - `GET /readyz`: 200 while it serves; 503 from the moment it starts draining (SIGTERM,
//!   or SIGQUIT handing over to a new process), so that a load balancer stops first.
//! - `GET /metrics`: Prometheus text ([`prometheus`], around the counters of [`crate::telemetry::metrics`]).
//! - `GET /api/status`: the loaded config, listeners, routes and instances as JSON
//!   ([`status`]); never a secret.
//! - `GET /`: a status page for a person, which refreshes itself from /api/status; it and
//!   its script and style come from this binary and run under a strict CSP.
//!
//! With `token_env`, /metrics and /api/status need `Authorization: Bearer <token>`; the
//! page's shell holds no data and loads without it, then asks for the token.

mod prometheus;
pub mod status;

use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::control::Current;

const PAGE: &str = include_str!("assets/status.html");
const SCRIPT: &str = include_str!("assets/status.js");
const STYLE: &str = include_str!("assets/status.css");
/// The page's policy: its own script, style and API, nothing else, no framing.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

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
                body: prometheus::render(&rt, metrics, &self.current.status()).into_bytes(),
                page: false,
            },
            ("/api/status", _) => Answer {
                status: StatusCode::OK,
                content_type: "application/json",
                body: status::render(&rt, &self.current.status(), self.current.source().path()),
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
