//! Mutation testing of config loading: thousands of broken variants of the shipped config
//! (and of one that uses every section) are loaded and compiled in process. None may
//! panic, and every refusal must name the file and a line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::{Duration, Instant};

use pylon::runtime::{Runtime, Shared};

/// Cases per run, and the most time they may take.
const CASES: usize = 20_000;
const BUDGET: Duration = Duration::from_secs(60);

/// A config that reaches every section, so mutations reach every check.
const KITCHEN_SINK: &str = r#"
[server]
listen = ["127.0.0.1:5000", "[::1]:5001"]
threads = 2
trusted_proxies = ["10.0.0.0/8", "::1/128"]
grace_period = "1s"
graceful_shutdown_timeout = "5s"
max_connections = 100
h2c = true
upstream_keepalive = 10

[access_log]
path = "off"
format = "json"

[timeouts]
connect = "1s"
read = "5s"
write = "5s"
websocket_idle = "1m"
client_header = "5s"
client_idle = "30s"

[rate_limit]
requests = 10
window = "1m"
ipv6_prefix = 56
max_clients = 5000

[limits]
max_body = "16m"

[cors]
allow_origins = ["https://a.example", "https://b.example"]
allow_methods = ["GET", "POST"]
allow_credentials = true
max_age = 600

[security_headers]
enabled = true
remove = ["Server"]

[metrics]
listen = "127.0.0.1:9100"

