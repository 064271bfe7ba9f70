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
/// Written `backplane: memory` or `backplane: { redis: { url: … } }`.
#[derive(Clone, Debug, Default)]
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

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisBackplane {
    /// `redis://host:port/db`; may be `${REDIS_URL}`.
    pub url: EnvString,
    /// Key prefix for every stream and list Holdfast writes.
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

#[cfg(test)]
mod tests {
    use crate::{load_str, Backplane};
    use std::path::Path;

    #[test]
    fn backplane_forms() {
        let redis = load_str(
            Path::new("c"),
            "backplane: { redis: { url: redis://127.0.0.1:6379 } }",
        )
        .expect("loads");
        assert!(
            matches!(redis.backplane, Backplane::Redis(ref r) if r.url.as_str() == "redis://127.0.0.1:6379")
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
