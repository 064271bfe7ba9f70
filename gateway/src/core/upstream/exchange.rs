//! The upstream exchange for calls the gateway makes itself (re-polled, coalesced, fanned-in
//! and job calls): one request to a pool's target, the whole answer back, through Pingora's one
//! pooled connector. Target choice and connect retries are the pool's (`Pool::next_target`).

use crate::core::upstream::Pool;
use crate::observe::labels;
use crate::observe::metrics::METRICS;
use crate::observe::trace::Attempt;
use crate::problem::Problem;
use bytes::{Bytes, BytesMut};
use pingora_error::ErrorType;
use pingora_http::RequestHeader;
use std::sync::Arc;
use std::time::Instant;

/// The largest upstream answer a directly answered route buffers.
pub const MAX_BUFFERED: usize = 10 << 20;

/// Hop-by-hop headers, never forwarded (RFC 9110 §7.6.1), plus framing the gateway sets itself.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "content-length",
];

/// An upstream's answer, whole.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn content_type(&self) -> Option<&str> {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
    }
}

/// Why an upstream gave no (usable) answer — to a call the gateway made, or to a proxied
/// request — and, in [`UpstreamError::problem`], what the client is told then.
#[derive(Clone, Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no target of upstream `{0}` is available")]
    NoTarget(Arc<str>),
    #[error("upstream `{0}` refused or dropped the connection")]
    Failed(Arc<str>),
    #[error("upstream `{0}` did not answer in time")]
    Timeout(Arc<str>),
    #[error("the answer of upstream `{0}` is larger than {1} bytes")]
    TooLarge(Arc<str>, usize),
    #[error("the call to upstream `{0}` was cancelled")]
    Cancelled(Arc<str>),
}

impl UpstreamError {
    /// The failure of upstream `name` that Pingora's `error` reports.
    pub fn of(name: Arc<str>, error: &pingora_error::Error) -> Self {
        match error.etype() {
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                UpstreamError::Timeout(name)
            }
            ErrorType::ConnectNoRoute => UpstreamError::NoTarget(name),
            _ => UpstreamError::Failed(name),
        }
    }

    /// The short outcome word used in `Holdfast-Upstreams` and problem bodies.
    pub fn label(&self) -> &'static str {
        match self {
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::TooLarge(..) => "too-large",
            UpstreamError::Cancelled(_) => "cancelled",
            UpstreamError::NoTarget(_) | UpstreamError::Failed(_) => "error",
        }
    }

    /// The answer a client gets when this call was all there was to answer with.
    pub fn problem(&self) -> Problem {
        match self {
            UpstreamError::Timeout(_) => {
                Problem::new(504, "upstream-timeout", "Gateway Timeout", self.to_string())
            }
            UpstreamError::NoTarget(_) => {
                Problem::new(502, "upstream-unavailable", "Bad Gateway", self.to_string())
            }
            UpstreamError::TooLarge(..) => {
                Problem::new(502, "upstream-too-large", "Bad Gateway", self.to_string())
            }
            UpstreamError::Failed(_) | UpstreamError::Cancelled(_) => {
                Problem::new(502, "upstream-failed", "Bad Gateway", self.to_string())
            }
        }
    }
}

pub type CallResult = Result<Answer, UpstreamError>;

/// The request the gateway sends upstream, built once per client request.
#[derive(Clone)]
pub struct OutboundRequest {
    pub header: RequestHeader,
    pub body: Bytes,
    /// The client request's span, which each attempt's client span is a child of.
    pub trace: Option<crate::observe::trace::SpanParent>,
}

impl OutboundRequest {
    /// The same request with another path (the query is kept).
    pub fn with_path(&self, path: &str) -> Self {
        let mut request = self.clone();
        let uri = match self.header.uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path.to_owned(),
        };
        if let Ok(uri) = uri.parse() {
            request.header.set_uri(uri);
        }
        request
    }
}

/// One call to `pool`: a target by round robin (the next one when connecting fails), the
/// request, the whole answer up to `max_body` bytes. Counted in the upstream metrics.
pub async fn send(pool: &Pool, request: &OutboundRequest, max_body: usize) -> CallResult {
    let result = match open(pool, request).await {
        Ok(answer) => answer.read_whole(max_body).await,
        Err(error) => Err(error),
    };
    count(pool, result.as_ref().map_or(0, |answer| answer.status));
    result
}

/// Counts one call to `pool` in `holdfast_upstream_requests_total` (`code` 0: no answer).
pub fn count(pool: &Pool, code: u16) {
    METRICS
        .upstream_requests
        .with_label_values(&[&*pool.name, labels::code(code)])
        .inc();
}

