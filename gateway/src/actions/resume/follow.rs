//! A client following a resumable answer: the one that asked it, from its first event, or one
//! that resumes after the events it had — as a stream of events, or as long-polls that each
//! answer with the events that came since the client's cursor.

use super::log::{Batch, Log};
use super::mirror::Remote;
use crate::actions::llm::translate::{self, Usage};
use crate::exchange::{Exchange, Reply};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use tokio::sync::watch;

/// Where the answer's events are read.
pub enum Source {
    /// This instance reads the answer, or did.
    Local(Arc<Log>, watch::Receiver<()>),
    /// Another instance does, through Redis.
    Remote(Box<Remote>),
}

impl Source {
    pub fn local(log: Arc<Log>) -> Self {
        let changes = log.changes();
        Source::Local(log, changes)
    }

    /// The events after the first `after`, waiting until there is one or the answer ended.
    async fn next(&mut self, after: u64) -> Batch {
        match self {
            Source::Local(log, changes) => loop {
                changes.borrow_and_update();
                let batch = log.after(after);
                if !batch.events.is_empty() || batch.ended {
                    return batch;
                }
                // The log holds the sender: this never fails while the log is here.
                let _ = changes.changed().await;
            },
            Source::Remote(remote) => remote.next(after).await,
        }
    }
}

/// A client reading an answer's events from a position on.
pub struct Follower {
    source: Source,
    /// The events the client has.
    after: u64,
}

impl Follower {
    pub fn new(source: Source, after: u64) -> Self {
        Self { source, after }
    }

    /// Writes the events to the client as they come, until the answer ends or the client
    /// goes; how it ended (the access log's outcome) and the answer's usage when known.
    pub async fn run(mut self, exchange: &mut impl Exchange) -> (&'static str, Option<Usage>) {
        loop {
            let batch = tokio::select! {
                batch = self.source.next(self.after) => batch,
                () = exchange.client_gone() => return ("client_gone", None),
            };
            self.after += batch.events.len() as u64;
            if !batch.events.is_empty() && exchange.send_chunk(joined(batch.events)).await.is_err()
            {
                return ("client_gone", None);
            }
            if batch.ended {
                let _ = exchange.end_stream().await;
                return ("data", batch.usage);
            }
        }
    }

    /// One long-poll: the events after the cursor as soon as there is one (or the answer's
    /// end), or none when `hold` passes first. The body:
    /// `{"stream", "events": [{"id", "event", "data"}], "cursor", "done"}`, where `data` is
    /// the event's JSON (or its text, as OpenAI's `[DONE]`) and `cursor` is the next poll's.
    pub async fn poll(
        mut self,
        exchange: &mut impl Exchange,
        stream: &str,
        hold: std::time::Duration,
    ) -> Option<Reply> {
        let batch = tokio::select! {
            batch = self.source.next(self.after) => batch,
            () = pingora::time::sleep(hold) => Batch::default(),
            () = exchange.client_gone() => return None,
        };
        let mut events = Vec::with_capacity(batch.events.len());
        for event in &batch.events {
            self.after += 1;
            for (name, data) in translate::read_events(event) {
                let data = serde_json::from_str(&data).unwrap_or(serde_json::Value::String(data));
                events.push(serde_json::json!({"id": self.after, "event": name, "data": data}));
            }
        }
        let body = serde_json::json!({
            "stream": stream,
            "events": events,
            "cursor": self.after,
            "done": batch.ended,
        });
        Some(Reply::json(200, &body).header("cache-control", "no-store"))
    }
}

/// The events as one chunk: one write for all that gathered.
fn joined(events: Vec<Bytes>) -> Bytes {
    if events.len() == 1 {
        return events.into_iter().next().unwrap_or_default();
    }
    let mut joined = BytesMut::with_capacity(events.iter().map(Bytes::len).sum());
    for event in events {
        joined.extend_from_slice(&event);
    }
    joined.freeze()
}
