//! The edge's own path for held HTTP/1 polls, attacked with raw sockets: a request pipelined
//! behind a held poll, a head over the limit, a connection that sends nothing, and a keep-alive
//! connection reused after a held poll. (A client that half-closes while held: longpoll.rs.)

use holdfast_tests::{Holdfast, RawClient, ReadError};
use std::time::Duration;

const CONFIG: &str = r#"
limits: { header_timeout: 1s, max_header_bytes: 2KiB }
routes:
  - { name: poll, match: { path: /poll, methods: [GET] }, longpoll: { channel: updates, timeout: 30s } }
  - { name: push, match: { path: /push, methods: [POST] }, publish: { channel: updates } }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_request_pipelined_behind_a_held_poll_is_answered_after_it_in_order() {
    let gw = Holdfast::start(CONFIG).await;
    let mut client = RawClient::connect(gw.addr).await;
    // The publish comes after the poll on the same connection: served in order, it cannot
    // wake the poll (that would be the requests mixed up).
    client
        .send(
            b"GET /poll?wait=1 HTTP/1.1\r\nHost: x\r\n\r\n\
              POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await
        .expect("send");
    let responses = client
        .read_responses(2, Duration::from_secs(10))
        .await
        .unwrap_or_else(|(read, error)| panic!("{read:?}: {error}"));
    assert_eq!(responses[0].status, 204, "{}", responses[0]);
    assert_eq!(responses[1].status, 201, "{}", responses[1]);
    assert_eq!(
        responses[1].json().expect("json")["delivered_to"],
        0,
        "the publish ran while the poll was held"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poll_head_over_the_limit_is_431_and_closed() {
    let gw = Holdfast::start(CONFIG).await;
    let mut client = RawClient::connect(gw.addr).await;
    let big = "a".repeat(3000);
    client
        .send(format!("GET /poll HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let response = client
        .read_response(Duration::from_secs(5))
        .await
        .expect("an answer");
    assert_eq!(response.status, 431);
    assert_eq!(
        response.json().expect("problem")["detail"],
        "the request head is larger than 2048 bytes"
    );
    // Closed: with the rest of the oversized head unread, the close may arrive as a reset.
    match client.read_response(Duration::from_secs(5)).await {
        Err(ReadError::Closed { .. } | ReadError::Io { .. }) => {}
        other => panic!("the connection is still open: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_sends_nothing_is_closed_at_the_header_timeout_without_an_answer() {
    let gw = Holdfast::start(CONFIG).await;
    let mut client = RawClient::connect(gw.addr).await;
    let started = std::time::Instant::now();
    let (bytes, closed) = client.read_to_close(Duration::from_secs(5)).await;
    assert!(closed, "still open after 5 s");
    assert!(bytes.is_empty(), "{}", String::from_utf8_lossy(&bytes));
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_alive_connection_serves_polls_and_other_requests_after_a_held_poll() {
    let gw = Holdfast::start(CONFIG).await;
    let mut client = RawClient::connect(gw.addr).await;
    client
        .send(b"GET /poll?wait=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let first = client
        .read_response(Duration::from_secs(5))
        .await
        .expect("first");
    assert_eq!(first.status, 204);
    assert_eq!(first.header("connection"), Some("keep-alive"));
    assert!(first.header("date").is_some());
    let cursor = first.header("poll-cursor").expect("cursor").to_owned();
    // A publish on the same connection (Pingora's path), then a poll from the cursor (ours).
    client
        .send(b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        .await
        .expect("send");
    assert_eq!(
        client
            .read_response(Duration::from_secs(5))
            .await
            .expect("publish")
            .status,
        201
    );
    client
        .send(
            format!("GET /poll?cursor={cursor} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("send");
    let last = client
        .read_response(Duration::from_secs(5))
        .await
        .expect("poll");
    assert_eq!((last.status, last.text().as_str()), (200, "hi"));
    assert_eq!(last.header("connection"), Some("close"));
    assert!(client.read_to_close(Duration::from_secs(5)).await.1);
}
