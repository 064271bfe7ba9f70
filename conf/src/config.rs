//! The top of the configuration: listeners, the admin listener, server settings, limits, the
//! backplane, and the maps of auth providers, upstreams and routes.

use crate::{
    auth, channel::Channels, locate::Positions, ByteSize, Duration, EnvString, Route, Upstream,
};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A whole configuration, as loaded from one file or merged from a directory of files.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The addresses the gateway serves on: `0.0.0.0:8080`, or a list of addresses and
    /// `{ address, tls, h2c, http2 }` maps.
    #[serde(default, deserialize_with = "one_or_many")]
    #[schemars(with = "crate::schema::OneOrMany<crate::schema::ListenerSchema>")]
    pub listen: Vec<crate::Listener>,
    /// The admin listener: `/metrics`, `/healthz`, `/readyz`. Keep it off public interfaces.
    #[serde(default)]
    pub admin: Option<String>,
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub limits: Limits,
    /// Peers whose `X-Forwarded-For` is believed (addresses or CIDRs such as `10.0.0.0/8`): a
    /// rate limit keyed by `ip` uses the right-most address that is not one of them.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub backplane: Backplane,
    #[serde(default)]
    pub channels: Channels,
    /// One JSON line per request; off unless set.
    #[serde(default)]
    pub access_log: Option<AccessLog>,
    /// OpenTelemetry spans over OTLP; off unless set.
    #[serde(default)]
    pub tracing: Option<crate::Tracing>,
    /// Model providers and the aliases `llm` routes serve.
    #[serde(default)]
    pub llm: crate::Llm,
    #[serde(default)]
    pub auth: BTreeMap<String, auth::Provider>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Where every field came from, for error messages.
    #[serde(skip)]
    pub(crate) origin: Origin,
}

/// Process-wide settings.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Worker threads for the proxy service; 0 means one per CPU core.
    pub threads: usize,
    /// Let idle worker threads take tasks from busy ones.
    pub work_stealing: bool,
    /// How long shutdown waits for in-flight requests after SIGTERM before the process exits.
    pub shutdown_grace: Duration,
    /// Idle connections kept per upstream.
    pub upstream_keepalive_pool: usize,
    /// How often the config files are checked for changes (0s turns file watching off).
    pub watch_interval: Duration,
    /// Extra CA certificates (PEM) trusted for upstream TLS, besides the system roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// HTTP/2 streams one client connection may have open at once. Every held long-poll is an
    /// open stream, and a browser puts all its requests to one origin on one HTTP/2
    /// connection, so the default (1000) is ten times Pingora's 100: a dashboard holding many
    /// polls must not starve its other requests. Held polls per client are capped separately
    /// (`concurrency` limits).
    pub max_concurrent_streams: u32,
    /// The Unix socket through which a process started with `holdfast run --upgrade` receives
    /// the listening sockets of the one it replaces.
    pub upgrade_socket: std::path::PathBuf,
    /// Where the running process writes its process id; `holdfast run --upgrade` reads it to
    /// tell the process it replaces to hand over (SIGQUIT).
    pub pid_file: Option<std::path::PathBuf>,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            threads: 0,
            work_stealing: true,
            shutdown_grace: Duration::from_secs(5),
            upstream_keepalive_pool: 1024,
            watch_interval: Duration::from_secs(1),
            ca_file: None,
            max_concurrent_streams: 1000,
            upgrade_socket: std::path::PathBuf::from("/tmp/holdfast-upgrade.sock"),
            pid_file: None,
        }
    }
}

