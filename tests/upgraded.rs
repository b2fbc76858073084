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

const SWITCH: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

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

fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
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
    let lines = gw.access_log_lines(1);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("GET /ws/chat") && l.contains(" 101 ")),
        "{lines:?}"
    );
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
