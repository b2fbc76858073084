//! A refusal that leaves the client's body unread (413 over `max_body`, or the edge's own
//! 4xx) reads and drops the rest, as nginx's lingering close does: a client that sends its
//! whole body before reading (Python's http.client, `requests`, most SDKs) gets the answer,
//! not a reset. The reading stops after `timeouts.lingering` in all, or once nothing has
//! arrived for 5 s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// Send `head` and then `body_len` bytes of body as fast as the socket takes them, all
/// before reading anything; then read the answer.
fn send_all_then_read(addr: std::net::SocketAddr, head: &str, body_len: usize) -> RawResponse {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'x'; 1 << 16];
    let mut sent = 0;
    while sent < body_len {
        let n = chunk.len().min(body_len - sent);
        s.write_all(&chunk[..n])
            .unwrap_or_else(|e| panic!("the gateway stopped reading after {sent} bytes: {e}"));
        sent += n;
    }
    let mut buf = Vec::new();
    let mut part = [0u8; 4096];
    while parse_response(&buf).is_none() {
        let n = s.read(&mut part).unwrap();
        assert!(n > 0, "closed without an answer");
        buf.extend_from_slice(&part[..n]);
    }
    parse_response(&buf).unwrap()
}

#[test]
fn a_client_that_sends_24_mib_before_reading_gets_its_413() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/u", up.addr, "max_body = \"1m\""));
    let len = 24 << 20;
    let r = send_all_then_read(
        gw.addr,
        &format!("POST /u/x HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n"),
        len,
    );
    assert_eq!(r.status, 413);
    assert_eq!(up.hits(), 0);
}

#[test]
fn a_chunked_upload_sent_whole_past_the_limit_gets_its_413() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/u", up.addr, "max_body = \"1k\""));
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"POST /u/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    // 24 MiB in 64 KiB chunks, all written before reading
    let mut chunk = b"10000\r\n".to_vec();
    chunk.extend_from_slice(&[b'y'; 0x10000]);
    chunk.extend_from_slice(b"\r\n");
    for _ in 0..384 {
        s.write_all(&chunk)
            .unwrap_or_else(|e| panic!("the gateway stopped reading: {e}"));
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert_eq!(parse_response(&buf).map(|r| r.status), Some(413));
}

#[test]
fn a_client_that_stops_sending_is_closed_after_5_s_of_silence() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/u", up.addr, "max_body = \"1k\""));
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // declares 1 MiB, sends 10 KiB, then nothing
    s.write_all(b"POST /u/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n")
        .unwrap();
    s.write_all(&[b'z'; 10 * 1024]).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let closed = started.elapsed();
    assert_eq!(parse_response(&buf).unwrap().status, 413);
    assert!(
        closed >= Duration::from_millis(4500) && closed < Duration::from_secs(9),
        "closed after {closed:?}, not about 5 s"
    );
}

#[test]
fn lingering_stops_after_timeouts_lingering_however_slowly_the_client_sends() {
    let up = Upstream::echo();
    let gw = Gateway::start(
        "",
        &format!(
            "[timeouts]\nlingering = \"2s\"\n{}",
            route("/u", up.addr, "max_body = \"1k\"")
        ),
    );
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s.write_all(b"POST /u/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let mut part = [0u8; 4096];
    // a byte every 200 ms: never quiet for 5 s, so only the total bound ends it
    let closed = loop {
        assert!(started.elapsed() < Duration::from_secs(10), "still open");
        if s.write_all(b"z").is_err() {
            break started.elapsed();
        }
        match s.read(&mut part) {
            Ok(0) => break started.elapsed(),
            Ok(n) => buf.extend_from_slice(&part[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break started.elapsed(),
        }
    };
    assert_eq!(parse_response(&buf).map(|r| r.status), Some(413));
    assert!(
        closed >= Duration::from_millis(1800) && closed < Duration::from_secs(5),
        "closed after {closed:?}, not about 2 s"
    );
}

#[test]
fn an_edge_refusal_lingers_too() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/u", up.addr, ""));
    // a head the edge refuses (431: a header line over the limit), then a body written
    // whole before reading
    let long = "a".repeat(64 * 1024);
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST /u/x HTTP/1.1\r\nHost: a\r\nX-Long: {long}\r\nContent-Length: 4194304\r\n\r\n"
    );
    let _ = s.write_all(head.as_bytes());
    let written = s.write_all(&vec![b'q'; 4 << 20]);
    assert!(written.is_ok(), "the gateway stopped reading: {written:?}");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let r = parse_response(&buf).expect("an answer");
    assert_eq!(r.status, 431);
}
