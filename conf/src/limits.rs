//! Traffic-protection settings of a route: rate limits (`rate_limits:`) and concurrency limits
//! (`concurrency:`), with the parsers for their compact forms — rates such as `10/s` and key
//! sources such as `ip`, `identity`, `claim.sub`, `header.x-tenant`. Parsed here so `validate`
//! and the gateway's compile step agree; the gateway compiles them once at load.

use serde::Deserialize;

/// The most rate limits a route takes: the request path checks them with no allocation.
pub const MAX_RATE_LIMITS: usize = 8;

/// One rate limit of a route: `{ key: ip, rate: 10/s, burst: 20 }`.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// What the limit counts by: `ip` (the client address, after trusted proxies), `identity`
    /// (API-key name or JWT subject), `claim.PATH` (a JWT claim) or `header.NAME`.
    #[serde(default = "default_key")]
    pub key: String,
    /// Requests per window: `10/s`, `50/m`, `1000/h`, `5/10s`, `100/d`.
    pub rate: String,
    /// Requests allowed at once before the rate applies (the bucket size). Default: the rate's
    /// count (`10/s` lets 10 requests through at once, then one every 100 ms).
    #[serde(default)]
    pub burst: Option<u64>,
    /// The name in `RateLimit-Policy` and in the metric's `limit` label; default `KEY:RATE`.
    #[serde(default)]
    pub name: Option<String>,
}

fn default_key() -> String {
    "ip".to_owned()
}

impl RateLimit {
    /// The policy name: the configured one, or `key:rate` (`ip:10/s`).
    pub fn policy_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}:{}", self.key, self.rate))
    }
}

/// One token quota of an `llm` route: `{ key: claim.sub, tokens: 100000/h, burst: 20000 }`.
/// A request is charged an estimate before it is sent (its input's bytes ÷ 4, plus its
/// `max_tokens`, or 1,024 when it gives none), and the difference to the provider's usage once
/// the answer is in.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenLimit {
    /// What the quota counts by, as for rate limits: `ip`, `identity`, `claim.PATH`,
    /// `header.NAME`.
    #[serde(default = "default_key")]
    pub key: String,
    /// Tokens per window: `100000/h`, `2000/m`, `1000000/d`.
    pub tokens: String,
    /// Tokens that may be spent at once before the rate applies (default: the window's count).
    #[serde(default)]
    pub burst: Option<u64>,
    /// The name in `RateLimit-Policy` and in the metric's `limit` label; default
    /// `tokens:KEY:RATE`.
    #[serde(default)]
    pub name: Option<String>,
}

impl TokenLimit {
    /// The quota as a rate limit whose unit is a token, named `tokens:KEY:RATE` unless named.
    pub fn as_rate_limit(&self) -> RateLimit {
        RateLimit {
            key: self.key.clone(),
            rate: self.tokens.clone(),
            burst: self.burst,
            name: Some(
                self.name
                    .clone()
                    .unwrap_or_else(|| format!("tokens:{}:{}", self.key, self.tokens)),
            ),
        }
    }
}

/// One spend budget of an `llm` route: `{ key: claim.sub, budget: 5.00/d }`, in US dollars
/// at the prices of `llm.prices`. A request is charged the most its estimate could cost (its
/// input at four bytes a token and its `max_tokens`, at the dearest of its alias's models),
/// and the difference to what its answer did cost, at the serving model's prices, once it is
/// in. Counted in micro-dollars: a budget is at most $1 a second (`86400/d`).
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpendLimit {
    /// What the budget counts by, as for rate limits.
    #[serde(default = "default_key")]
    pub key: String,
    /// Dollars per window: `5/d`, `0.50/h`, `100/30d`; at most six decimals.
    pub budget: String,
    /// The name in `RateLimit-Policy` and in the metric's `limit` label; default
    /// `spend:KEY:BUDGET`.
    #[serde(default)]
    pub name: Option<String>,
}

