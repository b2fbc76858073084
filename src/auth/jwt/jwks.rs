//! Public keys: decoded from PEM or from a JWKS document (RFC 7517), and for `jwks_url`
//! fetched, cached and refreshed.
//!
//! A fetched key set lives in an [`ArcSwapOption`]: requests load it without a lock, a
//! fetch replaces it whole. It is fetched at start and every `jwks_refresh` by the
//! [`JwksRefresher`] background service, and on the request path when a token names an
//! unknown `kid` (the IdP rotated its keys), at most once per 10 s per authenticator. A
//! failed fetch keeps the keys already held; before the first success, tokens that need a
//! public key get 503.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, PointConversionForm};
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Deserialize;

use ring::signature;

use super::Alg;
use crate::auth::fetch::{describe, read_success};
use crate::auth::Clock;

/// Unknown `kid`s refetch at most this often.
const REFETCH_INTERVAL_MS: u64 = 10_000;
/// After a failed fetch, the refresher tries again this soon (or at its interval if sooner).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);
/// A JWKS document larger than this is refused.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Keys read from one document; the rest are ignored.
const MAX_KEYS: usize = 100;

/// JWKS values are base64url; some publishers pad them, which is harmless here.
const JWK_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A public key, decoded into the form ring verifies with.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum KeyMaterial {
    /// Big-endian modulus and exponent without leading zeros; 2048 to 8192 bits.
    Rsa {
        n: Box<[u8]>,
        e: Box<[u8]>,
    },
    /// Uncompressed point (0x04 || x || y).
    P256(Box<[u8]>),
    P384(Box<[u8]>),
    /// The 32-byte public key.
    Ed25519(Box<[u8]>),
}

impl KeyMaterial {
    pub fn describe(&self) -> &'static str {
        match self {
            KeyMaterial::Rsa { .. } => "an RSA key",
            KeyMaterial::P256(_) => "an EC P-256 key",
            KeyMaterial::P384(_) => "an EC P-384 key",
            KeyMaterial::Ed25519(_) => "an Ed25519 key",
        }
    }

    fn rsa(n: &[u8], e: &[u8]) -> Result<KeyMaterial, String> {
        let n = strip_zeros(n);
        let e = strip_zeros(e);
        let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
        if !(2048..=8192).contains(&bits) {
            return Err(format!(
                "an RSA key of {bits} bits: keys of 2048 to 8192 bits are accepted"
            ));
        }
        if e.is_empty() || e.len() > 4 {
            return Err("an RSA key with an unusable exponent".to_string());
        }
        Ok(KeyMaterial::Rsa {
            n: n.into(),
            e: e.into(),
        })
    }

    /// Checks that the point is on the curve.
    fn ec(nid: Nid, x: &[u8], y: &[u8]) -> Result<KeyMaterial, String> {
        let len = if nid == Nid::X9_62_PRIME256V1 { 32 } else { 48 };
        if x.len() != len || y.len() != len {
            return Err("an EC key whose coordinates have the wrong length".to_string());
        }
        let on_curve = EcGroup::from_curve_name(nid).and_then(|group| {
            let (x, y) = (BigNum::from_slice(x)?, BigNum::from_slice(y)?);
            EcKey::from_public_key_affine_coordinates(&group, &x, &y)
        });
        if on_curve.is_err() {
            return Err("an EC key whose point is not on its curve".to_string());
        }
        let mut point = Vec::with_capacity(1 + 2 * len);
        point.push(4);
        point.extend_from_slice(x);
        point.extend_from_slice(y);
        Ok(if len == 32 {
            KeyMaterial::P256(point.into())
        } else {
            KeyMaterial::P384(point.into())
        })
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// A PEM public key ("PUBLIC KEY" or "RSA PUBLIC KEY") or a certificate's key.
pub(crate) fn key_from_pem(pem: &[u8]) -> Result<KeyMaterial, String> {
    let pkey = PKey::public_key_from_pem(pem)
        .or_else(|_| openssl::rsa::Rsa::public_key_from_pem_pkcs1(pem).and_then(PKey::from_rsa))
        .or_else(|_| openssl::x509::X509::from_pem(pem).and_then(|c| c.public_key()))
        .map_err(|_| {
            "not a PEM public key (RSA, EC P-256/P-384 or Ed25519) nor a certificate".to_string()
        })?;
    from_pkey(&pkey)
}

fn from_pkey(pkey: &PKey<Public>) -> Result<KeyMaterial, String> {
    let broken = |_| "a key openssl cannot read".to_string();
    match pkey.id() {
        Id::RSA => {
            let rsa = pkey.rsa().map_err(broken)?;
            KeyMaterial::rsa(&rsa.n().to_vec(), &rsa.e().to_vec())
        }
        Id::EC => {
            let ec = pkey.ec_key().map_err(broken)?;
            let group = ec.group();
            let nid = group.curve_name();
            if nid != Some(Nid::X9_62_PRIME256V1) && nid != Some(Nid::SECP384R1) {
                return Err("an EC key on a curve other than P-256 and P-384".to_string());
            }
            let mut ctx = BigNumContext::new().map_err(broken)?;
            let point = ec
                .public_key()
                .to_bytes(group, PointConversionForm::UNCOMPRESSED, &mut ctx)
                .map_err(broken)?;
            Ok(if nid == Some(Nid::X9_62_PRIME256V1) {
                KeyMaterial::P256(point.into())
            } else {
                KeyMaterial::P384(point.into())
            })
        }
        Id::ED25519 => Ok(KeyMaterial::Ed25519(
            pkey.raw_public_key().map_err(broken)?.into(),
        )),
        _ => Err("a key type other than RSA, EC and Ed25519".to_string()),
    }
}

/// One key of a set, with the `kid` and `alg` it is bound to.
#[derive(Debug, Clone)]
pub(crate) struct VerifyingKey {
    kid: Option<Box<str>>,
    alg: Option<Alg>,
    material: KeyMaterial,
}

impl VerifyingKey {
    pub fn verify(&self, alg: Alg, message: &[u8], sig: &[u8]) -> bool {
        self.material.verify(alg, message, sig)
    }
}

/// The public keys of one authenticator.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeySet {
    keys: Vec<VerifyingKey>,
}

