//! Reloading the configuration on SIGHUP or when its files change: load, validate and compile
//! the new config beside the running one and swap it in atomically; an invalid config is refused
//! and the running one keeps serving. Also turns Pingora's shutdown signal into the gateway's.

use crate::core::runtime::Runtime;
use crate::core::state;
use crate::observe::metrics::METRICS;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::signal::unix::{signal, Signal, SignalKind};

pub struct Reloader {
    pub runtime: Arc<Runtime>,
    /// After SIGTERM, the longest wait for in-flight requests before the process exits.
    pub grace: Duration,
}

/// What identifies the config files' content cheaply: each file's name, size and mtime.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// The config files, and the certificate and key files the running config names (a renewed
/// certificate is picked up like an edited route).
fn fingerprint(path: &Path, config: &conf::Config) -> Fingerprint {
    let mut files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default()
    } else {
        vec![path.to_owned()]
    };
    for tls in config
        .listen
        .iter()
        .filter_map(|listener| listener.tls.as_ref())
    {
        for certificate in &tls.certificates {
            files.push(certificate.cert.clone());
            files.push(certificate.key.clone());
        }
    }
    let mut prints: Fingerprint = files
        .into_iter()
        .filter_map(|file| {
            let meta = std::fs::metadata(&file).ok()?;
            Some((file, meta.len(), meta.modified().ok()))
        })
        .collect();
    prints.sort();
    prints
}

impl Reloader {
    /// Loads the config again and swaps it in if it is valid.
    pub async fn reload(&self, why: &str) {
        let path = self.runtime.config_path.clone();
        let previous = self.runtime.state.load_full();
        let loaded = tokio::task::spawn_blocking(move || state::load(&path, Some(&previous))).await;
        match loaded {
            Ok(Ok(new_state)) => {
                let old = self.runtime.state.load();
                if old.config.backplane != new_state.config.backplane {
                    // The hub keeps the backplane it started with; a new one that does not
                    // answer would still be wrong to accept, since a restart would then fail.
                    if let conf::Backplane::Redis(redis) = &new_state.config.backplane {
                        if let Err(error) = crate::backplane::Link::check(redis).await {
                            METRICS.config_reloads.with_label_values(&["error"]).inc();
                            tracing::error!(
                                trigger = why,
                                "configuration reload refused; the running configuration stays:\nbackplane.redis: {error}"
                            );
                            return;
                        }
                    }
                    tracing::warn!("the backplane changes only on restart; the rest of the new configuration applies now");
                }
                // Certificates may change; what each address speaks may not.
                let shape = |config: &conf::Config| -> Vec<_> {
                    config
                        .listen
                        .iter()
                        .map(|l| (l.address.clone(), l.tls.is_some(), l.h2c, l.http2))
                        .collect()
                };
                if shape(&old.config) != shape(&new_state.config)
                    || old.config.admin != new_state.config.admin
                {
                    tracing::warn!("listeners (addresses, TLS on or off, h2c) and the admin address change only on restart; the new routes and certificates apply now");
                }
                if old.config.tracing != new_state.config.tracing {
                    tracing::warn!("the tracing section changes only on restart; the rest of the new configuration applies now");
                }
                self.runtime.state.store(Arc::new(new_state));
                METRICS.config_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(trigger = why, "configuration reloaded");
            }
            Ok(Err(errors)) => {
                METRICS.config_reloads.with_label_values(&["error"]).inc();
                tracing::error!(
                    trigger = why,
                    "configuration reload refused; the running configuration stays:\n{errors}"
                );
            }
            Err(error) => {
                METRICS.config_reloads.with_label_values(&["error"]).inc();
                tracing::error!(trigger = why, %error, "configuration reload failed");
            }
        }
    }
}

