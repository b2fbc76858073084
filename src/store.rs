//! The way to a Redis store, for the shared rate limits and the fleet's policy document:
//! one node, a Redis Cluster, or the master that Sentinel names; plain or TLS, with a CA of
//! the config's if it says so.

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, IntoConnectionInfo, TlsCertificates, TlsMode};

use crate::config::{StoreServers, StoreSpec};

/// Where the store is, ready to connect.
pub struct Target {
    /// As logs and the status show it: without passwords.
    shown: String,
    servers: Servers,
}

enum Servers {
    Node(redis::Client),
    /// The cluster, and a client for each seed node (a subscription needs one node).
    Cluster(ClusterClient, Vec<redis::Client>),
    /// Asked for the master on every connect: after a failover it is another server.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// A connection: one multiplexed connection (to the node or the current master), or the
/// cluster's, which routes each command by its key.
#[derive(Clone)]
pub enum Link {
    Plain(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// A URL without its password, for logs and the status.
pub fn shown_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        Ok(())
    } else {
        Err(format!(
            "\"{}\" is not a Redis URL: write redis://HOST:PORT/DB or rediss:// for TLS",
            shown_url(url)
        ))
    }
}

/// The CA file's certificates, checked to be PEM certificates.
fn read_ca(path: &str) -> Result<TlsCertificates, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read the CA file {path}: {e}"))?;
    match openssl::x509::X509::stack_from_pem(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        }),
        _ => Err(format!(
            "the CA file {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )),
    }
}

impl Target {
    /// Check the spec and make the clients; nothing connects yet.
    pub fn new(spec: &StoreSpec, timeout: Duration) -> Result<Target, String> {
        let urls: Vec<&String> = match &spec.servers {
            StoreServers::Node(url) => vec![url],
            StoreServers::Cluster(nodes) => nodes.iter().collect(),
            StoreServers::Sentinel { sentinels, .. } => sentinels.iter().collect(),
        };
        for url in &urls {
            check_url(url)?;
        }
        let tls = urls.iter().any(|u| u.starts_with("rediss://"));
        let certs = match &spec.ca {
            Some(_) if !tls => {
                return Err(
                    "ca is for TLS: the store's URLs must start with rediss:// to use it".into(),
                )
            }
            Some(path) => Some(read_ca(path)?),
            None => None,
        };
        let unusable = |url: &str, e: redis::RedisError| {
            format!("\"{}\" is not a usable Redis URL: {e}", shown_url(url))
        };
        let listed = |urls: &[String]| {
            urls.iter()
                .map(|u| shown_url(u))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (shown, servers) = match &spec.servers {
            StoreServers::Node(url) => {
                let client = match certs {
                    Some(certs) => redis::Client::build_with_tls(url.as_str(), certs),
                    None => redis::Client::open(url.as_str()),
                }
                .map_err(|e| unusable(url, e))?;
                (shown_url(url), Servers::Node(client))
            }
            StoreServers::Cluster(nodes) => {
                let mut builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(1);
                let mut seeds = Vec::with_capacity(nodes.len());
                for url in nodes {
                    seeds.push(
                        match &certs {
                            Some(certs) => {
                                redis::Client::build_with_tls(url.as_str(), certs.clone())
                            }
                            None => redis::Client::open(url.as_str()),
                        }
                        .map_err(|e| unusable(url, e))?,
                    );
                }
                if let Some(certs) = certs {
                    builder = builder.certs(certs);
                }
                let client = builder
                    .build()
                    .map_err(|e| format!("the cluster nodes are not usable: {e}"))?;
                (
                    format!("cluster {}", listed(nodes)),
                    Servers::Cluster(client, seeds),
                )
            }
            StoreServers::Sentinel { sentinels, master } => {
                let mut addrs = Vec::new();
                let mut credentials = None;
                for url in sentinels {
                    let info = url
                        .as_str()
                        .into_connection_info()
                        .map_err(|e| unusable(url, e))?;
                    addrs.push(info.addr().clone());
                    let settings = info.redis_settings();
                    if let Some(password) = settings.password() {
                        credentials = Some((
                            settings.username().map(str::to_string),
                            password.to_string(),
                        ));
                    }
                }
                let mut builder =
                    SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)
                        .map_err(|e| format!("the sentinels are not usable: {e}"))?;
                // a password in the sentinels' URLs is theirs
                if let Some((username, password)) = credentials {
                    if let Some(username) = username {
                        builder = builder.set_client_to_sentinel_username(username);
                    }
                    builder = builder.set_client_to_sentinel_password(password);
                }
                if tls {
                    builder = builder
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                        .set_client_to_redis_tls_mode(TlsMode::Secure);
                }
                if let Some(certs) = certs {
                    builder = builder
                        .set_client_to_sentinel_certificates(certs.clone())
                        .set_client_to_redis_certificates(certs);
                }
                let client = builder
                    .build()
                    .map_err(|e| format!("the sentinels are not usable: {e}"))?;
                (
                    format!("sentinel master {master} via {}", listed(sentinels)),
                    Servers::Sentinel(tokio::sync::Mutex::new(client)),
                )
            }
        };
        Ok(Target { shown, servers })
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Connect, within `timeout` twice over (a Sentinel setup asks a sentinel first).
    pub async fn connect(&self, timeout: Duration) -> Result<Link, String> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let made = tokio::time::timeout(timeout * 2, async {
            match &self.servers {
                Servers::Node(client) => client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Link::Plain),
                Servers::Cluster(client, _) => {
                    client.get_async_connection().await.map(Link::Cluster)
                }
                Servers::Sentinel(client) => client
                    .lock()
                    .await
                    .get_async_connection_with_config(&config)
                    .await
                    .map(Link::Plain),
            }
        })
        .await
        .map_err(|_| format!("cannot connect within {:?}", timeout * 2))?;
        made.map_err(|e| explain(&e))
    }
}

