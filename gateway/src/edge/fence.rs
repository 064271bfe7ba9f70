//! The stream Pingora gets for one HTTP/1 request: it delivers that request's body and nothing
//! past it, and holds the bytes of the next pipelined request for the connection loop. See
//! docs/edge.md.

use crate::wire::framing::{BodyFraming, Framing, FramingError};
use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    UniqueID, UniqueIDType,
};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes of following requests held while one request is served; past it the fence
/// stops reading and the client waits (TCP back-pressure).
const AHEAD_LIMIT: usize = 64 * 1024;

/// Writes smaller than this are gathered until a flush, so a small answer's head and body leave
/// in one segment (the stream under the fence writes through).
const WRITE_BUFFER: usize = 1460;

/// A connection's stream, fenced at the end of the current request.
pub struct Fence {
    inner: Stream,
    /// Written and not yet sent; allocated on a small write, freed on flush, so an idle or held
    /// connection keeps none.
    pending: Vec<u8>,
    body: BodyFraming,
    /// Bytes past the end of the current request: the start of the next.
    ahead: BytesMut,
    /// The client closed its side.
    closed: bool,
    /// The socket digest of a cleartext connection, made when a session first asks for it
    /// and forgotten when the connection idles for long (plain.rs).
    digest: std::sync::OnceLock<std::sync::Arc<SocketDigest>>,
    /// The request asked to switch protocols and no final answer was written yet: a `101`
    /// turns the connection into a tunnel, with nothing fenced off.
    watch_for_switch: bool,
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("body", &self.body)
            .field("ahead", &self.ahead.len())
            .field("closed", &self.closed)
            .finish()
    }
}