/// One entry of a JWKS document; unknown members are ignored.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    usage: Option<String>,
    #[serde(default)]
    key_ops: Option<Vec<String>>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<serde_json::Value>,
}

impl Jwk {
    /// The key, or why it is not used. Symmetric (`oct`) keys are never taken from a
    /// JWKS: HMAC secrets come only from `secret_env`.
    fn decode(&self) -> Result<VerifyingKey, String> {
        if self.usage.as_deref().is_some_and(|u| u != "sig") {
            return Err("not a signing key".to_string());
        }
        if self
            .key_ops
            .as_ref()
            .is_some_and(|ops| !ops.iter().any(|o| o == "verify"))
        {
            return Err("not a verification key".to_string());
        }
        let alg = match &self.alg {
            Some(name) => Some(Alg::from_name(name).ok_or("an unsupported alg")?),
            None => None,
        };
        let b64 = |field: &Option<String>, name: &str| -> Result<Vec<u8>, String> {
            let text = field.as_deref().ok_or(format!("no `{name}`"))?;
            JWK_BASE64
                .decode(text)
                .map_err(|_| format!("`{name}` is not base64url"))
        };
        let material = match (self.kty.as_str(), self.crv.as_deref()) {
            ("RSA", _) => KeyMaterial::rsa(&b64(&self.n, "n")?, &b64(&self.e, "e")?)?,
            ("EC", Some("P-256")) => KeyMaterial::ec(
                Nid::X9_62_PRIME256V1,
                &b64(&self.x, "x")?,
                &b64(&self.y, "y")?,
            )?,
            ("EC", Some("P-384")) => {
                KeyMaterial::ec(Nid::SECP384R1, &b64(&self.x, "x")?, &b64(&self.y, "y")?)?
            }
            ("OKP", Some("Ed25519")) => {
                let x = b64(&self.x, "x")?;
                if x.len() != 32 {
                    return Err("an Ed25519 key that is not 32 bytes".to_string());
                }
                KeyMaterial::Ed25519(x.into())
            }
            (kty, crv) => {
                return Err(format!(
                    "an unsupported key type {kty}{}",
                    crv.map(|c| format!("/{c}")).unwrap_or_default()
                ))
            }
        };
        if alg.is_some_and(|a| !material.fits(a)) {
            return Err("an alg that does not fit the key".to_string());
        }
        Ok(VerifyingKey {
            kid: self.kid.as_deref().map(Box::from),
            alg,
            material,
        })
    }
}

