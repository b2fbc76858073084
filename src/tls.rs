//! TLS termination: the certificates from `[[tls.certificates]]`, checked at load, and the
//! settings of a Pingora TLS listener that picks one of them per handshake by SNI.
//!
//! [`CertStore::load`] reads every certificate chain and key, refuses what cannot work (an
//! unreadable or non-PEM file, a key that does not belong to its certificate, a certificate
//! outside its validity period) with a message that names the file, and returns warnings for
//! what works but deserves a look (expiry within [`EXPIRY_WARNING_DAYS`] days, a name that an
//! earlier certificate already claims). All parsing happens there: a handshake only looks the
//! server name up in two prebuilt maps and hands the chosen, already parsed chain to OpenSSL.
//!
//! [`listener_settings`] builds the [`TlsSettings`] for one listener: TLS 1.2 and 1.3 (or 1.3
//! only), ECDHE with AES-GCM or ChaCha20-Poly1305 for TLS 1.2, ALPN h2 and http/1.1 (or
//! http/1.1 only), session resumption by tickets, and the certificate choice as a Pingora
//! [`TlsAccept`] callback. Tests run real handshakes through the same configuration function
//! and Pingora's accept path.
//!
//! [`TicketKeys`] seal and open the session tickets of every listener of the process with
//! the gateway's own keys, rotated every [`TICKET_KEY_ROTATION`]: Pingora builds one OpenSSL
//! context per listener, and OpenSSL's default (a random key per context, never rotated)
//! would make a ticket resume only where it was issued, and with one key for the life of the
//! process. The server creates them once per process and its background task rotates them.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_long, c_uchar};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use foreign_types::ForeignTypeRef;
// pingora::tls re-exports no asn1, cipher or ex_data module; Cargo resolves this and
// pingora's openssl to one crate (0.10), so the types are the same.
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtxRef;
use openssl::ex_data::Index;
use openssl::rand::rand_bytes;
use openssl_sys as ffi;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::server::ShutdownWatch;
use pingora::tls::error::ErrorStack;
use pingora::tls::ext;
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::ssl::{
    select_next_proto, AlpnError, NameType, SslAcceptorBuilder, SslContext, SslContextBuilder,
    SslMode, SslOptions, SslRef, SslSessionCacheMode, SslVersion,
};
use pingora::tls::x509::{X509VerifyResult, X509};
use serde::de::{self, Deserializer};
use serde::Deserialize;

/// A certificate that expires within this many days loads with a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// TLS 1.2 cipher suites: forward secret key exchange (ECDHE) with an AEAD cipher only.
/// Mozilla's intermediate list without the DHE suites.
const TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/// TLS 1.3 cipher suites (all three are AEAD; listed so the choice does not depend on the
/// OpenSSL build's defaults).
const TLS13_CIPHERSUITES: &str =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

/// ALPN protocols in wire format, in the server's order of preference.
const ALPN_H2_H1: &[u8] = b"\x02h2\x08http/1.1";
const ALPN_H1: &[u8] = b"\x08http/1.1";

/// Ties TLS 1.2 session ids and TLS 1.3 stateful tickets to this server.
const SESSION_ID_CONTEXT: &[u8] = b"pylon";

const SECONDS_PER_DAY: i64 = 86_400;

// ---------------------------------------------------------------------------------------------
// Configuration values
// ---------------------------------------------------------------------------------------------

/// One `[[tls.certificates]]` entry: a PEM certificate chain (leaf first) and its PEM key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSpec {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `min_version`: the oldest TLS version a client may use. TLS 1.3 is always the newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinVersion {
    #[default]
    Tls12,
    Tls13,
}

impl MinVersion {
    fn ssl_version(self) -> SslVersion {
        match self {
            MinVersion::Tls12 => SslVersion::TLS1_2,
            MinVersion::Tls13 => SslVersion::TLS1_3,
        }
    }
}

impl FromStr for MinVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "1.2" => Ok(MinVersion::Tls12),
            "1.3" => Ok(MinVersion::Tls13),
            _ => Err(format!(
                "unsupported TLS min_version \"{s}\": write \"1.2\" or \"1.3\""
            )),
        }
    }
}

impl fmt::Display for MinVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MinVersion::Tls12 => "1.2",
            MinVersion::Tls13 => "1.3",
        })
    }
}

