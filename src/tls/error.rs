//! A certificate or key that cannot be served, or TLS settings that could not be built.

use std::path::{Path, PathBuf};

// pingora::tls re-exports no asn1, cipher or ex_data module; Cargo resolves this and
// pingora's openssl to one crate (0.10), so the types are the same.
use pingora::tls::error::ErrorStack;

/// A certificate or key that cannot be served, or TLS settings that could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read the {what} file: {source}", path = path.display())]
    Read {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error(
        "{path}: holds no PEM certificate: expected a \"-----BEGIN CERTIFICATE-----\" block, \
         the leaf first and then its intermediates",
        path = path.display()
    )]
    NoCertificate { path: PathBuf },
    #[error("{path}: a PEM certificate in it cannot be parsed: {detail}", path = path.display())]
    BadCertificate { path: PathBuf, detail: String },
    #[error("{path}: not a usable PEM private key: {detail}", path = path.display())]
    BadKey { path: PathBuf, detail: String },
    #[error(
        "{key}: the private key does not belong to the certificate in {cert}",
        key = key.display(),
        cert = cert.display()
    )]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("{path}: the certificate expired on {not_after}", path = path.display())]
    Expired { path: PathBuf, not_after: String },
    #[error("{path}: the certificate is not valid before {not_before}", path = path.display())]
    NotYetValid { path: PathBuf, not_before: String },
    #[error("no TLS certificate configured: [[tls.certificates]] needs at least one entry")]
    NoCertificates,
    #[error("cannot set up TLS: {0}")]
    Setup(String),
    #[error("cannot make a TLS session ticket key: {0}")]
    TicketKey(#[source] ErrorStack),
}

impl TlsError {
    /// The file the error is about: the key for a mismatch, the certificate otherwise, and
    /// an empty path for the errors that concern no file (no certificates; OpenSSL setup;
    /// ticket keys).
    pub fn path(&self) -> &Path {
        match self {
            TlsError::Read { path, .. }
            | TlsError::NoCertificate { path }
            | TlsError::BadCertificate { path, .. }
            | TlsError::BadKey { path, .. }
            | TlsError::Expired { path, .. }
            | TlsError::NotYetValid { path, .. } => path,
            TlsError::KeyMismatch { key, .. } => key,
            TlsError::NoCertificates | TlsError::Setup(_) | TlsError::TicketKey(_) => Path::new(""),
        }
    }
}
