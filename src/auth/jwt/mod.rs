//! JWS compact tokens (RFC 7515) carrying JWT claims (RFC 7519).
//!
//! The token's `alg` is only believed when `algorithms` lists it, and each algorithm has
//! its own kind of key: HS* the secret from the environment, everything else a public key
//! of the matching type. An RSA public key can therefore never be used as an HMAC secret,
//! and `none` has no key at all. The signature is checked before the claims are parsed;
//! `crit` headers are refused (RFC 7515 §4.1.11: we understand no extension).
//!
//! A token is at most 8 KiB. Header, payload and signature are decoded into buffers on the
//! stack and the claims are read in one pass that borrows from them, so a request allocates
//! only the identity it returns.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::header::{HeaderMap, HeaderName};
use ring::hmac;
use serde::de::{DeserializeSeed, IgnoredAny};
use serde::Deserialize;

use self::jwks::{KeySet, RemoteJwks};
use super::cache::{Digest, ShardedCache};
use super::credentials::bearer;
use super::credentials::MAX_TOKEN_LEN;

mod alg;
mod claims;
pub(crate) mod jwks;

use super::{Admitted, Clock, Denial};
pub(crate) use alg::Alg;
pub(crate) use claims::claim_value;
use claims::{Claims, ClaimsSeed};

/// `exp`, `nbf` and `iat` must lie within this many seconds of now (ten years either way):
/// a token that claims to expire later, or was issued earlier, is refused.
pub(crate) const MAX_TIME_CLAIM_SPAN_S: f64 = 10.0 * 365.25 * 86_400.0;
/// Decoded header: generous for `kid`, `typ` and the like; `x5c` chains do not fit.
const MAX_HEADER: usize = 4 * 1024;
/// Decoded payload: everything an 8 KiB token can hold.
const MAX_PAYLOAD: usize = MAX_TOKEN_LEN / 4 * 3;
/// Decoded signature: an RSA-8192 signature is 1024 bytes.
const MAX_SIGNATURE: usize = 1024;

/// Where public keys come from.
pub(crate) enum KeySource {
    /// Only HS* algorithms.
    None,
    /// A PEM or JWKS file, read at load.
    Static(Arc<KeySet>),
    /// A JWKS URL, fetched at start, refreshed, refetched on an unknown `kid`.
    Remote(Arc<RemoteJwks>),
}

/// Everything the config gives a verifier.
pub(crate) struct JwtSettings {
    pub algorithms: Vec<Alg>,
    pub hmac: Vec<(Alg, hmac::Key)>,
    pub keys: KeySource,
    pub issuer: Option<Box<str>>,
    pub audience: Vec<Box<str>>,
    pub leeway: Duration,
    pub forward: Vec<(Box<str>, HeaderName)>,
    pub required_scopes: Vec<Box<str>>,
    pub clock: Clock,
    /// How long a verified token is remembered at most (also never past its `exp`);
    /// zero: never.
    pub cache_ttl: Duration,
}

/// Verified tokens remembered at most, per authenticator.
const VERIFIED_CAPACITY: usize = 100_000;

/// A token that passed, remembered by its BLAKE3 hash (never the token itself), with the
/// key set it was verified against: after a JWKS refresh or key change the entry no
/// longer matches and the token is verified again. Holding the set keeps its address
/// from being reused by a newer one while the entry lives.
#[derive(Clone)]
struct Verified {
    admitted: Arc<Admitted>,
    keys: Option<Arc<KeySet>>,
}

/// A compiled `type = "jwt"`.
pub(crate) struct JwtVerifier {
    algorithms: u16,
    hmac: Vec<(Alg, hmac::Key)>,
    keys: KeySource,
    issuer: Option<Box<str>>,
    audience: Vec<Box<str>>,
    leeway_ms: f64,
    forward: Vec<(Box<str>, HeaderName)>,
    required_scopes: Vec<Box<str>>,
    clock: Clock,
    /// Tokens already verified, for public-key algorithms (an HMAC costs about what the
    /// lookup does); `None` with `cache_ttl = "0s"`.
    verified: Option<ShardedCache<Verified>>,
    cache_ttl_ms: u64,
}

/// Why a verification did not succeed, before unknown keys are settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    Denied(Denial),
    /// The token names a `kid` the key set does not hold.
    UnknownKid,
    /// A public-key algorithm, but no key set fetched yet.
    NoKeys,
}

impl Failure {
    fn settle(self) -> Denial {
        match self {
            Failure::Denied(d) => d,
            Failure::UnknownKid => Denial::Unauthorized,
            Failure::NoKeys => Denial::Unavailable,
        }
    }
}

const INVALID: Failure = Failure::Denied(Denial::Unauthorized);

impl JwtVerifier {
    pub fn new(s: JwtSettings) -> JwtVerifier {
        JwtVerifier {
            algorithms: s.algorithms.iter().fold(0, |m, a| m | a.bit()),
            hmac: s.hmac,
            keys: s.keys,
            issuer: s.issuer,
            audience: s.audience,
            leeway_ms: s.leeway.as_millis() as f64,
            forward: s.forward,
            required_scopes: s.required_scopes,
            clock: s.clock,
            verified: (!s.cache_ttl.is_zero() && s.algorithms.iter().any(|a| !a.is_hmac()))
                .then(|| ShardedCache::new(VERIFIED_CAPACITY)),
            cache_ttl_ms: s.cache_ttl.as_millis() as u64,
        }
    }

