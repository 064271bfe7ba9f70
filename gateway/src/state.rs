//! The running configuration: everything compiled from one `conf::Config` — route table,
//! upstream pools, limits — held behind an `ArcSwap` so a reload swaps it atomically while
//! in-flight requests finish on the state they started with.

use crate::channels::{ChannelSpec, LongPollSpec, PublishSpec};
use crate::routes::{Action, RouteTable};
use crate::upstream::Pool;
use conf::{Config, ConfigErrors, FieldError, RouteAction};
use std::collections::HashMap;
use std::sync::Arc;

/// One compiled configuration.
pub struct State {
    pub config: Arc<Config>,
    pub routes: RouteTable,
    pub pools: Vec<Arc<Pool>>,
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

/// Load, validate and compile the config at `path`: every step `holdfast check` runs too.
pub fn load(path: &std::path::Path) -> Result<State, ConfigErrors> {
    let config = conf::load(path)?;
    conf::validate(&config)?;
    compile(config)
}

/// Compiles a validated config; resolving target names is the only I/O.
pub fn compile(config: Config) -> Result<State, ConfigErrors> {
    let mut errors = Vec::new();
    let mut pools = HashMap::new();
    for (name, upstream) in &config.upstreams {
        match Pool::build(name, upstream) {
            Ok(pool) => {
                pools.insert(name.clone(), Arc::new(pool));
            }
            Err(message) => errors.push(FieldError::new(
                format!("upstreams.{name}.targets"),
                message,
            )),
        }
    }
    let routes = RouteTable::compile(&config, |index, route| match route.action() {
        Some(RouteAction::Upstream(name)) => {
            pools.get(name).cloned().map(Action::Proxy).ok_or_else(|| {
                FieldError::new(
                    format!("routes[{index}].upstream"),
                    format!("upstream `{name}` is unavailable"),
                )
            })
        }
        Some(RouteAction::LongPoll(longpoll)) => {
            ChannelSpec::compile(&longpoll.channel, longpoll.mode)
                .map(|channel| {
                    Action::LongPoll(LongPollSpec {
                        channel,
                        settings: longpoll.clone(),
                        held: Default::default(),
                    })
                })
                .map_err(|message| {
                    FieldError::new(format!("routes[{index}].longpoll.channel"), message)
                })
        }
        Some(RouteAction::Publish(publish)) => ChannelSpec::compile(&publish.channel, publish.mode)
            .map(|channel| Action::Publish(PublishSpec { channel }))
            .map_err(|message| {
                FieldError::new(format!("routes[{index}].publish.channel"), message)
            }),
        None => Err(FieldError::new(
            format!("routes[{index}]"),
            "the route has no action",
        )),
    });
    let routes = match routes {
        Ok(routes) => Some(routes),
        Err(mut more) => {
            errors.append(&mut more);
            None
        }
    };
    match routes {
        Some(routes) if errors.is_empty() => Ok(State {
            max_header_bytes: config.limits.max_header_bytes.as_usize(),
            max_headers: config.limits.max_headers,
            config: Arc::new(config),
            routes,
            pools: pools.into_values().collect(),
        }),
        _ => Err(config.place(errors)),
    }
}
