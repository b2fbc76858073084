//! Security headers, CORS, forwarding headers and hop-by-hop handling, end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::sync::Arc;

#[test]
fn helmet_headers_are_added_unless_the_upstream_set_them() {
    let up = Upstream::fixed(
        Reply::ok("hi")
            .header("X-Frame-Options", "DENY")
            .header("Server", "Express")
            .header("X-Powered-By", "Express"),
    );
    let gw = Gateway::start("", &route("/a", up.addr, ""));
    let r = client().get(gw.url("/a")).send().unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    for name in HELMET_HEADERS {
        assert!(h.contains_key(name), "missing {name}");
    }
    assert_eq!(h["x-frame-options"], "DENY", "the upstream's value is kept");
    assert_eq!(h.get_all("x-frame-options").iter().count(), 1);
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["cross-origin-opener-policy"], "same-origin");
    assert_eq!(h["cross-origin-resource-policy"], "same-origin");
    assert_eq!(h["origin-agent-cluster"], "?1");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-dns-prefetch-control"], "off");
    assert_eq!(h["x-download-options"], "noopen");
    assert_eq!(h["x-permitted-cross-domain-policies"], "none");
    assert_eq!(h["x-xss-protection"], "0");
    // RFC 6797 §7.2: never over plain HTTP (the TLS tests see it over TLS)
    assert!(!h.contains_key("strict-transport-security"));
    assert!(!h.contains_key("server"), "Server is stripped");
    assert!(!h.contains_key("x-powered-by"), "X-Powered-By is stripped");
}

#[test]
fn security_headers_can_be_switched_off() {
    let up = Upstream::fixed(Reply::ok("hi").header("X-Powered-By", "Express"));
    let gw = Gateway::start(
        "",
        &format!(
            "[security_headers]\nenabled = false\nremove = []\n{}",
            route("/a", up.addr, "")
        ),
    );
    let r = client().get(gw.url("/a")).send().unwrap();
    for name in HELMET_HEADERS {
        assert!(!r.headers().contains_key(name), "{name} should be off");
    }
    assert_eq!(r.headers()["x-powered-by"], "Express");
}

#[test]
fn cors_default_allows_any_origin_on_responses() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/a", up.addr, ""));
    let r = client()
        .get(gw.url("/a"))
        .header("Origin", "https://app.example")
        .send()
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    // scripts may read the gateway's own fields
    assert_eq!(
        r.headers()["access-control-expose-headers"],
        "X-Request-Id, RateLimit, RateLimit-Policy, Retry-After"
    );
    let r = client().get(gw.url("/missing")).send().unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
}

#[test]
fn expose_headers_can_name_others_or_none() {
    let up = Upstream::echo();
    for (setting, expected) in [
        ("expose_headers = [\"X-Total\"]", Some("X-Total")),
        ("expose_headers = []", None),
    ] {
        let gw = Gateway::start(
            "",
            &format!("[cors]\n{setting}\n{}", route("/a", up.addr, "")),
        );
        let r = client()
            .get(gw.url("/a"))
            .header("Origin", "https://app.example")
            .send()
            .unwrap();
        assert_eq!(
            r.headers()
                .get("access-control-expose-headers")
                .map(|v| v.to_str().unwrap()),
            expected,
            "{setting}"
        );
    }
}

#[test]
fn a_preflight_is_answered_204_without_the_upstream_or_the_limiter() {
    let up = Upstream::echo();
    let gw = Gateway::start(
        "",
        &format!(
            "[rate_limit]\nrequests = 1\nwindow = \"1m\"\n{}",
            route("/a", up.addr, "")
        ),
    );
    let c = client();
    for _ in 0..5 {
        let r = c
            .request(reqwest::Method::OPTIONS, gw.url("/a/items"))
            .header("Origin", "https://app.example")
            .header("Access-Control-Request-Method", "PUT")
            .header("Access-Control-Request-Headers", "x-token,content-type")
            .send()
            .unwrap();
        assert_eq!(r.status(), 204);
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], "*");
        assert_eq!(
            h["access-control-allow-methods"],
            "GET,HEAD,PUT,PATCH,POST,DELETE"
        );
        assert_eq!(h["access-control-allow-headers"], "x-token,content-type");
        assert!(!h.contains_key("ratelimit"), "preflights are not limited");
        assert!(h.contains_key("x-content-type-options"));
    }
    assert_eq!(up.hits(), 0, "no preflight reached the upstream");
    // a plain OPTIONS (no preflight headers) is proxied like any request
    let r = c
        .request(reqwest::Method::OPTIONS, gw.url("/a"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.hits(), 1);
}

