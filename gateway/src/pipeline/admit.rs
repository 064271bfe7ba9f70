//! Admission, in one place and in this order: the head's checks and the path's normal form →
//! the route → auth → limits (for every transport: [`admit_request`]) → body limit and mapping
//! → dispatch to the route's action. Runs in Pingora's `request_filter` ([`admit`]: `true` when
//! the gateway answered the request itself, `false` when it is to be proxied), and for held
//! polls on the edge's own HTTP/1 path.

use crate::actions::{call, channels, fanin, jobs, llm, resume, Admitted};
use crate::core::routes::{Action, Lookup};
use crate::core::runtime::Runtime;
use crate::exchange::Reply;
use crate::limits;
use crate::pipeline::ctx::RequestCtx;
use crate::pipeline::inbound::Inbound;
use crate::pipeline::{authn, checks, cors, mapped, outbound, respond, routing, streamed};
use crate::problem::Problem;
use pingora_error::Result;
use pingora_proxy::Session;

/// Admits the request, answering it when the gateway does: a refusal, a preflight, or the
/// reply of the route's action.
pub async fn admit(runtime: &Runtime, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
    if !admit_request(runtime, session, ctx).await? {
        return Ok(true);
    }
    let Some(route) = ctx.route.clone() else {
        return Ok(true);
    };
    if matches!(route.action, Action::Proxy(_))
        && !streamed::mapping_reads_body(&route)
        && crate::exchange::body::declared_length(session)
            .is_some_and(|length| length > route.max_body)
    {
        return refused(session, ctx, &limits::body_too_large(route.max_body)).await;
    }
    if let Some(mapping) = &route.mapping {
        let identity = ctx.identity.clone();
        let claims = identity
            .as_ref()
            .map(|identity| identity.claims().as_value());
        let span = ctx
            .trace
            .as_ref()
            .and_then(|trace| trace.server.recorded_child());
        // Boxed, as the other steps only some routes take: `request_filter`'s future is
        // boxed (and so copied) for every request, so what most requests skip stays out of it.
        let mapped = Box::pin(mapped::map_request(session, ctx, mapping, claims)).await?;
        if let Some(span) = span {
            mapped::record_span(span, mapping, mapped.as_ref());
        }
        if let Some(problem) = mapped {
            return refused(session, ctx, &problem).await;
        }
    }
    if let Action::Proxy(pool) = &route.action {
        ctx.pool = Some(pool.clone());
        return Ok(false);
    }
    let reply = Box::pin(dispatch(runtime, session, ctx)).await?;
    finish(session, ctx, reply).await?;
    Ok(true)
}

/// What every transport's admission does, up to the action: request id → head checks → the
/// path's normal form → CORS preflight → route → auth → limits. `true` when the request goes
/// on (its route, identity and in-flight slot are in `ctx`); `false` when it was answered here.
pub async fn admit_request(
    runtime: &Runtime,
    inbound: &mut impl Inbound,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    let state = runtime.state.load_full();
    ctx.request_id = Some(request_id(inbound.head()));
    if let Some(tracer) = crate::observe::trace::tracer() {
        ctx.trace = Some(Box::new(tracer.start(&inbound.head().headers)));
    }
    if let Some(problem) = checks::check_head(
        inbound,
        state.max_headers,
        state.max_header_bytes,
        state.max_url_bytes,
    ) {
        return refused(inbound, ctx, &problem).await.map(|_| false);
    }
    // Routing, auth, mapping, the upstream and the access log all see the normal path.
    let http2 = inbound.is_http2();
    if let Err(error) = crate::wire::target::normalize_target(inbound.head_mut(), http2) {
        let problem = Problem::new(400, "bad-path", "Bad Request", error.to_string());
        return refused(inbound, ctx, &problem).await.map(|_| false);
    }
    let header = inbound.head();
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
                respond::reply(inbound, ctx, reply).await?;
                return Ok(false);
            }
            // Not a CORS route: an OPTIONS request like any other.
            None => lookup = routing::find(&state, host, &header.method, path),
        }
    }
    let (route, captures) = match lookup {
        Lookup::Found(route, captures) => (route.clone(), captures),
        Lookup::MethodNotAllowed(allow) => {
            let problem = Problem::method_not_allowed(header.method.as_str(), &allow);
            return refused(inbound, ctx, &problem).await.map(|_| false);
        }
        Lookup::NotFound => {
            let problem = Problem::not_found(&format!("{} {}", header.method, path));
            return refused(inbound, ctx, &problem).await.map(|_| false);
        }
    };
    ctx.route = Some(route.clone());
    ctx.captures = captures;
    ctx.state = Some(state.clone());
    if let Some(requirement) = &route.auth {
        let span = ctx
            .trace
            .as_ref()
            .and_then(|trace| trace.server.recorded_child());
        let authenticated = authn::authenticate(inbound.head(), ctx, requirement);
        if let Some(span) = span {
            authn::record_span(span, ctx, authenticated.as_ref().err());
        }
        if let Err(problem) = authenticated {
            return refused(inbound, ctx, &problem).await.map(|_| false);
        }
    }
    if let Some(limits) = &route.limits {
        let subject = limits::Subject {
            route: &route.name,
            peer: inbound.client_ip(),
            headers: &inbound.head().headers,
            identity: ctx.identity.as_ref(),
        };
        let admitted = Box::pin(limits::admit(
            &runtime.limiter,
            &state.trusted_proxies,
            limits,
            &subject,
        ));
        match admitted.await {
            Ok(slot) => ctx.in_flight = slot,
            Err(problem) => return refused(inbound, ctx, &problem).await.map(|_| false),
        }
        if let Action::LongPoll(spec) = &route.action {
            if spec.settings.publish {
                let trusted = &state.trusted_proxies;
                ctx.rate_keys = Some(limits::rate_keys(
                    &runtime.limiter,
                    trusted,
                    limits,
                    &subject,
                ));
            }
        }
    }
    Ok(true)
}

