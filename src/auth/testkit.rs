//! Test helpers: config parsing as the loader does it, keys and token signing with openssl
//! (an implementation independent of the verifier's ring), requests, and small HTTP servers
//! on ephemeral ports.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::unix::ffi::OsStringExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Signer};
use serde::Deserialize;
use toml::Spanned;

use super::{AuthSection, Authenticators, Clock};

/// 64 bytes: long enough for HS512.
pub const JWT_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

pub const HS_SECTION: &str =
    "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"JWT_SECRET\"\n";

pub type Sections = BTreeMap<String, Spanned<AuthSection>>;
/// Key path, span, message.
pub type ParseError = (String, Range<usize>, String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    auth: BTreeMap<String, Spanned<AuthSection>>,
}

/// Parse `[auth.*]` tables as the config loader will: an error gives the key path, the
/// span and the message.
pub fn parse_sections(text: &str) -> Result<Sections, ParseError> {
    let de = toml::Deserializer::parse(text).map_err(|e| {
        (
            "(syntax)".to_string(),
            e.span().unwrap_or(0..0),
            e.message().to_string(),
        )
    })?;
    let file: File = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e
            .path()
            .to_string()
            .replace(".$__serde_spanned_private_value", "");
        let message = e.inner().message().to_string();
        let field = message
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next());
        let key = match field {
            Some(f) if !path.ends_with(f) => format!("{path}.{f}"),
            _ => path,
        };
        (key, e.inner().span().unwrap_or(0..0), message)
    })?;
    Ok(file.auth)
}

pub fn env_with(vars: &[(&str, &[u8])]) -> impl Fn(&str) -> Option<OsString> {
    env_bytes(
        &vars
            .iter()
            .map(|(k, v)| (*k, v.to_vec()))
            .collect::<Vec<_>>(),
    )
}

pub fn env_bytes(vars: &[(&str, Vec<u8>)]) -> impl Fn(&str) -> Option<OsString> {
    let vars: Vec<(String, Vec<u8>)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    move |name| {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| OsString::from_vec(v.clone()))
    }
}

/// Compile a config with JWT_SECRET and CLIENT_SECRET set.
pub fn build(text: &str, clock: Clock) -> Authenticators {
    let env = env_with(&[
        ("JWT_SECRET", JWT_SECRET),
        ("CLIENT_SECRET", b"client-s3cr3t"),
    ]);
    let sections = parse_sections(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
    Authenticators::from_config_with(&sections, &env, clock)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

pub fn request(target: &str, headers: &[(&str, &str)]) -> Parts {
    request_with(
        target,
        headers
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect(),
    )
}

pub fn request_with(target: &str, headers: Vec<(HeaderName, HeaderValue)>) -> Parts {
    let mut builder = http::Request::builder().uri(target);
    for (k, v) in headers {
        builder = builder.header(k, v);
    }
    builder.body(()).unwrap().into_parts().0
}

pub fn bearer_request(token: &str) -> Parts {
    request("/", &[("authorization", &format!("Bearer {token}"))])
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn split3(token: &str) -> (&str, &str, &str) {
    let mut p = token.split('.');
    (p.next().unwrap(), p.next().unwrap(), p.next().unwrap())
}

/// A URL on which nothing listens.
pub fn closed_port_url(path: &str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}{path}")
}

pub struct TestKeys {
    pub rsa: PKey<Private>,
    pub p256: PKey<Private>,
    pub p384: PKey<Private>,
    pub ed25519: PKey<Private>,
    pub rsa_pem: String,
    pub rsa_public_der: Vec<u8>,
    pub p256_pem: String,
    pub p384_pem: String,
    pub ed25519_pem: String,
}

impl TestKeys {
    pub fn private_for(&self, alg: &str) -> &PKey<Private> {
        match alg {
            "ES256" => &self.p256,
            "ES384" => &self.p384,
            "EdDSA" => &self.ed25519,
            _ => &self.rsa,
        }
    }
}

/// Keys generated once per test run.
pub fn test_keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let pem = |k: &PKey<Private>| String::from_utf8(k.public_key_to_pem().unwrap()).unwrap();
        let ec = |nid| {
            PKey::from_ec_key(EcKey::generate(&EcGroup::from_curve_name(nid).unwrap()).unwrap())
                .unwrap()
        };
        let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let p256 = ec(Nid::X9_62_PRIME256V1);
        let p384 = ec(Nid::SECP384R1);
        let ed25519 = PKey::generate_ed25519().unwrap();
        TestKeys {
            rsa_pem: pem(&rsa),
            rsa_public_der: rsa.public_key_to_der().unwrap(),
            p256_pem: pem(&p256),
            p384_pem: pem(&p384),
            ed25519_pem: pem(&ed25519),
            rsa,
            p256,
            p384,
            ed25519,
        }
    })
}

