//! Upstream calls the gateway makes itself — for `upstream` routes with `repoll_on`, `coalesce`
//! or `cache`, and for fan-in and jobs: the request built once, the call made again while the
//! answer is "not ready", the answer buffered whole. See docs/actions.md.

pub mod events;

use crate::actions::{coalesce, Admitted};
use crate::core::runtime::Runtime;
use crate::core::spec::call::{CallOptions, CallSpec, Repoll};
use crate::core::upstream::exchange::{send, CallResult, OutboundRequest, MAX_BUFFERED};
use crate::core::upstream::Pool;
use crate::exchange::hold::{hold, Held};
use crate::exchange::{body, Exchange, Reply};
use crate::problem::Problem;
use pingora_error::Result;
use pingora_http::RequestHeader;
use std::sync::Arc;

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
                    && !repoll.as_ref().is_some_and(|r| r.is_repoll(answer)))
                },
                async move { send(&pool, &request, max_body).await },
            )
            .await
        }
        _ => Arc::new(send(pool, request, max_body).await),
    }
}

/// The request to send upstream: the head the pipeline prepared, and the body — the client's,
/// read whole (up to the route's `max_body`), or the one the route's mapping made.
pub async fn outbound(
    exchange: &mut impl Exchange,
    request: &Admitted<'_>,
) -> Result<Result<OutboundRequest, Problem>> {
    let read = body::read_whole(exchange, request.route.max_body, request.body_timeout).await?;
    let body = match read {
        Ok(body) => request.mapped_body.cloned().unwrap_or(body),
        Err(problem) => return Ok(Err(problem)),
    };
    let mut header = match &request.upstream_head {
        Some(head) => RequestHeader::clone(head),
        None => exchange.head().clone(),
    };
    if !body.is_empty() || !matches!(header.method, http::Method::GET | http::Method::HEAD) {
        header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    }
    Ok(Ok(OutboundRequest {
        header,
        body,
        trace: request.trace.map(|trace| trace.server.clone()),
    }))
}

/// The answer when a hold ended without one: `204`, closing the connection when the gateway
/// is shutting down.
pub fn timeout_reply(shutdown: bool) -> Reply {
    let reply = Reply::fresh(204);
    if shutdown {
        reply.closing()
    } else {
        reply
    }
}

/// Serves an `upstream` route locally: (coalesced) calls, re-polled while not ready, held at
/// most `hold`; the answer is the upstream's, or 204 when the hold ends first. `None` when the
/// client left.
pub async fn serve(
    runtime: &Runtime,
    exchange: &mut impl Exchange,
    request: &mut Admitted<'_>,
    spec: &CallSpec,
) -> Result<Option<Reply>> {
    let outbound = match outbound(exchange, request).await? {
        Ok(outbound) => Arc::new(outbound),
        Err(problem) => return Ok(Some(Reply::problem(&problem))),
    };
    let route = &request.route.name;
    let identity = request.identity.map(auth::Identity::key);
    let options = &spec.options;
    // Without re-polling the hold is only the upstream's own timeouts.
    let deadline = options
        .repoll
        .as_ref()
        .map(|_| tokio::time::Instant::now() + options.hold);
    let work = until_ready(options.repoll.as_ref(), || {
        call_once(
            &spec.pool,
            &outbound,
            options,
            route,
            identity.as_deref(),
            MAX_BUFFERED,
        )
    });
    let work = std::pin::pin!(work);
    Ok(
        match hold(runtime, exchange.client_gone(), deadline, work).await {
            Held::Done(result) => Some(match &*result {
                Ok(answer) if options.repoll.as_ref().is_some_and(|r| r.is_repoll(answer)) => {
                    timeout_reply(false)
                }
                Ok(answer) => Reply::upstream(answer),
                Err(error) => Reply::problem(&error.problem()),
            }),
            Held::HoldEnded => Some(timeout_reply(false)),
            Held::Shutdown => Some(timeout_reply(true)),
            Held::ClientGone => None,
        },
    )
}
