//! An `upstream` route with `resumable`: an answer that is an event stream is read by a task of
//! its own into a kept stream ([`crate::actions::resume`]), to its end whether or not its client
//! still listens, and the client follows it. The client that lost its connection asks again
//! with the `Last-Event-ID` it had — what a browser's `EventSource` does by itself — and gets
//! the events after it from the kept stream, not from the upstream. Any other answer goes to
//! the client whole, as a call's does.

use crate::actions::resume::{self, Dialect, Keeper, Resumed};
use crate::actions::Admitted;
use crate::core::spec::call::CallSpec;
use crate::core::upstream::exchange::{self, Opened, MAX_BUFFERED};
use crate::exchange::{Exchange, Reply};
use bytes::{Bytes, BytesMut};
use pingora_error::Result;
use std::time::Duration;

/// Serves the route's request: from a kept stream when its `Last-Event-ID` names one, else
/// from the upstream.
pub async fn serve(
    exchange: &mut impl Exchange,
    admitted: &Admitted<'_>,
    spec: &CallSpec,
    ttl: Duration,
) -> Result<Resumed> {
    let owner = admitted.owner();
    let last = exchange.head().headers.get("last-event-id");
    let kept = last
        .and_then(|last| last.to_str().ok())
        .and_then(resume::named_by)
        .map(str::to_owned);
    if let Some(id) = kept {
        let route = &admitted.route.name;
        let asked = resume::Asked::AgainWithLastEventId;
        return Ok(resume::resume(exchange, route, owner.as_deref(), &id, asked).await);
    }
    let outbound = match super::outbound(exchange, admitted).await? {
        Ok(outbound) => outbound,
        Err(problem) => return Ok(Resumed::Reply(Reply::problem(&problem))),
    };
    let opened = match exchange::open(&spec.pool, &outbound).await {
        Ok(opened) => opened,
        Err(error) => {
            exchange::count(&spec.pool, 0);
            return Ok(Resumed::Reply(Reply::problem(&error.problem())));
        }
    };
    exchange::count(&spec.pool, opened.status);
    if !is_event_stream(&opened) {
        return Ok(Resumed::Reply(
            match opened.read_whole(MAX_BUFFERED).await {
                Ok(answer) => Reply::upstream(&answer),
                Err(error) => Reply::problem(&error.problem()),
            },
        ));
    }
    let (id, keeper, follower) = resume::start(owner, Dialect::Sse, ttl);
    let mut head = Reply::upstream(&exchange::Answer {
        status: opened.status,
        headers: opened.headers.clone(),
        body: Bytes::new(),
    });
    head.headers.remove(http::header::CONTENT_LENGTH);
    let head = head.header("holdfast-stream", &id).streaming();
    tokio::spawn(Box::pin(read(opened, keeper)));
    Ok(Resumed::Follow(head, follower))
}

/// A 200 whose `Content-Type` is `text/event-stream`.
fn is_event_stream(opened: &Opened) -> bool {
    opened.status == 200
        && opened
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                value
                    .split(';')
                    .next()
                    .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("text/event-stream"))
            })
}

/// Reads the upstream's events into the kept stream until they end, fail, or the stream's
/// `ttl` passes.
async fn read(mut opened: Opened, mut keeper: Keeper) {
    let mut events = Events::default();
    loop {
        let next = tokio::select! {
            next = opened.next() => next,
            () = keeper.deadline() => {
                keeper.fail(resume::TOO_LONG);
                break;
            }
        };
        match next {
            Ok(Some(chunk)) => keeper.append(&events.feed(&chunk)),
            Ok(None) => {
                keeper.append(&events.finish());
                opened.finish().await;
                break;
            }
            Err(error) => {
                keeper.append(&events.finish());
                keeper.fail(&format!("the upstream's stream failed: {error}"));
                break;
            }
        }
    }
    keeper.close(None);
}

/// Cuts an upstream's bytes into whole events, each with `\n` line ends and a blank line
/// after it, whatever line ends it used (`\r\n`, `\n`, `\r`) and wherever its bytes were split.
#[derive(Default)]
struct Events {
    /// The lines of the event not yet ended, `\n` after each.
    event: BytesMut,
    /// The line not yet ended.
    line: Vec<u8>,
    /// The last byte was a `\r`: a `\n` next ends nothing.
    after_carriage_return: bool,
}

impl Events {
    /// The events `chunk` completes.
    fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &byte in chunk {
            let after_carriage_return = std::mem::take(&mut self.after_carriage_return);
            match byte {
                b'\n' if after_carriage_return => {}
                b'\n' | b'\r' => {
                    self.after_carriage_return = byte == b'\r';
                    self.line_ended(&mut out);
                }
                _ => self.line.push(byte),
            }
        }
        out
    }

    fn line_ended(&mut self, out: &mut Vec<u8>) {
        if self.line.is_empty() {
            if !self.event.is_empty() {
                out.extend_from_slice(&self.event);
                out.push(b'\n');
                self.event.clear();
            }
            return;
        }
        self.event.extend_from_slice(&self.line);
        self.event.extend_from_slice(b"\n");
        self.line.clear();
    }

    /// The stream ended: an event it left without its blank line still counts.
    fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            self.line_ended(&mut out);
        }
        self.line_ended(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_cut_whole_with_newline_ends_however_they_came() {
        let mut events = Events::default();
        assert_eq!(events.feed(b"data: a\r\n\r"), b"data: a\n\n");
        assert_eq!(events.feed(b"\nid: 7\rdata: b"), b"");
        assert_eq!(
            events.feed(b"\r\r: keep\n\n"),
            b"id: 7\ndata: b\n\n: keep\n\n"
        );
        assert_eq!(events.feed(b"data: c"), b"");
        assert_eq!(events.finish(), b"data: c\n\n");
        assert_eq!(events.finish(), b"");
    }
}
