//! OAuth 2.0 Token Introspection (RFC 7662): the bearer token is POSTed to the endpoint
//! with the gateway's client credentials (HTTP Basic, RFC 6749 §2.3.1) and the answer says
//! whether it is active, for whom and with which scopes.
//!
//! Answers are cached under the token's SHA-256, never the token: an active token until
//! the smaller of `cache_ttl` and its `exp`, an inactive one for 10 s. An endpoint that is
//! down, answers non-2xx or sends something other than an RFC 7662 object fails closed
//! (503), and is not cached.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ring::digest;
use serde_json::{Map, Value};

use super::cache::{Digest, ShardedCache};
use super::credentials::bearer;
use super::fetch::{describe, read_success};
use super::jwt::claim_value;
use super::{Admitted, Clock, Denial};

/// Inactive answers are reused this long (or `cache_ttl` if shorter).
const INACTIVE_TTL_MS: u64 = 10_000;
/// Cached answers, across all shards.
const CACHE_CAPACITY: usize = 100_000;
/// An introspection answer larger than this is refused.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// At most one warning about a failing endpoint per this many ms.
const WARN_EVERY_MS: u64 = 10_000;

/// What the cache holds for a token.
#[derive(Clone)]
enum Verdict {
    Active {
        subject: Arc<str>,
        forward: Arc<[(HeaderName, HeaderValue)]>,
    },
    Inactive,
    MissingScope,
}

pub(crate) struct IntrospectorSettings<'a> {
    pub name: &'a str,
    pub url: reqwest::Url,
    pub client: reqwest::Client,
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub timeout: Duration,
    pub cache_ttl: Duration,
    pub required_scopes: Vec<Box<str>>,
    pub forward: Vec<(Box<str>, HeaderName)>,
    pub clock: Clock,
}

/// A compiled `type = "oauth2_introspection"`.
pub(crate) struct Introspector {
    name: Arc<str>,
    url: reqwest::Url,
    client: reqwest::Client,
    /// `Basic base64(client_id:secret)`, marked sensitive.
    authorization: HeaderValue,
    timeout: Duration,
    cache_ttl_ms: u64,
    required_scopes: Vec<Box<str>>,
    forward: Vec<(Box<str>, HeaderName)>,
    cache: ShardedCache<Verdict>,
    clock: Clock,
    last_warning_ms: AtomicU64,
}

