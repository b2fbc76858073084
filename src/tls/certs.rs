//! The certificates of `[[tls.certificates]]`: read, checked and indexed by name at load.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

// pingora::tls re-exports no asn1, cipher or ex_data module; Cargo resolves this and
// pingora's openssl to one crate (0.10), so the types are the same.
use crate::config::MinVersion;
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use pingora::tls::error::ErrorStack;
use pingora::tls::ext;
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::ssl::{SslRef, SslVersion};
use pingora::tls::x509::{X509VerifyResult, X509};
use serde::Deserialize;

use super::error::TlsError;

/// One `[[tls.certificates]]` entry: a PEM certificate chain (leaf first) and its PEM key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSpec {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl MinVersion {
    pub(super) fn ssl_version(self) -> SslVersion {
        match self {
            MinVersion::Tls12 => SslVersion::TLS1_2,
            MinVersion::Tls13 => SslVersion::TLS1_3,
        }
    }
}

/// A certificate chain and key, parsed and checked, ready to hand to a handshake.
pub struct LoadedCertificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    leaf: X509,
    pub(super) intermediates: Vec<X509>,
    key: PKey<Private>,
    /// The DNS names of the leaf's subjectAltName, lowercased, wildcards included.
    names: Vec<String>,
    not_after_unix: i64,
}

impl LoadedCertificate {
    /// The DNS names in the certificate's subjectAltName, lowercased (`*.example.com` for
    /// a wildcard).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// When the certificate expires, in seconds since the Unix epoch.
    pub fn not_after_unix(&self) -> i64 {
        self.not_after_unix
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// Put this chain and key on a connection in the middle of its handshake.
    pub(super) fn use_for(&self, ssl: &mut SslRef) -> Result<(), ErrorStack> {
        ext::ssl_use_certificate(ssl, &self.leaf)?;
        ext::ssl_use_private_key(ssl, &self.key)?;
        for cert in &self.intermediates {
            ext::ssl_add_chain_cert(ssl, cert)?;
        }
        Ok(())
    }

    /// Read and check one entry; `warnings` collects what loads but deserves a look.
    fn load(
        spec: &CertificateSpec,
        now: i64,
        warnings: &mut Vec<String>,
    ) -> Result<Self, TlsError> {
        let cert_pem = read(&spec.cert, "certificate")?;
        let mut chain = X509::stack_from_pem(&cert_pem).map_err(|e| TlsError::BadCertificate {
            path: spec.cert.clone(),
            detail: e.to_string(),
        })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: spec.cert.clone(),
            });
        }
        let leaf = chain.remove(0);
        let intermediates = chain;

        let key_pem = read(&spec.key, "private key")?;
        let key = parse_private_key(&key_pem).map_err(|detail| TlsError::BadKey {
            path: spec.key.clone(),
            detail,
        })?;
        let matches = leaf
            .public_key()
            .map(|public| public.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(TlsError::KeyMismatch {
                key: spec.key.clone(),
                cert: spec.cert.clone(),
            });
        }

        let bad_time = |e: ErrorStack| TlsError::BadCertificate {
            path: spec.cert.clone(),
            detail: format!("unreadable validity dates: {e}"),
        };
        let not_before_unix = unix_time(leaf.not_before()).map_err(bad_time)?;
        let not_after_unix = unix_time(leaf.not_after()).map_err(bad_time)?;
        if now < not_before_unix {
            return Err(TlsError::NotYetValid {
                path: spec.cert.clone(),
                not_before: leaf.not_before().to_string(),
            });
        }
        if now > not_after_unix {
            return Err(TlsError::Expired {
                path: spec.cert.clone(),
                not_after: leaf.not_after().to_string(),
            });
        }
        let days_left = (not_after_unix - now) / SECONDS_PER_DAY;
        if days_left < EXPIRY_WARNING_DAYS {
            let left = match days_left {
                0 => "less than a day".to_string(),
                1 => "1 day".to_string(),
                n => format!("{n} days"),
            };
            warnings.push(format!(
                "{}: the certificate expires on {} (in {left}); renew it",
                spec.cert.display(),
                leaf.not_after()
            ));
        }
        if let Some(first) = intermediates.first() {
            if first.issued(&leaf) != X509VerifyResult::OK {
                warnings.push(format!(
                    "{}: the second certificate in the file did not issue the first; clients \
                     may refuse the chain: put the leaf first, then the certificate that issued it",
                    spec.cert.display()
                ));
            }
        }

        let names = leaf
            .subject_alt_names()
            .map(|sans| {
                sans.iter()
                    .filter_map(|name| name.dnsname())
                    .map(|name| name.trim_end_matches('.').to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default();

        Ok(LoadedCertificate {
            cert_path: spec.cert.clone(),
            key_path: spec.key.clone(),
            leaf,
            intermediates,
            key,
            names,
            not_after_unix,
        })
    }
}

impl fmt::Debug for LoadedCertificate {
    /// Paths, names and expiry; never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCertificate")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("names", &self.names)
            .field("intermediates", &self.intermediates.len())
            .field("not_after_unix", &self.not_after_unix)
            .finish_non_exhaustive()
    }
}

pub(super) fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    crate::config::read_capped(path, crate::config::MAX_SIDE_FILE).map_err(|source| {
        TlsError::Read {
            path: path.to_path_buf(),
            what,
            source,
        }
    })
}

