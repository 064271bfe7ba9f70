//! The deploy artefacts (deploy/, examples/): every config Holdfast reads passes `holdfast
//! check`; the Dockerfile names only what the repository has; compose, Kubernetes, Grafana and
//! Prometheus files parse and agree with each other and with Holdfast's shutdown; the dashboard
//! and alert rules name only metrics the running binary exports; promtool and systemd-analyze
//! accept the rules and the unit; the Python client and the browser page (headless Chromium)
//! receive what is published.

use axum::routing::get;
use axum::Router;
use holdfast_tests::{
    eventually, holdfast_bin, run_holdfast, send_signal, Holdfast, Origin, SIGHUP,
};
use serde_json::{json, Value};
use serde_yaml::Value as Yaml;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A YAML file, with merge keys (`<<: *anchor`) applied as compose applies them.
fn yaml(relative: &str) -> Yaml {
    let mut value: Yaml =
        serde_yaml::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"));
    value
        .apply_merge()
        .unwrap_or_else(|e| panic!("{relative}: {e}"));
    value
}

/// Every document of a multi-document YAML text (documents separated by `---` lines).
fn documents(label: &str, text: &str) -> Vec<Yaml> {
    let mut documents = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            documents.push(String::new());
        } else if let Some(last) = documents.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    documents
        .iter()
        .map(|document| {
            serde_yaml::from_str::<Yaml>(document).unwrap_or_else(|e| panic!("{label}: {e}"))
        })
        .filter(|document| !document.is_null())
        .collect()
}

fn yaml_documents(relative: &str) -> Vec<Yaml> {
    documents(relative, &read(relative))
}

fn str_at<'a>(value: &'a Yaml, path: &[&str]) -> &'a str {
    at(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string: {value:?}"))
}

fn at<'a>(value: &'a Yaml, path: &[&str]) -> &'a Yaml {
    path.iter()
        .fold(value, |value, key| match key.parse::<usize>() {
            Ok(index) if value.is_sequence() => &value[index],
            _ => &value[*key],
        })
}

/// `5s`, `500ms`, `2m`, `15s` → seconds (the forms used under deploy/).
fn seconds(text: &str) -> f64 {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |i| text.split_at(i));
    let number: f64 = number
        .parse()
        .unwrap_or_else(|_| panic!("duration `{text}`"));
    match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        other => panic!("duration unit `{other}` in `{text}`"),
    }
}

/// The port of a `host:port` address.
fn port_of(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in `{address}`"))
}

/// The path of `name` on PATH, if any.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// The holdfast configs the ConfigMap carries, each written to its own file for `holdfast check`.
fn configmap_configs(dir: &Path) -> Vec<(String, PathBuf)> {
    let configmap = yaml("deploy/kubernetes/configmap.yaml");
    let data = configmap["data"].as_mapping().expect("configmap data");
    data.iter()
        .map(|(key, text)| {
            let key = key.as_str().expect("key").to_owned();
            let file = dir.join(&key);
            std::fs::write(&file, text.as_str().expect("config text")).expect("write");
            (format!("deploy/kubernetes/configmap.yaml data.{key}"), file)
        })
        .collect()
}

/// `holdfast check` on a file; panics with its output unless it passes.
fn check_passes(label: &str, path: &Path) {
    let (code, stdout, stderr) = run_holdfast(&["check", &path.display().to_string()]);
    assert_eq!(code, 0, "{label} fails `holdfast check`:\n{stdout}{stderr}");
}

#[test]
fn every_config_under_deploy_passes_check() {
    for file in ["deploy/holdfast.yaml", "deploy/container.yaml"] {
        check_passes(file, &root().join(file));
    }
    let dir = tempfile::tempdir().expect("dir");
    let configs = configmap_configs(dir.path());
    assert!(!configs.is_empty(), "the ConfigMap carries a config");
    for (label, file) in &configs {
        check_passes(label, file);
    }
    // The ConfigMap is mounted as a directory: check it as one too.
    check_passes("the ConfigMap as a directory", dir.path());
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

/// The Dockerfile's instructions: (KEYWORD, arguments), continuation lines joined.
fn dockerfile() -> Vec<(String, String)> {
    let text = read("deploy/Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if trimmed.starts_with('#') {
            continue;
        }
        if let Some(part) = trimmed.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, rest) = current
            .split_once(char::is_whitespace)
            .expect("instruction");
        instructions.push((keyword.to_ascii_uppercase(), rest.trim().to_owned()));
        current.clear();
    }
    instructions
}

