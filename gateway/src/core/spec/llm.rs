//! A compiled `llm` action: the providers (their pool, key pool, path and key header), the
//! model aliases with their weighted targets and fallback list, and which aliases a route
//! serves. Compiled once per configuration; routes share the providers and aliases.

pub mod cache;
pub mod keys;

use crate::core::upstream::Pool;
use conf::{FallbackOn, ProviderKind};
use keys::KeyPool;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A model provider, ready for requests.
pub struct ProviderSpec {
    pub name: Arc<str>,
    pub kind: ProviderKind,
    pub pool: Arc<Pool>,
    pub keys: KeyPool,
    /// The request path, `{model}` standing for the target's model.
    path: String,
    pub key_header: http::HeaderName,
    /// The key goes as `Bearer KEY` (OpenAI's `authorization`), not bare.
    bearer: bool,
    /// The `Host` the provider expects: its first target's name.
    pub host: http::HeaderValue,
    /// How long a refused key rests when the provider gave no `Retry-After`.
    pub cooldown: Duration,
}

impl ProviderSpec {
    /// The request path for `model`.
    pub fn path(&self, model: &str) -> String {
        self.path.replace("{model}", model)
    }

    /// The key header's value for `key`.
    pub fn key_value(&self, key: &http::HeaderValue) -> http::HeaderValue {
        if !self.bearer {
            return key.clone();
        }
        let mut value = b"Bearer ".to_vec();
        value.extend_from_slice(key.as_bytes());
        let mut value = http::HeaderValue::from_bytes(&value).unwrap_or_else(|_| key.clone());
        value.set_sensitive(true);
        value
    }
}

/// A provider's model.
pub struct Target {
    pub provider: Arc<ProviderSpec>,
    pub model: String,
    pub weight: u32,
    /// What it costs, when `llm.prices` says.
    pub price: Option<conf::Price>,
}

/// Micro-dollars for `tokens` at `dollars_per_million` (one micro-dollar a token at $1 per
/// million), rounded up.
fn micro_dollars(tokens: u64, dollars_per_million: f64) -> u64 {
    // An f64 keeps every count of tokens a request can have exactly enough for this.
    (tokens as f64 * dollars_per_million).ceil() as u64
}

/// What `input` and `output` tokens cost at `price`, in micro-dollars (0 without a price).
pub fn cost(price: Option<conf::Price>, input: u64, output: u64) -> u64 {
    price.map_or(0, |price| {
        micro_dollars(input, price.input).saturating_add(micro_dollars(output, price.output))
    })
}

/// A model alias clients name.
pub struct AliasSpec {
    pub name: String,
    pub targets: Vec<Target>,
    pub fallback: Vec<Target>,
    pub fallback_on: Vec<FallbackOn>,
    pub first_byte_timeout: Duration,
    total_weight: u64,
    turns: AtomicU64,
}

impl AliasSpec {
    /// The targets one request tries, in order: one of `targets` chosen by weight (smoothly, by
    /// turns: weights 3 and 1 give 3 requests out of 4 to the first), then the fallbacks.
    pub fn attempts(&self) -> impl Iterator<Item = &Target> {
        let turn = self.turns.fetch_add(1, Ordering::Relaxed) % self.total_weight.max(1);
        let mut passed = 0;
        let chosen = self
            .targets
            .iter()
            .find(|target| {
                passed += u64::from(target.weight);
                turn < passed
            })
            .or(self.targets.first());
        chosen.into_iter().chain(self.fallback.iter())
    }

    /// Whether `failure` moves a request on to the next target.
    pub fn falls_back_on(&self, failure: FallbackOn) -> bool {
        self.fallback_on.contains(&failure)
    }

    /// The most `input` and `output` tokens may cost, at the dearest of the targets that may
    /// serve, in micro-dollars.
    pub fn most_cost(&self, input: u64, output: u64) -> u64 {
        let dearest = |side: fn(&conf::Price) -> f64| {
            self.targets
                .iter()
                .chain(&self.fallback)
                .filter_map(|target| target.price.as_ref().map(side))
                .fold(0.0, f64::max)
        };
        micro_dollars(input, dearest(|price| price.input))
            .saturating_add(micro_dollars(output, dearest(|price| price.output)))
    }
}

/// Every provider and alias of one configuration.
#[derive(Default)]
pub struct Models {
    aliases: BTreeMap<String, Arc<AliasSpec>>,
}

