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
    _in_flight: crate::core::runtime::InFlight,
}

impl RequestCtx {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            state: None,
            route: None,
            captures: Vec::new(),
            request_id: None,
            pool: None,
            tried: Vec::new(),
            upstream_started: None,
            upstream_status: None,
            upstream_elapsed: None,
            outcome: None,
            answered: None,
            counted: false,
            upstream_counted: false,
            count_at_end: None,
            identity: None,
            auth_upstream: Default::default(),
            mapped: Default::default(),
            in_flight: None,
            body_bytes: 0,
            rejected: None,
            upgraded: false,
            _in_flight: crate::core::runtime::InFlight::start(),
        }
    }

    /// How long the request's body may take to arrive (`limits.body_timeout`).
    pub fn body_timeout(&self) -> std::time::Duration {
        self.state
            .as_ref()
            .map_or(std::time::Duration::from_secs(60), |state| {
                state.config.limits.body_timeout.get()
            })
    }

    pub fn route_name(&self) -> &str {
        self.route.as_ref().map_or("none", |route| &route.name)
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
