//! The configuration file as users write it: serde structs that mirror the TOML, and [`load`].
//!
//! Every table denies unknown keys, and every value that can be wrong on its own (a duration,
//! an upstream URL, a prefix, a CIDR) is a small type whose `Deserialize` checks it, so the
//! toml crate points at the offending value. Checks that span several values (duplicate
//! prefixes, credentials with a wildcard origin) run after parsing on [`Spanned`] values.
//! Either way the error names the file, the line, the column and the key path.
//!
//! Nothing here is used per request: [`crate::runtime`] compiles this into the form the
//! proxy reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// A value deserialised from a string through its `FromStr`, with the parse error as the
/// message; the toml crate adds where it was.
macro_rules! from_string {
    ($t:ty, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $t;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$t, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

pub(crate) mod auth;
mod cache;
mod check;
mod control;
mod document;
mod error;
mod files;
mod headers;
mod rate_limit;
mod routes;
mod server;
mod tls;
mod tracing;
mod values;

pub use self::auth::{AuthKind, AuthSection, OneOrMany};
pub use cache::*;
use check::*;
pub use control::*;
pub use document::*;
pub use error::*;
pub use files::*;
pub use headers::*;
pub use rate_limit::*;
pub use routes::*;
pub use server::*;
pub use tls::*;
pub use tracing::*;
pub use values::*;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub access_log: AccessLogSection,
    #[serde(default)]
    pub timeouts: TopTimeoutsSection,
    #[serde(default)]
    pub limits: LimitsSection,
    /// The default per-client limit; absent means routes are not limited unless they say so.
    #[serde(default)]
    pub rate_limit: Option<TopRateLimit>,
    #[serde(default)]
    pub cors: CorsSection,
    #[serde(default)]
    pub security_headers: SecurityHeadersSection,
    #[serde(default)]
    pub admin: Option<Spanned<AdminSection>>,
    /// The older name of `[admin]`, with only `listen`.
    #[serde(default)]
    pub metrics: Option<Spanned<MetricsSection>>,
    #[serde(default)]
    pub tls: Option<TlsSection>,
    #[serde(default)]
    pub tracing: Option<Spanned<TracingSection>>,
    /// The response cache's store; its routes say what they store.
    #[serde(default)]
    pub cache: CacheSection,
    /// Where the policy document comes from: this file, or a fleet's store.
    #[serde(default)]
    pub control: Option<Spanned<ControlSection>>,
    /// Named authenticators that routes reference.
    #[serde(default)]
    pub auth: BTreeMap<String, Spanned<AuthSection>>,
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    /// Where the config came from, to locate errors found after parsing.
    #[serde(skip)]
    pub source: Source,
    /// Where the policy sections came from when they are not in the node's file (a fleet's
    /// document, or one sent to the admin API): errors in them are located there.
    #[serde(skip)]
    pub policy_source: Option<Source>,
}

/// A configuration file's name and text.
#[derive(Debug, Default, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl FileConfig {
    /// A compiler's error about a value of this file, with the file, line and column.
    pub fn locate(&self, e: LocatedError) -> ConfigError {
        let source = self.source_of(&e.key);
        let (line, column) = line_column(&source.text, e.span.start);
        ConfigError::Invalid {
            path: source.path.clone(),
            line,
            column,
            key: e.key,
            message: e.message,
        }
    }
}

impl FileConfig {
    /// The text a key (`routes[0].prefix`) was written in.
    fn source_of(&self, key: &str) -> &Source {
        match &self.policy_source {
            Some(policy) if !is_node_key(key) => policy,
            _ => &self.source,
        }
    }

    /// Where the policy sections were written, for problems found in them that have no
    /// line (an upstream's name that does not resolve).
    pub fn policy_path(&self) -> &Path {
        &self.source_of("routes").path
    }

    /// The fleet this node belongs to: `[control]` with a store.
    pub fn fleet(&self) -> Option<&ControlSection> {
        self.control
            .as_ref()
            .map(Spanned::get_ref)
            .filter(|c| c.store.is_some())
    }
}

fn default_true() -> bool {
    true
}

// ---------------------------------------------------------------------------------------------
// Values that check themselves
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Read and check a configuration file.
pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    parse(path, &read_text(path)?)
}

/// A configuration file's text: at most [`MAX_CONFIG_FILE`] bytes of UTF-8.
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = read_capped(path, MAX_CONFIG_FILE).map_err(read_error)?;
    String::from_utf8(bytes).map_err(|_| {
        read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8 text",
        ))
    })
}

