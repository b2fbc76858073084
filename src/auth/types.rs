//! The vocabulary every authenticator shares: who a request was admitted as, why one was
//! refused, the clock tokens are judged by, and the located error a section compiles to.

use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{HeaderName, HeaderValue};

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// 401 with this `WWW-Authenticate` value: credentials missing or invalid.
    Unauthorized { challenge: HeaderValue },
    /// 403 with this `WWW-Authenticate` value: valid, but without the required scopes.
    Forbidden { challenge: HeaderValue },
    /// 503: the authenticator cannot decide (no JWKS yet, introspection endpoint down).
    Unavailable,
}

/// A method's verdict before the authenticator adds its name and challenges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denial {
    Unauthorized,
    Forbidden,
    Unavailable,
}

/// A method's success before the authenticator adds its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Admitted {
    pub subject: String,
    pub forward: Vec<(HeaderName, HeaderValue)>,
}

/// The time, in Unix milliseconds: the system's, or a fixed one that tests move by hand
/// (the RFC examples expired in 2011).
#[derive(Debug, Clone, Default)]
pub struct Clock {
    fixed: Option<Arc<AtomicU64>>,
}

impl Clock {
    pub fn system() -> Clock {
        Clock { fixed: None }
    }

    /// A clock that stands at `since_epoch` until [`Clock::advance`] moves it.
    pub fn fixed(since_epoch: Duration) -> Clock {
        Clock {
            fixed: Some(Arc::new(AtomicU64::new(since_epoch.as_millis() as u64))),
        }
    }

    /// Move a fixed clock forward; no effect on the system clock.
    pub fn advance(&self, by: Duration) {
        if let Some(now) = &self.fixed {
            now.fetch_add(by.as_millis() as u64, Ordering::Relaxed);
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        match &self.fixed {
            Some(now) => now.load(Ordering::Relaxed),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }
}

/// A configuration value the auth module refuses: where it is, its key path
/// (`auth.users.secret_env`) and why. The message never holds a secret.
pub use crate::config::LocatedError as AuthError;

/// Reads an environment variable; injected so tests need not touch the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// Who a request was admitted as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The rate-limit key: the subject namespaced by the authenticator, like "users:alice".
    pub key: String,
    /// JWT `sub`; introspection `sub`, `username` or `client_id`; the API key's consumer.
    pub subject: String,
    /// The name of the authenticator that admitted the request.
    pub authenticator: Arc<str>,
    /// Headers to send upstream (`forward_claims`); remove the client's copies of
    /// [`crate::auth::Authenticator::forwarded_header_names`] before adding these.
    pub forward: Vec<(HeaderName, HeaderValue)>,
}