impl Introspector {
    pub fn new(s: IntrospectorSettings<'_>) -> Result<Introspector, String> {
        let encode =
            |text: &str| form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
        let credentials = format!("{}:{}", encode(s.client_id), encode(s.client_secret));
        let mut authorization =
            HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(credentials)))
                .map_err(|_| "cannot build the Basic credentials".to_string())?;
        authorization.set_sensitive(true);
        Ok(Introspector {
            name: Arc::from(s.name),
            url: s.url,
            client: s.client,
            authorization,
            timeout: s.timeout,
            cache_ttl_ms: s.cache_ttl.as_millis() as u64,
            required_scopes: s.required_scopes,
            forward: s.forward,
            cache: ShardedCache::new(CACHE_CAPACITY),
            clock: s.clock,
            last_warning_ms: AtomicU64::new(0),
        })
    }

    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Admitted, Denial> {
        let token = bearer(headers).ok_or(Denial::Unauthorized)?;
        let mut key: Digest = [0; 32];
        key.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
        let now = self.clock.now_ms();
        let verdict = match self.cache.get(&key, now) {
            Some(v) => v,
            None => {
                let (verdict, ttl_ms) = self.introspect(token, now).await?;
                self.cache
                    .insert(key, verdict.clone(), now.saturating_add(ttl_ms), now);
                verdict
            }
        };
        match verdict {
            Verdict::Active { subject, forward } => Ok(Admitted {
                subject: subject.to_string(),
                forward: forward.to_vec(),
            }),
            Verdict::Inactive => Err(Denial::Unauthorized),
            Verdict::MissingScope => Err(Denial::Forbidden),
        }
    }

    /// Ask the endpoint; the verdict and how long it may be reused.
    async fn introspect(&self, token: &str, now: u64) -> Result<(Verdict, u64), Denial> {
        let outcome = match tokio::time::timeout(self.timeout, self.call(token)).await {
            Ok(Ok(answer)) => self.judge(&answer, now),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("timed out after {:?}", self.timeout)),
        };
        outcome.map_err(|e| {
            self.warn(&e, now);
            Denial::Unavailable
        })
    }

    async fn call(&self, token: &str) -> Result<Map<String, Value>, String> {
        let mut body = String::with_capacity(token.len() + 48);
        body.push_str("token=");
        body.extend(form_urlencoded::byte_serialize(token.as_bytes()));
        body.push_str("&token_type_hint=access_token");
        let response = self
            .client
            .post(self.url.clone())
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(describe)?;
        let answer = read_success(response, MAX_ANSWER_BYTES).await?;
        serde_json::from_slice(&answer).map_err(|_| "the answer is not a JSON object".to_string())
    }

    /// Read an RFC 7662 answer.
    fn judge(&self, answer: &Map<String, Value>, now: u64) -> Result<(Verdict, u64), String> {
        let active = answer
            .get("active")
            .and_then(Value::as_bool)
            .ok_or("the answer has no boolean `active`")?;
        let inactive = (Verdict::Inactive, INACTIVE_TTL_MS.min(self.cache_ttl_ms));
        if !active {
            return Ok(inactive);
        }
        let exp_ms = match answer.get("exp") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_f64().ok_or("`exp` is not a number")? * 1000.0),
        };
        let ttl = match exp_ms {
            Some(exp) if exp <= now as f64 => return Ok(inactive),
            Some(exp) => self.cache_ttl_ms.min((exp - now as f64) as u64),
            None => self.cache_ttl_ms,
        };
        let granted = answer.get("scope").and_then(Value::as_str).unwrap_or("");
        let has_all = self
            .required_scopes
            .iter()
            .all(|r| granted.split(' ').any(|g| g == &**r));
        if !has_all {
            return Ok((Verdict::MissingScope, ttl));
        }
        let subject = ["sub", "username", "client_id"]
            .iter()
            .find_map(|k| {
                answer
                    .get(*k)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or("");
        let forward: Vec<(HeaderName, HeaderValue)> = self
            .forward
            .iter()
            .filter_map(|(claim, name)| {
                let value = match answer.get(&**claim)? {
                    Value::String(s) => claim_value(s)?,
                    Value::Number(n) => claim_value(&n.to_string())?,
                    Value::Bool(b) => HeaderValue::from_static(if *b { "true" } else { "false" }),
                    _ => return None,
                };
                Some((name.clone(), value))
            })
            .collect();
        Ok((
            Verdict::Active {
                subject: Arc::from(subject),
                forward: forward.into(),
            },
            ttl,
        ))
    }

    /// Warn about a failing endpoint, once per 10 s: an outage must not flood the log.
    fn warn(&self, problem: &str, now: u64) {
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        if now < last.saturating_add(WARN_EVERY_MS) && last != 0 {
            return;
        }
        if self
            .last_warning_ms
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            log::warn!(
                "auth.{}: the introspection endpoint {} failed: {problem}; answering 503",
                self.name,
                self.url
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::auth::testkit::*;
    use crate::auth::{Clock, Rejection};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// What the test endpoint answers per token, and what it saw.
    #[derive(Default)]
    struct Endpoint {
        answers: Vec<(String, (u16, String))>,
        bodies: Vec<String>,
        bad_credentials: usize,
    }

    fn basic() -> String {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("pylon:client-s3cr3t")
        )
    }

    async fn endpoint(answers: &[(&str, u16, &str)]) -> (TestServer, Arc<Mutex<Endpoint>>) {
        let state = Arc::new(Mutex::new(Endpoint {
            answers: answers
                .iter()
                .map(|(t, s, b)| (t.to_string(), (*s, b.to_string())))
                .collect(),
            ..Endpoint::default()
        }));
        let shared = state.clone();
        let expected = basic();
        let server = serve(move |req| {
            let mut st = shared.lock().unwrap();
            let ok = req.method == "POST"
                && req
                    .headers
                    .get("authorization")
                    .is_some_and(|v| *v == *expected)
                && req
                    .headers
                    .get("content-type")
                    .is_some_and(|v| v == "application/x-www-form-urlencoded");
            st.bodies.push(req.body.clone());
            if !ok {
                st.bad_credentials += 1;
                return (401, "{\"error\":\"invalid_client\"}".to_string());
            }
            let token = form_urlencoded::parse(req.body.as_bytes())
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            st.answers
                .iter()
                .find(|(t, _)| *t == token)
                .map(|(_, a)| a.clone())
                .unwrap_or((200, "{\"active\":false}".to_string()))
        })
        .await;
        (server, state)
    }

    fn section(url: &str, extra: &str) -> String {
        format!(
            "[auth.corp]\ntype = \"oauth2_introspection\"\nintrospection_url = \"{url}\"\nclient_id = \"pylon\"\nclient_secret_env = \"CLIENT_SECRET\"\ncache_ttl = \"60s\"\ntimeout = \"2s\"\n{extra}"
        )
    }

    #[tokio::test]
    async fn active_tokens_are_admitted_and_cached() {
        let now = 1_700_000_000u64;
        let active = format!(
            "{{\"active\":true,\"scope\":\"profile orders:read\",\"sub\":\"u-42\",\"username\":\"alice\",\"client_id\":\"app\",\"exp\":{},\"tenant\":\"t1\",\"level\":3}}",
            now + 3600
        );
        let (server, state) = endpoint(&[("tok+en/1=", 200, &active)]).await;
        let clock = Clock::fixed(Duration::from_secs(now));
        let auths = build(
            &section(
                &server.url("/introspect"),
                "required_scopes = [\"orders:read\"]\nstrip_credentials = true\nforward_claims = { tenant = \"X-Tenant\", level = \"X-Level\", username = \"X-User\" }\n",
            ),
            clock.clone(),
        );
        let auth = auths.get("corp").unwrap();
        let req = bearer_request("tok+en/1=");
        for _ in 0..2 {
            let id = auth.authenticate(&req).await.unwrap();
            assert_eq!(id.key, "corp:u-42");
            let mut shown: Vec<String> = id
                .forward
                .iter()
                .map(|(n, v)| format!("{n}={}", v.to_str().unwrap()))
                .collect();
            shown.sort();
            assert_eq!(shown, vec!["x-level=3", "x-tenant=t1", "x-user=alice"]);
        }
        assert_eq!(
            server.hits(),
            1,
            "the second check is answered from the cache"
        );
        {
            let st = state.lock().unwrap();
            assert_eq!(st.bad_credentials, 0);
            assert_eq!(
                st.bodies[0],
                "token=tok%2Ben%2F1%3D&token_type_hint=access_token"
            );
        }
        // the cache keeps it for cache_ttl, then asks again
        clock.advance(Duration::from_secs(59));
        auth.authenticate(&req).await.unwrap();
        assert_eq!(server.hits(), 1);
        clock.advance(Duration::from_secs(2));
        auth.authenticate(&req).await.unwrap();
        assert_eq!(server.hits(), 2);

        let mut headers = req.headers.clone();
        headers.insert("x-kept", "1".parse().unwrap());
        auth.strip_credentials(&mut headers);
        assert!(!headers.contains_key("authorization"));
        assert!(headers.contains_key("x-kept"));
    }

    #[tokio::test]
    async fn the_cache_never_outlives_the_token() {
        let now = 1_700_000_000u64;
        let active = format!(
            "{{\"active\":true,\"username\":\"bob\",\"exp\":{}}}",
            now + 5
        );
        let (server, _) = endpoint(&[("short", 200, &active)]).await;
        let clock = Clock::fixed(Duration::from_secs(now));
        let auths = build(&section(&server.url("/i"), ""), clock.clone());
        let auth = auths.get("corp").unwrap();
        assert_eq!(
            auth.authenticate(&bearer_request("short"))
                .await
                .unwrap()
                .subject,
            "bob"
        );
        clock.advance(Duration::from_secs(4));
        auth.authenticate(&bearer_request("short")).await.unwrap();
        assert_eq!(server.hits(), 1);
        // past exp the endpoint is asked again; an expired "active" answer is refused
        clock.advance(Duration::from_secs(2));
        assert!(matches!(
            auth.authenticate(&bearer_request("short")).await,
            Err(Rejection::Unauthorized { .. })
        ));
        assert_eq!(server.hits(), 2);
    }

    #[tokio::test]
    async fn inactive_tokens_are_unauthorized_and_cached_briefly() {
        let (server, _) = endpoint(&[("dead", 200, "{\"active\":false}")]).await;
        let clock = Clock::fixed(Duration::from_secs(1_700_000_000));
        let auths = build(&section(&server.url("/i"), ""), clock.clone());
        let auth = auths.get("corp").unwrap();
        for _ in 0..3 {
            match auth.authenticate(&bearer_request("dead")).await {
                Err(Rejection::Unauthorized { challenge }) => {
                    assert_eq!(challenge, "Bearer realm=\"pylon\", error=\"invalid_token\"")
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(server.hits(), 1);
        clock.advance(Duration::from_secs(11));
        assert!(auth.authenticate(&bearer_request("dead")).await.is_err());
        assert_eq!(server.hits(), 2);
        // no token at all: the endpoint is not asked
        assert!(matches!(
            auth.authenticate(&request("/", &[])).await,
            Err(Rejection::Unauthorized { .. })
        ));
        assert_eq!(server.hits(), 2);
    }

    #[tokio::test]
    async fn missing_scopes_are_forbidden() {
        let (server, _) = endpoint(&[
            (
                "few",
                200,
                "{\"active\":true,\"sub\":\"a\",\"scope\":\"orders:read\"}",
            ),
            ("none", 200, "{\"active\":true,\"sub\":\"a\"}"),
            (
                "all",
                200,
                "{\"active\":true,\"sub\":\"a\",\"scope\":\"orders:write orders:read\"}",
            ),
        ])
        .await;
        let auths = build(
            &section(
                &server.url("/i"),
                "required_scopes = [\"orders:read\", \"orders:write\"]\n",
            ),
            Clock::system(),
        );
        let auth = auths.get("corp").unwrap();
        for token in ["few", "none"] {
            match auth.authenticate(&bearer_request(token)).await {
                Err(Rejection::Forbidden { challenge }) => assert_eq!(
                    challenge,
                    "Bearer realm=\"pylon\", error=\"insufficient_scope\", scope=\"orders:read orders:write\""
                ),
                other => panic!("{token}: {other:?}"),
            }
        }
        assert!(auth.authenticate(&bearer_request("all")).await.is_ok());
    }

    #[tokio::test]
    async fn a_failing_endpoint_fails_closed() {
        let (server, state) = endpoint(&[
            ("error", 500, "{\"active\":true,\"sub\":\"a\"}"),
            ("html", 200, "<html>"),
            ("no-active", 200, "{\"sub\":\"a\"}"),
            ("string-active", 200, "{\"active\":\"true\",\"sub\":\"a\"}"),
            ("bad-exp", 200, "{\"active\":true,\"exp\":\"soon\"}"),
        ])
        .await;
        let auths = build(&section(&server.url("/i"), ""), Clock::system());
        let auth = auths.get("corp").unwrap();
        for token in ["error", "html", "no-active", "string-active", "bad-exp"] {
            assert_eq!(
                auth.authenticate(&bearer_request(token)).await,
                Err(Rejection::Unavailable),
                "{token}"
            );
        }
        // failures are not cached
        assert_eq!(
            auth.authenticate(&bearer_request("error")).await,
            Err(Rejection::Unavailable)
        );
        assert_eq!(server.hits(), 6);
        assert_eq!(state.lock().unwrap().bad_credentials, 0);

        // wrong client credentials: the endpoint's 401 is our 503, never the client's fault
        let env = env_with(&[("CLIENT_SECRET", b"wrong")]);
        let sections = parse_sections(&section(&server.url("/i"), "")).unwrap();
        let wrong = crate::auth::Authenticators::from_config_with(&sections, &env, Clock::system())
            .unwrap();
        assert_eq!(
            wrong
                .get("corp")
                .unwrap()
                .authenticate(&bearer_request("all"))
                .await,
            Err(Rejection::Unavailable)
        );
        assert_eq!(state.lock().unwrap().bad_credentials, 1);

        // nobody listening
        let auths = build(&section(&closed_port_url("/i"), ""), Clock::system());
        assert_eq!(
            auths
                .get("corp")
                .unwrap()
                .authenticate(&bearer_request("x"))
                .await,
            Err(Rejection::Unavailable)
        );
        // the server stops
        server.stop().await;
        assert_eq!(
            auth.authenticate(&bearer_request("other")).await,
            Err(Rejection::Unavailable)
        );
    }

    #[tokio::test]
    async fn a_slow_endpoint_times_out() {
        let server = silent_server().await;
        let text =
            section(&server.url("/i"), "").replace("timeout = \"2s\"", "timeout = \"200ms\"");
        let auths = build(&text, Clock::system());
        let started = std::time::Instant::now();
        assert_eq!(
            auths
                .get("corp")
                .unwrap()
                .authenticate(&bearer_request("t"))
                .await,
            Err(Rejection::Unavailable)
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(server.hits(), 1);
    }
}