/// Parse and check configuration text; `path` is only used in messages.
pub fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    let config = parse_part(path, text, Part::Whole).map_err(many)?;
    check(&config)
        .map_err(|(span, key, message)| config.locate(LocatedError::new(span, key, message)))?;
    Ok(config)
}

/// A node's sections (`node`, with its path for messages) and a policy document (`policy`,
/// named `policy_path` in messages) parsed apart, each refusing the other's sections, and
/// checked together: the errors of both, each located in its own text.
pub fn parse_split(node: (&Path, &str), policy: (&Path, &str)) -> Result<FileConfig, ConfigError> {
    let (node, policy) = match (
        parse_part(node.0, node.1, Part::Node),
        parse_part(policy.0, policy.1, Part::Policy),
    ) {
        (Ok(node), Ok(policy)) => (node, policy),
        (node, policy) => {
            let mut all = node.err().unwrap_or_default();
            all.extend(policy.err().unwrap_or_default());
            return Err(many(all));
        }
    };
    let config = FileConfig {
        server: node.server,
        access_log: node.access_log,
        admin: node.admin,
        metrics: node.metrics,
        tls: node.tls,
        control: node.control,
        timeouts: policy.timeouts,
        limits: policy.limits,
        rate_limit: policy.rate_limit,
        cors: policy.cors,
        security_headers: policy.security_headers,
        tracing: policy.tracing,
        cache: policy.cache,
        auth: policy.auth,
        routes: policy.routes,
        source: node.source,
        policy_source: Some(policy.source),
    };
    check(&config)
        .map_err(|(span, key, message)| config.locate(LocatedError::new(span, key, message)))?;
    Ok(config)
}

/// Which sections a text may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// A whole file: all of them, unless its `[control]` names a store (a fleet's node),
    /// when the policy sections belong to the store.
    Whole,
    /// A node's own sections only.
    Node,
    /// A policy document: no node section.
    Policy,
}

fn many(mut all: Vec<ConfigError>) -> ConfigError {
    if all.len() == 1 {
        all.remove(0)
    } else {
        ConfigError::Many(all)
    }
}

/// Parse a text into a config, each section on its own first so that one run reports every
/// mistake; not yet the checks that span several sections.
fn parse_part(path: &Path, text: &str, part: Part) -> Result<FileConfig, Vec<ConfigError>> {
    let located = |span: Option<std::ops::Range<usize>>, key: String, message: String| {
        let (line, column) = line_column(text, span.map_or(0, |s| s.start));
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            key,
            message,
        }
    };
    let root = toml::de::DeTable::parse(text).map_err(|e| {
        vec![located(
            e.span(),
            "(syntax)".to_string(),
            e.message().to_string(),
        )]
    })?;
    let mut errors: Vec<(Option<std::ops::Range<usize>>, String, String)> = section_errors(&root);
    errors.extend(misplaced_sections(root.get_ref(), part));
    if !errors.is_empty() {
        errors.sort_by_key(|(span, _, _)| span.as_ref().map_or(0, |s| s.start));
        return Err(errors
            .into_iter()
            .map(|(span, key, message)| located(span, key, message))
            .collect());
    }
    let mut config: FileConfig = serde_path_to_error::deserialize(toml::Deserializer::from(root))
        .map_err(|e| {
        let key = key_of(&e.path().to_string(), e.inner().message());
        vec![located(
            e.inner().span(),
            key,
            e.inner().message().to_string(),
        )]
    })?;
    config.source = Source {
        path: path.to_path_buf(),
        text: text.to_string(),
    };
    Ok(config)
}

