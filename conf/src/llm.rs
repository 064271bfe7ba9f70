//! The `llm:` section: model providers (OpenAI- or Anthropic-compatible servers, each over an
//! `upstreams:` entry, with a pool of API keys) and the model aliases clients name, each with
//! weighted targets and an ordered fallback list. Routes serve them with `llm: {}`.

use crate::{Config, Duration, EnvString, FieldError};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Providers and aliases.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Llm {
    #[serde(default)]
    pub providers: BTreeMap<String, Provider>,
    /// The names clients send as `model`, each mapped to providers' real models.
    #[serde(default)]
    pub models: BTreeMap<String, ModelAlias>,
    /// What models cost, by the provider's model name, for routes' `spend_limits`.
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
}

/// A model's prices, in US dollars per million tokens (as providers publish them).
#[derive(Clone, Copy, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

/// A model provider.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub kind: ProviderKind,
    /// The `upstreams:` entry its requests go to (targets, TLS, timeouts, health checks).
    pub upstream: String,
    /// API keys, used in turn; a key answered with 429 or 401 rests until its `Retry-After`
    /// (or `cooldown`). Write them as `${ENV}` references.
    pub keys: Vec<EnvString>,
    /// The request path: default `/v1/chat/completions` (openai) or `/v1/messages`
    /// (anthropic). `{model}` is replaced by the target's model (Azure OpenAI:
    /// `/openai/deployments/{model}/chat/completions?api-version=2024-10-21`).
    #[serde(default)]
    pub path: Option<String>,
    /// The header that carries the key: default `authorization` (as `Bearer KEY`) for openai,
    /// `x-api-key` for anthropic; Azure OpenAI uses `api-key`.
    #[serde(default)]
    pub key_header: Option<String>,
    /// How long a key rests after a 429 or 401 that gave no `Retry-After`.
    #[serde(default = "default_cooldown")]
    pub cooldown: Duration,
}

fn default_cooldown() -> Duration {
    Duration::from_secs(30)
}

/// The wire format a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI Chat Completions (OpenAI, Azure OpenAI, vLLM, Ollama, llama.cpp, …).
    Openai,
    /// Anthropic Messages.
    Anthropic,
}

/// A model name clients use.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelAlias {
    /// Where requests go, chosen by weight.
    pub targets: Vec<Target>,
    /// Tried in order when the chosen target fails in a way `fallback_on` names.
    #[serde(default)]
    pub fallback: Vec<Target>,
    /// What moves on to the next target: `429`, `5xx`, `connect`, `first_byte_timeout`
    /// (default: all four). Never once the answer's first byte reached the client.
    #[serde(default = "default_fallback_on")]
    pub fallback_on: Vec<FallbackOn>,
    /// The longest a target may take to start its answer before it counts as failed.
    #[serde(default = "default_first_byte_timeout")]
    pub first_byte_timeout: Duration,
}

fn default_fallback_on() -> Vec<FallbackOn> {
    vec![
        FallbackOn::RateLimited,
        FallbackOn::ServerError,
        FallbackOn::Connect,
        FallbackOn::FirstByteTimeout,
    ]
}

fn default_first_byte_timeout() -> Duration {
    Duration::from_secs(60)
}

/// A provider's model.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub provider: String,
    /// The provider's name for the model.
    pub model: String,
    /// The share of requests it gets among `targets` (default 1).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// A failure that moves a request on to the next target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
pub enum FallbackOn {
    #[serde(rename = "429")]
    RateLimited,
    #[serde(rename = "5xx")]
    ServerError,
    #[serde(rename = "connect")]
    Connect,
    #[serde(rename = "first_byte_timeout")]
    FirstByteTimeout,
}

/// A route's `llm:` action: it serves `POST …/chat/completions` (OpenAI format),
/// `POST …/messages` (Anthropic format) and `GET …/models` under its path.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LlmRoute {
    /// The aliases this route serves (default: every one).
    #[serde(default)]
    pub models: Vec<String>,
    /// Keep answers, and serve an identical request from them (off unless given).
    #[serde(default)]
    pub cache: Option<AnswerCache>,
    /// Keep each streamed answer so that a client that lost its connection can resume it at
    /// `…/streams/<id>`: `true`, or `{ ttl: 10m }`.
    #[serde(default, deserialize_with = "resumable")]
    #[schemars(with = "Option<crate::schema::BoolOr<Resumable>>")]
    pub resumable: Option<Resumable>,
}

/// Streamed answers kept for clients that lost their connection. The provider's answer is
/// read to its end whether or not a client still listens, for at most `ttl`, and then kept
/// for `ttl`.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resumable {
    #[serde(default = "default_resumable_ttl")]
    pub ttl: Duration,
}

impl Default for Resumable {
    fn default() -> Self {
        Self {
            ttl: default_resumable_ttl(),
        }
    }
}