impl<'de> Deserialize<'de> for MinVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = MinVersion;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"1.2\" or \"1.3\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MinVersion, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// A certificate chain and key, parsed and checked, ready to hand to a handshake.
pub struct LoadedCertificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    leaf: X509,
    intermediates: Vec<X509>,
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
    fn use_for(&self, ssl: &mut SslRef) -> Result<(), ErrorStack> {
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

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
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
fn parse_private_key(pem: &[u8]) -> Result<PKey<Private>, String> {
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
fn unix_time(t: &Asn1TimeRef) -> Result<i64, ErrorStack> {
    let epoch = Asn1Time::from_unix(0)?;
    let diff = epoch.diff(t)?;
    Ok(i64::from(diff.days) * SECONDS_PER_DAY + i64::from(diff.secs))
}

fn now_unix() -> i64 {
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

    fn load_at(specs: &[CertificateSpec], now: i64) -> Result<(CertStore, Vec<String>), TlsError> {
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

// ---------------------------------------------------------------------------------------------
// Session tickets
// ---------------------------------------------------------------------------------------------

/// How long a ticket key seals new tickets; it then opens tickets for one more period, so
/// a ticket resumes for at least this long and never after twice this long. Also the
/// lifetime that tickets and cached sessions announce.
pub const TICKET_KEY_ROTATION: Duration = Duration::from_secs(12 * 60 * 60);

/// After a failed rotation (no randomness), the current key serves on until the next try.
const TICKET_KEY_RETRY: Duration = Duration::from_secs(60);

/// The sizes OpenSSL's ticket format fixes: a 16-byte key name (TLSEXT_KEYNAME_LENGTH),
/// AES-256-CBC for the contents (32-byte key, 16-byte IV, EVP_MAX_IV_LENGTH) and
/// HMAC-SHA256 over them (a 32-byte key, as OpenSSL's own keys have).
const TICKET_KEY_NAME_LEN: usize = 16;
const TICKET_IV_LEN: usize = 16;
const TICKET_AES_KEY_LEN: usize = 32;
const TICKET_HMAC_KEY_LEN: usize = 32;

/// One ticket key: the name that tickets carry in the clear, and the two secrets.
struct TicketKey {
    name: [u8; TICKET_KEY_NAME_LEN],
    aes: [u8; TICKET_AES_KEY_LEN],
    hmac: [u8; TICKET_HMAC_KEY_LEN],
}

impl TicketKey {
    fn generate() -> Result<TicketKey, ErrorStack> {
        let mut key = TicketKey {
            name: [0; TICKET_KEY_NAME_LEN],
            aes: [0; TICKET_AES_KEY_LEN],
            hmac: [0; TICKET_HMAC_KEY_LEN],
        };
        rand_bytes(&mut key.name)?;
        rand_bytes(&mut key.aes)?;
        rand_bytes(&mut key.hmac)?;
        Ok(key)
    }
}

/// The keys in force: `current` seals, both open. Replaced whole on each rotation.
struct KeyRing {
    current: Arc<TicketKey>,
    previous: Option<Arc<TicketKey>>,
    /// When `current` started sealing.
    since: Instant,
}

/// Whether the key that sealed a ticket is still the current one: a ticket from the
/// previous key resumes, and the client gets a fresh ticket from the current key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyAge {
    Current,
    Previous,
}

impl KeyRing {
    fn find(&self, name: &[u8]) -> Option<(&TicketKey, KeyAge)> {
        if name == self.current.name {
            return Some((&self.current, KeyAge::Current));
        }
        self.previous
            .as_deref()
            .filter(|key| name == key.name)
            .map(|key| (key, KeyAge::Previous))
    }
}

/// What [`TicketKeys::rotate_if_due`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The current key has sealed for less than a period.
    NotDue,
    /// A new key seals; the one before it still opens tickets for one period.
    Rotated,
    /// More than two periods had passed (the process was stopped or starved): both keys
    /// were dropped, so every outstanding ticket needs a full handshake.
    Replaced,
}

/// The keys that seal and open TLS session tickets (TLS 1.2 tickets and TLS 1.3 stateless
/// tickets), the gateway's own rather than OpenSSL's per-`SSL_CTX` random key: one set for
/// the whole process, so that a ticket from one listener resumes on every other, and one
/// that outlives a configuration reload (create it once, pass the same `Arc` to every
/// [`listener_settings`] call). The background task rotates them
/// ([`TicketKeys::rotate_on_schedule`]) so that a stolen key opens at most two periods of
/// recorded sessions.
///
/// Handshakes read the keys without a lock (one `ArcSwap` load); only rotation writes.
pub struct TicketKeys {
    period: Duration,
    ring: ArcSwap<KeyRing>,
    /// See [`TicketKeys::writer`].
    rotating: Mutex<()>,
}

impl TicketKeys {
    /// A fresh random key that seals for `period` from now.
    pub fn new(period: Duration) -> Result<TicketKeys, TlsError> {
        let ring = KeyRing {
            current: Arc::new(TicketKey::generate().map_err(TlsError::TicketKey)?),
            previous: None,
            since: Instant::now(),
        };
        Ok(TicketKeys {
            period,
            ring: ArcSwap::from_pointee(ring),
            rotating: Mutex::new(()),
        })
    }

    /// How long a key seals before it is rotated out.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// When the current key is due to be replaced.
    pub fn next_rotation(&self) -> Instant {
        self.ring.load().since + self.period
    }

    /// Seal with a new key from now on; the current one opens tickets until the next
    /// rotation, and the previous one no longer does.
    pub fn rotate(&self) -> Result<(), TlsError> {
        let _writer = self.writer();
        self.replace(&self.ring.load(), Instant::now(), true)
    }

    /// Rotate if the current key has sealed for a period or more at `now`; the server's
    /// background task calls this on the schedule that [`TicketKeys::next_rotation`] gives.
    pub fn rotate_if_due(&self, now: Instant) -> Result<Rotation, TlsError> {
        let _writer = self.writer();
        let ring = self.ring.load();
        let age = now.saturating_duration_since(ring.since);
        if age < self.period {
            return Ok(Rotation::NotDue);
        }
        // A key that has sealed for two periods must not open anything for a third.
        let keep_previous = age < self.period.saturating_mul(2);
        self.replace(&ring, now, keep_previous)?;
        Ok(if keep_previous {
            Rotation::Rotated
        } else {
            Rotation::Replaced
        })
    }

    /// Taken by every rotation, so that two at once cannot both demote the same key (and
    /// drop the one that should still open tickets). It guards no data: a panic while it
    /// was held leaves nothing half-done.
    fn writer(&self) -> MutexGuard<'_, ()> {
        self.rotating.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn replace(&self, old: &KeyRing, now: Instant, keep_previous: bool) -> Result<(), TlsError> {
        let fresh = TicketKey::generate().map_err(TlsError::TicketKey)?;
        self.ring.store(Arc::new(KeyRing {
            current: Arc::new(fresh),
            previous: keep_previous.then(|| Arc::clone(&old.current)),
            since: now,
        }));
        Ok(())
    }

    /// Rotate whenever a period has passed, until shutdown. A failed rotation is logged and
    /// retried a minute later; the current key serves on meanwhile.
    pub async fn rotate_on_schedule(&self, mut shutdown: ShutdownWatch) {
        let mut wake = self.next_rotation();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                    continue;
                }
            }
            wake = match self.rotate_if_due(Instant::now()) {
                Ok(Rotation::NotDue) => self.next_rotation(),
                Ok(Rotation::Rotated) => {
                    log::info!(
                        "TLS ticket keys: rotated; the previous key opens tickets for a period"
                    );
                    self.next_rotation()
                }
                Ok(Rotation::Replaced) => {
                    log::warn!(
                        "TLS ticket keys: rotation was more than a period late; both keys \
                         replaced, outstanding tickets need a full handshake"
                    );
                    self.next_rotation()
                }
                Err(e) => {
                    log::error!("TLS ticket keys: {e}; the current key serves on");
                    Instant::now() + TICKET_KEY_RETRY
                }
            };
        }
    }

    /// Make `ctx` seal and open its tickets with these keys, and give its sessions the
    /// lifetime of one period.
    fn install(self: &Arc<Self>, ctx: &mut SslContextBuilder) -> Result<(), ErrorStack> {
        ctx.set_ex_data(ticket_keys_index()?, Arc::clone(self));
        let lifetime = c_long::try_from(self.period.as_secs()).unwrap_or(c_long::MAX);
        // SAFETY: `ctx` is a live SSL_CTX that we hold exclusively while building it; the
        // callback matches OpenSSL 3's prototype and reads the keys it needs from the
        // context's ex_data, set just above and dropped with the context.
        let installed = unsafe {
            SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx.as_ptr(), Some(ticket_key_callback))
        };
        // SAFETY: a plain setter on the live SSL_CTX above; it returns the previous timeout.
        unsafe { SSL_CTX_set_timeout(ctx.as_ptr(), lifetime) };
        if installed != 1 {
            return Err(ErrorStack::get());
        }
        Ok(())
    }
}

impl fmt::Debug for TicketKeys {
    /// The schedule; never the keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ring = self.ring.load();
        f.debug_struct("TicketKeys")
            .field("period", &self.period)
            .field("has_previous", &ring.previous.is_some())
            .finish_non_exhaustive()
    }
}

/// The ex_data slot of an `SSL_CTX` that holds its [`TicketKeys`]. OpenSSL hands out such
/// slots process-wide, so one is taken once and kept for every context.
fn ticket_keys_index() -> Result<Index<SslContext, Arc<TicketKeys>>, ErrorStack> {
    static INDEX: OnceLock<Result<Index<SslContext, Arc<TicketKeys>>, ErrorStack>> =
        OnceLock::new();
    INDEX.get_or_init(SslContext::new_ex_index).clone()
}

// Not bound by openssl-sys 0.9; all three are in OpenSSL 3, which pingora's openssl
// feature builds in (vendored).
extern "C" {
    fn SSL_CTX_set_tlsext_ticket_key_evp_cb(
        ctx: *mut ffi::SSL_CTX,
        cb: Option<TicketKeyCallback>,
    ) -> c_int;
    fn SSL_CTX_set_timeout(ctx: *mut ffi::SSL_CTX, seconds: c_long) -> c_long;
    fn OSSL_PARAM_construct_utf8_string(
        key: *const c_char,
        buf: *mut c_char,
        bsize: usize,
    ) -> ffi::OSSL_PARAM;
}

type TicketKeyCallback = unsafe extern "C" fn(
    ssl: *mut ffi::SSL,
    key_name: *mut c_uchar,
    iv: *mut c_uchar,
    cipher: *mut ffi::EVP_CIPHER_CTX,
    mac: *mut ffi::EVP_MAC_CTX,
    enc: c_int,
) -> c_int;

