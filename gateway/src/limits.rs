//! Per-route traffic limits: rate limits (GCRA, local or shared through Redis) and in-flight
//! caps (route-wide and per key), compiled at load into [`RouteLimits`]; the refusals of body
//! and time limits. Files: `gcra`, `redis`, `client_ip` (trusted proxies), `concurrency`.

mod client_ip;
mod concurrency;
mod gcra;
mod redis;

pub use client_ip::TrustedProxies;
pub use concurrency::InFlightGuard;

use crate::observe::metrics::METRICS;
use crate::problem::Problem;
use concurrency::{InFlight, Refused};
use conf::KeySource;
use gcra::Decision;
use std::borrow::Cow;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

/// One compiled rate limit.
struct RateRule {
    key: KeySource,
    /// Nanoseconds between two requests at the steady rate.
    emission: u64,
    /// `emission × burst`.
    tolerance: u64,
    /// The policy name: header value and metric label.
    name: Arc<str>,
    /// Identifies the limit in the stores: route name, policy name and rate.
    id: Arc<str>,
}

/// Rate limits of one kind (requests, or an `llm` route's tokens), compiled.
#[derive(Default)]
struct Rules {
    list: Vec<RateRule>,
    /// `RateLimit-Policy`, rendered once.
    policy: String,
}

/// A route's compiled limits.
pub struct RouteLimits {
    rates: Rules,
    /// Token quotas: rates whose unit is one token.
    tokens: Rules,
    /// Spend budgets: rates whose unit is one micro-dollar.
    spend: Rules,
    in_flight: Option<(Arc<InFlight>, KeySource)>,
}

impl RouteLimits {
    /// Compiles a validated route's limits; `None` when it has none.
    pub fn compile(route: &conf::Route) -> Option<Arc<Self>> {
        if route.rate_limits.is_empty()
            && route.token_limits.is_empty()
            && route.spend_limits.is_empty()
            && route.concurrency.is_none()
        {
            return None;
        }
        let tokens: Vec<conf::RateLimit> = route
            .token_limits
            .iter()
            .map(conf::TokenLimit::as_rate_limit)
            .collect();
        let spend: Vec<conf::RateLimit> = route
            .spend_limits
            .iter()
            .filter_map(|limit| limit.as_rate_limit().ok()) // refused by conf::validate
            .collect();
        let in_flight = route.concurrency.as_ref().and_then(|c| {
            let key = KeySource::parse(&c.key).ok()?;
            Some((Arc::new(InFlight::new(c.max_in_flight, c.max_per_key)), key))
        });
        Some(Arc::new(Self {
            rates: Rules::compile(&route.name, "", &route.rate_limits),
            // Apart from the request limits in the stores, whatever their names.
            tokens: Rules::compile(&route.name, "tokens:", &tokens),
            spend: Rules::compile(&route.name, "spend:", &spend),
            in_flight,
        }))
    }

    /// The route counts tokens, or what they cost.
    pub fn counts_tokens(&self) -> bool {
        !self.tokens.list.is_empty() || !self.spend.list.is_empty()
    }
}

impl Rules {
    /// `kind` starts each rule's id in the stores.
    fn compile(route: &str, kind: &str, limits: &[conf::RateLimit]) -> Self {
        let mut rates = Vec::with_capacity(limits.len());
        let mut policy = Vec::with_capacity(limits.len());
        for limit in limits {
            let (Ok(rate), Ok(key)) =
                (conf::Rate::parse(&limit.rate), KeySource::parse(&limit.key))
            else {
                continue; // refused by conf::validate
            };
            let window = u64::try_from(rate.window.as_nanos()).unwrap_or(u64::MAX);
            let emission = (window / rate.count).max(1);
            let burst = limit.burst.unwrap_or(rate.count).max(1);
            let name: Arc<str> = Arc::from(limit.policy_name());
            policy.push(format!(
                "\"{name}\";q={};w={}",
                rate.count,
                rate.window.as_secs_f64().ceil().max(1.0) as u64
            ));
            rates.push(RateRule {
                key,
                emission,
                tolerance: emission.saturating_mul(burst),
                id: Arc::from(format!("{route}:{kind}{name}:{}/{window}", rate.count)),
                name,
            });
        }
        Self {
            list: rates,
            policy: policy.join(", "),
        }
    }
}

