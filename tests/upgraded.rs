//! After a 101 the connection carries the upgraded protocol's bytes, not HTTP: whichever
//! side fails, the gateway closes the other side and writes no answer of its own into the
//! stream (a WebSocket client would read a `{` as a frame header). The access log still
//! records how the exchange ended.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::*;

/// An upstream that switches protocols, sends `then` as upgraded bytes, and resets the
/// connection (SO_LINGER 0), as a crashing WebSocket server does.
fn switch_then_reset(then: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let _ = stream.write_all(SWITCH);
                let _ = stream.write_all(then);
                std::thread::sleep(Duration::from_millis(100));
                let socket = socket2::SockRef::from(&stream);
                let _ = socket.set_linger(Some(Duration::ZERO));
                drop(stream);
            });
        }
    });
    addr
}

/// Everything the client reads until the gateway closes the connection.
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
            Err(e) => panic!(
                "the connection stayed open: {e}; read {:?}",
                String::from_utf8_lossy(&all)
            ),
        }
    }
}

#[test]
fn an_upstream_reset_after_101_closes_the_client_without_an_http_answer() {
    let up = switch_then_reset(b"\x81\x02hi");
    let gw = Gateway::start("", &route("/ws", up, ""));
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(upgrade_request("/ws/chat").as_bytes()).unwrap();
    let all = read_until_closed(&mut s);
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("the 101 head")
        + 4;
    let head = String::from_utf8_lossy(&all[..end]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(
        &all[end..],
        b"\x81\x02hi",
        "only the upstream's frame follows the 101, no answer of the gateway's"
    );
    // the access line says how it ended: the 101
    assert_logged(&gw, 1, &["GET /ws/chat", " 101 "]);
}

#[test]
fn a_client_gone_after_101_closes_the_upstream_side() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            seen.extend_from_slice(&buf[..n]);
        }
        stream.write_all(SWITCH).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // what the upstream reads once the client is gone: the end, not HTTP
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        let _ = closed_tx.send(rest);
    });
    let gw = Gateway::start("", &route("/ws", addr, ""));
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(upgrade_request("/ws/x").as_bytes()).unwrap();
    let mut buf = [0u8; 1024];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 101"));
    let socket = socket2::SockRef::from(&s);
    socket.set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
    let rest = closed_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the upstream side was not closed");
    assert!(
        rest.is_empty(),
        "the upstream got {:?}",
        String::from_utf8_lossy(&rest)
    );
}

/// Switch, read everything the client sends until its end, then answer with how much
/// came and what, and close.
fn switch_read_all_then_answer(mut s: TcpStream) {
    let (_, mut got) = read_head(&mut s);
    s.write_all(SWITCH).unwrap();
    s.read_to_end(&mut got).unwrap();
    let _ = s.write_all(format!("got {}: {}", got.len(), String::from_utf8_lossy(&got)).as_bytes());
}

