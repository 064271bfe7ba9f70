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
use crate::backplane::Link;
use crate::core::kv::Kv;
use bytes::Bytes;
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
            // One tag for the three, so a pipeline may touch them all on a cluster.
            events: kv.key(&format!("answer:{id}")),
            meta: kv.key_with(&format!("answer:{id}"), ":meta"),
            live: kv.key_with(&format!("answer:{id}"), ":live"),
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
    shared: Link,
    /// A connection of its own, made when a read must wait: `XREAD BLOCK` holds it.
    waiting: Option<Link>,
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
        match read(&mut self.shared, &self.keys.events, after, None).await {
            Ok(batch) if !batch.events.is_empty() || batch.ended => return batch,
            Ok(_) => {}
            Err(error) => return self.failed(&format!("the backplane failed: {error}")),
        }
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
            let batch = match read(conn, &self.keys.events, after, Some(BLOCK)).await {
                Ok(batch) => batch,
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

/// The entries of `key` after event `after` (`XREAD`, waiting up to `block` for one): its
/// events, and whether its `end` was among them. Read from the reply as it is (no map per
/// entry), the events' bytes moved out of it.
async fn read(
    conn: &mut impl redis::aio::ConnectionLike,
    key: &str,
    after: u64,
    block: Option<Duration>,
) -> redis::RedisResult<Batch> {
    let mut command = redis::cmd("XREAD");
    command.arg("COUNT").arg(256);
    if let Some(block) = block {
        command.arg("BLOCK").arg(millis(block));
    }
    command.arg("STREAMS").arg(key).arg(format!("0-{after}"));
    let reply: redis::Value = command.query_async(conn).await?;
    Ok(batch(reply))
}

/// The events of one `XREAD` reply (`[[key, [[id, [field, value, …]], …]]]`, or a map of keys
/// under RESP3), and whether the `end` was among them.
fn batch(reply: redis::Value) -> Batch {
    use redis::Value;
    let mut batch = Batch::default();
    let streams = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|stream| match stream {
                Value::Array(mut parts) if parts.len() == 2 => parts.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        _ => Vec::new(),
    };
    for entries in streams {
        let Value::Array(entries) = entries else {
            continue;
        };
        for entry in entries {
            let Value::Array(mut parts) = entry else {
                continue;
            };
            let Some(Value::Array(fields)) = parts.pop() else {
                continue;
            };
            let mut fields = fields.into_iter();
            while let (Some(Value::BulkString(name)), Some(value)) = (fields.next(), fields.next())
            {
                match (name.as_slice(), value) {
                    (b"end", _) => {
                        batch.ended = true;
                        return batch;
                    }
                    (b"e", Value::BulkString(event)) => batch.events.push(Bytes::from(event)),
                    _ => {}
                }
            }
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn entry(id: &str, field: &str, value: &str) -> Value {
        Value::Array(vec![bulk(id), Value::Array(vec![bulk(field), bulk(value)])])
    }

    #[test]
    fn an_xread_reply_gives_its_events_up_to_the_end() {
        let entries = Value::Array(vec![
            entry("0-1", "e", "data: a\n\n"),
            entry("0-2", "e", "data: b\n\n"),
            entry("0-3", "end", "1"),
        ]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("answer:x"), entries.clone()])]);
        let read = batch(resp2);
        assert_eq!(read.events, ["data: a\n\n", "data: b\n\n"]);
        assert!(read.ended);
        let resp3 = Value::Map(vec![(bulk("answer:x"), entries)]);
        assert_eq!(batch(resp3).events.len(), 2);
        let nothing = batch(Value::Nil);
        assert!(nothing.events.is_empty() && !nothing.ended);
    }
}
