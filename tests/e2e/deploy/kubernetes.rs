//! The Kubernetes manifests parse, are all listed in the kustomization, and fit Holdfast: the
//! ConfigMap's config, ports and probes on the admin listener, `holdfast check` before start, a
//! non-root user, the preStop sleep and shutdown grace within the termination grace period, and
//! the Services, ServiceMonitor, PodDisruptionBudget and HorizontalPodAutoscaler that select it.

use super::support::{port_of, read, root, seconds, str_at, yaml, yaml_documents};
use serde_yaml::Value as Yaml;
use std::collections::HashSet;

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
    assert!(
        str_at(&config, &["tracing", "otlp", "endpoint"])
            .starts_with("${OTEL_EXPORTER_OTLP_ENDPOINT"),
        "the tracing endpoint comes from the environment"
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
    assert!(
        container["env"]
            .as_sequence()
            .expect("env")
            .iter()
            .any(
                |var| var["name"].as_str() == Some("OTEL_EXPORTER_OTLP_ENDPOINT")
                    && var["value"].as_str().is_some_and(|v| v.starts_with("http"))
            ),
        "the Deployment names the OTLP collector"
    );
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
