//! Settings of the process rather than of a route: the admin listener and its token, the
//! client side's timeouts, the TLS listeners, and what only an upgrade can change.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;
use toml::Spanned;

use crate::config::{
    AdminSection, LocatedError, MetricsSection, MinVersion, ServerSection, TlsSection,
    TopTimeoutsSection,
};
use crate::tls::{CertStore, CertificateSpec};

use super::{DEFAULT_CLIENT_HEADER, DEFAULT_CLIENT_IDLE, DEFAULT_LINGERING};

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .field("write_token", &self.write_token.as_ref().map(|_| "(set)"))
            .finish()
    }
}

impl AdminSettings {
    /// `[admin]`, or its older name `[metrics]` (listen only); both is an error.
    pub fn from_config(
        admin: Option<&Spanned<AdminSection>>,
        metrics: Option<&Spanned<MetricsSection>>,
    ) -> Result<Option<AdminSettings>, LocatedError> {
        match (admin, metrics) {
            (Some(_), Some(old)) => Err(LocatedError::new(
                old.span(),
                "metrics",
                "set here and as [admin]: [metrics] is the older name of [admin]; keep [admin] and its listen",
            )),
            (None, Some(old)) => Ok(Some(AdminSettings {
                listen: old.get_ref().listen.0,
                token: None,
                write_token: None,
            })),
            (None, None) => Ok(None),
            (Some(admin), None) => {
                let section = admin.get_ref();
                let token = match &section.token_env {
                    None => None,
                    Some(var) => Some(token_from_env(var, "admin.token_env")?),
                };
                let write_token = match &section.write_token_env {
                    None => None,
                    Some(var) => Some(token_from_env(var, "admin.write_token_env")?),
                };
                if let (Some(read), Some(write), Some(var)) =
                    (&token, &write_token, &section.write_token_env)
                {
                    if bool::from(read.ct_eq(write)) {
                        return Err(LocatedError::new(
                            var.span(),
                            "admin.write_token_env",
                            "the write token is the read token: give writes a token of their own, so that who reads the status cannot change the config",
                        ));
                    }
                }
                let settings = AdminSettings {
                    listen: section.listen.0,
                    token,
                    write_token,
                };
                if settings.write_token.is_some() && !settings.listen.ip().is_loopback() {
                    log::warn!(
                        "admin listener on {} is not on loopback: it has no TLS, so writes (PUT /config) are taken only from loopback clients",
                        settings.listen
                    );
                }
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

    /// Whether a request may read the data endpoints (the write token reads too).
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        bearer_is(authorization, token) || self.admits_write(authorization)
    }

    /// Whether writes are on: a write token is set.
    pub fn writes_on(&self) -> bool {
        self.write_token.is_some()
    }

    /// Whether a request carries the write token.
    pub fn admits_write(&self, authorization: Option<&[u8]>) -> bool {
        self.write_token
            .as_ref()
            .is_some_and(|token| bearer_is(authorization, token))
    }
}

/// Whether `authorization` is `Bearer <token>`, compared in constant time.
fn bearer_is(authorization: Option<&[u8]>, token: &[u8]) -> bool {
    authorization
        .and_then(|a| a.strip_prefix(b"Bearer "))
        .is_some_and(|given| bool::from(given.ct_eq(token)))
}

fn token_missing_off_loopback(s: &AdminSettings) -> bool {
    s.token.is_none() && !s.listen.ip().is_loopback()
}

fn token_from_env(var: &Spanned<String>, key: &str) -> Result<Arc<[u8]>, LocatedError> {
    let name = var.get_ref();
    let refuse = |message: String| LocatedError::new(var.span(), key, message);
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

/// After a refusal, the lingering read of the client's unread input ends once nothing has
/// arrived for this long (nginx's `lingering_timeout`).
pub const LINGERING_QUIET: Duration = Duration::from_secs(5);

/// The client side's timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// The whole request head must arrive within this.
    pub header: Duration,
    /// A keep-alive connection waits this long for its next request.
    pub idle: Duration,
    /// A refused request's unread body is read and dropped for at most this long.
    pub lingering: Duration,
}

impl ClientTimeouts {
    /// `[timeouts]`'s client side, and `server.keepalive_timeout`, the older name of
    /// `timeouts.client_idle`.
    pub(super) fn from_config(
        timeouts: &TopTimeoutsSection,
        server: &ServerSection,
    ) -> Result<ClientTimeouts, LocatedError> {
        let idle = match (timeouts.client_idle, &server.keepalive_timeout) {
            (Some(_), Some(old)) => {
                return Err(LocatedError::new(
                    old.span(),
                    "server.keepalive_timeout",
                    "set both here and as timeouts.client_idle: keep timeouts.client_idle, the newer name",
                ))
            }
            (Some(t), None) => t.0,
            (None, Some(old)) => old.get_ref().0,
            (None, None) => DEFAULT_CLIENT_IDLE,
        };
        Ok(ClientTimeouts {
            header: timeouts
                .client_header
                .map_or(DEFAULT_CLIENT_HEADER, |t| t.0),
            idle,
            lingering: timeouts.lingering.map_or(DEFAULT_LINGERING, |t| t.0),
        })
    }
}

/// The settings bound into the listeners and the process when it starts: a reload
/// cannot change them (an upgrade can), so it compares them and says which changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Pinned {
    pub listen: Vec<SocketAddr>,
    pub tls_listen: Vec<SocketAddr>,
    pub tls_min_version: Option<MinVersion>,
    pub tls_h2: Option<bool>,
    pub admin_listen: Option<SocketAddr>,
    pub threads: usize,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub error_log: Option<String>,
    pub h2c: bool,
    pub upstream_keepalive: usize,
    pub access_log: (String, crate::config::LogFormat),
}

impl Pinned {
    /// The config keys whose values differ in `new`.
    pub fn differences(&self, new: &Pinned) -> Vec<&'static str> {
        [
            ("server.listen", self.listen != new.listen),
            ("tls.listen", self.tls_listen != new.tls_listen),
            (
                "tls.min_version",
                self.tls_min_version != new.tls_min_version,
            ),
            ("tls.h2", self.tls_h2 != new.tls_h2),
            ("admin.listen", self.admin_listen != new.admin_listen),
            ("server.threads", self.threads != new.threads),
            ("server.pid_file", self.pid_file != new.pid_file),
            ("server.upgrade_sock", self.upgrade_sock != new.upgrade_sock),
            ("server.error_log", self.error_log != new.error_log),
            ("server.h2c", self.h2c != new.h2c),
            (
                "server.upstream_keepalive",
                self.upstream_keepalive != new.upstream_keepalive,
            ),
            ("access_log", self.access_log != new.access_log),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }
}

/// TLS listeners: where, which certificates, which versions and protocols.
#[derive(Debug)]
pub struct TlsListeners {
    pub listen: Vec<SocketAddr>,
    pub store: Arc<CertStore>,
    pub min_version: MinVersion,
    pub h2: bool,
}

/// Load and check the certificates of `[tls]`; an error points at the `cert` or `key`
/// entry of the file that is wrong.
pub(super) fn compile_tls(tls: Option<&TlsSection>) -> Result<Option<TlsListeners>, LocatedError> {
    let Some(tls) = tls else {
        return Ok(None);
    };
    let entries = tls.certificates.get_ref();
    let specs: Vec<CertificateSpec> = entries
        .iter()
        .map(|c| CertificateSpec {
            cert: c.cert.get_ref().into(),
            key: c.key.get_ref().into(),
        })
        .collect();
    let (store, _warnings) = CertStore::load(&specs).map_err(|e| {
        let bad = e.path();
        let located = entries.iter().enumerate().find_map(|(i, c)| {
            if std::path::Path::new(c.key.get_ref()) == bad
                && !matches!(e, crate::tls::TlsError::KeyMismatch { .. })
            {
                Some((c.key.span(), format!("tls.certificates[{i}].key")))
            } else if std::path::Path::new(c.cert.get_ref()) == bad
                || std::path::Path::new(c.key.get_ref()) == bad
            {
                Some((c.cert.span(), format!("tls.certificates[{i}].cert")))
            } else {
                None
            }
        });
        let (span, key) =
            located.unwrap_or((tls.certificates.span(), "tls.certificates".to_string()));
        LocatedError::new(span, key, e.to_string())
    })?;
    Ok(Some(TlsListeners {
        listen: tls.listen.iter().map(|l| l.0).collect(),
        store: Arc::new(store),
        min_version: tls.min_version,
        h2: tls.h2,
    }))
}

/// `[admin]` compiled.
#[derive(Clone)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// The bearer token that guards the data endpoints; `None`: open (to whoever can
    /// reach the listener).
    token: Option<Arc<[u8]>>,
    /// The bearer token that writes the policy document; `None`: writes are off.
    write_token: Option<Arc<[u8]>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(token: Option<&str>) -> AdminSettings {
        AdminSettings {
            listen: "127.0.0.1:9180".parse().unwrap(),
            token: token.map(|t| Arc::from(t.as_bytes())),
            write_token: None,
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
    fn the_write_token_writes_and_reads_and_the_read_token_only_reads() {
        let mut s = settings(Some("0123456789abcdef"));
        assert!(!s.writes_on() && !s.admits_write(Some(b"Bearer 0123456789abcdef")));
        s.write_token = Some(Arc::from(&b"fedcba9876543210"[..]));
        assert!(s.writes_on());
        assert!(s.admits_write(Some(b"Bearer fedcba9876543210")));
        assert!(s.admits(Some(b"Bearer fedcba9876543210")));
        assert!(!s.admits_write(Some(b"Bearer 0123456789abcdef")));
        assert!(!s.admits_write(None));
    }
}