/// The process-wide rate-limit stores; kept across reloads so a reload does not reset counts.
pub struct Limiter {
    local: gcra::Store,
    redis: Option<redis::RedisLimits>,
    hasher: std::hash::RandomState,
}

impl Limiter {
    /// Local limits, or Redis-shared ones with `backplane: redis`.
    pub fn start(config: &conf::Config) -> Self {
        METRICS
            .ratelimit_backend
            .with_label_values(&["local"])
            .set(1);
        let redis = match &config.backplane {
            conf::Backplane::Redis(settings) => start_redis(settings),
            conf::Backplane::Memory => None,
        };
        Self {
            local: gcra::Store::default(),
            redis,
            hasher: std::hash::RandomState::new(),
        }
    }
}

/// The Redis connection manager's driver needs a runtime that lives as long as the process.
fn start_redis(settings: &conf::RedisBackplane) -> Option<redis::RedisLimits> {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("holdfast-ratelimit")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the rate-limit runtime: limits stay local");
            return None;
        }
    };
    let limits = {
        let _entered = runtime.enter();
        redis::RedisLimits::connect(settings)
    };
    // Deliberately leaked, like the hub's runtime: it lives as long as the process.
    std::mem::forget(runtime);
    match limits {
        Ok(limits) => Some(limits),
        Err(error) => {
            tracing::error!(%error, "cannot use Redis for rate limits: limits stay local");
            None
        }
    }
}

/// A key's value, borrowed from the request where possible.
enum KeyValue<'a> {
    Ip(IpAddr),
    Text(Cow<'a, str>),
    Bytes(&'a [u8]),
}

impl KeyValue<'_> {
    fn hash_with(&self, hasher: &mut impl Hasher) {
        match self {
            Self::Ip(ip) => ip.hash(hasher),
            Self::Text(text) => text.as_bytes().hash(hasher),
            Self::Bytes(bytes) => bytes.hash(hasher),
        }
    }

    fn append_to(&self, out: &mut Vec<u8>) {
        match self {
            Self::Ip(ip) => out.extend_from_slice(ip.to_string().as_bytes()),
            Self::Text(text) => out.extend_from_slice(text.as_bytes()),
            Self::Bytes(bytes) => out.extend_from_slice(bytes),
        }
    }
}

/// Who a request comes from, as the limits key it.
pub struct Subject<'a> {
    /// The route's name, shared: no copy per request.
    pub route: &'a Arc<str>,
    /// The connection's peer (`None` when it is not an inet socket).
    pub peer: Option<IpAddr>,
    pub headers: &'a http::HeaderMap,
    pub identity: Option<&'a auth::Identity>,
}

/// The client address after trusted proxies (the peer for a non-inet peer: `0.0.0.0`).
pub fn client_ip(subject: &Subject<'_>, trusted: &TrustedProxies) -> IpAddr {
    let peer = subject
        .peer
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let forwarded = subject
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .map(http::HeaderValue::as_bytes);
    trusted.client(peer, forwarded)
}

/// The value of `source` for this request; a missing header, claim or identity falls back to
/// the client address (so leaving the header out never escapes the limit).
fn key_value<'a>(
    source: &KeySource,
    subject: &Subject<'a>,
    trusted: &TrustedProxies,
) -> (u8, KeyValue<'a>) {
    let found = match source {
        KeySource::Ip => None,
        KeySource::Identity => subject
            .identity
            .map(|identity| KeyValue::Text(Cow::Owned(identity.key()))),
        KeySource::Claim(path) => subject
            .identity
            .and_then(|identity| identity.claims().text(path))
            .map(KeyValue::Text),
        KeySource::Header(name) => subject
            .headers
            .get(name.as_str())
            .map(|value| KeyValue::Bytes(value.as_bytes())),
    };
    match found {
        Some(value) => (1, value),
        None => (0, KeyValue::Ip(client_ip(subject, trusted))),
    }
}

