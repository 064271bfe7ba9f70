//! Keeps every JWKS provider's key set fresh from a background task: fetched at start, refreshed
//! on its schedule (honouring `Cache-Control: max-age`), refetched when a token names an unknown
//! `kid` (rate-limited by the provider's cooldown), never on the request path. A failed fetch or
//! a garbage document keeps the last good keys.

use crate::core::runtime::Runtime;
use crate::observe::metrics::METRICS;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub struct JwksRefresher {
    pub runtime: Arc<Runtime>,
}

#[async_trait]
impl BackgroundService for JwksRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let state = self.runtime.state.load_full();
            let now = SystemTime::now();
            let mut next = now + Duration::from_secs(60);
            for jwks in state.auth.jwks() {
                if jwks.begin_fetch(now).is_some() {
                    tokio::spawn(fetch(jwks.clone()));
                }
                next = next.min(jwks.next_due());
            }
            // Look again at the earliest due time, on a wake-up, or every second at most late
            // (a fetch in flight finishes and reschedules meanwhile).
            let wait = next
                .duration_since(now)
                .unwrap_or(Duration::ZERO)
                .clamp(Duration::from_millis(50), Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = crate::core::runtime::JWKS_WAKE.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

async fn fetch(jwks: Arc<auth::Jwks>) {
    let provider = jwks.provider().to_owned();
    let outcome =
        match crate::core::outbound::get(jwks.url(), jwks.timeout(), auth::MAX_JWKS_BYTES).await {
            Ok(answer) if answer.status == 200 => {
                let max_age = answer
                    .headers
                    .get(http::header::CACHE_CONTROL)
                    .and_then(|v| v.to_str().ok())
                    .and_then(auth::parse_max_age);
                jwks.apply_jwks(&answer.body, max_age, SystemTime::now())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Ok(answer) => {
                jwks.record_fetch_failure(SystemTime::now());
                Err(format!("status {}", answer.status))
            }
            Err(error) => {
                jwks.record_fetch_failure(SystemTime::now());
                Err(error)
            }
        };
    match outcome {
        Ok(()) => {
            METRICS
                .jwks_refresh
                .with_label_values(&[&provider, "ok"])
                .inc();
            let at = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            METRICS
                .jwks_last_success
                .with_label_values(&[&provider])
                .set(at.as_secs_f64());
            tracing::info!(provider, keys = jwks.key_count(), "JWKS refreshed");
        }
        Err(error) => {
            METRICS
                .jwks_refresh
                .with_label_values(&[&provider, "error"])
                .inc();
            tracing::warn!(provider, %error, "JWKS refresh failed; the last good keys stay in use");
        }
    }
}
