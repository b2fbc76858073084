//! Authentication: named authenticators (`[auth.NAME]`) that routes reference.
//!
//! Three kinds, each compiled once at load into an [`Authenticator`]:
//! - `jwt`: a bearer JWT verified against a pinned list of algorithms with an HMAC secret
//!   from the environment or public keys (PEM file, JWKS file or JWKS URL).
//! - `api_key`: a key in a header or query parameter, compared by SHA-256 in constant time.
//! - `oauth2_introspection`: a bearer token asked about at an RFC 7662 endpoint, the answers
//!   cached by a hash of the token.
//!
//! Per request, [`Authenticator::authenticate`] returns an [`Identity`] (whose `key` is the
//! rate-limit key) or a [`Rejection`] that the gateway maps to 401, 403 or 503 with the
//! challenge given here. Keys are decoded at load; the hot path reads them without a lock
//! (JWKS key sets are swapped atomically, the introspection cache is sharded).
//!
//! Layout: `types` holds the shared vocabulary, `compile` turns `[auth.NAME]` (its schema is
//! [`crate::config::AuthSection`]) into an [`Authenticator`], `jwt` verifies tokens (`alg`,
//! `claims`, and `jwks`, which holds key sets and fetches them), `introspection` and `cache` do RFC 7662, `api_key` the keys,
//! `credentials` finds credentials in a request and strips them.
//!
//! Secrets (HMAC secrets, client secrets, API keys, tokens) never reach a log line or an
//! error message.

mod api_key;
mod cache;
mod compile;
mod credentials;
mod fetch;
mod introspection;
mod jwt;
#[cfg(test)]
mod testkit;
mod types;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use toml::Spanned;

pub use crate::config::{AuthKind, AuthSection};
pub use jwt::jwks::JwksRefresher;
pub(crate) use types::{Admitted, Denial};
pub use types::{AuthError, Clock, EnvLookup, Identity, Rejection};

/// The challenge for a missing or invalid bearer token (RFC 6750 §3).
const BEARER_CHALLENGE: &str = "Bearer realm=\"pylon\", error=\"invalid_token\"";

/// How one authenticator checks credentials.
pub(crate) enum Method {
    Jwt(jwt::JwtVerifier),
    ApiKey(api_key::ApiKeys),
    Introspection(introspection::Introspector),
}

/// One `[auth.NAME]`, compiled.
pub struct Authenticator {
    name: Arc<str>,
    method: Method,
    strip: bool,
    forwarded: Vec<HeaderName>,
    unauthorized: HeaderValue,
    forbidden: HeaderValue,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.method {
            Method::Jwt(_) => "jwt",
            Method::ApiKey(_) => "api_key",
            Method::Introspection(_) => "oauth2_introspection",
        };
        write!(f, "Authenticator({}, {kind})", self.name)
    }
}

impl Authenticator {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `type` of its `[auth.NAME]` section, for the status API.
    pub fn kind(&self) -> &'static str {
        match self.method {
            Method::Jwt(_) => "jwt",
            Method::ApiKey(_) => "api_key",
            Method::Introspection(_) => "oauth2_introspection",
        }
    }

    /// Check a request's credentials. Accepts `&pingora::http::RequestHeader` too, which
    /// derefs to [`Parts`].
    pub async fn authenticate(&self, req: &Parts) -> Result<Identity, Rejection> {
        let verdict = match &self.method {
            Method::Jwt(verifier) => verifier.authenticate(&req.headers).await,
            Method::ApiKey(keys) => keys.authenticate(req),
            Method::Introspection(introspector) => introspector.authenticate(&req.headers).await,
        };
        match verdict {
            Ok(admitted) => Ok(self.identity(admitted)),
            Err(denial) => Err(self.rejection(denial)),
        }
    }

    /// Try each authenticator in turn; the first that accepts admits the request. When none
    /// does, Forbidden beats Unavailable beats Unauthorized, and an Unauthorized carries the
    /// first authenticator's challenge.
    pub async fn authenticate_any(
        chain: &[Arc<Authenticator>],
        req: &Parts,
    ) -> Result<Identity, Rejection> {
        let mut worst: Option<Rejection> = None;
        for auth in chain {
            let rejection = match auth.authenticate(req).await {
                Ok(identity) => return Ok(identity),
                Err(r) => r,
            };
            worst = Some(match (worst, rejection) {
                (None, r) => r,
                (Some(f @ Rejection::Forbidden { .. }), _) => f,
                (Some(_), f @ Rejection::Forbidden { .. }) => f,
                (Some(Rejection::Unavailable), _) | (_, Rejection::Unavailable) => {
                    Rejection::Unavailable
                }
                (Some(first), Rejection::Unauthorized { .. }) => first,
            });
        }
        Err(worst.unwrap_or(Rejection::Unauthorized {
            challenge: HeaderValue::from_static(BEARER_CHALLENGE),
        }))
    }

    /// With `strip_credentials = true`, remove the credentials from the headers sent upstream:
    /// Authorization for tokens, the key's header for API keys.
    pub fn strip_credentials(&self, headers: &mut HeaderMap) {
        if !self.strip {
            return;
        }
        match &self.method {
            Method::Jwt(_) | Method::Introspection(_) => {
                headers.remove(header::AUTHORIZATION);
            }
            Method::ApiKey(keys) => keys.strip_header(headers),
        }
    }

    /// With `strip_credentials = true` on a query-parameter API key: the request target
    /// without that parameter. `None` when there is nothing to strip.
    pub fn strip_query(&self, target: &[u8]) -> Option<Bytes> {
        match &self.method {
            Method::ApiKey(keys) if self.strip => keys.strip_query(target),
            _ => None,
        }
    }

    /// The headers `forward_claims` sets: the gateway removes the client's copies.
    pub fn forwarded_header_names(&self) -> &[HeaderName] {
        &self.forwarded
    }

    fn identity(&self, admitted: Admitted) -> Identity {
        let mut key = String::with_capacity(self.name.len() + 1 + admitted.subject.len());
        key.push_str(&self.name);
        key.push(':');
        key.push_str(&admitted.subject);
        Identity {
            key,
            subject: admitted.subject,
            authenticator: self.name.clone(),
            forward: admitted.forward,
        }
    }

    fn rejection(&self, denial: Denial) -> Rejection {
        match denial {
            Denial::Unauthorized => Rejection::Unauthorized {
                challenge: self.unauthorized.clone(),
            },
            Denial::Forbidden => Rejection::Forbidden {
                challenge: self.forbidden.clone(),
            },
            Denial::Unavailable => Rejection::Unavailable,
        }
    }
}

