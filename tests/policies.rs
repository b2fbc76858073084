//! Route policies: body size limits, allowed methods, client allow and deny lists, header
//! transforms; each against a recording upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Body size
// ---------------------------------------------------------------------------------------------

#[test]
fn a_declared_body_over_the_limit_is_413_before_the_upstream_is_contacted() {
    let up = Upstream::echo();
    let gw = Gateway::start(
        "",
        &format!(
            "[limits]\nmax_body = \"1k\"\n{}{}{}",
            route("/small", up.addr, ""),
            route("/big", up.addr, "max_body = \"1m\""),
            route("/any", up.addr, "max_body = false"),
        ),
    );
    let c = client();
    let body = vec![b'x'; 2048];
    let r = c
        .post(gw.url("/small/x"))
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["connection"], "close");
    assert_eq!(
        r.json::<serde_json::Value>().unwrap(),
        error_body(413, "Payload too large.")
    );
    assert_eq!(up.hits(), 0);
    // exactly the limit passes
    let r = c
        .post(gw.url("/small/x"))
        .body(vec![b'x'; 1024])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    for path in ["/big/x", "/any/x"] {
        let r = c.post(gw.url(path)).body(body.clone()).send().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(up.last().body.len(), 2048);
    }
    let lines = gw.access_log_lines(4);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"POST /small/x HTTP/1.1\" 413 ")),
        "{lines:?}"
    );
}

#[test]
fn the_default_limit_is_16_mib() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/u", up.addr, ""));
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"POST /u/x HTTP/1.1\r\nHost: a\r\nContent-Length: 16777217\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert_eq!(parse_response(&buf[..n]).unwrap().status, 413);
}

#[test]
fn a_huge_upload_is_refused_at_once_and_read_for_at_most_timeouts_lingering() {
    let up = Upstream::echo();
    let gw = Gateway::start(
        "",
        &format!(
            "[timeouts]\nlingering = \"1s\"\n{}",
            route("/u", up.addr, "max_body = \"1m\"")
        ),
    );
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // 64 GiB declared: more than a second of loopback can carry
    s.write_all(b"POST /u/x HTTP/1.1\r\nHost: a\r\nContent-Length: 68719476736\r\n\r\n")
        .unwrap();
    let started = std::time::Instant::now();
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let chunk = vec![b'x'; 1 << 16];
            loop {
                if s.write(&chunk).is_err() {
                    return started.elapsed();
                }
                if started.elapsed() > Duration::from_secs(20) {
                    return started.elapsed();
                }
            }
        })
    };
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert_eq!(parse_response(&buf[..n]).unwrap().status, 413);
    let stopped = writer.join().unwrap();
    assert!(
        stopped < Duration::from_secs(5),
        "the gateway read the refused body for {stopped:?}, past timeouts.lingering"
    );
    assert_eq!(up.hits(), 0);
}

#[test]
fn a_chunked_body_that_grows_past_the_limit_is_cut_and_the_instance_not_blamed() {
    let up = Upstream::echo();
    let metrics = closed_port();
    let gw = Gateway::start(
        "",
        &format!(
            "[metrics]\nlisten = \"{metrics}\"\n{}",
            route(
                "/u",
                up.addr,
                "max_body = \"1k\"\npassive = { failures = 1, cooldown = \"30s\" }"
            )
        ),
    );
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /u/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..8 {
        let chunk = format!("200\r\n{}\r\n", "y".repeat(0x200));
        if s.write_all(chunk.as_bytes()).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let _ = s.read_to_end(&mut got);
    let r = parse_response(&got).expect("no answer: the client got a reset");
    assert_eq!(r.status, 413);
    // the upstream's request was aborted mid-body (it never got a whole one), and the
    // instance still takes traffic
    assert!(
        up.seen().iter().all(|s| s.body_broken),
        "a whole body reached the upstream"
    );
    assert_eq!(
        client().get(gw.url("/u/next")).send().unwrap().status(),
        200
    );
    let text = metrics_text(metrics);
    assert!(!text.contains("pylon_upstream_errors_total{"), "{text}");
    assert!(
        text.contains("pylon_gateway_errors_total{route=\"/u\",code=\"413\"} 1"),
        "{text}"
    );
    let lines = gw.access_log_lines(2);
    assert!(lines.iter().any(|l| l.contains(" 413 ")), "{lines:?}");
}

#[test]
fn a_chunked_body_within_the_limit_passes_whole() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/u", up.addr, "max_body = \"1k\""));
    let r = raw_request(
        gw.addr,
        b"POST /u/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n200\r\n".iter()
            .copied()
            .chain(vec![b'z'; 0x200])
            .chain(b"\r\n0\r\n\r\n".iter().copied())
            .collect::<Vec<u8>>()
            .as_slice(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(up.last().body.len(), 0x200);
}

// ---------------------------------------------------------------------------------------------
// Methods
// ---------------------------------------------------------------------------------------------

#[test]
fn a_method_the_route_does_not_take_is_405_with_allow() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/u", up.addr, "methods = [\"GET\", \"POST\"]"));
    let c = client();
    let r = c.delete(gw.url("/u/1")).send().unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, POST, HEAD");
    assert_eq!(
        r.json::<serde_json::Value>().unwrap(),
        error_body(405, "Method not allowed.")
    );
    assert_eq!(up.hits(), 0);
    assert_eq!(c.get(gw.url("/u/1")).send().unwrap().status(), 200);
    assert_eq!(c.head(gw.url("/u/1")).send().unwrap().status(), 200);
    assert_eq!(c.post(gw.url("/u/1")).send().unwrap().status(), 200);
    // a preflight is still the gateway's
    let r = c
        .request(reqwest::Method::OPTIONS, gw.url("/u/1"))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "DELETE")
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(up.hits(), 3);
}

