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
/// health, and a reload shows up on it without a reload of the page.
#[test]
fn the_status_page_shows_the_routes_in_chromium_and_follows_a_reload() {
    let up = Upstream::fixed(Reply::ok("fine"));
    let admin = closed_port();
    let gw = Gateway::start("", &admin_config(admin, "", &route("/a", up.addr, "")));
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

    gw.write_config(&admin_config(
        admin,
        "",
        &format!("{}{}", route("/a", up.addr, ""), route("/b", up.addr, "")),
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