/// OpenSSL's ticket key callback. Sealing (`enc` 1): write the current key's name and a
/// random IV, set up the cipher and the MAC, return 1. Opening (`enc` 0): find the key the
/// ticket names; 0 when none (a full handshake follows), 1 for the current key, 2 for the
/// previous one (the client then gets a new ticket). -1 on an error, which fails the
/// handshake.
unsafe extern "C" fn ticket_key_callback(
    ssl: *mut ffi::SSL,
    key_name: *mut c_uchar,
    iv: *mut c_uchar,
    cipher: *mut ffi::EVP_CIPHER_CTX,
    mac: *mut ffi::EVP_MAC_CTX,
    enc: c_int,
) -> c_int {
    if mac.is_null() {
        // An HMAC context of the deprecated kind only: not one this callback can key.
        return -1;
    }
    // SAFETY: OpenSSL calls this during a handshake on `ssl`, live for the call, with a
    // fresh cipher context that it owns and that nothing else touches meanwhile.
    let (ssl, cipher) = unsafe { (SslRef::from_ptr(ssl), CipherCtxRef::from_ptr_mut(cipher)) };
    // The callback is OpenSSL's session context's, the connection's own context here:
    // neither Pingora nor we ever switch a connection to another (SSL_set_SSL_CTX).
    let Some(keys) = ticket_keys_index()
        .ok()
        .and_then(|index| ssl.ssl_context().ex_data(index))
    else {
        return -1;
    };
    let ring = keys.ring.load();
    let (key, sealed_or_opened) = if enc == 1 {
        // SAFETY: when sealing, `key_name` is a 16-byte and `iv` an EVP_MAX_IV_LENGTH
        // (16-byte) output buffer of OpenSSL's, both for us to fill.
        let (name, iv) = unsafe {
            (
                std::slice::from_raw_parts_mut(key_name, TICKET_KEY_NAME_LEN),
                std::slice::from_raw_parts_mut(iv, TICKET_IV_LEN),
            )
        };
        let current: &TicketKey = &ring.current;
        (current, seal_ticket(current, name, iv, cipher).map(|()| 1))
    } else {
        // SAFETY: when opening, both point into the client's ticket, which OpenSSL has
        // checked holds at least the key name and EVP_MAX_IV_LENGTH bytes; only read.
        let (name, iv) = unsafe {
            (
                std::slice::from_raw_parts(key_name.cast_const(), TICKET_KEY_NAME_LEN),
                std::slice::from_raw_parts(iv.cast_const(), TICKET_IV_LEN),
            )
        };
        let Some((key, age)) = ring.find(name) else {
            // Sealed by a key rotated out, by another process or garbage: a full handshake.
            return 0;
        };
        let opened = cipher
            .decrypt_init(Some(Cipher::aes_256_cbc()), Some(&key.aes), Some(iv))
            .map(|()| match age {
                KeyAge::Current => 1,
                KeyAge::Previous => 2,
            });
        (key, opened)
    };
    // SAFETY: `mac` is the non-null HMAC context that OpenSSL passed for this call.
    let keyed = unsafe { init_ticket_mac(mac, &key.hmac) };
    match (sealed_or_opened, keyed) {
        (Ok(status), Ok(())) => status,
        _ => -1,
    }
}

/// Name the ticket after `key`, draw its IV and set the cipher up to seal it.
fn seal_ticket(
    key: &TicketKey,
    name: &mut [u8],
    iv: &mut [u8],
    cipher: &mut CipherCtxRef,
) -> Result<(), ErrorStack> {
    name.copy_from_slice(&key.name);
    rand_bytes(iv)?;
    cipher.encrypt_init(Some(Cipher::aes_256_cbc()), Some(&key.aes), Some(iv))
}

/// Key OpenSSL's HMAC context for a ticket: SHA-256, as OpenSSL's own tickets use.
///
/// # Safety
/// `mac` must be a live EVP_MAC_CTX for HMAC that nothing else uses during the call: the
/// one OpenSSL hands to the ticket key callback.
unsafe fn init_ticket_mac(mac: *mut ffi::EVP_MAC_CTX, key: &[u8]) -> Result<(), ErrorStack> {
    // SAFETY: `mac` as the caller promises. The parameters point to static C strings that
    // OpenSSL only reads, and EVP_MAC_init copies the key before it returns.
    let ok = unsafe {
        let params = [
            OSSL_PARAM_construct_utf8_string(c"digest".as_ptr(), c"SHA256".as_ptr().cast_mut(), 0),
            ffi::OSSL_PARAM_construct_end(),
        ];
        ffi::EVP_MAC_init(mac, key.as_ptr(), key.len(), params.as_ptr())
    };
    if ok == 1 {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
}

// ---------------------------------------------------------------------------------------------
// Listener settings
// ---------------------------------------------------------------------------------------------

/// Pingora's per-handshake hook: picks the certificate for the client's server name from
/// the certificates in force (a reload swaps them).
struct SniResolver {
    certs: Arc<ArcSwapOption<CertStore>>,
}

#[async_trait::async_trait]
impl TlsAccept for SniResolver {
    /// Runs when OpenSSL needs a certificate, after it has read the client's hello (and SNI).
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let Some(store) = self.certs.load_full() else {
            log::error!("TLS: no certificates are loaded");
            return;
        };
        let cert = store.select(ssl.servername(NameType::HOST_NAME));
        if let Err(e) = cert.use_for(ssl) {
            // The handshake then fails for want of a certificate; the client sees an alert.
            log::error!(
                "TLS: cannot use the certificate {}: {e}",
                cert.cert_path.display()
            );
        }
    }
}

/// The settings for one TLS listener (Pingora takes them by value, so call this once per
/// listen address): versions, ciphers, ALPN, sessions, and the certificate chosen by SNI.
/// Every listener of the process gets the same `ticket_keys`, so that a session made on
/// one resumes on all (Pingora builds one OpenSSL context per listener).
pub fn listener_settings(
    certs: Arc<ArcSwapOption<CertStore>>,
    min: MinVersion,
    h2: bool,
    ticket_keys: Arc<TicketKeys>,
) -> Result<TlsSettings, TlsError> {
    let mut settings = TlsSettings::with_callbacks(Box::new(SniResolver { certs }))
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    configure_acceptor(&mut settings, min, h2, &ticket_keys)
        .map_err(|e| TlsError::Setup(format!("OpenSSL refused the settings: {e}")))?;
    Ok(settings)
}

