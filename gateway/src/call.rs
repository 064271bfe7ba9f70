//! Upstream calls the gateway makes itself — for `upstream` routes with
//! `repoll_on`, `coalesce` or `cache`, and for the fan-in and job actions — instead of going
//! through Pingora's proxy phases.
//!
//! **Why locally.** Pingora's proxy path sends the request once and streams the answer back; it
//! cannot ask again after a `204`, nor share one upstream answer between many clients. So such
//! routes are answered in `request_filter`: the request is built once ([`OutboundRequest::build`]:
//! the client's head with hop-by-hop headers dropped, `X-Forwarded-*` and `X-Request-Id` set, the
//! credential stripped and claims copied by `authn`, the mapping applied by `mapped`), the body
//! read whole (up to the route's `max_body`), and each attempt ([`send`]) goes through Pingora's
//! one pooled `Connector` to a target the pool picks round robin, with the upstream's connect,
//! read and write timeouts. A connect failure moves on to the next target (the upstream's
//! `retries`); a reused pooled connection that turns out dead is replaced once.
//!
//! **Cancellation** is dropping the future: the upstream connection is then closed (not returned
//! to the pool), which the upstream sees as a disconnect.
//!
//! **Re-poll** ([`until_ready`]): while the upstream answers one of `repoll_on`'s statuses the
//! call is made again after a back-off (`initial`, doubled up to `max`) until another answer or
//! the end of the hold; the client then gets the route's timeout answer, `204`.
//!
//! Answers are buffered (they may be shared, merged or stored), up to [`MAX_BUFFERED`] for
//! routes answered directly; larger ones are a 502.
//!
//! Files: `call/answer.rs` (writing the answer to the client).

pub mod answer;

use crate::coalesce;
use crate::ctx::RequestCtx;
use crate::metrics::METRICS;
use crate::problem::Problem;
use crate::runtime::Runtime;
use crate::upstream::Pool;
use crate::{labels, mapped};
use bytes::{Bytes, BytesMut};
use pingora_error::ErrorType;
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest upstream answer a directly answered route buffers.
pub const MAX_BUFFERED: usize = 10 << 20;

/// The default hold of a re-polling or fan-in route.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(30);

/// Hop-by-hop headers, never forwarded (RFC 9110 §7.6.1), plus framing the gateway sets itself.
const HOP_BY_HOP: &[&str] = &[
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

/// Why an upstream call gave no answer.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CallError {
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

impl CallError {
    /// The short outcome word used in `Holdfast-Upstreams` and problem bodies.
    pub fn label(&self) -> &'static str {
        match self {
            CallError::Timeout(_) => "timeout",
            CallError::TooLarge(..) => "too-large",
            CallError::Cancelled(_) => "cancelled",
            CallError::NoTarget(_) | CallError::Failed(_) => "error",
        }
    }

    /// The answer a client gets when this call was all there was to answer with.
    pub fn problem(&self) -> Problem {
        match self {
            CallError::Timeout(_) => {
                Problem::new(504, "upstream-timeout", "Gateway Timeout", self.to_string())
            }
            CallError::NoTarget(_) => {
                Problem::new(502, "upstream-unavailable", "Bad Gateway", self.to_string())
            }
            CallError::TooLarge(..) => {
                Problem::new(502, "upstream-too-large", "Bad Gateway", self.to_string())
            }
            CallError::Failed(_) | CallError::Cancelled(_) => {
                Problem::new(502, "upstream-failed", "Bad Gateway", self.to_string())
            }
        }
    }
}

pub type CallResult = Result<Answer, CallError>;

/// The request the gateway sends upstream, built once per client request.
#[derive(Clone)]
pub struct OutboundRequest {
    pub header: RequestHeader,
    pub body: Bytes,
}

/// A request that arrived over HTTP/2 is written upstream as HTTP/1.1 (Pingora's HTTP/2
/// client sets its own version when the pool speaks HTTP/2), its `:authority` becoming the
/// `Host` header, as Pingora's proxy does for proxied requests.
fn as_http1(header: &mut RequestHeader) -> pingora_error::Result<()> {
    if header.version != http::Version::HTTP_2 {
        return Ok(());
    }
    header.set_version(http::Version::HTTP_11);
    if header.headers.contains_key(http::header::HOST) {
        return Ok(());
    }
    let authority = header.uri.authority().map(|a| a.as_str().to_owned());
    match authority {
        Some(authority) if !authority.contains('@') => {
            header.insert_header(http::header::HOST, authority)
        }
        _ => Ok(()),
    }
}