/// Writes the action's reply; with none, the client left before there was one, or the action
/// streamed its answer.
pub async fn finish(
    inbound: &mut impl Inbound,
    ctx: &mut RequestCtx,
    reply: Option<Reply>,
) -> Result<()> {
    match reply {
        Some(reply) => {
            respond::reply(inbound, ctx, reply).await?;
        }
        // The client left before there was one (a stream answered before it left).
        None => {
            ctx.answered.get_or_insert(0);
        }
    }
    Ok(())
}

/// Serves a `longpoll` route's channel as Server-Sent Events: the stream's head (counted and
/// stamped as any reply), then its events until it ends. `Some` is the reply that refused it.
async fn stream_events(
    runtime: &Runtime,
    inbound: &mut impl Inbound,
    ctx: &mut RequestCtx,
    route: &crate::core::routes::CompiledRoute,
    spec: &crate::core::spec::channel::LongPollSpec,
) -> Result<Option<Reply>> {
    let opened = channels::sse::open(runtime, inbound, &ctx.admitted(route), spec).await?;
    let (mut stream, head) = match opened {
        Ok(opened) => opened,
        Err(reply) => return Ok(Some(reply)),
    };
    respond::reply(inbound, ctx, head).await?;
    ctx.outcome = Some(stream.run(runtime, inbound).await);
    Ok(None)
}

/// Serves an `llm` route: its reply, or a streamed answer's head (counted and stamped as any
/// reply) and then its events until it ends.
async fn serve_llm(
    runtime: &Runtime,
    inbound: &mut impl Inbound,
    ctx: &mut RequestCtx,
    route: &crate::core::routes::CompiledRoute,
    spec: &crate::core::spec::llm::LlmSpec,
) -> Result<Option<Reply>> {
    let admitted = Admitted {
        mapped_body: ctx.mapped.body(),
        ..ctx.admitted(route)
    };
    let state = ctx.state.clone();
    let token_limits = route.limits.as_ref().filter(|l| l.counts_tokens());
    let quota = match (token_limits, &state) {
        (Some(limits), Some(state)) => Some(llm::Quota {
            limiter: &runtime.limiter,
            trusted: &state.trusted_proxies,
            limits,
            route: &route.name,
            peer: inbound.client_ip(),
            identity: ctx.identity.as_ref(),
        }),
        _ => None,
    };
    let (served, record, charge) = llm::serve(inbound, &admitted, spec, quota).await?;
    ctx.llm = record.map(Box::new);
    // Only a provider's answer costs tokens; a refusal, a failure or a cached answer (which
    // has no record) costs none.
    let from_provider = ctx.llm.is_some()
        && match &served {
            llm::Served::Reply(reply) => reply.status == 200,
            llm::Served::Stream(..) | llm::Served::Follow(..) => true,
            llm::Served::Gone => false,
        };
    let reply = match served {
        llm::Served::Reply(reply) => Some(reply),
        llm::Served::Stream(head, stream) => {
            respond::reply(inbound, ctx, head).await?;
            let (outcome, usage) = stream.run(&mut llm::stream::ToClient(inbound)).await;
            ctx.outcome = Some(outcome);
            if let Some(record) = &mut ctx.llm {
                record.usage = usage;
            }
            None
        }
        llm::Served::Follow(head, follower) => {
            let usage = follow(inbound, ctx, head, follower).await?;
            if let Some(record) = &mut ctx.llm {
                record.usage = usage;
            }
            None
        }
        llm::Served::Gone => {
            ctx.outcome = Some("client_gone");
            None
        }
    };
    if let (Some(charge), Some(limits)) = (charge, token_limits) {
        let record = ctx.llm.as_deref();
        let usage = record.and_then(|record| Some(record.cost(record.usage?)));
        // Without usage, an answer keeps its estimate; what no provider answered costs nothing.
        let used = match usage {
            Some(used) => Some(used),
            None if from_provider => None,
            None => Some(limits::Cost::default()),
        };
        limits::settle_tokens(&runtime.limiter, limits, charge, used).await;
    }
    Ok(reply)
}

