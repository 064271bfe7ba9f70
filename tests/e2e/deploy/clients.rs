//! The example clients against conf/example.yaml on free ports: the Python clients
//! (examples/python/poll.py, events.py and websocket.py) receive every message in order, and the
//! browser page (examples/browser/index.html, in headless Chromium over the DevTools protocol)
//! shows what is published, including what its own form sends.

use super::support::{on_path, read, root};
use axum::routing::get;
use axum::Router;
use holdfast_tests::{eventually, send_signal, Holdfast, Origin};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// conf/example.yaml on free ports.
async fn example_gateway() -> Holdfast {
    let example = read("conf/example.yaml")
        .replace("listen: 0.0.0.0:8080", "listen: {listen}")
        .replace("admin: 127.0.0.1:9090", "admin: {admin}");
    assert!(
        example.contains("{listen}") && example.contains("{admin}"),
        "conf/example.yaml's addresses moved"
    );
    Holdfast::start(&example).await
}

async fn held(gw: &Holdfast, route: &str, count: f64) {
    let sample = format!("holdfast_longpoll_held{{route=\"{route}\"}}");
    eventually(
        Duration::from_secs(20),
        &format!("{count} held polls on {route}"),
        async || gw.metric(&sample).await == Some(count),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_client_receives_every_message_in_order() {
    python_client_gets_three_pushes(
        "poll.py",
        "requests",
        "holdfast_longpoll_held{route=\"poll\"}",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_event_stream_client_receives_every_message_in_order() {
    python_client_gets_three_pushes(
        "events.py",
        "sseclient",
        "holdfast_subscribers{route=\"poll\",transport=\"sse\"}",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_websocket_client_receives_every_message_in_order() {
    python_client_gets_three_pushes(
        "websocket.py",
        "websockets",
        "holdfast_subscribers{route=\"poll\",transport=\"websocket\"}",
    )
    .await;
}

/// Runs examples/python/`script` (which needs the Python module `module`) on the example's
/// `/poll` until it has three messages, pushing them once `waiting` (a metric sample) says it
/// waits: the first wakes it, the next two come while it may be between requests and it gets
/// them anyway.
async fn python_client_gets_three_pushes(script: &str, module: &str, waiting: &str) {
    let python = on_path("python3").expect("python3");
    let has_module = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_module,
        "examples/python/{script} needs `{module}` (scripts/deps --test installs it)"
    );
    let gw = example_gateway().await;
    let mut client = Command::new(&python)
        .arg(root().join("examples/python").join(script))
        .args([&gw.url("/poll"), "--max", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {script}: {e}"));
    eventually(
        Duration::from_secs(20),
        &format!("{script} waiting ({waiting})"),
        async || gw.metric(waiting).await == Some(1.0),
    )
    .await;
    let http = reqwest::Client::new();
    for n in 0..3 {
        let response = http
            .post(gw.url("/push"))
            .json(&json!({"n": n}))
            .send()
            .await
            .expect("push");
        assert_eq!(response.status(), 201);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = client.kill();
            panic!("{script} did not receive 3 messages in 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = client.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let received: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a JSON line")["data"].clone())
        .collect();
    assert_eq!(
        received,
        [json!({"n": 0}), json!({"n": 1}), json!({"n": 2})]
    );
}

/// Headless Chromium with its DevTools endpoint, stopped when dropped.
struct Chromium {
    child: std::process::Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Chromium {
    fn launch(url: &str) -> Self {
        let binary = on_path("chromium").unwrap_or_else(|| {
            panic!(
                "chromium is not installed; `scripts/deps --test` installs it, or: \
                 sudo apt-get update && sudo apt-get install -y chromium"
            )
        });
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=760,520",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes the port it chose to DevToolsActivePort in the profile.
        let active = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&active)
                .ok()
                .and_then(|text| text.lines().next().and_then(|l| l.trim().parse().ok()))
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Self {
            child,
            port,
            _profile: profile,
        }
    }

    /// A CDP session on the page whose URL starts with `url`.
    async fn page(&self, url: &str) -> Cdp {
        let list = format!("http://127.0.0.1:{}/json/list", self.port);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = reqwest::get(&list).await {
                let targets: Value = response.json().await.unwrap_or_default();
                if let Some(ws) = targets.as_array().into_iter().flatten().find_map(|t| {
                    (t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with(url)))
                        .then(|| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
                        .flatten()
                }) {
                    return tokio::task::block_in_place(|| Cdp::connect(&ws));
                }
            }
            assert!(Instant::now() < deadline, "chromium has no page for {url}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // SIGTERM lets the browser take its renderer processes down with it.
        let _ = send_signal(i32::try_from(self.child.id()).unwrap_or(i32::MAX), 15);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal Chrome DevTools Protocol client over one page's WebSocket.
struct Cdp {
    socket: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    next_id: u64,
}

impl Cdp {
    fn connect(url: &str) -> Self {
        let (socket, _) = tungstenite::connect(url).expect("connect to the page's DevTools socket");
        if let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.get_ref() {
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
        }
        Self { socket, next_id: 0 }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket
            .send(tungstenite::Message::text(request))
            .expect("CDP send");
        loop {
            let message = self.socket.read().expect("CDP read");
            let Ok(text) = message.to_text() else {
                continue;
            };
            let Ok(answer) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            if answer["id"] == id {
                assert!(answer["error"].is_null(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page and returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }
}

/// The texts of the messages the page shows.
fn shown(cdp: &mut Cdp) -> Vec<String> {
    let value = tokio::task::block_in_place(|| {
        cdp.eval("JSON.stringify([...document.querySelectorAll('#messages li')].map(li => li.textContent))")
    });
    serde_json::from_str(value.as_str().unwrap_or("[]")).unwrap_or_default()
}

async fn page_shows(cdp: &mut Cdp, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let messages = shown(cdp);
        if messages.iter().any(|m| m.contains(text)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed {text:?}; it shows {messages:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0);
    for c in text
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
    {
        buffer = (buffer << 6) | value(c);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buffer >> bits) & 0xff).unwrap_or(0));
        }
    }
    out
}

/// examples/browser/index.html at `/` of its own origin (so the page's calls to Holdfast are
/// cross-origin, and CORS is real).
async fn page_site() -> Origin {
    let page = read("examples/browser/index.html");
    Origin::start(Router::new().route(
        "/",
        get(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        }),
    ))
    .await
}

/// examples/browser/index.html, served from another origin than Holdfast (so CORS is real),
/// long-polls conf/example.yaml's `room-poll` in headless Chromium: a message published while
/// the page's poll is held appears on the page, and so does one sent from the page's form.
/// With HOLDFAST_SCREENSHOT=PATH it also saves a screenshot there (deploy/screenshot.png).
#[tokio::test(flavor = "multi_thread")]
async fn the_browser_page_shows_published_messages() {
    let gw = example_gateway().await;
    let site = page_site().await;
    let http = reqwest::Client::new();
    let say = |body: Value| http.post(gw.url("/rooms/demo/say")).json(&body).send();

    // Published before the page opens: `start: oldest` replays it.
    assert_eq!(
        say(json!({"from": "ada", "text": "Welcome to the demo room"}))
            .await
            .expect("say")
            .status(),
        201
    );

    let base = format!("http://{}/", site.addr);
    let url = format!("{base}?gateway=http://{}&room=demo", gw.addr);
    let chromium = tokio::task::block_in_place(|| Chromium::launch(&url));
    let mut cdp = chromium.page(&base).await;
    page_shows(&mut cdp, "Welcome to the demo room").await;

    // The page's next poll is held; a publish wakes it.
    held(&gw, "room-poll", 1.0).await;
    assert_eq!(
        say(json!({"from": "grace", "text": "Hello from the test, published while the poll was held"}))
            .await
            .expect("say")
            .status(),
        201
    );
    page_shows(
        &mut cdp,
        "Hello from the test, published while the poll was held",
    )
    .await;

    // The page's own form publishes (a cross-origin text/plain POST) and the poll shows it.
    held(&gw, "room-poll", 1.0).await;
    tokio::task::block_in_place(|| {
        cdp.eval(
            "document.getElementById('text').value = 'Typed into the page'; \
             document.getElementById('say').requestSubmit(); true",
        )
    });
    page_shows(&mut cdp, "Typed into the page").await;
    let messages = shown(&mut cdp);
    assert_eq!(messages.len(), 3, "each message once: {messages:?}");
    let response = http
        .get(gw.url("/rooms/demo/poll"))
        .header("origin", &base.trim_end_matches('/').to_owned())
        .send()
        .await
        .expect("poll");
    assert_eq!(response.headers()["access-control-allow-origin"], "*");

    if let Ok(path) = std::env::var("HOLDFAST_SCREENSHOT") {
        let shot = tokio::task::block_in_place(|| {
            cdp.call("Page.captureScreenshot", json!({"format": "png"}))
        });
        let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = root().join(path);
        std::fs::write(&path, png).expect("write the screenshot");
        eprintln!("screenshot saved to {}", path.display());
    }
}

/// The page's EventSource version (`transport=sse`) gets every message once and in order across
/// a zero-downtime upgrade with a Redis backplane: the old process ends the stream, and
/// EventSource reconnects — to the new process — with its `Last-Event-ID`.
#[tokio::test(flavor = "multi_thread")]
async fn the_browser_event_stream_gets_every_message_across_an_upgrade() {
    the_browser_gets_every_message_across_an_upgrade("sse").await;
}

/// The page's WebSocket version likewise: the old process closes the socket with 1001, and the
/// page reconnects — to the new process — with `?cursor=` its last message's.
#[tokio::test(flavor = "multi_thread")]
async fn the_browser_websocket_gets_every_message_across_an_upgrade() {
    the_browser_gets_every_message_across_an_upgrade("websocket").await;
}

async fn the_browser_gets_every_message_across_an_upgrade(transport: &str) {
    let redis = holdfast_tests::RedisServer::start().await;
    let files = tempfile::tempdir().expect("dir");
    let dir = files.path().display();
    let config = format!(
        r#"
server: {{ shutdown_grace: 3s, watch_interval: 0s, pid_file: "{dir}/holdfast.pid", upgrade_socket: "{dir}/upgrade.sock" }}
backplane: {{ redis: {{ url: "{}" }} }}
routes:
  - name: room-poll
    match: {{ path: "/rooms/{{room}}/poll", methods: [GET] }}
    longpoll: {{ channel: "room:{{room}}", format: batch, start: oldest }}
    cors: {{ origins: ["*"] }}
  - name: room-say
    match: {{ path: "/rooms/{{room}}/say", methods: [POST] }}
    publish: {{ channel: "room:{{room}}" }}
"#,
        redis.url()
    );
    let mut old = Holdfast::start(&config).await;
    let gateway = old.addr;
    let site = page_site().await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let say = async |text: &str| {
        let response = http
            .post(format!("http://{gateway}/rooms/up/say"))
            .json(&json!({"from": "test", "text": text}))
            .send()
            .await
            .expect("say");
        assert_eq!(response.status(), 201, "{text}");
    };
    let base = format!("http://{}/", site.addr);
    let url = format!(
        "{base}?gateway=http://{}&room=up&transport={transport}",
        old.addr
    );
    let chromium = tokio::task::block_in_place(|| Chromium::launch(&url));
    let mut cdp = chromium.page(&base).await;
    say("before the upgrade").await;
    page_shows(&mut cdp, "before the upgrade").await;
    let streams = format!("holdfast_subscribers{{route=\"room-poll\",transport=\"{transport}\"}}");
    assert_eq!(old.metric(&streams).await, Some(1.0));

    let new = old.start_upgrade();
    say("during the upgrade").await;
    assert_eq!(old.wait_exit(Duration::from_secs(30)).await, Some(0));
    say("after the upgrade").await;
    page_shows(&mut cdp, "after the upgrade").await;
    eventually(
        Duration::from_secs(20),
        "the page's stream on the new process",
        async || new.metric(&streams).await == Some(1.0),
    )
    .await;
    let texts: Vec<String> = shown(&mut cdp)
        .into_iter()
        .map(|shown| shown.split("test").last().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        texts,
        [
            "before the upgrade",
            "during the upgrade",
            "after the upgrade"
        ],
        "each message once, in order"
    );
}
