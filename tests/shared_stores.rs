//! The shared store in each shape it comes in, against real Redis deployments started from
//! Debian's packages (see `common/redis.rs`): gateways on ephemeral ports, clients told
//! apart by `X-Forwarded-For` from loopback (`trusted_proxies = ["127.0.0.1"]`), and
//! `rate_limit.store` in `/api/status` on each gateway's admin listener.
//!
//! - `an_idle_gateway_costs_redis_a_ping_a_second_after_5000_clients`: two gateways
//!   (`sync = "50ms"`) see 5,000 distinct clients; every client's count reaches Redis (at
//!   least 5,000 `pylon:rl:` keys), and once idle the two gateways together cost Redis at
//!   most 10 commands a second (`INFO commandstats`, where the commands a script runs count
//!   too): a sync pushes only changed counts and pulls only keys asked about since the last
//!   pull, so idleness costs a liveness PING, not a pull of every key.
//! - `on_a_redis_cluster_with_sync_0s_two_gateways_keep_one_budget_exactly`: with
//!   `store = { cluster = [...] }` (three masters) and `sync = "0s"`, one client spread over
//!   two gateways gets exactly its budget: 40 of 100 pass, 60 are refused.
//! - `on_a_redis_cluster_the_keys_of_many_clients_spread_over_every_master`: with
//!   `sync = "50ms"`, 300 clients all pass, their keys land on each of the three masters
//!   (the gateway follows the slot map instead of writing to one node, which would refuse
//!   with MOVED), and the store is "up".
//! - `through_a_sentinel_failover_requests_get_200_or_429_and_counts_follow_the_new_master`:
//!   with `store = { sentinels = [...], master = "pylon" }`, steady traffic through a
//!   `SENTINEL FAILOVER`: every request gets 200 or 429 (no 5xx, no connection error), the
//!   over-budget client is refused and the others are not, both gateways are "up" again
//!   afterwards, and keys of clients first seen after the failover land on the new master.
//! - `over_rediss_with_its_ca_file_the_store_is_up_and_counts_land`: with
//!   `store = { url = "rediss://...", ca = "ca.pem" }` the TLS store is "up" and the counts
//!   are in it (seen by `redis-cli --tls --cacert` too).
//! - `over_rediss_with_a_wrong_ca_the_gateway_serves_and_says_the_certificate_failed`: with
//!   an unrelated CA the gateway still answers 200, writes nothing to Redis, shows state
//!   "down" with a `last_error` that names the certificate, and says so in its log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::redis::*;
use common::*;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEYS: &str = "pylon:rl:*";

/// A gateway and its admin listener.
struct Member {
    gw: Gateway,
    admin: SocketAddr,
}

impl Member {
    /// `rate_limit.store` of `/api/status`.
    fn store(&self) -> serde_json::Value {
        let reply = client()
            .get(format!("http://{}/api/status", self.admin))
            .send()
            .unwrap();
        assert_eq!(reply.status(), 200, "/api/status");
        let doc: serde_json::Value = reply.json().unwrap();
        doc["rate_limit"]["store"].clone()
    }

    fn wait_for_state(&self, state: &str, timeout: Duration) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        wait_for(
            &format!("the store to be {state:?} on {}", self.gw.addr),
            timeout,
            || {
                last = self.store();
                last["state"] == state
            },
        );
        last
    }
}

/// `n` gateways with one route to `up` and a budget of `requests` an hour per client,
/// counted in `store` (a TOML value) with `sync`.
fn gateways(n: usize, store: &str, sync: &str, requests: u32, up: SocketAddr) -> Vec<Member> {
    (0..n)
        .map(|_| {
            let admin = closed_port();
            let gw = Gateway::start(
                "trusted_proxies = [\"127.0.0.1\"]",
                &format!(
                    "[admin]\nlisten = \"{admin}\"\n\n[rate_limit]\nrequests = {requests}\nwindow = \"1h\"\nstore = {store}\nsync = \"{sync}\"\n\n{}",
                    route("/api", up, "")
                ),
            );
            Member { gw, admin }
        })
        .collect()
}

