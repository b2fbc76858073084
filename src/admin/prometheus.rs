//! The Prometheus text at `/metrics`: the counters' series from [`crate::telemetry::metrics`],
//! with the gauges the admin plane reads from the runtime in force (in-flight requests,
//! instance health, connections, rate-limit state, reloads) and the process's own.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::control::Status;
use crate::runtime::Runtime;
use crate::telemetry::metrics::{label, unix_seconds, write_series, Metrics, RouteCounters};
use crate::traffic::HANDSHAKE_FAILURES;

/// The Prometheus text for a runtime, with the history of its config.
pub fn render(rt: &Runtime, metrics: &Metrics, config: &Status) -> String {
    let mut out = String::with_capacity(4096 + rt.routes.len() * 2048);
    let blocks: Vec<(&str, &RouteCounters)> = rt
        .routes
        .iter()
        .filter_map(|r| Some((&*r.prefix, r.counters.as_deref()?)))
        .chain([("", &metrics.unmatched)])
        .collect();

    out.push_str("# HELP pylon_build_info Pylon's version.\n# TYPE pylon_build_info gauge\n");
    let _ = writeln!(
        out,
        "pylon_build_info{{version=\"{}\",pingora=\"0.9\"}} 1",
        env!("CARGO_PKG_VERSION")
    );

    write_series(&mut out, &blocks);

    out.push_str("# HELP pylon_requests_in_flight Requests received and not yet answered in full.\n# TYPE pylon_requests_in_flight gauge\n");
    let _ = writeln!(
        out,
        "pylon_requests_in_flight {}",
        rt.shared.life.in_flight().max(0)
    );

    out.push_str("# HELP pylon_upstream_healthy Whether an upstream instance takes traffic (1) or not (0).\n# TYPE pylon_upstream_healthy gauge\n");
    for route in &rt.routes {
        for (i, inst) in route.pool.instances().iter().enumerate() {
            out.push_str("pylon_upstream_healthy{route=\"");
            label(&mut out, &route.prefix);
            out.push_str("\",upstream=\"");
            label(&mut out, &inst.authority);
            let _ = writeln!(out, "\"}} {}", u8::from(route.pool.is_available(i)));
        }
    }

    out.push_str("# HELP pylon_downstream_connections Open client connections.\n# TYPE pylon_downstream_connections gauge\n");
    let _ = writeln!(
        out,
        "pylon_downstream_connections {}",
        rt.shared.connections.open()
    );
    let (tls, h2) = HANDSHAKE_FAILURES.counts();
    let _ = writeln!(
        out,
        "# HELP pylon_handshake_failures_total Client connections whose TLS or HTTP/2 handshake failed or timed out (a client's fault: logged at debug level).\n# TYPE pylon_handshake_failures_total counter\npylon_handshake_failures_total{{protocol=\"tls\"}} {tls}\npylon_handshake_failures_total{{protocol=\"h2\"}} {h2}"
    );
    out.push_str("# HELP pylon_downstream_connections_refused_total Client connections closed at once because server.max_connections were open.\n# TYPE pylon_downstream_connections_refused_total counter\n");
    let _ = writeln!(
        out,
        "pylon_downstream_connections_refused_total {}",
        rt.shared.connections.refused()
    );

    out.push_str("# HELP pylon_rate_limit_clients Rate-limit counters held (per policy and client).\n# TYPE pylon_rate_limit_clients gauge\n");
    let _ = writeln!(out, "pylon_rate_limit_clients {}", rt.shared.limiter.len());
    out.push_str("# HELP pylon_rate_limit_evicted_total Rate-limit counters dropped to stay within rate_limit.max_clients.\n# TYPE pylon_rate_limit_evicted_total counter\n");
    let _ = writeln!(
        out,
        "pylon_rate_limit_evicted_total {}",
        rt.shared.limiter.evicted()
    );

    out.push_str("# HELP pylon_config_reloads_total Config reloads (SIGHUP), by result.\n# TYPE pylon_config_reloads_total counter\n");
    for (result, n) in [
        ("success", &metrics.reloads.success),
        ("failure", &metrics.reloads.failure),
    ] {
        let _ = writeln!(
            out,
            "pylon_config_reloads_total{{result=\"{result}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    out.push_str("# HELP pylon_config_generation The config in force: 1 at start, one more per successful reload.\n# TYPE pylon_config_generation gauge\n");
    let _ = writeln!(out, "pylon_config_generation {}", config.generation);
    out.push_str("# HELP pylon_config_loaded_timestamp_seconds When the config in force was loaded.\n# TYPE pylon_config_loaded_timestamp_seconds gauge\n");
    let _ = writeln!(
        out,
        "pylon_config_loaded_timestamp_seconds {}",
        unix_seconds(config.loaded_at)
    );

    write_cache(&mut out, rt);

    if rt.tracing.is_some() {
        let spans = &rt.shared.spans;
        out.push_str("# HELP pylon_trace_spans_exported_total Spans the collector took.\n# TYPE pylon_trace_spans_exported_total counter\n");
        let _ = writeln!(out, "pylon_trace_spans_exported_total {}", spans.exported());
        out.push_str("# HELP pylon_trace_spans_dropped_total Spans dropped: the export queue was full, or their export failed.\n# TYPE pylon_trace_spans_dropped_total counter\n");
        let _ = writeln!(out, "pylon_trace_spans_dropped_total {}", spans.dropped());
        out.push_str("# HELP pylon_trace_exports_failed_total Exports the collector did not take (refused, failed, timed out).\n# TYPE pylon_trace_exports_failed_total counter\n");
        let _ = writeln!(
            out,
            "pylon_trace_exports_failed_total {}",
            spans.failed_exports()
        );
    }
    if let Some(store) = &rt.store {
        out.push_str("# HELP pylon_rate_limit_store_up Whether the shared rate-limit store answers (1) or each gateway counts on its own (0).\n# TYPE pylon_rate_limit_store_up gauge\n");
        let up = u8::from(store.state() == crate::limits::StoreState::Up);
        let _ = writeln!(out, "pylon_rate_limit_store_up {up}");
        out.push_str("# HELP pylon_rate_limit_store_calls_total Commands sent to the shared rate-limit store, counting those a script runs.\n# TYPE pylon_rate_limit_store_calls_total counter\n");
        let _ = writeln!(out, "pylon_rate_limit_store_calls_total {}", store.calls());
    }

    out.push_str("# HELP pylon_access_log_dropped_total Access-log lines lost to a full queue.\n# TYPE pylon_access_log_dropped_total counter\n");
    let _ = writeln!(
        out,
        "pylon_access_log_dropped_total {}",
        rt.shared.access_log.dropped()
    );
    process_metrics(&mut out, rt.shared.started);
    out
}

/// The standard process series (as Prometheus client libraries write them), from /proc.
fn process_metrics(out: &mut String, started: std::time::SystemTime) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // the fields after the command name, which is in parentheses and may hold spaces
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as f64;
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of stat, rss field 24 (1-based, with pid and
    // comm before the ')')
    if let (Some(user), Some(system)) = (field(11), field(12)) {
        out.push_str("# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\n");
        let _ = writeln!(out, "process_cpu_seconds_total {}", (user + system) / ticks);
    }
    if let Some(rss) = field(21) {
        out.push_str("# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\n");
        let _ = writeln!(out, "process_resident_memory_bytes {}", rss * page);
    }
    if let Some(vsize) = field(20) {
        out.push_str("# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n# TYPE process_virtual_memory_bytes gauge\n");
        let _ = writeln!(out, "process_virtual_memory_bytes {vsize}");
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.push_str("# HELP process_open_fds Number of open file descriptors.\n# TYPE process_open_fds gauge\n");
        let _ = writeln!(out, "process_open_fds {}", fds.count());
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        out.push_str("# HELP process_max_fds Maximum number of open file descriptors.\n# TYPE process_max_fds gauge\n");
        let _ = writeln!(out, "process_max_fds {}", limit.rlim_cur);
    }
    out.push_str("# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n# TYPE process_start_time_seconds gauge\n");
    let _ = writeln!(out, "process_start_time_seconds {}", unix_seconds(started));
}

/// The response cache's series: each cached route's requests by result, bytes stored,
/// evictions and waits on another's fill, and the store's totals.
fn write_cache(out: &mut String, rt: &Runtime) {
    let cached: Vec<&str> = rt
        .routes
        .iter()
        .filter(|r| r.cache.is_some())
        .map(|r| &*r.prefix)
        .collect();
    if cached.is_empty() {
        return;
    }
    let counts: Vec<_> = rt
        .shared
        .cache
        .counts()
        .into_iter()
        .filter(|(prefix, _)| cached.contains(&&**prefix))
        .collect();
    let series = |out: &mut String, name: &str, help: &str, kind: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    series(out, "pylon_cache_requests_total", "Requests of cached routes by what the cache did: hit, miss (stored or not), stale (served stale), revalidated (a 304 from the upstream), bypass.", "counter");
    for (prefix, c) in &counts {
        for (result, n) in [
            ("hit", &c.hits),
            ("miss", &c.misses),
            ("stale", &c.stale),
            ("revalidated", &c.revalidated),
            ("bypass", &c.bypass),
        ] {
            out.push_str("pylon_cache_requests_total{route=\"");
            label(out, prefix);
            let _ = writeln!(
                out,
                "\",result=\"{result}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }
    for (name, help, kind, pick) in [
        (
            "pylon_cache_route_stored_bytes",
            "Bytes a route's entries take in the store.",
            "gauge",
            0,
        ),
        (
            "pylon_cache_route_evictions_total",
            "A route's entries evicted to keep the store within [cache] memory.",
            "counter",
            1,
        ),
        (
            "pylon_cache_lock_waits_total",
            "Requests that waited for another request's fill of the same key.",
            "counter",
            2,
        ),
    ] {
        series(out, name, help, kind);
        for (prefix, c) in &counts {
            let n = [&c.stored_bytes, &c.evictions, &c.lock_waits][pick];
            let _ = write!(out, "{name}{{route=\"");
            label(out, prefix);
            let _ = writeln!(out, "\"}} {}", n.load(Ordering::Relaxed));
        }
    }
    let (bytes, evictions) = rt.shared.cache.totals();
    series(
        out,
        "pylon_cache_stored_bytes",
        "Bytes the response cache's store holds (bodies, headers, keys).",
        "gauge",
    );
    let _ = writeln!(out, "pylon_cache_stored_bytes {bytes}");
    series(
        out,
        "pylon_cache_evictions_total",
        "Entries evicted to keep the store within [cache] memory.",
        "counter",
    );
    let _ = writeln!(out, "pylon_cache_evictions_total {evictions}");
}
