//! Several instances behind one route: weights, failover, health checks, hashing, 503 and
//! https upstreams, against real servers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An upstream that answers with its own name.
fn named(name: &'static str) -> Upstream {
    Upstream::fixed(Reply::ok(name))
}

fn named_on(addr: std::net::SocketAddr, name: &'static str) -> Upstream {
    Upstream::start_on(addr, Arc::new(move |_: &Seen| Reply::ok(name)), None)
}

fn pool_route(upstreams: &[String], extra: &str) -> String {
    format!(
        "[[routes]]\nprefix = \"/svc\"\nupstreams = [{}]\n{extra}\n",
        upstreams.join(", ")
    )
}

fn url(u: &Upstream) -> String {
    format!("\"http://{}\"", u.addr)
}

fn weighted(u: &Upstream, weight: u32) -> String {
    format!("{{ url = \"http://{}\", weight = {weight} }}", u.addr)
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn weighted_round_robin_follows_the_weights_within_5_percent() {
    let (a, b, c) = (named("a"), named("b"), named("c"));
    let gw = Gateway::start("", &pool_route(&[url(&a), url(&b), weighted(&c, 2)], ""));
    let client = client();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..4000 {
        let body = client.get(gw.url("/svc/x")).send().unwrap().text().unwrap();
        *counts.entry(body).or_default() += 1;
    }
    for (name, expected) in [("a", 1000.0), ("b", 1000.0), ("c", 2000.0)] {
        let got = counts.get(name).copied().unwrap_or(0) as f64;
        assert!(
            (got - expected).abs() <= expected * 0.05,
            "{name}: {got} requests, expected {expected} ±5% ({counts:?})"
        );
    }
}

#[test]
fn random_and_least_request_use_every_instance() {
    for balance in ["random", "least_request"] {
        let (a, b) = (named("a"), named("b"));
        let gw = Gateway::start(
            "",
            &pool_route(&[url(&a), url(&b)], &format!("balance = \"{balance}\"")),
        );
        let client = client();
        for _ in 0..200 {
            assert_eq!(client.get(gw.url("/svc")).send().unwrap().status(), 200);
        }
        assert!(
            a.hits() > 20 && b.hits() > 20,
            "{balance}: {} / {}",
            a.hits(),
            b.hits()
        );
    }
}

#[test]
fn an_instance_killed_under_load_costs_the_client_no_failed_request() {
    let a = named("a");
    let b = named("b");
    let c = named("c");
    let gw = Gateway::start(
        "",
        &pool_route(
            &[url(&a), url(&b), url(&c)],
            "retries = 2\nhealth_check = { interval = \"200ms\", timeout = \"200ms\", unhealthy = 1, healthy = 1 }\npassive = { failures = 1, cooldown = \"5s\" }",
        ),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, failures, done) = (stop.clone(), failures.clone(), done.clone());
        let target = gw.url("/svc/item");
        clients.push(std::thread::spawn(move || {
            let http = client();
            while !stop.load(Ordering::Relaxed) {
                match http.get(&target).send() {
                    Ok(r) if r.status() == 200 => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        eprintln!("failed: {}", r.status());
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("failed: {e}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    wait_until("traffic flows", Duration::from_secs(10), || {
        done.load(Ordering::Relaxed) > 200
    });
    drop(b); // the instance dies: its listener and every open connection go
    let after_kill = done.load(Ordering::Relaxed);
    wait_until("traffic continues", Duration::from_secs(10), || {
        done.load(Ordering::Relaxed) > after_kill + 500
    });
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.join().unwrap();
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0, "requests failed");
    assert!(a.hits() > 100 && c.hits() > 100);
}

#[test]
fn a_failed_instance_rejoins_once_its_health_checks_pass() {
    let a = named("a");
    let b = named("b");
    let b_addr = b.addr;
    let gw = Gateway::start(
        "",
        &pool_route(
            &[url(&a), url(&b)],
            // no retries: until the checks take b out, requests that meet it fail
            "retries = 0\nhealth_check = { interval = \"100ms\", timeout = \"100ms\", path = \"/healthz\", unhealthy = 2, healthy = 2 }",
        ),
    );
    let client = client();
    drop(b);
    // once the checks take b out, every request lands on a
    wait_until("b is taken out", Duration::from_secs(10), || {
        (0..10).all(|_| client.get(gw.url("/svc")).send().unwrap().text().unwrap() == "a")
    });
    let b = named_on(b_addr, "b");
    wait_until("b is back", Duration::from_secs(10), || {
        (0..10).any(|_| client.get(gw.url("/svc")).send().unwrap().text().unwrap() == "b")
    });
    let targets: Vec<String> = b.seen().iter().map(|s| s.target.clone()).collect();
    assert!(
        targets.iter().any(|t| t == "/healthz"),
        "b was health-checked: {targets:?}"
    );
}

#[test]
fn hashing_keeps_each_key_on_one_instance_and_moves_about_a_third_when_one_goes() {
    let ups = [named("a"), named("b"), named("c")];
    let gw = Gateway::start(
        "",
        &pool_route(
            &ups.iter().map(url).collect::<Vec<_>>(),
            "balance = \"hash\"\nhash_key = \"header:X-User\"\npassive = { failures = 1, cooldown = \"60s\" }\nretries = 2",
        ),
    );
    let client = client();
    let owner = |key: usize| {
        client
            .get(gw.url("/svc"))
            .header("X-User", format!("user-{key}"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    let keys = 300;
    let first: Vec<String> = (0..keys).map(owner).collect();
    let second: Vec<String> = (0..keys).map(owner).collect();
    assert_eq!(first, second, "a key always lands on the same instance");
    let per: HashMap<&String, usize> = first.iter().fold(HashMap::new(), |mut m, o| {
        *m.entry(o).or_default() += 1;
        m
    });
    assert_eq!(per.len(), 3, "keys spread over all instances: {per:?}");

    let [a, b, c] = ups;
    drop(b);
    let after: Vec<String> = (0..keys).map(owner).collect();
    let mut moved = 0;
    for (before, now) in first.iter().zip(&after) {
        assert_ne!(now, "b");
        if before != now {
            assert_eq!(before, "b", "only the lost instance's keys move");
            moved += 1;
        }
    }
    let share = moved as f64 / keys as f64;
    assert!(
        (0.15..=0.5).contains(&share),
        "{moved} of {keys} keys moved"
    );
    drop((a, c));
}

#[test]
fn no_available_instance_gives_503_with_retry_after() {
    let gw = Gateway::start(
        "",
        &pool_route(
            &[
                format!("\"http://{}\"", closed_port()),
                format!("\"http://{}\"", closed_port()),
            ],
            "health_check = { interval = \"100ms\", timeout = \"100ms\", unhealthy = 1 }",
        ),
    );
    let client = client();
    wait_until("the pool is empty", Duration::from_secs(10), || {
        client.get(gw.url("/svc")).send().unwrap().status() == 503
    });
    let r = client.get(gw.url("/svc")).send().unwrap();
    assert_eq!(r.status(), 503);
    let retry_after: u32 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body, error_body(503, "Service unavailable."));
}

#[test]
fn refused_connections_are_retried_on_another_instance() {
    let good = named("good");
    let gw = Gateway::start(
        "",
        &pool_route(
            &[format!("\"http://{}\"", closed_port()), url(&good)],
            "retries = 1",
        ),
    );
    let client = client();
    for _ in 0..20 {
        let r = client.post(gw.url("/svc")).body("x").send().unwrap();
        assert_eq!(
            r.status(),
            200,
            "a refused connect is safe to retry, POST included"
        );
    }
    // with no retries, half the requests meet the refusing instance
    let gw = Gateway::start(
        "",
        &pool_route(
            &[format!("\"http://{}\"", closed_port()), url(&good)],
            "retries = 0",
        ),
    );
    let statuses: Vec<u16> = (0..10)
        .map(|_| client.get(gw.url("/svc")).send().unwrap().status().as_u16())
        .collect();
    assert!(statuses.contains(&502), "{statuses:?}");
}

#[test]
fn a_non_idempotent_request_is_not_replayed_after_it_was_sent() {
    // the first instance reads the request and resets; the second would answer
    let broken = BrokenUpstream::start(Misbehaviour::Garbage);
    let good = named("good");
    let gw = Gateway::start(
        "",
        &pool_route(
            &[format!("\"http://{}\"", broken.addr), url(&good)],
            "retries = 2",
        ),
    );
    let client = client();
    let mut posts_failed = 0;
    for _ in 0..10 {
        let post = client.post(gw.url("/svc")).body("once").send().unwrap();
        if post.status() == 502 {
            posts_failed += 1;
        }
        // a GET that met the broken instance goes on to the good one
        let get = client.get(gw.url("/svc")).send().unwrap();
        assert_eq!(get.status(), 200);
    }
    assert!(
        posts_failed > 0,
        "some POSTs met the broken instance and were not replayed"
    );
    assert!(good
        .seen()
        .iter()
        .all(|s| s.method != "POST" || s.body == b"once"));
}

#[test]
fn https_upstreams_are_verified_against_the_configured_ca() {
    let ca = TestCa::new("pylon test CA");
    let (cert, key) = ca.issue(&["localhost"]);
    let up = Upstream::start_tls(Arc::new(|_: &Seen| Reply::ok("secure")), &cert, &key);
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    let other = TestCa::new("some other CA");
    let other_path = dir.path().join("other.pem");
    std::fs::write(&other_path, other.cert_pem()).unwrap();
    let target = format!("\"https://localhost:{}\"", up.addr.port());

    let gw = Gateway::start(
        "",
        &pool_route(
            std::slice::from_ref(&target),
            &format!("ca_file = \"{}\"", ca_path.display()),
        ),
    );
    let r = client().get(gw.url("/svc/x")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "secure");
    assert_eq!(
        up.last().header("host"),
        Some(format!("localhost:{}", up.addr.port()).as_str())
    );

    let wrong = Gateway::start(
        "",
        &pool_route(
            std::slice::from_ref(&target),
            &format!("ca_file = \"{}\"", other_path.display()),
        ),
    );
    let r = client().get(wrong.url("/svc/x")).send().unwrap();
    assert_eq!(r.status(), 502);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body, error_body(502, "Bad gateway."));
    wait_until("the log says why", Duration::from_secs(5), || {
        wrong.stderr().to_lowercase().contains("certificate")
    });

    let unverified = Gateway::start(
        "",
        &pool_route(
            &[target],
            &format!("tls_verify = false\nca_file = \"{}\"", other_path.display()),
        ),
    );
    assert_eq!(
        client()
            .get(unverified.url("/svc/x"))
            .send()
            .unwrap()
            .status(),
        200
    );
}