#[test]
fn an_origin_list_echoes_matching_origins_with_vary() {
    let up = Upstream::fixed(Reply::ok("x").header("Access-Control-Allow-Origin", "*"));
    let gw = Gateway::start(
        "",
        &format!(
            "[cors]\nallow_origins = [\"https://app.example\"]\nallow_credentials = true\nmax_age = 600\n{}",
            route("/a", up.addr, "")
        ),
    );
    let c = client();
    let r = c
        .get(gw.url("/a"))
        .header("Origin", "https://app.example")
        .send()
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    assert_eq!(r.headers()["vary"], "Origin");

    let r = c
        .get(gw.url("/a"))
        .header("Origin", "https://evil.example")
        .send()
        .unwrap();
    assert!(
        !r.headers().contains_key("access-control-allow-origin"),
        "the upstream's wildcard does not widen the policy"
    );
    assert_eq!(r.headers()["vary"], "Origin");

    let r = c
        .request(reqwest::Method::OPTIONS, gw.url("/a"))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(r.headers()["access-control-max-age"], "600");
}

#[test]
fn forwarding_headers_reach_the_upstream() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/a", up.addr, ""));
    client()
        .get(gw.url("/a"))
        .header("Host", "api.example.com")
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .unwrap();
    let seen = up.last();
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("api.example.com"));
}

#[test]
fn a_trusted_proxy_keeps_its_forwarded_proto_and_host() {
    let up = Upstream::echo();
    let gw = Gateway::start(
        "trusted_proxies = [\"127.0.0.1\"]",
        &route("/a", up.addr, ""),
    );
    client()
        .get(gw.url("/a"))
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "www.example.com")
        .send()
        .unwrap();
    let seen = up.last();
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("www.example.com"));
    // from an untrusted peer they are replaced
    let gw2 = Gateway::start("", &route("/a", up.addr, ""));
    client()
        .get(gw2.url("/a"))
        .header("X-Forwarded-Proto", "https")
        .send()
        .unwrap();
    assert_eq!(up.last().header("x-forwarded-proto"), Some("http"));
}

#[test]
fn request_ids_are_kept_or_made_and_returned() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/a", up.addr, ""));
    let c = client();
    let r = c
        .get(gw.url("/a"))
        .header("X-Request-Id", "trace-123")
        .send()
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-123");
    assert_eq!(up.last().header("x-request-id"), Some("trace-123"));

    let r = c.get(gw.url("/a")).send().unwrap();
    let made = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(made.len(), 36, "{made}");
    assert_eq!(up.last().header("x-request-id"), Some(made.as_str()));
    let again = c.get(gw.url("/a")).send().unwrap();
    assert_ne!(again.headers()["x-request-id"].to_str().unwrap(), made);

    // the gateway's own answers carry it too
    let r = c
        .get(gw.url("/nope"))
        .header("X-Request-Id", "abc")
        .send()
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc");
}

#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/a", up.addr, ""));
    let r = raw_request(
        gw.addr,
        b"GET /a HTTP/1.1\r\nHost: gw\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nX-Kept: yes\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let seen = up.last();
    for h in ["x-secret", "keep-alive", "te", "proxy-authorization"] {
        assert!(!seen.has_header(h), "{h} was forwarded");
    }
    assert_eq!(seen.header("x-kept"), Some("yes"));
}

#[test]
fn hop_by_hop_headers_from_the_upstream_do_not_reach_the_client() {
    let up = Upstream::start(Arc::new(|_: &Seen| {
        Reply::ok("x")
            .header("Keep-Alive", "timeout=99")
            .header("Proxy-Connection", "keep-alive")
    }));
    let gw = Gateway::start("", &route("/a", up.addr, ""));
    let r = raw_request(
        gw.addr,
        b"GET /a HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("keep-alive"), None);
    assert_eq!(r.header("proxy-connection"), None);
}
