//! Upstream pools: targets, timeouts, retries and active health checks.

use crate::Duration;
use serde::Deserialize;

/// A named pool of targets that routes proxy to.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `host:port` of each target; requests go round robin to the healthy ones.
    pub targets: Vec<String>,
    /// Shorthand for `read_timeout` and `write_timeout` together.
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// Time to establish a TCP connection to one target; a failure tries the next target.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// Longest wait for any read from the upstream (the response header, then each body chunk);
    /// past it: 504.
    #[serde(default)]
    pub read_timeout: Option<Duration>,
    /// Longest wait for any write of the request to the upstream.
    #[serde(default)]
    pub write_timeout: Option<Duration>,
    /// How many other targets to try when connecting fails (default: every other target, at most 2).
    #[serde(default)]
    pub retries: Option<usize>,
    /// How long an idle pooled connection to a target is kept.
    #[serde(default)]
    pub idle_timeout: Option<Duration>,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}

impl Upstream {
    pub fn effective_read_timeout(&self) -> Duration {
        self.read_timeout
            .or(self.timeout)
            .unwrap_or(DEFAULT_TIMEOUT)
    }

    pub fn effective_write_timeout(&self) -> Duration {
        self.write_timeout
            .or(self.timeout)
            .unwrap_or(DEFAULT_TIMEOUT)
    }

    pub fn effective_retries(&self) -> usize {
        self.retries
            .unwrap_or_else(|| self.targets.len().saturating_sub(1).min(2))
    }
}

/// Active health checks: an HTTP `GET path` (2xx is healthy) or, without a path, a TCP connect.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default = "default_interval")]
    pub interval: Duration,
    #[serde(default = "default_check_timeout")]
    pub timeout: Duration,
    /// Consecutive results needed to flip a target's state.
    #[serde(default = "default_threshold")]
    pub threshold: usize,
}

fn default_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_check_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_threshold() -> usize {
    1
}
