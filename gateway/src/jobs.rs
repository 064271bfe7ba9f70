//! `job` routes: a slow (AI) upstream call started by one request and collected
//! by long-polling another.
//!
//! - `POST <prefix>` (any method but `GET`/`HEAD`) reads and maps the request like any upstream
//!   call, starts the call in the background and answers `202 {"job":"<id>","poll":"<prefix>/<id>"}`
//!   with the poll URL in `Location` too. Past the route's `max_running` jobs running on this
//!   instance: `503` + `Retry-After: 1`.
//! - `GET <prefix>/<id>` holds until the result is there (at most the job's `timeout`, or less
//!   with `?wait=SECONDS`): `200` with the upstream's body and content type and the upstream's
//!   own status in `Holdfast-Upstream-Status` (a `500` of the upstream is still a `200` poll
//!   answer: the job ran), `204` when the hold ends first, `404` for an id that is unknown — or
//!   that another identity started (a job is bound to the `provider:subject` that created it) —
//!   and `410` once the result's `ttl` has passed. A result stays pollable, repeatedly, for
//!   `ttl` after it came; `410` is given for another `ttl`, then the id is forgotten (`404`).
//! - A job whose call failed keeps a *failed* result, and polls get its problem: `504`
//!   (`upstream-timeout`) when the upstream did not answer in time, `502` otherwise — in
//!   particular `502 job-result-too-large` when the answer was over `max_result` (default
//!   10 MiB; the answer is not kept, the connection is closed as soon as the limit is passed).
//!
//! The background call runs on the serving runtime (it outlives the request that started it,
//! not the process): a job running during shutdown is lost. Jobs live in this instance's memory;
//! with several instances, poll the instance that started the job (the Redis backplane does not
//! carry jobs yet). Gauge: `holdfast_jobs{route,state}` with `running`, `done` and `failed`.

pub mod shared;
mod store;

use crate::call::{self, answer, CallError, CallOptions, Held, OutboundRequest};
use crate::ctx::RequestCtx;
use crate::problem::Problem;
use crate::runtime::Runtime;
use crate::upstream::Pool;
use bytes::Bytes;
use pingora_proxy::Session;
use std::sync::Arc;
use std::time::Duration;
use store::{JobResult, Lookup, STORE};

/// A compiled `job` action.
pub struct JobSpec {
    pub pool: Arc<Pool>,
    /// The route's prefix without a trailing `/`.
    pub prefix: String,
    pub ttl: Duration,
    pub hold: Duration,
    pub max_running: usize,
    pub max_result: usize,
    pub options: CallOptions,
}

impl JobSpec {
    pub fn compile(route: &conf::Route, job: &conf::Job, pool: Arc<Pool>) -> Self {
        let prefix = route
            .matcher
            .prefix
            .as_deref()
            .unwrap_or("/")
            .trim_end_matches('/')
            .to_owned();
        Self {
            pool,
            prefix,
            ttl: job.ttl.get(),
            hold: job.timeout.get(),
            max_running: job.max_running,
            max_result: job.max_result.as_usize(),
            options: CallOptions::compile(route),
        }
    }
}

fn not_found(id: &str) -> Problem {
    Problem::new(
        404,
        "job-not-found",
        "Not Found",
        format!("there is no job `{id}` for this caller"),
    )
}

/// Serves a `job` route: starts a job or polls one, by method and path.
pub async fn serve(
    runtime: &Runtime,
    session: &mut Session,
    ctx: &mut RequestCtx,
    spec: &JobSpec,
) -> pingora_error::Result<u16> {
    let header = session.req_header();
    let rest = header
        .uri
        .path()
        .strip_prefix(spec.prefix.as_str())
        .unwrap_or("")
        .trim_start_matches('/')
        .to_owned();
    let polling = matches!(header.method, http::Method::GET | http::Method::HEAD);
    match (rest.is_empty(), polling) {
        (true, false) => start(session, ctx, spec).await,
        (false, true) if !rest.contains('/') => poll(runtime, session, ctx, spec, &rest).await,
        (true, true) => {
            let problem = Problem::method_not_allowed(header.method.as_str(), "POST");
            answer::problem(session, ctx, &problem).await
        }
        _ => {
            let problem = Problem::not_found(&format!("{} {}", header.method, header.uri.path()));
            answer::problem(session, ctx, &problem).await
        }
    }
}

