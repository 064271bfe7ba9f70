//! Per-verification cost of `RouteRequirement::authenticate` for HS256, RS256 and ES256 tokens,
//! with the verified-token cache off (`cache_size: 0`: every request pays the signature check)
//! and on (a repeated token: one SHA-256 of the token and a map lookup).
//!
//! `cargo bench -p holdfast-auth --bench verify`

use criterion::{criterion_group, criterion_main, Criterion};
use holdfast_auth as auth;
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::hint::black_box;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn config(jwt: &str, cache_size: usize) -> auth::AuthSet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/testdata");
    let yaml = format!(
        "auth:\n  main:\n    jwt: {{ {jwt}, issuer: https://id, audiences: holdfast, cache_size: {cache_size} }}\nroutes:\n  - name: r\n    auth: {{ provider: main, scopes: [ai:read] }}\n"
    );
    let config = conf::load_str(&dir.join("bench.yaml"), &yaml).expect("bench config parses");
    auth::compile(&config).expect("bench config compiles")
}

fn token(alg: Algorithm, key: &EncodingKey) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = serde_json::json!({
        "sub": "alice", "iss": "https://id", "aud": "holdfast",
        "iat": now, "exp": now + 3600, "scope": "ai:read ai:write",
        "org": { "id": "acme" },
    });
    jsonwebtoken::encode(&Header::new(alg), &claims, key).expect("signs")
}

fn bench(c: &mut Criterion) {
    let rsa =
        EncodingKey::from_rsa_pem(include_bytes!("../src/testdata/rsa.key")).expect("rsa key");
    let p256 =
        EncodingKey::from_ec_pem(include_bytes!("../src/testdata/p256.key")).expect("p256 key");
    let hmac = EncodingKey::from_secret(SECRET.as_bytes());
    let cases = [
        (
            "HS256",
            format!("secret: {SECRET}"),
            token(Algorithm::HS256, &hmac),
        ),
        (
            "RS256",
            "public_key_file: rsa.pub".to_owned(),
            token(Algorithm::RS256, &rsa),
        ),
        (
            "ES256",
            "public_key_file: p256.pub".to_owned(),
            token(Algorithm::ES256, &p256),
        ),
    ];
    let mut group = c.benchmark_group("authenticate");
    for (name, jwt, token) in &cases {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        for (label, cache_size) in [("uncached", 0), ("cached", 10_000)] {
            let set = config(jwt, cache_size);
            let route = set.route(0).expect("route").clone();
            assert!(
                route
                    .authenticate(&headers, None, SystemTime::now())
                    .is_ok(),
                "{name} token verifies"
            );
            group.bench_function(format!("{name}/{label}"), |b| {
                b.iter(|| route.authenticate(black_box(&headers), None, SystemTime::now()))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
