//! Metrics, the access log and rate-limited client-error logging.

pub mod access_log;
pub mod client_log;
pub mod labels;
pub mod metrics;
