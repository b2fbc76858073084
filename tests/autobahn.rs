//! WebSocket conformance through the gateway: the Autobahn|Testsuite fuzzing client
//! (PyPI `autobahntestsuite`, Python 2.7 only: `scripts/ensure-autobahn.sh` installs it
//! under this machine's pyenv 2.7.18) runs cases 1 to 10 against Autobahn's own echo
//! server, once directly and once through Pylon. Every case that passes directly must pass
//! through the gateway, its closing handshake included. Without Python 2.7 or the suite
//! the test says so and skips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `wstest` under Python 2.7, if installed.
fn wstest() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let path = PathBuf::from(home).join(".local/bin/wstest");
    let works = Command::new(&path)
        .arg("--help")
        .env("PYENV_VERSION", "2.7.18")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    works.then_some(path)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The behaviours Autobahn counts as a pass.
fn passed(case: &serde_json::Value) -> bool {
    let ok =
        |v: &serde_json::Value| matches!(v.as_str(), Some("OK" | "NON-STRICT" | "INFORMATIONAL"));
    ok(&case["behavior"]) && ok(&case["behaviorClose"])
}

#[test]
fn autobahn_cases_1_to_10_pass_through_the_gateway_as_they_do_directly() {
    let Some(wstest) = wstest() else {
        eprintln!(
            "SKIPPED: no Autobahn|Testsuite under Python 2.7 (scripts/ensure-autobahn.sh installs it where pyenv has 2.7.18)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let echo_addr = closed_port();
    let run = |args: &[&str]| {
        Killed(
            Command::new(&wstest)
                .args(args)
                .env("PYENV_VERSION", "2.7.18")
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let echo = run(&["-m", "echoserver", "-w", &format!("ws://{echo_addr}")]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(echo_addr).is_err() {
        assert!(Instant::now() < deadline, "the echo server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let gw = Gateway::start(
        "",
        &format!("[[routes]]\nprefix = \"/\"\nupstreams = [\"http://{echo_addr}\"]\n"),
    );
    let out = dir.path().join("reports");
    let spec = dir.path().join("spec.json");
    std::fs::write(
        &spec,
        serde_json::json!({
            "outdir": out,
            "servers": [
                {"agent": "direct", "url": format!("ws://{echo_addr}")},
                {"agent": "pylon", "url": format!("ws://{}", gw.addr)},
            ],
            "cases": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "8.*", "9.*", "10.*"],
            "exclude-cases": [],
            "exclude-agent-cases": {},
        })
        .to_string(),
    )
    .unwrap();
    let mut client = run(&["-m", "fuzzingclient", "-s", spec.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(900);
    let status = loop {
        if let Some(status) = client.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the fuzzing client ran past 15 minutes"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(status.success(), "the fuzzing client failed: {status}");
    drop(echo);

    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("index.json")).unwrap()).unwrap();
    let direct = index["direct"]
        .as_object()
        .expect("the direct agent's cases");
    let pylon = index["pylon"].as_object().expect("the gateway's cases");
    assert!(direct.len() >= 300, "{} cases ran", direct.len());
    let mut failed: Vec<String> = direct
        .iter()
        .filter(|(_, case)| passed(case))
        .filter(|(id, _)| !pylon.get(*id).is_some_and(passed))
        .map(|(id, _)| {
            let p = &pylon[id];
            format!("{id} ({} / close {})", p["behavior"], p["behaviorClose"])
        })
        .collect();
    failed.sort();
    let passing_directly = direct.values().filter(|c| passed(c)).count();
    eprintln!(
        "Autobahn: {passing_directly} of {} cases pass directly; through Pylon {} of them fail",
        direct.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} cases pass directly but not through the gateway: {failed:?}",
        failed.len()
    );
}
