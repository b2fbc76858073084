//! The OpenTelemetry side of tests/tracing.rs: a real OTLP/HTTP receiver
//! (`tests/otlp/receiver.py`, decoding with PyPI's opentelemetry-proto), an upstream and a
//! client instrumented with the OpenTelemetry SDK, all run by the venv that
//! `scripts/ensure-otel.sh` makes at `target/otel-venv` (`PYLON_OTEL_PYTHON` names another
//! python). Without the venv the tests fail and say how to make it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The venv's python, or a panic that names the script to run.
pub fn otel_python() -> PathBuf {
    let python = match std::env::var_os("PYLON_OTEL_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/otel-venv/bin/python"),
    };
    assert!(
        python.exists(),
        "{} does not exist: the tracing tests need the OpenTelemetry venv; run \
         `bash scripts/ensure-otel.sh` (`make test` does) or set PYLON_OTEL_PYTHON",
        python.display()
    );
    python
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/otlp")
        .join(name)
}

/// A Python script running as a server: its stdin is held open (it stops when the pipe
/// closes, so a test that dies leaves none behind), its stderr kept for messages.
struct PyServer {
    child: Child,
    _stdin: ChildStdin,
    stderr: tempfile::NamedTempFile,
}

impl PyServer {
    /// Start `tests/otlp/<name>` with arguments; returns it and the port it printed.
    fn start(name: &'static str, args: &[&str]) -> (PyServer, u16) {
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(otel_python())
            .arg(script(name))
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut server = PyServer {
            child,
            _stdin: stdin,
            stderr,
        };
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .ok()
            .and_then(|line| line.trim().parse::<u16>().ok());
        match port {
            Some(port) => (server, port),
            None => {
                let _ = server.child.kill();
                let _ = server.child.wait();
                panic!(
                    "{name} did not start (no port on its stdout within 30 s); stderr:\n{}",
                    server.stderr_text()
                )
            }
        }
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One exported span as the receiver decoded it (see `tests/otlp/receiver.py`).
#[derive(Debug, Clone)]
pub struct Span(pub Value);

impl Span {
    fn text(&self, key: &str) -> &str {
        self.0[key].as_str().unwrap_or_default()
    }
    pub fn trace_id(&self) -> &str {
        self.text("trace_id")
    }
    pub fn span_id(&self) -> &str {
        self.text("span_id")
    }
    /// "" for a root span.
    pub fn parent(&self) -> &str {
        self.text("parent_span_id")
    }
    pub fn name(&self) -> &str {
        self.text("name")
    }
    /// "SERVER", "CLIENT", "INTERNAL", ...
    pub fn kind(&self) -> &str {
        self.text("kind")
    }
    /// "UNSET", "OK" or "ERROR".
    pub fn status(&self) -> &str {
        self.0["status"]["code"].as_str().unwrap_or_default()
    }
    pub fn start_ns(&self) -> u64 {
        self.0["start_ns"].as_u64().unwrap_or_default()
    }
    pub fn end_ns(&self) -> u64 {
        self.0["end_ns"].as_u64().unwrap_or_default()
    }
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.0["attributes"].get(key)
    }
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attr(key).and_then(Value::as_str)
    }
    /// An attribute that is an OTLP int (a double such as 200.0 is not).
    pub fn attr_int(&self, key: &str) -> Option<i64> {
        self.attr(key).and_then(Value::as_i64)
    }
    pub fn resource(&self, key: &str) -> Option<&str> {
        self.0["resource"].get(key).and_then(Value::as_str)
    }
    pub fn event_names(&self) -> Vec<&str> {
        self.0["events"]
            .as_array()
            .map(|events| events.iter().filter_map(|e| e["name"].as_str()).collect())
            .unwrap_or_default()
    }
    /// One line for failure messages.
    pub fn brief(&self) -> String {
        format!(
            "{} {:?} trace={} span={} parent={} status={} attrs={} events={:?} service={}",
            self.kind(),
            self.name(),
            self.trace_id(),
            self.span_id(),
            if self.parent().is_empty() {
                "-"
            } else {
                self.parent()
            },
            self.status(),
            self.0["attributes"],
            self.event_names(),
            self.resource("service.name").unwrap_or("?"),
        )
    }
}

