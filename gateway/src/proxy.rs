//! The Pingora `ProxyHttp` implementation. Each hook stays thin: it reads the pinned `State`,
//! asks the route table, and delegates — the route's action decides whether the request is
//! proxied or answered here (long-poll, publish).

use crate::ctx::RequestCtx;
use crate::metrics::METRICS;
use crate::problem::Problem;
use crate::request_checks::check_head;
use crate::routes::{Action, Lookup};
use crate::runtime::Runtime;
use crate::{authn, channels, cors, counting, labels, limits, mapped};
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::Instant;

/// The gateway's proxy logic; one instance serves every request.
pub struct Gateway {
    pub runtime: Arc<Runtime>,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let state = self.runtime.state.load_full();
        ctx.request_id = Some(request_id(session.req_header()));
        if let Some(problem) = check_head(
            session,
            state.max_headers,
            state.max_header_bytes,
            state.max_url_bytes,
        ) {
            return answer(session, ctx, &problem).await;
        }
        // Routing, auth, mapping, the upstream and the access log all see the normal path.
        let http2 = session.is_http2();
        if let Err(error) = crate::target::normalize_target(session.req_header_mut(), http2) {
            let problem = Problem::new(400, "bad-path", "Bad Request", error.to_string());
            return answer(session, ctx, &problem).await;
        }
        let header = session.req_header();
        let preflight = cors::preflight_method(header);
        let host = host_of(header);
        let mut lookup = state.routes.find(
            host.as_deref(),
            preflight.as_ref().unwrap_or(&header.method),
            header.uri.path(),
        );
        if let (Some(method), Lookup::Found(route, _)) = (&preflight, &lookup) {
            match &route.cors {
                Some(cors) => {
                    let (cors, method) = (cors.clone(), method.clone());
                    ctx.route = Some((*route).clone());
                    ctx.answered =
                        Some(cors::answer_preflight(session, ctx, &cors, &method).await?);
                    return Ok(true);
                }
                // Not a CORS route: an OPTIONS request like any other.
                None => {
                    lookup = state
                        .routes
                        .find(host.as_deref(), &header.method, header.uri.path())
                }
            }
        }
        let (route, captures) = match lookup {
            Lookup::Found(route, captures) => (route.clone(), captures),
            Lookup::MethodNotAllowed(allow) => {
                let problem = Problem::method_not_allowed(header.method.as_str(), &allow);
                return answer(session, ctx, &problem).await;
            }
            Lookup::NotFound => {
                let problem =
                    Problem::not_found(&format!("{} {}", header.method, header.uri.path()));
                return answer(session, ctx, &problem).await;
            }
        };
        ctx.route = Some(route.clone());
        ctx.captures = captures;
        ctx.state = Some(state.clone());
        if let Some(requirement) = &route.auth {
            if let Err(problem) = authn::authenticate(session, ctx, requirement) {
                return answer(session, ctx, &problem).await;
            }
        }
        if let Some(limits) = &route.limits {
            let (limiter, trusted) = (&self.runtime.limiter, &state.trusted_proxies);
            if let Some(problem) = limits::admit(limiter, trusted, limits, session, ctx).await {
                return answer(session, ctx, &problem).await;
            }
        }
        if matches!(route.action, Action::Proxy(_))
            && !limits::mapping_reads_body(&route)
            && limits::declared_length(session).is_some_and(|length| length > route.max_body)
        {
            return answer(session, ctx, &limits::body_too_large(route.max_body)).await;
        }
        if let Some(mapping) = &route.mapping {
            let identity = ctx.identity.clone();
            let claims = identity
                .as_ref()
                .map(|identity| identity.claims().as_value());
            if let Some(problem) = mapped::map_request(session, ctx, mapping, claims).await? {
                return answer(session, ctx, &problem).await;
            }
        }
        // Every action but proxying answers here; the status is kept for the metrics.
        // The upstream-call actions are boxed: inline, their futures (~43 KB for `call::serve`)
        // would size this whole hook's future, which every held long-poll keeps allocated
        // (bench/RESULTS.md §2).
        let status = match &route.action {
            Action::Proxy(pool) => {
                ctx.pool = Some(pool.clone());
                return Ok(false);
            }
            Action::LongPoll(spec) => channels::poll(&self.runtime, session, ctx, spec).await?,
            Action::Publish(spec) => channels::publish(&self.runtime, session, ctx, spec).await?,
            Action::Call(spec) => {
                Box::pin(crate::call::serve(&self.runtime, session, ctx, spec)).await?
            }
            Action::Fanin(spec) => {
                Box::pin(crate::fanin::serve(&self.runtime, session, ctx, spec)).await?
            }
            Action::Job(spec) => {
                Box::pin(crate::jobs::serve(&self.runtime, session, ctx, spec)).await?
            }
        };
        ctx.answered = Some(status);
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(pool) = ctx.pool.clone() else {
            return Error::e_explain(ErrorType::InternalError, "no upstream pool for this route");
        };
        let Some(addr) = pool.select(&ctx.tried) else {
            return Error::e_explain(
                ErrorType::ConnectNoRoute,
                "no target of the upstream is available",
            );
        };
        ctx.tried.push(addr);
        ctx.upstream_started = Some(Instant::now());
        Ok(Box::new(pool.peer(addr)))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // A failed connect sent nothing: any request may safely go to the next target.
        let retries = ctx.pool.as_ref().map_or(0, |pool| pool.retries);
        e.set_retry(ctx.tried.len() <= retries);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        prepare_upstream_request(session, upstream, ctx)?;
        // An HTTP/1.0 client may leave `Host` out; the upstream request is HTTP/1.1, which
        // must carry one (RFC 9112 §3.2): the target's address, as nginx's `$proxy_host`.
        if !upstream.headers.contains_key(http::header::HOST) {
            if let Some(target) = ctx.tried.last() {
                upstream.insert_header(http::header::HOST, target.to_string())?;
            }
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.upgraded {
            // After `101 Switching Protocols` these are the new protocol's bytes, not a body.
            return Ok(());
        }
        if let (Some(chunk), Some(state)) = (body.as_ref(), &ctx.state) {
            let body_timeout = state.config.limits.body_timeout.get();
            if let Some(problem) = limits::count_body(ctx, chunk.len(), body_timeout) {
                let status = problem.status;
                ctx.rejected = Some(problem);
                return Error::e_explain(ErrorType::HTTPStatus(status), "request body limit");
            }
        }
        mapped::request_body(body, end_of_stream, ctx)
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        mapped::response_body(body, end_of_stream, ctx)?;
        if end_of_stream {
            // The mapped body passed the rules: the status held back in `response_filter` stands.
            if let Some(status) = ctx.count_at_end.take() {
                counting::answered(session, ctx, status);
            }
        }
        Ok(None)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_status = Some(response.status.as_u16());
        if let (Some(pool), Some(started)) = (&ctx.pool, ctx.upstream_started) {
            let elapsed = started.elapsed();
            ctx.upstream_elapsed = Some(elapsed);
            METRICS
                .upstream_duration
                .with_label_values(&[&*pool.name])
                .observe(elapsed.as_secs_f64());
            // Counted as soon as the upstream answered, before the client gets the answer.
            if counting::is_final(response.status) && !ctx.upstream_counted {
                ctx.upstream_counted = true;
                METRICS
                    .upstream_requests
                    .with_label_values(&[&*pool.name, labels::code(response.status.as_u16())])
                    .inc();
            }
        }
        mapped::upstream_response(response, ctx)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(id) = &ctx.request_id {
            response.insert_header("x-request-id", id.clone())?;
        }
        if response.status == http::StatusCode::SWITCHING_PROTOCOLS {
            // A tunnel (WebSocket) from here on: no body limits, and it may idle as long as
            // its two ends like (they close it, or ping).
            ctx.upgraded = true;
            session.set_read_timeout(None);
        }
        if counting::is_final(response.status) {
            let status = response.status.as_u16();
            if ctx.mapped.buffers_response() {
                ctx.count_at_end = Some(status);
            } else {
                counting::answered(session, ctx, status);
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let upstream = ctx
            .pool
            .as_ref()
            .map_or("the upstream", |pool| &pool.name)
            .to_owned();
        let malformed = malformed_body(e);
        let problem = match (e.esource(), e.etype()) {
            _ if ctx.rejected.is_some() => ctx.rejected.take(),
            (_, ErrorType::HTTPStatus(code)) => Some(Problem::new(
                *code,
                "error",
                "Error",
                "the request could not be served",
            )),
            _ if malformed.is_some() => malformed.map(|framing| {
                Problem::new(400, "malformed-request", "Bad Request", framing.to_string())
            }),
            // A request header Pingora cannot pass on (a `Connection` header nominating a
            // header it protects): the client's fault, said as such.
            (ErrorSource::Downstream, ErrorType::InvalidHTTPHeader) => Some(Problem::new(
                400,
                "malformed-request",
                "Bad Request",
                format!(
                    "a request header cannot be forwarded: {}",
                    e.context.as_ref().map_or("invalid header", |c| c.as_str())
                ),
            )),
            (ErrorSource::Downstream, ErrorType::ReadTimedout) => {
                Some(limits::request_timeout(&format!(
                    "the request body did not arrive within {:?}",
                    ctx.body_timeout()
                )))
            }
            (ErrorSource::Downstream, _) => None,
            (
                _,
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
            ) => Some(Problem::new(
                504,
                "upstream-timeout",
                "Gateway Timeout",
                format!("upstream `{upstream}` did not answer in time"),
            )),
            (_, ErrorType::ConnectNoRoute) => Some(Problem::new(
                502,
                "upstream-unavailable",
                "Bad Gateway",
                format!("no target of upstream `{upstream}` is available"),
            )),
            (ErrorSource::Upstream, _) => Some(Problem::new(
                502,
                "upstream-failed",
                "Bad Gateway",
                format!("upstream `{upstream}` refused or dropped the connection"),
            )),
            _ => Some(Problem::new(
                500,
                "internal",
                "Internal Server Error",
                "the gateway failed to serve the request",
            )),
        };
        let code = match &problem {
            // Once the upstream's header went out, the client already has a status: just close.
            // Not after a `101`: the connection carries another protocol by then.
            Some(problem)
                if session.response_written().is_none_or(|r| {
                    r.status.is_informational() && r.status != http::StatusCode::SWITCHING_PROTOCOLS
                }) =>
            {
                if let Err(error) = answer(session, ctx, problem).await {
                    tracing::debug!(%error, "cannot write the error answer");
                }
                problem.status
            }
            Some(problem) => problem.status,
            None => 0,
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, session: &Session, ctx: &RequestCtx, error: &Error) -> bool {
        // What a client did (left, stalled, sent a malformed body) is routine for a long-poll
        // gateway and the client's business: logged at a bounded rate, never as an error.
        let clients_doing =
            matches!(error.esource(), ErrorSource::Downstream) || malformed_body(error).is_some();
        if clients_doing {
            let summary = self.request_summary(session, ctx);
            crate::client_log::client_error(error, &summary);
        }
        clients_doing
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = ctx
            .answered
            .or_else(|| session.response_written().map(|r| r.status.as_u16()))
            .unwrap_or(0);
        if let Some(log) = &self.runtime.access_log {
            log.record(session, ctx, status);
        }
        // Answers were counted before they were written (`counting`, and limit rejections in
        // `answer`); what is left got no answer: the client left, or an error ended it.
        counting::answered(session, ctx, status);
        METRICS
            .request_duration
            .with_label_values(&[ctx.route_name()])
            .observe(ctx.started.elapsed().as_secs_f64());
        if let Some(pool) = &ctx.pool {
            if !ctx.tried.is_empty() && !ctx.upstream_counted {
                let code = labels::code(ctx.upstream_status.unwrap_or(0));
                METRICS
                    .upstream_requests
                    .with_label_values(&[&*pool.name, code])
                    .inc();
            }
        }
    }
}

/// Why the request's chunked body turned out malformed while it streamed, when that ended the
/// request (the fence refuses it as a read error that carries the reason).
fn malformed_body(error: &Error) -> Option<&crate::framing::FramingError> {
    let io = error.root_cause().downcast_ref::<std::io::Error>()?;
    io.get_ref()?.downcast_ref()
}

/// What every request sent upstream carries, proxied or called by the gateway itself:
/// `X-Forwarded-For` (appended to), `X-Forwarded-Proto`, `X-Request-Id`, the credential
/// stripped with the claims in headers, and the mapped method, path, query and headers; last,
/// headers with `_` are dropped (`limits.headers_with_underscores`), judged against the
/// request exactly as it leaves.
pub fn prepare_upstream_request(
    session: &Session,
    upstream: &mut RequestHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    if let Some(client) = session.client_addr().and_then(|addr| addr.as_inet()) {
        let ip = client.ip().to_string();
        let forwarded = match upstream
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(previous) => format!("{previous}, {ip}"),
            None => ip,
        };
        upstream.insert_header("x-forwarded-for", forwarded)?;
    }
    let tls = session
        .digest()
        .is_some_and(|digest| digest.ssl_digest.is_some());
    upstream.insert_header("x-forwarded-proto", if tls { "https" } else { "http" })?;
    if let Some(id) = &ctx.request_id {
        upstream.insert_header("x-request-id", id.clone())?;
    }
    authn::upstream_request(upstream, ctx)?;
    mapped::upstream_request(upstream, ctx)?;
    crate::underscores::drop_headers(upstream, ctx);
    Ok(())
}

/// Writes a problem answer, remembering its status for the access log. Every problem the
/// gateway answers comes here: the request (and a limit's refusal, in
/// `holdfast_limit_rejections_total`) is counted before the answer is written, so a scrape
/// right after the answer sees it.
pub async fn answer(
    session: &mut Session,
    ctx: &mut RequestCtx,
    problem: &Problem,
) -> Result<bool> {
    ctx.answered = Some(problem.status);
    if !ctx.counted {
        if let Some(kind) = limits::rejection_kind(problem.status) {
            METRICS
                .limit_rejections
                .with_label_values(&[ctx.route_name(), kind])
                .inc();
        }
    }
    counting::answered(session, ctx, problem.status);
    let mut problem = problem.clone();
    if let Some(id) = &ctx.request_id {
        if let Ok(id) = id.to_str() {
            problem = problem.with_header("x-request-id", id);
        }
    }
    problem.send(session).await?;
    Ok(true)
}

/// The client's `X-Request-Id` when it is sane, else a new one.
fn request_id(header: &RequestHeader) -> http::HeaderValue {
    header
        .headers
        .get("x-request-id")
        .filter(|id| {
            !id.is_empty() && id.len() <= 128 && id.as_bytes().iter().all(|b| b.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            let id = uuid::Uuid::new_v4();
            let mut buffer = uuid::Uuid::encode_buffer();
            http::HeaderValue::from_str(id.hyphenated().encode_lower(&mut buffer))
                .unwrap_or(http::HeaderValue::from_static("-"))
        })
}

/// The request's host name, lower case and without the port.
fn host_of(header: &RequestHeader) -> Option<std::borrow::Cow<'_, str>> {
    let raw = header.uri.host().or_else(|| {
        header
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    })?;
    Some(normalized_host(raw))
}

/// A Host value as routes name hosts: lower case, without the port or IPv6 brackets.
pub fn normalized_host(raw: &str) -> std::borrow::Cow<'_, str> {
    let host = match raw.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(bracketed),
        None => raw.split(':').next().unwrap_or(raw),
    };
    // `admin.example.com.` is the same name (fully qualified), and origins such as nginx
    // serve it as `admin.example.com`: route it as that, so its route's auth applies.
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}