/// Applies the route's limits: the request's in-flight slot (held until it is dropped), or the
/// refusal to answer with.
pub async fn admit(
    limiter: &Limiter,
    trusted: &TrustedProxies,
    limits: &RouteLimits,
    subject: &Subject<'_>,
) -> Result<Option<InFlightGuard>, Problem> {
    let route = subject.route;
    let mut slot = None;
    if let Some((in_flight, key)) = &limits.in_flight {
        let key_hash = in_flight.max_per_key.map(|_| {
            let mut hasher = limiter.hasher.build_hasher();
            let (kind, value) = key_value(key, subject, trusted);
            kind.hash(&mut hasher);
            value.hash_with(&mut hasher);
            hasher.finish()
        });
        match in_flight.acquire(key_hash) {
            Ok(guard) => slot = Some(guard),
            Err(refused) => {
                METRICS
                    .limit_rejections
                    .with_label_values(&[&**route, "concurrency"])
                    .inc();
                return Err(match refused {
                    Refused::Route(max) => Problem::new(
                        503,
                        "overloaded",
                        "Service Unavailable",
                        format!("this route already serves its maximum of {max} requests at once"),
                    ),
                    Refused::Key(max) => Problem::new(
                        429,
                        "too-many-in-flight",
                        "Too Many Requests",
                        format!("this client already has {max} requests in flight on this route"),
                    ),
                }
                .with_header("retry-after", "1"));
            }
        }
    }
    if limits.rates.list.is_empty() {
        return Ok(slot);
    }
    let keys = rate_keys(limiter, trusted, limits, subject);
    admit_message(limiter, limits, route, &keys).await?;
    Ok(slot)
}

/// What a request was charged against its route's token quotas and spend budgets, to be
/// corrected once the provider's usage is known.
pub struct TokenCharge {
    tokens: Option<Part>,
    spend: Option<Part>,
}

/// A charge against one kind of rule.
struct Part {
    keys: RateKeys,
    estimate: u64,
    /// Charged in Redis (else in this instance's store, where it is corrected too).
    in_redis: bool,
}

/// What a request is charged before its answer, or what its answer cost: tokens, and
/// micro-dollars.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    pub tokens: u64,
    pub spend: u64,
}

/// Charges `estimate` against the route's token quotas and spend budgets: the charge, or the
/// 429 that refuses the request when one is spent (and nothing is charged).
pub async fn charge_tokens(
    limiter: &Limiter,
    trusted: &TrustedProxies,
    limits: &RouteLimits,
    subject: &Subject<'_>,
    estimate: Cost,
) -> Result<TokenCharge, Problem> {
    let tokens = charge_part(limiter, trusted, &limits.tokens, subject, estimate.tokens).await;
    let tokens = tokens.map_err(|(rule, retry)| {
        refusal(
            &limits.tokens,
            subject.route,
            rule,
            retry,
            "token-limited",
            "token quota",
        )
    })?;
    let spend = charge_part(limiter, trusted, &limits.spend, subject, estimate.spend).await;
    let spend = match spend {
        Ok(spend) => spend,
        Err((rule, retry)) => {
            // Refused: what the token quotas were charged is given back.
            if let Some(part) = tokens {
                settle_part(limiter, &limits.tokens, part, 0).await;
            }
            return Err(refusal(
                &limits.spend,
                subject.route,
                rule,
                retry,
                "spend-limited",
                "spend budget",
            ));
        }
    };
    Ok(TokenCharge { tokens, spend })
}

