//! The end-to-end test harness: starts the real `holdfast` binary from a YAML string, real
//! origin servers (axum, a raw recording TCP origin, a real nginx), an OTLP receiver and a real
//! `redis-server`, each on a free loopback port, waits for readiness with deadlines (never
//! sleeps), and stops every process it started when the test ends, panics included. Raw-socket clients
//! (raw_client.rs) send exact bytes and read whole HTTP/1.1 responses back.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod llm_providers;
pub mod nginx;
pub mod origin;
pub mod otlp;
pub mod raw_client;
pub mod raw_origin;
pub mod redis;

pub use nginx::Nginx;
pub use origin::Origin;
pub use otlp::Collector;
pub use raw_client::{exchange, RawClient, RawResponse, ReadError};
pub use raw_origin::{RawOrigin, RawSeen};
pub use redis::{RedisCluster, RedisSentinels, RedisServer};

/// A free TCP port on 127.0.0.1 for a server the test starts (holdfast, redis-server).
///
/// Ports come from 20000–31999, below Linux's ephemeral range (32768–60999), so a socket bound to
/// port 0 elsewhere (an origin, a client connection) can never take a port between the moment it
/// is chosen here and the moment the server binds it. Each test process starts at an offset of its
/// own (test runners may run one process per test) and never hands out the same port twice, so a
/// server killed and restarted on its port (Redis) does not find another test's server there.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 97) % SPAN,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::AcqRel) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + SPAN)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// The `holdfast` binary, built once per test run so the tests always run the current code.
pub fn holdfast_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("HOLDFAST_BIN") {
            return PathBuf::from(bin);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .current_dir(workspace_root())
            // --workspace: the same feature resolution as `cargo test --workspace`, so the
            // dependencies are not built twice with different features.
            .args(["build", "--quiet", "--workspace", "--bins"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --workspace --bins failed");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| workspace_root().join("target"));
        target.join("debug").join("holdfast")
    })
}