/// Parse an unencrypted PEM private key. Never asks for a passphrase: OpenSSL's default
/// would prompt on the terminal, which hangs or fails obscurely under a service manager.
pub(super) fn parse_private_key(pem: &[u8]) -> Result<PKey<Private>, String> {
    let encrypted = pem.windows(9).any(|w| w == b"ENCRYPTED");
    PKey::private_key_from_pem_callback(pem, |_passphrase| Ok(0)).map_err(|e| {
        if encrypted {
            "the key is encrypted; pylon needs it unencrypted (for example \
             `openssl pkey -in KEY -out KEY.plain`) and readable only by its user"
                .to_string()
        } else if pem.windows(11).any(|w| w == b"-----BEGIN ") {
            format!("expected a \"-----BEGIN PRIVATE KEY-----\" block: {e}")
        } else {
            "expected a \"-----BEGIN PRIVATE KEY-----\" block; the file is not PEM".to_string()
        }
    })
}

/// An ASN.1 time as seconds since the Unix epoch.
pub(super) fn unix_time(t: &Asn1TimeRef) -> Result<i64, ErrorStack> {
    let epoch = Asn1Time::from_unix(0)?;
    let diff = epoch.diff(t)?;
    Ok(i64::from(diff.days) * SECONDS_PER_DAY + i64::from(diff.secs))
}

pub(super) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Every configured certificate and the maps that choose one by server name.
pub struct CertStore {
    /// In configuration order; the first is the default. Never empty.
    certificates: Vec<LoadedCertificate>,
    /// Lowercased DNS name → index of the first certificate that names it.
    exact: HashMap<String, usize>,
    /// The part after `*.` of a wildcard name → index of the first certificate that has it.
    wildcard: HashMap<String, usize>,
}

impl CertStore {
    /// Read, parse and check every certificate; Err names the offending file and says what is
    /// wrong. The warnings (also logged) are about certificates that load but deserve a look.
    pub fn load(specs: &[CertificateSpec]) -> Result<(CertStore, Vec<String>), TlsError> {
        Self::load_at(specs, now_unix())
    }

    pub(super) fn load_at(
        specs: &[CertificateSpec],
        now: i64,
    ) -> Result<(CertStore, Vec<String>), TlsError> {
        if specs.is_empty() {
            return Err(TlsError::NoCertificates);
        }
        let mut warnings = Vec::new();
        let mut certificates = Vec::with_capacity(specs.len());
        for spec in specs {
            certificates.push(LoadedCertificate::load(spec, now, &mut warnings)?);
        }

        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (index, cert) in certificates.iter().enumerate() {
            let mut claimed_earlier = Vec::new();
            let mut usable = 0;
            for name in &cert.names {
                let (map, key) = match name.strip_prefix("*.") {
                    Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => {
                        (&mut wildcard, suffix)
                    }
                    _ if name.is_empty() || name.contains('*') => {
                        warnings.push(format!(
                            "{}: ignoring the name \"{name}\": a wildcard must be a whole \
                             leftmost label, like \"*.example.com\"",
                            cert.cert_path.display()
                        ));
                        continue;
                    }
                    _ => (&mut exact, name.as_str()),
                };
                usable += 1;
                match map.entry(key.to_string()) {
                    Entry::Vacant(slot) => {
                        slot.insert(index);
                    }
                    Entry::Occupied(slot) if *slot.get() != index => {
                        claimed_earlier.push(format!("\"{name}\""));
                    }
                    Entry::Occupied(_) => {}
                }
            }
            if usable == 0 {
                let role = if index == 0 {
                    "it is served only as the default, to clients that ask for no known name"
                } else {
                    "it is never served"
                };
                warnings.push(format!(
                    "{}: the certificate has no DNS name in its subjectAltName, so no server \
                     name selects it; {role}",
                    cert.cert_path.display()
                ));
            }
            if !claimed_earlier.is_empty() {
                warnings.push(format!(
                    "{}: names already served by a certificate listed earlier, which wins: {}",
                    cert.cert_path.display(),
                    claimed_earlier.join(", ")
                ));
            }
        }

        for warning in &warnings {
            log::warn!("{warning}");
        }
        let store = CertStore {
            certificates,
            exact,
            wildcard,
        };
        Ok((store, warnings))
    }

    /// The certificate for a requested server name (None: the client sent no SNI): an exact
    /// name, then a wildcard for the name's parent domain, then the default (the first).
    pub fn select(&self, server_name: Option<&str>) -> &LoadedCertificate {
        let index = server_name.and_then(|name| self.find(name)).unwrap_or(0);
        &self.certificates[index]
    }

    /// Every certificate, in configuration order (the first is the default).
    pub fn certificates(&self) -> &[LoadedCertificate] {
        &self.certificates
    }

    fn find(&self, name: &str) -> Option<usize> {
        let name = name.strip_suffix('.').unwrap_or(name);
        // Clients send lowercase names almost always; copy only when they do not.
        let name: Cow<str> = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        };
        if let Some(&index) = self.exact.get(name.as_ref()) {
            return Some(index);
        }
        // A wildcard stands for exactly one whole label.
        let (label, parent) = name.split_once('.')?;
        if label.is_empty() {
            return None;
        }
        self.wildcard.get(parent).copied()
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("certificates", &self.certificates)
            .finish_non_exhaustive()
    }
}

/// A certificate that expires within this many days loads with a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

pub(super) const SECONDS_PER_DAY: i64 = 86_400;
