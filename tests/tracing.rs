//! OpenTelemetry tracing (`[tracing]`) against a real OTLP/HTTP receiver: W3C Trace Context
//! in and out, the spans the gateway exports (checked as the receiver decoded them with the
//! official protobuf definitions), the access log's ids, and a collector that is slow or
//! gone. The receiver, and the SDK-instrumented client and upstream of the end-to-end test,
//! run under the venv of `scripts/ensure-otel.sh` (see `common/otlp.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::otlp::*;
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long the exported spans may take to reach the receiver (batched exports).
const SPANS_WITHIN: Duration = Duration::from_secs(20);

/// `n` random bytes as lower-case hex: a trace id (16) or a span id (8).
fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    openssl::rand::rand_bytes(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn new_trace_id() -> String {
    random_hex(16)
}

fn new_span_id() -> String {
    random_hex(8)
}

/// A W3C `traceparent` (version 00).
#[derive(Debug, Clone, PartialEq)]
struct TraceParent {
    trace_id: String,
    parent_id: String,
    flags: String,
}

impl TraceParent {
    fn new(trace_id: &str, parent_id: &str, flags: &str) -> TraceParent {
        TraceParent {
            trace_id: trace_id.into(),
            parent_id: parent_id.into(),
            flags: flags.into(),
        }
    }

    /// A new trace with a random parent, sampled or not.
    fn random(sampled: bool) -> TraceParent {
        TraceParent::new(
            &new_trace_id(),
            &new_span_id(),
            if sampled { "01" } else { "00" },
        )
    }

    fn header(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.parent_id, self.flags)
    }

    /// Parse as W3C Trace Context Level 1 requires of version 00: four fields, lower-case
    /// hex of 2, 32, 16 and 2 digits, ids not all zero.
    fn parse(value: &str) -> Option<TraceParent> {
        let lower_hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let parts: Vec<&str> = value.split('-').collect();
        let [version, trace_id, parent_id, flags] = parts[..] else {
            return None;
        };
        let valid = version == "00"
            && lower_hex(trace_id, 32)
            && lower_hex(parent_id, 16)
            && lower_hex(flags, 2)
            && trace_id.bytes().any(|b| b != b'0')
            && parent_id.bytes().any(|b| b != b'0');
        valid.then(|| TraceParent::new(trace_id, parent_id, flags))
    }

    fn sampled(&self) -> bool {
        u8::from_str_radix(&self.flags, 16).unwrap() & 1 == 1
    }
}

/// The one `traceparent` an upstream request carried, parsed; a panic naming what it got
/// otherwise.
fn upstream_traceparent(seen: &Seen) -> TraceParent {
    let values: Vec<&str> = seen
        .headers
        .iter()
        .filter(|(k, _)| k == "traceparent")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        values.len(),
        1,
        "the upstream request {} got {} traceparent fields, not one: {:?}",
        seen.target,
        values.len(),
        seen.headers
    );
    TraceParent::parse(values[0]).unwrap_or_else(|| {
        panic!(
            "the upstream request {} got an invalid traceparent {:?}",
            seen.target, values[0]
        )
    })
}

/// What the upstream saw for one request target (after the prefix was stripped).
fn seen_at(up: &Upstream, target: &str) -> Seen {
    let all = up.seen();
    all.iter()
        .rev()
        .find(|s| s.target == target)
        .cloned()
        .unwrap_or_else(|| {
            let targets: Vec<&str> = all.iter().map(|s| s.target.as_str()).collect();
            panic!("the upstream saw no request for {target}; it saw {targets:?}")
        })
}

/// A `[tracing]` section sending to `endpoint`; `extra` holds further keys.
fn tracing(endpoint: &str, sampling: f64, extra: &str) -> String {
    format!("[tracing]\nendpoint = \"{endpoint}\"\nsampling = {sampling:?}\n{extra}\n")
}

/// `GET path` with a client traceparent (and optional tracestate); the status.
fn get_traced(gw: &Gateway, path: &str, tp: &TraceParent, tracestate: Option<&str>) -> u16 {
    let mut req = client()
        .get(gw.url(path))
        .header("traceparent", tp.header());
    if let Some(state) = tracestate {
        req = req.header("tracestate", state);
    }
    req.send().unwrap().status().as_u16()
}

/// The receiver's spans once trace `trace_id` has a SERVER span and `clients` CLIENT spans.
fn wait_for_trace(r: &Receiver, trace_id: &str, clients: usize) -> Vec<Span> {
    r.wait_for(
        &format!("a SERVER span and {clients} CLIENT span(s) in trace {trace_id}"),
        SPANS_WITHIN,
        |spans| {
            of_kind(spans, trace_id, "SERVER").len() == 1
                && of_kind(spans, trace_id, "CLIENT").len() >= clients
        },
    )
}

/// Sum of a Prometheus series over its labels (0 when absent).
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn admin_section(admin: SocketAddr) -> String {
    format!("[admin]\nlisten = \"{admin}\"\n")
}

// ---------------------------------------------------------------------------------------------
// The harness itself (no gateway): these pass whatever the gateway does
// ---------------------------------------------------------------------------------------------

