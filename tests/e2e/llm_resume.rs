//! Resumable answers: the official OpenAI SDK reads part of a streamed answer, loses its
//! connection, and resumes after the chunks it had — on the same instance, or on another
//! through Redis — with the provider asked once; raw clients resume by `Last-Event-ID` and by
//! long-polls; only the identity that asked may resume; an instance that dies mid-answer
//! leaves its followers an error event, not silence.

use holdfast_tests::llm_providers::{Behaviour, Kind, Provider};
use holdfast_tests::Holdfast;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// A story of `words` words: streamed in pieces of four characters, a piece every 5 ms.
fn story(words: usize) -> String {
    (1..=words)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn config(openai: &Provider, backplane: &str) -> String {
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("../auth/src/testdata/keys.yaml");
    format!(
        r#"
server: {{ shutdown_grace: 1s }}
{backplane}
auth:
  keys: {{ api_keys: {{ file: {keys} }}, token: {{ header: authorization }} }}
upstreams:
  openai-api: {{ targets: ["{openai}"] }}
llm:
  providers:
    openai: {{ kind: openai, upstream: openai-api, keys: [k1] }}
  models:
    gpt: {{ targets: [{{ provider: openai, model: gpt-4o-mini }}] }}
routes:
  - {{ name: ai, match: {{ prefix: /v1 }}, auth: {{ provider: keys }}, llm: {{ resumable: {{ ttl: 30s }} }} }}
"#,
        keys = keys.display(),
        openai = openai.addr,
    )
}

/// Runs tests/clients/llm_resume.py: asks through `ask`, cuts after `cut` chunks, resumes
/// through `resume`.
async fn sdk_resume(ask: &Holdfast, resume: &Holdfast, cut: usize) -> Value {
    let args = [
        format!("http://{}", ask.addr),
        format!("http://{}", resume.addr),
        "k-acme".to_owned(),
        "gpt".to_owned(),
        cut.to_string(),
    ];
    crate::llm::python_client("llm_resume.py", &args).await
}

/// A provider whose answer is `reply`.
async fn telling(reply: &str) -> Provider {
    let reply = reply.to_owned();
    Provider::start(Kind::OpenAi, Behaviour::Answer { reply }).await
}

fn chat() -> Value {
    json!({"model": "gpt", "stream": true, "messages": [{"role": "user", "content": "a story"}]})
}

/// Starts the streamed answer to `chat` as `key` and leaves at once: the stream's id.
pub(crate) async fn start_and_leave(gw: &Holdfast, key: &str, chat: &Value) -> String {
    let response = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(chat)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    let id = response.headers()["holdfast-stream"]
        .to_str()
        .expect("ascii")
        .to_owned();
    drop(response);
    id
}

/// Long-polls kept stream `id` as `key` (a bearer key, sent on routes without auth too),
/// cursor after cursor, until it is done: its events.
pub(crate) async fn poll_to_end(gw: &Holdfast, id: &str, key: &str) -> Vec<Value> {
    let (mut cursor, mut events) = (0, Vec::new());
    loop {
        let path = format!("/v1/streams/{id}?cursor={cursor}");
        let (status, body) = get(gw, &path, key, None).await;
        assert_eq!(status, 200, "{body}");
        let poll: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(poll["stream"], id);
        events.extend(poll["events"].as_array().into_iter().flatten().cloned());
        cursor = poll["cursor"].as_u64().expect("cursor");
        if poll["done"] == true {
            return events;
        }
    }
}

/// The text of OpenAI chunks' SSE events.
fn sse_text(body: &str) -> String {
    body.split("\n\n")
        .filter_map(|event| event.lines().find_map(|line| line.strip_prefix("data: ")))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

async fn get(gw: &Holdfast, path: &str, key: &str, last: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(gw.url(path)).bearer_auth(key);
    if let Some(last) = last {
        request = request.header("last-event-id", last);
    }
    let response = request.send().await.expect("get");
    let status = response.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(20), response.text())
        .await
        .expect("the body ended")
        .expect("body");
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_cut_short_is_resumed_whole_and_only_by_who_asked() {
    let whole = story(120);
    let openai = telling(&whole).await;
    let gw = Holdfast::start(&config(&openai, "")).await;

    // The SDK reads five chunks, loses the connection, resumes after them: the whole answer,
    // nothing twice, nothing missing, from one call to the provider.
    let resumed = sdk_resume(&gw, &gw, 5).await;
    assert_eq!(resumed["text"], whole.as_str(), "{resumed}");
    assert!(!resumed["before"].as_str().unwrap_or_default().is_empty());
    assert!(!resumed["after"].as_str().unwrap_or_default().is_empty());
    let id = resumed["stream"]
        .as_str()
        .expect("the stream's id")
        .to_owned();
    assert_eq!(resumed["resume"], format!("/v1/streams/{id}").as_str());
    assert_eq!(openai.count(), 1);

    // A client that leaves at once: the answer is read to its end all the same, and a
    // long-poller collects it, cursor after cursor.
    let id = start_and_leave(&gw, "k-acme", &chat()).await;
    let events = poll_to_end(&gw, &id, "k-acme").await;
    let numbers: Vec<u64> = events.iter().filter_map(|e| e["id"].as_u64()).collect();
    let cursor = numbers.len() as u64;
    let text: String = events
        .iter()
        .filter_map(|e| e["data"]["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, whole);
    assert_eq!(
        numbers,
        (1..=cursor).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert_eq!(openai.count(), 2);

    // As Server-Sent Events after `Last-Event-ID`: the events after it, each with its id.
    let (status, body) = get(
        &gw,
        &format!("/v1/streams/{id}"),
        "k-acme",
        Some(&format!("{id}/3")),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains(&format!("\nid: {id}/4\n\n")), "{body}");
    assert!(!body.contains(&format!("id: {id}/3\n")));
    assert!(
        body.ends_with(&format!("data: [DONE]\nid: {id}/{cursor}\n\n")),
        "{body}"
    );
    let (_, from_start) = get(&gw, &format!("/v1/streams/{id}"), "k-acme", None).await;
    assert_eq!(sse_text(&from_start), whole);

    // Anyone else, and any stream that is not here: 404. A position that is none: 400.
    let not_found = |id: &str| {
        json!({"type": "urn:holdfast:problem:not-found", "title": "Not Found", "status": 404,
               "detail": format!("no stream {id} here: it ended longer ago than it is kept, or is not yours")})
    };
    let (status, body) = get(&gw, &format!("/v1/streams/{id}"), "k-beta", None).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).ok()),
        (404, Some(not_found(&id)))
    );
    let unknown = "0123456789abcdef0123456789abcdef";
    let (status, body) = get(&gw, &format!("/v1/streams/{unknown}"), "k-acme", None).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).ok()),
        (404, Some(not_found(unknown)))
    );
    let bad_request = |detail: &str, field: &str| {
        json!({"type": "urn:holdfast:problem:bad-request", "title": "Bad Request", "status": 400,
               "detail": detail, "field": field})
    };
    let (status, body) = get(&gw, &format!("/v1/streams/{id}?cursor=-1"), "k-acme", None).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).ok()),
        (
            400,
            Some(bad_request(
                "cursor: not an event's id (`<stream>/<number>`) nor a count of events",
                "cursor"
            ))
        )
    );
    let other = format!("{unknown}/2");
    let (status, body) = get(&gw, &format!("/v1/streams/{id}"), "k-acme", Some(&other)).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).ok()),
        (
            400,
            Some(bad_request(
                "Last-Event-ID: names another stream",
                "Last-Event-ID"
            ))
        )
    );
    let (status, _) = get(&gw, &format!("/v1/streams/{id}"), "k-unknown", None).await;
    assert_eq!(status, 401, "resuming is authenticated as asking is");
}

