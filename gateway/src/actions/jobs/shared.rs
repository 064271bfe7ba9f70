//! Jobs shared between instances through Redis (`backplane: redis`): the instance that runs a
//! job mirrors its state and result into two keys, so a poll that lands on another instance finds
//! it there. `<prefix>job:<id>` holds the metadata (route, owner, state, and for a finished job
//! its status, content type and expiry); `<prefix>job:<id>:body` holds the result's bytes. Both
//! expire on their own: a finished job is kept for its `ttl`, then remembered as expired (410)
//! for another `ttl`. A poll on another instance reads the keys, and while the job runs it reads
//! again with a short back-off (jobs are few and slow; one Redis GET every 100–500 ms per held
//! poll is cheap, and needs no wake-up path of its own).

use super::store::JobResult;
use crate::core::kv;
use crate::problem::Problem;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A job's state as the other instances see it.
#[derive(Serialize, Deserialize)]
struct Meta {
    route: String,
    owner: Option<String>,
    /// `running`, `done` (an upstream's answer), `reply` (the gateway's own) or `failed`.
    state: String,
    status: u16,
    content_type: Option<String>,
    /// For a failed job: the problem's slug and detail.
    kind: Option<String>,
    detail: Option<String>,
    /// Unix milliseconds after which the result is gone (410).
    expires_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

async fn store(key: String, value: Vec<u8>, keep: Duration) {
    let Some(kv) = kv::get() else { return };
    if let Err(error) = kv.put(&key, &value, keep).await {
        tracing::warn!(%error, "cannot mirror a job into Redis; it can be polled on its own instance only");
    }
}

/// Mirrors a job that just started (kept until it may finish plus twice its ttl).
pub async fn started(
    id: &str,
    route: &str,
    owner: Option<&str>,
    runs_for: Duration,
    ttl: Duration,
) {
    let meta = Meta {
        route: route.to_owned(),
        owner: owner.map(str::to_owned),
        state: "running".to_owned(),
        status: 0,
        content_type: None,
        kind: None,
        detail: None,
        expires_ms: 0,
    };
    store(
        format!("job:{id}"),
        serde_json::to_vec(&meta).unwrap_or_default(),
        runs_for + ttl * 2,
    )
    .await;
}

/// Mirrors a finished job's result.
pub async fn finished(
    id: &str,
    route: &str,
    owner: Option<&str>,
    result: &JobResult,
    ttl: Duration,
) {
    if kv::get().is_none() {
        return;
    }
    let (state, status, content_type, kind, detail, body) = match result {
        JobResult::Answer(answer) | JobResult::Reply(answer) => (
            if matches!(result, JobResult::Reply(_)) {
                "reply"
            } else {
                "done"
            },
            answer.status,
            answer.content_type().map(str::to_owned),
            None,
            None,
            answer.body.clone(),
        ),
        JobResult::Failed(problem) => (
            "failed",
            problem.status,
            None,
            Some(problem.kind.to_owned()),
            Some(problem.detail.clone()),
            Bytes::new(),
        ),
    };
    let meta = Meta {
        route: route.to_owned(),
        owner: owner.map(str::to_owned),
        state: state.to_owned(),
        status,
        content_type,
        kind,
        detail,
        expires_ms: now_ms() + millis(ttl),
    };
    store(format!("job:{id}:body"), body.to_vec(), ttl).await;
    store(
        format!("job:{id}"),
        serde_json::to_vec(&meta).unwrap_or_default(),
        ttl * 2,
    )
    .await;
}

/// What another instance knows of a job.
pub enum Remote {
    /// Redis is not the backplane, or has no such job for this route and owner.
    Unknown,
    Running,
    Expired,
    Done(JobResult),
}

/// Looks job `id` up in Redis (for a poll that landed on an instance that did not start it).
pub async fn lookup(id: &str, route: &str, owner: Option<&str>) -> Remote {
    let Some(kv) = kv::get() else {
        return Remote::Unknown;
    };
    let meta = kv.fetch(&format!("job:{id}")).await;
    let Some(meta) = meta.and_then(|bytes| serde_json::from_slice::<Meta>(&bytes).ok()) else {
        return Remote::Unknown;
    };
    if meta.route != route || meta.owner.as_deref() != owner {
        return Remote::Unknown;
    }
    if meta.state == "running" {
        return Remote::Running;
    }
    if meta.expires_ms <= now_ms() {
        return Remote::Expired;
    }
    if meta.state == "failed" {
        let detail = meta.detail.unwrap_or_default();
        let problem = failed_problem(meta.status, meta.kind.as_deref(), detail);
        return Remote::Done(JobResult::Failed(problem));
    }
    let body = kv.fetch(&format!("job:{id}:body")).await;
    let Some(body) = body else {
        return Remote::Expired;
    };
    let mut headers = http::HeaderMap::new();
    if let Some(content_type) = meta
        .content_type
        .and_then(|ct| http::HeaderValue::from_str(&ct).ok())
    {
        headers.insert(http::header::CONTENT_TYPE, content_type);
    }
    let answer = crate::core::upstream::exchange::Answer {
        status: meta.status,
        headers,
        body: Bytes::from(body),
    };
    Remote::Done(match meta.state.as_str() {
        "reply" => JobResult::Reply(answer),
        _ => JobResult::Answer(answer),
    })
}

/// The problems a failed job can keep, with their titles (a problem's kind is static text).
const FAILED_KINDS: &[(&str, &str)] = &[
    ("upstream-timeout", "Gateway Timeout"),
    ("upstream-unavailable", "Bad Gateway"),
    ("upstream-too-large", "Bad Gateway"),
    ("upstream-failed", "Bad Gateway"),
    ("job-result-too-large", "Bad Gateway"),
];

/// A failed job's problem as another instance stored it: its status, kind and detail (an
/// unknown kind reads as `upstream-failed`).
fn failed_problem(status: u16, kind: Option<&str>, detail: String) -> Problem {
    let (kind, title) = FAILED_KINDS
        .iter()
        .find(|(known, _)| Some(*known) == kind)
        .copied()
        .unwrap_or(("upstream-failed", "Bad Gateway"));
    Problem::new(status, kind, title, detail)
}

/// Waits for a job running on another instance, reading Redis with a growing pause.
pub async fn wait(id: &str, route: &str, owner: Option<&str>) -> Remote {
    let mut pause = Duration::from_millis(100);
    loop {
        match lookup(id, route, owner).await {
            Remote::Running => {}
            other => return other,
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::failed_problem;

    #[test]
    fn a_failed_job_keeps_its_problem_kind_across_instances() {
        let problem = failed_problem(504, Some("upstream-timeout"), "late".into());
        assert_eq!(
            (problem.status, problem.kind, problem.title),
            (504, "upstream-timeout", "Gateway Timeout")
        );
        let problem = failed_problem(502, Some("upstream-unavailable"), "none".into());
        assert_eq!(problem.kind, "upstream-unavailable");
        let problem = failed_problem(502, Some("something-else"), "?".into());
        assert_eq!(problem.kind, "upstream-failed");
    }
}
