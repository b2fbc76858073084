//! Running as a service: zero-downtime upgrades, a refused upgrade, graceful shutdown,
//! Prometheus metrics and the systemd unit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[test]
fn three_upgrades_under_keep_alive_load_lose_no_request() {
    let up = Upstream::fixed(Reply::ok("fine"));
    let mut gw = Gateway::start("", &route("/app", up.addr, ""));
    let load = Load::start(gw.url("/app/x"), 16);
    load.wait_for(500);
    let mut pids = vec![gw.pid()];
    for _ in 0..3 {
        assert_eq!(gw.upgrade(), 0, "the old process exits cleanly");
        pids.push(gw.pid());
        load.wait_for(500);
    }
    let (ok, failures) = load.stop();
    assert!(
        failures.is_empty(),
        "{} failures of {}: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 2000, "{ok} requests");
    assert!(gw.is_running());
    pids.dedup();
    assert_eq!(pids.len(), 4, "four different processes served");
}

#[test]
fn an_upgrade_with_a_changed_config_serves_the_new_routes() {
    let old = Upstream::fixed(Reply::ok("old route"));
    let new = Upstream::fixed(Reply::ok("new route"));
    let mut gw = Gateway::start("", &route("/old", old.addr, ""));
    let c = client();
    assert_eq!(c.get(gw.url("/new")).send().unwrap().status(), 404);
    gw.write_config(&(route("/old", old.addr, "") + &route("/new", new.addr, "")));
    assert_eq!(gw.upgrade(), 0);
    let r = c.get(gw.url("/new")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "new route");
}

#[test]
fn an_invalid_config_leaves_the_old_process_serving() {
    let up = Upstream::fixed(Reply::ok("still here"));
    let mut gw = Gateway::start("", &route("/app", up.addr, ""));
    gw.write_config(&format!(
        "{}\n[timeouts]\nread = \"forever\"\n",
        route("/app", up.addr, "")
    ));
    // the reload's first step, the check, refuses it: the old process is never touched
    assert!(!gw.check_config());
    let (code, _, err) = run_pylon(&["-t", "-c", gw.config_path.to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert!(err.contains("key `timeouts.read`"), "{err}");
    assert_eq!(
        client().get(gw.url("/app")).send().unwrap().text().unwrap(),
        "still here"
    );

    // even a SIGQUIT with no new process to take the sockets leaves it serving
    gw.signal("QUIT");
    std::thread::sleep(Duration::from_secs(1));
    assert!(gw.is_running());
    for _ in 0..20 {
        assert_eq!(client().get(gw.url("/app")).send().unwrap().status(), 200);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_lets_a_slow_request_finish_then_exits_0() {
    let slow = Upstream::fixed(Reply::ok("worth the wait").delayed(Duration::from_secs(2)));
    let mut gw = Gateway::start(
        "graceful_shutdown_timeout = \"10s\"",
        &route("/slow", slow.addr, ""),
    );
    let url = gw.url("/slow");
    let in_flight = std::thread::spawn(move || {
        let r = client().get(url).send().unwrap();
        (
            r.status(),
            r.headers().get("connection").cloned(),
            r.text().unwrap(),
        )
    });
    // the request is upstream
    let deadline = Instant::now() + Duration::from_secs(5);
    while slow.hits() == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let signalled = Instant::now();
    gw.signal("TERM");
    let (status, connection, body) = in_flight.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "worth the wait");
    assert_eq!(connection.unwrap(), "close", "the client is told to close");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(6),
        "exited {:?} after SIGTERM: it should go once the request is done",
        signalled.elapsed()
    );
    // and it stopped listening
    assert!(client().get(gw.url("/slow")).send().is_err());
}

#[test]
fn metrics_count_requests_by_route_and_status_class() {
    let up = Upstream::fixed(Reply::ok("x"));
    let metrics_addr = closed_port();
    let gw = Gateway::start(
        "",
        &format!(
            "[metrics]\nlisten = \"{metrics_addr}\"\n[rate_limit]\nrequests = 3\nwindow = \"1m\"\n{}{}",
            route("/users", up.addr, "rate_limit = false"),
            route("/orders", closed_port(), "rate_limit = false"),
        ),
    );
    let c = client();
    for _ in 0..7 {
        assert_eq!(c.get(gw.url("/users/1?q=a")).send().unwrap().status(), 200);
    }
    for _ in 0..2 {
        assert_eq!(c.get(gw.url("/orders/9")).send().unwrap().status(), 502);
    }
    let statuses: Vec<u16> = (0..4)
        .map(|_| c.get(gw.url("/nowhere")).send().unwrap().status().as_u16())
        .collect();
    assert_eq!(statuses, vec![404, 404, 404, 429]);

    let text = c
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value(r#"pylon_requests_total{route="/users",status="2xx"}"#),
        7.0
    );
    assert_eq!(
        value(r#"pylon_requests_total{route="/orders",status="5xx"}"#),
        2.0
    );
    assert_eq!(value(r#"pylon_requests_total{route="",status="4xx"}"#), 4.0);
    assert_eq!(
        value(r#"pylon_request_duration_seconds_count{route="/users"}"#),
        7.0
    );
    assert_eq!(
        value(r#"pylon_request_duration_seconds_bucket{route="/users",le="+Inf"}"#),
        7.0
    );
    assert_eq!(
        value(r#"pylon_upstream_response_seconds_count{route="/users"}"#),
        7.0
    );
    assert_eq!(
        value(r#"pylon_gateway_errors_total{route="/orders",code="502"}"#),
        2.0
    );
    assert_eq!(
        value(r#"pylon_gateway_errors_total{route="",code="404"}"#),
        3.0
    );
    assert_eq!(value(r#"pylon_rate_limited_total{route=""}"#), 1.0);
    assert_eq!(
        value(&format!(
            r#"pylon_upstream_healthy{{route="/users",upstream="{}"}}"#,
            up.addr
        )),
        1.0
    );
    assert!(
        value("pylon_downstream_connections") >= 1.0,
        "our keep-alive connection"
    );
    assert!(text.contains("pylon_build_info{version=\""));
    assert!(!text.contains("/users/1"), "raw paths never become labels");
    assert_eq!(
        c.get(format!("http://{metrics_addr}/other"))
            .send()
            .unwrap()
            .status(),
        404
    );
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/pylon.service");
    let text = std::fs::read_to_string(unit).unwrap();
    for needle in [
        "Type=forking",
        "PIDFile=",
        "ExecStartPre=",
        "-t -c",
        "ExecReload=@BINDIR@/pylon -t -c",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "LimitNOFILE=",
    ] {
        assert!(text.contains(needle), "the unit lacks {needle}");
    }
    if std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed here: only the unit's text was checked");
        return;
    }
    // verify the unit as `make install` writes it, with the binary where it says
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("pylon");
    std::fs::copy(pylon_bin(), &bin).unwrap();
    let installed = text.replace("@BINDIR@", dir.path().to_str().unwrap());
    let path = dir.path().join("pylon.service");
    std::fs::write(&path, installed).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // lines about other units on this machine are not ours to judge
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("pylon")).collect();
    assert!(out.status.success() && ours.is_empty(), "{stderr}");
}

/// Kills, when the test ends however it ends, every daemon the pid file has named.
struct Reaper {
    pid_file: std::path::PathBuf,
    seen: Mutex<Vec<u32>>,
}

impl Reaper {
    fn try_read_pid(&self) -> Option<u32> {
        let pid = std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        self.seen.lock().ok()?.push(pid);
        Some(pid)
    }

    /// The pid the file names, waiting out a moment when a new process rewrites it.
    fn read_pid(&self) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(pid) = self.try_read_pid() {
                return pid;
            }
            assert!(Instant::now() < deadline, "the pid file names no process");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.try_read_pid();
        let seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        for pid in seen {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "pylon" {
                let _ = std::process::Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
            }
        }
    }
}

/// The README's by-hand operations, as written there (paths replaced by the test's), on a
/// daemon: `-d` lets go of the caller's pipes once it serves, the in-place reload (also the
/// unit's ExecReload) keeps the process, and both upgrades move the pid file to a new
/// process, all under keep-alive load with no request lost.
#[test]
fn the_readme_operations_work_as_written_on_a_daemon() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("<!-- by-hand operations: run as written by tests/operations.rs -->")
        .nth(1)
        .and_then(|rest| rest.split("```sh\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("the README's operations block");
    let commands: Vec<&str> = block
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(commands.len(), 3, "{commands:?}");

    let up = Upstream::fixed(Reply::ok("daemon"));
    let dir = tempfile::tempdir().unwrap();
    let addr = closed_port();
    let pid_file = dir.path().join("pylon.pid");
    let config = dir.path().join("pylon.toml");
    let write_config = |routes: &str| {
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = [\"{addr}\"]\nthreads = 1\npid_file = \"{}\"\nupgrade_sock = \"{}\"\n[access_log]\npath = \"off\"\n{routes}",
                pid_file.display(),
                dir.path().join("upgrade.sock").display(),
            ),
        )
        .unwrap();
    };
    write_config(&route("/d", up.addr, ""));
    let reaper = Reaper {
        pid_file: pid_file.clone(),
        seen: Mutex::new(Vec::new()),
    };
    let read_pid = || reaper.read_pid();
    let alive = |pid: u32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    let wait_gone = |pid: u32| {
        let deadline = Instant::now() + Duration::from_secs(25);
        while alive(pid) {
            assert!(Instant::now() < deadline, "process {pid} did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // run a command line with its output captured, as a script would: it must return
    let run = |line: &str| {
        let line = line
            .replace("/etc/pylon/pylon.toml", config.to_str().unwrap())
            .replace("/run/pylon/pylon.pid", pid_file.to_str().unwrap())
            .replace("pylon -", &format!("{} -", pylon_bin()));
        let (tx, rx) = std::sync::mpsc::channel();
        let shown = line.clone();
        std::thread::spawn(move || {
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(&line)
                .env("RUST_LOG", "info")
                .output()
                .unwrap();
            let _ = tx.send(out);
        });
        let out = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("`{shown}` did not return: it holds the caller's pipes"));
        assert!(
            out.status.success(),
            "`{shown}`: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    run(&format!("pylon -d -c {}", config.display()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "the daemon does not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    let first = read_pid();
    let load = Load::start(format!("http://{addr}/d"), 4);
    load.wait_for(100);

    // 1: reload in place
    let b = Upstream::fixed(Reply::ok("b"));
    write_config(&format!(
        "{}{}",
        route("/d", up.addr, ""),
        route("/b", b.addr, "")
    ));
    run(commands[0]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while client()
        .get(format!("http://{addr}/b"))
        .send()
        .unwrap()
        .status()
        != 200
    {
        assert!(Instant::now() < deadline, "the reload did not apply");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(read_pid(), first, "the same process serves");
    // the daemon's diagnostics went to the error log next to the pid file
    let error_log = std::fs::read_to_string(dir.path().join("pylon.error.log")).unwrap();
    assert!(error_log.contains("loaded as generation 2"), "{error_log}");
    load.wait_for(100);

    // 2: the binary upgrade the running process starts itself
    run(commands[1]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while read_pid() == first {
        assert!(Instant::now() < deadline, "no new process took over");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = read_pid();
    wait_gone(first);
    load.wait_for(100);

    // 3: the upgrade from outside
    run(commands[2]);
    let third = read_pid();
    assert_ne!(third, second, "the pid file names the new process");
    wait_gone(second);
    load.wait_for(100);
    let (ok, failures) = load.stop();
    assert!(failures.is_empty(), "{failures:?} ({ok} ok)");
    assert_eq!(
        client()
            .get(format!("http://{addr}/b"))
            .send()
            .unwrap()
            .status(),
        200,
        "the new processes serve the reloaded config"
    );
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(third.to_string())
        .status()
        .unwrap();
    wait_gone(third);
}

/// The shipped logrotate file (paths and owner replaced by the test's), run by the real
/// logrotate against a running gateway: the old lines stay in the rotated file, and the
/// SIGHUP of its postrotate sends new lines to a new file at the configured path.
#[test]
fn the_shipped_logrotate_file_rotates_without_losing_a_line() {
    if std::process::Command::new("logrotate")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("logrotate is needed (make test installs it)");
    }
    let up = Upstream::fixed(Reply::ok("fine"));
    let gw = Gateway::start("", &route("/a", up.addr, ""));
    let dir = gw.dir.path();
    let pid_file = dir.join("pylon.pid");
    if !pid_file.exists() {
        // a foreground gateway writes no pid file: write the one a daemon would
        std::fs::write(&pid_file, gw.pid().to_string()).unwrap();
    }
    for i in 0..5 {
        let path = format!("/a/before-{i}");
        assert_eq!(client().get(gw.url(&path)).send().unwrap().status(), 200);
    }
    assert_eq!(gw.access_log_lines(5).len(), 5);
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/pylon.logrotate"
    ))
    .unwrap();
    assert!(shipped.contains("/var/log/pylon/*.log") && shipped.contains("/run/pylon/pylon.pid"));
    let conf = shipped
        .replace(
            "/var/log/pylon/*.log /run/pylon/pylon.error.log",
            &dir.join("access.log").display().to_string(),
        )
        .replace("/run/pylon/pylon.pid", &pid_file.display().to_string())
        .replace("create 0640 pylon pylon", "create 0640");
    let conf_path = dir.join("logrotate.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let out = std::process::Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(dir.join("logrotate.state"))
        .arg(&conf_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // the writer reopens between two drains; lines queued before that go to the old file
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gw.stderr().contains("access log: reopened") {
        assert!(Instant::now() < deadline, "{}", gw.stderr());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        client().get(gw.url("/a/after")).send().unwrap().status(),
        200
    );
    let lines = gw.access_log_lines(1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("/a/after"), "{lines:?}");
    let rotated = std::fs::read_to_string(dir.join("access.log.1")).unwrap();
    assert_eq!(rotated.lines().count(), 5, "{rotated}");
    assert!(!rotated.contains("/a/after"));
}
