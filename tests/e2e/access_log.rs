//! The access log: one JSON line per request — for a proxied request, a held poll that timed
//! out and a 401 — with no token or API key in it, and reopened on SIGUSR1 after rotation.

use holdfast_tests::{eventually, Holdfast, Origin};
use serde_json::Value;
use std::time::Duration;

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_json_line_per_request_and_no_secrets() {
    let origin = Origin::echo().await;
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("access.log");
    let config = format!(
        r#"
server: {{ shutdown_grace: 1s }}
access_log: {{ path: {log}, headers: [user-agent, authorization, x-secret], redact: [x-secret] }}
auth:
  main: {{ jwt: {{ secret: "an-hmac-secret-of-at-least-32-bytes!" }} }}
upstreams:
  o: {{ targets: [{origin}] }}
routes:
  - {{ name: api, match: {{ prefix: /api }}, upstream: o }}
  - {{ name: private, match: {{ path: /private }}, auth: {{ provider: main }}, upstream: o }}
  - {{ name: poll, match: {{ path: /poll }}, longpoll: {{ channel: c, timeout: 1s }} }}
"#,
        log = log.display(),
        origin = origin.addr
    );
    let config_path = dir.path().join("holdfast.yaml");
    let gw = Holdfast::start_in(dir, config_path, &config).await;
    let client = reqwest::Client::new();
    let secret_token = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.not-a-real-signature";
    client
        .get(gw.url("/api/items?token=s3cr3t"))
        .header("user-agent", "tester/1")
        .header("x-secret", "hunter2")
        .send()
        .await
        .expect("get");
    assert_eq!(
        client
            .get(gw.url("/private"))
            .header("authorization", secret_token)
            .send()
            .await
            .expect("get")
            .status(),
        401
    );
    assert_eq!(
        client
            .get(gw.url("/poll?wait=0.2"))
            .header("user-agent", "poller/1")
            .send()
            .await
            .expect("poll")
            .status(),
        204
    );
    eventually(Duration::from_secs(5), "three log lines", async || {
        lines(&log).len() >= 3
    })
    .await;

    let all = lines(&log);
    let find = |route: &str| {
        all.iter()
            .find(|l| l["route"] == route)
            .unwrap_or_else(|| panic!("no line for {route}: {all:?}"))
            .clone()
    };
    let api = find("api");
    assert_eq!(api["method"], "GET");
    assert_eq!(
        api["path"], "/api/items",
        "the query is left out by default"
    );
    assert_eq!(api["status"], 200);
    assert_eq!(api["upstream"], "o");
    assert_eq!(api["upstream_status"], 200);
    assert!(api["upstream_ms"].as_f64().is_some());
    assert!(api["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(api["header_user_agent"], "tester/1");
    assert_eq!(api["header_x_secret"], "[redacted]");
    let private = find("private");
    assert_eq!(private["status"], 401);
    assert_eq!(private["header_authorization"], "[redacted]");
    let poll = find("poll");
    assert_eq!(poll["status"], 204);
    assert_eq!(poll["outcome"], "timeout");
    // A held poll keeps its headers for the log only because this log records some.
    assert_eq!(poll["method"], "GET");
    assert_eq!(poll["path"], "/poll");
    assert_eq!(poll["header_user_agent"], "poller/1");
    assert!(poll["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    let text = std::fs::read_to_string(&log).expect("log");
    for secret in [
        "s3cr3t",
        "hunter2",
        "eyJhbGciOiJIUzI1NiJ9",
        "not-a-real-signature",
    ] {
        assert!(
            !text.contains(secret),
            "`{secret}` leaked into the access log:\n{text}"
        );
    }

    // Rotation: move the file away, SIGUSR1, and the next line goes to a new file.
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    gw.signal(10);
    eventually(
        Duration::from_secs(5),
        "a line in the reopened log",
        async || {
            let _ = client.get(gw.url("/api/again")).send().await;
            lines(&log).iter().any(|l| l["path"] == "/api/again")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_credential_in_the_query_is_redacted_when_the_query_is_logged() {
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("access.log");
    let secret = super::auth::SECRET;
    let config = format!(
        r#"
server: {{ shutdown_grace: 1s }}
access_log: {{ path: {log}, query: true }}
auth:
  browsers: {{ jwt: {{ secret: "{secret}" }}, token: {{ query: access_token }} }}
routes:
  - {{ name: feed, match: {{ path: /feed }}, auth: {{ provider: browsers }}, longpoll: {{ channel: c, timeout: 1s }} }}
"#,
        log = log.display(),
    );
    let config_path = dir.path().join("holdfast.yaml");
    let gw = Holdfast::start_in(dir, config_path, &config).await;
    let token = super::auth::hs256(&super::auth::claims(serde_json::json!({})));
    // A poll, answered through the pipeline, and a WebSocket, held on the edge.
    let poll = reqwest::get(gw.url(&format!("/feed?wait=0.1&access_token={token}")))
        .await
        .expect("poll");
    assert_eq!(poll.status(), 204);
    let url = format!("ws://{}/feed?access_token={token}&room=1", gw.addr);
    let (mut socket, _) =
        tokio::task::block_in_place(|| tungstenite::connect(url)).expect("the socket");
    tokio::task::block_in_place(|| {
        socket.close(None).expect("close");
        while socket.read().is_ok() {}
    });
    eventually(Duration::from_secs(5), "two log lines", async || {
        lines(&log).len() >= 2
    })
    .await;
    let paths: Vec<Value> = lines(&log).iter().map(|l| l["path"].clone()).collect();
    assert_eq!(
        paths,
        [
            "/feed?wait=0.1&access_token=[redacted]",
            "/feed?access_token=[redacted]&room=1"
        ]
    );
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!text.contains(&token), "the token leaked:\n{text}");
}
