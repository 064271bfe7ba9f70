//! WebSocket subscribers on `longpoll` routes: a frame per message (raw, or the JSON envelope
//! with its cursor), resume by `?cursor=`, pings, and the handshake's and frames' refusals with
//! the close codes that say why — checked with raw sockets — plus Python's `websockets`.

use super::streams::{publish, subscribed};
use holdfast_tests::Holdfast;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tungstenite::Message as Frame;

const CONFIG: &str = r#"
server: { shutdown_grace: 2s, watch_interval: 0s }
routes:
  - { name: sub, match: { path: "/sub/{ch}", methods: [GET] }, longpoll: { channel: "{ch}", keepalive: 300ms } }
  - { name: env, match: { path: "/env/{ch}", methods: [GET] }, longpoll: { channel: "{ch}", format: envelope } }
  - { name: pub, match: { path: "/pub/{ch}", methods: [POST] }, publish: { channel: "{ch}" } }
"#;

pub type Socket = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

pub fn connect(gw: &Holdfast, path: &str) -> Socket {
    let url = format!("ws://{}{path}", gw.addr);
    let (mut socket, response) = tokio::task::block_in_place(|| tungstenite::connect(&url))
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    assert_eq!(response.status(), 101);
    if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = socket.get_mut() {
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
    }
    socket
}

/// The next data frame (pings are answered by tungstenite as they come).
pub fn next_data(socket: &mut Socket) -> Frame {
    loop {
        let frame = tokio::task::block_in_place(|| socket.read()).expect("a frame");
        if matches!(frame, Frame::Text(_) | Frame::Binary(_)) {
            return frame;
        }
    }
}