impl KeySet {
    pub fn single(material: KeyMaterial) -> KeySet {
        KeySet {
            keys: vec![VerifyingKey {
                kid: None,
                alg: None,
                material,
            }],
        }
    }

    /// Decode a JWKS document; returns the set and how many entries were skipped. A
    /// document without a usable key is an error.
    pub fn from_jwks(json: &[u8]) -> Result<(KeySet, usize), String> {
        let doc: JwkSet =
            serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let total = doc.keys.len();
        let keys: Vec<VerifyingKey> = doc
            .keys
            .into_iter()
            .take(MAX_KEYS)
            .filter_map(|v| serde_json::from_value::<Jwk>(v).ok()?.decode().ok())
            .collect();
        if keys.is_empty() {
            return Err(format!(
                "no usable key among its {total}: an RSA (2048 to 8192 bits), EC P-256/P-384 or Ed25519 signing key is needed"
            ));
        }
        let skipped = total - keys.len();
        Ok((KeySet { keys }, skipped))
    }

    /// The keys that may have signed a token with this `alg` and `kid`: of the right type,
    /// not bound to another alg, and with that kid (keys without a kid match any).
    pub fn candidates<'a>(
        &'a self,
        alg: Alg,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a VerifyingKey> + 'a {
        self.keys.iter().filter(move |k| {
            k.material.fits(alg)
                && k.alg.is_none_or(|a| a == alg)
                && match (kid, &k.kid) {
                    (Some(want), Some(have)) => **have == *want,
                    _ => true,
                }
        })
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    pub fn has_key_for(&self, alg: Alg) -> bool {
        self.candidates(alg, None).next().is_some()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

/// A `jwks_url` and the key set last fetched from it.
pub(crate) struct RemoteJwks {
    name: Arc<str>,
    url: reqwest::Url,
    client: reqwest::Client,
    timeout: Duration,
    refresh: Duration,
    keys: ArcSwapOption<KeySet>,
    /// When the request path last refetched (Unix ms); the lock also makes requests that
    /// miss at the same time wait for one fetch instead of starting several.
    refetched: tokio::sync::Mutex<Option<u64>>,
    clock: Clock,
}

impl fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteJwks(auth.{}, {})", self.name, self.url)
    }
}

impl RemoteJwks {
    pub(crate) fn same_url(&self, other: &RemoteJwks) -> bool {
        self.url == other.url
    }

    /// Take the key set `old` holds, unless this one has fetched its own.
    pub(crate) fn adopt(&self, old: &RemoteJwks) {
        if self.keys.load().is_none() {
            self.keys.store(old.keys.load_full());
        }
    }

    pub fn new(
        name: &str,
        url: reqwest::Url,
        client: reqwest::Client,
        timeout: Duration,
        refresh: Duration,
        clock: Clock,
    ) -> RemoteJwks {
        RemoteJwks {
            name: Arc::from(name),
            url,
            client,
            timeout,
            refresh,
            keys: ArcSwapOption::empty(),
            refetched: tokio::sync::Mutex::new(None),
            clock,
        }
    }

    /// The current key set, `None` before the first successful fetch. Do not hold the
    /// guard across an await.
    pub fn load(&self) -> arc_swap::Guard<Option<Arc<KeySet>>> {
        self.keys.load()
    }

    /// Fetch and decode the document.
    async fn fetch(&self) -> Result<(KeySet, usize), String> {
        let fetch = async {
            let response = self
                .client
                .get(self.url.clone())
                .header(
                    http::header::ACCEPT,
                    "application/jwk-set+json, application/json",
                )
                .send()
                .await
                .map_err(describe)?;
            let body = read_success(response, MAX_JWKS_BYTES).await?;
            KeySet::from_jwks(&body)
        };
        tokio::time::timeout(self.timeout, fetch)
            .await
            .map_err(|_| format!("timed out after {:?}", self.timeout))?
    }