[auth.keys]
type = "api_key"
header = "X-Api-Key"
keys = { ci = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" }

[auth.users]
type = "jwt"
algorithms = ["HS256"]
secret_env = "PYLON_FUZZ_SECRET"
issuer = "https://issuer.example"
audience = "api"

[[routes]]
prefix = "/a"
upstreams = ["http://127.0.0.1:7001", { url = "http://127.0.0.1:7002", weight = 3 }]
balance = "least_request"
retries = 1
strip_prefix = false
preserve_host = true
rate_limit = { requests = 5, window = "10s" }
timeouts = { read = "2s" }
health_check = { interval = "1s", timeout = "500ms", path = "/health", healthy = 2, unhealthy = 2 }
passive = { failures = 3, cooldown = "10s" }
auth = ["keys", "users"]
max_body = "1m"
methods = ["GET", "POST"]
allow = ["10.0.0.0/8", "2001:db8::/32"]
deny = ["10.1.0.0/16"]
request_headers = { set = { "X-Api-Version" = "2", "X-Client-Ip" = "{client_ip}" }, remove = ["Cookie"] }
response_headers = { set = { "Cache-Control" = "no-store" }, remove = ["X-Internal-Trace"] }

[[routes]]
prefix = "/b"
upstreams = ["http://127.0.0.1:7003"]
balance = "hash"
hash_key = "header:X-User"
rate_limit = false
http2 = true
allow_trace = true
"#;

/// Values a mutation may put in place of another.
const VALUES: &[&str] = &[
    "0",
    "-1",
    "1",
    "65536",
    "99999999999999999999",
    "1.5",
    "true",
    "false",
    "\"\"",
    "\"0s\"",
    "\"1ms\"",
    "\"365d\"",
    "\"366d\"",
    "\"1x\"",
    "\"/\"",
    "\"/é\"",
    "\"/a/../b\"",
    "\"//\"",
    "\"http://\"",
    "\"https://127.0.0.1:0\"",
    "\"127.0.0.1:99999\"",
    "\"[::1]:1\"",
    "\"10.0.0.0/33\"",
    "\"/dev/zero\"",
    "\"/nonexistent/file\"",
    "\"*\"",
    "\"\\u0000\"",
    "\"\\u00e9\"",
    "\"a\\nb\"",
    "[]",
    "[1]",
    "[\"\"]",
    "{}",
    "{ requests = 0 }",
    "{ url = \"http://127.0.0.1:1\", weight = 0 }",
    "\"header:\"",
    "\"header:X Y\"",
    "\"{client_ip}\"",
    "\"{nope}\"",
    "\"{\"",
    "\"12x\"",
    "\"1g\"",
    "-5",
    "[\"GET\"]",
    "[\"get\"]",
    "{ set = { \"Host\" = \"x\" } }",
    "{ remove = [\"X-Frame-Options\"] }",
    "\"least_request\"",
    "\"random\"",
    "\"hash\"",
    "\"round_robin\"",
    "\"none\"",
];

/// Lines a mutation may add.
const LINES: &[&str] = &[
    "[tls]",
    "listen = []",
    "[[tls.certificates]]",
    "cert = \"/dev/zero\"",
    "key = \"/nonexistent/key.pem\"",
    "[[routes]]",
    "prefix = \"/a\"",
    "upstreams = []",
    "[auth.x]",
    "type = \"jwt\"",
    "jwks_file = \"/dev/zero\"",
    "jwks_url = \"http://127.0.0.1:1/jwks\"",
    "type = \"oauth2_introspection\"",
    "introspection_url = \"http://127.0.0.1:1/introspect\"",
    "[rate_limit]",
    "[metrics]",
    "listen = \"127.0.0.1:5000\"",
    "keepalive_timeout = \"5s\"",
    "unknown_key = 1",
    "[server",
    "= 1",
    "\"",
];

/// Characters a mutation may slip into a quoted string.
const INJECTED: &[&str] = &[
    "é",
    "\\u0000",
    "\\u0007",
    " ",
    "%",
    "%2e",
    "..",
    "/",
    "//",
    "?",
    "#",
    "\\n",
    "\\\"",
    ":",
    "@",
    "*",
    "0",
    "-",
    ",",
    ";",
    "\u{1F600}",
];

fn mutate(rng: &mut fastrand::Rng, base: &str) -> String {
    let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
    for _ in 0..rng.usize(1..=3) {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let pick = |rng: &mut fastrand::Rng, lines: &[String], what: &str| -> usize {
            let with: Vec<usize> = (0..lines.len())
                .filter(|&i| lines[i].contains(what))
                .collect();
            if with.is_empty() {
                rng.usize(..lines.len())
            } else {
                with[rng.usize(..with.len())]
            }
        };
        match rng.u8(0..10) {
            0..=2 => {
                // a character slipped into a quoted string
                let i = pick(rng, &lines, "\"");
                let line = &lines[i];
                let quotes: Vec<usize> = line.match_indices('"').map(|(at, _)| at + 1).collect();
                if !quotes.is_empty() {
                    let at = quotes[rng.usize(..quotes.len())].min(line.len());
                    let mut changed = line.clone();
                    changed.insert_str(at, INJECTED[rng.usize(..INJECTED.len())]);
                    lines[i] = changed;
                }
            }
            3..=4 => {
                // a key's value replaced
                let i = pick(rng, &lines, " = ");
                if let Some((key, _)) = lines[i].split_once(" = ") {
                    lines[i] = format!("{key} = {}", VALUES[rng.usize(..VALUES.len())]);
                }
            }
            5 => {
                let i = rng.usize(..lines.len());
                match rng.u8(0..3) {
                    0 => {
                        lines.remove(i);
                    }
                    1 => {
                        let copy = lines[i].clone();
                        lines.insert(rng.usize(..=lines.len()), copy);
                    }
                    _ => {
                        let j = rng.usize(..lines.len());
                        lines.swap(i, j);
                    }
                }
            }
            6 => {
                let i = rng.usize(..=lines.len());
                lines.insert(i, LINES[rng.usize(..LINES.len())].to_string());
            }
            7 => {
                // uncomment an example
                let i = pick(rng, &lines, "# ");
                if let Some(rest) = lines[i].strip_prefix("# ") {
                    lines[i] = rest.to_string();
                }
            }
            8 => {
                // a byte changed somewhere in the line
                let i = rng.usize(..lines.len());
                let mut bytes = lines[i].clone().into_bytes();
                if !bytes.is_empty() {
                    let at = rng.usize(..bytes.len());
                    bytes[at] = b" =\"[]{},.#x0\\/\n"[rng.usize(..15)];
                }
                lines[i] = String::from_utf8_lossy(&bytes).into_owned();
            }
            _ => {
                // cut the line short
                let i = rng.usize(..lines.len());
                let line = &lines[i];
                let cut = rng.usize(..=line.len());
                if line.is_char_boundary(cut) {
                    lines[i] = line[..cut].to_string();
                }
            }
        }
    }
    lines.join("\n")
}

/// Load and compile one text: `Err` with the message when it is refused. An access log
/// that would be a file is switched off: compiling opens (and so creates) it, and mutated
/// paths are not to land on the disk (tests/cli.rs covers a path that cannot be opened).
fn load(path: &Path, text: &str) -> Result<(), String> {
    let mut file = pylon::config::parse(path, text).map_err(|e| e.to_string())?;
    if !matches!(file.access_log.path.get_ref().as_str(), "-" | "off") {
        let span = file.access_log.path.span();
        file.access_log.path = toml::Spanned::new(span, "off".to_string());
    }
    let shared = Shared::from_config(&file).map_err(|e| e.to_string())?;
    Runtime::from_config(&file, None, std::sync::Arc::new(shared))
        .map(drop)
        .map_err(|e| e.to_string())
}

#[test]
fn no_mutated_config_panics_and_every_error_is_located() {
    std::env::set_var("PYLON_FUZZ_SECRET", "s".repeat(32));
    let shipped = std::fs::read_to_string("conf/pylon.toml").unwrap();
    // anything a relative path in a mutated config could touch stays in here
    let scratch = tempfile::tempdir().unwrap();
    std::env::set_current_dir(scratch.path()).unwrap();
    let path = Path::new("/etc/pylon/fuzz.toml");
    for (name, base) in [
        ("conf/pylon.toml", shipped.as_str()),
        ("kitchen sink", KITCHEN_SINK),
    ] {
        load(path, base).unwrap_or_else(|e| panic!("{name} itself does not load: {e}"));
    }
    // quiet the default hook: a panic is reported below with its config
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = fastrand::Rng::with_seed(0x5eed_c0f1);
    let started = Instant::now();
    let (mut loaded, mut refused, mut ran) = (0, 0, 0);
    let mut unlocated = Vec::new();
    let mut panics = Vec::new();
    while ran < CASES && started.elapsed() < BUDGET {
        let base = if ran % 2 == 0 {
            shipped.as_str()
        } else {
            KITCHEN_SINK
        };
        let text = mutate(&mut rng, base);
        ran += 1;
        match std::panic::catch_unwind(AssertUnwindSafe(|| load(path, &text))) {
            Ok(Ok(())) => loaded += 1,
            Ok(Err(message)) => {
                refused += 1;
                let located = message
                    .strip_prefix("/etc/pylon/fuzz.toml:")
                    .and_then(|rest| rest.split(':').next())
                    .is_some_and(|line| line.parse::<usize>().is_ok_and(|l| l > 0));
                if !located {
                    unlocated.push((message, text));
                }
            }
            Err(_) => panics.push(text),
        }
    }
    let _ = std::panic::take_hook();
    eprintln!(
        "{ran} mutated configs in {:?}: {loaded} loaded, {refused} refused, {} unlocated, {} panics",
        started.elapsed(),
        unlocated.len(),
        panics.len()
    );
    assert!(ran >= 1000, "only {ran} cases ran within {BUDGET:?}");
    let written: Vec<_> = std::fs::read_dir(scratch.path()).unwrap().collect();
    assert!(
        written.is_empty(),
        "loading configs wrote files: {written:?}"
    );
    assert!(
        panics.is_empty(),
        "{} panics, first on:\n{}",
        panics.len(),
        panics[0]
    );
    assert!(
        unlocated.is_empty(),
        "{} errors without a line, first: {}\non:\n{}",
        unlocated.len(),
        unlocated[0].0,
        unlocated[0].1
    );
}
