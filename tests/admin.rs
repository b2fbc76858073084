//! The admin listener against the real binary: health and readiness, the status API (and
//! what it must never show), the token, read-only answers, the process series, and the
//! status page in a real headless Chromium.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const JWT_SECRET: &str = "a-jwt-secret-that-must-never-be-shown";
const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

fn admin_config(admin: SocketAddr, extra: &str, rest: &str) -> String {
    format!("[admin]\nlisten = \"{admin}\"\n{extra}\n{rest}")
}

fn get(url: String, token: Option<&str>) -> reqwest::blocking::Response {
    let mut req = client().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().unwrap()
}

fn status_json(admin: SocketAddr, token: Option<&str>) -> serde_json::Value {
    let reply = get(format!("http://{admin}/api/status"), token);
    assert_eq!(reply.status(), 200);
    reply.json().unwrap()
}

#[test]
fn the_status_api_shows_routes_instances_and_authenticators_but_no_secret() {
    let up = Upstream::fixed(Reply::ok("fine"));
    let admin = closed_port();
    let rest = format!(
        "[rate_limit]\nrequests = 50\nwindow = \"1m\"\n[auth.users]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"PYLON_TEST_JWT_SECRET\"\n{}{}",
        route("/users", up.addr, "auth = \"users\"\nbalance = \"least_request\""),
        route("/open", up.addr, "rate_limit = false")
    );
    let gw = Gateway::start_with(
        "",
        &admin_config(admin, "", &rest),
        "combined",
        &[("PYLON_TEST_JWT_SECRET", JWT_SECRET)],
    );
    for _ in 0..3 {
        assert_eq!(
            client().get(gw.url("/open/x")).send().unwrap().status(),
            200
        );
    }
    let raw = get(format!("http://{admin}/api/status"), None)
        .text()
        .unwrap();
    assert!(!raw.contains(JWT_SECRET), "{raw}");
    let doc: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["pid"], gw.pid());
    assert_eq!(doc["config"]["generation"], 1);
    assert_eq!(doc["config"]["path"], gw.config_path.display().to_string());
    assert!(doc["config"]["last_reload"].is_null());
    assert_eq!(doc["listeners"]["http"][0], gw.addr.to_string());
    assert_eq!(doc["listeners"]["admin"], admin.to_string());
    assert_eq!(doc["draining"], false);
    let routes = doc["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 2);
    let users = &routes[0];
    assert_eq!(users["prefix"], "/users");
    assert_eq!(users["balance"], "least_request");
    assert_eq!(users["auth"][0]["name"], "users");
    assert_eq!(users["auth"][0]["type"], "jwt");
    assert_eq!(users["rate_limit"]["name"], "default");
    assert_eq!(users["rate_limit"]["requests"], 50);
    assert_eq!(users["rate_limit"]["window_seconds"], 60);
    let instance = &users["upstreams"][0];
    assert_eq!(instance["url"], format!("http://{}", up.addr));
    assert_eq!(instance["healthy"], true);
    assert_eq!(instance["in_flight"], 0);
    assert_eq!(instance["weight"], 1);
    let open = &routes[1];
    assert!(open["rate_limit"].is_null());
    assert_eq!(open["counts"]["requests"]["2xx"], 3);
}

