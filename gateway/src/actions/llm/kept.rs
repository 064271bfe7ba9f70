//! A model's streamed answer on a `resumable` route: read into a kept stream by a task of its
//! own ([`crate::actions::resume`]), its head naming the stream (`Holdfast-Stream`) and where to
//! resume it (`Holdfast-Resume`: `…/streams/<id>` beside the door).

use super::stream::{Sink, Stream};
use super::translate::Format;
use crate::actions::resume::{self, Dialect, Follower, Keeper, OnEnd};
use crate::exchange::Reply;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// The path segment kept answers are resumed under, beside the route's doors.
const STREAMS: &str = "streams";

/// Reads `stream` in a task of its own into a kept stream; its id, and the follower that
/// gives the asking client its events.
pub fn detach(
    stream: Box<Stream>,
    ttl: Duration,
    owner: Option<String>,
    on_end: Option<OnEnd>,
) -> (Arc<str>, Follower) {
    let (id, keeper, follower) = resume::start(owner, Dialect::Llm(stream.client_format()), ttl);
    // Boxed: the reading's future is as large as its largest state (a provider's read in
    // flight), and spawning moves it more than once.
    tokio::spawn(Box::pin(read(stream, keeper, on_end)));
    (id, follower)
}

async fn read(stream: Box<Stream>, mut keeper: Keeper, on_end: Option<OnEnd>) {
    let (outcome, usage) = stream.run(&mut keeper).await;
    if outcome == "timeout" {
        keeper.fail(resume::TOO_LONG);
    }
    // Settled before the end is told, so a client that saw the end is charged what it cost.
    if let Some(on_end) = on_end {
        on_end(usage).await;
    }
    keeper.close(usage);
}

impl Sink for Keeper {
    async fn send(&mut self, events: Bytes) -> Result<(), ()> {
        self.append(&events);
        Ok(())
    }

    async fn gone(&mut self) -> &'static str {
        self.deadline().await;
        "timeout"
    }

    async fn end(&mut self) {}
}

/// The head of a kept answer: its stream's id, and where to resume it (the door's path with
/// `streams/<id>` for the door).
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

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

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
