//! A subscriber that stops reading costs a bounded amount: once more than the route's `max_lag`
//! bytes wait behind its unfinished write it is closed (a WebSocket with 1008 and the reason
//! when the frame can still go out) and counted, while the subscribers that read get every
//! message, in order. One that vanishes in the middle of a write frees its slot and disturbs
//! nobody; on a queue, what a stuck subscriber could not take goes to another.

use super::streams::{publish, subscribed, Stream};
use super::websocket::{connect, next_data, raw_socket};
use holdfast_tests::{eventually, Holdfast};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tungstenite::Message as Frame;

const CONFIG: &str = r#"
server: { shutdown_grace: 2s, watch_interval: 0s }
routes:
  - { name: sub, match: { path: "/sub/{ch}", methods: [GET] }, longpoll: { channel: "{ch}", max_lag: 256KiB } }
  - { name: patient, match: { path: "/patient/{ch}", methods: [GET] }, longpoll: { channel: "{ch}", max_lag: 64MiB } }
  - { name: pub, match: { path: "/pub/{ch}", methods: [POST] }, publish: { channel: "{ch}" } }
"#;

/// Each message: its number, then filler to 16 KiB.
fn message(number: usize) -> String {
    let mut body = format!("{number:06}:");
    body.extend(std::iter::repeat_n('x', 16 * 1024 - body.len()));
    body
}

