//! The actions run in memory: each test builds a runtime from a config, sends a request through
//! a [`MemoryExchange`] and checks the reply (status, headers, body) or how the hold ended — no
//! socket and no Pingora session. Upstreams are addresses nothing listens on, so a call's
//! failure answers are checked without a server.

use crate::actions::{call, channels, fanin, jobs, Admitted};
use crate::core::routes::Action;
use crate::core::runtime::Runtime;
use crate::exchange::memory::MemoryExchange;
use crate::exchange::{Exchange, Reply};
use std::path::Path;

const CONFIG: &str = r#"
upstreams:
  closed: { targets: ["127.0.0.1:1"], connect_timeout: 1s, retries: 0 }
  also_closed: { targets: ["127.0.0.1:1"], connect_timeout: 1s, retries: 0 }
routes:
  - { name: sub, match: { path: "/sub/{ch}", methods: [GET] }, longpoll: { channel: "{ch}", timeout: 30s } }
  - { name: batch, match: { path: "/batch/{ch}", methods: [GET] }, longpoll: { channel: "{ch}", format: batch, on_timeout: 200 } }
  - { name: pub, match: { path: "/pub/{ch}", methods: [POST] }, publish: { channel: "{ch}" }, max_body: 8 }
  - { name: call, match: { path: /call }, upstream: closed, repoll_on: [204] }
  - { name: both, match: { path: /both }, fanin: { upstreams: [closed, also_closed] } }
  - { name: jobs, match: { prefix: /jobs }, job: { upstream: closed } }
"#;

fn runtime() -> Runtime {
    let config = conf::load_str(Path::new("t.yaml"), CONFIG).expect("parses");
    let hub = crate::hub::Hub::start(&config).expect("hub");
    let state = crate::core::state::compile(config, None).unwrap_or_else(|e| panic!("{e:?}"));
    Runtime::new(state, "t.yaml".into(), hub, None)
}

/// Runs the route the request's path matches on `exchange`: the action's reply, or
/// `None` when the client left, and the outcome it noted.
async fn serve(
    runtime: &Runtime,
    exchange: &mut MemoryExchange,
) -> (Option<Reply>, Option<&'static str>) {
    let state = runtime.state.load_full();
    let head = exchange.head();
    let (method, path) = (head.method.clone(), head.uri.path().to_owned());
    let mut admitted = Admitted::for_test(&state, &method, &path);
    if matches!(
        admitted.route.action,
        Action::Call(_) | Action::Fanin(_) | Action::Job(_)
    ) {
        admitted.upstream_head = Some(Box::new(exchange.head().clone()));
    }
    // A copy of the reference: the route outlives `admitted`, which the action borrows.
    let route = admitted.route;
    let reply = match &route.action {
        Action::LongPoll(spec) => channels::poll(runtime, exchange, &mut admitted, spec).await,
        Action::Publish(spec) => channels::publish(runtime, exchange, &admitted, spec)
            .await
            .map(Some),
        Action::Call(spec) => call::serve(runtime, exchange, &mut admitted, spec).await,
        Action::Fanin(spec) => fanin::serve(runtime, exchange, &mut admitted, spec).await,
        Action::Job(spec) => jobs::serve(runtime, exchange, &mut admitted, spec).await,
        Action::Llm(spec) => match super::llm::serve(exchange, &admitted, spec, None).await {
            Ok((super::llm::Served::Reply(reply), ..)) => Ok(Some(reply)),
            Ok(_) => panic!("streams are the pipeline's"),
            Err(error) => Err(error),
        },
        Action::Proxy(_) => panic!("proxied routes are Pingora's"),
    };
    (reply.expect("no transport error"), admitted.outcome)
}

fn get(target: &str) -> MemoryExchange {
    MemoryExchange::new("GET", target, &[("host", "x")], &[])
}

fn post(target: &str, content_type: &str, body: &[u8]) -> MemoryExchange {
    let length = body.len().to_string();
    MemoryExchange::new(
        "POST",
        target,
        &[
            ("host", "x"),
            ("content-type", content_type),
            ("content-length", &length),
        ],
        &[body],
    )
}

/// A header of the reply as written (its own headers and the ones it shares).
fn header(reply: &Reply, name: &str) -> String {
    let written = reply.response_header().expect("a head");
    let value = written.headers.get(name);
    value.map_or_else(String::new, |v| v.to_str().unwrap_or_default().to_owned())
}

fn json(reply: &Reply) -> serde_json::Value {
    serde_json::from_slice(&reply.body).expect("a JSON body")
}

#[tokio::test]
async fn a_published_message_is_what_a_poll_from_before_it_gets() {
    let runtime = runtime();
    let (first, _) = serve(&runtime, &mut post("/pub/a", "text/plain", b"one")).await;
    let first = first.expect("a reply");
    assert_eq!(first.status, 201);
    let cursor = json(&first)["cursor"]
        .as_str()
        .expect("a cursor")
        .to_owned();
    assert_eq!(first.headers["poll-cursor"], cursor.as_str());
    let first = cursor.clone();
    let (second, _) = serve(&runtime, &mut post("/pub/a", "text/plain", b"two")).await;
    assert_eq!(second.expect("a reply").status, 201);

    let (reply, outcome) = serve(&runtime, &mut get(&format!("/sub/a?cursor={cursor}"))).await;
    let reply = reply.expect("a reply");
    assert_eq!(outcome, Some("data"));
    assert_eq!(reply.status, 200);
    assert_eq!(&reply.body[..], b"two");
    assert_eq!(header(&reply, "content-type"), "text/plain");
    assert_eq!(header(&reply, "cache-control"), "no-store");
    let cursor = header(&reply, "poll-cursor");
    assert_eq!(header(&reply, "etag"), format!("\"{cursor}\""));
    assert!(!reply.close);
    // The head lines a message's polls share are rendered once for all of them.
    let (again, _) = serve(&runtime, &mut get(&format!("/sub/a?cursor={first}"))).await;
    let again = again.expect("a reply");
    let shared = |reply: &Reply| reply.shared.clone().expect("shared headers");
    assert!(std::sync::Arc::ptr_eq(&shared(&reply), &shared(&again)));
}

