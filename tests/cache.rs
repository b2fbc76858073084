//! The response cache (issue 26) end to end: the real `pylon` binary in front of real
//! upstreams that count what they see and answer what each test says. Freshness lifetimes
//! are a second or two, so that a test sleeps just past them.
//!
//! - `max_age_keeps_an_answer_fresh_for_that_long`: a miss is stored, the next request is a
//!   hit with `ttl=N` and `Age`; past `max-age` the entry is fetched again.
//! - `s_maxage_wins_over_max_age`: both ways round.
//! - `expires_sets_the_freshness_without_max_age`: a future `Expires` is fresh until then, a
//!   past one is never a hit.
//! - `the_routes_ttl_applies_when_the_answer_says_nothing`: `cache = { ttl = "2s" }`.
//! - `an_upstream_age_counts_against_freshness`: `max-age=3` with `Age: 2` is stale after a
//!   second; without `Age` it is not.
//! - `no_cache_is_stored_but_revalidated_every_time`: each request reaches the upstream with
//!   `If-None-Match`; its 304 serves the stored body.
//! - never stored: `a_response_with_set_cookie_is_never_stored`,
//!   `a_response_with_vary_star_is_never_stored`, `a_no_store_response_is_never_stored`,
//!   `a_private_response_is_never_stored`, `only_the_listed_statuses_are_stored` (500 is not,
//!   404 is), `a_request_with_authorization_is_stored_only_when_the_answer_allows_it` and
//!   `a_request_with_a_cookie_is_stored_only_when_the_answer_allows_it` (`public`,
//!   `s-maxage` and `must-revalidate` allow it).
//! - `on_an_api_key_route_each_consumer_has_its_own_entry` and
//!   `on_a_jwt_route_each_subject_has_its_own_entry`: the identity is in the key; a
//!   subject's second token hits the subject's entry.
//! - `the_key_holds_host_path_and_query`: two hosts, two queries, two paths.
//! - `vary_keeps_one_entry_per_accept_encoding`: two values, two upstream requests, then hits.
//! - `a_client_conditional_request_gets_304_from_a_fresh_entry`: `If-None-Match` and
//!   `If-Modified-Since`, matching and not.
//! - `a_stale_entry_is_revalidated_with_its_validators`: the upstream sees `If-None-Match` /
//!   `If-Modified-Since` and answers 304; the stored body is served, `fwd-status=304`, and the
//!   entry is fresh again.
//! - `a_set_cookie_on_a_revalidation_never_reaches_another_client`: the upstream's 304
//!   carries a Set-Cookie; a later hit must not.
//! - `head_is_answered_from_a_stored_get` and `a_head_miss_never_leaves_an_empty_body_for_get`.
//! - `a_hundred_concurrent_misses_make_one_upstream_request`: threads behind a barrier;
//!   `; collapsed` and `pylon_cache_lock_waits_total`.
//! - `waiters_go_upstream_themselves_after_the_read_timeout`: a fill whose head trickles in
//!   for 3 s does not hold the others past the route's 1 s read timeout.
//! - `stale_while_revalidate_answers_at_once_and_refreshes_once_in_the_background`.
//! - `stale_if_error_answers_the_stale_body_when_the_upstream_fails`: a 500 and a closed
//!   upstream; a route without it passes the 500 and answers 502-504.
//! - `purge_by_path_and_prefix_needs_the_write_token` (a prefix on a segment boundary) and
//!   `purge_is_405_without_write_token_env`: `DELETE /cache` on the admin listener; a `PURGE`
//!   on the data port is 405 and purges nothing.
//! - `the_store_stays_within_its_memory_budget` and
//!   `an_object_over_max_object_is_served_whole_but_not_stored` (with a Content-Length and
//!   chunked).
//! - `policies_run_before_the_cache`: 401, 429 and 405 never get the cached body.
//! - `cache_status_names_each_path`: no field on an uncached route; method, miss, hit,
//!   expired and refetched.
//! - `metrics_count_each_result`: `pylon_cache_requests_total` per route and result,
//!   `pylon_cache_stored_bytes`.
//! - `redbot_finds_no_error_in_the_cached_routes_headers`: REDbot (from the venv
//!   `make test` makes) checks a cached route and finds nothing "bad".
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::redis::wait_for;
use common::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------------
// An upstream each test steers
// ---------------------------------------------------------------------------------------------

/// What an [`Origin`] answers: the request, and how many requests for that target it has
/// seen, this one included (1 for the first).
type Answer = Arc<dyn Fn(&Seen, usize) -> Reply + Send + Sync>;

/// A real upstream whose answers a test sets and changes while it runs, counting requests
/// per target; [`Origin::close`] stops it, so that connections are refused.
struct Origin {
    addr: SocketAddr,
    up: Option<Upstream>,
    answer: Arc<Mutex<Answer>>,
}

impl Origin {
    fn start(answer: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Origin {
        let answer: Arc<Mutex<Answer>> = Arc::new(Mutex::new(Arc::new(answer)));
        let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let current = answer.clone();
        let up = Upstream::start(Arc::new(move |seen: &Seen| {
            let n = {
                let mut counts = counts.lock().unwrap();
                let n = counts.entry(seen.target.clone()).or_default();
                *n += 1;
                *n
            };
            let answer = current.lock().unwrap().clone();
            answer(seen, n)
        }));
        Origin {
            addr: up.addr,
            up: Some(up),
            answer,
        }
    }

    /// The body `"{target} v{n}"` with these header fields.
    fn versioned(fields: &'static [(&'static str, &'static str)]) -> Origin {
        Origin::start(move |seen, n| {
            with_fields(Reply::ok(&format!("{} v{n}", seen.target)), fields)
        })
    }

    fn fixed(reply: Reply) -> Origin {
        Origin::start(move |_, _| reply.clone())
    }

    /// From now on answer this way.
    fn answer(&self, answer: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) {
        *self.answer.lock().unwrap() = Arc::new(answer);
    }

    /// Stop listening: connections are refused from now on.
    fn close(&mut self) {
        self.up = None;
    }

    fn seen(&self) -> Vec<Seen> {
        self.up.as_ref().map(Upstream::seen).unwrap_or_default()
    }

    fn hits(&self) -> usize {
        self.seen().len()
    }

    /// Requests for this target (as the upstream sees it: the route's prefix stripped).
    fn hits_on(&self, target: &str) -> usize {
        self.seen().iter().filter(|s| s.target == target).count()
    }

    fn last_on(&self, target: &str) -> Seen {
        self.seen()
            .into_iter()
            .rev()
            .find(|s| s.target == target)
            .unwrap_or_else(|| panic!("the upstream saw no request for {target}"))
    }
}

fn with_fields(mut reply: Reply, fields: &[(&str, &str)]) -> Reply {
    for (name, value) in fields {
        reply = reply.header(name, value);
    }
    reply
}

fn status_reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        ..Reply::ok(body)
    }
}

/// A 304 with these fields and no body.
fn not_modified(fields: &[(&str, &str)]) -> Reply {
    with_fields(
        Reply {
            status: 304,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
        },
        fields,
    )
}

// ---------------------------------------------------------------------------------------------
// Configs, requests and what they got
// ---------------------------------------------------------------------------------------------

/// A route with `cache = { <cache> }` and more lines.
fn cached_route(prefix: &str, upstream: SocketAddr, cache: &str, extra: &str) -> String {
    route(prefix, upstream, &format!("cache = {{ {cache} }}\n{extra}"))
}

