//! The semantic checks that need nothing but the config itself: addresses, names, references
//! between sections, path patterns, channel templates. Every error is collected, not just the
//! first, and each is placed in its file and line.

use crate::suggest::nearest;
use crate::{Config, ConfigErrors, FieldError, RouteAction, Transport};
use std::collections::HashSet;
use std::net::SocketAddr;

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

/// Checks `config`; on success the gateway may compile it without re-checking these points.
pub fn validate(config: &Config) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    check_server(config, &mut errors);
    check_upstreams(config, &mut errors);
    check_routes(config, &mut errors);
    crate::auth::check(config, &mut errors);
    crate::mapping::check(config, &mut errors);
    if let Some(tracing) = &config.tracing {
        crate::tracing::check(tracing, &mut errors);
    }
    crate::llm::check(config, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(config.place(errors))
    }
}

fn check_server(config: &Config, errors: &mut Vec<FieldError>) {
    if config.listen.is_empty() {
        errors.push(FieldError::new(
            "listen",
            "at least one listen address is required, e.g. `listen: 0.0.0.0:8080`",
        ));
    }
    check_listeners(config, errors);
    if let Some(admin) = &config.admin {
        if admin.parse::<SocketAddr>().is_err() {
            errors.push(FieldError::new(
                "admin",
                format!("`{admin}` is not an address such as 127.0.0.1:9090"),
            ));
        }
    }
    if let crate::Backplane::Redis(redis) = &config.backplane {
        check_redis(redis, errors);
    }
    if let Some(ca_file) = &config.server.ca_file {
        if let Err(error) = std::fs::metadata(ca_file) {
            errors.push(FieldError::new(
                "server.ca_file",
                format!("cannot read `{}`: {error}", ca_file.display()),
            ));
        }
    }
    if config.channels.buffer_messages == 0 {
        errors.push(FieldError::new(
            "channels.buffer_messages",
            "must be at least 1",
        ));
    }
}