fn all_up(members: &[Member]) {
    for m in members {
        let store = m.wait_for_state("up", Duration::from_secs(15));
        assert_eq!(store["up"], true, "{store}");
    }
}

/// A TOML basic string.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn quoted_list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|i| quoted(i)).collect();
    format!("[{}]", items.join(", "))
}

/// The `i`th distinct client address of a group: 10.group.x.y.
fn client_ip(group: u8, i: usize) -> String {
    format!("10.{group}.{}.{}", i / 250, i % 250 + 1)
}

/// One request to `url` for client `ip`: its status, or the error.
fn get(http: &reqwest::blocking::Client, url: &str, ip: &str) -> Result<u16, String> {
    http.get(url)
        .header("x-forwarded-for", ip)
        .send()
        .and_then(|r| {
            let status = r.status().as_u16();
            r.bytes().map(|_| status)
        })
        .map_err(|e| format!("{e:?}"))
}

#[derive(Debug, Default)]
struct Outcomes {
    passed: usize,
    limited: usize,
    /// Any other status, or an error, with the client.
    others: Vec<String>,
}

impl Outcomes {
    fn add(&mut self, ip: &str, answer: Result<u16, String>) {
        match answer {
            Ok(200) => self.passed += 1,
            Ok(429) => self.limited += 1,
            Ok(status) => self.others.push(format!("{ip}: status {status}")),
            Err(e) => self.others.push(format!("{ip}: {e}")),
        }
    }

    fn merge(&mut self, other: Outcomes) {
        self.passed += other.passed;
        self.limited += other.limited;
        self.others.extend(other.others);
    }
}

/// Each (client address, gateway index) as one request, sent by `threads` keep-alive
/// clients in turn.
fn send(members: &[Member], requests: &[(String, usize)], threads: usize) -> Outcomes {
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let http = client();
                    let mut outcomes = Outcomes::default();
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let Some((ip, at)) = requests.get(n) else {
                            return outcomes;
                        };
                        outcomes.add(ip, get(&http, &members[*at].gw.url("/api/x"), ip));
                    }
                })
            })
            .collect();
        let mut all = Outcomes::default();
        for w in workers {
            all.merge(w.join().unwrap());
        }
        all
    })
}

/// Like `send`, cheaper per request: the requests of each gateway in batches of 100, each
/// batch pipelined on a connection of its own, by `threads` workers.
fn send_pipelined(members: &[Member], requests: &[(String, usize)], threads: usize) -> Outcomes {
    let batches: Vec<(usize, Vec<&str>)> = (0..members.len())
        .flat_map(|at| {
            let ips: Vec<&str> = requests
                .iter()
                .filter(|(_, to)| *to == at)
                .map(|(ip, _)| ip.as_str())
                .collect();
            ips.chunks(100)
                .map(|batch| (at, batch.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut outcomes = Outcomes::default();
                    while let Some((at, ips)) = batches.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let mut socket = TcpStream::connect(members[*at].gw.addr).unwrap();
                        let pipeline: String = ips
                            .iter()
                            .map(|ip| {
                                format!("GET /api/x HTTP/1.1\r\nHost: pylon\r\nX-Forwarded-For: {ip}\r\n\r\n")
                            })
                            .collect();
                        socket.write_all(pipeline.as_bytes()).unwrap();
                        for (ip, answer) in ips.iter().zip(read_answers(&mut socket, ips.len())) {
                            outcomes.add(ip, Ok(answer.status));
                        }
                    }
                    outcomes
                })
            })
            .collect();
        let mut all = Outcomes::default();
        for w in workers {
            all.merge(w.join().unwrap());
        }
        all
    })
}