fn admin_section(admin: SocketAddr, extra: &str) -> String {
    format!("[admin]\nlisten = \"{admin}\"\n{extra}\n")
}

/// An answer, read whole.
struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
    took: Duration,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The `Cache-Status` field, or "" without one.
    fn cache_status(&self) -> &str {
        self.header("cache-status").unwrap_or("")
    }
}

fn send(request: reqwest::blocking::RequestBuilder) -> Got {
    let start = Instant::now();
    let reply = request.send().unwrap();
    let status = reply.status().as_u16();
    let headers = reply.headers().clone();
    let body = reply.text().unwrap();
    Got {
        status,
        headers,
        body,
        took: start.elapsed(),
    }
}

fn get(gw: &Gateway, path: &str) -> Got {
    get_with(gw, path, &[])
}

fn get_with(gw: &Gateway, path: &str, fields: &[(&str, &str)]) -> Got {
    let mut request = client().get(gw.url(path));
    for (name, value) in fields {
        request = request.header(*name, *value);
    }
    send(request)
}

/// The `ttl=N` of a hit's Cache-Status.
fn ttl(cache_status: &str) -> u64 {
    cache_status
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("ttl="))
        .unwrap_or_else(|| panic!("no ttl in {cache_status:?}"))
        .parse()
        .unwrap()
}

fn is_hit(got: &Got) -> bool {
    got.cache_status().starts_with("pylon; hit")
}

