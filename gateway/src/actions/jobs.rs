//! `job` routes: `POST <prefix>` starts a slow upstream call in the background and
//! `GET <prefix>/<id>` long-polls for its result. `store` is the job table; `shared` mirrors
//! jobs into Redis for polls on other instances. See docs/actions.md.

pub mod shared;
mod store;

use crate::actions::call::{self, timeout_reply};
use crate::actions::llm;
use crate::actions::Admitted;
use crate::core::runtime::Runtime;
use crate::core::spec::job::{JobSpec, Work};
use crate::core::upstream::exchange::{send, Answer, OutboundRequest, UpstreamError};
use crate::exchange::hold::{hold, Held};
use crate::exchange::{body, Exchange, Reply};
use crate::observe::trace::SpanParent;
use crate::problem::Problem;
use pingora_error::Result;
use std::sync::Arc;
use std::time::Duration;
pub use store::JobResult;
use store::{Lookup, STORE};

fn not_found(id: &str) -> Problem {
    Problem::new(
        404,
        "job-not-found",
        "Not Found",
        format!("there is no job `{id}` for this caller"),
    )
}

/// Jobs running on this instance, on every route.
pub fn running() -> usize {
    STORE.running()
}

/// What a request on a `job` route asks for, by its method and path.
#[derive(Debug, PartialEq, Eq)]
pub enum Target<'p> {
    Start,
    /// `GET …/models` on an `llm` job route: the route's aliases.
    Models,
    /// The result of the job with this id.
    Result(&'p str),
    /// The route's own path with a method that does not start a job.
    MethodNotAllowed,
    NotFound,
}

impl<'p> Target<'p> {
    pub fn of(spec: &JobSpec, method: &http::Method, path: &'p str) -> Self {
        let rest = path
            .strip_prefix(spec.prefix.as_str())
            .unwrap_or("")
            .trim_start_matches('/');
        let polling = matches!(*method, http::Method::GET | http::Method::HEAD);
        if let Work::Llm(_) = spec.work {
            // The `llm` doors are under the prefix; which one a POST names, the models decide.
            if !polling {
                return Self::Start;
            }
            let rest = rest.trim_end_matches('/');
            if rest == "models" || rest.ends_with("/models") {
                return Self::Models;
            }
        }
        match (rest.is_empty(), polling) {
            (true, false) => Self::Start,
            (false, true) if !rest.contains('/') => Self::Result(rest),
            (true, true) => Self::MethodNotAllowed,
            _ => Self::NotFound,
        }
    }
}

/// Serves a `job` route: starts a job or polls one, by method and path. `None` when the client
/// left.
pub async fn serve(
    runtime: &Runtime,
    exchange: &mut impl Exchange,
    admitted: &mut Admitted<'_>,
    spec: &JobSpec,
) -> Result<Option<Reply>> {
    let header = exchange.head();
    match Target::of(spec, &header.method, header.uri.path()) {
        Target::Start => start(exchange, admitted, spec).await.map(Some),
        Target::Models => match &spec.work {
            Work::Llm(models) => Ok(Some(llm::models(models))),
            Work::Upstream { .. } => Ok(Some(Reply::problem(&Problem::not_found("models")))),
        },
        Target::Result(id) => {
            let id = id.to_owned();
            poll(runtime, exchange, admitted, spec, &id).await
        }
        Target::MethodNotAllowed => {
            let problem = Problem::method_not_allowed(header.method.as_str(), "POST");
            Ok(Some(Reply::problem(&problem)))
        }
        Target::NotFound => {
            let problem = Problem::not_found(&format!("{} {}", header.method, header.uri.path()));
            Ok(Some(Reply::problem(&problem)))
        }
    }
}