/// Every `[auth.NAME]`, compiled.
#[derive(Debug, Default)]
pub struct Authenticators {
    by_name: BTreeMap<String, Arc<Authenticator>>,
    remotes: Vec<Arc<jwt::jwks::RemoteJwks>>,
}

impl Authenticators {
    /// Compile the sections, reading secrets from the process environment. Reads key
    /// files; fetches nothing (see [`Authenticators::refresher`]).
    pub fn from_config(
        sections: &BTreeMap<String, Spanned<AuthSection>>,
    ) -> Result<Authenticators, AuthError> {
        Self::from_config_with(sections, &|name| std::env::var_os(name), Clock::system())
    }

    /// [`Authenticators::from_config`] with the environment and the clock given.
    pub fn from_config_with(
        sections: &BTreeMap<String, Spanned<AuthSection>>,
        env: EnvLookup<'_>,
        clock: Clock,
    ) -> Result<Authenticators, AuthError> {
        let mut clients = fetch::Clients::default();
        let mut cx = compile::Context {
            env,
            clock,
            clients: &mut clients,
        };
        let mut out = Authenticators::default();
        for (name, section) in sections {
            let auth = compile::compile(name, section, &mut cx)?;
            if let Method::Jwt(verifier) = &auth.method {
                if let Some(remote) = verifier.remote() {
                    out.remotes.push(remote.clone());
                }
            }
            out.by_name.insert(name.clone(), Arc::new(auth));
        }
        Ok(out)
    }

