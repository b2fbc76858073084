//! A fleet of gateways sharing one policy document through a real redis-server, and the
//! writable admin API with and without a store. Every gateway is a real `pylon` process on
//! ephemeral loopback ports; the upstream is a real HTTP server.
//!
//! - `a_put_on_one_node_is_served_by_all_three_within_a_second`: three nodes start with an
//!   empty store (no routes: 404); a PUT on one is served on all three within 1 s; a bad
//!   document gets 400 with every error's line and key and no node changes; two PUTs racing
//!   with the same If-Match: one 200, one 412; /api/fleet agrees on every node and
//!   /metrics says `pylon_fleet_nodes{state="current"} 3`.
//! - `the_fleet_view_shows_a_node_that_cannot_apply_and_one_that_is_gone`: a document whose
//!   JWT secret is in an environment variable one node lacks applies on two nodes and fails
//!   on the third, which keeps serving its old document and is shown "failed" with the
//!   error; a node that stops is shown "gone".
//! - `with_the_store_away_traffic_flows_writes_wait_and_a_restarted_node_uses_its_cache`:
//!   Redis stops under load: 0 failed requests, PUT answers 503, a node restarted meanwhile
//!   serves from its cache file (and says so); once Redis is back, a PUT reaches all three.
//! - `without_a_store_a_put_rewrites_the_file_and_keeps_the_node_sections`: the file's own
//!   sections stay byte for byte, the old file is kept as `.prev`, a restart serves what was
//!   applied; and every refusal: no If-Match 428, stale 412, no token or the read token 401,
//!   bad document 400 (validate too), too large 413, same document "unchanged", off
//!   loopback 403, writes off 405.
//! - `on_a_redis_cluster_the_fleet_follows_one_document`: `store = { cluster = [...] }`
//!   (three masters): a PUT on one node is served by the other, and the view agrees.
//! - `through_a_sentinel_failover_the_fleet_keeps_taking_writes`: `store = { sentinels =
//!   [...] }`: a write before and one after `SENTINEL FAILOVER` both reach both nodes.
//! - `a_purge_on_one_node_empties_every_nodes_cache`: `DELETE /cache?prefix=` on one node
//!   of three reaches the others through the store.
//! - `a_fleet_node_refuses_policy_sections_in_its_own_file`: `pylon -t` names the section.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::redis::*;
use common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const READ: &str = "read-token-0123456789";
const WRITE: &str = "write-token-0123456789";

fn envs() -> Vec<(&'static str, &'static str)> {
    vec![("FLEET_READ", READ), ("FLEET_WRITE", WRITE)]
}

/// A node's own sections after `[server]` and `[access_log]`: its admin listener with both
/// tokens, and its fleet.
fn node_rest(admin: SocketAddr, control: &str) -> String {
    format!(
        "[admin]\nlisten = \"{admin}\"\ntoken_env = \"FLEET_READ\"\nwrite_token_env = \"FLEET_WRITE\"\n\n{control}"
    )
}

fn control(redis: &str, node: &str, cache: Option<&std::path::Path>) -> String {
    let cache = cache.map_or(String::new(), |p| {
        format!("cache_file = \"{}\"\n", p.display())
    });
    format!("[control]\nstore = \"{redis}\"\nfleet = \"test\"\nnode = \"{node}\"\n{cache}")
}

struct Node {
    gw: Gateway,
    admin: SocketAddr,
}

fn start_node(
    redis: &str,
    name: &str,
    cache: Option<&std::path::Path>,
    extra_env: &[(&str, &str)],
) -> Node {
    let admin = closed_port();
    let mut env = envs();
    env.extend_from_slice(extra_env);
    let gw = Gateway::start_with(
        "",
        &node_rest(admin, &control(redis, name, cache)),
        "combined",
        &env,
    );
    Node { gw, admin }
}

/// Nodes "a", "b" and "c" of one fleet on `redis`, without cache files.
fn three_nodes(redis: &Redis) -> Vec<Node> {
    ["a", "b", "c"]
        .iter()
        .map(|n| start_node(&redis.url(), n, None, &[]))
        .collect()
}

fn route(prefix: &str, up: SocketAddr) -> String {
    format!("[[routes]]\nprefix = \"{prefix}\"\nupstreams = [\"{up}\"]\n")
}

