//! The Dockerfile names only what the repository has: the files it copies exist, every workspace
//! member is copied, the build command is scripts/run's, the binary it builds is the one the
//! runtime stage copies and runs, its default config passes `holdfast check` and listens on the
//! exposed ports, it runs as a non-root user with a health check.

use super::support::{check_passes, port_of, read, root, yaml};
use holdfast_tests::run_holdfast;
use serde_json::{json, Value};
use serde_yaml::Value as Yaml;
use std::path::PathBuf;
use std::process::Command;

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
