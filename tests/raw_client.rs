//! HTTP/1.1 over a raw socket, for tests that must send exactly the bytes they mean — malformed
//! heads, pipelined requests, trickled bodies — and see exactly what comes back: whole responses
//! (status, headers, a body framed by `Content-Length`, chunked or the close), a bare close, or
//! nothing before a deadline. Also the framing helpers the recording origin (raw_origin.rs)
//! shares: where a head ends, and a strict chunked-body decoder.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;

/// One complete response read from the socket.
#[derive(Clone, Debug)]
pub struct RawResponse {
    pub status: u16,
    /// The status line as sent (`HTTP/1.1 404 Not Found`).
    pub status_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

impl fmt::Display for RawResponse {
    /// `404 [content-type: …] body`, shortened: what a failure message needs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [content-type: {}] {}",
            self.status_line,
            self.header("content-type").unwrap_or("-"),
            shorten(&self.body, 300)
        )
    }
}

/// Why no (further) response could be read.
#[derive(Clone, Debug)]
pub enum ReadError {
    /// The server closed the connection; `partial` is what came before the close.
    Closed { partial: Vec<u8> },
    /// Nothing complete before the deadline; `partial` is what came.
    TimedOut { partial: Vec<u8>, after: Duration },
    /// The connection was reset or another socket error happened.
    Io { error: String, partial: Vec<u8> },
    /// Bytes came that are not an HTTP/1.1 response.
    Malformed { why: String, partial: Vec<u8> },
}

impl ReadError {
    /// A close (or reset) with not one byte of an answer.
    pub fn is_bare_close(&self) -> bool {
        matches!(self, Self::Closed { partial } | Self::Io { partial, .. } if partial.is_empty())
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed { partial } if partial.is_empty() => {
                write!(f, "connection closed with no answer (bare close)")
            }
            Self::Closed { partial } => write!(
                f,
                "connection closed in the middle of an answer: {}",
                shorten(partial, 300)
            ),
            Self::TimedOut { partial, after } if partial.is_empty() => {
                write!(f, "no answer within {after:?}")
            }
            Self::TimedOut { partial, after } => write!(
                f,
                "no complete answer within {after:?}; got: {}",
                shorten(partial, 300)
            ),
            Self::Io { error, partial } => write!(
                f,
                "socket error {error} after {} bytes: {}",
                partial.len(),
                shorten(partial, 300)
            ),
            Self::Malformed { why, partial } => {
                write!(f, "not an HTTP response ({why}): {}", shorten(partial, 300))
            }
        }
    }
}

/// Bytes for a message: lossy UTF-8 with control characters escaped, cut at `max` chars.
pub fn shorten(bytes: &[u8], max: usize) -> String {
    let text: String = String::from_utf8_lossy(bytes).escape_debug().collect();
    if text.chars().count() > max {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// One client connection.
pub struct RawClient {
    reader: OwnedReadHalf,
    writer: Option<OwnedWriteHalf>,
    buffer: Vec<u8>,
    eof: bool,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (reader, writer) = stream.into_split();
        Self {
            reader,
            writer: Some(writer),
            buffer: Vec::new(),
            eof: false,
        }
    }

    /// Writes `bytes` (one write call, so pipelined requests leave in one segment when they fit).
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let writer = self.writer.as_mut().expect("the writer was taken");
        writer.write_all(bytes).await?;
        writer.flush().await
    }

    /// The writing half, for a task that trickles bytes while this client reads.
    pub fn take_writer(&mut self) -> OwnedWriteHalf {
        self.writer.take().expect("the writer was taken")
    }

    /// Reads one complete response (interim 1xx answers are skipped) within `timeout`.
    pub async fn read_response(&mut self, timeout: Duration) -> Result<RawResponse, ReadError> {
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            match parse_response(&self.buffer) {
                Err(why) => {
                    return Err(ReadError::Malformed {
                        why,
                        partial: self.buffer.clone(),
                    })
                }
                Ok(Parsed::Done(response, used)) => {
                    self.buffer.drain(..used);
                    if (100..200).contains(&response.status) {
                        continue;
                    }
                    return Ok(response);
                }
                Ok(Parsed::UntilClose(mut response, head)) if self.eof => {
                    response.body = self.buffer[head..].to_vec();
                    self.buffer.clear();
                    return Ok(response);
                }
                Ok(_) if self.eof => {
                    return Err(ReadError::Closed {
                        partial: std::mem::take(&mut self.buffer),
                    })
                }
                Ok(_) => {}
            }
            self.fill(deadline, started).await?;
        }
    }

    /// Reads `count` responses in a row; on failure, the ones read and why the next was not.
    pub async fn read_responses(
        &mut self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<RawResponse>, (Vec<RawResponse>, ReadError)> {
        let deadline = Instant::now() + timeout;
        let mut responses = Vec::with_capacity(count);
        while responses.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_response(left).await {
                Ok(response) => responses.push(response),
                Err(error) => return Err((responses, error)),
            }
        }
        Ok(responses)
    }

    /// Reads until the server closes (true) or `timeout` passes (false); returns what came
    /// after the responses already read.
    pub async fn read_to_close(&mut self, timeout: Duration) -> (Vec<u8>, bool) {
        let started = Instant::now();
        let deadline = started + timeout;
        while !self.eof {
            if self.fill(deadline, started).await.is_err() {
                break;
            }
        }
        (std::mem::take(&mut self.buffer), self.eof)
    }

    /// One read into the buffer; sets `eof` on a close, errs on a timeout or socket error.
    async fn fill(&mut self, deadline: Instant, started: Instant) -> Result<(), ReadError> {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, self.reader.read(&mut chunk)).await {
            Err(_) => Err(ReadError::TimedOut {
                partial: self.buffer.clone(),
                after: started.elapsed(),
            }),
            Ok(Ok(0)) => {
                self.eof = true;
                Ok(())
            }
            Ok(Ok(n)) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            // A reset after a complete answer still leaves that answer readable; a reset is a
            // close for what follows.
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                if self.buffer.is_empty() {
                    Err(ReadError::Io {
                        error: error.to_string(),
                        partial: Vec::new(),
                    })
                } else {
                    self.eof = true;
                    Ok(())
                }
            }
            Ok(Err(error)) => Err(ReadError::Io {
                error: error.to_string(),
                partial: self.buffer.clone(),
            }),
        }
    }
}