impl SpendLimit {
    /// The budget as a rate limit whose unit is a micro-dollar (a budget may be spent at
    /// once); `Err` says why the budget cannot be read.
    pub fn as_rate_limit(&self) -> Result<RateLimit, String> {
        let (amount, window) = self
            .budget
            .split_once('/')
            .ok_or_else(|| format!("`{}`: write DOLLARS/WINDOW, as `5/d`", self.budget))?;
        let micros = micro_dollars(amount.trim())
            .ok_or_else(|| format!("`{amount}` is not an amount of dollars such as 5 or 0.25"))?;
        Ok(RateLimit {
            key: self.key.clone(),
            rate: format!("{micros}/{window}"),
            burst: None,
            name: Some(
                self.name
                    .clone()
                    .unwrap_or_else(|| format!("spend:{}:{}", self.key, self.budget)),
            ),
        })
    }
}

/// `5`, `0.25`, `12.500000` in micro-dollars: digits, at most one point, at most six decimals.
fn micro_dollars(amount: &str) -> Option<u64> {
    let (whole, fraction) = amount.split_once('.').unwrap_or((amount, ""));
    let digits = |text: &str| text.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 6 {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let fraction: u64 = format!("{fraction:0<6}").parse().ok()?;
    whole.checked_mul(1_000_000)?.checked_add(fraction)
}

/// What happens to request headers whose names contain `_` (`limits.headers_with_underscores`).
/// CGI-style origins (PHP, WSGI, Rack behind a CGI bridge) read `X_User_Id`, `X-User_Id` and
/// `x-user-id` all as `HTTP_X_USER_ID`, so a client's look-alike can pass for a header the
/// gateway sets or vouches for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HeadersWithUnderscores {
    /// Drop a header with `_` when, read with `-` for `_`, it names a header the gateway manages:
    /// any header of the upstream request as it leaves (claims and mapping applied), the
    /// forwarding headers (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`), `X-Request-Id`, and the
    /// headers the route's credential, claims and mapping use.
    #[default]
    DropLookalikes,
    /// Drop every header with `_` in its name (nginx's default), except those the gateway sets
    /// itself (a claim or mapping header so named).
    DropAll,
}

/// Concurrency caps of a route: `{ max_in_flight: 1000, max_per_key: 10, key: ip }`.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    /// Requests of this route in flight at once (held polls included); past it: 503.
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// Requests in flight at once per key — on a `longpoll` route, held polls per client; past
    /// it: 429.
    #[serde(default, alias = "max_held_per_key")]
    pub max_per_key: Option<usize>,
    /// The key of `max_per_key` (same forms as a rate limit's key); default `ip`.
    #[serde(default = "default_key")]
    pub key: String,
}

/// A parsed rate: `count` requests per `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub window: std::time::Duration,
}

