//! Micro-benchmarks of the per-request work the gateway does outside Pingora: route lookup,
//! the rate-limit check, response header rewriting, access-log formatting and the
//! X-Forwarded-For / X-Request-Id values. Each group varies one input so the numbers show
//! how the cost grows with it.
//!
//! Run: `cargo bench --bench micro` (add `-- --warm-up-time 1 --measurement-time 2` for a
//! quick pass, or a group name such as `-- router_lookup` to run one group).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue, Version};
use pingora::http::ResponseHeader;

use pylon::forwarding::{appended_forwarded_for, new_request_id};
use pylon::limits::{ClientKey, PolicyBuilder};
use pylon::policy::{AllowOrigin, Cors, SecurityHeaders};
use pylon::router::Router;
use pylon::telemetry::access_log::{format_combined, format_json, Entry};

// ---------------------------------------------------------------------------------------------
// 1. Route lookup
// ---------------------------------------------------------------------------------------------

/// Route lookup against tables of 10, 1,000 and 100,000 prefixes `/svc{i}/v1`: a path under
/// the last route inserted, and a path no route matches (the 404 case).
fn router_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("router_lookup");
    for n in [10usize, 1_000, 100_000] {
        let router: Router<usize> = Router::new((0..n).map(|i| (format!("/svc{i}/v1"), i)));
        assert_eq!(router.len(), n);

        // the request target would be `/svc{n-1}/v1/items/42?x=1`; the router gets the path
        let hit = format!("/svc{}/v1/items/42", n - 1);
        let found = router.lookup(&hit).expect("the deep route matches");
        assert_eq!(
            (*found.value, found.matched),
            (n - 1, format!("/svc{}/v1", n - 1).len())
        );
        group.bench_with_input(BenchmarkId::new("hit", n), &hit, |b, path| {
            b.iter(|| router.lookup(black_box(path.as_str())).map(|m| m.matched))
        });

        let miss = "/nothing/here/items/42";
        assert!(router.lookup(miss).is_none());
        group.bench_with_input(BenchmarkId::new("miss", n), miss, |b, path| {
            b.iter(|| router.lookup(black_box(path)).map(|m| m.matched))
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// 2. Rate limits
// ---------------------------------------------------------------------------------------------

/// `n` distinct client addresses: IPv4 in 10.0.0.0/8, the way a gateway's clients would be
/// keyed, plus an IPv6 address every 16th to keep both hash paths in play.
fn clients(n: usize) -> Vec<IpAddr> {
    (0..n as u32)
        .map(|i| {
            if i % 16 == 15 {
                IpAddr::V6(Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    0,
                    0,
                    0,
                    0,
                    (i >> 16) as u16,
                    i as u16,
                ))
            } else {
                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i))
            }
        })
        .collect()
}

/// `Policy::check` with 1 and with 100,000 distinct clients, cycling through the addresses;
/// the limit (u32::MAX per 60 s) never triggers. Then `rate_limit_header` for a short and a
/// long policy name.
fn rate_limit(c: &mut Criterion) {
    let mut group = c.benchmark_group("rate_limit");
    for n in [1usize, 100_000] {
        let policy = PolicyBuilder::default().policy("default", u32::MAX, Duration::from_secs(60));
        let ips = clients(n);
        let mut next = 0usize;
        group.bench_function(BenchmarkId::new("check/clients", n), |b| {
            b.iter(|| {
                let ip = ips[next];
                next += 1;
                if next == ips.len() {
                    next = 0;
                }
                policy.check(black_box(ClientKey::Ip(ip)))
            })
        });
        // the limit is out of reach however long the benchmark ran
        assert!(policy.check(ClientKey::Ip(ips[0])).remaining() > 0);
    }

    for name in ["/", "/api/payments/v2/merchants/settlements/reports"] {
        let policy = PolicyBuilder::default().policy(name, 100, Duration::from_secs(60));
        let verdict = policy.check(ClientKey::Ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))));
        group.bench_with_input(
            BenchmarkId::new("rate_limit_header/name_len", name.len()),
            &verdict,
            |b, &verdict| b.iter(|| policy.rate_limit_header(black_box(verdict))),
        );
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// 3. Response headers
// ---------------------------------------------------------------------------------------------