#[test]
fn an_idle_gateway_costs_redis_a_ping_a_second_after_5000_clients() {
    let redis = Redis::start();
    let up = Upstream::fixed(Reply::ok("fine"));
    let members = gateways(2, &quoted(&redis.url()), "50ms", 1000, up.addr);
    all_up(&members);

    let requests: Vec<(String, usize)> = (0..5000).map(|i| (client_ip(1, i), i % 2)).collect();
    let started = std::time::Instant::now();
    let outcomes = send_pipelined(&members, &requests, 4);
    eprintln!("5,000 clients sent in {:?}", started.elapsed());
    assert!(outcomes.others.is_empty(), "{:?}", outcomes.others);
    assert_eq!(
        (outcomes.passed, outcomes.limited),
        (5000, 0),
        "5,000 clients of one request each, a budget of 1,000"
    );
    let mut keys = 0;
    wait_for(
        "the counts of 5,000 clients to reach Redis",
        Duration::from_secs(10),
        || {
            keys = redis.count_keys(KEYS);
            keys >= 5000
        },
    );
    std::thread::sleep(Duration::from_secs(1));

    // idle: what the two gateways send in 3 s
    assert_eq!(
        redis.query(&["CONFIG", "RESETSTAT"]),
        Resp::Simple("OK".into())
    );
    let started = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let (commands, lines) = redis.commands_run();
    let seconds = started.elapsed().as_secs_f64();
    let per_second = commands as f64 / seconds;
    eprintln!(
        "idle after 5,000 clients ({keys} keys): {commands} commands in {seconds:.1} s: {lines:?}"
    );
    assert!(
        per_second <= 10.0,
        "two idle gateways sent {commands} commands in {seconds:.1} s ({per_second:.1}/s, at most 10/s expected): {lines:#?}"
    );
    for m in &members {
        assert_eq!(m.store()["state"], "up", "after the idle time");
    }
}

#[test]
fn on_a_redis_cluster_with_sync_0s_two_gateways_keep_one_budget_exactly() {
    let cluster = RedisCluster::start(3);
    let up = Upstream::fixed(Reply::ok("fine"));
    let store = format!("{{ cluster = {} }}", quoted_list(&cluster.seeds()));
    let members = gateways(2, &store, "0s", 40, up.addr);
    all_up(&members);

    let requests: Vec<(String, usize)> = (0..100).map(|i| ("10.2.0.1".into(), i % 2)).collect();
    let outcomes = send(&members, &requests, 4);
    assert!(outcomes.others.is_empty(), "{:?}", outcomes.others);
    assert_eq!(
        (outcomes.passed, outcomes.limited),
        (40, 60),
        "one client, a budget of 40, 100 requests over two gateways"
    );
    assert!(
        cluster.keys_per_node(KEYS).iter().sum::<usize>() >= 1,
        "the client's count is in the cluster"
    );
}

#[test]
fn on_a_redis_cluster_the_keys_of_many_clients_spread_over_every_master() {
    let cluster = RedisCluster::start(3);
    let up = Upstream::fixed(Reply::ok("fine"));
    let store = format!("{{ cluster = {} }}", quoted_list(&cluster.seeds()));
    let members = gateways(2, &store, "50ms", 1000, up.addr);
    all_up(&members);

    let requests: Vec<(String, usize)> = (0..300).map(|i| (client_ip(22, i), i % 2)).collect();
    let outcomes = send(&members, &requests, 4);
    assert!(outcomes.others.is_empty(), "{:?}", outcomes.others);
    assert_eq!((outcomes.passed, outcomes.limited), (300, 0));
    let mut per_node = Vec::new();
    wait_for(
        "the keys of 300 clients on every master",
        Duration::from_secs(10),
        || {
            per_node = cluster.keys_per_node(KEYS);
            per_node.iter().all(|&n| n > 0) && per_node.iter().sum::<usize>() >= 300
        },
    );
    eprintln!("keys per master: {per_node:?}");
    for m in &members {
        let store = m.store();
        assert_eq!(store["state"], "up", "{store}");
    }
}

/// Per-client tallies of steady traffic.
#[derive(Debug, Default)]
struct Tally {
    hot: Outcomes,
    others: Outcomes,
}