/// The words of an exec-form (`["a", "b"]`) or shell-form argument.
fn words(arguments: &str) -> Vec<String> {
    if arguments.starts_with('[') {
        serde_json::from_str(arguments).expect("exec form")
    } else {
        arguments.split_whitespace().map(str::to_owned).collect()
    }
}

struct Workspace {
    /// (package name, its directory relative to the root, its binary targets)
    packages: Vec<(String, String, Vec<String>)>,
}

fn workspace() -> Workspace {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .current_dir(root())
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .output()
        .expect("cargo metadata");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata json");
    let root = root();
    let packages = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|package| {
            let manifest = PathBuf::from(package["manifest_path"].as_str().expect("manifest"));
            let dir = manifest
                .parent()
                .expect("dir")
                .strip_prefix(&root)
                .expect("inside the workspace")
                .display()
                .to_string();
            let bins = package["targets"]
                .as_array()
                .expect("targets")
                .iter()
                .filter(|t| {
                    t["kind"]
                        .as_array()
                        .is_some_and(|k| k.contains(&json!("bin")))
                })
                .map(|t| t["name"].as_str().expect("name").to_owned())
                .collect();
            (
                package["name"].as_str().expect("name").to_owned(),
                dir,
                bins,
            )
        })
        .collect();
    Workspace { packages }
}

