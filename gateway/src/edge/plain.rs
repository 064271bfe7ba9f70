//! A cleartext TCP connection as Pingora's sessions read it, holding only the socket and the
//! peer's address. Pingora's own stream type keeps timing, tracing and rewind state inline
//! (~384 bytes) and its socket digest three addresses wide (~384 more); a held poll or an idle
//! keep-alive connection needs neither, so the digest is made only when a session asks for it
//! (a proxied request; the fence keeps it until the connection idles for long), and the
//! stream becomes Pingora's own only where Pingora must take it over (h2c). See docs/edge.md.

use async_trait::async_trait;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// An accepted cleartext connection.
#[derive(Debug)]
pub struct PlainStream {
    tcp: TcpStream,
    peer: SocketAddr,
}

impl PlainStream {
    pub fn new(tcp: TcpStream, peer: SocketAddr) -> Self {
        Self { tcp, peer }
    }

    /// Pingora's own stream for this connection, for the parts of Pingora that need that type
    /// (its h2c rewind), with the same peer address.
    pub fn into_l4(self) -> L4Stream {
        let mut stream = L4Stream::from(self.tcp);
        stream.set_socket_digest(digest_of(&stream, self.peer));
        stream
    }
}

/// The client's address on `stream`: read off a cleartext connection without making its
/// digest, or from the digest of any other.
pub fn client_ip(stream: &Stream) -> Option<IpAddr> {
    if let Some(plain) = stream.as_any().downcast_ref::<PlainStream>() {
        return Some(plain.peer.ip());
    }
    let digest = stream.get_socket_digest()?;
    Some(digest.peer_addr()?.as_inet()?.ip())
}

/// A socket digest for `socket` whose peer is `peer` (known from `accept`, so never asked of
/// the kernel).
pub fn digest_of(socket: &impl AsRawFd, peer: SocketAddr) -> SocketDigest {
    let digest = SocketDigest::from_raw_fd(socket.as_raw_fd());
    let _ = digest.peer_addr.set(Some(peer.into()));
    digest
}

impl AsyncRead for PlainStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for PlainStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for PlainStream {
    async fn shutdown(&mut self) {
        if let Err(error) = AsyncWriteExt::shutdown(&mut self.tcp).await {
            tracing::debug!(%error, "cannot shut the connection down");
        }
    }
}

impl UniqueID for PlainStream {
    fn id(&self) -> UniqueIDType {
        self.tcp.as_raw_fd()
    }
}

impl Ssl for PlainStream {}

impl GetTimingDigest for PlainStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl GetProxyDigest for PlainStream {
    fn get_proxy_digest(&self) -> Option<Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
        None
    }
}

/// A new digest at each call: the fence keeps it for as long as a session needs it.
impl GetSocketDigest for PlainStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        Some(Arc::new(digest_of(&self.tcp, self.peer)))
    }
}

/// A true peek: the byte stays in the socket, and no buffer is kept for it.
#[async_trait]
impl Peek for PlainStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        // Nothing peeked means the peer closed: the read that follows tells.
        self.tcp.peek(buf).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn accepted() -> (PlainStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, peer) = listener.accept().await.expect("accept");
        (PlainStream::new(server, peer), client)
    }

    #[tokio::test]
    async fn knows_its_client_and_makes_the_digest_a_session_asks_for() {
        let (plain, client) = accepted().await;
        let client_addr = client.local_addr().expect("addr");
        let stream: Stream = Box::new(plain);
        assert_eq!(client_ip(&stream), Some(client_addr.ip()));
        let digest = stream.get_socket_digest().expect("a digest");
        let peer = digest.peer_addr().and_then(|addr| addr.as_inet().copied());
        assert_eq!(peer, Some(client_addr));
    }

    #[tokio::test]
    async fn peeks_without_taking_and_becomes_pingoras_stream_with_the_same_peer() {
        let (mut plain, mut client) = accepted().await;
        let client_addr = client.local_addr().expect("addr");
        client.write_all(b"hi").await.expect("write");
        let mut first = [0u8; 1];
        assert!(plain.try_peek(&mut first).await.expect("peek"));
        assert_eq!(&first, b"h");
        let mut l4 = plain.into_l4();
        let mut read = [0u8; 2];
        l4.read_exact(&mut read).await.expect("read");
        assert_eq!(&read, b"hi");
        let digest = l4.get_socket_digest().expect("a digest");
        let peer = digest.peer_addr().and_then(|addr| addr.as_inet().copied());
        assert_eq!(peer, Some(client_addr));
    }
}
