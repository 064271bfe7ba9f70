//! The systemd unit fits Holdfast (start, pre-start check, reload by SIGHUP, a stop timeout over
//! the shutdown grace, a descriptor limit over the held-polls cap, hardening) and passes
//! `systemd-analyze verify` and `security`.

use super::support::{on_path, read, run_tool, seconds, str_at, yaml};
use holdfast_tests::holdfast_bin;

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
