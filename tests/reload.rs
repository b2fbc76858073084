//! Reloading in place: SIGHUP to a real process swaps the config without a new process,
//! keeps rate-limit counts, instance health and metric series, refuses a bad file with
//! its location while the old config serves, and reopens the access log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A gateway with a metrics listener, and that listener's address.
fn start(rest: &str) -> (Gateway, SocketAddr) {
    let metrics = closed_port();
    let gw = Gateway::start("", &with_metrics(metrics, rest));
    (gw, metrics)
}

fn with_metrics(metrics: SocketAddr, rest: &str) -> String {
    format!("[metrics]\nlisten = \"{metrics}\"\n{rest}")
}

/// One counter of the metrics text (0 when absent).
fn counter(metrics: SocketAddr, series: &str) -> u64 {
    metrics_text(metrics)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// `(successes, failures)` of reloads so far.
fn reloads(metrics: SocketAddr) -> (u64, u64) {
    (
        counter(metrics, "pylon_config_reloads_total{result=\"success\"}"),
        counter(metrics, "pylon_config_reloads_total{result=\"failure\"}"),
    )
}

/// Rewrite the config, send SIGHUP and wait until the reload is done (either way).
fn reload(gw: &Gateway, metrics: SocketAddr, rest: &str) -> (u64, u64) {
    let before = reloads(metrics);
    gw.write_config(&with_metrics(metrics, rest));
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = reloads(metrics);
        if now != before {
            return now;
        }
        assert!(Instant::now() < deadline, "no reload was counted");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn status(gw: &Gateway, path: &str) -> u16 {
    client().get(gw.url(path)).send().unwrap().status().as_u16()
}

#[test]
fn sighup_adds_a_route_in_the_same_process_without_losing_a_request() {
    let a = Upstream::fixed(Reply::ok("a"));
    let b = Upstream::fixed(Reply::ok("b"));
    let (mut gw, metrics) = start(&route("/a", a.addr, ""));
    let pid = gw.pid();
    assert_eq!(status(&gw, "/b/x"), 404);
    let load = Load::start(gw.url("/a/x"), 8);
    load.wait_for(200);
    let both = format!("{}{}", route("/a", a.addr, ""), route("/b", b.addr, ""));
    assert_eq!(reload(&gw, metrics, &both), (1, 0));
    load.wait_for(200);
    let (ok, failures) = load.stop();
    assert!(failures.is_empty(), "{failures:?} of {ok}");
    let reply = client().get(gw.url("/b/x")).send().unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.text().unwrap(), "b");
    assert!(gw.is_running());
    assert_eq!(gw.pid(), pid, "the same process serves");
    assert!(
        gw.stderr().contains("loaded as generation 2"),
        "{}",
        gw.stderr()
    );
}

#[test]
fn a_file_that_does_not_load_is_refused_with_its_location_and_the_old_config_serves() {
    let a = Upstream::fixed(Reply::ok("a"));
    let (mut gw, metrics) = start(&route("/a", a.addr, ""));
    let broken = format!("{}upstream_timeout = \"5s\"\n", route("/a", a.addr, ""));
    assert_eq!(reload(&gw, metrics, &broken), (0, 1));
    assert_eq!(status(&gw, "/a/x"), 200, "the old config serves");
    let stderr = gw.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("reload refused"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.contains(&format!("{}:", gw.config_path.display()))
            && line.contains("upstream_timeout"),
        "{line}"
    );
    // and a good file after it loads
    let fixed = route("/a", a.addr, "");
    assert_eq!(reload(&gw, metrics, &fixed), (1, 1));
    assert!(gw.is_running());
}

#[test]
fn rate_limit_counts_survive_a_reload_that_keeps_the_policy() {
    let a = Upstream::fixed(Reply::ok("a"));
    let limited = |extra: &str| {
        format!(
            "[rate_limit]\nrequests = 3\nwindow = \"1h\"\n{}{extra}",
            route("/a", a.addr, "")
        )
    };
    let (gw, metrics) = start(&limited(""));
    assert_eq!(status(&gw, "/a/1"), 200);
    assert_eq!(status(&gw, "/a/2"), 200);
    // another route changes; the default policy does not
    let b = Upstream::fixed(Reply::ok("b"));
    assert_eq!(
        reload(&gw, metrics, &limited(&route("/b", b.addr, ""))),
        (1, 0)
    );
    assert_eq!(status(&gw, "/a/3"), 200);
    assert_eq!(
        status(&gw, "/a/4"),
        429,
        "the count went on across the reload"
    );
    // a new budget is a new policy: it starts from zero
    let more = format!(
        "[rate_limit]\nrequests = 5\nwindow = \"1h\"\n{}",
        route("/a", a.addr, "")
    );
    assert_eq!(reload(&gw, metrics, &more), (2, 0));
    assert_eq!(status(&gw, "/a/5"), 200);
}

#[test]
fn instance_health_and_metric_series_survive_a_reload() {
    let good = Upstream::fixed(Reply::ok("good"));
    let dead = closed_port();
    let rest = |extra: &str| {
        format!(
            "[[routes]]\nprefix = \"/a\"\nupstreams = [\"http://{dead}\", \"http://{}\"]\nretries = 1\npassive = {{ failures = 1, cooldown = \"1h\" }}\n{extra}",
            good.addr
        )
    };
    let (gw, metrics) = start(&rest(""));
    for _ in 0..4 {
        assert_eq!(status(&gw, "/a/x"), 200, "the retry goes to the good one");
    }
    let healthy = |addr: SocketAddr| {
        counter(
            metrics,
            &format!("pylon_upstream_healthy{{route=\"/a\",upstream=\"{addr}\"}}"),
        )
    };
    assert_eq!(healthy(dead), 0, "ejected");
    let served = counter(metrics, "pylon_requests_total{route=\"/a\",status=\"2xx\"}");
    assert_eq!(served, 4);
    assert_eq!(reload(&gw, metrics, &rest("strip_prefix = true\n")), (1, 0));
    assert_eq!(healthy(dead), 0, "still ejected after the reload");
    assert_eq!(healthy(good.addr), 1);
    assert_eq!(status(&gw, "/a/x"), 200);
    assert_eq!(
        counter(metrics, "pylon_requests_total{route=\"/a\",status=\"2xx\"}"),
        5,
        "the series went on"
    );
    assert_eq!(good.last().target, "/x", "the new config applies");
}

#[test]
fn a_request_in_flight_finishes_on_the_config_it_started_with() {
    let slow = Upstream::fixed(Reply::ok("slow").delayed(Duration::from_millis(1500)));
    let tagged = |generation: &str| {
        route(
            "/a",
            slow.addr,
            &format!("response_headers = {{ set = {{ \"X-Config\" = \"{generation}\" }} }}\n"),
        )
    };
    let (gw, metrics) = start(&tagged("one"));
    let url = gw.url("/a/x");
    let in_flight = std::thread::spawn(move || {
        let reply = client().get(url).send().unwrap();
        reply.headers()["x-config"].to_str().unwrap().to_string()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(reload(&gw, metrics, &tagged("two")), (1, 0));
    let fresh = client().get(gw.url("/a/y")).send().unwrap();
    assert_eq!(fresh.headers()["x-config"], "two");
    assert_eq!(in_flight.join().unwrap(), "one");
}

#[test]
fn sighup_reopens_the_access_log_after_it_was_moved() {
    let a = Upstream::fixed(Reply::ok("a"));
    let (gw, metrics) = start(&route("/a", a.addr, ""));
    assert_eq!(status(&gw, "/a/before"), 200);
    assert_eq!(gw.access_log_lines(1).len(), 1);
    let log = gw.dir.path().join("access.log");
    let rotated = gw.dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    assert_eq!(reload(&gw, metrics, &route("/a", a.addr, "")), (1, 0));
    // the writer reopens between two drains; lines queued before that go to the old file
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gw.stderr().contains("access log: reopened") {
        assert!(Instant::now() < deadline, "{}", gw.stderr());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(status(&gw, "/a/after"), 200);
    let lines = gw.access_log_lines(1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("/a/after"), "{lines:?}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(
        old.contains("/a/before") && !old.contains("/a/after"),
        "{old}"
    );
}

#[test]
fn a_listener_change_is_named_as_needing_an_upgrade_and_the_rest_applies() {
    let a = Upstream::fixed(Reply::ok("a"));
    let (gw, metrics) = start(&route("/a", a.addr, ""));
    let other = closed_port();
    gw.write_config(&with_metrics(other, &route("/b", a.addr, "")));
    let before = reloads(metrics);
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads(metrics) == before {
        assert!(Instant::now() < deadline, "no reload was counted");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(status(&gw, "/b/x"), 200, "the routes applied");
    assert!(
        gw.stderr().contains("admin.listen changed in"),
        "{}",
        gw.stderr()
    );
    assert!(
        std::net::TcpStream::connect(other).is_err(),
        "no new listener"
    );
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_thousand_reloads_keep_memory_flat() {
    let a = Upstream::fixed(Reply::ok("a"));
    let rest = format!(
        "[rate_limit]\nrequests = 100000\nwindow = \"1m\"\n[cors]\nallow_origins = [\"https://app.example\"]\n{}{}",
        route(
            "/a",
            a.addr,
            "response_headers = { set = { \"X-Served-By\" = \"pylon\" } }\nmethods = [\"GET\"]\n"
        ),
        route("/b", a.addr, "passive = { failures = 3 }\n")
    );
    let (gw, metrics) = start(&rest);
    let http = client();
    let successes = || {
        let text = http
            .get(format!("http://{metrics}/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix("pylon_config_reloads_total{result=\"success\"}")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
    };
    let hangup = || {
        // SAFETY: kill(2) with a pid this test started and a plain signal number.
        let sent = unsafe { libc::kill(gw.pid() as i32, libc::SIGHUP) };
        assert_eq!(sent, 0, "kill -HUP failed");
    };
    let wait_for = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while successes() < n {
            assert!(
                Instant::now() < deadline,
                "reloads stalled at {}",
                successes()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    // warm up: the first reloads and requests settle the allocator
    for i in 1..=20 {
        hangup();
        wait_for(i);
    }
    assert_eq!(status(&gw, "/a/x"), 200);
    let before = rss_kib(gw.pid());
    for i in 1..=1000 {
        hangup();
        // signals sent while one is pending merge: wait for each reload
        wait_for(20 + i);
        if i % 100 == 0 {
            assert_eq!(status(&gw, "/a/x"), 200);
        }
    }
    let after = rss_kib(gw.pid());
    assert_eq!(reloads(metrics), (1020, 0));
    assert!(
        after < before + 5 * 1024,
        "RSS grew from {before} KiB to {after} KiB over 1,000 reloads"
    );
    eprintln!("RSS over 1,000 reloads: {before} KiB -> {after} KiB");
}
