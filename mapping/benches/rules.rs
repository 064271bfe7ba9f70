//! Criterion benchmarks of the mapping engine: compiling five typical rules (two header, one
//! query, two JSON body), and applying them to a request with a 1 KiB JSON body — once on a
//! parsed body, once parsing the bytes whole, applying and serialising, and once the way the
//! gateway goes (`apply_lazily`: the body parsed one level deep).

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use holdfast_mapping as mapping;
use mapping::{Body, Request, RuleSet, Sources};
use serde_json::{json, Value};

const RULES: &str = "
- set:    { to: header.x-user-id, from: claim.sub }
- remove: header.x-debug
- default: { to: query.limit, value: '20' }
- rename: { from: body.inputText, to: body.user_input }
- rename: { from: body.requirement, to: body.context }
";

fn rules() -> Vec<conf::mapping::Rule> {
    serde_yaml::from_str(RULES).expect("the bench's rules parse")
}

/// A JSON body of about 1 KiB with the seed's two fields.
fn body() -> Bytes {
    let filler: Vec<Value> = (0..36)
        .map(|i| json!({"k": i, "v": "lorem ipsum"}))
        .collect();
    let body = json!({"inputText": "Hello", "requirement": "new data", "history": filler});
    let bytes = serde_json::to_vec(&body).expect("serialises");
    assert!((900..1300).contains(&bytes.len()), "{} bytes", bytes.len());
    Bytes::from(bytes)
}

fn request(body: Body) -> Request {
    let headers = [
        ("host", "api"),
        ("content-type", "application/json"),
        ("x-debug", "1"),
        ("accept", "*/*"),
    ];
    let mut request = Request::new("POST", "/ai/poll?page=2", headers).expect("valid");
    request.body = body;
    request
}

fn bench(c: &mut Criterion) {
    let parsed = rules();
    c.bench_function("compile 5 rules", |b| {
        b.iter(|| {
            RuleSet::compile(black_box(&parsed), &[], "routes[0].map.request").expect("compiles")
        })
    });
    let set = RuleSet::compile(&parsed, &[], "routes[0].map.request").expect("compiles");
    let claims = json!({"sub": "user-1", "scope": "ai:read"});
    let sources = Sources {
        captures: &[],
        claims: Some(&claims),
    };
    let bytes = body();
    let value: Value = serde_json::from_slice(&bytes).expect("parses");
    c.bench_function("apply 5 rules (parsed 1 KiB body)", |b| {
        b.iter_batched(
            || request(Body::Json(value.clone())),
            |mut req| {
                set.apply(&mut req, &sources).expect("applies");
                req // dropped outside the measurement
            },
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("parse + apply 5 rules + serialise (1 KiB body)", |b| {
        b.iter_batched(
            || request(Body::Bytes(bytes.clone())),
            |mut req| {
                set.apply(&mut req, &sources).expect("applies");
                let out = match &req.body {
                    Body::Json(value) => mapping::to_bytes(value),
                    _ => Bytes::new(),
                };
                (mapping::encode_query(&req.query), out, req)
            },
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function(
        "lazily: parse + apply 5 rules + serialise (1 KiB body)",
        |b| {
            b.iter_batched(
                || request(Body::Bytes(bytes.clone())),
                |mut req| {
                    set.apply_lazily(&mut req, &sources).expect("applies");
                    let out = match &req.body {
                        Body::Shallow(body) => body.to_bytes(),
                        Body::Json(value) => mapping::to_bytes(value),
                        _ => Bytes::new(),
                    };
                    (mapping::encode_query(&req.query), out, req)
                },
                criterion::BatchSize::SmallInput,
            )
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
