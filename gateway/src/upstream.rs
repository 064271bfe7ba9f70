//! Upstream pools: round-robin over a named list of targets (pingora-load-balancing), active
//! health checks, the peer options that carry each upstream's timeouts, and target choice that
//! skips targets a request already failed to connect to.

use pingora_core::upstreams::peer::HttpPeer;
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
    tls: bool,
    sni: String,
    verify: bool,
}

impl Pool {
    /// Builds the pool; target names are resolved here (the only I/O).
    pub fn build(name: &str, upstream: &conf::Upstream) -> Result<Self, String> {
        let targets = upstream
            .targets
            .iter()
            .map(|target| conf::split_scheme(target).0);
        let mut balancer = LoadBalancer::<RoundRobin>::try_from_iter(targets)
            .map_err(|error| format!("cannot resolve targets: {error}"))?;
        let (tls, sni) = (upstream.uses_tls(), upstream.sni_name());
        if tls && !upstream.verify {
            tracing::warn!(
                upstream = name,
                "TLS certificate verification is OFF for this upstream: anyone on the path can impersonate it"
            );
        }
        let health_interval = upstream.health_check.as_ref().map(|check| {
            balancer.set_health_check(health_check(check, tls, &sni));
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
            sni,
            verify: upstream.verify,
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

    /// The peer for one attempt, with this upstream's timeouts.
    pub fn peer(&self, addr: SocketAddr) -> HttpPeer {
        let mut peer = HttpPeer::new(addr, self.tls, self.sni.clone());
        let options = &mut peer.options;
        options.verify_cert = self.verify;
        options.verify_hostname = self.verify && !self.sni.is_empty();
        options.connection_timeout = Some(self.connect_timeout);
        options.read_timeout = Some(self.read_timeout);
        options.write_timeout = Some(self.write_timeout);
        options.idle_timeout = self.idle_timeout;
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

fn health_check(
    check: &conf::HealthCheck,
    tls: bool,
    sni: &str,
) -> Box<dyn HealthCheck + Send + Sync> {
    match &check.path {
        Some(path) => {
            let host = if sni.is_empty() { "localhost" } else { sni };
            let mut http = HttpHealthCheck::new(host, tls);
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
            let mut tcp = if tls {
                TcpHealthCheck::new_tls(sni)
            } else {
                TcpHealthCheck::new()
            };
            tcp.consecutive_success = check.threshold;
            tcp.consecutive_failure = check.threshold;
            tcp.peer_template.options.connection_timeout = Some(check.timeout.get());
            tcp
        }
    }
}