impl OutboundRequest {
    /// Builds the upstream request from the client's: reads the body (up to the route's
    /// `max_body`; more is a 413), drops hop-by-hop headers, sets the forwarding headers, strips
    /// the credential and applies the route's mapping.
    pub async fn build(
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<Result<Self, Problem>> {
        let max_body = ctx.route.as_ref().map_or(1 << 20, |route| route.max_body);
        let body = match crate::body::read_whole(session, max_body, ctx.body_timeout()).await? {
            Ok(body) => body,
            Err(problem) => return Ok(Err(problem)),
        };
        let mut header = session.req_header().clone();
        for name in HOP_BY_HOP {
            header.remove_header(*name);
        }
        as_http1(&mut header)?;
        crate::proxy::prepare_upstream_request(session, &mut header, ctx)?;
        let mut body = Some(body);
        mapped::request_body(&mut body, true, ctx)?;
        let body = body.unwrap_or_default();
        if !body.is_empty() || !matches!(header.method, http::Method::GET | http::Method::HEAD) {
            header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        }
        Ok(Ok(Self { header, body }))
    }

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
    let started = Instant::now();
    let result = exchange(pool, request, max_body, started).await;
    let code = result.as_ref().map_or(0, |answer| answer.status);
    METRICS
        .upstream_requests
        .with_label_values(&[&*pool.name, labels::code(code)])
        .inc();
    result
}

async fn exchange(
    pool: &Pool,
    request: &OutboundRequest,
    max_body: usize,
    started: Instant,
) -> CallResult {
    let name = &pool.name;
    let mut tried = Vec::new();
    let mut stale_retries = 0;
    loop {
        let Some(addr) = pool.select(&tried) else {
            return Err(CallError::NoTarget(name.clone()));
        };
        let peer = pool.peer(addr);
        let (mut session, reused) = match crate::outbound::connector().get_http_session(&peer).await
        {
            Ok(session) => session,
            Err(error) => {
                tried.push(addr);
                if tried.len() <= pool.retries {
                    continue;
                }
                return Err(error_of(name, &error));
            }
        };
        let sent = async {
            session
                .write_request_header(Box::new(request.header.clone()))
                .await?;
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
            // A pooled connection the upstream closed while idle: nothing was processed.
            if reused && stale_retries < 2 {
                stale_retries += 1;
                continue;
            }
            return Err(error_of(name, &error));
        }
        let (status, headers) = match session.response_header() {
            Some(header) => (header.status.as_u16(), header.headers.clone()),
            None => return Err(CallError::Failed(name.clone())),
        };
        METRICS
            .upstream_duration
            .with_label_values(&[&**name])
            .observe(started.elapsed().as_secs_f64());
        let mut body = BytesMut::new();
        loop {
            match session.read_response_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > max_body {
                        return Err(CallError::TooLarge(name.clone(), max_body));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(error) => return Err(error_of(name, &error)),
            }
        }
        let idle = peer.options.idle_timeout;
        crate::outbound::connector()
            .release_http_session(session, &peer, idle)
            .await;
        return Ok(Answer {
            status,
            headers,
            body: body.freeze(),
        });
    }
}

fn error_of(name: &Arc<str>, error: &pingora_error::Error) -> CallError {
    match error.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            CallError::Timeout(name.clone())
        }
        _ => CallError::Failed(name.clone()),
    }
}

/// Statuses that mean "nothing yet", and the wait between asking again.
#[derive(Clone, Debug)]
pub struct Repoll {
    pub statuses: Vec<u16>,
    pub backoff: conf::Backoff,
}

impl Repoll {
    pub fn not_ready(&self, result: &CallResult) -> bool {
        matches!(result, Ok(answer) if self.statuses.contains(&answer.status))
    }
}

