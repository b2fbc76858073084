//! Real Redis deployments for the shared-store tests, from Debian's `redis-server` and
//! `redis-cli` (`make test` installs them): one node, plain or TLS; a Redis Cluster of
//! masters; a master with a replica watched by a Sentinel. Everything listens on 127.0.0.1
//! on ports of its own, keeps its files (config, logs) in a temp dir, is killed when
//! dropped, and every wait is bounded and says what it waited for.
//!
//! The tests talk to Redis with a small RESP2 client of their own (one connection per
//! command, TLS through openssl when the node has a CA), so that what they count on the
//! server (`INFO commandstats`) is only what they sent on purpose.

use std::hash::BuildHasher;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{closed_port, TestCa};

/// How long a Redis process may take to answer after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one command of the tests may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Wait until `check` holds, at most `timeout`; panics naming `what` otherwise.
pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// The protocol
// ---------------------------------------------------------------------------------------------

/// A reply as Redis sends it (RESP2).
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(String),
    Nil,
    Array(Vec<Resp>),
}

impl Resp {
    /// The text of a simple or bulk string; "" for anything else.
    pub fn text(&self) -> &str {
        match self {
            Resp::Simple(s) | Resp::Bulk(s) => s,
            _ => "",
        }
    }

    pub fn int(&self) -> Option<i64> {
        match self {
            Resp::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn items(&self) -> &[Resp] {
        match self {
            Resp::Array(items) => items,
            _ => &[],
        }
    }

    /// A flat array of field and value pairs (as SENTINEL REPLICAS answers), as a lookup.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.items()
            .chunks(2)
            .find(|pair| pair[0].text() == name)
            .and_then(|pair| pair.get(1))
            .map(Resp::text)
    }
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

fn connect(port: u16, ca: Option<&Path>) -> io::Result<Box<dyn Stream>> {
    let tcp = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), COMMAND_TIMEOUT)?;
    tcp.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    tcp.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    let Some(ca) = ca else {
        return Ok(Box::new(tcp));
    };
    let mut tls = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client())
        .map_err(io::Error::other)?;
    tls.set_ca_file(ca).map_err(io::Error::other)?;
    let stream = tls
        .build()
        .connect("127.0.0.1", tcp)
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(Box::new(stream))
}

/// One command on a connection of its own to the node on `port` (over TLS when `ca` is
/// given); its reply.
pub fn query_at(port: u16, ca: Option<&Path>, args: &[&str]) -> io::Result<Resp> {
    let mut stream = connect(port, ca)?;
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        request.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    stream.write_all(&request)?;
    read_reply(&mut BufReader::new(stream))
}

fn read_reply(r: &mut impl BufRead) -> io::Result<Resp> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at_checked(1).ok_or_else(|| bad("empty reply"))?;
    let number = || rest.parse::<i64>().map_err(|_| bad(line));
    Ok(match kind {
        "+" => Resp::Simple(rest.to_string()),
        "-" => Resp::Error(rest.to_string()),
        ":" => Resp::Int(number()?),
        "$" => match usize::try_from(number()?) {
            Err(_) => Resp::Nil,
            Ok(len) => {
                let mut body = vec![0; len + 2];
                r.read_exact(&mut body)?;
                body.truncate(len);
                Resp::Bulk(String::from_utf8_lossy(&body).into_owned())
            }
        },
        "*" => match usize::try_from(number()?) {
            Err(_) => Resp::Nil,
            Ok(n) => Resp::Array((0..n).map(|_| read_reply(r)).collect::<io::Result<_>>()?),
        },
        _ => return Err(bad(line)),
    })
}

/// Whether the server behind `query` is up and is process `pid`: not another test's
/// server that took the port first while ours failed to bind it.
fn answers_as(pid: u32, query: impl Fn(&[&str]) -> io::Result<Resp>) -> bool {
    query(&["INFO", "server"]).is_ok_and(|info| {
        info.text()
            .lines()
            .any(|l| l.trim() == format!("process_id:{pid}"))
    })
}

/// Run a command with its output in a file of `dir`, killed after `timeout`:
/// (success, what it printed on stdout and stderr).
fn run_bounded(cmd: &mut Command, dir: &Path, timeout: Duration) -> (bool, String) {
    let out_path = dir.join(format!(
        "out-{}.txt",
        std::collections::hash_map::RandomState::new().hash_one(Instant::now())
    ));
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let ok = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    (ok, text)
}

// ---------------------------------------------------------------------------------------------
// One node
// ---------------------------------------------------------------------------------------------