/// The public JWK of a key.
pub fn jwk(kid: Option<&str>, key: &PKey<Private>) -> serde_json::Value {
    let mut v = match key.id() {
        Id::RSA => {
            let rsa = key.rsa().unwrap();
            serde_json::json!({"kty": "RSA", "n": B64.encode(rsa.n().to_vec()), "e": B64.encode(rsa.e().to_vec())})
        }
        Id::EC => {
            let ec = key.ec_key().unwrap();
            let group = ec.group();
            let (crv, len) = if group.curve_name() == Some(Nid::X9_62_PRIME256V1) {
                ("P-256", 32)
            } else {
                ("P-384", 48)
            };
            let mut x = openssl::bn::BigNum::new().unwrap();
            let mut y = openssl::bn::BigNum::new().unwrap();
            let mut ctx = BigNumContext::new().unwrap();
            ec.public_key()
                .affine_coordinates(group, &mut x, &mut y, &mut ctx)
                .unwrap();
            serde_json::json!({"kty": "EC", "crv": crv, "x": B64.encode(x.to_vec_padded(len).unwrap()), "y": B64.encode(y.to_vec_padded(len).unwrap())})
        }
        _ => {
            serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": B64.encode(key.raw_public_key().unwrap())})
        }
    };
    if let Some(kid) = kid {
        v["kid"] = kid.into();
    }
    v
}

fn digest_of(alg: &str) -> MessageDigest {
    match &alg[2..] {
        "384" => MessageDigest::sha384(),
        "512" => MessageDigest::sha512(),
        _ => MessageDigest::sha256(),
    }
}

/// A compact JWS over `claims`, signed with openssl.
pub fn sign(alg: &str, key: &PKey<Private>, kid: Option<&str>, claims: &str) -> String {
    let header = match kid {
        Some(kid) => format!("{{\"alg\":\"{alg}\",\"kid\":\"{kid}\"}}"),
        None => format!("{{\"alg\":\"{alg}\",\"typ\":\"JWT\"}}"),
    };
    let input = format!("{}.{}", B64.encode(header), B64.encode(claims));
    let sig = match alg {
        "EdDSA" => Signer::new_without_digest(key)
            .unwrap()
            .sign_oneshot_to_vec(input.as_bytes())
            .unwrap(),
        _ if alg.starts_with("ES") => {
            let len = if alg == "ES256" { 32 } else { 48 };
            let mut signer = Signer::new(digest_of(alg), key).unwrap();
            signer.update(input.as_bytes()).unwrap();
            let der = EcdsaSig::from_der(&signer.sign_to_vec().unwrap()).unwrap();
            let mut raw = der.r().to_vec_padded(len).unwrap();
            raw.extend(der.s().to_vec_padded(len).unwrap());
            raw
        }
        _ => {
            let md = digest_of(alg);
            let mut signer = Signer::new(md, key).unwrap();
            if alg.starts_with("PS") {
                signer.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
                signer
                    .set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
                    .unwrap();
                signer.set_rsa_mgf1_md(md).unwrap();
            }
            signer.update(input.as_bytes()).unwrap();
            signer.sign_to_vec().unwrap()
        }
    };
    format!("{input}.{}", B64.encode(sig))
}

/// An HS256/384/512 token, signed with openssl.
pub fn sign_hmac(alg: &str, secret: &[u8], claims: &str) -> String {
    let header = format!("{{\"alg\":\"{alg}\",\"typ\":\"JWT\"}}");
    let input = format!("{}.{}", B64.encode(header), B64.encode(claims));
    let key = PKey::hmac(secret).unwrap();
    let mut signer = Signer::new(digest_of(alg), &key).unwrap();
    signer.update(input.as_bytes()).unwrap();
    format!("{input}.{}", B64.encode(signer.sign_to_vec().unwrap()))
}

pub fn hs_token(claims: &str) -> String {
    sign_hmac("HS256", JWT_SECRET, claims)
}

/// What a test server's handler sees.
pub struct TestRequest {
    pub method: http::Method,
    pub headers: HeaderMap,
    pub body: String,
}

/// An HTTP/1 server on 127.0.0.1:0 that answers with the handler's (status, JSON body).
pub struct TestServer {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Close the listener and every connection; returns once they are gone.
    pub async fn stop(&self) {
        let tasks: Vec<_> = self.tasks.lock().unwrap().drain(..).collect();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

pub async fn serve<F>(handler: F) -> TestServer
where
    F: Fn(&TestRequest) -> (u16, String) + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    let hits = Arc::new(AtomicUsize::new(0));
    let tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
    let (counter, connections) = (hits.clone(), tasks.clone());
    let accept = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (handler, counter) = (handler.clone(), counter.clone());
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (handler, counter) = (handler.clone(), counter.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        counter.fetch_add(1, Ordering::SeqCst);
                        let (status, text) = handler(&TestRequest {
                            method: parts.method,
                            headers: parts.headers,
                            body: String::from_utf8_lossy(&body).into_owned(),
                        });
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(text)))
                                .unwrap(),
                        )
                    }
                });
            let conn = tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
            connections.lock().unwrap().push(conn);
        }
    });
    tasks.lock().unwrap().push(accept);
    TestServer { addr, hits, tasks }
}

/// A server that accepts connections and never answers.
pub async fn silent_server() -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let accept = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    TestServer {
        addr,
        hits,
        tasks: Arc::new(Mutex::new(vec![accept])),
    }
}