/// Sends `bytes` on a fresh connection and reads `count` responses within `timeout`.
pub async fn exchange(
    addr: SocketAddr,
    bytes: &[u8],
    count: usize,
    timeout: Duration,
) -> Result<Vec<RawResponse>, (Vec<RawResponse>, ReadError)> {
    let mut client = RawClient::connect(addr).await;
    if let Err(error) = client.send(bytes).await {
        return Err((
            Vec::new(),
            ReadError::Io {
                error: error.to_string(),
                partial: Vec::new(),
            },
        ));
    }
    client.read_responses(count, timeout).await
}

/// The outcome of parsing a buffer that may hold a message.
pub enum Parsed<T> {
    /// A whole message, and how many bytes it took.
    Done(T, usize),
    /// More bytes are needed.
    Incomplete,
    /// The head (of this many bytes) says the body runs to the close.
    UntilClose(T, usize),
}

/// Where the head in `buffer` ends (just past its `\r\n\r\n`).
pub fn head_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// The header lines of a head (after its first line), as (name, value) with the value trimmed.
pub fn header_lines(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter(|line| !line.is_empty())
        .map(|line| match line.split_once(':') {
            Some((name, value)) => (name.to_owned(), value.trim().to_owned()),
            None => (line.to_owned(), String::new()),
        })
        .collect()
}

/// The body framing of a message with these headers: chunked, or a length, or neither.
pub fn framing(headers: &[(String, String)]) -> Result<Framing, String> {
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    if chunked {
        return Ok(Framing::Chunked);
    }
    match headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        Some((_, value)) => value
            .parse()
            .map(Framing::Length)
            .map_err(|_| format!("bad content-length `{value}`")),
        None => Ok(Framing::None),
    }
}

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Chunked,
    Length(usize),
    None,
}

/// Decodes a chunked body at the start of `buffer`, strictly (hex sizes only, CRLF after each
/// chunk). `Ok(None)`: incomplete. `Ok(Some((body, used)))`: the body and the bytes it took,
/// trailers included.
pub fn decode_chunked(buffer: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_len) = buffer[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = &buffer[at..at + line_len];
        let size = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(size)
            .ok()
            .filter(|s| !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or_else(|| format!("bad chunk size line `{}`", shorten(line, 80)))?;
        at += line_len + 2;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let Some(line_len) = buffer[at..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                at += line_len + 2;
                if line_len == 0 {
                    return Ok(Some((body, at)));
                }
            }
        }
        if buffer.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buffer[at..at + size]);
        if &buffer[at + size..at + size + 2] != b"\r\n" {
            return Err("a chunk is not followed by CRLF".to_owned());
        }
        at += size + 2;
    }
}

fn parse_response(buffer: &[u8]) -> Result<Parsed<RawResponse>, String> {
    if buffer.is_empty() {
        return Ok(Parsed::Incomplete);
    }
    if !b"HTTP/".starts_with(&buffer[..buffer.len().min(5)]) {
        return Err("it does not start with HTTP/".to_owned());
    }
    let Some(end) = head_end(buffer) else {
        return Ok(Parsed::Incomplete);
    };
    let head = String::from_utf8_lossy(&buffer[..end - 4]).into_owned();
    let status_line = head.split("\r\n").next().unwrap_or_default().to_owned();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line `{status_line}`"))?;
    let headers = header_lines(&head);
    let mut response = RawResponse {
        status,
        status_line,
        headers,
        body: Vec::new(),
    };
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Parsed::Done(response, end));
    }
    match framing(&response.headers)? {
        Framing::Chunked => match decode_chunked(&buffer[end..])? {
            Some((body, used)) => {
                response.body = body;
                Ok(Parsed::Done(response, end + used))
            }
            None => Ok(Parsed::Incomplete),
        },
        Framing::Length(length) if buffer.len() >= end + length => {
            response.body = buffer[end..end + length].to_vec();
            Ok(Parsed::Done(response, end + length))
        }
        Framing::Length(_) => Ok(Parsed::Incomplete),
        Framing::None => Ok(Parsed::UntilClose(response, end)),
    }
}
