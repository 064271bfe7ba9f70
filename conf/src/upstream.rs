//! Upstream pools: targets, timeouts, retries and active health checks.

use crate::Duration;
use serde::Deserialize;
use std::path::PathBuf;

/// A named pool of targets that routes proxy to.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `host:port` of each target; requests go round robin to the healthy ones. `https://host:port`
    /// turns TLS on for the pool.
    pub targets: Vec<String>,
    /// Speak TLS to the targets (also implied by `https://` targets). Certificates are verified
    /// against the system roots and `server.ca_file`.
    #[serde(default)]
    pub tls: bool,
    /// The name sent in SNI and checked against the certificate (default: the first target's
    /// host, when it is a name).
    #[serde(default)]
    pub sni: Option<String>,
    /// Verify the upstream's certificate and host name. `false` is for tests only: Holdfast warns
    /// loudly at load.
    #[serde(default = "verify_by_default")]
    pub verify: bool,
    /// CA certificates (PEM) that this upstream's certificate must chain to, instead of the
    /// system roots and `server.ca_file`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain (PEM) presented to the upstream (mTLS); needs `client_key`.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// The private key (PEM) of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Speak HTTP/2 to the targets: offered by ALPN over TLS (HTTP/1.1 stays the fallback),
    /// prior knowledge (h2c) on cleartext. Requests then share connections as streams.
    #[serde(default)]
    pub http2: bool,
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

fn verify_by_default() -> bool {
    true
}

/// A target without its scheme, and whether the scheme asked for TLS.
pub fn split_scheme(target: &str) -> (&str, bool) {
    match target.split_once("://") {
        Some(("https", rest)) => (rest, true),
        Some((_, rest)) => (rest, false),
        None => (target, false),
    }
}

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

    /// Whether the pool speaks TLS: `tls: true` or any `https://` target.
    pub fn uses_tls(&self) -> bool {
        self.tls || self.targets.iter().any(|target| split_scheme(target).1)
    }

    /// The SNI name: `sni`, else the first target's host when it is a name, not an address.
    pub fn sni_name(&self) -> String {
        if let Some(sni) = &self.sni {
            return sni.clone();
        }
        let host = self
            .targets
            .first()
            .map(|target| split_scheme(target).0)
            .and_then(|target| target.rsplit_once(':').map(|(host, _)| host))
            .unwrap_or_default();
        if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
            String::new()
        } else {
            host.to_owned()
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(yaml: &str) -> Upstream {
        serde_yaml::from_str(yaml).expect("upstream")
    }

    #[test]
    fn https_targets_turn_tls_on_and_name_the_sni() {
        let secure = upstream("targets: [https://api.example.com:443]");
        assert!(secure.uses_tls());
        assert_eq!(secure.sni_name(), "api.example.com");
        assert!(secure.verify);
        let by_address = upstream("{ targets: [10.0.0.1:8443], tls: true }");
        assert!(by_address.uses_tls());
        assert_eq!(by_address.sni_name(), "", "no SNI for an address");
        let named = upstream("{ targets: [10.0.0.1:8443], tls: true, sni: internal.example }");
        assert_eq!(named.sni_name(), "internal.example");
        assert!(!upstream("targets: [http://127.0.0.1:80]").uses_tls());
        assert_eq!(split_scheme("https://h:1"), ("h:1", true));
    }
}
