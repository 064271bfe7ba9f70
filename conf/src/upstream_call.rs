//! Routes that call upstreams themselves instead of proxying: the `fanin` and
//! `job` actions, and the call options any upstream-calling route may carry — `repoll_on`,
//! `hold`, `backoff`, `coalesce`, `cache` and `vary`. Also the checks of these settings.
//!
//! ```yaml
//! - name: news-lp                    # a short-polling backend made to look like a long-poll one
//!   match: { path: /news, methods: [GET] }
//!   upstream: news
//!   repoll_on: [204]                 # ask again while it answers 204…
//!   hold: 30s                        # …until this much time has passed (then 204)
//!   backoff: { initial: 100ms, max: 1s }
//!   coalesce: true                   # identical GETs in flight share one upstream call
//!   cache: 2s                        # and a recent answer is served for 2 s
//!   vary: [accept-language]
//! - name: dashboard
//!   match: { path: /dashboard }
//!   fanin:
//!     upstreams: [news, { name: ai, timeout: 5s, required: false, path: /v1/summary }]
//!     until: all                     # first | all | { quorum: 2 }
//!     merge: by_name                 # by_name | first | concat | deep
//!     hold: 30s
//! - name: ai-jobs
//!   match: { prefix: /ai/jobs }      # POST /ai/jobs starts, GET /ai/jobs/{id} polls
//!   job: { upstream: ai, ttl: 10m, timeout: 30s, max_running: 64, max_result: 10MiB }
//! ```

use crate::{ByteSize, Config, Duration, FieldError, Route};
use serde::{Deserialize, Deserializer};
use std::collections::HashSet;

/// Re-poll back-off: the first wait, doubled after each "not yet" up to `max`. Written as one
/// duration (a fixed wait) or `{ initial: 100ms, max: 1s }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        }
    }
}

impl<'de> Deserialize<'de> for Backoff {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Map {
            #[serde(default)]
            initial: Option<Duration>,
            #[serde(default)]
            max: Option<Duration>,
        }
        match serde_yaml::Value::deserialize(deserializer)? {
            value @ serde_yaml::Value::String(_) => {
                let fixed: Duration = serde_yaml::from_value(value).map_err(D::Error::custom)?;
                Ok(Self {
                    initial: fixed,
                    max: fixed,
                })
            }
            value @ serde_yaml::Value::Mapping(_) => {
                let map: Map = crate::suggest::from_map(value)?;
                let default = Self::default();
                let initial = map.initial.unwrap_or(default.initial);
                Ok(Self {
                    initial,
                    max: map.max.unwrap_or(default.max.max(initial)),
                })
            }
            _ => Err(D::Error::custom(
                "backoff must be a duration (`250ms`) or `{ initial: 100ms, max: 1s }`",
            )),
        }
    }
}

/// `coalesce: true` or `coalesce: { shared: true }`. Identical requests are only ever coalesced
/// within one identity, unless `shared` says the upstream's answer is the same for everyone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coalesce {
    pub shared: bool,
}

/// Reads `coalesce:`: `false` gives `None`.
pub(crate) fn coalesce<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Coalesce>, D::Error> {
    use serde::de::Error;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Map {
        #[serde(default)]
        shared: bool,
    }
    match serde_yaml::Value::deserialize(deserializer)? {
        serde_yaml::Value::Bool(on) => Ok(on.then_some(Coalesce::default())),
        value @ serde_yaml::Value::Mapping(_) => crate::suggest::from_map::<Map, _>(value)
            .map(|map| Some(Coalesce { shared: map.shared })),
        _ => Err(D::Error::custom(
            "coalesce must be `true`, `false` or `{ shared: true }`",
        )),
    }
}