#[test]
fn the_dockerfile_names_only_what_the_repository_has() {
    let instructions = dockerfile();
    let workspace = workspace();
    let root = root();
    let mut stages = Vec::new();
    let mut copied = Vec::new();
    let mut built_binary = None;
    let mut installed_to = None;
    let mut runtime_copy = None;
    let mut entrypoint = Vec::new();
    let mut cmd = Vec::new();
    let mut exposed = Vec::new();
    let mut user = None;
    let mut healthcheck = None;
    let mut apt_packages = Vec::new();

    for (keyword, arguments) in &instructions {
        match keyword.as_str() {
            "FROM" => {
                let words = words(arguments);
                if let Some(alias) = words.iter().position(|w| w.eq_ignore_ascii_case("as")) {
                    stages.push(words[alias + 1].clone());
                }
            }
            "COPY" => {
                let words = words(arguments);
                let (flags, paths): (Vec<_>, Vec<_>) =
                    words.iter().partition(|w| w.starts_with("--"));
                let (destination, sources) = paths.split_last().expect("COPY src dest");
                if let Some(stage) = flags.iter().find_map(|f| f.strip_prefix("--from=")) {
                    assert!(
                        stages.iter().any(|s| s == stage),
                        "COPY --from={stage}: no such stage"
                    );
                    runtime_copy = Some((sources[0].clone(), destination.to_string()));
                    continue;
                }
                for source in sources {
                    let path = root.join(source.as_str());
                    assert!(
                        path.exists(),
                        "COPY {source}: not in the repository (the build context is the root)"
                    );
                    assert!(
                        !source.starts_with("target"),
                        "COPY {source}: the build output"
                    );
                    copied.push(source.trim_end_matches('/').to_string());
                }
            }
            "RUN" => {
                let words: Vec<String> = words(arguments);
                // Every `apt-get install` package list.
                if let Some(i) = words
                    .windows(2)
                    .position(|w| w[0] == "apt-get" && w[1] == "install")
                {
                    apt_packages.extend(
                        words[i + 2..]
                            .iter()
                            .take_while(|w| !w.starts_with('&') && !w.starts_with('|'))
                            .filter(|w| !w.starts_with('-'))
                            .cloned(),
                    );
                }
                if let Some(i) = words
                    .windows(2)
                    .position(|w| w[0] == "cargo" && w[1] == "build")
                {
                    let command: Vec<&str> = words[i..]
                        .iter()
                        .map(String::as_str)
                        .take_while(|w| !w.starts_with('&'))
                        .collect();
                    let command = command.join(" ");
                    // The same build command as the README's scripts/run.
                    assert!(
                        read("scripts/run")
                            .lines()
                            .any(|line| line.trim() == command),
                        "the Dockerfile runs `{command}`, which scripts/run does not"
                    );
                    let package = words[i..]
                        .windows(2)
                        .find(|w| w[0] == "-p" || w[0] == "--package")
                        .map(|w| w[1].clone())
                        .expect("cargo build -p PACKAGE");
                    let (_, _, bins) = workspace
                        .packages
                        .iter()
                        .find(|(name, _, _)| *name == package)
                        .unwrap_or_else(|| panic!("`-p {package}` is not a workspace package"));
                    assert!(
                        words[i..].iter().any(|w| w == "--release"),
                        "a release build"
                    );
                    // `install … target/release/BIN DEST`: BIN is the package's binary.
                    if let Some(j) = words.iter().position(|w| w == "install") {
                        let operands: Vec<&String> = words[j + 1..]
                            .iter()
                            .filter(|w| !w.starts_with('-') && *w != "0755")
                            .collect();
                        let built = operands[0]
                            .strip_prefix("target/release/")
                            .expect("installs from target/release/");
                        assert!(
                            bins.iter().any(|b| b == built),
                            "`{built}` is not a binary of {package}: {bins:?}"
                        );
                        built_binary = Some(built.to_owned());
                        installed_to = Some(operands[1].clone());
                    }
                }
            }
            "ENTRYPOINT" => entrypoint = words(arguments),
            "CMD" => cmd = words(arguments),
            "EXPOSE" => {
                exposed = words(arguments)
                    .iter()
                    .map(|p| p.parse::<u16>().expect("port"))
                    .collect()
            }
            "USER" => user = Some(arguments.clone()),
            "HEALTHCHECK" => healthcheck = Some(arguments.clone()),
            _ => {}
        }
    }

    // cargo needs every workspace member's manifest: each member's directory is copied.
    for (name, dir, _) in &workspace.packages {
        assert!(
            copied.iter().any(|c| c == dir),
            "workspace member {name} ({dir}/) is not copied"
        );
    }
    for file in ["Cargo.toml", "Cargo.lock"] {
        assert!(copied.iter().any(|c| c == file), "{file} is not copied");
    }
    // cmake, as scripts/deps installs for the build.
    assert!(
        apt_packages.iter().any(|p| p == "cmake"),
        "the build stage installs cmake: {apt_packages:?}"
    );
    assert!(read("scripts/deps").contains("cmake"));

    // The binary built is the one the runtime stage copies and runs.
    let built_binary = built_binary.expect("the build installs the binary");
    assert_eq!(built_binary, "holdfast");
    let (source, destination) = runtime_copy.expect("COPY --from=build");
    assert_eq!(
        Some(source),
        installed_to,
        "the runtime copies what the build installed"
    );
    assert_eq!(
        entrypoint.first(),
        Some(&destination),
        "ENTRYPOINT runs the copied binary"
    );

    // CMD: `run -c /etc/holdfast`; both `run` and `check` are real subcommands.
    assert_eq!(cmd, ["run", "-c", "/etc/holdfast"]);
    let (code, help, _) = run_holdfast(&["--help"]);
    assert_eq!(code, 0);
    for command in ["run", "check"] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "`holdfast {command}` is not a subcommand:\n{help}"
        );
    }
    let text = read("deploy/Dockerfile");
    assert!(
        text.contains("check /etc/holdfast"),
        "the pre-start check is documented"
    );

    // The default config it ships: passes check, listens on the exposed ports, admin off loopback.
    let shipped = instructions
        .iter()
        .filter(|(k, _)| k == "COPY")
        .map(|(_, a)| words(a))
        .find(|w| w.last().is_some_and(|d| d.starts_with("/etc/holdfast")))
        .expect("a default config in /etc/holdfast");
    check_passes(&shipped[0], &root.join(&shipped[0]));
    let config: Yaml = yaml(&shipped[0]);
    let listen = port_of(config["listen"].as_str().expect("listen"));
    let admin_address = config["admin"].as_str().expect("admin");
    assert!(
        admin_address.starts_with("0.0.0.0:"),
        "in a container the admin listener binds 0.0.0.0"
    );
    let admin = port_of(admin_address);
    assert_eq!(
        exposed,
        [listen, admin],
        "EXPOSE the traffic and admin ports"
    );

    let user = user.expect("USER");
    assert!(
        !["root", "0", "0:0"].contains(&user.as_str()),
        "runs as a non-root user"
    );
    let healthcheck = healthcheck.expect("HEALTHCHECK");
    assert!(
        healthcheck.contains(&format!("127.0.0.1:{admin}/healthz")),
        "{healthcheck}"
    );
    assert!(
        apt_packages.iter().any(|p| p == "curl"),
        "the HEALTHCHECK's curl is installed"
    );

    // Stages: a build stage and a slim runtime.
    assert!(text.contains("FROM debian:bookworm-slim"), "slim runtime");
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    // The Dockerfile-specific ignore file keeps target/ out of the build context.
    assert!(read("deploy/Dockerfile.dockerignore")
        .lines()
        .any(|l| l.trim() == "target"));
}

