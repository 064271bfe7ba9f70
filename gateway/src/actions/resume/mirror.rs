//! Resumable answers in the backplane's Redis, so that a client resumes on any instance. The
//! instance reading the answer mirrors its events into a Redis stream whose entry ids are the
//! events' numbers (`0-1`, `0-2`, …), closed by an `end` entry; a lease key says it is still
//! at work. An instance without the answer in memory reads the stream with `XREAD BLOCK`, and
//! when the lease is gone with no `end` written, the answer was cut by that instance's death:
//! the follower is told so by an error event, never by silence.
//!
//! Keys, under the backplane's prefix: `answer:<id>` (the events), `answer:<id>:meta` (dialect
//! and owner), `answer:<id>:live` (the lease).

use super::log::{Batch, Log};
use super::Dialect;
use crate::core::kv::Kv;
use bytes::Bytes;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long the lease lasts unless renewed; it is renewed three times as often.
const LEASE: Duration = Duration::from_secs(3);
/// The longest one `XREAD` blocks before the lease is looked at.
const BLOCK: Duration = Duration::from_secs(1);
/// What a follower is told when the instance reading its answer is gone.
pub const CUT: &str = "the instance reading this answer stopped before its end; ask again";

struct Keys {
    events: String,
    meta: String,
    live: String,
}

