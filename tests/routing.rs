//! Prefix routing, prefix stripping, Host handling and the 404 answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

#[test]
fn longest_prefix_on_a_segment_boundary_wins() {
    let api = Upstream::echo();
    let users = Upstream::echo();
    let gw = Gateway::start(
        "",
        &(route("/api", api.addr, "") + &route("/api/users", users.addr, "")),
    );
    let c = client();
    assert_eq!(c.get(gw.url("/api/users/7")).send().unwrap().status(), 200);
    assert_eq!(users.hits(), 1);
    assert_eq!(users.last().target, "/7");
    // "/api/usersx" is not under "/api/users": it falls back to "/api"
    assert_eq!(c.get(gw.url("/api/usersx")).send().unwrap().status(), 200);
    assert_eq!(api.last().target, "/usersx");
    assert_eq!(users.hits(), 1);
}

#[test]
fn strip_prefix_passes_the_rest_and_the_query_byte_for_byte() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/users", up.addr, ""));
    for (sent, expected) in [
        ("/users/7?q=1", "/7?q=1"),
        ("/users", "/"),
        ("/users/", "/"),
        ("/users?a=1&b=%20x&c=%zz&d=a+b", "/?a=1&b=%20x&c=%zz&d=a+b"),
        ("/users/7/orders?x=%2F&x=2", "/7/orders?x=%2F&x=2"),
    ] {
        let r = raw_request(
            gw.addr,
            format!("GET {sent} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 200, "{sent}");
        assert_eq!(up.last().target, expected, "{sent}");
    }
}

#[test]
fn strip_prefix_false_keeps_the_path() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/users", up.addr, "strip_prefix = false"));
    client().get(gw.url("/users/7?q=1")).send().unwrap();
    assert_eq!(up.last().target, "/users/7?q=1");
}

#[test]
fn a_path_outside_every_prefix_gets_the_json_404() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/users", up.addr, ""));
    for path in ["/usersx", "/", "/other/users", "/Users"] {
        let r = client().get(gw.url(path)).send().unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let body: serde_json::Value = r.json().unwrap();
        assert_eq!(body, error_body(404, "Route not found."));
    }
    assert_eq!(up.hits(), 0);
}

#[test]
fn head_on_a_missing_route_has_no_body() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/users", up.addr, ""));
    let r = raw_request(
        gw.addr,
        b"HEAD /nope HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), Some("70"));
}

#[test]
fn host_becomes_the_upstream_unless_preserved() {
    let a = Upstream::echo();
    let b = Upstream::echo();
    let gw = Gateway::start(
        "",
        &(route("/a", a.addr, "") + &route("/b", b.addr, "preserve_host = true")),
    );
    let c = client();
    c.get(gw.url("/a/x"))
        .header("Host", "api.example.com")
        .send()
        .unwrap();
    assert_eq!(a.last().header("host"), Some(a.addr.to_string().as_str()));
    assert_eq!(a.last().header("x-forwarded-host"), Some("api.example.com"));
    c.get(gw.url("/b/x"))
        .header("Host", "api.example.com")
        .send()
        .unwrap();
    assert_eq!(b.last().header("host"), Some("api.example.com"));
}

#[test]
fn dot_segments_are_refused_with_400() {
    let up = Upstream::echo();
    let gw = Gateway::start(
        "",
        &(route("/public", up.addr, "") + &route("/admin", up.addr, "")),
    );
    for path in ["/public/../admin/x", "/public/%2e%2e/admin", "/public/./x"] {
        let r = raw_request(
            gw.addr,
            format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 400, "{path}");
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body, error_body(400, "Bad request."));
    }
    assert_eq!(up.hits(), 0);
}

#[test]
fn methods_and_bodies_are_proxied() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/users", up.addr, ""));
    let r = client()
        .post(gw.url("/users"))
        .header("content-type", "application/json")
        .body(r#"{"name":"Ada"}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body, br#"{"name":"Ada"}"#);
    let r = client().delete(gw.url("/users/1")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().method, "DELETE");
}

#[test]
fn an_http_1_0_upstream_is_answered_as_http_1_1() {
    let old = BrokenUpstream::start(Misbehaviour::Fixed(
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nold but fine",
    ));
    let gw = Gateway::start("", &route("/old", old.addr, ""));
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /old HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("old but fine"), "{text}");
}