/// `fanin:` on a route — call several upstreams concurrently and merge their answers.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fanin {
    /// The upstreams to call, in the order merges apply them.
    pub upstreams: Vec<FaninUpstream>,
    #[serde(default)]
    pub until: Until,
    #[serde(default)]
    pub merge: Merge,
    /// Whether an answer that misses some upstreams may be given (`200` with
    /// `Holdfast-Complete: false`); `false` turns it into a `502`.
    #[serde(default = "yes")]
    pub partial: bool,
    /// The longest the whole fan-in may take (overrides the route's `hold`).
    #[serde(default)]
    pub hold: Option<Duration>,
    /// Statuses that mean "nothing yet: ask again" (overrides the route's `repoll_on`).
    #[serde(default)]
    pub repoll_on: Option<Vec<u16>>,
    #[serde(default)]
    pub backoff: Option<Backoff>,
}

fn yes() -> bool {
    true
}

/// One upstream of a fan-in: `news` or `{ name: news, timeout: 2s, required: true, path: /x }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaninUpstream {
    pub name: String,
    /// The longest this upstream may take, re-polls included; past it its outcome is `timeout`.
    pub timeout: Option<Duration>,
    /// A required upstream that fails fails the whole answer (502), and the answer waits for it.
    pub required: bool,
    /// Sends this path instead of the request's (the query is kept).
    pub path: Option<String>,
}

impl<'de> Deserialize<'de> for FaninUpstream {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Map {
            name: String,
            #[serde(default)]
            timeout: Option<Duration>,
            #[serde(default)]
            required: bool,
            #[serde(default)]
            path: Option<String>,
        }
        match serde_yaml::Value::deserialize(deserializer)? {
            serde_yaml::Value::String(name) => Ok(Self {
                name,
                timeout: None,
                required: false,
                path: None,
            }),
            value @ serde_yaml::Value::Mapping(_) => {
                crate::suggest::from_map::<Map, _>(value).map(|map| Self {
                    name: map.name,
                    timeout: map.timeout,
                    required: map.required,
                    path: map.path,
                })
            }
            _ => Err(D::Error::custom(
                "a fan-in upstream is a name or `{ name: …, timeout: 2s, required: true }`",
            )),
        }
    }
}

/// When a fan-in answers: at the first success, when all answered, or after N successes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Until {
    First,
    #[default]
    All,
    Quorum(usize),
}

impl<'de> Deserialize<'de> for Until {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        // serde_yaml 0.9 writes enum variants as YAML tags; operators write `{ quorum: 2 }`.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Map {
            quorum: usize,
        }
        match serde_yaml::Value::deserialize(deserializer)? {
            serde_yaml::Value::String(name) if name == "first" => Ok(Until::First),
            serde_yaml::Value::String(name) if name == "all" => Ok(Until::All),
            value @ serde_yaml::Value::Mapping(_) => serde_yaml::from_value::<Map>(value)
                .map(|map| Until::Quorum(map.quorum))
                .map_err(|e| {
                    D::Error::custom(crate::suggest::improve_serde_message(&e.to_string()))
                }),
            _ => Err(D::Error::custom(
                "until must be `first`, `all` or `{ quorum: N }`",
            )),
        }
    }
}

/// How the successful answers of a fan-in become one body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Merge {
    /// `{"<upstream>": <its JSON (or its body as a string)>, …}`.
    #[default]
    ByName,
    /// The first successful upstream's answer, in list order, as-is.
    First,
    /// JSON arrays concatenated in list order (a non-array value is appended as one element).
    Concat,
    /// JSON objects merged recursively in list order: nested objects merge, arrays
    /// concatenate, and for anything else the later upstream wins.
    Deep,
}

