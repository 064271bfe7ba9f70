//! Every metric in the README's table moves: one gateway with every feature, the traffic each
//! metric describes, and one check per metric — read while what it counts is held (held polls,
//! subscribers, a running job, a call others wait on) or once the traffic is done (counters,
//! histograms, gauges set at start). A sample the traffic moves must not already read what it
//! must in a scrape taken before any traffic, so no check passes on a metric that stays put.
//! The list of metrics comes from the README itself: a metric the table gains without a check
//! here, or a check for one it no longer has, fails the test, and so does a metric whose type
//! on /metrics is not the table's.

use super::auth::{claims, hs256, jwks, rs256, rsa_key, SECRET};
use super::streams::{publish, Stream};
use super::tls::Pki;
use super::websocket::{connect, next_data, GOOD};
use axum::routing::{get, post};
use axum::Router;
use holdfast_tests::llm_providers::{Behaviour, Kind, Provider};
use holdfast_tests::{free_port, metric_value, raw_request, Holdfast, Origin, SIGHUP};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tungstenite::Message as Frame;

const CONFIG: &str = r#"
listen:
  - {listen}
  - { address: "%H2C%", h2c: true }
  - address: "%TLS%"
    tls:
      certificates:
        - { cert: "%CERT%", key: "%KEY%" }
admin: {admin}
server: { shutdown_grace: 1s, watch_interval: 0s }
channels: { buffer_messages: 3 }
# Every request traced, to a collector nobody runs: the failed exports are counted.
tracing: { otlp: { endpoint: "http://127.0.0.1:%NOBODY%", timeout: 1s }, batch: { delay: 20ms } }
auth:
  main:
    jwt: { issuer: https://id.test, audiences: [holdfast], secret: "%SECRET%" }
  idp:
    jwt: { issuer: https://id.test, audiences: [holdfast], algorithms: [RS256], jwks_url: "%JWKS%" }
upstreams:
  pool: { targets: ["%POOL_A%", "%POOL_B%"], health_check: { path: /healthz, interval: 100ms } }
  gated: { targets: ["%GATED%"] }
  model-a: { targets: ["%MODEL_A%"] }
  model-b: { targets: ["%MODEL_B%"] }
llm:
  providers:
    flaky: { kind: openai, upstream: model-a, keys: [k] }
    steady: { kind: anthropic, upstream: model-b, keys: [k] }
  models:
    chat: { targets: [{ provider: flaky, model: m1 }], fallback: [{ provider: steady, model: m2 }] }
routes:
  - { name: proxied, match: { prefix: /echo }, upstream: pool }
  - { name: ai, match: { prefix: /v1 }, llm: { cache: { ttl: 60s, allow_sampling: true }, resumable: true } }
  - { name: poll, match: { path: /poll, methods: [GET] }, longpoll: { channel: updates, timeout: 20s } }
  - { name: sub, match: { path: "/sub/{ch}", methods: [GET] }, longpoll: { channel: "{ch}" } }
  - { name: slow, match: { path: "/slow/{ch}", methods: [GET] }, longpoll: { channel: "{ch}", max_lag: 16KiB } }
  - { name: pub, match: { path: "/pub/{ch}", methods: [POST] }, publish: { channel: "{ch}" } }
  - { name: fanin, match: { path: /fanin }, fanin: { upstreams: [pool, gated] } }
  - { name: coalesced, match: { path: /coalesced }, upstream: gated, coalesce: { shared: true } }
  - { name: job, match: { prefix: /job }, job: { upstream: gated, ttl: 60s } }
  - name: mapped
    match: { path: /mapped }
    map:
      request:
        - set: { to: header.x-page, value: "page-{query.page}", required: true }
    upstream: pool
  - { name: private, match: { path: /private }, auth: { provider: main }, upstream: pool }
  - { name: keyed, match: { path: /keyed }, auth: { provider: idp }, upstream: pool }
"#;

/// The README's metrics table: each metric's name and type (the type column's first word).
fn readme_metrics() -> BTreeMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let mut lines = readme
        .lines()
        .skip_while(|line| line.trim() != "| metric | type | labels |");
    assert!(
        lines.next().is_some(),
        "no `| metric | type | labels |` table in README.md"
    );
    assert!(
        lines.next().is_some_and(|line| line.starts_with("|---")),
        "the metrics table's second line is not its `|---|` rule"
    );
    let metrics: BTreeMap<String, String> = lines
        .take_while(|line| !line.trim().is_empty())
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let name = cells
                .get(1)
                .and_then(|cell| cell.strip_prefix('`')?.strip_suffix('`'))
                .unwrap_or_else(|| panic!("no `name` in the first cell of {row:?}"));
            let kind = cells
                .get(2)
                .and_then(|cell| cell.split_whitespace().next())
                .unwrap_or_else(|| panic!("no type in {row:?}"));
            (name.to_owned(), kind.to_owned())
        })
        .collect();
    assert!(metrics.len() > 20, "the README's table, read: {metrics:?}");
    metrics
}