// ---------------------------------------------------------------------------------------------
// Allow and deny
// ---------------------------------------------------------------------------------------------

#[test]
fn only_allowed_clients_pass_deny_first_through_trusted_proxies() {
    let up = Upstream::echo();
    let gw = Gateway::start(
        "trusted_proxies = [\"127.0.0.0/8\"]",
        &route(
            "/office",
            up.addr,
            "allow = [\"10.0.0.0/8\", \"2001:db8::/32\"]\ndeny = [\"10.1.0.0/16\", \"2001:db8:bad::/48\"]",
        ),
    );
    let c = client();
    let status = |client_ip: &str| {
        c.get(gw.url("/office/x"))
            .header("X-Forwarded-For", client_ip)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    for (ip, expected) in [
        ("10.2.3.4", 200),
        ("10.1.2.3", 403),
        ("192.0.2.1", 403),
        ("2001:db8::1", 200),
        ("2001:db8:bad::1", 403),
        ("2001:db9::1", 403),
        ("::ffff:10.2.3.4", 200),
    ] {
        assert_eq!(status(ip), expected, "{ip}");
    }
    // the proxy itself is not in the list
    assert_eq!(c.get(gw.url("/office/x")).send().unwrap().status(), 403);
    assert_eq!(up.hits(), 3);
    let r = c
        .get(gw.url("/office/x"))
        .header("X-Forwarded-For", "192.0.2.1")
        .send()
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().unwrap(),
        error_body(403, "Forbidden.")
    );
}

#[test]
fn a_refused_client_is_still_counted_against_its_limit() {
    let up = Upstream::echo();
    let gw = Gateway::start(
        "",
        &format!(
            "[rate_limit]\nrequests = 3\nwindow = \"1m\"\n{}{}",
            route("/office", up.addr, "allow = [\"10.0.0.0/8\"]"),
            route("/open", up.addr, ""),
        ),
    );
    let c = client();
    for remaining in [2, 1, 0] {
        let r = c.get(gw.url("/office/x")).send().unwrap();
        assert_eq!(r.status(), 403);
        let field = r.headers()["ratelimit"].to_str().unwrap().to_string();
        assert!(field.contains(&format!("r={remaining};")), "{field}");
    }
    // the same client's budget is spent on the other routes of the policy too
    assert_eq!(c.get(gw.url("/open/x")).send().unwrap().status(), 429);
}

// ---------------------------------------------------------------------------------------------
// Header transforms
// ---------------------------------------------------------------------------------------------

#[test]
fn request_and_response_fields_are_set_and_removed() {
    let up = Upstream::start(std::sync::Arc::new(|_seen: &Seen| {
        Reply::ok("ok")
            .header("x-internal-trace", "abc")
            .header("cache-control", "public, max-age=60")
    }));
    let gw = Gateway::start(
        "",
        &route(
            "/api",
            up.addr,
            "request_headers = { set = { \"X-Api-Version\" = \"2\", \"X-Client-Ip\" = \"{client_ip}\", \"X-Route\" = \"{route} {host} {request_id}\" }, remove = [\"Cookie\"] }\n\
             response_headers = { set = { \"Cache-Control\" = \"no-store\" }, remove = [\"X-Internal-Trace\"] }",
        ),
    );
    let r = client()
        .get(gw.url("/api/x"))
        .header("Cookie", "session=secret")
        .header("X-Api-Version", "1")
        .header("X-Request-Id", "req-1")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(r.headers().get("x-internal-trace").is_none());
    for name in HELMET_HEADERS {
        assert!(r.headers().get(name).is_some(), "{name}");
    }
    let seen = up.last();
    assert_eq!(seen.header("x-api-version"), Some("2"));
    assert_eq!(seen.header("x-client-ip"), Some("127.0.0.1"));
    assert_eq!(
        seen.header("x-route"),
        Some(format!("/api {} req-1", gw.addr).as_str())
    );
    assert!(!seen.has_header("cookie"));
    // the gateway's own forwarding fields are untouched
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-request-id"), Some("req-1"));
}

#[test]
fn routes_without_policies_are_unchanged() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/plain", up.addr, ""));
    let c = client();
    let r = c
        .delete(gw.url("/plain/x"))
        .header("Cookie", "a=1")
        .body(vec![b'q'; 4096])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert!(seen.has_header("cookie"));
    assert_eq!(seen.body.len(), 4096);
}