/// Everything about the acceptor except the certificate, on top of Mozilla's intermediate
/// profile (which is what [`TlsSettings::with_callbacks`] starts from).
fn configure_acceptor(
    builder: &mut SslAcceptorBuilder,
    min: MinVersion,
    h2: bool,
    ticket_keys: &Arc<TicketKeys>,
) -> Result<(), ErrorStack> {
    builder.set_min_proto_version(Some(min.ssl_version()))?;
    builder.set_max_proto_version(Some(SslVersion::TLS1_3))?;
    builder.set_cipher_list(TLS12_CIPHERS)?;
    builder.set_ciphersuites(TLS13_CIPHERSUITES)?;
    // Our order of ciphers, not the client's (every one listed is strong; the first are the
    // cheapest with AES hardware), except that a client that puts ChaCha20 first, typically
    // one without AES instructions, gets it.
    builder.set_options(
        SslOptions::NO_RENEGOTIATION
            | SslOptions::CIPHER_SERVER_PREFERENCE
            | SslOptions::PRIORITIZE_CHACHA,
    );
    // Resumption rests on tickets (TLS 1.2 tickets, TLS 1.3 stateless tickets) sealed with
    // the process's rotated keys. The server-side cache cannot carry it: it belongs to one
    // listener's context, and OpenSSL drops a session from it whenever a connection ends
    // without the server's close_notify, which is how Pingora ends most of them (the client
    // closes first, an idle keep-alive times out). It stays for TLS 1.2 clients that send no
    // ticket extension, within one listener.
    builder.clear_options(SslOptions::NO_TICKET);
    ticket_keys.install(builder)?;
    builder.set_session_cache_mode(SslSessionCacheMode::SERVER);
    // A session carries this context and resumes only where it matches: the same on every
    // listener, so the tickets of one resume on all.
    builder.set_session_id_context(SESSION_ID_CONTEXT)?;
    // Clients that offer neither protocol (or no ALPN) still connect and speak HTTP/1.1.
    let offered: &'static [u8] = if h2 { ALPN_H2_H1 } else { ALPN_H1 };
    builder.set_alpn_select_callback(move |_, client| {
        select_next_proto(offered, client).ok_or(AlpnError::NOACK)
    });
    // Client streams have no read buffer under OpenSSL (see `server::client_listener`):
    // reading ahead, OpenSSL takes whole records in one read instead of a 5-byte header and
    // then the rest, into its own buffer, which it frees once drained (RELEASE_BUFFERS: the
    // acceptor's default too, set here so as not to rest on it), so an idle connection
    // holds no TLS buffer either.
    builder.set_read_ahead(true);
    builder.set_mode(SslMode::RELEASE_BUFFERS);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use openssl::rsa::Rsa;
    use openssl::symm::Cipher;
    use pingora::protocols::l4::stream::Stream;
    use pingora::protocols::tls::server::handshake_with_callback;
    use pingora::protocols::{Ssl as _, ALPN};
    use pingora::tls::pkey::PKey;
    use pingora::tls::ssl::{
        Ssl, SslAcceptor, SslConnector, SslConnectorBuilder, SslMethod, SslSession,
    };
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    use std::pin::Pin;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const DAY: i64 = SECONDS_PER_DAY;

    // -----------------------------------------------------------------------------------------
    // A test PKI: root CA → intermediate → leaves, written to a temporary directory
    // -----------------------------------------------------------------------------------------

    struct Pki {
        dir: tempfile::TempDir,
        root: rcgen::Certificate,
        intermediate: rcgen::Certificate,
        intermediate_key: KeyPair,
    }

    fn ca_params(name: &str) -> CertificateParams {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params
    }

    /// Valid from `from` to `until`, both in seconds from now.
    fn valid(params: &mut CertificateParams, from: i64, until: i64) {
        let now = now_unix();
        let at = |offset: i64| {
            let unix = u64::try_from(now + offset).unwrap();
            rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(unix)
        };
        params.not_before = at(from);
        params.not_after = at(until);
    }

    impl Pki {
        fn new() -> Pki {
            let root_key = KeyPair::generate().unwrap();
            let root = ca_params("Pylon Test Root").self_signed(&root_key).unwrap();
            let intermediate_key = KeyPair::generate().unwrap();
            let intermediate = ca_params("Pylon Test Intermediate")
                .signed_by(&intermediate_key, &root, &root_key)
                .unwrap();
            Pki {
                dir: tempfile::tempdir().unwrap(),
                root,
                intermediate,
                intermediate_key,
            }
        }

        fn write(&self, file: &str, contents: impl AsRef<[u8]>) -> PathBuf {
            let path = self.dir.path().join(file);
            std::fs::write(&path, contents).unwrap();
            path
        }

        /// A leaf for `names` with `key`, issued by the intermediate and changed by `adjust`;
        /// the chain (leaf, intermediate) goes to `{stem}.pem` and the key to `{stem}.key`.
        fn leaf_full(
            &self,
            stem: &str,
            names: &[&str],
            key: KeyPair,
            adjust: impl FnOnce(&mut CertificateParams),
        ) -> CertificateSpec {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let mut params = CertificateParams::new(names.clone()).unwrap();
            let cn = names.first().cloned().unwrap_or_else(|| "no name".into());
            params.distinguished_name.push(DnType::CommonName, cn);
            valid(&mut params, -DAY, 90 * DAY);
            adjust(&mut params);
            let cert = params
                .signed_by(&key, &self.intermediate, &self.intermediate_key)
                .unwrap();
            let chain = format!("{}{}", cert.pem(), self.intermediate.pem());
            CertificateSpec {
                cert: self.write(&format!("{stem}.pem"), chain),
                key: self.write(&format!("{stem}.key"), key.serialize_pem()),
            }
        }

        fn leaf_with(
            &self,
            stem: &str,
            names: &[&str],
            adjust: impl FnOnce(&mut CertificateParams),
        ) -> CertificateSpec {
            self.leaf_full(stem, names, KeyPair::generate().unwrap(), adjust)
        }

        /// An ECDSA P-256 leaf valid from yesterday for 90 days.
        fn leaf(&self, stem: &str, names: &[&str]) -> CertificateSpec {
            self.leaf_with(stem, names, |_| {})
        }

        /// An RSA 2048 leaf (rcgen signs with RSA keys but does not make them).
        fn rsa_leaf(&self, stem: &str, names: &[&str]) -> CertificateSpec {
            let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
            let pem = String::from_utf8(rsa.private_key_to_pem_pkcs8().unwrap()).unwrap();
            self.leaf_full(stem, names, KeyPair::from_pem(&pem).unwrap(), |_| {})
        }

        /// A client that trusts only the root, so it verifies only if the server sends the
        /// intermediate.
        fn client(&self) -> SslConnectorBuilder {
            let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
            let root = X509::from_pem(self.root.pem().as_bytes()).unwrap();
            builder.cert_store_mut().add_cert(root).unwrap();
            builder
        }
    }

    fn load(specs: &[CertificateSpec]) -> (CertStore, Vec<String>) {
        CertStore::load(specs).unwrap()
    }

    fn load_err(specs: &[CertificateSpec]) -> TlsError {
        CertStore::load(specs).err().unwrap()
    }

    /// The error names `path`, in its message and in `path()`.
    fn assert_names(err: &TlsError, path: &Path) {
        let message = err.to_string();
        assert!(
            message.contains(&path.display().to_string()),
            "{message:?} should name {}",
            path.display()
        );
        assert_eq!(err.path(), path, "{message}");
    }

    // -----------------------------------------------------------------------------------------
    // Loading
    // -----------------------------------------------------------------------------------------

    #[test]
    fn load_reads_names_chain_and_expiry() {
        let pki = Pki::new();
        let expires = now_unix() + 90 * DAY;
        let spec = pki.leaf_with("api", &["API.example.com", "*.Internal.example.com"], |p| {
            valid(p, -DAY, 90 * DAY)
        });
        let (store, warnings) = load(std::slice::from_ref(&spec));
        assert!(warnings.is_empty(), "{warnings:?}");
        let cert = store.select(None);
        assert_eq!(cert.names(), ["api.example.com", "*.internal.example.com"]);
        assert!((cert.not_after_unix() - expires).abs() <= 1);
        assert_eq!(cert.cert_path(), spec.cert);
        assert_eq!(cert.key_path(), spec.key);
        assert_eq!(cert.intermediates.len(), 1);
        assert_eq!(store.certificates().len(), 1);
        let debug = format!("{store:?}");
        assert!(debug.contains("api.example.com") && !debug.contains("PRIVATE"));
    }

    #[test]
    fn missing_certificate_file_is_refused_with_its_path() {
        let pki = Pki::new();
        let mut spec = pki.leaf("a", &["a.test"]);
        spec.cert = pki.dir.path().join("missing.pem");
        let err = load_err(std::slice::from_ref(&spec));
        assert!(
            matches!(
                err,
                TlsError::Read {
                    what: "certificate",
                    ..
                }
            ),
            "{err}"
        );
        assert_names(&err, &spec.cert);
    }

    #[test]
    fn missing_key_file_is_refused_with_its_path() {
        let pki = Pki::new();
        let mut spec = pki.leaf("a", &["a.test"]);
        spec.key = pki.dir.path().join("missing.key");
        let err = load_err(std::slice::from_ref(&spec));
        assert!(
            matches!(
                err,
                TlsError::Read {
                    what: "private key",
                    ..
                }
            ),
            "{err}"
        );
        assert_names(&err, &spec.key);
    }

    #[test]
    fn certificate_file_that_is_not_pem_is_refused_with_its_path() {
        let pki = Pki::new();
        let good = pki.leaf("a", &["a.test"]);
        let der = X509::stack_from_pem(&std::fs::read(&good.cert).unwrap()).unwrap()[0]
            .to_der()
            .unwrap();
        for (file, contents) in [
            ("text.pem", b"just some text\n".to_vec()),
            ("der.pem", der),
            ("empty.pem", Vec::new()),
            // Swapped files: the key where the certificate belongs.
            ("key-only.pem", std::fs::read(&good.key).unwrap()),
        ] {
            let spec = CertificateSpec {
                cert: pki.write(file, contents),
                key: good.key.clone(),
            };
            let err = load_err(std::slice::from_ref(&spec));
            assert!(
                matches!(err, TlsError::NoCertificate { .. }),
                "{file}: {err}"
            );
            assert_names(&err, &spec.cert);
        }
    }

    #[test]
    fn certificate_with_a_damaged_body_is_refused_with_its_path() {
        let pki = Pki::new();
        let good = pki.leaf("a", &["a.test"]);
        let damaged = "-----BEGIN CERTIFICATE-----\nMIIBnotbase64!!\n-----END CERTIFICATE-----\n";
        let spec = CertificateSpec {
            cert: pki.write("damaged.pem", damaged),
            key: good.key,
        };
        let err = load_err(std::slice::from_ref(&spec));
        assert!(
            matches!(
                err,
                TlsError::BadCertificate { .. } | TlsError::NoCertificate { .. }
            ),
            "{err}"
        );
        assert_names(&err, &spec.cert);
    }

    #[test]
    fn key_file_that_is_not_a_pem_key_is_refused_with_its_path() {
        let pki = Pki::new();
        let good = pki.leaf("a", &["a.test"]);
        for (file, contents) in [
            ("text.key", b"not a key\n".to_vec()),
            ("empty.key", Vec::new()),
            // Swapped files: the certificate where the key belongs.
            ("cert.key", std::fs::read(&good.cert).unwrap()),
        ] {
            let spec = CertificateSpec {
                cert: good.cert.clone(),
                key: pki.write(file, contents),
            };
            let err = load_err(std::slice::from_ref(&spec));
            assert!(matches!(err, TlsError::BadKey { .. }), "{file}: {err}");
            assert_names(&err, &spec.key);
        }
    }

    #[test]
    fn encrypted_key_is_refused_without_asking_for_a_passphrase() {
        let pki = Pki::new();
        let good = pki.leaf("a", &["a.test"]);
        let key = PKey::private_key_from_pem(&std::fs::read(&good.key).unwrap()).unwrap();
        let encrypted = key
            .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), b"secret")
            .unwrap();
        let spec = CertificateSpec {
            cert: good.cert,
            key: pki.write("encrypted.key", encrypted),
        };
        let err = load_err(std::slice::from_ref(&spec));
        assert!(matches!(err, TlsError::BadKey { .. }), "{err}");
        assert!(err.to_string().contains("encrypted"), "{err}");
        assert_names(&err, &spec.key);
    }

    #[test]
    fn key_of_another_certificate_is_refused_naming_both_files() {
        let pki = Pki::new();
        let a = pki.leaf("a", &["a.test"]);
        let b = pki.leaf("b", &["b.test"]);
        let spec = CertificateSpec {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let err = load_err(&[spec]);
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        assert_names(&err, &b.key);
        assert!(
            err.to_string().contains(&a.cert.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_bad_entry_after_good_ones_is_still_refused() {
        let pki = Pki::new();
        let good = pki.leaf("good", &["good.test"]);
        let expired = pki.leaf_with("old", &["old.test"], |p| valid(p, -90 * DAY, -DAY));
        let err = load_err(&[good, expired.clone()]);
        assert_names(&err, &expired.cert);
    }

    #[test]
    fn expired_certificate_is_refused_with_its_path() {
        let pki = Pki::new();
        let spec = pki.leaf_with("old", &["old.test"], |p| valid(p, -90 * DAY, -DAY));
        let err = load_err(std::slice::from_ref(&spec));
        assert!(matches!(err, TlsError::Expired { .. }), "{err}");
        assert!(err.to_string().contains("expired on"), "{err}");
        assert_names(&err, &spec.cert);
    }

    #[test]
    fn certificate_not_yet_valid_is_refused_with_its_path() {
        let pki = Pki::new();
        let spec = pki.leaf_with("future", &["future.test"], |p| valid(p, DAY, 90 * DAY));
        let err = load_err(std::slice::from_ref(&spec));
        assert!(matches!(err, TlsError::NotYetValid { .. }), "{err}");
        assert_names(&err, &spec.cert);
    }

    #[test]
    fn certificate_expiring_in_five_days_loads_with_a_warning() {
        let pki = Pki::new();
        let soon = pki.leaf_with("soon", &["soon.test"], |p| {
            valid(p, -60 * DAY, 5 * DAY + 3600)
        });
        let later = pki.leaf_with("later", &["later.test"], |p| valid(p, -DAY, 15 * DAY));
        let (store, warnings) = load(&[later, soon.clone()]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains(&soon.cert.display().to_string()),
            "{warnings:?}"
        );
        assert!(warnings[0].contains("in 5 days"), "{warnings:?}");
        assert_eq!(store.select(Some("soon.test")).cert_path(), soon.cert);
    }

    #[test]
    fn validity_is_checked_to_the_second() {
        let pki = Pki::new();
        let spec = pki.leaf("a", &["a.test"]);
        let specs = std::slice::from_ref(&spec);
        let (store, _) = load(specs);
        let not_after = store.select(None).not_after_unix();
        let not_before = not_after - 91 * DAY;

        let at = |now: i64| CertStore::load_at(specs, now);
        let warnings = |now: i64| at(now).unwrap().1;
        assert!(warnings(not_after - EXPIRY_WARNING_DAYS * DAY).is_empty());
        let last = warnings(not_after - EXPIRY_WARNING_DAYS * DAY + 1);
        assert!(
            last.len() == 1 && last[0].contains("in 13 days"),
            "{last:?}"
        );
        let last = warnings(not_after - DAY - 1);
        assert!(last[0].contains("in 1 day)"), "{last:?}");
        let last = warnings(not_after);
        assert!(last[0].contains("in less than a day"), "{last:?}");
        assert!(matches!(at(not_after + 1), Err(TlsError::Expired { .. })));
        assert!(at(not_before).is_ok());
        assert!(matches!(
            at(not_before - 1),
            Err(TlsError::NotYetValid { .. })
        ));
    }

    #[test]
    fn no_certificates_is_refused() {
        let err = load_err(&[]);
        assert!(matches!(err, TlsError::NoCertificates), "{err}");
        assert_eq!(err.path(), Path::new(""));
    }

    #[test]
    fn chain_in_the_wrong_order_loads_with_a_warning() {
        let pki = Pki::new();
        let spec = pki.leaf("a", &["a.test"]);
        // The leaf followed by the root, which did not issue it.
        let leaf = X509::stack_from_pem(&std::fs::read(&spec.cert).unwrap()).unwrap();
        let chain = [leaf[0].to_pem().unwrap(), pki.root.pem().into_bytes()].concat();
        std::fs::write(&spec.cert, chain).unwrap();
        let (_, warnings) = load(std::slice::from_ref(&spec));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("did not issue"), "{warnings:?}");
    }

    #[test]
    fn certificates_without_usable_names_load_with_warnings() {
        let pki = Pki::new();
        let default = pki.leaf_with("ip-only", &[], |p| {
            p.subject_alt_names = vec![rcgen::SanType::IpAddress([127, 0, 0, 1].into())];
        });
        let partial = pki.leaf("partial", &["f*.example.com"]);
        let (store, warnings) = load(&[default.clone(), partial.clone()]);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].contains("ip-only.pem") && warnings[0].contains("default"));
        assert!(warnings[1].contains("partial.pem") && warnings[1].contains("f*.example.com"));
        assert!(warnings[2].contains("partial.pem") && warnings[2].contains("never served"));
        assert_eq!(
            store.select(Some("foo.example.com")).cert_path(),
            default.cert
        );
    }

    // -----------------------------------------------------------------------------------------
    // Selection
    // -----------------------------------------------------------------------------------------

    #[test]
    fn select_prefers_exact_names_then_wildcards_then_the_default() {
        let pki = Pki::new();
        let default = pki.leaf("default", &["default.test"]);
        let wild = pki.leaf("wild", &["*.example.com"]);
        let api = pki.leaf("api", &["api.example.com", "example.com"]);
        let (store, warnings) = load(&[default.clone(), wild.clone(), api.clone()]);
        assert!(warnings.is_empty(), "{warnings:?}");
        let chosen = |name: Option<&str>| store.select(name).cert_path().to_path_buf();

        assert_eq!(chosen(Some("default.test")), default.cert);
        // Exact beats a wildcard listed earlier.
        assert_eq!(chosen(Some("api.example.com")), api.cert);
        assert_eq!(chosen(Some("example.com")), api.cert);
        assert_eq!(chosen(Some("www.example.com")), wild.cert);
        // Names compare case-insensitively; a trailing dot is ignored.
        assert_eq!(chosen(Some("API.Example.COM")), api.cert);
        assert_eq!(chosen(Some("WWW.EXAMPLE.COM")), wild.cert);
        assert_eq!(chosen(Some("api.example.com.")), api.cert);
        // A wildcard stands for exactly one label.
        assert_eq!(chosen(Some("a.b.example.com")), default.cert);
        assert_eq!(chosen(Some(".example.com")), default.cert);
        // Unknown, empty and missing names get the default.
        assert_eq!(chosen(Some("unknown.test")), default.cert);
        assert_eq!(chosen(Some("")), default.cert);
        assert_eq!(chosen(None), default.cert);
    }

    #[test]
    fn the_first_certificate_listed_wins_a_shared_name() {
        let pki = Pki::new();
        let first = pki.leaf("first", &["shared.test", "*.shared.test"]);
        let second = pki.leaf("second", &["shared.test", "*.shared.test", "own.test"]);
        let (store, warnings) = load(&[first.clone(), second.clone()]);
        assert_eq!(store.select(Some("shared.test")).cert_path(), first.cert);
        assert_eq!(store.select(Some("x.shared.test")).cert_path(), first.cert);
        assert_eq!(store.select(Some("own.test")).cert_path(), second.cert);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("second.pem"), "{warnings:?}");
        assert!(warnings[0].contains("\"shared.test\", \"*.shared.test\""));
    }

    // -----------------------------------------------------------------------------------------
    // Configuration values
    // -----------------------------------------------------------------------------------------

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Section {
        #[serde(default)]
        min_version: MinVersion,
        certificates: Vec<CertificateSpec>,
    }

    #[test]
    fn min_version_and_certificates_deserialise_and_check_themselves() {
        let section: Section = toml::from_str(
            "min_version = \"1.3\"\n[[certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\n",
        )
        .unwrap();
        assert_eq!(section.min_version, MinVersion::Tls13);
        assert_eq!(section.certificates[0].cert, Path::new("a.pem"));
        let section: Section = toml::from_str("certificates = []").unwrap();
        assert_eq!(section.min_version, MinVersion::Tls12);
        assert_eq!("1.2".parse::<MinVersion>(), Ok(MinVersion::Tls12));
        assert_eq!(MinVersion::Tls13.to_string(), "1.3");

        let err = toml::from_str::<Section>("min_version = \"1.1\"\ncertificates = []")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"1.1\"") && err.contains("\"1.2\" or \"1.3\""),
            "{err}"
        );
        let err = toml::from_str::<Section>("min_version = 1.2\ncertificates = []")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"1.2\" or \"1.3\""), "{err}");
        let err = toml::from_str::<Section>(
            "[[certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\nchain = \"c.pem\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("chain"), "{err}");
    }

    // -----------------------------------------------------------------------------------------
    // Handshakes: the shared acceptor configuration, Pingora's accept path with the SNI
    // callback, and an OpenSSL client over loopback TCP
    // -----------------------------------------------------------------------------------------

    fn acceptor(min: MinVersion, h2: bool) -> SslAcceptor {
        acceptor_with_keys(min, h2, &ticket_keys())
    }

    /// One listener's acceptor; listeners of one process share `keys`.
    fn acceptor_with_keys(min: MinVersion, h2: bool, keys: &Arc<TicketKeys>) -> SslAcceptor {
        // TlsSettings::with_callbacks starts from the same profile.
        let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        configure_acceptor(&mut builder, min, h2, keys).unwrap();
        builder.build()
    }

    fn ticket_keys() -> Arc<TicketKeys> {
        Arc::new(TicketKeys::new(TICKET_KEY_ROTATION).unwrap())
    }

    /// A client connection for `sni` (None: send no server name). The chain is always
    /// verified against the test root; the host name only when `check_host`.
    fn client_ssl(connector: &SslConnector, sni: Option<&str>, check_host: bool) -> Ssl {
        let mut config = connector.configure().unwrap();
        config.set_use_server_name_indication(sni.is_some());
        config.set_verify_hostname(check_host);
        config.into_ssl(sni.unwrap_or("unused")).unwrap()
    }

    /// What the client saw of a completed handshake.
    struct Seen {
        names: Vec<String>,
        version: &'static str,
        cipher: String,
        alpn: Option<Vec<u8>>,
        reused: bool,
        session: Option<SslSession>,
        /// The protocol Pingora's HTTP layer reads from the server side.
        server_alpn: Option<ALPN>,
    }

    impl fmt::Debug for Seen {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Seen")
                .field("names", &self.names)
                .field("version", &self.version)
                .field("cipher", &self.cipher)
                .field("alpn", &self.alpn)
                .field("reused", &self.reused)
                .finish_non_exhaustive()
        }
    }

    /// One connection: Pingora's server handshake (as its listener runs it) against `ssl`.
    /// The server then sends "ok" and closes, which also delivers TLS 1.3 session tickets.
    /// Err carries both sides' errors.
    async fn handshake(
        acceptor: &SslAcceptor,
        store: &Arc<CertStore>,
        ssl: Ssl,
    ) -> Result<Seen, String> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let resolver = SniResolver {
            certs: Arc::new(ArcSwapOption::new(Some(store.clone()))),
        };
        let server = async {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut stream = handshake_with_callback(acceptor, Stream::from(tcp), &resolver)
                .await
                .map_err(|e| format!("server: {e}"))?;
            let alpn = stream.selected_alpn_proto();
            stream.write_all(b"ok").await.unwrap();
            AsyncWriteExt::shutdown(&mut stream).await.unwrap();
            Ok::<_, String>(alpn)
        };
        let client = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let mut stream = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
            Pin::new(&mut stream)
                .connect()
                .await
                .map_err(|e| format!("client: {e}"))?;
            let mut body = Vec::new();
            stream.read_to_end(&mut body).await.unwrap();
            assert_eq!(body, b"ok");
            // Close properly: OpenSSL marks the session of a connection freed without
            // close_notify as not resumable. The server may be gone already.
            let _ = AsyncWriteExt::shutdown(&mut stream).await;
            let ssl = stream.ssl();
            let cert = ssl.peer_certificate().unwrap();
            let names = cert
                .subject_alt_names()
                .map(|sans| {
                    sans.iter()
                        .filter_map(|n| n.dnsname().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            Ok::<_, String>(Seen {
                names,
                version: ssl.version_str(),
                cipher: ssl.current_cipher().unwrap().name().to_string(),
                alpn: ssl.selected_alpn_protocol().map(<[u8]>::to_vec),
                reused: ssl.session_reused(),
                session: ssl.session().map(|s| s.to_owned()),
                server_alpn: None,
            })
        };
        let (client, server) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(client, server)
        })
        .await
        .expect("the handshake hung");
        match (client, server) {
            (Ok(mut seen), Ok(server_alpn)) => {
                seen.server_alpn = server_alpn;
                Ok(seen)
            }
            (client, server) => Err(format!(
                "{}; {}",
                client.err().unwrap_or_default(),
                server.err().unwrap_or_default()
            )),
        }
    }

    #[tokio::test]
    async fn handshake_serves_the_certificate_for_each_server_name() {
        let pki = Pki::new();
        let default = pki.leaf("default", &["default.test"]);
        let api = pki.leaf("api", &["api.example.com"]);
        let wild = pki.rsa_leaf("wild", &["*.example.com"]);
        let store = Arc::new(load(&[default, api, wild]).0);
        let acceptor = acceptor(MinVersion::Tls12, true);
        let connector = pki.client().build();

        for (sni, check_host, expected) in [
            (Some("api.example.com"), true, "api.example.com"),
            (Some("www.example.com"), true, "*.example.com"),
            (Some("WWW.Example.com"), true, "*.example.com"),
            (Some("default.test"), true, "default.test"),
            (Some("unknown.test"), false, "default.test"),
            (None, false, "default.test"),
        ] {
            // The client trusts only the root: verification also proves that the
            // intermediate was sent.
            let ssl = client_ssl(&connector, sni, check_host);
            let seen = handshake(&acceptor, &store, ssl).await.unwrap();
            assert_eq!(seen.names, [expected], "{sni:?}");
            assert_eq!(seen.version, "TLSv1.3", "{sni:?}");
        }
    }

    #[tokio::test]
    async fn tls11_client_is_refused() {
        let pki = Pki::new();
        let store = Arc::new(load(&[pki.leaf("a", &["a.test"])]).0);
        let acceptor = acceptor(MinVersion::Tls12, true);
        // A client that can still speak TLS 1.1 (OpenSSL 3 needs security level 0 for it).
        let old_client = |max: SslVersion| {
            let mut builder = pki.client();
            builder.set_security_level(0);
            builder.set_cipher_list("DEFAULT:@SECLEVEL=0").unwrap();
            builder
                .set_min_proto_version(Some(SslVersion::TLS1_1))
                .unwrap();
            builder.set_max_proto_version(Some(max)).unwrap();
            client_ssl(&builder.build(), Some("a.test"), true)
        };

        let err = handshake(&acceptor, &store, old_client(SslVersion::TLS1_1))
            .await
            .unwrap_err();
        assert!(err.contains("server: "), "{err}");
        assert!(err.contains("unsupported protocol"), "{err}");
        // The same client allowed TLS 1.2 gets in: the refusal was the version.
        let seen = handshake(&acceptor, &store, old_client(SslVersion::TLS1_2))
            .await
            .unwrap();
        assert_eq!(seen.version, "TLSv1.2");
    }

    #[tokio::test]
    async fn min_version_1_3_refuses_a_tls12_client() {
        let pki = Pki::new();
        let store = Arc::new(load(&[pki.leaf("a", &["a.test"])]).0);
        let tls12_client = || {
            let mut builder = pki.client();
            builder
                .set_max_proto_version(Some(SslVersion::TLS1_2))
                .unwrap();
            client_ssl(&builder.build(), Some("a.test"), true)
        };

        let only13 = acceptor(MinVersion::Tls13, true);
        let err = handshake(&only13, &store, tls12_client())
            .await
            .unwrap_err();
        assert!(err.contains("server: "), "{err}");
        let seen = handshake(
            &only13,
            &store,
            client_ssl(&pki.client().build(), Some("a.test"), true),
        )
        .await
        .unwrap();
        assert_eq!(seen.version, "TLSv1.3");

        let from12 = acceptor(MinVersion::Tls12, true);
        let seen = handshake(&from12, &store, tls12_client()).await.unwrap();
        assert_eq!(seen.version, "TLSv1.2");
    }

    #[tokio::test]
    async fn tls12_accepts_only_ecdhe_with_aead_ciphers() {
        let pki = Pki::new();
        let ecdsa = pki.leaf("ecdsa", &["ecdsa.test"]);
        let rsa = pki.rsa_leaf("rsa", &["rsa.test"]);
        let store = Arc::new(load(&[ecdsa, rsa]).0);
        let acceptor = acceptor(MinVersion::Tls12, true);
        let client = |sni: &str, ciphers: &str| {
            let mut builder = pki.client();
            builder
                .set_max_proto_version(Some(SslVersion::TLS1_2))
                .unwrap();
            builder.set_cipher_list(ciphers).unwrap();
            client_ssl(&builder.build(), Some(sni), true)
        };

        for (sni, cipher) in [
            ("ecdsa.test", "ECDHE-ECDSA-AES128-GCM-SHA256"),
            ("ecdsa.test", "ECDHE-ECDSA-AES256-GCM-SHA384"),
            ("ecdsa.test", "ECDHE-ECDSA-CHACHA20-POLY1305"),
            ("rsa.test", "ECDHE-RSA-AES128-GCM-SHA256"),
            ("rsa.test", "ECDHE-RSA-CHACHA20-POLY1305"),
        ] {
            let seen = handshake(&acceptor, &store, client(sni, cipher))
                .await
                .unwrap();
            assert_eq!(seen.cipher, cipher);
            assert_eq!(seen.names, [sni]);
        }
        for (sni, cipher) in [
            ("ecdsa.test", "ECDHE-ECDSA-AES128-SHA"), // CBC
            ("ecdsa.test", "ECDHE-ECDSA-AES256-SHA384"),
            ("rsa.test", "ECDHE-RSA-AES128-SHA256"),
            ("rsa.test", "DHE-RSA-AES128-GCM-SHA256"), // no ECDHE
            ("rsa.test", "AES128-GCM-SHA256"),         // RSA key exchange
        ] {
            let err = handshake(&acceptor, &store, client(sni, cipher))
                .await
                .unwrap_err();
            assert!(err.contains("server: "), "{cipher}: {err}");
        }
    }

    #[tokio::test]
    async fn the_server_cipher_order_wins_unless_the_client_leads_with_chacha() {
        let pki = Pki::new();
        let store = Arc::new(load(&[pki.leaf("a", &["a.test"])]).0);
        let acceptor = acceptor(MinVersion::Tls12, true);
        let tls12 = |ciphers: &str| {
            let mut builder = pki.client();
            builder
                .set_max_proto_version(Some(SslVersion::TLS1_2))
                .unwrap();
            builder.set_cipher_list(ciphers).unwrap();
            client_ssl(&builder.build(), Some("a.test"), true)
        };
        let tls13 = |suites: &str| {
            let mut builder = pki.client();
            builder
                .set_min_proto_version(Some(SslVersion::TLS1_3))
                .unwrap();
            builder.set_ciphersuites(suites).unwrap();
            client_ssl(&builder.build(), Some("a.test"), true)
        };
        for (ssl, expected) in [
            (
                tls12(
                    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:\
                       ECDHE-ECDSA-AES128-GCM-SHA256",
                ),
                "ECDHE-ECDSA-AES128-GCM-SHA256",
            ),
            (
                tls12("ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256"),
                "ECDHE-ECDSA-CHACHA20-POLY1305",
            ),
            (
                tls13("TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"),
                "TLS_AES_128_GCM_SHA256",
            ),
            (
                tls13("TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"),
                "TLS_CHACHA20_POLY1305_SHA256",
            ),
        ] {
            let seen = handshake(&acceptor, &store, ssl).await.unwrap();
            assert_eq!(seen.cipher, expected);
        }
    }

    #[tokio::test]
    async fn alpn_negotiates_h2_only_when_enabled() {
        let pki = Pki::new();
        let store = Arc::new(load(&[pki.leaf("a", &["a.test"])]).0);
        let client = |protos: Option<&[u8]>| {
            let mut builder = pki.client();
            if let Some(protos) = protos {
                builder.set_alpn_protos(protos).unwrap();
            }
            client_ssl(&builder.build(), Some("a.test"), true)
        };
        let both: &[u8] = b"\x08http/1.1\x02h2";
        let h1: &[u8] = b"\x08http/1.1";
        let h2: &[u8] = b"\x02h2";

        let with_h2 = acceptor(MinVersion::Tls12, true);
        let without_h2 = acceptor(MinVersion::Tls12, false);
        for (acceptor, offered, expected, pingora) in [
            // The server's preference wins over the client's order.
            (&with_h2, Some(both), Some(&b"h2"[..]), Some(ALPN::H2)),
            (&with_h2, Some(h1), Some(&b"http/1.1"[..]), Some(ALPN::H1)),
            (&with_h2, None, None, None),
            (
                &without_h2,
                Some(both),
                Some(&b"http/1.1"[..]),
                Some(ALPN::H1),
            ),
            // No common protocol: no ALPN, but the connection goes on.
            (&without_h2, Some(h2), None, None),
        ] {
            let seen = handshake(acceptor, &store, client(offered)).await.unwrap();
            assert_eq!(seen.alpn.as_deref(), expected, "{offered:?}");
            assert_eq!(seen.server_alpn, pingora, "{offered:?}");
        }
    }

    /// A client for `version` only; `tickets: false` makes it offer no ticket extension, so
    /// that only a session id can resume it.
    fn session_client(pki: &Pki, version: SslVersion, tickets: bool) -> SslConnector {
        let mut builder = pki.client();
        builder.set_min_proto_version(Some(version)).unwrap();
        builder.set_max_proto_version(Some(version)).unwrap();
        if !tickets {
            builder.set_options(SslOptions::NO_TICKET);
        }
        builder.build()
    }

    /// A handshake for `b.test` that offers `session` (None: a first visit).
    async fn visit(
        acceptor: &SslAcceptor,
        store: &Arc<CertStore>,
        connector: &SslConnector,
        session: Option<&SslSession>,
    ) -> Seen {
        let mut ssl = client_ssl(connector, Some("b.test"), true);
        if let Some(session) = session {
            // SAFETY: every session offered here came from a connection of `connector`.
            unsafe { ssl.set_session(session).unwrap() };
        }
        let seen = handshake(acceptor, store, ssl).await.unwrap();
        assert_eq!(seen.names, ["b.test"]);
        seen
    }

    #[tokio::test]
    async fn tickets_resume_on_every_listener_that_shares_the_keys() {
        let pki = Pki::new();
        let store = Arc::new(load(&[pki.leaf("a", &["a.test"]), pki.leaf("b", &["b.test"])]).0);
        let keys = ticket_keys();
        let first = acceptor_with_keys(MinVersion::Tls12, true, &keys);
        let second = acceptor_with_keys(MinVersion::Tls12, false, &keys);
        // Another process, or OpenSSL's own per-context key: same settings, other keys.
        let stranger = acceptor(MinVersion::Tls12, true);
        for version in [SslVersion::TLS1_2, SslVersion::TLS1_3] {
            let connector = session_client(&pki, version, true);
            let new = visit(&first, &store, &connector, None).await;
            assert!(!new.reused, "{version:?}");
            let session = new.session.unwrap();
            // `second` has its own OpenSSL context and so its own session cache: only a
            // ticket can resume there.
            for (acceptor, resumes) in [(&first, true), (&second, true), (&stranger, false)] {
                let again = visit(acceptor, &store, &connector, Some(&session)).await;
                assert_eq!(again.reused, resumes, "{version:?}");
            }
        }
    }

    #[tokio::test]
    async fn tls12_session_ids_resume_without_tickets() {
        let pki = Pki::new();
        let store = Arc::new(load(&[pki.leaf("a", &["a.test"]), pki.leaf("b", &["b.test"])]).0);
        let acceptor = acceptor(MinVersion::Tls12, true);
        let connector = session_client(&pki, SslVersion::TLS1_2, false);
        let new = visit(&acceptor, &store, &connector, None).await;
        let session = new.session.unwrap();
        assert!(!session.id().is_empty());
        let again = visit(&acceptor, &store, &connector, Some(&session)).await;
        assert!(again.reused);
    }

    #[tokio::test]
    async fn a_ticket_resumes_for_one_rotation_and_not_after_two() {
        let pki = Pki::new();
        let store = Arc::new(load(&[pki.leaf("a", &["a.test"]), pki.leaf("b", &["b.test"])]).0);
        let keys = ticket_keys();
        let acceptor = acceptor_with_keys(MinVersion::Tls12, true, &keys);
        for version in [SslVersion::TLS1_2, SslVersion::TLS1_3] {
            let connector = session_client(&pki, version, true);
            let old = visit(&acceptor, &store, &connector, None)
                .await
                .session
                .unwrap();
            let current = visit(&acceptor, &store, &connector, Some(&old)).await;
            assert!(current.reused, "{version:?}: a ticket from the current key");

            keys.rotate().unwrap();
            let previous = visit(&acceptor, &store, &connector, Some(&old)).await;
            assert!(
                previous.reused,
                "{version:?}: a ticket from the previous key"
            );
            // ... and the client left with a ticket from the new key (it resumes below).
            let renewed = previous.session.unwrap();

            keys.rotate().unwrap();
            let expired = visit(&acceptor, &store, &connector, Some(&old)).await;
            assert!(!expired.reused, "{version:?}: a ticket two rotations old");
            let kept = visit(&acceptor, &store, &connector, Some(&renewed)).await;
            assert!(kept.reused, "{version:?}: the renewed ticket");
        }
    }

    #[test]
    fn rotate_if_due_follows_the_period() {
        let period = Duration::from_secs(3600);
        let keys = TicketKeys::new(period).unwrap();
        let names = |keys: &TicketKeys| {
            let ring = keys.ring.load();
            (ring.current.name, ring.previous.as_ref().map(|k| k.name))
        };
        let (first, none) = names(&keys);
        assert_eq!(none, None);
        let start = keys.ring.load().since;
        assert_eq!(keys.next_rotation(), start + period);

        let just_before = start + period - Duration::from_millis(1);
        assert_eq!(keys.rotate_if_due(just_before).unwrap(), Rotation::NotDue);
        assert_eq!(names(&keys), (first, None));

        let due = start + period;
        assert_eq!(keys.rotate_if_due(due).unwrap(), Rotation::Rotated);
        let (second, previous) = names(&keys);
        assert_ne!(second, first);
        assert_eq!(previous, Some(first));
        assert_eq!(keys.next_rotation(), due + period);
        // Called again at the same moment: not due any more.
        assert_eq!(keys.rotate_if_due(due).unwrap(), Rotation::NotDue);

        // Two periods late: the current key has sealed too long to be kept at all.
        let late = due + 2 * period;
        assert_eq!(keys.rotate_if_due(late).unwrap(), Rotation::Replaced);
        let (third, previous) = names(&keys);
        assert!(third != first && third != second);
        assert_eq!(previous, None);
        assert!(!format!("{keys:?}").contains(&format!("{:?}", keys.ring.load().current.aes)));
    }

    /// `.cargo/config.toml` links the system's OpenSSL instead of the vendored 3.6, which
    /// costs an idle TLS connection 9 KiB more: the library in this binary is the one the
    /// system's `openssl` command reports.
    #[test]
    fn the_system_openssl_is_linked() {
        let out = std::process::Command::new("openssl")
            .arg("version")
            .output()
            .expect("the openssl command (Debian's openssl package) runs");
        let system = String::from_utf8_lossy(&out.stdout);
        let linked = openssl::version::version();
        assert!(
            system.starts_with(linked),
            "linked {linked:?}, the system has {system:?}: was OPENSSL_NO_VENDOR unset?"
        );
    }

    #[test]
    fn listener_settings_apply_the_shared_configuration() {
        let pki = Pki::new();
        let store = Arc::new(ArcSwapOption::from_pointee(
            load(&[pki.leaf("a", &["a.test"])]).0,
        ));
        for (min, expected) in [
            (MinVersion::Tls12, SslVersion::TLS1_2),
            (MinVersion::Tls13, SslVersion::TLS1_3),
        ] {
            let mut settings = listener_settings(store.clone(), min, true, ticket_keys()).unwrap();
            assert_eq!(settings.min_proto_version(), Some(expected));
            assert_eq!(settings.max_proto_version(), Some(SslVersion::TLS1_3));
            assert!(!settings.options().contains(SslOptions::NO_TICKET));
            assert!(settings
                .options()
                .contains(SslOptions::CIPHER_SERVER_PREFERENCE | SslOptions::PRIORITIZE_CHACHA));
            // adding no bit, set_mode answers the mode in force
            assert!(settings
                .set_mode(SslMode::empty())
                .contains(SslMode::RELEASE_BUFFERS));
        }
    }
}
