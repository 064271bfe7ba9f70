//! WebSocket subscribers that publish (`publish: true`): each message they send is published to
//! the channel — whole or in fragments, with control frames between the fragments — counted
//! against the route's `max_body` and rate limits; the frames RFC 6455 forbids close the socket
//! with the code that says why. Checked with raw sockets, byte by byte.

use super::websocket::{
    client_frame, close_frame, connect, masked, next_data, raw_socket, server_frame,
};
use holdfast_tests::{run_holdfast, Holdfast};
use std::io::Write;
use std::net::TcpStream;

const CONFIG: &str = r#"
server: { shutdown_grace: 2s, watch_interval: 0s }
routes:
  - { name: room, match: { path: "/room/{ch}", methods: [GET] }, max_body: 64, longpoll: { channel: "{ch}", publish: true } }
  - name: capped
    match: { path: "/capped/{ch}", methods: [GET] }
    longpoll: { channel: "{ch}", publish: true }
    rate_limits: [{ key: ip, rate: 3/m, name: frames }]
  - { name: sub, match: { path: "/sub/{ch}", methods: [GET] }, longpoll: { channel: "{ch}", format: envelope } }
"#;

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

fn send(tcp: &mut TcpStream, frame: &[u8]) {
    tcp.write_all(frame).expect("send a frame");
}

/// The data frames the server sends next, skipping pings.
fn next_message(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    loop {
        let (first, payload) = server_frame(tcp);
        if first != 0x89 {
            return (first, payload);
        }
    }
}

