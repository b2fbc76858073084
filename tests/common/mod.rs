//! Test helpers: real upstream servers and the real `pylon` binary on ephemeral loopback
//! ports.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

pub mod otlp;
pub mod redis;

// ---------------------------------------------------------------------------------------------
// Upstreams
// ---------------------------------------------------------------------------------------------

/// A request as an upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The request target exactly as received (path and query).
    pub target: String,
    /// Lower-case names, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body did not arrive whole: the connection failed while it was read.
    pub body_broken: bool,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

/// What an upstream answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn ok(body: &str) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: body.as_bytes().to_vec(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

pub type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A real HTTP/1.1 server (hyper) on an ephemeral loopback port, recording what it sees.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    pub fn start(handler: Handler) -> Upstream {
        Upstream::start_on("127.0.0.1:0".parse().unwrap(), handler, None)
    }

    /// An upstream speaking TLS with the given certificate chain and key (PEM).
    pub fn start_tls(handler: Handler, cert_pem: &str, key_pem: &str) -> Upstream {
        let acceptor = tls_acceptor(cert_pem, key_pem);
        Upstream::start_on("127.0.0.1:0".parse().unwrap(), handler, Some(acceptor))
    }

    /// An upstream on a chosen address (to bring a stopped one back on its port).
    pub fn start_on(
        addr: SocketAddr,
        handler: Handler,
        tls: Option<openssl::ssl::SslAcceptor>,
    ) -> Upstream {
        let listener = bind_with_retry(addr);
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let seen_in = seen.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let (stream, _) = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok(a) => a,
                            Err(_) => continue,
                        },
                        _ = &mut stop_rx => return,
                    };
                    let handler = handler.clone();
                    let seen = seen_in.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req: Request<Incoming>| {
                            let handler = handler.clone();
                            let seen = seen.clone();
                            async move { Ok::<_, Infallible>(serve(req, handler, seen).await) }
                        });
                        let builder = http1::Builder::new();
                        match tls {
                            None => {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .with_upgrades()
                                    .await;
                            }
                            Some(acceptor) => {
                                let Ok(ssl) = openssl::ssl::Ssl::new(acceptor.context()) else {
                                    return;
                                };
                                let Ok(mut stream) = tokio_openssl::SslStream::new(ssl, stream)
                                else {
                                    return;
                                };
                                if std::pin::Pin::new(&mut stream).accept().await.is_err() {
                                    return;
                                }
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .with_upgrades()
                                    .await;
                            }
                        }
                    });
                }
            });
        });
        Upstream {
            addr,
            seen,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Answers 200 with a JSON echo of the request: method, target and headers.
    pub fn echo() -> Upstream {
        Upstream::start(Arc::new(|seen: &Seen| {
            let headers: BTreeMap<&str, &str> = seen
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let body = serde_json::json!({
                "method": seen.method,
                "target": seen.target,
                "headers": headers,
            });
            Reply::ok(&body.to_string()).header("content-type", "application/json")
        }))
    }

    /// Always answers with the same reply.
    pub fn fixed(reply: Reply) -> Upstream {
        Upstream::start(Arc::new(move |_| reply.clone()))
    }

    /// Everything seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream saw no request")
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    req: Request<Incoming>,
    handler: Handler,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec());
    let request = Seen {
        method,
        target,
        headers,
        body_broken: body.is_err(),
        body: body.unwrap_or_default(),
    };
    seen.lock().unwrap().push(request.clone());
    let reply = handler(&request);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut resp = Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        resp = resp.header(k, v);
    }
    resp.body(Full::new(Bytes::from(reply.body))).unwrap()
}

/// Bind, retrying for a moment while a just-closed socket on that port goes away.
fn bind_with_retry(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .unwrap();
        socket.set_reuse_address(true).unwrap();
        match socket.bind(&addr.into()).and_then(|_| socket.listen(1024)) {
            Ok(()) => return socket.into(),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot bind {addr}: {e}"),
        }
    }
}

fn tls_acceptor(cert_pem: &str, key_pem: &str) -> openssl::ssl::SslAcceptor {
    use openssl::ssl::{SslAcceptor, SslMethod};
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    let mut chain = openssl::x509::X509::stack_from_pem(cert_pem.as_bytes())
        .unwrap()
        .into_iter();
    b.set_certificate(&chain.next().unwrap()).unwrap();
    for extra in chain {
        b.add_extra_chain_cert(extra).unwrap();
    }
    b.set_private_key(&openssl::pkey::PKey::private_key_from_pem(key_pem.as_bytes()).unwrap())
        .unwrap();
    b.build()
}

