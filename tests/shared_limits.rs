//! Several gateways, one budget: three real gateways count in one real `redis-server`
//! (Debian's, installed by `make test`) on an ephemeral port. The budget holds within 5%
//! with `sync = "50ms"` and exactly with `sync = "0s"`; with Redis stopped mid-run every
//! request still gets 200 or 429 and sharing resumes when it is back. Also the two caps on
//! pingora-limits: requests in flight per client, and a route-wide rate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::redis::Redis;
use common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Three gateways with one budget in `redis`, each with a metrics listener.
fn cluster(redis: &Redis, requests: u32, sync: &str, up: SocketAddr) -> Vec<(Gateway, SocketAddr)> {
    (0..3)
        .map(|_| {
            let metrics = closed_port();
            let gw = Gateway::start(
                "",
                &format!(
                    "[metrics]\nlisten = \"{metrics}\"\n[rate_limit]\nrequests = {requests}\nwindow = \"1h\"\nstore = \"{}\"\nsync = \"{sync}\"\n{}",
                    redis.url(),
                    route("/api", up, "")
                ),
            );
            (gw, metrics)
        })
        .collect()
}

/// `total` requests from one client, spread over the gateways in turn by `threads`
/// keep-alive clients, paced to about `per_second` in all. Returns (passed, limited,
/// anything else as text).
fn spread(
    gateways: &[(Gateway, SocketAddr)],
    total: usize,
    per_second: f64,
    threads: usize,
) -> (usize, usize, Vec<String>) {
    let passed = Arc::new(AtomicUsize::new(0));
    let limited = Arc::new(AtomicUsize::new(0));
    let others = Arc::new(std::sync::Mutex::new(Vec::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let urls: Vec<String> = gateways.iter().map(|(g, _)| g.url("/api/x")).collect();
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (passed, limited, others, next, urls) = (
                passed.clone(),
                limited.clone(),
                others.clone(),
                next.clone(),
                urls.clone(),
            );
            std::thread::spawn(move || {
                let http = client();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return;
                    }
                    // request n is due n / per_second seconds after the start
                    let due = started + Duration::from_secs_f64(n as f64 / per_second);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    match http.get(&urls[n % urls.len()]).send() {
                        Ok(r) if r.status() == 200 => {
                            passed.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) if r.status() == 429 => {
                            limited.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => others
                            .lock()
                            .unwrap()
                            .push(format!("status {}", r.status())),
                        Err(e) => others.lock().unwrap().push(format!("{e}")),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let others = others.lock().unwrap().clone();
    (
        passed.load(Ordering::Relaxed),
        limited.load(Ordering::Relaxed),
        others,
    )
}

fn gauge(metrics: SocketAddr, series: &str) -> Option<f64> {
    metrics_text(metrics)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_gateways_keep_one_budget_within_five_percent_with_sync_50ms() {
    let redis = Redis::start();
    let up = Upstream::fixed(Reply::ok("fine"));
    let gateways = cluster(&redis, 1000, "50ms", up.addr);
    for (_, metrics) in &gateways {
        let m = *metrics;
        wait_until("the store to be up", || {
            gauge(m, "pylon_rate_limit_store_up") == Some(1.0)
        });
    }
    let calls_before = redis.script_calls();
    let (passed, limited, others) = spread(&gateways, 2100, 1000.0, 8);
    let calls = redis.script_calls() - calls_before;
    assert!(others.is_empty(), "{others:?}");
    assert_eq!(passed + limited, 2100);
    assert!(
        (950..=1050).contains(&passed),
        "{passed} of 2100 passed a budget of 1000 on three gateways"
    );
    let per_request = calls as f64 / 2100.0;
    eprintln!("sync 50ms: {passed} of 2100 passed (budget 1000); {calls} store commands, {per_request:.3} per request");
    assert!(
        per_request < 0.5,
        "{calls} store commands for 2100 requests"
    );
}

#[test]
fn with_sync_0s_three_gateways_keep_the_budget_exactly() {
    let redis = Redis::start();
    let up = Upstream::fixed(Reply::ok("fine"));
    let gateways = cluster(&redis, 300, "0s", up.addr);
    for (_, metrics) in &gateways {
        let m = *metrics;
        wait_until("the store to be up", || {
            gauge(m, "pylon_rate_limit_store_up") == Some(1.0)
        });
    }
    let (passed, limited, others) = spread(&gateways, 700, 1000.0, 8);
    assert!(others.is_empty(), "{others:?}");
    assert_eq!((passed, limited), (300, 400));
}

#[test]
fn with_redis_gone_every_request_gets_200_or_429_and_sharing_resumes() {
    let redis = Redis::start();
    let up = Upstream::fixed(Reply::ok("fine"));
    let gateways = cluster(&redis, 100_000, "50ms", up.addr);
    let metrics: Vec<SocketAddr> = gateways.iter().map(|(_, m)| *m).collect();
    for &m in &metrics {
        wait_until("the store to be up", || {
            gauge(m, "pylon_rate_limit_store_up") == Some(1.0)
        });
    }
    let (passed, _, others) = spread(&gateways, 300, 500.0, 4);
    assert!(others.is_empty() && passed == 300, "{others:?}");

    let port = redis.stop();
    let (passed, limited, others) = spread(&gateways, 600, 500.0, 4);
    assert!(
        others.is_empty(),
        "no 5xx and no error without the store: {others:?}"
    );
    assert_eq!(passed + limited, 600);
    for &m in &metrics {
        wait_until("the store to be seen down", || {
            gauge(m, "pylon_rate_limit_store_up") == Some(0.0)
        });
    }
    let stderr = gateways[0].0.stderr();
    assert_eq!(
        stderr.matches("is unreachable").count(),
        1,
        "the change of state is logged once:\n{stderr}"
    );

    let redis = Redis::start_on(port);
    for &m in &metrics {
        wait_until("the store to be up again", || {
            gauge(m, "pylon_rate_limit_store_up") == Some(1.0)
        });
    }
    // what was counted meanwhile was pushed: the restarted store holds this client's count
    wait_until("the counts to reach the new store", || {
        redis.count_keys("pylon:rl:*") > 0
    });
    let (passed, _, others) = spread(&gateways, 150, 500.0, 4);
    assert!(others.is_empty() && passed == 150, "{others:?}");
    assert!(gateways[0].0.stderr().contains("is back"));
}

#[test]
fn with_sync_0s_and_redis_gone_no_request_fails() {
    let redis = Redis::start();
    let up = Upstream::fixed(Reply::ok("fine"));
    let gateways = cluster(&redis, 100_000, "0s", up.addr);
    for (_, m) in &gateways {
        let m = *m;
        wait_until("the store to be up", || {
            gauge(m, "pylon_rate_limit_store_up") == Some(1.0)
        });
    }
    drop(redis);
    let (passed, limited, others) = spread(&gateways, 300, 300.0, 4);
    assert!(others.is_empty(), "{others:?}");
    assert_eq!(passed + limited, 300);
}

#[test]
fn max_in_flight_caps_one_client_with_the_concurrent_requests_unit() {
    let slow = Upstream::fixed(Reply::ok("slow").delayed(Duration::from_millis(800)));
    let gw = Gateway::start("", &route("/slow", slow.addr, "max_in_flight = 2"));
    let url = gw.url("/slow/x");
    let replies: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let r = client().get(url).send().unwrap();
                let policy = r
                    .headers()
                    .get("ratelimit-policy")
                    .map(|v| v.to_str().unwrap().to_string());
                let field = r
                    .headers()
                    .get("ratelimit")
                    .map(|v| v.to_str().unwrap().to_string());
                (r.status().as_u16(), policy, field)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let ok = replies.iter().filter(|r| r.0 == 200).count();
    let refused: Vec<_> = replies.iter().filter(|r| r.0 == 429).collect();
    assert_eq!((ok, refused.len()), (2, 2), "{replies:?}");
    for r in refused {
        assert_eq!(
            r.1.as_deref(),
            Some("\"inflight\";q=2;qu=\"concurrent-requests\"")
        );
        assert_eq!(r.2.as_deref(), Some("\"inflight\";r=0"));
    }
    // the slots come back when the requests end
    assert_eq!(
        client().get(gw.url("/slow/y")).send().unwrap().status(),
        200
    );
}

#[test]
fn route_rate_protects_the_upstream_with_503_and_retry_after() {
    let up = Upstream::fixed(Reply::ok("fine"));
    let gw = Gateway::start(
        "",
        &format!(
            "{}{}",
            route(
                "/capped",
                up.addr,
                "route_rate = { requests = 5, window = \"1m\" }"
            ),
            route("/free", up.addr, "")
        ),
    );
    let statuses: Vec<u16> = (0..8)
        .map(|i| {
            client()
                .get(gw.url(&format!("/capped/{i}")))
                .send()
                .unwrap()
                .status()
                .as_u16()
        })
        .collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 503, 503, 503]);
    let refused = client().get(gw.url("/capped/x")).send().unwrap();
    assert_eq!(refused.headers()["retry-after"], "60");
    assert_eq!(
        up.hits(),
        5,
        "the upstream saw only what the cap let through"
    );
    assert_eq!(
        client().get(gw.url("/free/x")).send().unwrap().status(),
        200
    );
}

#[test]
fn a_store_url_or_sync_that_cannot_work_is_refused_with_its_line() {
    for (text, at, key) in [
        (
            "[rate_limit]\nrequests = 5\nwindow = \"1m\"\nstore = \"http://127.0.0.1:6379\"\n",
            ":4:",
            "rate_limit.store",
        ),
        (
            "[rate_limit]\nrequests = 5\nwindow = \"1m\"\nstore = \"redis://127.0.0.1:6379\"\nsync = \"5ms\"\n",
            ":5:",
            "rate_limit.sync",
        ),
        (
            "[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\nmax_in_flight = 0\n",
            ":4:",
            "routes[0].max_in_flight",
        ),
        (
            "[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\nroute_rate = { requests = 5, window = \"100ms\" }\n",
            ":4:",
            "routes[0].route_rate",
        ),
    ] {
        let (code, _, err) = run_pylon(&["-t"], Some(text));
        assert_eq!(code, 1, "{text}");
        assert!(err.contains(at) && err.contains(key), "{text}: {err}");
    }
    // the table forms of the store: each mistake named, on its line
    for (store, says) in [
        ("{ cluster = [] }", "the list of servers is empty"),
        (
            "{ sentinels = [\"redis://127.0.0.1:26379\"] }",
            "master = \"NAME\"",
        ),
        (
            "{ url = \"redis://127.0.0.1:1\", cluster = [\"redis://127.0.0.1:2\"] }",
            "not several",
        ),
        (
            "{ url = \"redis://127.0.0.1:1\", ca = \"ca.pem\" }",
            "must start with rediss://",
        ),
        (
            "{ url = \"rediss://127.0.0.1:1\", ca = \"/nonexistent/ca.pem\" }",
            "cannot read the CA file /nonexistent/ca.pem",
        ),
        (
            "{ cluster = [\"redis://127.0.0.1:1\", \"127.0.0.1:2\"] }",
            "\"127.0.0.1:2\" is not a Redis URL",
        ),
        ("{ url = \"redis://127.0.0.1:1\", port = 2 }", "port"),
    ] {
        let text = format!("[rate_limit]\nrequests = 5\nwindow = \"1m\"\nstore = {store}\n");
        let (code, _, err) = run_pylon(&["-t"], Some(&text));
        assert_eq!(code, 1, "{text}");
        assert!(
            err.contains(":4:") && err.contains("rate_limit.store") && err.contains(says),
            "{text}: {err}"
        );
    }
}
