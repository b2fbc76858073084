//! The settings of one TLS listener: versions, ciphers, ALPN, resumption, and the
//! certificate chosen per handshake by SNI.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
// pingora::tls re-exports no asn1, cipher or ex_data module; Cargo resolves this and
// pingora's openssl to one crate (0.10), so the types are the same.
use crate::config::MinVersion;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::error::ErrorStack;
use pingora::tls::ssl::{
    select_next_proto, AlpnError, NameType, SslAcceptorBuilder, SslMode, SslOptions, SslVersion,
};

use super::certs::CertStore;
use super::error::TlsError;
use super::tickets::TicketKeys;

/// Pingora's per-handshake hook: picks the certificate for the client's server name from
/// the certificates in force (a reload swaps them).
pub(super) struct SniResolver {
    pub(super) certs: Arc<ArcSwapOption<CertStore>>,
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
                cert.cert_path().display()
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
pub(super) fn configure_acceptor(
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
    // the process's rotated keys, and, for TLS 1.2 clients that send no ticket extension,
    // on the process's own session cache (see `sessions`), shared by every listener
    // like the keys.
    builder.clear_options(SslOptions::NO_TICKET);
    ticket_keys.install(builder)?;
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

/// TLS 1.2 cipher suites: forward secret key exchange (ECDHE) with an AEAD cipher only.
/// Mozilla's intermediate list without the DHE suites.
pub(super) const TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/// TLS 1.3 cipher suites (all three are AEAD; listed so the choice does not depend on the
/// OpenSSL build's defaults).
pub(super) const TLS13_CIPHERSUITES: &str =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

/// ALPN protocols in wire format, in the server's order of preference.
pub(super) const ALPN_H2_H1: &[u8] = b"\x02h2\x08http/1.1";

pub(super) const ALPN_H1: &[u8] = b"\x08http/1.1";

/// Ties TLS 1.2 session ids and TLS 1.3 stateful tickets to this server.
pub(super) const SESSION_ID_CONTEXT: &[u8] = b"pylon";