/// The data of the next enveloped message `socket` gets, and its content type.
fn next_envelope(socket: &mut super::websocket::Socket) -> (String, String) {
    let frame = next_data(socket);
    let envelope: serde_json::Value =
        serde_json::from_str(frame.to_text().expect("text")).expect("an envelope");
    (
        envelope["data"].as_str().expect("data").to_owned(),
        envelope["content_type"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_publishes_what_it_sends_whole_or_in_fragments() {
    let gw = Holdfast::start(CONFIG).await;
    tokio::task::block_in_place(|| {
        let mut listener = connect(&gw, "/sub/r");
        let mut tcp = raw_socket(&gw, "/room/r");

        // A whole text frame: every subscriber gets it, the sender too.
        send(&mut tcp, &masked(TEXT, b"hello"));
        assert_eq!(
            next_envelope(&mut listener),
            ("hello".into(), "text/plain; charset=utf-8".into())
        );
        assert_eq!(next_message(&mut tcp), (0x81, b"hello".to_vec()));

        // Three fragments with a ping between them (RFC 6455 §5.4: control frames may come in
        // the middle of a fragmented message): the pong carries the ping's payload, and the
        // message is published whole.
        send(&mut tcp, &client_frame(TEXT, b"hel"));
        send(&mut tcp, &masked(PING, b"are you there"));
        send(&mut tcp, &client_frame(CONTINUATION, b"lo, "));
        send(&mut tcp, &masked(CONTINUATION, "wörld".as_bytes()));
        assert_eq!(server_frame(&mut tcp), (0x8a, b"are you there".to_vec()));
        assert_eq!(
            next_message(&mut tcp),
            (0x81, "hello, wörld".as_bytes().to_vec())
        );
        assert_eq!(next_envelope(&mut listener).0, "hello, wörld");

        // A binary frame is published as bytes.
        send(&mut tcp, &masked(BINARY, b"\xff\x00"));
        assert_eq!(next_message(&mut tcp), (0x82, b"\xff\x00".to_vec()));
        let frame = next_data(&mut listener);
        let envelope: serde_json::Value =
            serde_json::from_str(frame.to_text().expect("text")).expect("an envelope");
        assert_eq!(envelope["content_type"], "application/octet-stream");

        // The closing handshake: the server answers the client's close with the same code,
        // then closes the connection.
        let mut close = 1000u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"bye");
        send(&mut tcp, &masked(CLOSE, &close));
        assert_eq!(close_frame(&mut tcp).0, 1000);
        let mut rest = Vec::new();
        let read = std::io::Read::read_to_end(&mut tcp, &mut rest).expect("the end");
        assert_eq!(read, 0, "nothing after the close frame");
        listener.close(None).expect("close");
        while listener.read().is_ok() {}
    });
    assert_eq!(
        gw.metric("holdfast_messages_published_total{route=\"room\"}")
            .await,
        Some(3.0)
    );
    super::websocket::sockets(&gw, "room", 0.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn frames_a_publisher_may_not_send_close_the_socket_with_the_code_that_says_why() {
    let gw = Holdfast::start(CONFIG).await;
    let not_final = |opcode: u8, payload: &[u8]| client_frame(opcode, payload);
    // On the publishing route, but for the control frame: one over 125 bytes is a protocol
    // error, checked on a route whose `max_body` does not refuse it first.
    let cases: Vec<(&str, Vec<Vec<u8>>, u16, &str)> = vec![
        (
            "a text message that is not UTF-8",
            vec![masked(TEXT, b"caf\xc3")],
            1007,
            "a text frame is not UTF-8",
        ),
        (
            "a frame over the route's max_body (64 bytes)",
            vec![masked(BINARY, &[b'x'; 65])],
            1009,
            "the frame is too large",
        ),
        (
            "fragments that add up to more than max_body",
            vec![
                not_final(BINARY, &[b'x'; 40]),
                masked(CONTINUATION, &[b'x'; 40]),
            ],
            1009,
            "the frame is too large",
        ),
        (
            "a continuation with nothing to continue",
            vec![masked(CONTINUATION, b"x")],
            1002,
            "a protocol error",
        ),
        (
            "a new message while a fragmented one is open",
            vec![not_final(TEXT, b"a"), masked(TEXT, b"b")],
            1002,
            "a protocol error",
        ),
        (
            "a fragmented control frame",
            vec![not_final(PING, b"a")],
            1002,
            "a protocol error",
        ),
        (
            "a control frame over 125 bytes",
            vec![masked(PING, &[b'p'; 126])],
            1002,
            "a protocol error",
        ),
        (
            "an unmasked frame",
            vec![vec![0x81, 0x01, b'x']],
            1002,
            "client frames must be masked",
        ),
    ];
    for (case, frames, code, reason) in cases {
        let path = if case.contains("125") {
            "/sub/bad"
        } else {
            "/room/bad"
        };
        let closed = tokio::task::block_in_place(|| {
            let mut tcp = raw_socket(&gw, path);
            for frame in &frames {
                send(&mut tcp, frame);
            }
            close_frame(&mut tcp)
        });
        assert_eq!((closed.0, closed.1.as_str()), (code, reason), "{case}");
    }
    // Nothing of it was published.
    assert_eq!(
        gw.metric("holdfast_messages_published_total{route=\"room\"}")
            .await,
        None
    );
    super::websocket::sockets(&gw, "room", 0.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_message_counts_against_the_routes_rate_limit() {
    let gw = Holdfast::start(CONFIG).await;
    let (code, reason, sent) = tokio::task::block_in_place(|| {
        // The handshake counts, then each message: three a minute at most.
        let mut tcp = raw_socket(&gw, "/capped/c");
        for sent in 1..=5 {
            send(&mut tcp, &masked(TEXT, b"hi"));
            let (first, payload) = server_frame(&mut tcp);
            if first == 0x88 {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return (
                    code,
                    String::from_utf8_lossy(&payload[2..]).into_owned(),
                    sent,
                );
            }
            assert_eq!((first, payload), (0x81, b"hi".to_vec()));
        }
        panic!("five messages were all published under a limit of three a minute");
    });
    assert_eq!(code, 1008);
    assert!(
        reason.starts_with("rate limit `frames` exceeded; retry in "),
        "{reason}"
    );
    assert_eq!(
        gw.metric("holdfast_messages_published_total{route=\"capped\"}")
            .await,
        Some(f64::from(sent - 1))
    );
    assert_eq!(
        gw.metric("holdfast_ratelimit_rejections_total{limit=\"frames\",route=\"capped\"}")
            .await,
        Some(1.0)
    );
}

#[test]
fn publish_without_websocket_is_refused_at_load() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("c.yaml");
    std::fs::write(
        &file,
        "routes:\n  - name: r\n    longpoll: { channel: c, subscribe: [sse], publish: true, max_lag: 0 }\n",
    )
    .expect("write");
    let file = file.display().to_string();
    let (code, _, stderr) = run_holdfast(&["check", &file]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!(
            "{file}:3:47: routes[0].longpoll.publish: lets WebSocket subscribers publish, but `subscribe` leaves out websocket"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:3:62: routes[0].longpoll.max_lag: must be more than 0 bytes"
        )),
        "{stderr}"
    );
}