#[tokio::test(flavor = "multi_thread")]
async fn through_redis_a_stream_resumes_on_another_instance() {
    let redis = holdfast_tests::RedisServer::start().await;
    let whole = story(120);
    let openai = telling(&whole).await;
    let backplane = format!(r#"backplane: {{ redis: {{ url: "{}" }} }}"#, redis.url());
    let config = config(&openai, &backplane);
    let a = Holdfast::start(&config).await;
    let b = Holdfast::start(&config).await;

    // Asked on A, cut, resumed on B: the whole answer.
    let resumed = sdk_resume(&a, &b, 7).await;
    assert_eq!(resumed["text"], whole.as_str(), "{resumed}");
    assert_eq!(openai.count(), 1);
    // Only who asked, on B too.
    let id = resumed["stream"].as_str().expect("id");
    let (status, _) = get(&b, &format!("/v1/streams/{id}"), "k-beta", None).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_killed_mid_answer_leaves_its_followers_an_error_event() {
    stops_mid_answer(9).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_stopped_mid_answer_exits_and_leaves_its_followers_an_error_event() {
    stops_mid_answer(15).await;
}

/// Instance A gets `signal` halfway through reading a long answer: it exits, and a follower
/// on instance B gets what A had read, then an error event that says so — never a silent end.
async fn stops_mid_answer(signal: i32) {
    let redis = holdfast_tests::RedisServer::start().await;
    let openai = telling(&story(1500)).await;
    let backplane = format!(r#"backplane: {{ redis: {{ url: "{}" }} }}"#, redis.url());
    let config = config(&openai, &backplane);
    let mut a = Holdfast::start(&config).await;
    let b = Holdfast::start(&config).await;
    let id = start_and_leave(&a, "k-acme", &chat()).await;
    holdfast_tests::eventually(
        Duration::from_secs(10),
        "A has mirrored some events",
        async || {
            let (_, body) = get(&b, &format!("/v1/streams/{id}?cursor=0"), "k-acme", None).await;
            serde_json::from_str::<Value>(&body).is_ok_and(|poll| poll["cursor"].as_u64() > Some(3))
        },
    )
    .await;
    a.signal(signal);
    // Killed, it has no exit code; stopped, it leaves within its shutdown grace, cleanly.
    let code = a.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, (signal == 15).then_some(0));
    let (status, body) = get(&b, &format!("/v1/streams/{id}"), "k-acme", None).await;
    assert_eq!(status, 200);
    assert!(body.contains(&format!("\nid: {id}/1\n\n")), "{body}");
    let tail: Vec<&str> = body.trim_end().rsplit("\n\n").take(2).collect();
    assert_eq!(tail[0], "data: [DONE]", "{body}");
    let error: Value = serde_json::from_str(tail[1].trim_start_matches("data: ")).expect("json");
    assert_eq!(
        error,
        json!({"error": {"message": "the instance reading this answer stopped before its end; ask again",
                         "type": "upstream_error"}})
    );
    assert!(sse_text(&body).len() < story(1500).len());
}

/// An origin streaming `count` events, one every 10 ms, with its own ids and `\r\n` line ends;
/// and a JSON answer at /whole.
async fn ticking(count: usize) -> holdfast_tests::Origin {
    use axum::routing::get;
    let ticks = get(move || async move {
        let stream = futures_util::stream::unfold(1, move |i| async move {
            if i > count {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            let event = format!("id: up-{i}\r\ndata: tick {i}\r\n\r\n");
            Some((Ok::<_, std::io::Error>(bytes::Bytes::from(event)), i + 1))
        });
        (
            [("content-type", "text/event-stream")],
            axum::body::Body::from_stream(stream),
        )
    });
    let whole = get(|| async { ([("content-type", "application/json")], r#"{"whole":true}"#) });
    let router = axum::Router::new()
        .route("/ticks", ticks)
        .route("/whole", whole);
    holdfast_tests::Origin::start(router).await
}

/// The `data` of each event in `body`.
fn data_lines(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxied_event_stream_is_resumed_by_asking_again_with_its_last_event_id() {
    let origin = ticking(40).await;
    let gw = Holdfast::start(&format!(
        r#"
server: {{ shutdown_grace: 1s }}
upstreams:
  o: {{ targets: ["{origin}"] }}
routes:
  - {{ name: ticks, match: {{ prefix: / }}, upstream: o, resumable: {{ ttl: 30s }} }}
"#,
        origin = origin.addr
    ))
    .await;
    let client = reqwest::Client::new();

    // The client reads five events and loses its connection.
    let mut response = client.get(gw.url("/ticks")).send().await.expect("get");
    assert_eq!(response.status(), 200);
    let id = response.headers()["holdfast-stream"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let mut read = String::new();
    while read.matches("\n\n").count() < 5 {
        let chunk = response.chunk().await.expect("chunk").expect("more");
        read.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(response);
    let events: Vec<&str> = read.split_terminator("\n\n").collect();
    let last = events[events.len() - 1]
        .lines()
        .filter_map(|line| line.strip_prefix("id: "))
        .next_back()
        .expect("an id")
        .to_owned();
    assert!(
        events[0].starts_with("id: up-1\ndata: tick 1\nid: "),
        "the upstream's id, then ours, which wins: {read}"
    );

    // Asking again with the last id it had, as EventSource does: the rest, once, and the
    // upstream was asked once.
    let (status, rest) = get(&gw, "/ticks", "none", Some(&last)).await;
    assert_eq!(status, 200);
    let mut ticks = data_lines(&read);
    ticks.extend(data_lines(&rest));
    let whole: Vec<String> = (1..=40).map(|i| format!("tick {i}")).collect();
    assert_eq!(ticks, whole);
    assert_eq!(origin.count(), 1);
    assert!(last.starts_with(&format!("{id}/")));
    // The route's query is the upstream's: `?cursor=` there asks no long-poll.
    let (status, again) = get(&gw, "/ticks?cursor=1", "none", Some(&last)).await;
    assert_eq!((status, data_lines(&again)), (200, data_lines(&rest)));

    // An id the upstream gave goes to the upstream; an answer that is no stream comes whole.
    let (status, _) = get(&gw, "/ticks", "none", Some("up-38")).await;
    assert_eq!(status, 200);
    assert_eq!(origin.count(), 2);
    let seen = origin.seen();
    let forwarded = seen[1]
        .headers
        .iter()
        .find(|(name, _)| name == "last-event-id");
    assert_eq!(forwarded.map(|(_, value)| value.as_str()), Some("up-38"));
    let whole = client.get(gw.url("/whole")).send().await.expect("get");
    assert!(whole.headers().get("holdfast-stream").is_none());
    assert_eq!(whole.text().await.expect("body"), r#"{"whole":true}"#);

    // A stream of ours that is not kept here: 404.
    let gone = "0123456789abcdef0123456789abcdef";
    let (status, body) = get(&gw, "/ticks", "none", Some(&format!("{gone}/3"))).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).ok()),
        (
            404,
            Some(
                json!({"type": "urn:holdfast:problem:not-found", "title": "Not Found", "status": 404,
            "detail": format!("no stream {gone} here: it ended longer ago than it is kept, or is not yours")})
            )
        )
    );
}