/// An upstream's answer whose head has come and whose body is read as it comes.
pub struct Opened {
    pub status: u16,
    pub headers: http::HeaderMap,
    session: pingora_core::protocols::http::client::HttpSession,
    peer: pingora_core::upstreams::peer::HttpPeer,
    name: Arc<str>,
    span: Option<Attempt>,
    method: http::Method,
}

impl Opened {
    /// The next piece of the body; `None` at its end (the connection then goes back to the
    /// pool).
    pub async fn next(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        match self.session.read_response_body().await {
            Ok(chunk) => Ok(chunk),
            Err(error) => {
                if let Some(mut span) = self.span.take() {
                    span.status = None;
                    span.end(self.method.as_str(), Some(failure_word(&error)));
                }
                Err(UpstreamError::of(self.name.clone(), &error))
            }
        }
    }

    /// The whole body, up to `max_body` bytes, as an [`Answer`].
    pub async fn read_whole(mut self, max_body: usize) -> CallResult {
        let mut body = BytesMut::new();
        while let Some(chunk) = self.next().await? {
            if body.len() + chunk.len() > max_body {
                if let Some(span) = self.span.take() {
                    span.end(self.method.as_str(), Some("too-large"));
                }
                return Err(UpstreamError::TooLarge(self.name.clone(), max_body));
            }
            body.extend_from_slice(&chunk);
        }
        let status = self.status;
        let headers = std::mem::take(&mut self.headers);
        self.finish().await;
        Ok(Answer {
            status,
            headers,
            body: body.freeze(),
        })
    }

    /// The body was read to its end: the span ends and the connection goes back to the pool.
    pub async fn finish(mut self) {
        if let Some(span) = self.span.take() {
            span.end(self.method.as_str(), None);
        }
        let idle = self.peer.options.idle_timeout;
        crate::core::outbound::connector()
            .release_http_session(self.session, &self.peer, idle)
            .await;
    }
}

/// Sends `request` to `pool` and waits for the answer's head: a target by round robin, the next
/// one when connecting fails, a pooled connection the upstream had closed tried again.
pub async fn open(pool: &Pool, request: &OutboundRequest) -> Result<Opened, UpstreamError> {
    let started = Instant::now();
    let name = &pool.name;
    let method = &request.header.method;
    let mut tried = Vec::new();
    let mut stale_retries = 0;
    loop {
        let Some(peer) = pool.next_attempt(&mut tried) else {
            return Err(UpstreamError::NoTarget(name.clone()));
        };
        // A client span per attempt, its id sent upstream in `traceparent`.
        let mut span = request
            .trace
            .as_ref()
            .zip(tried.last().copied())
            .map(|(trace, target)| Attempt {
                span: trace.child(),
                target,
                upstream: name.clone(),
                resend: tried.len() - 1 + stale_retries,
                status: None,
            });
        let (mut session, reused) = match crate::core::outbound::connector()
            .get_http_session(&peer)
            .await
        {
            Ok(session) => session,
            Err(error) => {
                if let Some(span) = span {
                    span.end(method.as_str(), Some("connect"));
                }
                if pool.may_retry_connect(&tried) {
                    continue;
                }
                return Err(UpstreamError::of(name.clone(), &error));
            }
        };
        let mut header = Box::new(request.header.clone());
        if let Some(span) = &span {
            span.span.propagate(&mut header);
        }
        let sent = async {
            session.write_request_header(header).await?;
            if request.body.is_empty() {
                session.finish_request_body().await?;
            } else {
                session
                    .write_request_body(request.body.clone(), true)
                    .await?;
            }
            session.read_response_header().await
        }
        .await;
        if let Err(error) = sent {
            if let Some(span) = span {
                span.end(method.as_str(), Some(failure_word(&error)));
            }
            // A pooled connection the upstream closed while idle: nothing was processed.
            if reused && stale_retries < 2 {
                stale_retries += 1;
                // The same target again: it did not fail, its idle connection did.
                tried.pop();
                continue;
            }
            return Err(UpstreamError::of(name.clone(), &error));
        }
        let (status, headers) = match session.response_header() {
            Some(header) => (header.status.as_u16(), header.headers.clone()),
            None => return Err(UpstreamError::Failed(name.clone())),
        };
        if let Some(span) = &mut span {
            span.status = Some(status);
        }
        METRICS
            .upstream_duration
            .with_label_values(&[&**name])
            .observe(started.elapsed().as_secs_f64());
        return Ok(Opened {
            status,
            headers,
            session,
            peer,
            name: name.clone(),
            span,
            method: method.clone(),
        });
    }
}

/// What a failed attempt's span says of it (`error.type`).
pub fn failure_word(error: &pingora_error::Error) -> &'static str {
    UpstreamError::of(Arc::from(""), error).label()
}