/// Exactly one of `url`, `cluster` and `sentinel`, each address a Redis URL.
fn check_redis(redis: &crate::RedisBackplane, errors: &mut Vec<FieldError>) {
    let given: Vec<&str> = [
        ("url", redis.url.is_some()),
        ("cluster", redis.cluster.is_some()),
        ("sentinel", redis.sentinel.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    match given.as_slice() {
        [] => errors.push(FieldError::new(
            "backplane.redis",
            "needs `url` (one Redis), `cluster` (Redis Cluster) or `sentinel`",
        )),
        [_] => {}
        [first, rest @ ..] => {
            for other in rest {
                errors.push(FieldError::new(
                    format!("backplane.redis.{other}"),
                    format!("give `{first}` or `{other}`, not both: one Redis, a cluster and a Sentinel-watched master are different servers"),
                ));
            }
        }
    }
    let check_url = |at: String, url: &str, errors: &mut Vec<FieldError>| {
        if !(url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("unix://"))
        {
            errors.push(FieldError::new(
                at,
                "must start with redis://, rediss:// or unix://",
            ));
        }
    };
    if let Some(url) = &redis.url {
        check_url("backplane.redis.url".into(), url.as_str(), errors);
    }
    if let Some(nodes) = &redis.cluster {
        if nodes.is_empty() {
            errors.push(FieldError::new(
                "backplane.redis.cluster",
                "needs at least one node",
            ));
        }
        for (i, node) in nodes.iter().enumerate() {
            check_url(
                format!("backplane.redis.cluster[{i}]"),
                node.as_str(),
                errors,
            );
        }
    }
    if let Some(sentinel) = &redis.sentinel {
        if sentinel.master.is_empty() {
            errors.push(FieldError::new(
                "backplane.redis.sentinel.master",
                "needs the master's name",
            ));
        }
        if sentinel.nodes.is_empty() {
            errors.push(FieldError::new(
                "backplane.redis.sentinel.nodes",
                "needs at least one sentinel",
            ));
        }
        for (i, node) in sentinel.nodes.iter().enumerate() {
            check_url(
                format!("backplane.redis.sentinel.nodes[{i}]"),
                node.as_str(),
                errors,
            );
        }
    }
    if redis.durability == crate::Durability::Replicated
        && redis.replication_timeout.get().is_zero()
    {
        errors.push(FieldError::new(
            "backplane.redis.replication_timeout",
            "must be more than 0 (WAIT 0 would wait forever)",
        ));
    }
}

fn check_listeners(config: &Config, errors: &mut Vec<FieldError>) {
    let mut seen = std::collections::HashSet::new();
    for (i, listener) in config.listen.iter().enumerate() {
        let at = format!("listen[{i}]");
        let address = &listener.address;
        match address.parse::<SocketAddr>() {
            Err(_) => errors.push(FieldError::new(
                &at,
                format!("`{address}` is not an address such as 0.0.0.0:8080"),
            )),
            Ok(parsed) if !seen.insert(parsed) => {
                errors.push(FieldError::new(&at, format!("`{address}` is listed twice")))
            }
            Ok(_) => {}
        }
        let Some(tls) = &listener.tls else { continue };
        if listener.h2c {
            errors.push(FieldError::new(
                format!("{at}.h2c"),
                "h2c is HTTP/2 on a plain listener; a TLS listener offers HTTP/2 by ALPN (`http2`)",
            ));
        }
        if tls.certificates.is_empty() {
            errors.push(FieldError::new(
                format!("{at}.tls.certificates"),
                "at least one certificate is required: `- { cert: server.pem, key: server.key }`",
            ));
        }
        for (c, certificate) in tls.certificates.iter().enumerate() {
            for (n, name) in certificate.names.iter().enumerate() {
                if !is_sni_name(name) {
                    errors.push(FieldError::new(
                        format!("{at}.tls.certificates[{c}].names[{n}]"),
                        format!(
                            "`{name}` is not a DNS name such as api.example.com or *.example.com"
                        ),
                    ));
                }
            }
        }
    }
}

/// A DNS name a client may send in SNI, or a wildcard over one label (`*.example.com`).
pub fn is_sni_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn check_upstream_tls(at: &str, upstream: &crate::Upstream, errors: &mut Vec<FieldError>) {
    let tls = upstream.uses_tls();
    for (field, set) in [
        ("ca_file", upstream.ca_file.is_some()),
        ("client_cert", upstream.client_cert.is_some()),
    ] {
        if set && !tls {
            errors.push(FieldError::new(
                format!("{at}.{field}"),
                "applies to TLS upstreams only: add `tls: true` or use https:// targets",
            ));
        }
    }
    match (&upstream.client_cert, &upstream.client_key) {
        (Some(_), None) => errors.push(FieldError::new(
            format!("{at}.client_cert"),
            "needs `client_key`, the certificate's private key",
        )),
        (None, Some(_)) => errors.push(FieldError::new(
            format!("{at}.client_key"),
            "needs `client_cert`, the certificate the key belongs to",
        )),
        _ => {}
    }
}

fn check_upstreams(config: &Config, errors: &mut Vec<FieldError>) {
    for (name, upstream) in &config.upstreams {
        let at = format!("upstreams.{name}");
        check_name(name, &at, errors);
        if upstream.targets.is_empty() {
            errors.push(FieldError::new(
                format!("{at}.targets"),
                "at least one target is required",
            ));
        }
        for (i, target) in upstream.targets.iter().enumerate() {
            if let Err(message) = check_target(target) {
                errors.push(FieldError::new(format!("{at}.targets[{i}]"), message));
            }
        }
        check_upstream_tls(&at, upstream, errors);
        if let Some(check) = &upstream.health_check {
            if let Some(path) = &check.path {
                if !path.starts_with('/') {
                    errors.push(FieldError::new(
                        format!("{at}.health_check.path"),
                        "must start with `/`",
                    ));
                }
            }
            if check.interval.get().is_zero() {
                errors.push(FieldError::new(
                    format!("{at}.health_check.interval"),
                    "must be more than 0s",
                ));
            }
        }
    }
}

/// `host:port` with a numeric port and a host made of name or address characters.
fn check_target(target: &str) -> Result<(), String> {
    if let Some((scheme, _)) = target.split_once("://") {
        if !matches!(scheme, "http" | "https") {
            return Err(format!(
                "`{scheme}://` is not a scheme Holdfast speaks: use http:// or https://"
            ));
        }
    }
    let (target, _) = crate::upstream::split_scheme(target);
    let Some((host, port)) = target.rsplit_once(':') else {
        return Err(format!("`{target}` needs a port, e.g. `{target}:80`"));
    };
    if port.parse::<u16>().map_or(true, |port| port == 0) {
        return Err(format!("`{target}` has an invalid port `{port}`"));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:_".contains(c))
    {
        return Err(format!("`{target}` has an invalid host"));
    }
    Ok(())
}

/// Names appear in metric labels and paths: keep them plain.
pub(crate) fn check_name(name: &str, at: &str, errors: &mut Vec<FieldError>) {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !plain {
        errors.push(FieldError::new(
            at,
            format!("name `{name}` must be 1–64 letters, digits, `-` or `_`"),
        ));
    }
}

fn check_routes(config: &Config, errors: &mut Vec<FieldError>) {
    let mut names = HashSet::new();
    for (i, route) in config.routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        check_name(&route.name, &format!("{at}.name"), errors);
        if !names.insert(route.name.as_str()) {
            errors.push(FieldError::new(
                format!("{at}.name"),
                format!("duplicate route name `{}`", route.name),
            ));
        }
        let matcher = &route.matcher;
        let mut captures = Vec::new();
        match (&matcher.path, &matcher.prefix) {
            (Some(_), Some(_)) => errors.push(FieldError::new(
                format!("{at}.match"),
                "give `path` or `prefix`, not both",
            )),
            (Some(path), None) => match path_captures(path) {
                Ok(found) => captures = found,
                Err(message) => errors.push(FieldError::new(format!("{at}.match.path"), message)),
            },
            (None, Some(prefix)) => {
                if !prefix.starts_with('/') || prefix.contains(['{', '}', '?', '#']) {
                    errors.push(FieldError::new(
                        format!("{at}.match.prefix"),
                        format!(
                            "`{prefix}` must start with `/` and hold no `{{`, `}}`, `?` or `#`"
                        ),
                    ));
                }
            }
            (None, None) => {}
        }
        for (j, host) in matcher.host.iter().enumerate() {
            if host.is_empty()
                || !host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-*".contains(c))
            {
                errors.push(FieldError::new(
                    format!("{at}.match.host[{j}]"),
                    format!("`{host}` is not a host name"),
                ));
            }
        }
        for (j, method) in matcher.methods.iter().enumerate() {
            if !METHODS.contains(&method.to_ascii_uppercase().as_str()) {
                let hint = nearest(&method.to_ascii_uppercase(), METHODS.iter().copied())
                    .map(|m| format!(" (did you mean `{m}`?)"))
                    .unwrap_or_default();
                errors.push(FieldError::new(
                    format!("{at}.match.methods[{j}]"),
                    format!("unknown method `{method}`{hint}"),
                ));
            }
        }
        check_action(config, route, &at, &captures, errors);
        check_limits(route, &at, errors);
    }
    for (i, proxy) in config.trusted_proxies.iter().enumerate() {
        if let Err(message) = crate::parse_cidr(proxy) {
            errors.push(FieldError::new(format!("trusted_proxies[{i}]"), message));
        }
    }
    if config.limits.header_timeout.get().is_zero() {
        errors.push(FieldError::new(
            "limits.header_timeout",
            "must be more than 0s",
        ));
    }
}

/// Rate and concurrency limits: parsable rates and keys, and keys that need auth on routes
/// that have it.
fn check_limits(route: &crate::Route, at: &str, errors: &mut Vec<FieldError>) {
    let mut key_check = |key: &str, path: String| match crate::KeySource::parse(key) {
        Ok(source) if source.needs_auth() && route.auth.is_none() => errors.push(FieldError::new(
            path,
            format!("key `{key}` needs the route's `auth`"),
        )),
        Ok(_) => {}
        Err(message) => errors.push(FieldError::new(path, message)),
    };
    for (j, limit) in route.rate_limits.iter().enumerate() {
        key_check(&limit.key, format!("{at}.rate_limits[{j}].key"));
    }
    for (j, limit) in route.token_limits.iter().enumerate() {
        key_check(&limit.key, format!("{at}.token_limits[{j}].key"));
    }
    for (j, limit) in route.spend_limits.iter().enumerate() {
        key_check(&limit.key, format!("{at}.spend_limits[{j}].key"));
    }
    if let Some(concurrency) = &route.concurrency {
        key_check(&concurrency.key, format!("{at}.concurrency.key"));
        for (field, value) in [
            ("max_in_flight", concurrency.max_in_flight),
            ("max_per_key", concurrency.max_per_key),
        ] {
            if value == Some(0) {
                errors.push(FieldError::new(
                    format!("{at}.concurrency.{field}"),
                    "must be at least 1",
                ));
            }
        }
    }
    check_rates(
        &route.rate_limits,
        &format!("{at}.rate_limits"),
        "rate",
        errors,
    );
    let tokens: Vec<crate::RateLimit> = route
        .token_limits
        .iter()
        .map(crate::TokenLimit::as_rate_limit)
        .collect();
    check_rates(&tokens, &format!("{at}.token_limits"), "tokens", errors);
    if !route.token_limits.is_empty() && (route.llm.is_none() || route.job.is_some()) {
        errors.push(FieldError::new(
            format!("{at}.token_limits"),
            "token quotas count the tokens of `llm` routes that answer at once (not jobs)",
        ));
    }
    let mut budgets = Vec::new();
    for (j, limit) in route.spend_limits.iter().enumerate() {
        let counted = limit.as_rate_limit().and_then(|rate| {
            crate::Rate::parse(&rate.rate)
                .map(|_| rate)
                .map_err(|message| {
                    if message.contains("microsecond") {
                        format!(
                            "`{}`: more than $1 a second cannot be counted",
                            limit.budget
                        )
                    } else {
                        format!("`{}`: {message}", limit.budget)
                    }
                })
        });
        match counted {
            Ok(rate) => budgets.push(rate),
            Err(message) => errors.push(FieldError::new(
                format!("{at}.spend_limits[{j}].budget"),
                message,
            )),
        }
    }
    // The rates were checked above; the names are checked with the rest.
    check_rates(&budgets, &format!("{at}.spend_limits"), "budget", errors);
    if !route.spend_limits.is_empty() && (route.llm.is_none() || route.job.is_some()) {
        errors.push(FieldError::new(
            format!("{at}.spend_limits"),
            "spend budgets count what `llm` routes that answer at once cost (not jobs)",
        ));
    }
}

/// A list of rate limits (`rate_limits`, or `token_limits` read as rates of tokens, whose rate
/// field is `rate_field`): parsable rates, bursts, and names that are plain and unique.
fn check_rates(
    limits: &[crate::RateLimit],
    at: &str,
    rate_field: &str,
    errors: &mut Vec<FieldError>,
) {
    if limits.len() > crate::limits::MAX_RATE_LIMITS {
        errors.push(FieldError::new(
            at,
            format!(
                "a route takes at most {} of these limits",
                crate::limits::MAX_RATE_LIMITS
            ),
        ));
    }
    let mut names = HashSet::new();
    for (j, limit) in limits.iter().enumerate() {
        let path = format!("{at}[{j}]");
        if let Err(message) = crate::Rate::parse(&limit.rate) {
            errors.push(FieldError::new(format!("{path}.{rate_field}"), message));
        }
        if limit.burst == Some(0) {
            errors.push(FieldError::new(
                format!("{path}.burst"),
                "must be at least 1",
            ));
        }
        let name = limit.policy_name();
        let plain = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
        if !plain {
            errors.push(FieldError::new(
                format!("{path}.name"),
                format!("`{name}` must be 1–64 printable characters without quotes or backslashes"),
            ));
        }
        if !names.insert(name.clone()) {
            errors.push(FieldError::new(
                format!("{path}.name"),
                format!("two rate limits of this route are named `{name}`; give one a `name`"),
            ));
        }
    }
}

fn check_action(
    config: &Config,
    route: &crate::Route,
    at: &str,
    captures: &[String],
    errors: &mut Vec<FieldError>,
) {
    let actions = route.actions();
    if actions.len() != 1 {
        let message = if actions.is_empty() {
            "a route needs one action: `upstream`, `longpoll`, `publish`, `fanin`, `job` or `llm`"
        } else {
            "a route takes exactly one action of `upstream`, `longpoll`, `publish`, `fanin`, `job` and `llm`"
        };
        errors.push(FieldError::new(at, message));
    }
    for action in actions {
        match action {
            RouteAction::Upstream(name) => {
                if !config.upstreams.contains_key(name) {
                    errors.push(unknown_reference(
                        format!("{at}.upstream"),
                        "upstream",
                        name,
                        config.upstreams.keys(),
                    ));
                }
            }
            RouteAction::LongPoll(longpoll) => {
                refuse_map(route, at, "longpoll", errors);
                if let Err(message) = validate_channel_template(&longpoll.channel, captures) {
                    errors.push(FieldError::new(format!("{at}.longpoll.channel"), message));
                }
                if longpoll.timeout.get().is_zero() {
                    errors.push(FieldError::new(
                        format!("{at}.longpoll.timeout"),
                        "must be more than 0s",
                    ));
                }
                if longpoll.limit == 0 {
                    errors.push(FieldError::new(
                        format!("{at}.longpoll.limit"),
                        "must be at least 1",
                    ));
                }
                if longpoll.subscribe.is_empty() {
                    errors.push(FieldError::new(
                        format!("{at}.longpoll.subscribe"),
                        "names no transport: list one or more of longpoll, sse and websocket",
                    ));
                }
                if longpoll.keepalive.get().is_zero() {
                    errors.push(FieldError::new(
                        format!("{at}.longpoll.keepalive"),
                        "must be more than 0s",
                    ));
                }
                if longpoll.publish && !longpoll.subscribe.contains(&Transport::Websocket) {
                    errors.push(FieldError::new(
                        format!("{at}.longpoll.publish"),
                        "lets WebSocket subscribers publish, but `subscribe` leaves out websocket",
                    ));
                }
                if longpoll.max_lag.get() == 0 {
                    errors.push(FieldError::new(
                        format!("{at}.longpoll.max_lag"),
                        "must be more than 0 bytes",
                    ));
                }
            }
            RouteAction::Publish(publish) => {
                refuse_map(route, at, "publish", errors);
                if let Err(message) = validate_channel_template(&publish.channel, captures) {
                    errors.push(FieldError::new(format!("{at}.publish.channel"), message));
                }
            }
            // Checked with the call options below, and with `llm:`.
            RouteAction::Fanin(_) | RouteAction::Job(_) | RouteAction::Llm(_) => {}
        }
    }
    crate::upstream_call::check(config, route, at, errors);
}

/// Channel routes read the request themselves: a `map:` there would silently do nothing.
fn refuse_map(route: &crate::Route, at: &str, action: &str, errors: &mut Vec<FieldError>) {
    if route.map.is_some() {
        errors.push(FieldError::new(
            format!("{at}.map"),
            format!("`map` applies to proxied routes, not to `{action}` routes"),
        ));
    }
}

pub(crate) fn unknown_reference<'a>(
    path: String,
    what: &str,
    name: &str,
    known: impl Iterator<Item = &'a String>,
) -> FieldError {
    let known: Vec<&str> = known.map(String::as_str).collect();
    let hint = match nearest(name, known.iter().copied()) {
        Some(best) => format!(" (did you mean `{best}`?)"),
        None if known.is_empty() => format!("; no {what}s are defined"),
        None => format!("; defined: {}", known.join(", ")),
    };
    FieldError::new(path, format!("unknown {what} `{name}`{hint}"))
}

/// The capture names of a path pattern such as `/users/{id}/files/{*rest}`, or why it is invalid.
pub fn path_captures(pattern: &str) -> Result<Vec<String>, String> {
    if !pattern.starts_with('/') {
        return Err(format!("`{pattern}` must start with `/`"));
    }
    if pattern.contains(['?', '#']) {
        return Err(format!("`{pattern}` must not hold a query or fragment"));
    }
    let segments: Vec<&str> = pattern.split('/').skip(1).collect();
    let mut captures: Vec<String> = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        if !segment.contains(['{', '}']) {
            continue;
        }
        let inner = segment
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .filter(|inner| !inner.contains(['{', '}']))
            .ok_or_else(|| format!("`{pattern}`: a capture must be a whole segment such as `{{id}}`, not `{segment}`"))?;
        let (name, catch_all) = match inner.strip_prefix('*') {
            Some(name) => (name, true),
            None => (inner, false),
        };
        if catch_all && i + 1 != segments.len() {
            return Err(format!(
                "`{pattern}`: `{{*{name}}}` may only be the last segment"
            ));
        }
        let identifier = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !identifier {
            return Err(format!(
                "`{pattern}`: capture name `{name}` must be letters, digits and `_`"
            ));
        }
        if captures.iter().any(|c| c == name) {
            return Err(format!("`{pattern}`: capture `{name}` appears twice"));
        }
        captures.push(name.to_owned());
    }
    Ok(captures)
}