/// An event stream on `path` that is never read (but to check it ended).
fn raw_stream(gw: &Holdfast, path: &str) -> TcpStream {
    tokio::task::block_in_place(|| {
        let mut tcp = TcpStream::connect(gw.addr).expect("connect");
        write!(
            tcp,
            "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        .expect("write");
        tcp
    })
}

/// Reads what is left on `tcp` until the server closes it.
fn read_to_close(tcp: &mut TcpStream) {
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(error) => panic!("the slow subscriber was not closed: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_that_never_reads_is_closed_and_counted_and_the_others_get_everything() {
    let gw = Holdfast::start(CONFIG).await;
    let client = reqwest::Client::new();

    // Two that never read, one per transport.
    let mut stuck_stream = raw_stream(&gw, "/sub/s");
    let mut stuck_socket = tokio::task::block_in_place(|| raw_socket(&gw, "/sub/s"));
    // One that will vanish while a write to it is stuck, long before its `max_lag`.
    let vanisher = raw_stream(&gw, "/patient/s");
    // Two that read.
    let mut stream = Stream::open(&client, &gw.url("/sub/s"), None).await;
    let mut socket = connect(&gw, "/sub/s");
    subscribed(&gw, "sub", "sse", 2.0).await;
    subscribed(&gw, "sub", "websocket", 2.0).await;
    let reader = std::thread::spawn(move || {
        let mut numbers = Vec::new();
        loop {
            match next_data(&mut socket) {
                Frame::Text(text) if text.as_str() == "end" => return numbers,
                Frame::Text(text) => numbers.push(text[..6].parse::<usize>().expect("a number")),
                other => panic!("unexpected {other:?}"),
            }
        }
    });

    // Publish until both stuck ones are closed: the kernel's buffers fill first (a few MiB on
    // loopback), then the gateway's 256 KiB.
    let slow = |transport: &str| {
        format!("holdfast_slow_subscribers_total{{route=\"sub\",transport=\"{transport}\"}}")
    };
    let mut published = 0;
    let mut read = Vec::new();
    while gw.metric(&slow("sse")).await != Some(1.0)
        || gw.metric(&slow("websocket")).await != Some(1.0)
    {
        assert!(published < 2000, "32 MiB published and not closed");
        for _ in 0..10 {
            publish(&client, &gw, "s", message(published)).await;
            published += 1;
        }
        // The stream that reads keeps up.
        while read.len() < published {
            let data = stream.next_event().await.data.expect("data");
            read.push(data[..6].parse::<usize>().expect("a number"));
        }
    }
    // The one that vanishes: by now its buffers are as full as the stuck ones' were, so a
    // write to it is pending. A reset ends that write; its slot is freed, nothing else moves.
    subscribed(&gw, "patient", "sse", 1.0).await;
    socket2::SockRef::from(&vanisher)
        .set_linger(Some(Duration::ZERO))
        .expect("linger");
    drop(vanisher);
    subscribed(&gw, "patient", "sse", 0.0).await;

    publish(&client, &gw, "s", "end").await;
    assert_eq!(stream.next_event().await.data.as_deref(), Some("end"));

    // The readers got every message, in order.
    let expected: Vec<usize> = (0..published).collect();
    assert_eq!(read, expected);
    let socket_read = tokio::task::spawn_blocking(move || reader.join().expect("the reader"))
        .await
        .expect("joined");
    assert_eq!(socket_read, expected);

    // The stuck ones were closed: what the kernel held, then the end.
    tokio::task::block_in_place(|| {
        read_to_close(&mut stuck_stream);
        read_to_close(&mut stuck_socket);
    });
    subscribed(&gw, "sub", "sse", 1.0).await;
    let patient_slow = "holdfast_slow_subscribers_total{route=\"patient\",transport=\"sse\"}";
    assert_eq!(
        gw.metric(patient_slow).await.unwrap_or(0.0),
        0.0,
        "it vanished, it was not slow"
    );
    eventually(
        Duration::from_secs(10),
        "both sockets' slots freed",
        async || {
            gw.metric("holdfast_subscribers{route=\"sub\",transport=\"websocket\"}")
                .await
                == Some(0.0)
        },
    )
    .await;
}

/// The complete events' numbers in the head-and-chunked body of an event stream, read raw.
fn numbers_in_stream(raw: &[u8]) -> Vec<usize> {
    let body_at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let mut body = Vec::new();
    let mut rest = &raw[body_at..];
    // Chunks until the data ends: a chunk cut short is an event the client never got whole.
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..line_end]).expect("a chunk size");
        let size = usize::from_str_radix(size, 16).expect("hex");
        let Some(chunk) = rest.get(line_end + 2..line_end + 2 + size) else {
            break;
        };
        body.extend_from_slice(chunk);
        rest = rest.get(line_end + 4 + size..).unwrap_or_default();
    }
    String::from_utf8_lossy(&body)
        .split("\n\n")
        .filter_map(|event| event.split_once("data: "))
        .filter_map(|(_, data)| data.get(..6)?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_queue_what_a_stuck_subscriber_could_not_take_goes_to_another() {
    let gw = Holdfast::start(
        r#"
routes:
  - { name: work, match: { path: /work, methods: [GET] }, longpoll: { channel: jobs, mode: queue, keepalive: 1s, limit: 1 } }
  - { name: pub, match: { path: "/pub/{ch}", methods: [POST] }, publish: { channel: "{ch}", mode: queue } }
"#,
    )
    .await;
    let client = reqwest::Client::new();
    let mut stuck = raw_stream(&gw, "/work");
    subscribed(&gw, "work", "sse", 1.0).await;
    let mut worker = Stream::open(&client, &gw.url("/work"), None).await;
    subscribed(&gw, "work", "sse", 2.0).await;

    // Jobs until the stuck one has a write that cannot finish for a whole keep-alive.
    let slow = "holdfast_slow_subscribers_total{route=\"work\",transport=\"sse\"}";
    let mut published = 0;
    let mut done = Vec::new();
    while gw.metric(slow).await != Some(1.0) {
        assert!(
            published < 2000,
            "32 MiB of jobs and the stuck worker still takes them"
        );
        for _ in 0..10 {
            publish(&client, &gw, "jobs", message(published)).await;
            published += 1;
        }
        // The worker that reads takes what comes its way.
        while let Ok(event) =
            tokio::time::timeout(Duration::from_millis(50), worker.next_event()).await
        {
            done.push(
                event.data.expect("data")[..6]
                    .parse::<usize>()
                    .expect("a number"),
            );
        }
    }
    publish(&client, &gw, "jobs", "end").await;
    loop {
        let data = worker.next_event().await.data.expect("data");
        if data == "end" {
            break;
        }
        done.push(data[..6].parse::<usize>().expect("a number"));
    }

    // What the stuck worker got whole, and what the other did: every job exactly once.
    let raw = tokio::task::block_in_place(|| {
        stuck
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut raw = Vec::new();
        stuck.read_to_end(&mut raw).expect("read to the close");
        raw
    });
    let mut every = numbers_in_stream(&raw);
    assert!(
        !every.is_empty(),
        "the stuck worker took jobs before it stuck"
    );
    every.extend(done);
    every.sort_unstable();
    assert_eq!(every, (0..published).collect::<Vec<_>>());
}
