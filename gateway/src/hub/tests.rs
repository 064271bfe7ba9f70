//! The hub on the memory backplane, through its public API: wake-ups, timeouts, cursors, Gone,
//! buffer bounds, queue mode (exactly-once under cancellation), the 15,000-waiter fan-out, and
//! bad input.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::name::ChannelNameError;
use super::*;
use conf::{ChannelMode, StartAt};
use std::collections::HashMap;
use std::time::Duration;

pub(crate) fn config(edit: impl FnOnce(&mut conf::Config)) -> conf::Config {
    let mut config = conf::Config::default();
    edit(&mut config);
    config
}

pub(crate) fn broadcast(name: &str) -> ChannelKey {
    ChannelKey::new(ChannelMode::Broadcast, name)
}

pub(crate) fn queue(name: &str) -> ChannelKey {
    ChannelKey::new(ChannelMode::Queue, name)
}

pub(crate) fn after(cursor: Option<Cursor>, limit: usize) -> PollRequest {
    PollRequest {
        cursor,
        start: StartAt::Newest,
        limit,
    }
}

pub(crate) fn in_ms(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

pub(crate) fn bodies(outcome: &PollOutcome) -> Vec<String> {
    match outcome {
        PollOutcome::Messages { messages, .. } => messages
            .iter()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect(),
        other => panic!("expected messages, got {other:?}"),
    }
}

pub(crate) fn last_cursor(outcome: &PollOutcome) -> Cursor {
    match outcome {
        PollOutcome::Messages { cursor, messages } => {
            assert_eq!(messages.last().map(|m| m.id), Some(*cursor));
            *cursor
        }
        other => panic!("expected messages, got {other:?}"),
    }
}

/// A small deterministic generator, so the cancellation pattern is random but repeatable.
pub(crate) struct XorShift(pub u64);

impl XorShift {
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn memory_hub(edit: impl FnOnce(&mut conf::Config)) -> Hub {
    Hub::start(&config(edit)).unwrap()
}

async fn publish(hub: &Hub, key: &ChannelKey, body: &str) -> Published {
    hub.publish(key, Bytes::from(body.to_owned()), Some("text/plain"))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_publish_wakes_a_held_poll() {
    let hub = memory_hub(|_| {});
    let key = broadcast("updates");
    let held = tokio::spawn({
        let (hub, key) = (hub.clone(), key.clone());
        async move { hub.poll(&key, after(None, 1), in_ms(5_000)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let published = hub
        .publish(
            &key,
            Bytes::from_static(b"{\"a\":1}"),
            Some("application/json"),
        )
        .await
        .unwrap();
    assert_eq!(published.delivered_to, 1);
    let outcome = held.await.unwrap().unwrap();
    let PollOutcome::Messages { messages, cursor } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(*cursor, published.cursor);
    assert_eq!(&messages[0].body[..], b"{\"a\":1}");
    assert_eq!(
        messages[0].content_type.as_deref(),
        Some("application/json")
    );
    assert!(messages[0].published_at <= std::time::SystemTime::now());
    assert!(hub.is_up());
    assert_eq!(hub.backplane(), "memory");
}

#[tokio::test]
async fn a_timeout_keeps_the_cursor() {
    let hub = memory_hub(|_| {});
    let key = broadcast("quiet");
    let first = publish(&hub, &key, "one").await.cursor;
    let outcome = hub
        .poll(&key, after(Some(first), 1), in_ms(50))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        PollOutcome::Timeout {
            cursor: Some(first)
        }
    );
    // Without a cursor the timeout names where the poll waited from, so the next poll loses
    // nothing published in between.
    let outcome = hub.poll(&key, after(None, 1), in_ms(50)).await.unwrap();
    assert_eq!(
        outcome,
        PollOutcome::Timeout {
            cursor: Some(first)
        }
    );
    // A deadline already past still answers (with data if there is some).
    let outcome = hub
        .poll(&key, after(Some(first), 1), Instant::now())
        .await
        .unwrap();
    assert_eq!(
        outcome,
        PollOutcome::Timeout {
            cursor: Some(first)
        }
    );
}

#[tokio::test]
async fn a_cursor_resumes_with_exactly_the_missed_messages() {
    let hub = memory_hub(|_| {});
    let key = broadcast("resume");
    let seen = publish(&hub, &key, "m0").await.cursor;
    for i in 1..=5 {
        publish(&hub, &key, &format!("m{i}")).await;
    }
    let batch = hub
        .poll(&key, after(Some(seen), 3), in_ms(1_000))
        .await
        .unwrap();
    assert_eq!(bodies(&batch), ["m1", "m2", "m3"]);
    let rest = hub
        .poll(&key, after(Some(last_cursor(&batch)), 10), in_ms(1_000))
        .await
        .unwrap();
    assert_eq!(bodies(&rest), ["m4", "m5"]);
    let none = hub
        .poll(&key, after(Some(last_cursor(&rest)), 10), in_ms(30))
        .await
        .unwrap();
    assert!(matches!(none, PollOutcome::Timeout { .. }));
}

/// The wall clock in ms, as cursors count it.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[tokio::test]
async fn a_cursor_from_the_future_is_refused_and_the_next_message_still_arrives() {
    let hub = memory_hub(|_| {});
    let key = broadcast("future");
    let first = publish(&hub, &key, "one").await.cursor;
    let far = Cursor::new(99_999_999_999_999, 0);
    assert_eq!(
        hub.poll(&key, after(Some(far), 1), in_ms(1_000)).await,
        Err(HubError::CursorAhead {
            cursor: far,
            newest: Some(first)
        })
    );
    // Even one past the newest id: the next message would get a smaller one.
    let next_seq = Cursor::new(first.ms, first.seq + 1);
    assert!(matches!(
        hub.poll(&key, after(Some(next_seq), 1), in_ms(1_000)).await,
        Err(HubError::CursorAhead { .. })
    ));
    let held = tokio::spawn({
        let (hub, key) = (hub.clone(), key.clone());
        async move { hub.poll(&key, after(Some(first), 1), in_ms(5_000)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    publish(&hub, &key, "two").await;
    assert_eq!(bodies(&held.await.unwrap().unwrap()), ["two"]);
}

#[tokio::test]
async fn on_a_channel_without_history_only_a_cursor_past_the_clock_is_ahead() {
    let hub = memory_hub(|_| {});
    // A channel this process never saw (as after a restart): a cursor from the last run waits.
    let earlier = Cursor::new(now_ms() - 60_000, 3);
    let outcome = hub
        .poll(&broadcast("restarted"), after(Some(earlier), 1), in_ms(30))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        PollOutcome::Timeout {
            cursor: Some(earlier)
        }
    );
    let far = Cursor::new(now_ms() + 60_000, 0);
    assert_eq!(
        hub.poll(&broadcast("fresh"), after(Some(far), 1), in_ms(30))
            .await,
        Err(HubError::CursorAhead {
            cursor: far,
            newest: None
        })
    );
    // Within the clock's slack the cursor is taken; once a message shows it was ahead of the
    // channel, the held poll is refused rather than left to miss that message.
    let key = broadcast("slack");
    let soon = Cursor::new(now_ms() + 900, 0);
    let held = tokio::spawn({
        let (hub, key) = (hub.clone(), key.clone());
        async move { hub.poll(&key, after(Some(soon), 1), in_ms(5_000)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let published = publish(&hub, &key, "one").await.cursor;
    assert!(published < soon);
    assert_eq!(
        held.await.unwrap(),
        Err(HubError::CursorAhead {
            cursor: soon,
            newest: Some(published)
        })
    );
}

#[tokio::test]
async fn a_cursor_older_than_the_buffer_is_gone_naming_the_oldest() {
    let hub = memory_hub(|c| c.channels.buffer_messages = 3);
    let key = broadcast("small");
    let early = publish(&hub, &key, "m0").await.cursor;
    let mut ids = Vec::new();
    for i in 1..=5 {
        ids.push(publish(&hub, &key, &format!("m{i}")).await.cursor);
    }
    let outcome = hub
        .poll(&key, after(Some(early), 10), in_ms(1_000))
        .await
        .unwrap();
    let PollOutcome::Gone { oldest } = outcome else {
        panic!("expected Gone, got {outcome:?}")
    };
    assert_eq!(oldest, ids[2].pred(), "just before m3, the oldest held");
    let replay = hub
        .poll(&key, after(Some(oldest), 10), in_ms(1_000))
        .await
        .unwrap();
    assert_eq!(bodies(&replay), ["m3", "m4", "m5"]);
    // The id of the last dropped message lost nothing after it.
    let boundary = hub
        .poll(&key, after(Some(ids[1]), 10), in_ms(1_000))
        .await
        .unwrap();
    assert_eq!(bodies(&boundary), ["m3", "m4", "m5"]);
}

#[tokio::test]
async fn buffers_are_bounded_by_bytes_and_age() {
    let hub = memory_hub(|c| {
        c.channels.buffer_bytes = conf::ByteSize(10);
        c.channels.buffer_age = conf::Duration::from_millis(200);
    });
    let key = broadcast("bounded");
    for body in ["aaaa", "bbbb", "cccc"] {
        publish(&hub, &key, body).await;
    }
    let oldest = PollRequest {
        cursor: None,
        start: StartAt::Oldest,
        limit: 10,
    };
    // 10 bytes hold two 4-byte bodies (the 10-byte content type counts too: one message).
    let held = hub.poll(&key, oldest, in_ms(100)).await.unwrap();
    assert_eq!(bodies(&held), ["cccc"]);
    let before = last_cursor(&held).pred();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let aged = hub.poll(&key, oldest, in_ms(30)).await.unwrap();
    assert!(matches!(aged, PollOutcome::Timeout { .. }), "{aged:?}");
    let gone = hub
        .poll(&key, after(Some(before), 10), in_ms(30))
        .await
        .unwrap();
    assert!(matches!(gone, PollOutcome::Gone { .. }), "{gone:?}");
}

#[tokio::test]
async fn start_oldest_replays_the_buffer_and_newest_waits() {
    let hub = memory_hub(|_| {});
    let key = broadcast("replay");
    for i in 0..3 {
        publish(&hub, &key, &format!("m{i}")).await;
    }
    let replay = hub
        .poll(
            &key,
            PollRequest {
                cursor: None,
                start: StartAt::Oldest,
                limit: 10,
            },
            in_ms(100),
        )
        .await;
    assert_eq!(bodies(&replay.unwrap()), ["m0", "m1", "m2"]);
    let newest = hub.poll(&key, after(None, 10), in_ms(50)).await.unwrap();
    assert!(matches!(newest, PollOutcome::Timeout { .. }));
}

#[tokio::test]
async fn the_body_is_shared_not_copied() {
    let hub = memory_hub(|_| {});
    let key = broadcast("shared");
    let a = tokio::spawn({
        let (hub, key) = (hub.clone(), key.clone());
        async move { hub.poll(&key, after(None, 1), in_ms(2_000)).await.unwrap() }
    });
    let b = tokio::spawn({
        let (hub, key) = (hub.clone(), key.clone());
        async move { hub.poll(&key, after(None, 1), in_ms(2_000)).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let body = Bytes::from(vec![7u8; 4096]);
    hub.publish(&key, body.clone(), None).await.unwrap();
    let (PollOutcome::Messages { messages: ma, .. }, PollOutcome::Messages { messages: mb, .. }) =
        (a.await.unwrap(), b.await.unwrap())
    else {
        panic!("both should get the message")
    };
    assert_eq!(ma[0].body.as_ptr(), body.as_ptr());
    assert_eq!(mb[0].body.as_ptr(), body.as_ptr());
    assert_eq!(ma[0].content_type, None);
}

#[tokio::test]
async fn queue_messages_wait_and_go_to_the_oldest_poller_first() {
    let hub = memory_hub(|_| {});
    let key = queue("jobs");
    // Nobody polls: messages wait, in order.
    for i in 0..3 {
        assert_eq!(publish(&hub, &key, &format!("q{i}")).await.delivered_to, 0);
    }
    assert_eq!(
        bodies(&hub.poll(&key, after(None, 2), in_ms(100)).await.unwrap()),
        ["q0", "q1"]
    );
    assert_eq!(
        bodies(&hub.poll(&key, after(None, 1), in_ms(100)).await.unwrap()),
        ["q2"]
    );
    // Two pollers wait; the first to arrive gets the first message.
    let first = tokio::spawn({
        let (hub, key) = (hub.clone(), key.clone());
        async move { hub.poll(&key, after(None, 1), in_ms(2_000)).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let second = tokio::spawn({
        let (hub, key) = (hub.clone(), key.clone());
        async move { hub.poll(&key, after(None, 1), in_ms(2_000)).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(publish(&hub, &key, "a").await.delivered_to, 1);
    assert_eq!(publish(&hub, &key, "b").await.delivered_to, 1);
    assert_eq!(bodies(&first.await.unwrap()), ["a"]);
    assert_eq!(bodies(&second.await.unwrap()), ["b"]);
    // The same name in broadcast mode is another channel.
    let other = hub
        .poll(&broadcast("jobs"), after(None, 1), in_ms(30))
        .await
        .unwrap();
    assert!(matches!(other, PollOutcome::Timeout { .. }));
}

#[tokio::test]
async fn a_full_queue_refuses_with_507() {
    let hub = memory_hub(|c| c.channels.queue_max_messages = 2);
    let key = queue("full");
    publish(&hub, &key, "1").await;
    publish(&hub, &key, "2").await;
    let error = hub
        .publish(&key, Bytes::from_static(b"3"), None)
        .await
        .unwrap_err();
    assert_eq!(error, HubError::QueueFull { max: 2 });
    assert_eq!(error.status(), 507);
}

#[tokio::test]
async fn a_message_handed_to_a_dropped_poll_goes_back_to_the_head() {
    let hub = memory_hub(|_| {});
    let key = queue("handback");
    let mut held = Box::pin(hub.poll(&key, after(None, 1), in_ms(5_000)));
    // Poll it once so it is in line, then hand it a message it will never read.
    assert!(tokio::time::timeout(Duration::from_millis(20), &mut held)
        .await
        .is_err());
    assert_eq!(publish(&hub, &key, "first").await.delivered_to, 1);
    publish(&hub, &key, "second").await;
    drop(held);
    let next = hub.poll(&key, after(None, 10), in_ms(100)).await.unwrap();
    assert_eq!(bodies(&next), ["first", "second"]);
}

/// 50 pollers, 1,000 messages, a fifth of the polls dropped at random moments: every message
/// arrives exactly once.
pub(crate) async fn queue_exactly_once(
    pollers: &[Hub],
    publisher: &Hub,
    key: &ChannelKey,
    total: usize,
) {
    let received: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let done = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for i in 0..50 {
        let hub = pollers[i % pollers.len()].clone();
        let (key, received, done) = (key.clone(), received.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
            loop {
                let poll = hub.poll(&key, after(None, 1 + rng.below(3) as usize), in_ms(200));
                let outcome = if rng.below(5) == 0 {
                    // Drop this poll at a random moment. `biased` checks the timer first, so a
                    // poll that was handed a message in the same instant is dropped unread: the
                    // case that must give the message back.
                    let drop_at = tokio::time::sleep(Duration::from_micros(rng.below(3_000)));
                    tokio::select! {
                        biased;
                        _ = drop_at => continue,
                        outcome = poll => outcome,
                    }
                } else {
                    poll.await
                };
                match outcome {
                    Ok(PollOutcome::Messages { messages, .. }) => {
                        let mut received = shards::lock(&received);
                        for m in messages {
                            *received
                                .entry(String::from_utf8_lossy(&m.body).into_owned())
                                .or_default() += 1;
                        }
                        if received.values().sum::<usize>() >= total {
                            done.notify_one();
                        }
                    }
                    Ok(_) => {}
                    Err(error) => panic!("poll failed: {error}"),
                }
            }
        }));
    }
    let mut rng = XorShift(42);
    for n in 0..total {
        loop {
            match publisher
                .publish(key, Bytes::from(format!("msg-{n}")), None)
                .await
            {
                Ok(_) => break,
                Err(HubError::QueueFull { .. }) => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Err(error) => panic!("publish failed: {error}"),
            }
        }
        if rng.below(10) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let all_in = tokio::time::timeout(Duration::from_secs(30), done.notified()).await;
    // Let anything delivered twice show up before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for task in &tasks {
        task.abort();
    }
    let received = shards::lock(&received);
    let missing: Vec<usize> = (0..total)
        .filter(|n| !received.contains_key(&format!("msg-{n}")))
        .collect();
    let twice: Vec<_> = received.iter().filter(|(_, &count)| count > 1).collect();
    assert!(
        all_in.is_ok() && missing.is_empty(),
        "missing {} messages: {missing:?}",
        missing.len()
    );
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(received.len(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_delivers_each_message_once_even_while_polls_are_dropped() {
    let hub = memory_hub(|c| c.channels.queue_max_messages = 100);
    queue_exactly_once(std::slice::from_ref(&hub), &hub, &queue("work"), 1_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publish_wakes_15000_held_polls() {
    const N: usize = 15_000;
    let hub = memory_hub(|_| {});
    let key = broadcast("crowd");
    let ready = Arc::new(tokio::sync::Semaphore::new(0));
    let mut polls = Vec::with_capacity(N);
    for _ in 0..N {
        let (hub, key, ready) = (hub.clone(), key.clone(), ready.clone());
        polls.push(tokio::spawn(async move {
            let poll = hub.poll(&key, after(None, 1), in_ms(30_000));
            ready.add_permits(1);
            let outcome = poll.await.unwrap();
            (outcome, Instant::now())
        }));
    }
    let _ = ready.acquire_many(N as u32).await.unwrap();
    // Every poll is in its wait once the channel counts it.
    let Backend::Memory(memory) = &hub.inner.backend else {
        unreachable!()
    };
    let waiting = |memory: &memory::Memory| memory.waiting(&key);
    let settle = Instant::now() + Duration::from_secs(10);
    while waiting(memory) < N && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let start = Instant::now();
    let published = publish(&hub, &key, "all").await;
    assert_eq!(published.delivered_to, N);
    let mut latest = start;
    for poll in polls {
        let (outcome, at) = poll.await.unwrap();
        assert_eq!(bodies(&outcome), ["all"]);
        latest = latest.max(at);
    }
    println!("one publish woke {N} held polls in {:?}", latest - start);
}

#[tokio::test]
async fn dropping_thousands_of_held_polls_at_once_is_fine() {
    let hub = memory_hub(|_| {});
    let mut polls = Vec::new();
    for i in 0..5_000 {
        let key = if i % 2 == 0 {
            broadcast("many")
        } else {
            queue("many")
        };
        let hub = hub.clone();
        polls.push(tokio::spawn(async move {
            hub.poll(&key, after(None, 1), in_ms(60_000)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for poll in &polls {
        poll.abort();
    }
    for poll in polls {
        assert!(poll.await.unwrap_err().is_cancelled());
    }
    // The queue line is empty again: a message waits for the next poller.
    assert_eq!(publish(&hub, &queue("many"), "after").await.delivered_to, 0);
    assert_eq!(
        bodies(
            &hub.poll(&queue("many"), after(None, 1), in_ms(100))
                .await
                .unwrap()
        ),
        ["after"]
    );
}

#[tokio::test]
async fn idle_channels_are_forgotten() {
    let hub = memory_hub(|c| {
        c.channels.idle_expiry = conf::Duration::from_millis(100);
        c.channels.buffer_age = conf::Duration::from_millis(100);
    });
    publish(&hub, &broadcast("fleeting"), "x").await;
    let _ = hub
        .poll(&queue("fleeting"), after(None, 1), in_ms(10))
        .await
        .unwrap();
    assert_eq!(hub.channel_count(), 2);
    let until = Instant::now() + Duration::from_secs(3);
    while hub.channel_count() > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(hub.channel_count(), 0);
}

#[tokio::test]
async fn bad_channel_names_are_refused() {
    let hub = memory_hub(|_| {});
    let long = broadcast(&"x".repeat(10 * 1024));
    let error = hub
        .poll(&long, after(None, 1), in_ms(10))
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        HubError::BadChannel(ChannelNameError::TooLong { .. })
    ));
    assert_eq!(error.status(), 400);
    let error = hub
        .publish(&broadcast("a b"), Bytes::new(), None)
        .await
        .unwrap_err();
    assert_eq!(error.status(), 400);
}

#[test]
fn start_needs_a_runtime() {
    assert!(matches!(
        Hub::start(&conf::Config::default()),
        Err(StartError::NoRuntime)
    ));
}

#[tokio::test]
async fn the_size_of_a_held_poll() {
    // What one held poll costs in the hub, beside the gateway's own request state: the future
    // itself (plus, in queue mode, one oneshot allocation). Printed, not asserted.
    let hub = memory_hub(|_| {});
    let key = broadcast("size");
    let poll = hub.poll(&key, after(None, 1), in_ms(10));
    // One type for both modes and both backplanes: the largest of them.
    println!(
        "a held poll future is {} bytes",
        std::mem::size_of_val(&poll)
    );
}