#[test]
fn the_receiver_decodes_what_the_python_sdk_exports() {
    let r = Receiver::start();
    let ids = sdk_emit(&r.endpoint());
    let id = |k: &str| ids[k].as_str().unwrap().to_string();
    let spans = r.wait_for("the SDK's three spans", SPANS_WITHIN, |s| s.len() >= 3);
    assert_eq!(spans.len(), 3, "{}", describe(&spans));

    let server = the_one(&spans, &id("trace_id"), "SERVER");
    assert_eq!(server.span_id(), id("server_span_id"));
    assert_eq!(server.parent(), "");
    assert_eq!(server.name(), "GET /probe");
    assert_eq!(server.attr_str("http.request.method"), Some("GET"));
    assert_eq!(server.attr_int("http.response.status_code"), Some(503));
    assert_eq!(server.attr("ratio").and_then(|v| v.as_f64()), Some(0.25));
    assert_eq!(server.attr("cached").and_then(|v| v.as_bool()), Some(false));
    assert_eq!(server.attr("tags"), Some(&serde_json::json!(["a", "b"])));
    assert_eq!(server.event_names(), ["rate_limited"]);
    assert_eq!(
        server.0["events"][0]["attributes"],
        serde_json::json!({"limit": 20, "policy": "default"})
    );
    assert_eq!(server.status(), "ERROR");
    assert_eq!(server.0["status"]["message"], "upstream down");
    assert_eq!(server.resource("service.name"), Some("sdk-probe"));
    assert_eq!(server.resource("deployment.environment"), Some("probe"));
    assert_eq!(server.0["scope"]["name"], "pylon-tests.sdk-emit");
    assert!(server.start_ns() > 0 && server.end_ns() >= server.start_ns());

    let child = the_one(&spans, &id("trace_id"), "CLIENT");
    assert_eq!(child.span_id(), id("client_span_id"));
    assert_eq!(child.parent(), server.span_id());
    assert_eq!(child.name(), "GET");
    assert_eq!(child.attr_int("server.port"), Some(7002));
    assert_eq!(child.attr_str("error.type"), Some("connection_refused"));

    let zipped = &of_trace(&spans, &id("gzip_trace_id"))[0];
    assert_eq!(zipped.span_id(), id("gzip_span_id"));
    assert_eq!(zipped.kind(), "INTERNAL");

    let stats = r.stats();
    assert_eq!(stats["rejected"], serde_json::json!([]), "{stats}");
    assert!(stats["encodings"]["gzip"].as_u64() >= Some(1), "{stats}");
    assert!(
        stats["encodings"]["identity"].as_u64() >= Some(1),
        "{stats}"
    );
}

#[test]
fn the_sdk_client_and_upstream_make_one_trace_between_themselves() {
    let r = Receiver::start();
    let up = SdkUpstream::start(&r.endpoint());
    let out = sdk_client_get(&r.endpoint(), &format!("http://{}/hello", up.addr));
    assert_eq!(out["status"], 200, "{out}");
    let trace_id = out["trace_id"].as_str().unwrap();
    let client_span = out["span_id"].as_str().unwrap();
    let body: serde_json::Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    let got = TraceParent::parse(body["traceparent"].as_str().unwrap()).unwrap();
    assert_eq!(got.trace_id, trace_id);
    assert_eq!(got.parent_id, client_span);
    assert!(got.sampled(), "{got:?}");

    let spans = r.wait_for("the client's and the upstream's spans", SPANS_WITHIN, |s| {
        of_trace(s, trace_id).len() >= 2
    });
    let client = the_one(&spans, trace_id, "CLIENT");
    let server = the_one(&spans, trace_id, "SERVER");
    assert_eq!(client.span_id(), client_span);
    assert_eq!(client.parent(), "");
    assert_eq!(client.resource("service.name"), Some("e2e-client"));
    assert_eq!(client.attr_int("http.response.status_code"), Some(200));
    assert_eq!(server.parent(), client_span);
    assert_eq!(server.span_id(), body["span_id"].as_str().unwrap());
    assert_eq!(server.resource("service.name"), Some("e2e-upstream"));
}

// ---------------------------------------------------------------------------------------------
// Trace context in and out
// ---------------------------------------------------------------------------------------------

#[test]
fn the_server_span_continues_the_clients_trace_and_the_upstream_gets_the_client_span() {
    let r = Receiver::start();
    let up = Upstream::echo();
    let gw = Gateway::start(
        "",
        &(tracing(&r.endpoint(), 1.0, "") + &route("/api", up.addr, "")),
    );
    let tp = TraceParent::random(true);
    let state = "vendor1=opaque,rojo=00f067aa0ba902b7";
    assert_eq!(get_traced(&gw, "/api/orders", &tp, Some(state)), 200);

    let seen = seen_at(&up, "/orders");
    let forwarded = upstream_traceparent(&seen);
    assert_eq!(
        forwarded.trace_id, tp.trace_id,
        "the upstream's traceparent is not in the client's trace"
    );
    assert_ne!(
        forwarded.parent_id, tp.parent_id,
        "the upstream got the client's own span as its parent: the gateway's spans are not in the chain"
    );
    assert_eq!(
        forwarded.flags, "01",
        "the client's sampled flag was not kept"
    );
    assert_eq!(
        seen.header("tracestate"),
        Some(state),
        "the client's tracestate did not reach the upstream unchanged"
    );

    let spans = wait_for_trace(&r, &tp.trace_id, 1);
    let server = the_one(&spans, &tp.trace_id, "SERVER");
    assert_eq!(
        server.parent(),
        tp.parent_id,
        "the SERVER span's parent is not the client's span: {}",
        server.brief()
    );
    let attempt = the_one(&spans, &tp.trace_id, "CLIENT");
    assert_eq!(
        attempt.parent(),
        server.span_id(),
        "the CLIENT span is not the SERVER span's child: {}",
        attempt.brief()
    );
    assert_eq!(
        forwarded.parent_id,
        attempt.span_id(),
        "the upstream's traceparent does not name the gateway's CLIENT span"
    );
    assert!(
        server.start_ns() <= attempt.start_ns() && attempt.end_ns() <= server.end_ns(),
        "the CLIENT span does not lie within its SERVER span:\n{}\n{}",
        server.brief(),
        attempt.brief()
    );
}

