//! How long a client connection lives: HTTP/2 connections that sit idle end with GOAWAY,
//! and every connection carries at most `server.keepalive_requests` requests. HTTP/2 is
//! spoken frame by frame on a raw socket, so that the test sees the GOAWAY itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A cleartext HTTP/2 connection spoken by hand: it acknowledges the server's SETTINGS and
/// answers its PINGs, as a live client would, and records everything else.
struct H2 {
    socket: TcpStream,
    authority: String,
}

impl H2 {
    fn open(addr: SocketAddr) -> H2 {
        let mut socket = TcpStream::connect(addr).unwrap();
        socket.write_all(PREFACE).unwrap();
        socket.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
        H2 {
            socket,
            authority: addr.to_string(),
        }
    }

    /// `GET path` on `stream`, headers HPACK-encoded from the static table and literals.
    fn get(&mut self, stream: u32, path: &str) {
        let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
        block.push(0x04); // :path, literal without indexing
        block.push(path.len() as u8);
        block.extend_from_slice(path.as_bytes());
        block.push(0x01); // :authority, literal without indexing
        block.push(self.authority.len() as u8);
        block.extend_from_slice(self.authority.as_bytes());
        self.socket
            .write_all(&frame(HEADERS, END_STREAM | END_HEADERS, stream, &block))
            .unwrap();
    }

    /// The next frame, or `None` once the server closed the connection.
    fn next(&mut self, within: Duration) -> Option<Frame> {
        self.socket.set_read_timeout(Some(within)).unwrap();
        let mut head = [0u8; 9];
        match self.socket.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("no frame within {within:?}: {e}"),
        }
        let len = (head[0] as usize) << 16 | (head[1] as usize) << 8 | head[2] as usize;
        let mut payload = vec![0u8; len];
        self.socket.read_exact(&mut payload).unwrap();
        let frame = Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        };
        match (frame.kind, frame.flags & ACK) {
            (SETTINGS, 0) => {
                let _ = self.socket.write_all(&frame_bytes(SETTINGS, ACK, 0, &[]));
            }
            (PING, 0) => {
                let _ = self
                    .socket
                    .write_all(&frame_bytes(PING, ACK, 0, &frame.payload));
            }
            _ => {}
        }
        Some(frame)
    }

    /// Every frame until the server closes the connection, and when it closed.
    fn until_closed(&mut self, within: Duration) -> (Vec<Frame>, Instant) {
        let deadline = Instant::now() + within;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "still open after {within:?}: {frames:?}");
            match self.next(left) {
                Some(f) => frames.push(f),
                None => return (frames, Instant::now()),
            }
        }
    }
}

fn frame_bytes(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    frame(kind, flags, stream, payload)
}

/// The GOAWAYs among `frames`: (last stream id, error code).
fn goaways(frames: &[Frame]) -> Vec<(u32, u32)> {
    frames
        .iter()
        .filter(|f| f.kind == GOAWAY)
        .map(|f| {
            let p = &f.payload;
            (
                u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff,
                u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            )
        })
        .collect()
}

/// The `:status` of the response HEADERS on `stream` (HPACK static-table indexed, as the
/// gateway's HTTP/2 library sends 200), and whether its body ended.
fn answered(frames: &[Frame], stream: u32) -> bool {
    let headers = frames
        .iter()
        .any(|f| f.kind == HEADERS && f.stream == stream);
    let ended = frames.iter().any(|f| {
        f.stream == stream && (f.kind == DATA || f.kind == HEADERS) && f.flags & END_STREAM != 0
    });
    headers && ended
}

#[test]
fn an_idle_h2c_connection_without_a_request_ends_with_goaway() {
    let up = Upstream::echo();
    let gw = Gateway::start(
        "h2c = true",
        &format!(
            "[timeouts]\nclient_idle = \"1s\"\n{}",
            route("/a", up.addr, "")
        ),
    );
    let mut h2 = H2::open(gw.addr);
    let opened = Instant::now();
    let (frames, closed) = h2.until_closed(Duration::from_secs(8));
    let idle = closed - opened;
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(4),
        "closed after {idle:?}"
    );
    let goaway = goaways(&frames);
    assert!(!goaway.is_empty(), "no GOAWAY before the close: {frames:?}");
    assert!(
        goaway.iter().all(|&(_, code)| code == 0),
        "GOAWAY with an error: {goaway:?}"
    );
}

#[test]
fn an_h2c_connection_idle_after_its_requests_ends_with_goaway_naming_the_last_stream() {
    let up = Upstream::echo();
    let gw = Gateway::start(
        "h2c = true",
        &format!(
            "[timeouts]\nclient_idle = \"1s\"\n{}",
            route("/a", up.addr, "")
        ),
    );
    let mut h2 = H2::open(gw.addr);
    h2.get(1, "/a/one");
    h2.get(3, "/a/two");
    let (frames, _) = h2.until_closed(Duration::from_secs(8));
    assert!(answered(&frames, 1) && answered(&frames, 3), "{frames:?}");
    let goaway = goaways(&frames);
    let last = goaway.last().copied().expect("a GOAWAY");
    assert_eq!(last, (3, 0), "the final GOAWAY names stream 3, NO_ERROR");
    assert_eq!(up.seen().len(), 2);
}

#[test]
fn an_h2c_connection_takes_keepalive_requests_streams_then_goaway() {
    let up = Upstream::echo();
    let gw = Gateway::start(
        "h2c = true\nkeepalive_requests = 3",
        &route("/a", up.addr, ""),
    );
    let mut h2 = H2::open(gw.addr);
    for stream in [1, 3, 5] {
        h2.get(stream, "/a/x");
    }
    let (frames, _) = h2.until_closed(Duration::from_secs(8));
    for stream in [1, 3, 5] {
        assert!(answered(&frames, stream), "stream {stream}: {frames:?}");
    }
    let goaway = goaways(&frames);
    assert_eq!(
        goaway.last().copied(),
        Some((5, 0)),
        "GOAWAY after the third stream, NO_ERROR: {goaway:?}"
    );
    assert_eq!(up.seen().len(), 3);
}

#[test]
fn an_http1_connection_closes_after_keepalive_requests_answers() {
    let up = Upstream::echo();
    let gw = Gateway::start("keepalive_requests = 3", &route("/a", up.addr, ""));
    let mut socket = TcpStream::connect(gw.addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut seen = Vec::new();
    for i in 0..3 {
        socket
            .write_all(format!("GET /a/{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        seen.extend(read_answers(&mut socket, 1));
    }
    for resp in &seen[..2] {
        assert_eq!(resp.status, 200);
        assert_ne!(
            resp.header("connection")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("close"),
            "only the last answer closes"
        );
    }
    assert_eq!(seen[2].status, 200);
    assert_eq!(seen[2].header("connection"), Some("close"));
    // and the gateway closes the connection
    let mut rest = Vec::new();
    let n = socket.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(
        n,
        0,
        "nothing after the last answer: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(up.seen().len(), 3);
}

#[test]
fn keepalive_requests_must_be_a_positive_count() {
    let (code, _, stderr) = run_pylon(
        &["-t"],
        Some("[server]\nkeepalive_requests = 0\n[[routes]]\nprefix = \"/\"\nupstreams = [\"http://127.0.0.1:9\"]\n"),
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("key `server.keepalive_requests`")
            && stderr.contains("between 1 and 4294967295"),
        "{stderr}"
    );
}
