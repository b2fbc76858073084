//! Authentication end to end: JWT (HMAC secret and a JWKS server that rotates keys), API
//! keys, OAuth2 introspection against a real endpoint, identity rate limits, config errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use common::*;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &str = "a-test-secret-of-at-least-thirty-two-bytes!";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str, exp_in: i64) -> String {
    format!(
        r#"{{"sub":"{sub}","iss":"https://idp.test/","aud":"pylon","exp":{},"iat":{}}}"#,
        now() as i64 + exp_in,
        now()
    )
}

fn hs256(claims: &str) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        B64.encode(claims)
    );
    let key = PKey::hmac(SECRET.as_bytes()).unwrap();
    let mut signer = Signer::new(MessageDigest::sha256(), &key).unwrap();
    signer.update(input.as_bytes()).unwrap();
    format!("{input}.{}", B64.encode(signer.sign_to_vec().unwrap()))
}

fn rs256(key: &PKey<Private>, kid: &str, claims: &str) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#)),
        B64.encode(claims)
    );
    let mut signer = Signer::new(MessageDigest::sha256(), key).unwrap();
    signer.update(input.as_bytes()).unwrap();
    format!("{input}.{}", B64.encode(signer.sign_to_vec().unwrap()))
}

fn jwk(key: &PKey<Private>, kid: &str) -> serde_json::Value {
    let rsa = key.rsa().unwrap();
    serde_json::json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
        "n": B64.encode(rsa.n().to_vec()), "e": B64.encode(rsa.e().to_vec())})
}

fn rsa_key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn jwt_route(upstream: std::net::SocketAddr) -> String {
    format!(
        "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"PYLON_TEST_JWT_SECRET\"\nissuer = \"https://idp.test/\"\naudience = [\"pylon\"]\nforward_claims = {{ sub = \"X-User-Id\" }}\nstrip_credentials = true\n{}",
        route("/users", upstream, "auth = \"users\"")
    )
}

#[test]
fn a_valid_jwt_is_admitted_with_its_claims_forwarded_and_the_token_stripped() {
    let up = Upstream::echo();
    let gw = Gateway::start_with_env(&jwt_route(up.addr), &[("PYLON_TEST_JWT_SECRET", SECRET)]);
    let r = client()
        .get(gw.url("/users/me"))
        .header("Authorization", bearer(&hs256(&claims("alice", 300))))
        .header("X-User-Id", "mallory")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert_eq!(
        seen.header("x-user-id"),
        Some("alice"),
        "the claim, not the client's header"
    );
    assert!(
        !seen.has_header("authorization"),
        "strip_credentials removed the token"
    );
}

#[test]
fn missing_invalid_and_forged_tokens_get_401_json_with_a_bearer_challenge() {
    let up = Upstream::echo();
    let gw = Gateway::start_with_env(&jwt_route(up.addr), &[("PYLON_TEST_JWT_SECRET", SECRET)]);
    let good = hs256(&claims("alice", 300));
    let (head, payload, sig) = {
        let mut p = good.split('.');
        (
            p.next().unwrap().to_string(),
            p.next().unwrap().to_string(),
            p.next().unwrap().to_string(),
        )
    };
    let tampered = format!("{head}.{}.{sig}", B64.encode(claims("admin", 300)));
    let none_alg = format!("{}.{payload}.", B64.encode(r#"{"alg":"none"}"#));
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("garbage", Some("not-a-token".into())),
        ("tampered", Some(tampered)),
        ("alg none", Some(none_alg)),
        ("expired", Some(hs256(&claims("alice", -3600)))),
        (
            "wrong audience",
            Some(hs256(
                &claims("alice", 300).replace("\"pylon\"", "\"other\""),
            )),
        ),
        ("huge", Some(format!("{head}.{}.{sig}", "A".repeat(9000)))),
    ];
    for (what, token) in cases {
        let mut req = client().get(gw.url("/users/me"));
        if let Some(t) = token {
            req = req.header("Authorization", bearer(&t));
        }
        let r = req.send().unwrap();
        assert_eq!(r.status(), 401, "{what}");
        let challenge = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            challenge.starts_with("Bearer ") && challenge.contains("error=\"invalid_token\""),
            "{what}: {challenge}"
        );
        let body: serde_json::Value = r.json().unwrap();
        assert_eq!(body, error_body(401, "Unauthorized."), "{what}");
    }
    assert_eq!(up.hits(), 0, "nothing unauthenticated reached the upstream");
}