    pub fn remote(&self) -> Option<&Arc<RemoteJwks>> {
        match &self.keys {
            KeySource::Remote(r) => Some(r),
            _ => None,
        }
    }

    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Admitted, Denial> {
        let token = bearer(headers).ok_or(Denial::Unauthorized)?;
        let remote = match &self.keys {
            KeySource::None => return self.verify_cached(token, None).map_err(Failure::settle),
            KeySource::Static(set) => {
                return self
                    .verify_cached(token, Some(set))
                    .map_err(Failure::settle)
            }
            KeySource::Remote(remote) => remote,
        };
        // The guard is dropped before any await: it belongs to this thread.
        let (first, seen) = {
            let keys = remote.load();
            let seen = keys.as_ref().map(|k| Arc::as_ptr(k) as usize);
            (self.verify_cached(token, keys.as_ref()), seen)
        };
        match first {
            Err(Failure::UnknownKid | Failure::NoKeys) => {}
            other => return other.map_err(Failure::settle),
        }
        remote.refetch_after_miss(seen).await;
        let keys = remote.load();
        self.verify_cached(token, keys.as_ref())
            .map_err(Failure::settle)
    }

    /// [`JwtVerifier::verify`] behind the cache of verified tokens: a token verified
    /// against these same keys, and not past its `exp` (nor `cache_ttl` since), is
    /// admitted again without its signature checked. Refusals are never remembered.
    fn verify_cached(&self, token: &str, keys: Option<&Arc<KeySet>>) -> Result<Admitted, Failure> {
        let Some(cache) = &self.verified else {
            return self.verify(token, keys.map(|k| &**k));
        };
        if token.len() > MAX_TOKEN_LEN {
            return Err(INVALID);
        }
        // BLAKE3: a cryptographic hash at a fraction of SHA-256's cost (SHA-256 of a
        // ~600-byte RS256 token was 15k instructions, most of a cache hit); finding
        // another token with a cached hash is as hard as forging one
        let digest: Digest = *blake3::hash(token.as_bytes()).as_bytes();
        let now = self.clock.now_ms();
        if let Some(hit) = cache.get(&digest, now) {
            let same_keys = match (&hit.keys, keys) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if same_keys {
                return Ok((*hit.admitted).clone());
            }
        }
        let (admitted, exp) = self.verify_with_exp(token, keys.map(|k| &**k))?;
        // until exp (the leeway is left to a full verification), at most cache_ttl
        let until = ((exp * 1000.0) as u64).min(now.saturating_add(self.cache_ttl_ms));
        if until > now {
            cache.insert(
                digest,
                Verified {
                    admitted: Arc::new(admitted.clone()),
                    keys: keys.cloned(),
                },
                until,
                now,
            );
        }
        Ok(admitted)
    }

    /// Verify a token against the keys at hand; synchronous, so its buffers stay on the
    /// stack and out of the request's future.
    pub fn verify(&self, token: &str, keys: Option<&KeySet>) -> Result<Admitted, Failure> {
        self.verify_with_exp(token, keys)
            .map(|(admitted, _)| admitted)
    }

    /// [`JwtVerifier::verify`], with the token's `exp` (seconds since the epoch).
    fn verify_with_exp(
        &self,
        token: &str,
        keys: Option<&KeySet>,
    ) -> Result<(Admitted, f64), Failure> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(INVALID);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(INVALID);
        };
        let signing_input = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];

        let mut header_buf = [0u8; MAX_HEADER];
        let header = decode(header_b64, &mut header_buf)?;
        let header: Header<'_> = serde_json::from_slice(header).map_err(|_| INVALID)?;
        if header.crit.is_some() {
            return Err(INVALID);
        }
        let alg = Alg::from_name(&header.alg).ok_or(INVALID)?;
        if self.algorithms & alg.bit() == 0 {
            return Err(INVALID);
        }
        let mut signature_buf = [0u8; MAX_SIGNATURE];
        let signature = decode(signature_b64, &mut signature_buf)?;
        if signature.is_empty() {
            return Err(INVALID);
        }
        if alg.is_hmac() {
            let key = self
                .hmac
                .iter()
                .find_map(|(a, k)| (*a == alg).then_some(k))
                .ok_or(INVALID)?;
            hmac::verify(key, signing_input, signature).map_err(|_| INVALID)?;
        } else {
            let keys = keys.ok_or(Failure::NoKeys)?;
            let kid = header.kid.as_deref();
            let verified = keys
                .candidates(alg, kid)
                .any(|key| key.verify(alg, signing_input, signature));
            if !verified {
                return Err(match kid {
                    Some(kid) if !keys.has_kid(kid) => Failure::UnknownKid,
                    _ => INVALID,
                });
            }
        }

        let mut payload_buf = [0u8; MAX_PAYLOAD];
        let payload = decode(payload_b64, &mut payload_buf)?;
        let mut de = serde_json::Deserializer::from_slice(payload);
        let claims = ClaimsSeed { verifier: self }
            .deserialize(&mut de)
            .map_err(|_| INVALID)?;
        de.end().map_err(|_| INVALID)?;
        self.check(claims)
    }

    fn check(&self, claims: Claims<'_>) -> Result<(Admitted, f64), Failure> {
        let now = self.clock.now_ms() as f64;
        let exp = claims.exp.ok_or(INVALID)?;
        // a time claim far from now is refused outright: `"exp": 1e300` would never expire
        let sane = |t: f64| (t * 1000.0 - now).abs() <= MAX_TIME_CLAIM_SPAN_S * 1000.0;
        if ![Some(exp), claims.nbf, claims.iat]
            .into_iter()
            .flatten()
            .all(sane)
        {
            return Err(INVALID);
        }
        if now >= exp * 1000.0 + self.leeway_ms {
            return Err(INVALID);
        }
        if claims
            .nbf
            .is_some_and(|nbf| now + self.leeway_ms < nbf * 1000.0)
        {
            return Err(INVALID);
        }
        if claims
            .iat
            .is_some_and(|iat| iat * 1000.0 > now + self.leeway_ms)
        {
            return Err(INVALID);
        }
        if self.issuer.is_some() && !claims.issuer_ok {
            return Err(INVALID);
        }
        if !self.audience.is_empty() && !claims.audience_ok {
            return Err(INVALID);
        }
        let all_scopes = all_bits(self.required_scopes.len());
        if claims.scopes & all_scopes != all_scopes {
            return Err(Failure::Denied(Denial::Forbidden));
        }
        let subject = claims
            .sub
            .or(claims.client)
            .map(Cow::into_owned)
            .unwrap_or_default();
        Ok((
            Admitted {
                subject,
                forward: claims.forward,
            },
            exp,
        ))
    }

    /// Mark the required scopes `granted` (space-separated) holds.
    fn scopes_in(&self, granted: &str) -> u64 {
        granted
            .split(' ')
            .filter_map(|s| self.required_scopes.iter().position(|r| **r == *s))
            .fold(0, |m, i| m | 1 << i)
    }

    fn forward_header(&self, claim: &str) -> Option<&HeaderName> {
        self.forward
            .iter()
            .find_map(|(c, h)| (**c == *claim).then_some(h))
    }
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtVerifier")
    }
}