/// Every span, one per line, for failure messages.
pub fn describe(spans: &[Span]) -> String {
    if spans.is_empty() {
        return "  (no span)".into();
    }
    spans
        .iter()
        .map(|s| format!("  {}", s.brief()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The spans of one trace.
pub fn of_trace<'a>(spans: &'a [Span], trace_id: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.trace_id() == trace_id).collect()
}

/// The spans of one trace and kind, in start order.
pub fn of_kind<'a>(spans: &'a [Span], trace_id: &str, kind: &str) -> Vec<&'a Span> {
    let mut found: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id() == trace_id && s.kind() == kind)
        .collect();
    found.sort_by_key(|s| s.start_ns());
    found
}

/// The one span of a trace and kind; a panic listing what arrived otherwise.
pub fn the_one<'a>(spans: &'a [Span], trace_id: &str, kind: &str) -> &'a Span {
    let found = of_kind(spans, trace_id, kind);
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} span in trace {trace_id}; the receiver has:\n{}",
        describe(spans)
    );
    found[0]
}

/// The OTLP/HTTP receiver (`tests/otlp/receiver.py`) on an ephemeral port.
pub struct Receiver {
    pub port: u16,
    server: PyServer,
}

impl Receiver {
    pub fn start() -> Receiver {
        Receiver::start_with(&[])
    }

    /// A collector that holds every answer this long (the gateway's export times out).
    pub fn start_delayed(delay: Duration) -> Receiver {
        Receiver::start_with(&["--delay", &format!("{}", delay.as_secs_f64())])
    }

    fn start_with(extra: &[&str]) -> Receiver {
        let mut args = vec!["--exit-on-stdin-eof"];
        args.extend_from_slice(extra);
        let (server, port) = PyServer::start("receiver.py", &args);
        Receiver { port, server }
    }

    /// The URL to give as `tracing.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.port)
    }

    fn get(&self, path: &str) -> Value {
        reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .timeout(Duration::from_secs(10))
            .send()
            .and_then(|r| r.json())
            .unwrap_or_else(|e| {
                panic!(
                    "the OTLP receiver did not answer GET {path}: {e}; its stderr:\n{}",
                    self.server.stderr_text()
                )
            })
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<Span> {
        match self.get("/spans") {
            Value::Array(spans) => spans.into_iter().map(Span).collect(),
            other => panic!("the receiver's /spans is not a list: {other}"),
        }
    }

    /// `{"arrived": n, "posts": n, "spans": n, "rejected": [why, ...], "encodings": {...}}`:
    /// `arrived` counts POSTs as they come in, before a `start_delayed` delay; `posts` once
    /// answered.
    pub fn stats(&self) -> Value {
        self.get("/stats")
    }

    /// Poll until `done` holds for the spans received (at most `within`); returns them. On
    /// timeout, panics naming `what` with every span and the receiver's stats.
    pub fn wait_for(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&[Span]) -> bool,
    ) -> Vec<Span> {
        let deadline = Instant::now() + within;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if Instant::now() > deadline {
                panic!(
                    "waited {within:?} for {what}; the receiver has {} span(s) (stats {}):\n{}",
                    spans.len(),
                    self.stats(),
                    describe(&spans)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// An upstream instrumented with the OpenTelemetry SDK (`tests/otlp/e2e_upstream.py`): it
/// continues the trace of each request's `traceparent` with a SERVER span, exports it to
/// `endpoint` before answering, and answers JSON (the `traceparent` and `tracestate` it
/// got, its span's `trace_id` and `span_id`).
pub struct SdkUpstream {
    pub addr: SocketAddr,
    _server: PyServer,
}

impl SdkUpstream {
    pub fn start(endpoint: &str) -> SdkUpstream {
        let (server, port) = PyServer::start("e2e_upstream.py", &["--endpoint", endpoint]);
        SdkUpstream {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _server: server,
        }
    }
}

/// Run a Python script to completion; its stdout parsed as one JSON object.
fn run_script(name: &str, args: &[&str]) -> Value {
    let out = Command::new(otel_python())
        .arg(script(name))
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name} failed ({}); stdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{name} printed no JSON ({e}): {stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A client instrumented with the OpenTelemetry SDK (`tests/otlp/e2e_client.py`): a CLIENT
/// span around `GET url` with its context injected as `traceparent`, exported to
/// `endpoint`. Returns `{trace_id, span_id, traceparent, status, body}`.
pub fn sdk_client_get(endpoint: &str, url: &str) -> Value {
    run_script("e2e_client.py", &["--endpoint", endpoint, "--url", url])
}

/// The SDK's OTLP/HTTP exporter sending spans of every shape (`tests/otlp/sdk_emit.py`);
/// returns the ids it made.
pub fn sdk_emit(endpoint: &str) -> Value {
    run_script("sdk_emit.py", &["--endpoint", endpoint])
}
