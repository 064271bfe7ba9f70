//! The monitoring artefacts: the Grafana dashboard and the Prometheus alert rules name only
//! metrics a running binary exports (driven through traffic that produces every family),
//! promtool accepts the rules, the scrape config and the rule tests, and the alert rules are
//! complete (severity, summary, the held-polls cap the shipped configs set).

use super::support::{on_path, read, run_tool, seconds, str_at, yaml};
use axum::routing::get;
use axum::Router;
use holdfast_tests::llm_providers::{Behaviour, Kind, Provider};
use holdfast_tests::{eventually, Holdfast, Origin, SIGHUP};
use serde_json::json;
use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Every `holdfast_…` name in `text`, with `_bucket`, `_sum` and `_count` of histograms kept
/// as written (the caller maps them to the family).
fn metric_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while let Some(found) = text[i..].find("holdfast_") {
        let start = i + found;
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(text.len() - start);
        if !preceded {
            names.insert(text[start..end].trim_end_matches('_').to_owned());
        }
        i = end;
    }
    names
}

/// The families a scrape declares (`# HELP name` and `# TYPE name` lines).
fn exported_families(scrape: &str) -> HashSet<String> {
    scrape
        .lines()
        .filter_map(|line| {
            line.strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
        })
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn missing_names(wanted: &BTreeSet<String>, scrape: &str) -> Vec<String> {
    let families = exported_families(scrape);
    wanted
        .iter()
        .filter(|name| {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| families.contains(*base));
            !families.contains(name.as_str()) && family.is_none()
        })
        .cloned()
        .collect()
}