#[test]
fn bytes_sent_with_the_head_and_half_closes_cross_and_the_access_line_counts_them() {
    let up = raw_upstream(switch_read_all_then_answer);
    let admin = closed_port();
    let gw = Gateway::start(
        "",
        &format!("[admin]\nlisten = \"{admin}\"\n{}", route("/ws", up, "")),
    );
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // a frame written with the head, before the 101 came back
    s.write_all(format!("{}hello", upgrade_request("/ws/half")).as_bytes())
        .unwrap();
    let (head, rest) = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(rest.is_empty());
    // the gateway counts the WebSocket as an open client connection after its request's
    // part is over
    let metrics = metrics_text(admin);
    assert!(
        metrics.contains("pylon_downstream_connections 1\n"),
        "{metrics}"
    );
    s.write_all(b" world").unwrap();
    // the client's end reaches the upstream, which still answers over the other half
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    assert_eq!(String::from_utf8_lossy(&answer), "got 11: hello world");
    let lines = gw.access_log_lines(1);
    let line = lines
        .iter()
        .find(|l| l.contains("GET /ws/half"))
        .expect("the WebSocket's access line");
    // status 101, and the bytes sent to the client after it
    assert!(line.contains("\" 101 19 "), "{line}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !metrics_text(admin).contains("pylon_downstream_connections 0\n") {
        assert!(std::time::Instant::now() < deadline, "still counted");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_websocket_silent_both_ways_for_websocket_idle_is_closed_and_traffic_keeps_it() {
    let up = raw_upstream(switch_then_echo);
    let gw = Gateway::start(
        "",
        &route("/ws", up, "timeouts = { websocket_idle = \"1s\" }"),
    );
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(upgrade_request("/ws/idle").as_bytes()).unwrap();
    let (head, _) = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // a message every 400 ms for 2.4 s: open past its idle time
    let mut buf = [0u8; 16];
    for i in 0..6u8 {
        std::thread::sleep(Duration::from_millis(400));
        s.write_all(&[b'a' + i]).unwrap();
        assert_eq!(s.read(&mut buf).unwrap(), 1, "the echo of message {i}");
    }
    let silent = std::time::Instant::now();
    assert_eq!(s.read(&mut buf).unwrap(), 0, "closed, with nothing written");
    let after = silent.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_millis(3000),
        "closed {after:?} into the silence"
    );
    assert_logged(&gw, 1, &["GET /ws/idle", "\" 101 6 "]);
}

/// Answer every request on the connection with `reply` (keep-alive).
fn answer_every_request(mut s: TcpStream) {
    const DECLINE: &[u8] =
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nnope!";
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    loop {
        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            seen.drain(..end + 4);
            if s.write_all(DECLINE).is_err() {
                return;
            }
        }
        match s.read(&mut buf) {
            Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
}

#[test]
fn a_declined_upgrade_is_answered_as_any_request_and_the_connection_goes_on() {
    let up = raw_upstream(answer_every_request);
    let gw = Gateway::start("", &route("/ws", up, ""));
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(upgrade_request("/ws/no").as_bytes()).unwrap();
    let mut answers = read_answers(&mut s, 1);
    s.write_all(b"GET /ws/then HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    answers.extend(read_answers(&mut s, 1));
    for answer in &answers {
        assert_eq!(answer.status, 400);
        assert_eq!(answer.body_text(), "nope!");
        // the gateway's headers, as on any proxied answer
        assert!(answer.header("x-request-id").is_some());
        assert!(answer.header("x-content-type-options").is_some());
    }
    assert_logged(&gw, 2, &["GET /ws/no", "\" 400 5 "]);
}

#[test]
fn an_upgrade_goes_to_another_instance_when_one_refuses_and_gets_a_502_when_all_do() {
    let dead = refusing_port();
    let up = raw_upstream(switch_then_echo);
    let gw = Gateway::start(
        "",
        &format!(
            "[[routes]]\nprefix = \"/ws\"\nupstreams = [\"http://{}\", \"http://{up}\"]\n\
             [[routes]]\nprefix = \"/gone\"\nupstreams = [\"http://{}\"]\n",
            dead.addr, dead.addr
        ),
    );
    // round robin starts on either instance: four upgrades meet the dead one
    for i in 0..4 {
        let mut s = TcpStream::connect(gw.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(upgrade_request(&format!("/ws/{i}")).as_bytes())
            .unwrap();
        let (head, _) = read_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade {i}: {head}");
        s.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    }
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(upgrade_request("/gone/x").as_bytes()).unwrap();
    let answer = &read_answers(&mut s, 1)[0];
    assert_eq!(answer.status, 502);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&answer.body_text()).unwrap(),
        error_body(502, "Bad gateway.")
    );
}

#[test]
fn a_request_pipelined_behind_a_declined_upgrade_is_answered() {
    let up = raw_upstream(answer_every_request);
    let gw = Gateway::start("", &route("/ws", up, ""));
    let mut s = TcpStream::connect(gw.addr).unwrap();
    // both at once: the second waits at the edge while the upstream declines the first
    s.write_all(
        format!(
            "{}GET /ws/then HTTP/1.1\r\nHost: a\r\n\r\n",
            upgrade_request("/ws/no")
        )
        .as_bytes(),
    )
    .unwrap();
    let answers = read_answers(&mut s, 2);
    assert_eq!(answers[0].status, 400);
    assert_eq!(answers[1].status, 400);
    assert_logged(&gw, 2, &["GET /ws/then"]);
}

/// Waits for `n` access lines and asserts that one of them holds every fragment.
fn assert_logged(gw: &Gateway, n: usize, fragments: &[&str]) {
    let lines = gw.access_log_lines(n);
    assert!(
        lines
            .iter()
            .any(|l| fragments.iter().all(|f| l.contains(f))),
        "{fragments:?} in {lines:?}"
    );
}
