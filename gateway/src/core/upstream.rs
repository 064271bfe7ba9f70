//! Upstream pools: round-robin over a named list of targets (pingora-load-balancing), active
//! health checks, the peer options that carry each upstream's timeouts, and target choice that
//! skips targets a request already failed to connect to.

pub mod exchange;

use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::{HttpPeer, PeerOptions};
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::LoadBalancer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// One named upstream pool.
pub struct Pool {
    pub name: Arc<str>,
    balancer: LoadBalancer<RoundRobin>,
    pub health_interval: Option<Duration>,
    connect_timeout: Duration,
    read_timeout: Duration,
    write_timeout: Duration,
    idle_timeout: Option<Duration>,
    /// Connect failures retried on another target.
    pub retries: usize,
    targets: usize,
    tls: TlsTo,
    http2: bool,
}

/// How a pool speaks TLS to its targets, shared by requests and health checks.
struct TlsTo {
    enabled: bool,
    sni: String,
    verify: bool,
    /// Trusted instead of the system roots, when the upstream names its own CA file.
    ca: Option<Arc<pingora_core::protocols::tls::CaType>>,
    client_cert: Option<Arc<pingora_core::utils::tls::CertKey>>,
}

impl TlsTo {
    fn apply(&self, options: &mut PeerOptions) {
        options.verify_cert = self.verify;
        options.verify_hostname = self.verify && !self.sni.is_empty();
        options.ca = self.ca.clone();
    }
}

/// HTTP/2 streams one upstream connection carries at once before another is opened.
const UPSTREAM_H2_STREAMS: usize = 100;

impl Pool {
    /// Builds the pool; resolving target names and reading certificate files are the only I/O.
    /// An error names the field at fault.
    pub fn build(name: &str, upstream: &conf::Upstream) -> Result<Self, (&'static str, String)> {
        let targets = upstream
            .targets
            .iter()
            .map(|target| conf::split_scheme(target).0);
        let mut balancer = LoadBalancer::<RoundRobin>::try_from_iter(targets)
            .map_err(|error| ("targets", format!("cannot resolve targets: {error}")))?;
        let ca = upstream
            .ca_file
            .as_deref()
            .map(crate::core::tls::ca_bundle)
            .transpose()
            .map_err(|message| ("ca_file", message))?;
        let client_cert = match (&upstream.client_cert, &upstream.client_key) {
            (Some(cert), Some(key)) => Some(
                crate::core::tls::client_cert_key(cert, key)
                    .map_err(|message| ("client_cert", message))?,
            ),
            _ => None,
        };
        let tls = TlsTo {
            enabled: upstream.uses_tls(),
            sni: upstream.sni_name(),
            verify: upstream.verify,
            ca,
            client_cert,
        };
        if tls.enabled && !upstream.verify {
            tracing::warn!(
                upstream = name,
                "TLS certificate verification is OFF for this upstream: anyone on the path can impersonate it"
            );
        }
        let health_interval = upstream.health_check.as_ref().map(|check| {
            balancer.set_health_check(health_check(check, &tls));
            check.interval.get()
        });
        balancer.parallel_health_check = true;
        Ok(Self {
            name: Arc::from(name),
            balancer,
            health_interval,
            connect_timeout: upstream.connect_timeout.get(),
            read_timeout: upstream.effective_read_timeout().get(),
            write_timeout: upstream.effective_write_timeout().get(),
            idle_timeout: upstream.idle_timeout.map(conf::Duration::get),
            retries: upstream.effective_retries(),
            targets: upstream.targets.len(),
            tls,
            http2: upstream.http2,
        })
    }

    /// The next healthy target by round robin that this request has not failed on yet; if every
    /// healthy one failed, any target not yet tried.
    pub fn select(&self, tried: &[SocketAddr]) -> Option<SocketAddr> {
        let untried = |addr: &SocketAddr| !tried.contains(addr);
        let healthy = self
            .balancer
            .select_with(b"", self.targets * 2, |backend, healthy| {
                healthy && backend.addr.as_inet().is_some_and(&untried)
            });
        let backend = healthy.or_else(|| {
            self.balancer
                .select_with(b"", self.targets * 2, |backend, _| {
                    backend.addr.as_inet().is_some_and(&untried)
                })
        })?;
        backend.addr.as_inet().copied()
    }

    /// The next attempt of a request that already tried `tried` (proxied or called): a target
    /// by [`Pool::select`], recorded in `tried`, and its peer. `None` when no target is left.
    pub fn next_attempt(&self, tried: &mut Vec<SocketAddr>) -> Option<HttpPeer> {
        let addr = self.select(tried)?;
        tried.push(addr);
        Some(self.peer(addr))
    }

    /// Whether a request whose last connect failed, after trying `tried`, may go to another
    /// target. A failed connect sent nothing, so any request may (the upstream's `retries`).
    pub fn may_retry_connect(&self, tried: &[SocketAddr]) -> bool {
        tried.len() <= self.retries
    }

    /// The peer for one attempt, with this upstream's timeouts.
    pub fn peer(&self, addr: SocketAddr) -> HttpPeer {
        let mut peer = HttpPeer::new(addr, self.tls.enabled, self.tls.sni.clone());
        let options = &mut peer.options;
        self.tls.apply(options);
        options.connection_timeout = Some(self.connect_timeout);
        options.read_timeout = Some(self.read_timeout);
        options.write_timeout = Some(self.write_timeout);
        options.idle_timeout = self.idle_timeout;
        if self.http2 {
            // Over TLS, ALPN lets the target fall back to HTTP/1.1; cleartext means h2c by prior
            // knowledge, as Pingora speaks it to a plaintext peer whose only version is 2.
            options.alpn = if self.tls.enabled {
                ALPN::H2H1
            } else {
                ALPN::H2
            };
            options.max_h2_streams = UPSTREAM_H2_STREAMS;
        }
        peer.client_cert_key = self.tls.client_cert.clone();
        peer
    }

    pub async fn run_health_check(&self) {
        self.balancer.backends().run_health_check(true).await;
    }

    pub fn healthy_targets(&self) -> usize {
        let backends = self.balancer.backends();
        backends
            .get_backend()
            .iter()
            .filter(|b| backends.ready(b))
            .count()
    }
}

fn health_check(check: &conf::HealthCheck, tls: &TlsTo) -> Box<dyn HealthCheck + Send + Sync> {
    let sni = tls.sni.as_str();
    match &check.path {
        Some(path) => {
            let host = if sni.is_empty() { "localhost" } else { sni };
            let mut http = HttpHealthCheck::new(host, tls.enabled);
            tls.apply(&mut http.peer_template.options);
            http.peer_template.client_cert_key = tls.client_cert.clone();
            if let Ok(uri) = path.parse() {
                http.req.set_uri(uri);
            }
            http.consecutive_success = check.threshold;
            http.consecutive_failure = check.threshold;
            http.peer_template.options.connection_timeout = Some(check.timeout.get());
            http.peer_template.options.read_timeout = Some(check.timeout.get());
            Box::new(http)
        }
        None => {
            let mut tcp = if tls.enabled {
                TcpHealthCheck::new_tls(sni)
            } else {
                TcpHealthCheck::new()
            };
            tls.apply(&mut tcp.peer_template.options);
            tcp.consecutive_success = check.threshold;
            tcp.consecutive_failure = check.threshold;
            tcp.peer_template.options.connection_timeout = Some(check.timeout.get());
            tcp
        }
    }
}
