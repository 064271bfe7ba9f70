//! The in-memory job table: each job's owner, state and result, a `watch` that wakes its
//! pollers, the running count per route (the `max_running` cap), and expiry — a result is kept
//! for `ttl`, then remembered as expired (410) for another `ttl`, then forgotten (404). Expired
//! entries are swept lazily, at most once a second, by whoever touches the table.

use crate::core::upstream::exchange::Answer;
use crate::observe::metrics::METRICS;
use crate::problem::Problem;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What a finished job left.
pub enum JobResult {
    /// An upstream's answer, served with status 200 and its own in `Holdfast-Upstream-Status`.
    Answer(Answer),
    /// An answer the gateway made (an `llm` job's translated answer or refusal), served as it is.
    Reply(Answer),
    Failed(Problem),
}

impl JobResult {
    pub fn failed(&self) -> bool {
        match self {
            Self::Answer(_) => false,
            Self::Reply(answer) => answer.status >= 400,
            Self::Failed(_) => true,
        }
    }
}

/// A started job, as its background task knows it.
pub struct Started {
    pub id: String,
    route: Arc<str>,
    done: watch::Sender<Option<Arc<JobResult>>>,
}

enum State {
    Running,
    Done {
        expires: Instant,
        ttl: Duration,
        failed: bool,
    },
    Expired {
        forget: Instant,
    },
}

struct Entry {
    route: Arc<str>,
    owner: Option<String>,
    state: State,
    result: watch::Receiver<Option<Arc<JobResult>>>,
}

#[derive(Default)]
struct Table {
    jobs: HashMap<String, Entry>,
    running: HashMap<Arc<str>, usize>,
    swept: Option<Instant>,
}

/// What a poll finds.
pub enum Lookup {
    Unknown,
    Expired,
    /// Running or done: the result (once there) arrives on this receiver.
    Found(watch::Receiver<Option<Arc<JobResult>>>),
}

pub struct Store {
    table: Mutex<Table>,
}

pub static STORE: LazyLock<Store> = LazyLock::new(|| Store {
    table: Mutex::default(),
});

fn gauge(route: &str, state: &str, delta: i64) {
    METRICS.jobs.with_label_values(&[route, state]).add(delta);
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, Table> {
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if table
            .swept
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            table.swept = Some(now);
            sweep(&mut table, now);
        }
        table
    }

    /// Jobs running, on every route.
    pub fn running(&self) -> usize {
        self.lock().running.values().sum()
    }

    /// Registers a running job, or `None` when the route runs `max_running` already.
    pub fn start(
        &self,
        route: &Arc<str>,
        owner: Option<String>,
        max_running: usize,
    ) -> Option<Started> {
        let mut table = self.lock();
        let running = table.running.entry(route.clone()).or_default();
        if *running >= max_running {
            return None;
        }
        *running += 1;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (done, result) = watch::channel(None);
        table.jobs.insert(
            id.clone(),
            Entry {
                route: route.clone(),
                owner,
                state: State::Running,
                result,
            },
        );
        gauge(route, "running", 1);
        Some(Started {
            id,
            route: route.clone(),
            done,
        })
    }

    /// Stores a job's result and wakes its pollers.
    pub fn finish(&self, job: &Started, result: JobResult, ttl: Duration) {
        let failed = result.failed();
        let mut table = self.lock();
        if let Some(running) = table.running.get_mut(&job.route) {
            *running = running.saturating_sub(1);
        }
        gauge(&job.route, "running", -1);
        if let Some(entry) = table.jobs.get_mut(&job.id) {
            entry.state = State::Done {
                expires: Instant::now() + ttl,
                ttl,
                failed,
            };
            gauge(&job.route, if failed { "failed" } else { "done" }, 1);
        }
        job.done.send_replace(Some(Arc::new(result)));
    }

    /// Finds job `id` of `route` for `owner` (another owner's job is `Unknown`).
    pub fn lookup(&self, route: &str, id: &str, owner: Option<&str>) -> Lookup {
        let table = self.lock();
        match table.jobs.get(id) {
            Some(entry) if &*entry.route == route && entry.owner.as_deref() == owner => {
                match entry.state {
                    State::Expired { .. } => Lookup::Expired,
                    State::Done { expires, .. } if expires <= Instant::now() => Lookup::Expired,
                    _ => Lookup::Found(entry.result.clone()),
                }
            }
            _ => Lookup::Unknown,
        }
    }
}

fn sweep(table: &mut Table, now: Instant) {
    table.jobs.retain(|_, entry| match entry.state {
        State::Done {
            expires,
            ttl,
            failed,
        } if expires <= now => {
            gauge(&entry.route, if failed { "failed" } else { "done" }, -1);
            // Remember the id as expired for as long again as the result was kept.
            entry.state = State::Expired {
                forget: expires + ttl,
            };
            // Drop the result itself now.
            entry.result = watch::channel(None).1;
            true
        }
        State::Expired { forget } => forget > now,
        _ => true,
    });
}
