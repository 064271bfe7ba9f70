//! The events of one resumable answer, kept in this instance's memory while the answer is read
//! and for `ttl` after it ends, and the instance-wide table that finds them by id.
//!
//! Each event is kept as the client gets it, with an `id:` line of its own:
//! `<stream>/<number>`, numbered from 1, so that a client resumes after the last event it had
//! — by that id, or by the count of events it read.

use super::Dialect;
use crate::actions::llm::translate::Usage;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// One answer's events.
pub struct Log {
    pub id: Arc<str>,
    /// The identity that asked (`provider:subject`); only it may resume.
    owner: Option<String>,
    /// How the events are written: a failure found later is told so.
    pub dialect: Dialect,
    /// How long the events are kept after the answer ends.
    keep: Duration,
    state: Mutex<State>,
    /// Bumped on every change, to wake the answer's followers.
    changed: watch::Sender<()>,
}

#[derive(Default)]
struct State {
    events: Events,
    /// When the answer ended (completely or not: a failure is told by its last event).
    ended: Option<Instant>,
    usage: Option<Usage>,
}

/// The events: one allocation each while the answer comes, then (kept for `ttl`) one for
/// all, with where each ends — a kept answer costs little more than its bytes.
enum Events {
    Coming(Vec<Bytes>),
    Kept { all: Bytes, ends: Vec<usize> },
}

impl Default for Events {
    fn default() -> Self {
        Events::Coming(Vec::new())
    }
}

impl Events {
    fn len(&self) -> usize {
        match self {
            Events::Coming(events) => events.len(),
            Events::Kept { ends, .. } => ends.len(),
        }
    }

    /// The events after the first `from`.
    fn after(&self, from: usize) -> Vec<Bytes> {
        match self {
            Events::Coming(events) => events.get(from..).unwrap_or_default().to_vec(),
            Events::Kept { all, ends } => {
                let mut start = from
                    .checked_sub(1)
                    .and_then(|i| ends.get(i))
                    .copied()
                    .unwrap_or(0);
                let mut events = Vec::new();
                for &end in ends.get(from..).unwrap_or_default() {
                    events.push(all.slice(start..end));
                    start = end;
                }
                events
            }
        }
    }

    /// Puts the events in one allocation.
    fn keep(&mut self) {
        let Events::Coming(events) = self else { return };
        let mut all = Vec::with_capacity(events.iter().map(Bytes::len).sum());
        let mut ends = Vec::with_capacity(events.len());
        for event in events.iter() {
            all.extend_from_slice(event);
            ends.push(all.len());
        }
        *self = Events::Kept {
            all: Bytes::from(all),
            ends,
        };
    }
}

/// The events after a position, and whether nothing will follow them.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<Bytes>,
    pub ended: bool,
    /// The answer's usage, once ended (known on the instance that read it).
    pub usage: Option<Usage>,
}