struct Reply {
    status: u16,
    etag: Option<String>,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn send(
    method: reqwest::Method,
    admin: SocketAddr,
    path: &str,
    token: Option<&str>,
    if_match: Option<&str>,
    body: Option<String>,
) -> Reply {
    let mut req = client().request(method, format!("http://{admin}{path}"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(tag) = if_match {
        req = req.header("if-match", tag);
    }
    if let Some(body) = body {
        req = req.body(body);
    }
    let reply = req.send().unwrap();
    Reply {
        status: reply.status().as_u16(),
        etag: reply
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_string()),
        body: reply.text().unwrap(),
    }
}

fn get_config(admin: SocketAddr) -> Reply {
    send(
        reqwest::Method::GET,
        admin,
        "/config",
        Some(READ),
        None,
        None,
    )
}

fn put(admin: SocketAddr, if_match: &str, body: &str) -> Reply {
    send(
        reqwest::Method::PUT,
        admin,
        "/config",
        Some(WRITE),
        Some(if_match),
        Some(body.to_string()),
    )
}

fn fleet_view(admin: SocketAddr) -> serde_json::Value {
    let r = send(
        reqwest::Method::GET,
        admin,
        "/api/fleet",
        Some(READ),
        None,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn status_of(gw: &Gateway, path: &str) -> u16 {
    client()
        .get(gw.url(path))
        .send()
        .map_or(0, |r| r.status().as_u16())
}

fn states(view: &serde_json::Value) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    all.sort();
    all
}

#[test]
fn a_put_on_one_node_is_served_by_all_three_within_a_second() {
    let redis = Redis::start();
    let up = Upstream::fixed(common::Reply::ok("fine"));
    let nodes = three_nodes(&redis);
    for n in &nodes {
        assert_eq!(
            status_of(&n.gw, "/users/1"),
            404,
            "no document yet: no route"
        );
    }
    let first = get_config(nodes[0].admin);
    assert_eq!(first.status, 200);
    assert_eq!(first.body, "");
    let etag = first.etag.clone().expect("an ETag");

    // one PUT, every node serves it within a second
    let doc = format!("# the fleet's routes\n{}", route("/users", up.addr));
    let started = Instant::now();
    let applied = put(nodes[1].admin, &etag, &doc);
    assert_eq!(applied.status, 200, "{}", applied.body);
    assert_eq!(applied.json()["result"], "applied");
    let new_etag = applied.etag.clone().unwrap();
    let mut serving = [false; 3];
    while serving.iter().any(|s| !s) && started.elapsed() < Duration::from_secs(5) {
        for (i, n) in nodes.iter().enumerate() {
            serving[i] = serving[i] || status_of(&n.gw, "/users/1") == 200;
        }
    }
    let took = started.elapsed();
    assert!(
        serving.iter().all(|s| *s),
        "not every node serves the route: {serving:?}"
    );
    assert!(
        took <= Duration::from_secs(1),
        "the last node served it after {took:?}"
    );
    for n in &nodes {
        let r = get_config(n.admin);
        assert_eq!(
            (r.body.as_str(), r.etag.as_deref()),
            (doc.as_str(), Some(new_etag.as_str()))
        );
    }

    // a bad document: 400 with each error's line and key, and no node changes
    let bad = format!(
        "{}[[routes]]\nprefix = \"/orders\"\nupstreams = [\"ftp://x\"]\n[[routes]]\nprefix = \"/x\"\nupstreams = [\"127.0.0.1:1\"]\ntimeouts = {{ read = \"15x\" }}\n[cors]\nmax_agee = 1\n",
        route("/users", up.addr)
    );
    let refused = put(nodes[2].admin, &new_etag, &bad);
    assert_eq!(refused.status, 400, "{}", refused.body);
    let errors = refused.json()["errors"].as_array().unwrap().clone();
    let found: Vec<(i64, String)> = errors
        .iter()
        .map(|e| {
            (
                e["line"].as_i64().unwrap(),
                e["key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![
            (6, "routes[1].upstreams[0]".to_string()),
            (10, "routes[2].timeouts.read".to_string()),
            (12, "cors.max_agee".to_string())
        ],
        "{}",
        refused.body
    );
    std::thread::sleep(Duration::from_millis(300));
    for n in &nodes {
        assert_eq!(get_config(n.admin).etag.as_deref(), Some(new_etag.as_str()));
        assert_eq!(status_of(&n.gw, "/orders"), 404);
    }

    // two writers with the same If-Match: one wins, the other is told it is stale
    let racers: Vec<_> = [("/left", 0), ("/right", 2)]
        .into_iter()
        .map(|(prefix, i)| {
            let admin = nodes[i].admin;
            let body = format!("{}{}", route("/users", up.addr), route(prefix, up.addr));
            let tag = new_etag.clone();
            std::thread::spawn(move || put(admin, &tag, &body))
        })
        .collect();
    let mut codes: Vec<u16> = racers
        .into_iter()
        .map(|t| t.join().unwrap().status)
        .collect();
    codes.sort();
    assert_eq!(codes, vec![200, 412]);

    // the fleet agrees, on every node, and says so in /metrics
    wait_for(
        "every node to see the fleet agree",
        Duration::from_secs(10),
        || {
            nodes.iter().all(|n| {
                let view = fleet_view(n.admin);
                view["agree"] == true
                    && states(&view)
                        == vec![
                            ("a".to_string(), "current".to_string()),
                            ("b".to_string(), "current".to_string()),
                            ("c".to_string(), "current".to_string()),
                        ]
            })
        },
    );
    let winner = get_config(nodes[0].admin);
    let view = fleet_view(nodes[0].admin);
    assert_eq!(
        format!("\"{}\"", view["document"]["hash"].as_str().unwrap()),
        winner.etag.unwrap()
    );
    assert_eq!(view["document"]["version"], 2);
    let metrics = client()
        .get(format!("http://{}/metrics", nodes[1].admin))
        .bearer_auth(READ)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("pylon_fleet_nodes{state=\"current\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pylon_fleet_nodes{state=\"failed\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "pylon_config_info{{hash=\"{}\"}} 1",
        view["document"]["hash"].as_str().unwrap()
    )));
    // a SIGHUP reloads the node's own file and keeps the fleet's document
    let winner_etag = get_config(nodes[0].admin).etag;
    nodes[0].gw.signal("HUP");
    wait_for("the reload", Duration::from_secs(5), || {
        nodes[0].gw.stderr().contains("reload: ")
    });
    assert_eq!(get_config(nodes[0].admin).etag, winner_etag);
    assert_eq!(status_of(&nodes[0].gw, "/users/1"), 200);
    assert!(!nodes[0].gw.stderr().contains("[control] changed"));
    // [control] is read at start: a reload that renames the node says it needs a restart
    nodes[0].gw.write_config(&node_rest(
        nodes[0].admin,
        &control(&redis.url(), "a-renamed", None),
    ));
    nodes[0].gw.signal("HUP");
    wait_for("the reload's warning", Duration::from_secs(5), || {
        nodes[0].gw.stderr().contains("[control] changed")
    });
    assert_eq!(get_config(nodes[0].admin).etag, winner_etag);
    assert_eq!(status_of(&nodes[0].gw, "/users/1"), 200);
    // and each write is in the log of the node that took it
    let log = nodes[1].gw.stderr();
    assert!(
        log.contains("admin: PUT /config from 127.0.0.1:") && log.contains(": 200 "),
        "{log}"
    );
}

#[test]
fn the_fleet_view_shows_a_node_that_cannot_apply_and_one_that_is_gone() {
    let redis = Redis::start();
    let up = Upstream::fixed(common::Reply::ok("fine"));
    let secret = [("FLEET_JWT", "a-secret-of-the-fleet-0123456789")];
    let a = start_node(&redis.url(), "a", None, &secret);
    let b = start_node(&redis.url(), "b", None, &secret);
    let c = start_node(&redis.url(), "c", None, &[]);
    let open = route("/open", up.addr);
    let r = put(a.admin, "*", &open);
    assert_eq!(r.status, 200, "{}", r.body);
    wait_for("c to serve /open", Duration::from_secs(5), || {
        status_of(&c.gw, "/open") == 200
    });

    // needs FLEET_JWT, which c does not have
    let guarded = format!(
        "{open}[auth.users]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"FLEET_JWT\"\n{}auth = \"users\"\n",
        route("/private", up.addr)
    );
    let r = put(a.admin, "*", &guarded);
    assert_eq!(r.status, 200, "{}", r.body);
    wait_for(
        "the fleet view to show c failed",
        Duration::from_secs(10),
        || {
            let view = fleet_view(b.admin);
            states(&view)
                == vec![
                    ("a".to_string(), "current".to_string()),
                    ("b".to_string(), "current".to_string()),
                    ("c".to_string(), "failed".to_string()),
                ]
                && view["agree"] == false
        },
    );
    let view = fleet_view(c.admin);
    let mine = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "c")
        .unwrap()
        .clone();
    let error = mine["last_error"].as_str().unwrap();
    assert!(error.contains("FLEET_JWT"), "{error}");
    assert_eq!(mine["self"], true);
    // c keeps what it had: /open, and no /private
    assert_eq!(status_of(&c.gw, "/open"), 200);
    assert_eq!(status_of(&c.gw, "/private"), 404);
    assert_eq!(status_of(&a.gw, "/private"), 401);
    assert!(c
        .gw
        .stderr()
        .contains("does not apply on node c, which keeps its config"));

    // b stops: once its state expires it is gone
    drop(b);
    wait_for("b to be shown gone", Duration::from_secs(15), || {
        states(&fleet_view(a.admin)).contains(&("b".to_string(), "gone".to_string()))
    });
    let metrics = client()
        .get(format!("http://{}/metrics", a.admin))
        .bearer_auth(READ)
        .send()
        .unwrap()
        .text()
        .unwrap();
    for line in [
        "pylon_fleet_nodes{state=\"current\"} 1",
        "pylon_fleet_nodes{state=\"failed\"} 1",
        "pylon_fleet_nodes{state=\"gone\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[test]
fn with_the_store_away_traffic_flows_writes_wait_and_a_restarted_node_uses_its_cache() {
    let redis = Redis::start();
    let url = redis.url();
    let up = Upstream::fixed(common::Reply::ok("fine"));
    let caches = tempfile::tempdir().unwrap();
    let cache = |n: &str| caches.path().join(format!("{n}.toml"));
    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| start_node(&url, n, Some(&cache(n)), &[]))
        .collect();
    let doc = route("/users", up.addr);
    assert_eq!(put(nodes[0].admin, "*", &doc).status, 200);
    wait_for("every node to serve /users", Duration::from_secs(5), || {
        nodes.iter().all(|n| status_of(&n.gw, "/users") == 200)
    });
    for n in ["a", "b", "c"] {
        wait_for("the cache file", Duration::from_secs(5), || {
            std::fs::read_to_string(cache(n)).is_ok_and(|t| t == doc)
        });
    }

    // steady traffic on a and b while Redis goes away
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = nodes[..2]
        .iter()
        .map(|n| {
            let url = n.gw.url("/users/1");
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            std::thread::spawn(move || {
                let c = client();
                while !stop.load(Ordering::Relaxed) {
                    let ok = c.get(&url).send().is_ok_and(|r| r.status() == 200);
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let stopped = redis.stop_saved();

    let etag = get_config(nodes[0].admin).etag.unwrap();
    let refused = put(
        nodes[0].admin,
        &etag,
        &format!("{doc}{}", route("/more", up.addr)),
    );
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.json()["error"]
        .as_str()
        .unwrap()
        .contains("unreachable"));
    assert_eq!(status_of(&nodes[0].gw, "/more"), 404, "nothing applied");

    // c restarts while the store is away: it serves from its cache file
    nodes[2].gw.restart();
    assert_eq!(status_of(&nodes[2].gw, "/users/1"), 200);
    let log = nodes[2].gw.all_stderr();
    assert!(log.contains("starting from the cache file"), "{log}");
    assert_eq!(fleet_view(nodes[2].admin)["store_state"], "unreachable");

    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(sent > 100, "only {sent} requests were sent");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed while the store was away"
    );

    // the store returns: every node converges on the next write
    let _redis = stopped.start_again();
    wait_for(
        "the store to be connected again",
        Duration::from_secs(15),
        || {
            nodes
                .iter()
                .all(|n| fleet_view(n.admin)["store_state"] == "connected")
        },
    );
    let more = format!("{doc}{}", route("/more", up.addr));
    let r = put(nodes[1].admin, &etag, &more);
    assert_eq!(r.status, 200, "{}", r.body);
    wait_for("every node to serve /more", Duration::from_secs(5), || {
        nodes.iter().all(|n| status_of(&n.gw, "/more") == 200)
    });
    wait_for("the fleet to agree", Duration::from_secs(10), || {
        fleet_view(nodes[2].admin)["agree"] == true
    });
    nodes.truncate(0);
}

#[test]
fn without_a_store_a_put_rewrites_the_file_and_keeps_the_node_sections() {
    let up = Upstream::fixed(common::Reply::ok("fine"));
    let admin = closed_port();
    let node = format!(
        "# this node's admin listener\n[admin]\nlisten = \"{admin}\"\ntoken_env = \"FLEET_READ\"\nwrite_token_env = \"FLEET_WRITE\"   # kept as written\n\n"
    );
    let policy = format!("[timeouts]\nread = \"5s\"\n\n{}", route("/a", up.addr));
    let mut gw = Gateway::start_with("", &format!("{node}{policy}"), "combined", &envs());
    let before = std::fs::read_to_string(&gw.config_path).unwrap();
    // a blank line before a header goes with that header's section
    let node_part = before[..before.find("\n\n[timeouts]").unwrap() + 1].to_string();
    assert!(node_part.contains("# kept as written"));

    let got = get_config(admin);
    assert_eq!(got.status, 200);
    assert!(
        got.body.starts_with("\n[timeouts]\nread = \"5s\"\n"),
        "{}",
        got.body
    );
    assert!(!got.body.contains("[server]") && !got.body.contains("[admin]"));
    let etag = got.etag.unwrap();

    // the refusals, each with its own status
    let new = format!(
        "# new routes\n{}{}",
        route("/a", up.addr),
        route("/b", up.addr)
    );
    let with = |token: Option<&str>, tag: Option<&str>, body: &str| {
        send(
            reqwest::Method::PUT,
            admin,
            "/config",
            token,
            tag,
            Some(body.to_string()),
        )
    };
    assert_eq!(with(Some(WRITE), None, &new).status, 428);
    let stale = with(Some(WRITE), Some("\"0000000000000000\""), &new);
    assert_eq!(stale.status, 412);
    assert_eq!(stale.json()["current"], etag.trim_matches('"'));
    assert_eq!(with(None, Some(&etag), &new).status, 401);
    assert_eq!(
        with(Some(READ), Some(&etag), &new).status,
        401,
        "the read token does not write"
    );
    let bad = with(Some(WRITE), Some(&etag), "[[routes]]\nprefix = \"nope\"\n");
    assert_eq!(bad.status, 400);
    let e = &bad.json()["errors"][0];
    assert_eq!(
        (e["line"].as_i64(), e["key"].as_str()),
        (Some(2), Some("routes[0].prefix"))
    );
    assert!(
        e["text"]
            .as_str()
            .unwrap()
            .starts_with("(sent document):2:"),
        "{e}"
    );
    let node_section = with(Some(WRITE), Some(&etag), "[server]\nh2c = true\n");
    assert_eq!(node_section.status, 400);
    assert!(
        node_section.body.contains("node's own section"),
        "{}",
        node_section.body
    );
    let empty = with(Some(WRITE), Some("*"), "");
    assert_eq!(empty.status, 400, "an empty body would remove every route");
    assert!(empty.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("empty"));
    assert_eq!(
        with(Some(WRITE), Some(""), &new).status,
        428,
        "an empty If-Match is none"
    );
    let huge = format!("# {}\n", "x".repeat(1 << 20));
    assert_eq!(with(Some(WRITE), Some(&etag), &huge).status, 413);
    let validate = |body: &str| {
        send(
            reqwest::Method::POST,
            admin,
            "/config/validate",
            Some(WRITE),
            None,
            Some(body.to_string()),
        )
    };
    let v = validate("[cors]\nmax_age = \"x\"\n");
    assert_eq!(v.status, 400);
    assert_eq!(v.json()["errors"][0]["key"], "cors.max_age");
    let v = validate(&format!("\u{feff}{new}"));
    assert_eq!(v.status, 200, "a byte order mark is dropped: {}", v.body);
    assert_eq!(
        send(
            reqwest::Method::GET,
            admin,
            "/config/validate",
            Some(WRITE),
            None,
            None
        )
        .status,
        405
    );
    assert_eq!(status_of(&gw, "/b"), 404, "validation applies nothing");
    assert_eq!(std::fs::read_to_string(&gw.config_path).unwrap(), before);
    let same = with(Some(WRITE), Some(&etag), &got.body);
    assert_eq!(
        (same.status, same.json()["result"].as_str()),
        (200, Some("unchanged"))
    );

    // the write
    let r = with(Some(WRITE), Some(&etag), &new);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(status_of(&gw, "/b"), 200);
    let after = std::fs::read_to_string(&gw.config_path).unwrap();
    assert_eq!(
        after,
        format!("{node_part}{new}"),
        "the node's sections byte for byte, then the document"
    );
    let mut prev = gw.config_path.as_os_str().to_owned();
    prev.push(".prev");
    assert_eq!(std::fs::read_to_string(&prev).unwrap(), before);
    assert_eq!(get_config(admin).body, new);
    let (code, _, err) = run_pylon_env(&["-t"], Some(&after), &envs());
    assert_eq!(code, 0, "pylon -t on the rewritten file: {err}");

    // a restart runs what was applied
    gw.restart();
    assert_eq!(status_of(&gw, "/b"), 200);
    let again = get_config(admin);
    assert_eq!((again.body.as_str(), again.etag), (new.as_str(), r.etag));
}

#[test]
fn writes_are_off_without_a_write_token_and_refused_off_loopback() {
    let up = Upstream::fixed(common::Reply::ok("fine"));
    let admin = closed_port();
    let _gw = Gateway::start_with(
        "",
        &format!("[admin]\nlisten = \"{admin}\"\n{}", route("/a", up.addr)),
        "combined",
        &[],
    );
    let r = send(
        reqwest::Method::PUT,
        admin,
        "/config",
        Some(WRITE),
        Some("*"),
        Some(String::new()),
    );
    assert_eq!(r.status, 405);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("write_token_env"));

    // on every address, with a write token: a client that is not on loopback is refused
    let port = closed_port().port();
    let _open = Gateway::start_with(
        "",
        &format!(
            "[admin]\nlisten = \"0.0.0.0:{port}\"\ntoken_env = \"FLEET_READ\"\nwrite_token_env = \"FLEET_WRITE\"\n{}",
            route("/a", up.addr)
        ),
        "combined",
        &envs(),
    );
    let outside = non_loopback_address().expect("a non-loopback address on this machine");
    let r = send(
        reqwest::Method::PUT,
        SocketAddr::new(outside, port),
        "/config",
        Some(WRITE),
        Some("*"),
        Some(route("/b", up.addr)),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("loopback"));
}

/// An address of this machine's that is not loopback (from the route to a public address;
/// no packet is sent).
fn non_loopback_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

fn quoted(urls: &[String]) -> String {
    let items: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!("[{}]", items.join(", "))
}

/// Two nodes on `store` (a TOML value): a PUT on the first reaches the second.
fn two_nodes_follow(store: &str) -> (Node, Node, Upstream) {
    let up = Upstream::fixed(common::Reply::ok("fine"));
    let start = |name: &str| {
        let admin = closed_port();
        let control = format!("[control]\nstore = {store}\nfleet = \"test\"\nnode = \"{name}\"\n");
        let gw = Gateway::start_with("", &node_rest(admin, &control), "combined", &envs());
        Node { gw, admin }
    };
    let (a, b) = (start("a"), start("b"));
    let r = put(a.admin, "*", &route("/first", up.addr));
    assert_eq!(r.status, 200, "{}", r.body);
    wait_for("b to serve /first", Duration::from_secs(5), || {
        status_of(&b.gw, "/first") == 200
    });
    (a, b, up)
}

#[test]
fn on_a_redis_cluster_the_fleet_follows_one_document() {
    let cluster = RedisCluster::start(3);
    let (a, b, _up) = two_nodes_follow(&format!("{{ cluster = {} }}", quoted(&cluster.seeds())));
    wait_for("the view to agree", Duration::from_secs(10), || {
        let view = fleet_view(b.admin);
        view["agree"] == true && states(&view).len() == 2
    });
    assert_eq!(get_config(a.admin).etag, get_config(b.admin).etag);
}

#[test]
fn through_a_sentinel_failover_the_fleet_keeps_taking_writes() {
    let master = Redis::start();
    let replica = Redis::replica_of(&master);
    let sentinel = Sentinel::start(&master, "pylon");
    sentinel.wait_for_replica(&replica);
    let store = format!(
        "{{ sentinels = {}, master = \"pylon\" }}",
        quoted(&[sentinel.url()])
    );
    let (a, b, up) = two_nodes_follow(&store);
    // the document must be on the replica before the failover, or the new master lacks it
    wait_for(
        "the replica to hold the document",
        Duration::from_secs(10),
        || {
            replica
                .query(&["HGET", "{pylon:fleet:test}:doc", "version"])
                .text()
                == "1"
        },
    );
    assert_eq!(sentinel.failover(), replica.port);
    let body = format!("{}{}", route("/first", up.addr), route("/second", up.addr));
    let mut last = (0, String::new());
    wait_for(
        "a write after the failover",
        Duration::from_secs(20),
        || {
            let tag = get_config(b.admin).etag.unwrap();
            let r = put(b.admin, &tag, &body);
            last = (r.status, r.body);
            last.0 == 200
        },
    );
    wait_for("a to serve /second", Duration::from_secs(5), || {
        status_of(&a.gw, "/second") == 200
    });
    assert_eq!(
        replica
            .query(&["HGET", "{pylon:fleet:test}:doc", "version"])
            .text(),
        "2",
        "the write went to the new master"
    );
}

#[test]
fn a_purge_on_one_node_empties_every_nodes_cache() {
    let redis = Redis::start();
    let up = Upstream::fixed(common::Reply::ok("fine"));
    let nodes = three_nodes(&redis);
    let doc = format!("{}cache = {{ ttl = \"1h\" }}\n", route("/c", up.addr));
    assert_eq!(put(nodes[0].admin, "*", &doc).status, 200);
    let cache_status = |n: &Node| {
        client()
            .get(n.gw.url("/c/page"))
            .send()
            .map(|r| {
                r.headers()
                    .get("cache-status")
                    .map_or(String::new(), |v| v.to_str().unwrap().to_string())
            })
            .unwrap_or_default()
    };
    wait_for(
        "every node to serve /c from its cache",
        Duration::from_secs(5),
        || nodes.iter().all(|n| cache_status(n).contains("hit")),
    );
    let purged = send(
        reqwest::Method::DELETE,
        nodes[1].admin,
        "/cache?prefix=/c",
        Some(WRITE),
        None,
        None,
    );
    assert_eq!(purged.status, 200, "{}", purged.body);
    assert_eq!(purged.json()["purged"], 1);
    assert_eq!(purged.json()["fleet"], true);
    // a node that purged answers the next request as a miss (and stores it again)
    let mut missed = [false; 3];
    wait_for("every node to have purged", Duration::from_secs(5), || {
        for (i, n) in nodes.iter().enumerate() {
            missed[i] = missed[i] || cache_status(n).contains("fwd=miss");
        }
        missed.iter().all(|m| *m)
    });
}

#[test]
fn a_fleet_node_refuses_policy_sections_in_its_own_file() {
    let (code, _out, err) = run_pylon(
        &["-t"],
        Some("[control]\nstore = \"redis://127.0.0.1:1\"\nfleet = \"f\"\n[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\n"),
    );
    assert_ne!(code, 0);
    assert!(err.contains(":4:") && err.contains("key `routes`"), "{err}");
    assert!(err.contains("part of the policy document"), "{err}");
    let (code, _out, err) = run_pylon(&["-t"], Some("[control]\nfleet = \"f\"\n"));
    assert_ne!(code, 0);
    assert!(
        err.contains("key `control.fleet`") && err.contains("store"),
        "{err}"
    );
}
