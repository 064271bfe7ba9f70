//! Resumable streams: an answer of events read from upstream by a task of its own, to its end
//! whether or not a client still listens (for at most the route's `ttl`), and kept for `ttl`
//! after it ends. The client that asked follows the kept events like any other; one that lost
//! its connection resumes after the last event it had — on an `llm` route at
//! `GET …/streams/<id>` (see `llm/kept.rs`), as Server-Sent Events after `Last-Event-ID` or by
//! long-polls with `?cursor=`; on a proxied route by asking again with `Last-Event-ID`, as a
//! browser's `EventSource` does by itself (see `call/events.rs`). Each event's `id` is
//! `<stream>/<number>`, numbered from 1, so a client that counted the events it read resumes
//! with that count. With the Redis backplane the events are mirrored there ([`mirror`]) and
//! any instance resumes them. Only the identity that asked may resume (anyone else: 404).

mod follow;
mod log;
mod mirror;

pub use follow::Follower;

use crate::actions::llm::translate::{failure_event, Format, Usage};
use crate::exchange::{Exchange, Reply};
use crate::problem::Problem;
use bytes::Bytes;
use follow::Source;
use log::Log;
use mirror::Mirror;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The longest one long-poll is held for an event.
const POLL_HOLD: Duration = Duration::from_secs(30);

/// How a stream's events are written, and so how a failure found later is told to its
/// followers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// A model's answer in an SDK's format: the format's own error event.
    Llm(Format),
    /// An upstream's own events: `event: error` with
    /// `{"error": {"type": "upstream_error", "message"}}`.
    Sse,
}

impl Dialect {
    /// The events that end a stream with the error `message`.
    pub fn failure(self, message: &str) -> Bytes {
        match self {
            Dialect::Llm(format) => failure_event(format, message),
            Dialect::Sse => {
                let error =
                    serde_json::json!({"error": {"type": "upstream_error", "message": message}});
                Bytes::from(format!("event: error\ndata: {error}\n\n"))
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Dialect::Llm(Format::OpenAi) => "openai",
            Dialect::Llm(Format::Anthropic) => "anthropic",
            Dialect::Sse => "sse",
        }
    }

    fn named(name: &str) -> Option<Self> {
        match name {
            "openai" => Some(Dialect::Llm(Format::OpenAi)),
            "anthropic" => Some(Dialect::Llm(Format::Anthropic)),
            "sse" => Some(Dialect::Sse),
            _ => None,
        }
    }
}

/// What is done once a kept stream ends, with its usage if it is a model's answer: its token
/// charge settled.
pub type OnEnd = Box<dyn FnOnce(Option<Usage>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Starts keeping a stream for `owner`: its id, the [`Keeper`] its reading task appends to,
/// and the follower that gives the asking client its events.
pub fn start(
    owner: Option<String>,
    dialect: Dialect,
    ttl: Duration,
) -> (Arc<str>, Keeper, Follower) {
    let id: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
    let log = Log::new(id.clone(), owner, dialect, ttl);
    log::keep(log.clone());
    let mirror = crate::core::kv::get().map(|kv| Mirror::start(kv, &log, ttl));
    let follower = Follower::new(Source::local(log.clone()), 0);
    let keeper = Keeper {
        log,
        mirror,
        // Pingora's timer wheel: a Tokio timer would wake the runtime's thread through its
        // eventfd on every stream.
        deadline: Box::pin(pingora::time::sleep(ttl)),
    };
    (id, keeper, follower)
}

/// Where a kept stream's events go: its log, and the log's mirror in Redis.
pub struct Keeper {
    log: Arc<Log>,
    mirror: Option<Mirror>,
    /// `ttl` after the stream began: it is cut there.
    deadline: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Keeper {
    /// Appends whole events (each ending in a blank line, lines ending in `\n`).
    pub fn append(&self, events: &[u8]) {
        let appended = self.log.append(events);
        if let (Some(mirror), false) = (&self.mirror, appended.is_empty()) {
            mirror.events(appended);
        }
    }

    /// Ends the stream with the error `message`.
    pub fn fail(&self, message: &str) {
        self.append(&self.log.dialect.failure(message));
    }

    /// Ends the stream.
    pub fn close(&self, usage: Option<Usage>) {
        self.log.close(usage);
        if let Some(mirror) = &self.mirror {
            mirror.end();
        }
    }

    /// Resolves when the stream has been read for its `ttl`.
    pub async fn deadline(&mut self) {
        self.deadline.as_mut().await;
    }
}

/// What a stream read for longer than its `ttl` is ended with.
pub const TOO_LONG: &str = "the answer took longer than the stream's ttl; it was cut there";

/// A reading dropped before its end (the instance is stopping) still ends its stream, with an
/// error event its followers read.
impl Drop for Keeper {
    fn drop(&mut self) {
        if !self.log.is_closed() {
            self.fail(mirror::CUT);
            self.close(None);
        }
    }
}

/// How a request to a kept stream is answered.
pub enum Resumed {
    /// At once: a long-poll's events, a refusal, or (on a proxied route) the upstream's
    /// whole answer.
    Reply(Reply),
    /// By a stream: its head, then the kept events from the client's position on.
    Follow(Reply, Follower),
    /// Not at all: the client left while its long-poll was held.
    Gone,
}

/// Where a resume request says its position.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// `GET …/streams/<id>`: `?cursor=` for one long-poll, else `Last-Event-ID`.
    AtItsPath,
    /// A proxied route's own request, whose query is the upstream's: `Last-Event-ID` only.
    AgainWithLastEventId,
}

/// Resumes stream `id` for `owner` after the client's position (see [`Asked`]; from the start
/// when none is given).
pub async fn resume(
    exchange: &mut impl Exchange,
    route: &str,
    owner: Option<&str>,
    id: &str,
    asked: Asked,
) -> Resumed {
    let request = exchange.head();
    let query = request.uri.query().filter(|_| asked == Asked::AtItsPath);
    let long_poll = query.and_then(|query| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "cursor")
            .map(|(_, value)| value)
    });
    let after = match long_poll.as_deref() {
        Some(cursor) => position(id, "cursor", cursor),
        None => match request.headers.get("last-event-id") {
            Some(last) => position(id, "Last-Event-ID", last.to_str().unwrap_or("?")),
            None => Ok(0),
        },
    };
    let after = match after {
        Ok(after) => after,
        Err(problem) => return Resumed::Reply(Reply::problem(&problem)),
    };
    let counted = |result: &str| {
        crate::observe::metrics::METRICS
            .stream_resumes
            .with_label_values(&[route, result])
            .inc();
    };
    let Some(source) = find(id, owner).await else {
        counted("not_found");
        let problem = Problem::new(
            404,
            "not-found",
            "Not Found",
            format!("no stream {id} here: it ended longer ago than it is kept, or is not yours"),
        );
        return Resumed::Reply(Reply::problem(&problem));
    };
    let follower = Follower::new(source, after);
    if long_poll.is_some() {
        counted("poll");
        return match follower.poll(exchange, id, POLL_HOLD).await {
            Some(reply) => Resumed::Reply(reply),
            None => Resumed::Gone,
        };
    }
    counted("events");
    let head = Reply::new(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .header("x-accel-buffering", "no")
        .header("holdfast-stream", id)
        .streaming();
    Resumed::Follow(head, follower)
}

/// The stream a `Last-Event-ID` of ours names (`<stream>/<number>`), if it does.
pub fn named_by(last_event_id: &str) -> Option<&str> {
    let (stream, _) = last_event_id.split_once('/')?;
    is_stream_id(stream).then_some(stream)
}

fn is_stream_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|byte| byte.is_ascii_hexdigit())
}

