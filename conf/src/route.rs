//! Routes: what a request must look like to match (host, method, path), what guards it (auth,
//! mapping), and the one action it takes.

use crate::config::one_or_many;
use crate::upstream_call::{coalesce, Backoff, Coalesce, Fanin, Job};
use crate::{auth, mapping, ByteSize, Cors, Duration, LongPoll, Publish};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique; used in metrics labels and logs.
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: Match,
    #[serde(default)]
    pub auth: Option<auth::RouteAuth>,
    #[serde(default)]
    pub map: Option<mapping::RouteMap>,
    /// Proxy to this upstream pool.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Hold the request on a channel until a message or the timeout.
    #[serde(default)]
    pub longpoll: Option<LongPoll>,
    /// Append the request body to a channel.
    #[serde(default)]
    pub publish: Option<Publish>,
    /// Largest request body this route reads itself (overrides `limits.max_body`).
    #[serde(default)]
    pub max_body: Option<ByteSize>,
    #[serde(default)]
    pub cors: Option<Cors>,
    /// Rate limits, all of which a request must pass (e.g. `10/s` per IP and `1000/h` per user).
    #[serde(default)]
    pub rate_limits: Vec<crate::RateLimit>,
    /// Token quotas of an `llm` route, all of which a request must pass.
    #[serde(default)]
    pub token_limits: Vec<crate::TokenLimit>,
    /// Spend budgets of an `llm` route, in dollars at `llm.prices`, all of which a request
    /// must pass.
    #[serde(default)]
    pub spend_limits: Vec<crate::SpendLimit>,
    /// Caps on requests in flight (held polls included), route-wide and per key.
    #[serde(default)]
    pub concurrency: Option<crate::Concurrency>,
    /// Call several upstreams concurrently and merge their answers.
    #[serde(default)]
    pub fanin: Option<Fanin>,
    /// Start an upstream call in the background; the client polls for its result.
    #[serde(default)]
    pub job: Option<Job>,
    /// Serve the `llm.models` aliases: OpenAI's `…/chat/completions`, Anthropic's
    /// `…/messages` and `…/models` under the route's path.
    #[serde(default)]
    pub llm: Option<crate::LlmRoute>,
    /// Upstream statuses that mean "nothing yet": the call is made again, with `backoff`, until
    /// another answer or the end of `hold`. The route then answers locally.
    #[serde(default)]
    pub repoll_on: Option<Vec<u16>>,
    /// The longest a re-polling or fan-in route holds the client (default 30s).
    #[serde(default)]
    pub hold: Option<Duration>,
    #[serde(default)]
    pub backoff: Option<Backoff>,
    /// Identical upstream requests in flight share one upstream call.
    #[serde(default, deserialize_with = "coalesce")]
    #[schemars(with = "Option<crate::schema::BoolOr<Coalesce>>")]
    pub coalesce: Option<Coalesce>,
    /// Serve an identical request's answer for this long after it came.
    #[serde(default)]
    pub cache: Option<Duration>,
    /// An `upstream` route whose answers are event streams keeps each one, so that a client
    /// that lost its connection resumes it by asking again with its `Last-Event-ID`: `true`,
    /// or `{ ttl: 10m }`.
    #[serde(default, deserialize_with = "crate::llm::resumable")]
    #[schemars(with = "Option<crate::schema::BoolOr<crate::Resumable>>")]
    pub resumable: Option<crate::Resumable>,
    /// Request headers that make two otherwise identical requests different for `coalesce`.
    #[serde(default, deserialize_with = "crate::config::one_or_many")]
    #[schemars(with = "crate::schema::OneOrMany<String>")]
    pub vary: Vec<String>,
}

/// What a request must look like. Every condition given must hold.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Host names (without port); empty matches any host.
    #[serde(default, deserialize_with = "one_or_many")]
    #[schemars(with = "crate::schema::OneOrMany<String>")]
    pub host: Vec<String>,
    /// An exact path (`/poll`) or a pattern with named captures (`/users/{id}`,
    /// `/files/{*rest}`).
    #[serde(default)]
    pub path: Option<String>,
    /// Every path that starts with this one, segment-wise (`/api` matches `/api` and `/api/x`,
    /// not `/apix`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Allowed methods; empty allows every method.
    #[serde(default, deserialize_with = "one_or_many")]
    #[schemars(with = "crate::schema::OneOrMany<String>")]
    pub methods: Vec<String>,
}

/// The one thing a route does with a request that passed its checks.
#[derive(Clone, Copy, Debug)]
pub enum RouteAction<'a> {
    Upstream(&'a str),
    LongPoll(&'a LongPoll),
    Publish(&'a Publish),
    Fanin(&'a Fanin),
    Job(&'a Job),
    Llm(&'a crate::LlmRoute),
}

impl Route {
    /// Every action the route names; a valid route names exactly one.
    pub fn actions(&self) -> Vec<RouteAction<'_>> {
        let mut actions = Vec::with_capacity(1);
        if let Some(upstream) = &self.upstream {
            actions.push(RouteAction::Upstream(upstream));
        }
        if let Some(longpoll) = &self.longpoll {
            actions.push(RouteAction::LongPoll(longpoll));
        }
        if let Some(publish) = &self.publish {
            actions.push(RouteAction::Publish(publish));
        }
        if let Some(fanin) = &self.fanin {
            actions.push(RouteAction::Fanin(fanin));
        }
        // A job without an upstream is the way an `llm` route answers, not an action of its own.
        if let Some(job) = self.job.as_ref().filter(|job| job.upstream.is_some()) {
            actions.push(RouteAction::Job(job));
        }
        if let Some(llm) = &self.llm {
            actions.push(RouteAction::Llm(llm));
        }
        actions
    }

    /// The route's action; `validate` guarantees there is exactly one.
    pub fn action(&self) -> Option<RouteAction<'_>> {
        self.actions().into_iter().next()
    }
}
