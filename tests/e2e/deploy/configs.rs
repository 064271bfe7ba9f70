//! The config and YAML files themselves: every config Holdfast reads under deploy/ (the
//! ConfigMap's too, file by file and as a directory) passes `holdfast check`, and every YAML
//! file under deploy/ and examples/ parses.

use super::support::{check_passes, documents, root, yaml};
use std::path::{Path, PathBuf};

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
