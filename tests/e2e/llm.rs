//! AI upstreams: the official OpenAI and Anthropic Python SDKs, unmodified, pointed at an `llm`
//! route, reach providers of both kinds (tests/llm_providers.rs: local servers speaking each
//! provider's wire format), streamed and not, with tool calls; a provider's keys are used in
//! turn and a refused key rests; a failing provider falls back to the next; and every bad input
//! gets its exact answer.

use holdfast_tests::llm_providers::{completion_tokens, prompt_tokens, Behaviour, Kind, Provider};
use holdfast_tests::{eventually, Holdfast};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// Runs tests/clients/llm_sdk.py: one chat with `sdk` through `gw`; what the SDK returned.
async fn sdk(sdk: &str, gw: &Holdfast, model: &str, stream: bool, tool: bool) -> Value {
    let mut args = vec![
        sdk.to_owned(),
        format!("http://{}", gw.addr),
        model.to_owned(),
        if stream { "stream" } else { "whole" }.to_owned(),
    ];
    if tool {
        args.push("tool".to_owned());
    }
    python_client("llm_sdk.py", &args).await
}

/// Runs the Python client tests/clients/`script` with `args`: the JSON line it printed.
pub(crate) async fn python_client(script: &str, args: &[String]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(script);
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .args(args)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("the client finished")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "{} printed no JSON: {stdout}\n{}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// A gateway in front of `openai` and `anthropic` fakes: alias `gpt` on the first, `claude` on
/// the second; `extra` adds YAML under `llm.models`.
async fn gateway(openai: &Provider, anthropic: &Provider, extra: &str) -> Holdfast {
    let routes = "  - { name: ai, match: { prefix: /v1 }, llm: {} }";
    Holdfast::start(&two_providers(openai, anthropic, extra, routes)).await
}

/// The config of [`gateway`], with `routes` (YAML list items) for its routes.
fn two_providers(openai: &Provider, anthropic: &Provider, extra: &str, routes: &str) -> String {
    format!(
        r#"
server: {{ shutdown_grace: 1s }}
upstreams:
  openai-api: {{ targets: ["{openai}"] }}
  anthropic-api: {{ targets: ["{anthropic}"] }}
llm:
  providers:
    openai: {{ kind: openai, upstream: openai-api, keys: [k1, k2], cooldown: 30s }}
    claude: {{ kind: anthropic, upstream: anthropic-api, keys: [a1] }}
  models:
    gpt: {{ targets: [{{ provider: openai, model: gpt-4o-mini }}] }}
    claude: {{ targets: [{{ provider: claude, model: claude-sonnet-4-5 }}] }}
{extra}
routes:
{routes}
"#,
        openai = openai.addr,
        anthropic = anthropic.addr,
    )
}

fn answer(reply: &str) -> Behaviour {
    Behaviour::Answer {
        reply: reply.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn both_sdks_reach_both_provider_kinds_streamed_and_whole() {
    let openai = Provider::start(Kind::OpenAi, answer("Hello from the OpenAI side")).await;
    let anthropic = Provider::start(Kind::Anthropic, answer("Hello from the Claude side")).await;
    let gw = gateway(&openai, &anthropic, "").await;
    for client in ["openai", "anthropic"] {
        for (alias, provider, reply) in [
            ("gpt", &openai, "Hello from the OpenAI side"),
            ("claude", &anthropic, "Hello from the Claude side"),
        ] {
            for stream in [false, true] {
                let before = provider.count();
                let got = sdk(client, &gw, alias, stream, false).await;
                let what = format!("{client} SDK → {alias}, stream {stream}: {got}");
                assert_eq!(got["text"], reply, "{what}");
                assert_eq!(got["model"], alias, "{what}");
                let finish = if client == "openai" {
                    "stop"
                } else {
                    "end_turn"
                };
                assert_eq!(got["finish"], finish, "{what}");
                // The provider got one request, in its own format, with the real model name.
                let requests = provider.requests();
                assert_eq!(requests.len(), before + 1, "{what}");
                let sent = &requests[before].body;
                let real = if alias == "gpt" {
                    "gpt-4o-mini"
                } else {
                    "claude-sonnet-4-5"
                };
                assert_eq!(sent["model"], real, "{what}");
                // Its usage reaches the client as the provider counted it.
                assert_eq!(got["input_tokens"], prompt_tokens(sent), "{what}");
                assert_eq!(got["output_tokens"], completion_tokens(reply), "{what}");
            }
        }
    }
    // Tokens are counted per provider and model.
    let text = gw.metrics().await;
    for (provider, model) in [("openai", "gpt-4o-mini"), ("claude", "claude-sonnet-4-5")] {
        let sample = format!(
            r#"holdfast_llm_tokens_total{{model="{model}",provider="{provider}",route="ai",type="output"}}"#
        );
        let output = holdfast_tests::metric_value(&text, &sample).unwrap_or(0.0);
        assert_eq!(
            output,
            4.0 * completion_tokens("Hello from the Claude side") as f64,
            "{sample}"
        );
        let requests = format!(
            r#"holdfast_llm_requests_total{{model="{model}",outcome="ok",provider="{provider}",route="ai"}}"#
        );
        assert_eq!(holdfast_tests::metric_value(&text, &requests), Some(4.0));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_calls_cross_between_the_formats() {
    let arguments = json!({"city": "Paris"});
    let tool = Behaviour::ToolCall {
        name: "get_weather".to_owned(),
        arguments: arguments.clone(),
    };
    let openai = Provider::start(Kind::OpenAi, tool.clone()).await;
    let anthropic = Provider::start(Kind::Anthropic, tool).await;
    let gw = gateway(&openai, &anthropic, "").await;
    for client in ["openai", "anthropic"] {
        for alias in ["gpt", "claude"] {
            for stream in [false, true] {
                let got = sdk(client, &gw, alias, stream, true).await;
                let what = format!("{client} SDK → {alias}, stream {stream}: {got}");
                assert_eq!(
                    got["tool"],
                    json!([{"name": "get_weather", "arguments": arguments}]),
                    "{what}"
                );
                let finish = if client == "openai" {
                    "tool_calls"
                } else {
                    "tool_use"
                };
                assert_eq!(got["finish"], finish, "{what}");
            }
        }
    }
    // The tool definition reached each provider in its own format.
    let sent = &openai.requests()[0].body;
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather");
    let sent = &anthropic.requests()[0].body;
    assert_eq!(sent["tools"][0]["name"], "get_weather");
    assert!(sent["tools"][0]["input_schema"].is_object());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_key_rests_and_a_failing_provider_falls_back() {
    let openai = Provider::start(Kind::OpenAi, answer("from openai")).await;
    let anthropic = Provider::start(Kind::Anthropic, answer("from claude")).await;
    let gw = gateway(
        &openai,
        &anthropic,
        r#"    backed: { targets: [{ provider: openai, model: gpt-4o-mini }], fallback: [{ provider: claude, model: claude-sonnet-4-5 }] }"#,
    )
    .await;
    // Key k1 is rate limited: the request is served with k2, and k1 rests after.
    openai.set_for_key(
        "k1",
        Behaviour::Error {
            status: 429,
            retry_after_secs: Some(30),
        },
    );
    for _ in 0..3 {
        let got = sdk("openai", &gw, "gpt", false, false).await;
        assert_eq!(got["text"], "from openai", "{got}");
    }
    assert_eq!(
        openai.keys(),
        ["k1", "k2", "k2", "k2"],
        "k1 rests after its 429"
    );
    // Every request to OpenAI fails now: `backed` falls back to Claude, in the client's format.
    openai.set(Behaviour::Error {
        status: 503,
        retry_after_secs: None,
    });
    let got = sdk("openai", &gw, "backed", true, false).await;
    assert_eq!(got["text"], "from claude", "{got}");
    assert_eq!(got["finish"], "stop", "{got}");
    let fallbacks = r#"holdfast_llm_fallbacks_total{from="openai",reason="5xx",route="ai"}"#;
    assert_eq!(gw.metric(fallbacks).await, Some(1.0));
    // Without a fallback, the alias's failure is the answer: 502 with each target's status.
    let response = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 502);
    assert_eq!(
        response.headers()["holdfast-upstreams"],
        "openai/gpt-4o-mini=503"
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["type"], "urn:holdfast:problem:providers-failed");
    assert_eq!(body["upstreams"], json!({"openai/gpt-4o-mini": "503"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_and_failing_providers_get_exact_answers() {
    let openai = Provider::start(Kind::OpenAi, answer("fine")).await;
    let anthropic = Provider::start(Kind::Anthropic, answer("fine")).await;
    let gw = gateway(&openai, &anthropic, "").await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| client.post(gw.url(path)).json(&body).send();

    // An unknown alias: 400 listing the known ones.
    let response = post(
        "/v1/chat/completions",
        json!({"model": "gtp", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
    .expect("post");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["models"], json!(["claude", "gpt"]));
    assert_eq!(
        body["detail"],
        "model `gtp` is not served here; the models are: claude, gpt"
    );
    assert_eq!(body["error"]["param"], "model");

    // A body that is not the door's format: 400 naming the field.
    let response = post("/v1/messages", json!({"model": "claude", "messages": []}))
        .await
        .expect("post");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["type"], "urn:holdfast:problem:bad-request");
    assert!(body["field"].is_string(), "{body}");
    let response = client
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["field"], "body");

    // A tool call that cannot be translated (its arguments are not a JSON object): 400.
    let response = post(
        "/v1/chat/completions",
        json!({"model": "claude", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "not json"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
        ]}),
    )
    .await
    .expect("post");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["type"], "urn:holdfast:problem:untranslatable");
    assert!(
        body["field"]
            .as_str()
            .is_some_and(|field| field.starts_with("messages[1].tool_calls[0]")),
        "{body}"
    );
    assert_eq!(anthropic.count(), 0, "nothing was sent");

    // A provider answering something that is not JSON: 502.
    openai.set(Behaviour::NotJson);
    let response = post(
        "/v1/chat/completions",
        json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
    .expect("post");
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["type"], "urn:holdfast:problem:provider-bad-answer");

    // A provider that stops mid-stream: the client's stream ends with an error event.
    openai.set(Behaviour::DisconnectMidStream {
        reply: "this answer will not finish".to_owned(),
        after_chunks: 2,
    });
    let response = post(
        "/v1/chat/completions",
        json!({"model": "gpt", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
    .expect("post");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("stream");
    assert!(text.contains(r#""type":"upstream_error""#), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let counted = r#"holdfast_llm_requests_total{model="gpt-4o-mini",outcome="stream_error",provider="openai",route="ai"}"#;
    assert_eq!(gw.metric(counted).await, Some(1.0));

    // Every key of the provider refused and resting: 503 with the soonest Retry-After.
    anthropic.set(Behaviour::Error {
        status: 429,
        retry_after_secs: Some(40),
    });
    let ask = json!({"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let first = post("/v1/messages", ask.clone()).await.expect("post");
    assert_eq!(first.status(), 503, "its one key answered 429");
    let response = post("/v1/messages", ask).await.expect("post");
    assert_eq!(response.status(), 503);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((35..=40).contains(&retry), "{retry}");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["type"], "urn:holdfast:problem:keys-resting");
    assert_eq!(anthropic.count(), 1, "the resting key was not used");

    // `GET /v1/models` lists the aliases.
    let models: Value = client
        .get(gw.url("/v1/models"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["claude", "gpt"]);
    eventually(Duration::from_secs(5), "no panic in the log", async || {
        !gw.log().contains("panicked")
    })
    .await;
}

#[test]
fn the_example_config_passes_check() {
    // This machine resolves no public names: the providers' hosts are pointed at loopback.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("conf/llm.example.yaml")).expect("example");
    let text = text
        .replace("api.openai.com:443", "127.0.0.1:443")
        .replace("api.anthropic.com:443", "127.0.0.1:443");
    let dir = tempfile::tempdir().expect("dir");
    std::fs::copy(
        root.join("conf/llm.keys.yaml"),
        dir.path().join("llm.keys.yaml"),
    )
    .expect("keys");
    let path = dir.path().join("llm.example.yaml");
    std::fs::write(&path, text).expect("write");
    let (code, stdout, stderr) =
        holdfast_tests::run_holdfast(&["check", &path.display().to_string()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_too_slow_to_start_falls_back_and_the_access_log_names_what_served() {
    let slow = Provider::start(Kind::OpenAi, Behaviour::Stall { millis: 3000 }).await;
    let quick = Provider::start(Kind::Anthropic, answer("quick and sure")).await;
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("access.log");
    let config = format!(
        r#"
server: {{ shutdown_grace: 1s }}
access_log: {{ path: {log} }}
upstreams:
  slow-api: {{ targets: ["{slow}"] }}
  quick-api: {{ targets: ["{quick}"] }}
llm:
  providers:
    slow: {{ kind: openai, upstream: slow-api, keys: [s1] }}
    quick: {{ kind: anthropic, upstream: quick-api, keys: [q1] }}
  models:
    patient:
      targets: [{{ provider: slow, model: big-model }}]
      fallback: [{{ provider: quick, model: small-model }}]
      first_byte_timeout: 300ms
routes:
  - {{ name: ai, match: {{ prefix: /v1 }}, llm: {{}} }}
"#,
        log = log.display(),
        slow = slow.addr,
        quick = quick.addr,
    );
    let path = dir.path().join("holdfast.yaml");
    let gw = Holdfast::start_in(dir, path, &config).await;
    let got = sdk("openai", &gw, "patient", true, false).await;
    assert_eq!(got["text"], "quick and sure", "{got}");
    let fallbacks =
        r#"holdfast_llm_fallbacks_total{from="slow",reason="first_byte_timeout",route="ai"}"#;
    assert_eq!(gw.metric(fallbacks).await, Some(1.0));
    let sent = &quick.requests()[0].body;
    let line = {
        let mut found = None;
        eventually(Duration::from_secs(5), "the access log line", async || {
            found = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|line| line["route"] == "ai");
            found.is_some()
        })
        .await;
        found.expect("line")
    };
    assert_eq!(line["llm_provider"], "quick", "{line}");
    assert_eq!(line["llm_model"], "small-model", "{line}");
    assert_eq!(line["llm_fallbacks"], 1, "{line}");
    assert_eq!(line["llm_input_tokens"], prompt_tokens(sent), "{line}");
    assert_eq!(
        line["llm_output_tokens"],
        completion_tokens("quick and sure"),
        "{line}"
    );
    assert!(
        !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("q1"),
        "no key logged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_routes_mapping_applies_before_translation() {
    // A client of the seed's shape (`inputText` for its conversation) reaches an Anthropic
    // provider: the route's mapping renames the field to `messages`, then it is translated.
    let openai = Provider::start(Kind::OpenAi, answer("unused")).await;
    let anthropic = Provider::start(Kind::Anthropic, answer("mapped and translated")).await;
    let config = format!(
        r#"
server: {{ shutdown_grace: 1s }}
upstreams:
  anthropic-api: {{ targets: ["{anthropic}"] }}
llm:
  providers:
    claude: {{ kind: anthropic, upstream: anthropic-api, keys: [a1] }}
  models:
    claude: {{ targets: [{{ provider: claude, model: claude-sonnet-4-5 }}] }}
routes:
  - name: ai
    match: {{ prefix: /v1 }}
    map:
      request:
        - rename: {{ from: body.inputText, to: body.messages }}
    llm: {{}}
"#,
        anthropic = anthropic.addr,
    );
    let gw = Holdfast::start(&config).await;
    let response = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "claude", "inputText": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "mapped and translated"
    );
    let sent = &anthropic.requests()[0].body;
    assert_eq!(sent["messages"][0]["role"], "user", "{sent}");
    assert!(sent.get("inputText").is_none(), "{sent}");
    assert_eq!(openai.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_over_an_llm_route_answers_202_and_its_answer_is_long_polled() {
    let openai = Provider::start(Kind::OpenAi, answer("unused")).await;
    let anthropic = Provider::start(Kind::Anthropic, Behaviour::Stall { millis: 700 }).await;
    let routes =
        "  - { name: ai-jobs, match: { prefix: /jobs }, llm: {}, job: { ttl: 60s, timeout: 10s } }";
    let config = two_providers(&openai, &anthropic, "", routes);
    let gw = Holdfast::start(&config).await;
    let client = reqwest::Client::new();
    let chat = |model: &str, stream: bool| {
        json!({"model": model, "stream": stream,
               "messages": [{"role": "user", "content": "take your time"}]})
    };

    let start = |body: Value| {
        client
            .post(gw.url("/jobs/v1/chat/completions"))
            .json(&body)
            .send()
    };

    // The POST answers 202 at once, while the provider still stalls.
    let response = start(chat("claude", false)).await.expect("post");
    assert_eq!(response.status(), 202);
    let started: Value = response.json().await.expect("json");
    let poll = started["poll"].as_str().expect("a poll path").to_owned();
    assert_eq!(
        poll,
        format!("/jobs/{}", started["job"].as_str().expect("id"))
    );
    let now = client
        .get(gw.url(&format!("{poll}?wait=0")))
        .send()
        .await
        .expect("poll");
    assert_eq!(now.status(), 204, "the answer is not there yet");

    // A held poll gets the translated answer when the provider gives it.
    let response = client.get(gw.url(&poll)).send().await.expect("poll");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        holdfast_tests::llm_providers::STALL_REPLY,
        "{body}"
    );
    assert_eq!(body["model"], "claude");
    assert_eq!(anthropic.requests()[0].body["model"], "claude-sonnet-4-5");
    // And again, until the ttl.
    let again = client.get(gw.url(&poll)).send().await.expect("poll");
    assert_eq!(again.status(), 200);

    // A job whose every target fails keeps the refusal the client would have had at once.
    openai.set(Behaviour::Error {
        status: 500,
        retry_after_secs: None,
    });
    let response = client
        .post(gw.url("/jobs/v1/messages"))
        .json(&json!({"model": "gpt", "max_tokens": 64,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 202);
    let started: Value = response.json().await.expect("json");
    let poll = started["poll"].as_str().expect("a poll path");
    let response = client.get(gw.url(poll)).send().await.expect("poll");
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["type"], "urn:holdfast:problem:providers-failed");
    assert_eq!(
        body["error"]["type"], "api_error",
        "the Anthropic door's error"
    );

    // The models list is served under the prefix.
    let models: Value = client
        .get(gw.url("/jobs/v1/models"))
        .send()
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    assert_eq!(models["data"][0]["id"], "claude");

    // Bad input is refused at once, not kept as a job.
    let before = anthropic.count();
    let response = start(chat("claude", true)).await.expect("post");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        (&body["type"], &body["field"], &body["detail"]),
        (
            &json!("urn:holdfast:problem:bad-request"),
            &json!("stream"),
            &json!("stream: a job keeps the whole answer for its polls; ask without `stream`")
        )
    );
    let response = start(chat("gtp", false)).await.expect("post");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["type"], "urn:holdfast:problem:unknown-model");
    let response = client
        .get(gw.url("/jobs/0123456789abcdef"))
        .send()
        .await
        .expect("poll");
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body["detail"],
        "there is no job `0123456789abcdef` for this caller"
    );
    assert_eq!(anthropic.count(), before, "nothing was sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_are_cached_replayed_as_they_were_and_shared_in_flight() {
    let openai = Provider::start(Kind::OpenAi, answer("Kept for later")).await;
    let anthropic = Provider::start(Kind::Anthropic, answer("unused")).await;
    let routes = "  - { name: strict, match: { prefix: /strict }, llm: { cache: { ttl: 60s, max_entry: 2KiB } } }
  - { name: ai, match: { prefix: /v1 }, llm: { cache: { ttl: 60s, allow_sampling: true } } }";
    let config = two_providers(&openai, &anthropic, "", routes);
    let gw = Holdfast::start(&config).await;
    let client = reqwest::Client::new();
    let chat = |stream: bool, temperature: f64| {
        json!({"model": "gpt", "stream": stream, "temperature": temperature,
               "messages": [{"role": "user", "content": "remember this"}]})
    };
    let post = |body: Value, cache_control: Option<&'static str>| {
        let mut request = client
            .post(gw.url("/strict/v1/chat/completions"))
            .json(&body);
        if let Some(value) = cache_control {
            request = request.header("cache-control", value);
        }
        async move {
            let response = request.send().await.expect("post");
            let status = response.status().as_u16();
            let cache = response
                .headers()
                .get("holdfast-cache")
                .map(|v| v.to_str().unwrap_or("?").to_owned());
            let kind = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap_or("?").to_owned());
            let bytes = response.bytes().await.expect("body");
            (status, cache, kind, bytes)
        }
    };

    // A streamed answer is kept as the events the client got, and replayed byte for byte.
    let first = post(chat(true, 0.0), None).await;
    assert_eq!((first.0, first.1.as_deref()), (200, Some("miss")));
    let again = post(chat(true, 0.0), None).await;
    assert_eq!((again.0, again.1.as_deref()), (200, Some("hit")));
    assert_eq!(again.2.as_deref(), Some("text/event-stream"));
    assert_eq!(again.3, first.3, "the same events, byte for byte");
    assert!(String::from_utf8_lossy(&again.3).contains("data: [DONE]"));
    assert_eq!(openai.count(), 1);

    // A whole answer is another entry, kept as its JSON.
    let whole = post(chat(false, 0.0), None).await;
    assert_eq!(whole.1.as_deref(), Some("miss"));
    let whole_again = post(chat(false, 0.0), None).await;
    assert_eq!(whole_again.1.as_deref(), Some("hit"));
    assert_eq!(whole_again.3, whole.3);
    assert_eq!(openai.count(), 2);

    // Sampling requests, and `no-store`, go to the provider every time; `no-cache` does too,
    // and its answer is kept for the next.
    for _ in 0..2 {
        let sampled = post(chat(false, 0.7), None).await;
        assert_eq!((sampled.0, sampled.1.as_deref()), (200, Some("bypass")));
    }
    let no_store = post(chat(false, 0.0), Some("no-store")).await;
    assert_eq!(no_store.1.as_deref(), Some("bypass"));
    assert_eq!(openai.count(), 5);
    let mut fresh = chat(false, 0.0);
    fresh["messages"][0]["content"] = json!("something new");
    let no_cache = post(fresh.clone(), Some("max-age=0, no-cache")).await;
    assert_eq!(no_cache.1.as_deref(), Some("miss"));
    assert_eq!(post(fresh, None).await.1.as_deref(), Some("hit"));
    assert_eq!(openai.count(), 6);

    // An answer larger than `max_entry` is served, not kept, and counted.
    openai.set(answer(&"a long answer ".repeat(200)));
    let mut long = chat(false, 0.0);
    long["messages"][0]["content"] = json!("tell me at length");
    for _ in 0..2 {
        let served = post(long.clone(), None).await;
        assert_eq!((served.0, served.1.as_deref()), (200, Some("miss")));
        assert!(served.3.len() > 2048);
    }
    assert_eq!(openai.count(), 8);

    // Identical requests in flight share one call.
    openai.set(Behaviour::Stall { millis: 500 });
    let mut slow = chat(false, 0.0);
    slow["messages"][0]["content"] = json!("take your time");
    let (a, b) = tokio::join!(post(slow.clone(), None), post(slow, None));
    assert_eq!((a.0, b.0), (200, 200));
    assert_eq!(a.3, b.3);
    assert_eq!(openai.count(), 9, "one call for both");

    let text = gw.metrics().await;
    for (result, expected) in [
        ("hit", 3.0),
        ("miss", 6.0),
        ("bypass", 3.0),
        ("too_large", 2.0),
        ("coalesced", 1.0),
    ] {
        let sample = format!(r#"holdfast_llm_cache_total{{result="{result}",route="strict"}}"#);
        assert_eq!(
            holdfast_tests::metric_value(&text, &sample),
            Some(expected),
            "{sample}"
        );
    }

    // The OpenAI SDK streams the same answer from the provider, then from the cache.
    openai.set(answer("Kept for later"));
    let before = openai.count();
    let asked = sdk("openai", &gw, "gpt", true, false).await;
    let replayed = sdk("openai", &gw, "gpt", true, false).await;
    assert_eq!(asked["text"], "Kept for later", "{asked}");
    assert_eq!(replayed, asked);
    assert_eq!(openai.count(), before + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_kept_in_redis_serves_every_instance() {
    let redis = holdfast_tests::RedisServer::start().await;
    let openai = Provider::start(Kind::OpenAi, answer("Shared by all")).await;
    let config = format!(
        r#"
server: {{ shutdown_grace: 1s }}
backplane: {{ redis: {{ url: "{redis}" }} }}
upstreams:
  openai-api: {{ targets: ["{openai}"] }}
llm:
  providers:
    openai: {{ kind: openai, upstream: openai-api, keys: [k1] }}
  models:
    gpt: {{ targets: [{{ provider: openai, model: gpt-4o-mini }}] }}
routes:
  - {{ name: ai, match: {{ prefix: /v1 }}, llm: {{ cache: {{ ttl: 60s, store: redis }} }} }}
"#,
        redis = redis.url(),
        openai = openai.addr,
    );
    let a = Holdfast::start(&config).await;
    let b = Holdfast::start(&config).await;
    let client = reqwest::Client::new();
    let chat = json!({"model": "gpt", "temperature": 0,
                      "messages": [{"role": "user", "content": "same everywhere"}]});
    let mut bodies = Vec::new();
    for (gw, expected) in [(&a, "miss"), (&b, "hit"), (&a, "hit")] {
        let response = client
            .post(gw.url("/v1/chat/completions"))
            .json(&chat)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response
                .headers()
                .get("holdfast-cache")
                .and_then(|v| v.to_str().ok()),
            Some(expected)
        );
        bodies.push(response.bytes().await.expect("body"));
    }
    assert_eq!(bodies[1], bodies[0]);
    assert_eq!(bodies[2], bodies[0]);
    assert_eq!(openai.count(), 1);
}

/// A gateway with alias `gpt` on `openai`, `extra` at the top level, and one route with the
/// token quota `limit`.
fn quota_config(openai: &Provider, extra: &str, limit: &str) -> String {
    format!(
        r#"
server: {{ shutdown_grace: 1s }}
{extra}
upstreams:
  openai-api: {{ targets: ["{openai}"] }}
llm:
  providers:
    openai: {{ kind: openai, upstream: openai-api, keys: [k1] }}
  models:
    gpt: {{ targets: [{{ provider: openai, model: gpt-4o-mini }}] }}
routes:
  - name: ai
    match: {{ prefix: /v1 }}
    llm: {{}}
    token_limits: [{limit}]
"#,
        openai = openai.addr,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spend_budget_is_charged_at_the_models_prices_and_refuses_once_spent() {
    // 100 output tokens at $10 per million: 1,000 micro-dollars, the whole budget of $0.001.
    let openai = Provider::start(Kind::OpenAi, answer(&"word ".repeat(100))).await;
    let config = with_budgets(quota_config(&openai, "", "{ key: ip, budget: 0.001/2s }"));
    let gw = Holdfast::start(&config).await;
    // The first is charged its estimate (about 70 micro-dollars), then what it cost.
    let (refused, header) = served_then_refused(&gw).await;
    let retry: u64 = header("retry-after").parse().expect("seconds");
    assert_eq!(
        header("ratelimit-policy"),
        r#""spend:ip:0.001/2s";q=1000;w=2"#
    );
    assert_eq!(
        header("ratelimit"),
        format!(r#""spend:ip:0.001/2s";r=0;t={retry}"#)
    );
    let body: Value = refused.json().await.expect("json");
    assert_eq!(
        body,
        json!({"type": "urn:holdfast:problem:spend-limited", "title": "Too Many Requests",
               "status": 429,
               "detail": format!("spend budget `spend:ip:0.001/2s` exceeded; retry in {retry}s")})
    );
    assert_eq!(openai.count(), 1, "the refused request was not sent");
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let again = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .json(&quota_chat())
        .send()
        .await
        .expect("post");
    assert_eq!(again.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resumable_answer_is_charged_its_usage_though_its_client_left() {
    let openai = Provider::start(Kind::OpenAi, answer(&"word ".repeat(100))).await;
    let config = quota_config(&openai, "", "{ key: ip, tokens: 60/2s }")
        .replace("llm: {}", "llm: { resumable: true }");
    let gw = Holdfast::start(&config).await;
    let client = reqwest::Client::new();
    let mut chat = quota_chat();
    chat["stream"] = json!(true);
    // The client leaves as soon as the head is in; the answer is read to its end all the same.
    let id = crate::llm_resume::start_and_leave(&gw, "none", &chat).await;
    crate::llm_resume::poll_to_end(&gw, &id, "none").await;
    // Its usage (about 100 tokens) was settled when it ended: the quota is in debt.
    let next = client
        .post(gw.url("/v1/chat/completions"))
        .json(&quota_chat())
        .send()
        .await
        .expect("post");
    assert_eq!(next.status(), 429);
    assert_eq!(openai.count(), 1);
}

/// A request charged about 23 tokens up front (its bytes ÷ 4, and `max_tokens`): two would fit
/// in a quota of 60, but the answer's real usage is settled after.
fn quota_chat() -> Value {
    json!({"model": "gpt", "max_tokens": 5, "messages": [{"role": "user", "content": "go on"}]})
}

/// Posts [`quota_chat`] to `gw` twice: the first is served and spends the quota, the second
/// is refused; the refusal, and the header a quota's refusal is read by.
async fn served_then_refused(gw: &Holdfast) -> (reqwest::Response, impl Fn(&str) -> String) {
    let client = reqwest::Client::new();
    let post = || {
        client
            .post(gw.url("/v1/chat/completions"))
            .json(&quota_chat())
            .send()
    };
    assert_eq!(post().await.expect("post").status(), 200);
    let refused = post().await.expect("post");
    assert_eq!(refused.status(), 429);
    let headers = refused.headers().clone();
    let header = move |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_default()
    };
    (refused, header)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_quota_refuses_once_spent_and_serves_again_after_its_window() {
    // Each answer is 100 words: 100 output tokens, more than the quota's 60 per 2 s.
    let openai = Provider::start(Kind::OpenAi, answer(&"word ".repeat(100))).await;
    let gw = Holdfast::start(&quota_config(&openai, "", "{ key: ip, tokens: 60/2s }")).await;
    let client = reqwest::Client::new();
    let chat = quota_chat();
    let post = || {
        client
            .post(gw.url("/v1/chat/completions"))
            .json(&chat)
            .send()
    };

    // The first fits its estimate; its real usage (about 100 tokens) leaves a debt.
    let (refused, header) = served_then_refused(&gw).await;
    let retry: u64 = header("retry-after")
        .parse()
        .expect("Retry-After in seconds");
    assert!(
        (2..=5).contains(&retry),
        "a debt of about 100 tokens at 30/s: {retry}"
    );
    assert_eq!(header("ratelimit-policy"), r#""tokens:ip:60/2s";q=60;w=2"#);
    assert_eq!(
        header("ratelimit"),
        format!(r#""tokens:ip:60/2s";r=0;t={retry}"#)
    );
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["type"], "urn:holdfast:problem:token-limited");
    assert_eq!(
        body["detail"],
        format!("token quota `tokens:ip:60/2s` exceeded; retry in {retry}s")
    );
    assert_eq!(openai.count(), 1, "the refused request was not sent");

    // Once the window has passed, the quota serves again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(post().await.expect("post").status(), 200);
    assert_eq!(openai.count(), 2);
    let text = gw.metrics().await;
    let sample = r#"holdfast_ratelimit_rejections_total{limit="tokens:ip:60/2s",route="ai"}"#;
    assert_eq!(holdfast_tests::metric_value(&text, sample), Some(1.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_quota_is_shared_by_the_instances_through_redis() {
    let limit = "{ key: header.x-team, tokens: 60/m, name: team-tokens }";
    let refused = shared_through_redis(|config| config, limit).await;
    assert_eq!(refused["ratelimit-policy"], r#""team-tokens";q=60;w=60"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spend_budget_is_shared_by_the_instances_through_redis() {
    // 100 output tokens at $10 per million: 1,000 micro-dollars, the whole budget.
    let limit = "{ key: header.x-team, budget: 0.001/m, name: team-dollars }";
    let refused = shared_through_redis(with_budgets, limit).await;
    assert_eq!(refused["ratelimit-policy"], r#""team-dollars";q=1000;w=60"#);
}

/// [`quota_config`]'s limit as a spend budget, at $1 and $10 per million tokens.
fn with_budgets(config: String) -> String {
    config.replace("token_limits:", "spend_limits:").replace(
        "  models:",
        "  prices: { gpt-4o-mini: { input: 1, output: 10 } }\n  models:",
    )
}

/// Two instances sharing Redis, with the limit `limit` per `x-team` (`edit` makes the config
/// from [`quota_config`]'s): team red spends it on one and is refused on the other, team blue
/// is not touched. The refusal's headers.
async fn shared_through_redis(
    edit: fn(String) -> String,
    limit: &str,
) -> reqwest::header::HeaderMap {
    let redis = holdfast_tests::RedisServer::start().await;
    let openai = Provider::start(Kind::OpenAi, answer(&"word ".repeat(100))).await;
    let backplane = format!("backplane: {{ redis: {{ url: \"{}\" }} }}", redis.url());
    let config = edit(quota_config(&openai, &backplane, limit));
    let a = Holdfast::start(&config).await;
    let b = Holdfast::start(&config).await;
    let client = reqwest::Client::new();
    let chat = quota_chat();
    let post = |gw: &Holdfast, team: &str| {
        client
            .post(gw.url("/v1/chat/completions"))
            .header("x-team", team)
            .json(&chat)
            .send()
    };
    assert_eq!(post(&a, "red").await.expect("post").status(), 200);
    let refused = post(&b, "red").await.expect("post");
    assert_eq!(refused.status(), 429);
    let headers = refused.headers().clone();
    let body: Value = refused.json().await.expect("json");
    let kind = if config.contains("spend_limits") {
        "spend-limited"
    } else {
        "token-limited"
    };
    assert_eq!(
        body["type"],
        format!("urn:holdfast:problem:{kind}").as_str()
    );
    assert_eq!(post(&b, "blue").await.expect("post").status(), 200);
    assert_eq!(openai.count(), 2);
    headers
}