/// An HTTP-date (IMF-fixdate), to the second.
fn http_date(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // the civil date of a day count (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// The value of the series whose line starts with `name{` and holds every label given.
fn series(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            let Some(rest) = l.strip_prefix(name) else {
                return false;
            };
            (rest.starts_with('{') || rest.starts_with(' '))
                && labels.iter().all(|label| rest.contains(label))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------------------------
// Freshness
// ---------------------------------------------------------------------------------------------

#[test]
fn max_age_keeps_an_answer_fresh_for_that_long() {
    let origin = Origin::start(|seen, n| {
        let cc = if seen.target == "/long" {
            "max-age=60"
        } else {
            "max-age=1"
        };
        Reply::ok(&format!("{} v{n}", seen.target)).header("cache-control", cc)
    });
    let gw = Gateway::start("", &cached_route("/c", origin.addr, "", ""));

    let first = get(&gw, "/c/long");
    assert_eq!(first.status, 200, "{}", gw.stderr());
    assert_eq!(first.body, "/long v1");
    assert_eq!(first.cache_status(), "pylon; fwd=miss; stored");
    let second = get(&gw, "/c/long");
    assert_eq!(second.body, "/long v1");
    assert!(is_hit(&second), "{}", second.cache_status());
    let left = ttl(second.cache_status());
    assert!((58..=60).contains(&left), "{}", second.cache_status());
    assert!(second.header("age").is_some(), "a hit carries Age");
    assert_eq!(origin.hits_on("/long"), 1);

    assert_eq!(get(&gw, "/c/short").body, "/short v1");
    assert!(is_hit(&get(&gw, "/c/short")), "fresh for a second");
    sleep_ms(1500);
    let expired = get(&gw, "/c/short");
    assert_eq!(
        expired.body, "/short v2",
        "past max-age the entry is fetched again"
    );
    assert_eq!(
        expired.cache_status(),
        "pylon; fwd=stale; fwd-status=200; stored"
    );
    assert_eq!(origin.hits_on("/short"), 2);
}

#[test]
fn s_maxage_wins_over_max_age() {
    let origin = Origin::start(|seen, n| {
        let cc = if seen.target == "/shared-longer" {
            "max-age=1, s-maxage=60"
        } else {
            "max-age=60, s-maxage=1"
        };
        Reply::ok(&format!("{} v{n}", seen.target)).header("cache-control", cc)
    });
    let gw = Gateway::start("", &cached_route("/c", origin.addr, "", ""));
    for path in ["/c/shared-longer", "/c/shared-shorter"] {
        assert_eq!(get(&gw, path).cache_status(), "pylon; fwd=miss; stored");
    }
    sleep_ms(1500);
    let longer = get(&gw, "/c/shared-longer");
    assert!(
        is_hit(&longer),
        "s-maxage=60 beats max-age=1: {}",
        longer.cache_status()
    );
    let shorter = get(&gw, "/c/shared-shorter");
    assert_eq!(
        shorter.body,
        "/shared-shorter v2",
        "s-maxage=1 beats max-age=60: {}",
        shorter.cache_status()
    );
    assert_eq!(origin.hits_on("/shared-longer"), 1);
    assert_eq!(origin.hits_on("/shared-shorter"), 2);
}

#[test]
fn expires_sets_the_freshness_without_max_age() {
    let expires_at = SystemTime::now() + Duration::from_secs(3);
    let soon = http_date(expires_at);
    let past = http_date(SystemTime::now() - Duration::from_secs(60));
    let origin = Origin::start(move |seen, n| {
        let expires = if seen.target == "/soon" { &soon } else { &past };
        Reply::ok(&format!("{} v{n}", seen.target)).header("expires", expires)
    });
    let gw = Gateway::start("", &cached_route("/c", origin.addr, "", ""));

    get(&gw, "/c/soon");
    let hit = get(&gw, "/c/soon");
    assert!(is_hit(&hit), "fresh until Expires: {}", hit.cache_status());
    let left = ttl(hit.cache_status());
    assert!((1..=3).contains(&left), "{}", hit.cache_status());

    get(&gw, "/c/past");
    let again = get(&gw, "/c/past");
    assert!(
        !is_hit(&again),
        "an Expires in the past is stale at once, not the route's 60 s: {}",
        again.cache_status()
    );
    assert_eq!(again.body, "/past v2");

    // the Date field is to the second: allow one more
    while SystemTime::now() < expires_at + Duration::from_millis(1200) {
        sleep_ms(50);
    }
    let expired = get(&gw, "/c/soon");
    assert_eq!(expired.body, "/soon v2", "{}", expired.cache_status());
    assert_eq!(origin.hits_on("/soon"), 2);
}

#[test]
fn the_routes_ttl_applies_when_the_answer_says_nothing() {
    let origin = Origin::versioned(&[]);
    let gw = Gateway::start("", &cached_route("/c", origin.addr, "ttl = \"2s\"", ""));
    assert_eq!(get(&gw, "/c/x").cache_status(), "pylon; fwd=miss; stored");
    let hit = get(&gw, "/c/x");
    assert!(is_hit(&hit), "{}", hit.cache_status());
    assert!(
        (1..=2).contains(&ttl(hit.cache_status())),
        "{}",
        hit.cache_status()
    );
    sleep_ms(2500);
    let expired = get(&gw, "/c/x");
    assert_eq!(expired.body, "/x v2", "{}", expired.cache_status());
    assert_eq!(origin.hits(), 2);
}

#[test]
fn an_upstream_age_counts_against_freshness() {
    let origin = Origin::start(|seen, n| {
        let reply =
            Reply::ok(&format!("{} v{n}", seen.target)).header("cache-control", "max-age=3");
        if seen.target == "/aged" {
            reply.header("age", "2")
        } else {
            reply
        }
    });
    let gw = Gateway::start("", &cached_route("/c", origin.addr, "", ""));
    get(&gw, "/c/aged");
    get(&gw, "/c/young");
    let aged = get(&gw, "/c/aged");
    assert!(is_hit(&aged), "{}", aged.cache_status());
    assert!(ttl(aged.cache_status()) <= 1, "{}", aged.cache_status());
    sleep_ms(1500);
    let aged = get(&gw, "/c/aged");
    assert_eq!(
        aged.body,
        "/aged v2",
        "max-age=3 with Age: 2 is stale after a second: {}",
        aged.cache_status()
    );
    let young = get(&gw, "/c/young");
    assert!(is_hit(&young), "{}", young.cache_status());
    assert_eq!(origin.hits_on("/aged"), 2);
    assert_eq!(origin.hits_on("/young"), 1);
}

#[test]
fn no_cache_is_stored_but_revalidated_every_time() {
    let origin = Origin::start(|seen, _| {
        if seen.header("if-none-match") == Some("\"nc1\"") {
            not_modified(&[("etag", "\"nc1\""), ("cache-control", "no-cache")])
        } else {
            Reply::ok("the stored body")
                .header("etag", "\"nc1\"")
                .header("cache-control", "no-cache")
        }
    });
    let gw = Gateway::start("", &cached_route("/c", origin.addr, "", ""));
    let first = get(&gw, "/c/x");
    assert_eq!(first.body, "the stored body");
    assert_eq!(first.cache_status(), "pylon; fwd=miss; stored");
    for i in 2..=3 {
        let got = get(&gw, "/c/x");
        assert_eq!(got.status, 200);
        assert_eq!(got.body, "the stored body");
        assert_eq!(origin.hits(), i, "no-cache: every request is revalidated");
        assert_eq!(
            origin.last_on("/x").header("if-none-match"),
            Some("\"nc1\""),
            "request {i} revalidated the stored entry"
        );
        assert!(
            got.cache_status().contains("fwd-status=304"),
            "{}",
            got.cache_status()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// What is never stored
// ---------------------------------------------------------------------------------------------

/// Two identical requests to a cached route whose upstream answers `reply`: both reach the
/// upstream, and each Cache-Status is one of `allowed`.
fn assert_never_stored(reply: Reply, request_fields: &[(&str, &str)], allowed: &[&str]) {
    let origin = Origin::fixed(reply);
    let gw = Gateway::start("", &cached_route("/c", origin.addr, "", ""));
    for i in 1..=2 {
        let got = get_with(&gw, "/c/x", request_fields);
        assert!(
            allowed.contains(&got.cache_status()),
            "request {i}: Cache-Status {:?}, expected one of {allowed:?}",
            got.cache_status()
        );
        assert_eq!(origin.hits(), i, "request {i} reached the upstream");
    }
}

#[test]
fn a_response_with_set_cookie_is_never_stored() {
    assert_never_stored(
        Reply::ok("personal")
            .header("cache-control", "public, max-age=60")
            .header("set-cookie", "session=abc; Path=/"),
        &[],
        &["pylon; fwd=miss"],
    );
}

#[test]
fn a_response_with_vary_star_is_never_stored() {
    assert_never_stored(
        Reply::ok("varies")
            .header("cache-control", "max-age=60")
            .header("vary", "*"),
        &[],
        &["pylon; fwd=miss"],
    );
}

#[test]
fn a_no_store_response_is_never_stored() {
    assert_never_stored(
        Reply::ok("secret").header("cache-control", "max-age=60, no-store"),
        &[],
        &["pylon; fwd=miss"],
    );
}

#[test]
fn a_private_response_is_never_stored() {
    assert_never_stored(
        Reply::ok("mine").header("cache-control", "private, max-age=60"),
        &[],
        &["pylon; fwd=miss"],
    );
}

#[test]
fn only_the_listed_statuses_are_stored() {
    let origin = Origin::start(|seen, n| {
        let status = if seen.target == "/broken" { 500 } else { 404 };
        status_reply(status, &format!("{} v{n}", seen.target)).header("cache-control", "max-age=60")
    });
    let gw = Gateway::start("", &cached_route("/c", origin.addr, "", ""));
    for i in 1..=2 {
        let broken = get(&gw, "/c/broken");
        assert_eq!(broken.status, 500);
        assert_eq!(broken.cache_status(), "pylon; fwd=miss", "request {i}");
        assert_eq!(origin.hits_on("/broken"), i, "a 500 is never stored");
    }
    let missing = get(&gw, "/c/missing");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.cache_status(), "pylon; fwd=miss; stored");
    let again = get(&gw, "/c/missing");
    assert_eq!(again.status, 404);
    assert!(is_hit(&again), "a 404 is stored: {}", again.cache_status());
    assert_eq!(origin.hits_on("/missing"), 1);
}

/// Requests carrying `credential` on a route without auth: stored only when the answer
/// says `public`, `s-maxage` or `must-revalidate`.
fn assert_credentials_bypass_unless_allowed(credential: (&str, &str)) {
    let origin = Origin::start(|seen, _| {
        let cc = match seen.target.as_str() {
            "/public" => "public, max-age=60",
            "/shared" => "s-maxage=60",
            "/must" => "must-revalidate, max-age=60",
            _ => "max-age=60",
        };
        Reply::ok(&seen.target).header("cache-control", cc)
    });
    let gw = Gateway::start("", &cached_route("/c", origin.addr, "", ""));
    for i in 1..=2 {
        let got = get_with(&gw, "/c/plain", &[credential]);
        assert!(
            ["pylon; fwd=miss", "pylon; fwd=bypass"].contains(&got.cache_status()),
            "{}: request {i}: {}",
            credential.0,
            got.cache_status()
        );
        assert_eq!(origin.hits_on("/plain"), i, "{}: not stored", credential.0);
    }
    for allowed in ["/public", "/shared", "/must"] {
        let path = format!("/c{allowed}");
        let first = get_with(&gw, &path, &[credential]);
        assert_eq!(first.body, allowed);
        assert_eq!(first.cache_status(), "pylon; fwd=miss; stored", "{allowed}");
        let second = get_with(&gw, &path, &[credential]);
        assert!(is_hit(&second), "{allowed}: {}", second.cache_status());
        assert_eq!(origin.hits_on(allowed), 1, "{allowed} was stored");
    }
}

#[test]
fn a_request_with_authorization_is_stored_only_when_the_answer_allows_it() {
    assert_credentials_bypass_unless_allowed(("authorization", "Bearer someone"));
}

#[test]
fn a_request_with_a_cookie_is_stored_only_when_the_answer_allows_it() {
    assert_credentials_bypass_unless_allowed(("cookie", "session=abc"));
}

// ---------------------------------------------------------------------------------------------
// Keys: identity and Vary
// ---------------------------------------------------------------------------------------------

#[test]
fn on_an_api_key_route_each_consumer_has_its_own_entry() {
    let origin = Origin::start(|seen, _| {
        Reply::ok(&format!(
            "for {}",
            seen.header("x-api-key").unwrap_or("nobody")
        ))
        .header("cache-control", "max-age=60")
    });
    let gw = Gateway::start(
        "",
        &format!(
            "[auth.partners]\ntype = \"api_key\"\nheader = \"X-Api-Key\"\nkeys = {{ acme = \"sha256:{}\", globex = \"sha256:{}\" }}\n{}",
            api_key_hash("key-of-acme"),
            api_key_hash("key-of-globex"),
            cached_route("/c", origin.addr, "", "auth = \"partners\"")
        ),
    );
    for key in ["key-of-acme", "key-of-globex"] {
        let got = get_with(&gw, "/c/x", &[("x-api-key", key)]);
        assert_eq!(got.body, format!("for {key}"), "{}", got.cache_status());
        assert_eq!(got.cache_status(), "pylon; fwd=miss; stored");
    }
    for key in ["key-of-acme", "key-of-globex"] {
        let got = get_with(&gw, "/c/x", &[("x-api-key", key)]);
        assert_eq!(
            got.body,
            format!("for {key}"),
            "a consumer never gets another's entry"
        );
        assert!(is_hit(&got), "{key}: {}", got.cache_status());
    }
    assert_eq!(origin.hits(), 2);
}

const JWT_SECRET: &str = "a-test-secret-of-at-least-thirty-two-bytes!";

fn hs256(sub: &str, exp_in: u64) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = format!(r#"{{"sub":"{sub}","exp":{},"iat":{now}}}"#, now + exp_in);
    let input = format!(
        "{}.{}",
        B64.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        B64.encode(claims)
    );
    let key = openssl::pkey::PKey::hmac(JWT_SECRET.as_bytes()).unwrap();
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
    signer.update(input.as_bytes()).unwrap();
    format!("{input}.{}", B64.encode(signer.sign_to_vec().unwrap()))
}

#[test]
fn on_a_jwt_route_each_subject_has_its_own_entry() {
    let origin = Origin::start(|seen, _| {
        Reply::ok(&format!(
            "for {}",
            seen.header("x-user-id").unwrap_or("nobody")
        ))
        .header("cache-control", "max-age=60")
    });
    let gw = Gateway::start_with_env(
        &format!(
            "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"PYLON_TEST_JWT_SECRET\"\nforward_claims = {{ sub = \"X-User-Id\" }}\n{}",
            cached_route("/c", origin.addr, "", "auth = \"users\"")
        ),
        &[("PYLON_TEST_JWT_SECRET", JWT_SECRET)],
    );
    let bearer = |sub: &str, exp_in: u64| format!("Bearer {}", hs256(sub, exp_in));
    for sub in ["alice", "bob"] {
        let token = bearer(sub, 300);
        let got = get_with(&gw, "/c/me", &[("authorization", token.as_str())]);
        assert_eq!(got.status, 200, "{}", gw.stderr());
        assert_eq!(got.body, format!("for {sub}"));
        assert_eq!(
            got.cache_status(),
            "pylon; fwd=miss; stored",
            "an auth route stores answers to Authorization, keyed by subject"
        );
    }
    // another token of each subject: the key is the subject, not the token
    for sub in ["alice", "bob"] {
        let token = bearer(sub, 600);
        let got = get_with(&gw, "/c/me", &[("authorization", token.as_str())]);
        assert_eq!(
            got.body,
            format!("for {sub}"),
            "a subject never gets another's entry"
        );
        assert!(is_hit(&got), "{sub}: {}", got.cache_status());
    }
    assert_eq!(origin.hits(), 2);
}

#[test]
fn the_key_holds_host_path_and_query() {
    let origin = Origin::versioned(&[("cache-control", "max-age=60")]);
    let gw = Gateway::start("", &cached_route("/c", origin.addr, "", ""));
    let asks = [
        ("a.test", "/c/x", "/x v1"),
        ("b.test", "/c/x", "/x v2"),
        ("a.test", "/c/x?q=1", "/x?q=1 v1"),
        ("a.test", "/c/x?q=2", "/x?q=2 v1"),
        ("a.test", "/c/z", "/z v1"),
    ];
    for round in 1..=2 {
        for (host, path, body) in asks {
            let got = get_with(&gw, path, &[("host", host)]);
            assert_eq!(got.body, body, "round {round}: {host} {path}");
            assert_eq!(
                is_hit(&got),
                round == 2,
                "round {round}: {host} {path}: {}",
                got.cache_status()
            );
        }
    }
    assert_eq!(origin.hits(), asks.len());
}

#[test]
fn vary_keeps_one_entry_per_accept_encoding() {
    let origin = Origin::start(|seen, _| {
        Reply::ok(&format!(
            "encoding {}",
            seen.header("accept-encoding").unwrap_or("none")
        ))
        .header("cache-control", "max-age=60")
        .header("vary", "Accept-Encoding")
    });
    let gw = Gateway::start("", &cached_route("/c", origin.addr, "", ""));
    for (round, hits) in [(1, [false, false]), (2, [true, true])] {
        for (encoding, hit) in ["gzip", "br"].into_iter().zip(hits) {
            let got = get_with(&gw, "/c/x", &[("accept-encoding", encoding)]);
            assert_eq!(got.body, format!("encoding {encoding}"), "round {round}");
            assert_eq!(
                is_hit(&got),
                hit,
                "round {round}, {encoding}: {}",
                got.cache_status()
            );
        }
    }
    assert_eq!(origin.hits(), 2);
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

#[test]
fn a_client_conditional_request_gets_304_from_a_fresh_entry() {
    let modified = SystemTime::now() - Duration::from_secs(3600);
    let last_modified = http_date(modified);
    let lm = last_modified.clone();
    let origin = Origin::start(move |_, _| {
        Reply::ok("validated body")
            .header("cache-control", "max-age=60")
            .header("etag", "\"cv1\"")
            .header("last-modified", &lm)
    });
    let gw = Gateway::start("", &cached_route("/c", origin.addr, "", ""));
    assert_eq!(get(&gw, "/c/x").body, "validated body");

    let matching = get_with(&gw, "/c/x", &[("if-none-match", "\"cv1\"")]);
    assert_eq!(matching.status, 304, "{}", matching.cache_status());
    assert_eq!(matching.body, "");
    assert_eq!(matching.header("etag"), Some("\"cv1\""));
    let other = get_with(&gw, "/c/x", &[("if-none-match", "\"other\"")]);
    assert_eq!(other.status, 200);
    assert_eq!(other.body, "validated body");

    let since = get_with(
        &gw,
        "/c/x",
        &[("if-modified-since", last_modified.as_str())],
    );
    assert_eq!(since.status, 304, "{}", since.cache_status());
    assert_eq!(since.body, "");
    let earlier = http_date(modified - Duration::from_secs(86400));
    let older = get_with(&gw, "/c/x", &[("if-modified-since", earlier.as_str())]);
    assert_eq!(older.status, 200);
    assert_eq!(older.body, "validated body");

    assert_eq!(origin.hits(), 1, "all from the fresh entry");
}

#[test]
fn a_stale_entry_is_revalidated_with_its_validators() {
    let last_modified = http_date(SystemTime::now() - Duration::from_secs(3600));
    let lm = last_modified.clone();
    let origin = Origin::start(move |seen, n| {
        let (validator, condition, value) = if seen.target == "/etag" {
            ("etag", "if-none-match", "\"rv1\"")
        } else {
            ("last-modified", "if-modified-since", lm.as_str())
        };
        if seen.header(condition) == Some(value) {
            not_modified(&[(validator, value), ("cache-control", "max-age=1")])
        } else {
            Reply::ok(&format!("{} v{n}", seen.target))
                .header(validator, value)
                .header("cache-control", "max-age=1")
        }
    });
    let gw = Gateway::start("", &cached_route("/c", origin.addr, "", ""));
    get(&gw, "/c/etag");
    get(&gw, "/c/date");
    sleep_ms(1500);
    for (path, target, condition, value) in [
        ("/c/etag", "/etag", "if-none-match", "\"rv1\""),
        (
            "/c/date",
            "/date",
            "if-modified-since",
            last_modified.as_str(),
        ),
    ] {
        let got = get(&gw, path);
        assert_eq!(got.status, 200);
        assert_eq!(
            got.body,
            format!("{target} v1"),
            "the stored body after the upstream's 304"
        );
        assert_eq!(got.cache_status(), "pylon; fwd=stale; fwd-status=304");
        assert_eq!(origin.hits_on(target), 2);
        assert_eq!(
            origin.last_on(target).header(condition),
            Some(value),
            "the upstream was asked {condition}"
        );
        let refreshed = get(&gw, path);
        assert!(
            is_hit(&refreshed),
            "the 304 made the entry fresh again: {}",
            refreshed.cache_status()
        );
        assert_eq!(refreshed.body, format!("{target} v1"));
        assert_eq!(origin.hits_on(target), 2);
    }
}

#[test]
fn a_set_cookie_on_a_revalidation_never_reaches_another_client() {
    let origin = Origin::start(|seen, _| {
        if seen.header("if-none-match") == Some("\"sc1\"") {
            not_modified(&[
                ("etag", "\"sc1\""),
                ("cache-control", "max-age=60"),
                ("set-cookie", "session=first-revalidator"),
            ])
        } else {
            Reply::ok("shared body")
                .header("etag", "\"sc1\"")
                .header("cache-control", "max-age=1")
        }
    });
    let gw = Gateway::start("", &cached_route("/c", origin.addr, "", ""));
    assert_eq!(get(&gw, "/c/x").cache_status(), "pylon; fwd=miss; stored");
    sleep_ms(1500);
    let revalidated = get(&gw, "/c/x");
    assert_eq!(revalidated.body, "shared body");
    assert_eq!(origin.hits(), 2, "revalidated upstream");
    for i in 1..=2 {
        let other = get(&gw, "/c/x");
        assert_eq!(other.body, "shared body");
        if is_hit(&other) {
            assert_eq!(
                other.header("set-cookie"),
                None,
                "hit {i} carries the cookie the upstream gave with its 304 to another client"
            );
        }
    }
}

#[test]
fn head_is_answered_from_a_stored_get() {
    let origin = Origin::fixed(Reply::ok("ten bytes!").header("cache-control", "max-age=60"));
    let gw = Gateway::start("", &cached_route("/c", origin.addr, "", ""));
    assert_eq!(get(&gw, "/c/x").body, "ten bytes!");
    let head = send(client().head(gw.url("/c/x")));
    assert_eq!(head.status, 200);
    assert_eq!(head.body, "");
    assert_eq!(head.header("content-length"), Some("10"));
    assert!(is_hit(&head), "{}", head.cache_status());
    assert_eq!(origin.hits(), 1);
    assert!(origin.seen().iter().all(|s| s.method == "GET"));
}

#[test]
fn a_head_miss_never_leaves_an_empty_body_for_get() {
    let origin = Origin::fixed(Reply::ok("the whole body").header("cache-control", "max-age=60"));
    let gw = Gateway::start("", &cached_route("/c", origin.addr, "", ""));
    let head = send(client().head(gw.url("/c/y")));
    assert_eq!(head.status, 200);
    assert_eq!(head.body, "");
    for i in 1..=2 {
        let got = get(&gw, "/c/y");
        assert_eq!(got.status, 200);
        assert_eq!(
            got.body,
            "the whole body",
            "GET {i} after a HEAD miss: {}",
            got.cache_status()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Coalescing
// ---------------------------------------------------------------------------------------------

#[test]
fn a_hundred_concurrent_misses_make_one_upstream_request() {
    let origin = Origin::fixed(
        Reply::ok("slow body")
            .header("cache-control", "max-age=60")
            .delayed(Duration::from_millis(300)),
    );
    let admin = closed_port();
    let gw = Gateway::start(
        "",
        &format!(
            "{}{}",
            admin_section(admin, ""),
            cached_route("/c", origin.addr, "", "")
        ),
    );
    let url = gw.url("/c/x");
    let barrier = Arc::new(Barrier::new(100));
    let threads: Vec<_> = (0..100)
        .map(|_| {
            let (barrier, url) = (barrier.clone(), url.clone());
            std::thread::spawn(move || {
                let http = client();
                barrier.wait();
                send(http.get(&url))
            })
        })
        .collect();
    let answers: Vec<Got> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut statuses: HashMap<String, usize> = HashMap::new();
    for got in &answers {
        *statuses.entry(got.cache_status().to_string()).or_default() += 1;
    }
    for got in &answers {
        assert_eq!(got.status, 200, "{statuses:?}");
        assert_eq!(got.body, "slow body");
    }
    assert_eq!(origin.hits(), 1, "one fill for all: {statuses:?}");
    let collapsed = answers
        .iter()
        .filter(|g| g.cache_status().ends_with("; collapsed"))
        .count();
    assert!(collapsed > 0, "waiters say collapsed: {statuses:?}");
    let text = metrics_text(admin);
    let waits = series(&text, "pylon_cache_lock_waits_total", &["route=\"/c\""]);
    assert!(
        waits.is_some_and(|w| w >= collapsed as f64),
        "lock waits {waits:?}, {collapsed} collapsed:\n{text}"
    );
}

/// An upstream whose first answer's head trickles in, a field every 400 ms for `head_for`,
/// so that a 1 s read timeout never fires on it; every later connection is answered at once.
/// Returns its address and the count of connections.
fn trickling_upstream(head_for: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(k) => got.extend_from_slice(&buf[..k]),
                    }
                }
                if n == 1 {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\n");
                    let start = Instant::now();
                    let mut i = 0;
                    while start.elapsed() < head_for {
                        std::thread::sleep(Duration::from_millis(400));
                        i += 1;
                        if s.write_all(format!("x-trickle-{i}: yes\r\n").as_bytes())
                            .is_err()
                        {
                            return;
                        }
                    }
                    let _ = s.write_all(
                        b"cache-control: max-age=60\r\ncontent-length: 4\r\nconnection: close\r\n\r\nslow",
                    );
                } else {
                    let _ = s.write_all(
                        b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 4\r\nconnection: close\r\n\r\nfast",
                    );
                }
            });
        }
    });
    (addr, connections)
}

#[test]
fn waiters_go_upstream_themselves_after_the_read_timeout() {
    let (upstream, connections) = trickling_upstream(Duration::from_secs(3));
    let gw = Gateway::start(
        "",
        &cached_route(
            "/c",
            upstream,
            "",
            "retries = 0\ntimeouts = { read = \"1s\" }",
        ),
    );
    let url = gw.url("/c/x");
    let leader = {
        let url = url.clone();
        std::thread::spawn(move || send(client().get(&url)))
    };
    sleep_ms(200);
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || send(client().get(&url)))
        })
        .collect();
    for waiter in waiters {
        let got = waiter.join().unwrap();
        assert_eq!(got.status, 200, "{}", gw.stderr());
        assert!(
            got.took < Duration::from_millis(2500),
            "a waiter gave up on the fill after the 1 s read timeout, took {:?} ({}, {:?})",
            got.took,
            got.cache_status(),
            got.body
        );
        assert_eq!(got.body, "fast");
    }
    let leader = leader.join().unwrap();
    assert_eq!(leader.status, 200, "the slow head never paused 1 s");
    assert_eq!(leader.body, "slow");
    assert!(connections.load(Ordering::SeqCst) >= 2);
}

