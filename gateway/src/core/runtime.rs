//! What every part of the running gateway shares: the swappable compiled state, the long-poll
//! hub, the instance-wide cap on held polls, the shutdown signal and readiness.

use crate::core::state::State;
use crate::hub::Hub;
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::watch;

/// Poked by the request path when a token named an unknown `kid`; the JWKS refresher waits on
/// it (and refetches only if the provider's cooldown allows).
pub static JWKS_WAKE: std::sync::LazyLock<tokio::sync::Notify> =
    std::sync::LazyLock::new(tokio::sync::Notify::new);

pub struct Runtime {
    pub state: ArcSwap<State>,
    pub config_path: PathBuf,
    pub hub: Hub,
    /// Fixed at start, like the listeners.
    pub access_log: Option<crate::observe::access_log::AccessLog>,
    /// Channel settings fixed at start (the hub's buffers are sized by them).
    pub channels: conf::Channels,
    /// Rate-limit counts, kept across reloads.
    pub limiter: std::sync::Arc<crate::limits::Limiter>,
    held: AtomicUsize,
    /// Becomes true once on SIGTERM; held polls answer at once when it does.
    shutdown: watch::Sender<bool>,
    /// Set once the signal handlers are installed, so a SIGHUP can no longer kill the process.
    signals_ready: AtomicBool,
}

impl Runtime {
    pub fn new(
        state: State,
        config_path: PathBuf,
        hub: Hub,
        access_log: Option<crate::observe::access_log::AccessLog>,
    ) -> Self {
        Self {
            access_log,
            channels: state.config.channels.clone(),
            limiter: std::sync::Arc::new(crate::limits::Limiter::start(&state.config)),
            state: ArcSwap::from_pointee(state),
            config_path,
            hub,
            held: AtomicUsize::new(0),
            shutdown: watch::channel(false).0,
            signals_ready: AtomicBool::new(false),
        }
    }

    /// Counts one more held poll against the instance cap; false when the cap is reached.
    pub fn acquire_held(&self) -> bool {
        let max = self.channels.max_held;
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |held| {
                (held < max).then_some(held + 1)
            })
            .is_ok()
    }

    pub fn release_held(&self) {
        self.held.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// A receiver that changes when shutdown begins.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn mark_signals_ready(&self) {
        self.signals_ready.store(true, Ordering::Release);
    }

    /// Ready for traffic: signal handlers in place, backplane reachable, not shutting down.
    pub fn ready(&self) -> Result<(), &'static str> {
        if !self.signals_ready.load(Ordering::Acquire) {
            return Err("starting");
        }
        if self.shutting_down() {
            return Err("shutting down");
        }
        if !self.hub.is_up() {
            return Err("the backplane is unreachable");
        }
        Ok(())
    }
}

/// Requests between their first phase and their last.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

pub fn in_flight() -> usize {
    IN_FLIGHT.load(Ordering::Relaxed)
}

/// Counts one request as in flight for as long as it lives.
pub struct InFlight(());

impl InFlight {
    pub fn start() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// HTTP/1 connections open (TLS ones from their handshake on). Shutdown waits for them as for
/// requests: idle keep-alive connections close at once, and a connection accepted just before
/// shutdown is still served.
static OPEN_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

pub fn open_connections() -> usize {
    OPEN_CONNECTIONS.load(Ordering::Relaxed)
}

/// Counts one connection as open for as long as it lives.
pub struct OpenConnection(());

impl OpenConnection {
    pub fn start() -> Self {
        OPEN_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        Self(())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        OPEN_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
    }
}