/// Request limits that apply to every route.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The request line and headers together; over it: 431.
    pub max_header_bytes: ByteSize,
    /// Number of request headers; over it: 431.
    pub max_headers: usize,
    /// Request bodies, proxied or read by the gateway (publish, mapped JSON): refused by
    /// `Content-Length` before reading and while streaming; over it: 413.
    pub max_body: ByteSize,
    /// The request target (path and query); over it: 414.
    pub max_url_bytes: ByteSize,
    /// The time a client has to send the whole request head, from its first byte (from the
    /// connection's start for a new connection); past it: 408 and the connection is closed.
    pub header_timeout: Duration,
    /// The time a client has to send the whole request body; past it: 408.
    pub body_timeout: Duration,
    /// How long an idle keep-alive connection waits for its next request.
    pub idle_timeout: Duration,
    /// Request headers with `_` in their names: `drop_lookalikes` (default) drops those that
    /// read as a header the gateway manages (`X_User_Id` beside a claim's `x-user-id`);
    /// `drop_all` drops every one, as nginx does.
    pub headers_with_underscores: crate::limits::HeadersWithUnderscores,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: ByteSize::kib(32),
            max_headers: 100,
            max_body: ByteSize::mib(1),
            max_url_bytes: ByteSize::kib(8),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            headers_with_underscores: Default::default(),
        }
    }
}

/// Where long-poll channels live: in this process, or in Redis shared by several instances.
/// Written `backplane: memory` or `backplane: { redis: { url | cluster | sentinel: … } }`.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Backplane {
    #[default]
    Memory,
    Redis(RedisBackplane),
}

impl<'de> Deserialize<'de> for Backplane {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        // serde_yaml 0.9 writes enum variants as YAML tags (`!redis`); operators write maps.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Map {
            redis: RedisBackplane,
        }
        match serde_yaml::Value::deserialize(deserializer)? {
            serde_yaml::Value::String(name) if name == "memory" => Ok(Backplane::Memory),
            value @ serde_yaml::Value::Mapping(_) => {
                crate::suggest::from_map::<Map, _>(value).map(|map| Backplane::Redis(map.redis))
            }
            _ => Err(D::Error::custom(
                "backplane must be `memory` or `{ redis: { url: redis://host:port } }`",
            )),
        }
    }
}

/// The backplane's Redis: exactly one of `url` (one server), `cluster` (Redis Cluster 7+) or
/// `sentinel` (a master that Sentinel fails over).
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisBackplane {
    /// One Redis: `redis://host:port/db`; may be `${REDIS_URL}`.
    #[serde(default)]
    pub url: Option<EnvString>,
    /// Redis Cluster: some of its nodes (`redis://host:port`); the rest are discovered.
    #[serde(default)]
    pub cluster: Option<Vec<EnvString>>,
    /// A master watched by Redis Sentinel; Holdfast follows its failovers.
    #[serde(default)]
    pub sentinel: Option<SentinelBackplane>,
    /// Key prefix for every stream and list Holdfast writes.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// `written` (default): a publish is acknowledged once its master has it. `replicated`: once
    /// a replica has it too (`WAIT 1`), so it survives the master's failover.
    #[serde(default)]
    pub durability: Durability,
    /// How long a `replicated` publish waits for a replica before it is refused with 503.
    #[serde(default = "default_replication_timeout")]
    pub replication_timeout: Duration,
}

/// `sentinel: { master: name, nodes: [redis://host:26379, …] }`.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SentinelBackplane {
    /// The name the sentinels monitor the master by.
    pub master: String,
    /// The sentinels' addresses.
    pub nodes: Vec<EnvString>,
}

/// When a publish counts as stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// The master has it (lost if the master dies before a replica copies it).
    #[default]
    Written,
    /// The master and at least one replica have it.
    Replicated,
}

/// Which servers the backplane's Redis is, once validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisServers<'a> {
    One(&'a str),
    Cluster(Vec<&'a str>),
    Sentinel {
        master: &'a str,
        nodes: Vec<&'a str>,
    },
}

impl RedisBackplane {
    /// One server at `url`, the other settings at their defaults.
    pub fn one(url: impl Into<String>) -> Self {
        Self {
            url: Some(EnvString(url.into())),
            cluster: None,
            sentinel: None,
            prefix: default_prefix(),
            durability: Durability::Written,
            replication_timeout: default_replication_timeout(),
        }
    }

    /// The servers; validation made sure exactly one form is given (`url` wins otherwise).
    pub fn servers(&self) -> RedisServers<'_> {
        if let Some(nodes) = &self.cluster {
            if self.url.is_none() {
                return RedisServers::Cluster(nodes.iter().map(EnvString::as_str).collect());
            }
        }
        if let Some(sentinel) = &self.sentinel {
            if self.url.is_none() {
                return RedisServers::Sentinel {
                    master: &sentinel.master,
                    nodes: sentinel.nodes.iter().map(EnvString::as_str).collect(),
                };
            }
        }
        RedisServers::One(self.url.as_ref().map_or("", EnvString::as_str))
    }
}

