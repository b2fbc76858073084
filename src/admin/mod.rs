//! The admin listener, loopback by default, on its own port.
//!
//! - `GET /healthz`: 200 while the process runs.
//! - `GET /readyz`: 200 while it serves; 503 from the moment it starts draining (SIGTERM,
//!   or SIGQUIT handing over to a new process), so that a load balancer stops first.
//! - `GET /metrics`: Prometheus text ([`prometheus`], around the counters of [`crate::telemetry::metrics`]).
//! - `GET /api/status`: the loaded config, listeners, routes and instances as JSON
//!   ([`status`]); never a secret.
//! - `GET /api/fleet`: the fleet's nodes and whether they agree ([`fleet`]).
//! - `GET /config`: the policy document in force, with its hash as `ETag`;
//!   `PUT /config` replaces it (`If-Match` needed), `POST /config/validate` checks one
//!   ([`write`]). Writes need the write token, and a loopback client.
//! - `DELETE /cache?path=` or `?prefix=`: purge the response cache (the write token).
//! - `GET /openapi.yaml`: the OpenAPI description of all of this.
//! - `GET /`: a status page for a person, which refreshes itself from /api/status; it and
//!   its script and style come from this binary and run under a strict CSP.
//!
//! With `token_env`, everything but the page's shell, /healthz, /readyz and /openapi.yaml
//! needs `Authorization: Bearer <token>` (the read token or the write token).

mod fleet;
mod history;
mod prometheus;
pub mod status;
mod write;

use std::sync::Arc;

use async_trait::async_trait;
use http::{header, HeaderName, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::control::Current;

const PAGE: &str = include_str!("assets/status.html");
const SCRIPT: &str = include_str!("assets/status.js");
const STYLE: &str = include_str!("assets/status.css");
const OPENAPI: &str = include_str!("../../admin/openapi.yaml");
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

/// One answer: status, content type, body, whether it is the page (with its CSP), and
/// more header fields.
struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
    page: bool,
    fields: Vec<(HeaderName, String)>,
}

impl Answer {
    fn new(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Answer {
        Answer {
            status,
            content_type,
            body,
            page: false,
            fields: Vec::new(),
        }
    }

    fn text(status: StatusCode, body: &str) -> Answer {
        Answer::new(
            status,
            "text/plain; charset=utf-8",
            body.as_bytes().to_vec(),
        )
    }

    fn json(status: StatusCode, value: &serde_json::Value) -> Answer {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        Answer::new(status, "application/json", body)
    }

    fn with(mut self, name: HeaderName, value: impl Into<String>) -> Answer {
        self.fields.push((name, value.into()));
        self
    }

    /// 405, with what the path takes.
    fn method_not_allowed(allow: &'static str) -> Answer {
        Answer::text(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("this path takes {allow}\n"),
        )
        .with(header::ALLOW, allow)
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let method = req.method.clone();
        let path = req.uri.path().to_string();
        let head = method == Method::HEAD;
        let answer = match (&method, path.as_str()) {
            (&Method::PUT, "/config") | (&Method::POST, "/config/validate") => {
                write::answer(&self.current, session, method == Method::PUT).await
            }
            (_, "/config/validate") => Answer::method_not_allowed("POST"),
            (&Method::DELETE, "/cache") => write::purge(&self.current, session).await,
            (_, "/cache") => Answer::method_not_allowed("DELETE"),
            (&Method::GET | &Method::HEAD, _) => {
                let authorization = req.headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
                self.route(&path, authorization)
            }
            (_, "/config") => Answer::method_not_allowed("GET, HEAD, PUT"),
            _ => Answer::method_not_allowed("GET, HEAD"),
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
        if answer.status == StatusCode::UNAUTHORIZED {
            builder = builder.header(header::WWW_AUTHENTICATE, "Bearer realm=\"pylon-admin\"");
        }
        for (name, value) in answer.fields {
            builder = builder.header(name, value);
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
            "/openapi.yaml" => {
                return Answer::new(
                    StatusCode::OK,
                    "application/yaml; charset=utf-8",
                    OPENAPI.as_bytes().to_vec(),
                )
            }
            // browsers ask for it; there is none, and a 404 would be logged as an error
            "/favicon.ico" => {
                return Answer::new(StatusCode::NO_CONTENT, "image/x-icon", Vec::new())
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
        let address = || {
            rt.admin
                .as_ref()
                .map_or_else(String::new, |a| a.listen.to_string())
        };
        match (path, &rt.shared.metrics) {
            ("/metrics", Some(metrics)) => {
                let config = self.current.status();
                let mut text = prometheus::render(&rt, metrics, &config);
                fleet::View::of(&self.current, address())
                    .write_metrics(&mut text, &config.document.hash);
                Answer::new(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    text.into_bytes(),
                )
            }
            ("/api/status", _) => Answer::new(
                StatusCode::OK,
                "application/json",
                status::render(&rt, &self.current.status(), self.current.source().path()),
            ),
            ("/api/history", _) => Answer::new(
                StatusCode::OK,
                "application/json",
                history::render(rt.shared.history.as_ref(), std::time::SystemTime::now()),
            ),
            ("/api/fleet", _) => Answer::new(
                StatusCode::OK,
                "application/json",
                fleet::View::of(&self.current, address()).render(),
            ),
            ("/config", _) => {
                let document = self.current.document();
                Answer::new(
                    StatusCode::OK,
                    "application/toml; charset=utf-8",
                    document.text.as_bytes().to_vec(),
                )
                .with(header::ETAG, document.etag())
            }
            _ => Answer::text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

fn asset(content_type: &'static str, text: &'static str) -> Answer {
    Answer {
        page: true,
        ..Answer::new(StatusCode::OK, content_type, text.as_bytes().to_vec())
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