/// Makes `attempt` again while its answer is "not ready" (per `repoll`), with back-off. Runs
/// until another answer: the caller bounds it with its hold (and drops it to cancel).
pub async fn until_ready<F, Fut>(repoll: Option<&Repoll>, mut attempt: F) -> Arc<CallResult>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Arc<CallResult>>,
{
    let Some(repoll) = repoll else {
        return attempt().await;
    };
    let mut wait = repoll.backoff.initial.get();
    loop {
        let result = attempt().await;
        if !repoll.not_ready(&result) {
            return result;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(repoll.backoff.max.get());
    }
}

/// What an upstream-calling route does besides calling: re-poll, hold, coalesce, cache.
#[derive(Clone, Debug)]
pub struct CallOptions {
    pub repoll: Option<Repoll>,
    pub hold: Duration,
    pub coalesce: Option<coalesce::Settings>,
}

impl CallOptions {
    /// The route's options; a fan-in's own `repoll_on`/`hold`/`backoff` win over the route's.
    pub fn compile(route: &conf::Route) -> Self {
        let fanin = route.fanin.as_ref();
        let statuses = fanin
            .and_then(|f| f.repoll_on.clone())
            .or_else(|| route.repoll_on.clone());
        let backoff = fanin
            .and_then(|f| f.backoff)
            .or(route.backoff)
            .unwrap_or_default();
        let hold = fanin
            .and_then(|f| f.hold)
            .or(route.hold)
            .map_or(DEFAULT_HOLD, conf::Duration::get);
        Self {
            repoll: statuses.map(|statuses| Repoll { statuses, backoff }),
            hold,
            coalesce: coalesce::Settings::compile(route),
        }
    }

    /// Whether a plain `upstream` route must be answered locally rather than proxied.
    pub fn needs_local(&self) -> bool {
        self.repoll.is_some() || self.coalesce.is_some()
    }
}

/// An `upstream` route answered locally (it re-polls, coalesces or caches).
pub struct CallSpec {
    pub pool: Arc<Pool>,
    pub options: CallOptions,
}

/// The action for an `upstream` route: proxied, unless its options need a local answer.
pub fn upstream_action(route: &conf::Route, pool: Arc<Pool>) -> crate::routes::Action {
    let options = CallOptions::compile(route);
    if options.needs_local() {
        crate::routes::Action::Call(Arc::new(CallSpec { pool, options }))
    } else {
        crate::routes::Action::Proxy(pool)
    }
}

/// One call as the route makes it: coalesced (and cached) when the route says so.
pub async fn call_once(
    pool: &Arc<Pool>,
    request: &Arc<OutboundRequest>,
    options: &CallOptions,
    route: &str,
    identity: Option<&str>,
    max_body: usize,
) -> Arc<CallResult> {
    match &options.coalesce {
        Some(settings) if coalesce::eligible(&request.header.method) => {
            let key = settings.key(route, &pool.name, &request.header, identity);
            let (pool, request, repoll) = (pool.clone(), request.clone(), options.repoll.clone());
            coalesce::call(
                key,
                settings.cache,
                route,
                move |result: &CallResult| {
                    matches!(result, Ok(answer) if answer.status < 500
                    && !repoll.as_ref().is_some_and(|r| r.statuses.contains(&answer.status)))
                },
                async move { send(&pool, &request, max_body).await },
            )
            .await
        }
        _ => Arc::new(send(pool, request, max_body).await),
    }
}

/// How a held call ended.
pub enum Held<T> {
    Done(T),
    HoldEnded,
    ClientGone,
    Shutdown,
}

/// Runs `work` until it ends, the hold ends, the client leaves or the gateway shuts down. The
/// request body must already be read (the client-gone probe reads the connection).
pub async fn hold<T>(
    runtime: &Runtime,
    session: &mut Session,
    deadline: tokio::time::Instant,
    work: impl std::future::Future<Output = T>,
) -> Held<T> {
    let mut shutdown = runtime.shutdown_signal();
    if *shutdown.borrow_and_update() {
        return Held::Shutdown;
    }
    tokio::select! {
        done = work => Held::Done(done),
        _ = tokio::time::sleep_until(deadline) => Held::HoldEnded,
        _ = session.read_body_or_idle(true) => Held::ClientGone,
        _ = shutdown.changed() => Held::Shutdown,
    }
}

/// Serves an `upstream` route locally: (coalesced) calls, re-polled while not ready, held at
/// most `hold`; the answer is the upstream's, or 204 when the hold ends first.
pub async fn serve(
    runtime: &Runtime,
    session: &mut Session,
    ctx: &mut RequestCtx,
    spec: &CallSpec,
) -> pingora_error::Result<u16> {
    let request = match OutboundRequest::build(session, ctx).await? {
        Ok(request) => Arc::new(request),
        Err(problem) => return answer::problem(session, ctx, &problem).await,
    };
    let route = ctx.route_name().to_owned();
    let identity = ctx.identity.as_ref().map(auth::Identity::key);
    let options = &spec.options;
    // Without re-polling the hold is only the upstream's own timeouts.
    let deadline = tokio::time::Instant::now()
        + if options.repoll.is_some() {
            options.hold
        } else {
            Duration::from_secs(24 * 3600)
        };
    let work = until_ready(options.repoll.as_ref(), || {
        call_once(
            &spec.pool,
            &request,
            options,
            &route,
            identity.as_deref(),
            MAX_BUFFERED,
        )
    });
    match hold(runtime, session, deadline, work).await {
        Held::Done(result) => match &*result {
            Ok(answer)
                if options
                    .repoll
                    .as_ref()
                    .is_some_and(|r| r.statuses.contains(&answer.status)) =>
            {
                answer::timeout(session, ctx, false).await
            }
            Ok(answer) => answer::upstream(session, ctx, answer, &[]).await,
            Err(error) => answer::problem(session, ctx, &error.problem()).await,
        },
        Held::HoldEnded => answer::timeout(session, ctx, false).await,
        Held::Shutdown => answer::timeout(session, ctx, true).await,
        Held::ClientGone => Ok(0),
    }
}
