//! The Pingora `ProxyHttp` implementation. Each hook stays thin and delegates: admission and
//! the actions in `request_filter` (admit.rs), the upstream head (outbound.rs), streamed body
//! limits (streamed.rs), mapping (mapped.rs), failures (failure.rs), the upstream attempts'
//! spans (attempts.rs), the end of the request (logging.rs).

use crate::core::runtime::Runtime;
use crate::observe::labels;
use crate::observe::metrics::METRICS;
use crate::pipeline::ctx::RequestCtx;
use crate::pipeline::{admit, attempts, counting, failure, logging, mapped, respond, streamed};
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
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
        admit::admit(&self.runtime, session, ctx).await
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(pool) = ctx.pool.clone() else {
            return Error::e_explain(ErrorType::InternalError, "no upstream pool for this route");
        };
        let Some(peer) = pool.next_attempt(&mut ctx.tried) else {
            return Error::e_explain(
                ErrorType::ConnectNoRoute,
                "no target of the upstream is available",
            );
        };
        ctx.upstream_started = Some(Instant::now());
        attempts::begin(ctx, session.req_header().method.as_str());
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        attempts::failed(ctx, session.req_header().method.as_str(), &e);
        let retry = ctx
            .pool
            .as_ref()
            .is_some_and(|pool| pool.may_retry_connect(&ctx.tried));
        e.set_retry(retry);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        crate::pipeline::outbound::prepare(session, upstream, ctx)?;
        attempts::propagate(ctx, upstream);
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
            if let Some(problem) = streamed::count_body(ctx, chunk.len(), body_timeout) {
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
                counting::answered(&session.req_header().method, ctx, status);
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
        attempts::answered(ctx, response.status.as_u16());
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
            response.insert_header(respond::X_REQUEST_ID, id.clone())?;
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
                counting::answered(&session.req_header().method, ctx, status);
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
        attempts::failed(ctx, session.req_header().method.as_str(), e);
        let problem = failure::problem(e, ctx);
        let code = match &problem {
            // Once the upstream's header went out, the client already has a status: just close.
            // Not after a `101`: the connection carries another protocol by then.
            Some(problem)
                if session.response_written().is_none_or(|r| {
                    r.status.is_informational() && r.status != http::StatusCode::SWITCHING_PROTOCOLS
                }) =>
            {
                // The connection is not reused after a failure (below): the answer says so, or
                // a client could send its next request on a connection being closed.
                session.set_keepalive(None);
                if let Err(error) = respond::problem(session, ctx, problem).await {
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

    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        logging::summary(session.request_summary(), ctx)
    }

    fn suppress_error_log(&self, session: &Session, ctx: &RequestCtx, error: &Error) -> bool {
        // What a client did (left, stalled, sent a malformed body) is routine for a long-poll
        // gateway and the client's business: logged at a bounded rate, never as an error.
        let clients_doing = failure::clients_doing(error);
        if clients_doing {
            let summary = self.request_summary(session, ctx);
            crate::observe::client_log::client_error(error, &summary);
        }
        clients_doing
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let written = session.response_written().map(|r| r.status.as_u16());
        logging::finished(&self.runtime, session, ctx, written);
    }
}
