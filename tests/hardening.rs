//! A hostile client's requests: every malformed one gets the gateway's own answer, slow
//! clients are cut, pipelined requests are answered, and nothing a client gets wrong
//! counts against an upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Write `request` (ignoring a write the gateway cut short), read until one whole final
/// answer came or the gateway closed, and return it with how long that took.
fn exchange(addr: SocketAddr, request: &[u8]) -> (Option<RawResponse>, Vec<u8>, Duration) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let start = Instant::now();
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    while !complete(&buf) {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    (parse_response(&buf), buf, start.elapsed())
}

/// Whether `buf` ends with a whole final (non-1xx) answer that has a Content-Length.
fn complete(buf: &[u8]) -> bool {
    let Some(start) = buf
        .windows(9)
        .rposition(|w| w.starts_with(b"HTTP/1.1 ") && w[8] == b' ')
    else {
        return false;
    };
    let Some(r) = parse_response(&buf[start..]) else {
        return false;
    };
    let len = r
        .header("content-length")
        .and_then(|l| l.parse::<usize>().ok());
    r.status >= 200 && len.is_some_and(|len| r.body.len() >= len)
}

fn message(code: u16) -> &'static str {
    match code {
        400 => "Bad request.",
        405 => "Method not allowed.",
        408 => "Request timeout.",
        414 => "URI too long.",
        431 => "Request header fields too large.",
        501 => "Not implemented.",
        _ => panic!("no message for {code}"),
    }
}

/// The gateway's own answer: its status, JSON body, security headers, request id.
fn assert_own_answer(r: &RawResponse, code: u16, case: &str) {
    assert_eq!(r.status, code, "{case}: {}", r.body_text());
    let body: serde_json::Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{case}: body is not JSON ({e}): {:?}", r.body_text()));
    assert_eq!(body, error_body(code, message(code)), "{case}");
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8"),
        "{case}"
    );
    for name in HELMET_HEADERS {
        assert!(r.header(name).is_some(), "{case}: no {name}");
    }
    assert!(
        r.header("x-request-id").is_some_and(|id| id.len() == 36),
        "{case}: no request id"
    );
    assert_eq!(r.header("server"), None, "{case}");
}