impl Keys {
    fn new(kv: &Kv, id: &str) -> Self {
        Self {
            events: kv.key(&format!("answer:{id}")),
            meta: kv.key(&format!("answer:{id}:meta")),
            live: kv.key(&format!("answer:{id}:live")),
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

enum Entry {
    Events(Vec<Bytes>),
    End,
}

/// The writer of one answer's mirror: events go to a task that sends what has gathered in one
/// round trip, so the answer is never held up by Redis.
pub struct Mirror {
    entries: mpsc::UnboundedSender<Entry>,
}

impl Mirror {
    /// Starts mirroring `log`, which is read for at most `ttl` and kept `ttl` after.
    pub fn start(kv: &'static Kv, log: &Log, ttl: Duration) -> Self {
        let (entries, queued) = mpsc::unbounded_channel();
        let meta = serde_json::json!({
            "dialect": log.dialect.name(),
            "owner": log.owner(),
        })
        .to_string();
        tokio::spawn(write(kv, Keys::new(kv, &log.id), meta, ttl, queued));
        Self { entries }
    }

    pub fn events(&self, events: Vec<Bytes>) {
        let _ = self.entries.send(Entry::Events(events));
    }

    pub fn end(&self) {
        let _ = self.entries.send(Entry::End);
    }
}

async fn write(
    kv: &'static Kv,
    keys: Keys,
    meta: String,
    ttl: Duration,
    mut queued: mpsc::UnboundedReceiver<Entry>,
) {
    let mut conn = kv.connection();
    let (reading, kept) = (millis(ttl.saturating_mul(2)), millis(ttl));
    let opened: redis::RedisResult<()> = redis::pipe()
        .pset_ex(&keys.meta, &meta, reading)
        .ignore()
        .pset_ex(&keys.live, 1, millis(LEASE))
        .ignore()
        .query_async(&mut conn)
        .await;
    if let Err(error) = opened {
        tracing::warn!(%error, "a resumable answer could not be mirrored to Redis");
    }
    let mut next = 1u64;
    let mut renew = tokio::time::interval(LEASE / 3);
    renew.tick().await;
    loop {
        let entry = tokio::select! {
            entry = queued.recv() => entry,
            _ = renew.tick() => {
                let _: redis::RedisResult<()> =
                    conn.pset_ex(&keys.live, 1, millis(LEASE)).await;
                continue;
            }
        };
        // The writer is gone without an end: its instance is stopping. The lease runs out
        // and followers elsewhere are told.
        let Some(entry) = entry else { return };
        let mut pipe = redis::pipe();
        let mut ended = false;
        for entry in std::iter::once(entry).chain(std::iter::from_fn(|| queued.try_recv().ok())) {
            match entry {
                Entry::Events(events) => {
                    for event in events {
                        pipe.xadd(&keys.events, format!("0-{next}"), &[("e", event.as_ref())])
                            .ignore();
                        next += 1;
                    }
                }
                Entry::End => {
                    pipe.xadd(&keys.events, format!("0-{next}"), &[("end", b"1".as_ref())])
                        .ignore();
                    ended = true;
                    break;
                }
            }
        }
        if ended {
            pipe.pexpire(&keys.events, kept as i64)
                .ignore()
                .pexpire(&keys.meta, kept as i64)
                .ignore()
                .del(&keys.live)
                .ignore();
        } else {
            pipe.pexpire(&keys.events, reading as i64).ignore();
        }
        let written: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
        if let Err(error) = written {
            tracing::warn!(%error, "a resumable answer's events could not be mirrored to Redis");
        }
        if ended {
            return;
        }
    }
}

/// An answer read from Redis by an instance that does not have it.
pub struct Remote {
    kv: &'static Kv,
    /// The process's shared connection, for reads that answer at once.
    shared: redis::aio::ConnectionManager,
    /// A connection of its own, made when a read must wait: `XREAD BLOCK` holds it.
    waiting: Option<redis::aio::MultiplexedConnection>,
    keys: Keys,
    dialect: Dialect,
}

/// Finds answer `id` in Redis: `None` when there is none, or `owner` may not read it.
pub async fn find(kv: &'static Kv, id: &str, owner: Option<&str>) -> Option<Remote> {
    let keys = Keys::new(kv, id);
    let mut shared = kv.connection();
    let meta: Option<String> = shared.get(&keys.meta).await.ok().flatten();
    let meta: serde_json::Value = serde_json::from_str(&meta?).ok()?;
    let dialect = Dialect::named(meta["dialect"].as_str()?)?;
    if let Some(asker) = meta["owner"].as_str() {
        if Some(asker) != owner {
            return None;
        }
    }
    Some(Remote {
        kv,
        shared,
        waiting: None,
        keys,
        dialect,
    })
}

impl Remote {
    /// The events after the first `after`, waiting for one when there is none yet. What is
    /// there already is read on the shared connection; only a wait takes one of its own.
    pub async fn next(&mut self, after: u64) -> Batch {
        let at_once = StreamReadOptions::default().count(256);
        let from = format!("0-{after}");
        let reply: redis::RedisResult<Option<StreamReadReply>> = self
            .shared
            .xread_options(&[&self.keys.events], &[&from], &at_once)
            .await;
        match reply {
            Ok(Some(reply)) => {
                let batch = batch(reply);
                if !batch.events.is_empty() || batch.ended {
                    return batch;
                }
            }
            Ok(None) => {}
            Err(error) => return self.failed(&format!("the backplane failed: {error}")),
        }
        let waiting = at_once.block(usize::try_from(BLOCK.as_millis()).unwrap_or(1000));
        loop {
            let conn = match &mut self.waiting {
                Some(conn) => conn,
                None => match self.kv.own_connection(BLOCK).await {
                    Ok(conn) => self.waiting.insert(conn),
                    Err(error) => {
                        return self.failed(&format!("the backplane failed: {error}"));
                    }
                },
            };
            let reply: redis::RedisResult<Option<StreamReadReply>> = conn
                .xread_options(&[&self.keys.events], &[&from], &waiting)
                .await;
            let batch = match reply {
                Ok(Some(reply)) => batch(reply),
                Ok(None) => Batch::default(),
                Err(error) => return self.failed(&format!("the backplane failed: {error}")),
            };
            if !batch.events.is_empty() || batch.ended {
                return batch;
            }
            let live: bool = self.shared.exists(&self.keys.live).await.unwrap_or(false);
            if !live {
                return self.unleased().await;
            }
        }
    }

    /// The lease is gone: the answer ended (its `end` is its last entry) or was cut.
    async fn unleased(&mut self) -> Batch {
        let last: redis::RedisResult<redis::streams::StreamRangeReply> = self
            .shared
            .xrevrange_count(&self.keys.events, "+", "-", 1)
            .await;
        let ended = last.is_ok_and(|last| {
            last.ids
                .first()
                .is_some_and(|entry| entry.map.contains_key("end"))
        });
        if ended {
            Batch {
                ended: true,
                ..Batch::default()
            }
        } else {
            self.failed(CUT)
        }
    }

    fn failed(&self, message: &str) -> Batch {
        Batch {
            events: vec![self.dialect.failure(message)],
            ended: true,
            usage: None,
        }
    }
}

/// The events of one `XREAD` answer, and whether the `end` was among them.
fn batch(reply: StreamReadReply) -> Batch {
    let mut batch = Batch::default();
    for entry in reply.keys.into_iter().flat_map(|key| key.ids) {
        if entry.map.contains_key("end") {
            batch.ended = true;
            break;
        }
        if let Some(redis::Value::BulkString(event)) = entry.map.get("e") {
            batch.events.push(Bytes::copy_from_slice(event));
        }
    }
    batch
}
