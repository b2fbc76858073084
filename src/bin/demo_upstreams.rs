//! Small demo services for `make run`: users, orders and products, each a JSON API on its
//! own port, so the default config has something real to route to.
//!
//! `demo_upstreams` starts users on 127.0.0.1:7002, orders on :7003 and products on :7004;
//! `demo_upstreams users=127.0.0.1:9000 ...` picks other names and addresses.
//! Plain std, thread per connection: this is a demo, not a benchmark target.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let services: Vec<(String, String)> = if args.is_empty() {
        vec![
            ("users".into(), "127.0.0.1:7002".into()),
            ("orders".into(), "127.0.0.1:7003".into()),
            ("products".into(), "127.0.0.1:7004".into()),
        ]
    } else {
        args.iter()
            .filter_map(|a| a.split_once('='))
            .map(|(n, a)| (n.to_string(), a.to_string()))
            .collect()
    };
    let mut handles = Vec::new();
    for (name, addr) in services {
        let listener = match TcpListener::bind(&addr) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("demo_upstreams: cannot listen on {addr} for {name}: {e}");
                std::process::exit(1);
            }
        };
        println!("demo_upstreams: {name} on http://{addr}");
        handles.push(thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let name = name.clone();
                thread::spawn(move || serve(stream, &name));
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
}

fn items(name: &str) -> Vec<String> {
    let rows: &[&str] = match name {
        "users" => &[
            r#"{"id":1,"name":"Ada Lovelace","email":"ada@example.com"}"#,
            r#"{"id":2,"name":"Alan Turing","email":"alan@example.com"}"#,
            r#"{"id":3,"name":"Grace Hopper","email":"grace@example.com"}"#,
        ],
        "orders" => &[
            r#"{"id":1,"userId":1,"total":42.5,"status":"shipped"}"#,
            r#"{"id":2,"userId":3,"total":7.99,"status":"pending"}"#,
        ],
        "products" => &[
            r#"{"id":1,"name":"Analytical Engine","price":1843}"#,
            r#"{"id":2,"name":"Bombe","price":1939}"#,
        ],
        _ => &[],
    };
    rows.iter().map(|s| s.to_string()).collect()
}

fn serve(stream: TcpStream, name: &str) {
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut out = write_half;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let (method, target, version) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("/").to_string(),
            parts.next().unwrap_or("HTTP/1.0").to_string(),
        );
        let mut content_length = 0usize;
        let mut close = version == "HTTP/1.0";
        let mut request_id = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                match k.as_str() {
                    "content-length" => content_length = v.parse().unwrap_or(0),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    "x-request-id" => request_id = v.to_string(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; content_length.min(1 << 20)];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (status, json) = answer(name, &method, &target, &body);
        let reason = match status {
            200 => "OK",
            201 => "Created",
            404 => "Not Found",
            _ => "Method Not Allowed",
        };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Powered-By: Express\r\nX-Service: {name}\r\nX-Seen-Request-Id: {request_id}\r\n{}\r\n{json}",
            json.len(),
            if close { "Connection: close\r\n" } else { "" },
        );
        if out.write_all(response.as_bytes()).is_err() || close {
            return;
        }
    }
}

fn answer(name: &str, method: &str, target: &str, body: &[u8]) -> (u16, String) {
    let path = target.split('?').next().unwrap_or("/");
    let rows = items(name);
    match (method, path.trim_end_matches('/')) {
        ("GET", "") => (200, format!("[{}]", rows.join(","))),
        ("GET", p) => {
            let id: usize = p.trim_start_matches('/').parse().unwrap_or(0);
            match id.checked_sub(1).and_then(|i| rows.get(i)) {
                Some(row) => (200, row.clone()),
                None => (404, format!(r#"{{"error":"no {name} with id {id}"}}"#)),
            }
        }
        ("POST", "") => (
            201,
            format!(
                r#"{{"created":true,"service":"{name}","bytes":{}}}"#,
                body.len()
            ),
        ),
        _ => (405, r#"{"error":"method not allowed"}"#.to_string()),
    }
}