// ---------------------------------------------------------------------------------------------
// Stale answers
// ---------------------------------------------------------------------------------------------

#[test]
fn stale_while_revalidate_answers_at_once_and_refreshes_once_in_the_background() {
    let origin = Origin::start(|seen, n| {
        let body = format!("{} v{n}", seen.target);
        if n == 1 {
            Reply::ok(&body).header("cache-control", "max-age=1")
        } else {
            Reply::ok(&body)
                .header("cache-control", "max-age=30")
                .delayed(Duration::from_millis(600))
        }
    });
    let gw = Gateway::start(
        "",
        &cached_route("/c", origin.addr, "stale_while_revalidate = \"30s\"", ""),
    );
    assert_eq!(get(&gw, "/c/x").body, "/x v1");
    sleep_ms(1500);
    for i in 1..=3 {
        let stale = get(&gw, "/c/x");
        assert_eq!(stale.status, 200);
        assert_eq!(stale.body, "/x v1", "request {i} in the window");
        assert_eq!(
            stale.cache_status(),
            "pylon; hit; detail=stale-while-revalidate",
            "request {i}"
        );
        assert!(
            stale.took < Duration::from_millis(400),
            "not waiting for the 600 ms refresh: {:?}",
            stale.took
        );
    }
    wait_for("the background refresh", Duration::from_secs(5), || {
        origin.hits() >= 2
    });
    sleep_ms(1000);
    let fresh = get(&gw, "/c/x");
    assert_eq!(fresh.body, "/x v2", "{}", fresh.cache_status());
    assert!(is_hit(&fresh), "{}", fresh.cache_status());
    assert_eq!(origin.hits(), 2, "one refresh for the three stale answers");
}

