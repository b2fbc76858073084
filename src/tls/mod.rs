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
//! [`TlsSettings`]: pingora::listeners::tls::TlsSettings
//! [`TlsAccept`]: pingora::listeners::TlsAccept
//!
//! [`TicketKeys`] seal and open the session tickets of every listener of the process with
//! the gateway's own keys, rotated every [`TICKET_KEY_ROTATION`]: Pingora builds one OpenSSL
//! context per listener, and OpenSSL's default (a random key per context, never rotated)
//! would make a ticket resume only where it was issued, and with one key for the life of the
//! process. The server creates them once per process and its background task rotates them.

// pingora::tls re-exports no asn1, cipher or ex_data module; Cargo resolves this and
// pingora's openssl to one crate (0.10), so the types are the same.

mod certs;
mod error;
mod listener;
mod sessions;
mod tickets;

pub use certs::*;
pub use error::*;
pub use listener::*;
pub use tickets::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MinVersion;

    use std::fmt;
    use std::path::{Path, PathBuf};

    use arc_swap::ArcSwapOption;
    use std::sync::Arc;

    use pingora::tls::ssl::{SslMode, SslOptions, SslVersion};
    use pingora::tls::x509::X509;

    use serde::Deserialize;

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
