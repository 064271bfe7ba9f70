//! The seam between the transport and the actions. An action sees its request through an
//! [`Exchange`] — the head, the body, whether the client is still there — and ends with a
//! [`Reply`], which the pipeline writes. Pingora's HTTP session implements `Exchange` in the
//! pipeline; tests implement it in memory ([`memory`]), so every action can be run without a
//! socket. See docs/architecture.md.

pub mod body;
pub mod hold;
#[cfg(test)]
pub mod memory;
pub mod reply;

pub use reply::Reply;

use bytes::Bytes;
use pingora_http::RequestHeader;
use std::future::Future;

/// One request and the way back to its client, whatever carries them.
pub trait Exchange: Send {
    /// The request head, its path already in normal form.
    fn head(&self) -> &RequestHeader;

    /// Whether the request has no body left to read.
    fn body_done(&mut self) -> bool;

    /// The next chunk of the request body; `None` at its end.
    fn read_body(&mut self) -> impl Future<Output = pingora_error::Result<Option<Bytes>>> + Send;

    /// Resolves when the client goes away. Call it once the body has been read: it may read
    /// the connection to notice.
    fn client_gone(&mut self) -> impl Future<Output = ()> + Send;

    /// The connection must not serve another request after this one (its body was left
    /// unread).
    fn close_after(&mut self);

    /// Writes the reply: its status, headers and body, with a `Content-Length` — or, for a
    /// [streamed](Reply::streamed) reply, its head and the body so far, the rest to come by
    /// [`Exchange::send_chunk`] and [`Exchange::end_stream`].
    fn send(&mut self, reply: Reply) -> impl Future<Output = pingora_error::Result<()>> + Send;

    /// Writes the next piece of a streamed reply's body, at once.
    fn send_chunk(
        &mut self,
        chunk: Bytes,
    ) -> impl Future<Output = pingora_error::Result<()>> + Send;

    /// Ends a streamed reply's body.
    fn end_stream(&mut self) -> impl Future<Output = pingora_error::Result<()>> + Send;
}
