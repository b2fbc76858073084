//! The command line: `-t` checks, config errors name file, line and key, a listen address
//! that cannot be bound ends the process, malformed requests get 400.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::net::TcpListener;
use std::time::Duration;

const OK_ROUTE: &str = "[[routes]]\nprefix = \"/users\"\nupstreams = [\"127.0.0.1:7002\"]\n";

#[test]
fn the_shipped_default_config_passes_the_check() {
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/pylon.toml");
    let (code, out, err) = run_pylon(&["-t", "-c", conf], None);
    assert_eq!(code, 0, "stdout {out} stderr {err}");
    assert!(out.contains("test is successful"), "{out}");
}

#[test]
fn check_exits_0_for_a_good_config() {
    let (code, out, _) = run_pylon(
        &["-t"],
        Some(&format!("[access_log]\npath = \"off\"\n{OK_ROUTE}")),
    );
    assert_eq!(code, 0);
    assert!(out.contains("test is successful"));
}

#[test]
fn check_prints_what_it_loaded() {
    let (code, out, err) = run_pylon(
        &["-t"],
        Some(&format!(
            "[access_log]\npath = \"off\"\n[admin]\nlisten = \"127.0.0.1:9180\"\n[rate_limit]\nrequests = 20\nwindow = \"1m\"\n{OK_ROUTE}[[routes]]\nprefix = \"/open\"\nupstreams = [\"127.0.0.1:7003\", \"127.0.0.1:7004\"]\nbalance = \"least_request\"\nrate_limit = false\n"
        )),
    );
    assert_eq!(code, 0, "{err}");
    for line in [
        "admin: 127.0.0.1:9180",
        "rate limit: \"default\" 20 per 60 s",
        "routes: 2",
        "  /users -> http://127.0.0.1:7002 (round_robin); auth: none; rate limit: \"default\" 20 per 60 s",
        "  /open -> http://127.0.0.1:7003, http://127.0.0.1:7004 (least_request); auth: none; rate limit: none",
    ] {
        assert!(out.lines().any(|l| l == line), "no `{line}` in:\n{out}");
    }
}

/// A file with several mistakes in several sections, routes and authenticators: one run
/// names them all, in file order, one per line.
#[test]
fn check_reports_every_mistake_in_one_run_in_file_order() {
    let text = "[server]\nbogus = 1\n[timeouts]\nread = \"15x\"\n[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:2\"]\n[[routes]]\nprefix = \"/b\"\nupstream = [\"x\"]\n[auth.u]\ntype = \"jwt\"\nnope = 1\n";
    let (code, _, err) = run_pylon(&["-t"], Some(text));
    assert_eq!(code, 1);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("pylon: ")).collect();
    let expected = [
        (":2:", "server.bogus"),
        (":4:", "timeouts.read"),
        (":10:", "routes[1].upstream"),
        (":13:", "auth.u.nope"),
    ];
    assert_eq!(lines.len(), expected.len(), "{err}");
    for (line, (at, key)) in lines.iter().zip(expected) {
        assert!(
            line.contains(at) && line.contains(&format!("key `{key}`")),
            "{line} (expected {at} {key})"
        );
    }
}