#[test]
fn a_request_without_or_with_a_malformed_traceparent_starts_a_new_trace() {
    let r = Receiver::start();
    let up = Upstream::echo();
    let gw = Gateway::start(
        "",
        &(tracing(&r.endpoint(), 1.0, "") + &route("/new", up.addr, "")),
    );
    let known = "4bf92f3577b34da6a3ce929d0e0e4736";
    let malformed = [
        "garbage".to_string(),
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01".into(), // zero trace id
        format!("00-{known}-0000000000000000-01"),                        // zero parent id
        format!("00-{}-00F067AA0BA902B7-01", known.to_uppercase()),       // upper case
        format!("ff-{known}-00f067aa0ba902b7-01"),                        // version ff
        format!("00-{known}-00f067aa0ba902b7-01-extra"),                  // 00 with a 5th field
        format!("00-{}-00f067aa0ba902b7-01", &known[..31]),               // 31 digits
        format!("00-{known}-00f067aa0ba902b7-1"),                         // 1-digit flags
    ];
    let c = client();
    // a tracestate alone belongs to no trace (W3C: "MUST be discarded")
    let r0 = c
        .get(gw.url("/new/plain"))
        .header("tracestate", "orphan=1")
        .send()
        .unwrap();
    assert_eq!(r0.status(), 200);
    for (i, bad) in malformed.iter().enumerate() {
        let status = c
            .get(gw.url(&format!("/new/bad{i}")))
            .header("traceparent", bad)
            .header("tracestate", "stale=1")
            .send()
            .unwrap()
            .status();
        assert_eq!(status, 200, "traceparent {bad:?}");
    }

    let mut new_traces = Vec::new();
    let plain_seen = seen_at(&up, "/plain");
    let plain = upstream_traceparent(&plain_seen);
    assert!(
        plain.sampled(),
        "sampling = 1.0 did not sample a new trace: {plain:?}"
    );
    assert_ne!(
        plain_seen.header("tracestate"),
        Some("orphan=1"),
        "a tracestate without a traceparent went on (W3C: it must be discarded)"
    );
    new_traces.push(plain.trace_id);
    for (i, bad) in malformed.iter().enumerate() {
        let seen = seen_at(&up, &format!("/bad{i}"));
        let tp = upstream_traceparent(&seen);
        assert_ne!(
            tp.trace_id, known,
            "the malformed traceparent {bad:?} was continued"
        );
        assert!(tp.sampled(), "{bad:?}: the new trace was not sampled");
        assert_ne!(
            seen.header("tracestate"),
            Some("stale=1"),
            "{bad:?}: a tracestate that came with an invalid traceparent went on (W3C: the new trace deletes it)"
        );
        new_traces.push(tp.trace_id);
    }
    let mut distinct = new_traces.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        new_traces.len(),
        "new traces share ids: {new_traces:?}"
    );

    let spans = r.wait_for("a SERVER span for each new trace", SPANS_WITHIN, |spans| {
        new_traces
            .iter()
            .all(|t| of_kind(spans, t, "SERVER").len() == 1)
    });
    for (trace_id, sent) in new_traces
        .iter()
        .zip(std::iter::once("(none)".to_string()).chain(malformed.iter().cloned()))
    {
        let server = the_one(&spans, trace_id, "SERVER");
        assert_eq!(
            server.parent(),
            "",
            "traceparent {sent}: the new trace's SERVER span has a parent: {}",
            server.brief()
        );
        assert_eq!(server.name(), "GET /new", "{}", server.brief());
    }
}

#[test]
fn with_sampling_zero_new_traces_are_not_exported_but_a_sampled_client_trace_is() {
    let r = Receiver::start();
    let up = Upstream::echo();
    let gw = Gateway::start(
        "",
        &(tracing(&r.endpoint(), 0.0, "") + &route("/s", up.addr, "")),
    );
    // a new trace: not sampled at ratio 0
    assert_eq!(client().get(gw.url("/s/new")).send().unwrap().status(), 200);
    let new = upstream_traceparent(&seen_at(&up, "/new"));
    assert_eq!(
        new.flags, "00",
        "a new trace at sampling = 0.0 went upstream sampled"
    );
    // a client's unsampled trace stays unsampled
    let unsampled = TraceParent::random(false);
    assert_eq!(get_traced(&gw, "/s/unsampled", &unsampled, None), 200);
    let forwarded = upstream_traceparent(&seen_at(&up, "/unsampled"));
    assert_eq!(forwarded.trace_id, unsampled.trace_id);
    assert_eq!(forwarded.flags, "00");
    // a client's sampled trace is sampled whatever the ratio (parent-based); sent last, its
    // spans also mark how far the exports have come: the others would have been before them
    let sampled = TraceParent::random(true);
    assert_eq!(get_traced(&gw, "/s/sampled", &sampled, None), 200);
    let forwarded = upstream_traceparent(&seen_at(&up, "/sampled"));
    assert_eq!(forwarded.trace_id, sampled.trace_id);
    assert_eq!(
        forwarded.flags, "01",
        "a client's sampled flag was dropped at sampling = 0.0"
    );

    let spans = wait_for_trace(&r, &sampled.trace_id, 1);
    let server = the_one(&spans, &sampled.trace_id, "SERVER");
    assert_eq!(server.parent(), sampled.parent_id);
    let others: Vec<Span> = spans
        .iter()
        .filter(|s| s.trace_id() != sampled.trace_id)
        .cloned()
        .collect();
    assert!(
        others.is_empty(),
        "spans of unsampled traces (new {}, client's {}) were exported:\n{}",
        new.trace_id,
        unsampled.trace_id,
        describe(&others)
    );
}

