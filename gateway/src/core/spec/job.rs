//! A compiled `job` action.

use crate::core::spec::call::CallOptions;
use crate::core::spec::llm::LlmSpec;
use crate::core::upstream::Pool;
use std::sync::Arc;
use std::time::Duration;

/// A compiled `job` action.
pub struct JobSpec {
    pub work: Work,
    /// The route's prefix without a trailing `/`.
    pub prefix: String,
    pub ttl: Duration,
    pub hold: Duration,
    pub max_running: usize,
    pub max_result: usize,
}

/// What a job does in the background.
pub enum Work {
    /// Calls an upstream with the client's request.
    Upstream {
        pool: Arc<Pool>,
        options: CallOptions,
    },
    /// Asks the route's models (an `llm` route with a `job:`), with a whole answer.
    Llm(Arc<LlmSpec>),
}

impl JobSpec {
    pub fn compile(route: &conf::Route, job: &conf::Job, work: Work) -> Self {
        let prefix = route
            .matcher
            .prefix
            .as_deref()
            .unwrap_or("/")
            .trim_end_matches('/')
            .to_owned();
        Self {
            work,
            prefix,
            ttl: job.ttl.get(),
            hold: job.timeout.get(),
            max_running: job.max_running,
            max_result: job.max_result.as_usize(),
        }
    }

    /// The work of a job that calls `pool`, with the route's call options.
    pub fn upstream(route: &conf::Route, pool: Arc<Pool>) -> Work {
        Work::Upstream {
            pool,
            options: CallOptions::compile(route),
        }
    }
}
