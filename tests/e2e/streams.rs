//! Server-Sent Events on `longpoll` routes: every message as an event with its cursor as `id`,
//! resumed by `Last-Event-ID` (on this instance or, through Redis, another), keep-alive comments,
//! a `reset` event for a cursor older than the buffer, a clean end at shutdown, HTTP/2, and the
//! refusals a stream can get.

use holdfast_tests::{eventually, Holdfast, RedisServer};
use serde_json::Value;
use std::time::Duration;

const CONFIG: &str = r#"
server: { shutdown_grace: 2s, watch_interval: 0s }
channels: { buffer_messages: 3 }
routes:
  - { name: sub, match: { path: "/sub/{ch}", methods: [GET] }, longpoll: { channel: "{ch}", keepalive: 300ms } }
  - { name: streams-only, match: { path: "/only/{ch}", methods: [GET] }, longpoll: { channel: "{ch}", subscribe: [sse] } }
  - { name: polls-only, match: { path: "/polls/{ch}", methods: [GET] }, longpoll: { channel: "{ch}", subscribe: [longpoll] } }
  - { name: pub, match: { path: "/pub/{ch}", methods: [POST] }, publish: { channel: "{ch}" } }
"#;

/// One event of a stream: its fields as sent, `comment` for a comment line alone.
#[derive(Debug, Default, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
    pub retry: Option<String>,
    pub comment: bool,
}

/// An open event stream, read event by event.
pub struct Stream {
    response: reqwest::Response,
    buffer: String,
}

impl Stream {
    pub async fn open(client: &reqwest::Client, url: &str, last_event_id: Option<&str>) -> Stream {
        let mut request = client.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("open the stream");
        assert_eq!(response.status(), 200, "{url}");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert_eq!(response.headers()["x-accel-buffering"], "no");
        let mut stream = Stream {
            response,
            buffer: String::new(),
        };
        assert_eq!(stream.next().await.retry.as_deref(), Some("1000"));
        stream
    }

    /// The next event; `None` when the stream ended cleanly.
    pub async fn try_next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return Some(parse(&block));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event within 10 s")
                .expect("the stream reads");
            let chunk = chunk?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    async fn next(&mut self) -> Event {
        self.try_next().await.expect("the stream goes on")
    }

    /// The next event that is not a comment.
    pub async fn next_event(&mut self) -> Event {
        loop {
            let event = self.next().await;
            if !event.comment {
                return event;
            }
        }
    }
}

fn parse(block: &str) -> Event {
    let mut event = Event::default();
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines().filter(|line| !line.is_empty()) {
        if line.starts_with(':') {
            event.comment = true;
            continue;
        }
        let (field, value) = line.split_once(": ").unwrap_or((line, ""));
        match field {
            "id" => event.id = Some(value.to_owned()),
            "event" => event.event = Some(value.to_owned()),
            "data" => data.push(value),
            "retry" => event.retry = Some(value.to_owned()),
            other => panic!("unexpected field {other:?} in {block:?}"),
        }
    }
    if !data.is_empty() {
        event.data = Some(data.join("\n"));
        event.comment = false;
    }
    event
}

/// Publishes `body` on `/pub/{channel}`; its cursor.
pub async fn publish(
    client: &reqwest::Client,
    gw: &Holdfast,
    channel: &str,
    body: impl Into<reqwest::Body>,
) -> String {
    let response = client
        .post(gw.url(&format!("/pub/{channel}")))
        .body(body)
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 201);
    let answer: Value = response.json().await.expect("json");
    answer["cursor"].as_str().expect("cursor").to_owned()
}

async fn subscribers(gw: &Holdfast, route: &str, count: f64) {
    subscribed(gw, route, "sse", count).await;
}

