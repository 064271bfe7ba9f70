//! `fanin` routes: one client request goes to several upstreams at once; this module decides
//! when to answer (`until`, `required`, `partial`, the hold) and builds the answer with its
//! `Holdfast-Upstreams` status map. See docs/actions.md.

mod merge;

use crate::actions::call::{self, timeout_reply};
use crate::actions::Admitted;
use crate::core::runtime::Runtime;
use crate::core::spec::call::Repoll;
use crate::core::spec::fanin::FaninSpec;
use crate::core::upstream::exchange::{
    Answer, CallResult, OutboundRequest, UpstreamError, MAX_BUFFERED,
};
use crate::exchange::hold::{hold, Held};
use crate::exchange::{Exchange, Reply};
use crate::observe::metrics::METRICS;
use crate::problem::Problem;
use bytes::Bytes;
use http::HeaderValue;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

/// How one upstream's part ended.
enum Outcome {
    Success { answer: Answer, json: Option<Value> },
    Failure(String),
}

impl Outcome {
    fn label(&self) -> String {
        match self {
            Outcome::Success { answer, .. } => answer.status.to_string(),
            Outcome::Failure(label) => label.clone(),
        }
    }
}

fn classify(result: &CallResult, merge: conf::Merge, repoll: Option<&Repoll>) -> Outcome {
    match result {
        Ok(answer)
            if (200..300).contains(&answer.status)
                && !repoll.is_some_and(|r| r.not_ready(result)) =>
        {
            let json = match merge {
                conf::Merge::First => None,
                conf::Merge::ByName => Some(merge::by_name_value(&answer.body)),
                conf::Merge::Concat | conf::Merge::Deep => {
                    match serde_json::from_slice(&answer.body) {
                        Ok(value) => Some(value),
                        Err(_) => return Outcome::Failure("invalid-json".to_owned()),
                    }
                }
            };
            Outcome::Success {
                answer: answer.clone(),
                json,
            }
        }
        Ok(answer) => Outcome::Failure(answer.status.to_string()),
        Err(error) => Outcome::Failure(error.label().to_owned()),
    }
}

/// What the fan-in answers.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Complete,
    Partial,
    /// Why, for the problem's detail.
    Failed(String),
    NothingYet,
}

fn decide(spec: &FaninSpec, outcomes: &[Option<Outcome>], over: bool) -> Option<Decision> {
    let total = outcomes.len();
    let successes = outcomes
        .iter()
        .filter(|o| matches!(o, Some(Outcome::Success { .. })))
        .count();
    let failures = outcomes
        .iter()
        .filter(|o| matches!(o, Some(Outcome::Failure(_))))
        .count();
    for (member, outcome) in spec.members.iter().zip(outcomes) {
        if member.required && matches!(outcome, Some(Outcome::Failure(_))) {
            return Some(Decision::Failed(format!(
                "required upstream `{}` failed",
                member.name
            )));
        }
    }
    let need = match spec.until {
        conf::Until::First => 1,
        conf::Until::All => total,
        conf::Until::Quorum(quorum) => quorum.min(total),
    };
    let required_pending = spec
        .members
        .iter()
        .zip(outcomes)
        .any(|(member, outcome)| member.required && outcome.is_none());
    if successes >= need && !required_pending {
        return Some(Decision::Complete);
    }
    if over || successes + failures == total {
        return Some(match (successes, failures) {
            (0, 0) => Decision::NothingYet,
            (0, _) => Decision::Failed("no upstream answered successfully".to_owned()),
            _ if spec.partial => Decision::Partial,
            _ => Decision::Failed(format!(
                "only {successes} of the {need} upstream answers needed came"
            )),
        });
    }
    None
}

type Call<'a> = Pin<Box<dyn Future<Output = Arc<CallResult>> + Send + 'a>>;

