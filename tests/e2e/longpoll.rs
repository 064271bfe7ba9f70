//! Long-poll channels: held polls answered by publishes, timeouts, cursors and
//! 410, queue mode, caps, client-gone, shutdown, and the Redis backplane across two instances.

use holdfast_tests::{eventually, raw_request, Holdfast, RedisServer, SIGTERM};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const SEED: &str = r#"
server: { shutdown_grace: 2s }
channels: { buffer_messages: 3 }
routes:
  - { name: poll, match: { path: /poll, methods: [GET] }, longpoll: { channel: updates, timeout: 30s } }
  - { name: push, match: { path: /push, methods: [POST] }, publish: { channel: updates }, max_body: 64KiB }
  - { name: batch, match: { path: /batch, methods: [GET] }, longpoll: { channel: updates, format: batch, timeout: 5s }, cors: { origins: [https://app.test] } }
  - { name: capped, match: { path: /capped }, longpoll: { channel: capped, timeout: 30s, max_held: 2 } }
  - { name: room, match: { path: "/rooms/{room}" }, longpoll: { channel: "room:{room}", timeout: 30s } }
  - { name: take, match: { path: /take }, longpoll: { channel: work, mode: queue, timeout: 10s } }
  - { name: add, match: { path: /add }, publish: { channel: work, mode: queue } }
"#;

async fn held(gw: &Holdfast, route: &str, count: f64) {
    let sample = format!("holdfast_longpoll_held{{route=\"{route}\"}}");
    eventually(
        Duration::from_secs(10),
        &format!("{count} held polls on {route}"),
        async || gw.metric(&sample).await == Some(count),
    )
    .await;
}

async fn push(client: &reqwest::Client, gw: &Holdfast, body: Value) -> Value {
    let response = client
        .post(gw.url("/push"))
        .json(&body)
        .send()
        .await
        .expect("push");
    assert_eq!(response.status(), 201);
    response.json().await.expect("publish answer")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_flow_a_held_poll_gets_the_next_push() {
    let gw = Holdfast::start(SEED).await;
    let client = reqwest::Client::new();
    let poll = tokio::spawn(client.get(gw.url("/poll")).send());
    held(&gw, "poll", 1.0).await;
    let published = push(&client, &gw, json!({"inputText": "Hello"})).await;
    assert_eq!(published["delivered_to"], 1);
    let cursor = published["cursor"].as_str().expect("cursor").to_owned();
    assert_eq!(published["id"], cursor.as_str());

    let response = poll.await.expect("join").expect("poll");
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["poll-cursor"], cursor.as_str());
    assert_eq!(headers["etag"], format!("\"{cursor}\"").as_str());
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({"inputText": "Hello"})
    );

    // The seeds' client loop: 204 → poll again; 200 → data. With the cursor nothing is lost.
    let mut seen = Vec::new();
    let mut cursor = cursor;
    for i in 0..3 {
        push(&client, &gw, json!({"n": i})).await;
    }
    while seen.len() < 3 {
        let response = client
            .get(gw.url(&format!("/poll?cursor={cursor}&wait=1")))
            .send()
            .await
            .expect("poll");
        match response.status().as_u16() {
            200 => {
                cursor = response.headers()["poll-cursor"]
                    .to_str()
                    .expect("cursor")
                    .to_owned();
                seen.push(response.json::<Value>().await.expect("json")["n"].clone());
            }
            204 => continue,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(seen, vec![json!(0), json!(1), json!(2)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_is_204_with_the_unchanged_cursor() {
    let gw = Holdfast::start(SEED).await;
    let client = reqwest::Client::new();
    let cursor = push(&client, &gw, json!({"a": 1})).await["cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let started = Instant::now();
    let response = client
        .get(gw.url(&format!("/poll?cursor={cursor}&wait=0.3")))
        .send()
        .await
        .expect("poll");
    assert_eq!(response.status(), 204);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "held for the wait time"
    );
    assert_eq!(response.headers()["poll-cursor"], cursor.as_str());
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.bytes().await.expect("body").len(), 0);
    eventually(
        Duration::from_secs(5),
        "the timeout to be counted",
        async || {
            gw.metric(r#"holdfast_longpoll_completions_total{outcome="timeout",route="poll"}"#)
                .await
                == Some(1.0)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cursor_resumes_with_exactly_the_missed_messages_and_a_stale_one_is_410() {
    let gw = Holdfast::start(SEED).await;
    let client = reqwest::Client::new();
    let first = push(&client, &gw, json!({"n": 1})).await["cursor"]
        .as_str()
        .expect("c")
        .to_owned();
    push(&client, &gw, json!({"n": 2})).await;
    // The channel holds buffered messages: it is counted.
    assert_eq!(gw.metric("holdfast_channels").await, Some(1.0));
    let third = push(&client, &gw, json!({"n": 3})).await["cursor"]
        .as_str()
        .expect("c")
        .to_owned();
    let response = client
        .get(gw.url(&format!("/batch?cursor={first}")))
        .header("origin", "https://app.test")
        .send()
        .await
        .expect("poll");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.test"
    );
    assert_eq!(
        response.headers()["access-control-expose-headers"],
        "ETag, Poll-Cursor"
    );
    let batch: Value = response.json().await.expect("batch");
    let data: Vec<Value> = batch["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(data, vec![json!({"n": 2}), json!({"n": 3})]);
    assert_eq!(batch["cursor"], third.as_str());

    // The buffer keeps 3: two more pushes push `first` out of it.
    push(&client, &gw, json!({"n": 4})).await;
    push(&client, &gw, json!({"n": 5})).await;
    let response = client
        .get(gw.url(&format!("/poll?cursor={first}")))
        .send()
        .await
        .expect("poll");
    assert_eq!(response.status(), 410);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.expect("problem");
    let oldest = problem["oldest"].as_str().expect("oldest").to_owned();
    assert_eq!(problem["title"], "Gone");
    assert!(problem["detail"]
        .as_str()
        .expect("detail")
        .contains(&oldest));
    // Resuming from the oldest cursor still held replays what is held: n=3, 4, 5.
    let batch: Value = client
        .get(gw.url(&format!("/batch?cursor={oldest}")))
        .send()
        .await
        .expect("poll")
        .json()
        .await
        .expect("json");
    let data: Vec<Value> = batch["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["data"]["n"].clone())
        .collect();
    assert_eq!(data, vec![json!(3), json!(4), json!(5)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cursor_from_the_future_is_400_and_the_real_one_gets_the_next_message() {
    let gw = Holdfast::start(SEED).await;
    let client = reqwest::Client::new();
    let newest = push(&client, &gw, json!({"n": 1})).await["cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let response = client
        .get(gw.url("/poll?cursor=99999999999999-0&wait=1"))
        .send()
        .await
        .expect("poll");
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(problem["type"], "urn:holdfast:problem:cursor-ahead");
    assert_eq!(problem["title"], "Bad Request");
    assert_eq!(problem["newest"], newest.as_str());
    assert_eq!(
        problem["detail"],
        format!("the cursor `99999999999999-0` is ahead of the channel's newest message `{newest}`; poll with `{newest}` (or without a cursor) to wait for the next one").as_str()
    );

    // The real cursor still gets the next message: nothing was lost to the bad poll.
    let poll = tokio::spawn(client.get(gw.url(&format!("/poll?cursor={newest}"))).send());
    held(&gw, "poll", 1.0).await;
    let next = push(&client, &gw, json!({"n": 2})).await["cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let response = poll.await.expect("join").expect("poll");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["poll-cursor"], next.as_str());
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({"n": 2})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_mode_delivers_each_of_1000_messages_to_exactly_one_of_50_pollers() {
    let gw = Holdfast::start(SEED).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let total = 1000usize;
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut pollers = Vec::new();
    for _ in 0..50 {
        let (client, url, received) = (client.clone(), gw.url("/take?wait=2"), received.clone());
        pollers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while received.lock().expect("lock").len() < total && Instant::now() < deadline {
                let response = client.get(&url).send().await.expect("take");
                match response.status().as_u16() {
                    200 => {
                        let text = response.text().await.expect("text");
                        received.lock().expect("lock").push(text);
                    }
                    204 => {}
                    other => panic!("unexpected {other}"),
                }
            }
        }));
    }
    held(&gw, "take", 50.0).await;
    let mut publishers = Vec::new();
    for chunk in 0..10 {
        let (client, url) = (client.clone(), gw.url("/add"));
        publishers.push(tokio::spawn(async move {
            for i in 0..100 {
                let response = client
                    .post(&url)
                    .body(format!("m{}", chunk * 100 + i))
                    .send()
                    .await
                    .expect("add");
                assert_eq!(response.status(), 201);
            }
        }));
    }
    for task in publishers.into_iter().chain(pollers) {
        task.await.expect("join");
    }
    let received = received.lock().expect("lock").clone();
    let distinct: HashSet<&String> = received.iter().collect();
    assert_eq!(
        received.len(),
        total,
        "every message delivered once, none twice"
    );
    assert_eq!(distinct.len(), total);
}

/// A poll held on its own connection, which the client then closes (or, with `half_close`, only
/// shuts for writing): the slot is freed at once, not at the poll's deadline, and the poll is
/// counted as `client_gone`.
async fn leaving_frees_the_slot(half_close: bool) {
    let gw = Holdfast::start(SEED).await;
    let stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (read, mut write) = stream.into_split();
    tokio::io::AsyncWriteExt::write_all(&mut write, b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    held(&gw, "poll", 1.0).await;
    // Dropping the writing half shuts it (FIN); the reading half stays open until the end.
    drop(write);
    let read = if half_close { Some(read) } else { None };
    held(&gw, "poll", 0.0).await;
    eventually(
        Duration::from_secs(5),
        "client_gone to be counted",
        async || {
            gw.metric(r#"holdfast_longpoll_completions_total{outcome="client_gone",route="poll"}"#)
                .await
                == Some(1.0)
        },
    )
    .await;
    drop(read);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_frees_its_slot_at_once() {
    leaving_frees_the_slot(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_half_closes_while_held_frees_its_slot_at_once() {
    leaving_frees_the_slot(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_cap_a_poll_gets_503_with_retry_after() {
    let gw = Holdfast::start(SEED).await;
    let client = reqwest::Client::new();
    let a = tokio::spawn(client.get(gw.url("/capped")).send());
    let b = tokio::spawn(client.get(gw.url("/capped")).send());
    held(&gw, "capped", 2.0).await;
    let response = client.get(gw.url("/capped")).send().await.expect("poll");
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(
        problem["detail"],
        "this route already holds its maximum of 2 polls"
    );
    a.abort();
    b.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_answers_every_held_poll_at_once_then_exits() {
    let mut gw = Holdfast::start(SEED).await;
    let client = reqwest::Client::new();
    let polls: Vec<_> = (0..3)
        .map(|_| tokio::spawn(client.get(gw.url("/poll")).send()))
        .collect();
    held(&gw, "poll", 3.0).await;
    let started = Instant::now();
    gw.signal(SIGTERM);
    for poll in polls {
        let response = poll.await.expect("join").expect("answered");
        assert_eq!(response.status(), 204);
        assert_eq!(response.headers()["connection"], "close");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at once, took {:?}",
        started.elapsed()
    );
    assert_eq!(gw.wait_exit(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_poll_and_publish_inputs_get_clear_answers() {
    let gw = Holdfast::start(SEED).await;
    let client = reqwest::Client::new();
    let cases = [
        ("/poll?cursor=yesterday", "invalid cursor: "),
        (
            "/poll?wait=-1",
            "invalid wait `-1`: give a number of seconds from 0 to 30",
        ),
        (
            "/poll?wait=abc",
            "invalid wait `abc`: give a number of seconds from 0 to 30",
        ),
    ];
    for (path, detail) in cases {
        let response = client.get(gw.url(path)).send().await.expect("poll");
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.expect("problem");
        assert!(
            problem["detail"]
                .as_str()
                .expect("detail")
                .starts_with(detail),
            "{path}: {problem}"
        );
    }
    // Longer than any channel name, shorter than `limits.max_url_bytes` (8 KiB; past it: 414).
    let long = format!("/rooms/{}", "a".repeat(4 * 1024));
    let response = client.get(gw.url(&long)).send().await.expect("poll");
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.expect("problem");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .starts_with("invalid channel name: "),
        "{problem}"
    );

    // 10 MiB against a 64 KiB route: refused from Content-Length, before any of the body is
    // sent (a client still writing 10 MiB would see the close as a broken pipe instead).
    let head = format!(
        "POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        10 << 20
    );
    let answer = raw_request(gw.addr, head.as_bytes(), Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(
        answer.contains(r#""detail":"the body is larger than this route's limit of 65536 bytes""#),
        "{answer}"
    );
    // The same body streamed without Content-Length: refused as it passes the limit.
    let chunked = b"POST /push HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n10000\r\n";
    let mut request = chunked.to_vec();
    request.extend(std::iter::repeat_n(b'y', 0x10000));
    request.extend_from_slice(b"\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n");
    let answer = raw_request(gw.addr, &request, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
}

const REDIS: &str = r#"
server: { shutdown_grace: 1s }
backplane: { redis: { url: "REDIS_URL" } }
routes:
  - { name: poll, match: { path: /poll }, longpoll: { channel: updates, timeout: 20s } }
  - { name: push, match: { path: /push, methods: [POST] }, publish: { channel: updates } }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_channels_through_redis() {
    let redis = RedisServer::start().await;
    let config = REDIS.replace("REDIS_URL", &redis.url());
    let a = Holdfast::start(&config).await;
    let b = Holdfast::start(&config).await;
    let client = reqwest::Client::new();
    let poll_on_b = tokio::spawn(client.get(b.url("/poll")).send());
    held(&b, "poll", 1.0).await;
    let published: Value = client
        .post(a.url("/push"))
        .body("from A")
        .send()
        .await
        .expect("push")
        .json()
        .await
        .expect("json");
    let first = published["cursor"].as_str().expect("cursor").to_owned();
    let response = poll_on_b.await.expect("join").expect("poll");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["poll-cursor"], first.as_str());
    assert_eq!(response.text().await.expect("text"), "from A");

    // Two more on A; a cursor from A resumes on B with nothing lost and nothing repeated.
    for text in ["two", "three"] {
        assert_eq!(
            client
                .post(a.url("/push"))
                .body(text)
                .send()
                .await
                .expect("push")
                .status(),
            201
        );
    }
    let mut cursor = first;
    let mut seen = Vec::new();
    for instance in [&b, &a] {
        let response = client
            .get(instance.url(&format!("/poll?cursor={cursor}")))
            .send()
            .await
            .expect("poll");
        assert_eq!(response.status(), 200);
        cursor = response.headers()["poll-cursor"]
            .to_str()
            .expect("cursor")
            .to_owned();
        seen.push(response.text().await.expect("text"));
    }
    assert_eq!(seen, ["two", "three"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_gives_503_and_failing_readyz_then_recovers_by_itself() {
    let mut redis = RedisServer::start().await;
    let gw = Holdfast::start(&REDIS.replace("REDIS_URL", &redis.url())).await;
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .post(gw.url("/push"))
            .body("before")
            .send()
            .await
            .expect("push")
            .status(),
        201
    );
    let held_poll = tokio::spawn(client.get(gw.url("/poll?wait=2")).send());
    held(&gw, "poll", 1.0).await;

    redis.kill();
    eventually(Duration::from_secs(10), "readyz to fail", async || {
        reqwest::get(gw.admin_url("/readyz"))
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    assert_eq!(gw.metric("holdfast_backplane_up").await, Some(0.0));
    let response = client
        .post(gw.url("/push"))
        .body("during")
        .send()
        .await
        .expect("push");
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(
        problem["detail"],
        "the channel backplane is unreachable; try again shortly"
    );
    assert_eq!(
        client
            .get(gw.url("/poll?wait=1"))
            .send()
            .await
            .expect("poll")
            .status(),
        503
    );
    // The poll held before Redis died ends by its 2 s deadline, it does not hang: with the
    // timeout answer, or with 503 if it tried to read from the dead backplane first.
    let started = Instant::now();
    let answer = held_poll.await.expect("join").expect("poll");
    assert!(
        matches!(answer.status().as_u16(), 204 | 503),
        "{}",
        answer.status()
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    redis.restart().await;
    eventually(Duration::from_secs(20), "readyz to recover", async || {
        reqwest::get(gw.admin_url("/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert_eq!(gw.metric("holdfast_backplane_up").await, Some(1.0));
    assert_eq!(
        client
            .post(gw.url("/push"))
            .body("after")
            .send()
            .await
            .expect("push")
            .status(),
        201
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cors_preflight_lets_browsers_send_the_cursor_headers() {
    let gw = Holdfast::start(SEED).await;
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, gw.url("/batch"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "last-event-id")
            .send()
    };
    let response = preflight("https://app.test").await.expect("preflight");
    assert_eq!(response.status(), 204);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.test"
    );
    assert_eq!(response.headers()["access-control-allow-methods"], "GET");
    assert!(response.headers()["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .contains("Last-Event-ID"));
    let response = preflight("https://evil.test").await.expect("preflight");
    assert_eq!(response.status(), 204);
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    // A route without `cors:` does not answer preflights.
    let response = client
        .request(reqwest::Method::OPTIONS, gw.url("/poll"))
        .header("origin", "https://app.test")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .expect("options");
    assert_eq!(response.status(), 405);
}