/// What a sample must read.
#[derive(Clone, Copy)]
enum Want {
    /// Exactly this: a gauge.
    Is(f64),
    /// At least this: a counter, a histogram's `_count`, a gauge that counts things kept.
    AtLeast(f64),
    /// A Unix time from this one to the moment it is read.
    UnixTimeSince(f64),
}

/// Moved from zero: a counter or a histogram's `_count`.
const MOVED: Want = Want::AtLeast(1.0);

impl Want {
    fn holds(self, value: Option<f64>) -> bool {
        let Some(value) = value else {
            return false;
        };
        match self {
            Want::Is(want) => value == want,
            Want::AtLeast(least) => value >= least,
            Want::UnixTimeSince(since) => value >= since && value <= unix_now() + 1.0,
        }
    }
}

impl fmt::Display for Want {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Want::Is(want) => write!(f, "= {want}"),
            Want::AtLeast(least) => write!(f, ">= {least}"),
            Want::UnixTimeSince(since) => write!(f, "a Unix time from {since} to now"),
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// One sample of a README metric and what it must read.
struct Check {
    metric: &'static str,
    sample: String,
    want: Want,
    /// Moved by the test's traffic, so it must not read `want` before it (in the scrape taken
    /// before any traffic); `false` for the gauges the gateway sets as it starts.
    moved_by_traffic: bool,
    /// Read while the thing it counts was held, and what it read then (`None`: absent); `None`
    /// for a sample read after all the traffic.
    read_while_held: Option<Option<f64>>,
}

/// Polls `read` every 20 ms until it says it holds or `timeout` passes; what it read last.
async fn settle<T>(timeout: Duration, mut read: impl AsyncFnMut() -> (bool, T)) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let (done, value) = read().await;
        if done || Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `metric{k="v",…}`, labels in the order Holdfast renders them (sorted).
fn sample(metric: &str, labels: &[(&str, &str)]) -> String {
    let mut labels = labels.to_vec();
    labels.sort_unstable();
    if labels.is_empty() {
        return metric.to_owned();
    }
    let labels: Vec<String> = labels
        .iter()
        .map(|(name, value)| format!("{name}=\"{value}\""))
        .collect();
    format!("{metric}{{{}}}", labels.join(","))
}

fn shown(value: Option<f64>) -> String {
    value.map_or("nothing (no such sample)".to_owned(), |v| v.to_string())
}

/// The checks, and the scrape taken before any traffic.
struct Checks {
    before: String,
    list: Vec<Check>,
}

impl Checks {
    async fn new(gw: &Holdfast) -> Self {
        Self {
            before: gw.metrics().await,
            list: Vec::new(),
        }
    }

    fn push(&mut self, metric: &'static str, sample: String, want: Want, moved: bool) {
        self.list.push(Check {
            metric,
            sample,
            want,
            moved_by_traffic: moved,
            read_while_held: None,
        });
    }

    /// A sample the traffic moves, read once all the traffic is done.
    fn after(&mut self, metric: &'static str, labels: &[(&str, &str)], want: Want) {
        self.push(metric, sample(metric, labels), want, true);
    }

    fn counter(&mut self, metric: &'static str, labels: &[(&str, &str)]) {
        self.after(metric, labels, MOVED);
    }

