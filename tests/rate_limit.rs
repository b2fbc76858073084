//! Per-client rate limits: 429 after the budget, RateLimit fields on every response, clients
//! told apart by socket peer or, behind a trusted proxy, by X-Forwarded-For.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

const LIMIT_5: &str = "[rate_limit]\nrequests = 5\nwindow = \"1m\"\n";

fn rate_limit_fields(r: &reqwest::blocking::Response) -> (String, String) {
    (
        r.headers()["ratelimit-policy"]
            .to_str()
            .unwrap()
            .to_string(),
        r.headers()["ratelimit"].to_str().unwrap().to_string(),
    )
}

/// ("default", remaining, reset) from `"default";r=7;t=41`.
fn parse_ratelimit(v: &str) -> (String, u32, u32) {
    let mut parts = v.split(';');
    let name = parts.next().unwrap().trim_matches('"').to_string();
    let mut r = None;
    let mut t = None;
    for p in parts {
        if let Some(x) = p.strip_prefix("r=") {
            r = Some(x.parse().unwrap());
        }
        if let Some(x) = p.strip_prefix("t=") {
            t = Some(x.parse().unwrap());
        }
    }
    (name, r.unwrap(), t.unwrap())
}

#[test]
fn the_request_after_the_budget_gets_429_with_retry_after() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &format!("{LIMIT_5}{}", route("/users", up.addr, "")));
    let c = client();
    for n in 1..=5u32 {
        let r = c.get(gw.url("/users/1")).send().unwrap();
        assert_eq!(r.status(), 200, "request {n}");
        let (policy, limit) = rate_limit_fields(&r);
        assert_eq!(policy, "\"default\";q=5;w=60");
        let (name, remaining, reset) = parse_ratelimit(&limit);
        assert_eq!(name, "default");
        assert_eq!(remaining, 5 - n);
        assert!((1..=60).contains(&reset), "t={reset}");
    }
    let r = c.get(gw.url("/users/1")).send().unwrap();
    assert_eq!(r.status(), 429);
    let retry_after: u32 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    let (_, limit) = rate_limit_fields(&r);
    assert_eq!(parse_ratelimit(&limit).1, 0);
    for h in HELMET_HEADERS {
        assert!(r.headers().contains_key(h), "429 lacks {h}");
    }
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body, error_body(429, "Rate limit exceeded."));
    assert_eq!(
        up.hits(),
        5,
        "the refused request never reached the upstream"
    );
}

#[test]
fn a_route_can_have_its_own_limit_or_none() {
    let up = Upstream::echo();
    let gw = Gateway::start(
        "",
        &format!(
            "{LIMIT_5}{}{}",
            route("/open", up.addr, "rate_limit = false"),
            route(
                "/tight",
                up.addr,
                "rate_limit = { requests = 2, window = \"10s\" }"
            )
        ),
    );
    let c = client();
    for _ in 0..12 {
        let r = c.get(gw.url("/open")).send().unwrap();
        assert_eq!(r.status(), 200);
        assert!(!r.headers().contains_key("ratelimit"));
        assert!(!r.headers().contains_key("ratelimit-policy"));
    }
    let r = c.get(gw.url("/tight")).send().unwrap();
    assert_eq!(r.headers()["ratelimit-policy"], "\"/tight\";q=2;w=10");
    assert_eq!(c.get(gw.url("/tight")).send().unwrap().status(), 200);
    assert_eq!(c.get(gw.url("/tight")).send().unwrap().status(), 429);
}

#[test]
fn routes_on_the_default_policy_share_one_budget_and_404s_count() {
    let up = Upstream::echo();
    let gw = Gateway::start(
        "",
        &format!(
            "{LIMIT_5}{}{}",
            route("/a", up.addr, ""),
            route("/b", up.addr, "")
        ),
    );
    let c = client();
    assert_eq!(c.get(gw.url("/a")).send().unwrap().status(), 200);
    assert_eq!(c.get(gw.url("/b")).send().unwrap().status(), 200);
    let r = c.get(gw.url("/nowhere")).send().unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        parse_ratelimit(r.headers()["ratelimit"].to_str().unwrap()).1,
        2
    );
    assert_eq!(c.get(gw.url("/a")).send().unwrap().status(), 200);
    assert_eq!(c.get(gw.url("/b")).send().unwrap().status(), 200);
    assert_eq!(c.get(gw.url("/a")).send().unwrap().status(), 429);
    assert_eq!(c.get(gw.url("/nowhere")).send().unwrap().status(), 429);
}

#[test]
fn forwarded_for_is_ignored_from_an_untrusted_peer() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &format!("{LIMIT_5}{}", route("/u", up.addr, "")));
    let c = client();
    for n in 0..5 {
        // a new claimed address each time must not buy a new budget
        let r = c
            .get(gw.url("/u"))
            .header("X-Forwarded-For", format!("198.51.100.{n}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = c
        .get(gw.url("/u"))
        .header("X-Forwarded-For", "198.51.100.99")
        .send()
        .unwrap();
    assert_eq!(r.status(), 429);
}

#[test]
fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let up = Upstream::echo();
    let gw = Gateway::start(
        "trusted_proxies = [\"127.0.0.0/8\"]",
        &format!("{LIMIT_5}{}", route("/u", up.addr, "")),
    );
    let c = client();
    let send = |client_ip: &str| {
        c.get(gw.url("/u"))
            .header("X-Forwarded-For", format!("{client_ip}, 127.0.0.2"))
            .send()
            .unwrap()
            .status()
    };
    for _ in 0..5 {
        assert_eq!(send("203.0.113.1"), 200);
    }
    assert_eq!(send("203.0.113.1"), 429);
    assert_eq!(send("203.0.113.2"), 200, "another client is not limited");
    // the proxy itself, without a forwarded client, is one more client
    assert_eq!(c.get(gw.url("/u")).send().unwrap().status(), 200);
}

#[test]
fn without_a_default_policy_nothing_is_limited() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/u", up.addr, ""));
    let c = client();
    for _ in 0..30 {
        let r = c.get(gw.url("/u")).send().unwrap();
        assert_eq!(r.status(), 200);
        assert!(!r.headers().contains_key("ratelimit"));
    }
}

#[test]
fn one_ipv6_slash_64_is_one_client_unless_configured_per_address() {
    let up = Upstream::echo();
    for (prefix, passed) in [("", 20), ("ipv6_prefix = 128", 25)] {
        let gw = Gateway::start(
            "trusted_proxies = [\"127.0.0.0/8\"]",
            &format!(
                "[rate_limit]\nrequests = 20\nwindow = \"1m\"\n{prefix}\n{}",
                route("/api", up.addr, "")
            ),
        );
        let c = client();
        let ok = (1..=25)
            .filter(|i| {
                c.get(gw.url("/api/x"))
                    .header("X-Forwarded-For", format!("2001:db8:1:2::{i:x}"))
                    .send()
                    .unwrap()
                    .status()
                    == 200
            })
            .count();
        assert_eq!(ok, passed, "with {prefix:?}");
        // another /64 has its own budget
        let other = c
            .get(gw.url("/api/x"))
            .header("X-Forwarded-For", "2001:db8:1:3::1")
            .send()
            .unwrap();
        assert_eq!(other.status(), 200);
    }
}
