//! The HTTP clients for JWKS and introspection endpoints, and a capped body reader.
//!
//! reqwest with rustls works from any tokio runtime, so the same client serves Pingora's
//! worker runtimes (unknown `kid`, introspection) and the refresher's. Proxies from the
//! environment are ignored, like the gateway's own upstream connections.

use std::time::Duration;

use reqwest::{redirect, Client, Response};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Clients built on first need, shared by every authenticator of one config.
#[derive(Default)]
pub(crate) struct Clients {
    jwks: Option<Client>,
    introspection: Option<Client>,
}

impl Clients {
    /// JWKS fetches are rare: no idle connections kept, redirects followed (a few).
    pub fn jwks(&mut self) -> Result<Client, String> {
        if let Some(c) = &self.jwks {
            return Ok(c.clone());
        }
        let client = base()
            .pool_max_idle_per_host(0)
            .redirect(redirect::Policy::limited(3))
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        self.jwks = Some(client.clone());
        Ok(client)
    }

    /// Introspection is on the request path: keep connections, follow no redirect (a
    /// redirected POST would lose its body or its credentials).
    pub fn introspection(&mut self) -> Result<Client, String> {
        if let Some(c) = &self.introspection {
            return Ok(c.clone());
        }
        let client = base()
            .pool_idle_timeout(Duration::from_secs(30))
            .redirect(redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        self.introspection = Some(client.clone());
        Ok(client)
    }
}

fn base() -> reqwest::ClientBuilder {
    Client::builder()
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("pylon/", env!("CARGO_PKG_VERSION")))
}

/// The body of a 2xx answer, refused past `limit` bytes. Errors are short phrases for
/// logs; they never hold the request (which may carry a token).
pub(crate) async fn read_success(mut response: Response, limit: usize) -> Result<Vec<u8>, String> {
    let status = response.status();
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(format!("the answer is larger than {limit} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        if body.len() + chunk.len() > limit {
            return Err(format!("the answer is larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A reqwest error without its URL (the caller names the endpoint once).
pub(crate) fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "request failed"
    };
    let e = e.without_url();
    match std::error::Error::source(&e) {
        Some(source) => format!("{kind}: {source}"),
        None => format!("{kind}: {e}"),
    }
}
