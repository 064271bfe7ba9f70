//! Holdfast's configuration: the YAML schema as serde types, loading one file or a directory of
//! route files, `${ENV}` references, durations and sizes, and validation whose every error names
//! the file, the line and the field (`routes[2].upstream`).
//!
//! The verbs follow the gateway's pipeline: [`load`] reads text into a [`Config`] (serde, unknown
//! keys refused), [`validate`] checks everything that needs no other crate and collects *every*
//! error. The auth, mapping and gateway crates then compile their parts of the same `Config`;
//! their errors carry a field path that [`Config::locate`] turns into a file and a line.
//!
//! This crate never does I/O beyond reading the configuration files, and knows nothing of
//! Pingora or tokio.

pub mod auth;
mod channel;
mod config;
mod duration;
mod env;
mod error;
pub mod limits;
mod listener;
mod llm;
mod load;
mod locate;
pub mod mapping;
mod route;
mod schema;
mod size;
mod suggest;
mod tracing;
mod upstream;
mod upstream_call;
mod validate;

pub use channel::{
    ChannelMode, Channels, LongPoll, OnTimeout, PollFormat, Publish, StartAt, Transport,
};
pub use config::{
    AccessLog, Backplane, Config, Cors, Durability, Limits, RedisBackplane, RedisServers,
    SentinelBackplane, Server,
};
pub use duration::Duration;
pub use env::EnvString;
pub use error::{ConfigError, ConfigErrors, FieldError};
pub use limits::{
    parse_cidr, Concurrency, HeadersWithUnderscores, KeySource, Rate, RateLimit, SpendLimit,
    TokenLimit, MAX_RATE_LIMITS,
};
pub use listener::{Certificate, Listener, ListenerTls};
pub use llm::{
    AnswerCache, CacheStore, FallbackOn, Llm, LlmRoute, ModelAlias, Price, Provider, ProviderKind,
    Resumable, Target,
};
pub use load::{load, load_str};
pub use route::{Match, Route, RouteAction};
pub use schema::schema;
pub use size::ByteSize;
pub use tracing::{Batch, Otlp, OtlpProtocol, Sampler, Tracing};
pub use upstream::{split_scheme, HealthCheck, Upstream};
pub use upstream_call::{Backoff, Coalesce, Fanin, FaninUpstream, Job, Merge, Until};
pub use validate::{validate, validate_channel_template, Template, TemplatePart};