// ---------------------------------------------------------------------------------------------
// compose, nginx, Prometheus, Grafana

#[test]
fn compose_parses_and_its_services_fit_together() {
    let compose = yaml("deploy/compose.yaml");
    let services = compose["services"].as_mapping().expect("services");
    let names: HashSet<&str> = services.keys().filter_map(Yaml::as_str).collect();
    for expected in [
        "redis",
        "holdfast-a",
        "holdfast-b",
        "lb",
        "prometheus",
        "grafana",
    ] {
        assert!(
            names.contains(expected),
            "compose has no `{expected}` service: {names:?}"
        );
    }
    let deploy = root().join("deploy");
    let holdfast_config: Yaml = yaml("deploy/holdfast.yaml");
    let grace = seconds(str_at(&holdfast_config, &["server", "shutdown_grace"]));

    for (name, service) in services {
        let name = name.as_str().expect("name");
        // Every bind mount's source exists (relative to deploy/).
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let volume = volume.as_str().expect("short volume syntax");
            let source = volume.split(':').next().expect("source");
            if source.starts_with('.') || source.starts_with('/') {
                assert!(
                    deploy.join(source).exists(),
                    "{name}: volume source {source} is missing"
                );
            }
        }
        if let Some(build) = service.get("build") {
            let context = deploy.join(str_at(build, &["context"]));
            assert!(
                context.join(str_at(build, &["dockerfile"])).is_file(),
                "{name}: dockerfile"
            );
            assert!(
                context.join("Cargo.toml").is_file(),
                "{name}: context is the workspace root"
            );
        }
    }

    // Both Holdfast instances: the image, the config at /etc/holdfast, a stop grace > shutdown_grace.
    let admin_port = port_of(holdfast_config["admin"].as_str().expect("admin"));
    let listen_port = port_of(holdfast_config["listen"].as_str().expect("listen"));
    for instance in ["holdfast-a", "holdfast-b"] {
        let service = &compose["services"][instance];
        let command: Vec<&str> = service["command"]
            .as_sequence()
            .expect("command")
            .iter()
            .filter_map(Yaml::as_str)
            .collect();
        assert_eq!(command, ["run", "-c", "/etc/holdfast"]);
        assert!(
            service["volumes"]
                .as_sequence()
                .expect("volumes")
                .iter()
                .any(|v| v.as_str() == Some("./holdfast.yaml:/etc/holdfast/holdfast.yaml:ro")),
            "{instance} mounts deploy/holdfast.yaml"
        );
        let stop = seconds(
            service["stop_grace_period"]
                .as_str()
                .expect("stop_grace_period"),
        );
        assert!(
            stop > grace,
            "{instance}: stop_grace_period {stop}s must exceed shutdown_grace {grace}s"
        );
        assert!(
            service["depends_on"]["redis"].is_mapping(),
            "{instance} waits for redis"
        );
    }

    // The backplane is the compose Redis.
    let url = str_at(&holdfast_config, &["backplane", "redis", "url"]);
    assert_eq!(url, "redis://redis:6379");

    // nginx balances over both instances' traffic port, with a read timeout over the longest hold.
    let nginx = read("deploy/nginx/nginx.conf");
    for instance in ["holdfast-a", "holdfast-b"] {
        assert!(
            nginx.contains(&format!("server {instance}:{listen_port}")),
            "nginx → {instance}"
        );
    }
    let read_timeout = nginx
        .lines()
        .find_map(|l| l.trim().strip_prefix("proxy_read_timeout "))
        .map(|v| seconds(v.trim_end_matches(';')))
        .expect("proxy_read_timeout");
    let longest_hold = holdfast_config["routes"]
        .as_sequence()
        .expect("routes")
        .iter()
        .filter_map(|r| r["longpoll"]["timeout"].as_str())
        .map(seconds)
        .fold(30.0, f64::max);
    assert!(
        read_timeout > longest_hold,
        "nginx's read timeout {read_timeout}s ≤ hold {longest_hold}s"
    );
    let published: Vec<&str> = compose["services"]["lb"]["ports"]
        .as_sequence()
        .expect("lb ports")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(published, ["8080:8080"], "one port in front");

    // Prometheus scrapes both instances' admin ports; its rule file is mounted beside it.
    let prometheus = yaml("deploy/prometheus/prometheus.yml");
    let targets: Vec<&str> = prometheus["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .filter(|job| {
            job["job_name"]
                .as_str()
                .is_some_and(|j| j.starts_with("holdfast"))
        })
        .flat_map(|job| job["static_configs"].as_sequence().into_iter().flatten())
        .flat_map(|config| config["targets"].as_sequence().into_iter().flatten())
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(
        targets,
        [
            format!("holdfast-a:{admin_port}"),
            format!("holdfast-b:{admin_port}")
        ]
    );
    let rule_files: Vec<&str> = prometheus["rule_files"]
        .as_sequence()
        .expect("rule_files")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    for rule_file in rule_files {
        assert!(
            root().join("deploy/prometheus").join(rule_file).is_file(),
            "{rule_file}"
        );
    }

    // Grafana: the datasource points at the compose Prometheus, the dashboard provider at the
    // mounted dashboards directory, and the dashboard's queries use the datasource variable.
    let datasources = yaml("deploy/grafana/provisioning/datasources/prometheus.yaml");
    let datasource = &datasources["datasources"][0];
    assert_eq!(str_at(datasource, &["type"]), "prometheus");
    assert_eq!(str_at(datasource, &["url"]), "http://prometheus:9090");
    let providers = yaml("deploy/grafana/provisioning/dashboards/holdfast.yaml");
    let provider_path = str_at(&providers["providers"][0], &["options", "path"]);
    assert!(
        compose["services"]["grafana"]["volumes"]
            .as_sequence()
            .expect("grafana volumes")
            .iter()
            .any(|v| v.as_str() == Some(&format!("./grafana/dashboards:{provider_path}:ro"))),
        "the dashboards directory is mounted where the provider reads"
    );
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/dashboards/holdfast.json"))
        .expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut queries = 0;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            assert!(target["expr"]
                .as_str()
                .is_some_and(|e| e.contains("holdfast_")));
            queries += 1;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
    }
    assert!(queries >= 15, "{queries} queries");
}