impl Target {
    /// A subscriber's connection: to the node, to the master Sentinel names now, or to the
    /// first seed of a cluster that answers (a cluster delivers every message on every
    /// node).
    pub async fn pubsub(&self, timeout: Duration) -> Result<redis::aio::PubSub, String> {
        let made = tokio::time::timeout(timeout * 2, async {
            match &self.servers {
                Servers::Node(client) => client.get_async_pubsub().await,
                Servers::Sentinel(client) => {
                    let client = client.lock().await.async_get_client().await?;
                    client.get_async_pubsub().await
                }
                Servers::Cluster(_, seeds) => {
                    let mut last = None;
                    for seed in seeds {
                        match seed.get_async_pubsub().await {
                            Ok(pubsub) => return Ok(pubsub),
                            Err(e) => last = Some(e),
                        }
                    }
                    Err(last.unwrap_or_else(|| {
                        redis::RedisError::from((redis::ErrorKind::Client, "no seed node"))
                    }))
                }
            }
        })
        .await
        .map_err(|_| format!("cannot subscribe within {:?}", timeout * 2))?;
        made.map_err(|e| explain(&e))
    }
}

/// A store error as the log and the status say it: a certificate that is not trusted is
/// named as such, with what to do.
pub fn explain(e: &redis::RedisError) -> String {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") {
        format!(
            "TLS: the store's certificate could not be verified ({text}); set the store's ca to the file of the CA that signed it"
        )
    } else {
        text
    }
}

impl Link {
    /// Whether commands must be grouped by hash slot.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Link::Cluster(_))
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Link::Plain(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Link::Plain(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Plain(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_its_password() {
        assert_eq!(
            shown_url("redis://:s3cret@127.0.0.1:6379/0"),
            "redis://***@127.0.0.1:6379/0"
        );
        assert_eq!(shown_url("redis://127.0.0.1/1"), "redis://127.0.0.1/1");
    }

    #[test]
    fn bad_targets_say_what_is_wrong() {
        let t = Duration::from_millis(10);
        let err = |spec: &StoreSpec| Target::new(spec, t).err().unwrap();
        assert!(err(&StoreSpec::node("http://x")).contains("is not a Redis URL"));
        let mut with_ca = StoreSpec::node("redis://127.0.0.1:6379");
        with_ca.ca = Some("/nonexistent".into());
        assert!(err(&with_ca).contains("rediss://"));
        with_ca.servers = StoreServers::Node("rediss://127.0.0.1:6379".into());
        assert!(err(&with_ca).contains("cannot read the CA file /nonexistent"));
        let cluster = StoreSpec {
            servers: StoreServers::Cluster(vec!["redis://127.0.0.1:1".into(), "x".into()]),
            ca: None,
        };
        assert!(err(&cluster).contains("\"x\" is not a Redis URL"));
        let sentinel = StoreSpec {
            servers: StoreServers::Sentinel {
                sentinels: vec!["redis://:pw@127.0.0.1:26379".into()],
                master: "m".into(),
            },
            ca: None,
        };
        let target = Target::new(&sentinel, t).unwrap();
        assert_eq!(
            target.shown(),
            "sentinel master m via redis://***@127.0.0.1:26379"
        );
    }
}