/// Charges `estimate` units against `rules` (`None` when there are none); the refusing rule
/// and nanoseconds until retry when one is spent.
async fn charge_part<'l>(
    limiter: &Limiter,
    trusted: &TrustedProxies,
    rules: &'l Rules,
    subject: &Subject<'_>,
    estimate: u64,
) -> Result<Option<Part>, (&'l RateRule, u64)> {
    if rules.list.is_empty() {
        return Ok(None);
    }
    let keys = keys_for(limiter, trusted, rules, subject);
    // A request may ask more than a rule's burst: charged the burst, it can pass when the
    // quota is whole, and its real usage is settled after.
    let burst = rules
        .list
        .iter()
        .map(|rule| rule.tolerance / rule.emission.max(1))
        .min();
    let estimate = estimate.min(burst.unwrap_or(u64::MAX)).max(1);
    let (refused, in_redis) = check_rules(limiter, rules, &keys, estimate).await;
    match refused {
        Some(refused) => Err(refused),
        None => Ok(Some(Part {
            keys,
            estimate,
            in_redis,
        })),
    }
}

/// Corrects a charge with what the answer really cost (`used`; `None` when the provider gave
/// no usage: the estimate stands).
pub async fn settle_tokens(
    limiter: &Limiter,
    limits: &RouteLimits,
    charge: TokenCharge,
    used: Option<Cost>,
) {
    let Some(used) = used else { return };
    if let Some(part) = charge.tokens {
        settle_part(limiter, &limits.tokens, part, used.tokens).await;
    }
    if let Some(part) = charge.spend {
        settle_part(limiter, &limits.spend, part, used.spend).await;
    }
}

async fn settle_part(limiter: &Limiter, rules: &Rules, part: Part, used: u64) {
    let units = i128::from(used) - i128::from(part.estimate);
    if units == 0 {
        return;
    }
    let delta = |rule: &RateRule| -> i64 {
        i64::try_from(units * i128::from(rule.emission)).unwrap_or(if units > 0 {
            i64::MAX
        } else {
            i64::MIN
        })
    };
    if part.in_redis {
        // Where it was charged; should Redis not take the correction, it is lost (the estimate
        // stands) rather than made where nothing was charged.
        if let Some(redis) = &limiter.redis {
            let deltas: Vec<i64> = rules.list.iter().map(|rule| delta(rule) / 1000).collect();
            redis.adjust(&part.keys.redis, &deltas).await;
        }
        return;
    }
    let now = limiter.local.now();
    for (rule, &key) in rules.list.iter().zip(&part.keys.local) {
        limiter.local.adjust(key, now, delta(rule));
    }
}

/// The keys a request's rate limits count it under, one per limit. A socket that publishes
/// keeps its handshake's, and counts each message it sends under them.
#[derive(Clone, Debug)]
pub struct RateKeys {
    /// In the local store, one per limit (a route has at most `MAX_RATE_LIMITS`): no
    /// allocation per request.
    local: [u64; conf::MAX_RATE_LIMITS],
    /// In Redis; empty without it.
    redis: Vec<Vec<u8>>,
}

/// The keys `subject` is counted under by `limits`.
pub fn rate_keys(
    limiter: &Limiter,
    trusted: &TrustedProxies,
    limits: &RouteLimits,
    subject: &Subject<'_>,
) -> RateKeys {
    keys_for(limiter, trusted, &limits.rates, subject)
}