    /// Fetch and, on success, replace the key set; on failure keep it and say so.
    pub async fn refresh(&self) -> bool {
        match self.fetch().await {
            Ok((set, skipped)) => {
                log::info!(
                    "auth.{}: {} keys from {} ({skipped} skipped)",
                    self.name,
                    set.len(),
                    self.url
                );
                self.keys.store(Some(Arc::new(set)));
                true
            }
            Err(e) => {
                match self.keys.load().as_deref() {
                    Some(set) => log::warn!(
                        "auth.{}: cannot fetch the JWKS from {}: {e}; the {} cached keys stay in use",
                        self.name,
                        self.url,
                        set.len()
                    ),
                    None => log::warn!(
                        "auth.{}: cannot fetch the JWKS from {}: {e}; tokens signed with public keys get 503 until a fetch succeeds",
                        self.name,
                        self.url
                    ),
                }
                false
            }
        }
    }

    /// A token missed the key set `seen` (an address, `None` when there was none): refetch
    /// unless another request already did, or one did less than 10 s ago.
    pub async fn refetch_after_miss(&self, seen: Option<usize>) {
        let mut last = self.refetched.lock().await;
        let current = self.keys.load().as_ref().map(|k| Arc::as_ptr(k) as usize);
        if current != seen {
            return;
        }
        let now = self.clock.now_ms();
        if last.is_some_and(|t| now < t.saturating_add(REFETCH_INTERVAL_MS)) {
            return;
        }
        *last = Some(now);
        self.refresh().await;
    }

