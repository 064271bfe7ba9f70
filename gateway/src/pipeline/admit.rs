//! Admission, in one place and in this order: the head's checks and the path's normal form →
//! the route → auth → limits → mapping → dispatch to the route's action. Runs in Pingora's
//! `request_filter`; `true` when the gateway answered the request itself, `false` when it is to
//! be proxied.

use crate::actions::{call, channels, fanin, jobs, Admitted};
use crate::core::routes::{Action, Lookup};
use crate::core::runtime::Runtime;
use crate::exchange::Reply;
use crate::limits;
use crate::pipeline::ctx::RequestCtx;
use crate::pipeline::{authn, checks, cors, mapped, outbound, respond, routing, streamed};
use crate::problem::Problem;
use pingora_error::Result;
use pingora_proxy::Session;

/// Admits the request, answering it when the gateway does: a refusal, a preflight, or the
/// reply of the route's action.
pub async fn admit(runtime: &Runtime, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
    let state = runtime.state.load_full();
    ctx.request_id = Some(request_id(session.req_header()));
    if let Some(problem) = checks::check_head(
        session,
        state.max_headers,
        state.max_header_bytes,
        state.max_url_bytes,
    ) {
        return refused(session, ctx, &problem).await;
    }
    // Routing, auth, mapping, the upstream and the access log all see the normal path.
    let http2 = session.is_http2();
    if let Err(error) = crate::wire::target::normalize_target(session.req_header_mut(), http2) {
        let problem = Problem::new(400, "bad-path", "Bad Request", error.to_string());
        return refused(session, ctx, &problem).await;
    }
    let header = session.req_header();
    let preflight = cors::preflight_method(header);
    let host = routing::raw_host(header);
    let path = header.uri.path();
    let mut lookup = routing::find(
        &state,
        host,
        preflight.as_ref().unwrap_or(&header.method),
        path,
    );
    if let (Some(method), Lookup::Found(route, _)) = (&preflight, &lookup) {
        match &route.cors {
            Some(cors) => {
                let reply = cors::preflight_reply(header, cors, method);
                ctx.route = Some((*route).clone());
                respond::reply(session, ctx, reply).await?;
                return Ok(true);
            }
            // Not a CORS route: an OPTIONS request like any other.
            None => lookup = routing::find(&state, host, &header.method, path),
        }
    }
    let (route, captures) = match lookup {
        Lookup::Found(route, captures) => (route.clone(), captures),
        Lookup::MethodNotAllowed(allow) => {
            let problem = Problem::method_not_allowed(header.method.as_str(), &allow);
            return refused(session, ctx, &problem).await;
        }
        Lookup::NotFound => {
            let problem = Problem::not_found(&format!("{} {}", header.method, path));
            return refused(session, ctx, &problem).await;
        }
    };
    ctx.route = Some(route.clone());
    ctx.captures = captures;
    ctx.state = Some(state.clone());
    if let Some(requirement) = &route.auth {
        if let Err(problem) = authn::authenticate(session, ctx, requirement) {
            return refused(session, ctx, &problem).await;
        }
    }
    if let Some(limits) = &route.limits {
        let subject = limits::Subject {
            route: &route.name,
            peer: session
                .client_addr()
                .and_then(|addr| addr.as_inet())
                .map(|addr| addr.ip()),
            headers: &session.req_header().headers,
            identity: ctx.identity.as_ref(),
        };
        match limits::admit(&runtime.limiter, &state.trusted_proxies, limits, &subject).await {
            Ok(slot) => ctx.in_flight = slot,
            Err(problem) => return refused(session, ctx, &problem).await,
        }
    }
    if matches!(route.action, Action::Proxy(_))
        && !streamed::mapping_reads_body(&route)
        && streamed::declared_length(session).is_some_and(|length| length > route.max_body)
    {
        return refused(session, ctx, &limits::body_too_large(route.max_body)).await;
    }
    if let Some(mapping) = &route.mapping {
        let identity = ctx.identity.clone();
        let claims = identity
            .as_ref()
            .map(|identity| identity.claims().as_value());
        if let Some(problem) = mapped::map_request(session, ctx, mapping, claims).await? {
            return refused(session, ctx, &problem).await;
        }
    }
    if let Action::Proxy(pool) = &route.action {
        ctx.pool = Some(pool.clone());
        return Ok(false);
    }
    let reply = dispatch(runtime, session, ctx).await?;
    match reply {
        Some(reply) => {
            respond::reply(session, ctx, reply).await?;
        }
        // The client left before there was an answer.
        None => ctx.answered = Some(0),
    }
    Ok(true)
}

/// Runs the route's action (every one but proxying); its reply, or `None` when the client left.
async fn dispatch(
    runtime: &Runtime,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<Option<Reply>> {
    let Some(route) = ctx.route.clone() else {
        return Ok(None);
    };
    let upstream_head = match &route.action {
        Action::Call(_) | Action::Fanin(_) | Action::Job(_) => {
            Some(outbound::call_head(session, ctx)?)
        }
        _ => None,
    };
    let mut admitted = Admitted {
        route: &route,
        captures: &ctx.captures,
        identity: ctx.identity.as_ref(),
        body_timeout: ctx.body_timeout(),
        upstream_head,
        mapped_body: ctx.mapped.body(),
        outcome: None,
    };
    // The upstream-call actions are boxed: inline, their futures (tens of KB for a call) would
    // size this whole hook's future, which every held long-poll keeps allocated.
    let reply = match &route.action {
        Action::Proxy(_) => None,
        Action::LongPoll(spec) => channels::poll(runtime, session, &mut admitted, spec).await?,
        Action::Publish(spec) => Some(channels::publish(runtime, session, &admitted, spec).await?),
        Action::Call(spec) => Box::pin(call::serve(runtime, session, &mut admitted, spec)).await?,
        Action::Fanin(spec) => {
            Box::pin(fanin::serve(runtime, session, &mut admitted, spec)).await?
        }
        Action::Job(spec) => Box::pin(jobs::serve(runtime, session, &mut admitted, spec)).await?,
    };
    let outcome = admitted.outcome;
    ctx.outcome = outcome;
    Ok(reply)
}

/// Answers with `problem`: the request is refused.
async fn refused(session: &mut Session, ctx: &mut RequestCtx, problem: &Problem) -> Result<bool> {
    respond::problem(session, ctx, problem).await?;
    Ok(true)
}

/// The client's `X-Request-Id` when it is sane, else a new one.
fn request_id(header: &pingora_http::RequestHeader) -> http::HeaderValue {
    header
        .headers
        .get(respond::X_REQUEST_ID)
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
