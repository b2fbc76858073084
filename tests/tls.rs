//! TLS termination: SNI, versions, ALPN h2, X-Forwarded-Proto, the redirect from plain
//! HTTP, every bad certificate refused with its file named, and session resumption with the
//! real `openssl s_client` across worker threads and listeners.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use openssl::ssl::{SslConnector, SslMethod, SslVersion};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Certificates for two names from one test CA, written to files.
struct Pki {
    dir: tempfile::TempDir,
    ca: TestCa,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            dir: tempfile::tempdir().unwrap(),
            ca: TestCa::new("pylon TLS test CA"),
        }
    }

    /// Write a certificate for `names` valid from/until (seconds from now); (cert, key) paths.
    fn write(&self, file: &str, names: &[&str], from: i64, until: i64) -> (PathBuf, PathBuf) {
        let (cert, key) = self.ca.issue_valid(names, from, until);
        let c = self.dir.path().join(format!("{file}.pem"));
        let k = self.dir.path().join(format!("{file}.key"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        (c, k)
    }

    fn ca_file(&self) -> PathBuf {
        let p = self.dir.path().join("ca.pem");
        std::fs::write(&p, self.ca.cert_pem()).unwrap();
        p
    }
}

fn tls_config(listen: SocketAddr, certs: &[(PathBuf, PathBuf)], extra: &str) -> String {
    let mut s = format!("[tls]\nlisten = [\"{listen}\"]\n{extra}\n");
    for (c, k) in certs {
        s.push_str(&format!(
            "[[tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n",
            c.display(),
            k.display()
        ));
    }
    s
}

/// Connect with SNI `name` (None: no SNI) and return the certificate's first DNS name.
fn served_name(addr: SocketAddr, name: Option<&str>, ca: &std::path::Path) -> String {
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_ca_file(ca).unwrap();
    let connector = b.build();
    let mut config = connector.configure().unwrap();
    config.set_verify_hostname(false);
    if name.is_none() {
        config.set_use_server_name_indication(false);
    }
    let tcp = TcpStream::connect(addr).unwrap();
    let stream = config.connect(name.unwrap_or("ignored"), tcp).unwrap();
    let cert = stream.ssl().peer_certificate().unwrap();
    let names = cert.subject_alt_names().unwrap();
    names.iter().next().unwrap().dnsname().unwrap().to_string()
}

fn start_tls(
    pki: &Pki,
    certs: &[(PathBuf, PathBuf)],
    extra: &str,
    upstream: SocketAddr,
) -> (Gateway, SocketAddr) {
    let tls_addr = closed_port();
    let gw = Gateway::start(
        "",
        &format!(
            "{}{}",
            tls_config(tls_addr, certs, extra),
            route("/app", upstream, "")
        ),
    );
    // the TLS listener comes up with the plain one
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while TcpStream::connect(tls_addr).is_err() {
        assert!(std::time::Instant::now() < deadline, "no TLS listener");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = pki;
    (gw, tls_addr)
}

#[test]
fn sni_picks_the_certificate_for_each_name() {
    let pki = Pki::new();
    let a = pki.write("a", &["a.pylon.test"], -60, 86_400 * 30);
    let b = pki.write("b", &["b.pylon.test", "*.b.pylon.test"], -60, 86_400 * 30);
    let up = Upstream::echo();
    let (_gw, tls) = start_tls(&pki, &[a, b], "", up.addr);
    let ca = pki.ca_file();
    assert_eq!(served_name(tls, Some("a.pylon.test"), &ca), "a.pylon.test");
    assert_eq!(served_name(tls, Some("b.pylon.test"), &ca), "b.pylon.test");
    assert_eq!(
        served_name(tls, Some("api.b.pylon.test"), &ca),
        "b.pylon.test"
    );
    assert_eq!(
        served_name(tls, Some("unknown.test"), &ca),
        "a.pylon.test",
        "the first is the default"
    );
    assert_eq!(served_name(tls, None, &ca), "a.pylon.test");
}

#[test]
fn old_protocol_versions_are_refused() {
    let pki = Pki::new();
    let cert = pki.write("a", &["a.pylon.test"], -60, 86_400 * 30);
    let up = Upstream::echo();
    let (_gw, tls) = start_tls(&pki, std::slice::from_ref(&cert), "", up.addr);
    let (_gw13, tls13) = start_tls(&pki, &[cert], "min_version = \"1.3\"", up.addr);
    let connect = |addr: SocketAddr, max: SslVersion| {
        let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
        b.set_verify(openssl::ssl::SslVerifyMode::NONE);
        b.set_min_proto_version(Some(SslVersion::TLS1)).unwrap();
        b.set_max_proto_version(Some(max)).unwrap();
        // old versions need the old ciphers on the client side to even try
        b.set_cipher_list("ALL:@SECLEVEL=0").unwrap();
        b.build()
            .connect("a.pylon.test", TcpStream::connect(addr).unwrap())
            .map(|s| s.ssl().version_str().to_string())
    };
    assert!(
        connect(tls, SslVersion::TLS1_1).is_err(),
        "TLS 1.1 must be refused"
    );
    assert_eq!(connect(tls, SslVersion::TLS1_2).unwrap(), "TLSv1.2");
    assert!(
        connect(tls13, SslVersion::TLS1_2).is_err(),
        "min_version 1.3 refuses 1.2"
    );
    assert_eq!(connect(tls13, SslVersion::TLS1_3).unwrap(), "TLSv1.3");
}

#[test]
fn h2_is_negotiated_by_alpn_and_proxied_with_forwarded_proto_https() {
    let pki = Pki::new();
    let cert = pki.write("a", &["a.pylon.test"], -60, 86_400 * 30);
    let up = Upstream::echo();
    let (_gw, tls) = start_tls(&pki, &[cert], "", up.addr);
    let ca = pki.ca_file();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
        b.set_ca_file(&ca).unwrap();
        b.set_alpn_protos(b"\x02h2\x08http/1.1").unwrap();
        let ssl = b
            .build()
            .configure()
            .unwrap()
            .into_ssl("a.pylon.test")
            .unwrap();
        let tcp = tokio::net::TcpStream::connect(tls).await.unwrap();
        let mut stream = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
        std::pin::Pin::new(&mut stream).connect().await.unwrap();
        assert_eq!(stream.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
        let resp = h2_get(stream, "https://a.pylon.test/app/x?q=1").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        assert!(resp.headers().contains_key("strict-transport-security"));
    });
    let seen = up.last();
    assert_eq!(seen.target, "/x?q=1");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
}

#[test]
fn h2_false_offers_only_http_1_1() {
    let pki = Pki::new();
    let cert = pki.write("a", &["a.pylon.test"], -60, 86_400 * 30);
    let up = Upstream::echo();
    let (_gw, tls) = start_tls(&pki, &[cert], "h2 = false", up.addr);
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_verify(openssl::ssl::SslVerifyMode::NONE);
    b.set_alpn_protos(b"\x02h2\x08http/1.1").unwrap();
    let s = b
        .build()
        .connect("a.pylon.test", TcpStream::connect(tls).unwrap())
        .unwrap();
    assert_eq!(s.ssl().selected_alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[test]
fn plain_http_is_redirected_to_https_when_asked() {
    let pki = Pki::new();
    let cert = pki.write("a", &["a.pylon.test"], -60, 86_400 * 30);
    let up = Upstream::echo();
    let (gw, tls) = start_tls(&pki, &[cert], "redirect_http = true", up.addr);
    let r = raw_request(
        gw.addr,
        b"GET /app/x?q=1 HTTP/1.1\r\nHost: a.pylon.test:8080\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://a.pylon.test:{}/app/x?q=1", tls.port()).as_str())
    );
    assert_eq!(up.hits(), 0);
}

#[test]
fn bad_certificates_are_refused_with_the_file_named() {
    let pki = Pki::new();
    let good = pki.write("good", &["a.pylon.test"], -60, 86_400 * 30);
    let other = pki.write("other", &["b.pylon.test"], -60, 86_400 * 30);
    let expired = pki.write("expired", &["a.pylon.test"], -86_400 * 10, -86_400);
    let listen = closed_port();
    let missing = (pki.dir.path().join("missing.pem"), good.1.clone());
    let mismatched = (good.0.clone(), other.1.clone());
    let cases: Vec<((PathBuf, PathBuf), PathBuf, &str)> = vec![
        (
            missing.clone(),
            missing.0.clone(),
            "tls.certificates[0].cert",
        ),
        (mismatched, other.1.clone(), "tls.certificates[0].cert"),
        (
            expired.clone(),
            expired.0.clone(),
            "tls.certificates[0].cert",
        ),
    ];
    for (pair, named, key) in cases {
        let text = tls_config(listen, &[pair], "");
        let (code, _, err) = run_pylon(&["-t"], Some(&text));
        assert_eq!(code, 1, "{text}");
        assert!(err.contains(&named.display().to_string()), "{err}");
        assert!(err.contains(&format!("key `{key}`")), "{err}");
    }
    let unreadable_key = (good.0.clone(), pki.dir.path().join("nope.key"));
    let (code, _, err) = run_pylon(&["-t"], Some(&tls_config(listen, &[unreadable_key], "")));
    assert_eq!(code, 1);
    assert!(
        err.contains("nope.key") && err.contains("key `tls.certificates[0].key`"),
        "{err}"
    );
}

#[test]
fn a_certificate_expiring_soon_loads_with_a_warning() {
    let pki = Pki::new();
    let soon = pki.write("soon", &["a.pylon.test"], -60, 5 * 86_400);
    let up = Upstream::echo();
    let (gw, tls) = start_tls(&pki, &[soon], "", up.addr);
    assert_eq!(
        served_name(tls, Some("a.pylon.test"), &pki.ca_file()),
        "a.pylon.test"
    );
    assert!(gw.stderr().contains("expires"), "{}", gw.stderr());
}

// ---------------------------------------------------------------------------------------------
// Session resumption, as `openssl s_client` sees it
// ---------------------------------------------------------------------------------------------

/// A gateway with four worker threads and two TLS listeners. Started here rather than with
/// `Gateway::start`, which fixes `threads = 2`: resumption must hold however the handshakes
/// spread over threads and listeners.
struct ThreadedGateway {
    child: std::process::Child,
    dir: tempfile::TempDir,
    tls: [SocketAddr; 2],
}

impl ThreadedGateway {
    fn start(cert: &(PathBuf, PathBuf), upstream: SocketAddr) -> ThreadedGateway {
        let dir = tempfile::tempdir().unwrap();
        for _attempt in 0..5 {
            let (plain, tls) = (closed_port(), [closed_port(), closed_port()]);
            let config = format!(
                "[server]\nlisten = [\"{plain}\"]\nthreads = 4\npid_file = \"{pid}\"\n\
                 upgrade_sock = \"{sock}\"\n\n[access_log]\npath = \"off\"\n\n\
                 [tls]\nlisten = [\"{}\", \"{}\"]\n[[tls.certificates]]\ncert = \"{}\"\n\
                 key = \"{}\"\n\n{}",
                tls[0],
                tls[1],
                cert.0.display(),
                cert.1.display(),
                route("/app", upstream, ""),
                pid = dir.path().join("pylon.pid").display(),
                sock = dir.path().join("upgrade.sock").display(),
            );
            let path = dir.path().join("pylon.toml");
            std::fs::write(&path, config).unwrap();
            let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
            let mut child = std::process::Command::new(pylon_bin())
                .arg("-c")
                .arg(&path)
                .env_remove("PORT")
                .stdout(std::process::Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if tls.iter().all(|a| TcpStream::connect(a).is_ok()) {
                    return ThreadedGateway { child, dir, tls };
                }
                if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!(
            "the gateway did not start; stderr:\n{}",
            std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
        );
    }
}

impl Drop for ThreadedGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How an `s_client` connection ends.
#[derive(Debug, Clone, Copy)]
enum Close {
    /// One request with `Connection: close`; the client reads until the gateway closes
    /// (and so also receives TLS 1.3 tickets).
    ByGateway,
    /// No request: the client closes right after the handshake, before the gateway could
    /// send a close_notify. Before tickets, this dropped the session from the server cache.
    ByClient,
}

/// What one `openssl s_client` run saw.
struct SClient {
    resumed: bool,
    output: String,
}

/// Run the real `openssl s_client` against `addr` for a.pylon.test, offering the session in
/// `session` when `offer` and saving the one it ends with there otherwise.
fn s_client(
    addr: SocketAddr,
    version: &str,
    ca: &Path,
    session: &Path,
    offer: bool,
    close: Close,
) -> SClient {
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string()])
        .args(["-servername", "a.pylon.test", "-verify_return_error"])
        // the version, and any further flags (`-no_ticket`)
        .args(version.split(' '))
        .arg("-CAfile")
        .arg(ca)
        .arg(if offer { "-sess_in" } else { "-sess_out" })
        .arg(session);
    if let Close::ByGateway = close {
        cmd.arg("-ign_eof");
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl s_client (Debian's openssl package) must be installed");
    {
        let mut stdin = child.stdin.take().unwrap();
        if let Close::ByGateway = close {
            stdin
                .write_all(
                    b"GET /app/x HTTP/1.1\r\nHost: a.pylon.test\r\nConnection: close\r\n\r\n",
                )
                .unwrap();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("openssl s_client hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // "Reused, TLSv1.3, Cipher is ..." or "New, TLSv1.3, ...", once per handshake.
    let resumed = output.lines().any(|l| l.starts_with("Reused, "));
    assert!(
        resumed || output.lines().any(|l| l.starts_with("New, ")),
        "no handshake: {output}"
    );
    if let Close::ByGateway = close {
        assert!(output.contains("HTTP/1.1 200"), "{output}");
    }
    SClient { resumed, output }
}

/// One full handshake saves a session; then `reconnects` reconnects offer it, alternating
/// between the two listeners and between the two ways a connection ends. Every one must
/// resume: the handshakes may land on any of the 4 worker threads, and either listener must
/// open the other's tickets.
fn every_reconnect_resumes(version: &str, expected_protocol: &str, reconnects: usize) {
    let pki = Pki::new();
    let cert = pki.write("a", &["a.pylon.test"], -60, 86_400 * 30);
    let up = Upstream::echo();
    let gw = ThreadedGateway::start(&cert, up.addr);
    let ca = pki.ca_file();
    let session = gw.dir.path().join("session.pem");

    let first = s_client(gw.tls[0], version, &ca, &session, false, Close::ByGateway);
    assert!(!first.resumed, "{}", first.output);
    assert!(
        first
            .output
            .contains(&format!("New, {expected_protocol}, ")),
        "{}",
        first.output
    );
    assert!(
        std::fs::metadata(&session).unwrap().len() > 0,
        "no session saved"
    );

    let mut missed = Vec::new();
    for i in 0..reconnects {
        let listener = gw.tls[i % 2];
        let close = if (i / 2) % 2 == 0 {
            Close::ByClient
        } else {
            Close::ByGateway
        };
        let again = s_client(listener, version, &ca, &session, true, close);
        if !again.resumed {
            missed.push(format!("reconnect {i} to {listener}, {close:?}"));
        }
    }
    assert!(
        missed.is_empty(),
        "{} of {reconnects} {version} reconnects made a full handshake: {missed:?}",
        missed.len()
    );
}

#[test]
fn tls13_reconnects_resume_on_every_thread_and_listener() {
    every_reconnect_resumes("-tls1_3", "TLSv1.3", 8);
}

#[test]
fn tls12_reconnects_resume_on_every_thread_and_listener() {
    every_reconnect_resumes("-tls1_2", "TLSv1.2", 8);
}

/// A TLS 1.2 client that takes no ticket resumes by session id, from the process's own
/// cache: on every thread and listener, however the last connection ended.
#[test]
fn tls12_reconnects_without_tickets_resume_by_session_id_on_every_thread_and_listener() {
    every_reconnect_resumes("-tls1_2 -no_ticket", "TLSv1.2", 8);
}

/// SIGHUP reads the certificate files again, with the checks of a start: a renewed
/// certificate is served to new handshakes in the same process, and one that fails its
/// checks is refused (file named) while the old one is served on.
#[test]
fn a_reload_serves_renewed_certificates_and_refuses_a_bad_one() {
    let pki = Pki::new();
    let ca = pki.ca_file();
    let up = Upstream::fixed(Reply::ok("tls"));
    let (cert, key) = pki.write("site", &["old.pylon.test"], -60, 86_400);
    let (mut gw, tls) = start_tls(&pki, &[(cert.clone(), key.clone())], "", up.addr);
    let pid = gw.pid();
    assert_eq!(
        served_name(tls, Some("old.pylon.test"), &ca),
        "old.pylon.test"
    );
    let tls_rest = |certs: &[(PathBuf, PathBuf)]| {
        format!(
            "{}{}",
            tls_config(tls, certs, ""),
            route("/app", up.addr, "")
        )
    };
    let wait_for_log = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gw.stderr().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no `{needle}` in:\n{}",
                gw.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // renewal: the same files get a new certificate
    let (renewed_cert, renewed_key) = pki.write("renewed", &["new.pylon.test"], -60, 86_400);
    std::fs::copy(&renewed_cert, &cert).unwrap();
    std::fs::copy(&renewed_key, &key).unwrap();
    gw.write_config(&tls_rest(&[(cert.clone(), key.clone())]));
    gw.signal("HUP");
    wait_for_log("loaded as generation 2");
    assert_eq!(served_name(tls, None, &ca), "new.pylon.test");

    // an expired certificate is refused by the reload; the renewed one stays
    let (expired, expired_key) = pki.write("expired", &["late.pylon.test"], -86_400, -60);
    gw.write_config(&tls_rest(&[(expired.clone(), expired_key)]));
    gw.signal("HUP");
    wait_for_log("reload refused");
    let stderr = gw.stderr();
    let refusal = stderr
        .lines()
        .find(|l| l.contains("reload refused"))
        .unwrap();
    assert!(
        refusal.contains("tls.certificates[0].cert") && refusal.contains(expired.to_str().unwrap()),
        "{refusal}"
    );
    assert_eq!(served_name(tls, None, &ca), "new.pylon.test");
    assert!(gw.is_running());
    assert_eq!(gw.pid(), pid);
}

/// Start with a TLS listener and an admin listener; (gateway, TLS address, admin address).
fn start_tls_with_admin(
    certs: &[(PathBuf, PathBuf)],
    routes: &str,
) -> (Gateway, SocketAddr, SocketAddr) {
    let tls_addr = closed_port();
    let admin = closed_port();
    let gw = Gateway::start(
        "",
        &format!(
            "[admin]\nlisten = \"{admin}\"\n{}{routes}",
            tls_config(tls_addr, certs, "")
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(tls_addr).is_err() || TcpStream::connect(admin).is_err() {
        assert!(Instant::now() < deadline, "no TLS or admin listener");
        std::thread::sleep(Duration::from_millis(10));
    }
    (gw, tls_addr, admin)
}

#[test]
fn failed_tls_handshakes_are_counted_and_kept_out_of_the_error_log() {
    let pki = Pki::new();
    let a = pki.write("a", &["a.pylon.test"], -60, 86_400 * 30);
    let up = Upstream::echo();
    let (gw, tls, admin) = start_tls_with_admin(&[a], &route("/app", up.addr, ""));
    // the probes that saw the listener up closed without a handshake: they count too
    let failures = || {
        metrics_text(admin)
            .lines()
            .find_map(|l| l.strip_prefix("pylon_handshake_failures_total{protocol=\"tls\"} "))
            .map(|n| n.parse::<u64>().unwrap())
            .expect("the handshake failures' series")
    };
    let before = failures();
    // plain HTTP to the TLS port, five times: a client's mistake, not the gateway's
    for _ in 0..5 {
        let mut s = TcpStream::connect(tls).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /app HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut rest);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while failures() < before + 5 {
        assert!(Instant::now() < deadline, "{} counted", failures() - before);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(failures(), before + 5);
    let stderr = gw.stderr();
    assert!(
        !stderr
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("handshake")),
        "{stderr}"
    );
    // the listener still serves a client that speaks TLS
    let ca = pki.ca_file();
    assert_eq!(served_name(tls, Some("a.pylon.test"), &ca), "a.pylon.test");
}

#[test]
fn a_websocket_over_tls_is_relayed_both_ways() {
    use std::io::Read;
    let upstream = raw_upstream(switch_then_echo);
    let pki = Pki::new();
    let a = pki.write("a", &["a.pylon.test"], -60, 86_400 * 30);
    let (gw, tls, _admin) = start_tls_with_admin(&[a], &route("/ws", upstream, ""));
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_ca_file(pki.ca_file()).unwrap();
    let tcp = TcpStream::connect(tls).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut s = b.build().connect("a.pylon.test", tcp).unwrap();
    s.write_all(upgrade_request("/ws/tls").as_bytes()).unwrap();
    let (head, _) = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut buf = [0u8; 65536];
    // 1 MiB each way, in pieces larger than a TLS record
    let sent: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
    let mut echoed = Vec::new();
    let mut written = 0;
    for piece in sent.chunks(100_000) {
        s.write_all(piece).unwrap();
        written += piece.len();
        while echoed.len() < written {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "closed after {} bytes", echoed.len());
            echoed.extend_from_slice(&buf[..n]);
        }
    }
    assert!(echoed == sent, "{} bytes came back", echoed.len());
    s.shutdown().unwrap();
    drop(s);
    let lines = gw.access_log_lines(1);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("GET /ws/tls") && l.contains(&format!("\" 101 {} ", sent.len()))),
        "{lines:?}"
    );
}