/// `job:` on a route — start an upstream call in the background and let the client poll for it.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// The upstream called; on a route with an `llm:` action there is none: the job asks the
    /// route's models.
    #[serde(default)]
    pub upstream: Option<String>,
    /// How long a finished job's result stays pollable; afterwards polls get 410.
    #[serde(default = "default_ttl")]
    pub ttl: Duration,
    /// The longest one poll is held waiting for the result (then 204); `?wait=` may ask less.
    #[serde(default = "default_hold")]
    pub timeout: Duration,
    /// Jobs of this route running at once on one instance; past it: 503 + `Retry-After`.
    #[serde(default = "default_max_running")]
    pub max_running: usize,
    /// The largest upstream answer kept; a larger one is stored as an error result (502).
    #[serde(default = "default_max_result")]
    pub max_result: ByteSize,
}

fn default_ttl() -> Duration {
    Duration::from_secs(600)
}

fn default_hold() -> Duration {
    Duration::from_secs(30)
}

fn default_max_running() -> usize {
    64
}

fn default_max_result() -> ByteSize {
    ByteSize::mib(10)
}

/// The checks of a route's fan-in, job and call options.
pub(crate) fn check(config: &Config, route: &Route, at: &str, errors: &mut Vec<FieldError>) {
    let calls_upstream = route.upstream.is_some()
        || route.fanin.is_some()
        || route.job.as_ref().is_some_and(|job| job.upstream.is_some());
    let options = [
        ("repoll_on", route.repoll_on.is_some()),
        ("hold", route.hold.is_some()),
        ("backoff", route.backoff.is_some()),
        ("coalesce", route.coalesce.is_some()),
        ("cache", route.cache.is_some()),
        ("vary", !route.vary.is_empty()),
    ];
    for (name, given) in options {
        if given && !calls_upstream {
            errors.push(FieldError::new(
                format!("{at}.{name}"),
                "only routes with `upstream`, `fanin` or `job` take this option",
            ));
        }
    }
    if let Some(statuses) = &route.repoll_on {
        check_statuses(statuses, &format!("{at}.repoll_on"), errors);
    }
    check_positive(route.hold, &format!("{at}.hold"), errors);
    check_positive(route.cache, &format!("{at}.cache"), errors);
    if let Some(backoff) = route.backoff {
        check_backoff(backoff, &format!("{at}.backoff"), errors);
    }
    if !route.vary.is_empty() && route.coalesce.is_none() && route.cache.is_none() {
        errors.push(FieldError::new(
            format!("{at}.vary"),
            "`vary` only matters with `coalesce` or `cache`",
        ));
    }
    for (i, name) in route.vary.iter().enumerate() {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            errors.push(FieldError::new(
                format!("{at}.vary[{i}]"),
                format!("`{name}` is not a header name"),
            ));
        }
    }
    if let Some(resumable) = &route.resumable {
        let whole = [
            ("repoll_on", route.repoll_on.is_some()),
            ("coalesce", route.coalesce.is_some()),
            ("cache", route.cache.is_some()),
        ];
        let why = if route.upstream.is_none() || route.fanin.is_some() || route.job.is_some() {
            Some("only an `upstream` route takes this option (an `llm` route: `llm.resumable`)")
        } else if let Some((name, _)) = whole.iter().find(|(_, given)| *given) {
            errors.push(FieldError::new(
                format!("{at}.resumable"),
                format!("a kept stream goes to its client as it comes; `{name}` waits for whole answers"),
            ));
            None
        } else {
            None
        };
        if let Some(why) = why {
            errors.push(FieldError::new(format!("{at}.resumable"), why));
        }
        if resumable.ttl.get().is_zero() {
            errors.push(FieldError::new(
                format!("{at}.resumable.ttl"),
                "must be more than 0s",
            ));
        }
    }
    if let Some(fanin) = &route.fanin {
        check_fanin(config, fanin, &format!("{at}.fanin"), errors);
    }
    if let Some(job) = &route.job {
        let at = format!("{at}.job");
        match (&job.upstream, route.llm.is_some()) {
            (Some(upstream), false) if !config.upstreams.contains_key(upstream) => {
                errors.push(crate::validate::unknown_reference(
                    format!("{at}.upstream"),
                    "upstream",
                    upstream,
                    config.upstreams.keys(),
                ));
            }
            (None, false) => errors.push(FieldError::new(
                format!("{at}.upstream"),
                "a job needs the `upstream` it calls (or an `llm:` action on its route)",
            )),
            (Some(_), true) => errors.push(FieldError::new(
                format!("{at}.upstream"),
                "a job on an `llm` route asks the route's models; it takes no `upstream`",
            )),
            _ => {}
        }
        if route.matcher.prefix.is_none() {
            errors.push(FieldError::new(
                at.clone(),
                "a job route needs `match.prefix`: POST to the prefix starts a job, GET on prefix/<id> polls it",
            ));
        }
        check_positive(Some(job.ttl), &format!("{at}.ttl"), errors);
        check_positive(Some(job.timeout), &format!("{at}.timeout"), errors);
        if job.max_running == 0 {
            errors.push(FieldError::new(
                format!("{at}.max_running"),
                "must be at least 1",
            ));
        }
        if job.max_result.get() == 0 {
            errors.push(FieldError::new(
                format!("{at}.max_result"),
                "must be more than 0 bytes",
            ));
        }
    }
}