/// Each bad config: exit 1, and the message names the file, the line and the key.
#[test]
fn bad_configs_are_refused_with_file_line_and_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[[routes]]\nprefix = \"/users\"\nupstreams = [\"127.0.0.1:7002\"]\nstrip_prefx = true\n",
            ":4:",
            "routes[0].strip_prefx",
        ),
        ("[timeouts]\nread = \"15 seconds\"\n", ":2:", "timeouts.read"),
        (
            "[[routes]]\nprefix = \"/users\"\nupstreams = [\"htp//nope:x\"]\n",
            ":3:",
            "routes[0].upstreams[0]",
        ),
        (
            "[[routes]]\nprefix = \"/users\"\nupstreams = []\n",
            ":3:",
            "routes[0].upstreams",
        ),
        (
            "[[routes]]\nprefix = \"/users\"\nupstreams = [\"127.0.0.1:1\"]\n[[routes]]\nprefix = \"/users\"\nupstreams = [\"127.0.0.1:2\"]\n",
            ":5:",
            "routes[1].prefix",
        ),
        ("[server]\nlisten = [\"nowhere\"]\n", ":2:", "server.listen[0]"),
        ("[rate_limit]\nrequests = -1\nwindow = \"1m\"\n", ":2:", "rate_limit.requests"),
        ("[bogus]\nx = 1\n", ":1:", "bogus"),
        (
            "[[routes]]\nprefix = \"/a\"\nupstreams = [{ url = \"127.0.0.1:1\", weight = 0 }]\n",
            ":3:",
            "routes[0].upstreams[0].weight",
        ),
        (
            "[[routes]]\nprefix = \"/a\"\nupstreams = [{ url = \"127.0.0.1:1\", weight = -2 }]\n",
            ":3:",
            "routes[0].upstreams[0].weight",
        ),
        (
            "[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\nbalance = \"fastest\"\n",
            ":4:",
            "routes[0].balance",
        ),
        (
            "[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\nbalance = \"hash\"\nhash_key = \"cookie\"\n",
            ":5:",
            "routes[0].hash_key",
        ),
        (
            "[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\nhealth_check = { interval = \"50ms\" }\n",
            ":4:",
            "routes[0].health_check.interval",
        ),
        (
            "[[routes]]\nprefix = \"/a\"\nupstreams = [\"https://localhost:1\"]\nca_file = \"/nonexistent/ca.pem\"\n",
            ":4:",
            "routes[0].ca_file",
        ),
        ("[server\n", ":1:", "(syntax)"),
        (
            "[[routes]]\nprefix = \"/\u{e9}\"\nupstreams = [\"127.0.0.1:1\"]\nrate_limit = { requests = 5, window = \"1m\" }\n",
            ":2:",
            "routes[0].prefix",
        ),
        (
            "[auth.j]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\njwks_file = \"/dev/zero\"\n[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\nauth = [\"j\"]\n",
            ":4:",
            "auth.j.jwks_file",
        ),
        ("[server]\nlisten = []\n", ":2:", "server.listen"),
        (
            "[access_log]\npath = \"/nonexistent-dir/access.log\"\n",
            ":2:",
            "access_log.path",
        ),
        ("[timeouts]\nread = \"0s\"\n", ":2:", "timeouts.read"),
        ("[timeouts]\nclient_header = \"0ms\"\n", ":2:", "timeouts.client_header"),
        ("[timeouts]\nconnect = \"400d\"\n", ":2:", "timeouts.connect"),
        (
            "[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\ntimeouts = { write = \"0s\" }\n",
            ":4:",
            "routes[0].timeouts.write",
        ),
        ("[server]\nmax_connections = 0\n", ":2:", "server.max_connections"),
        ("[limits]\nmax_body = \"12x\"\n", ":2:", "limits.max_body"),
        ("[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\nmax_body = -1\n", ":4:", "routes[0].max_body"),
        ("[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\nallow = [\"10.0.0.0/33\"]\n", ":4:", "routes[0].allow[0]"),
        ("[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\ndeny = [\"not-an-ip\"]\n", ":4:", "routes[0].deny[0]"),
        ("[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\nmethods = [\"get\"]\n", ":4:", "routes[0].methods"),
        ("[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\nmethods = []\n", ":4:", "routes[0].methods"),
        (
            "[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\nrequest_headers = { set = { \"X-Forwarded-For\" = \"1.2.3.4\" } }\n",
            ":4:",
            "routes[0].request_headers",
        ),
        (
            "[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\nrequest_headers = { remove = [\"X-Request-Id\"] }\n",
            ":4:",
            "routes[0].request_headers",
        ),
        (
            "[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\nrequest_headers = { set = { \"X-A\" = \"{user}\" } }\n",
            ":4:",
            "routes[0].request_headers",
        ),
        (
            "[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\nresponse_headers = { remove = [\"Content-Security-Policy\"] }\n",
            ":4:",
            "routes[0].response_headers",
        ),
        (
            "[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\nresponse_headers = { set = { \"Content-Length\" = \"1\" } }\n",
            ":4:",
            "routes[0].response_headers",
        ),
        (
            "[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\nresponse_headers = { sett = { \"X-A\" = \"1\" } }\n",
            ":4:",
            "routes[0].response_headers.sett",
        ),
        (
            "[server]\nkeepalive_timeout = \"5s\"\n[timeouts]\nclient_idle = \"5s\"\n",
            ":2:",
            "server.keepalive_timeout",
        ),
    ];
    for (text, line, key) in cases {
        let (code, _, err) = run_pylon(&["-t"], Some(text));
        assert_eq!(code, 1, "{text:?} was accepted");
        assert!(
            err.contains("pylon.toml"),
            "no file name for {text:?}: {err}"
        );
        assert!(err.contains(line), "no line {line} for {text:?}: {err}");
        assert!(
            err.contains(&format!("key `{key}`")),
            "no key {key} for {text:?}: {err}"
        );
        // without -t the gateway refuses to start the same way
        let (code, _, err2) = run_pylon(&[], Some(text));
        assert_eq!(code, 1);
        let tail = |e: &str| e.split_once("pylon.toml").map(|(_, t)| t.to_string());
        assert_eq!(tail(&err), tail(&err2));
    }
}