#[test]
fn stale_if_error_answers_the_stale_body_when_the_upstream_fails() {
    let mut origin = Origin::versioned(&[("cache-control", "max-age=1")]);
    let gw = Gateway::start(
        "",
        &format!(
            "{}{}",
            cached_route("/c", origin.addr, "stale_if_error = \"5m\"", ""),
            cached_route("/n", origin.addr, "", "")
        ),
    );
    let with = get(&gw, "/c/x").body;
    let without = get(&gw, "/n/x").body;
    sleep_ms(1500);

    origin.answer(|_, _| status_reply(500, "upstream broke"));
    let got = get(&gw, "/c/x");
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body, with);
    assert_eq!(
        got.cache_status(),
        "pylon; hit; fwd=stale; detail=stale-if-error"
    );
    let plain = get(&gw, "/n/x");
    assert_eq!(plain.status, 500, "without stale_if_error the 500 passes");
    assert_ne!(plain.body, without);

    origin.close();
    let got = get(&gw, "/c/x");
    assert_eq!(got.status, 200, "{}: {}", got.body, gw.stderr());
    assert_eq!(got.body, with);
    assert_eq!(
        got.cache_status(),
        "pylon; hit; fwd=stale; detail=stale-if-error"
    );
    let plain = get(&gw, "/n/x");
    assert!(
        (502..=504).contains(&plain.status),
        "without stale_if_error a dead upstream is 502-504, got {}: {}",
        plain.status,
        plain.body
    );
}