async fn start(
    exchange: &mut impl Exchange,
    admitted: &Admitted<'_>,
    spec: &JobSpec,
) -> Result<Reply> {
    let route = admitted.route.name.clone();
    let work = match &spec.work {
        Work::Upstream { pool, options } => match call::outbound(exchange, admitted).await? {
            Ok(request) => Background::Call {
                pool: pool.clone(),
                options: options.clone(),
                request: Arc::new(request),
            },
            Err(problem) => return Ok(Reply::problem(&problem)),
        },
        Work::Llm(models) => match llm::read(exchange, admitted, models).await? {
            Ok(asked) if asked.streams() => {
                let why = "a job keeps the whole answer for its polls; ask without `stream`";
                return Ok(llm::errors::bad_request(asked.format, "stream", why));
            }
            Ok(asked) => Background::Ask {
                asked: Box::new(asked),
                route: route.clone(),
                trace: admitted.trace.map(|trace| trace.server.clone()),
            },
            Err(reply) => return Ok(reply),
        },
    };
    let owner = admitted.owner();
    let Some(job) = STORE.start(&route, owner.clone(), spec.max_running) else {
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
        return Ok(Reply::problem(&problem));
    };
    let id = job.id.clone();
    // Mirrored before the 202, so a poll on another instance finds the job at once.
    shared::started(&id, &route, owner.as_deref(), MIRROR_RUNNING, spec.ttl).await;
    let (max_result, ttl) = (spec.max_result, spec.ttl);
    tokio::spawn(async move {
        let result = work.run(max_result).await;
        shared::finished(&job.id, &route, owner.as_deref(), &result, ttl).await;
        STORE.finish(&job, result, ttl);
    });
    let poll = format!("{}/{id}", spec.prefix);
    let body = serde_json::json!({"job": id, "poll": poll});
    Ok(Reply::json(202, &body).header("location", &poll))
}

/// What a started job does in the background, with all it needs.
enum Background {
    /// The client's request, sent to an upstream.
    Call {
        pool: Arc<crate::core::upstream::Pool>,
        options: crate::core::spec::call::CallOptions,
        request: Arc<OutboundRequest>,
    },
    /// A chat request, asked of an `llm` route's models.
    Ask {
        asked: Box<llm::Asked>,
        route: Arc<str>,
        trace: Option<SpanParent>,
    },
}

impl Background {
    async fn run(self, max_result: usize) -> JobResult {
        match self {
            Self::Call {
                pool,
                options,
                request,
            } => {
                let call = call::until_ready(options.repoll.as_ref(), || {
                    let (pool, request) = (&pool, &request);
                    async move { Arc::new(send(pool, request, max_result).await) }
                });
                let result = if options.repoll.is_some() {
                    tokio::time::timeout(options.hold, call)
                        .await
                        .unwrap_or_else(|_| {
                            Arc::new(Err(UpstreamError::Timeout(pool.name.clone())))
                        })
                } else {
                    call.await
                };
                match &*result {
                    Ok(answer) => JobResult::Answer(answer.clone()),
                    Err(UpstreamError::TooLarge(name, limit)) => {
                        JobResult::Failed(too_large(&format!("upstream `{name}`"), *limit))
                    }
                    Err(error) => JobResult::Failed(error.problem()),
                }
            }
            Self::Ask {
                asked,
                route,
                trace,
            } => match llm::ask(&asked, &route, trace, &mut None).await {
                llm::Served::Reply(reply) if reply.body.len() > max_result => {
                    JobResult::Failed(too_large("the model", max_result))
                }
                llm::Served::Reply(reply) => JobResult::Reply(Answer {
                    status: reply.status,
                    headers: reply.headers,
                    body: reply.body,
                }),
                // `read` refused streamed requests: a target never answers with a stream here.
                llm::Served::Stream(..) | llm::Served::Follow(..) | llm::Served::Gone => {
                    JobResult::Failed(Problem::new(
                        502,
                        "upstream-failed",
                        "Bad Gateway",
                        "the model answered with a stream to a request for a whole answer",
                    ))
                }
            },
        }
    }
}

/// The problem a job keeps when its answer was larger than `max_result`.
fn too_large(whose: &str, limit: usize) -> Problem {
    Problem::new(
        502,
        "job-result-too-large",
        "Bad Gateway",
        format!("the answer of {whose} was larger than this route's max_result of {limit} bytes; it was not kept"),
    )
}

