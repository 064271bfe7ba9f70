//! Upstream calls the gateway makes itself: re-polling a short-polling upstream,
//! fan-in with `until`/`merge`/partial answers and cancellation, request coalescing, and async
//! jobs — against real upstream servers that count what they receive and notice when the
//! gateway hangs up on them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use holdfast_tests::{eventually, metric_value, Holdfast, Origin};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!";

fn token(sub: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let claims = json!({"sub": sub, "iss": "https://id.test", "aud": "holdfast", "iat": now - 10, "exp": now + 600, "scope": "ai:read"});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// Counts requests, those in flight at once (and the most), and handlers dropped before they
/// finished — what an upstream sees when the gateway cancels its call.
#[derive(Default)]
struct Counters {
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    cancelled: AtomicUsize,
}

/// Held by a handler while it runs; dropped unfinished, it counts a cancellation.
struct Guard {
    counters: Arc<Counters>,
    finished: bool,
}

impl Guard {
    fn new(counters: &Arc<Counters>) -> Self {
        counters.calls.fetch_add(1, Ordering::SeqCst);
        let now = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counters.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self {
            counters: counters.clone(),
            finished: false,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.counters.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            self.counters.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// An upstream that answers `body` after `delay` (with `status`), counting everything.
async fn upstream(status: u16, delay: Duration, body: &'static str) -> (Origin, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let state = counters.clone();
    let router = Router::new()
        .fallback(move |State(counters): State<Arc<Counters>>| async move {
            let mut guard = Guard::new(&counters);
            tokio::time::sleep(delay).await;
            guard.finished = true;
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .expect("response")
        })
        .with_state(state);
    (Origin::start(router).await, counters)
}

fn gateway_config(upstreams: &[(&str, &Origin)], routes: &str) -> String {
    let upstreams: String = upstreams
        .iter()
        .map(|(name, origin)| format!("  {name}: {{ targets: [{}], timeout: 60s }}\n", origin.addr))
        .collect();
    format!(
        "server: {{ shutdown_grace: 1s }}\nauth:\n  main:\n    jwt: {{ issuer: https://id.test, audiences: [holdfast], secret: \"{SECRET}\" }}\nupstreams:\n{upstreams}routes:\n{routes}\n"
    )
}

/// What an answer must show. Each part is checked only when it is given, so a case checks
/// exactly what it names; `check` says which case failed.
#[derive(Default)]
struct Expect {
    status: Option<u16>,
    /// (name, value) as `header` reads them: absent is "".
    headers: Vec<(&'static str, String)>,
    /// The body must be JSON (and `check` returns it).
    json: bool,
    /// (JSON pointer, the value there, why): `""` points at the whole body.
    fields: Vec<(&'static str, Value, &'static str)>,
    /// The body is an object with this many keys.
    keys: Option<usize>,
    /// The answer's head came in less than this…
    within: Option<Duration>,
    /// …and not before this.
    after: Option<Duration>,
}

impl Expect {
    /// No status check; add what to check.
    fn answer() -> Self {
        Self::default()
    }

    fn status(status: u16) -> Self {
        Self {
            status: Some(status),
            ..Self::default()
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The `holdfast-complete` header of a fan-in answer.
    fn complete(self, value: &str) -> Self {
        self.header("holdfast-complete", value)
    }

    /// The `holdfast-upstreams` header of a fan-in answer: each upstream's outcome.
    fn upstreams(self, value: &str) -> Self {
        self.header("holdfast-upstreams", value)
    }

    /// A problem+json answer (its fields checked with `field`).
    fn problem(self) -> Self {
        self.header("content-type", "application/problem+json")
            .json()
    }

    fn json(mut self) -> Self {
        self.json = true;
        self
    }

    fn field(mut self, pointer: &'static str, value: impl Into<Value>) -> Self {
        self.fields.push((pointer, value.into(), ""));
        self.json()
    }

    /// The whole body.
    fn body(self, value: Value) -> Self {
        self.field("", value)
    }

    /// Why the last `field` must hold (said when it does not).
    fn because(mut self, why: &'static str) -> Self {
        if let Some(last) = self.fields.last_mut() {
            last.2 = why;
        }
        self
    }

    fn keys(mut self, count: usize) -> Self {
        self.keys = Some(count);
        self.json()
    }

    fn within(mut self, limit: Duration) -> Self {
        self.within = Some(limit);
        self
    }

    fn after(mut self, floor: Duration) -> Self {
        self.after = Some(floor);
        self
    }
}

/// Sends `request` and checks its answer against `want`; every failure names `case`. Returns the
/// JSON body when `want` reads it, else `Value::Null`.
async fn check(case: &str, request: reqwest::RequestBuilder, want: Expect) -> Value {
    let started = Instant::now();
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    let took = started.elapsed();
    if let Some(limit) = want.within {
        assert!(took < limit, "{case}: took {took:?}, not under {limit:?}");
    }
    if let Some(floor) = want.after {
        assert!(took >= floor, "{case}: took {took:?}, under {floor:?}");
    }
    let status = response.status().as_u16();
    let headers: Vec<String> = want
        .headers
        .iter()
        .map(|(name, _)| header(&response, name))
        .collect();
    let bytes = if want.json {
        response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{case}: the body: {e}"))
    } else {
        bytes::Bytes::new()
    };
    let text = String::from_utf8_lossy(&bytes);
    if let Some(expected) = want.status {
        assert_eq!(status, expected, "{case}: {text}");
    }
    for ((name, value), got) in want.headers.iter().zip(&headers) {
        assert_eq!(got, value, "{case}: the {name} header (status {status})");
    }
    let body: Value = if want.json {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{case}: a JSON body: {e}\n{text}"))
    } else {
        Value::Null
    };
    for (pointer, value, why) in &want.fields {
        assert_eq!(
            body.pointer(pointer).unwrap_or(&Value::Null),
            value,
            "{case}: `{pointer}` {why}\n{body}"
        );
    }
    if let Some(count) = want.keys {
        assert_eq!(
            body.as_object().map(|o| o.len()),
            Some(count),
            "{case}: keys\n{body}"
        );
    }
    body
}

/// Waits until each sample on `gw`'s scrape reads its value.
async fn metrics_reach(gw: &Holdfast, what: &str, want: &[(&str, f64)]) {
    eventually(
        Duration::from_secs(5),
        &format!("{what}: {want:?}"),
        async || {
            let metrics = gw.metrics().await;
            want.iter()
                .all(|(sample, value)| metric_value(&metrics, sample) == Some(*value))
        },
    )
    .await;
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn repoll_turns_a_short_polling_upstream_into_one_long_poll() {
    // 204, 204, then data.
    let counters = Arc::new(Counters::default());
    let state = counters.clone();
    let sometimes = Origin::start(
        Router::new()
            .fallback(|State(counters): State<Arc<Counters>>| async move {
                let n = counters.calls.fetch_add(1, Ordering::SeqCst) + 1;
                if n <= 2 {
                    StatusCode::NO_CONTENT.into_response()
                } else {
                    Json(json!({"news": "ready", "attempt": n})).into_response()
                }
            })
            .with_state(state),
    )
    .await;
    let (never, never_counters) = upstream(204, Duration::ZERO, "").await;
    let gw = Holdfast::start(&gateway_config(
        &[("sometimes", &sometimes), ("never", &never)],
        "  - { name: news, match: { path: /news }, upstream: sometimes, repoll_on: [204], hold: 5s, backoff: 20ms }\n  - { name: never, match: { path: /never }, upstream: never, repoll_on: [204], hold: 600ms, backoff: { initial: 20ms, max: 100ms } }",
    ))
    .await;
    let client = reqwest::Client::new();
    check(
        "/news?x=1",
        client.get(gw.url("/news?x=1")),
        Expect::status(200)
            .header("content-type", "application/json")
            .body(json!({"news": "ready", "attempt": 3})),
    )
    .await;
    assert_eq!(counters.calls.load(Ordering::SeqCst), 3);
    assert!(sometimes.seen().iter().all(|seen| seen.uri == "/news?x=1"));

    check(
        "/never",
        client.get(gw.url("/never")),
        Expect::status(204)
            .header("cache-control", "no-store")
            .after(Duration::from_millis(550))
            .within(Duration::from_secs(3)),
    )
    .await;
    assert!(never_counters.calls.load(Ordering::SeqCst) >= 3);
    metrics_reach(
        &gw,
        "upstream metrics",
        &[
            (
                r#"holdfast_upstream_requests_total{code="204",upstream="sometimes"}"#,
                2.0,
            ),
            (
                r#"holdfast_upstream_requests_total{code="200",upstream="sometimes"}"#,
                1.0,
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fanin_merges_field_by_field() {
    let (a, _) = upstream(
        200,
        Duration::ZERO,
        r#"{"a":1,"shared":{"x":1,"keep":true},"list":[1],"who":"a"}"#,
    )
    .await;
    let (b, _) = upstream(
        200,
        Duration::from_millis(100),
        r#"{"b":2,"shared":{"x":2,"y":3},"list":[2,3],"who":"b"}"#,
    )
    .await;
    let (arr1, _) = upstream(200, Duration::ZERO, "[1,2]").await;
    let (arr2, _) = upstream(200, Duration::ZERO, r#"[3,{"four":4}]"#).await;
    let (text, _) = upstream(200, Duration::ZERO, "plain words").await;
    let gw = Holdfast::start(&gateway_config(
        &[("a", &a), ("b", &b), ("arr1", &arr1), ("arr2", &arr2), ("text", &text)],
        r#"  - { name: by-name, match: { path: /by-name }, fanin: { upstreams: [a, b, text], merge: by_name } }
  - { name: deep, match: { path: /deep }, fanin: { upstreams: [a, b], merge: deep } }
  - { name: concat, match: { path: /concat }, fanin: { upstreams: [arr1, arr2], merge: concat } }
  - { name: first, match: { path: /first }, fanin: { upstreams: [b, a], merge: first, until: all } }"#,
    ))
    .await;
    let client = reqwest::Client::new();
    for (path, want) in [
        (
            "/by-name",
            Expect::status(200)
                .complete("true")
                .upstreams("a=200, b=200, text=200")
                .field("/a/a", 1)
                .field("/a/who", "a")
                .field("/b/b", 2)
                .field("/b/shared", json!({"x": 2, "y": 3}))
                .field("/text", "plain words")
                .keys(3),
        ),
        (
            "/deep",
            Expect::answer()
                .field("/a", 1)
                .field("/b", 2)
                .field("/who", "b")
                .because("the later upstream wins for scalars")
                .field("/shared", json!({"x": 2, "keep": true, "y": 3}))
                .because("objects merge")
                .field("/list", json!([1, 2, 3]))
                .because("arrays concatenate"),
        ),
        (
            "/concat",
            Expect::answer().body(json!([1, 2, 3, {"four": 4}])),
        ),
        (
            "/first",
            Expect::answer()
                .field("/who", "b")
                .because("first in list order, not in time"),
        ),
    ] {
        check(path, client.get(gw.url(path)), want).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fanin_until_first_quorum_all_partial_and_failure() {
    let (fast, _) = upstream(200, Duration::ZERO, r#"{"fast":true}"#).await;
    let (slow, _) = upstream(200, Duration::from_millis(400), r#"{"slow":true}"#).await;
    let (failing, _) = upstream(500, Duration::ZERO, r#"{"error":"boom"}"#).await;
    let (hanging, hang) = upstream(200, Duration::from_secs(3600), "{}").await;
    let (bad, _) = upstream(200, Duration::ZERO, "{not json").await;
    let gw = Holdfast::start(&gateway_config(
        &[("fast", &fast), ("slow", &slow), ("failing", &failing), ("hanging", &hanging), ("bad", &bad)],
        r#"  - { name: first, match: { path: /first }, fanin: { upstreams: [hanging, slow, fast], until: first } }
  - { name: quorum, match: { path: /quorum }, fanin: { upstreams: [fast, failing, slow, hanging], until: { quorum: 2 } } }
  - { name: all-partial, match: { path: /all }, fanin: { upstreams: [fast, failing, slow] } }
  - { name: held, match: { path: /held }, fanin: { upstreams: [fast, hanging], hold: 500ms } }
  - { name: per-upstream, match: { path: /per }, fanin: { upstreams: [fast, { name: hanging, timeout: 300ms }] } }
  - { name: strict, match: { path: /strict }, fanin: { upstreams: [fast, failing], partial: false } }
  - { name: required, match: { path: /required }, fanin: { upstreams: [fast, { name: failing, required: true }], until: first } }
  - { name: down, match: { path: /down }, fanin: { upstreams: [failing, bad], merge: deep } }
  - { name: bad-json, match: { path: /bad-json }, fanin: { upstreams: [fast, bad], merge: deep } }"#,
    ))
    .await;
    let client = reqwest::Client::new();

    check(
        "/first",
        client.get(gw.url("/first")),
        Expect::status(200)
            .within(Duration::from_millis(350))
            .complete("true")
            .upstreams("hanging=cancelled, slow=cancelled, fast=200")
            .body(json!({"fast": {"fast": true}})),
    )
    .await;
    // The losers' connections were closed: the hanging upstream saw its request go away.
    eventually(
        Duration::from_secs(5),
        "the losing call cancelled",
        async || hang.cancelled.load(Ordering::SeqCst) == 1,
    )
    .await;

    for (path, want) in [
        (
            "/quorum",
            Expect::status(200)
                .complete("true")
                .upstreams("fast=200, failing=500, slow=200, hanging=cancelled")
                .body(json!({"fast": {"fast": true}, "slow": {"slow": true}})),
        ),
        (
            "/all",
            Expect::status(200)
                .complete("false")
                .upstreams("fast=200, failing=500, slow=200")
                .body(json!({"fast": {"fast": true}, "slow": {"slow": true}})),
        ),
        (
            "/held",
            Expect::status(200)
                .after(Duration::from_millis(450))
                .complete("false")
                .upstreams("fast=200, hanging=timeout"),
        ),
        (
            "/per",
            Expect::answer()
                .complete("false")
                .upstreams("fast=200, hanging=timeout"),
        ),
        (
            "/strict",
            Expect::status(502)
                .upstreams("fast=200, failing=500")
                .problem()
                .field("/type", "urn:holdfast:problem:fanin-failed")
                .field("/detail", "only 1 of the 2 upstream answers needed came")
                .field("/upstreams", json!({"fast": "200", "failing": "500"})),
        ),
        (
            "/required",
            Expect::status(502)
                .problem()
                .field("/detail", "required upstream `failing` failed")
                .field("/upstreams/failing", "500"),
        ),
        // All failing, one of them with a body that is not JSON: 502 listing each outcome.
        (
            "/down",
            Expect::status(502)
                .problem()
                .field("/title", "Bad Gateway")
                .field("/detail", "no upstream answered successfully")
                .field(
                    "/upstreams",
                    json!({"failing": "500", "bad": "invalid-json"}),
                ),
        ),
        // Invalid JSON under `merge: deep` is that upstream's failure, not a 500.
        (
            "/bad-json",
            Expect::status(200)
                .complete("false")
                .upstreams("fast=200, bad=invalid-json")
                .body(json!({"fast": true})),
        ),
    ] {
        check(path, client.get(gw.url(path)), want).await;
    }

    metrics_reach(
        &gw,
        "fan-in metrics",
        &[
            (
                r#"holdfast_fanin_responses_total{result="partial",route="all-partial"}"#,
                1.0,
            ),
            (
                r#"holdfast_fanin_responses_total{result="complete",route="first"}"#,
                1.0,
            ),
            (
                r#"holdfast_fanin_responses_total{result="failed",route="down"}"#,
                1.0,
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fanin_calls_are_cancelled_when_the_client_leaves() {
    let (one, one_counters) = upstream(200, Duration::from_secs(3600), "{}").await;
    let (two, two_counters) = upstream(200, Duration::from_secs(3600), "{}").await;
    let (never, _) = upstream(204, Duration::ZERO, "").await;
    let gw = Holdfast::start(&gateway_config(
        &[("one", &one), ("two", &two), ("never", &never)],
        "  - { name: dash, match: { path: /dash }, fanin: { upstreams: [one, two], hold: 30s } }\n  - { name: nothing, match: { path: /nothing }, fanin: { upstreams: [never], hold: 300ms, repoll_on: [204], backoff: 20ms } }",
    ))
    .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client");
    assert!(
        client.get(gw.url("/dash")).send().await.is_err(),
        "the client gives up"
    );
    eventually(
        Duration::from_secs(5),
        "both upstream calls cancelled",
        async || {
            one_counters.cancelled.load(Ordering::SeqCst) == 1
                && two_counters.cancelled.load(Ordering::SeqCst) == 1
        },
    )
    .await;
    metrics_reach(
        &gw,
        "client_gone counted",
        &[(
            r#"holdfast_fanin_responses_total{result="client_gone",route="dash"}"#,
            1.0,
        )],
    )
    .await;

    // Nothing ready before the hold ends: the timeout answer.
    check(
        "/nothing",
        reqwest::Client::new().get(gw.url("/nothing")),
        Expect::status(204).upstreams("never=timeout"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_long_polls_share_one_upstream_request() {
    let (slow, counters) = upstream(200, Duration::from_secs(3), r#"{"v":1}"#).await;
    let gw = Holdfast::start(&gateway_config(
        &[("slow", &slow)],
        r#"  - { name: shared, match: { path: /shared }, upstream: slow, coalesce: { shared: true } }
  - { name: mine, match: { path: /mine }, auth: { provider: main }, upstream: slow, coalesce: true, vary: [accept-language] }
  - { name: cached, match: { path: /cached }, upstream: slow, cache: 2s, coalesce: true }"#,
    ))
    .await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(2000)
        .build()
        .expect("client");
    let mut polls = Vec::new();
    for _ in 0..1000 {
        let (client, url) = (client.clone(), gw.url("/shared?topic=a"));
        polls.push(tokio::spawn(async move {
            let response = client.get(url).send().await.expect("get");
            (
                response.status().as_u16(),
                response.text().await.expect("body"),
            )
        }));
    }
    for poll in polls {
        assert_eq!(poll.await.expect("join"), (200, r#"{"v":1}"#.to_owned()));
    }
    assert_eq!(
        counters.max_in_flight.load(Ordering::SeqCst),
        1,
        "one upstream request in flight"
    );
    let calls = counters.calls.load(Ordering::SeqCst);
    assert!(calls <= 2, "{calls} upstream calls for 1000 polls");
    metrics_reach(
        &gw,
        "coalesced metric",
        &[(
            r#"holdfast_coalesced_requests_total{route="shared"}"#,
            (1000 - calls) as f64,
        )],
    )
    .await;

    // Per identity: alice twice shares one call, bob gets his own, and so does another language.
    let before = counters.calls.load(Ordering::SeqCst);
    let get = |who: &'static str, lang: &'static str| {
        let (client, url) = (client.clone(), gw.url("/mine"));
        tokio::spawn(async move {
            client
                .get(url)
                .bearer_auth(token(who))
                .header("accept-language", lang)
                .send()
                .await
                .expect("get")
                .status()
                .as_u16()
        })
    };
    let polls = [
        get("alice", "en"),
        get("alice", "en"),
        get("bob", "en"),
        get("alice", "fr"),
    ];
    for poll in polls {
        assert_eq!(poll.await.expect("join"), 200);
    }
    assert_eq!(counters.calls.load(Ordering::SeqCst) - before, 3);

    // A cached answer is served at once for `cache`.
    let before = counters.calls.load(Ordering::SeqCst);
    check(
        "/cached, first",
        client.get(gw.url("/cached")),
        Expect::status(200),
    )
    .await;
    check(
        "/cached, again",
        client.get(gw.url("/cached")),
        Expect::status(200).within(Duration::from_secs(1)),
    )
    .await;
    assert_eq!(counters.calls.load(Ordering::SeqCst) - before, 1);
}

/// An OpenAI-style chat-completions server that takes `delay` to answer.
async fn chat_completions(delay: Duration) -> Origin {
    Origin::start(Router::new().route(
        "/ai/jobs",
        post(move |Json(request): Json<Value>| async move {
            tokio::time::sleep(delay).await;
            let query = request["query"].as_str().unwrap_or("").to_owned();
            Json(json!({"choices": [{"message": {"role": "assistant", "content": format!("Updates for: {query}")}}]}))
        }),
    ).route(
        "/ai/poll",
        post(|Json(request): Json<Value>| async move {
            Json(json!({"choices": [{"message": {"content": format!("direct: {}", request["parameters"]["method"])}}]}))
        }),
    ))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_start_poll_expire_and_stay_private() {
    let ai = chat_completions(Duration::from_millis(800)).await;
    let (hanging, _) = upstream(200, Duration::from_secs(3600), "{}").await;
    let big = Origin::start(Router::new().fallback(|| async {
        let chunk = vec![b'x'; 1 << 20];
        let body = axum::body::Body::from_stream(futures_util::stream::iter(
            (0..50).map(move |_| Ok::<_, std::io::Error>(bytes::Bytes::from(chunk.clone()))),
        ));
        Response::builder()
            .header("content-type", "text/plain")
            .body(body)
            .expect("response")
    }))
    .await;
    let gw = Holdfast::start(&gateway_config(
        &[("ai", &ai), ("hanging", &hanging), ("big", &big)],
        r#"  - name: ai-poll
    match: { path: /ai/poll, methods: [POST] }
    auth: { provider: main, scopes: [ai:read] }
    upstream: ai
  - name: ai-jobs
    match: { prefix: /ai/jobs }
    auth: { provider: main, scopes: [ai:read] }
    job: { upstream: ai, ttl: 2s, timeout: 5s }
  - { name: busy, match: { prefix: /busy }, job: { upstream: hanging, max_running: 1 } }
  - { name: huge, match: { prefix: /huge }, job: { upstream: big } }"#,
    ))
    .await;
    let client = reqwest::Client::new();
    let alice = token("alice");
    let seed =
        json!({"query": "Get the most recent updates.", "parameters": {"method": "long_polling"}});

    // The seed's AI call, answered directly.
    check(
        "the direct call",
        client
            .post(gw.url("/ai/poll"))
            .bearer_auth(&alice)
            .json(&seed),
        Expect::status(200).field("/choices/0/message/content", "direct: \"long_polling\""),
    )
    .await;

    // …and as a job.
    let started = check(
        "the job's start",
        client
            .post(gw.url("/ai/jobs"))
            .bearer_auth(&alice)
            .json(&seed),
        Expect::status(202).json(),
    )
    .await;
    let id = started["job"].as_str().expect("job id").to_owned();
    assert_eq!(started["poll"], format!("/ai/jobs/{id}"));
    let poll_url = gw.url(&format!("/ai/jobs/{id}"));

    // Still running: a short hold ends in 204.
    check(
        "a short hold",
        client
            .get(format!("{poll_url}?wait=0.1"))
            .bearer_auth(&alice),
        Expect::status(204),
    )
    .await;

    // Another identity does not see it; an unknown id is 404 too.
    check(
        "another identity",
        client.get(&poll_url).bearer_auth(token("mallory")),
        Expect::status(404)
            .problem()
            .field("/type", "urn:holdfast:problem:job-not-found")
            .field("/detail", format!("there is no job `{id}` for this caller")),
    )
    .await;
    check(
        "an unknown id",
        client.get(gw.url("/ai/jobs/nope")).bearer_auth(&alice),
        Expect::status(404)
            .problem()
            .field("/detail", "there is no job `nope` for this caller"),
    )
    .await;

    // The poll holds until the result is there.
    check(
        "the held poll",
        client.get(&poll_url).bearer_auth(&alice),
        Expect::status(200)
            .header("holdfast-upstream-status", "200")
            .header("content-type", "application/json")
            .field(
                "/choices/0/message/content",
                "Updates for: Get the most recent updates.",
            ),
    )
    .await;
    let seen = ai.seen();
    let job_call = seen
        .iter()
        .find(|s| s.uri == "/ai/jobs")
        .expect("the job's call");
    assert_eq!(job_call.method, "POST");
    assert_eq!(
        serde_json::from_slice::<Value>(&job_call.body).expect("json"),
        seed
    );
    assert_eq!(
        job_call.header("authorization"),
        None,
        "the credential is stripped"
    );
    // Pollable again until it expires, then 410.
    check(
        "polled again",
        client.get(&poll_url).bearer_auth(&alice),
        Expect::status(200),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    check(
        "polled after the ttl",
        client.get(&poll_url).bearer_auth(&alice),
        Expect::status(410)
            .problem()
            .field("/type", "urn:holdfast:problem:job-expired")
            .field("/detail", format!("the result of job `{id}` has expired")),
    )
    .await;

    // Past max_running: 503 with Retry-After.
    check(
        "the first busy job",
        client.post(gw.url("/busy")).body("{}"),
        Expect::status(202),
    )
    .await;
    check(
        "a second busy job",
        client.post(gw.url("/busy")).body("{}"),
        Expect::status(503)
            .header("retry-after", "1")
            .problem()
            .field("/type", "urn:holdfast:problem:jobs-busy")
            .field(
                "/detail",
                "this route already runs its maximum of 1 jobs; try again shortly",
            ),
    )
    .await;

    // A 50 MiB answer over max_result (10 MiB) is stored as an error result.
    let started = check(
        "the huge job's start",
        client.post(gw.url("/huge")),
        Expect::status(202).json(),
    )
    .await;
    let poll = started["poll"].as_str().expect("poll").to_owned();
    check(
        "the huge job's result",
        client.get(gw.url(&poll)),
        Expect::status(502)
            .problem()
            .field("/type", "urn:holdfast:problem:job-result-too-large")
            .field("/detail", "the answer of upstream `big` was larger than this route's max_result of 10485760 bytes; it was not kept"),
    )
    .await;

    metrics_reach(
        &gw,
        "job gauges",
        &[
            (r#"holdfast_jobs{route="busy",state="running"}"#, 1.0),
            (r#"holdfast_jobs{route="huge",state="failed"}"#, 1.0),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn request_mapping_applies_to_routes_the_gateway_calls_itself() {
    let origin = Origin::echo().await;
    let config = format!(
        r#"
server: {{ shutdown_grace: 1s }}
upstreams:
  ai: {{ targets: [{origin}] }}
routes:
  - name: ai-poll
    match: {{ path: /ai/poll, methods: [POST] }}
    map:
      request:
        - rename: {{ from: body.inputText, to: body.user_input }}
        - set: {{ to: header.x-mapped, value: "yes" }}
    upstream: ai
    repoll_on: [204]
    hold: 2s
"#,
        origin = origin.addr
    );
    let gw = Holdfast::start(&config).await;
    check(
        "POST /ai/poll",
        reqwest::Client::new()
            .post(gw.url("/ai/poll"))
            .json(&serde_json::json!({"inputText": "Hello"})),
        Expect::status(200),
    )
    .await;
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(&seen[0].body[..], br#"{"user_input":"Hello"}"#);
    assert_eq!(seen[0].header("x-mapped"), Some("yes"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_started_on_one_instance_is_polled_on_another_through_redis() {
    let redis = holdfast_tests::RedisServer::start().await;
    let ai = chat_completions(Duration::from_millis(700)).await;
    let config = gateway_config(
        &[("ai", &ai)],
        r#"  - name: ai-jobs
    match: { prefix: /ai/jobs }
    auth: { provider: main, scopes: [ai:read] }
    job: { upstream: ai, ttl: 2s, timeout: 5s }"#,
    )
    .replace(
        "server: {",
        &format!(
            "backplane: {{ redis: {{ url: \"{}\" }} }}\nserver: {{",
            redis.url()
        ),
    );
    let a = Holdfast::start(&config).await;
    let b = Holdfast::start(&config).await;
    let client = reqwest::Client::new();
    let alice = token("alice");
    let started = check(
        "start on A",
        client
            .post(a.url("/ai/jobs"))
            .bearer_auth(&alice)
            .json(&json!({"query": "Get the most recent updates."})),
        Expect::status(202).json(),
    )
    .await;
    let poll = started["poll"].as_str().expect("poll").to_owned();

    // On B, while A still runs it: held, then 204 at the client's wait.
    check(
        "poll on B while A runs the job",
        client
            .get(b.url(&format!("{poll}?wait=0.1")))
            .bearer_auth(&alice),
        Expect::status(204),
    )
    .await;
    // Another identity does not see it on B either.
    check(
        "bob on B",
        client.get(b.url(&poll)).bearer_auth(token("bob")),
        Expect::status(404).problem(),
    )
    .await;
    // Held on B until A finishes: 200 with the upstream's answer.
    check(
        "poll on B until A finishes",
        client
            .get(b.url(&format!("{poll}?wait=5")))
            .bearer_auth(&alice),
        Expect::status(200)
            .header("holdfast-upstream-status", "200")
            .field(
                "/choices/0/message/content",
                "Updates for: Get the most recent updates.",
            ),
    )
    .await;
    // After the ttl (2 s), B says it expired.
    let gone = async || {
        client
            .get(b.url(&poll))
            .bearer_auth(&alice)
            .send()
            .await
            .is_ok_and(|r| r.status() == 410)
    };
    holdfast_tests::eventually(Duration::from_secs(10), "the job to expire on B", gone).await;
}