/// A response head as a Node upstream behind nginx sends it, plus `extra` application headers.
fn upstream_response(extra: usize) -> ResponseHeader {
    let mut resp = ResponseHeader::build(200, Some(8 + extra)).unwrap();
    for (name, value) in [
        ("Content-Type", "application/json; charset=utf-8"),
        ("Content-Length", "1234"),
        ("Date", "Mon, 23 Nov 2026 19:19:38 GMT"),
        ("Server", "nginx/1.27.0"),
        ("X-Powered-By", "Express"),
        ("ETag", "W/\"4d2-abcdef0123456789\""),
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
    ] {
        resp.insert_header(name, value).unwrap();
    }
    for i in 0..extra {
        resp.insert_header(format!("X-App-Field-{i}"), format!("value-{i}"))
            .unwrap();
    }
    resp
}

/// What the gateway's `response_filter` does to an upstream's head, minus the RateLimit and
/// X-Request-Id inserts: swap the head for its plain `http` parts, set HTTP/1.1, merge the
/// upstream's fields over helmet's defaults (dropping hop-by-hop fields and the configured
/// ones), apply CORS (`*`), and turn the parts back into a head. (The gateway's
/// `with_plain_headers` is private; this repeats its steps.)
fn response_filter(
    resp: &mut ResponseHeader,
    security: &SecurityHeaders,
    cors: &Cors,
    origin: &AllowOrigin,
) {
    let placeholder = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts = http::response::Parts::from(std::mem::replace(resp, placeholder));
    if parts.version != Version::HTTP_2 {
        parts.version = Version::HTTP_11;
    }
    let upstream = std::mem::take(&mut parts.headers);
    parts.headers = security.merge_upstream(upstream, parts.status, false);
    cors.apply(origin, &mut parts.headers);
    *resp = ResponseHeader::from(parts);
}