/// Serves an `upstream` route with `resumable`: the upstream's answer, or its event stream kept
/// and followed (its head counted and stamped as any reply), or a kept stream resumed.
async fn serve_kept_events(
    inbound: &mut impl Inbound,
    ctx: &mut RequestCtx,
    route: &crate::core::routes::CompiledRoute,
    spec: &crate::core::spec::call::CallSpec,
    ttl: std::time::Duration,
) -> Result<Option<Reply>> {
    let admitted = Admitted {
        upstream_head: Some(Box::new(outbound::call_head(inbound, ctx)?)),
        mapped_body: ctx.mapped.body(),
        ..ctx.admitted(route)
    };
    match call::events::serve(inbound, &admitted, spec, ttl).await? {
        resume::Resumed::Reply(reply) => Ok(Some(reply)),
        resume::Resumed::Follow(head, follower) => {
            follow(inbound, ctx, head, follower).await?;
            Ok(None)
        }
        resume::Resumed::Gone => {
            ctx.outcome = Some("client_gone");
            Ok(None)
        }
    }
}

/// Answers with a kept stream: its head (counted and stamped as any reply), then its events
/// until it ends or the client goes; the answer's usage, when known.
async fn follow(
    inbound: &mut impl Inbound,
    ctx: &mut RequestCtx,
    head: Reply,
    follower: resume::Follower,
) -> Result<Option<llm::translate::Usage>> {
    respond::reply(inbound, ctx, head).await?;
    let (outcome, usage) = follower.run(inbound).await;
    ctx.outcome = Some(outcome);
    Ok(usage)
}

/// Runs the route's action (every one but proxying); its reply, or `None` when the client left.
pub async fn dispatch(
    runtime: &Runtime,
    inbound: &mut impl Inbound,
    ctx: &mut RequestCtx,
) -> Result<Option<Reply>> {
    let Some(route) = ctx.route.clone() else {
        return Ok(None);
    };
    if let Action::LongPoll(spec) = &route.action {
        if channels::sse::wanted(inbound.head(), &spec.settings) {
            return Box::pin(stream_events(runtime, inbound, ctx, &route, spec)).await;
        }
    }
    if let Action::Llm(spec) = &route.action {
        return Box::pin(serve_llm(runtime, inbound, ctx, &route, spec)).await;
    }
    if let Action::Call(spec) = &route.action {
        if let Some(ttl) = spec.options.resumable {
            return Box::pin(serve_kept_events(inbound, ctx, &route, spec, ttl)).await;
        }
    }
    let upstream_head = match &route.action {
        Action::Call(_) | Action::Fanin(_) | Action::Job(_) => {
            Some(Box::new(outbound::call_head(inbound, ctx)?))
        }
        _ => None,
    };
    let mut admitted = Admitted {
        upstream_head,
        mapped_body: ctx.mapped.body(),
        ..ctx.admitted(&route)
    };
    // The upstream-call actions are boxed: inline, their futures (tens of KB for a call) would
    // size this whole hook's future, which every held long-poll keeps allocated.
    let reply = match &route.action {
        Action::Proxy(_) => None,
        Action::LongPoll(spec) => channels::poll(runtime, inbound, &mut admitted, spec).await?,
        Action::Publish(spec) => {
            Some(Box::pin(channels::publish(runtime, inbound, &admitted, spec)).await?)
        }
        Action::Call(spec) => Box::pin(call::serve(runtime, inbound, &mut admitted, spec)).await?,
        Action::Fanin(spec) => {
            Box::pin(fanin::serve(runtime, inbound, &mut admitted, spec)).await?
        }
        Action::Job(spec) => Box::pin(jobs::serve(runtime, inbound, &mut admitted, spec)).await?,
        // Served above.
        Action::Llm(_) => None,
    };
    let outcome = admitted.outcome;
    ctx.outcome = outcome;
    Ok(reply)
}

/// Answers with `problem`: the request is refused (and answered: `true`, as `request_filter`
/// says it).
async fn refused(
    inbound: &mut impl Inbound,
    ctx: &mut RequestCtx,
    problem: &Problem,
) -> Result<bool> {
    respond::problem(inbound, ctx, problem).await?;
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
