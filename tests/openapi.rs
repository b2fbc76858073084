//! The admin API against its description, `admin/openapi.yaml`: schemathesis drives every
//! operation the description names, on a gateway of its own (`PUT /config` replaces its
//! policy with whatever was generated), and checks each answer's status, content type,
//! body and headers against the description. Schemathesis comes from the venv that
//! `scripts/ensure-schemathesis.sh` makes (`make test` runs it); without it the test fails
//! and says so. `PYLON_SCHEMATHESIS` names another schemathesis, `PYLON_SCHEMATHESIS_SEED`
//! another seed than the fixed one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::collections::BTreeSet;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DESCRIPTION: &str = include_str!("../admin/openapi.yaml");
const READ_TOKEN: &str = "openapi-read-token-0123456789";
const WRITE_TOKEN: &str = "openapi-write-token-0123456789";
/// The checks run on every answer (schemathesis 4's names).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance";
/// The same but `not_a_server_error`: see [`Checks::AllBut5xx`].
const CHECKS_BUT_5XX: &str = "status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance";

/// Test cases per operation in the fuzzing phase (the examples and coverage phases add
/// their own few).
const MAX_EXAMPLES: &str = "12";
/// A fixed seed, so that a run is repeatable; schemathesis prints the one it used.
const SEED: &str = "25";
/// One run's bound (a run takes under 10 s), so that the fleet's two runs stay under two
/// minutes together.
const RUN_LIMIT: Duration = Duration::from_secs(50);

/// What a run checks.
#[derive(Clone, Copy)]
enum Checks {
    /// Every check, on valid requests and invalid ones (no 5xx, whatever is sent).
    All,
    /// For a fleet node whose store is gone, whose writes answer 503 as described: every
    /// check but `not_a_server_error`, on valid requests only (an invalid one is checked by
    /// nothing else, and the run with the store up sent them).
    AllBut5xx,
}

impl Checks {
    fn args(self) -> [&'static str; 4] {
        match self {
            Checks::All => ["--checks", CHECKS, "--mode", "all"],
            Checks::AllBut5xx => ["--checks", CHECKS_BUT_5XX, "--mode", "positive"],
        }
    }
}

/// Every operation of the admin listener (issue 25's contract): the description must
/// name each, and schemathesis must test each.
const OPERATIONS: &[&str] = &[
    "GET /healthz",
    "HEAD /healthz",
    "GET /readyz",
    "HEAD /readyz",
    "GET /metrics",
    "HEAD /metrics",
    "GET /api/status",
    "HEAD /api/status",
    "GET /api/fleet",
    "HEAD /api/fleet",
    "GET /api/history",
    "HEAD /api/history",
    "GET /config",
    "HEAD /config",
    "PUT /config",
    "POST /config/validate",
    "DELETE /cache",
    "GET /openapi.yaml",
    "HEAD /openapi.yaml",
    "GET /",
    "HEAD /",
    "GET /index.html",
    "HEAD /index.html",
    "GET /status.js",
    "HEAD /status.js",
    "GET /status.css",
    "HEAD /status.css",
    "GET /favicon.ico",
    "HEAD /favicon.ico",
];

fn here() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's schemathesis, or a panic that says how to make it.
fn schemathesis() -> PathBuf {
    let bin = match std::env::var_os("PYLON_SCHEMATHESIS") {
        Some(p) => PathBuf::from(p),
        None => here().join("target/schemathesis-venv/bin/schemathesis"),
    };
    assert!(
        bin.exists(),
        "{} does not exist: this test needs schemathesis; run `make test` (or \
         `bash scripts/ensure-schemathesis.sh`), or set PYLON_SCHEMATHESIS",
        bin.display()
    );
    bin
}

/// The operations a description names, as `METHOD /path`: read from its `paths:` block,
/// where a path is indented two spaces and its methods four.
fn described_operations(description: &str) -> BTreeSet<String> {
    const METHODS: &[&str] = &[
        "get", "head", "put", "post", "delete", "patch", "options", "trace",
    ];
    let mut ops = BTreeSet::new();
    let mut in_paths = false;
    let mut path = None;
    for line in description.lines() {
        if !line.starts_with(' ') && !line.starts_with('#') && !line.is_empty() {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            path = Some(format!("/{}", p.trim_matches('"')));
        } else if let Some(m) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')) {
            if let (Some(path), true) = (&path, METHODS.contains(&m)) {
                ops.insert(format!("{} {path}", m.to_uppercase()));
            }
        }
    }
    ops
}