/// The whole response filter on heads of 8 and 8 + 24 upstream fields; then, on the 8-field
/// head, the conversion to plain parts and back alone and each header step alone (on a
/// `HeaderMap`). The fresh head or map is cloned outside the measurement.
fn response_headers(c: &mut Criterion) {
    let file = pylon::config::parse(Path::new("bench.toml"), "").unwrap();
    let security = SecurityHeaders::from_config(&file.security_headers).unwrap();
    let cors = Cors::from_config(&file.cors).unwrap();
    let origin = AllowOrigin::Any;

    let mut group = c.benchmark_group("response_headers");
    for extra in [0usize, 24] {
        let fresh = upstream_response(extra);
        let fields = fresh.headers.len();
        group.bench_with_input(
            BenchmarkId::new("response_filter/upstream_fields", fields),
            &fresh,
            |b, fresh| {
                b.iter_batched(
                    || fresh.clone(),
                    |mut resp| {
                        response_filter(&mut resp, &security, &cors, &origin);
                        resp
                    },
                    BatchSize::SmallInput,
                )
            },
        );
    }

    let fresh = upstream_response(0);
    let fields = fresh.headers.len();
    group.bench_with_input(
        BenchmarkId::new("to_parts_and_back/upstream_fields", fields),
        &fresh,
        |b, fresh| {
            b.iter_batched(
                || fresh.clone(),
                |resp| ResponseHeader::from(http::response::Parts::from(resp)),
                BatchSize::SmallInput,
            )
        },
    );

    let status = fresh.status;
    let plain = http::response::Parts::from(fresh).headers;
    let mut step = |name: &str, f: &dyn Fn(&mut HeaderMap)| {
        group.bench_with_input(BenchmarkId::new(name, fields), &plain, |b, plain| {
            b.iter_batched(
                || plain.clone(),
                |mut headers| {
                    f(&mut headers);
                    headers
                },
                BatchSize::SmallInput,
            )
        });
    };
    step("merge_upstream/upstream_fields", &|h| {
        *h = security.merge_upstream(std::mem::take(h), status, false)
    });
    step("cors_apply_any/upstream_fields", &|h| {
        cors.apply(&origin, h)
    });
    group.finish();

    // the filter did what the gateway relies on
    let mut resp = upstream_response(0);
    response_filter(&mut resp, &security, &cors, &origin);
    for gone in ["connection", "keep-alive", "server", "x-powered-by"] {
        assert!(!resp.headers.contains_key(gone), "{gone} left in");
    }
    for added in ["content-security-policy", "access-control-allow-origin"] {
        assert!(resp.headers.contains_key(added), "{added} missing");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Access log
// ---------------------------------------------------------------------------------------------

/// Combined and JSON lines for a typical request and for one with a 2 KiB request target,
/// into a buffer cleared (not reallocated) per iteration.
fn access_log(c: &mut Criterion) {
    let long_uri = format!("/search/v1/items?q={}&page=3", "a".repeat(2_048 - 26));
    let uris: [&[u8]; 2] = [
        b"/users/1842/orders?status=open&limit=20",
        long_uri.as_bytes(),
    ];

    let mut group = c.benchmark_group("access_log");
    for uri in uris {
        let entry = Entry {
            client: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))),
            // 2026-11-23T19:19:38.250Z
            time: UNIX_EPOCH + Duration::from_millis(1_795_461_578_250),
            method: "GET",
            uri,
            version: "HTTP/1.1",
            status: 200,
            body_bytes: 1_234,
            referer: Some(b"https://app.example.com/orders"),
            user_agent: Some(
                b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                  Chrome/131.0.0.0 Safari/537.36",
            ),
            request_id: Some(b"6f1c2a9e-3b7d-4e58-9a41-0c2d8e7f5b13"),
            duration: Duration::from_micros(3_417),
            route: Some("/users"),
            upstream: Some("10.0.3.17:8080"),
            error: None,
            trace: None,
        };
        let mut buf = Vec::with_capacity(4_096);
        group.bench_with_input(
            BenchmarkId::new("combined/uri_len", uri.len()),
            &entry,
            |b, entry| {
                b.iter(|| {
                    buf.clear();
                    format_combined(black_box(entry), &mut buf);
                    buf.len()
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("json/uri_len", uri.len()),
            &entry,
            |b, entry| {
                b.iter(|| {
                    buf.clear();
                    format_json(black_box(entry), &mut buf);
                    buf.len()
                })
            },
        );
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// 5. Forwarding
// ---------------------------------------------------------------------------------------------

/// A new X-Request-Id, and the X-Forwarded-For value for requests that arrive with 0, 1 and
/// 8 proxies already listed (one header per hop in the 8 case, as chained proxies append).
fn forwarding(c: &mut Criterion) {
    let x_forwarded_for = HeaderName::from_static("x-forwarded-for");
    let mut group = c.benchmark_group("forwarding");
    group.bench_function("new_request_id", |b| b.iter(new_request_id));

    let peer = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 23));
    for hops in [0usize, 1, 8] {
        let mut headers = HeaderMap::new();
        for i in 0..hops {
            let hop = format!("192.0.2.{}", i + 1);
            headers.append(&x_forwarded_for, HeaderValue::from_str(&hop).unwrap());
        }
        group.bench_with_input(
            BenchmarkId::new("appended_forwarded_for/hops", hops),
            &headers,
            |b, headers| b.iter(|| appended_forwarded_for(black_box(headers), black_box(peer))),
        );
    }
    group.finish();
}

/// JWT verification per algorithm, and for HS256 by the size of the claims.
fn jwt_verify(c: &mut Criterion) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::sign::Signer;

    const SECRET: &[u8] = b"a-benchmark-secret-of-at-least-32-bytes";
    let dir = tempfile::tempdir().unwrap();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let claims = |padding: usize| {
        format!(
            r#"{{"sub":"alice","aud":"pylon","exp":{exp},"pad":"{}"}}"#,
            "x".repeat(padding)
        )
    };
    let sign = |alg: &str, key: &PKey<Private>, claims: &str| {
        let input = format!(
            "{}.{}",
            B64.encode(format!(r#"{{"alg":"{alg}"}}"#)),
            B64.encode(claims)
        );
        let sig = match alg {
            "EdDSA" => Signer::new_without_digest(key)
                .unwrap()
                .sign_oneshot_to_vec(input.as_bytes())
                .unwrap(),
            "ES256" => {
                let mut signer = Signer::new(MessageDigest::sha256(), key).unwrap();
                signer.update(input.as_bytes()).unwrap();
                let der =
                    openssl::ecdsa::EcdsaSig::from_der(&signer.sign_to_vec().unwrap()).unwrap();
                let mut raw = der.r().to_vec_padded(32).unwrap();
                raw.extend(der.s().to_vec_padded(32).unwrap());
                raw
            }
            _ => {
                let mut signer = Signer::new(MessageDigest::sha256(), key).unwrap();
                signer.update(input.as_bytes()).unwrap();
                signer.sign_to_vec().unwrap()
            }
        };
        format!("{input}.{}", B64.encode(sig))
    };
    let keys: Vec<(&str, PKey<Private>)> = vec![
        ("HS256", PKey::hmac(SECRET).unwrap()),
        (
            "RS256",
            PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap(),
        ),
        (
            "ES256",
            PKey::from_ec_key(
                EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
            )
            .unwrap(),
        ),
        ("EdDSA", PKey::generate_ed25519().unwrap()),
    ];
    let mut text = String::new();
    for (alg, key) in &keys {
        let source = if *alg == "HS256" {
            "secret_env = \"BENCH_SECRET\"".to_string()
        } else {
            let path = dir.path().join(format!("{alg}.pem"));
            std::fs::write(&path, key.public_key_to_pem().unwrap()).unwrap();
            format!("public_key_file = \"{}\"", path.display())
        };
        text.push_str(&format!(
            "[auth.{alg}]\ntype = \"jwt\"\nalgorithms = [\"{alg}\"]\n{source}\naudience = [\"pylon\"]\n"
        ));
    }
    let file = pylon::config::parse(Path::new("bench.toml"), &text).unwrap();
    let env = |name: &str| {
        (name == "BENCH_SECRET")
            .then(|| std::ffi::OsString::from("a-benchmark-secret-of-at-least-32-bytes"))
    };
    let auths = pylon::auth::Authenticators::from_config_with(
        &file.auth,
        &env,
        pylon::auth::Clock::system(),
    )
    .unwrap();
    let request = |token: &str| {
        http::Request::builder()
            .uri("/api")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap()
            .into_parts()
            .0
    };
    let mut group = c.benchmark_group("jwt_verify");
    for (alg, key) in &keys {
        let auth = auths.get(alg).unwrap();
        let parts = request(&sign(alg, key, &claims(0)));
        assert!(futures::executor::block_on(auth.authenticate(&parts)).is_ok());
        group.bench_function(BenchmarkId::new("alg", alg), |b| {
            b.iter(|| futures::executor::block_on(auth.authenticate(black_box(&parts))))
        });
    }
    let (alg, key) = &keys[0];
    let auth = auths.get(alg).unwrap();
    for padding in [0usize, 1000, 6000] {
        let parts = request(&sign(alg, key, &claims(padding)));
        assert!(futures::executor::block_on(auth.authenticate(&parts)).is_ok());
        group.bench_function(BenchmarkId::new("hs256/claims_bytes", 60 + padding), |b| {
            b.iter(|| futures::executor::block_on(auth.authenticate(black_box(&parts))))
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    router_lookup,
    rate_limit,
    response_headers,
    access_log,
    forwarding,
    jwt_verify
);
criterion_main!(benches);