#[test]
fn kubernetes_manifests_parse_and_fit_holdfast_shutdown() {
    let kustomization = yaml("deploy/kubernetes/kustomization.yaml");
    assert_eq!(str_at(&kustomization, &["kind"]), "Kustomization");
    let mut documents = Vec::new();
    for resource in kustomization["resources"].as_sequence().expect("resources") {
        let file = format!("deploy/kubernetes/{}", resource.as_str().expect("file"));
        for document in yaml_documents(&file) {
            for key in ["apiVersion", "kind"] {
                assert!(document[key].is_string(), "{file}: no {key}");
            }
            assert!(
                document["metadata"]["name"].is_string(),
                "{file}: no metadata.name"
            );
            documents.push(document);
        }
    }
    // Every manifest in the directory is listed.
    let listed: HashSet<String> = kustomization["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    for entry in std::fs::read_dir(root().join("deploy/kubernetes")).expect("dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            assert!(
                listed.contains(&name),
                "{name} is not in kustomization.yaml"
            );
        }
    }
    let find = |kind: &str, name: &str| -> &Yaml {
        documents
            .iter()
            .find(|d| {
                d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name)
            })
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };

    let configmap = find("ConfigMap", "holdfast-config");
    let config: Yaml =
        serde_yaml::from_str(configmap["data"]["holdfast.yaml"].as_str().expect("config"))
            .expect("config yaml");
    let admin_port = port_of(config["admin"].as_str().expect("admin"));
    let listen_port = port_of(config["listen"].as_str().expect("listen"));
    assert!(
        config["admin"]
            .as_str()
            .is_some_and(|a| a.starts_with("0.0.0.0:")),
        "probes reach the pod IP"
    );
    let grace = seconds(str_at(&config, &["server", "shutdown_grace"]));
    assert!(
        config["backplane"]["redis"].is_mapping(),
        "replicas share channels through Redis"
    );

    let deployment = find("Deployment", "holdfast");
    let pod = &deployment["spec"]["template"];
    let pod_labels = pod["metadata"]["labels"].as_mapping().expect("pod labels");
    let selects = |selector: &Yaml| {
        selector
            .as_mapping()
            .expect("selector")
            .iter()
            .all(|(k, v)| pod_labels.get(k) == Some(v))
    };
    assert!(selects(&deployment["spec"]["selector"]["matchLabels"]));
    let container = &pod["spec"]["containers"][0];
    let port = |name: &str| {
        container["ports"]
            .as_sequence()
            .expect("ports")
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no port {name}"))
    };
    assert_eq!(port("admin"), u64::from(admin_port));
    assert_eq!(port("http"), u64::from(listen_port));
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(str_at(container, &[probe, "httpGet", "path"]), path);
        assert_eq!(
            str_at(container, &[probe, "httpGet", "port"]),
            "admin",
            "{probe} on the admin port"
        );
    }
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(args, ["run", "-c", "/etc/holdfast"]);
    let init_args: Vec<&str> = pod["spec"]["initContainers"][0]["args"]
        .as_sequence()
        .expect("init args")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(
        init_args,
        ["check", "/etc/holdfast"],
        "holdfast check runs before start"
    );
    let mount = &container["volumeMounts"][0];
    assert_eq!(str_at(mount, &["mountPath"]), "/etc/holdfast");
    let volume = pod["spec"]["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    assert_eq!(str_at(volume, &["configMap", "name"]), "holdfast-config");
    assert_eq!(
        pod["spec"]["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    // The image's user.
    assert_eq!(
        pod["spec"]["securityContext"]["runAsUser"].as_u64(),
        Some(10001)
    );
    assert!(read("deploy/Dockerfile").contains("USER 10001:10001"));

    // Shutdown: the preStop sleep, then SIGTERM and at most shutdown_grace, all within the
    // termination grace period (which counts from before the preStop hook).
    let pre_stop: Vec<&str> = container["lifecycle"]["preStop"]["exec"]["command"]
        .as_sequence()
        .expect("preStop exec")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(pre_stop[0], "sleep");
    let sleep: f64 = pre_stop[1].parse().expect("sleep seconds");
    assert!(sleep >= 3.0, "the endpoints controller needs a few seconds");
    let termination = pod["spec"]["terminationGracePeriodSeconds"]
        .as_f64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        termination >= sleep + grace + 2.0,
        "terminationGracePeriodSeconds {termination} < preStop {sleep} + shutdown_grace {grace} + margin"
    );
    assert!(
        read("deploy/kubernetes/deployment.yaml").contains("preStop"),
        "the reasoning is written down"
    );

    // Services: traffic on `holdfast`, the admin port on `holdfast-admin` for the ServiceMonitor.
    let service = find("Service", "holdfast");
    assert!(selects(&service["spec"]["selector"]));
    assert_eq!(
        str_at(service, &["spec", "ports", "0", "targetPort"]),
        "http"
    );
    let admin_service = find("Service", "holdfast-admin");
    assert!(selects(&admin_service["spec"]["selector"]));
    assert_eq!(
        str_at(admin_service, &["spec", "ports", "0", "name"]),
        "admin"
    );
    let monitor = find("ServiceMonitor", "holdfast");
    assert_eq!(str_at(monitor, &["apiVersion"]), "monitoring.coreos.com/v1");
    let admin_labels = admin_service["metadata"]["labels"]
        .as_mapping()
        .expect("labels");
    let service_labels = service["metadata"]["labels"].as_mapping().expect("labels");
    let wanted = monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("matchLabels");
    assert!(
        wanted.iter().all(|(k, v)| admin_labels.get(k) == Some(v)),
        "selects holdfast-admin"
    );
    assert!(
        !wanted.iter().all(|(k, v)| service_labels.get(k) == Some(v)),
        "not the traffic Service"
    );
    assert_eq!(
        str_at(monitor, &["spec", "endpoints", "0", "port"]),
        "admin"
    );
    assert_eq!(
        str_at(monitor, &["spec", "endpoints", "0", "path"]),
        "/metrics"
    );

    let pdb = find("PodDisruptionBudget", "holdfast");
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"]));
    let hpa = find("HorizontalPodAutoscaler", "holdfast");
    assert_eq!(str_at(hpa, &["apiVersion"]), "autoscaling/v2");
    assert_eq!(
        str_at(hpa, &["spec", "scaleTargetRef", "kind"]),
        "Deployment"
    );
    assert_eq!(str_at(hpa, &["spec", "scaleTargetRef", "name"]), "holdfast");
    assert!(
        hpa["spec"]["minReplicas"].as_u64() >= Some(2),
        "a pod can drain while another serves"
    );
}

// ---------------------------------------------------------------------------------------------
// Metric names in the dashboard and the alert rules

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
    // upstream, a long-poll pair, a route behind an HMAC JWT provider and one behind a JWKS.
    let origin = Origin::echo().await;
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
routes:
  - {{ name: api, match: {{ prefix: /api }}, upstream: api }}
  - {{ name: private, match: {{ prefix: /private }}, auth: {{ provider: hs }}, upstream: api }}
  - {{ name: partner, match: {{ prefix: /partner }}, auth: {{ provider: idp }}, upstream: api }}
  - {{ name: poll, match: {{ path: /poll, methods: [GET] }}, longpoll: {{ channel: updates, timeout: 30s }} }}
  - {{ name: push, match: {{ path: /push, methods: [POST] }}, publish: {{ channel: updates }} }}
"#,
        jwks = jwks.addr,
        origin = origin.addr,
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

// ---------------------------------------------------------------------------------------------
// promtool and systemd-analyze

fn promtool() -> PathBuf {
    on_path("promtool").unwrap_or_else(|| {
        panic!(
            "promtool is not installed; `scripts/deps --test` installs it, or: \
             sudo apt-get update && sudo apt-get install -y prometheus"
        )
    })
}

fn run_tool(program: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(program)
        .current_dir(root())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
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
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "no {expected}: {names:?}"
        );
    }
}