/// The `[admin]` keys of a gateway with both tokens.
const BOTH_TOKENS: &str =
    "token_env = \"PYLON_TEST_READ_TOKEN\"\nwrite_token_env = \"PYLON_TEST_WRITE_TOKEN\"";

/// A gateway with an admin listener (`admin_keys` its other keys) and the rest of its
/// config after it, that has been sent a few requests (so that the counts hold something).
fn gateway(admin_keys: &str, rest: &str) -> (Gateway, SocketAddr) {
    let admin = closed_port();
    let rest = format!("[admin]\nlisten = \"{admin}\"\n{admin_keys}\n\n{rest}");
    let gw = Gateway::start_with(
        "",
        &rest,
        "combined",
        &[
            ("PYLON_TEST_READ_TOKEN", READ_TOKEN),
            ("PYLON_TEST_WRITE_TOKEN", WRITE_TOKEN),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while client()
        .get(format!("http://{admin}/healthz"))
        .send()
        .map_or(true, |r| r.status() != 200)
    {
        assert!(
            Instant::now() < deadline,
            "the admin listener never answered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for path in ["/a/x", "/a/y", "/nowhere"] {
        client().get(gw.url(path)).send().unwrap();
    }
    (gw, admin)
}

/// Run schemathesis with `checks` over every operation of the description against
/// `admin`; panic with its output unless it passed and tested each operation.
fn schemathesis_passes(gw: &mut Gateway, admin: SocketAddr, checks: Checks) {
    let bin = schemathesis();
    let work = tempfile::tempdir().unwrap();
    let report = work.path().join("report.json");
    let output = work.path().join("output.txt");
    let seed = std::env::var("PYLON_SCHEMATHESIS_SEED").unwrap_or_else(|_| SEED.to_string());
    let hooks = here().join("tests/schemathesis");
    let log = File::create(&output).unwrap();
    let mut command = Command::new(&bin);
    command
        .current_dir(work.path())
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", &hooks)
        .env("PYLON_OPENAPI_READ_TOKEN", READ_TOKEN)
        .env("PYLON_OPENAPI_WRITE_TOKEN", WRITE_TOKEN)
        .arg("--config-file")
        .arg(hooks.join("schemathesis.toml"))
        .arg("run")
        .arg(here().join("admin/openapi.yaml"))
        .args(["--url", &format!("http://{admin}")])
        .args(checks.args())
        .args(["--max-examples", MAX_EXAMPLES, "--seed", &seed])
        .args(["--workers", "2", "--request-timeout", "5"])
        .args(["--generation-database", "none", "--no-color"])
        .args(["--report", "json", "--report-json-path"])
        .arg(&report)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let shown = format!("{command:?}");
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis ran past {RUN_LIMIT:?}: {shown}\n{}",
                std::fs::read_to_string(&output).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(&output).unwrap_or_default();
    assert!(
        status.success(),
        "schemathesis found answers that break admin/openapi.yaml ({status}): {shown}\n{out}\n\
         gateway's log:\n{}",
        gw.stderr()
    );

    // Every operation was run, and none without its answer checked.
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&report)
            .unwrap_or_else(|e| panic!("no report at {}: {e}\n{out}", report.display())),
    )
    .unwrap();
    let ops = &summary["operations"];
    let total = OPERATIONS.len() as u64;
    assert!(
        summary["complete"] == true
            && ops["total"] == total
            && ops["selected"] == total
            && ops["tested"] == total
            && ops["errored"] == 0
            && ops["skipped"] == 0,
        "not every operation was tested: {ops}\n{out}"
    );
    let tested: BTreeSet<String> = summary["valid_rates"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let expected: BTreeSet<String> = OPERATIONS.iter().map(|s| s.to_string()).collect();
    assert_eq!(tested, expected, "operations tested\n{out}");
    let cases = &summary["test_cases"];
    assert!(
        cases["generated"].as_u64().unwrap_or(0) >= total && cases["without_checks"] == 0,
        "{cases}\n{out}"
    );
    let warnings = summary["warnings"].as_object().unwrap();
    for kind in [
        "missing_deserializer",
        "missing_auth",
        "unused_openapi_auth",
    ] {
        assert!(
            warnings[kind].as_array().is_some_and(|w| w.is_empty()),
            "{kind}: {}\n{out}",
            warnings[kind]
        );
    }
    assert!(gw.is_running(), "the gateway died:\n{}", gw.stderr());
    println!(
        "schemathesis: {} operations tested, test cases {cases}, in {:.1} s",
        ops["tested"],
        summary["running_time"].as_f64().unwrap_or(0.0)
    );
}

#[test]
fn the_description_names_every_operation_of_the_admin_listener() {
    let described = described_operations(DESCRIPTION);
    let expected: BTreeSet<String> = OPERATIONS.iter().map(|s| s.to_string()).collect();
    assert_eq!(described, expected);
}

#[test]
fn the_description_is_served_as_written_without_a_token() {
    let up = Upstream::fixed(Reply::ok("fine"));
    let (_gw, admin) = gateway(BOTH_TOKENS, &route("/a", up.addr, ""));
    let reply = client()
        .get(format!("http://{admin}/openapi.yaml"))
        .send()
        .unwrap();
    assert_eq!(reply.status(), 200);
    let content_type = reply.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/yaml"),
        "{content_type}"
    );
    assert_eq!(reply.text().unwrap(), DESCRIPTION);
}

/// Reads with the read token, writes with the write token: every answer as described,
/// `PUT /config` replacing the policy of this gateway with what schemathesis made. It
/// starts once /api/history holds a point (one step, 5 s), so that points are checked too.
#[test]
fn the_admin_api_answers_as_its_openapi_description_says() {
    let up = Upstream::fixed(Reply::ok("fine"));
    let (mut gw, admin) = gateway(BOTH_TOKENS, &route("/a", up.addr, ""));
    common::redis::wait_for("a point in /api/history", Duration::from_secs(15), || {
        client()
            .get(format!("http://{admin}/api/history"))
            .bearer_auth(READ_TOKEN)
            .send()
            .ok()
            .and_then(|r| r.json::<serde_json::Value>().ok())
            .is_some_and(|h| {
                h["routes"][0]["points"]
                    .as_array()
                    .is_some_and(|p| !p.is_empty())
            })
    });
    schemathesis_passes(&mut gw, admin, Checks::All);
}

/// Without tokens: reads are open, and writes are off (405) as described.
#[test]
fn without_tokens_the_admin_api_still_answers_as_described() {
    let up = Upstream::fixed(Reply::ok("fine"));
    let (mut gw, admin) = gateway("", &route("/a", up.addr, ""));
    schemathesis_passes(&mut gw, admin, Checks::All);
}

/// A node of a fleet of two sharing a real Redis: the fleet's view with both nodes, PUT
/// through the store; then, with the store gone, writes refused (503) and the view saying
/// so, all as described.
#[test]
fn in_a_fleet_the_admin_api_answers_as_described_with_the_store_up_and_gone() {
    let redis = common::redis::Redis::start();
    let up = Upstream::fixed(Reply::ok("fine"));
    let control = |node: &str| {
        format!(
            "[control]\nstore = \"{}\"\nfleet = \"openapi\"\nnode = \"{node}\"\n",
            redis.url()
        )
    };
    let (_other, _) = gateway(BOTH_TOKENS, &control("b"));
    let (mut gw, admin) = gateway(BOTH_TOKENS, &control("a"));
    let put = client()
        .put(format!("http://{admin}/config"))
        .bearer_auth(WRITE_TOKEN)
        .header("if-match", "*")
        .body(route("/a", up.addr, ""))
        .send()
        .unwrap();
    assert_eq!(put.status(), 200, "{}", put.text().unwrap());
    let fleet = |key: &str| -> serde_json::Value {
        let view: serde_json::Value = client()
            .get(format!("http://{admin}/api/fleet"))
            .bearer_auth(READ_TOKEN)
            .send()
            .unwrap()
            .json()
            .unwrap();
        view[key].clone()
    };
    common::redis::wait_for("both nodes in the view", Duration::from_secs(10), || {
        fleet("nodes").as_array().is_some_and(|n| n.len() == 2)
    });
    schemathesis_passes(&mut gw, admin, Checks::All);

    redis.stop();
    common::redis::wait_for("the store seen gone", Duration::from_secs(10), || {
        fleet("store_state") == "unreachable"
    });
    schemathesis_passes(&mut gw, admin, Checks::AllBut5xx);
}