pub async fn sockets(gw: &Holdfast, route: &str, count: f64) {
    subscribed(gw, route, "websocket", count).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_socket_gets_each_message_as_a_frame_and_resumes_by_cursor() {
    let gw = Holdfast::start(CONFIG).await;
    let client = reqwest::Client::new();
    let mut raw = connect(&gw, "/sub/a");
    let mut enveloped = connect(&gw, "/env/a");
    sockets(&gw, "sub", 1.0).await;
    sockets(&gw, "env", 1.0).await;

    let one = publish(&client, &gw, "a", &b"one"[..]).await;
    let two = publish(&client, &gw, "a", &b"\xff\xfe"[..]).await;
    assert_eq!(next_data(&mut raw), Frame::text("one"));
    assert_eq!(next_data(&mut raw), Frame::binary(&b"\xff\xfe"[..]));
    let first: Value =
        serde_json::from_str(next_data(&mut enveloped).to_text().expect("text")).expect("json");
    assert_eq!(
        first,
        json!({"id": one, "cursor": one, "content_type": null, "data": "one"})
    );
    let second: Value =
        serde_json::from_str(next_data(&mut enveloped).to_text().expect("text")).expect("json");
    assert_eq!(second["cursor"], two.as_str());

    // Quiet: pings every keep-alive, answered by the client; the socket stays.
    tokio::task::block_in_place(|| loop {
        if let Frame::Ping(_) = raw.read().expect("a ping") {
            break;
        }
    });

    // The client closes: a clean closing handshake, and the slot is freed.
    tokio::task::block_in_place(|| {
        enveloped.close(None).expect("close");
        while enveloped.read().is_ok() {}
    });
    sockets(&gw, "env", 0.0).await;

    // Missed while away: `?cursor=` resumes with exactly those.
    let three = publish(&client, &gw, "a", &b"three"[..]).await;
    let mut again = connect(&gw, &format!("/env/a?cursor={two}"));
    let resumed: Value =
        serde_json::from_str(next_data(&mut again).to_text().expect("text")).expect("json");
    assert_eq!(
        (resumed["cursor"].as_str(), &resumed["data"]),
        (Some(&*three), &json!("three"))
    );
    assert_eq!(
        gw.metric("holdfast_messages_delivered_total{route=\"env\",transport=\"websocket\"}")
            .await,
        Some(3.0)
    );
}

/// The raw handshake for `path`, with `headers` in place of the usual ones.
pub fn handshake(gw: &Holdfast, path: &str, headers: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(gw.addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(tcp, "GET {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").expect("write");
    tcp
}

pub const GOOD: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// A raw WebSocket on `path`, its handshake answered with 101.
pub fn raw_socket(gw: &Holdfast, path: &str) -> TcpStream {
    let mut tcp = handshake(gw, path, GOOD);
    let answer = read_until(&mut tcp, b"\r\n\r\n");
    assert!(
        answer.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    tcp
}

/// Reads until `end` is in what was read.
pub fn read_until(tcp: &mut TcpStream, end: &[u8]) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(end.len()).any(|w| w == end) {
        let n = tcp.read(&mut buf).expect("read");
        assert!(
            n > 0,
            "closed before {end:?}: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    seen
}

/// A masked, final client frame.
pub fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    client_frame(0x80 | opcode, payload)
}

/// A masked client frame whose first byte (FIN, opcode) is `first`.
pub fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![first];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | u8::try_from(n).expect("small")),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&u16::try_from(n).expect("medium").to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// The next frame the server sends: its first byte (FIN, opcode) and payload.
pub fn server_frame(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).expect("a frame");
    assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
    let length = match head[1] & 0x7f {
        126 => {
            let mut extended = [0u8; 2];
            tcp.read_exact(&mut extended).expect("its length");
            usize::from(u16::from_be_bytes(extended))
        }
        127 => {
            let mut extended = [0u8; 8];
            tcp.read_exact(&mut extended).expect("its length");
            usize::try_from(u64::from_be_bytes(extended)).expect("a length")
        }
        short => usize::from(short),
    };
    let mut payload = vec![0u8; length];
    tcp.read_exact(&mut payload).expect("its payload");
    (head[0], payload)
}

/// The close frame the server sends next (after the handshake's answer): its code and reason.
pub fn close_frame(tcp: &mut TcpStream) -> (u16, String) {
    let (first, payload) = server_frame(tcp);
    assert_eq!(first, 0x88, "a final close frame");
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    (code, String::from_utf8_lossy(&payload[2..]).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_handshakes_get_400_and_bad_frames_the_close_code_that_says_why() {
    let gw = Holdfast::start(CONFIG).await;
    let cases = [
        (
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n",
            "`Sec-WebSocket-Key` must be 16 random bytes in base64 (RFC 6455 §4.1)",
        ),
        (
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n",
            "`Sec-WebSocket-Version` must be 13",
        ),
        (
            "Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
            "a WebSocket handshake needs `Connection: Upgrade`",
        ),
    ];
    for (headers, detail) in cases {
        let answer = tokio::task::block_in_place(|| {
            let mut tcp = handshake(&gw, "/sub/h", headers);
            String::from_utf8_lossy(&read_until(&mut tcp, b"\"}")).into_owned()
        });
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert!(
            answer.contains("content-type: application/problem+json\r\n"),
            "{answer}"
        );
        let body = answer.split("\r\n\r\n").nth(1).expect("a body");
        let problem: Value = serde_json::from_str(body).expect("problem");
        assert_eq!(
            problem,
            json!({"type": "urn:holdfast:problem:bad-websocket-handshake", "title": "Bad Request", "status": 400, "detail": detail})
        );
        if detail.contains("Version") {
            assert!(answer.contains("sec-websocket-version: 13\r\n"), "{answer}");
        }
    }

    let frames: [(Vec<u8>, u16, &str); 3] = [
        // A client frame must be masked.
        (vec![0x89, 0x00], 1002, "client frames must be masked"),
        // Larger than a subscriber may send.
        (masked(0x2, &[7u8; 5000]), 1009, "the frame is too large"),
        // Subscribers do not publish.
        (
            masked(0x1, b"hello"),
            1008,
            "this route does not take messages from subscribers",
        ),
    ];
    for (frame, code, reason) in frames {
        let (got, why) = tokio::task::block_in_place(|| {
            let mut tcp = handshake(&gw, "/sub/h", GOOD);
            let answer = read_until(&mut tcp, b"\r\n\r\n");
            assert!(answer.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
            assert!(String::from_utf8_lossy(&answer)
                .contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
            tcp.write_all(&frame).expect("frame");
            close_frame(&mut tcp)
        });
        assert_eq!((got, why.as_str()), (code, reason));
    }
    sockets(&gw, "sub", 0.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn at_shutdown_a_socket_is_closed_with_1001() {
    let mut gw = Holdfast::start(CONFIG).await;
    let mut tcp = tokio::task::block_in_place(|| {
        let mut tcp = handshake(&gw, "/sub/s", GOOD);
        read_until(&mut tcp, b"\r\n\r\n");
        tcp
    });
    sockets(&gw, "sub", 1.0).await;
    gw.signal(15);
    let (code, reason) = tokio::task::block_in_place(|| close_frame(&mut tcp));
    assert_eq!(
        (code, reason.as_str()),
        (
            1001,
            "the gateway is shutting down; reconnect with your last cursor"
        )
    );
    assert_eq!(gw.wait_exit(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn pythons_websockets_client_gets_every_message() {
    let gw = Holdfast::start(CONFIG).await;
    let script = format!(
        r#"
import asyncio, json, websockets
async def main():
    async with websockets.connect("ws://{}/env/p") as ws:
        for _ in range(3):
            print(json.loads(await asyncio.wait_for(ws.recv(), 10))["data"], flush=True)
asyncio.run(main())
"#,
        gw.addr
    );
    let child = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 (and `websockets`: scripts/deps --test installs it)");
    sockets(&gw, "env", 1.0).await;
    let client = reqwest::Client::new();
    for body in [&b"a"[..], b"b", b"c"] {
        publish(&client, &gw, "p", body).await;
    }
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("python3 finished")
        .expect("output");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "a\nb\nc\n");
}
