//! Routes: what a request must look like to match (host, method, path), what guards it (auth,
//! mapping), and the one action it takes.

use crate::config::one_or_many;
use crate::{auth, mapping, ByteSize, Cors, LongPoll, Publish};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
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
}

/// What a request must look like. Every condition given must hold.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Host names (without port); empty matches any host.
    #[serde(default, deserialize_with = "one_or_many")]
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
    pub methods: Vec<String>,
}

/// The one thing a route does with a request that passed its checks.
#[derive(Clone, Copy, Debug)]
pub enum RouteAction<'a> {
    Upstream(&'a str),
    LongPoll(&'a LongPoll),
    Publish(&'a Publish),
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
        actions
    }

    /// The route's action; `validate` guarantees there is exactly one.
    pub fn action(&self) -> Option<RouteAction<'_>> {
        self.actions().into_iter().next()
    }
}