// ---------------------------------------------------------------------------------------------
// Purge
// ---------------------------------------------------------------------------------------------

const READ_TOKEN: &str = "read-token-0123456789abcdef";
const WRITE_TOKEN: &str = "write-token-0123456789abcdef";

fn purge(admin: SocketAddr, query: &str, token: Option<&str>) -> Got {
    let mut request = client().delete(format!("http://{admin}/cache?{query}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    send(request)
}

fn purged(got: &Got) -> u64 {
    assert_eq!(got.status, 200, "{}", got.body);
    let doc: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    doc["purged"]
        .as_u64()
        .unwrap_or_else(|| panic!("no purged count: {}", got.body))
}

#[test]
fn purge_by_path_and_prefix_needs_the_write_token() {
    let origin = Origin::start(|seen, n| {
        Reply::ok(&format!(
            "{} {} v{n}",
            seen.target,
            seen.header("accept-encoding").unwrap_or("-")
        ))
        .header("cache-control", "max-age=60")
        .header("vary", "Accept-Encoding")
    });
    let admin = closed_port();
    let gw = Gateway::start_with(
        "",
        &format!(
            "{}{}{}{}",
            admin_section(
                admin,
                "token_env = \"PYLON_TEST_READ_TOKEN\"\nwrite_token_env = \"PYLON_TEST_WRITE_TOKEN\""
            ),
            cached_route("/c", origin.addr, "", ""),
            cached_route("/d", origin.addr, "", "methods = [\"GET\"]"),
            cached_route("/cx", origin.addr, "", "")
        ),
        "combined",
        &[
            ("PYLON_TEST_READ_TOKEN", READ_TOKEN),
            ("PYLON_TEST_WRITE_TOKEN", WRITE_TOKEN),
        ],
    );
    let gzip = [("accept-encoding", "gzip")];
    let br = [("accept-encoding", "br")];
    let fill = |path: &str, fields: &[(&str, &str)]| {
        get_with(&gw, path, fields);
        let again = get_with(&gw, path, fields);
        assert!(is_hit(&again), "{path}: {}", again.cache_status());
    };
    fill("/c/x", &gzip);
    fill("/c/x", &br);
    fill("/c/y", &gzip);
    fill("/d/z", &gzip);
    fill("/cx/w", &gzip);

    for token in [None, Some(READ_TOKEN), Some("wrong-token-0123456789abcdef")] {
        let refused = purge(admin, "path=/c/x", token);
        assert_eq!(refused.status, 401, "token {token:?}: {}", refused.body);
    }
    // PURGE on the data port is refused on a cached route, whether the route takes every
    // method (/c) or GET alone (/d): purges go through the admin API; it purges nothing
    for path in ["/c/y", "/d/z"] {
        let refused = send(
            client()
                .request(reqwest::Method::from_bytes(b"PURGE").unwrap(), gw.url(path))
                .header("accept-encoding", "gzip"),
        );
        assert_eq!(refused.status, 405, "PURGE {path}: {}", refused.body);
    }
    assert!(
        origin.seen().iter().all(|s| s.method == "GET"),
        "no PURGE reached the upstream"
    );
    for (path, fields) in [("/c/x", &gzip), ("/c/y", &gzip), ("/d/z", &gzip)] {
        let got = get_with(&gw, path, fields);
        assert!(
            is_hit(&got),
            "nothing purged yet: {path}: {}",
            got.cache_status()
        );
    }

    let by_path = purged(&purge(admin, "path=/c/x", Some(WRITE_TOKEN)));
    assert!(
        (1..=2).contains(&by_path),
        "one key, two variants: {by_path}"
    );
    for fields in [&gzip, &br] {
        let got = get_with(&gw, "/c/x", fields);
        assert_eq!(
            got.cache_status(),
            "pylon; fwd=miss; stored",
            "every variant purged: {fields:?}"
        );
    }
    assert!(is_hit(&get_with(&gw, "/c/y", &gzip)), "another path stays");

    // now /c holds /c/x twice (two variants) and /c/y: counted as the path purge counted
    let by_prefix = purged(&purge(admin, "prefix=/c", Some(WRITE_TOKEN)));
    assert_eq!(by_prefix, if by_path == 2 { 3 } else { 2 });
    for (path, fields) in [("/c/x", &gzip), ("/c/y", &gzip)] {
        assert_eq!(
            get_with(&gw, path, fields).cache_status(),
            "pylon; fwd=miss; stored",
            "{path} purged by prefix"
        );
    }
    for path in ["/d/z", "/cx/w"] {
        let other = get_with(&gw, path, &gzip);
        assert!(is_hit(&other), "{path} stays: {}", other.cache_status());
    }
}

#[test]
fn purge_is_405_without_write_token_env() {
    let origin = Origin::fixed(Reply::ok("kept").header("cache-control", "max-age=60"));
    let admin = closed_port();
    let gw = Gateway::start(
        "",
        &format!(
            "{}{}",
            admin_section(admin, ""),
            cached_route("/c", origin.addr, "", "")
        ),
    );
    get(&gw, "/c/x");
    let refused = purge(admin, "path=/c/x", Some(WRITE_TOKEN));
    assert_eq!(refused.status, 405, "{}", refused.body);
    assert!(is_hit(&get(&gw, "/c/x")));
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

#[test]
fn the_store_stays_within_its_memory_budget() {
    // 400 objects of 100 KiB (40 MiB) offered to a 4 MiB store: ten times the budget. The
    // eviction is pingora-cache's sharded LRU (the least recent of the longer of two
    // random shards leaves), so what stays is roughly the most recent.
    const OBJECT: usize = 100 * 1024;
    const BUDGET: usize = 4 << 20;
    let origin = Origin::start(|seen, _| {
        let fill = b'a' + (seen.target.len() % 26) as u8;
        Reply {
            body: vec![fill; OBJECT],
            ..Reply::ok("")
        }
        .header("cache-control", "max-age=60")
    });
    let admin = closed_port();
    let gw = Gateway::start(
        "",
        &format!(
            "[cache]\nmemory = \"4m\"\n{}{}",
            admin_section(admin, ""),
            cached_route("/c", origin.addr, "", "")
        ),
    );
    for i in 0..400 {
        let got = get(&gw, &format!("/c/object-{i}"));
        assert_eq!(got.status, 200);
        assert_eq!(got.body.len(), OBJECT);
    }
    let text = metrics_text(admin);
    let stored = series(&text, "pylon_cache_stored_bytes", &[]).expect("stored bytes");
    assert!(
        stored > (BUDGET / 2) as f64 && stored <= (BUDGET + 64 * 1024) as f64,
        "4 MiB budget, {stored} bytes stored:\n{text}"
    );
    let evictions = series(&text, "pylon_cache_evictions_total", &[]).expect("evictions");
    assert!(
        evictions >= 300.0,
        "40 MiB offered to 4 MiB: {evictions} evicted\n{text}"
    );
    // of the last ten, nearly all are still there; of the first ten, none
    let kept = |range: std::ops::Range<usize>| {
        range
            .filter(|i| is_hit(&get(&gw, &format!("/c/object-{i}"))))
            .count()
    };
    let recent = kept(390..400);
    assert!(
        recent >= 8,
        "only {recent} of the last 10 objects were kept"
    );
    assert_eq!(kept(0..10), 0, "the oldest objects were evicted");
}

#[test]
fn an_object_over_max_object_is_served_whole_but_not_stored() {
    let origin = Origin::start(|seen, _| {
        let size = if seen.target == "/big" {
            20 * 1024
        } else {
            5 * 1024
        };
        Reply {
            body: vec![b'z'; size],
            ..Reply::ok("")
        }
        .header("cache-control", "max-age=60")
    });
    let gw = Gateway::start(
        "",
        &cached_route("/c", origin.addr, "max_object = \"10k\"", ""),
    );
    for i in 1..=2 {
        let big = get(&gw, "/c/big");
        assert_eq!(big.status, 200);
        assert_eq!(big.body.len(), 20 * 1024, "served whole");
        assert_eq!(big.cache_status(), "pylon; fwd=miss", "request {i}");
        assert_eq!(origin.hits_on("/big"), i, "20 KiB over max_object 10k");
    }
    get(&gw, "/c/small");
    let small = get(&gw, "/c/small");
    assert!(is_hit(&small), "5 KiB is stored: {}", small.cache_status());
    assert_eq!(small.body.len(), 5 * 1024);

    // without a Content-Length the size shows only as the body streams through
    let mut chunked = b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
    for _ in 0..4 {
        chunked.extend_from_slice(format!("{:x}\r\n", 5 * 1024).as_bytes());
        chunked.extend_from_slice(&[b'q'; 5 * 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let streaming = BrokenUpstream::start(Misbehaviour::Fixed(chunked.leak()));
    let gw = Gateway::start(
        "",
        &cached_route("/s", streaming.addr, "max_object = \"10k\"", ""),
    );
    for i in 1..=2 {
        let big = get(&gw, "/s/big");
        assert_eq!(big.status, 200, "{}", gw.stderr());
        assert_eq!(big.body.len(), 20 * 1024, "served whole, request {i}");
        assert!(!is_hit(&big), "request {i}: {}", big.cache_status());
    }
}

// ---------------------------------------------------------------------------------------------
// Policies, Cache-Status, metrics
// ---------------------------------------------------------------------------------------------

#[test]
fn policies_run_before_the_cache() {
    let origin =
        Origin::fixed(Reply::ok("the cached secret").header("cache-control", "max-age=60"));
    let key = "key-of-acme";
    let gw = Gateway::start(
        "",
        &format!(
            "[auth.partners]\ntype = \"api_key\"\nheader = \"X-Api-Key\"\nkeys = {{ acme = \"sha256:{}\" }}\n{}{}{}",
            api_key_hash(key),
            cached_route("/k", origin.addr, "", "auth = \"partners\""),
            cached_route("/r", origin.addr, "", "rate_limit = { requests = 3, window = \"1m\" }"),
            cached_route("/m", origin.addr, "", "methods = [\"GET\"]"),
        ),
    );
    // auth: filled with the key, refused without it or with a wrong one
    for _ in 0..2 {
        assert_eq!(
            get_with(&gw, "/k/x", &[("x-api-key", key)]).body,
            "the cached secret"
        );
    }
    for fields in [&[][..], &[("x-api-key", "wrong")][..]] {
        let refused = get_with(&gw, "/k/x", fields);
        assert_eq!(
            refused.status,
            401,
            "{fields:?}: {}",
            refused.cache_status()
        );
        assert!(!refused.body.contains("secret"), "{}", refused.body);
        assert!(!is_hit(&refused), "{}", refused.cache_status());
    }
    // rate limit: a hit counts like any request
    for i in 1..=3 {
        let got = get(&gw, "/r/x");
        assert_eq!(got.status, 200, "request {i}");
    }
    let limited = get(&gw, "/r/x");
    assert_eq!(limited.status, 429, "{}", limited.cache_status());
    assert!(!limited.body.contains("secret"), "{}", limited.body);
    // methods: the route takes GET (and HEAD); DELETE is 405 whatever is stored
    assert_eq!(get(&gw, "/m/x").body, "the cached secret");
    assert!(is_hit(&get(&gw, "/m/x")));
    let refused = send(client().delete(gw.url("/m/x")));
    assert_eq!(refused.status, 405);
    assert!(!refused.body.contains("secret"), "{}", refused.body);
    assert!(!is_hit(&refused), "{}", refused.cache_status());
    assert_eq!(origin.hits(), 3, "one fill per route");
}

#[test]
fn cache_status_names_each_path() {
    let origin = Origin::start(|seen, n| {
        Reply::ok(&format!("{} {} v{n}", seen.method, seen.target)).header(
            "cache-control",
            if seen.target == "/nostore" {
                "no-store"
            } else {
                "max-age=1"
            },
        )
    });
    let gw = Gateway::start(
        "",
        &format!(
            "{}{}",
            route("/plain", origin.addr, ""),
            cached_route("/c", origin.addr, "", "")
        ),
    );
    let plain = get(&gw, "/plain/other");
    assert_eq!(plain.header("cache-status"), None, "a route without cache");

    let post = send(client().post(gw.url("/c/x")).body("data"));
    assert_eq!(post.body, "POST /x v1");
    assert_eq!(post.cache_status(), "pylon; fwd=method");

    let miss = get(&gw, "/c/x");
    assert_eq!(miss.body, "GET /x v2");
    assert_eq!(miss.cache_status(), "pylon; fwd=miss; stored");
    let hit = get(&gw, "/c/x");
    assert_eq!(hit.body, "GET /x v2");
    assert!(
        hit.cache_status().starts_with("pylon; hit; ttl="),
        "{}",
        hit.cache_status()
    );
    ttl(hit.cache_status());
    assert!(hit.header("age").is_some());

    let not_stored = get(&gw, "/c/nostore");
    assert_eq!(not_stored.cache_status(), "pylon; fwd=miss");

    sleep_ms(1500);
    let refetched = get(&gw, "/c/x");
    assert_eq!(refetched.body, "GET /x v3");
    assert_eq!(
        refetched.cache_status(),
        "pylon; fwd=stale; fwd-status=200; stored"
    );
}

#[test]
fn metrics_count_each_result() {
    let origin = Origin::start(|seen, n| {
        let body = format!("{} v{n}", seen.target);
        match seen.target.as_str() {
            "/a" => Reply::ok(&body).header("cache-control", "max-age=60"),
            "/r" if seen.header("if-none-match") == Some("\"m1\"") => {
                not_modified(&[("etag", "\"m1\""), ("cache-control", "max-age=1")])
            }
            "/r" => Reply::ok(&body)
                .header("etag", "\"m1\"")
                .header("cache-control", "max-age=1"),
            _ => Reply::ok(&body).header("cache-control", "max-age=1"),
        }
    });
    let admin = closed_port();
    let gw = Gateway::start(
        "",
        &format!(
            "{}{}{}",
            admin_section(admin, ""),
            cached_route("/c", origin.addr, "", ""),
            cached_route("/s", origin.addr, "stale_while_revalidate = \"30s\"", "")
        ),
    );
    for _ in 0..3 {
        get(&gw, "/c/a");
    }
    get(&gw, "/c/r");
    get(&gw, "/s/w");
    sleep_ms(1500);
    assert_eq!(
        get(&gw, "/c/r").cache_status(),
        "pylon; fwd=stale; fwd-status=304"
    );
    assert_eq!(
        get(&gw, "/s/w").cache_status(),
        "pylon; hit; detail=stale-while-revalidate"
    );
    assert_eq!(
        send(client().post(gw.url("/c/a"))).cache_status(),
        "pylon; fwd=method"
    );
    wait_for("the background refresh", Duration::from_secs(5), || {
        origin.hits_on("/w") >= 2
    });
    sleep_ms(200);

    let text = metrics_text(admin);
    for (route, result, want) in [
        ("/c", "miss", 2.0),
        ("/c", "hit", 2.0),
        ("/c", "revalidated", 1.0),
        ("/c", "bypass", 1.0),
        ("/s", "miss", 1.0),
        ("/s", "stale", 1.0),
    ] {
        let got = series(
            &text,
            "pylon_cache_requests_total",
            &[
                &format!("route=\"{route}\""),
                &format!("result=\"{result}\""),
            ],
        );
        assert_eq!(got, Some(want), "{route} {result}:\n{text}");
    }
    let stored = series(&text, "pylon_cache_stored_bytes", &[]);
    assert!(stored.is_some_and(|b| b > 0.0), "{text}");
    assert!(
        series(&text, "pylon_cache_evictions_total", &[]).is_some(),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// REDbot
// ---------------------------------------------------------------------------------------------

fn here() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's redbot, or a panic that says how to make it.
fn redbot() -> PathBuf {
    let bin = match std::env::var_os("PYLON_REDBOT") {
        Some(p) => PathBuf::from(p),
        None => here().join("target/redbot-venv/bin/redbot"),
    };
    assert!(
        bin.exists(),
        "{} does not exist: this test needs REDbot; run `make test` (or \
         `bash scripts/ensure-redbot.sh`), or set PYLON_REDBOT",
        bin.display()
    );
    bin
}

/// Every note of a HAR entry, subnotes too, as (level, id, summary).
fn notes(messages: &serde_json::Value, out: &mut Vec<(String, String, String)>) {
    for note in messages.as_array().into_iter().flatten() {
        out.push((
            note["level"].as_str().unwrap_or("").to_ascii_lowercase(),
            note["note_id"].as_str().unwrap_or("").to_string(),
            note["summary"].as_str().unwrap_or("").to_string(),
        ));
        notes(&note["subnotes"], out);
    }
}

#[test]
fn redbot_finds_no_error_in_the_cached_routes_headers() {
    let bin = redbot();
    let last_modified = http_date(SystemTime::now() - Duration::from_secs(86400));
    let lm = last_modified.clone();
    let origin = Origin::start(move |seen, _| {
        let fields: [(&str, &str); 5] = [
            ("cache-control", "max-age=60"),
            ("etag", "\"page1\""),
            ("last-modified", &lm),
            ("content-type", "text/html; charset=utf-8"),
            ("vary", "Accept-Encoding"),
        ];
        let unchanged = seen.header("if-none-match") == Some("\"page1\"")
            || seen.header("if-modified-since") == Some(lm.as_str());
        if unchanged {
            not_modified(&fields)
        } else {
            let mut reply = Reply::ok(
                "<!doctype html>\n<html lang=\"en\"><head><title>page</title></head><body><p>A cached page.</p></body></html>\n",
            );
            reply.headers.clear();
            with_fields(reply, &fields)
        }
    });
    let gw = Gateway::start("", &cached_route("/c", origin.addr, "", ""));
    let url = gw.url("/c/page");
    let out = std::process::Command::new(&bin)
        .args(["-o", "har", &url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "redbot failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let har: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("redbot's HAR does not parse ({e}):\n{stdout}"));
    assert!(
        har["log"]["_red_error"].is_null(),
        "redbot could not check {url}: {}",
        har["log"]["_red_error"]
    );
    let entries = har["log"]["entries"].as_array().unwrap();
    assert!(!entries.is_empty(), "{stdout}");
    assert_eq!(entries[0]["response"]["status"], 200, "{stdout}");
    let mut all = Vec::new();
    for entry in entries {
        notes(&entry["_red_messages"], &mut all);
    }
    assert!(!all.is_empty(), "redbot said nothing: {stdout}");
    let findings: Vec<String> = all
        .iter()
        .filter(|(level, _, _)| level == "bad" || level == "warn")
        .map(|(level, id, summary)| format!("{level} {id}: {summary}"))
        .collect();
    assert!(
        !all.iter().any(|(level, _, _)| level == "bad"),
        "REDbot found errors in {url}'s headers:\n{}\n{}",
        findings.join("\n"),
        serde_json::to_string_pretty(&entries[0]["response"]["headers"]).unwrap()
    );
    if !findings.is_empty() {
        eprintln!("REDbot's warnings for {url}:\n{}", findings.join("\n"));
    }
}
