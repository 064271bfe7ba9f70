//! Auth for subscribers that stay connected: a browser cannot set headers on a WebSocket, so the
//! credential may come in a query parameter or a cookie, checked at the handshake (401 before
//! the switch); and a stream or socket ends when its credential expires — a WebSocket with
//! close code 1008 — so that a reconnect must bring a fresh one.

use super::auth::{claims, hs256, SECRET};
use super::streams::Stream;
use super::websocket::{close_frame, handshake, next_data, read_until, GOOD};
use holdfast_tests::Holdfast;
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};
use tungstenite::client::IntoClientRequest;
use tungstenite::Message as Frame;

fn config() -> String {
    format!(
        r#"
server: {{ shutdown_grace: 2s, watch_interval: 0s }}
auth:
  query: {{ jwt: {{ issuer: https://id.test, audiences: [holdfast], secret: "{SECRET}" }}, token: {{ query: access_token }} }}
  cookie: {{ jwt: {{ issuer: https://id.test, audiences: [holdfast], secret: "{SECRET}" }}, token: {{ cookie: session }} }}
routes:
  - {{ name: private, match: {{ path: "/private/{{ch}}", methods: [GET] }}, auth: {{ providers: [query, cookie] }}, longpoll: {{ channel: "{{ch}}" }} }}
  - {{ name: pub, match: {{ path: "/pub/{{ch}}", methods: [POST] }}, auth: {{ public: true }}, publish: {{ channel: "{{ch}}" }} }}
"#
    )
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A token that expires in `seconds`.
fn token(seconds: i64) -> String {
    hs256(&claims(json!({"exp": now() + seconds})))
}

async fn publish(gw: &Holdfast, body: &str) {
    let answer = reqwest::Client::new()
        .post(gw.url("/pub/p"))
        .body(body.to_owned())
        .send()
        .await
        .expect("publish");
    assert_eq!(answer.status(), 201);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_credential_comes_in_the_query_or_a_cookie_and_is_checked_at_the_handshake() {
    let gw = Holdfast::start(&config()).await;

    // None: 401 before the switch, with the challenge.
    let answer = tokio::task::block_in_place(|| {
        let mut tcp = handshake(&gw, "/private/p", GOOD);
        String::from_utf8_lossy(&read_until(&mut tcp, b"\"}")).into_owned()
    });
    assert!(
        answer.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("www-authenticate: Bearer realm=\"holdfast\""),
        "{answer}"
    );
    let problem: Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).expect("a body")).expect("json");
    assert_eq!(problem["status"], 401);

    // In the query, and in a cookie: both switch, and both get what is published.
    let fresh = token(600);
    let url = format!("ws://{}/private/p?access_token={fresh}", gw.addr);
    let (mut by_query, _) =
        tokio::task::block_in_place(|| tungstenite::connect(url)).expect("query credential");
    let mut request = format!("ws://{}/private/p", gw.addr)
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "cookie",
        format!("theme=dark; session={fresh}")
            .parse()
            .expect("cookie"),
    );
    let (mut by_cookie, _) =
        tokio::task::block_in_place(|| tungstenite::connect(request)).expect("cookie credential");
    super::websocket::sockets(&gw, "private", 2.0).await;
    publish(&gw, "for members").await;
    for socket in [&mut by_query, &mut by_cookie] {
        assert_eq!(next_data(socket), Frame::text("for members"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_socket_and_a_stream_end_when_their_credential_expires() {
    let gw = Holdfast::start(&config()).await;
    let short = token(2);
    let path = format!("/private/p?access_token={short}");

    // The socket: closed with 1008 and the reason.
    let (code, reason) = tokio::task::block_in_place(|| {
        let mut tcp = handshake(&gw, &path, GOOD);
        read_until(&mut tcp, b"\r\n\r\n");
        close_frame(&mut tcp)
    });
    assert_eq!(
        (code, reason.as_str()),
        (1008, "the credential expired; reconnect with a fresh one")
    );

    // The stream: live until then, and ended cleanly (EventSource reconnects, and must bring
    // a fresh credential).
    let client = reqwest::Client::new();
    let short = token(3);
    let url = gw.url(&format!("/private/p?access_token={short}"));
    let mut stream = Stream::open(&client, &url, None).await;
    super::streams::subscribed(&gw, "private", "sse", 1.0).await;
    publish(&gw, "while it lasts").await;
    assert_eq!(
        stream.next_event().await.data.as_deref(),
        Some("while it lasts")
    );
    while let Some(event) = stream.try_next().await {
        assert!(event.comment, "only keep-alives after it: {event:?}");
    }
    super::websocket::sockets(&gw, "private", 0.0).await;
    super::streams::subscribed(&gw, "private", "sse", 0.0).await;
}