/// A real redis-server on a port of its own, killed when dropped.
pub struct Redis {
    pub port: u16,
    /// With TLS: the CA file that verifies the server's certificate.
    ca: Option<PathBuf>,
    child: Child,
    dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_on(closed_port().port())
    }

    /// On a chosen port (to bring a stopped one back where the gateways look for it).
    pub fn start_on(port: u16) -> Redis {
        Redis::launch(port, None, &[])
            .unwrap_or_else(|log| panic!("redis-server did not start on {port}:\n{log}"))
    }

    /// A replica of `master`, once its link is up and the master streams to it.
    pub fn replica_of(master: &Redis) -> Redis {
        let port = closed_port().port();
        let replica = Redis::launch(
            port,
            None,
            &["--replicaof", "127.0.0.1", &master.port.to_string()],
        )
        .unwrap_or_else(|log| panic!("the replica did not start on {port}:\n{log}"));
        wait_for(
            "the replica's link to its master",
            Duration::from_secs(10),
            || {
                replica
                    .info("replication")
                    .contains("master_link_status:up")
            },
        );
        // until its first ACK the master holds back what it writes from a new replica: a
        // failover before that would lose those writes
        wait_for(
            "the master to see its replica online",
            Duration::from_secs(10),
            || {
                master.info("replication").lines().any(|l| {
                    l.starts_with("slave")
                        && l.contains(&format!("port={port},"))
                        && l.contains("state=online")
                })
            },
        );
        replica
    }

    /// A node speaking only TLS (`--port 0`), with a certificate for 127.0.0.1 from `ca`;
    /// clients are not asked for certificates.
    pub fn start_tls(ca: &TestCa) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ca.issue(&["127.0.0.1"]);
        let (ca_path, cert_path, key_path) = (
            dir.path().join("ca.pem"),
            dir.path().join("redis.pem"),
            dir.path().join("redis.key"),
        );
        std::fs::write(&ca_path, ca.cert_pem()).unwrap();
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let port = closed_port().port();
        let tls_args = [
            "--tls-cert-file",
            cert_path.to_str().unwrap(),
            "--tls-key-file",
            key_path.to_str().unwrap(),
            "--tls-ca-cert-file",
            ca_path.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
        ];
        let redis = Redis::launch_in(dir, port, Some(ca_path.clone()), &tls_args)
            .unwrap_or_else(|log| panic!("redis-server with TLS did not start on {port}:\n{log}"));
        // a standard client trusts it with that CA file too
        let pong = redis.cli(&["PING"]);
        assert_eq!(pong.trim(), "PONG", "redis-cli --tls --cacert: {pong}");
        redis
    }

    fn launch(port: u16, ca: Option<PathBuf>, extra: &[&str]) -> Result<Redis, String> {
        Redis::launch_in(tempfile::tempdir().unwrap(), port, ca, extra)
    }

    /// Start redis-server on `port` (its TLS port when `ca` is given) with its files in
    /// `dir`; the server once it answers (as itself), or its log.
    fn launch_in(
        dir: tempfile::TempDir,
        port: u16,
        ca: Option<PathBuf>,
        extra: &[&str],
    ) -> Result<Redis, String> {
        let mut args: Vec<String> = match ca {
            None => vec!["--port".into(), port.to_string()],
            Some(_) => vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
            ],
        };
        args.extend(
            [
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                // a replica's first sync starts at once, not after the 5 s default wait
                "--repl-diskless-sync-delay",
                "0",
                "--dir",
                dir.path().to_str().unwrap(),
            ]
            .map(str::to_string),
        );
        args.extend(extra.iter().map(|a| a.to_string()));
        let log = std::fs::File::create(dir.path().join("redis.log")).unwrap();
        let child = Command::new("redis-server")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("redis-server is needed (make test installs it)");
        let mut redis = Redis {
            port,
            ca,
            child,
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if answers_as(redis.child.id(), |args| redis.try_query(args)) {
                return Ok(redis);
            }
            if !matches!(redis.child.try_wait(), Ok(None)) || Instant::now() > deadline {
                return Err(redis.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL a gateway is given: `redis://127.0.0.1:port/0`, or `rediss://` with TLS.
    pub fn url(&self) -> String {
        match self.ca {
            None => format!("redis://127.0.0.1:{}/0", self.port),
            Some(_) => format!("rediss://127.0.0.1:{}", self.port),
        }
    }

    /// With TLS: the CA file that verifies this node's certificate.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    pub fn try_query(&self, args: &[&str]) -> io::Result<Resp> {
        query_at(self.port, self.ca.as_deref(), args)
    }

    /// One command; panics when the node cannot be reached.
    pub fn query(&self, args: &[&str]) -> Resp {
        self.try_query(args)
            .unwrap_or_else(|e| panic!("{args:?} to redis on {}: {e}", self.port))
    }

    /// `INFO section`, as text.
    pub fn info(&self, section: &str) -> String {
        self.try_query(&["INFO", section])
            .map(|r| r.text().to_string())
            .unwrap_or_default()
    }

    /// How many keys match `pattern` (SCAN, so only this node's keys in a cluster).
    pub fn count_keys(&self, pattern: &str) -> usize {
        let mut cursor = "0".to_string();
        let mut n = 0;
        loop {
            let reply = self.query(&["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"]);
            let [next, keys] = reply.items() else {
                panic!("SCAN answered {reply:?}");
            };
            n += keys.items().len();
            cursor = next.text().to_string();
            if cursor == "0" {
                return n;
            }
        }
    }

    /// Commands run since the last `CONFIG RESETSTAT`, from `INFO commandstats`, without the
    /// tests' own INFO and CONFIG: (total, the lines counted).
    pub fn commands_run(&self) -> (u64, Vec<String>) {
        let stats = self.info("commandstats");
        let counted: Vec<(String, u64)> = stats
            .lines()
            .filter(|l| l.starts_with("cmdstat_"))
            .filter(|l| !l.starts_with("cmdstat_info:") && !l.starts_with("cmdstat_config"))
            .filter_map(|l| {
                let calls = l.split_once("calls=")?.1.split(',').next()?.parse().ok()?;
                Some((l.to_string(), calls))
            })
            .collect();
        (
            counted.iter().map(|(_, n)| n).sum(),
            counted.into_iter().map(|(l, _)| l).collect(),
        )
    }

    /// Script calls (EVALSHA and EVAL) the server has run.
    pub fn script_calls(&self) -> u64 {
        self.info("commandstats")
            .lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| {
                l.split_once("calls=")?
                    .1
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// `redis-cli` against this node (with `--tls --cacert` when it speaks TLS): its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(ca) = &self.ca {
            cmd.arg("--tls").arg("--cacert").arg(ca);
        }
        cmd.args(args);
        run_bounded(&mut cmd, self.dir.path(), Duration::from_secs(10)).1
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Kill it; the port, to start another on.
    pub fn stop(self) -> u16 {
        self.port
    }

    /// Save its data (SAVE), then kill it: what it takes to start it again with that data.
    pub fn stop_saved(mut self) -> StoppedRedis {
        assert_eq!(self.query(&["SAVE"]).text(), "OK");
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        StoppedRedis {
            port: self.port,
            dir,
        }
    }
}

/// A plain node stopped with its data kept.
pub struct StoppedRedis {
    pub port: u16,
    dir: tempfile::TempDir,
}

impl StoppedRedis {
    /// The same node again: same port, same data.
    pub fn start_again(self) -> Redis {
        let port = self.port;
        Redis::launch_in(self.dir, port, None, &[])
            .unwrap_or_else(|log| panic!("redis-server did not start again on {port}:\n{log}"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Redis Cluster
// ---------------------------------------------------------------------------------------------

/// Masters in one Redis Cluster (no replicas), every slot covered.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    /// `masters` nodes joined with `redis-cli --cluster create`, once every node says
    /// `cluster_state:ok`.
    pub fn start(masters: usize) -> RedisCluster {
        let nodes: Vec<Redis> = (0..masters).map(|_| RedisCluster::node()).collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create").args(&addrs).args([
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ]);
        let (ok, out) = run_bounded(&mut create, nodes[0].dir.path(), Duration::from_secs(30));
        assert!(ok, "redis-cli --cluster create {addrs:?} failed:\n{out}");
        let cluster = RedisCluster { nodes };
        for node in &cluster.nodes {
            wait_for(
                &format!("cluster_state:ok on {}", node.port),
                Duration::from_secs(15),
                || {
                    node.try_query(&["CLUSTER", "INFO"])
                        .is_ok_and(|r| r.text().contains("cluster_state:ok"))
                },
            );
        }
        cluster
    }

    /// One node in cluster mode. Its bus listens on port + 10000, so both must be free:
    /// ports are drawn from 20000-22767 (bus 30000-32767), below Linux's ephemeral range
    /// where `closed_port` and the kernel pick theirs.
    fn node() -> Redis {
        let mut last_log = String::new();
        for attempt in 0..20u64 {
            let r =
                std::collections::hash_map::RandomState::new().hash_one((Instant::now(), attempt));
            let port = 20_000 + (r % 2_768) as u16;
            let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
            if !free(port) || !free(port + 10_000) {
                continue;
            }
            let dir = tempfile::tempdir().unwrap();
            let nodes_conf = dir.path().join(format!("nodes-{port}.conf"));
            match Redis::launch_in(
                dir,
                port,
                None,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    nodes_conf.to_str().unwrap(),
                    "--cluster-node-timeout",
                    "5000",
                ],
            ) {
                Ok(node) => return node,
                Err(log) => last_log = log,
            }
        }
        panic!("no cluster node could start in 20 attempts; last log:\n{last_log}");
    }

    /// The seed URLs a gateway is given.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// Keys matching `pattern` on each master, in node order.
    pub fn keys_per_node(&self, pattern: &str) -> Vec<usize> {
        self.nodes.iter().map(|n| n.count_keys(pattern)).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Sentinel
// ---------------------------------------------------------------------------------------------

/// One Redis Sentinel watching one master (quorum 1), killed when dropped.
pub struct Sentinel {
    pub port: u16,
    pub name: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Sentinel {
    /// A sentinel for `master` under `name`: down after 1 s, failover timeout 5 s. Its
    /// periods are shortened (SENTINEL DEBUG: INFO every 500 ms, hello every 250 ms) so that
    /// after a failover the old master is turned into a replica within about a second
    /// instead of the 8 s Sentinel otherwise waits.
    pub fn start(master: &Redis, name: &str) -> Sentinel {
        let dir = tempfile::tempdir().unwrap();
        let port = closed_port().port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\n\
                 sentinel monitor {name} 127.0.0.1 {master} 1\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 5000\n",
                dir = dir.path().display(),
                master = master.port,
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("sentinel.log")).unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("redis-server is needed (make test installs it)");
        let mut sentinel = Sentinel {
            port,
            name: name.to_string(),
            child,
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !answers_as(sentinel.child.id(), |args| sentinel.try_query(args)) {
            assert!(
                matches!(sentinel.child.try_wait(), Ok(None)) && Instant::now() < deadline,
                "the sentinel did not start on {port}:\n{}",
                sentinel.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let set = sentinel.query(&[
            "SENTINEL",
            "DEBUG",
            "info-period",
            "500",
            "publish-period",
            "250",
        ]);
        assert_eq!(set, Resp::Simple("OK".into()), "SENTINEL DEBUG");
        sentinel
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn try_query(&self, args: &[&str]) -> io::Result<Resp> {
        query_at(self.port, None, args)
    }

    pub fn query(&self, args: &[&str]) -> Resp {
        self.try_query(args)
            .unwrap_or_else(|e| panic!("{args:?} to the sentinel on {}: {e}", self.port))
    }

    /// The master's port, as the sentinel names it now.
    pub fn master_port(&self) -> u16 {
        let reply = self.query(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", &self.name]);
        reply
            .items()
            .get(1)
            .and_then(|p| p.text().parse().ok())
            .unwrap_or_else(|| panic!("get-master-addr-by-name answered {reply:?}"))
    }

    /// Wait until the sentinel knows `replica` as a healthy replica (needed to fail over).
    pub fn wait_for_replica(&self, replica: &Redis) {
        let port = replica.port.to_string();
        wait_for(
            &format!("the sentinel to know the replica on {port}"),
            Duration::from_secs(15),
            || {
                self.try_query(&["SENTINEL", "REPLICAS", &self.name])
                    .is_ok_and(|r| {
                        r.items().iter().any(|replica| {
                            replica.field("port") == Some(port.as_str())
                                && replica.field("flags") == Some("slave")
                                && replica.field("master-link-status") == Some("ok")
                        })
                    })
            },
        );
    }

    /// `SENTINEL FAILOVER` through redis-cli; returns the new master's port once the
    /// sentinel names it, it says `role:master`, and the old master says `role:slave` (the
    /// sentinel has then also closed the old master's client connections).
    pub fn failover(&self) -> u16 {
        let old = self.master_port();
        let (ok, out) = run_bounded(
            Command::new("redis-cli").args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "SENTINEL",
                "FAILOVER",
                &self.name,
            ]),
            self.dir.path(),
            Duration::from_secs(10),
        );
        assert!(ok && out.trim() == "OK", "SENTINEL FAILOVER: {out}");
        let role = |port: u16| {
            query_at(port, None, &["ROLE"])
                .ok()
                .and_then(|r| r.items().first().map(|r| r.text().to_string()))
                .unwrap_or_default()
        };
        let mut new = old;
        wait_for(
            "the sentinel to name a new master",
            Duration::from_secs(15),
            || {
                new = self.master_port();
                new != old && role(new) == "master"
            },
        );
        wait_for(
            &format!("the old master on {old} to be turned into a replica"),
            Duration::from_secs(15),
            || role(old) == "slave",
        );
        new
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sentinel.log")).unwrap_or_default()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