fn keys_for(
    limiter: &Limiter,
    trusted: &TrustedProxies,
    rules: &Rules,
    subject: &Subject<'_>,
) -> RateKeys {
    let mut keys = RateKeys {
        local: [0; conf::MAX_RATE_LIMITS],
        redis: Vec::new(),
    };
    for (rule, local) in rules.list.iter().zip(&mut keys.local) {
        let (kind, value) = key_value(&rule.key, subject, trusted);
        let mut hasher = limiter.hasher.build_hasher();
        rule.id.hash(&mut hasher);
        kind.hash(&mut hasher);
        value.hash_with(&mut hasher);
        *local = hasher.finish();
        if let Some(redis) = &limiter.redis {
            let tagged = redis.key_shape() == crate::backplane::KeyShape::Tagged;
            let mut key = Vec::with_capacity(64);
            key.extend_from_slice(redis.prefix.as_bytes());
            if tagged {
                key.push(b'{');
            }
            key.extend_from_slice(rule.id.as_bytes());
            key.push(b':');
            key.push(b'0' + kind);
            key.push(b':');
            value.append_to(&mut key);
            if tagged {
                // A `}` in the value ends the tag early, but at the same place every time.
                key.push(b'}');
            }
            keys.redis.push(key);
        }
    }
    keys
}

/// Counts one request or message under `keys` against the route's rate limits: the 429 that
/// refuses it when one of them is exceeded.
pub async fn admit_message(
    limiter: &Limiter,
    limits: &RouteLimits,
    route: &str,
    keys: &RateKeys,
) -> Result<(), Problem> {
    let Some((rule, retry_nanos)) = check_rules(limiter, &limits.rates, keys, 1).await.0 else {
        return Ok(());
    };
    Err(refusal(
        &limits.rates,
        route,
        rule,
        retry_nanos,
        "rate-limited",
        "rate limit",
    ))
}

/// The 429 of a spent limit, with `Retry-After` and the `RateLimit` headers.
fn refusal(
    rules: &Rules,
    route: &str,
    rule: &RateRule,
    retry_nanos: u64,
    kind: &'static str,
    what: &str,
) -> Problem {
    let retry = retry_nanos.div_ceil(1_000_000_000).max(1);
    METRICS
        .ratelimit_rejections
        .with_label_values(&[route, &*rule.name])
        .inc();
    Problem::new(
        429,
        kind,
        "Too Many Requests",
        format!("{what} `{}` exceeded; retry in {retry}s", rule.name),
    )
    .with_header("retry-after", retry.to_string())
    .with_header("ratelimit-policy", rules.policy.clone())
    .with_header("ratelimit", format!("\"{}\";r=0;t={retry}", rule.name))
}

