//! `GET /api/status`: what the gateway runs, as JSON. Names and numbers only: no secret,
//! no key, no token ever appears here.

use serde_json::{json, Map, Value};

use crate::control::Status;
use crate::runtime::{Route, Runtime};
use crate::telemetry::metrics::unix_seconds;

/// The status document (see the README's "Admin listener" for its fields).
pub fn render(rt: &Runtime, config: &Status, path: &std::path::Path) -> Vec<u8> {
    let shared = &rt.shared;
    let last_reload = config.last_reload.as_ref().map(|r| {
        json!({
            "at": unix_seconds(r.at),
            "result": if r.error.is_some() { "failure" } else { "success" },
            "error": r.error,
            "not_applied": r.not_applied,
        })
    });
    let doc = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "started_at": unix_seconds(shared.started),
        "draining": shared.life.is_draining(),
        "config": {
            "path": path.display().to_string(),
            "generation": config.generation,
            "hash": &*config.document.hash,
            "loaded_at": unix_seconds(config.loaded_at),
            "last_reload": last_reload,
            "reloads": shared.metrics.as_ref().map(|m| json!({
                "success": m.reloads.success.load(std::sync::atomic::Ordering::Relaxed),
                "failure": m.reloads.failure.load(std::sync::atomic::Ordering::Relaxed),
            })),
        },
        "listeners": {
            "http": rt.listen.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "https": rt.tls.iter().flat_map(|t| t.listen.iter().map(ToString::to_string)).collect::<Vec<_>>(),
            "admin": rt.admin.as_ref().map(|a| a.listen.to_string()),
        },
        "connections": {
            "open": shared.connections.open(),
            "refused": shared.connections.refused(),
            "max": rt.max_connections,
        },
        "requests_in_flight": shared.life.in_flight().max(0),
        "rate_limit": {
            "default": rt.default_limit.as_ref().map(policy),
            "store": rt.store.as_ref().map(|s| json!({
                "url": s.url(),
                "sync_ms": s.sync().as_millis() as u64,
                "up": s.state() == crate::limits::StoreState::Up,
                "state": s.state().name(),
                "last_error": s.last_error(),
                "calls": s.calls(),
            })),
            "clients": shared.limiter.len(),
            "evicted": shared.limiter.evicted(),
        },
        "unmatched": shared.metrics.as_ref().map(|m| counts(m.unmatched())),
        "routes": rt.routes.iter().map(route).collect::<Vec<_>>(),
    });
    serde_json::to_vec_pretty(&doc).unwrap_or_default()
}

fn policy(p: &crate::limits::Policy) -> Value {
    json!({
        "name": p.name(),
        "requests": p.requests(),
        "window_seconds": p.window().as_secs(),
    })
}

fn counts(c: &crate::telemetry::metrics::RouteCounters) -> Value {
    let requests: Map<String, Value> = c
        .requests()
        .map(|(k, n)| (k.to_string(), n.into()))
        .collect();
    let errors: Map<String, Value> = c
        .gateway_errors()
        .map(|(code, n)| (code.to_string(), n.into()))
        .collect();
    json!({
        "requests": requests,
        "gateway_errors": errors,
        "upstream_errors": c.upstream_errors(),
    })
}

fn route(r: &Route) -> Value {
    let pool = &r.pool;
    let upstreams: Vec<Value> = pool
        .instances()
        .iter()
        .enumerate()
        .map(|(i, inst)| {
            json!({
                "url": inst.url(),
                "address": inst.addr.to_string(),
                "weight": inst.weight,
                "healthy": pool.is_available(i),
                "in_flight": inst.in_flight(),
            })
        })
        .collect();
    json!({
        "prefix": &*r.prefix,
        "balance": pool.balance_name(),
        "upstreams": upstreams,
        "auth": r.auth.iter().map(|a| json!({"name": a.name(), "type": a.kind()})).collect::<Vec<_>>(),
        "rate_limit": r.limit.as_ref().map(policy),
        "max_in_flight": r.in_flight.as_ref().map(|c| c.max()),
        "route_rate": r.route_rate.as_ref().map(|c| json!({
            "requests": c.requests(),
            "window_seconds": c.window().as_secs(),
        })),
        "counts": r.counters.as_deref().map(counts),
        "cache": r.cache.as_ref().map(|c| {
            let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            let counts = &c.counts;
            let (hits, stale, misses) = (n(&counts.hits), n(&counts.stale), n(&counts.misses));
            let revalidated = n(&counts.revalidated);
            let served = hits + stale + misses + revalidated;
            json!({
                "ttl_seconds": c.ttl.as_secs(),
                "max_object": c.max_object,
                "stale_while_revalidate_seconds": c.stale_while_revalidate,
                "stale_if_error_seconds": c.stale_if_error,
                "hits": hits,
                "stale": stale,
                "revalidated": revalidated,
                "misses": misses,
                "bypass": n(&counts.bypass),
                "hit_ratio": if served == 0 { None } else { Some((hits + stale + revalidated) as f64 / served as f64) },
                "stored_bytes": n(&counts.stored_bytes),
                "evictions": n(&counts.evictions),
            })
        }),
    })
}