impl Log {
    pub fn new(id: Arc<str>, owner: Option<String>, dialect: Dialect, keep: Duration) -> Arc<Self> {
        Arc::new(Self {
            id,
            owner,
            dialect,
            keep,
            state: Mutex::default(),
            changed: watch::channel(()).0,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `owner` may read the answer: the identity that asked it, or anyone when nobody
    /// was authenticated.
    pub fn readable_by(&self, owner: Option<&str>) -> bool {
        self.owner.is_none() || self.owner.as_deref() == owner
    }

    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// Appends `events` (whole events, each ending in a blank line), each with its id; what
    /// was appended, as the client gets it.
    pub fn append(&self, events: &[u8]) -> Vec<Bytes> {
        let mut state = self.state();
        if state.ended.is_some() {
            return Vec::new();
        }
        let Events::Coming(kept) = &mut state.events else {
            return Vec::new();
        };
        let mut appended = Vec::new();
        for event in split_events(events) {
            let framed = frame(event, &self.id, kept.len() + 1);
            kept.push(framed.clone());
            appended.push(framed);
        }
        drop(state);
        if !appended.is_empty() {
            self.changed.send_replace(());
        }
        appended
    }

    /// Ends the answer. Nothing is appended afterwards.
    pub fn close(&self, usage: Option<Usage>) {
        let mut state = self.state();
        if state.ended.is_none() {
            state.ended = Some(Instant::now());
            state.usage = usage;
            state.events.keep();
        }
        drop(state);
        self.changed.send_replace(());
    }

    pub fn is_closed(&self) -> bool {
        self.state().ended.is_some()
    }

    /// The events after the first `after`.
    pub fn after(&self, after: u64) -> Batch {
        let state = self.state();
        let from = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(state.events.len());
        Batch {
            events: state.events.after(from),
            ended: state.ended.is_some(),
            usage: state.usage,
        }
    }

    /// Wakes on every change after the call.
    pub fn changes(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    fn expired(&self, now: Instant) -> bool {
        self.state()
            .ended
            .is_some_and(|ended| now.duration_since(ended) > self.keep)
    }
}

/// The whole events in `bytes`: each up to and with the blank line that ends it (the
/// translators write `\n` line ends only). Bytes after the last blank line are an event too.
fn split_events(bytes: &[u8]) -> Vec<&[u8]> {
    let mut events = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        match rest.windows(2).position(|pair| pair == b"\n\n") {
            Some(end) => {
                events.push(&rest[..end + 2]);
                rest = &rest[end + 2..];
            }
            None => {
                events.push(rest);
                break;
            }
        }
    }
    events
}

/// `event` with the line `id: <stream>/<number>` before the blank line that ends it.
fn frame(event: &[u8], stream: &str, number: usize) -> Bytes {
    let body = event.strip_suffix(b"\n\n").unwrap_or(event);
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    let id = format!("\nid: {stream}/{number}\n\n");
    let mut framed = Vec::with_capacity(body.len() + id.len());
    framed.extend_from_slice(body);
    framed.extend_from_slice(id.as_bytes());
    Bytes::from(framed)
}

/// The answers this instance keeps, by id.
static KEPT: LazyLock<Kept> = LazyLock::new(|| Kept {
    logs: Mutex::default(),
    swept: Mutex::new(Instant::now()),
});

struct Kept {
    logs: Mutex<HashMap<Arc<str>, Arc<Log>>>,
    swept: Mutex<Instant>,
}

/// How often the table is swept of answers past their keeping, at most: on a new answer.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Keeps `log` until `ttl` after it ends.
pub fn keep(log: Arc<Log>) {
    let now = Instant::now();
    let mut logs = KEPT.logs.lock().unwrap_or_else(|p| p.into_inner());
    let mut swept = KEPT.swept.lock().unwrap_or_else(|p| p.into_inner());
    if now.duration_since(*swept) >= SWEEP_EVERY {
        *swept = now;
        logs.retain(|_, log| !log.expired(now));
    }
    logs.insert(log.id.clone(), log);
}

/// The answer `id`, if this instance keeps it.
pub fn find(id: &str) -> Option<Arc<Log>> {
    let logs = KEPT.logs.lock().unwrap_or_else(|p| p.into_inner());
    logs.get(id)
        .filter(|log| !log.expired(Instant::now()))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_gets_its_number_and_the_stream_id() {
        let log = Log::new("s1".into(), None, Dialect::Sse, Duration::from_secs(1));
        let appended = log.append(b"data: {\"a\":1}\n\ndata: [DONE]\n\n");
        assert_eq!(
            appended,
            [
                Bytes::from_static(b"data: {\"a\":1}\nid: s1/1\n\n"),
                Bytes::from_static(b"data: [DONE]\nid: s1/2\n\n"),
            ]
        );
        let named = log.append(b"event: error\ndata: {}\n\n");
        assert_eq!(
            named,
            [Bytes::from_static(b"event: error\ndata: {}\nid: s1/3\n\n")]
        );
        let batch = log.after(1);
        assert_eq!(batch.events.len(), 2);
        assert!(!batch.ended);
        log.close(None);
        let kept = log.after(0);
        assert!(kept.ended);
        assert_eq!(
            kept.events,
            [&appended[..], &named[..]].concat(),
            "the same once kept"
        );
        assert_eq!(log.after(2).events, named);
        assert!(log.after(3).ended);
        assert!(log.after(99).events.is_empty(), "past the end: nothing");
        assert!(
            log.append(b"data: late\n\n").is_empty(),
            "nothing after the end"
        );
    }

    #[test]
    fn only_the_owner_reads_an_owned_answer() {
        let owned = Log::new(
            "s2".into(),
            Some("main:ann".into()),
            Dialect::Sse,
            Duration::ZERO,
        );
        assert!(owned.readable_by(Some("main:ann")));
        assert!(!owned.readable_by(Some("main:bob")));
        assert!(!owned.readable_by(None));
        let open = Log::new("s3".into(), None, Dialect::Sse, Duration::ZERO);
        assert!(open.readable_by(None));
    }
}