/// Counts `cost` units (one request, or tokens) under `keys` against every rule; the refusing
/// rule and nanoseconds until retry, if any (then nothing is counted), and whether Redis
/// counted (else this instance did).
async fn check_rules<'l>(
    limiter: &Limiter,
    rules: &'l Rules,
    keys: &RateKeys,
    cost: u64,
) -> (Option<(&'l RateRule, u64)>, bool) {
    let charge = |rule: &RateRule| rule.emission.saturating_mul(cost);
    if let Some(redis) = &limiter.redis {
        let mut args = Vec::with_capacity(rules.list.len() * 2);
        for rule in &rules.list {
            args.push((charge(rule) / 1000).max(1));
            args.push((rule.tolerance / 1000).max(1));
        }
        if let Some(answers) = redis.check(&keys.redis, &args).await {
            let refused = rules
                .list
                .iter()
                .zip(answers)
                .find(|(_, answer)| !answer.allowed)
                .map(|(rule, answer)| (rule, answer.micros.saturating_mul(1000)));
            return (refused, true);
        }
    }
    let now = limiter.local.now();
    for (index, (rule, &key)) in rules.list.iter().zip(&keys.local).enumerate() {
        if let Decision::Deny { retry } =
            limiter.local.check(key, now, charge(rule), rule.tolerance)
        {
            // The limits before this one counted what does not happen.
            for (earlier, &key) in rules.list.iter().zip(&keys.local).take(index) {
                limiter.local.refund(key, charge(earlier));
            }
            return (Some((rule, retry)), false);
        }
    }
    (None, false)
}

/// 413 for a body over the route's limit.
pub fn body_too_large(limit: u64) -> Problem {
    Problem::new(
        413,
        "body-too-large",
        "Content Too Large",
        format!("the body is larger than this route's limit of {limit} bytes"),
    )
}

/// 408 for a client too slow to send its request.
pub fn request_timeout(detail: &str) -> Problem {
    Problem::new(408, "request-timeout", "Request Timeout", detail)
}

/// The rejection kind of a status the gateway answered itself, for
/// `holdfast_limit_rejections_total`.
pub fn rejection_kind(status: u16) -> Option<&'static str> {
    match status {
        408 => Some("slow_client"),
        413 => Some("body"),
        414 => Some("url"),
        431 => Some("header"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::path::Path;

    const CONFIG: &str = r#"
upstreams: { a: { targets: ["127.0.0.1:9"] } }
routes:
  - name: rated
    upstream: a
    rate_limits: [{ key: header.x-tenant, rate: 1/m, name: per-tenant }]
  - name: capped
    match: { prefix: /capped }
    upstream: a
    concurrency: { max_in_flight: 2, max_per_key: 1, key: ip }
"#;

    fn limits(name: &str) -> (conf::Config, Arc<RouteLimits>) {
        let config = conf::load_str(Path::new("t.yaml"), CONFIG).expect("parses");
        let route = config
            .routes
            .iter()
            .find(|route| route.name == name)
            .expect("route");
        let limits = RouteLimits::compile(route).expect("limits");
        (config, limits)
    }

    fn subject<'a>(route: &'a Arc<str>, ip: u8, headers: &'a http::HeaderMap) -> Subject<'a> {
        Subject {
            route,
            peer: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, ip))),
            headers,
            identity: None,
        }
    }

    #[tokio::test]
    async fn a_rate_limit_counts_per_key_and_says_when_to_retry() {
        let (config, limits) = limits("rated");
        let limiter = Limiter::start(&config);
        let trusted = TrustedProxies::default();
        let route: Arc<str> = Arc::from("rated");
        let mut tenant = http::HeaderMap::new();
        tenant.insert("x-tenant", http::HeaderValue::from_static("t1"));
        let first = admit(&limiter, &trusted, &limits, &subject(&route, 1, &tenant)).await;
        assert!(first.is_ok());
        // Another address, the same tenant: the same key.
        let refused = admit(&limiter, &trusted, &limits, &subject(&route, 2, &tenant))
            .await
            .err()
            .expect("refused");
        assert_eq!((refused.status, refused.kind), (429, "rate-limited"));
        let header = |name| {
            refused
                .headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("ratelimit-policy"), Some("\"per-tenant\";q=1;w=60"));
        assert_eq!(header("retry-after"), Some("60"));
        // Without the header the key is the client address: a fresh one.
        let none = http::HeaderMap::new();
        assert!(
            admit(&limiter, &trusted, &limits, &subject(&route, 3, &none))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn in_flight_slots_are_held_until_dropped() {
        let (config, limits) = limits("capped");
        let limiter = Limiter::start(&config);
        let trusted = TrustedProxies::default();
        let route: Arc<str> = Arc::from("capped");
        let headers = http::HeaderMap::new();
        let first = admit(&limiter, &trusted, &limits, &subject(&route, 1, &headers))
            .await
            .expect("admitted")
            .expect("a slot");
        let same_client = admit(&limiter, &trusted, &limits, &subject(&route, 1, &headers))
            .await
            .err()
            .expect("refused");
        assert_eq!(
            (same_client.status, same_client.kind),
            (429, "too-many-in-flight")
        );
        let second = admit(&limiter, &trusted, &limits, &subject(&route, 2, &headers))
            .await
            .expect("admitted");
        let full = admit(&limiter, &trusted, &limits, &subject(&route, 3, &headers))
            .await
            .err()
            .expect("refused");
        assert_eq!((full.status, full.kind), (503, "overloaded"));
        drop((first, second));
        assert!(
            admit(&limiter, &trusted, &limits, &subject(&route, 3, &headers))
                .await
                .is_ok()
        );
    }
}
