//! Session ticket keys shared by every TLS listener of the process, rotated on a schedule.
//!
//! The one unsafe island of the crate's TLS: OpenSSL's ticket key callback, which
//! openssl-sys does not bind, is declared and installed here, and nowhere else.

use std::ffi::{c_char, c_int, c_long, c_uchar};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use foreign_types::ForeignTypeRef;
// pingora::tls re-exports no asn1, cipher or ex_data module; Cargo resolves this and
// pingora's openssl to one crate (0.10), so the types are the same.
use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtxRef;
use openssl::ex_data::Index;
use openssl::rand::rand_bytes;
use openssl_sys as ffi;
use pingora::server::ShutdownWatch;
use pingora::tls::error::ErrorStack;
use pingora::tls::ssl::{SslContext, SslContextBuilder, SslRef};

use super::error::TlsError;
use super::sessions::SessionCache;

/// How long a ticket key seals new tickets; it then opens tickets for one more period, so
/// a ticket resumes for at least this long and never after twice this long. Also the
/// lifetime that tickets and cached sessions announce.
pub const TICKET_KEY_ROTATION: Duration = Duration::from_secs(12 * 60 * 60);

/// After a failed rotation (no randomness), the current key serves on until the next try.
pub(super) const TICKET_KEY_RETRY: Duration = Duration::from_secs(60);

/// The sizes OpenSSL's ticket format fixes: a 16-byte key name (TLSEXT_KEYNAME_LENGTH),
/// AES-256-CBC for the contents (32-byte key, 16-byte IV, EVP_MAX_IV_LENGTH) and
/// HMAC-SHA256 over them (a 32-byte key, as OpenSSL's own keys have).
pub(super) const TICKET_KEY_NAME_LEN: usize = 16;
pub(super) const TICKET_IV_LEN: usize = 16;
pub(super) const TICKET_AES_KEY_LEN: usize = 32;
pub(super) const TICKET_HMAC_KEY_LEN: usize = 32;

/// One ticket key: the name that tickets carry in the clear, and the two secrets.
pub(super) struct TicketKey {
    pub(super) name: [u8; TICKET_KEY_NAME_LEN],
    pub(super) aes: [u8; TICKET_AES_KEY_LEN],
    pub(super) hmac: [u8; TICKET_HMAC_KEY_LEN],
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
pub(super) struct KeyRing {
    pub(super) current: Arc<TicketKey>,
    pub(super) previous: Option<Arc<TicketKey>>,
    /// When `current` started sealing.
    pub(super) since: Instant,
}

/// Whether the key that sealed a ticket is still the current one: a ticket from the
/// previous key resumes, and the client gets a fresh ticket from the current key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyAge {
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
    /// TLS 1.2 sessions by id, for clients that take no ticket: shared like the keys.
    sessions: Arc<SessionCache>,
    pub(super) ring: ArcSwap<KeyRing>,
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
            sessions: Arc::default(),
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
    pub(super) fn install(self: &Arc<Self>, ctx: &mut SslContextBuilder) -> Result<(), ErrorStack> {
        ctx.set_ex_data(ticket_keys_index()?, Arc::clone(self));
        self.sessions.install(ctx)?;
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
pub(super) fn ticket_keys_index() -> Result<Index<SslContext, Arc<TicketKeys>>, ErrorStack> {
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

pub(super) type TicketKeyCallback = unsafe extern "C" fn(
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
pub(super) unsafe extern "C" fn ticket_key_callback(
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
pub(super) fn seal_ticket(
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
pub(super) unsafe fn init_ticket_mac(
    mac: *mut ffi::EVP_MAC_CTX,
    key: &[u8],
) -> Result<(), ErrorStack> {
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