impl Models {
    /// Compiles `config.llm` over the compiled `pools` (validation checked every reference).
    pub fn compile(
        config: &conf::Config,
        pools: &HashMap<String, Arc<Pool>>,
    ) -> Result<Self, String> {
        let mut providers = HashMap::new();
        for (name, provider) in &config.llm.providers {
            let pool = pools.get(&provider.upstream).ok_or_else(|| {
                format!(
                    "llm.providers.{name}: upstream `{}` is unavailable",
                    provider.upstream
                )
            })?;
            providers.insert(
                name.clone(),
                Arc::new(compile_provider(name, provider, pool.clone(), config)?),
            );
        }
        let target = |target: &conf::Target| -> Result<Target, String> {
            let provider = providers
                .get(&target.provider)
                .ok_or_else(|| format!("unknown provider `{}`", target.provider))?;
            Ok(Target {
                provider: provider.clone(),
                model: target.model.clone(),
                weight: target.weight,
                price: config.llm.prices.get(&target.model).copied(),
            })
        };
        let mut aliases = BTreeMap::new();
        for (name, alias) in &config.llm.models {
            let targets = alias
                .targets
                .iter()
                .map(target)
                .collect::<Result<Vec<_>, _>>()?;
            let fallback = alias
                .fallback
                .iter()
                .map(target)
                .collect::<Result<Vec<_>, _>>()?;
            let total_weight = targets.iter().map(|t| u64::from(t.weight)).sum();
            aliases.insert(
                name.clone(),
                Arc::new(AliasSpec {
                    name: name.clone(),
                    targets,
                    fallback,
                    fallback_on: alias.fallback_on.clone(),
                    first_byte_timeout: alias.first_byte_timeout.get(),
                    total_weight,
                    turns: AtomicU64::new(0),
                }),
            );
        }
        Ok(Self { aliases })
    }

    /// The spec of a route serving `served` (every alias when empty).
    pub fn route(&self, route: &str, action: &conf::LlmRoute) -> LlmSpec {
        let served = &action.models;
        let aliases = self
            .aliases
            .iter()
            .filter(|(name, _)| served.is_empty() || served.contains(name))
            .map(|(name, alias)| (name.clone(), alias.clone()))
            .collect();
        let cache = action
            .cache
            .as_ref()
            .map(|settings| Arc::new(cache::AnswerCache::new(route, settings)));
        let resumable = action
            .resumable
            .as_ref()
            .map(|resumable| resumable.ttl.get());
        LlmSpec {
            aliases,
            cache,
            resumable,
        }
    }
}

fn compile_provider(
    name: &str,
    provider: &conf::Provider,
    pool: Arc<Pool>,
    config: &conf::Config,
) -> Result<ProviderSpec, String> {
    let at = format!("llm.providers.{name}");
    let keys = provider
        .keys
        .iter()
        .map(|key| http::HeaderValue::from_str(key.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("{at}.keys: a key is not header text"))?;
    let (default_path, default_header) = match provider.kind {
        ProviderKind::Openai => ("/v1/chat/completions", "authorization"),
        ProviderKind::Anthropic => ("/v1/messages", "x-api-key"),
    };
    let key_header = provider.key_header.as_deref().unwrap_or(default_header);
    let key_header = http::HeaderName::from_bytes(key_header.as_bytes())
        .map_err(|_| format!("{at}.key_header: not a header name"))?;
    let host = config
        .upstreams
        .get(&provider.upstream)
        .and_then(|upstream| upstream.targets.first())
        .map(|target| host_of(target))
        .unwrap_or_default();
    Ok(ProviderSpec {
        name: Arc::from(name),
        kind: provider.kind,
        pool,
        keys: KeyPool::new(keys),
        path: provider
            .path
            .clone()
            .unwrap_or_else(|| default_path.to_owned()),
        bearer: key_header == http::header::AUTHORIZATION,
        key_header,
        host: http::HeaderValue::from_str(&host)
            .unwrap_or(http::HeaderValue::from_static("localhost")),
        cooldown: provider.cooldown.get(),
    })
}

/// The `Host` for a target written `https://api.example.com:443` or `10.0.0.1:8000`: its
/// name, and its port unless it is a default one (443, 80).
fn host_of(target: &str) -> String {
    let (address, _) = conf::split_scheme(target);
    address
        .strip_suffix(":443")
        .or_else(|| address.strip_suffix(":80"))
        .unwrap_or(address)
        .to_owned()
}

/// What one `llm` route serves.
pub struct LlmSpec {
    aliases: BTreeMap<String, Arc<AliasSpec>>,
    /// The route's answer cache, when it has one.
    pub cache: Option<Arc<cache::AnswerCache>>,
    /// How long a streamed answer is read without a client, and kept after it ends, when the
    /// route's streams can be resumed.
    pub resumable: Option<std::time::Duration>,
}

impl LlmSpec {
    pub fn alias(&self, name: &str) -> Option<&Arc<AliasSpec>> {
        self.aliases.get(name)
    }

    /// The aliases' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.aliases.keys().map(String::as_str)
    }
}