fn default_resumable_ttl() -> Duration {
    Duration::from_secs(600)
}

pub(crate) fn resumable<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Resumable>, D::Error> {
    use serde::de::Error;
    match serde_yaml::Value::deserialize(deserializer)? {
        serde_yaml::Value::Bool(on) => Ok(on.then(Resumable::default)),
        value @ serde_yaml::Value::Mapping(_) => {
            crate::suggest::from_map::<Resumable, _>(value).map(Some)
        }
        _ => Err(D::Error::custom(
            "resumable must be `true`, `false` or `{ ttl: 10m }`",
        )),
    }
}

/// An exact-match cache of an `llm` route's answers. Two requests are the same when they name
/// the same alias at the same door with the same body — messages, tools, sampling parameters,
/// `stream` and `stream_options` (a streamed answer is replayed as the events it was).
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerCache {
    /// How long an answer is served from the cache.
    #[serde(default = "default_cache_ttl")]
    pub ttl: Duration,
    /// Where answers are kept: `memory` (this instance) or `redis` (the backplane's, shared).
    #[serde(default)]
    pub store: CacheStore,
    /// The most answers kept in memory (the oldest go first): at most `max_entries ×
    /// max_entry` bytes (256 MiB by default).
    #[serde(default = "default_cache_entries")]
    pub max_entries: usize,
    /// The largest answer kept; a larger one is served but not kept (counted `too_large`).
    #[serde(default = "default_cache_entry")]
    pub max_entry: crate::ByteSize,
    /// Also keep answers to requests that sample (`temperature` other than 0, or none given).
    #[serde(default)]
    pub allow_sampling: bool,
}

/// Where an answer cache keeps its answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CacheStore {
    #[default]
    Memory,
    Redis,
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(600)
}

fn default_cache_entries() -> usize {
    1_000
}

fn default_cache_entry() -> crate::ByteSize {
    crate::ByteSize::kib(256)
}

/// Checks the section and the routes' `llm:` actions against it.
pub(crate) fn check(config: &Config, errors: &mut Vec<FieldError>) {
    let llm = &config.llm;
    for (name, provider) in &llm.providers {
        let at = format!("llm.providers.{name}");
        crate::validate::check_name(name, &at, errors);
        if !config.upstreams.contains_key(&provider.upstream) {
            errors.push(crate::validate::unknown_reference(
                format!("{at}.upstream"),
                "upstream",
                &provider.upstream,
                config.upstreams.keys(),
            ));
        }
        if provider.keys.is_empty() {
            errors.push(FieldError::new(
                format!("{at}.keys"),
                "at least one API key is required (a local server that wants none: any text)",
            ));
        }
        for (index, key) in provider.keys.iter().enumerate() {
            if key.as_str().is_empty() || http::HeaderValue::from_str(key.as_str()).is_err() {
                errors.push(FieldError::new(
                    format!("{at}.keys[{index}]"),
                    "an API key must be non-empty text a header can carry",
                ));
            }
        }
        if let Some(path) = &provider.path {
            if !path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err() {
                errors.push(FieldError::new(
                    format!("{at}.path"),
                    format!("`{path}` is not a request path such as /v1/chat/completions"),
                ));
            }
        }
        if let Some(header) = &provider.key_header {
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                errors.push(FieldError::new(
                    format!("{at}.key_header"),
                    format!("`{header}` is not a header name"),
                ));
            }
        }
    }
    for (alias, model) in &llm.models {
        let at = format!("llm.models.{alias}");
        if alias.is_empty() {
            errors.push(FieldError::new(at.clone(), "an alias must not be empty"));
        }
        if model.targets.is_empty() {
            errors.push(FieldError::new(
                format!("{at}.targets"),
                "at least one target is required",
            ));
        }
        let lists = [("targets", &model.targets), ("fallback", &model.fallback)];
        for (list, targets) in lists {
            for (index, target) in targets.iter().enumerate() {
                let at = format!("{at}.{list}[{index}]");
                if !llm.providers.contains_key(&target.provider) {
                    errors.push(crate::validate::unknown_reference(
                        format!("{at}.provider"),
                        "provider",
                        &target.provider,
                        llm.providers.keys(),
                    ));
                }
                if target.model.is_empty() {
                    errors.push(FieldError::new(format!("{at}.model"), "must not be empty"));
                }
                if list == "targets" && target.weight == 0 {
                    errors.push(FieldError::new(
                        format!("{at}.weight"),
                        "must be at least 1",
                    ));
                }
            }
        }
        if model.first_byte_timeout.get().is_zero() {
            errors.push(FieldError::new(
                format!("{at}.first_byte_timeout"),
                "must be more than 0s",
            ));
        }
    }
    for (model, price) in &llm.prices {
        for (side, value) in [("input", price.input), ("output", price.output)] {
            if !value.is_finite() || value < 0.0 {
                errors.push(FieldError::new(
                    format!("llm.prices.{model}.{side}"),
                    "must be a number of dollars per million tokens, 0 or more",
                ));
            }
        }
    }
    for (index, route) in config.routes.iter().enumerate() {
        let Some(action) = &route.llm else { continue };
        if !route.spend_limits.is_empty() {
            check_priced(
                llm,
                action,
                &format!("routes[{index}].spend_limits"),
                errors,
            );
        }
        if llm.models.is_empty() {
            errors.push(FieldError::new(
                format!("routes[{index}].llm"),
                "serves models, but `llm.models` declares none",
            ));
        }
        if let Some(cache) = &action.cache {
            check_cache(config, cache, &format!("routes[{index}].llm.cache"), errors);
        }
        if let Some(resumable) = &action.resumable {
            let at = format!("routes[{index}].llm.resumable");
            if resumable.ttl.get().is_zero() {
                errors.push(FieldError::new(format!("{at}.ttl"), "must be more than 0s"));
            }
            if route.job.is_some() {
                errors.push(FieldError::new(
                    at,
                    "a job keeps its whole answer for its polls already; its route does not stream",
                ));
            }
        }
        for (at, alias) in action.models.iter().enumerate() {
            if !llm.models.contains_key(alias) {
                errors.push(crate::validate::unknown_reference(
                    format!("routes[{index}].llm.models[{at}]"),
                    "model alias",
                    alias,
                    llm.models.keys(),
                ));
            }
        }
    }
}