    /// A histogram: its `_count` moved.
    fn histogram(&mut self, metric: &'static str, labels: &[(&str, &str)]) {
        let sample = sample(&format!("{metric}_count"), labels);
        self.push(metric, sample, MOVED, true);
    }

    /// A sample the gateway sets as it starts, read once all the traffic is done.
    fn set_at_start(&mut self, metric: &'static str, labels: &[(&str, &str)], want: Want) {
        self.push(metric, sample(metric, labels), want, false);
    }

    /// A sample read now, while what it counts is held: waits (up to 10 s) for it to read
    /// `want`, and keeps what it read.
    async fn while_held(
        &mut self,
        gw: &Holdfast,
        metric: &'static str,
        labels: &[(&str, &str)],
        want: Want,
    ) {
        let sample = sample(metric, labels);
        let value = settle(Duration::from_secs(10), async || {
            let value = gw.metric(&sample).await;
            (want.holds(value), value)
        })
        .await;
        self.list.push(Check {
            metric,
            sample,
            want,
            moved_by_traffic: true,
            read_while_held: Some(value),
        });
    }

    /// What is wrong with `check`, read in `now` (a scrape made after the traffic).
    fn failure(&self, check: &Check, now: &str) -> Option<String> {
        let before = metric_value(&self.before, &check.sample);
        if check.moved_by_traffic && check.want.holds(before) {
            return Some(format!(
                "{}: read {} before any traffic already (want {}): this check cannot tell that it moved",
                check.sample,
                shown(before),
                check.want
            ));
        }
        let (value, when) = match check.read_while_held {
            Some(value) => (value, "while held"),
            None => (metric_value(now, &check.sample), "after the traffic"),
        };
        (!check.want.holds(value)).then(|| {
            format!(
                "{}: want {}, read {} {when} ({} before any traffic)",
                check.sample,
                check.want,
                shown(value),
                shown(before)
            )
        })
    }

    /// Every README metric has a check, every check a README metric, every metric the type
    /// the README gives it, and every sample reads what it must (those read after the traffic
    /// get up to 10 s to).
    async fn verify(&self, gw: &Holdfast, readme: &BTreeMap<String, String>) {
        let checked: BTreeSet<&str> = self.list.iter().map(|check| check.metric).collect();
        let unchecked: Vec<&String> = readme
            .keys()
            .filter(|metric| !checked.contains(metric.as_str()))
            .collect();
        let stale: Vec<&&str> = checked
            .iter()
            .filter(|metric| !readme.contains_key(**metric))
            .collect();
        assert!(
            unchecked.is_empty() && stale.is_empty(),
            "the README's metrics and this test's checks differ:\n  in the README, not checked: {unchecked:?}\n  checked, not in the README: {stale:?}"
        );
        let failures = settle(Duration::from_secs(10), async || {
            let now = gw.metrics().await;
            let mut failures = Vec::new();
            // A metric without samples has no TYPE line: its samples' checks say so.
            for (metric, kind) in readme {
                let declared = format!("# TYPE {metric} ");
                let exported = now.lines().find_map(|line| line.strip_prefix(&declared));
                if exported.is_some_and(|exported| exported != kind) {
                    failures.push(format!(
                        "{metric}: the README says {kind}, /metrics says {}",
                        exported.unwrap_or_default()
                    ));
                }
            }
            failures.extend(
                self.list
                    .iter()
                    .filter_map(|check| self.failure(check, &now)),
            );
            (failures.is_empty(), failures)
        })
        .await;
        assert!(
            failures.is_empty(),
            "{} of {} metric checks failed:\n{}\n--- /metrics ---\n{}",
            failures.len(),
            self.list.len(),
            failures.join("\n"),
            gw.metrics().await
        );
    }
}

/// Holds an origin's answers on one path until opened.
#[derive(Clone)]
struct Gate(Arc<Semaphore>);

impl Gate {
    fn new() -> Self {
        Self(Arc::new(Semaphore::new(0)))
    }

    async fn pass(&self) {
        drop(self.0.acquire().await.expect("the gate is never closed"));
    }

