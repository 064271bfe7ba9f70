//! Per-request state carried through Pingora's phases.

use crate::core::routes::{Captures, CompiledRoute};
use crate::core::state::State;
use crate::core::upstream::Pool;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// What one request has learned so far.
pub struct RequestCtx {
    pub started: Instant,
    /// The configuration this request started on; a reload does not change it mid-request.
    pub state: Option<Arc<State>>,
    pub route: Option<Arc<CompiledRoute>>,
    pub captures: Captures,
    pub request_id: Option<http::HeaderValue>,
    pub pool: Option<Arc<Pool>>,
    /// Targets this request tried (a connect failure moves on to the next).
    pub tried: Vec<SocketAddr>,
    pub upstream_started: Option<Instant>,
    pub upstream_status: Option<u16>,
    /// Time from sending to the upstream to its response header.
    pub upstream_elapsed: Option<std::time::Duration>,
    /// How a long-poll ended (data, timeout, client_gone, shutdown, gone, error).
    pub outcome: Option<&'static str>,
    /// The status of an answer the gateway wrote itself.
    pub answered: Option<u16>,
    /// Counted in `holdfast_http_requests_total` already (when its answer's status was known,
    /// before the answer went out); `logging` counts only the requests left uncounted.
    pub counted: bool,
    /// Counted in `holdfast_upstream_requests_total` already (when the upstream answered).
    pub upstream_counted: bool,
    /// A proxied response's status, counted once its mapped body is through: a body that fails
    /// the response rules may still turn it into a 502.
    pub count_at_end: Option<u16>,
    /// Who the route's auth accepted.
    pub identity: Option<auth::Identity>,
    pub auth_upstream: crate::pipeline::authn::Upstream,
    pub mapped: crate::pipeline::mapped::MappedState,
    /// The route's in-flight slots, released when the request ends.
    pub in_flight: Option<crate::limits::InFlightGuard>,
    /// Request body bytes streamed so far (proxied routes, for `max_body`).
    pub body_bytes: u64,
    /// A limit refused the request while its body streamed: the answer to give.
    pub rejected: Option<crate::problem::Problem>,
    /// The upstream answered `101 Switching Protocols`: the connection is a tunnel now.
    pub upgraded: bool,
    /// The keys the route's rate limits counted the request under, kept where a WebSocket
    /// subscriber may publish: each message it sends counts under them too.
    pub rate_keys: Option<crate::limits::RateKeys>,
    /// The request's part in a trace, when tracing is on. Boxed: a held poll keeps it.
    pub trace: Option<Box<crate::observe::trace::RequestTrace>>,
    /// What an `llm` route's request went to, for the access log.
    pub llm: Option<Box<crate::actions::llm::Record>>,
    _in_flight: crate::core::runtime::InFlight,
}

impl RequestCtx {
    pub fn new() -> Self {
        Self::resume(Kept {
            started: Instant::now(),
            state: None,
            route: None,
            request_id: None,
            identity: None,
            in_flight: None,
            counted: false,
            trace: None,
            _in_flight: crate::core::runtime::InFlight::start(),
        })
    }

    /// How long the request's body may take to arrive (`limits.body_timeout`).
    pub fn body_timeout(&self) -> std::time::Duration {
        self.state
            .as_ref()
            .map_or(std::time::Duration::from_secs(60), |state| {
                state.config.limits.body_timeout.get()
            })
    }

    /// What an action is given of an admitted request on `route`: its captures, identity and
    /// body deadline (no upstream head, no mapped body: see `admit::dispatch` for those).
    pub fn admitted<'a>(&'a self, route: &'a CompiledRoute) -> crate::actions::Admitted<'a> {
        crate::actions::Admitted {
            route,
            captures: &self.captures,
            identity: self.identity.as_ref(),
            rate_keys: self.rate_keys.as_ref(),
            body_timeout: self.body_timeout(),
            upstream_head: None,
            mapped_body: None,
            outcome: None,
            trace: self.trace.as_deref(),
        }
    }

    pub fn route_name(&self) -> &str {
        self.route.as_ref().map_or("none", |route| &route.name)
    }
}

/// What a held request keeps of its context while it waits (the edge's held polls): what its
/// answer and its record need. The rest (captures, upstream and mapping state) is done with.
pub struct Kept {
    started: Instant,
    state: Option<Arc<State>>,
    route: Option<Arc<CompiledRoute>>,
    request_id: Option<http::HeaderValue>,
    identity: Option<auth::Identity>,
    in_flight: Option<crate::limits::InFlightGuard>,
    counted: bool,
    trace: Option<Box<crate::observe::trace::RequestTrace>>,
    _in_flight: crate::core::runtime::InFlight,
}

impl RequestCtx {
    /// Keeps what a held request needs of this context ([`Kept`]).
    pub fn keep(self) -> Kept {
        Kept {
            started: self.started,
            state: self.state,
            route: self.route,
            request_id: self.request_id,
            identity: self.identity,
            in_flight: self.in_flight,
            counted: self.counted,
            trace: self.trace,
            _in_flight: self._in_flight,
        }
    }

    /// The context of a held request again, once its hold ended.
    pub fn resume(kept: Kept) -> Self {
        Self {
            started: kept.started,
            state: kept.state,
            route: kept.route,
            captures: Vec::new(),
            request_id: kept.request_id,
            pool: None,
            tried: Vec::new(),
            upstream_started: None,
            upstream_status: None,
            upstream_elapsed: None,
            outcome: None,
            answered: None,
            counted: kept.counted,
            upstream_counted: false,
            count_at_end: None,
            identity: kept.identity,
            auth_upstream: Default::default(),
            mapped: Default::default(),
            in_flight: kept.in_flight,
            body_bytes: 0,
            rejected: None,
            upgraded: false,
            rate_keys: None,
            trace: kept.trace,
            llm: None,
            _in_flight: kept._in_flight,
        }
    }
}

/// A context as `request_filter` leaves it for a request to `path` on the config `yaml`: its
/// state and route, for tests of the later steps.
#[cfg(test)]
pub fn for_route(yaml: &str, path: &str) -> RequestCtx {
    let config = conf::load_str(std::path::Path::new("t.yaml"), yaml).expect("parses");
    let state =
        Arc::new(crate::core::state::compile(config, None).unwrap_or_else(|e| panic!("{e:?}")));
    let mut ctx = RequestCtx::new();
    match state.routes.find(None, &http::Method::GET, path) {
        crate::core::routes::Lookup::Found(route, captures) => {
            ctx.route = Some(route.clone());
            ctx.captures = captures;
        }
        _ => panic!("no route for {path}"),
    }
    ctx.state = Some(state);
    ctx
}
