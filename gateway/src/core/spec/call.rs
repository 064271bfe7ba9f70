//! An `upstream` route that the gateway answers itself (re-poll, coalesce, cache), and the call
//! options fan-in and job routes share.

use crate::core::spec::coalesce;
use crate::core::upstream::exchange::{Answer, CallResult};
use crate::core::upstream::Pool;
use std::sync::Arc;
use std::time::Duration;

/// The default hold of a re-polling or fan-in route.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(30);

/// Statuses that mean "nothing yet", and the wait between asking again.
#[derive(Clone, Debug)]
pub struct Repoll {
    pub statuses: Vec<u16>,
    pub backoff: conf::Backoff,
}

impl Repoll {
    pub fn not_ready(&self, result: &CallResult) -> bool {
        matches!(result, Ok(answer) if self.is_repoll(answer))
    }

    /// Whether `answer` says "nothing yet".
    pub fn is_repoll(&self, answer: &Answer) -> bool {
        self.statuses.contains(&answer.status)
    }
}

/// What an upstream-calling route does besides calling: re-poll, hold, coalesce, cache.
#[derive(Clone, Debug)]
pub struct CallOptions {
    pub repoll: Option<Repoll>,
    pub hold: Duration,
    pub coalesce: Option<coalesce::Settings>,
    /// Event-stream answers are kept this long for clients to resume (`resumable`).
    pub resumable: Option<Duration>,
}

impl CallOptions {
    /// The route's options; a fan-in's own `repoll_on`/`hold`/`backoff` win over the route's.
    pub fn compile(route: &conf::Route) -> Self {
        let fanin = route.fanin.as_ref();
        let statuses = fanin
            .and_then(|f| f.repoll_on.clone())
            .or_else(|| route.repoll_on.clone());
        let backoff = fanin
            .and_then(|f| f.backoff)
            .or(route.backoff)
            .unwrap_or_default();
        let hold = fanin
            .and_then(|f| f.hold)
            .or(route.hold)
            .map_or(DEFAULT_HOLD, conf::Duration::get);
        Self {
            repoll: statuses.map(|statuses| Repoll { statuses, backoff }),
            hold,
            coalesce: coalesce::Settings::compile(route),
            resumable: route
                .resumable
                .as_ref()
                .map(|resumable| resumable.ttl.get()),
        }
    }

    /// Whether a plain `upstream` route must be answered locally rather than proxied.
    pub fn needs_local(&self) -> bool {
        self.repoll.is_some() || self.coalesce.is_some() || self.resumable.is_some()
    }
}

/// An `upstream` route answered locally (it re-polls, coalesces or caches).
pub struct CallSpec {
    pub pool: Arc<Pool>,
    pub options: CallOptions,
}

/// The action for an `upstream` route: proxied, unless its options need a local answer.
pub fn upstream_action(route: &conf::Route, pool: Arc<Pool>) -> crate::core::routes::Action {
    let options = CallOptions::compile(route);
    if options.needs_local() {
        crate::core::routes::Action::Call(Arc::new(CallSpec { pool, options }))
    } else {
        crate::core::routes::Action::Proxy(pool)
    }
}
