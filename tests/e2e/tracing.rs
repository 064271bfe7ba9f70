//! OpenTelemetry tracing, checked at a real OTLP receiver (tests/otlp.rs): a proxied request
//! continues its caller's trace and sends its own client span's id upstream; the gateway's own
//! calls do the same (each re-poll, each fan-in branch); a held poll's hold span is linked from
//! the publish that woke it; sampling ratio 0 exports nothing; a collector that is down costs no
//! request; what is queued is sent at shutdown; bad trace headers start a new trace or are
//! dropped, never refused; a bad `tracing:` section is refused at load.

use axum::response::IntoResponse;
use holdfast_tests::otlp::Span;
use holdfast_tests::{eventually, run_holdfast, Collector, Holdfast, Origin};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;

fn token() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "ada", "exp": now + 600}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// `00-<trace>-<span>-<flags>` apart.
fn traceparent_parts(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00", "{value}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

/// A gateway exporting to `collector`, with an access log, a proxied route behind auth and a
/// route the gateway calls itself.
async fn traced_gateway(collector: &Collector, origin: &Origin, sampler: &str) -> Holdfast {
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("access.log");
    let config = format!(
        r#"
server: {{ shutdown_grace: 1s }}
access_log: {{ path: {log} }}
tracing:
  service_name: edge-test
  otlp: {{ endpoint: "{endpoint}", headers: {{ x-tenant: t1 }} }}
  sampler: {sampler}
  resource: {{ deployment.environment.name: test }}
  batch: {{ delay: 50ms }}
auth:
  main: {{ jwt: {{ secret: "{SECRET}" }} }}
upstreams:
  o: {{ targets: [{origin}] }}
routes:
  - {{ name: api, match: {{ prefix: /api }}, auth: {{ provider: main }}, upstream: o }}
  - {{ name: open, match: {{ prefix: /open }}, upstream: o }}
  - {{ name: called, match: {{ path: /called }}, upstream: o, repoll_on: [204], hold: 2s }}
"#,
        log = log.display(),
        endpoint = collector.endpoint(),
        origin = origin.addr,
    );
    let path = dir.path().join("holdfast.yaml");
    Holdfast::start_in(dir, path, &config).await
}

fn access_lines(gw: &Holdfast) -> Vec<Value> {
    std::fs::read_to_string(gw.dir.path().join("access.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxied_request_continues_the_callers_trace_and_names_its_client_span_upstream() {
    let collector = Collector::start().await;
    let origin = Origin::echo().await;
    let gw = traced_gateway(&collector, &origin, "{ ratio: 1 }").await;
    let client = reqwest::Client::new();
    let token = token();
    let response = client
        .get(gw.url("/api/items?secret=1"))
        .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .header("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);

    // The origin got our client span's id, in the caller's trace, and the caller's state.
    let seen = origin.seen();
    let sent = seen[0].header("traceparent").expect("traceparent upstream");
    let (trace, client_span, flags) = traceparent_parts(sent);
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE, "01"));
    assert_ne!(client_span, CALLER_SPAN);
    assert_eq!(
        seen[0].header("tracestate"),
        Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    );

    let server = collector
        .span("server span", |s| s.kind == SERVER && s.trace_id == TRACE)
        .await;
    assert_eq!(server.parent_span_id, CALLER_SPAN);
    assert_eq!(server.name, "GET api");
    assert_eq!(server.service_name, "edge-test");
    for (name, value) in [
        ("http.request.method", "GET".to_owned()),
        ("http.route", "api".to_owned()),
        ("http.response.status_code", "200".to_owned()),
        ("url.path", "/api/items".to_owned()),
        ("url.scheme", "http".to_owned()),
        ("client.address", "127.0.0.1".to_owned()),
        ("server.address", "127.0.0.1".to_owned()),
        ("server.port", gw.addr.port().to_string()),
    ] {
        assert_eq!(
            server.attribute(name),
            Some(value.as_str()),
            "{name}: {server:#?}"
        );
    }
    assert!(
        server.end_ns >= server.start_ns && server.start_ns > 0,
        "{server:#?}"
    );

    let attempt = collector
        .span("client span", |s| s.span_id == client_span)
        .await;
    assert_eq!(attempt.kind, CLIENT);
    assert_eq!(attempt.trace_id, TRACE);
    assert_eq!(attempt.parent_span_id, server.span_id);
    assert_eq!(attempt.attribute("http.response.status_code"), Some("200"));
    assert_eq!(
        attempt.attribute("server.port"),
        Some(origin.addr.port().to_string().as_str())
    );

    let auth = collector
        .span("auth span", |s| s.name == "auth" && s.trace_id == TRACE)
        .await;
    assert_eq!(auth.parent_span_id, server.span_id);
    assert_eq!(auth.attribute("holdfast.auth.result"), Some("ok"));
    assert_eq!(auth.attribute("holdfast.auth.provider"), Some("main"));
    for span in collector.spans() {
        assert!(
            span.attributes.values().all(|v| !v.contains(&token)),
            "a span carries the token: {span:#?}"
        );
    }
    assert!(collector
        .last_headers()
        .contains(&("x-tenant".to_owned(), "t1".to_owned())));

    // The access log line carries the trace and the server span.
    let lines = access_lines(&gw);
    let line = lines
        .iter()
        .find(|line| line["route"] == "api")
        .expect("access log line");
    assert_eq!(line["trace_id"], TRACE);
    assert_eq!(line["span_id"], server.span_id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateways_own_calls_carry_a_new_trace_to_the_upstream() {
    let collector = Collector::start().await;
    let origin = Origin::echo().await;
    let gw = traced_gateway(&collector, &origin, "{ ratio: 1 }").await;
    let response = reqwest::get(gw.url("/called")).await.expect("get");
    assert_eq!(response.status(), 200);
    let seen = origin.seen();
    let sent = seen[0].header("traceparent").expect("traceparent upstream");
    let (trace, client_span, flags) = traceparent_parts(sent);
    assert_eq!(flags, "01");
    let call = collector
        .span("the call's client span", |s| s.span_id == client_span)
        .await;
    assert_eq!(
        (call.kind, call.trace_id.as_str()),
        (CLIENT, trace.as_str())
    );
    let server = collector
        .span("server span", |s| s.kind == SERVER && s.trace_id == trace)
        .await;
    assert_eq!(server.name, "GET called");
    assert_eq!(server.parent_span_id, "", "a new trace has no parent");
    assert_eq!(call.parent_span_id, server.span_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_poll_woken_by_a_publish_is_linked_from_the_publish_span_over_grpc() {
    let collector = Collector::start().await;
    let config = format!(
        r#"
server: {{ shutdown_grace: 1s }}
tracing: {{ otlp: {{ endpoint: "{}", protocol: grpc }}, batch: {{ delay: 50ms }} }}
routes:
  - {{ name: poll, match: {{ path: /poll }}, longpoll: {{ channel: updates, timeout: 30s }} }}
  - {{ name: push, match: {{ path: /push, methods: [POST] }}, publish: {{ channel: updates }} }}
"#,
        collector.endpoint()
    );
    let gw = Holdfast::start(&config).await;
    let client = reqwest::Client::new();
    let poll = tokio::spawn(client.get(gw.url("/poll")).send());
    eventually(Duration::from_secs(5), "the poll is held", async || {
        gw.metric(r#"holdfast_longpoll_held{route="poll"}"#).await == Some(1.0)
    })
    .await;
    let published = client
        .post(gw.url("/push"))
        .body("hello")
        .send()
        .await
        .expect("publish");
    assert_eq!(published.status(), 201);
    let answered = poll.await.expect("task").expect("poll");
    assert_eq!(answered.status(), 200);
    assert_eq!(answered.text().await.expect("body"), "hello");

    let poll_span = collector
        .span("the poll's server span", |s| s.name == "GET poll")
        .await;
    let hold = collector
        .span("the hold span", |s| {
            s.name == "hold" && s.parent_span_id == poll_span.span_id
        })
        .await;
    assert_eq!(hold.trace_id, poll_span.trace_id);
    assert_eq!(hold.attribute("holdfast.hold.outcome"), Some("data"));
    assert_eq!(hold.attribute("holdfast.channel.route"), Some("poll"));
    assert_eq!(
        hold.attribute("messaging.destination.name"),
        Some("updates")
    );
    assert!(hold.end_ns > hold.start_ns);
    let push_span = collector
        .span("the publish's server span", |s| s.name == "POST push")
        .await;
    let publish = collector
        .span("the publish span", |s| s.kind == PRODUCER)
        .await;
    assert_eq!(publish.parent_span_id, push_span.span_id);
    assert_eq!(publish.trace_id, push_span.trace_id);
    assert_eq!(
        publish.links,
        vec![(hold.trace_id.clone(), hold.span_id.clone())],
        "{publish:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ratio_zero_exports_nothing_but_the_trace_context_still_goes_upstream() {
    let collector = Collector::start().await;
    let origin = Origin::echo().await;
    let gw = traced_gateway(&collector, &origin, "{ ratio: 0 }").await;
    let client = reqwest::Client::new();
    for _ in 0..20 {
        let response = client.get(gw.url("/open/a")).send().await.expect("get");
        assert_eq!(response.status(), 200);
    }
    // A caller that decided not to record: its trace goes on, unrecorded.
    let unsampled = client
        .get(gw.url("/open/b"))
        .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-00"))
        .send()
        .await
        .expect("get");
    assert_eq!(unsampled.status(), 200);
    let seen = origin.seen();
    let mut traces: Vec<String> = seen[..20]
        .iter()
        .map(|seen| {
            let (trace, _, flags) = traceparent_parts(seen.header("traceparent").expect("sent"));
            assert_eq!(flags, "00");
            trace
        })
        .collect();
    traces.dedup();
    assert_eq!(traces.len(), 20, "each request starts its own trace");
    let (trace, _, flags) = traceparent_parts(seen[20].header("traceparent").expect("sent"));
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE, "00"));

    // A caller that records (parent-based): exported. The queue is in order, so once this span
    // arrived, any span of the requests before it would have too.
    let recorded = "0af7651916cd43dd8448eb211c80319c";
    client
        .get(gw.url("/open/c"))
        .header("traceparent", format!("00-{recorded}-b7ad6b7169203331-01"))
        .send()
        .await
        .expect("get");
    collector
        .span("the recorded request's server span", |s| {
            s.trace_id == recorded && s.kind == SERVER
        })
        .await;
    let others: Vec<Span> = collector
        .spans()
        .into_iter()
        .filter(|span| span.trace_id != recorded)
        .collect();
    assert!(others.is_empty(), "unsampled spans exported: {others:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collector_that_is_down_costs_no_request_and_drops_are_counted() {
    let origin = Origin::echo().await;
    let nobody = format!("http://127.0.0.1:{}", holdfast_tests::free_port());
    let config = format!(
        r#"
server: {{ shutdown_grace: 1s }}
tracing: {{ otlp: {{ endpoint: "{nobody}", timeout: 1s }}, batch: {{ delay: 50ms, max_queue: 64, max_batch: 16 }} }}
upstreams:
  o: {{ targets: [{origin}] }}
routes:
  - {{ name: open, match: {{ prefix: /open }}, upstream: o }}
"#,
        origin = origin.addr
    );
    let gw = Holdfast::start(&config).await;
    let client = reqwest::Client::new();
    for _ in 0..200 {
        let response = client.get(gw.url("/open/x")).send().await.expect("get");
        assert_eq!(response.status(), 200);
    }
    eventually(
        Duration::from_secs(10),
        "failed exports counted",
        async || {
            gw.metric(r#"holdfast_trace_spans_dropped_total{reason="export_failed"}"#)
                .await
                .is_some_and(|n| n > 0.0)
        },
    )
    .await;
    // 400 spans (server and client) through a queue of 64 that cannot empty fast enough.
    eventually(
        Duration::from_secs(10),
        "a full queue counted",
        async || {
            gw.metric(r#"holdfast_trace_spans_dropped_total{reason="queue_full"}"#)
                .await
                .is_some_and(|n| n > 0.0)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_trace_headers_start_a_new_trace_or_are_dropped_and_the_request_is_served() {
    let collector = Collector::start().await;
    let origin = Origin::echo().await;
    let gw = traced_gateway(&collector, &origin, "{ ratio: 1 }").await;
    let client = reqwest::Client::new();
    let oversized = format!("00-{TRACE}-{CALLER_SPAN}-01{}", "0".repeat(8000));
    let malformed = [
        format!("00-{}-{CALLER_SPAN}-01", TRACE.to_uppercase()),
        format!("00-{}-{CALLER_SPAN}-01", "0".repeat(32)),
        format!("ff-{TRACE}-{CALLER_SPAN}-01"),
        "garbage".to_owned(),
        oversized,
    ];
    for (n, value) in malformed.iter().enumerate() {
        let path = format!("/open/bad{n}");
        let response = client
            .get(gw.url(&path))
            .header("traceparent", value)
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 200, "{value}");
        let seen = origin.seen();
        let sent = seen
            .last()
            .expect("seen")
            .header("traceparent")
            .expect("sent");
        let (trace, _, flags) = traceparent_parts(sent);
        assert_ne!(trace, TRACE, "{value}");
        assert_eq!(flags, "01");
        let server = collector
            .span("the new trace's server span", |s| {
                s.kind == SERVER && s.trace_id == trace
            })
            .await;
        assert_eq!(server.parent_span_id, "", "{value}");
        assert_eq!(server.attribute("url.path"), Some(path.as_str()));
    }
    // A tracestate past W3C's limits (33 members) is dropped; the trace goes on.
    let members: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
    let response = client
        .get(gw.url("/open/state"))
        .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .header("tracestate", members.join(","))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    let seen = origin.seen();
    let last = seen.last().expect("seen");
    assert_eq!(last.header("tracestate"), None);
    assert_eq!(
        traceparent_parts(last.header("traceparent").expect("sent")).0,
        TRACE
    );
}

#[test]
fn an_invalid_tracing_section_is_refused_at_load_with_its_line() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("holdfast.yaml");
    std::fs::write(
        &path,
        "listen: 127.0.0.1:8080\ntracing:\n  otlp: { endpoint: 'collector:4318' }\n  sampler: { ratio: 2 }\n",
    )
    .expect("write");
    let path = path.display().to_string();
    let (code, _, stderr) = run_holdfast(&["check", &path]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("holdfast.yaml:3") && stderr.contains("tracing.otlp.endpoint"),
        "{stderr}"
    );
    assert!(
        stderr.contains("holdfast.yaml:4") && stderr.contains("must be between 0 and 1, not 2"),
        "{stderr}"
    );
    let (code, _, stderr) = run_holdfast(&["run", "-c", &path]);
    assert_eq!(code, 2, "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_attempt_is_an_error_span_and_its_error_log_names_the_trace() {
    let collector = Collector::start().await;
    let closed = holdfast_tests::free_port();
    let config = format!(
        r#"
server: {{ shutdown_grace: 1s }}
tracing: {{ otlp: {{ endpoint: "{}" }}, batch: {{ delay: 50ms }} }}
upstreams:
  down: {{ targets: ["127.0.0.1:{closed}"] }}
routes:
  - {{ name: down, match: {{ prefix: /down }}, upstream: down }}
"#,
        collector.endpoint()
    );
    let gw = Holdfast::start(&config).await;
    let response = reqwest::Client::new()
        .get(gw.url("/down"))
        .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 502);
    let server = collector
        .span("server span", |s| s.kind == SERVER && s.trace_id == TRACE)
        .await;
    assert_eq!(server.status, 2, "a 502 is a server error: {server:#?}");
    assert_eq!(server.attribute("error.type"), Some("502"));
    let attempt = collector
        .span("the failed attempt", |s| {
            s.kind == CLIENT && s.trace_id == TRACE
        })
        .await;
    assert_eq!(attempt.parent_span_id, server.span_id);
    assert_eq!(attempt.status, 2, "{attempt:#?}");
    assert!(attempt.attribute("error.type").is_some(), "{attempt:#?}");
    assert_eq!(attempt.attribute("http.response.status_code"), None);
    let wanted = format!("trace_id={TRACE} span_id={}", server.span_id);
    eventually(
        Duration::from_secs(5),
        "the error log names the trace",
        async || gw.log().contains(&wanted),
    )
    .await;
}

/// An origin that answers `204` to its first `empties` requests, then `200`.
async fn ready_after(empties: usize) -> Origin {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    Origin::start(axum::Router::new().fallback(move || {
        let calls = calls.clone();
        async move {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n < empties {
                axum::http::StatusCode::NO_CONTENT.into_response()
            } else {
                "ready".into_response()
            }
        }
    }))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn each_re_poll_and_each_fan_in_branch_is_a_client_span_the_upstream_is_told_of() {
    let collector = Collector::start().await;
    let slow = ready_after(2).await;
    let left = Origin::echo().await;
    let right = Origin::echo().await;
    let config = format!(
        r#"
server: {{ shutdown_grace: 1s }}
tracing: {{ otlp: {{ endpoint: "{}" }}, batch: {{ delay: 50ms }} }}
upstreams:
  slow: {{ targets: [{slow}] }}
  left: {{ targets: [{left}] }}
  right: {{ targets: [{right}] }}
routes:
  - {{ name: news, match: {{ path: /news }}, upstream: slow, repoll_on: [204], hold: 5s, backoff: 20ms }}
  - {{ name: both, match: {{ path: /both }}, fanin: {{ upstreams: [left, right] }} }}
"#,
        collector.endpoint(),
        slow = slow.addr,
        left = left.addr,
        right = right.addr,
    );
    let gw = Holdfast::start(&config).await;
    let client = reqwest::Client::new();
    let news = client
        .get(gw.url("/news"))
        .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .send()
        .await
        .expect("news");
    assert_eq!(news.status(), 200);
    let server = collector
        .span("the re-polled request's server span", |s| {
            s.kind == SERVER && s.trace_id == TRACE
        })
        .await;
    // Three calls (204, 204, 200): three client spans, each the one its call named upstream.
    let sent: Vec<String> = slow
        .seen()
        .iter()
        .map(|seen| traceparent_parts(seen.header("traceparent").expect("sent")).1)
        .collect();
    assert_eq!(sent.len(), 3);
    let mut statuses = Vec::new();
    for span_id in &sent {
        let call = collector
            .span("a re-poll's client span", |s| &s.span_id == span_id)
            .await;
        assert_eq!(
            (call.kind, call.parent_span_id.as_str()),
            (CLIENT, server.span_id.as_str())
        );
        assert_eq!(call.attribute("holdfast.upstream"), Some("slow"));
        statuses.push(
            call.attribute("http.response.status_code")
                .map(str::to_owned),
        );
    }
    assert_eq!(
        statuses,
        [
            Some("204".to_owned()),
            Some("204".to_owned()),
            Some("200".to_owned())
        ]
    );

    let both = client.get(gw.url("/both")).send().await.expect("fan-in");
    assert_eq!(both.status(), 200);
    for (name, origin) in [("left", &left), ("right", &right)] {
        let seen = origin.seen();
        let (trace, span_id, _) = traceparent_parts(seen[0].header("traceparent").expect("sent"));
        let branch = collector
            .span("a fan-in branch's client span", |s| s.span_id == span_id)
            .await;
        assert_eq!(branch.trace_id, trace);
        assert_eq!(branch.attribute("holdfast.upstream"), Some(name));
        let parent = collector
            .span("the fan-in's server span", |s| {
                s.span_id == branch.parent_span_id
            })
            .await;
        assert_eq!(parent.name, "GET both");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_still_queued_are_sent_at_shutdown() {
    let collector = Collector::start().await;
    let origin = Origin::echo().await;
    // A batch would wait a minute: only the flush at shutdown sends it in time.
    let config = format!(
        r#"
server: {{ shutdown_grace: 1s }}
tracing: {{ otlp: {{ endpoint: "{}" }}, batch: {{ delay: 60s }} }}
upstreams:
  o: {{ targets: [{}] }}
routes:
  - {{ name: open, match: {{ prefix: /open }}, upstream: o }}
"#,
        collector.endpoint(),
        origin.addr
    );
    let mut gw = Holdfast::start(&config).await;
    let response = reqwest::Client::new()
        .get(gw.url("/open/last"))
        .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    assert!(
        collector.spans().is_empty(),
        "nothing is sent before the batch's delay"
    );
    gw.signal(holdfast_tests::SIGTERM);
    assert_eq!(gw.wait_exit(Duration::from_secs(10)).await, Some(0));
    let spans = collector.spans();
    assert!(
        spans
            .iter()
            .any(|s| s.kind == SERVER && s.trace_id == TRACE),
        "the server span was flushed at shutdown: {spans:#?}"
    );
}
