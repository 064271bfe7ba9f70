//! Shared by the deploy checks: the repository root, YAML reading (merge keys, multi-document
//! files, paths into a document), the duration and address forms used under deploy/, finding a
//! tool on PATH and running it, and `holdfast check`.

use holdfast_tests::run_holdfast;
use serde_yaml::Value as Yaml;
use std::path::{Path, PathBuf};
use std::process::Command;

pub(super) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

pub(super) fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A YAML file, with merge keys (`<<: *anchor`) applied as compose applies them.
pub(super) fn yaml(relative: &str) -> Yaml {
    let mut value: Yaml =
        serde_yaml::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"));
    value
        .apply_merge()
        .unwrap_or_else(|e| panic!("{relative}: {e}"));
    value
}

/// Every document of a multi-document YAML text (documents separated by `---` lines).
pub(super) fn documents(label: &str, text: &str) -> Vec<Yaml> {
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

pub(super) fn yaml_documents(relative: &str) -> Vec<Yaml> {
    documents(relative, &read(relative))
}

pub(super) fn str_at<'a>(value: &'a Yaml, path: &[&str]) -> &'a str {
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
pub(super) fn seconds(text: &str) -> f64 {
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
pub(super) fn port_of(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in `{address}`"))
}

/// The path of `name` on PATH, if any.
pub(super) fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// `holdfast check` on a file; panics with its output unless it passes.
pub(super) fn check_passes(label: &str, path: &Path) {
    let (code, stdout, stderr) = run_holdfast(&["check", &path.display().to_string()]);
    assert_eq!(code, 0, "{label} fails `holdfast check`:\n{stdout}{stderr}");
}

/// Runs `program` in the repository root: whether it succeeded, and its stdout and stderr.
pub(super) fn run_tool(program: &Path, args: &[&str]) -> (bool, String) {
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