#[test]
fn a_missing_config_file_is_an_error() {
    let (code, _, err) = run_pylon(&["-t", "-c", "/nonexistent/pylon.toml"], None);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/pylon.toml"), "{err}");
}

#[test]
fn a_listen_address_in_use_ends_the_process() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config =
        format!("[server]\nlisten = [\"{addr}\"]\n[access_log]\npath = \"off\"\n{OK_ROUTE}");
    let started = std::time::Instant::now();
    let (code, _, err) = run_pylon(&[], Some(&config));
    assert_ne!(code, 0);
    assert!(err.contains(&addr.to_string()), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn port_env_replaces_the_first_listen_port() {
    let up = Upstream::echo();
    let port = closed_port().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = [\"127.0.0.1:1\"]\npid_file = \"{}\"\n[access_log]\npath = \"off\"\n{}",
            dir.path().join("pid").display(),
            route("/u", up.addr, "")
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(pylon_bin())
        .arg("-c")
        .arg(&path)
        .env("PORT", port.to_string())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/u");
    let mut status = None;
    for _ in 0..200 {
        if let Ok(r) = client().get(&url).send() {
            status = Some(r.status());
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, Some(reqwest::StatusCode::OK));
}

#[test]
fn malformed_requests_get_400_and_the_gateway_keeps_serving() {
    let up = Upstream::echo();
    let mut gw = Gateway::start("", &route("/u", up.addr, ""));
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /u HTTP/1.1\r\nHost: gw\r\nBad Header Name: x\r\n\r\n",
        b"GET /u HTTP/1.1\r\nHost: gw\r\nContent-Length: abc\r\n\r\n",
        b"GET /u HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET /u HTTP/9.9\r\nHost: gw\r\n\r\n",
    ] {
        let r = raw_request(gw.addr, bad);
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(bad));
    }
    assert!(gw.is_running());
    assert_eq!(client().get(gw.url("/u")).send().unwrap().status(), 200);
    assert_eq!(up.hits(), 1, "no malformed request reached the upstream");
}

#[test]
fn check_lists_the_trusted_proxies_and_warns_when_they_hold_everyone() {
    let (code, out, err) = run_pylon(
        &["-t"],
        Some(&format!(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"0.0.0.0/0\", \"::/0\"]\n[access_log]\npath = \"off\"\n{OK_ROUTE}"
        )),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l == "trusted proxies: 10.0.0.0/8, 0.0.0.0/0, ::/0"),
        "{out}"
    );
    for net in ["0.0.0.0/0", "::/0"] {
        assert!(
            err.lines()
                .any(|l| l.contains("WARN") && l.contains(&format!("trusted_proxies holds {net}"))),
            "no warning for {net}: {err}"
        );
    }
    assert!(!err.contains("10.0.0.0/8"), "{err}");
    let (_, out, _) = run_pylon(
        &["-t"],
        Some(&format!("[access_log]\npath = \"off\"\n{OK_ROUTE}")),
    );
    assert!(out.lines().any(|l| l == "trusted proxies: none"), "{out}");
}

#[test]
fn check_writes_nothing_not_even_the_access_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let (code, _, err) = run_pylon(
        &["-t"],
        Some(&format!(
            "[access_log]\npath = \"{}\"\n{OK_ROUTE}",
            log.display()
        )),
    );
    assert_eq!(code, 0, "{err}");
    assert!(!log.exists(), "-t created {}", log.display());
    // a directory that is not there still fails the check
    let (code, _, err) = run_pylon(
        &["-t"],
        Some(&format!(
            "[access_log]\npath = \"{}/no/such/dir/access.log\"\n{OK_ROUTE}",
            dir.path().display()
        )),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("key `access_log.path`") && err.contains("cannot be opened for writing"),
        "{err}"
    );
}
