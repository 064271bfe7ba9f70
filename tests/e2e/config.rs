//! Configuration: `holdfast check`, refusing to start on a bad config, directories of route
//! files, reload on SIGHUP and on file change (an invalid new config keeps the old one), and
//! shutdown on SIGTERM within the configured grace.

use axum::routing::get;
use axum::Router;
use holdfast_tests::{eventually, run_holdfast, Holdfast, Origin, SIGHUP, SIGTERM};
use std::time::{Duration, Instant};

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

#[test]
fn check_names_file_line_and_nearest_key_for_an_unknown_key() {
    let dir = tempfile::tempdir().expect("dir");
    let file = write(
        &dir,
        "bad.yaml",
        "listen: 127.0.0.1:8080\nroutes:\n  - name: a\n    upstrem: x\n",
    );
    let (code, _, stderr) = run_holdfast(&["check", &file]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!(
            "{file}:4:5: routes[0]: unknown key `upstrem` (did you mean `upstream`?)"
        )),
        "{stderr}"
    );
}

#[test]
fn check_reports_every_semantic_error_with_its_line() {
    let dir = tempfile::tempdir().expect("dir");
    let file = write(
        &dir,
        "bad.yaml",
        "listen: 127.0.0.1:8080\nupstreams:\n  billing: { targets: [127.0.0.1:9000] }\nroutes:\n  - name: a\n    upstream: biling\n  - name: a\n    match: { path: \"/u/{id\" }\n    upstream: billing\n",
    );
    let (code, _, stderr) = run_holdfast(&["check", &file]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!(
            "{file}:6:5: routes[0].upstream: unknown upstream `biling` (did you mean `billing`?)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:7:5: routes[1].name: duplicate route name `a`"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:8:14: routes[1].match.path: `/u/{{id`: a capture must be a whole segment"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("3 error(s)"), "{stderr}");
}

#[test]
fn check_names_the_line_of_a_malformed_duration_and_of_broken_yaml() {
    let dir = tempfile::tempdir().expect("dir");
    let file = write(
        &dir,
        "d.yaml",
        "upstreams:\n  ai:\n    targets: [127.0.0.1:1]\n    timeout: soon\n",
    );
    let (code, _, stderr) = run_holdfast(&["check", &file]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!(
            "{file}:4:14: upstreams.ai: invalid duration `soon`"
        )),
        "{stderr}"
    );

    let file = write(
        &dir,
        "y.yaml",
        "listen: 127.0.0.1:8080\nroutes:\n  - name: [unclosed\n",
    );
    let (code, _, stderr) = run_holdfast(&["check", &file]);
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with(&format!("{file}:4:")) || stderr.starts_with(&format!("{file}:3:")),
        "{stderr}"
    );
}

#[test]
fn an_invalid_config_does_not_start() {
    let dir = tempfile::tempdir().expect("dir");
    let file = write(
        &dir,
        "bad.yaml",
        "listen: 127.0.0.1:8080\nroutes:\n  - name: a\n    upstream: nowhere\n",
    );
    let (code, _, stderr) = run_holdfast(&["run", "-c", &file]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("routes[0].upstream: unknown upstream `nowhere`; no upstreams are defined"),
        "{stderr}"
    );
}