/// The stream `id` where `owner` may read it: in this instance, or in Redis.
async fn find(id: &str, owner: Option<&str>) -> Option<Source> {
    if !is_stream_id(id) {
        return None;
    }
    if let Some(log) = log::find(id) {
        return log.readable_by(owner).then(|| Source::local(log));
    }
    let kv = crate::core::kv::get()?;
    let remote = mirror::find(kv, id, owner).await?;
    Some(Source::Remote(Box::new(remote)))
}

/// The count of events a client has, from `Last-Event-ID` or `?cursor=`: `<stream>/<n>` (an
/// event's id) or `<n>`.
fn position(id: &str, field: &str, text: &str) -> Result<u64, Problem> {
    let bad = |why: &str| {
        Problem::new(400, "bad-request", "Bad Request", format!("{field}: {why}"))
            .with_member("field", field.into())
    };
    let number = match text.rsplit_once('/') {
        Some((stream, _)) if stream != id => {
            return Err(bad("names another stream"));
        }
        Some((_, number)) => number,
        None => text,
    };
    if number.is_empty() || number.len() > 19 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(
            "not an event's id (`<stream>/<number>`) nor a count of events",
        ));
    }
    number.parse().map_err(|_| bad("not a count of events"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_position_is_an_event_id_or_a_count() {
        assert_eq!(position(ID, "cursor", "7").ok(), Some(7));
        assert_eq!(
            position(ID, "Last-Event-ID", &format!("{ID}/12")).ok(),
            Some(12)
        );
        for bad in ["", "-1", "x", "1.5", "99999999999999999999", "/3"] {
            assert!(position(ID, "cursor", bad).is_err(), "{bad}");
        }
        let other = position(ID, "Last-Event-ID", "ffffffffffffffffffffffffffffffff/3");
        assert_eq!(
            other.err().map(|p| p.detail),
            Some("Last-Event-ID: names another stream".to_owned())
        );
        assert_eq!(named_by(&format!("{ID}/4")), Some(ID));
        assert_eq!(named_by("42"), None);
        assert_eq!(named_by("abc/4"), None);
    }

    #[test]
    fn a_failure_is_told_in_the_streams_dialect() {
        assert_eq!(
            Dialect::Sse.failure("gone"),
            Bytes::from_static(
                b"event: error\ndata: {\"error\":{\"type\":\"upstream_error\",\"message\":\"gone\"}}\n\n"
            )
        );
        for dialect in [
            Dialect::Sse,
            Dialect::Llm(Format::OpenAi),
            Dialect::Llm(Format::Anthropic),
        ] {
            assert_eq!(Dialect::named(dialect.name()), Some(dialect));
        }
    }
}