#[test]
fn jwks_keys_rotate_without_a_restart() {
    let k1 = rsa_key();
    let k2 = rsa_key();
    let jwks = Arc::new(Mutex::new(
        serde_json::json!({"keys": [jwk(&k1, "k1")]}).to_string(),
    ));
    let served = jwks.clone();
    let idp = Upstream::start(Arc::new(move |_: &Seen| {
        Reply::ok(&served.lock().unwrap()).header("content-type", "application/json")
    }));
    let up = Upstream::echo();
    let gw = Gateway::start(
        "",
        &format!(
            "[auth.idp]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\njwks_url = \"http://{}/jwks.json\"\nforward_claims = {{ sub = \"X-User-Id\" }}\n{}",
            idp.addr,
            route("/api", up.addr, "auth = \"idp\"")
        ),
    );
    let call = |token: &str| {
        client()
            .get(gw.url("/api/x"))
            .header("Authorization", bearer(token))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(call(&rs256(&k1, "k1", &claims("a", 300))), 200);
    // the IdP rotates to k2: a token with the new kid triggers a refetch
    *jwks.lock().unwrap() = serde_json::json!({"keys": [jwk(&k2, "k2")]}).to_string();
    assert_eq!(call(&rs256(&k2, "k2", &claims("b", 300))), 200);
    assert_eq!(up.last().header("x-user-id"), Some("b"));
    // a key that signs under another key's kid is refused
    assert_eq!(call(&rs256(&k1, "k2", &claims("c", 300))), 401);
    // the IdP goes away: the cached keys keep working
    drop(idp);
    assert_eq!(call(&rs256(&k2, "k2", &claims("d", 300))), 200);
}

#[test]
fn api_keys_in_a_header_or_the_query() {
    let up = Upstream::echo();
    let key = "s3cr3t-partner-key";
    let hash = api_key_hash(key);
    let gw = Gateway::start(
        "",
        &format!(
            "[auth.partners]\ntype = \"api_key\"\nheader = \"X-Api-Key\"\nkeys = {{ acme = \"sha256:{hash}\" }}\nstrip_credentials = true\n[auth.links]\ntype = \"api_key\"\nquery = \"api_key\"\nkeys = {{ acme = \"sha256:{hash}\" }}\nstrip_credentials = true\n{}{}",
            route("/partners", up.addr, "auth = \"partners\""),
            route("/links", up.addr, "auth = \"links\"")
        ),
    );
    let c = client();
    let r = c
        .get(gw.url("/partners/x"))
        .header("X-Api-Key", key)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!up.last().has_header("x-api-key"));
    let r = c
        .get(gw.url("/partners/x"))
        .header("X-Api-Key", "wrong")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("ApiKey"));
    let r = c
        .get(gw.url(&format!("/links/x?a=1&api_key={key}&b=2")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().target, "/x?a=1&b=2", "the key left the query");
    assert_eq!(
        c.get(gw.url("/links/x?api_key=nope"))
            .send()
            .unwrap()
            .status(),
        401
    );
}

