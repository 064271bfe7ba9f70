//! An [`Exchange`] in memory, for unit tests of the actions: a request head and body chunks in,
//! the reply out, and a client that leaves when the test says so.

use crate::exchange::{Exchange, Reply};
use bytes::Bytes;
use pingora_http::RequestHeader;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::Notify;

/// A request served in memory.
pub struct MemoryExchange {
    head: RequestHeader,
    body: VecDeque<Bytes>,
    /// Notified when the client leaves.
    pub leave: Arc<Notify>,
    /// Whether the exchange was told not to reuse the connection.
    pub closed_after: bool,
    /// What was sent.
    pub sent: Option<Reply>,
    /// A streamed reply's body after the reply, chunk by chunk.
    pub chunks: Vec<Bytes>,
    /// A streamed reply was ended.
    pub ended: bool,
}

impl MemoryExchange {
    /// A request for `method` and `target` with `headers`, and a body in `chunks`.
    pub fn new(method: &str, target: &str, headers: &[(&str, &str)], chunks: &[&[u8]]) -> Self {
        let mut head =
            RequestHeader::build(method, target.as_bytes(), Some(headers.len())).expect("head");
        for (name, value) in headers {
            head.append_header(name.to_string(), *value)
                .expect("header");
        }
        Self {
            head,
            body: chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect(),
            leave: Arc::new(Notify::new()),
            closed_after: false,
            sent: None,
            chunks: Vec::new(),
            ended: false,
        }
    }
}

impl Exchange for MemoryExchange {
    fn head(&self) -> &RequestHeader {
        &self.head
    }

    fn body_done(&mut self) -> bool {
        self.body.is_empty()
    }

    async fn read_body(&mut self) -> pingora_error::Result<Option<Bytes>> {
        Ok(self.body.pop_front())
    }

    async fn client_gone(&mut self) {
        self.leave.notified().await;
    }

    fn close_after(&mut self) {
        self.closed_after = true;
    }

    async fn send(&mut self, reply: Reply) -> pingora_error::Result<()> {
        self.sent = Some(reply);
        Ok(())
    }

    async fn send_chunk(&mut self, chunk: Bytes) -> pingora_error::Result<()> {
        self.chunks.push(chunk);
        Ok(())
    }

    async fn end_stream(&mut self) -> pingora_error::Result<()> {
        self.ended = true;
        Ok(())
    }
}