/// The sections a part may not hold, each named where it is.
fn misplaced_sections(
    root: &toml::de::DeTable<'_>,
    part: Part,
) -> Vec<(Option<std::ops::Range<usize>>, String, String)> {
    let in_fleet = || {
        root.iter().any(|(key, value)| {
            key.get_ref().as_ref() == "control"
                && value
                    .get_ref()
                    .as_table()
                    .is_some_and(|t| t.iter().any(|(k, _)| k.get_ref().as_ref() == "store"))
        })
    };
    let refuse_policy = match part {
        Part::Whole => in_fleet(),
        Part::Node => true,
        Part::Policy => false,
    };
    let mut errors = Vec::new();
    for (key, _) in root.iter() {
        let name = key.get_ref().as_ref();
        let node = NODE_SECTIONS.contains(&name);
        if node && part == Part::Policy {
            errors.push((
                Some(key.span()),
                name.to_string(),
                format!("[{name}] is a node's own section: it stays in each node's file and is not part of the policy document"),
            ));
        } else if !node && refuse_policy {
            errors.push((
                Some(key.span()),
                name.to_string(),
                format!("[{name}] is part of the policy document, which this node takes from its fleet's store ([control] store): remove it from this file and apply it with PUT /config"),
            ));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::Path;

    use std::time::Duration;

    fn parse_str(text: &str) -> Result<FileConfig, ConfigError> {
        parse(Path::new("test.toml"), text)
    }

    fn error_of(text: &str) -> String {
        parse_str(text).unwrap_err().to_string()
    }

    const ROUTE: &str = "[[routes]]\nprefix = \"/users\"\nupstreams = [\"127.0.0.1:7002\"]\n";

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in [
            "",
            "15",
            "s",
            "1.5s",
            "-1s",
            "15x",
            " 15s",
            "15 s",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn an_idle_timeout_is_a_duration_or_off() {
        assert_eq!("off".parse(), Ok(IdleTimeout(None)));
        assert_eq!(
            "90s".parse(),
            Ok(IdleTimeout(Some(Duration::from_secs(90))))
        );
        for bad in ["0s", "Off", "none", "", "15"] {
            assert!(
                bad.parse::<IdleTimeout>().is_err(),
                "{bad:?} should be refused"
            );
        }
        let err = error_of(&format!("[timeouts]\nupstream_idle = \"0s\"\n{ROUTE}"));
        assert!(
            err.contains("test.toml:2") && err.contains("timeouts.upstream_idle"),
            "{err}"
        );
        assert!(err.contains("or \"off\""), "{err}");
    }

    #[test]
    fn prefixes_are_normalised_and_checked() {
        assert_eq!("/users/".parse::<Prefix>().unwrap().0, "/users");
        assert_eq!("/".parse::<Prefix>().unwrap().0, "/");
        assert_eq!("/a/b".parse::<Prefix>().unwrap().0, "/a/b");
        assert!("/é".parse::<Prefix>().unwrap_err().contains("ASCII"));
        for bad in [
            "users", "/a//b", "/a/../b", "/a/./b", "/a?x=1", "/a b", "/a%2F", "",
        ] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn upstreams_accept_url_or_host_port() {
        let u: Upstream = "http://127.0.0.1:7002".parse().unwrap();
        assert_eq!(u.addr, "127.0.0.1:7002".parse().unwrap());
        assert_eq!(u.authority, "127.0.0.1:7002");
        let u: Upstream = "127.0.0.1:7002".parse().unwrap();
        assert_eq!(u.authority, "127.0.0.1:7002");
        let u: Upstream = "http://[::1]:8080".parse().unwrap();
        assert_eq!(u.addr, "[::1]:8080".parse().unwrap());
        let u: Upstream = "http://127.0.0.1".parse().unwrap();
        assert_eq!(u.authority, "127.0.0.1:80");
        for bad in [
            "ftp://x:1",
            "http://",
            "http://127.0.0.1:7002/api",
            "http://a@b:1",
            "::",
        ] {
            assert!(
                bad.parse::<Upstream>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let c = parse_str(
            r#"
[server]
listen = ["0.0.0.0:5000"]
threads = 2
trusted_proxies = ["10.0.0.0/8", "127.0.0.1"]
[access_log]
format = "json"
[timeouts]
connect = "2s"
read = "15s"
[rate_limit]
requests = 20
window = "1m"
[cors]
allow_origins = ["https://a.example"]
allow_credentials = true
max_age = 600
[security_headers]
remove = ["Server"]
set = { "Content-Security-Policy" = "default-src 'none'" }
[[routes]]
prefix = "/users"
upstreams = ["http://127.0.0.1:7002"]
timeouts = { read = "30s" }
rate_limit = { requests = 100, window = "1m" }
[[routes]]
prefix = "/orders"
upstreams = ["127.0.0.1:7003"]
rate_limit = false
"#,
        )
        .unwrap();
        assert_eq!(c.routes.len(), 2);
        assert!(matches!(c.routes[1].rate_limit, Some(RouteRateLimit::Off)));
        assert!(matches!(
            c.routes[0].rate_limit,
            Some(RouteRateLimit::Own(RateLimitPolicy {
                requests: Count(100),
                ..
            }))
        ));
        assert_eq!(c.access_log.format, LogFormat::Json);
        assert_eq!(c.cors.max_age, Some(MaxAge(600)));
        assert_eq!(c.server.trusted_proxies.len(), 2);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = error_of(&format!("{ROUTE}strip_prefx = true\n"));
        assert!(e.starts_with("test.toml:4:1:"), "{e}");
        assert!(e.contains("key `routes[0].strip_prefx`"), "{e}");
    }

    #[test]
    fn bad_duration_names_line_and_key() {
        let e = error_of("[timeouts]\nconnect = \"2s\"\nread = \"15x\"\n");
        assert!(e.starts_with("test.toml:3:8:"), "{e}");
        assert!(e.contains("key `timeouts.read`"), "{e}");
        assert!(e.contains("invalid duration \"15x\""), "{e}");
    }

    #[test]
    fn bad_upstream_names_line_and_key() {
        let e =
            error_of("[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\", \"ftp://x\"]\n");
        assert!(e.starts_with("test.toml:3:"), "{e}");
        assert!(e.contains("key `routes[0].upstreams[1]`"), "{e}");
        assert!(e.contains("invalid upstream \"ftp://x\""), "{e}");
    }

    #[test]
    fn empty_upstream_list_names_line_and_key() {
        let e = error_of("[[routes]]\nprefix = \"/a\"\nupstreams = []\n");
        assert!(e.starts_with("test.toml:3:"), "{e}");
        assert!(e.contains("key `routes[0].upstreams`"), "{e}");
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn duplicate_prefix_names_the_second_one() {
        let e = error_of(&format!("{ROUTE}{ROUTE}"));
        assert!(e.starts_with("test.toml:5:10:"), "{e}");
        assert!(e.contains("key `routes[1].prefix`"), "{e}");
        assert!(e.contains("routes[0] already has it"), "{e}");
    }

    #[test]
    fn duplicate_prefix_is_found_after_normalisation() {
        let text =
            format!("{ROUTE}[[routes]]\nprefix = \"/users/\"\nupstreams = [\"127.0.0.1:1\"]\n");
        assert!(error_of(&text).contains("duplicate prefix"));
    }

    #[test]
    fn missing_upstreams_is_named() {
        let e = error_of("[[routes]]\nprefix = \"/a\"\n");
        assert!(e.contains("key `routes[0].upstreams`"), "{e}");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = error_of("[server\nlisten = 1\n");
        assert!(e.starts_with("test.toml:1:"), "{e}");
    }

    #[test]
    fn wrong_types_and_ranges_are_refused() {
        for (text, key) in [
            ("[server]\nthreads = 0\n", "server.threads"),
            ("[server]\nlisten = [\"localhost\"]\n", "server.listen[0]"),
            ("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n", "server.trusted_proxies[0]"),
            ("[rate_limit]\nrequests = 0\nwindow = \"1m\"\n", "rate_limit.requests"),
            ("[rate_limit]\nrequests = 5\nwindow = \"500ms\"\n", "rate_limit.window"),
            ("[access_log]\nformat = \"xml\"\n", "access_log.format"),
            ("[cors]\nallow_origins = [\"https://a.example/\"]\n", "cors.allow_origins[0]"),
            ("[security_headers]\nremove = [\"Bad Header\"]\n", "security_headers.remove[0]"),
            (
                "[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\nrate_limit = \"yes\"\n",
                "routes[0].rate_limit",
            ),
        ] {
            let e = error_of(text);
            assert!(e.contains(&format!("key `{key}`")), "{text:?} gave {e}");
        }
    }

    #[test]
    fn weighted_upstreams_and_balancing_parse() {
        let c = parse_str(
            "[[routes]]\nprefix = \"/u\"\nupstreams = [\"127.0.0.1:1\", { url = \"http://127.0.0.1:2\", weight = 3 }]\nbalance = \"hash\"\nhash_key = \"header:X-User\"\nretries = 1\nhealth_check = { interval = \"1s\", path = \"/healthz\" }\npassive = { failures = 2, cooldown = \"5s\" }\n",
        )
        .unwrap();
        let r = &c.routes[0];
        let weights: Vec<u32> = r.upstreams.get_ref().0.iter().map(|u| u.weight).collect();
        assert_eq!(weights, vec![1, 3]);
        assert_eq!(*r.balance.get_ref(), BalanceKind::Hash);
        assert_eq!(
            r.hash_key.as_ref().map(|k| k.get_ref().clone()),
            Some(HashKeySpec::Header("x-user".into()))
        );
        assert_eq!(r.retries, Retries(1));
        let hc = r.health_check.as_ref().unwrap();
        assert_eq!((hc.healthy.0, hc.unhealthy.0), (2, 3));
        assert_eq!(hc.timeout, Timeout(Duration::from_secs(1)));
        assert_eq!(r.passive.unwrap().failures, Threshold(2));
    }

    #[test]
    fn balancing_settings_must_fit_together() {
        let route = "[[routes]]\nprefix = \"/u\"\nupstreams = [\"127.0.0.1:1\"]\n";
        for (extra, key) in [
            ("hash_key = \"path\"\n", "routes[0].hash_key"),
            ("balance = \"hash\"\n", "routes[0].balance"),
            ("retries = 11\n", "routes[0].retries"),
            (
                "passive = { cooldown = \"10ms\" }\n",
                "routes[0].passive.cooldown",
            ),
            (
                "health_check = { path = \"healthz\" }\n",
                "routes[0].health_check.path",
            ),
            (
                "health_check = { healthy = 0 }\n",
                "routes[0].health_check.healthy",
            ),
        ] {
            let e = error_of(&format!("{route}{extra}"));
            assert!(e.contains(&format!("key `{key}`")), "{extra:?} gave {e}");
        }
        let twice =
            "[[routes]]\nprefix = \"/u\"\nupstreams = [\"127.0.0.1:1\", \"http://127.0.0.1:1\"]\n";
        assert!(error_of(twice).contains("already upstreams[0]"));
        let ip_tls = "[[routes]]\nprefix = \"/u\"\nupstreams = [\"https://127.0.0.1:1\"]\n";
        assert!(error_of(ip_tls).contains("tls_verify = false"));
        let ip_tls_unverified = format!("{ip_tls}tls_verify = false\n");
        assert!(parse_str(&ip_tls_unverified).is_ok());
    }

    #[test]
    fn credentials_with_wildcard_origin_are_refused() {
        let e = error_of("[cors]\nallow_credentials = true\n");
        assert!(e.contains("key `cors.allow_credentials`"), "{e}");
        assert!(e.starts_with("test.toml:2:"), "{e}");
    }

    #[test]
    fn a_policy_document_apart_is_checked_with_the_node_and_located_in_its_own_text() {
        let node = "[server]\nlisten = [\"127.0.0.1:5000\"]\n";
        let policy =
            "[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\nauth = \"nobody\"\n";
        let e = parse_split((Path::new("node.toml"), node), (Path::new("doc"), policy))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("doc:4:"), "{e}");
        assert!(e.contains("unknown authenticator"), "{e}");
        let c = parse_split(
            (Path::new("node.toml"), node),
            (
                Path::new("doc"),
                "[rate_limit]\nrequests = 5\nwindow = \"1m\"\n",
            ),
        )
        .unwrap();
        assert_eq!(c.server.listen.get_ref()[0].0.port(), 5000);
        assert!(c.rate_limit.is_some());
        assert_eq!(c.policy_path(), Path::new("doc"));
        // each part refuses the other's sections, both reported in one run
        let e = parse_split(
            (Path::new("node.toml"), "[cors]\nmax_age = 1\n"),
            (Path::new("doc"), "\n[tls]\nlisten = []\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("node.toml:1:") && e.contains("[cors] is part of the policy document"),
            "{e}"
        );
        assert!(
            e.contains("doc:2:") && e.contains("[tls] is a node's own section"),
            "{e}"
        );
    }

    #[test]
    fn a_fleet_nodes_file_holds_only_its_own_sections() {
        let control = "[control]\nstore = \"redis://127.0.0.1:6379\"\nfleet = \"f\"\n";
        assert!(parse_str(control).unwrap().fleet().is_some());
        let e = error_of(&format!("{control}{ROUTE}"));
        assert!(
            e.starts_with("test.toml:4:") && e.contains("key `routes`"),
            "{e}"
        );
        for (text, key) in [
            (
                "[control]\nstore = \"redis://127.0.0.1:6379\"\n",
                "control.store",
            ),
            ("[control]\nfleet = \"f\"\n", "control.fleet"),
            ("[control]\ncache_file = \"/tmp/x\"\n", "control.cache_file"),
            (
                "[control]\nstore = \"redis://h:1\"\nfleet = \"a b\"\n",
                "control.fleet",
            ),
        ] {
            let e = error_of(text);
            assert!(e.contains(&format!("key `{key}`")), "{text:?} gave {e}");
        }
    }

    #[test]
    fn an_empty_file_is_a_valid_config() {
        let c = parse_str("").unwrap();
        assert!(c.routes.is_empty());
        assert!(c.rate_limit.is_none());
        assert_eq!(c.server.listen.get_ref(), default_listen().get_ref());
    }
}
