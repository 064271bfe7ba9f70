//! Tungstenite's framing over an async connection, from the one task that serves a subscriber.
//!
//! A `WebSocketContext` keeps the protocol's state (partial frames, the closing handshake,
//! queued pongs); each step lends it the connection through a `Read + Write` adapter that turns
//! "not ready" into `WouldBlock`, which tungstenite is built to resume from. This is what
//! tokio-tungstenite does, less its two shared wakers (two `Arc`s per connection): one task
//! reads and writes here, so the waker of the poll at hand serves both.

use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tungstenite::error::Error as WsError;
use tungstenite::protocol::{CloseFrame, WebSocketContext};
use tungstenite::Message as Frame;

/// The connection, lent for one poll.
struct Lent<'a, 'b, S> {
    io: &'a mut S,
    cx: &'a mut Context<'b>,
}

fn would_block<T>(poll: Poll<io::Result<T>>) -> io::Result<T> {
    match poll {
        Poll::Ready(result) => result,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

impl<S: AsyncRead + Unpin> Read for Lent<'_, '_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        would_block(Pin::new(&mut *self.io).poll_read(self.cx, &mut buf))?;
        Ok(buf.filled().len())
    }
}

impl<S: AsyncWrite + Unpin> Write for Lent<'_, '_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        would_block(Pin::new(&mut *self.io).poll_write(self.cx, buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        would_block(Pin::new(&mut *self.io).poll_flush(self.cx))
    }
}

/// Runs `step` with the connection lent; `WouldBlock` is "not yet".
fn lend<S, T>(
    io: &mut S,
    cx: &mut Context<'_>,
    step: impl FnOnce(&mut Lent<'_, '_, S>) -> Result<T, WsError>,
) -> Poll<Result<T, WsError>> {
    match step(&mut Lent { io, cx }) {
        Err(WsError::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
        done => Poll::Ready(done),
    }
}

/// The client's next message or control frame (pings are answered, a close is echoed, as
/// they are read); `None` once the connection is closed.
pub async fn next<S>(context: &mut WebSocketContext, io: &mut S) -> Option<Result<Frame, WsError>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let read = poll_fn(|cx| lend(io, cx, |lent| context.read(lent))).await;
    match read {
        Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => None,
        read => Some(read),
    }
}

/// Sends `frames` (queued together, one flush).
pub async fn send<S>(
    context: &mut WebSocketContext,
    io: &mut S,
    frames: Vec<Frame>,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut frames = frames.into_iter();
    poll_fn(|cx| {
        for frame in frames.by_ref() {
            // A frame the connection cannot take now is queued: the flush sends it.
            if let Poll::Ready(Err(error)) = lend(io, cx, |lent| context.write(lent, frame)) {
                return Poll::Ready(Err(error));
            }
        }
        lend(io, cx, |lent| context.flush(lent))
    })
    .await
}

/// Sends whatever is queued (a pong, the echo of a close).
pub async fn flush<S>(context: &mut WebSocketContext, io: &mut S) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let flushed = poll_fn(|cx| lend(io, cx, |lent| context.flush(lent))).await;
    match flushed {
        // The closing handshake just ended: all was sent.
        Err(WsError::ConnectionClosed) => Ok(()),
        flushed => flushed,
    }
}

/// Starts the closing handshake with `frame`, and sends it.
pub async fn close<S>(
    context: &mut WebSocketContext,
    io: &mut S,
    frame: CloseFrame,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut frame = Some(frame);
    let closed = poll_fn(|cx| {
        if let Some(frame) = frame.take() {
            // Queued even when it cannot go out yet; the flush below sends it.
            if let Poll::Ready(Err(error)) = lend(io, cx, |lent| context.close(lent, Some(frame))) {
                return Poll::Ready(Err(error));
            }
        }
        lend(io, cx, |lent| context.flush(lent))
    })
    .await;
    match closed {
        Err(WsError::ConnectionClosed) => Ok(()),
        closed => closed,
    }
}

/// `frames` as bytes on the wire, to go out right behind the handshake's answer.
pub fn encode(context: &mut WebSocketContext, frames: Vec<Frame>) -> Vec<u8> {
    let mut wire = io::Cursor::new(Vec::new());
    for frame in frames {
        // A `Vec` takes everything: writing to it cannot fail.
        let _ = context.write(&mut wire, frame);
    }
    let _ = context.flush(&mut wire);
    wire.into_inner()
}