/// The error a malformed body is read as; it carries the reason to answer with.
pub fn framing_error(error: FramingError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

impl Fence {
    pub fn new(inner: Stream) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            body: BodyFraming::new(Framing::None),
            ahead: BytesMut::new(),
            closed: false,
            digest: std::sync::OnceLock::new(),
            watch_for_switch: false,
        }
    }

    /// The unfenced stream, for reading request heads.
    pub fn inner_mut(&mut self) -> &mut Stream {
        &mut self.inner
    }

    /// Frees the socket digest a session asked for (a cleartext connection's, about 400
    /// bytes), so that a long-idle connection does not keep it; the next request makes it
    /// again.
    pub fn forget_digest(&mut self) {
        self.digest.take();
    }

    pub fn into_inner(self) -> Stream {
        self.inner
    }

    /// Bytes read past the end of the last request, taken for the next head.
    pub fn take_ahead(&mut self) -> BytesMut {
        std::mem::take(&mut self.ahead)
    }

    /// Whether the current request's body has been read to its end.
    pub fn body_done(&self) -> bool {
        self.body.is_done()
    }

    /// Whether the client closed its side while a request was served.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Starts the next request: `body` is what is left of its body after the bytes already
    /// read with the head, and `ahead` the bytes read past its end.
    pub fn begin(&mut self, body: BodyFraming, ahead: BytesMut, upgrade: bool) {
        self.body = body;
        self.ahead = ahead;
        self.watch_for_switch = upgrade;
    }

    /// The connection switched protocols (a `101` was written): nothing is fenced off any
    /// more. The edge calls it itself when it wrote the `101` past the fence (a WebSocket
    /// subscriber's handshake).
    pub fn switched(&mut self) {
        self.watch_for_switch = false;
        self.body = BodyFraming::unbounded();
    }

    /// Looks at the start of a response head written to an `Upgrade` request: a `101` makes
    /// the connection a tunnel; any other final status ends the watch (`1xx` may precede it).
    fn watch_response(&mut self, written: &[u8]) {
        let status = match written {
            [b'H', b'T', b'T', b'P', b'/', b'1', b'.', _, b' ', status @ ..] => status,
            _ => return,
        };
        match status {
            [b'1', b'0', b'1', ..] => self.switched(),
            [b'1', ..] => {}
            _ => self.watch_for_switch = false,
        }
    }

    /// After the request's end: reads whatever comes into `ahead`, reporting only a close.
    fn poll_past_end(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.closed {
                return Poll::Ready(Ok(()));
            }
            if self.ahead.len() >= AHEAD_LIMIT {
                // Not woken again: the request in progress ends some other way.
                return Poll::Pending;
            }
            let mut chunk = [0u8; 2048];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut self.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    if read.filled().is_empty() {
                        self.closed = true;
                        return Poll::Ready(Ok(()));
                    }
                    self.ahead.extend_from_slice(read.filled());
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncRead for Fence {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.body.is_done() {
            return this.poll_past_end(cx);
        }
        if !this.ahead.is_empty() {
            // What the client sent before the switch to a tunnel is the tunnel's first bytes.
            let n = this.ahead.len().min(buf.remaining());
            buf.put_slice(&this.ahead.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let read = &buf.filled()[before..];
        if read.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let used = this.body.advance(read).map_err(framing_error)?;
        if used < read.len() {
            this.ahead.extend_from_slice(&read[used..]);
            buf.set_filled(before + used);
        }
        Poll::Ready(Ok(()))
    }
}

impl Fence {
    /// Sends what was gathered; ready when nothing is left.
    fn poll_send_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let written =
                std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..written);
        }
        self.pending = Vec::new();
        Poll::Ready(Ok(()))
    }

    /// Gathers `buf` when it is small, or sends it after what was gathered.
    fn poll_gather(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.pending.len() + buf.len() <= WRITE_BUFFER {
            if self.pending.capacity() == 0 {
                self.pending.reserve_exact(WRITE_BUFFER);
            }
            self.pending.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        std::task::ready!(self.poll_send_pending(cx))?;
        if buf.len() < WRITE_BUFFER {
            return self.poll_gather(cx, buf);
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
}

impl AsyncWrite for Fence {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.watch_for_switch {
            this.watch_response(buf);
        }
        this.poll_gather(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_send_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_send_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Fence {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for Fence {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Fence {
    fn get_ssl(&self) -> Option<&pingora_core::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<std::sync::Arc<pingora_core::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<pingora_core::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Fence {
    fn get_timing_digest(&self) -> Vec<Option<pingora_core::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> std::time::Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> std::time::Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Fence {
    fn get_proxy_digest(
        &self,
    ) -> Option<std::sync::Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for Fence {
    fn get_socket_digest(&self) -> Option<std::sync::Arc<SocketDigest>> {
        if let Some(digest) = self.digest.get() {
            return Some(digest.clone());
        }
        let digest = self.inner.get_socket_digest()?;
        // Kept for the rest of the request: a cleartext stream makes a new one at every call.
        Some(self.digest.get_or_init(|| digest).clone())
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.digest = std::sync::OnceLock::from(std::sync::Arc::new(digest));
    }
}

/// Peeking would look past the fence.
#[async_trait]
impl Peek for Fence {}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (Fence, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let stream: Stream = Box::new(pingora_core::protocols::l4::stream::Stream::from(server));
        (Fence::new(stream), client)
    }

    #[tokio::test]
    async fn reads_stop_at_the_end_of_the_body_and_keep_the_rest() {
        let (mut fence, mut client) = pair().await;
        fence.begin(BodyFraming::new(Framing::Length(5)), BytesMut::new(), false);
        client
            .write_all(b"helloGET / HTTP/1.1\r\n")
            .await
            .expect("write");
        let mut body = Vec::new();
        while body.len() < 5 {
            let mut buf = [0u8; 64];
            let n = fence.read(&mut buf).await.expect("read");
            body.extend_from_slice(&buf[..n]);
        }
        assert_eq!(body, b"hello");
        // Past the end, a read only waits (the bytes are held), until the client closes.
        let mut buf = [0u8; 64];
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(100), fence.read(&mut buf)).await;
        assert!(early.is_err(), "a read past the body must wait");
        drop(client);
        assert_eq!(fence.read(&mut buf).await.expect("eof"), 0);
        assert!(fence.closed());
        assert_eq!(&fence.take_ahead()[..], b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_malformed_chunk_is_a_read_error_that_names_it() {
        let (mut fence, mut client) = pair().await;
        fence.begin(BodyFraming::new(Framing::Chunked), BytesMut::new(), false);
        client
            .write_all(b"5\r\nhello\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        let error = loop {
            match fence.read(&mut buf).await {
                Ok(_) => continue,
                Err(error) => break error,
            }
        };
        let reason = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<FramingError>());
        assert_eq!(reason, Some(&FramingError::EmptySize));
    }

    #[tokio::test]
    async fn a_101_turns_the_connection_into_a_tunnel_and_nothing_else_does() {
        let (mut fence, mut client) = pair().await;
        fence.begin(BodyFraming::new(Framing::None), BytesMut::new(), true);
        client.write_all(b"early").await.expect("write");
        let mut buf = [0u8; 64];
        // Before the answer, the bytes are held as if they were a next request.
        let held =
            tokio::time::timeout(std::time::Duration::from_millis(100), fence.read(&mut buf)).await;
        assert!(held.is_err());
        fence
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .expect("write");
        fence
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
            .await
            .expect("write");
        let n = fence.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"early");
        client.write_all(b"frame").await.expect("write");
        let n = fence.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"frame");

        // A final answer other than 101 ends the watch: the fence stays shut.
        let (mut fence, mut client) = pair().await;
        fence.begin(BodyFraming::new(Framing::None), BytesMut::new(), true);
        fence
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .expect("write");
        fence
            .write_all(b"HTTP/1.1 101 not a head")
            .await
            .expect("write");
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        let held =
            tokio::time::timeout(std::time::Duration::from_millis(100), fence.read(&mut buf)).await;
        assert!(held.is_err(), "a non-101 answer must keep the fence");
    }
}