fn all_bits(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// base64url without padding (RFC 7515 §2), into `buf`; trailing bits must be zero, so
/// each value has one encoding.
fn decode<'b>(text: &str, buf: &'b mut [u8]) -> Result<&'b [u8], Failure> {
    let n = URL_SAFE_NO_PAD
        .decode_slice(text, buf)
        .map_err(|_| INVALID)?;
    Ok(&buf[..n])
}

/// The JOSE header fields we read; the rest are ignored (`jku`, `jwk`, `x5u` never pick a key).
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(default, borrow)]
    kid: Option<Cow<'a, str>>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::fmt;
    use std::sync::Arc;
    use std::time::Duration;

    use base64::Engine;
    use http::header::{HeaderName, HeaderValue};

    use crate::auth::cache::Digest;

    use super::claims::number_text;
    use crate::auth::testkit::*;
    use crate::auth::Clock;
    use crate::auth::{Authenticators, Rejection};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    /// RFC 7515 A.1's key; its example (and RFC 7519 §3.1's) expired at 1300819380.
    const RFC_HMAC_KEY: &str =
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
    const RFC_7515_A1: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const RFC_7515_A3: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
    const RFC_A3_JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
    /// RFC 7519 §3.1 shows the same JWS as RFC 7515 A.1.
    const RFC_7519_3_1: &str = RFC_7515_A1;
    const RFC_EXP: u64 = 1_300_819_380;

    fn rfc_hs(now: u64) -> Authenticators {
        let key = B64.decode(RFC_HMAC_KEY).unwrap();
        let env = env_bytes(&[("RFC_KEY", key)]);
        let text = "[auth.rfc]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"RFC_KEY\"\nissuer = \"joe\"\nleeway = \"0s\"\nforward_claims = { \"http://example.com/is_root\" = \"X-Is-Root\", iss = \"X-Issuer\", exp = \"X-Exp\" }\n";
        let sections = parse_sections(text).unwrap();
        Authenticators::from_config_with(&sections, &env, Clock::fixed(Duration::from_secs(now)))
            .unwrap()
    }

    #[tokio::test]
    async fn rfc_7515_a1_and_rfc_7519_example_verify() {
        let auths = rfc_hs(RFC_EXP - 1);
        let auth = auths.get("rfc").unwrap();
        for token in [RFC_7515_A1, RFC_7519_3_1] {
            let id = auth.authenticate(&bearer_request(token)).await.unwrap();
            // no `sub`: the subject is empty, the key still namespaced
            assert_eq!(id.key, "rfc:");
            let shown: Vec<(String, String)> = id
                .forward
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                .collect();
            assert!(
                shown.contains(&("x-is-root".into(), "true".into())),
                "{shown:?}"
            );
            assert!(
                shown.contains(&("x-issuer".into(), "joe".into())),
                "{shown:?}"
            );
            assert!(
                shown.contains(&("x-exp".into(), RFC_EXP.to_string())),
                "{shown:?}"
            );
        }
        // at exp it has expired (leeway 0 here)
        let late = rfc_hs(RFC_EXP);
        let r = late
            .get("rfc")
            .unwrap()
            .authenticate(&bearer_request(RFC_7515_A1))
            .await;
        assert!(matches!(r, Err(Rejection::Unauthorized { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn rfc_7515_a3_es256_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, RFC_A3_JWKS).unwrap();
        let text = format!(
            "[auth.rfc]\ntype = \"jwt\"\nalgorithms = [\"ES256\"]\njwks_file = \"{}\"\n",
            jwks.display()
        );
        let auths = build(&text, Clock::fixed(Duration::from_secs(RFC_EXP - 100)));
        let auth = auths.get("rfc").unwrap();
        auth.authenticate(&bearer_request(RFC_7515_A3))
            .await
            .unwrap();
        // one flipped signature bit
        let mut bad = RFC_7515_A3.to_string();
        let last = bad.pop().unwrap();
        bad.push(if last == 'Q' { 'R' } else { 'Q' });
        assert!(auth.authenticate(&bearer_request(&bad)).await.is_err());
    }

    #[tokio::test]
    async fn every_algorithm_verifies_with_its_own_key() {
        let keys = test_keys();
        let dir = tempfile::tempdir().unwrap();
        let now = unix_now();
        let claims = format!("{{\"sub\":\"alice\",\"exp\":{},\"iat\":{now}}}", now + 60);
        for (alg, pem) in [
            ("RS256", &keys.rsa_pem),
            ("RS384", &keys.rsa_pem),
            ("RS512", &keys.rsa_pem),
            ("PS256", &keys.rsa_pem),
            ("PS384", &keys.rsa_pem),
            ("PS512", &keys.rsa_pem),
            ("ES256", &keys.p256_pem),
            ("ES384", &keys.p384_pem),
            ("EdDSA", &keys.ed25519_pem),
        ] {
            let path = dir.path().join(format!("{alg}.pem"));
            std::fs::write(&path, pem).unwrap();
            let text = format!(
                "[auth.a]\ntype = \"jwt\"\nalgorithms = [\"{alg}\"]\npublic_key_file = \"{}\"\n",
                path.display()
            );
            let auths = build(&text, Clock::system());
            let auth = auths.get("a").unwrap();
            let key = keys.private_for(alg);
            let token = sign(alg, key, None, &claims);
            let id = auth
                .authenticate(&bearer_request(&token))
                .await
                .unwrap_or_else(|e| panic!("{alg}: {e:?}"));
            assert_eq!(id.key, "a:alice", "{alg}");
            // a kid is ignored for a single PEM key
            let token = sign(alg, key, Some("whatever"), &claims);
            assert!(
                auth.authenticate(&bearer_request(&token)).await.is_ok(),
                "{alg}"
            );
        }
        for alg in ["HS256", "HS384", "HS512"] {
            let text = format!(
                "[auth.h]\ntype = \"jwt\"\nalgorithms = [\"{alg}\"]\nsecret_env = \"JWT_SECRET\"\n"
            );
            let auths = build(&text, Clock::system());
            let token = sign_hmac(alg, JWT_SECRET, &claims);
            let id = auths
                .get("h")
                .unwrap()
                .authenticate(&bearer_request(&token))
                .await
                .unwrap_or_else(|e| panic!("{alg}: {e:?}"));
            assert_eq!(id.subject, "alice");
        }
    }

    /// An RS256 verifier on `keys`, remembering tokens for `ttl`, at a fixed time.
    fn cached_verifier(keys: KeySource, clock: Clock, ttl: Duration) -> JwtVerifier {
        JwtVerifier::new(JwtSettings {
            algorithms: vec![Alg::Rs256],
            hmac: Vec::new(),
            keys,
            issuer: None,
            audience: Vec::new(),
            leeway: Duration::from_secs(30),
            forward: Vec::new(),
            required_scopes: Vec::new(),
            clock,
            cache_ttl: ttl,
        })
    }

    fn rsa_set() -> Arc<KeySet> {
        let material = super::jwks::key_from_pem(test_keys().rsa_pem.as_bytes()).unwrap();
        Arc::new(KeySet::single(material))
    }

    const CACHED_NOW: u64 = 1_700_000_000;

    /// At a fixed time: the clock, an RSA key set, a verifier on it remembering tokens for
    /// `ttl` s, and a token for alice that expires in `exp_in` s.
    fn cached_case(ttl: u64, exp_in: u64) -> (Clock, Arc<KeySet>, JwtVerifier, String) {
        let clock = Clock::fixed(Duration::from_secs(CACHED_NOW));
        let set = rsa_set();
        let v = cached_verifier(
            KeySource::Static(set.clone()),
            clock.clone(),
            Duration::from_secs(ttl),
        );
        let token = sign(
            "RS256",
            &test_keys().rsa,
            None,
            &format!("{{\"sub\":\"alice\",\"exp\":{}}}", CACHED_NOW + exp_in),
        );
        (clock, set, v, token)
    }

    /// The cache of verified tokens never admits what a verification would refuse: an
    /// expired token, a forgery, a token after its keys changed.
    #[test]
    fn the_verified_cache_admits_nothing_verification_would_refuse() {
        let (clock, set, v, token) = cached_case(300, 60);
        assert_eq!(
            v.verify_cached(&token, Some(&set)).unwrap().subject,
            "alice"
        );
        // again, now from the cache (the next test looks into it)
        assert_eq!(
            v.verify_cached(&token, Some(&set)).unwrap().subject,
            "alice"
        );
        // a forgery: the same claims, a changed signature
        let (h, p, sig) = split3(&token);
        let mut bad = sig.as_bytes().to_vec();
        bad[10] = if bad[10] == b'A' { b'B' } else { b'A' };
        let forged = format!("{h}.{p}.{}", String::from_utf8(bad).unwrap());
        assert!(v.verify_cached(&forged, Some(&set)).is_err());
        assert!(
            v.verify_cached(&forged, Some(&set)).is_err(),
            "refused every time"
        );
        // other keys (a JWKS refresh): the cached entry does not count
        let other = Arc::new(KeySet::single(
            super::jwks::key_from_pem(test_keys().p256_pem.as_bytes()).unwrap(),
        ));
        assert!(v.verify_cached(&token, Some(&other)).is_err());
        assert!(v.verify_cached(&token, Some(&set)).is_ok());
        // past exp and the leeway the cache holds nothing
        clock.advance(Duration::from_secs(91));
        assert!(v.verify_cached(&token, Some(&set)).is_err());
    }

    #[test]
    fn a_verified_token_is_remembered_at_most_cache_ttl() {
        let (clock, set, v, token) = cached_case(10, 3600);
        let now = CACHED_NOW;
        assert!(v.verify_cached(&token, Some(&set)).is_ok());
        let cache = v.verified.as_ref().unwrap();
        let digest: Digest = *blake3::hash(token.as_bytes()).as_bytes();
        let at = now * 1000;
        assert!(
            cache.get(&digest, at + 9_000).is_some(),
            "kept within the ttl"
        );
        assert!(cache.get(&digest, at + 10_001).is_none(), "gone after it");
        // cache_ttl = "0s" (or an HMAC-only verifier): nothing is remembered
        let off = cached_verifier(KeySource::Static(set), clock, Duration::ZERO);
        assert!(off.verified.is_none());
    }

    /// A verifier for RS256 and HS256 with issuer and audience, at a fixed time.
    struct Fixture {
        auths: Authenticators,
        now: u64,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let keys = test_keys();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rsa.pem");
        std::fs::write(&path, &keys.rsa_pem).unwrap();
        let now = 1_700_000_000;
        let text = format!(
            "[auth.rs]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\npublic_key_file = \"{}\"\nissuer = \"https://idp.example/\"\naudience = [\"pylon\", \"other\"]\nleeway = \"30s\"\nforward_claims = {{ sub = \"X-User-Id\", admin = \"X-Admin\", n = \"X-N\", bad = \"X-Bad\", obj = \"X-Obj\", email = \"X-Email\" }}\n\n[auth.hs]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"JWT_SECRET\"\nrequired_scopes = [\"orders:read\", \"orders:write\"]\n",
            path.display()
        );
        let auths = build(&text, Clock::fixed(Duration::from_secs(now)));
        Fixture {
            auths,
            now,
            _dir: dir,
        }
    }

    impl Fixture {
        fn claims(&self, extra: &str) -> String {
            format!(
                "{{\"iss\":\"https://idp.example/\",\"aud\":\"pylon\",\"sub\":\"alice\",\"exp\":{}{extra}}}",
                self.now + 300
            )
        }

        async fn rs(&self, token: &str) -> Result<crate::auth::Identity, Rejection> {
            self.auths
                .get("rs")
                .unwrap()
                .authenticate(&bearer_request(token))
                .await
        }

        async fn hs(&self, token: &str) -> Result<crate::auth::Identity, Rejection> {
            self.auths
                .get("hs")
                .unwrap()
                .authenticate(&bearer_request(token))
                .await
        }
    }

    fn unauthorized<T: fmt::Debug>(r: Result<T, Rejection>) -> bool {
        matches!(&r, Err(Rejection::Unauthorized { challenge }) if challenge == "Bearer realm=\"pylon\", error=\"invalid_token\"")
    }

    #[tokio::test]
    async fn claims_are_forwarded_when_they_make_header_values() {
        let f = fixture();
        let keys = test_keys();
        let token = sign(
            "RS256",
            &keys.rsa,
            None,
            &f.claims(",\"admin\":true,\"n\":42,\"bad\":\"a\\nb\",\"obj\":{\"a\":[1]},\"email\":\"\\u00e9@x\""),
        );
        let id = f.rs(&token).await.unwrap();
        assert_eq!(id.key, "rs:alice");
        let mut shown: Vec<(String, String)> = id
            .forward
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        shown.sort();
        assert_eq!(
            shown,
            vec![
                ("x-admin".to_string(), "true".to_string()),
                ("x-n".to_string(), "42".to_string()),
                ("x-user-id".to_string(), "alice".to_string()),
            ]
        );
        let rs = f.auths.get("rs").unwrap();
        let names: Vec<&str> = rs
            .forwarded_header_names()
            .iter()
            .map(HeaderName::as_str)
            .collect();
        assert!(
            names.contains(&"x-user-id") && names.contains(&"x-admin"),
            "{names:?}"
        );
    }

    #[tokio::test]
    async fn time_claims_are_checked_with_leeway() {
        let f = fixture();
        let keys = test_keys();
        let at = |exp: i64, extra: &str| {
            sign(
                "RS256",
                &keys.rsa,
                None,
                &format!(
                    "{{\"iss\":\"https://idp.example/\",\"aud\":\"pylon\",\"sub\":\"a\",\"exp\":{}{extra}}}",
                    f.now as i64 + exp
                ),
            )
        };
        assert!(f.rs(&at(1, "")).await.is_ok());
        assert!(f.rs(&at(-29, "")).await.is_ok(), "inside the leeway");
        assert!(unauthorized(f.rs(&at(-30, "")).await), "expired");
        assert!(unauthorized(f.rs(&at(-3600, "")).await), "long expired");
        let nbf = |d: i64| format!(",\"nbf\":{}", f.now as i64 + d);
        assert!(f.rs(&at(60, &nbf(29))).await.is_ok());
        assert!(unauthorized(f.rs(&at(60, &nbf(31))).await), "not yet valid");
        let iat = |d: i64| format!(",\"iat\":{}", f.now as i64 + d);
        assert!(f.rs(&at(60, &iat(30))).await.is_ok());
        assert!(
            unauthorized(f.rs(&at(60, &iat(31))).await),
            "issued in the future"
        );
        // whole seconds only: RFC 7519 allows fractions, but no issuer needs them and a
        // float is how `1e300` gets in
        let frac = sign(
            "RS256",
            &keys.rsa,
            None,
            &format!(
                "{{\"iss\":\"https://idp.example/\",\"aud\":\"pylon\",\"exp\":{}.5}}",
                f.now + 10
            ),
        );
        assert!(unauthorized(f.rs(&frac).await), "a fraction of a second");
        let forever = sign(
            "RS256",
            &keys.rsa,
            None,
            "{\"iss\":\"https://idp.example/\",\"aud\":\"pylon\",\"exp\":1e300}",
        );
        assert!(
            unauthorized(f.rs(&forever).await),
            "exp 1e300 never expires"
        );
        let years = |y: f64| (y * 365.25 * 86_400.0) as i64;
        assert!(f.rs(&at(years(9.9), "")).await.is_ok(), "nine years ahead");
        assert!(
            unauthorized(f.rs(&at(years(10.1), "")).await),
            "more than ten years ahead"
        );
        assert!(f.rs(&at(60, &iat(-years(9.9)))).await.is_ok());
        assert!(
            unauthorized(f.rs(&at(60, &iat(-years(10.1)))).await),
            "issued more than ten years ago"
        );
        assert!(
            unauthorized(f.rs(&at(60, &nbf(-years(10.1)))).await),
            "valid since more than ten years"
        );
        // exp is required, and must be a number
        let none = sign(
            "RS256",
            &keys.rsa,
            None,
            "{\"iss\":\"https://idp.example/\",\"aud\":\"pylon\"}",
        );
        assert!(unauthorized(f.rs(&none).await));
        let text = sign(
            "RS256",
            &keys.rsa,
            None,
            &format!(
                "{{\"iss\":\"https://idp.example/\",\"aud\":\"pylon\",\"exp\":\"{}\"}}",
                f.now + 10
            ),
        );
        assert!(unauthorized(f.rs(&text).await));
    }

    #[tokio::test]
    async fn issuer_and_audience_are_checked() {
        let f = fixture();
        let keys = test_keys();
        let exp = f.now + 60;
        let with = |iss: &str, aud: &str| {
            sign(
                "RS256",
                &keys.rsa,
                None,
                &format!("{{{iss}{aud}\"exp\":{exp}}}"),
            )
        };
        let iss = "\"iss\":\"https://idp.example/\",";
        assert!(f.rs(&with(iss, "\"aud\":\"pylon\",")).await.is_ok());
        assert!(f.rs(&with(iss, "\"aud\":\"other\",")).await.is_ok());
        assert!(f.rs(&with(iss, "\"aud\":[\"x\",\"pylon\"],")).await.is_ok());
        assert!(unauthorized(
            f.rs(&with(iss, "\"aud\":[\"x\",\"y\"],")).await
        ));
        assert!(unauthorized(f.rs(&with(iss, "\"aud\":\"pylon2\",")).await));
        assert!(unauthorized(f.rs(&with(iss, "")).await), "aud missing");
        assert!(unauthorized(f.rs(&with(iss, "\"aud\":[],")).await));
        assert!(unauthorized(f.rs(&with(iss, "\"aud\":7,")).await));
        assert!(unauthorized(
            f.rs(&with(
                "\"iss\":\"https://evil.example/\",",
                "\"aud\":\"pylon\","
            ))
            .await
        ));
        assert!(
            unauthorized(f.rs(&with("", "\"aud\":\"pylon\",")).await),
            "iss missing"
        );
        // a repeated registered claim is refused rather than guessed at
        assert!(unauthorized(
            f.rs(&with(iss, "\"aud\":\"x\",\"aud\":\"pylon\",")).await
        ));
    }

    #[tokio::test]
    async fn scopes_are_required_when_configured() {
        let f = fixture();
        let exp = f.now + 60;
        let token = |extra: &str| {
            sign_hmac(
                "HS256",
                JWT_SECRET,
                &format!("{{\"sub\":\"s\",\"exp\":{exp}{extra}}}"),
            )
        };
        assert!(f
            .hs(&token(",\"scope\":\"orders:write profile orders:read\""))
            .await
            .is_ok());
        assert!(f
            .hs(&token(",\"scp\":[\"orders:read\",\"orders:write\"]"))
            .await
            .is_ok());
        assert!(f
            .hs(&token(
                ",\"scope\":\"orders:read\",\"scp\":\"orders:write\""
            ))
            .await
            .is_ok());
        for missing in [
            "",
            ",\"scope\":\"orders:read\"",
            ",\"scp\":[\"orders:read\"]",
            ",\"scope\":\"orders:readorders:write\"",
        ] {
            match f.hs(&token(missing)).await {
                Err(Rejection::Forbidden { challenge }) => assert_eq!(
                    challenge,
                    "Bearer realm=\"pylon\", error=\"insufficient_scope\", scope=\"orders:read orders:write\""
                ),
                other => panic!("{missing}: {other:?}"),
            }
        }
        // an invalid token is Unauthorized even without the scopes
        let expired = sign_hmac("HS256", JWT_SECRET, &format!("{{\"exp\":{}}}", f.now - 100));
        assert!(unauthorized(f.hs(&expired).await));
    }

    #[tokio::test]
    async fn attacks_are_unauthorized() {
        let f = fixture();
        let keys = test_keys();
        let claims = f.claims("");
        let good = sign("RS256", &keys.rsa, None, &claims);
        assert!(f.rs(&good).await.is_ok());
        let (h, p, s) = split3(&good);

        // alg none, in any case, with or without a signature
        for alg in ["none", "None", "NONE"] {
            let header = B64.encode(format!("{{\"alg\":\"{alg}\",\"typ\":\"JWT\"}}"));
            assert!(unauthorized(f.rs(&format!("{header}.{p}.")).await), "{alg}");
            assert!(
                unauthorized(f.rs(&format!("{header}.{p}.{s}")).await),
                "{alg}"
            );
            assert!(unauthorized(f.hs(&format!("{header}.{p}.")).await), "{alg}");
        }
        // algorithm confusion: HS256 keyed with the RSA public key (PEM and DER), sent to
        // the RS256 verifier and to a verifier that allows both
        for secret in [
            keys.rsa_pem.as_bytes().to_vec(),
            keys.rsa_public_der.clone(),
        ] {
            let forged = sign_hmac("HS256", &secret, &claims);
            assert!(unauthorized(f.rs(&forged).await));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rsa.pem");
        std::fs::write(&path, &keys.rsa_pem).unwrap();
        let both = build(
            &format!("[auth.both]\ntype = \"jwt\"\nalgorithms = [\"RS256\", \"HS256\"]\npublic_key_file = \"{}\"\nsecret_env = \"JWT_SECRET\"\n", path.display()),
            Clock::fixed(Duration::from_secs(f.now)),
        );
        let forged = sign_hmac("HS256", keys.rsa_pem.as_bytes(), &claims);
        assert!(unauthorized(
            both.get("both")
                .unwrap()
                .authenticate(&bearer_request(&forged))
                .await
        ));
        assert!(both
            .get("both")
            .unwrap()
            .authenticate(&bearer_request(&good))
            .await
            .is_ok());
        // an algorithm that is not listed, even with a valid signature
        let ps = sign("PS256", &keys.rsa, None, &claims);
        assert!(unauthorized(f.rs(&ps).await));
        let rs384 = sign("RS384", &keys.rsa, None, &claims);
        assert!(unauthorized(f.rs(&rs384).await));
        // a header that says RS256 over a PS256 signature
        let header = B64.encode("{\"alg\":\"RS256\"}");
        let (_, _, ps_sig) = split3(&ps);
        assert!(unauthorized(f.rs(&format!("{header}.{p}.{ps_sig}")).await));
        // tampered payload, header, signature
        let evil = B64.encode(claims.replace("alice", "admin"));
        assert!(unauthorized(f.rs(&format!("{h}.{evil}.{s}")).await));
        let header = B64.encode("{\"alg\":\"RS256\",\"kid\":\"x\"}");
        assert!(unauthorized(f.rs(&format!("{header}.{p}.{s}")).await));
        let mut sig = B64.decode(s).unwrap();
        sig[10] ^= 1;
        assert!(unauthorized(
            f.rs(&format!("{h}.{p}.{}", B64.encode(&sig))).await
        ));
        // signed by another key
        let other =
            openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        assert!(unauthorized(
            f.rs(&sign("RS256", &other, None, &claims)).await
        ));
        // malformed base64 and JSON, wrong shapes
        for bad in [
            String::new(),
            "a".to_string(),
            "a.b".to_string(),
            format!("{h}.{p}"),
            format!("{h}.{p}.{s}.x"),
            format!("{h}..{s}"),
            format!("{h}.{p}.{s}="),
            format!("{h}=.{p}.{s}"),
            format!("{h}.{p}+.{s}"),
            format!("{}.{p}.{s}", B64.encode("{\"alg\":\"RS256\"")),
            format!("{}.{p}.{s}", B64.encode("[\"RS256\"]")),
            format!(
                "{}.{p}.{s}",
                B64.encode("{\"alg\":\"RS256\",\"crit\":[\"exp\"]}")
            ),
            format!(
                "{}.{p}.{s}",
                B64.encode("{\"alg\":\"RS256\",\"alg\":\"RS256\"}")
            ),
            format!("{h}.{}.{}", B64.encode("not json"), s),
            format!("{h}.{p}.{}", &s[..s.len() - 1]),
        ] {
            assert!(unauthorized(f.rs(&bad).await), "{bad}");
        }
        // a signed payload that is not a claims object
        for payload in [
            "[1,2]",
            "\"x\"",
            "{\"exp\":1}x",
            "{\"sub\":5,\"exp\":9999999999}",
        ] {
            let token = sign("RS256", &keys.rsa, None, payload);
            assert!(unauthorized(f.rs(&token).await), "{payload}");
        }
        // over 8 KiB, even when correctly signed
        let big = sign(
            "RS256",
            &keys.rsa,
            None,
            &f.claims(&format!(",\"pad\":\"{}\"", "x".repeat(6200))),
        );
        assert!(big.len() > MAX_TOKEN_LEN);
        assert!(unauthorized(f.rs(&big).await));
        let fits = sign(
            "RS256",
            &keys.rsa,
            None,
            &f.claims(&format!(",\"pad\":\"{}\"", "x".repeat(5000))),
        );
        assert!(fits.len() <= MAX_TOKEN_LEN);
        assert!(f.rs(&fits).await.is_ok());
    }

    #[tokio::test]
    async fn bearer_headers_are_read_strictly() {
        let f = fixture();
        let keys = test_keys();
        let good = sign("RS256", &keys.rsa, None, &f.claims(""));
        let auth = f.auths.get("rs").unwrap();
        for (name, value, ok) in [
            ("authorization", format!("Bearer {good}"), true),
            ("authorization", format!("bearer {good}"), true),
            ("authorization", format!("Bearer   {good} "), true),
            ("authorization", format!("Basic {good}"), false),
            ("authorization", good.clone(), false),
            ("authorization", "Bearer".to_string(), false),
            ("authorization", "Bearer ".to_string(), false),
            ("authorization", format!("Bearer {good} extra"), false),
            ("x-token", format!("Bearer {good}"), false),
        ] {
            let r = auth.authenticate(&request("/", &[(name, &value)])).await;
            assert_eq!(r.is_ok(), ok, "{name}: {value:.20}: {r:?}");
        }
        let twice = request(
            "/",
            &[
                ("authorization", &format!("Bearer {good}")),
                ("authorization", &format!("Bearer {good}")),
            ],
        );
        assert!(unauthorized(auth.authenticate(&twice).await));
    }

    #[tokio::test]
    async fn random_tokens_never_panic() {
        let f = fixture();
        let keys = test_keys();
        let (h, p, s) = {
            let good = sign("RS256", &keys.rsa, None, &f.claims(""));
            let (h, p, s) = split3(&good);
            (h.to_string(), p.to_string(), s.to_string())
        };
        let hs_header = B64.encode("{\"alg\":\"HS256\"}");
        let verifiers: Vec<&JwtVerifier> = ["rs", "hs"]
            .iter()
            .map(|n| match &f.auths.by_name[*n].method {
                crate::auth::Method::Jwt(v) => v,
                _ => unreachable!(),
            })
            .collect();
        let mut rng = fastrand::Rng::with_seed(7515);
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/";
        for i in 0..4000 {
            let token = match i % 5 {
                0 => {
                    let bytes: Vec<u8> = (0..rng.usize(0..300)).map(|_| rng.u8(..)).collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                1 => (0..rng.usize(0..400))
                    .map(|_| alphabet[rng.usize(..alphabet.len())] as char)
                    .collect(),
                2 => {
                    let seg = |rng: &mut fastrand::Rng| {
                        let bytes: Vec<u8> = (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect();
                        B64.encode(bytes)
                    };
                    format!("{}.{}.{}", seg(&mut rng), seg(&mut rng), seg(&mut rng))
                }
                3 => {
                    let bytes: Vec<u8> = (0..rng.usize(0..300)).map(|_| rng.u8(..)).collect();
                    let header = if rng.bool() { &h } else { &hs_header };
                    format!("{header}.{}.{s}", B64.encode(bytes))
                }
                _ => {
                    // the good token with a few bytes changed
                    let good = format!("{h}.{p}.{s}");
                    let mut t: Vec<u8> = good.clone().into_bytes();
                    while t == good.as_bytes() {
                        for _ in 0..rng.usize(1..4) {
                            let at = rng.usize(..t.len());
                            t[at] = alphabet[rng.usize(..alphabet.len())];
                        }
                    }
                    String::from_utf8(t).unwrap()
                }
            };
            for v in &verifiers {
                let r = v.verify(&token, None);
                assert!(r.is_err(), "{token}");
            }
            if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
                let req = request_with("/", vec![(http::header::AUTHORIZATION, value)]);
                assert!(f.auths.get("rs").unwrap().authenticate(&req).await.is_err());
            }
        }
    }

    #[test]
    fn the_largest_segments_fit_their_buffers() {
        let mut sig = [0u8; MAX_SIGNATURE];
        assert_eq!(
            decode(&B64.encode([7u8; 1024]), &mut sig).unwrap().len(),
            1024
        );
        let mut payload = [0u8; MAX_PAYLOAD];
        assert_eq!(
            decode(&B64.encode([7u8; 6144]), &mut payload)
                .unwrap()
                .len(),
            6144
        );
        assert!(decode(&B64.encode([7u8; 1030]), &mut sig).is_err());
    }

    #[test]
    fn algorithms_have_one_name_each() {
        for a in Alg::ALL {
            assert_eq!(Alg::from_name(a.name()), Some(a));
            assert!(Alg::from_name(&a.name().to_lowercase()).is_none());
        }
        assert_eq!(Alg::from_name("none"), None);
        assert_eq!(Alg::from_name("ES512"), None);
        assert_eq!(number_text(1300819380.0), "1300819380");
        assert_eq!(number_text(1.5), "1.5");
    }
}