#[test]
fn propagate_only_forwards_the_trace_context_and_exports_nothing() {
    let r = Receiver::start();
    let up = Upstream::echo();
    let mut gw = Gateway::start(
        "",
        &(tracing(&r.endpoint(), 1.0, "propagate_only = true") + &route("/p", up.addr, "")),
    );
    let tp = TraceParent::random(true);
    let state = "congo=t61rcWkgMzE";
    assert_eq!(get_traced(&gw, "/p/x", &tp, Some(state)), 200);
    assert_eq!(client().get(gw.url("/p/y")).send().unwrap().status(), 200);

    let seen = seen_at(&up, "/x");
    let forwarded = upstream_traceparent(&seen);
    assert_eq!(
        forwarded.trace_id, tp.trace_id,
        "the client's trace was not continued"
    );
    assert_eq!(forwarded.flags, tp.flags);
    assert_eq!(seen.header("tracestate"), Some(state));

    // Nothing may arrive: give a batch time to go out, then stop the gateway (which flushes
    // what it holds) and look.
    std::thread::sleep(Duration::from_secs(2));
    gw.signal("TERM");
    let _ = gw.wait_exit(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let spans = r.spans();
    assert!(
        spans.is_empty(),
        "propagate_only exported spans:\n{}",
        describe(&spans)
    );
    assert_eq!(r.stats()["arrived"], 0, "propagate_only sent an export");
    // No gateway span exists to be the upstream's parent: the client's span must stay it,
    // or the upstream's span hangs from a span no collector ever gets (W3C's processing
    // model lets a proxy leave traceparent as it came).
    assert_eq!(
        forwarded.parent_id, tp.parent_id,
        "with propagate_only the gateway makes no span, so the upstream's parent must stay the client's span"
    );
}

#[test]
fn the_response_header_gives_the_client_its_trace_and_the_server_span() {
    let r = Receiver::start();
    let up = Upstream::echo();
    let gw = Gateway::start(
        "",
        &(tracing(&r.endpoint(), 1.0, "response_header = \"traceresponse\"")
            + &route("/h", up.addr, "")),
    );
    let c = client();
    let answer_header = |resp: &reqwest::blocking::Response| -> TraceParent {
        let value = resp
            .headers()
            .get("traceresponse")
            .unwrap_or_else(|| {
                panic!(
                    "no traceresponse on the {} answer: {:?}",
                    resp.status(),
                    resp.headers()
                )
            })
            .to_str()
            .unwrap();
        TraceParent::parse(value)
            .unwrap_or_else(|| panic!("traceresponse {value:?} is not 00-<trace>-<span>-<flags>"))
    };
    let tp = TraceParent::random(true);
    let continued = c
        .get(gw.url("/h/a"))
        .header("traceparent", tp.header())
        .send()
        .unwrap();
    assert_eq!(continued.status(), 200);
    let continued = answer_header(&continued);
    assert_eq!(continued.trace_id, tp.trace_id);
    assert_eq!(continued.flags, "01");
    assert_ne!(continued.parent_id, tp.parent_id);

    let fresh = c.get(gw.url("/h/b")).send().unwrap();
    assert_eq!(fresh.status(), 200);
    let fresh = answer_header(&fresh);
    assert_ne!(fresh.trace_id, tp.trace_id);
    assert_eq!(
        upstream_traceparent(&seen_at(&up, "/b")).trace_id,
        fresh.trace_id,
        "the client was told another trace than the upstream got"
    );

    let not_found = c.get(gw.url("/nowhere")).send().unwrap();
    assert_eq!(not_found.status(), 404);
    let not_found = answer_header(&not_found);

    let spans = r.wait_for("the three SERVER spans", SPANS_WITHIN, |spans| {
        [&continued, &fresh, &not_found]
            .iter()
            .all(|t| of_kind(spans, &t.trace_id, "SERVER").len() == 1)
    });
    for told in [&continued, &fresh, &not_found] {
        let server = the_one(&spans, &told.trace_id, "SERVER");
        assert_eq!(
            told.parent_id,
            server.span_id(),
            "traceresponse does not name the SERVER span: {}",
            server.brief()
        );
    }
}

#[test]
fn without_a_tracing_section_a_client_traceparent_passes_untouched() {
    let up = Upstream::echo();
    let gw = Gateway::start_with_log_format("", &route("/plain", up.addr, ""), "json");
    let tp = TraceParent::random(true);
    let state = "rojo=00f067aa0ba902b7";
    assert_eq!(get_traced(&gw, "/plain/x", &tp, Some(state)), 200);
    let seen = seen_at(&up, "/x");
    assert_eq!(upstream_traceparent(&seen), tp);
    assert_eq!(seen.header("tracestate"), Some(state));
    let lines = gw.access_log_lines(1);
    let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert!(
        line.get("trace_id").is_none() && line.get("span_id").is_none(),
        "an access line without tracing has trace ids: {line}"
    );
}

// ---------------------------------------------------------------------------------------------
// What the spans say
// ---------------------------------------------------------------------------------------------

/// `GET` over cleartext HTTP/2 (prior knowledge) with extra headers; the status.
fn h2c_get(addr: SocketAddr, path: &str, headers: &[(&str, String)]) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let mut req = hyper::Request::builder().uri(format!("http://{addr}{path}"));
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        sender.send_request(req).await.unwrap().status().as_u16()
    })
}