/// Requests nginx refuses, each with the status Pylon must answer.
fn corpus() -> Vec<(&'static str, Vec<u8>, u16)> {
    let mut cases: Vec<(&'static str, Vec<u8>, u16)> = vec![
        ("two Host fields", b"GET /api/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), 400),
        ("no Host on HTTP/1.1", b"GET /api/x HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("Host with a space", b"GET /api/x HTTP/1.1\r\nHost: good evil\r\n\r\n".to_vec(), 400),
        ("empty Host", b"GET /api/x HTTP/1.1\r\nHost:\r\n\r\n".to_vec(), 400),
        ("Host with userinfo", b"GET /api/x HTTP/1.1\r\nHost: u@a\r\n\r\n".to_vec(), 400),
        ("NUL in a field", b"GET /api/x HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n".to_vec(), 400),
        ("control byte in a field", b"GET /api/x HTTP/1.1\r\nHost: a\r\nX-A: a\x07b\r\n\r\n".to_vec(), 400),
        ("space before the colon", b"GET /api/x HTTP/1.1\r\nHost : a\r\n\r\n".to_vec(), 400),
        ("obsolete line folding", b"GET /api/x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n".to_vec(), 400),
        ("bad field name", b"GET /api/x HTTP/1.1\r\nHost: a\r\nX(A: b\r\n\r\n".to_vec(), 400),
        ("Content-Length +5", b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello".to_vec(), 400),
        ("Content-Length 5,5", b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5,5\r\n\r\nhello".to_vec(), 400),
        ("Content-Length 5, 5", b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello".to_vec(), 400),
        ("Content-Length twice", b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(), 400),
        ("Content-Length hex", b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello".to_vec(), 400),
        ("both framings", b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 400),
        ("chunked on HTTP/1.0", b"POST /api/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 400),
        ("garbage request line", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec(), 400),
        ("four-part request line", b"GET /api/x HTTP/1.1 x\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("two spaces", b"GET  /api/x HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("unknown version", b"GET /api/x HTTP/1.7\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("no version", b"GET /api/x\r\n\r\n".to_vec(), 400),
        ("NUL in the target", b"GET /api/x\x00y HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("tab in the target", b"GET /api/x\ty HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("target not a path", b"GET api/x HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("absolute target with userinfo", b"GET http://u@a/api/x HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("bare CR", b"GET /api/x HTTP/1.1\rHost: a\r\n\r\n".to_vec(), 400),
        ("dot segment", b"GET /api/../admin HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("encoded slash dot segment", b"GET /api/..%2fadmin HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("encoded backslash dot segment", b"GET /api/%5c..%5cadmin HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("backslash dot segment", b"GET /api/..\\admin HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("encoded NUL", b"GET /api/x%00.json HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("CONNECT", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n".to_vec(), 405),
        ("TRACE", b"TRACE /api/x HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 405),
        ("gzip, chunked", b"POST /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n".to_vec(), 501),
        ("gzip", b"POST /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(), 501),
        ("Transfer-Encoding twice", b"POST /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 501),
    ];
    let long_uri = format!(
        "GET /api/{} HTTP/1.1\r\nHost: a\r\n\r\n",
        "a".repeat(200_000)
    );
    cases.push(("200 KB URI", long_uri.into_bytes(), 414));
    let big_field = format!(
        "GET /api/x HTTP/1.1\r\nHost: a\r\nCookie: {}\r\n\r\n",
        "c".repeat(100_000)
    );
    cases.push(("100 KB field", big_field.into_bytes(), 431));
    let many: String = (0..200).map(|i| format!("X-F{i}: v\r\n")).collect();
    cases.push((
        "200 fields",
        format!("GET /api/x HTTP/1.1\r\nHost: a\r\n{many}\r\n").into_bytes(),
        431,
    ));
    cases
}

#[test]
fn every_malformed_request_gets_the_gateways_own_answer_and_a_log_line() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/api", up.addr, ""));
    let cases = corpus();
    for (case, request, code) in &cases {
        let (r, raw, _) = exchange(gw.addr, request);
        let r = r.unwrap_or_else(|| {
            panic!("{case}: no answer, got {:?}", String::from_utf8_lossy(&raw))
        });
        assert_own_answer(&r, *code, case);
    }
    assert_eq!(up.hits(), 0, "a refused request reached the upstream");
    let lines = gw.access_log_lines(cases.len());
    assert_eq!(
        lines.len(),
        cases.len(),
        "one access-log line each: {lines:#?}"
    );
    // lines are written as each request finishes, on whichever thread served it: compare
    // the statuses as a multiset
    let status_of = |line: &String| -> u16 {
        let after = line.split("\" ").nth(1).unwrap_or("");
        after.split(' ').next().unwrap_or("").parse().unwrap_or(0)
    };
    let mut logged: Vec<u16> = lines.iter().map(status_of).collect();
    let mut expected: Vec<u16> = cases.iter().map(|(_, _, code)| *code).collect();
    logged.sort_unstable();
    expected.sort_unstable();
    assert_eq!(logged, expected, "{lines:#?}");
    // the gateway is still there for everyone else
    assert_eq!(
        client().get(gw.url("/api/ok")).send().unwrap().status(),
        200
    );
}

#[test]
fn refusals_are_counted_in_the_metrics() {
    let up = Upstream::echo();
    let metrics = closed_port();
    let gw = Gateway::start(
        "",
        &format!(
            "[metrics]\nlisten = \"{metrics}\"\n{}",
            route("/api", up.addr, "")
        ),
    );
    exchange(
        gw.addr,
        b"GET /api/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    );
    exchange(
        gw.addr,
        b"GET /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    );
    let text = metrics_text(metrics);
    assert!(
        text.contains("pylon_gateway_errors_total{route=\"\",code=\"400\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("pylon_gateway_errors_total{route=\"\",code=\"501\"} 1"),
        "{text}"
    );
}

#[test]
fn a_refused_head_still_gets_cors_headers_for_an_allowed_origin() {
    let up = Upstream::echo();
    let gw = Gateway::start(
        "",
        &format!(
            "[cors]\nallow_origins = [\"https://app.example\"]\n{}",
            route("/api", up.addr, "")
        ),
    );
    let (r, _, _) = exchange(
        gw.addr,
        b"GET /api/x HTTP/1.1\r\nHost: a\r\nHost: b\r\nOrigin: https://app.example\r\n\r\n",
    );
    let r = r.unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
}

#[test]
fn a_head_only_refusal_has_no_body() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/api", up.addr, ""));
    let (r, _, _) = exchange(
        gw.addr,
        b"HEAD /api/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    );
    let r = r.unwrap();
    assert_eq!(r.status, 400);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), Some("66"));
}

// ---------------------------------------------------------------------------------------------
// Slow clients
// ---------------------------------------------------------------------------------------------

fn slow_gateway(up: &Upstream) -> Gateway {
    Gateway::start(
        "",
        &format!(
            "[timeouts]\nclient_header = \"1s\"\nclient_idle = \"1s\"\n{}",
            route("/api", up.addr, "")
        ),
    )
}

#[test]
fn a_head_that_does_not_arrive_in_time_gets_408() {
    let up = Upstream::echo();
    let gw = slow_gateway(&up);
    let (r, _, took) = exchange(gw.addr, b"GET /api/x HTTP/1.1\r\nHost: a\r\n");
    assert_own_answer(&r.unwrap(), 408, "half a head");
    assert!(took >= Duration::from_millis(900), "cut after {took:?}");
    assert!(took < Duration::from_secs(4), "cut after {took:?}");
    let lines = gw.access_log_lines(1);
    assert!(
        lines[0].contains("\"GET /api/x HTTP/1.1\" 408 "),
        "{lines:?}"
    );
}

#[test]
fn a_client_sending_a_byte_at_a_time_is_cut_at_the_deadline() {
    let up = Upstream::echo();
    let gw = slow_gateway(&up);
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let request = b"GET /api/x HTTP/1.1\r\nHost: a\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for &b in request.iter().cycle().take(200) {
        if s.write_all(&[b]).is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if start.elapsed() > Duration::from_secs(6) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = start.elapsed();
    let r = parse_response(&got).expect("no 408 before the close");
    assert_eq!(r.status, 408);
    assert!(took < Duration::from_secs(3), "held for {took:?}");
    assert_eq!(up.hits(), 0);
}

#[test]
fn a_connection_that_sends_nothing_is_closed_without_an_answer() {
    let up = Upstream::echo();
    let gw = slow_gateway(&up);
    let (r, raw, took) = exchange(gw.addr, b"");
    assert!(r.is_none() && raw.is_empty(), "{raw:?}");
    assert!(took < Duration::from_secs(3), "held for {took:?}");
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_client_idle() {
    let up = Upstream::echo();
    let gw = slow_gateway(&up);
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let n = s.read(&mut buf).unwrap();
    assert_eq!(parse_response(&buf[..n]).unwrap().status, 200);
    // slower than client_header but within client_idle: the next request is served
    std::thread::sleep(Duration::from_millis(500));
    s.write_all(b"GET /api/y HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let n = s.read(&mut buf).unwrap();
    assert_eq!(parse_response(&buf[..n]).unwrap().status, 200);
    let idle = Instant::now();
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the idle connection got bytes instead of a close");
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "closed after {waited:?}"
    );
}

#[test]
fn connections_over_the_cap_are_closed_at_once_and_counted() {
    let up = Upstream::echo();
    let metrics = closed_port();
    let gw = Gateway::start(
        "max_connections = 3",
        &format!(
            "[metrics]\nlisten = \"{metrics}\"\n{}",
            route("/api", up.addr, "")
        ),
    );
    let held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(gw.addr).unwrap();
            s.write_all(b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap();
            let mut buf = [0u8; 4096];
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            assert!(s.read(&mut buf).unwrap() > 0);
            s
        })
        .collect();
    let (r, raw, took) = exchange(gw.addr, b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(
        r.is_none() && raw.is_empty(),
        "the fourth connection was served"
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let text = metrics_text(metrics);
    assert!(text.contains("pylon_downstream_connections 3\n"), "{text}");
    assert!(
        text.contains("pylon_downstream_connections_refused_total 1\n"),
        "{text}"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(client().get(gw.url("/api/x")).send().unwrap().status(), 200);
}

// ---------------------------------------------------------------------------------------------
// Pipelining
// ---------------------------------------------------------------------------------------------

#[test]
fn pipelined_requests_are_all_answered_in_order() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/api", up.addr, ""));
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(
        b"GET /api/p1 HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /api/p2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
          GET /api/p3 HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /api/p4 HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .unwrap();
    let answers = read_answers(&mut s, 4);
    for (r, target) in answers.iter().zip(["/p1", "/p2", "/p3", "/p4"]) {
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("connection")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("keep-alive")
        );
        let echo: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(echo["target"], target);
    }
    let seen = up.seen();
    assert_eq!(seen[1].body, b"hello");
    // and the connection is still good for more
    s.write_all(b"GET /api/p5 HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(read_answers(&mut s, 1)[0].status, 200);
}

#[test]
fn a_malformed_request_in_a_pipeline_is_refused_after_the_good_ones() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/api", up.addr, ""));
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"GET /api/p1 HTTP/1.1\r\nHost: a\r\n\r\nGET /api/p2 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let first = text.find("HTTP/1.1 200").expect("no 200");
    let second = text.find("HTTP/1.1 400").expect("no 400");
    assert!(first < second, "{text}");
    assert_eq!(up.hits(), 1);
}

// ---------------------------------------------------------------------------------------------
// What the client gets wrong never counts against an upstream
// ---------------------------------------------------------------------------------------------

const PASSIVE: &str = "passive = { failures = 3, cooldown = \"30s\" }";

#[test]
fn bad_framing_never_ejects_an_instance() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/api", up.addr, PASSIVE));
    for _ in 0..5 {
        let (r, _, _) = exchange(
            gw.addr,
            b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5,5\r\n\r\nhello",
        );
        assert_eq!(r.unwrap().status, 400);
    }
    assert_eq!(client().get(gw.url("/api/x")).send().unwrap().status(), 200);
    assert_eq!(up.hits(), 1);
}

#[test]
fn clients_that_abort_or_leave_never_eject_an_instance() {
    let slow = Upstream::fixed(Reply::ok("late").delayed(Duration::from_millis(600)));
    let metrics = closed_port();
    let gw = Gateway::start(
        "",
        &format!(
            "[metrics]\nlisten = \"{metrics}\"\n{}",
            route("/api", slow.addr, PASSIVE)
        ),
    );
    for _ in 0..4 {
        // a body that stops half way
        let mut s = TcpStream::connect(gw.addr).unwrap();
        s.write_all(b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        drop(s);
        // a client that leaves while the upstream thinks
        let mut s = TcpStream::connect(gw.addr).unwrap();
        s.write_all(b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        drop(s);
        // a chunked body cut off mid-chunk
        let mut s = TcpStream::connect(gw.addr).unwrap();
        s.write_all(
            b"POST /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc",
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        drop(s);
    }
    std::thread::sleep(Duration::from_millis(800));
    let r = client().get(gw.url("/api/x")).send().unwrap();
    assert_eq!(
        r.status(),
        200,
        "the instance was ejected for the clients' faults"
    );
    let text = metrics_text(metrics);
    assert!(!text.contains("pylon_upstream_errors_total{"), "{text}");
    let healthy = format!(
        "pylon_upstream_healthy{{route=\"/api\",upstream=\"{}\"}} 1\n",
        slow.addr
    );
    assert!(text.contains(&healthy), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Host, absolute targets, X-Real-IP, TRACE
// ---------------------------------------------------------------------------------------------

#[test]
fn an_absolute_target_names_the_host_with_or_without_a_host_field() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/api", up.addr, "preserve_host = true"));
    for request in [
        &b"GET http://shop.example/api/x?q=1 HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n"[..],
        b"GET http://shop.example/api/x?q=1 HTTP/1.1\r\nConnection: close\r\n\r\n",
    ] {
        let r = raw_request(gw.addr, request);
        assert_eq!(r.status, 200, "{}", r.body_text());
        let seen = up.last();
        assert_eq!(seen.target, "/x?q=1");
        assert_eq!(seen.header("host"), Some("shop.example"));
        assert_eq!(seen.header("x-forwarded-host"), Some("shop.example"));
    }
}

#[test]
fn x_real_ip_from_an_untrusted_client_is_replaced() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/api", up.addr, ""));
    client()
        .get(gw.url("/api/x"))
        .header("X-Real-IP", "10.9.8.7")
        .send()
        .unwrap();
    assert_eq!(up.last().header("x-real-ip"), Some("127.0.0.1"));
}

#[test]
fn trace_is_proxied_only_where_a_route_allows_it() {
    let up = Upstream::echo();
    let gw = Gateway::start(
        "",
        &(route("/api", up.addr, "") + &route("/debug", up.addr, "allow_trace = true")),
    );
    let r = raw_request(
        gw.addr,
        b"TRACE /api/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_own_answer(&r, 405, "TRACE");
    assert!(r.header("allow").is_some_and(|a| a.contains("GET")));
    let r = raw_request(
        gw.addr,
        b"TRACE /debug/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(up.hits(), 1);
}

// ---------------------------------------------------------------------------------------------
// Upstreams that misbehave
// ---------------------------------------------------------------------------------------------

fn leak(bytes: Vec<u8>) -> &'static [u8] {
    Box::leak(bytes.into_boxed_slice())
}

#[test]
fn informational_answers_are_relayed_bare_and_bounded() {
    let few = BrokenUpstream::start(Misbehaviour::Fixed(leak(
        [
            b"HTTP/1.1 102 Processing\r\n\r\n".repeat(3),
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        ]
        .concat(),
    )));
    let many = BrokenUpstream::start(Misbehaviour::Fixed(leak(
        [
            b"HTTP/1.1 102 Processing\r\n\r\n".repeat(100),
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        ]
        .concat(),
    )));
    let gw = Gateway::start(
        "",
        &(route("/few", few.addr, "") + &route("/many", many.addr, "")),
    );
    let (_, raw, _) = exchange(
        gw.addr,
        b"GET /few/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&raw).to_string();
    let parts: Vec<&str> = text.split("HTTP/1.1 ").filter(|p| !p.is_empty()).collect();
    assert_eq!(parts.len(), 4, "{text}");
    for informational in &parts[..3] {
        assert!(informational.starts_with("102"), "{text}");
        assert!(
            !informational
                .to_ascii_lowercase()
                .contains("content-security-policy"),
            "{informational}"
        );
        assert!(
            !informational
                .to_ascii_lowercase()
                .contains("access-control"),
            "{informational}"
        );
    }
    assert!(parts[3].starts_with("200"), "{text}");
    assert!(parts[3]
        .to_ascii_lowercase()
        .contains("content-security-policy"));

    let (_, raw, _) = exchange(
        gw.addr,
        b"GET /many/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&raw).to_string();
    assert_eq!(text.matches("HTTP/1.1 102").count(), 16, "{text}");
    assert!(text.contains("HTTP/1.1 502"), "{text}");
    assert!(text.contains("\"message\":\"Bad gateway.\""), "{text}");
}

#[test]
fn a_response_cut_short_is_logged_with_what_was_sent_and_counted() {
    let cut = BrokenUpstream::start(Misbehaviour::Fixed(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
    ));
    let metrics = closed_port();
    let gw = Gateway::start_with_log_format(
        "",
        &format!(
            "[metrics]\nlisten = \"{metrics}\"\n{}",
            route("/cut", cut.addr, "")
        ),
        "json",
    );
    let (_, raw, _) = exchange(gw.addr, b"GET /cut/x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"));
    let lines = gw.access_log_lines(1);
    let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes"], 10, "{line}");
    assert!(
        line["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("Upstream")),
        "{line}"
    );
    let text = metrics_text(metrics);
    assert!(
        text.contains("pylon_upstream_errors_total{route=\"/cut\"} 1"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Random heads
// ---------------------------------------------------------------------------------------------

/// Bytes a mutation may put into a request head.
const NOISE: &[&[u8]] = &[
    b"\x00",
    b"\r",
    b"\n",
    b"\r\n",
    b" ",
    b"\t",
    b":",
    b",",
    b"\x7f",
    b"\xff",
    b"%00",
    b"%2f",
    b"..",
    b"\\",
    b"Host: x\r\n",
    b"Content-Length: 3\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: -1\r\n",
    b"Expect: 100-continue\r\n",
    b"Upgrade: h2c\r\n",
    b"HTTP/1.1",
    b"http://a/",
    b"@",
    b"?",
    b"#",
    b"\xc3\xa9",
];

fn mutate_head(rng: &mut fastrand::Rng, head: &[u8]) -> Vec<u8> {
    let mut out = head.to_vec();
    for _ in 0..rng.usize(1..=4) {
        let at = rng.usize(..=out.len());
        match rng.u8(0..4) {
            0 => {
                let noise = NOISE[rng.usize(..NOISE.len())];
                out.splice(at..at, noise.iter().copied());
            }
            1 if at < out.len() => {
                out.remove(at);
            }
            2 if at < out.len() => out[at] = rng.u8(..),
            _ => {
                let end = (at + rng.usize(1..8)).min(out.len());
                let piece = out[at..end].to_vec();
                out.splice(at..at, piece);
            }
        }
    }
    out
}

#[test]
fn mutated_heads_get_the_upstreams_answer_or_the_gateways_never_pingoras() {
    let up = Upstream::echo();
    let gw = Gateway::start(
        "",
        &format!(
            "[timeouts]\nclient_header = \"1s\"\n{}",
            route("/api", up.addr, "")
        ),
    );
    let seeds: &[&[u8]] = &[
        b"GET /api/x?q=1 HTTP/1.1\r\nHost: a.example\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n",
        b"POST /api/x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /api/x HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"GET http://a.example/api/x HTTP/1.1\r\n\r\n",
    ];
    let mut rng = fastrand::Rng::with_seed(0x0bad_5eed);
    let (mut proxied, mut refused, mut silent) = (0, 0, 0);
    let started = Instant::now();
    for case in 0..1500 {
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
        let request = mutate_head(&mut rng, seeds[case % seeds.len()]);
        let mut s = TcpStream::connect(gw.addr).unwrap();
        // an answer comes at once or not at all (a request waiting for more body)
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let _ = s.write_all(&request);
        let mut raw = Vec::new();
        let mut chunk = [0u8; 16384];
        while !complete(&raw) {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
            }
        }
        let shown = String::from_utf8_lossy(&request).into_owned();
        if raw.is_empty() {
            silent += 1;
            continue;
        }
        let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
        assert!(!text.contains("server: pingora"), "{shown:?} got {text}");
        let r = parse_response(&raw).unwrap_or_else(|| panic!("{shown:?}: not HTTP: {text}"));
        let body: serde_json::Value = serde_json::from_slice(&r.body)
            .or_else(|_| {
                // a pipelined or 1xx-prefixed answer: the last JSON document
                let at = text.rfind("\r\n\r\n{").map_or(0, |i| i + 4);
                serde_json::from_slice(&raw[at..])
            })
            .unwrap_or_else(|_| panic!("{shown:?}: a body that is not JSON: {text}"));
        if body.get("target").is_some() {
            proxied += 1;
        } else {
            assert_eq!(body["status"], "Error", "{shown:?}: {text}");
            assert!(r.header("x-request-id").is_some(), "{shown:?}: {text}");
            refused += 1;
        }
    }
    eprintln!("mutated heads: {proxied} proxied, {refused} refused by the gateway, {silent} with no answer (closed, or waiting for more)");
    assert!(
        refused > 100 && proxied > 100,
        "{proxied} proxied, {refused} refused"
    );
    assert_eq!(
        client().get(gw.url("/api/ok")).send().unwrap().status(),
        200
    );
}

#[test]
fn with_h2c_on_a_request_shorter_than_the_preface_is_answered_at_once() {
    let up = Upstream::echo();
    let gw = Gateway::start("h2c = true", &route("/api", up.addr, ""));
    // 23 bytes: fewer than HTTP/2's 24-byte preface
    let request = b"GET /api/x HTTP/1.0\r\n\r\n";
    assert!(request.len() < 24);
    let (r, _, took) = exchange(gw.addr, request);
    assert_eq!(r.expect("no answer").status, 200);
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn a_method_that_is_not_upper_case_gets_the_gateways_400_and_goes_nowhere() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/a", up.addr, ""));
    for method in ["get", "Get", "helloGET"] {
        let r = raw_request(
            gw.addr,
            format!("{method} /a/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 400, "{method}");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap(),
            error_body(400, "Bad request."),
            "{method}"
        );
    }
    assert_eq!(up.hits(), 0);
    // an upper-case extension method is forwarded
    let r = raw_request(
        gw.addr,
        b"PROPFIND /a/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(up.last().method, "PROPFIND");
}

#[test]
fn header_names_with_underscores_are_dropped_unless_the_route_keeps_them() {
    let up = Upstream::echo();
    let gw = Gateway::start(
        "",
        &format!(
            "{}{}",
            route("/drop", up.addr, ""),
            route("/keep", up.addr, "underscores_in_headers = true")
        ),
    );
    let send = |path: &str| {
        raw_request(
            gw.addr,
            format!(
                "GET {path} HTTP/1.1\r\nHost: a\r\nContent_Length: 5\r\nX_Api_Key: k\r\nX-Fine: 1\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
    };
    assert_eq!(send("/drop/x").status, 200);
    let seen = up.last();
    assert!(
        !seen.headers.iter().any(|(k, _)| k.contains('_')),
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.header("x-fine"), Some("1"));
    assert_eq!(send("/keep/x").status, 200);
    let seen = up.last();
    assert_eq!(
        seen.header("content_length"),
        Some("5"),
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.header("x_api_key"), Some("k"));
}

#[test]
fn a_client_that_breaks_off_its_upload_fills_no_error_log() {
    let up = Upstream::echo();
    let admin = closed_port();
    let gw = Gateway::start(
        "",
        &format!(
            "[admin]\nlisten = \"{admin}\"\n{}",
            route("/a", up.addr, "")
        ),
    );
    for _ in 0..5 {
        let mut s = TcpStream::connect(gw.addr).unwrap();
        s.write_all(b"POST /a/x HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nsome")
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let socket = socket2::SockRef::from(&s);
        socket.set_linger(Some(Duration::ZERO)).unwrap();
        drop(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let stderr = gw.stderr();
    assert!(
        !stderr.lines().any(|l| l.contains("ERROR")),
        "client faults logged as errors:\n{stderr}"
    );
    // the exchanges are still logged, as what the client got (nothing)
    let lines = gw.access_log_lines(5);
    assert_eq!(lines.len(), 5, "{lines:?}");
    // and counted
    let text = metrics_text(admin);
    assert!(
        text.contains("pylon_client_errors_total{route=\"/a\"} 5"),
        "{}",
        text.lines()
            .filter(|l| l.contains("errors_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn a_request_pipelined_right_after_a_chunked_body_is_answered_too() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/a", up.addr, ""));
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // both written at once
    s.write_all(
        b"POST /a/first HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
          GET /a/second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all);
    assert_eq!(
        text.matches("HTTP/1.1 200").count(),
        2,
        "both answered: {text}"
    );
    let seen = up.seen();
    let targets: Vec<&str> = seen.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets, ["/first", "/second"]);
    assert_eq!(seen[0].body, b"hello");
    assert!(seen[1].body.is_empty());
}

#[test]
fn an_expectation_other_than_100_continue_gets_417_and_goes_nowhere() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/a", up.addr, ""));
    let r = raw_request(
        gw.addr,
        b"POST /a/x HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(r.status, 417);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap(),
        error_body(417, "Expectation failed.")
    );
    assert_eq!(up.hits(), 0);
    // 100-continue is met: the interim answer, then the final one, and the connection
    // stays open for the next request
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"POST /a/x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"hello").unwrap();
    let mut all = buf[..n].to_vec();
    while !String::from_utf8_lossy(&all).contains("HTTP/1.1 200") || !all.ends_with(b"}") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&all));
        all.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&all).to_ascii_lowercase();
    assert!(!text.contains("connection: close"), "{text}");
    assert_eq!(up.last().body, b"hello");
}