/// The next call to finish, with its index; `None` when none is left.
async fn next(calls: &mut [Option<Call<'_>>]) -> Option<(usize, Arc<CallResult>)> {
    std::future::poll_fn(|cx| {
        let mut any = false;
        for (index, slot) in calls.iter_mut().enumerate() {
            if let Some(call) = slot {
                any = true;
                if let Poll::Ready(result) = call.as_mut().poll(cx) {
                    *slot = None;
                    return Poll::Ready(Some((index, result)));
                }
            }
        }
        if any {
            Poll::Pending
        } else {
            Poll::Ready(None)
        }
    })
    .await
}

/// Serves a `fanin` route; `None` when the client left.
pub async fn serve(
    runtime: &Runtime,
    exchange: &mut impl Exchange,
    admitted: &mut Admitted<'_>,
    spec: &FaninSpec,
) -> pingora_error::Result<Option<Reply>> {
    let request = match call::outbound(exchange, admitted).await? {
        Ok(request) => request,
        Err(problem) => return Ok(Some(Reply::problem(&problem))),
    };
    let route = admitted.route.name.to_string();
    let identity = admitted.owner();
    let requests: Vec<Arc<OutboundRequest>> = spec
        .members
        .iter()
        .map(|member| {
            Arc::new(match &member.path {
                Some(path) => request.with_path(path),
                None => request.clone(),
            })
        })
        .collect();
    let options = &spec.options;
    let repoll = options.repoll.as_ref();
    let deadline = tokio::time::Instant::now() + options.hold;
    let work = async {
        let mut calls: Vec<Option<Call<'_>>> = spec
            .members
            .iter()
            .zip(&requests)
            .map(|(member, request)| {
                let (route, identity) = (&route, identity.as_deref());
                let part = call::until_ready(repoll, move || {
                    call::call_once(
                        &member.pool,
                        request,
                        options,
                        route,
                        identity,
                        MAX_BUFFERED,
                    )
                });
                let name = member.name.clone();
                let call: Call<'_> = match member.timeout {
                    Some(limit) => Box::pin(async move {
                        tokio::time::timeout(limit, part)
                            .await
                            .unwrap_or_else(|_| Arc::new(Err(UpstreamError::Timeout(name))))
                    }),
                    None => Box::pin(part),
                };
                Some(call)
            })
            .collect();
        let mut outcomes: Vec<Option<Outcome>> = spec.members.iter().map(|_| None).collect();
        let decision = loop {
            tokio::select! {
                finished = next(&mut calls) => {
                    if let Some((index, result)) = finished {
                        outcomes[index] = Some(classify(&result, spec.merge, repoll));
                    }
                    if let Some(decision) = decide(spec, &outcomes, false) {
                        break (decision, "cancelled");
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    break (decide(spec, &outcomes, true).unwrap_or(Decision::NothingYet), "timeout");
                }
            }
        };
        // Dropping the calls still running cancels them.
        drop(calls);
        (decision, outcomes)
    };
    let far = deadline + Duration::from_secs(1);
    let work = std::pin::pin!(work);
    let ((decision, unfinished), outcomes) =
        match hold(runtime, exchange.client_gone(), Some(far), work).await {
            Held::Done(done) => (done.0, done.1),
            Held::ClientGone => {
                count(&route, "client_gone");
                return Ok(None);
            }
            Held::Shutdown | Held::HoldEnded => {
                count(&route, "shutdown");
                return Ok(Some(timeout_reply(true)));
            }
        };
    Ok(Some(reply(spec, decision, unfinished, outcomes, &route)))
}

/// The reply for the fan-in's decision.
fn reply(
    spec: &FaninSpec,
    decision: Decision,
    unfinished: &str,
    outcomes: Vec<Option<Outcome>>,
    route: &str,
) -> Reply {
    let status_map: Vec<(String, String)> = spec
        .members
        .iter()
        .zip(&outcomes)
        .map(|(member, outcome)| {
            (
                member.name.to_string(),
                outcome
                    .as_ref()
                    .map_or_else(|| unfinished.to_owned(), Outcome::label),
            )
        })
        .collect();
    let map_header = status_map
        .iter()
        .map(|(name, outcome)| format!("{name}={outcome}"))
        .collect::<Vec<_>>()
        .join(", ");
    match decision {
        Decision::NothingYet => {
            count(route, "timeout");
            timeout_reply(false).header("holdfast-upstreams", &map_header)
        }
        Decision::Failed(detail) => {
            count(route, "failed");
            let map: serde_json::Map<String, Value> = status_map
                .into_iter()
                .map(|(name, outcome)| (name, Value::String(outcome)))
                .collect();
            let problem = Problem::new(502, "fanin-failed", "Bad Gateway", detail)
                .with_member("upstreams", Value::Object(map))
                .with_header("holdfast-upstreams", map_header);
            Reply::problem(&problem)
        }
        Decision::Complete | Decision::Partial => {
            let complete = decision == Decision::Complete;
            count(route, if complete { "complete" } else { "partial" });
            let with_map = |reply: Reply| {
                reply
                    .header("holdfast-complete", if complete { "true" } else { "false" })
                    .header("holdfast-upstreams", &map_header)
            };
            let successes = spec
                .members
                .iter()
                .zip(outcomes)
                .filter_map(|(m, o)| match o {
                    Some(Outcome::Success { answer, json }) => Some((m.name.clone(), answer, json)),
                    _ => None,
                });
            let merged = match spec.merge {
                conf::Merge::First => {
                    if let Some((_, answer, _)) = successes.into_iter().next() {
                        return with_map(Reply::upstream(&answer));
                    }
                    Value::Null
                }
                conf::Merge::ByName => {
                    let parts: Vec<(Arc<str>, Value)> = successes
                        .map(|(name, _, json)| (name, json.unwrap_or(Value::Null)))
                        .collect();
                    merge::by_name(parts.iter().map(|(n, v)| (&**n, v.clone())).collect())
                }
                conf::Merge::Concat => {
                    merge::concat(successes.filter_map(|(_, _, json)| json).collect())
                }
                conf::Merge::Deep => {
                    merge::deep(successes.filter_map(|(_, _, json)| json).collect())
                }
            };
            let body = Bytes::from(serde_json::to_vec(&merged).unwrap_or_default());
            with_map(
                Reply::fresh(200)
                    .with_body(Some(HeaderValue::from_static("application/json")), body),
            )
        }
    }
}

fn count(route: &str, result: &str) {
    METRICS
        .fanin_responses
        .with_label_values(&[route, result])
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::spec::call::CallOptions;
    use crate::core::spec::fanin::Member;
    use crate::core::upstream::Pool;
    use std::time::Duration;

    fn spec(until: conf::Until, required: &[bool]) -> FaninSpec {
        let upstream: conf::Upstream =
            serde_yaml::from_str("{ targets: [127.0.0.1:9], connect_timeout: 1s }")
                .expect("upstream");
        let pool = Arc::new(Pool::build("u", &upstream).expect("pool"));
        FaninSpec {
            members: required
                .iter()
                .enumerate()
                .map(|(i, &required)| Member {
                    name: Arc::from(format!("u{i}")),
                    pool: pool.clone(),
                    timeout: None,
                    required,
                    path: None,
                })
                .collect(),
            until,
            merge: conf::Merge::ByName,
            partial: true,
            options: CallOptions {
                repoll: None,
                hold: Duration::from_secs(1),
                coalesce: None,
                resumable: None,
            },
        }
    }

    fn ok() -> Option<Outcome> {
        Some(Outcome::Success {
            answer: Answer {
                status: 200,
                headers: http::HeaderMap::new(),
                body: Bytes::new(),
            },
            json: None,
        })
    }

    fn failed() -> Option<Outcome> {
        Some(Outcome::Failure("error".to_owned()))
    }

    #[test]
    fn decisions() {
        let all = spec(conf::Until::All, &[false, false]);
        assert_eq!(decide(&all, &[ok(), None], false), None);
        assert_eq!(decide(&all, &[ok(), ok()], false), Some(Decision::Complete));
        assert_eq!(
            decide(&all, &[ok(), failed()], false),
            Some(Decision::Partial)
        );
        assert_eq!(decide(&all, &[ok(), None], true), Some(Decision::Partial));
        assert_eq!(
            decide(&all, &[None, None], true),
            Some(Decision::NothingYet)
        );
        assert!(matches!(
            decide(&all, &[failed(), failed()], false),
            Some(Decision::Failed(_))
        ));
        let first = spec(conf::Until::First, &[false, true]);
        // The required one is still pending: wait for it.
        assert_eq!(decide(&first, &[ok(), None], false), None);
        assert_eq!(
            decide(&first, &[None, ok()], false),
            Some(Decision::Complete)
        );
        assert!(matches!(
            decide(&first, &[ok(), failed()], false),
            Some(Decision::Failed(_))
        ));
        let quorum = spec(conf::Until::Quorum(2), &[false, false, false]);
        assert_eq!(decide(&quorum, &[ok(), failed(), None], false), None);
        assert_eq!(
            decide(&quorum, &[ok(), failed(), ok()], false),
            Some(Decision::Complete)
        );
    }
}