#[test]
fn the_server_and_client_spans_carry_the_http_attributes() {
    let r = Receiver::start();
    let up = Upstream::echo();
    let gw = Gateway::start(
        "h2c = true",
        &(tracing(
            &r.endpoint(),
            1.0,
            "service_name = \"edge-gateway\"\nresource = { \"deployment.environment\" = \"test\" }",
        ) + &route("/attrs", up.addr, "")),
    );
    // record_query = true, and the default service name
    let r2 = Receiver::start();
    let gw2 = Gateway::start(
        "",
        &(tracing(&r2.endpoint(), 1.0, "record_query = true") + &route("/q", up.addr, "")),
    );

    let tp = TraceParent::random(true);
    let answer = raw_request(
        gw.addr,
        format!(
            "GET /attrs/items/7?secret=s3cr3t&page=2 HTTP/1.1\r\nHost: api.example\r\nUser-Agent: pylon-trace-test/1.0\r\ntraceparent: {}\r\nConnection: close\r\n\r\n",
            tp.header()
        )
        .as_bytes(),
    );
    assert_eq!(answer.status, 200, "{}", answer.body_text());
    let no_route = TraceParent::random(true);
    assert_eq!(get_traced(&gw, "/nowhere", &no_route, None), 404);
    let over_h2 = TraceParent::random(true);
    assert_eq!(
        h2c_get(gw.addr, "/attrs/h2", &[("traceparent", over_h2.header())]),
        200
    );
    let with_query = TraceParent::random(true);
    assert_eq!(get_traced(&gw2, "/q/x?page=2", &with_query, None), 200);

    let spans = r.wait_for("the spans of three requests", SPANS_WITHIN, |spans| {
        of_kind(spans, &tp.trace_id, "CLIENT").len() == 1
            && of_kind(spans, &no_route.trace_id, "SERVER").len() == 1
            && of_kind(spans, &over_h2.trace_id, "SERVER").len() == 1
    });
    let server = the_one(&spans, &tp.trace_id, "SERVER");
    let why = server.brief();
    assert_eq!(server.name(), "GET /attrs", "{why}");
    assert_eq!(server.attr_str("http.request.method"), Some("GET"), "{why}");
    assert_eq!(server.attr_str("url.path"), Some("/attrs/items/7"), "{why}");
    assert_eq!(
        server.attr("url.query"),
        None,
        "url.query without record_query: {why}"
    );
    assert_eq!(server.attr_str("http.route"), Some("/attrs"), "{why}");
    assert_eq!(
        server.attr_int("http.response.status_code"),
        Some(200),
        "{why}"
    );
    assert_eq!(
        server.attr_str("server.address"),
        Some("api.example"),
        "{why}"
    );
    assert_eq!(
        server.attr_str("client.address"),
        Some("127.0.0.1"),
        "{why}"
    );
    assert_eq!(
        server.attr_str("user_agent.original"),
        Some("pylon-trace-test/1.0"),
        "{why}"
    );
    assert_eq!(
        server.attr_str("network.protocol.version"),
        Some("1.1"),
        "{why}"
    );
    assert_ne!(server.status(), "ERROR", "{why}");
    assert!(
        !server.0.to_string().contains("s3cr3t"),
        "the query reached the span without record_query: {}",
        server.0
    );
    assert!(
        server.start_ns() > 0 && server.end_ns() >= server.start_ns(),
        "{why}"
    );
    assert_eq!(server.resource("service.name"), Some("edge-gateway"));
    assert_eq!(server.resource("deployment.environment"), Some("test"));

    let attempt = the_one(&spans, &tp.trace_id, "CLIENT");
    let why = attempt.brief();
    assert_eq!(attempt.name(), "GET", "{why}");
    assert_eq!(attempt.parent(), server.span_id(), "{why}");
    assert_eq!(
        attempt.attr_str("server.address"),
        Some("127.0.0.1"),
        "{why}"
    );
    assert_eq!(
        attempt.attr_int("server.port"),
        Some(i64::from(up.addr.port())),
        "{why}"
    );
    assert_eq!(
        attempt.attr_str("http.request.method"),
        Some("GET"),
        "{why}"
    );
    assert_eq!(
        attempt.attr_int("http.response.status_code"),
        Some(200),
        "{why}"
    );
    assert_eq!(attempt.attr("error.type"), None, "{why}");

    let unrouted = the_one(&spans, &no_route.trace_id, "SERVER");
    let why = unrouted.brief();
    assert_eq!(unrouted.name(), "GET", "no route matched: {why}");
    assert_eq!(unrouted.attr("http.route"), None, "{why}");
    assert_eq!(
        unrouted.attr_int("http.response.status_code"),
        Some(404),
        "{why}"
    );
    assert_ne!(unrouted.status(), "ERROR", "a 404 is the client's: {why}");
    assert!(
        of_kind(&spans, &no_route.trace_id, "CLIENT").is_empty(),
        "a 404 without upstream has a CLIENT span:\n{}",
        describe(&spans)
    );

    let h2 = the_one(&spans, &over_h2.trace_id, "SERVER");
    assert_eq!(
        h2.attr_str("network.protocol.version"),
        Some("2"),
        "{}",
        h2.brief()
    );
    // HTTP/2 has no Host field: the address comes from :authority
    assert_eq!(
        h2.attr_str("server.address"),
        Some("127.0.0.1"),
        "{}",
        h2.brief()
    );

    let spans2 = wait_for_trace(&r2, &with_query.trace_id, 1);
    let queried = the_one(&spans2, &with_query.trace_id, "SERVER");
    assert_eq!(
        queried.attr_str("url.path"),
        Some("/q/x"),
        "{}",
        queried.brief()
    );
    assert_eq!(
        queried.attr_str("url.query"),
        Some("page=2"),
        "{}",
        queried.brief()
    );
    assert_eq!(queried.resource("service.name"), Some("pylon"));
}

#[test]
fn each_upstream_attempt_gets_its_own_client_span() {
    let r = Receiver::start();
    let live = Upstream::echo();
    let (refusing1, refusing2) = (refusing_port(), refusing_port());
    let (dead1, dead2) = (refusing1.addr, refusing2.addr);
    let gw = Gateway::start(
        "",
        &format!(
            "{}[[routes]]\nprefix = \"/r\"\nupstreams = [\"http://{dead1}\", \"http://{dead2}\", \"http://{}\"]\nretries = 2\n",
            tracing(&r.endpoint(), 1.0, ""),
            live.addr
        ),
    );
    // round robin over three instances: each request starts at another one
    let traces: Vec<TraceParent> = (0..3).map(|_| TraceParent::random(true)).collect();
    for (i, tp) in traces.iter().enumerate() {
        assert_eq!(get_traced(&gw, &format!("/r/{i}"), tp, None), 200);
    }
    let spans = r.wait_for("each trace's answered CLIENT span", SPANS_WITHIN, |spans| {
        traces.iter().all(|tp| {
            of_kind(spans, &tp.trace_id, "SERVER").len() == 1
                && of_kind(spans, &tp.trace_id, "CLIENT")
                    .iter()
                    .any(|s| s.attr("http.response.status_code").is_some())
        })
    });
    let dead_ports = [i64::from(dead1.port()), i64::from(dead2.port())];
    let mut most = 0;
    for (i, tp) in traces.iter().enumerate() {
        let server = the_one(&spans, &tp.trace_id, "SERVER");
        let attempts = of_kind(&spans, &tp.trace_id, "CLIENT");
        let all = describe(&attempts.iter().map(|s| (*s).clone()).collect::<Vec<_>>());
        most = most.max(attempts.len());
        let (last, failed) = attempts.split_last().unwrap();
        for a in &attempts {
            assert_eq!(
                a.parent(),
                server.span_id(),
                "an attempt is not the SERVER span's child:\n{all}"
            );
        }
        assert_eq!(
            last.attr_int("http.response.status_code"),
            Some(200),
            "the last attempt is not the answered one:\n{all}"
        );
        assert_eq!(
            last.attr_int("server.port"),
            Some(i64::from(live.addr.port()))
        );
        assert_eq!(last.attr("error.type"), None, "{all}");
        assert_eq!(
            upstream_traceparent(&seen_at(&live, &format!("/{i}"))).parent_id,
            last.span_id(),
            "the upstream's traceparent does not name the attempt that reached it:\n{all}"
        );
        let mut ports: Vec<i64> = Vec::new();
        for f in failed {
            assert!(
                f.attr_str("error.type").is_some_and(|t| !t.is_empty()),
                "a failed attempt without error.type:\n{all}"
            );
            assert_eq!(f.attr("http.response.status_code"), None, "{all}");
            let port = f.attr_int("server.port").unwrap_or(-1);
            assert!(
                dead_ports.contains(&port),
                "a failed attempt's server.port {port} is not a dead instance's {dead_ports:?}:\n{all}"
            );
            assert!(
                !ports.contains(&port),
                "two attempts went to port {port}:\n{all}"
            );
            ports.push(port);
        }
    }
    assert!(
        most >= 2,
        "no request made more than one attempt over two dead instances and one live:\n{}",
        describe(&spans)
    );
}