impl Reloader {
    /// Pingora sleeps its whole grace period even when idle (pingora#719). Held polls are
    /// answered the moment shutdown begins, so exit as soon as nothing is in flight.
    async fn exit_when_idle(&self) {
        self.runtime.begin_shutdown();
        let started = tokio::time::Instant::now();
        let deadline = started + self.grace;
        let busy = || {
            crate::core::runtime::in_flight() > 0 || crate::core::runtime::open_connections() > 0
        };
        while busy() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A running job is no request, and its result would be lost: let it finish, within
        // the longest job timeout (with the Redis backplane, the process that took over serves
        // its result).
        let jobs_deadline = started + longest_job(&self.runtime.state.load());
        while crate::actions::jobs::running() > 0 && tokio::time::Instant::now() < jobs_deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!(
            in_flight = crate::core::runtime::in_flight(),
            jobs_running = crate::actions::jobs::running(),
            "shutdown complete"
        );
        self.runtime.hub.stop();
        // The spans of the last requests, which their batch's delay still held.
        let flushed = tokio::task::spawn_blocking(|| {
            crate::observe::trace::flush(Duration::from_secs(2));
        });
        let _ = flushed.await;
        std::process::exit(0);
    }
}

/// The longest time a job of the running config may take.
fn longest_job(state: &crate::core::state::State) -> Duration {
    state
        .routes
        .routes()
        .iter()
        .filter_map(|route| match &route.action {
            crate::core::routes::Action::Job(spec) => Some(spec.hold),
            _ => None,
        })
        .max()
        .unwrap_or(Duration::ZERO)
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Both signals would kill the process by default: handle them before declaring ready.
        let mut hangup = listen(SignalKind::hangup(), "SIGHUP");
        let mut user1 = listen(SignalKind::user_defined1(), "SIGUSR1");
        self.runtime.mark_signals_ready();
        let interval = self.runtime.state.load().config.server.watch_interval.get();
        let mut ticker = tokio::time::interval(if interval.is_zero() {
            Duration::from_secs(3600)
        } else {
            interval
        });
        let print = || fingerprint(&self.runtime.config_path, &self.runtime.state.load().config);
        let mut last = print();
        loop {
            tokio::select! {
                _ = received(&mut hangup) => {
                    self.reload("SIGHUP").await;
                    last = print();
                }
                _ = received(&mut user1) => crate::observe::access_log::reopen(),
                _ = ticker.tick(), if !interval.is_zero() => {
                    if print() != last {
                        self.reload("file change").await;
                        last = print();
                    }
                }
                _ = shutdown.changed() => {
                    self.exit_when_idle().await;
                    return;
                }
            }
        }
    }
}

fn listen(kind: SignalKind, name: &str) -> Option<Signal> {
    signal(kind)
        .map_err(|error| tracing::error!(%error, "cannot listen for {name}"))
        .ok()
}

/// The next delivery of `signal` (never, when it could not be listened for).
async fn received(signal: &mut Option<Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Runs each upstream's active health checks at its interval, on whatever state is current.
pub struct HealthChecks {
    pub runtime: Arc<Runtime>,
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut due: std::collections::HashMap<usize, tokio::time::Instant> = Default::default();
        let mut ticker = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => return,
            }
            let state = self.runtime.state.load_full();
            let now = tokio::time::Instant::now();
            for pool in &state.pools {
                let Some(interval) = pool.health_interval else {
                    continue;
                };
                // Pools are rebuilt on reload: key by address so a new pool is checked at once.
                let key = Arc::as_ptr(pool) as usize;
                if due.get(&key).is_some_and(|at| *at > now) {
                    continue;
                }
                due.insert(key, now + interval);
                let pool = pool.clone();
                tokio::spawn(async move {
                    pool.run_health_check().await;
                    METRICS
                        .upstream_healthy
                        .with_label_values(&[&*pool.name])
                        .set(i64::try_from(pool.healthy_targets()).unwrap_or(i64::MAX));
                });
            }
            due.retain(|key, _| {
                state
                    .pools
                    .iter()
                    .any(|pool| Arc::as_ptr(pool) as usize == *key)
            });
        }
    }
}
