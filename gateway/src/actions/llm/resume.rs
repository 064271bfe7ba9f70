//! Resumable answers (`resumable` on an `llm` route). A streamed answer is read from its
//! provider by a task of its own, to its end whether or not a client still listens (for at
//! most the route's `ttl`), and its events are kept for `ttl` after it ends. The client that
//! asked follows the kept events like any other; one that lost its connection resumes with
//! `GET …/streams/<id>` after the last event it had: as Server-Sent Events after
//! `Last-Event-ID`, or by long-polls with `?cursor=`. The answer's head names the stream
//! (`Holdfast-Stream`) and where to resume it (`Holdfast-Resume`); each event's `id` is
//! `<stream>/<number>`, numbered from 1, so a client that counted the events it read resumes
//! with that count. With the Redis backplane the events are mirrored there ([`mirror`]) and
//! any instance resumes them. Only the identity that asked may resume (anyone else: 404).

mod follow;
mod log;
mod mirror;

pub use follow::Follower;

use super::stream::{Sink, Stream};
use super::translate::{failure_event, Format, Usage};
use super::Served;
use crate::actions::Admitted;
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

/// What is done with an answer's usage once it is known: its token charge settled.
pub type OnEnd = Box<dyn FnOnce(Option<Usage>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The path segment resumed streams are served under, after the route's doors' own.
const STREAMS: &str = "streams";
/// The longest one long-poll is held for an event.
const POLL_HOLD: Duration = Duration::from_secs(30);

/// Reads `stream` in a task of its own into a kept log; its id, and the follower that gives
/// the asking client its events.
pub fn detach(
    stream: Box<Stream>,
    ttl: Duration,
    owner: Option<String>,
    on_end: Option<OnEnd>,
) -> (Arc<str>, Follower) {
    let id: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
    let log = Log::new(id.clone(), owner, stream.client_format(), ttl);
    log::keep(log.clone());
    let mirror = crate::core::kv::get().map(|kv| Mirror::start(kv, &log, ttl));
    let follower = Follower::new(Source::local(log.clone()), 0);
    let keeper = Keeper {
        log,
        mirror,
        // Pingora's timer wheel: a Tokio timer would wake the runtime's thread through its
        // eventfd on every answer.
        deadline: Box::pin(pingora::time::sleep(ttl)),
    };
    // Boxed: the reading's future is as large as its largest state (a provider's read in
    // flight), and spawning moves it more than once.
    tokio::spawn(Box::pin(read(stream, keeper, on_end)));
    (id, follower)
}

async fn read(stream: Box<Stream>, mut keeper: Keeper, on_end: Option<OnEnd>) {
    let (outcome, usage) = stream.run(&mut keeper).await;
    if outcome == "timeout" {
        keeper.append(&failure_event(
            keeper.log.format,
            "the answer took longer than the stream's ttl; it was cut there",
        ));
    }
    // Settled before the end is told, so a client that saw the end is charged what it cost.
    if let Some(on_end) = on_end {
        on_end(usage).await;
    }
    keeper.close(usage);
}

/// Where a resumable answer's events go: the kept log, and its mirror.
struct Keeper {
    log: Arc<Log>,
    mirror: Option<Mirror>,
    /// `ttl` after the answer began: it is cut there.
    deadline: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Keeper {
    fn append(&self, events: &[u8]) {
        let appended = self.log.append(events);
        if let (Some(mirror), false) = (&self.mirror, appended.is_empty()) {
            mirror.events(appended);
        }
    }

    fn close(&self, usage: Option<Usage>) {
        self.log.close(usage);
        if let Some(mirror) = &self.mirror {
            mirror.end();
        }
    }
}

impl Sink for Keeper {
    async fn send(&mut self, events: Bytes) -> Result<(), ()> {
        self.append(&events);
        Ok(())
    }

    async fn gone(&mut self) -> &'static str {
        self.deadline.as_mut().await;
        "timeout"
    }

    async fn end(&mut self) {}
}

/// A reading dropped before its end (the instance is stopping) still ends its answer, with an
/// error event its followers read.
impl Drop for Keeper {
    fn drop(&mut self) {
        if !self.log.is_closed() {
            self.append(&failure_event(self.log.format, mirror::CUT));
            self.close(None);
        }
    }
}

/// The head of a resumable answer: its stream's id, and where to resume it (the door's path
/// with `streams/<id>` for the door).
pub fn head(head: Reply, request: &pingora_http::RequestHeader, id: &str, door: Format) -> Reply {
    let path = request.uri.path().trim_end_matches('/');
    let door_path = match door {
        Format::OpenAi => "chat/completions",
        Format::Anthropic => "messages",
    };
    let base = path.strip_suffix(door_path).unwrap_or("/");
    let resume = format!("{base}{STREAMS}/{id}");
    head.header("holdfast-stream", id)
        .header("holdfast-resume", &resume)
}

/// The stream id of `GET …/streams/<id>`, when that is the request.
pub fn wanted(request: &pingora_http::RequestHeader) -> Option<&str> {
    if request.method != http::Method::GET {
        return None;
    }
    let (parent, id) = request.uri.path().trim_end_matches('/').rsplit_once('/')?;
    parent.ends_with(&format!("/{STREAMS}")).then_some(id)
}

/// Serves `GET …/streams/<id>`: the events after the client's position, to the answer's end.
pub async fn serve(exchange: &mut impl Exchange, admitted: &Admitted<'_>, id: &str) -> Served {
    let request = exchange.head();
    let long_poll = request.uri.query().and_then(|query| {
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
        Err(problem) => return Served::Reply(Reply::problem(&problem)),
    };
    let owner = admitted.owner();
    let counted = |result: &str| {
        crate::observe::metrics::METRICS
            .llm_resumes
            .with_label_values(&[&admitted.route.name, result])
            .inc();
    };
    let Some(source) = find(id, owner.as_deref()).await else {
        counted("not_found");
        let problem = Problem::new(
            404,
            "not-found",
            "Not Found",
            format!("no stream {id} here: it ended longer ago than it is kept, or is not yours"),
        );
        return Served::Reply(Reply::problem(&problem));
    };
    let follower = Follower::new(source, after);
    if long_poll.is_some() {
        counted("poll");
        return match follower.poll(exchange, id, POLL_HOLD).await {
            Some(reply) => Served::Reply(reply),
            // The client left while held: nothing to answer.
            None => Served::Gone,
        };
    }
    counted("events");
    let head = Reply::new(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .header("x-accel-buffering", "no")
        .header("holdfast-stream", id)
        .streaming();
    Served::Follow(head, follower)
}

/// The answer `id` where `owner` may read it: in this instance, or in Redis.
async fn find(id: &str, owner: Option<&str>) -> Option<Source> {
    let valid = id.len() == 32 && id.bytes().all(|byte| byte.is_ascii_hexdigit());
    if !valid {
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
    }

    #[test]
    fn streams_are_resumed_beside_the_door() {
        let request = |method: &str, path: &str| {
            pingora_http::RequestHeader::build(method, path.as_bytes(), None).expect("head")
        };
        assert_eq!(
            wanted(&request("GET", &format!("/v1/streams/{ID}"))),
            Some(ID)
        );
        assert_eq!(wanted(&request("POST", &format!("/v1/streams/{ID}"))), None);
        assert_eq!(wanted(&request("GET", "/v1/models")), None);
        let reply = head(
            Reply::new(200),
            &request("POST", "/v1/chat/completions"),
            ID,
            Format::OpenAi,
        );
        let resume = reply.headers.get("holdfast-resume");
        assert_eq!(
            resume.and_then(|value| value.to_str().ok()),
            Some(format!("/v1/streams/{ID}").as_str())
        );
    }
}