#[test]
fn requests_refused_at_the_edge_or_by_a_policy_get_a_server_span_with_their_status() {
    let r = Receiver::start();
    let up = Upstream::echo();
    let key = "pk-live-6f1c2b9e4d7a";
    let hash = api_key_hash(key);
    let gw = Gateway::start(
        "",
        &format!(
            "{}[auth.partners]\ntype = \"api_key\"\nheader = \"X-Api-Key\"\nkeys = {{ acme = \"sha256:{hash}\" }}\n{}{}",
            tracing(&r.endpoint(), 1.0, ""),
            route(
                "/limited",
                up.addr,
                "rate_limit = { requests = 1, window = \"1m\" }"
            ),
            route("/secure", up.addr, "auth = \"partners\""),
        ),
    );
    // at the edge: two Host fields (400), 130 fields (431); no route matches either path
    let bad = raw_request(
        gw.addr,
        b"GET /edge HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(bad.status, 400);
    let mut many = String::from("GET /edge HTTP/1.1\r\nHost: a.example\r\n");
    for i in 0..130 {
        many.push_str(&format!("X-Field-{i}: v\r\n"));
    }
    many.push_str("Connection: close\r\n\r\n");
    assert_eq!(raw_request(gw.addr, many.as_bytes()).status, 431);
    // policies
    let (first, limited) = (TraceParent::random(true), TraceParent::random(true));
    assert_eq!(get_traced(&gw, "/limited/a", &first, None), 200);
    assert_eq!(get_traced(&gw, "/limited/a", &limited, None), 429);
    let c = client();
    let (no_key, wrong_key, good_key) = (
        TraceParent::random(true),
        TraceParent::random(true),
        TraceParent::random(true),
    );
    let wrong = "pk-wrong-0b5e8d1f";
    let send = |tp: &TraceParent, key: Option<&str>| {
        let mut req = c
            .get(gw.url("/secure/x"))
            .header("traceparent", tp.header());
        if let Some(k) = key {
            req = req.header("X-Api-Key", k);
        }
        req.send().unwrap().status().as_u16()
    };
    assert_eq!(send(&no_key, None), 401);
    assert_eq!(send(&wrong_key, Some(wrong)), 401);
    assert_eq!(send(&good_key, Some(key)), 200);

    let traced = [&first, &limited, &no_key, &wrong_key, &good_key];
    let server_with = |spans: &[Span], code: i64| -> Vec<Span> {
        spans
            .iter()
            .filter(|s| {
                s.kind() == "SERVER" && s.attr_int("http.response.status_code") == Some(code)
            })
            .cloned()
            .collect()
    };
    let spans = r.wait_for(
        "SERVER spans for the 400, the 431 and five policy decisions",
        SPANS_WITHIN,
        |spans| {
            !server_with(spans, 400).is_empty()
                && !server_with(spans, 431).is_empty()
                && traced
                    .iter()
                    .all(|t| of_kind(spans, &t.trace_id, "SERVER").len() == 1)
        },
    );
    for code in [400, 431] {
        let found = server_with(&spans, code);
        assert_eq!(found.len(), 1, "{code}:\n{}", describe(&found));
        assert_eq!(found[0].name(), "GET", "{}", found[0].brief());
        assert_ne!(found[0].status(), "ERROR", "{}", found[0].brief());
    }

    let status_of = |tp: &TraceParent| {
        the_one(&spans, &tp.trace_id, "SERVER").attr_int("http.response.status_code")
    };
    let events_of = |tp: &TraceParent| {
        the_one(&spans, &tp.trace_id, "SERVER")
            .event_names()
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(status_of(&first), Some(200));
    assert!(!events_of(&first).contains(&"rate_limited".to_string()));
    assert_eq!(status_of(&limited), Some(429));
    assert!(
        events_of(&limited).contains(&"rate_limited".to_string()),
        "{}",
        the_one(&spans, &limited.trace_id, "SERVER").brief()
    );
    assert_eq!(
        the_one(&spans, &limited.trace_id, "SERVER").attr_str("http.route"),
        Some("/limited")
    );
    for refused in [&no_key, &wrong_key] {
        assert_eq!(status_of(refused), Some(401));
        assert!(
            events_of(refused).contains(&"auth.refused".to_string()),
            "{}",
            the_one(&spans, &refused.trace_id, "SERVER").brief()
        );
    }
    assert_eq!(status_of(&good_key), Some(200));
    assert!(
        events_of(&good_key).contains(&"auth.accepted".to_string()),
        "{}",
        the_one(&spans, &good_key.trace_id, "SERVER").brief()
    );
    for refused in [&limited, &no_key, &wrong_key] {
        assert!(
            of_kind(&spans, &refused.trace_id, "CLIENT").is_empty(),
            "a refused request has a CLIENT span:\n{}",
            describe(&spans)
        );
    }
    for secret in [key, wrong] {
        let leaked: Vec<Span> = spans
            .iter()
            .filter(|s| s.0.to_string().contains(secret))
            .cloned()
            .collect();
        assert!(
            leaked.is_empty(),
            "a credential reached the spans:\n{}",
            describe(&leaked)
        );
    }
}

#[test]
fn a_502_from_a_dead_upstream_is_an_error_span() {
    let r = Receiver::start();
    let refusing = refusing_port();
    let dead = refusing.addr;
    let gw = Gateway::start(
        "",
        &(tracing(&r.endpoint(), 1.0, "") + &route("/down", dead, "")),
    );
    let tp = TraceParent::random(true);
    assert_eq!(get_traced(&gw, "/down/x", &tp, None), 502);
    let spans = wait_for_trace(&r, &tp.trace_id, 1);
    let server = the_one(&spans, &tp.trace_id, "SERVER");
    assert_eq!(server.name(), "GET /down");
    assert_eq!(
        server.attr_int("http.response.status_code"),
        Some(502),
        "{}",
        server.brief()
    );
    assert_eq!(
        server.status(),
        "ERROR",
        "a 502 is not an error span: {}",
        server.brief()
    );
    for attempt in of_kind(&spans, &tp.trace_id, "CLIENT") {
        let why = attempt.brief();
        assert_eq!(attempt.parent(), server.span_id(), "{why}");
        assert!(attempt.attr_str("error.type").is_some(), "{why}");
        assert_eq!(attempt.attr("http.response.status_code"), None, "{why}");
        assert_eq!(
            attempt.attr_int("server.port"),
            Some(i64::from(dead.port())),
            "{why}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The access log
// ---------------------------------------------------------------------------------------------

#[test]
fn json_access_lines_carry_the_server_spans_trace_and_span_ids() {
    let r = Receiver::start();
    let up = Upstream::echo();
    let gw = Gateway::start_with_log_format(
        "",
        &(tracing(&r.endpoint(), 1.0, "") + &route("/logged", up.addr, "")),
        "json",
    );
    let tp = TraceParent::random(true);
    assert_eq!(get_traced(&gw, "/logged/a", &tp, None), 200);
    assert_eq!(
        client().get(gw.url("/nowhere")).send().unwrap().status(),
        404
    );
    let lines = gw.access_log_lines(2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let line = |i: usize| -> serde_json::Value { serde_json::from_str(&lines[i]).unwrap() };
    let (proxied, not_found) = (line(0), line(1));
    let ids = |l: &serde_json::Value| {
        let trace = l["trace_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no trace_id: {l}"));
        let span = l["span_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no span_id: {l}"));
        assert!(
            TraceParent::parse(&format!("00-{trace}-{span}-01")).is_some(),
            "not a trace id and a span id: {l}"
        );
        (trace.to_string(), span.to_string())
    };
    let (trace0, span0) = ids(&proxied);
    let (trace1, span1) = ids(&not_found);
    assert_eq!(trace0, tp.trace_id, "{proxied}");

    let spans = r.wait_for("both SERVER spans", SPANS_WITHIN, |spans| {
        of_kind(spans, &trace0, "SERVER").len() == 1 && of_kind(spans, &trace1, "SERVER").len() == 1
    });
    assert_eq!(
        span0,
        the_one(&spans, &trace0, "SERVER").span_id(),
        "the access line's span_id is not the SERVER span's: {proxied}"
    );
    let server404 = the_one(&spans, &trace1, "SERVER");
    assert_eq!(
        span1,
        server404.span_id(),
        "the 404's access line does not name its SERVER span: {not_found}"
    );
    assert_eq!(server404.attr_int("http.response.status_code"), Some(404));
}

// ---------------------------------------------------------------------------------------------
// A collector that is gone or slow
// ---------------------------------------------------------------------------------------------

/// 1,000 GETs on one keep-alive connection: (statuses that were not 200, slowest answer).
fn thousand_requests(gw: &Gateway, path: &str) -> (Vec<String>, Duration) {
    let c = client();
    let mut failures = Vec::new();
    let mut slowest = Duration::ZERO;
    for i in 0..1000 {
        let started = Instant::now();
        match c.get(gw.url(path)).send() {
            Ok(resp) if resp.status() == 200 => {
                let _ = resp.bytes();
            }
            Ok(resp) => failures.push(format!("request {i}: {}", resp.status())),
            Err(e) => failures.push(format!("request {i}: {e}")),
        }
        slowest = slowest.max(started.elapsed());
    }
    (failures, slowest)
}

/// Poll the admin's /metrics (at most 10 s) until `done` holds for its text; the text.
fn metrics_until(admin: SocketAddr, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics_text(admin);
        if done(&text) {
            return text;
        }
        if Instant::now() > deadline {
            let trace_lines: Vec<&str> = text.lines().filter(|l| l.contains("trace")).collect();
            panic!(
                "{what}: not after 10 s; the trace series:\n{}",
                trace_lines.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_dead_collector_fails_no_request_and_the_lost_spans_are_counted() {
    let up = Upstream::echo();
    let admin = closed_port();
    let refusing = refusing_port();
    let collector = refusing.addr;
    let gw = Gateway::start(
        "",
        &(admin_section(admin)
            + &tracing(
                &format!("http://{collector}/v1/traces"),
                1.0,
                "queue = 16\nexport_timeout = \"2s\"",
            )
            + &route("/d", up.addr, "")),
    );
    let (failures, slowest) = thousand_requests(&gw, "/d/x");
    assert!(
        failures.is_empty(),
        "{} of 1,000 requests failed with the collector gone: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert_eq!(up.hits(), 1000);
    assert!(
        slowest < Duration::from_secs(2),
        "a request took {slowest:?} with the collector gone (export_timeout 2s)"
    );
    // spans that could not go out: dropped from the full queue (or lost with a failed export)
    let lost = |text: &str| {
        metric_sum(text, "pylon_trace_spans_dropped_total")
            + text
                .lines()
                .filter(|l| {
                    l.starts_with("pylon_trace") && (l.contains("fail") || l.contains("error"))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
    };
    metrics_until(
        admin,
        "pylon_trace_spans_dropped_total (or a failed-export count) above 0",
        |text| lost(text) > 0.0,
    );
}

#[test]
fn a_slow_collector_slows_no_request_and_the_overflow_is_counted() {
    let r = Receiver::start_delayed(Duration::from_secs(10));
    let up = Upstream::echo();
    let admin = closed_port();
    let gw = Gateway::start(
        "",
        &(admin_section(admin)
            + &tracing(&r.endpoint(), 1.0, "queue = 16\nexport_timeout = \"2s\"")
            + &route("/slow", up.addr, "")),
    );
    let started = Instant::now();
    let (failures, slowest) = thousand_requests(&gw, "/slow/x");
    let took = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} of 1,000 requests failed with a slow collector: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(
        slowest < Duration::from_secs(2),
        "a request took {slowest:?} (of {took:?} for 1,000): it waited for the collector (export_timeout 2s)"
    );
    // 2,000 spans against a queue of 16 and exports that each take 2 s: most must drop
    let text = metrics_until(admin, "pylon_trace_spans_dropped_total above 0", |text| {
        metric_sum(text, "pylon_trace_spans_dropped_total") > 0.0
    });
    let dropped = metric_sum(&text, "pylon_trace_spans_dropped_total");
    assert!(
        dropped >= 1000.0,
        "only {dropped} spans counted as dropped of 2,000 made against a queue of 16 held by a collector that takes 10 s"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while r.stats()["arrived"].as_u64() < Some(1) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        r.stats()["arrived"].as_u64() >= Some(1),
        "the gateway never sent an export to the slow collector: {}",
        r.stats()
    );
}

// ---------------------------------------------------------------------------------------------
// End to end with the OpenTelemetry SDK on both sides
// ---------------------------------------------------------------------------------------------

/// The one span of a trace, kind and service.
fn one_of_service<'a>(
    spans: &'a [Span],
    trace_id: &str,
    kind: &str,
    service: &str,
    chain: &str,
) -> &'a Span {
    let found: Vec<&Span> = of_kind(spans, trace_id, kind)
        .into_iter()
        .filter(|s| s.resource("service.name") == Some(service))
        .collect();
    assert_eq!(found.len(), 1, "one {kind} span of {service}:\n{chain}");
    found[0]
}

/// The Python SDK's client sends flags 03 (sampled, and Level 2's random trace id): the
/// gateway must read the sampled bit, not compare the byte.
#[test]
fn an_sdk_client_the_gateway_and_an_sdk_upstream_make_one_trace() {
    let r = Receiver::start();
    let up = SdkUpstream::start(&r.endpoint());
    let gw = Gateway::start(
        "",
        &(tracing(&r.endpoint(), 1.0, "") + &route("/e2e", up.addr, "")),
    );
    let out = sdk_client_get(&r.endpoint(), &gw.url("/e2e/hello"));
    assert_eq!(out["status"], 200, "{out}");
    let trace_id = out["trace_id"].as_str().unwrap();
    let client_span = out["span_id"].as_str().unwrap();
    let body: serde_json::Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();

    let spans = r.wait_for("the four spans of the trace", SPANS_WITHIN, |spans| {
        of_trace(spans, trace_id).len() >= 4
    });
    let chain = describe(
        &of_trace(&spans, trace_id)
            .into_iter()
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert_eq!(of_trace(&spans, trace_id).len(), 4, "{chain}");
    let by = |kind: &str, service: &str| one_of_service(&spans, trace_id, kind, service, &chain);
    let client = by("CLIENT", "e2e-client");
    let gw_server = by("SERVER", "pylon");
    let gw_client = by("CLIENT", "pylon");
    let up_server = by("SERVER", "e2e-upstream");
    assert_eq!(client.span_id(), client_span, "{chain}");
    assert_eq!(client.parent(), "", "{chain}");
    assert_eq!(
        gw_server.parent(),
        client.span_id(),
        "gateway SERVER ← client CLIENT:\n{chain}"
    );
    assert_eq!(gw_server.name(), "GET /e2e", "{chain}");
    assert_eq!(
        gw_client.parent(),
        gw_server.span_id(),
        "gateway CLIENT ← gateway SERVER:\n{chain}"
    );
    assert_eq!(
        up_server.parent(),
        gw_client.span_id(),
        "upstream SERVER ← gateway CLIENT:\n{chain}"
    );
    assert_eq!(up_server.span_id(), body["span_id"].as_str().unwrap());
    let got = TraceParent::parse(body["traceparent"].as_str().unwrap()).unwrap();
    assert_eq!(got.trace_id, trace_id);
    assert_eq!(got.parent_id, gw_client.span_id());
    assert!(
        got.sampled(),
        "the SDK client's sampled trace (flags {}) went upstream unsampled ({})",
        TraceParent::parse(out["traceparent"].as_str().unwrap())
            .map(|t| t.flags)
            .unwrap_or_default(),
        got.flags
    );
}

#[test]
fn a_reload_changes_sampling_and_endpoint_without_a_restart() {
    let (first, second) = (Receiver::start(), Receiver::start());
    let up = Upstream::echo();
    let gw = Gateway::start(
        "",
        &(tracing(&first.endpoint(), 0.0, "") + &route("/r", up.addr, "")),
    );
    let pid = gw.pid();
    assert_eq!(
        client().get(gw.url("/r/before")).send().unwrap().status(),
        200
    );
    assert_eq!(upstream_traceparent(&seen_at(&up, "/before")).flags, "00");

    gw.write_config(&(tracing(&second.endpoint(), 1.0, "") + &route("/r", up.addr, "")));
    // the reload is in force once a new trace goes upstream sampled; a SIGHUP that comes
    // before the gateway watches for it is ignored (see src/server/mod.rs), so it is sent
    // again until one takes
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    let sampled = loop {
        if n % 10 == 0 {
            gw.signal("HUP");
        }
        n += 1;
        let path = format!("/r/after{n}");
        assert_eq!(client().get(gw.url(&path)).send().unwrap().status(), 200);
        let tp = upstream_traceparent(&seen_at(&up, &format!("/after{n}")));
        if tp.flags == "01" {
            break tp;
        }
        assert!(
            Instant::now() < deadline,
            "sampling = 1.0 not in force 10 s after SIGHUP: {}",
            gw.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(gw.pid(), pid, "the same process");
    let spans = wait_for_trace(&second, &sampled.trace_id, 1);
    assert_eq!(
        the_one(&spans, &sampled.trace_id, "SERVER").name(),
        "GET /r"
    );
    assert!(
        first.spans().is_empty(),
        "the old endpoint got spans:\n{}",
        describe(&first.spans())
    );
}