/// One piece of a `{…}` template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplatePart {
    Literal(String),
    /// A source: `claim.sub`, `query.page`, `header.x-team`, or a bare path capture `id`.
    Source(String),
}

/// A string with `{source}` references, parsed once at load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub parts: Vec<TemplatePart>,
}

impl Template {
    /// Parses `user:{claim.sub}`; `{{` and `}}` stand for literal braces.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut source = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => return Err(format!("unclosed `{{` in `{text}`")),
                            Some(c) => source.push(c),
                        }
                    }
                    let source = source.trim().to_owned();
                    if source.is_empty() {
                        return Err(format!("empty `{{}}` in `{text}`"));
                    }
                    if !literal.is_empty() {
                        parts.push(TemplatePart::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(TemplatePart::Source(source));
                }
                '}' => return Err(format!("unmatched `}}` in `{text}`")),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(TemplatePart::Literal(literal));
        }
        Ok(Self { parts })
    }

    pub fn is_constant(&self) -> bool {
        self.parts
            .iter()
            .all(|part| matches!(part, TemplatePart::Literal(_)))
    }

    pub fn sources(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            TemplatePart::Source(source) => Some(source.as_str()),
            TemplatePart::Literal(_) => None,
        })
    }
}

/// A channel template may name path captures, `query.X`, `header.X` and `claim.X`.
pub fn validate_channel_template(text: &str, captures: &[String]) -> Result<Template, String> {
    if text.is_empty() {
        return Err("the channel name must not be empty".to_owned());
    }
    let template = Template::parse(text)?;
    for source in template.sources() {
        let known = match source.split_once('.') {
            Some(("query" | "header" | "claim", rest)) => !rest.is_empty(),
            Some(_) => false,
            None => captures.iter().any(|c| c == source),
        };
        if !known {
            let mut valid: Vec<String> = captures.iter().map(|c| format!("{{{c}}}")).collect();
            valid.extend(["{query.NAME}", "{header.NAME}", "{claim.PATH}"].map(String::from));
            return Err(format!(
                "unknown source `{{{source}}}` in `{text}`; valid: {}",
                valid.join(", ")
            ));
        }
    }
    Ok(template)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_str;
    use std::path::Path;

    fn check(text: &str) -> Vec<String> {
        let config = load_str(Path::new("c.yaml"), text).expect("parses");
        match validate(&config) {
            Ok(()) => vec![],
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_route_to_an_undefined_upstream_names_file_line_and_field() {
        let errors = check("listen: 127.0.0.1:8080\nupstreams:\n  billing: { targets: [127.0.0.1:9] }\nroutes:\n  - name: a\n    upstream: biling\n");
        assert_eq!(errors, vec!["c.yaml:6:5: routes[0].upstream: unknown upstream `biling` (did you mean `billing`?)"]);
    }

    #[test]
    fn every_error_is_collected() {
        let errors = check("listen: nowhere\nroutes:\n  - name: a\n    upstream: x\n  - name: a\n    match: { path: 'users/{id' }\n    upstream: y\n");
        assert_eq!(errors.len(), 5, "{errors:#?}");
    }

    #[test]
    fn upstream_schemes_other_than_http_and_https_are_refused() {
        let errors = check("listen: 127.0.0.1:8080\nupstreams:\n  u: { targets: [\"ftp://h:21\", \"https://h:443\"] }\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("`ftp://` is not a scheme Holdfast speaks"),
            "{errors:?}"
        );
    }

    #[test]
    fn map_on_a_channel_route_is_refused() {
        let errors = check("listen: 127.0.0.1:8080\nroutes:\n  - name: p\n    map: { request: [] }\n    publish: { channel: c }\n");
        assert_eq!(errors, vec!["c.yaml:4:5: routes[0].map: `map` applies to proxied routes, not to `publish` routes"]);
    }

    #[test]
    fn path_patterns() {
        assert_eq!(
            path_captures("/users/{id}/files/{*rest}"),
            Ok(vec!["id".to_owned(), "rest".to_owned()])
        );
        assert!(path_captures("/users/{id").is_err());
        assert!(path_captures("/a/{*rest}/b").is_err());
        assert!(path_captures("/a/x{id}").is_err());
        assert!(path_captures("/a/{id}/{id}").is_err());
    }

    #[test]
    fn channel_templates() {
        let captures = vec!["room".to_owned()];
        assert!(validate_channel_template("user:{claim.sub}", &captures).is_ok());
        assert!(validate_channel_template("room:{room}:{query.kind}", &captures).is_ok());
        assert!(validate_channel_template("{nope}", &captures)
            .unwrap_err()
            .contains("unknown source"));
        assert!(validate_channel_template("a{b", &captures).is_err());
    }
}
