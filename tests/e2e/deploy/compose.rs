//! The compose setup and what it wires together: its services and their mounts, both Holdfast
//! instances (command, config, a stop grace over Holdfast's shutdown grace, Redis as the
//! backplane, with an append-only file on a volume), nginx in front (balancing both, a read
//! timeout over the longest hold), Prometheus scraping both admin ports, Grafana's datasource,
//! dashboard provider and dashboard queries, and Jaeger receiving both instances' spans.

use super::support::{port_of, read, root, seconds, str_at, yaml};
use serde_json::Value;
use serde_yaml::Value as Yaml;
use std::collections::HashSet;

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
        "jaeger",
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
        // Spans go to compose's Jaeger, on its OTLP/HTTP port, by the variable the config reads.
        assert_eq!(
            str_at(service, &["environment", "OTEL_EXPORTER_OTLP_ENDPOINT"]),
            "http://jaeger:4318",
            "{instance}"
        );
    }
    let endpoint = str_at(&holdfast_config, &["tracing", "otlp", "endpoint"]);
    assert!(
        endpoint.starts_with("${OTEL_EXPORTER_OTLP_ENDPOINT"),
        "the tracing endpoint comes from the environment: {endpoint}"
    );
    let jaeger_ports: Vec<&str> = services["jaeger"]["expose"]
        .as_sequence()
        .expect("jaeger expose")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(jaeger_ports.contains(&"4318"), "{jaeger_ports:?}");

    // The backplane is the compose Redis, which keeps what it holds across a restart: an
    // append-only file synced every second, on a named volume.
    let url = str_at(&holdfast_config, &["backplane", "redis", "url"]);
    assert_eq!(url, "redis://redis:6379");
    let redis = &services["redis"];
    let command: Vec<&str> = redis["command"]
        .as_sequence()
        .expect("redis command")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    let setting = |name: &str| {
        command
            .iter()
            .position(|arg| *arg == name)
            .and_then(|at| command.get(at + 1).copied())
    };
    assert_eq!(setting("--appendonly"), Some("yes"), "{command:?}");
    assert_eq!(setting("--appendfsync"), Some("everysec"), "{command:?}");
    let data = redis["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(Yaml::as_str)
        .find_map(|volume| volume.strip_suffix(":/data"))
        .expect("redis keeps /data on a volume");
    assert!(
        compose["volumes"][data].is_mapping(),
        "`{data}` is a named volume"
    );

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
