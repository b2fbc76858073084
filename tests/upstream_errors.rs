//! Upstream trouble becomes a clear JSON 502 or 504, never Pingora's bare default.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn assert_json_error(r: reqwest::blocking::Response, code: u16, message: &str) {
    assert_eq!(r.status(), code);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    // the gateway's own answers carry the security headers too
    for h in HELMET_HEADERS {
        assert!(r.headers().contains_key(h), "{code} lacks {h}");
    }
    assert!(r.headers().contains_key("x-request-id"));
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body, error_body(code, message));
}

#[test]
fn read_timeout_gives_504_once_the_configured_time_has_passed() {
    let slow = Upstream::fixed(Reply::ok("late").delayed(Duration::from_secs(3)));
    let gw = Gateway::start(
        "",
        &route("/slow", slow.addr, "timeouts = { read = \"1s\" }"),
    );
    let started = Instant::now();
    let r = client().get(gw.url("/slow/x")).send().unwrap();
    let took = started.elapsed();
    assert_json_error(r, 504, "Gateway timeout.");
    assert!(took >= Duration::from_secs(1), "answered after {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "answered after {took:?}, not at the 1s timeout"
    );
}

#[test]
fn a_silent_upstream_times_out_with_504() {
    let silent = BrokenUpstream::start(Misbehaviour::Silent);
    let gw = Gateway::start(
        "",
        &format!(
            "[timeouts]\nread = \"1s\"\n{}",
            route("/s", silent.addr, "")
        ),
    );
    assert_json_error(
        client().get(gw.url("/s")).send().unwrap(),
        504,
        "Gateway timeout.",
    );
}

#[test]
fn connect_timeout_gives_504() {
    // a listener whose accept queue is full drops further SYNs: connecting hangs
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            fillers.push(s);
        }
    }
    let gw = Gateway::start("", &route("/c", addr, "timeouts = { connect = \"500ms\" }"));
    let started = Instant::now();
    let r = client().get(gw.url("/c")).send().unwrap();
    assert_json_error(r, 504, "Gateway timeout.");
    assert!(started.elapsed() >= Duration::from_millis(500));
    drop(sock);
}

#[test]
fn a_refused_connection_gives_502() {
    let gw = Gateway::start("", &route("/down", closed_port(), ""));
    assert_json_error(
        client().get(gw.url("/down")).send().unwrap(),
        502,
        "Bad gateway.",
    );
}

#[test]
fn a_reset_connection_gives_502() {
    let broken = BrokenUpstream::start(Misbehaviour::Reset);
    let gw = Gateway::start("", &route("/reset", broken.addr, ""));
    assert_json_error(
        client().get(gw.url("/reset")).send().unwrap(),
        502,
        "Bad gateway.",
    );
}

#[test]
fn an_answer_that_is_not_http_gives_502() {
    let broken = BrokenUpstream::start(Misbehaviour::Garbage);
    let gw = Gateway::start("", &route("/garbage", broken.addr, ""));
    assert_json_error(
        client().get(gw.url("/garbage")).send().unwrap(),
        502,
        "Bad gateway.",
    );
}

#[test]
fn upstream_error_statuses_pass_through_untouched() {
    let up = Upstream::fixed(Reply {
        status: 503,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: b"maintenance".to_vec(),
        delay: Duration::ZERO,
    });
    let gw = Gateway::start("", &route("/m", up.addr, ""));
    let r = client().get(gw.url("/m")).send().unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().unwrap(), "maintenance");
}

#[test]
fn the_gateway_keeps_serving_after_upstream_failures() {
    let good = Upstream::echo();
    let gw = Gateway::start(
        "",
        &(route("/down", closed_port(), "") + &route("/ok", good.addr, "")),
    );
    let c = client();
    for _ in 0..20 {
        assert_eq!(c.get(gw.url("/down")).send().unwrap().status(), 502);
        assert_eq!(c.get(gw.url("/ok")).send().unwrap().status(), 200);
    }
}

/// A raw upstream that answers one keep-alive request on its first connection and then
/// reports how long after its answer the gateway closed that connection (None: still open
/// after `wait`).
fn pooled_connection_closed_after(upstream_idle: &str, wait: Duration) -> Option<Duration> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let watcher = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "the gateway closed before its request was complete");
            head.extend_from_slice(&buf[..n]);
        }
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .unwrap();
        let answered = Instant::now();
        conn.set_read_timeout(Some(wait)).unwrap();
        match conn.read(&mut buf) {
            Ok(0) => Some(answered.elapsed()),
            Ok(_) => panic!("the gateway sent more on an idle pooled connection"),
            Err(_) => None,
        }
    });
    let gw = Gateway::start(
        "",
        &format!(
            "[timeouts]\nupstream_idle = \"{upstream_idle}\"\n{}",
            route("/api", addr, "")
        ),
    );
    let r = client().get(gw.url("/api/x")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "ok");
    watcher.join().unwrap()
}

#[test]
fn an_idle_pooled_upstream_connection_is_closed_after_upstream_idle() {
    let closed = pooled_connection_closed_after("1s", Duration::from_secs(5))
        .expect("the pooled connection was still open 5 s after the answer");
    // Pingora's fast timers fire on a 10 ms tick, after the time has passed
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_secs(3),
        "closed {closed:?} after the answer, upstream_idle = 1s"
    );
}

#[test]
fn with_upstream_idle_off_a_pooled_connection_stays_open_until_the_upstream_closes_it() {
    assert_eq!(
        pooled_connection_closed_after("off", Duration::from_millis(2500)),
        None,
        "the gateway closed an idle pooled connection with upstream_idle = \"off\""
    );
}