/// `?wait=SECONDS`, capped by the route's hold; `Err` for a value that is not a number.
fn hold_of(exchange: &impl Exchange, route_hold: Duration) -> Result<Duration, Problem> {
    let query = exchange.head().uri.query().unwrap_or("");
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

/// Serves a result poll: answered at once when the job is done (or unknown, or expired), held
/// until its result otherwise. `None` when the client left.
async fn poll(
    runtime: &Runtime,
    exchange: &mut impl Exchange,
    admitted: &mut Admitted<'_>,
    spec: &JobSpec,
    id: &str,
) -> Result<Option<Reply>> {
    let mut waiting = match open(exchange, admitted, spec, id).await? {
        Ok(waiting) => waiting,
        Err(reply) => return Ok(Some(reply)),
    };
    let held = {
        let deadline = waiting.deadline;
        let work = std::pin::pin!(waiting.wait());
        hold(runtime, exchange.client_gone(), Some(deadline), work).await
    };
    let (outcome, reply) = close(held);
    admitted.outcome = Some(outcome);
    Ok(reply)
}

/// A result poll that waits for its job. It owns all it needs, so a transport may keep it in
/// place of the request while it waits.
pub struct Waiting {
    id: Box<str>,
    route: std::sync::Arc<str>,
    owner: Option<Box<str>>,
    /// The job's result as it arrives, when it runs here; `None`: it runs on another instance
    /// and its result is looked for in Redis.
    local: Option<tokio::sync::watch::Receiver<Option<Arc<JobResult>>>>,
    /// When the poll ends with 204 (`?wait`, at most the route's hold).
    pub deadline: tokio::time::Instant,
}

impl Waiting {
    /// The job's result, or `None` when it will never come here; raced by the caller against
    /// the deadline, the client and shutdown.
    pub async fn wait(&mut self) -> Option<Arc<JobResult>> {
        let Some(waiting) = &mut self.local else {
            // Boxed: the Redis look-ups are far bigger than a local wait, and a transport keeps
            // this future for the whole hold.
            let remote = Box::pin(shared::wait(&self.id, &self.route, self.owner.as_deref()));
            return match remote.await {
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
    }
}

/// Opens the poll for job `id`'s result: `Err` is the reply when there is nothing to wait for
/// (done, unknown, expired) or the request is refused.
pub async fn open(
    exchange: &mut impl Exchange,
    admitted: &Admitted<'_>,
    spec: &JobSpec,
    id: &str,
) -> Result<Result<Waiting, Reply>> {
    let hold_for = match hold_of(exchange, spec.hold) {
        Ok(hold) => hold,
        Err(problem) => return Ok(Err(Reply::problem(&problem))),
    };
    let owner = admitted.owner();
    let route = &admitted.route.name;
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
    let local = match STORE.lookup(route, id, owner.as_deref()) {
        Lookup::Expired => return Ok(Err(Reply::problem(&expired()))),
        Lookup::Found(waiting) => Some(waiting),
        Lookup::Unknown => match shared::lookup(id, route, owner.as_deref()).await {
            shared::Remote::Unknown => return Ok(Err(Reply::problem(&not_found(id)))),
            shared::Remote::Expired => return Ok(Err(Reply::problem(&expired()))),
            shared::Remote::Done(result) => return Ok(Err(result_reply(&result))),
            shared::Remote::Running => None,
        },
    };
    // Noticing that the client left reads the connection: any request body must be out of the
    // way first.
    if let Err(problem) = body::drain(exchange, admitted.body_timeout).await? {
        return Ok(Err(Reply::problem(&problem)));
    }
    Ok(Ok(Waiting {
        id: id.into(),
        route: route.clone(),
        owner: owner.map(String::into_boxed_str),
        local,
        deadline: tokio::time::Instant::now() + hold_for,
    }))
}

/// The reply for how a result poll's hold ended (`None`: the client left), and that outcome
/// for the access log.
pub fn close(held: Held<Option<Arc<JobResult>>>) -> (&'static str, Option<Reply>) {
    match held {
        Held::Done(Some(result)) => ("data", Some(result_reply(&result))),
        Held::Done(None) | Held::HoldEnded => ("timeout", Some(timeout_reply(false))),
        Held::Shutdown => ("shutdown", Some(timeout_reply(true))),
        Held::ClientGone => ("client_gone", None),
    }
}

/// How long a running job's mirror in Redis lives before its result replaces it.
const MIRROR_RUNNING: Duration = Duration::from_secs(3600);

/// 200 with the upstream's answer (its status in `Holdfast-Upstream-Status`), or the stored
/// problem of a failed job.
fn result_reply(result: &JobResult) -> Reply {
    match result {
        JobResult::Answer(upstream) => {
            let content_type = upstream.headers.get(http::header::CONTENT_TYPE).cloned();
            Reply::fresh(200)
                .with_body(content_type, upstream.body.clone())
                .header("holdfast-upstream-status", &upstream.status.to_string())
        }
        JobResult::Reply(answer) => Reply::upstream(answer),
        JobResult::Failed(problem) => Reply::problem(problem),
    }
}
