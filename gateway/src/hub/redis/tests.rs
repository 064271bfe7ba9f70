//! The Redis backplane against a real `redis-server` that each test starts on a free loopback
//! port: two hub instances on one Redis (wake-ups, cursors across instances, queue mode exactly
//! once), Redis dying and coming back, and the 15,000-waiter fan-out through one read.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::super::shards::lock;
use super::super::tests::{after, bodies, config, in_ms, last_cursor, queue_exactly_once};
use super::super::*;
use conf::{ChannelMode, StartAt};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` child process, killed on drop (so also when a test panics).
struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    fn start() -> Self {
        Self::start_on(holdfast_tests::free_port())
    }

    fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot run redis-server ({error}); the Redis tests need it: apt-get install redis-server")
            });
        let mut server = Self {
            child: Some(child),
            port,
        };
        server.wait_for_ping();
        server
    }

    fn wait_for_ping(&mut self) {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < until {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let mut answer = [0u8; 7];
                let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream.read_exact(&mut answer).is_ok()
                    && &answer == b"+PONG\r\n"
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn redis_hub(server: &RedisServer, edit: impl FnOnce(&mut conf::Config)) -> Hub {
    let config = config(|c| {
        c.backplane = conf::Backplane::Redis(conf::RedisBackplane {
            prefix: "test:".into(),
            ..conf::RedisBackplane::one(server.url())
        });
        edit(c);
    });
    Hub::start(&config).unwrap()
}

async fn wait_until_up(hub: &Hub, want: bool, within: Duration) {
    let mut changes = hub.up_changes();
    let waited = tokio::time::timeout(within, changes.wait_for(|up| *up == want)).await;
    assert!(
        waited.is_ok(),
        "the hub did not become {} within {within:?}",
        if want { "up" } else { "down" }
    );
}

async fn two_hubs(server: &RedisServer, edit: impl Fn(&mut conf::Config)) -> (Hub, Hub) {
    let a = redis_hub(server, &edit);
    let b = redis_hub(server, &edit);
    wait_until_up(&a, true, Duration::from_secs(5)).await;
    wait_until_up(&b, true, Duration::from_secs(5)).await;
    (a, b)
}

async fn publish(hub: &Hub, key: &ChannelKey, body: &str) -> Published {
    hub.publish(key, Bytes::from(body.to_owned()), Some("text/plain"))
        .await
        .unwrap()
}

fn broadcast(name: &str) -> ChannelKey {
    ChannelKey::new(ChannelMode::Broadcast, name)
}

fn queue(name: &str) -> ChannelKey {
    ChannelKey::new(ChannelMode::Queue, name)
}

/// Waits until `hub` holds `n` polls on `key` (they are registered for wake-ups).
async fn until_held(hub: &Hub, key: &ChannelKey, n: usize) {
    let Backend::Redis(redis) = &hub.inner.backend else {
        panic!("not a redis hub")
    };
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        // The table and this look hold one reference each; every held poll one more.
        let held = redis
            .local
            .get(key)
            .map_or(0, |local| Arc::strong_count(&local) - 2);
        if held >= n {
            // Registered and past their first read: give the last ones a moment to be waiting.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{n} polls were not held in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_on_one_instance_wakes_a_held_poll_on_another() {
    let server = RedisServer::start();
    let (a, b) = two_hubs(&server, |_| {}).await;
    let key = broadcast("updates");
    // No cursor: the poll starts where its first read finds the stream, and says when that
    // is done; a publish from then on must reach it.
    let (told, waiting) = tokio::sync::oneshot::channel();
    let held = tokio::spawn({
        let (b, key) = (b.clone(), key.clone());
        async move {
            let mut told = Some(told);
            let mut tell = || {
                if let Some(told) = told.take() {
                    let _ = told.send(());
                }
            };
            let on_waiting = OnWaiting::new(&mut tell);
            b.wait(&key, after(None, 1), in_ms(5_000), on_waiting).await
        }
    });
    waiting.await.unwrap();
    let published = a
        .publish(
            &key,
            Bytes::from_static(b"{\"n\":1}"),
            Some("application/json"),
        )
        .await
        .unwrap();
    assert_eq!(published.delivered_to, 2, "two instances listen");
    let outcome = held.await.unwrap().unwrap();
    let PollOutcome::Messages { messages, cursor } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(*cursor, published.cursor);
    assert_eq!(&messages[0].body[..], b"{\"n\":1}");
    assert_eq!(
        messages[0].content_type.as_deref(),
        Some("application/json")
    );
    // Timeout keeps the cursor.
    let quiet = b
        .poll(&key, after(Some(*cursor), 1), in_ms(100))
        .await
        .unwrap();
    assert_eq!(
        quiet,
        PollOutcome::Timeout {
            cursor: Some(*cursor)
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_from_the_future_is_refused_and_the_next_message_still_arrives() {
    let server = RedisServer::start();
    let (a, b) = two_hubs(&server, |_| {}).await;
    let key = broadcast("future");
    let first = publish(&a, &key, "one").await.cursor;
    let far = Cursor::new(99_999_999_999_999, 0);
    assert_eq!(
        b.poll(&key, after(Some(far), 1), in_ms(1_000)).await,
        Err(HubError::CursorAhead {
            cursor: far,
            newest: Some(first)
        })
    );
    let next_seq = Cursor::new(first.ms, first.seq + 1);
    assert!(matches!(
        a.poll(&key, after(Some(next_seq), 1), in_ms(1_000)).await,
        Err(HubError::CursorAhead { .. })
    ));
    // The cursor just published on A is no cursor from the future on B.
    assert_eq!(
        b.poll(&key, after(Some(first), 1), in_ms(50)).await,
        Ok(PollOutcome::Timeout {
            cursor: Some(first)
        })
    );
    let held = tokio::spawn({
        let (b, key) = (b.clone(), key.clone());
        async move { b.poll(&key, after(Some(first), 1), in_ms(5_000)).await }
    });
    until_held(&b, &key, 1).await;
    publish(&a, &key, "two").await;
    assert_eq!(bodies(&held.await.unwrap().unwrap()), ["two"]);

    // No stream (new, or expired): Redis' clock decides.
    let earlier = Cursor::new(super::super::tests::now_ms() - 60_000, 3);
    assert_eq!(
        a.poll(&broadcast("expired"), after(Some(earlier), 1), in_ms(50))
            .await,
        Ok(PollOutcome::Timeout {
            cursor: Some(earlier)
        })
    );
    assert_eq!(
        a.poll(&broadcast("fresh"), after(Some(far), 1), in_ms(50))
            .await,
        Err(HubError::CursorAhead {
            cursor: far,
            newest: None
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_from_one_instance_resumes_on_another() {
    let server = RedisServer::start();
    let (a, b) = two_hubs(&server, |c| c.channels.buffer_messages = 4).await;
    let key = broadcast("resume");
    let seen = publish(&a, &key, "m0").await.cursor;
    let mut ids = Vec::new();
    for i in 1..=4 {
        ids.push(publish(&a, &key, &format!("m{i}")).await.cursor);
    }
    let on_a = a
        .poll(&key, after(Some(seen), 2), in_ms(1_000))
        .await
        .unwrap();
    assert_eq!(bodies(&on_a), ["m1", "m2"]);
    let on_b = b
        .poll(&key, after(Some(last_cursor(&on_a)), 10), in_ms(1_000))
        .await
        .unwrap();
    assert_eq!(bodies(&on_b), ["m3", "m4"]);
    // The buffer holds 4: m0 was trimmed. Its own id lost nothing after it...
    let boundary = b
        .poll(&key, after(Some(seen), 10), in_ms(1_000))
        .await
        .unwrap();
    assert_eq!(bodies(&boundary), ["m1", "m2", "m3", "m4"]);
    // ...but once m1 is trimmed too, m0's cursor is gone, naming the oldest still held.
    let m5 = publish(&b, &key, "m5").await.cursor;
    let gone = a
        .poll(&key, after(Some(seen), 10), in_ms(1_000))
        .await
        .unwrap();
    assert_eq!(
        gone,
        PollOutcome::Gone {
            oldest: ids[1].pred()
        }
    );
    let replay = b
        .poll(&key, after(Some(ids[1].pred()), 10), in_ms(1_000))
        .await
        .unwrap();
    assert_eq!(bodies(&replay), ["m2", "m3", "m4", "m5"]);
    let oldest = PollRequest {
        cursor: None,
        start: StartAt::Oldest,
        limit: 10,
    };
    assert_eq!(
        bodies(&a.poll(&key, oldest, in_ms(1_000)).await.unwrap()),
        ["m2", "m3", "m4", "m5"]
    );
    let newest = a.poll(&key, after(None, 10), in_ms(100)).await.unwrap();
    assert_eq!(newest, PollOutcome::Timeout { cursor: Some(m5) });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_age_out_when_the_next_is_published() {
    let server = RedisServer::start();
    let (a, b) = two_hubs(&server, |c| {
        c.channels.buffer_age = conf::Duration::from_millis(200)
    })
    .await;
    let key = broadcast("aging");
    let old = publish(&a, &key, "old").await.cursor;
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(&a, &key, "new").await;
    let oldest = PollRequest {
        cursor: None,
        start: StartAt::Oldest,
        limit: 10,
    };
    assert_eq!(
        bodies(&b.poll(&key, oldest, in_ms(1_000)).await.unwrap()),
        ["new"]
    );
    let gone = b
        .poll(&key, after(Some(old.pred()), 10), in_ms(1_000))
        .await
        .unwrap();
    assert!(matches!(gone, PollOutcome::Gone { .. }), "{gone:?}");
    let fine = b
        .poll(&key, after(Some(old), 10), in_ms(1_000))
        .await
        .unwrap();
    assert_eq!(bodies(&fine), ["new"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_mode_across_two_instances_delivers_each_message_once() {
    let server = RedisServer::start();
    let (a, b) = two_hubs(&server, |c| c.channels.queue_max_messages = 100).await;
    queue_exactly_once(&[a.clone(), b.clone()], &a, &queue("work"), 1_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_queue_basics() {
    let server = RedisServer::start();
    let (a, b) = two_hubs(&server, |c| c.channels.queue_max_messages = 3).await;
    let key = queue("jobs");
    for i in 0..3 {
        publish(&a, &key, &format!("q{i}")).await;
    }
    let full = a
        .publish(&key, Bytes::from_static(b"q3"), None)
        .await
        .unwrap_err();
    assert_eq!(full, HubError::QueueFull { max: 3 });
    assert_eq!(
        bodies(&b.poll(&key, after(None, 2), in_ms(1_000)).await.unwrap()),
        ["q0", "q1"]
    );
    assert_eq!(
        bodies(&a.poll(&key, after(None, 2), in_ms(1_000)).await.unwrap()),
        ["q2"]
    );
    // A message handed to a poll that is dropped unread goes back to the head.
    let mut held = Box::pin(b.poll(&key, after(None, 1), in_ms(5_000)));
    assert!(tokio::time::timeout(Duration::from_millis(100), &mut held)
        .await
        .is_err());
    publish(&a, &key, "first").await;
    // Wait until B's dispatcher has popped it into the held poll's oneshot, then drop that poll.
    let Backend::Redis(redis) = &b.inner.backend else {
        unreachable!()
    };
    let until = Instant::now() + Duration::from_secs(5);
    while lock(&redis.local.get(&key).expect("local channel").queue)
        .waiters
        .front_limit()
        .is_some()
    {
        assert!(
            Instant::now() < until,
            "the message never reached the held poll"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(held);
    // The give-back runs on a spawned task (`Drop` cannot wait): let it land in Redis before
    // publishing the next message, or the two race for the list.
    let list = redis.keys.data(&key);
    let mut conn = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let queued: usize = ::redis::cmd("LLEN")
            .arg(&list)
            .query_async(&mut conn)
            .await
            .unwrap();
        if queued == 1 {
            break;
        }
        assert!(
            Instant::now() < until,
            "the dropped poll's message never went back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    publish(&a, &key, "second").await;
    let next = a.poll(&key, after(None, 10), in_ms(1_000)).await.unwrap();
    assert_eq!(bodies(&next), ["first", "second"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_fast_and_recovers_by_itself() {
    let mut server = RedisServer::start();
    let port = server.port;
    let (a, b) = two_hubs(&server, |_| {}).await;
    let key = broadcast("fragile");
    let cursor = publish(&a, &key, "before").await.cursor;
    let held = tokio::spawn({
        let (b, key) = (b.clone(), key.clone());
        async move {
            let deadline = in_ms(1_500);
            let outcome = b.poll(&key, after(Some(cursor), 1), deadline).await;
            (outcome, Instant::now().saturating_duration_since(deadline))
        }
    });
    until_held(&b, &key, 1).await;

    server.kill();
    wait_until_up(&a, false, Duration::from_secs(3)).await;
    wait_until_up(&b, false, Duration::from_secs(3)).await;
    let started = Instant::now();
    let error = a
        .publish(&key, Bytes::from_static(b"lost"), None)
        .await
        .unwrap_err();
    assert_eq!(error.status(), 503, "{error}");
    let error = b
        .poll(&key, after(Some(cursor), 1), in_ms(5_000))
        .await
        .unwrap_err();
    assert_eq!(error.status(), 503, "{error}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "failing took {:?}",
        started.elapsed()
    );
    let (outcome, late) = held.await.unwrap();
    assert_eq!(
        outcome,
        Ok(PollOutcome::Timeout {
            cursor: Some(cursor)
        })
    );
    assert!(
        late < Duration::from_millis(300),
        "the held poll ended {late:?} after its deadline"
    );

    let _server = RedisServer::start_on(port);
    wait_until_up(&a, true, Duration::from_secs(10)).await;
    wait_until_up(&b, true, Duration::from_secs(10)).await;
    // A fresh Redis (no persistence): the old cursor waits for what comes next.
    let held = tokio::spawn({
        let (b, key) = (b.clone(), key.clone());
        async move { b.poll(&key, after(None, 1), in_ms(5_000)).await }
    });
    until_held(&b, &key, 1).await;
    publish(&a, &key, "after").await;
    assert_eq!(bodies(&held.await.unwrap().unwrap()), ["after"]);
}

#[tokio::test]
async fn a_hub_starts_while_redis_is_down() {
    let port = holdfast_tests::free_port();
    let hub = {
        let config = config(|c| {
            c.backplane = conf::Backplane::Redis(conf::RedisBackplane {
                prefix: "test:".into(),
                ..conf::RedisBackplane::one(format!("redis://127.0.0.1:{port}/"))
            });
        });
        Hub::start(&config).unwrap()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!hub.is_up());
    let error = hub
        .poll(&broadcast("x"), after(None, 1), in_ms(1_000))
        .await
        .unwrap_err();
    assert_eq!(error.status(), 503);
    let _server = RedisServer::start_on(port);
    wait_until_up(&hub, true, Duration::from_secs(10)).await;
    publish(&hub, &broadcast("x"), "hello").await;
}

#[test]
fn a_bad_url_is_a_start_error() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let config = config(|c| {
        c.backplane = conf::Backplane::Redis(conf::RedisBackplane {
            prefix: "test:".into(),
            ..conf::RedisBackplane::one("not a url")
        });
    });
    assert!(matches!(Hub::start(&config), Err(StartError::Redis(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publish_wakes_15000_polls_held_on_another_instance() {
    const N: usize = 15_000;
    let server = RedisServer::start();
    let (a, b) = two_hubs(&server, |_| {}).await;
    let key = broadcast("crowd");
    let cursor = publish(&a, &key, "zero").await.cursor;
    let mut polls = Vec::with_capacity(N);
    for _ in 0..N {
        let (b, key) = (b.clone(), key.clone());
        polls.push(tokio::spawn(async move {
            let outcome = b
                .poll(&key, after(Some(cursor), 1), in_ms(60_000))
                .await
                .unwrap();
            (outcome, Instant::now())
        }));
    }
    until_held(&b, &key, N).await;
    let start = Instant::now();
    publish(&a, &key, "all").await;
    let mut latest = start;
    for poll in polls {
        let (outcome, at) = poll.await.unwrap();
        assert_eq!(bodies(&outcome), ["all"]);
        latest = latest.max(at);
    }
    println!(
        "one publish on A woke {N} polls held on B in {:?}",
        latest - start
    );
}
