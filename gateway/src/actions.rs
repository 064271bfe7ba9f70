//! What a route does once its request is admitted: call (re-poll, coalescing, cache), fan-in,
//! jobs, and the channel actions (long-poll, publish). Proxying is Pingora's own path (the
//! pipeline's hooks). Each action reads its request through an [`Exchange`] and ends with a
//! [`Reply`] (or none, when the client left first), which the pipeline writes. See
//! docs/architecture.md.
//!
//! [`Exchange`]: crate::exchange::Exchange
//! [`Reply`]: crate::exchange::Reply

pub mod call;
pub mod channels;
pub mod coalesce;
pub mod fanin;
pub mod jobs;
pub mod llm;
pub mod resume;
#[cfg(test)]
mod tests;

use crate::core::routes::CompiledRoute;
use bytes::Bytes;
use pingora_http::RequestHeader;
use std::time::Duration;

/// A request the pipeline admitted (routed, authenticated, within its limits, mapped): what
/// the actions know of it besides its head.
pub struct Admitted<'a> {
    pub route: &'a CompiledRoute,
    /// The path's captures, by name.
    pub captures: &'a [(String, String)],
    /// Who the route's auth accepted.
    pub identity: Option<&'a auth::Identity>,
    /// The keys the route's rate limits counted the request under, where messages it sends
    /// later count too (a WebSocket subscriber that may publish).
    pub rate_keys: Option<&'a crate::limits::RateKeys>,
    /// How long the request body may take to arrive (`limits.body_timeout`).
    pub body_timeout: Duration,
    /// The head to send upstream, for actions that call one: forwarding headers set, the
    /// credential stripped, the mapping applied. Boxed: a held poll carries this struct, and
    /// an inline head would add its size to every one.
    pub upstream_head: Option<Box<RequestHeader>>,
    /// The body the route's mapping made, which replaces the client's upstream.
    pub mapped_body: Option<&'a Bytes>,
    /// How a held request ended, for the access log (set by the action).
    pub outcome: Option<&'static str>,
    /// The request's trace, when tracing is on: holds, publishes and upstream calls add their
    /// spans to it.
    pub trace: Option<&'a crate::observe::trace::RequestTrace>,
}

impl Admitted<'_> {
    /// The identity's `provider:subject`, which binds coalesced answers and jobs to it.
    pub fn owner(&self) -> Option<String> {
        self.identity.map(auth::Identity::key)
    }

    /// The request `method path` admitted to the route it is for in `state`, for tests.
    #[cfg(test)]
    pub fn for_test<'s>(
        state: &'s crate::core::state::State,
        method: &http::Method,
        path: &str,
    ) -> Admitted<'s> {
        let crate::core::routes::Lookup::Found(route, captures) =
            state.routes.find(None, method, path)
        else {
            panic!("no route for {path}");
        };
        Admitted {
            route,
            captures: Box::leak(captures.into_boxed_slice()),
            identity: None,
            rate_keys: None,
            body_timeout: Duration::from_secs(5),
            upstream_head: None,
            mapped_body: None,
            outcome: None,
            trace: None,
        }
    }
}
