//! Pingora's HTTP session as an [`Exchange`]: how the actions' requests are read and their
//! replies written when Pingora carries the request (HTTP/1 and HTTP/2).

use crate::exchange::{Exchange, Reply};
use bytes::Bytes;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

impl Exchange for Session {
    fn head(&self) -> &RequestHeader {
        self.req_header()
    }

    fn body_done(&mut self) -> bool {
        self.is_body_empty()
    }

    async fn read_body(&mut self) -> pingora_error::Result<Option<Bytes>> {
        // The client's side: a stalled body is a 408 for the client, not an upstream timeout,
        // whichever of Pingora's read timeout and the action's body deadline fires first.
        self.read_request_body()
            .await
            .map_err(|error| error.into_down())
    }

    async fn client_gone(&mut self) {
        // Reads until the client closes (or sends more than it should, which ends it too).
        let _ = self.read_body_or_idle(true).await;
    }

    fn close_after(&mut self) {
        self.set_keepalive(None);
    }

    async fn send(&mut self, reply: Reply) -> pingora_error::Result<()> {
        // An early refusal leaves any request body unread: don't let Pingora drain an unbounded
        // body just to keep the connection alive.
        if reply.close || (!self.is_body_empty() && reply.status >= 400) {
            self.set_keepalive(None);
        }
        let mut header = reply.response_header()?;
        if self.is_http2() {
            // HTTP/2 has no `Connection` header (RFC 9113 §8.2.2); closing is the session's.
            header.remove_header(&http::header::CONNECTION);
        } else if reply.streamed {
            // Without a length, Pingora's HTTP/1 writer delimits the body by closing; chunks
            // keep the connection.
            header.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
        }
        self.write_response_header(Box::new(header), false).await?;
        if reply.streamed {
            return self.send_chunk(reply.body).await;
        }
        self.write_response_body(Some(reply.body), true).await
    }

    async fn send_chunk(&mut self, chunk: Bytes) -> pingora_error::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.write_response_body(Some(chunk), false).await
    }

    async fn end_stream(&mut self) -> pingora_error::Result<()> {
        self.write_response_body(None, true).await
    }
}