/// Every model a route with spend budgets may be served by has a price.
fn check_priced(llm: &Llm, action: &LlmRoute, at: &str, errors: &mut Vec<FieldError>) {
    let served = llm
        .models
        .iter()
        .filter(|(alias, _)| action.models.is_empty() || action.models.contains(alias));
    let mut unpriced: Vec<&str> = served
        .flat_map(|(_, alias)| alias.targets.iter().chain(&alias.fallback))
        .map(|target| target.model.as_str())
        .filter(|model| !llm.prices.contains_key(*model))
        .collect();
    unpriced.sort_unstable();
    unpriced.dedup();
    if !unpriced.is_empty() {
        errors.push(FieldError::new(
            at,
            format!(
                "spend budgets need the price of every model the route may use; `llm.prices` has none for {}",
                unpriced.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
}

fn check_cache(config: &Config, cache: &AnswerCache, at: &str, errors: &mut Vec<FieldError>) {
    if cache.ttl.get().is_zero() {
        errors.push(FieldError::new(format!("{at}.ttl"), "must be more than 0s"));
    }
    if cache.max_entries == 0 {
        errors.push(FieldError::new(
            format!("{at}.max_entries"),
            "must be at least 1",
        ));
    }
    if cache.max_entry.get() == 0 {
        errors.push(FieldError::new(
            format!("{at}.max_entry"),
            "must be more than 0 bytes",
        ));
    }
    if cache.store == CacheStore::Redis && !matches!(config.backplane, crate::Backplane::Redis(_)) {
        errors.push(FieldError::new(
            format!("{at}.store"),
            "`redis` keeps answers in the backplane's Redis, but `backplane` is not redis",
        ));
    }
}

#[cfg(test)]
mod tests {
    use crate::{load_str, validate};
    use std::path::Path;

    const HEAD: &str = "listen: 127.0.0.1:8080
upstreams:
  api: { targets: [127.0.0.1:9] }
llm:
  providers:
    p: { kind: openai, upstream: api, keys: [k] }
  models:
    fast: { targets: [{ provider: p, model: m }] }
routes:
";

    fn errors(route: &str) -> Vec<String> {
        let config = load_str(Path::new("c.yaml"), &format!("{HEAD}{route}"))
            .unwrap_or_else(|e| panic!("{e}"));
        match validate(&config) {
            Ok(()) => vec![],
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn an_answer_cache_and_token_quotas_are_checked_with_file_and_line() {
        assert!(errors("  - { name: ai, llm: { cache: { ttl: 1m } } }\n").is_empty());
        assert_eq!(
            errors("  - name: ai\n    llm:\n      cache: { store: redis, ttl: 0s, max_entries: 0 }\n"),
            [
                "c.yaml:12:30: routes[0].llm.cache.ttl: must be more than 0s",
                "c.yaml:12:39: routes[0].llm.cache.max_entries: must be at least 1",
                "c.yaml:12:16: routes[0].llm.cache.store: `redis` keeps answers in the backplane's Redis, but `backplane` is not redis",
            ]
        );
        // Token quotas: an impossible rate, a burst of 0, a route that is not `llm`.
        assert_eq!(
            errors("  - name: ai\n    llm: {}\n    token_limits: [{ tokens: 0/h }, { tokens: 5000000/s, burst: 0 }]\n"),
            [
                "c.yaml:12:22: routes[0].token_limits[0].tokens: `0/h`: the count must be at least 1",
                "c.yaml:12:39: routes[0].token_limits[1].tokens: `5000000/s`: more than one per microsecond cannot be counted",
                "c.yaml:12:58: routes[0].token_limits[1].burst: must be at least 1",
            ]
        );
        let found = errors("  - { name: p, upstream: api, token_limits: [{ tokens: 10/s }] }\n");
        assert_eq!(found, ["c.yaml:10:31: routes[0].token_limits: token quotas count the tokens of `llm` routes that answer at once (not jobs)"]);
        let unknown = load_str(
            Path::new("c.yaml"),
            &format!("{HEAD}  - {{ name: ai, llm: {{ cache: {{ store: disk }} }} }}\n"),
        );
        assert!(unknown.is_err());
    }

    #[test]
    fn spend_budgets_need_dollars_and_the_prices_of_the_routes_models() {
        let priced = HEAD.replace(
            "routes:\n",
            "  prices: { m: { input: 0.15, output: 0.6 } }\nroutes:\n",
        );
        let errors_with = |head: &str, route: &str| {
            let config = load_str(Path::new("c.yaml"), &format!("{head}{route}"))
                .unwrap_or_else(|e| panic!("{e}"));
            match validate(&config) {
                Ok(()) => vec![],
                Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            }
        };
        let route = "  - { name: ai, llm: {}, spend_limits: [{ budget: 5/d }, { budget: 0.25/h, name: hourly }] }\n";
        assert!(errors_with(&priced, route).is_empty());
        assert_eq!(
            errors_with(HEAD, route),
            ["c.yaml:10:26: routes[0].spend_limits: spend budgets need the price of every model the route may use; `llm.prices` has none for `m`"]
        );
        assert_eq!(
            errors_with(
                &priced,
                "  - { name: ai, llm: {}, spend_limits: [{ budget: 5 }, { budget: 1.2345678/d }, { budget: 100000/d }] }\n"
            ),
            [
                "c.yaml:11:43: routes[0].spend_limits[0].budget: `5`: write DOLLARS/WINDOW, as `5/d`",
                "c.yaml:11:58: routes[0].spend_limits[1].budget: `1.2345678` is not an amount of dollars such as 5 or 0.25",
                "c.yaml:11:83: routes[0].spend_limits[2].budget: `100000/d`: more than $1 a second cannot be counted",
            ]
        );
        assert_eq!(
            errors_with(&priced, "  - { name: p, upstream: api, spend_limits: [{ budget: 1/d }] }\n"),
            ["c.yaml:11:31: routes[0].spend_limits: spend budgets count what `llm` routes that answer at once cost (not jobs)"]
        );
        let negative = priced.replace("input: 0.15", "input: -1");
        assert_eq!(
            errors_with(&negative, route),
            ["c.yaml:9:18: llm.prices.m.input: must be a number of dollars per million tokens, 0 or more"]
        );
    }

    #[test]
    fn resumable_streams_are_on_with_true_or_a_ttl_and_not_on_jobs() {
        assert!(errors("  - { name: ai, llm: { resumable: true } }\n").is_empty());
        assert!(errors("  - { name: ai, llm: { resumable: { ttl: 1m } } }\n").is_empty());
        assert_eq!(
            errors("  - name: ai\n    match: { prefix: /jobs }\n    llm: { resumable: { ttl: 0s } }\n    job: {}\n"),
            [
                "c.yaml:12:25: routes[0].llm.resumable.ttl: must be more than 0s",
                "c.yaml:12:12: routes[0].llm.resumable: a job keeps its whole answer for its polls already; its route does not stream",
            ]
        );
        // On a proxied route: only with `upstream`, and not with what waits for whole answers.
        assert!(errors("  - { name: sse, upstream: api, resumable: true }\n").is_empty());
        assert_eq!(
            errors("  - { name: sse, upstream: api, coalesce: true, resumable: { ttl: 0s } }\n"),
            [
                "c.yaml:10:49: routes[0].resumable: a kept stream goes to its client as it comes; `coalesce` waits for whole answers",
                "c.yaml:10:62: routes[0].resumable.ttl: must be more than 0s",
            ]
        );
        assert_eq!(
            errors("  - { name: ai, llm: {}, resumable: true }\n"),
            ["c.yaml:10:26: routes[0].resumable: only an `upstream` route takes this option (an `llm` route: `llm.resumable`)"]
        );
        let wrong = load_str(
            Path::new("c.yaml"),
            &format!("{HEAD}  - {{ name: ai, llm: {{ resumable: 5 }} }}\n"),
        );
        let wrong = wrong.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            wrong.contains("resumable must be `true`, `false` or `{ ttl: 10m }`"),
            "{wrong}"
        );
    }
}