/// A certificate authority made for one test.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for these DNS names, signed by this CA: (cert PEM, key PEM).
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        self.issue_valid(names, -3600, 30 * 86_400)
    }

    /// Like `issue`, valid from `from` to `until` seconds from now.
    pub fn issue_valid(&self, names: &[&str], from: i64, until: i64) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let at = |offset: i64| {
            rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs((now + offset) as u64)
        };
        params.not_before = at(from);
        params.not_after = at(until);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().copied().unwrap_or("pylon test"),
        );
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// How a broken upstream misbehaves.
#[derive(Debug, Clone, Copy)]
pub enum Misbehaviour {
    /// Accept, then close without a word.
    Reset,
    /// Accept, read the request, answer with bytes that are not HTTP.
    Garbage,
    /// Accept, read the request, never answer.
    Silent,
    /// Accept, read the request, answer with these bytes and close.
    Fixed(&'static [u8]),
}

/// A TCP server that breaks HTTP in a chosen way.
pub struct BrokenUpstream {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl BrokenUpstream {
    pub fn start(how: Misbehaviour) -> BrokenUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_in = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop_in.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        match how {
                            Misbehaviour::Reset => {
                                // an RST, not a FIN: linger 0 then close
                                let sock = socket2::SockRef::from(&s);
                                let _ = sock.set_linger(Some(Duration::ZERO));
                                drop(s);
                            }
                            Misbehaviour::Garbage => {
                                let mut buf = [0u8; 4096];
                                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                                let _ = s.read(&mut buf);
                                let _ = s.write_all(b"this is not HTTP at all\r\n\r\n");
                                let _ = s.shutdown(Shutdown::Both);
                            }
                            Misbehaviour::Silent => held.push(s),
                            Misbehaviour::Fixed(bytes) => {
                                let mut buf = [0u8; 4096];
                                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                                let _ = s.read(&mut buf);
                                let _ = s.write_all(bytes);
                                let _ = s.shutdown(Shutdown::Both);
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        BrokenUpstream { addr, stop }
    }
}

impl Drop for BrokenUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A port that refuses connections for as long as this lives: bound, never listening, so
/// no other test's server can take it meanwhile (a port from [`closed_port`] can be taken
/// by the next server that binds, and then answers in its place).
pub struct RefusingPort {
    _socket: socket2::Socket,
    pub addr: SocketAddr,
}

pub fn refusing_port() -> RefusingPort {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    RefusingPort {
        _socket: socket,
        addr,
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway
// ---------------------------------------------------------------------------------------------

pub fn pylon_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pylon")
}

/// A running `pylon` process with its own config, logs and port.
pub struct Gateway {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    server_extra: String,
    format: String,
    envs: Vec<(String, String)>,
    child: Child,
}

impl Gateway {
    /// Start the gateway with `[server]` extras and the rest of a config. The listen address,
    /// pid file, upgrade socket and access log are filled in.
    pub fn start(server_extra: &str, rest: &str) -> Gateway {
        Gateway::start_with_log_format(server_extra, rest, "combined")
    }

    pub fn start_with_log_format(server_extra: &str, rest: &str, format: &str) -> Gateway {
        Gateway::start_with(server_extra, rest, format, &[])
    }

    /// Start with extra environment variables (secrets the config names).
    pub fn start_with_env(rest: &str, envs: &[(&str, &str)]) -> Gateway {
        Gateway::start_with("", rest, "combined", envs)
    }

    pub fn start_with(
        server_extra: &str,
        rest: &str,
        format: &str,
        envs: &[(&str, &str)],
    ) -> Gateway {
        let envs: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        for _attempt in 0..5 {
            let addr = closed_port();
            let config_path = dir.path().join("pylon.toml");
            let config = config_text(&dir, addr, server_extra, format, rest);
            std::fs::write(&config_path, &config).unwrap();
            let mut child = spawn_pylon(&dir, &config_path, &[], "stderr.log", &envs);
            if wait_until_listening(addr, &mut child) {
                return Gateway {
                    addr,
                    dir,
                    config_path,
                    server_extra: server_extra.to_string(),
                    format: format.to_string(),
                    envs,
                    child,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "the gateway did not start; stderr:\n{}",
            std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Wait until the access log has at least `n` lines, and return them.
    pub fn access_log_lines(&self, n: usize) -> Vec<String> {
        let path = self.dir.path().join("access.log");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Send a signal ("TERM", "QUIT", "INT") to the running process.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Wait for the process to end; its exit code, or None on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Rewrite the config file with a new rest (same listener, pid file and logs).
    pub fn write_config(&self, rest: &str) {
        let text = config_text(&self.dir, self.addr, &self.server_extra, &self.format, rest);
        std::fs::write(&self.config_path, text).unwrap();
    }

    /// Kill the process and start a new one on the same config file (a restart, not an
    /// upgrade: the listeners close between the two).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let n = std::fs::read_dir(self.dir.path()).unwrap().count();
        let mut child = spawn_pylon(
            &self.dir,
            &self.config_path,
            &[],
            &format!("stderr.{n}.log"),
            &self.envs,
        );
        assert!(
            wait_until_listening(self.addr, &mut child),
            "the gateway did not start again"
        );
        self.child = child;
    }

    /// Everything the gateway's processes wrote to stderr, restarts included.
    pub fn all_stderr(&self) -> String {
        let mut names: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("stderr"))
            })
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect()
    }

    /// `pylon -t` on the current config file: true when it passes.
    pub fn check_config(&self) -> bool {
        Command::new(pylon_bin())
            .arg("-t")
            .arg("-c")
            .arg(&self.config_path)
            .env_remove("PORT")
            .output()
            .unwrap()
            .status
            .success()
    }

    /// A zero-downtime upgrade as systemd's reload does it: check the config, SIGQUIT the
    /// running process, start `pylon -u` to take over its sockets. Returns once the old
    /// process has exited; its exit code.
    pub fn upgrade(&mut self) -> i32 {
        assert!(self.check_config(), "the new config does not pass -t");
        self.signal("QUIT");
        let n = std::fs::read_dir(self.dir.path()).unwrap().count();
        let new = spawn_pylon(
            &self.dir,
            &self.config_path,
            &["-u"],
            &format!("stderr.{n}.log"),
            &self.envs,
        );
        let mut old = std::mem::replace(&mut self.child, new);
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(Some(status)) = old.try_wait() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "the old process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(
    dir: &tempfile::TempDir,
    addr: SocketAddr,
    server_extra: &str,
    format: &str,
    rest: &str,
) -> String {
    format!(
        "[server]\nlisten = [\"{addr}\"]\nthreads = 2\npid_file = \"{pid}\"\nupgrade_sock = \"{sock}\"\n{server_extra}\n\n[access_log]\npath = \"{log}\"\nformat = \"{format}\"\n\n{rest}\n",
        pid = dir.path().join("pylon.pid").display(),
        sock = dir.path().join("upgrade.sock").display(),
        log = dir.path().join("access.log").display(),
    )
}

fn spawn_pylon(
    dir: &tempfile::TempDir,
    config: &PathBuf,
    args: &[&str],
    stderr: &str,
    envs: &[(String, String)],
) -> Child {
    let stderr = std::fs::File::create(dir.path().join(stderr)).unwrap();
    Command::new(pylon_bin())
        .args(args)
        .arg("-c")
        .arg(config)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .env_remove("PORT")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

fn wait_until_listening(addr: SocketAddr, child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        // the listener must be this child's: a port from `closed_port` can be taken by
        // another test's gateway meanwhile, which then answers while this one fails to bind
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
            && listens_on(child.id(), addr.port())
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Whether process `pid` holds the socket listening on loopback `port` (from
/// /proc/net/tcp and the process's descriptors).
fn listens_on(pid: u32, port: u16) -> bool {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = tcp
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local address, state 0A (LISTEN), inode
            (fields.len() > 9 && fields[1] == local && fields[3] == "0A")
                .then(|| format!("socket:[{}]", fields[9]))
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|link| inodes.iter().any(|i| link.to_string_lossy() == i.as_str()))
    })
}

/// Run `pylon` with arguments and a config text; returns (exit code, stdout, stderr).
pub fn run_pylon(args: &[&str], config: Option<&str>) -> (i32, String, String) {
    run_pylon_env(args, config, &[])
}

pub fn run_pylon_env(
    args: &[&str],
    config: Option<&str>,
    envs: &[(&str, &str)],
) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(pylon_bin());
    cmd.args(args).env_remove("PORT").envs(envs.iter().copied());
    if let Some(text) = config {
        let path = dir.path().join("pylon.toml");
        std::fs::write(&path, text).unwrap();
        cmd.arg("-c").arg(&path);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The Prometheus text of a gateway's `[metrics]` listener.
pub fn metrics_text(addr: SocketAddr) -> String {
    client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Send raw bytes (one request, `Connection: close` expected) and parse the answer.
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_response(&buf).unwrap_or_else(|| {
        panic!(
            "no HTTP response to {:?}: got {:?}",
            String::from_utf8_lossy(request),
            String::from_utf8_lossy(&buf)
        )
    })
}

pub fn parse_response(buf: &[u8]) -> Option<RawResponse> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(RawResponse {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    })
}

/// Read `n` answers off one connection, in order.
pub fn read_answers(s: &mut TcpStream, n: usize) -> Vec<RawResponse> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let mut answers = Vec::new();
    let mut chunk = [0u8; 65536];
    while answers.len() < n {
        // one whole answer at the front of buf?
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = parse_response(&buf[..end + 4]).unwrap();
            let len: usize = head
                .header("content-length")
                .map_or(0, |l| l.parse().unwrap());
            if buf.len() >= end + 4 + len {
                let mut r = head;
                r.body = buf[end + 4..end + 4 + len].to_vec();
                buf.drain(..end + 4 + len);
                answers.push(r);
                continue;
            }
        }
        let got = s.read(&mut chunk).unwrap();
        assert!(got > 0, "closed after {} answers", answers.len());
        buf.extend_from_slice(&chunk[..got]);
    }
    answers
}

/// The gateway's JSON error body for a status.
pub fn error_body(code: u16, message: &str) -> serde_json::Value {
    serde_json::json!({"code": code, "status": "Error", "message": message, "data": null})
}

/// The security headers helmet adds by default, lower-case, that every response gets
/// (Strict-Transport-Security too, but over TLS only).
pub const HELMET_HEADERS: [&str; 11] = [
    "content-security-policy",
    "cross-origin-opener-policy",
    "cross-origin-resource-policy",
    "origin-agent-cluster",
    "referrer-policy",
    "x-content-type-options",
    "x-dns-prefetch-control",
    "x-download-options",
    "x-frame-options",
    "x-permitted-cross-domain-policies",
    "x-xss-protection",
];

/// A route table entry for a config.
pub fn route(prefix: &str, upstream: SocketAddr, extra: &str) -> String {
    format!("[[routes]]\nprefix = \"{prefix}\"\nupstreams = [\"http://{upstream}\"]\n{extra}\n")
}

/// `GET uri` over HTTP/2 on an established connection (cleartext or TLS), the response's
/// status, version and header names.
pub async fn h2_get<S>(io: S, uri: &str) -> hyper::Response<Incoming>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(io),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(uri)
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    sender.send_request(req).await.unwrap()
}

/// Clients on keep-alive connections sending requests until stopped; counts successes and
/// every kind of failure.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(url: String, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failures, url) =
                    (stop.clone(), ok.clone(), failures.clone(), url.clone());
                std::thread::spawn(move || {
                    let http = client();
                    while !stop.load(Ordering::Relaxed) {
                        match http.get(&url).send().and_then(|r| {
                            let status = r.status();
                            r.text().map(|body| (status, body))
                        }) {
                            Ok((status, _)) if status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok((status, body)) => failures
                                .lock()
                                .unwrap()
                                .push(format!("status {status}: {body}")),
                            Err(e) => failures.lock().unwrap().push(format!("error: {e:?}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            threads,
        }
    }

    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    pub fn wait_for(&self, more: usize) {
        let target = self.ok() + more;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.ok() < target {
            assert!(
                Instant::now() < deadline,
                "the load stalled at {}",
                self.ok()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

/// An API key as the config holds it: its SHA-256 in hex (`keys = { name = "sha256:..." }`).
pub fn api_key_hash(key: &str) -> String {
    openssl::sha::sha256(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Upgraded connections: raw upstreams that switch protocols, and the client's side
// ---------------------------------------------------------------------------------------------

/// A 101 as a WebSocket server sends it.
pub const SWITCH: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

/// A WebSocket opening handshake for `path`.
pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// An upstream that runs `serve` on each connection, in a thread of its own.
pub fn raw_upstream(serve: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || serve(stream));
        }
    });
    addr
}

/// Read one head; what came after it is returned too.
pub fn read_head<R: Read>(s: &mut R) -> (String, Vec<u8>) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = seen.split_off(end + 4);
            return (String::from_utf8_lossy(&seen).into_owned(), rest);
        }
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "closed inside a head: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
}

/// Switch, then send back whatever comes.
pub fn switch_then_echo(mut s: TcpStream) {
    let _ = read_head(&mut s);
    s.write_all(SWITCH).unwrap();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}