#[test]
fn the_example_configs_pass_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("root");
    let example = root.join("conf/example.yaml");
    let (code, stdout, stderr) = run_holdfast(&["check", &example.display().to_string()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_of_route_files_is_one_config() {
    let origin = Origin::echo().await;
    let dir = tempfile::tempdir().expect("dir");
    let routes = dir.path().join("routes");
    std::fs::create_dir(&routes).expect("mkdir");
    std::fs::write(
        routes.join("20-b.yaml"),
        "routes:\n  - { name: b, match: { path: /b }, upstream: o }\n",
    )
    .expect("write");
    std::fs::write(
        routes.join("30-dup.yml"),
        "routes:\n  - { name: b, match: { path: /dup }, upstream: o }\n",
    )
    .expect("write");
    let main = format!(
        "listen: {{listen}}\nadmin: {{admin}}\nupstreams:\n  o: {{ targets: [{}] }}\n",
        origin.addr
    );
    std::fs::write(
        routes.join("10-main.yaml"),
        main.replace("{listen}", "127.0.0.1:1")
            .replace("{admin}", "127.0.0.1:2"),
    )
    .expect("write");
    let (code, _, stderr) = run_holdfast(&["check", &routes.display().to_string()]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("30-dup.yml:2:7: routes[1].name: duplicate route name `b`"),
        "{stderr}"
    );

    std::fs::remove_file(routes.join("30-dup.yml")).expect("rm");
    std::fs::write(
        routes.join("30-c.yml"),
        "routes:\n  - { name: c, match: { path: /c }, upstream: o }\n",
    )
    .expect("write");
    let gw = Holdfast::start_serving(dir, routes.join("10-main.yaml"), routes.clone(), &main).await;
    for path in ["/b", "/c"] {
        assert_eq!(
            reqwest::get(gw.url(path)).await.expect("get").status(),
            200,
            "{path}"
        );
    }
}

const RELOAD_V1: &str = "server: { shutdown_grace: 1s, watch_interval: 0s }\nupstreams:\n  o: { targets: [ORIGIN] }\nroutes:\n  - { name: one, match: { path: /one }, upstream: o }\n  - { name: slow, match: { path: /slow }, upstream: o }\n";

#[tokio::test(flavor = "multi_thread")]
async fn sighup_swaps_routes_and_refuses_an_invalid_config() {
    let origin = Origin::start(
        Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    "slow done"
                }),
            )
            .fallback(holdfast_tests::origin::echo),
    )
    .await;
    let v1 = RELOAD_V1.replace("ORIGIN", &origin.addr.to_string());
    let gw = Holdfast::start(&v1).await;
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(gw.url("/one"))
            .send()
            .await
            .expect("get")
            .status(),
        200
    );
    assert_eq!(
        client
            .get(gw.url("/two"))
            .send()
            .await
            .expect("get")
            .status(),
        404
    );

    // An in-flight request finishes on the table it started with.
    let in_flight = tokio::spawn({
        let url = gw.url("/slow");
        async move {
            reqwest::get(url)
                .await
                .expect("slow")
                .text()
                .await
                .expect("text")
        }
    });
    eventually(
        Duration::from_secs(5),
        "the slow request to reach the origin",
        async || origin.seen().iter().any(|s| s.uri == "/slow"),
    )
    .await;
    gw.write_config(
        &v1.replace(
            "name: one, match: { path: /one }",
            "name: two, match: { path: /two }",
        )
        .replace(
            "  - { name: slow, match: { path: /slow }, upstream: o }\n",
            "",
        ),
    );
    gw.signal(SIGHUP);
    eventually(Duration::from_secs(5), "the reload", async || {
        gw.metric(r#"holdfast_config_reloads_total{result="ok"}"#)
            .await
            == Some(1.0)
    })
    .await;
    assert_eq!(
        client
            .get(gw.url("/two"))
            .send()
            .await
            .expect("get")
            .status(),
        200
    );
    assert_eq!(
        client
            .get(gw.url("/one"))
            .send()
            .await
            .expect("get")
            .status(),
        404
    );
    assert_eq!(in_flight.await.expect("join"), "slow done");

    // An invalid config is refused; the running one keeps serving.
    gw.write_config("routes:\n  - { name: bad, upstream: missing }\n");
    gw.signal(SIGHUP);
    eventually(Duration::from_secs(5), "the refused reload", async || {
        gw.metric(r#"holdfast_config_reloads_total{result="error"}"#)
            .await
            == Some(1.0)
    })
    .await;
    assert_eq!(
        client
            .get(gw.url("/two"))
            .send()
            .await
            .expect("get")
            .status(),
        200
    );
    let log = gw.log();
    assert!(log.contains("configuration reload refused"), "{log}");
    assert!(
        log.contains("routes[0].upstream: unknown upstream `missing`"),
        "{log}"
    );

    // Unparsable YAML too.
    gw.write_config("routes: [unclosed\n");
    gw.signal(SIGHUP);
    eventually(
        Duration::from_secs(5),
        "the second refused reload",
        async || {
            gw.metric(r#"holdfast_config_reloads_total{result="error"}"#)
                .await
                == Some(2.0)
        },
    )
    .await;
    assert_eq!(
        client
            .get(gw.url("/two"))
            .send()
            .await
            .expect("get")
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_config_file_is_reloaded_without_a_signal() {
    let origin = Origin::echo().await;
    let v1 = RELOAD_V1
        .replace("ORIGIN", &origin.addr.to_string())
        .replace("watch_interval: 0s", "watch_interval: 100ms");
    let gw = Holdfast::start(&v1).await;
    assert_eq!(
        reqwest::get(gw.url("/new")).await.expect("get").status(),
        404
    );
    gw.write_config(&v1.replace("path: /one", "path: /new"));
    eventually(
        Duration::from_secs(10),
        "the file-change reload",
        async || {
            reqwest::get(gw.url("/new"))
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_within_the_grace() {
    let mut gw = Holdfast::start("server: { shutdown_grace: 2s }\nroutes: []\n").await;
    let started = Instant::now();
    gw.signal(SIGTERM);
    let code = gw.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
}

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("root")
        .to_owned()
}

/// Every config file the project ships, as (path, parsed YAML as JSON).
fn shipped_configs() -> Vec<(std::path::PathBuf, serde_json::Value)> {
    let mut files = vec![
        root().join("conf/example.yaml"),
        root().join("deploy/holdfast.yaml"),
        root().join("deploy/container.yaml"),
    ];
    files.retain(|file| file.exists());
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).expect("read");
            let value: serde_json::Value =
                serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            (file, value)
        })
        .collect()
}

#[test]
fn the_committed_schema_is_what_holdfast_schema_prints() {
    let (code, stdout, stderr) = run_holdfast(&["schema"]);
    assert_eq!(code, 0, "{stderr}");
    let committed = std::fs::read_to_string(root().join("conf/holdfast.schema.json"))
        .expect("conf/holdfast.schema.json");
    let printed: serde_json::Value = serde_json::from_str(&stdout).expect("schema is JSON");
    let committed: serde_json::Value =
        serde_json::from_str(&committed).expect("committed schema is JSON");
    assert!(
        printed == committed,
        "conf/holdfast.schema.json is stale: run `holdfast schema > conf/holdfast.schema.json`"
    );
}

#[test]
fn every_shipped_config_validates_against_the_schema_and_a_typo_does_not() {
    let (_, stdout, _) = run_holdfast(&["schema"]);
    let schema: serde_json::Value = serde_json::from_str(&stdout).expect("schema");
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let configs = shipped_configs();
    assert!(configs.len() >= 3, "the example and deploy configs");
    for (file, config) in &configs {
        let errors: Vec<String> = validator
            .iter_errors(config)
            .map(|e| format!("{}: {e}", e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
    }
    let mut typo = configs[0].1.clone();
    typo["routes"][0]["upstrem"] = serde_json::json!("x");
    assert!(
        !validator.is_valid(&typo),
        "an unknown route key must fail the schema"
    );
    let mut bad_duration = configs[0].1.clone();
    bad_duration["server"]["shutdown_grace"] = serde_json::json!("soon");
    assert!(
        !validator.is_valid(&bad_duration),
        "a malformed duration must fail the schema"
    );
}
