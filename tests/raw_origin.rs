//! A recording origin on raw TCP: it keeps the exact head and the decoded body of every complete
//! request it receives (framed by `Content-Length` or chunked), counts connections and bytes,
//! and answers each request `200` with its request line as the body, keep-alive — optionally
//! after a delay, to stand for a slow upstream. Unlike the axum origin it sees the request line
//! byte for byte (`GET /pub/../x`, `ET /x`), which is what the security tests assert on.

use crate::raw_client::{decode_chunked, framing, head_end, header_lines, Framing};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One complete request as the origin received it.
#[derive(Clone, Debug)]
pub struct RawSeen {
    /// The request line and header lines exactly as sent, joined by CRLF, without the blank
    /// line that ends the head.
    pub head: String,
    /// The body, decoded from its framing.
    pub body: Vec<u8>,
}

impl RawSeen {
    /// `GET /path HTTP/1.1`.
    pub fn request_line(&self) -> &str {
        self.head.split("\r\n").next().unwrap_or_default()
    }

    /// Every header line as (name as sent, trimmed value), in order.
    pub fn headers(&self) -> Vec<(String, String)> {
        header_lines(&self.head)
    }

    /// The values of every header of that name (case-insensitive), in order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers()
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }
}

#[derive(Default)]
struct Record {
    seen: Mutex<Vec<RawSeen>>,
    connections: AtomicUsize,
    bytes: AtomicUsize,
}

/// A running raw origin; stops (every connection included) when dropped.
pub struct RawOrigin {
    pub addr: SocketAddr,
    record: Arc<Record>,
    task: tokio::task::JoinHandle<()>,
}

impl RawOrigin {
    /// An origin that answers at once.
    pub async fn start() -> Self {
        Self::with_delay(Duration::ZERO).await
    }

    /// An origin that waits `delay` after reading each request before answering it.
    pub async fn with_delay(delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind raw origin");
        let addr = listener.local_addr().expect("raw origin addr");
        let record = Arc::new(Record::default());
        let shared = record.clone();
        let task = tokio::spawn(async move {
            // The connections live in this set: aborting the accept task drops them all.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                connections.spawn(serve(stream, shared.clone(), delay));
                while connections.try_join_next().is_some() {}
            }
        });
        Self { addr, record, task }
    }

    /// Every complete request received, in order.
    pub fn requests(&self) -> Vec<RawSeen> {
        self.record.seen.lock().expect("lock").clone()
    }

    /// Connections accepted.
    pub fn connections(&self) -> usize {
        self.record.connections.load(Ordering::SeqCst)
    }

    /// Bytes received on all connections, complete requests or not.
    pub fn bytes_received(&self) -> usize {
        self.record.bytes.load(Ordering::SeqCst)
    }
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: tokio::net::TcpStream, record: Arc<Record>, delay: Duration) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        loop {
            match parse_request(&buffer) {
                Ok(Some((seen, used, close))) => {
                    buffer.drain(..used);
                    let line = seen.request_line().to_owned();
                    record.seen.lock().expect("lock").push(seen);
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let body = format!("{line}\n");
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() || close {
                        return;
                    }
                }
                Ok(None) => break,
                Err(why) => {
                    let body = format!("raw origin: {why}\n");
                    let answer = format!(
                        "HTTP/1.1 400 Bad Request\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    return;
                }
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                record.bytes.fetch_add(n, Ordering::SeqCst);
                buffer.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// A complete request at the start of `buffer`: (what was seen, bytes used, `Connection: close`).
fn parse_request(buffer: &[u8]) -> Result<Option<(RawSeen, usize, bool)>, String> {
    let Some(end) = head_end(buffer) else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buffer[..end - 4]).into_owned();
    let headers = header_lines(&head);
    let close = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close"));
    let (body, used) = match framing(&headers)? {
        Framing::Chunked => match decode_chunked(&buffer[end..])? {
            Some((body, used)) => (body, end + used),
            None => return Ok(None),
        },
        Framing::Length(length) if buffer.len() >= end + length => {
            (buffer[end..end + length].to_vec(), end + length)
        }
        Framing::Length(_) => return Ok(None),
        Framing::None => (Vec::new(), end),
    };
    Ok(Some((RawSeen { head, body }, used, close)))
}