fn check_fanin(config: &Config, fanin: &Fanin, at: &str, errors: &mut Vec<FieldError>) {
    if fanin.upstreams.is_empty() {
        errors.push(FieldError::new(
            format!("{at}.upstreams"),
            "at least one upstream is required",
        ));
    }
    let mut seen = HashSet::new();
    for (i, upstream) in fanin.upstreams.iter().enumerate() {
        let here = format!("{at}.upstreams[{i}]");
        if !config.upstreams.contains_key(&upstream.name) {
            errors.push(crate::validate::unknown_reference(
                here.clone(),
                "upstream",
                &upstream.name,
                config.upstreams.keys(),
            ));
        }
        if !seen.insert(upstream.name.as_str()) {
            errors.push(FieldError::new(
                here.clone(),
                format!(
                    "upstream `{}` appears twice; each is called once",
                    upstream.name
                ),
            ));
        }
        check_positive(upstream.timeout, &format!("{here}.timeout"), errors);
        if let Some(path) = &upstream.path {
            if !path.starts_with('/') || path.contains(['?', '#']) {
                errors.push(FieldError::new(
                    format!("{here}.path"),
                    format!("`{path}` must start with `/` and hold no `?` or `#`"),
                ));
            }
        }
    }
    if let Until::Quorum(quorum) = fanin.until {
        if quorum == 0 || quorum > fanin.upstreams.len() {
            errors.push(FieldError::new(
                format!("{at}.until.quorum"),
                format!(
                    "must be between 1 and the number of upstreams ({}), not {quorum}",
                    fanin.upstreams.len()
                ),
            ));
        }
    }
    check_positive(fanin.hold, &format!("{at}.hold"), errors);
    if let Some(statuses) = &fanin.repoll_on {
        check_statuses(statuses, &format!("{at}.repoll_on"), errors);
    }
    if let Some(backoff) = fanin.backoff {
        check_backoff(backoff, &format!("{at}.backoff"), errors);
    }
}

fn check_statuses(statuses: &[u16], at: &str, errors: &mut Vec<FieldError>) {
    if statuses.is_empty() {
        errors.push(FieldError::new(
            at,
            "list at least one status, e.g. `[204]`",
        ));
    }
    for (i, status) in statuses.iter().enumerate() {
        if !(100..=599).contains(status) {
            errors.push(FieldError::new(
                format!("{at}[{i}]"),
                format!("`{status}` is not an HTTP status"),
            ));
        }
    }
}

fn check_positive(duration: Option<Duration>, at: &str, errors: &mut Vec<FieldError>) {
    if duration.is_some_and(|d| d.get().is_zero()) {
        errors.push(FieldError::new(at, "must be more than 0s"));
    }
}