    pub fn get(&self, name: &str) -> Option<Arc<Authenticator>> {
        self.by_name.get(name).cloned()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Whether any authenticator fetches a JWKS URL, i.e. whether the refresher has work.
    pub fn fetches_jwks(&self) -> bool {
        !self.remotes.is_empty()
    }

    /// Start with the key sets `previous` (the runtime a reload replaces) fetched from the
    /// same URLs, rather than with none until the first fetch.
    pub fn adopt_keys(&self, previous: &Authenticators) {
        for remote in &self.remotes {
            if let Some(old) = previous.remotes.iter().find(|o| o.same_url(remote)) {
                remote.adopt(old);
            }
        }
    }

    /// The background service that fetches every JWKS URL at start and on its interval.
    pub fn refresher(&self) -> JwksRefresher {
        JwksRefresher::new(self.remotes.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_clock_can_be_fixed_and_moved() {
        let c = Clock::fixed(Duration::from_secs(100));
        assert_eq!(c.now_ms(), 100_000);
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.now_ms(), 101_500);
        let s = Clock::system();
        assert!(s.now_ms() > 1_600_000_000_000);
    }

    #[test]
    fn authenticate_is_send() {
        fn send<T: Send>(_: &T) {}
        let auths = build(HS_SECTION, Clock::system());
        let auth = auths.get("users").unwrap();
        let req = request("/", &[]);
        let fut = auth.authenticate(&req);
        send(&fut);
        let chain = [auth.clone()];
        let any = Authenticator::authenticate_any(&chain, &req);
        send(&any);
    }

    #[tokio::test]
    async fn chains_admit_on_the_first_acceptance_and_rank_rejections() {
        let now = Duration::from_secs(1_700_000_000);
        let hash = sha256_hex(b"acme-key");
        let text = format!(
            "{HS_SECTION}\n[auth.partners]\ntype = \"api_key\"\nheader = \"X-Api-Key\"\nkeys = {{ acme = \"sha256:{hash}\" }}\n\n[auth.scoped]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"JWT_SECRET\"\nrequired_scopes = [\"admin\"]\n"
        );
        let auths = build(&text, Clock::fixed(now));
        let users = auths.get("users").unwrap();
        let partners = auths.get("partners").unwrap();
        let scoped = auths.get("scoped").unwrap();
        let chain = [users.clone(), partners.clone()];

        let by_key = request("/", &[("x-api-key", "acme-key")]);
        let id = Authenticator::authenticate_any(&chain, &by_key)
            .await
            .unwrap();
        assert_eq!(id.key, "partners:acme");
        assert_eq!(&*id.authenticator, "partners");

        let token = hs_token(&format!(
            "{{\"sub\":\"alice\",\"exp\":{}}}",
            now.as_secs() + 60
        ));
        let by_token = request("/", &[("authorization", &format!("Bearer {token}"))]);
        let id = Authenticator::authenticate_any(&chain, &by_token)
            .await
            .unwrap();
        assert_eq!(id.key, "users:alice");
        assert_eq!(id.subject, "alice");

        // nothing: the first authenticator's challenge
        let none = request("/", &[]);
        match Authenticator::authenticate_any(&chain, &none).await {
            Err(Rejection::Unauthorized { challenge }) => {
                assert_eq!(challenge, "Bearer realm=\"pylon\", error=\"invalid_token\"")
            }
            other => panic!("{other:?}"),
        }
        let reversed = [partners.clone(), users.clone()];
        match Authenticator::authenticate_any(&reversed, &none).await {
            Err(Rejection::Unauthorized { challenge }) => {
                assert_eq!(challenge, "ApiKey realm=\"pylon\", header=\"X-Api-Key\"")
            }
            other => panic!("{other:?}"),
        }

        // a valid token without the scope: Forbidden wins over the key's Unauthorized
        let chain = [partners.clone(), scoped.clone()];
        match Authenticator::authenticate_any(&chain, &by_token).await {
            Err(Rejection::Forbidden { challenge }) => assert_eq!(
                challenge,
                "Bearer realm=\"pylon\", error=\"insufficient_scope\", scope=\"admin\""
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Authenticator::authenticate_any(&[], &by_token).await,
            Err(Rejection::Unauthorized { .. })
        ));
    }

    #[tokio::test]
    async fn unavailable_beats_unauthorized_in_a_chain() {
        let down = closed_port_url("/jwks");
        let text = format!(
            "{HS_SECTION}\n[auth.remote]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\njwks_url = \"{down}\"\ntimeout = \"1s\"\n"
        );
        let auths = build(&text, Clock::system());
        let chain = [auths.get("users").unwrap(), auths.get("remote").unwrap()];
        let keys = test_keys();
        let token = sign(
            "RS256",
            &keys.rsa,
            Some("k1"),
            &format!("{{\"sub\":\"a\",\"exp\":{}}}", unix_now() + 60),
        );
        let req = request("/", &[("authorization", &format!("Bearer {token}"))]);
        assert_eq!(
            Authenticator::authenticate_any(&chain, &req).await,
            Err(Rejection::Unavailable)
        );
    }

    #[test]
    fn compiled_authenticators_are_shared_across_threads() {
        fn shared<T: Send + Sync + 'static>() {}
        shared::<Authenticator>();
        shared::<Authenticators>();
        shared::<JwksRefresher>();
    }

    /// The config is compiled before Pingora starts its runtimes.
    #[test]
    fn compiling_needs_no_runtime() {
        let text = "[auth.remote]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\njwks_url = \"https://idp.example/jwks\"\n\n[auth.corp]\ntype = \"oauth2_introspection\"\nintrospection_url = \"https://idp.example/introspect\"\nclient_id = \"pylon\"\nclient_secret_env = \"CLIENT_SECRET\"\n";
        let auths = build(text, Clock::system());
        assert!(auths.fetches_jwks());
        assert_eq!(auths.names().count(), 2);
    }

    #[tokio::test]
    async fn bearer_credentials_are_stripped_when_asked() {
        let now = unix_now();
        let token = hs_token(&format!("{{\"sub\":\"a\",\"exp\":{}}}", now + 60));
        let req = bearer_request(&token);
        for (strip, kept) in [("true", false), ("false", true)] {
            let auths = build(
                &format!("{HS_SECTION}strip_credentials = {strip}\n"),
                Clock::system(),
            );
            let auth = auths.get("users").unwrap();
            auth.authenticate(&req).await.unwrap();
            let mut headers = req.headers.clone();
            auth.strip_credentials(&mut headers);
            assert_eq!(headers.contains_key(header::AUTHORIZATION), kept);
            assert_eq!(auth.strip_query(b"/a?access_token=x"), None);
        }
    }

    #[test]
    fn authenticators_are_listed_and_debugged_without_secrets() {
        let auths = build(HS_SECTION, Clock::system());
        assert_eq!(auths.names().collect::<Vec<_>>(), vec!["users"]);
        assert!(!auths.is_empty());
        assert!(!auths.fetches_jwks());
        let shown = format!("{auths:?}");
        assert!(shown.contains("Authenticator(users, jwt)"), "{shown}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }
}
