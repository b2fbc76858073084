//! One access-log line per request, the gateway's own answers included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::time::Duration;

/// `127.0.0.1 - - [23/Nov/2026:19:33:58 +0000] "GET /x HTTP/1.1" 200 17 "-" "ua"`
fn check_combined(line: &str, request: &str, status: u16, ua: &str) {
    let (client, rest) = line
        .split_once(" - - [")
        .unwrap_or_else(|| panic!("{line}"));
    assert_eq!(client, "127.0.0.1", "{line}");
    let (time, rest) = rest.split_once("] \"").unwrap();
    assert_eq!(time.len(), 26, "{line}");
    assert!(time.ends_with(" +0000"), "{line}");
    let (req, rest) = rest.split_once("\" ").unwrap();
    assert_eq!(req, request, "{line}");
    let mut fields = rest.splitn(3, ' ');
    assert_eq!(fields.next().unwrap(), status.to_string(), "{line}");
    let bytes = fields.next().unwrap();
    assert!(bytes == "-" || bytes.parse::<u64>().is_ok(), "{line}");
    assert_eq!(fields.next().unwrap(), format!("\"-\" \"{ua}\""), "{line}");
}

#[test]
fn every_answer_gets_a_combined_line() {
    let ok = Upstream::echo();
    let slow = Upstream::fixed(Reply::ok("late").delayed(Duration::from_secs(3)));
    let gw = Gateway::start(
        "",
        &format!(
            "[rate_limit]\nrequests = 100\nwindow = \"1m\"\n{}{}{}{}",
            route("/ok", ok.addr, ""),
            route("/down", closed_port(), ""),
            route("/slow", slow.addr, "timeouts = { read = \"1s\" }"),
            route(
                "/tight",
                ok.addr,
                "rate_limit = { requests = 1, window = \"1m\" }"
            ),
        ),
    );
    let c = client();
    let send = |path: &str| {
        c.get(gw.url(path))
            .header("User-Agent", "pylon-test")
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(send("/ok/a?x=1"), 200);
    assert_eq!(send("/nowhere"), 404);
    assert_eq!(send("/down"), 502);
    assert_eq!(send("/slow"), 504);
    assert_eq!(send("/tight"), 200);
    assert_eq!(send("/tight"), 429);
    let lines = gw.access_log_lines(6);
    assert_eq!(lines.len(), 6, "{lines:?}");
    check_combined(&lines[0], "GET /ok/a?x=1 HTTP/1.1", 200, "pylon-test");
    check_combined(&lines[1], "GET /nowhere HTTP/1.1", 404, "pylon-test");
    check_combined(&lines[2], "GET /down HTTP/1.1", 502, "pylon-test");
    check_combined(&lines[3], "GET /slow HTTP/1.1", 504, "pylon-test");
    check_combined(&lines[4], "GET /tight HTTP/1.1", 200, "pylon-test");
    check_combined(&lines[5], "GET /tight HTTP/1.1", 429, "pylon-test");
    // the 404's body is the 70-byte JSON answer
    assert!(lines[1].contains("\" 404 70 \""), "{}", lines[1]);
}

#[test]
fn json_lines_carry_the_request_id_route_and_upstream() {
    let up = Upstream::echo();
    let gw = Gateway::start_with_log_format("", &route("/users", up.addr, ""), "json");
    client()
        .get(gw.url("/users/7?q=1"))
        .header("X-Request-Id", "req-42")
        .header("Referer", "https://app.example/")
        .send()
        .unwrap();
    let lines = gw.access_log_lines(1);
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["client"], "127.0.0.1");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["uri"], "/users/7?q=1");
    assert_eq!(v["status"], 200);
    assert_eq!(v["request_id"], "req-42");
    assert_eq!(v["route"], "/users");
    assert_eq!(v["upstream"], up.addr.to_string());
    assert_eq!(v["referer"], "https://app.example/");
    assert!(v["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn a_client_cannot_forge_log_lines() {
    let up = Upstream::echo();
    let gw = Gateway::start("", &route("/a", up.addr, ""));
    let r = raw_request(
        gw.addr,
        b"GET /a HTTP/1.1\r\nHost: gw\r\nUser-Agent: x\" 200 \"forged\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let lines = gw.access_log_lines(1);
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].ends_with("\"x\\\" 200 \\\"forged\""),
        "{}",
        lines[0]
    );
}