fn check_backoff(backoff: Backoff, at: &str, errors: &mut Vec<FieldError>) {
    if backoff.initial.get().is_zero() {
        errors.push(FieldError::new(
            format!("{at}.initial"),
            "must be more than 0s",
        ));
    }
    if backoff.max < backoff.initial {
        errors.push(FieldError::new(
            format!("{at}.max"),
            "must be at least `initial`",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{load_str, validate};
    use std::path::Path;

    const UPSTREAMS: &str = "listen: 127.0.0.1:8080\nupstreams:\n  news: { targets: [127.0.0.1:9] }\n  ai: { targets: [127.0.0.1:9] }\n";

    fn errors(routes: &str) -> Vec<String> {
        let config = load_str(
            Path::new("c.yaml"),
            &format!("{UPSTREAMS}routes:\n{routes}"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        match validate(&config) {
            Ok(()) => vec![],
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn fanin_forms() {
        let config = load_str(
            Path::new("c.yaml"),
            &format!("{UPSTREAMS}routes:\n  - name: d\n    fanin: {{ upstreams: [news, {{ name: ai, timeout: 2s, required: true }}], until: {{ quorum: 2 }}, merge: deep }}\n    coalesce: {{ shared: true }}\n    backoff: 50ms\n"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let route = &config.routes[0];
        let fanin = route.fanin.as_ref().expect("fanin");
        assert_eq!(fanin.until, Until::Quorum(2));
        assert_eq!(fanin.merge, Merge::Deep);
        assert_eq!(fanin.upstreams[0].name, "news");
        assert!(fanin.upstreams[1].required);
        assert_eq!(route.coalesce, Some(Coalesce { shared: true }));
        assert_eq!(
            route.backoff.map(|b| b.initial),
            Some(Duration::from_millis(50))
        );
        assert!(validate(&config).is_ok());
        for bad in ["until: some", "until: { quorm: 2 }", "merge: shallow"] {
            let text = format!(
                "{UPSTREAMS}routes:\n  - name: d\n    fanin: {{ upstreams: [news], {bad} }}\n"
            );
            assert!(load_str(Path::new("c.yaml"), &text).is_err(), "{bad}");
        }
    }

    #[test]
    fn references_and_bounds_are_checked() {
        let found = errors(
            "  - name: d\n    fanin: { upstreams: [news, nwes, news], until: { quorum: 4 } }\n",
        );
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found[0].contains("unknown upstream `nwes` (did you mean `news`?)"));
        assert!(found[1].contains("appears twice"));
        assert!(found[2].contains("routes[0].fanin.until.quorum: must be between 1 and the number of upstreams (3), not 4"));
        let found = errors("  - name: j\n    match: { path: /j }\n    job: { upstream: ia }\n");
        assert_eq!(found.len(), 2, "{found:#?}");
        // A job names its upstream, unless it is an `llm` route's (which takes none).
        let found = errors("  - name: j\n    match: { prefix: /j }\n    job: { ttl: 1m }\n");
        assert!(found.contains(&"c.yaml:8:5: routes[0].job.upstream: a job needs the `upstream` it calls (or an `llm:` action on its route)".to_owned()), "{found:#?}");
        let found = errors(
            "  - name: j\n    match: { prefix: /j }\n    llm: {}\n    job: { upstream: ai }\n",
        );
        assert!(found.contains(&"c.yaml:9:12: routes[0].job.upstream: a job on an `llm` route asks the route's models; it takes no `upstream`".to_owned()), "{found:#?}");
        let found = errors("  - name: j\n    match: { prefix: /j }\n    llm: {}\n    job: {}\n");
        assert!(!found.iter().any(|e| e.contains("job")), "{found:#?}");
        let found = errors("  - name: p\n    publish: { channel: x }\n    repoll_on: [204]\n");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].contains("routes[0].repoll_on: only routes with"));
    }
}
