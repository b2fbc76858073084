//! HTTP/2 conformance: h2spec (summerwind/h2spec, a build in ../shared/tools; see its
//! README there) against the TLS listener and the h2c listener of a real gateway.
//!
//! Every case passes, but one: over h2c, 3.5/2 (an invalid connection preface) is answered
//! as HTTP/1.1 400, which is right for a port that serves both protocols.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn h2spec() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/h2spec/h2spec");
    path.exists().then_some(path)
}

/// Run h2spec (strict mode) and return the ids of the failed cases, and its report.
fn failures(addr: SocketAddr, tls: bool, bin: &Path) -> (Vec<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("report.xml");
    let mut cmd = Command::new(bin);
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &addr.port().to_string(),
        "-S",
        "-o",
        "3",
    ])
    .arg("-j")
    .arg(&junit);
    if tls {
        cmd.args(["-t", "-k"]);
    }
    let out = cmd.output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let xml = std::fs::read_to_string(&junit).unwrap_or_default();
    // <testcase package="http2/3.5" classname="..." ...><failure ...>
    let mut failed = Vec::new();
    for case in xml.split("<testcase ").skip(1) {
        let body = case.split("</testcase>").next().unwrap_or("");
        if body.contains("<failure") || body.contains("<error") {
            let package = attribute(case, "package");
            let name = attribute(case, "classname");
            failed.push(format!("{package} {name}"));
        }
    }
    assert!(
        xml.contains("<testcase "),
        "h2spec wrote no report ({}):\n{report}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (failed, report)
}

/// h2spec's closing line: "146 tests, 146 passed, 0 skipped, 0 failed".
fn summary(report: &str) -> &str {
    report
        .lines()
        .rev()
        .find(|l| l.contains(" tests, "))
        .unwrap_or("(no summary)")
        .trim()
}

fn attribute(tag: &str, name: &str) -> String {
    tag.split(&format!("{name}=\""))
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("")
        .to_string()
}

#[test]
fn h2spec_passes_over_tls_and_over_h2c_but_the_invalid_preface_case() {
    let Some(bin) = h2spec() else {
        eprintln!(
            "SKIPPED: ../shared/tools/h2spec/h2spec is missing (see ../shared/tools/README.md)"
        );
        return;
    };
    let up = Upstream::echo();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("pylon h2spec CA");
    let (cert, key) = ca.issue(&["localhost"]);
    let (c, k) = (dir.path().join("c.pem"), dir.path().join("c.key"));
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    let tls_addr = closed_port();
    let gw = Gateway::start(
        "h2c = true",
        &format!(
            "[tls]\nlisten = [\"{tls_addr}\"]\n[[tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n{}",
            c.display(),
            k.display(),
            route("/", up.addr, "")
        ),
    );

    let (failed, report) = failures(tls_addr, true, &bin);
    eprintln!("h2spec over TLS: {}", summary(&report));
    assert!(
        failed.is_empty(),
        "over TLS, h2spec failed {failed:?}:\n{report}"
    );
    assert!(report.contains("passed"), "{report}");

    let (failed, report) = failures(gw.addr, false, &bin);
    eprintln!("h2spec over h2c: {} (failed: {failed:?})", summary(&report));
    assert_eq!(
        failed.len(),
        1,
        "over h2c, only 3.5/2 may fail, h2spec failed {failed:?}:\n{report}"
    );
    assert!(failed[0].starts_with("http2/3.5"), "{failed:?}");
}