/// Waits until `up` says a server the test started is ready; panics with its log if it exits
/// first or is not ready within `timeout`.
pub async fn wait_until_up(
    what: &str,
    child: &mut Child,
    timeout: Duration,
    log: &Path,
    mut up: impl AsyncFnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    let log = || std::fs::read_to_string(log).unwrap_or_default();
    loop {
        if up().await {
            return;
        }
        if let Some(status) = child.try_wait().ok().flatten() {
            panic!(
                "{what} exited with {status} before it was ready:\n{}",
                log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} not ready in {timeout:?}:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running `holdfast` process.
pub struct Holdfast {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    /// The file tests rewrite for reloads.
    pub config: PathBuf,
    /// What holdfast was started on: the config file or its directory.
    pub serve: PathBuf,
    log: PathBuf,
}

impl Holdfast {
    /// Writes `yaml` (with `{listen}` and `{admin}` replaced by free addresses unless the YAML
    /// sets them itself) and starts holdfast on it, waiting until `/readyz` answers 200.
    pub async fn start(yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("holdfast.yaml");
        Self::start_in(dir, config, yaml).await
    }

    /// Like [`Holdfast::start`], with the config written at `config` inside `dir`.
    pub async fn start_in(dir: tempfile::TempDir, config: PathBuf, yaml: &str) -> Self {
        Self::start_serving(dir, config.clone(), config, yaml).await
    }

    /// Writes `yaml` at `config` and serves `serve` (a file or a directory holding `config`).
    pub async fn start_serving(
        dir: tempfile::TempDir,
        config: PathBuf,
        serve: PathBuf,
        yaml: &str,
    ) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut text = yaml
            .replace("{listen}", &addr.to_string())
            .replace("{admin}", &admin.to_string());
        if !text.contains("\nlisten:") && !text.starts_with("listen:") {
            text = format!("listen: {addr}\nadmin: {admin}\n{text}");
        }
        std::fs::write(&config, text).expect("write config");
        let log = dir.path().join("holdfast.log");
        let mut holdfast = Self {
            child: None,
            addr,
            admin,
            dir,
            config,
            serve,
            log,
        };
        holdfast.spawn();
        holdfast.wait_ready().await;
        holdfast
    }

    fn spawn(&mut self) {
        self.spawn_with(&["run", "-c"]);
    }

    fn spawn_with(&mut self, args: &[&str]) {
        let log = std::fs::File::create(&self.log).expect("log file");
        let child = Command::new(holdfast_bin())
            .args(args)
            .arg(&self.serve)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start holdfast");
        self.child = Some(child);
    }

    /// Starts `holdfast run --upgrade` on this one's config, addresses and (through the
    /// config's `server.pid_file`) process: it takes over the listening sockets. Not waited
    /// for: both answer on the same addresses until this one has handed over.
    pub fn start_upgrade(&self) -> Holdfast {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("holdfast.log");
        let mut upgraded = Holdfast {
            child: None,
            addr: self.addr,
            admin: self.admin,
            dir,
            config: self.config.clone(),
            serve: self.serve.clone(),
            log,
        };
        upgraded.spawn_with(&["run", "--upgrade", "-c"]);
        upgraded
    }

    /// The exit code, if the process has exited.
    pub fn exited(&mut self) -> Option<i32> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status.code().unwrap_or(-1))
    }

    /// Waits until the admin `/readyz` answers 200; panics with the log if the process died.
    pub async fn wait_ready(&mut self) {
        let url = self.admin_url("/readyz");
        let log = self.log.clone();
        let child = self.child.as_mut().expect("started");
        wait_until_up(
            "holdfast",
            child,
            Duration::from_secs(30),
            &log,
            async || {
                reqwest::get(&url)
                    .await
                    .is_ok_and(|response| response.status() == 200)
            },
        )
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).expect("running")
    }

    pub fn signal(&self, signal: i32) {
        let result = send_signal(self.pid(), signal);
        assert!(result, "kill({signal}) failed");
    }

    /// Waits for the process to exit; returns its exit code.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "holdfast did not exit within {timeout:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The admin `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin_url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// The value of one sample, e.g. `holdfast_http_requests_total{code="404",method="GET",route="none"}`.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        metric_value(&self.metrics().await, sample)
    }

    /// Rewrites the config file (same listen/admin substitution) without signalling.
    pub fn write_config(&self, yaml: &str) {
        let mut text = yaml
            .replace("{listen}", &self.addr.to_string())
            .replace("{admin}", &self.admin.to_string());
        if !text.contains("\nlisten:") && !text.starts_with("listen:") {
            text = format!("listen: {}\nadmin: {}\n{text}", self.addr, self.admin);
        }
        let tmp = self.config.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp).expect("write config");
        file.write_all(text.as_bytes()).expect("write config");
        file.sync_all().expect("sync");
        std::fs::rename(&tmp, &self.config).expect("replace config");
    }
}

/// The value of a sample line in Prometheus text; label order as Holdfast renders (sorted).
pub fn metric_value(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|value| value.trim().parse().ok())
}

/// `kill -SIGNAL pid`, through the kill command so the harness needs no unsafe code.
pub fn send_signal(pid: i32, signal: i32) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success())
}

pub const SIGHUP: i32 = 1;
pub const SIGKILL: i32 = 9;
pub const SIGQUIT: i32 = 3;
pub const SIGTERM: i32 = 15;

impl Drop for Holdfast {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- holdfast log ---\n{}", self.log());
        }
    }
}

/// Runs `holdfast` with arguments and returns (exit code, stdout, stderr).
pub fn run_holdfast(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(holdfast_bin())
        .args(args)
        .output()
        .expect("run holdfast");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Sends raw bytes over a fresh TCP connection and returns everything read until the server
/// closes or `timeout` passes.
pub async fn raw_request(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