#[test]
fn readyz_turns_503_when_draining_while_healthz_stays_200() {
    let up = Upstream::fixed(Reply::ok("fine"));
    let admin = closed_port();
    let mut gw = Gateway::start(
        "grace_period = \"3s\"",
        &admin_config(admin, "", &route("/a", up.addr, "")),
    );
    let code = |path: &str| get(format!("http://{admin}{path}"), None).status().as_u16();
    assert_eq!(code("/healthz"), 200);
    assert_eq!(code("/readyz"), 200);
    gw.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(2);
    while code("/readyz") != 503 {
        assert!(Instant::now() < deadline, "readyz never turned 503");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(code("/healthz"), 200, "the process still runs");
    // still serving during the grace period: the load balancer stops sending first
    assert_eq!(client().get(gw.url("/a/x")).send().unwrap().status(), 200);
    assert_eq!(status_json(admin, None)["draining"], true);
    assert_eq!(gw.wait_exit(Duration::from_secs(15)), Some(0));
}

#[test]
fn with_a_token_only_health_and_the_page_shell_are_open() {
    let up = Upstream::fixed(Reply::ok("fine"));
    let admin = closed_port();
    let gw = Gateway::start_with(
        "",
        &admin_config(
            admin,
            "token_env = \"PYLON_TEST_ADMIN_TOKEN\"",
            &route("/a", up.addr, ""),
        ),
        "combined",
        &[("PYLON_TEST_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    let url = |path: &str| format!("http://{admin}{path}");
    for open in ["/healthz", "/readyz", "/", "/status.js", "/status.css"] {
        assert_eq!(get(url(open), None).status(), 200, "{open}");
    }
    for guarded in ["/metrics", "/api/status"] {
        let refused = get(url(guarded), None);
        assert_eq!(refused.status(), 401, "{guarded}");
        assert!(refused.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        assert_eq!(
            get(url(guarded), Some("wrong-token-0123456789")).status(),
            401
        );
        assert_eq!(
            get(url(guarded), Some(ADMIN_TOKEN)).status(),
            200,
            "{guarded}"
        );
    }
    let _ = gw;
}

#[test]
fn the_admin_listener_is_read_only_and_sends_its_page_under_a_strict_policy() {
    let up = Upstream::fixed(Reply::ok("fine"));
    let admin = closed_port();
    let _gw = Gateway::start("", &admin_config(admin, "", &route("/a", up.addr, "")));
    for method in [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let reply = client()
            .request(method.clone(), format!("http://{admin}/api/status"))
            .send()
            .unwrap();
        assert_eq!(reply.status(), 405, "{method}");
        assert_eq!(reply.headers()["allow"], "GET, HEAD");
    }
    let page = get(format!("http://{admin}/"), None);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert_eq!(get(format!("http://{admin}/nope"), None).status(), 404);
}

#[test]
fn metrics_carry_the_process_series_in_flight_and_bytes() {
    let up = Upstream::echo();
    let admin = closed_port();
    let gw = Gateway::start("", &admin_config(admin, "", &route("/a", up.addr, "")));
    let sent = client()
        .post(gw.url("/a/x"))
        .body("0123456789")
        .send()
        .unwrap();
    assert_eq!(sent.status(), 200);
    let text = metrics_text(admin);
    for series in [
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_cpu_seconds_total ",
        "process_start_time_seconds ",
        "pylon_requests_in_flight 0",
        "pylon_request_bytes_total{route=\"/a\"} 10",
        "pylon_config_generation 1",
        "pylon_config_reloads_total{result=\"success\"} 0",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    let rss: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rss > 1e6, "{rss}");
    assert!(
        text.contains("pylon_response_bytes_total{route=\"/a\"}"),
        "{text}"
    );
}

#[test]
fn the_status_api_reports_each_reload_and_its_error() {
    let up = Upstream::fixed(Reply::ok("fine"));
    let admin = closed_port();
    let gw = Gateway::start("", &admin_config(admin, "", &route("/a", up.addr, "")));
    let wait_for = |check: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let doc = status_json(admin, None);
            if check(&doc) {
                return doc;
            }
            assert!(Instant::now() < deadline, "{doc}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    gw.write_config(&admin_config(admin, "", &route("/a", up.addr, "bogus = 1")));
    gw.signal("HUP");
    let doc = wait_for(&|d| !d["config"]["last_reload"].is_null());
    let last = &doc["config"]["last_reload"];
    assert_eq!(last["result"], "failure");
    assert!(last["error"].as_str().unwrap().contains("bogus"), "{last}");
    assert_eq!(doc["config"]["generation"], 1);
    gw.write_config(&admin_config(
        admin,
        "",
        &format!("{}{}", route("/a", up.addr, ""), route("/b", up.addr, "")),
    ));
    gw.signal("HUP");
    let doc = wait_for(&|d| d["config"]["generation"] == 2);
    assert_eq!(doc["config"]["last_reload"]["result"], "success");
    assert_eq!(
        doc["config"]["reloads"],
        serde_json::json!({"success": 1, "failure": 1})
    );
    assert_eq!(doc["routes"][1]["prefix"], "/b");
}

#[test]
fn metrics_and_admin_together_are_refused_with_the_place_to_fix() {
    let (code, _, stderr) = run_pylon(
        &["-t"],
        Some("[admin]\nlisten = \"127.0.0.1:9180\"\n[metrics]\nlisten = \"127.0.0.1:9181\"\n"),
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains(":3:") && stderr.contains("key `metrics`") && stderr.contains("[admin]"),
        "{stderr}"
    );
}

#[test]
fn a_token_env_that_is_unset_or_short_is_refused() {
    let (code, _, stderr) = run_pylon(
        &["-t"],
        Some("[admin]\ntoken_env = \"PYLON_TEST_NO_SUCH_TOKEN\"\n"),
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("admin.token_env") && stderr.contains("is not set"),
        "{stderr}"
    );
    let (code, _, stderr) = run_pylon_env(
        &["-t"],
        Some("[admin]\ntoken_env = \"PYLON_TEST_SHORT_TOKEN\"\n"),
        &[("PYLON_TEST_SHORT_TOKEN", "short")],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("at least 16"), "{stderr}");
}

/// The page in a real headless Chromium (Debian's `chromium`, driven by playwright-core
/// from tests/browser, both installed by `make test`): it shows the routes and instance
/// health, a cached route's hit ratio, and a reload shows up on it without a reload of the
/// page.
#[test]
fn the_status_page_shows_the_routes_in_chromium_and_follows_a_reload() {
    let up = Upstream::fixed(Reply::ok("fine"));
    let admin = closed_port();
    let cached = "cache = { ttl = \"60s\" }\n";
    let gw = Gateway::start("", &admin_config(admin, "", &route("/a", up.addr, cached)));
    // one miss, then three hits
    for _ in 0..4 {
        assert_eq!(client().get(gw.url("/a/x")).send().unwrap().status(), 200);
    }
    assert_eq!(up.hits(), 1);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/status_page.mjs");
    let mut node = Command::new("node")
        .arg(script)
        .arg(format!("http://{admin}/"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node is needed for the browser test (make test installs it)");
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let ready = lines
        .next()
        .and_then(Result::ok)
        .filter(|l| l.starts_with("ready "));
    let Some(ready) = ready else {
        let mut err = String::new();
        std::io::Read::read_to_string(&mut node.stderr.take().unwrap(), &mut err).unwrap();
        panic!("the page did not load in Chromium:\n{err}");
    };
    let before: serde_json::Value = serde_json::from_str(&ready["ready ".len()..]).unwrap();
    assert_eq!(before["generation"], "1");
    assert_eq!(before["routes"][0]["prefix"], "/a");
    let row = before["routes"][0]["text"].as_str().unwrap();
    assert!(
        row.contains(&format!("http://{}", up.addr)) && row.contains("healthy"),
        "{row}"
    );
    assert!(row.contains("75.0% hits"), "{row}");

    gw.write_config(&admin_config(
        admin,
        "",
        &format!(
            "{}{}",
            route("/a", up.addr, cached),
            route("/b", up.addr, "")
        ),
    ));
    gw.signal("HUP");
    let done = lines
        .next()
        .and_then(Result::ok)
        .expect("the browser script ended early");
    assert!(node.wait().unwrap().success());
    let done: serde_json::Value = serde_json::from_str(&done["done ".len()..]).unwrap();
    assert_eq!(done["problems"], serde_json::json!([]), "{done}");
    assert_eq!(done["foreign"], serde_json::json!([]), "{done}");
    let after = &done["after"];
    assert_eq!(after["generation"], "2", "{done}");
    assert!(
        after["lastReload"].as_str().unwrap().contains("success"),
        "{done}"
    );
    let prefixes: Vec<&str> = after["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(prefixes, ["/a", "/b"]);
}

/// An upstream that answers 200, or 404 to a path ending in "/missing", after 20 ms.
fn upstream_with_misses() -> Upstream {
    Upstream::start(std::sync::Arc::new(|seen: &Seen| {
        let mut reply = Reply::ok("fine").delayed(Duration::from_millis(20));
        if seen.target.ends_with("/missing") {
            reply.status = 404;
        }
        reply
    }))
}

/// 8 answers of 200 and 2 of 404 through `/a`, 3 answers of 502 through `/b`.
fn send_traffic(gw: &Gateway) {
    for i in 0..10 {
        let path = if i < 2 { "/a/missing" } else { "/a/x" };
        let _ = client().get(gw.url(path)).send().unwrap().bytes();
    }
    for _ in 0..3 {
        let reply = client().get(gw.url("/b/x")).send().unwrap();
        assert_eq!(reply.status(), 502);
    }
}

/// The first reading is taken at start and a point closes every 5 s: the traffic sent
/// right after start is in a point within two steps.
fn history_with_traffic(admin: SocketAddr, token: Option<&str>) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = get(format!("http://{admin}/api/history"), token);
        assert_eq!(reply.status(), 200);
        assert_eq!(reply.headers()["content-type"], "application/json");
        let doc: serde_json::Value = reply.json().unwrap();
        let has_traffic = doc["routes"].as_array().unwrap().iter().all(|r| {
            r["points"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["rps"].as_f64().unwrap() > 0.0)
        });
        if has_traffic {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "no point with the traffic: {doc}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn the_history_api_has_each_routes_steps_with_rates_latency_and_errors() {
    let up = upstream_with_misses();
    let dead = refusing_port();
    let admin = closed_port();
    let gw = Gateway::start_with(
        "",
        &admin_config(
            admin,
            "token_env = \"PYLON_TEST_ADMIN_TOKEN\"",
            &format!("{}{}", route("/a", up.addr, ""), route("/b", dead.addr, "")),
        ),
        "combined",
        &[("PYLON_TEST_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    assert_eq!(
        get(format!("http://{admin}/api/history"), None).status(),
        401,
        "the read token, as /api/status"
    );
    send_traffic(&gw);
    let doc = history_with_traffic(admin, Some(ADMIN_TOKEN));
    assert_eq!(doc["step_s"], 5);
    assert_eq!(doc["window_s"], 900);
    let now = doc["now"].as_f64().unwrap();
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - unix).abs() < 5.0, "{now} {unix}");
    let routes = doc["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 2, "{doc}");
    assert_eq!(routes[0]["prefix"], "/a");
    assert_eq!(routes[1]["prefix"], "/b");
    // every point of a step; the traffic may straddle two of them
    let sum = |route: &serde_json::Value, key: &str| -> u64 {
        route["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[key].as_u64().unwrap())
            .sum()
    };
    assert_eq!((sum(&routes[0], "c4xx"), sum(&routes[0], "c5xx")), (2, 0));
    assert_eq!((sum(&routes[1], "c4xx"), sum(&routes[1], "c5xx")), (0, 3));
    for p in routes[0]["points"].as_array().unwrap() {
        assert!(p["t"].as_f64().unwrap() <= now && p["t"].as_f64().unwrap() > now - 30.0);
        if p["rps"].as_f64().unwrap() > 0.0 {
            // 20 ms upstream delay: in the 10-25 ms bucket, or a slower one on a busy machine
            let (p50, p99) = (p["p50_ms"].as_f64().unwrap(), p["p99_ms"].as_f64().unwrap());
            assert!((10.0..=100.0).contains(&p50) && p50 <= p99, "{p}");
        } else {
            assert_eq!(p["p50_ms"], serde_json::Value::Null, "{p}");
        }
    }
}

/// Run a browser script under node and return its "done" line's JSON (panics with its
/// stderr when there is none).
fn browser(script: &str, args: &[String]) -> serde_json::Value {
    let path = format!("{}/tests/browser/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("node")
        .arg(path)
        .args(args)
        .output()
        .expect("node is needed for the browser test (make test installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(done) = stdout.lines().find_map(|l| l.strip_prefix("done ")) else {
        panic!(
            "{script} ended without a result:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    assert!(out.status.success(), "{script}: {}", out.status);
    serde_json::from_str(done).unwrap()
}

/// The charts of the last 15 minutes in a real headless Chromium: a route's requests/s,
/// latency and errors are drawn once a step with traffic has closed.
#[test]
fn the_status_page_charts_each_routes_traffic_in_chromium() {
    let up = upstream_with_misses();
    let dead = refusing_port();
    let admin = closed_port();
    let gw = Gateway::start(
        "",
        &admin_config(
            admin,
            "",
            &format!("{}{}", route("/a", up.addr, ""), route("/b", dead.addr, "")),
        ),
    );
    send_traffic(&gw);
    let done = browser(
        "history_charts.mjs",
        &[format!("http://{admin}/"), "/a".into(), "/b".into()],
    );
    assert_eq!(done["problems"], serde_json::json!([]), "{done}");
    assert_eq!(done["foreign"], serde_json::json!([]), "{done}");
    let charts = done["charts"].as_array().unwrap();
    let prefixes: Vec<&str> = charts
        .iter()
        .map(|c| c["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(prefixes, ["/a", "/b"], "{done}");
    let (a, b) = (&charts[0]["charts"], &charts[1]["charts"]);
    assert!(a["rps"]["points"].as_u64().unwrap() >= 1, "{done}");
    assert!(a["rps"]["max"].as_f64().unwrap() > 0.0, "{done}");
    assert!(a["latency"]["max"].as_f64().unwrap() >= 10.0, "{done}");
    assert!(a["errors"]["max"].as_f64().unwrap() >= 1.0, "{done}");
    assert!(b["errors"]["max"].as_f64().unwrap() >= 1.0, "{done}");
    // drawn, in the series' colours: the rate's line, both percentiles, 4xx on /a, 5xx on /b
    let pixels = |c: &serde_json::Value, i: usize| c["pixels"][i].as_u64().unwrap();
    assert!(pixels(&a["rps"], 0) > 0, "{done}");
    assert!(
        pixels(&a["latency"], 0) > 0 && pixels(&a["latency"], 1) > 0,
        "{done}"
    );
    assert!(
        pixels(&a["errors"], 0) > 0 && pixels(&a["errors"], 1) == 0,
        "{done}"
    );
    assert!(
        pixels(&b["errors"], 1) > 0 && pixels(&b["errors"], 0) == 0,
        "{done}"
    );
    assert!(
        a["rps"]["caption"].as_str().unwrap().contains("requests/s"),
        "{done}"
    );
}

const WRITE_TOKEN: &str = "write-token-0123456789abcdef";

/// The fleet view, the policy document and its editor in a real headless Chromium: with the
/// write token, a bad document is refused with its error at its line, a good one is applied,
/// and the page shows the new hash and the new route.
#[test]
fn the_status_page_edits_the_policy_in_chromium() {
    let up = Upstream::fixed(Reply::ok("fine"));
    let admin = closed_port();
    let gw = Gateway::start_with(
        "",
        &admin_config(
            admin,
            "write_token_env = \"PYLON_TEST_WRITE_TOKEN\"",
            &route("/a", up.addr, ""),
        ),
        "combined",
        &[("PYLON_TEST_WRITE_TOKEN", WRITE_TOKEN)],
    );
    let etag = |reply: &reqwest::blocking::Response| {
        reply.headers()["etag"]
            .to_str()
            .unwrap()
            .trim_matches('"')
            .to_string()
    };
    let before = get(format!("http://{admin}/config"), None);
    assert_eq!(before.status(), 200);
    let hash_before = etag(&before);
    let text_before = before.text().unwrap();

    let bad = "[[routes]]\nprefix = \"/b\"\nupstreams = [\"nope://x\"]\n";
    let good = route("/b", up.addr, "");
    let done = browser(
        "policy_editor.mjs",
        &[
            format!("http://{admin}/"),
            WRITE_TOKEN.into(),
            bad.into(),
            good,
            "/b".into(),
        ],
    );
    // the browser logs the answer to a refused document; nothing else may be logged
    let problems: Vec<&serde_json::Value> = done["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            !(p["text"].as_str().unwrap().contains("status of 400")
                && p["url"].as_str().unwrap().ends_with("/config/validate"))
        })
        .collect();
    assert!(problems.is_empty(), "{done}");
    assert_eq!(done["foreign"], serde_json::json!([]), "{done}");
    let seen = &done["seen"];

    let fleet = seen["fleet"]["nodes"].as_array().unwrap();
    assert_eq!(fleet.len(), 1, "one node without a store: {done}");
    assert!(
        fleet[0][0].as_str().unwrap().contains("(this node)"),
        "{done}"
    );
    assert_eq!(fleet[0][2], hash_before.as_str(), "{done}");
    assert_eq!(seen["fleet"]["agree"], "true", "{done}");

    assert_eq!(seen["hash"], hash_before.as_str(), "{done}");
    assert_eq!(seen["readOnly"], text_before.as_str(), "{done}");
    assert_eq!(seen["editorHiddenBefore"], true, "{done}");
    assert_eq!(seen["loaded"], text_before.as_str(), "{done}");

    // the bad upstream is on the third line of the addition
    let line = text_before.trim_end_matches('\n').lines().count() + 3;
    let errors = seen["bad"]["errors"].as_array().unwrap();
    assert!(
        errors[0]
            .as_str()
            .unwrap()
            .starts_with(&format!("line {line}: ")),
        "line {line}: {done}"
    );
    assert!(errors[0].as_str().unwrap().contains("upstreams"), "{done}");
    assert_eq!(seen["bad"]["marked"], serde_json::json!([line]), "{done}");

    assert!(
        seen["valid"].as_str().unwrap().starts_with("valid;"),
        "{done}"
    );
    assert_eq!(seen["markedAfterValid"], 0, "{done}");
    let after = get(format!("http://{admin}/config"), None);
    let hash_after = etag(&after);
    assert_ne!(hash_after, hash_before);
    assert!(after.text().unwrap().contains("prefix = \"/b\""));
    let applied = seen["applied"].as_str().unwrap();
    assert!(
        applied.contains(&hash_after) && applied.contains(&hash_before),
        "{done}"
    );
    assert_eq!(seen["hashAfter"], hash_after.as_str(), "{done}");
    assert_eq!(seen["routes"], serde_json::json!(["/a", "/b"]), "{done}");
    assert_eq!(seen["fleetAfter"][0][2], hash_after.as_str(), "{done}");
    let reply = client().get(gw.url("/b/x")).send().unwrap();
    assert_eq!(reply.status(), 200, "the new route serves");
}