async fn start(
    session: &mut Session,
    ctx: &mut RequestCtx,
    spec: &JobSpec,
) -> pingora_error::Result<u16> {
    let request = match OutboundRequest::build(session, ctx).await? {
        Ok(request) => Arc::new(request),
        Err(problem) => return answer::problem(session, ctx, &problem).await,
    };
    let route: Arc<str> = Arc::from(ctx.route_name());
    let owner = ctx.identity.as_ref().map(auth::Identity::key);
    let Some(job) = STORE.start(&route, owner, spec.max_running) else {
        let problem = Problem::new(
            503,
            "jobs-busy",
            "Service Unavailable",
            format!(
                "this route already runs its maximum of {} jobs; try again shortly",
                spec.max_running
            ),
        )
        .with_header("retry-after", "1");
        return answer::problem(session, ctx, &problem).await;
    };
    let id = job.id.clone();
    let owner = ctx.identity.as_ref().map(auth::Identity::key);
    // Mirrored before the 202, so a poll on another instance finds the job at once.
    shared::started(&id, &route, owner.as_deref(), MIRROR_RUNNING, spec.ttl).await;
    let (pool, options, max_result, ttl) = (
        spec.pool.clone(),
        spec.options.clone(),
        spec.max_result,
        spec.ttl,
    );
    tokio::spawn(async move {
        let call = call::until_ready(options.repoll.as_ref(), || {
            let (pool, request) = (&pool, &request);
            async move { Arc::new(call::send(pool, request, max_result).await) }
        });
        let result = if options.repoll.is_some() {
            tokio::time::timeout(options.hold, call)
                .await
                .unwrap_or_else(|_| Arc::new(Err(CallError::Timeout(pool.name.clone()))))
        } else {
            call.await
        };
        let result = match &*result {
            Ok(answer) => JobResult::Answer(answer.clone()),
            Err(CallError::TooLarge(name, limit)) => JobResult::Failed(Problem::new(
                502,
                "job-result-too-large",
                "Bad Gateway",
                format!("the answer of upstream `{name}` was larger than this route's max_result of {limit} bytes; it was not kept"),
            )),
            Err(error) => JobResult::Failed(error.problem()),
        };
        shared::finished(&job.id, &route, owner.as_deref(), &result, ttl).await;
        STORE.finish(&job, result, ttl);
    });
    let poll = format!("{}/{id}", spec.prefix);
    let body = serde_json::json!({"job": id, "poll": poll});
    answer::body(
        session,
        ctx,
        202,
        Some("application/json"),
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        &[("location", poll.clone())],
    )
    .await
}

/// `?wait=SECONDS`, capped by the route's hold; `Err` for a value that is not a number.
fn hold_of(session: &Session, route_hold: Duration) -> Result<Duration, Problem> {
    let query = session.req_header().uri.query().unwrap_or("");
    let Some((_, wait)) = form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == "wait")
    else {
        return Ok(route_hold);
    };
    wait.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(route_hold.as_secs_f64())))
        .ok_or_else(|| {
            Problem::new(
                400,
                "bad-request",
                "Bad Request",
                format!(
                    "invalid wait `{wait}`: give a number of seconds from 0 to {}",
                    route_hold.as_secs()
                ),
            )
        })
}

async fn poll(
    runtime: &Runtime,
    session: &mut Session,
    ctx: &mut RequestCtx,
    spec: &JobSpec,
    id: &str,
) -> pingora_error::Result<u16> {
    let hold = match hold_of(session, spec.hold) {
        Ok(hold) => hold,
        Err(problem) => return answer::problem(session, ctx, &problem).await,
    };
    let owner = ctx.identity.as_ref().map(auth::Identity::key);
    let route = ctx.route_name().to_owned();
    let expired = || {
        Problem::new(
            410,
            "job-expired",
            "Gone",
            format!("the result of job `{id}` has expired"),
        )
    };
    // A job started here is in the local table; one started on another instance (Redis
    // backplane) is found in Redis.
    let local = match STORE.lookup(&route, id, owner.as_deref()) {
        Lookup::Expired => return answer::problem(session, ctx, &expired()).await,
        Lookup::Found(waiting) => Some(waiting),
        Lookup::Unknown => match shared::lookup(id, &route, owner.as_deref()).await {
            shared::Remote::Unknown => return answer::problem(session, ctx, &not_found(id)).await,
            shared::Remote::Expired => return answer::problem(session, ctx, &expired()).await,
            shared::Remote::Done(result) => return send_result(session, ctx, &result).await,
            shared::Remote::Running => None,
        },
    };
    if let Err(problem) = crate::body::drain(session, ctx.body_timeout()).await? {
        return answer::problem(session, ctx, &problem).await;
    }
    let deadline = tokio::time::Instant::now() + hold;
    let wait = async {
        let Some(mut waiting) = local else {
            return match shared::wait(id, &route, owner.as_deref()).await {
                shared::Remote::Done(result) => Some(Arc::new(result)),
                _ => None,
            };
        };
        loop {
            if let Some(result) = waiting.borrow_and_update().clone() {
                return Some(result);
            }
            if waiting.changed().await.is_err() {
                return None;
            }
        }
    };
    match call::hold(runtime, session, deadline, wait).await {
        Held::Done(Some(result)) => send_result(session, ctx, &result).await,
        Held::Done(None) | Held::HoldEnded => answer::timeout(session, ctx, false).await,
        Held::Shutdown => answer::timeout(session, ctx, true).await,
        Held::ClientGone => Ok(0),
    }
}

/// How long a running job's mirror in Redis lives before its result replaces it.
const MIRROR_RUNNING: Duration = Duration::from_secs(3600);

/// 200 with the upstream's answer (its status in `Holdfast-Upstream-Status`), or the stored
/// problem of a failed job.
async fn send_result(
    session: &mut Session,
    ctx: &mut RequestCtx,
    result: &JobResult,
) -> pingora_error::Result<u16> {
    match result {
        JobResult::Answer(upstream) => {
            let status = upstream.status.to_string();
            answer::body(
                session,
                ctx,
                200,
                upstream.content_type(),
                upstream.body.clone(),
                &[("holdfast-upstream-status", status)],
            )
            .await
        }
        JobResult::Failed(problem) => answer::problem(session, ctx, problem).await,
    }
}