/// `threads` clients sending until stopped, each about 100 requests a second over the
/// gateways in turn: every other request from one client (`HOT`), the rest from clients
/// that send 10 requests each.
struct Steady {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

const HOT: &str = "10.30.0.1";

impl Steady {
    fn start(members: &[Member], threads: usize) -> Steady {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let next = Arc::new(AtomicUsize::new(0));
        let urls: Arc<Vec<String>> = Arc::new(members.iter().map(|m| m.gw.url("/api/x")).collect());
        let threads = (0..threads)
            .map(|_| {
                let (stop, tally, next, urls) =
                    (stop.clone(), tally.clone(), next.clone(), urls.clone());
                std::thread::spawn(move || {
                    let http = client();
                    while !stop.load(Ordering::Relaxed) {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let hot = n % 2 == 0;
                        let ip = if hot {
                            HOT.to_string()
                        } else {
                            client_ip(31, n / 20)
                        };
                        let answer = get(&http, &urls[(n / 2) % urls.len()], &ip);
                        {
                            let mut t = tally.lock().unwrap();
                            let side = if hot { &mut t.hot } else { &mut t.others };
                            side.add(&ip, answer);
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
            })
            .collect();
        Steady {
            stop,
            tally,
            threads,
        }
    }

    fn sent(&self) -> usize {
        let t = self.tally.lock().unwrap();
        t.hot.passed
            + t.hot.limited
            + t.hot.others.len()
            + t.others.passed
            + t.others.limited
            + t.others.others.len()
    }

    fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.tally.lock().unwrap())
    }
}

#[test]
fn through_a_sentinel_failover_requests_get_200_or_429_and_counts_follow_the_new_master() {
    let master = Redis::start();
    let replica = Redis::replica_of(&master);
    let sentinel = Sentinel::start(&master, "pylon");
    sentinel.wait_for_replica(&replica);
    assert_eq!(sentinel.master_port(), master.port);

    let up = Upstream::fixed(Reply::ok("fine"));
    let store = format!(
        "{{ sentinels = {}, master = \"pylon\" }}",
        quoted_list(&[sentinel.url()])
    );
    let members = gateways(2, &store, "50ms", 30, up.addr);
    all_up(&members);

    let load = Steady::start(&members, 3);
    wait_for(
        "traffic before the failover",
        Duration::from_secs(10),
        || load.sent() >= 100,
    );
    let new_port = sentinel.failover();
    assert_eq!(new_port, replica.port, "the replica is the new master");
    let sent_at_failover = load.sent();
    // the old master closed the gateways' connections when it became a replica: they
    // must ask the sentinel again and find the new master
    std::thread::sleep(Duration::from_millis(500));
    for m in &members {
        m.wait_for_state("up", Duration::from_secs(20));
    }
    wait_for(
        "traffic after the failover",
        Duration::from_secs(10),
        || load.sent() >= sent_at_failover + 100,
    );
    let tally = load.stop();
    eprintln!(
        "through the failover: hot client {} passed, {} refused; others {} passed, {} refused",
        tally.hot.passed, tally.hot.limited, tally.others.passed, tally.others.limited
    );
    let mut failures = tally.hot.others.clone();
    failures.extend(tally.others.others.clone());
    assert!(
        failures.is_empty(),
        "every request gets 200 or 429 through the failover: {failures:?}"
    );
    assert!(
        tally.hot.passed > 0 && tally.hot.limited > 0,
        "the client over its budget of 30 got 200s then 429s: {:?}",
        tally.hot
    );
    assert!(
        tally.others.passed > 0 && tally.others.limited == 0,
        "clients of 10 requests under a budget of 30 are never refused: {:?}",
        tally.others
    );

    // clients first seen now are counted on the new master
    let new_master = &replica;
    let mut before = new_master.count_keys(KEYS);
    wait_for(
        "the keys on the new master to settle",
        Duration::from_secs(5),
        || {
            std::thread::sleep(Duration::from_millis(300));
            let now = new_master.count_keys(KEYS);
            std::mem::replace(&mut before, now) == now
        },
    );
    let fresh: Vec<(String, usize)> = (0..100).map(|i| (client_ip(32, i), i % 2)).collect();
    let outcomes = send(&members, &fresh, 4);
    assert!(outcomes.others.is_empty(), "{:?}", outcomes.others);
    assert_eq!(outcomes.passed, 100);
    let mut now = 0;
    wait_for(
        "the counts of 100 new clients on the new master",
        Duration::from_secs(10),
        || {
            now = new_master.count_keys(KEYS);
            now >= before + 100
        },
    );
    for m in &members {
        assert_eq!(m.store()["state"], "up");
    }
    assert!(
        master.info("replication").contains("role:slave"),
        "the old master stayed a replica"
    );
}

/// A CA's certificate in a file of `dir`.
fn ca_file(dir: &Path, ca: &TestCa) -> String {
    let path = dir.join("ca.pem");
    std::fs::write(&path, ca.cert_pem()).unwrap();
    path.display().to_string()
}

#[test]
fn over_rediss_with_its_ca_file_the_store_is_up_and_counts_land() {
    let ca = TestCa::new("pylon test redis CA");
    let redis = Redis::start_tls(&ca);
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "{{ url = {}, ca = {} }}",
        quoted(&redis.url()),
        quoted(&ca_file(dir.path(), &ca))
    );
    let up = Upstream::fixed(Reply::ok("fine"));
    let members = gateways(1, &store, "50ms", 1000, up.addr);
    all_up(&members);

    let requests: Vec<(String, usize)> = (0..20).map(|i| (client_ip(4, i % 10), 0)).collect();
    let outcomes = send(&members, &requests, 2);
    assert!(outcomes.others.is_empty(), "{:?}", outcomes.others);
    assert_eq!(outcomes.passed, 20);
    wait_for(
        "the counts of 10 clients in the TLS store",
        Duration::from_secs(10),
        || redis.count_keys(KEYS) >= 10,
    );
    let listed = redis.cli(&["--scan", "--pattern", KEYS]);
    assert!(
        listed
            .lines()
            .filter(|l| l.starts_with("pylon:rl:"))
            .count()
            >= 10,
        "redis-cli --tls --cacert --scan: {listed}"
    );
    let store = members[0].store();
    assert_eq!(store["state"], "up", "{store}");
}

#[test]
fn over_rediss_with_a_wrong_ca_the_gateway_serves_and_says_the_certificate_failed() {
    let ca = TestCa::new("pylon test redis CA");
    let redis = Redis::start_tls(&ca);
    let dir = tempfile::tempdir().unwrap();
    let unrelated = TestCa::new("an unrelated CA");
    let store = format!(
        "{{ url = {}, ca = {} }}",
        quoted(&redis.url()),
        quoted(&ca_file(dir.path(), &unrelated))
    );
    let up = Upstream::fixed(Reply::ok("fine"));
    let members = gateways(1, &store, "50ms", 1000, up.addr);
    let member = &members[0];

    let requests: Vec<(String, usize)> = (0..10).map(|i| (client_ip(5, i), 0)).collect();
    let outcomes = send(&members, &requests, 2);
    assert!(outcomes.others.is_empty(), "{:?}", outcomes.others);
    assert_eq!(outcomes.passed, 10, "the gateway serves without its store");

    let store = member.wait_for_state("down", Duration::from_secs(15));
    assert_eq!(store["up"], false, "{store}");
    let error = store["last_error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.to_lowercase().contains("certificate"),
        "last_error says the certificate could not be verified: {store}"
    );
    let mut log = String::new();
    wait_for(
        "the gateway's log to mention the certificate",
        Duration::from_secs(5),
        || {
            log = member.gw.stderr();
            log.to_lowercase().contains("certificate")
        },
    );
    assert_eq!(
        redis.query(&["DBSIZE"]),
        Resp::Int(0),
        "nothing reached a store whose certificate failed"
    );
    // still serving after it gave up on the store
    let http = client();
    assert_eq!(get(&http, &member.gw.url("/api/x"), "10.5.9.9"), Ok(200));
}
