//! The slow-client guard: a bound on the time to receive a request head.
//!
//! Pingora 0.9 reads the request head inside `HttpProxy::process_new_http` with a timeout per
//! `read()` call (`read_timeout`, 60 s by default; the keep-alive timeout on a reused
//! connection), never on the whole head, and no `ProxyHttp` hook runs before the head is
//! parsed. A client trickling one byte per second therefore keeps a connection (and a task)
//! for as long as it likes. So the proxy service is wrapped in [`Guarded`], a `ServerApp` that
//! does what Pingora's own HTTP/1 loop does (`impl ServerApp for HttpServerApp`), except that it
//! first reads the request head itself under `limits.header_timeout`:
//! - a new connection must deliver its whole head within `header_timeout` of being accepted;
//!   a kept-alive one may idle up to `limits.idle_timeout`, then must deliver its head within
//!   `header_timeout` of its first byte;
//! - past the deadline with part of a head received: a `408` problem+json, then the connection
//!   is closed; with nothing received: the connection is closed silently (as nginx does);
//! - a head larger than `limits.max_header_bytes`: `431`, then closed (the bytes are never
//!   buffered past that bound).
//!
//! The bytes read are handed to Pingora's parser as the session's pipelined prefix, so Pingora
//! parses exactly what it would have read itself. Request bodies are bounded separately:
//! `body_timeout` is the per-read timeout and the total (checked per chunk in
//! `request_body_filter`). Serves cleartext HTTP/1, the only kind the listeners accept.

use crate::metrics::METRICS;
use crate::problem::Problem;
use crate::proxy::Gateway;
use crate::runtime::Runtime;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// The proxy service behind the header timeout.
pub struct Guarded {
    pub proxy: Arc<HttpProxy<Gateway>>,
    pub runtime: Arc<Runtime>,
}

/// How reading a request head ended.
enum Head {
    Complete(BytesMut),
    /// The client closed, idled out or the server is shutting down: close quietly.
    Closed,
    TimedOut,
    TooLarge(usize),
}

struct Settings {
    header_timeout: Duration,
    idle_timeout: Duration,
    body_timeout: Duration,
    max_header_bytes: usize,
}

impl Guarded {
    fn settings(&self) -> Settings {
        let state = self.runtime.state.load();
        let limits = &state.config.limits;
        Settings {
            header_timeout: limits.header_timeout.get(),
            idle_timeout: limits.idle_timeout.get(),
            body_timeout: limits.body_timeout.get(),
            max_header_bytes: state.max_header_bytes,
        }
    }
}

/// Whether `buf` holds a whole head (an empty line after the request line and headers).
fn head_complete(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(3);
    buf[start..].windows(2).enumerate().any(|(i, w)| {
        w == b"\n\n" || (w == b"\r\n" && start + i >= 2 && buf[start + i - 1] == b'\n')
    })
}

async fn read_head(
    stream: &mut Stream,
    reused: bool,
    settings: &Settings,
    shutdown: &mut ShutdownWatch,
) -> Head {
    let mut buf = BytesMut::with_capacity(4096);
    let mut deadline = Instant::now() + settings.header_timeout;
    if reused {
        // Idle until the next request's first byte, then the head timeout starts.
        let idle = Instant::now() + settings.idle_timeout;
        tokio::select! {
            read = stream.read_buf(&mut buf) => match read {
                Ok(n) if n > 0 => deadline = Instant::now() + settings.header_timeout,
                _ => return Head::Closed,
            },
            _ = tokio::time::sleep_until(idle) => return Head::Closed,
            _ = shutdown.changed() => return Head::Closed,
        }
    }
    loop {
        if head_complete(&buf, 0) {
            return Head::Complete(buf);
        }
        if buf.len() > settings.max_header_bytes {
            return Head::TooLarge(settings.max_header_bytes);
        }
        let before = buf.len();
        tokio::select! {
            read = stream.read_buf(&mut buf) => match read {
                Ok(n) if n > 0 => {}
                _ => return Head::Closed,
            },
            _ = tokio::time::sleep_until(deadline) => {
                return if before == 0 { Head::Closed } else { Head::TimedOut };
            }
            _ = shutdown.changed(), if before == 0 => return Head::Closed,
        }
    }
}

/// Writes `problem` on the raw connection, closing it.
async fn refuse(stream: &mut Stream, problem: &Problem) {
    let body = problem.body();
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncache-control: no-store\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        problem.status,
        problem.title,
        body.len()
    );
    let written = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.flush().await?;
        stream.shutdown().await
    };
    if let Err(error) = tokio::time::timeout(Duration::from_secs(1), written).await {
        tracing::debug!(%error, "cannot write the refusal to a slow client");
    }
}

#[async_trait]
impl ServerApp for Guarded {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut shutdown = shutdown.clone();
        let mut stream = stream;
        let mut persistent = None;
        let mut reused = false;
        loop {
            let settings = self.settings();
            let head = read_head(&mut stream, reused, &settings, &mut shutdown).await;
            let prefix = match head {
                Head::Complete(prefix) => prefix,
                Head::Closed => return None,
                Head::TimedOut => {
                    METRICS
                        .limit_rejections
                        .with_label_values(&["none", "slow_client"])
                        .inc();
                    let problem = super::request_timeout(&format!(
                        "the request head did not arrive within {:?}",
                        settings.header_timeout
                    ));
                    refuse(&mut stream, &problem).await;
                    return None;
                }
                Head::TooLarge(max) => {
                    METRICS
                        .limit_rejections
                        .with_label_values(&["none", "header"])
                        .inc();
                    let problem = Problem::new(
                        431,
                        "header-too-large",
                        "Request Header Fields Too Large",
                        format!("the request head is larger than {max} bytes"),
                    );
                    refuse(&mut stream, &problem).await;
                    return None;
                }
            };
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = persistent.take() {
                pingora_core::apps::HttpPersistentSettings::apply_to_session(
                    settings,
                    &mut session,
                );
            }
            let idle = settings.idle_timeout.as_secs();
            if *shutdown.borrow() || idle == 0 {
                session.set_keepalive(None);
            } else {
                session.set_keepalive(Some(idle));
            }
            session.set_read_timeout(Some(settings.body_timeout));
            session.set_pipelined_prefix(prefix);
            let reusable = self.proxy.process_new_http(session, &shutdown).await?;
            let (next, settings) = reusable.consume();
            stream = next;
            persistent = settings;
            reused = true;
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_end_of_a_head() {
        assert!(super::head_complete(
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            0
        ));
        assert!(super::head_complete(b"GET / HTTP/1.1\nHost: x\n\n", 0));
        assert!(!super::head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n", 0));
        assert!(!super::head_complete(b"GET / HTTP/1.1\r\n", 0));
    }
}
