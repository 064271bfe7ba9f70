//! Zero-downtime upgrade: `holdfast run --upgrade` takes the listening sockets over from the
//! running process (named in `server.pid_file`), which answers what it holds and exits — while
//! clients keep polling and publishing through Redis, with no failed request and no lost
//! message. And the ways an upgrade goes wrong: an invalid new config, two upgrades at once.

use holdfast_tests::{eventually, run_holdfast, Holdfast, RedisServer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CONFIG: &str = r#"
server: { shutdown_grace: 3s, watch_interval: 0s, pid_file: "FILES/holdfast.pid", upgrade_socket: "FILES/upgrade.sock" }
BACKPLANE
routes:
  - { name: poll, match: { path: /poll, methods: [GET] }, longpoll: { channel: updates, timeout: 2s } }
  - { name: push, match: { path: /push, methods: [POST] }, publish: { channel: updates } }
"#;

fn config(files: &tempfile::TempDir, backplane: &str) -> String {
    CONFIG
        .replace("FILES", &files.path().display().to_string())
        .replace("BACKPLANE", backplane)
}

fn pid_in(files: &tempfile::TempDir) -> Option<i32> {
    std::fs::read_to_string(files.path().join("holdfast.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A client that opens a new connection for every request, as a fleet of clients would: a
/// request never rides a kept-alive connection that the old process closes.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn publish(client: &reqwest::Client, gw: &Holdfast, text: &str) -> Result<String, String> {
    let response = client
        .post(gw.url("/push"))
        .body(text.to_owned())
        .send()
        .await
        .map_err(|e| format!("publish {text}: {e}"))?;
    if response.status() != 201 {
        return Err(format!("publish {text}: {}", response.status()));
    }
    let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
    Ok(body["cursor"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_hands_over_without_a_failed_request_or_a_lost_message() {
    let redis = RedisServer::start().await;
    let files = tempfile::tempdir().expect("dir");
    let backplane = format!("backplane: {{ redis: {{ url: \"{}\" }} }}", redis.url());
    let mut old = Holdfast::start(&config(&files, &backplane)).await;
    assert_eq!(pid_in(&files), Some(old.pid()));
    let client = client();
    let first = publish(&client, &old, "m0").await.expect("first publish");

    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let published = Arc::new(Mutex::new(Vec::<String>::new()));
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    // Set once the publisher has stopped: only then is `published` the whole list.
    let published_all = Arc::new(AtomicBool::new(false));
    let url = old.url("");
    let publisher = {
        let (client, failures, published, stop) = (
            client.clone(),
            failures.clone(),
            published.clone(),
            stop.clone(),
        );
        let url = url.clone();
        tokio::spawn(async move {
            // Paced: the load of a steady producer, not a flood.
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut n = 1;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let text = format!("m{n}");
                let sent = client
                    .post(format!("{url}/push"))
                    .body(text.clone())
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status() == 201 => {
                        published.lock().expect("lock").push(text)
                    }
                    Ok(response) => failures
                        .lock()
                        .expect("lock")
                        .push(format!("publish {text}: {}", response.status())),
                    Err(error) => failures
                        .lock()
                        .expect("lock")
                        .push(format!("publish {text}: {error}")),
                }
                n += 1;
            }
        })
    };
    let poller = {
        let (client, failures, received, published_all, published) = (
            client.clone(),
            failures.clone(),
            received.clone(),
            published_all.clone(),
            published.clone(),
        );
        tokio::spawn(async move {
            let mut cursor = first;
            loop {
                let done = published_all.load(Ordering::Relaxed)
                    && received.lock().expect("lock").len()
                        >= published.lock().expect("lock").len();
                if done {
                    return;
                }
                let sent = client
                    .get(format!("{url}/poll?cursor={cursor}"))
                    .send()
                    .await;
                let response = match sent {
                    Ok(response) => response,
                    Err(error) => {
                        failures
                            .lock()
                            .expect("lock")
                            .push(format!("poll: {error}"));
                        continue;
                    }
                };
                let status = response.status().as_u16();
                if let Some(next) = response.headers().get("poll-cursor") {
                    cursor = next.to_str().unwrap_or_default().to_owned();
                }
                match status {
                    200 => {
                        let text = response.text().await.unwrap_or_default();
                        received.lock().expect("lock").push(text);
                    }
                    204 => {}
                    other => failures
                        .lock()
                        .expect("lock")
                        .push(format!("poll: {other}")),
                }
            }
        })
    };
    let count = |list: &Arc<Mutex<Vec<String>>>| list.lock().expect("lock").len();
    eventually(
        Duration::from_secs(10),
        "messages through the old process",
        async || count(&received) >= 5,
    )
    .await;

    let mut new = old.start_upgrade();
    // The old process hands its sockets over, answers what it holds, and exits.
    assert_eq!(old.wait_exit(Duration::from_secs(30)).await, Some(0));
    assert_eq!(new.exited(), None, "the new process died:\n{}", new.log());
    assert!(
        new.log().contains("listening on the socket handed over"),
        "{}",
        new.log()
    );
    assert_eq!(pid_in(&files), Some(new.pid()));
    let at_exit = count(&received);
    eventually(
        Duration::from_secs(10),
        "messages through the new process",
        async || count(&received) >= at_exit + 5,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    publisher.await.expect("publisher");
    published_all.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(10), poller)
        .await
        .expect("the poller caught up")
        .expect("poller");

    assert_eq!(*failures.lock().expect("lock"), Vec::<String>::new());
    assert_eq!(
        *received.lock().expect("lock"),
        *published.lock().expect("lock")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_to_an_invalid_config_leaves_the_running_process_serving() {
    let files = tempfile::tempdir().expect("dir");
    let mut old = Holdfast::start(&config(&files, "")).await;
    let bad = files.path().join("bad.yaml");
    std::fs::write(&bad, "routes: [{ name: x, longpoll: {} }]\n").expect("write");
    let (code, _, stderr) = run_holdfast(&["run", "--upgrade", "-c", &bad.display().to_string()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("the configuration is invalid"), "{stderr}");
    assert_eq!(old.exited(), None);
    assert_eq!(pid_in(&files), Some(old.pid()));
    let response = client()
        .get(old.url("/poll?wait=0"))
        .send()
        .await
        .expect("poll");
    assert_eq!(response.status(), 204);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_started_twice_leaves_one_process_serving() {
    let files = tempfile::tempdir().expect("dir");
    let mut old = Holdfast::start(&config(&files, "")).await;
    let mut upgrades = [old.start_upgrade(), old.start_upgrade()];
    assert_eq!(old.wait_exit(Duration::from_secs(30)).await, Some(0));
    // One took the sockets; the other got none and gave up.
    let mut exits = [None, None];
    eventually(
        Duration::from_secs(20),
        "one upgrade to give up",
        async || {
            for (exit, upgrade) in exits.iter_mut().zip(upgrades.iter_mut()) {
                if exit.is_none() {
                    *exit = upgrade.exited();
                }
            }
            exits.iter().any(Option::is_some)
        },
    )
    .await;
    let [first, second] = &upgrades;
    let (survivor, gave_up) = match exits {
        [None, Some(code)] => (first, code),
        [Some(code), None] => (second, code),
        other => panic!(
            "exactly one upgrade should serve: {other:?}\n{}\n{}",
            first.log(),
            second.log()
        ),
    };
    assert_ne!(gave_up, 0);
    assert_eq!(pid_in(&files), Some(survivor.pid()));
    let response = client()
        .get(survivor.url("/poll?wait=0"))
        .send()
        .await
        .expect("poll");
    assert_eq!(response.status(), 204);
}

const JOBS: &str = r#"
server: { shutdown_grace: 3s, watch_interval: 0s, pid_file: "FILES/holdfast.pid", upgrade_socket: "FILES/upgrade.sock" }
backplane: { redis: { url: "REDIS_URL" } }
upstreams: { slow: { targets: ["ORIGIN"] } }
routes:
  - { name: jobs, match: { prefix: /jobs }, job: { upstream: slow, ttl: 60s, timeout: 20s } }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_job_running_at_an_upgrade_finishes_and_the_new_process_serves_its_result() {
    let redis = RedisServer::start().await;
    let files = tempfile::tempdir().expect("dir");
    // The upstream answers only when the test lets it: the job is running for certain while
    // the upgrade happens.
    let (release, released) = tokio::sync::watch::channel(false);
    let origin = holdfast_tests::Origin::start(axum::Router::new().route(
        "/jobs",
        axum::routing::post(move || {
            let mut released = released.clone();
            async move {
                let _ = released.wait_for(|go| *go).await;
                "the answer"
            }
        }),
    ))
    .await;
    let config = JOBS
        .replace("FILES", &files.path().display().to_string())
        .replace("REDIS_URL", &redis.url())
        .replace("ORIGIN", &origin.addr.to_string());
    let mut old = Holdfast::start(&config).await;
    let client = client();
    let started = client
        .post(old.url("/jobs"))
        .send()
        .await
        .expect("start the job");
    assert_eq!(started.status(), 202);
    let started: serde_json::Value = started.json().await.expect("json");
    let poll = started["poll"].as_str().expect("poll").to_owned();
    eventually(
        Duration::from_secs(10),
        "the job to call its upstream",
        async || !origin.seen().is_empty(),
    )
    .await;
    // A poll held for the result while the upgrade begins: the old process answers it 204 and
    // closes, or (when the new process took the connection) it is held there until the end.
    let held = tokio::spawn(client.get(old.url(&format!("{poll}?wait=30"))).send());

    let mut new = old.start_upgrade();
    eventually(
        Duration::from_secs(20),
        "the new process to serve",
        async || new.log().contains("listening on the socket handed over"),
    )
    .await;
    assert_eq!(old.exited(), None, "the old process waits for its job");
    release.send(true).expect("release");
    assert_eq!(old.wait_exit(Duration::from_secs(30)).await, Some(0));
    assert_eq!(new.exited(), None, "the new process died:\n{}", new.log());

    let held = held.await.expect("join").expect("the held poll");
    match held.status().as_u16() {
        204 => assert_eq!(held.headers()["connection"], "close"),
        200 => assert_eq!(held.text().await.expect("text"), "the answer"),
        other => panic!("the held poll: {other}"),
    }
    let result = client
        .get(new.url(&format!("{poll}?wait=10")))
        .send()
        .await
        .expect("poll the new process");
    assert_eq!(result.status(), 200);
    assert_eq!(result.headers()["holdfast-upstream-status"], "200");
    assert_eq!(result.text().await.expect("text"), "the answer");
    assert_eq!(origin.seen().len(), 1, "the job ran once");
}