/// A JWKS with one RSA public key (2048 bits; the private half was thrown away).
const JWKS: &str = r#"{"keys":[{"kty":"RSA","kid":"deploy-test","use":"sig","alg":"RS256","e":"AQAB","n":"1iqOvO6ripmYhwjmrf4uFOJzzcE0iyty7Pourmlx-0iMO1cE5Zy3KW2ydxqA9LFUYTlAbfgRudpnWC32Al_4CFPszJiicQezLA7a6Med7GNTQ3P9D6FJaBxUiU_xp7YfJ0VGn2kGvzIHJGAXfaqiYY-GOamvROANv0O4svscn3V5Vhd5gmKyL_bF_RoDQMQ5DugZucNyxFOZ44mThX-isi5Vs0z85MSI_mYwFpQdRvY72q2IJ7tRxidADU4tkDaDWeo0XPj1Uf3hEUrJuPYsxsz3Z-P6GdRxSKXBBNlHd51skcnKlpAiHRixP0bKHO2j9xrTujoaZ5dwH9iUh-etlw"}]}"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_and_alert_rules_name_only_exported_metrics() {
    let mut wanted = metric_names(&read("deploy/grafana/dashboards/holdfast.json"));
    wanted.extend(metric_names(&read("deploy/prometheus/alerts.yml")));
    for expected in [
        "holdfast_http_request_duration_seconds_bucket",
        "holdfast_publish_to_delivery_seconds_bucket",
        "holdfast_auth_failures_total",
        "holdfast_jwks_refresh_total",
        "holdfast_backplane_up",
    ] {
        assert!(
            wanted.contains(expected),
            "{expected} is not used: {wanted:?}"
        );
    }

    // A config whose traffic produces every family: a proxied route with a health-checked
    // upstream, a long-poll pair, a route behind an HMAC JWT provider and one behind a JWKS,
    // and a model whose first provider fails and whose fallback streams.
    let origin = Origin::echo().await;
    let failing = Provider::start(
        Kind::OpenAi,
        Behaviour::Error {
            status: 503,
            retry_after_secs: None,
        },
    )
    .await;
    let answering = Provider::start(
        Kind::OpenAi,
        Behaviour::Answer {
            reply: "hello there".to_owned(),
        },
    )
    .await;
    let jwks = Origin::start(Router::new().route(
        "/jwks.json",
        get(|| async { ([("content-type", "application/json")], JWKS) }),
    ))
    .await;
    let config = format!(
        r#"server: {{ shutdown_grace: 1s }}
auth:
  hs:
    jwt: {{ secret: "0123456789abcdef0123456789abcdef-deploy-test" }}
  idp:
    jwt: {{ jwks_url: "http://{jwks}/jwks.json" }}
upstreams:
  api: {{ targets: [{origin}], health_check: {{ path: /healthz, interval: 1s }} }}
  failing: {{ targets: [{failing}] }}
  answering: {{ targets: [{answering}] }}
llm:
  providers:
    failing: {{ kind: openai, upstream: failing, keys: [k] }}
    answering: {{ kind: openai, upstream: answering, keys: [k] }}
  models:
    chat: {{ targets: [{{ provider: failing, model: m }}], fallback: [{{ provider: answering, model: m }}] }}
routes:
  - {{ name: ai, match: {{ prefix: /v1 }}, llm: {{ cache: {{ ttl: 60s, allow_sampling: true }}, resumable: true }} }}
  - {{ name: api, match: {{ prefix: /api }}, upstream: api }}
  - {{ name: private, match: {{ prefix: /private }}, auth: {{ provider: hs }}, upstream: api }}
  - {{ name: partner, match: {{ prefix: /partner }}, auth: {{ provider: idp }}, upstream: api }}
  - {{ name: poll, match: {{ path: /poll, methods: [GET] }}, longpoll: {{ channel: updates, timeout: 30s }} }}
  - {{ name: push, match: {{ path: /push, methods: [POST] }}, publish: {{ channel: updates }} }}
"#,
        jwks = jwks.addr,
        origin = origin.addr,
        failing = failing.addr,
        answering = answering.addr,
    );
    let gw = Holdfast::start(&config).await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();

    let status = client
        .get(gw.url("/api/x"))
        .send()
        .await
        .expect("proxied")
        .status();
    statuses.push(format!("GET /api/x → {status} (want 200)"));
    let chat =
        json!({"model": "chat", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let status = client
        .post(gw.url("/v1/chat/completions"))
        .json(&chat)
        .send()
        .await
        .expect("chat");
    statuses.push(format!(
        "POST /v1/chat/completions → {} (want 200)",
        status.status()
    ));
    let stream = status
        .headers()
        .get("holdfast-stream")
        .and_then(|id| id.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let _ = status.text().await;
    let resumed = client
        .get(gw.url(&format!("/v1/streams/{stream}")))
        .send()
        .await
        .expect("resume");
    statuses.push(format!(
        "GET /v1/streams/<id> → {} (want 200)",
        resumed.status()
    ));
    let _ = resumed.text().await;
    let poll = tokio::spawn(client.get(gw.url("/poll")).send());
    eventually(Duration::from_secs(10), "a held poll", async || {
        gw.metric(r#"holdfast_longpoll_held{route="poll"}"#).await == Some(1.0)
    })
    .await;
    let status = client
        .post(gw.url("/push"))
        .json(&json!({"n": 1}))
        .send()
        .await
        .expect("push")
        .status();
    statuses.push(format!("POST /push → {status} (want 201)"));
    let status = poll.await.expect("join").expect("poll").status();
    statuses.push(format!("GET /poll → {status} (want 200)"));
    for path in ["/private/x", "/partner/x"] {
        let status = client
            .get(gw.url(path))
            .send()
            .await
            .expect("auth")
            .status();
        statuses.push(format!("GET {path} without a token → {status} (want 401)"));
    }
    let status = client
        .get(gw.url("/private/x"))
        .bearer_auth("not.a.token")
        .send()
        .await
        .expect("auth")
        .status();
    statuses.push(format!(
        "GET /private/x with a malformed token → {status} (want 401)"
    ));
    // A reload through SIGHUP.
    gw.write_config(&config);
    gw.signal(SIGHUP);
    eventually(
        Duration::from_secs(10),
        "the reload to be counted",
        async || {
            gw.metric(r#"holdfast_config_reloads_total{result="ok"}"#)
                .await
                >= Some(1.0)
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the health check to be counted",
        async || {
            gw.metric(r#"holdfast_upstream_healthy_targets{upstream="api"}"#)
                .await
                == Some(1.0)
        },
    )
    .await;

    // Some families appear only after their first event (a refresh in the background): give
    // them a few seconds before naming what is missing.
    let deadline = Instant::now() + Duration::from_secs(5);
    let missing = loop {
        let missing = missing_names(&wanted, &gw.metrics().await);
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        missing.is_empty(),
        "the dashboard or the alert rules use metrics the binary does not export: {missing:?}\n\
         traffic driven:\n  {}\nscrape:\n{}",
        statuses.join("\n  "),
        gw.metrics().await
    );
}

fn promtool() -> PathBuf {
    on_path("promtool").unwrap_or_else(|| {
        panic!(
            "promtool is not installed; `scripts/deps --test` installs it, or: \
             sudo apt-get update && sudo apt-get install -y prometheus"
        )
    })
}

#[test]
fn promtool_accepts_the_rules_the_scrape_config_and_the_rule_tests() {
    let promtool = promtool();
    for args in [
        &["check", "rules", "deploy/prometheus/alerts.yml"][..],
        &["check", "config", "deploy/prometheus/prometheus.yml"],
        // Synthetic series: each alert fires when it should and stays quiet when it should.
        &["test", "rules", "deploy/prometheus/alerts.test.yml"],
    ] {
        let (ok, output) = run_tool(&promtool, args);
        assert!(ok, "promtool {}:\n{output}", args.join(" "));
    }
}

#[test]
fn the_alert_rules_are_complete() {
    let alerts = yaml("deploy/prometheus/alerts.yml");
    let mut names = Vec::new();
    for group in alerts["groups"].as_sequence().expect("groups") {
        assert!(group["name"].is_string());
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = str_at(rule, &["alert"]);
            assert!(!str_at(rule, &["expr"]).is_empty(), "{name}: expr");
            assert!(
                ["warning", "critical"].contains(&str_at(rule, &["labels", "severity"])),
                "{name}: severity"
            );
            assert!(
                rule["annotations"]["summary"].is_string(),
                "{name}: summary"
            );
            if let Some(duration) = rule["for"].as_str() {
                seconds(duration);
            }
            names.push(name.to_owned());
        }
    }
    // The alert for held polls uses the cap the shipped configs set.
    let text = read("deploy/prometheus/alerts.yml");
    for config in [
        "deploy/holdfast.yaml",
        "deploy/container.yaml",
        "conf/example.yaml",
    ] {
        let max_held = yaml(config)["channels"]["max_held"]
            .as_u64()
            .expect("max_held");
        assert!(
            text.contains(&format!("0.9 * {max_held}")),
            "{config}: max_held {max_held}"
        );
    }
    for expected in [
        "HoldfastInstanceDown",
        "HoldfastBackplaneDown",
        "HoldfastHigh5xxRatio",
        "HoldfastHeldPollsNearCap",
        "HoldfastConfigReloadFailed",
        "HoldfastJwksRefreshFailing",
        "HoldfastJwksStale",
        "HoldfastLlmFallbackRateHigh",
        "HoldfastLlmProviderErrors",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "no {expected}: {names:?}"
        );
    }
}