#[test]
fn the_systemd_unit_verifies_and_fits_holdfast() {
    let unit = read("deploy/systemd/holdfast.service");
    let values = |key: &str| -> Vec<&str> {
        unit.lines()
            .filter_map(|line| line.strip_prefix(key).and_then(|l| l.strip_prefix('=')))
            .collect()
    };
    assert_eq!(
        values("ExecStart"),
        ["/usr/local/bin/holdfast run -c /etc/holdfast"]
    );
    assert_eq!(
        values("ExecStartPre"),
        ["/usr/local/bin/holdfast check /etc/holdfast"]
    );
    assert!(values("ExecReload").contains(&"/bin/kill -HUP $MAINPID"));
    assert_eq!(values("KillSignal"), ["SIGTERM"]);
    let grace = seconds(str_at(
        &yaml("conf/example.yaml"),
        &["server", "shutdown_grace"],
    ));
    let stop = seconds(values("TimeoutStopSec")[0]);
    assert!(
        stop > grace,
        "TimeoutStopSec {stop}s must exceed shutdown_grace {grace}s"
    );
    let nofile: u64 = values("LimitNOFILE")[0].parse().expect("LimitNOFILE");
    let max_held = yaml("conf/example.yaml")["channels"]["max_held"]
        .as_u64()
        .expect("max_held");
    assert!(nofile > max_held, "a descriptor per held poll");
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "DynamicUser=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    ] {
        assert!(unit.lines().any(|l| l == hardening), "missing {hardening}");
    }

    // systemd's own checks, with the binary path pointed at the one under test.
    let analyze = on_path("systemd-analyze").unwrap_or_else(|| {
        panic!("systemd-analyze is not installed; `scripts/deps --test` installs it, or: sudo apt-get install -y systemd")
    });
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("holdfast.service");
    std::fs::write(
        &file,
        unit.replace(
            "/usr/local/bin/holdfast",
            &holdfast_bin().display().to_string(),
        ),
    )
    .expect("write unit");
    let file = file.display().to_string();
    let (ok, output) = run_tool(&analyze, &["verify", &file]);
    assert!(
        ok && output.trim().is_empty(),
        "systemd-analyze verify:\n{output}"
    );
    // The exposure score (0 best … 10 worst) stays "OK": at most 2.0.
    let (ok, output) = run_tool(
        &analyze,
        &["security", "--offline=yes", "--threshold=20", &file],
    );
    assert!(ok, "systemd-analyze security:\n{output}");
}