impl Rate {
    /// Parses `10/s`, `50/m`, `1000/h`, `100/d`, `5/10s`, `3/500ms`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let hint = "a rate is COUNT/WINDOW such as `10/s`, `50/m`, `1000/h` or `5/10s`";
        let (count, window) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}`: {hint}"))?;
        let count: u64 = count
            .trim()
            .parse()
            .map_err(|_| format!("`{text}`: {hint}"))?;
        if count == 0 {
            return Err(format!("`{text}`: the count must be at least 1"));
        }
        let window = window.trim();
        let window = match window {
            "s" | "sec" | "second" => std::time::Duration::from_secs(1),
            "m" | "min" | "minute" => std::time::Duration::from_secs(60),
            "h" | "hour" => std::time::Duration::from_secs(3600),
            "d" | "day" => std::time::Duration::from_secs(86_400),
            other => other
                .parse::<crate::Duration>()
                .map_err(|_| format!("`{text}`: {hint}"))?
                .get(),
        };
        if window.is_zero() || window > std::time::Duration::from_secs(7 * 86_400) {
            return Err(format!("`{text}`: the window must be between 1ms and 7d"));
        }
        // The stores count in microseconds (Redis' clock): a finer rate cannot be kept.
        if u128::from(count) > window.as_micros() {
            return Err(format!(
                "`{text}`: more than one per microsecond cannot be counted"
            ));
        }
        Ok(Self { count, window })
    }
}

/// Where a limit's key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// The client address (`X-Forwarded-For` honoured only from `trusted_proxies`).
    Ip,
    /// The authenticated API-key name or JWT subject.
    Identity,
    /// A claim of the verified JWT, by dotted path.
    Claim(String),
    /// A request header, lower case.
    Header(String),
}

impl KeySource {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once('.') {
            None if text == "ip" => Ok(Self::Ip),
            None if text == "identity" => Ok(Self::Identity),
            Some(("claim", path)) if !path.is_empty() => Ok(Self::Claim(path.to_owned())),
            Some(("header", name)) if http_token(name) => {
                Ok(Self::Header(name.to_ascii_lowercase()))
            }
            _ => Err(format!(
                "unknown key `{text}`; valid: ip, identity, claim.PATH, header.NAME"
            )),
        }
    }

    /// Whether the key needs the route's auth to have run.
    pub fn needs_auth(&self) -> bool {
        matches!(self, Self::Identity | Self::Claim(_))
    }
}

fn http_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses `10.0.0.0/8`, `::1/128` or a bare address (a /32 or /128).
pub fn parse_cidr(text: &str) -> Result<(std::net::IpAddr, u8), String> {
    let (address, bits) = match text.split_once('/') {
        Some((address, bits)) => (address, Some(bits)),
        None => (text, None),
    };
    let address: std::net::IpAddr = address
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not an address or CIDR such as 10.0.0.0/8"))?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        Some(bits) => bits
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|&b| b <= max)
            .ok_or_else(|| format!("`{text}`: the prefix length must be 0–{max}"))?,
        None => max,
    };
    Ok((address, bits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rates() {
        assert_eq!(
            Rate::parse("10/s"),
            Ok(Rate {
                count: 10,
                window: Duration::from_secs(1)
            })
        );
        assert_eq!(
            Rate::parse("1000/h").map(|r| r.window),
            Ok(Duration::from_secs(3600))
        );
        assert_eq!(
            Rate::parse("5/10s").map(|r| r.window),
            Ok(Duration::from_secs(10))
        );
        assert!(Rate::parse("0/s").is_err());
        assert!(Rate::parse("10").is_err());
        assert!(Rate::parse("10/fortnight").is_err());
    }

    #[test]
    fn keys_and_cidrs() {
        assert_eq!(KeySource::parse("ip"), Ok(KeySource::Ip));
        assert_eq!(
            KeySource::parse("header.X-Tenant"),
            Ok(KeySource::Header("x-tenant".into()))
        );
        assert_eq!(
            KeySource::parse("claim.sub"),
            Ok(KeySource::Claim("sub".into()))
        );
        assert!(KeySource::parse("cookie.x").is_err());
        assert!(parse_cidr("10.0.0.0/8").is_ok());
        assert!(parse_cidr("127.0.0.1").is_ok());
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("nope").is_err());
    }

    #[test]
    fn headers_with_underscores() {
        let load = |yaml: &str| crate::load_str(std::path::Path::new("c.yaml"), yaml);
        let default = load("{}").expect("loads");
        assert_eq!(
            default.limits.headers_with_underscores,
            HeadersWithUnderscores::DropLookalikes
        );
        let all = load("limits: { headers_with_underscores: drop_all }").expect("loads");
        assert_eq!(
            all.limits.headers_with_underscores,
            HeadersWithUnderscores::DropAll
        );
        let wrong = load("limits:\n  headers_with_underscores: allow\n")
            .expect_err("unknown value")
            .to_string();
        assert!(wrong.contains("c.yaml:2"), "{wrong}");
        assert!(wrong.contains("drop_lookalikes"), "{wrong}");
    }
}