    /// Fetch now, then on the interval (sooner after a failure) until shutdown.
    async fn run(&self, mut shutdown: ShutdownWatch) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let ok = tokio::select! {
                ok = self.refresh() => ok,
                _ = shutdown.changed() => return,
            };
            let wait = if ok {
                self.refresh
            } else {
                self.refresh.min(RETRY_AFTER_FAILURE)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

/// The background service that keeps every `jwks_url` fetched; from
/// [`crate::auth::Authenticators::refresher`]. With no JWKS URL it returns at once.
#[derive(Debug, Clone)]
pub struct JwksRefresher {
    remotes: Vec<Arc<RemoteJwks>>,
}

impl JwksRefresher {
    pub(crate) fn new(remotes: Vec<Arc<RemoteJwks>>) -> JwksRefresher {
        JwksRefresher { remotes }
    }
}

#[async_trait]
impl BackgroundService for JwksRefresher {
    async fn start(&self, shutdown: ShutdownWatch) {
        futures::future::join_all(self.remotes.iter().map(|r| r.run(shutdown.clone()))).await;
    }
}

impl KeyMaterial {
    /// Whether this key can verify `alg` at all.
    pub fn fits(&self, alg: Alg) -> bool {
        match self {
            KeyMaterial::Rsa { .. } => alg.rsa_parameters().is_some(),
            KeyMaterial::P256(_) => alg == Alg::Es256,
            KeyMaterial::P384(_) => alg == Alg::Es384,
            KeyMaterial::Ed25519(_) => alg == Alg::EdDsa,
        }
    }

    pub fn verify(&self, alg: Alg, message: &[u8], sig: &[u8]) -> bool {
        match self {
            KeyMaterial::Rsa { n, e } => alg.rsa_parameters().is_some_and(|params| {
                signature::RsaPublicKeyComponents { n: &**n, e: &**e }
                    .verify(params, message, sig)
                    .is_ok()
            }),
            KeyMaterial::P256(point) | KeyMaterial::P384(point) | KeyMaterial::Ed25519(point) => {
                self.fits(alg)
                    && alg.verification().is_some_and(|v| {
                        signature::UnparsedPublicKey::new(v, &**point)
                            .verify(message, sig)
                            .is_ok()
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testkit::*;
    use crate::auth::{Authenticators, Rejection};
    use std::sync::Mutex;

    fn rsa_jwk(kid: &str) -> serde_json::Value {
        jwk(Some(kid), &test_keys().rsa)
    }

    #[test]
    fn jwks_documents_decode_and_skip_what_they_cannot_use() {
        let keys = test_keys();
        let mut doc = serde_json::json!({"keys": [
            jwk(Some("r"), &keys.rsa),
            jwk(Some("p"), &keys.p256),
            jwk(Some("q"), &keys.p384),
            jwk(Some("e"), &keys.ed25519),
            {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
            {"kty": 5},
            "not an object",
        ]});
        // an off-curve point
        let mut off = jwk(Some("off"), &keys.p256);
        off["y"] = serde_json::Value::String(JWK_BASE64.encode([1u8; 32]));
        doc["keys"].as_array_mut().unwrap().push(off);
        let (set, skipped) = KeySet::from_jwks(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 4);
        assert_eq!(skipped, 8);
        assert!(set.has_kid("r") && set.has_kid("e") && !set.has_kid("sym"));
        for alg in [Alg::Rs256, Alg::Ps512, Alg::Es256, Alg::Es384, Alg::EdDsa] {
            assert!(set.has_key_for(alg), "{alg:?}");
        }
        assert!(!set.has_key_for(Alg::Hs256));
        assert_eq!(set.candidates(Alg::Rs256, Some("r")).count(), 1);
        assert_eq!(set.candidates(Alg::Rs256, Some("p")).count(), 0);
        assert_eq!(set.candidates(Alg::Es256, None).count(), 1);
        assert!(KeySet::from_jwks(b"{\"keys\":[]}").is_err());
        assert!(KeySet::from_jwks(b"[]").is_err());
        assert!(KeySet::from_jwks(b"{\"keys\":[{\"kty\":\"oct\",\"k\":\"AA\"}]}").is_err());
    }

    #[test]
    fn a_key_bound_to_an_alg_serves_only_that_alg() {
        let mut k = rsa_jwk("r");
        k["alg"] = "PS256".into();
        let (set, _) =
            KeySet::from_jwks(serde_json::json!({"keys": [k]}).to_string().as_bytes()).unwrap();
        assert!(set.has_key_for(Alg::Ps256));
        assert!(!set.has_key_for(Alg::Rs256));
        let mut k = rsa_jwk("r");
        k["alg"] = "ES256".into();
        assert!(
            KeySet::from_jwks(serde_json::json!({"keys": [k]}).to_string().as_bytes()).is_err()
        );
    }

    #[test]
    fn pem_keys_decode_by_type() {
        let keys = test_keys();
        assert!(matches!(
            key_from_pem(keys.rsa_pem.as_bytes()),
            Ok(KeyMaterial::Rsa { .. })
        ));
        assert!(matches!(
            key_from_pem(keys.p256_pem.as_bytes()),
            Ok(KeyMaterial::P256(_))
        ));
        assert!(matches!(
            key_from_pem(keys.p384_pem.as_bytes()),
            Ok(KeyMaterial::P384(_))
        ));
        assert!(matches!(
            key_from_pem(keys.ed25519_pem.as_bytes()),
            Ok(KeyMaterial::Ed25519(_))
        ));
        let pkcs1 = keys.rsa.rsa().unwrap().public_key_to_pem_pkcs1().unwrap();
        assert_eq!(
            key_from_pem(&pkcs1).unwrap(),
            key_from_pem(keys.rsa_pem.as_bytes()).unwrap()
        );
        // a private key is not a public key file
        let private = keys.rsa.private_key_to_pem_pkcs8().unwrap();
        assert!(key_from_pem(&private).is_err());
        let small = openssl::rsa::Rsa::generate(1024)
            .unwrap()
            .public_key_to_pem()
            .unwrap();
        assert!(key_from_pem(&small).unwrap_err().contains("1024 bits"));
        let p521 = openssl::ec::EcKey::generate(&EcGroup::from_curve_name(Nid::SECP521R1).unwrap())
            .unwrap();
        let p521 = PKey::from_ec_key(p521)
            .unwrap()
            .public_key_to_pem()
            .unwrap();
        assert!(key_from_pem(&p521).unwrap_err().contains("curve"));
    }

    #[tokio::test]
    async fn a_jwks_file_picks_keys_by_kid_and_never_refetches() {
        let keys = test_keys();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let doc = serde_json::json!({"keys": [rsa_jwk("k1"), jwk(Some("e1"), &keys.ed25519)]});
        std::fs::write(&path, doc.to_string()).unwrap();
        let text = format!(
            "[auth.f]\ntype = \"jwt\"\nalgorithms = [\"RS256\", \"EdDSA\"]\njwks_file = \"{}\"\n",
            path.display()
        );
        let auths = build(&text, Clock::system());
        assert!(!auths.fetches_jwks());
        let auth = auths.get("f").unwrap();
        let claims = format!("{{\"sub\":\"a\",\"exp\":{}}}", unix_now() + 60);
        for (alg, key, kid, ok) in [
            ("RS256", &keys.rsa, Some("k1"), true),
            ("RS256", &keys.rsa, None, true),
            ("EdDSA", &keys.ed25519, Some("e1"), true),
            ("RS256", &keys.rsa, Some("k2"), false),
            ("EdDSA", &keys.ed25519, Some("k1"), false),
            ("RS256", &keys.rsa, Some("e1"), false),
        ] {
            let token = sign(alg, key, kid, &claims);
            let r = auth.authenticate(&bearer_request(&token)).await;
            assert_eq!(r.is_ok(), ok, "{alg} {kid:?}: {r:?}");
            if !ok {
                assert!(matches!(r, Err(Rejection::Unauthorized { .. })));
            }
        }
        // a file without a key for a listed algorithm is refused at load
        let text = text.replace("\"EdDSA\"]", "\"EdDSA\", \"ES384\"]");
        let sections = parse_sections(&text).unwrap();
        let env = env_with(&[]);
        let e = Authenticators::from_config_with(&sections, &env, Clock::system()).unwrap_err();
        assert_eq!(e.key, "auth.f.algorithms[2]");
        assert!(e.message.contains("can verify ES384"), "{e}");
    }

    /// A JWKS endpoint whose document and health the test changes.
    struct Idp {
        server: TestServer,
        doc: Arc<Mutex<Option<serde_json::Value>>>,
    }

    async fn idp(keys: Vec<serde_json::Value>) -> Idp {
        let doc = Arc::new(Mutex::new(Some(serde_json::json!({ "keys": keys }))));
        let shared = doc.clone();
        let server = serve(move |_req| match &*shared.lock().unwrap() {
            Some(doc) => (200, doc.to_string()),
            None => (500, "oops".to_string()),
        })
        .await;
        Idp { server, doc }
    }

    fn remote_of(auths: &Authenticators) -> Arc<RemoteJwks> {
        auths.remotes[0].clone()
    }

    async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn rotated_keys_are_fetched_once_per_10s_and_outages_keep_the_cache() {
        let keys = test_keys();
        let idp = idp(vec![rsa_jwk("k1")]).await;
        let start = Duration::from_secs(1_700_000_000);
        let clock = Clock::fixed(start);
        let text = format!(
            "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"RS256\", \"ES256\"]\njwks_url = \"{}\"\njwks_refresh = \"1h\"\n",
            idp.server.url("/jwks")
        );
        let auths = build(&text, clock.clone());
        assert!(auths.fetches_jwks());
        let auth = auths.get("users").unwrap();
        let remote = remote_of(&auths);

        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let refresher = auths.refresher();
        let task = tokio::spawn(async move { refresher.start(shutdown).await });
        wait_for("the first fetch", || remote.load().is_some()).await;
        assert_eq!(idp.server.hits(), 1);

        let claims = format!("{{\"sub\":\"alice\",\"exp\":{}}}", start.as_secs() + 3600);
        let t1 = sign("RS256", &keys.rsa, Some("k1"), &claims);
        assert_eq!(
            auth.authenticate(&bearer_request(&t1)).await.unwrap().key,
            "users:alice"
        );
        assert_eq!(idp.server.hits(), 1, "a known kid fetches nothing");

        // the IdP rotates: a token with the new kid is accepted after one refetch
        *idp.doc.lock().unwrap() =
            Some(serde_json::json!({"keys": [rsa_jwk("k1"), jwk(Some("k2"), &keys.p256)]}));
        let t2 = sign("ES256", &keys.p256, Some("k2"), &claims);
        auth.authenticate(&bearer_request(&t2)).await.unwrap();
        assert_eq!(idp.server.hits(), 2);

        // a second unknown kid within 10 s does not refetch
        let t3 = sign("RS256", &keys.rsa, Some("k3"), &claims);
        assert!(matches!(
            auth.authenticate(&bearer_request(&t3)).await,
            Err(Rejection::Unauthorized { .. })
        ));
        assert_eq!(idp.server.hits(), 2);
        clock.advance(Duration::from_secs(9));
        assert!(auth.authenticate(&bearer_request(&t3)).await.is_err());
        assert_eq!(idp.server.hits(), 2);
        // after 10 s it may
        clock.advance(Duration::from_secs(2));
        assert!(auth.authenticate(&bearer_request(&t3)).await.is_err());
        assert_eq!(idp.server.hits(), 3);

        // the endpoint fails, then goes away: the cached keys keep working
        *idp.doc.lock().unwrap() = None;
        clock.advance(Duration::from_secs(11));
        assert!(auth.authenticate(&bearer_request(&t3)).await.is_err());
        assert_eq!(idp.server.hits(), 4);
        assert!(auth.authenticate(&bearer_request(&t1)).await.is_ok());
        idp.server.stop().await;
        clock.advance(Duration::from_secs(11));
        assert!(!remote.refresh().await);
        assert!(auth.authenticate(&bearer_request(&t3)).await.is_err());
        assert!(auth.authenticate(&bearer_request(&t1)).await.is_ok());
        assert!(auth.authenticate(&bearer_request(&t2)).await.is_ok());

        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn the_refresher_refetches_on_its_interval() {
        let keys = test_keys();
        let idp = idp(vec![rsa_jwk("k1")]).await;
        let text = format!(
            "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\njwks_url = \"{}\"\njwks_refresh = \"1s\"\n",
            idp.server.url("/jwks")
        );
        let auths = build(&text, Clock::system());
        let remote = remote_of(&auths);
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let refresher = auths.refresher();
        let task = tokio::spawn(async move { refresher.start(shutdown).await });
        wait_for("the first fetch", || remote.load().is_some()).await;
        *idp.doc.lock().unwrap() = Some(serde_json::json!({"keys": [rsa_jwk("k2")]}));
        wait_for("the refresh", || {
            remote.load().as_deref().is_some_and(|s| s.has_kid("k2"))
        })
        .await;
        assert!(idp.server.hits() >= 2);
        let token = sign(
            "RS256",
            &keys.rsa,
            Some("k2"),
            &format!("{{\"exp\":{}}}", unix_now() + 60),
        );
        assert!(auths
            .get("users")
            .unwrap()
            .authenticate(&bearer_request(&token))
            .await
            .is_ok());
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn before_the_first_fetch_verification_is_unavailable() {
        let keys = test_keys();
        let text = format!(
            "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"RS256\", \"HS256\"]\njwks_url = \"{}\"\nsecret_env = \"JWT_SECRET\"\ntimeout = \"2s\"\n",
            closed_port_url("/jwks")
        );
        let auths = build(&text, Clock::system());
        let auth = auths.get("users").unwrap();
        let claims = format!("{{\"sub\":\"a\",\"exp\":{}}}", unix_now() + 60);
        let rs = sign("RS256", &keys.rsa, Some("k1"), &claims);
        assert_eq!(
            auth.authenticate(&bearer_request(&rs)).await,
            Err(Rejection::Unavailable)
        );
        // HS tokens do not need the JWKS; garbage is still garbage
        let hs = sign_hmac("HS256", JWT_SECRET, &claims);
        assert!(auth.authenticate(&bearer_request(&hs)).await.is_ok());
        assert!(matches!(
            auth.authenticate(&bearer_request("x.y.z")).await,
            Err(Rejection::Unauthorized { .. })
        ));
        // a refresher with nothing to do returns
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let idle = Authenticators::default().refresher();
        tokio::time::timeout(Duration::from_secs(1), idle.start(shutdown))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_stops_the_refresher_promptly() {
        let text = format!(
            "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\njwks_url = \"{}\"\n",
            closed_port_url("/jwks")
        );
        let auths = build(&text, Clock::system());
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let refresher = auths.refresher();
        let task = tokio::spawn(async move { refresher.start(shutdown).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(remote_of(&auths).load().is_none());
    }
}
