//! A compiled `job` action.

use crate::core::spec::call::CallOptions;
use crate::core::upstream::Pool;
use std::sync::Arc;
use std::time::Duration;

/// A compiled `job` action.
pub struct JobSpec {
    pub pool: Arc<Pool>,
    /// The route's prefix without a trailing `/`.
    pub prefix: String,
    pub ttl: Duration,
    pub hold: Duration,
    pub max_running: usize,
    pub max_result: usize,
    pub options: CallOptions,
}

impl JobSpec {
    pub fn compile(route: &conf::Route, job: &conf::Job, pool: Arc<Pool>) -> Self {
        let prefix = route
            .matcher
            .prefix
            .as_deref()
            .unwrap_or("/")
            .trim_end_matches('/')
            .to_owned();
        Self {
            pool,
            prefix,
            ttl: job.ttl.get(),
            hold: job.timeout.get(),
            max_running: job.max_running,
            max_result: job.max_result.as_usize(),
            options: CallOptions::compile(route),
        }
    }
}