fn default_replication_timeout() -> Duration {
    Duration::from_secs(1)
}

#[cfg(test)]
mod tests {
    use crate::{load_str, validate, Backplane, RedisServers};
    use std::path::Path;

    fn errors(backplane: &str) -> Vec<String> {
        let text = format!("listen: 127.0.0.1:1\n{backplane}");
        let config = load_str(Path::new("c.yaml"), &text).unwrap_or_else(|e| panic!("{e}"));
        match validate(&config) {
            Ok(()) => vec![],
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn one_redis_a_cluster_or_a_sentinel_and_never_two() {
        assert_eq!(
            errors("backplane:\n  redis:\n    url: redis://a:6379\n    cluster: [redis://b:7000]\n"),
            ["c.yaml:5:5: backplane.redis.cluster: give `url` or `cluster`, not both: one Redis, a cluster and a Sentinel-watched master are different servers"]
        );
        assert_eq!(
            errors("backplane: { redis: { prefix: x } }"),
            ["c.yaml:2:14: backplane.redis: needs `url` (one Redis), `cluster` (Redis Cluster) or `sentinel`"]
        );
        assert_eq!(
            errors("backplane: { redis: { cluster: [], durability: replicated, replication_timeout: 0s } }"),
            [
                "c.yaml:2:23: backplane.redis.cluster: needs at least one node",
                "c.yaml:2:60: backplane.redis.replication_timeout: must be more than 0 (WAIT 0 would wait forever)",
            ]
        );
        assert_eq!(
            errors("backplane: { redis: { sentinel: { master: '', nodes: [http://s] } } }"),
            [
                "c.yaml:2:35: backplane.redis.sentinel.master: needs the master's name",
                "c.yaml:2:55: backplane.redis.sentinel.nodes[0]: must start with redis://, rediss:// or unix://",
            ]
        );
    }

    #[test]
    fn backplane_forms() {
        let redis = load_str(
            Path::new("c"),
            "backplane: { redis: { url: redis://127.0.0.1:6379 } }",
        )
        .expect("loads");
        let Backplane::Redis(redis) = redis.backplane else {
            panic!("redis")
        };
        assert_eq!(redis.servers(), RedisServers::One("redis://127.0.0.1:6379"));
        assert_eq!(redis.durability, crate::Durability::Written);
        let cluster = load_str(
            Path::new("c"),
            "backplane: { redis: { cluster: [redis://a:7000, redis://b:7001], durability: replicated, replication_timeout: 250ms } }",
        )
        .expect("loads");
        let Backplane::Redis(cluster) = cluster.backplane else {
            panic!("redis")
        };
        assert_eq!(
            cluster.servers(),
            RedisServers::Cluster(vec!["redis://a:7000", "redis://b:7001"])
        );
        assert_eq!(cluster.durability, crate::Durability::Replicated);
        assert_eq!(
            cluster.replication_timeout.get(),
            std::time::Duration::from_millis(250)
        );
        let sentinel = load_str(
            Path::new("c"),
            "backplane: { redis: { sentinel: { master: main, nodes: [redis://s:26379] } } }",
        )
        .expect("loads");
        let Backplane::Redis(sentinel) = sentinel.backplane else {
            panic!("redis")
        };
        assert_eq!(
            sentinel.servers(),
            RedisServers::Sentinel {
                master: "main",
                nodes: vec!["redis://s:26379"]
            }
        );
        let memory = load_str(Path::new("c"), "backplane: memory").expect("loads");
        assert!(matches!(memory.backplane, Backplane::Memory));
        let wrong = load_str(Path::new("c"), "backplane: { redsi: {} }")
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("did you mean `redis`"), "{wrong}");
        assert!(load_str(Path::new("c"), "backplane: disk").is_err());
    }
}

fn default_prefix() -> String {
    "holdfast:".to_owned()
}

/// The access log: where it goes and what it may contain.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    /// `stdout`, `stderr` or a file path (reopened on SIGUSR1, for log rotation).
    #[serde(default = "default_log_path")]
    pub path: String,
    /// Log the query string too (off by default: queries may carry tokens and personal data).
    #[serde(default)]
    pub query: bool,
    /// Request headers to include, by name.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Headers whose value is always written as `[redacted]`, on top of the built-in list
    /// (authorization, proxy-authorization, cookie, set-cookie, x-api-key).
    #[serde(default)]
    pub redact: Vec<String>,
}