// ---------------------------------------------------------------------------------------------
// Client examples against the example config

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
    let python = on_path("python3").expect("python3");
    let has_requests = Command::new(&python)
        .args(["-c", "import requests"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_requests,
        "the example needs `requests`: pip install requests (scripts/deps --test)"
    );
    let gw = example_gateway().await;
    let mut client = Command::new(&python)
        .arg(root().join("examples/python/poll.py"))
        .args([&gw.url("/poll"), "--max", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start poll.py");
    held(&gw, "poll", 1.0).await;
    // The first push wakes the held poll; the next two come while the client is between polls,
    // and its cursor gets them anyway.
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
            panic!("poll.py did not receive 3 messages in 20 s");
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

/// examples/browser/index.html, served from another origin than Holdfast (so CORS is real),
/// long-polls conf/example.yaml's `room-poll` in headless Chromium: a message published while
/// the page's poll is held appears on the page, and so does one sent from the page's form.
/// With HOLDFAST_SCREENSHOT=PATH it also saves a screenshot there (deploy/screenshot.png).
#[tokio::test(flavor = "multi_thread")]
async fn the_browser_page_shows_published_messages() {
    let gw = example_gateway().await;
    let page = read("examples/browser/index.html");
    let site = Origin::start(Router::new().route(
        "/",
        get(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        }),
    ))
    .await;
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

#[test]
fn every_example_and_deploy_yaml_file_parses() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("deploy"), &mut files);
    walk(&root().join("examples"), &mut files);
    assert!(files.len() >= 14, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(
            !documents(&file.display().to_string(), &text).is_empty(),
            "{}",
            file.display()
        );
    }
}