#[tokio::test]
async fn a_poll_whose_hold_ends_gets_204_or_an_empty_batch() {
    let runtime = runtime();
    let (reply, outcome) = serve(&runtime, &mut get("/sub/quiet?wait=0")).await;
    let reply = reply.expect("a reply");
    assert_eq!((reply.status, outcome), (204, Some("timeout")));
    assert!(reply.body.is_empty());

    let (reply, _) = serve(&runtime, &mut get("/batch/quiet?wait=0")).await;
    let reply = reply.expect("a reply");
    assert_eq!(reply.status, 200);
    assert_eq!(json(&reply)["messages"], serde_json::json!([]));
}

#[tokio::test]
async fn a_poll_ends_without_a_reply_when_its_client_leaves() {
    let runtime = runtime();
    let mut exchange = get("/sub/left");
    // The client is gone before the poll is held: it ends at once.
    exchange.leave.notify_one();
    let (reply, outcome) = serve(&runtime, &mut exchange).await;
    assert_eq!(reply, None);
    assert_eq!(outcome, Some("client_gone"));
}

#[tokio::test]
async fn a_poll_held_at_shutdown_gets_204_and_closes() {
    let runtime = runtime();
    runtime.begin_shutdown();
    let (reply, outcome) = serve(&runtime, &mut get("/sub/bye")).await;
    let reply = reply.expect("a reply");
    assert_eq!((reply.status, reply.close), (204, true));
    assert_eq!(outcome, Some("shutdown"));
}

#[tokio::test]
async fn bad_poll_and_publish_requests_get_problems() {
    let runtime = runtime();
    let (reply, _) = serve(&runtime, &mut get("/sub/a?wait=soon")).await;
    let reply = reply.expect("a reply");
    assert_eq!(reply.status, 400);
    assert_eq!(reply.headers["content-type"], "application/problem+json");
    assert_eq!(
        json(&reply)["detail"],
        "invalid wait `soon`: give a number of seconds from 0 to 30"
    );

    let (reply, _) = serve(&runtime, &mut post("/pub/a", "text/plain", b"too long!")).await;
    let reply = reply.expect("a reply");
    assert_eq!(reply.status, 413);
    assert_eq!(reply.problem, Some("body-too-large"));
    assert_eq!(
        json(&reply)["detail"],
        "the body is larger than this route's limit of 8 bytes"
    );
}

#[tokio::test]
async fn a_call_to_an_upstream_that_refuses_is_a_502() {
    let runtime = runtime();
    let (reply, _) = serve(&runtime, &mut get("/call")).await;
    let reply = reply.expect("a reply");
    assert_eq!(reply.status, 502);
    assert_eq!(reply.problem, Some("upstream-failed"));
    assert_eq!(
        json(&reply)["detail"],
        "upstream `closed` refused or dropped the connection"
    );
}

#[tokio::test]
async fn a_fanin_whose_upstreams_all_fail_is_a_502_with_their_map() {
    let runtime = runtime();
    let (reply, _) = serve(&runtime, &mut get("/both")).await;
    let reply = reply.expect("a reply");
    assert_eq!(reply.status, 502);
    assert_eq!(reply.problem, Some("fanin-failed"));
    assert_eq!(
        reply.headers["holdfast-upstreams"],
        "closed=error, also_closed=error"
    );
    assert_eq!(
        json(&reply)["upstreams"],
        serde_json::json!({"closed": "error", "also_closed": "error"})
    );
}

#[tokio::test]
async fn jobs_answer_unknown_ids_and_wrong_methods() {
    let runtime = runtime();
    let (reply, _) = serve(&runtime, &mut get("/jobs/nope")).await;
    let reply = reply.expect("a reply");
    assert_eq!((reply.status, reply.problem), (404, Some("job-not-found")));

    let (reply, _) = serve(&runtime, &mut get("/jobs")).await;
    let reply = reply.expect("a reply");
    assert_eq!(reply.status, 405);
    assert_eq!(reply.headers["allow"], "POST");
}

#[tokio::test]
async fn a_started_job_answers_202_with_its_poll_url() {
    let runtime = runtime();
    let (reply, _) = serve(&runtime, &mut post("/jobs", "application/json", b"{}")).await;
    let reply = reply.expect("a reply");
    assert_eq!(reply.status, 202);
    let body = json(&reply);
    let poll = body["poll"].as_str().expect("a poll URL");
    assert_eq!(reply.headers["location"], poll);
    assert!(poll.starts_with("/jobs/"));
    // The call fails (nothing listens): the poll gets the failed job's problem.
    let (reply, _) = serve(&runtime, &mut get(poll)).await;
    let reply = reply.expect("a reply");
    assert_eq!(
        (reply.status, reply.problem),
        (502, Some("upstream-failed"))
    );
}