fn default_log_path() -> String {
    "stdout".to_owned()
}

/// CORS for browser clients of long-poll routes.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Allowed origins; `*` allows any.
    #[serde(deserialize_with = "one_or_many")]
    #[schemars(with = "crate::schema::OneOrMany<String>")]
    pub origins: Vec<String>,
    #[serde(default)]
    pub credentials: bool,
}

/// The files a config was read from, and which file each route came from.
#[derive(Clone, Debug, Default)]
pub(crate) struct Origin {
    pub files: Vec<(PathBuf, Positions)>,
    /// For each merged route: its file and its index within that file.
    pub routes: Vec<(usize, usize)>,
}

impl Config {
    /// The file, line and column of a field path such as `routes[2].upstream`.
    pub fn locate(&self, path: &str) -> (PathBuf, Option<(usize, usize)>) {
        let origin = &self.origin;
        let Some((first, _)) = origin.files.first() else {
            return (PathBuf::new(), None);
        };
        if let Some(rest) = path.strip_prefix("routes[") {
            let (index, tail) = rest.split_once(']').unwrap_or((rest, ""));
            if let Some(&(file, local)) = index
                .parse::<usize>()
                .ok()
                .and_then(|i| origin.routes.get(i))
            {
                let (name, positions) = &origin.files[file];
                return (
                    name.clone(),
                    positions.find(&format!("routes[{local}]{tail}")),
                );
            }
        }
        origin
            .files
            .iter()
            .find_map(|(name, positions)| positions.find(path).map(|at| (name.clone(), Some(at))))
            .filter(|(_, at)| at.is_some())
            .unwrap_or((first.clone(), None))
    }

    /// The files this config was read from (watched for reload).
    pub fn files(&self) -> impl Iterator<Item = &std::path::Path> {
        self.origin.files.iter().map(|(path, _)| path.as_path())
    }

    /// Turns compile-step errors into placed errors.
    pub fn place(&self, errors: Vec<crate::FieldError>) -> crate::ConfigErrors {
        crate::ConfigErrors(
            errors
                .into_iter()
                .map(|error| {
                    let (file, at) = self.locate(&error.path);
                    crate::ConfigError {
                        file,
                        line: at.map(|(line, _)| line),
                        column: at.map(|(_, column)| column),
                        path: error.path,
                        message: error.message,
                    }
                })
                .collect(),
        )
    }
}

/// Accepts `x` or `[x, y]` for a list.
pub(crate) fn one_or_many<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::Error;
    // Through a Value rather than `#[serde(untagged)]`, whose error says only "did not match".
    match serde_yaml::Value::deserialize(deserializer)? {
        serde_yaml::Value::Sequence(items) => items
            .into_iter()
            .map(|item| serde_yaml::from_value(item).map_err(D::Error::custom))
            .collect(),
        one => serde_yaml::from_value(one)
            .map(|one| vec![one])
            .map_err(D::Error::custom),
    }
}