#[test]
fn introspection_admits_active_tokens_and_fails_closed() {
    let idp = Upstream::start(Arc::new(|seen: &Seen| {
        let body = String::from_utf8_lossy(&seen.body).to_string();
        let basic = seen.header("authorization").unwrap_or("").to_string();
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("pylon:client-secret")
        );
        let answer = if basic != expected {
            return Reply {
                status: 401,
                headers: vec![],
                body: b"{}".to_vec(),
                delay: Duration::ZERO,
            };
        } else if body.contains("token=good") {
            r#"{"active":true,"sub":"svc-1","scope":"orders:read orders:write"}"#
        } else if body.contains("token=noscope") {
            r#"{"active":true,"sub":"svc-2","scope":"profile"}"#
        } else {
            r#"{"active":false}"#
        };
        Reply::ok(answer).header("content-type", "application/json")
    }));
    let up = Upstream::echo();
    let config = |idp_addr: std::net::SocketAddr| {
        format!(
            "[auth.corp]\ntype = \"oauth2_introspection\"\nintrospection_url = \"http://{idp_addr}/introspect\"\nclient_id = \"pylon\"\nclient_secret_env = \"PYLON_TEST_INTROSPECTION\"\ncache_ttl = \"60s\"\nrequired_scopes = [\"orders:read\"]\n{}",
            route("/orders", up.addr, "auth = \"corp\"")
        )
    };
    let env = [("PYLON_TEST_INTROSPECTION", "client-secret")];
    let gw = Gateway::start_with_env(&config(idp.addr), &env);
    let call = |token: &str| {
        client()
            .get(gw.url("/orders/1"))
            .header("Authorization", bearer(token))
            .send()
            .unwrap()
    };
    assert_eq!(call("good").status(), 200);
    assert_eq!(call("good").status(), 200);
    assert_eq!(idp.hits(), 1, "the active answer was cached");
    let r = call("bad");
    assert_eq!(r.status(), 401);
    let r = call("noscope");
    assert_eq!(r.status(), 403);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("insufficient_scope"));
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body, error_body(403, "Forbidden."));

    // an endpoint that is down fails closed
    let down = Gateway::start_with_env(&config(closed_port()), &env);
    let r = client()
        .get(down.url("/orders/1"))
        .header("Authorization", bearer("good"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
}

#[test]
fn identities_have_their_own_budgets_and_guessing_is_limited_per_ip() {
    let up = Upstream::echo();
    let gw = Gateway::start_with_env(
        &format!(
            "[rate_limit]\nrequests = 3\nwindow = \"1m\"\n{}",
            jwt_route(up.addr)
        ),
        &[("PYLON_TEST_JWT_SECRET", SECRET)],
    );
    let c = client();
    let as_user = |sub: &str| {
        c.get(gw.url("/users/x"))
            .header("Authorization", bearer(&hs256(&claims(sub, 300))))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    for _ in 0..3 {
        assert_eq!(as_user("alice"), 200);
    }
    assert_eq!(as_user("alice"), 429);
    assert_eq!(
        as_user("bob"),
        200,
        "bob shares alice's IP but not her budget"
    );
    // guessing: unauthenticated requests count against the IP
    let guesses: Vec<u16> = (0..4)
        .map(|i| {
            c.get(gw.url("/users/x"))
                .header("Authorization", bearer(&format!("guess-{i}")))
                .send()
                .unwrap()
                .status()
                .as_u16()
        })
        .collect();
    assert_eq!(guesses, vec![401, 401, 401, 429]);
}

#[test]
fn auth_config_errors_name_file_line_and_key() {
    let route_to = "[[routes]]\nprefix = \"/u\"\nupstreams = [\"127.0.0.1:1\"]\n";
    let cases: Vec<(String, &str, &str)> = vec![
        (format!("{route_to}auth = \"nobody\"\n"), ":4:", "routes[0].auth"),
        (
            "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"PYLON_TEST_UNSET_SECRET\"\n".into(),
            ":4:",
            "auth.users.secret_env",
        ),
        (
            "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\npublic_key_file = \"/nonexistent/key.pem\"\n".into(),
            ":4:",
            "auth.users.public_key_file",
        ),
        (
            "[auth.users]\ntype = \"jwt\"\nalgorithms = [\"none\"]\nsecret_env = \"PYLON_TEST_SECRET_SET\"\n".into(),
            ":3:",
            "auth.users.algorithms[0]",
        ),
        (
            "[auth.users]\ntype = \"saml\"\n".into(),
            ":2:",
            "auth.users.type",
        ),
    ];
    for (text, line, key) in cases {
        let (code, _, err) =
            run_pylon_env(&["-t"], Some(&text), &[("PYLON_TEST_SECRET_SET", SECRET)]);
        assert_eq!(code, 1, "{text}");
        assert!(
            err.contains("pylon.toml") && err.contains(line),
            "{text:?} gave {err}"
        );
        assert!(err.contains(&format!("key `{key}`")), "{text:?} gave {err}");
        assert!(!err.contains(SECRET), "a secret leaked: {err}");
    }
}
