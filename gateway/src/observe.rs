//! Metrics, the access log, rate-limited client-error logging and OpenTelemetry tracing.

pub mod access_log;
pub mod client_log;
pub mod labels;
pub mod metrics;
pub mod trace;