    /// Lets every request through, those waiting and those to come.
    fn open(&self) {
        self.0.add_permits(1);
    }
}

/// An origin whose `POST /job` and `GET /coalesced` answer once their gate opens; every other
/// request is echoed at once.
async fn gated_origin(job: &Gate, coalesced: &Gate) -> Origin {
    let (job, coalesced) = (job.clone(), coalesced.clone());
    Origin::start(
        Router::new()
            .route(
                "/job",
                post(move || {
                    let gate = job.clone();
                    async move {
                        gate.pass().await;
                        axum::Json(json!({"job": "done"}))
                    }
                }),
            )
            .route(
                "/coalesced",
                get(move || {
                    let gate = coalesced.clone();
                    async move {
                        gate.pass().await;
                        "one answer for both"
                    }
                }),
            )
            .fallback(holdfast_tests::origin::echo),
    )
    .await
}

/// A JWKS endpoint serving the public key of `rsa.key` as `k1`.
async fn jwks_server() -> Origin {
    let document = jwks(&[("k1", &rsa_key("rsa.key"))]);
    Origin::start(Router::new().route(
        "/jwks.json",
        get(move || {
            let document = document.clone();
            async move { ([("content-type", "application/json")], document) }
        }),
    ))
    .await
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

async fn status(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.expect("an answer").status().as_u16()
}

/// A proxied request: requests, their duration, the upstream's answer and its duration.
async fn proxied(gw: &Holdfast, client: &reqwest::Client, checks: &mut Checks) {
    assert_eq!(status(client.get(gw.url("/echo/a"))).await, 200);
    checks.counter(
        "holdfast_http_requests_total",
        &[("route", "proxied"), ("method", "GET"), ("code", "200")],
    );
    checks.histogram(
        "holdfast_http_request_duration_seconds",
        &[("route", "proxied")],
    );
    checks.counter(
        "holdfast_upstream_requests_total",
        &[("upstream", "pool"), ("code", "200")],
    );
    checks.histogram(
        "holdfast_upstream_duration_seconds",
        &[("upstream", "pool")],
    );
}

/// A poll held until a publish answers it.
/// A streamed chat for alias `chat`: its first target fails (503), its fallback answers.
async fn models(gw: &Holdfast, client: &reqwest::Client, checks: &mut Checks) {
    let chat =
        json!({"model": "chat", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let answer = client
        .post(gw.url("/v1/chat/completions"))
        .json(&chat)
        .send()
        .await
        .expect("chat");
    assert_eq!(answer.status(), 200);
    let stream = answer.headers()["holdfast-stream"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let text = answer.text().await.expect("stream");
    assert!(text.contains("[DONE]"), "{text}");
    let resumed = client
        .get(gw.url(&format!("/v1/streams/{stream}")))
        .header("last-event-id", "1")
        .send()
        .await
        .expect("resume");
    assert_eq!(resumed.status(), 200);
    assert!(resumed.text().await.expect("events").ends_with("\n\n"));
    checks.counter(
        "holdfast_stream_resumes_total",
        &[("route", "ai"), ("result", "events")],
    );
    let steady = [("route", "ai"), ("provider", "steady"), ("model", "m2")];
    let flaky = [("route", "ai"), ("provider", "flaky"), ("model", "m1")];
    checks.counter(
        "holdfast_llm_requests_total",
        &[&steady[..], &[("outcome", "ok")]].concat(),
    );
    checks.counter(
        "holdfast_llm_requests_total",
        &[&flaky[..], &[("outcome", "error")]].concat(),
    );
    checks.counter(
        "holdfast_llm_tokens_total",
        &[&steady[..], &[("type", "output")]].concat(),
    );
    checks.histogram("holdfast_llm_time_to_first_token_seconds", &steady);
    checks.counter(
        "holdfast_llm_fallbacks_total",
        &[("route", "ai"), ("from", "flaky"), ("reason", "5xx")],
    );
    checks.counter(
        "holdfast_llm_cache_total",
        &[("route", "ai"), ("result", "miss")],
    );
}

async fn long_poll(gw: &Holdfast, client: &reqwest::Client, checks: &mut Checks) {
    let poll = tokio::spawn(client.get(gw.url("/poll")).send());
    checks
        .while_held(
            gw,
            "holdfast_longpoll_held",
            &[("route", "poll")],
            Want::Is(1.0),
        )
        .await;
    publish(client, gw, "updates", "for the held poll").await;
    let answer = poll.await.expect("join").expect("the poll's answer");
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.expect("body"), "for the held poll");
    checks.counter(
        "holdfast_longpoll_completions_total",
        &[("route", "poll"), ("outcome", "data")],
    );
    checks.histogram("holdfast_publish_to_delivery_seconds", &[("route", "poll")]);
    checks.counter("holdfast_messages_published_total", &[("route", "pub")]);
    // The channel keeps the message in its buffer; counted when /metrics is scraped.
    checks.after("holdfast_channels", &[], Want::AtLeast(1.0));
}

/// An event stream and a WebSocket subscribed to one channel, each getting a message; then a
/// stream resuming from a cursor the channel's buffer (3 messages) no longer holds.
async fn subscribers(gw: &Holdfast, client: &reqwest::Client, checks: &mut Checks) {
    let mut stream = Stream::open(client, &gw.url("/sub/news"), None).await;
    let mut socket = connect(gw, "/sub/news");
    for transport in ["sse", "websocket"] {
        let labels = [("route", "sub"), ("transport", transport)];
        checks
            .while_held(gw, "holdfast_subscribers", &labels, Want::Is(1.0))
            .await;
        checks.counter("holdfast_messages_delivered_total", &labels);
    }
    publish(client, gw, "news", "for the subscribers").await;
    let event = stream.next_event().await;
    assert_eq!(event.data.as_deref(), Some("for the subscribers"));
    assert_eq!(next_data(&mut socket), Frame::text("for the subscribers"));
    drop(socket);

    let first = publish(client, gw, "old", "m1").await;
    for n in 2..=5 {
        publish(client, gw, "old", format!("m{n}")).await;
    }
    let mut late = Stream::open(client, &gw.url("/sub/old"), Some(&first)).await;
    assert_eq!(late.next_event().await.event.as_deref(), Some("reset"));
    checks.counter("holdfast_stream_resets_total", &[("route", "sub")]);
}

/// A subscriber on `path` that never reads past what the kernel takes, with as small a receive
/// buffer as the kernel allows so that the gateway's writes to it stall early.
async fn never_reads(gw: &Holdfast, path: &str, headers: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut tcp = socket.connect(gw.addr).await.expect("connect");
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").as_bytes())
        .await
        .expect("write the request");
    tcp
}

/// A stream and a WebSocket that stop reading, on a route with `max_lag: 16KiB`: messages of
/// 256 KiB are published until both are closed for it (the kernel's buffers fill first).
async fn slow_subscribers(gw: &Holdfast, client: &reqwest::Client, checks: &mut Checks) {
    let stuck_stream = never_reads(gw, "/slow/stuck", "Accept: text/event-stream\r\n").await;
    let stuck_socket = never_reads(gw, "/slow/stuck", GOOD).await;
    let samples = ["sse", "websocket"].map(|transport| {
        let labels = [("route", "slow"), ("transport", transport)];
        checks.counter("holdfast_slow_subscribers_total", &labels);
        sample("holdfast_slow_subscribers_total", &labels)
    });
    let message = "x".repeat(256 * 1024);
    let mut published = 0;
    settle(Duration::from_secs(15), async || {
        if published < 256 {
            publish(client, gw, "stuck", message.clone()).await;
            published += 1;
        }
        let text = gw.metrics().await;
        let closed = samples
            .iter()
            .all(|sample| metric_value(&text, sample).is_some_and(|n| n >= 1.0));
        (closed, ())
    })
    .await;
    drop((stuck_stream, stuck_socket));
}

/// A fan-in to both upstreams; two identical requests sharing one upstream call; a job
/// running until its upstream answers, then done.
async fn upstream_calls(
    gw: &Holdfast,
    client: &reqwest::Client,
    gated: &Origin,
    (job_gate, coalesce_gate): (&Gate, &Gate),
    checks: &mut Checks,
) {
    let answer = client.get(gw.url("/fanin")).send().await.expect("fan-in");
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["holdfast-complete"], "true");
    checks.counter(
        "holdfast_fanin_responses_total",
        &[("route", "fanin"), ("result", "complete")],
    );

    let calls = || {
        gated
            .seen()
            .iter()
            .filter(|seen| seen.uri == "/coalesced")
            .count()
    };
    let first = tokio::spawn(client.get(gw.url("/coalesced")).send());
    settle(Duration::from_secs(10), async || (calls() == 1, ())).await;
    assert_eq!(calls(), 1, "the first request's call reached the origin");
    let second = tokio::spawn(client.get(gw.url("/coalesced")).send());
    // The second joins the call in flight, and is counted as it joins.
    checks
        .while_held(
            gw,
            "holdfast_coalesced_requests_total",
            &[("route", "coalesced")],
            MOVED,
        )
        .await;
    coalesce_gate.open();
    for request in [first, second] {
        let answer = request.await.expect("join").expect("answer");
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await.expect("body"), "one answer for both");
    }
    assert_eq!(calls(), 1, "one upstream call for both requests");

    let answer = client
        .post(gw.url("/job"))
        .json(&json!({"work": 1}))
        .send()
        .await
        .expect("start the job");
    assert_eq!(answer.status(), 202);
    let started: Value = answer.json().await.expect("the job's start");
    let poll = started["poll"].as_str().expect("its poll path").to_owned();
    let job = |state| [("route", "job"), ("state", state)];
    checks
        .while_held(gw, "holdfast_jobs", &job("running"), Want::Is(1.0))
        .await;
    job_gate.open();
    let answer = client.get(gw.url(&poll)).send().await.expect("the result");
    assert_eq!(answer.status(), 200);
    checks.after("holdfast_jobs", &job("done"), Want::Is(1.0));
}

/// A required mapping rule without its input; a route's auth without a token.
async fn mapping_and_auth(gw: &Holdfast, client: &reqwest::Client, checks: &mut Checks) {
    assert_eq!(status(client.get(gw.url("/mapped"))).await, 400);
    checks.counter("holdfast_mapping_failures_total", &[("route", "mapped")]);

    assert_eq!(status(client.get(gw.url("/private"))).await, 401);
    let token = hs256(&claims(json!({})));
    assert_eq!(
        status(client.get(gw.url("/private")).bearer_auth(&token)).await,
        200
    );
    checks.counter(
        "holdfast_auth_failures_total",
        &[("route", "private"), ("reason", "missing")],
    );
}

/// A token checked against the keys the JWKS provider fetched after `started` (a Unix time).
async fn jwks_provider(gw: &Holdfast, client: &reqwest::Client, started: f64, checks: &mut Checks) {
    let token = rs256(Some("k1"), &rsa_key("rsa.key"), &claims(json!({})));
    let keyed = settle(Duration::from_secs(10), async || {
        let code = status(client.get(gw.url("/keyed")).bearer_auth(&token)).await;
        (code == 200, code)
    })
    .await;
    assert_eq!(keyed, 200, "a token signed with the JWKS's key");
    // The keys are fetched as the gateway starts.
    checks.set_at_start(
        "holdfast_jwks_refresh_total",
        &[("provider", "idp"), ("result", "ok")],
        MOVED,
    );
    checks.set_at_start(
        "holdfast_jwks_last_success_timestamp_seconds",
        &[("provider", "idp")],
        Want::UnixTimeSince(started),
    );
}

/// A connection of each protocol, and plain HTTP sent to the TLS listener.
async fn connections(pki: &Pki, (tls, h2c): (SocketAddr, SocketAddr), checks: &mut Checks) {
    // HTTP/1.1 in clear: the requests above. HTTP/2 by ALPN:
    let https = pki.https_client(&["a.test"], tls);
    let answer = https
        .get(format!("https://a.test:{}/echo/tls", tls.port()))
        .send()
        .await
        .expect("over TLS");
    assert_eq!(
        (answer.status().as_u16(), answer.version()),
        (200, reqwest::Version::HTTP_2)
    );
    // HTTP/2 by prior knowledge:
    let prior_knowledge = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let answer = prior_knowledge
        .get(format!("http://{h2c}/echo/h2c"))
        .send()
        .await
        .expect("over h2c");
    assert_eq!(
        (answer.status().as_u16(), answer.version()),
        (200, reqwest::Version::HTTP_2)
    );
    for protocol in ["http1", "h2", "h2c"] {
        checks.counter("holdfast_connections_total", &[("protocol", protocol)]);
    }

    let answer = raw_request(
        tls,
        b"GET /echo/plain HTTP/1.1\r\nHost: a.test\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(!answer.contains("HTTP/1.1 2"), "{answer}");
    checks.counter(
        "holdfast_tls_handshake_failures_total",
        &[("reason", "bad_message")],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_in_the_readme_moves_when_its_traffic_comes() {
    let readme = readme_metrics();
    let started = unix_now();
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::new(dir.path());
    let site = pki.issue("site", &["a.test"]);
    let (pool_a, pool_b) = (Origin::echo().await, Origin::echo().await);
    let (job_gate, coalesce_gate) = (Gate::new(), Gate::new());
    let gated = gated_origin(&job_gate, &coalesce_gate).await;
    let idp = jwks_server().await;
    let (tls, h2c) = (loopback(), loopback());
    let flaky = Provider::start(
        Kind::OpenAi,
        Behaviour::Error {
            status: 503,
            retry_after_secs: None,
        },
    )
    .await;
    let steady = Provider::start(
        Kind::Anthropic,
        Behaviour::Answer {
            reply: "one two three".to_owned(),
        },
    )
    .await;
    let config = CONFIG
        .replace("%H2C%", &h2c.to_string())
        .replace("%TLS%", &tls.to_string())
        .replace("%CERT%", &site.cert.display().to_string())
        .replace("%KEY%", &site.key.display().to_string())
        .replace("%SECRET%", SECRET)
        .replace("%JWKS%", &format!("http://{}/jwks.json", idp.addr))
        .replace("%POOL_A%", &pool_a.addr.to_string())
        .replace("%POOL_B%", &pool_b.addr.to_string())
        .replace("%GATED%", &gated.addr.to_string())
        .replace("%NOBODY%", &free_port().to_string())
        .replace("%MODEL_A%", &flaky.addr.to_string())
        .replace("%MODEL_B%", &steady.addr.to_string());
    let gw = Holdfast::start(&config).await;
    let client = reqwest::Client::new();
    let mut checks = Checks::new(&gw).await;

    proxied(&gw, &client, &mut checks).await;
    models(&gw, &client, &mut checks).await;
    long_poll(&gw, &client, &mut checks).await;
    subscribers(&gw, &client, &mut checks).await;
    slow_subscribers(&gw, &client, &mut checks).await;
    upstream_calls(
        &gw,
        &client,
        &gated,
        (&job_gate, &coalesce_gate),
        &mut checks,
    )
    .await;
    mapping_and_auth(&gw, &client, &mut checks).await;
    jwks_provider(&gw, &client, started, &mut checks).await;
    connections(&pki, (tls, h2c), &mut checks).await;

    // Set from the start: the build, the backplane (memory: always up), the health checks of
    // both of `pool`'s targets.
    checks.set_at_start(
        "holdfast_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        Want::Is(1.0),
    );
    checks.set_at_start("holdfast_backplane_up", &[], Want::Is(1.0));
    // A memory backplane is never unavailable: present at 0 (tests/e2e/backplanes.rs sees it
    // move through a failover).
    checks.set_at_start(
        "holdfast_backplane_unavailable_total",
        &[("operation", "publish"), ("reason", "down")],
        Want::Is(0.0),
    );
    // The spans of all that traffic, which the collector that is not there did not take.
    checks.counter(
        "holdfast_trace_spans_dropped_total",
        &[("reason", "export_failed")],
    );
    checks.set_at_start(
        "holdfast_upstream_healthy_targets",
        &[("upstream", "pool")],
        Want::Is(2.0),
    );

    // Last, as it rebuilds the upstream pools: a reload of the unchanged config.
    gw.signal(SIGHUP);
    checks.counter("holdfast_config_reloads_total", &[("result", "ok")]);

    checks.verify(&gw, &readme).await;
}