/// Waits until `route` has `count` subscribers by `transport`.
pub async fn subscribed(gw: &Holdfast, route: &str, transport: &str, count: f64) {
    let sample = format!("holdfast_subscribers{{route=\"{route}\",transport=\"{transport}\"}}");
    eventually(
        Duration::from_secs(10),
        &format!("{count} {transport} subscribers on {route}"),
        async || gw.metric(&sample).await.unwrap_or(0.0) == count,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_gets_each_message_as_an_event_and_resumes_by_last_event_id() {
    let gw = Holdfast::start(CONFIG).await;
    let client = reqwest::Client::new();
    let mut stream = Stream::open(&client, &gw.url("/sub/a"), None).await;
    subscribers(&gw, "sub", 1.0).await;

    // `?event=` names the event.
    let one = publish(&client, &gw, "a?event=greeting", "one").await;
    let two = publish(&client, &gw, "a", "two\nlines\r\nthree").await;
    let event = stream.next_event().await;
    assert_eq!(
        (event.id.as_deref(), event.data.as_deref()),
        (Some(&*one), Some("one"))
    );
    assert_eq!(event.event.as_deref(), Some("greeting"));
    let event = stream.next_event().await;
    assert_eq!(event.id.as_deref(), Some(&*two));
    assert_eq!(event.data.as_deref(), Some("two\nlines\nthree"));
    assert_eq!(event.event, None);

    // The subscriber leaves: its slot is freed at once.
    drop(stream);
    subscribers(&gw, "sub", 0.0).await;

    // Missed while away; `Last-Event-ID` (what EventSource sends) wins over the URL's cursor.
    let three = publish(&client, &gw, "a", "three").await;
    let four = publish(&client, &gw, "a", "four").await;
    let url = gw.url(&format!("/sub/a?cursor={one}"));
    let mut stream = Stream::open(&client, &url, Some(&two)).await;
    let ids = [stream.next_event().await, stream.next_event().await].map(|e| (e.id, e.data));
    assert_eq!(
        ids,
        [
            (Some(three), Some("three".to_owned())),
            (Some(four.clone()), Some("four".to_owned()))
        ]
    );
    // The same by query parameter.
    let url = gw.url(&format!("/sub/a?last_event_id={two}"));
    let mut again = Stream::open(&client, &url, None).await;
    assert_eq!(again.next_event().await.data.as_deref(), Some("three"));
    assert_eq!(again.next_event().await.id, Some(four));
    assert_eq!(
        gw.metric("holdfast_messages_delivered_total{route=\"sub\",transport=\"sse\"}")
            .await,
        Some(6.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_stream_gets_comments_and_a_stale_cursor_an_explicit_reset() {
    let gw = Holdfast::start(CONFIG).await;
    let client = reqwest::Client::new();
    let mut quiet = Stream::open(&client, &gw.url("/sub/q"), None).await;
    // `keepalive: 300ms`.
    assert!(quiet.next().await.comment);
    assert!(quiet.next().await.comment);

    // Five messages through a buffer of three: a cursor at the first is older than the buffer.
    let mut cursors = Vec::new();
    for n in 1..=5 {
        cursors.push(publish(&client, &gw, "r", format!("m{n}")).await);
    }
    let mut stream = Stream::open(&client, &gw.url("/sub/r"), Some(&cursors[0])).await;
    let reset = stream.next_event().await;
    assert_eq!(reset.event.as_deref(), Some("reset"));
    let oldest = reset.id.expect("the reset names where the stream goes on");
    let data: Value = serde_json::from_str(reset.data.as_deref().expect("data")).expect("json");
    assert_eq!(
        data,
        serde_json::json!({"type": "cursor-gone", "oldest": oldest})
    );
    let rest: Vec<_> = [
        stream.next_event().await,
        stream.next_event().await,
        stream.next_event().await,
    ]
    .into_iter()
    .map(|e| e.data.expect("data"))
    .collect();
    assert_eq!(rest, ["m3", "m4", "m5"]);
    assert_eq!(
        gw.metric("holdfast_stream_resets_total{route=\"sub\"}")
            .await,
        Some(1.0)
    );
    // The message after the ones replayed comes as it is published.
    let six = publish(&client, &gw, "r", "m6").await;
    assert_eq!(stream.next_event().await.id, Some(six));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_stream_requests_get_clear_answers() {
    let gw = Holdfast::start(CONFIG).await;
    let client = reqwest::Client::new();
    let problem = async |response: reqwest::Response, status: u16| -> Value {
        assert_eq!(response.status(), status);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        response.json().await.expect("problem")
    };
    // A garbage `Last-Event-ID`: refused before the stream starts.
    let response = client
        .get(gw.url("/sub/a"))
        .header("accept", "text/event-stream")
        .header("last-event-id", "yesterday")
        .send()
        .await
        .expect("stream");
    assert_eq!(
        problem(response, 400).await,
        serde_json::json!({
            "type": "urn:holdfast:problem:bad-request",
            "title": "Bad Request",
            "status": 400,
            "detail": "invalid Last-Event-ID or cursor: the cursor is not of the form `<ms>-<seq>` (two decimal numbers joined by `-`); a cursor looks like `1700000000000-0`"
        })
    );
    // Event names the gateway sends itself, and names that are not tokens.
    for (event, detail) in [
        ("reset", "invalid event name: `reset` is an event name the gateway sends itself (reset, error, base64, message)"),
        ("a%0Ab", "invalid event name: the event name contains '\\n' at byte 1; allowed are ASCII letters, digits and . _ - :"),
    ] {
        let response = client
            .post(gw.url(&format!("/pub/a?event={event}")))
            .body("x")
            .send()
            .await
            .expect("publish");
        assert_eq!(
            problem(response, 400).await,
            serde_json::json!({
                "type": "urn:holdfast:problem:bad-event-name",
                "title": "Bad Request",
                "status": 400,
                "detail": detail
            })
        );
    }
    // A poll on a route that serves only streams.
    let response = client.get(gw.url("/only/a")).send().await.expect("poll");
    assert_eq!(
        problem(response, 406).await,
        serde_json::json!({
            "type": "urn:holdfast:problem:transport-not-served",
            "title": "Not Acceptable",
            "status": 406,
            "detail": "this route serves its channel to subscribers by sse, not by long-poll; for Server-Sent Events send `Accept: text/event-stream`"
        })
    );
    // A stream asked of a route that serves only polls: a poll it is.
    let response = client
        .get(gw.url("/polls/a?wait=0"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("poll");
    assert_eq!(response.status(), 204);
    // The stream-only route streams.
    Stream::open(&client, &gw.url("/only/a"), None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_end_cleanly_at_shutdown() {
    let mut gw = Holdfast::start(CONFIG).await;
    let client = reqwest::Client::new();
    let mut streams = Vec::new();
    for n in 0..3 {
        streams.push(Stream::open(&client, &gw.url(&format!("/sub/s{n}")), None).await);
    }
    // HTTP/1.0 streams are delimited by the close instead of chunks.
    let raw = tokio::spawn(holdfast_tests::raw_request(
        gw.addr,
        b"GET /sub/old HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n",
        Duration::from_secs(10),
    ));
    subscribers(&gw, "sub", 4.0).await;
    gw.signal(15);
    for stream in &mut streams {
        // The body ends (its last chunk), not an error: EventSource reconnects.
        while let Some(event) = stream.try_next().await {
            assert!(event.comment, "{event:?}");
        }
    }
    let raw = raw.await.expect("join");
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
    assert!(raw.contains("\r\nconnection: close\r\n"), "{raw}");
    assert!(!raw.contains("transfer-encoding"), "{raw}");
    assert!(raw.contains("\r\n\r\nretry: 1000\n\n"), "{raw}");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_over_http2_gets_its_events_and_ends_at_shutdown() {
    let h2c = holdfast_tests::free_port();
    let mut gw = Holdfast::start(&format!(
        "listen:\n  - {{listen}}\n  - {{ address: \"127.0.0.1:{h2c}\", h2c: true }}\nadmin: {{admin}}\n{CONFIG}"
    ))
    .await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let mut stream = Stream::open(&client, &format!("http://127.0.0.1:{h2c}/sub/h"), None).await;
    assert_eq!(stream.response.version(), reqwest::Version::HTTP_2);
    subscribers(&gw, "sub", 1.0).await;
    let one = publish(&reqwest::Client::new(), &gw, "h", "over h2c").await;
    let event = stream.next_event().await;
    assert_eq!(
        (event.id, event.data.as_deref()),
        (Some(one), Some("over h2c"))
    );
    gw.signal(15);
    while let Some(event) = stream.try_next().await {
        assert!(event.comment, "{event:?}");
    }
    assert_eq!(gw.wait_exit(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_resumes_on_another_instance_through_redis() {
    let redis = RedisServer::start().await;
    let config = format!(
        "backplane: {{ redis: {{ url: \"{}\" }} }}\n{CONFIG}",
        redis.url()
    );
    let a = Holdfast::start(&config).await;
    let b = Holdfast::start(&config).await;
    let client = reqwest::Client::new();
    let mut on_a = Stream::open(&client, &a.url("/sub/x"), None).await;
    subscribers(&a, "sub", 1.0).await;
    let one = publish(&client, &b, "x?event=note", "published on B").await;
    let event = on_a.next_event().await;
    assert_eq!(event.id.as_deref(), Some(&*one));
    assert_eq!(event.data.as_deref(), Some("published on B"));
    assert_eq!(event.event.as_deref(), Some("note"));
    drop(on_a);
    let two = publish(&client, &a, "x", "missed, on A").await;
    let mut on_b = Stream::open(&client, &b.url("/sub/x"), Some(&one)).await;
    let event = on_b.next_event().await;
    assert_eq!(
        (event.id, event.data.as_deref()),
        (Some(two), Some("missed, on A"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_queue_each_message_goes_to_exactly_one_stream() {
    let gw = Holdfast::start(
        r#"
routes:
  - { name: work, match: { path: /work, methods: [GET] }, longpoll: { channel: jobs, mode: queue } }
  - { name: add, match: { path: /add, methods: [POST] }, publish: { channel: jobs, mode: queue } }
"#,
    )
    .await;
    let client = reqwest::Client::new();
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(Stream::open(&client, &gw.url("/work"), None).await);
    }
    subscribers(&gw, "work", 3.0).await;
    for n in 0..30 {
        let response = client
            .post(gw.url("/add"))
            .body(format!("job {n}"))
            .send()
            .await
            .expect("add");
        assert_eq!(response.status(), 201);
    }
    let mut got = Vec::new();
    while got.len() < 30 {
        let mut progressed = false;
        for worker in &mut workers {
            let next = tokio::time::timeout(Duration::from_millis(200), worker.next_event()).await;
            if let Ok(event) = next {
                got.push(event.data.expect("data"));
                progressed = true;
            }
        }
        assert!(progressed || got.len() == 30, "stuck at {got:?}");
    }
    got.sort_by_key(|job| job[4..].parse::<u32>().expect("number"));
    let expected: Vec<String> = (0..30).map(|n| format!("job {n}")).collect();
    assert_eq!(got, expected, "each once");
}
