//! Real Redis servers for the tests, on free loopback ports with persistence off, killed when the
//! test ends (panics included):
//!
//! - [`RedisServer`]: one `redis-server`;
//! - [`RedisCluster`]: a Redis Cluster of six nodes, three masters with a replica each, that can
//!   crash a node, wait for its failover, reshard and move the slot of one key;
//! - [`RedisSentinels`]: a master, its replica and three Sentinels watching them, that can crash
//!   the master and wait for the Sentinels to promote the replica.
//!
//! The fixtures wait for readiness, failovers and slot moves by polling the servers' own view of
//! themselves against a deadline, never with fixed sleeps. They talk RESP by hand ([`command`]), so
//! the tests crate needs no Redis client, and use `redis-cli --cluster` only to create and reshard
//! a cluster. Tests that need Redis fail (not skip) when it is not installed.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    process: Process,
}

impl RedisServer {
    pub async fn start() -> Self {
        let port = crate::free_port();
        let dir = server_dir();
        let args = common_args(port, dir.path());
        Self {
            port,
            process: Process::start("redis-server", port, dir, &args).await,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts again on the same port (after [`RedisServer::kill`]) and waits for PONG.
    pub async fn restart(&mut self) {
        self.process.restart().await;
    }

    /// Kills the server (as a crash would).
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// RESP by hand
// ---------------------------------------------------------------------------------------------

/// How long one command may take, connection included, before it counts as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the fixtures look again while they wait for the servers to agree.
const POLL: Duration = Duration::from_millis(50);

/// A RESP2 reply (error replies are the `Err` of [`command`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Int(i64),
    /// `None`: the nil bulk string.
    Bulk(Option<Vec<u8>>),
    /// `None`: the nil array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// A status, bulk string (lossy UTF-8) or integer as text; empty for nil and arrays.
    pub fn text(&self) -> String {
        match self {
            Reply::Status(text) => text.clone(),
            Reply::Int(n) => n.to_string(),
            Reply::Bulk(Some(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            Reply::Bulk(None) | Reply::Array(_) => String::new(),
        }
    }

    /// An array's items; empty for anything else.
    pub fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(items)) => items,
            _ => &[],
        }
    }

    /// An integer reply.
    pub fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(n) => Some(*n),
            _ => None,
        }
    }
}

/// Sends one command to the Redis (or Sentinel) on `127.0.0.1:port` over a connection of its own
/// and reads its reply. `Err` is either the server's error reply as it sent it (`MOVED 3999
/// 127.0.0.1:21005`, `ERR unknown command …`) or why the exchange failed (refused, timed out).
pub async fn command<A: AsRef<[u8]>>(port: u16, args: &[A]) -> Result<Reply, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = encode(args);
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect to 127.0.0.1:{port}: {e}"))?;
        stream
            .write_all(&request)
            .await
            .map_err(|e| format!("write to 127.0.0.1:{port}: {e}"))?;
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(reply) = parse(&buffer)? {
                return reply.0;
            }
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read from 127.0.0.1:{port}: {e}"))?;
            if n == 0 {
                return Err(format!("127.0.0.1:{port} closed the connection"));
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(COMMAND_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("127.0.0.1:{port}: no reply in {COMMAND_TIMEOUT:?}")))
}

fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One reply from the front of `buffer` and the bytes it took, `None` while it is incomplete. The
/// reply itself is `Err` for an error reply; the outer `Err` is a reply that is not RESP.
type Parsed = (Result<Reply, String>, usize);

fn parse(buffer: &[u8]) -> Result<Option<Parsed>, String> {
    let Some(end) = buffer.windows(2).position(|pair| pair == b"\r\n") else {
        return Ok(None);
    };
    let line = std::str::from_utf8(&buffer[1..end])
        .map_err(|_| "a RESP header that is not UTF-8".to_owned())?;
    let after = end + 2;
    let number = || {
        line.parse::<i64>()
            .map_err(|_| format!("a RESP length or integer that is not one: {line:?}"))
    };
    let parsed = match buffer[0] {
        b'+' => (Ok(Reply::Status(line.to_owned())), after),
        b'-' => (Err(line.to_owned()), after),
        b':' => (Ok(Reply::Int(number()?)), after),
        b'$' => match usize::try_from(number()?) {
            Err(_) => (Ok(Reply::Bulk(None)), after),
            Ok(len) if buffer.len() < after + len + 2 => return Ok(None),
            Ok(len) => (
                Ok(Reply::Bulk(Some(buffer[after..after + len].to_vec()))),
                after + len + 2,
            ),
        },
        b'*' => match usize::try_from(number()?) {
            Err(_) => (Ok(Reply::Array(None)), after),
            Ok(count) => {
                let mut items = Vec::with_capacity(count);
                let mut at = after;
                for _ in 0..count {
                    let Some((item, used)) = parse(&buffer[at..])? else {
                        return Ok(None);
                    };
                    // An error inside an array (EXEC, SENTINEL) is kept as its text.
                    items.push(item.unwrap_or_else(Reply::Status));
                    at += used;
                }
                (Ok(Reply::Array(Some(items))), at)
            }
        },
        other => return Err(format!("a RESP reply starting with {:?}", other as char)),
    };
    Ok(Some(parsed))
}

/// The value of `name:value` in an INFO-style text (`INFO`, `CLUSTER INFO`).
fn info_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        line.trim_end_matches('\r')
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
    })
}

/// A flat `[field, value, field, value, …]` array (`SENTINEL MASTER`) as a map.
fn field_map(reply: &Reply) -> HashMap<String, String> {
    reply
        .items()
        .chunks(2)
        .filter(|pair| pair.len() == 2)
        .map(|pair| (pair[0].text(), pair[1].text()))
        .collect()
}

/// Polls `check` until it is `Ok`, and panics with its last `Err` once `timeout` has passed.
async fn settle<T>(
    timeout: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(why) => assert!(
                Instant::now() < deadline,
                "{what}: not done in {timeout:?}; last seen: {why}"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The processes the fixtures start
// ---------------------------------------------------------------------------------------------

/// One `redis-server` a fixture started, with a directory of its own (its working directory, its
/// log, its cluster or Sentinel config), killed with SIGKILL on drop and its directory removed.
struct Process {
    port: u16,
    child: Option<Child>,
    /// What it was started as and with, for a restart.
    what: String,
    args: Vec<String>,
    /// Removed on drop, after the process is killed.
    _dir: tempfile::TempDir,
}

impl Process {
    /// Starts `redis-server args…` (its stdout and stderr to `redis.log` in `dir`) and waits for
    /// it to answer PING.
    async fn start(what: &str, port: u16, dir: tempfile::TempDir, args: &[String]) -> Self {
        let mut process = Self {
            port,
            child: None,
            what: what.to_owned(),
            args: args.to_vec(),
            _dir: dir,
        };
        process.restart().await;
        process
    }

    /// Starts it (again, after a kill: same port, directory and arguments, so a cluster node
    /// finds its `nodes.conf`) and waits for it to answer PING.
    async fn restart(&mut self) {
        let (what, port, args) = (self.what.clone(), self.port, self.args.clone());
        let dir = self._dir.path();
        let log = dir.join("redis.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the redis-server log");
        let err = out.try_clone().expect("clone the redis-server log handle");
        let mut child = Command::new("redis-server")
            .args(&args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}); install it: apt-get install -y redis-server"
                )
            });
        crate::wait_until_up(
            &format!("{what} on port {port}"),
            &mut child,
            Duration::from_secs(10),
            &log,
            async || matches!(command(port, &["PING"]).await, Ok(Reply::Status(pong)) if pong == "PONG"),
        )
        .await;
        self.child = Some(child);
    }

    fn alive(&self) -> bool {
        self.child.is_some()
    }

    /// Sends `signal` (`STOP`, `CONT`) to the process.
    fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("{} on {}: not running", self.what, self.port))
            .id();
        let status = Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {signal} {pid}");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh directory for one server.
fn server_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("holdfast-redis-")
        .tempdir()
        .expect("create a directory for redis-server")
}

fn path_arg(path: &Path) -> String {
    path.to_str()
        .expect("temporary directories have UTF-8 paths")
        .to_owned()
}

/// The options every server the fixtures start shares: loopback only, nothing written to disk,
/// and a replica's first sync starts at once (the default waits 5 s for more replicas to join).
fn common_args(port: u16, dir: &Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--dir",
        &path_arg(dir),
        "--save",
        "",
        "--appendonly",
        "no",
        "--repl-diskless-sync-delay",
        "0",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Runs `redis-cli args…` to its end and returns its output; panics when it fails or takes more
/// than `timeout`.
async fn redis_cli(args: &[String], timeout: Duration) -> String {
    let run = tokio::process::Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| panic!("redis-cli {} took more than {timeout:?}", args.join(" ")))
        .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}); install redis-tools"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && !text.contains("[ERR]"),
        "redis-cli {} failed ({}):\n{text}",
        args.join(" "),
        output.status
    );
    text
}

// ---------------------------------------------------------------------------------------------
// Redis Cluster
// ---------------------------------------------------------------------------------------------

/// How many nodes a [`RedisCluster`] has: three masters with a replica each.
const CLUSTER_NODES: usize = 6;

/// How long a cluster may take to agree again after a change (creation, failover, slot move).
const CLUSTER_SETTLE: Duration = Duration::from_secs(20);

/// A Redis Cluster of six `redis-server --cluster-enabled yes` nodes on loopback: three masters
/// sharing the 16384 slots and one replica for each. A node is declared failed after 1 s
/// unreachable (`cluster-node-timeout 1000`), so a crashed master's replica takes over in about
/// 2 s. Each node's cluster bus listens on a port of its own from [`crate::free_port`]
/// (`cluster-port`) rather than on port + 10000, which could be a port the harness hands out.
/// Every process is killed, and its directory removed, when the cluster is dropped.
pub struct RedisCluster {
    nodes: Vec<Process>,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct ClusterNode {
    id: String,
    port: u16,
    flags: Vec<String>,
    /// The master it replicates, for a replica.
    master_id: Option<String>,
    connected: bool,
    /// Inclusive ranges.
    slots: Vec<(u16, u16)>,
    /// `[slot->-id]` / `[slot-<-id]`: a slot being migrated or imported.
    open_slots: Vec<String>,
}

impl ClusterNode {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    fn is_master(&self) -> bool {
        self.has_flag("master")
    }

    fn slot_count(&self) -> u32 {
        self.slots
            .iter()
            .map(|&(first, last)| u32::from(last - first) + 1)
            .sum()
    }

    fn owns(&self, slot: u16) -> bool {
        self.slots
            .iter()
            .any(|&(first, last)| (first..=last).contains(&slot))
    }
}

/// Slot ranges (inclusive) and the port of the master serving each, in slot order.
type SlotMap = Vec<(u16, u16, u16)>;

fn parse_cluster_nodes(text: &str) -> Result<Vec<ClusterNode>, String> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let bad = || format!("a CLUSTER NODES line not understood: {line:?}");
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return Err(bad());
            }
            // ip:port@cport[,hostname]
            let address = fields[1].split('@').next().ok_or_else(bad)?;
            let port = address
                .rsplit(':')
                .next()
                .and_then(|port| port.parse().ok())
                .ok_or_else(bad)?;
            let mut slots = Vec::new();
            let mut open_slots = Vec::new();
            for slot in &fields[8..] {
                if slot.starts_with('[') {
                    open_slots.push((*slot).to_owned());
                    continue;
                }
                let (first, last) = slot.split_once('-').unwrap_or((slot, slot));
                slots.push((
                    first.parse().map_err(|_| bad())?,
                    last.parse().map_err(|_| bad())?,
                ));
            }
            Ok(ClusterNode {
                id: fields[0].to_owned(),
                port,
                flags: fields[2].split(',').map(str::to_owned).collect(),
                master_id: (fields[3] != "-").then(|| fields[3].to_owned()),
                connected: fields[7] == "connected",
                slots,
                open_slots,
            })
        })
        .collect()
}

impl RedisCluster {
    /// Starts six nodes, joins them with `redis-cli --cluster create … --cluster-replicas 1`, and
    /// waits until every node says `cluster_state:ok`, knows all six nodes, agrees with the others
    /// on which master serves which slots, and every master has its replica in sync.
    pub async fn start() -> Self {
        let mut nodes = Vec::with_capacity(CLUSTER_NODES);
        for _ in 0..CLUSTER_NODES {
            let port = crate::free_port();
            let bus_port = crate::free_port();
            let dir = server_dir();
            let mut args = common_args(port, dir.path());
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus_port.to_string(),
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                ]
                .map(str::to_owned),
            );
            nodes.push(Process::start("redis cluster node", port, dir, &args).await);
        }
        let cluster = Self { nodes };
        let mut create = vec!["--cluster".to_owned(), "create".to_owned()];
        create.extend(
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port)),
        );
        create.extend(["--cluster-replicas", "1", "--cluster-yes"].map(str::to_owned));
        redis_cli(&create, Duration::from_secs(30)).await;
        settle(CLUSTER_SETTLE, "redis cluster: creation", async || {
            cluster.agreed(true).await
        })
        .await;
        cluster
    }

    /// `redis://127.0.0.1:port` of every node, masters and replicas, in start order (a node
    /// killed with [`kill`](Self::kill) included).
    pub fn urls(&self) -> Vec<String> {
        self.ports()
            .into_iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// The ports of every node, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|node| node.port).collect()
    }

    /// The ports of the masters that serve slots now, as the first live node sees them.
    pub async fn master_ports(&self) -> Vec<u16> {
        let view = self.view().await;
        let mut masters: Vec<u16> = view
            .iter()
            .filter(|node| node.is_master() && !node.slots.is_empty())
            .map(|node| node.port)
            .collect();
        masters.sort_unstable();
        masters
    }

    /// `redis://127.0.0.1:port` of [`master_ports`](Self::master_ports).
    pub async fn master_urls(&self) -> Vec<String> {
        self.master_ports()
            .await
            .into_iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// The port of the master that serves `key`'s slot, as the first live node sees it.
    pub async fn master_for_key(&self, key: &str) -> u16 {
        let slot = self.keyslot(key).await;
        let view = self.view().await;
        view.iter()
            .find(|node| node.is_master() && node.owns(slot))
            .unwrap_or_else(|| panic!("redis cluster: no master serves slot {slot} ({key:?})"))
            .port
    }

    /// Kills the node on `port` with SIGKILL, as a crash would.
    /// The port of the replica of the master on `master_port`.
    pub async fn replica_of(&self, master_port: u16) -> u16 {
        let view = self.view().await;
        let master = self.live_master(&view, master_port);
        view.iter()
            .find(|node| node.master_id.as_deref() == Some(master.id.as_str()))
            .unwrap_or_else(|| panic!("redis cluster: {master_port} has no replica"))
            .port
    }

    /// Freezes a node (SIGSTOP): connected, but answering nothing, as a stalled host would.
    pub fn pause(&self, port: u16) {
        self.node(port).signal("STOP");
    }

    /// Thaws a node [`paused`](Self::pause).
    pub fn resume(&self, port: u16) {
        self.node(port).signal("CONT");
    }

    fn node(&self, port: u16) -> &Process {
        self.nodes
            .iter()
            .find(|node| node.port == port)
            .unwrap_or_else(|| panic!("redis cluster: no node on port {port}"))
    }

    /// Starts a killed node again; it rejoins the cluster (as a replica, if it was failed over).
    pub async fn restart(&mut self, port: u16) {
        self.nodes
            .iter_mut()
            .find(|node| node.port == port)
            .unwrap_or_else(|| panic!("redis cluster: no node on port {port}"))
            .restart()
            .await;
    }

    pub fn kill(&mut self, port: u16) {
        self.nodes
            .iter_mut()
            .find(|node| node.port == port)
            .unwrap_or_else(|| panic!("redis cluster: no node on port {port}"))
            .kill();
    }

    /// Waits (up to 20 s) until the surviving nodes say `cluster_state:ok` again, all mark the
    /// node on `dead_port` as failed, and a live master serves every slot, the dead master's
    /// included (its replica, promoted).
    pub async fn wait_failover(&self, dead_port: u16) {
        assert!(
            self.nodes
                .iter()
                .any(|node| node.port == dead_port && !node.alive()),
            "redis cluster: wait_failover({dead_port}): not a node this cluster killed"
        );
        settle(
            CLUSTER_SETTLE,
            &format!("redis cluster: failover of {dead_port}"),
            async || self.agreed(false).await,
        )
        .await;
    }

    /// Moves `slots` slots from the master on `from_port` to the master on `to_port`, keys
    /// included, with `redis-cli --cluster reshard`, and waits until every node agrees.
    pub async fn reshard(&self, from_port: u16, to_port: u16, slots: u32) {
        let view = self.view().await;
        let from = self.live_master(&view, from_port);
        let to = self.live_master(&view, to_port);
        let expected = to.slot_count() + slots;
        let args = [
            "--cluster".to_owned(),
            "reshard".to_owned(),
            format!("127.0.0.1:{from_port}"),
            "--cluster-from".to_owned(),
            from.id.clone(),
            "--cluster-to".to_owned(),
            to.id.clone(),
            "--cluster-slots".to_owned(),
            slots.to_string(),
            "--cluster-yes".to_owned(),
        ];
        redis_cli(&args, Duration::from_secs(60)).await;
        settle(
            CLUSTER_SETTLE,
            &format!("redis cluster: reshard of {slots} slots from {from_port} to {to_port}"),
            async || {
                let view = self.agreed(false).await?;
                let now = view
                    .iter()
                    .find(|node| node.port == to_port)
                    .map_or(0, ClusterNode::slot_count);
                if now == expected {
                    Ok(())
                } else {
                    Err(format!("{to_port} serves {now} slots, not {expected}"))
                }
            },
        )
        .await;
    }

    /// Moves exactly the slot of `key`, its keys included, to the master on `to_port` (IMPORTING
    /// on the target, MIGRATING on the source, MIGRATE of every key, then SETSLOT NODE on every
    /// master), and waits until every node agrees. Nothing to do if `to_port` serves it already.
    pub async fn move_slot_of(&self, key: &str, to_port: u16) {
        self.move_slot_of_with(key, to_port, async || {}).await;
    }

    /// [`RedisCluster::move_slot_of`], running `midway` while the slot is half moved: its keys
    /// on the target, which imports it, and the source still owning it (it answers `ASK`).
    pub async fn move_slot_of_with(&self, key: &str, to_port: u16, midway: impl AsyncFnOnce()) {
        let slot = self.keyslot(key).await.to_string();
        let view = self.view().await;
        let to = self.live_master(&view, to_port);
        let from = view
            .iter()
            .find(|node| node.is_master() && node.owns(slot.parse().expect("a slot number")))
            .unwrap_or_else(|| panic!("redis cluster: no master serves slot {slot} ({key:?})"));
        if from.port == to_port {
            return;
        }
        let setslot = async |port: u16, args: &[&str]| {
            let mut all = vec!["CLUSTER", "SETSLOT", &slot];
            all.extend_from_slice(args);
            command(port, &all)
                .await
                .unwrap_or_else(|e| panic!("redis cluster: {} on {port}: {e}", all.join(" ")));
        };
        setslot(to_port, &["IMPORTING", &from.id]).await;
        setslot(from.port, &["MIGRATING", &to.id]).await;
        loop {
            let keys = command(from.port, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"])
                .await
                .unwrap_or_else(|e| panic!("redis cluster: GETKEYSINSLOT {slot}: {e}"));
            if keys.items().is_empty() {
                break;
            }
            let to_port_text = to_port.to_string();
            let mut migrate: Vec<Vec<u8>> = [
                "MIGRATE",
                "127.0.0.1",
                &to_port_text,
                "",
                "0",
                "5000",
                "REPLACE",
                "KEYS",
            ]
            .iter()
            .map(|arg| arg.as_bytes().to_vec())
            .collect();
            migrate.extend(keys.items().iter().map(|key| match key {
                Reply::Bulk(Some(bytes)) => bytes.clone(),
                other => other.text().into_bytes(),
            }));
            command(from.port, &migrate).await.unwrap_or_else(|e| {
                panic!("redis cluster: MIGRATE of slot {slot} to {to_port}: {e}")
            });
        }
        midway().await;
        // The target first, then the source, then every other master (the order the Redis
        // manual gives), so no client is sent back and forth in between.
        setslot(to_port, &["NODE", &to.id]).await;
        setslot(from.port, &["NODE", &to.id]).await;
        for master in view.iter().filter(|node| {
            node.is_master()
                && node.port != to_port
                && node.port != from.port
                && self.is_live(node.port)
        }) {
            setslot(master.port, &["NODE", &to.id]).await;
        }
        let slot: u16 = slot.parse().expect("a slot number");
        settle(
            CLUSTER_SETTLE,
            &format!("redis cluster: slot {slot} to {to_port}"),
            async || {
                let view = self.agreed(false).await?;
                match view.iter().find(|node| node.is_master() && node.owns(slot)) {
                    Some(owner) if owner.port == to_port => Ok(()),
                    owner => Err(format!(
                        "slot {slot} is served by {:?}",
                        owner.map(|n| n.port)
                    )),
                }
            },
        )
        .await;
    }

    /// `INFO commandstats` of every live master, summed: calls per command (`get`, `xadd`,
    /// `cluster|info`, …).
    pub async fn commandstats(&self) -> HashMap<String, u64> {
        let mut calls = HashMap::new();
        let view = self.view().await;
        for master in view
            .iter()
            .filter(|node| node.is_master() && self.is_live(node.port))
        {
            let info = command(master.port, &["INFO", "commandstats"])
                .await
                .unwrap_or_else(|e| {
                    panic!("redis cluster: INFO commandstats on {}: {e}", master.port)
                })
                .text();
            for line in info.lines() {
                let Some((name, stats)) = line
                    .trim_end_matches('\r')
                    .strip_prefix("cmdstat_")
                    .and_then(|line| line.split_once(':'))
                else {
                    continue;
                };
                let count = stats
                    .split(',')
                    .find_map(|stat| stat.strip_prefix("calls="))
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
                *calls.entry(name.to_owned()).or_insert(0) += count;
            }
        }
        calls
    }

    fn is_live(&self, port: u16) -> bool {
        self.nodes
            .iter()
            .any(|node| node.port == port && node.alive())
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|node| node.alive())
            .map(|node| node.port)
            .collect()
    }

    fn live_master<'a>(&self, view: &'a [ClusterNode], port: u16) -> &'a ClusterNode {
        view.iter()
            .find(|node| node.port == port && node.is_master() && self.is_live(port))
            .unwrap_or_else(|| panic!("redis cluster: {port} is not a live master"))
    }

    async fn keyslot(&self, key: &str) -> u16 {
        let port = self.live_ports()[0];
        command(port, &["CLUSTER", "KEYSLOT", key])
            .await
            .ok()
            .and_then(|slot| slot.int())
            .and_then(|slot| u16::try_from(slot).ok())
            .unwrap_or_else(|| panic!("redis cluster: CLUSTER KEYSLOT {key:?} on {port} failed"))
    }

    /// `CLUSTER NODES` of the first live node.
    async fn view(&self) -> Vec<ClusterNode> {
        let port = *self
            .live_ports()
            .first()
            .expect("redis cluster: every node is dead");
        Self::nodes_of(port)
            .await
            .unwrap_or_else(|e| panic!("redis cluster: CLUSTER NODES on {port}: {e}"))
    }

    async fn nodes_of(port: u16) -> Result<Vec<ClusterNode>, String> {
        let text = command(port, &["CLUSTER", "NODES"]).await?.text();
        parse_cluster_nodes(&text)
    }

    /// `Ok` with the first live node's view once every live node says `cluster_state:ok`, knows
    /// all six nodes, sees the other live nodes connected and healthy and the dead ones failed,
    /// and has the same slot map, all 16384 slots served by live masters with no slot half
    /// moved; and every live replica is in sync with a live master. With `replicas`, every master
    /// must also have a replica. `Err` says what is not there yet.
    async fn agreed(&self, replicas: bool) -> Result<Vec<ClusterNode>, String> {
        let live = self.live_ports();
        let mut reference: Option<(u16, Vec<ClusterNode>, SlotMap)> = None;
        for &port in &live {
            let info = command(port, &["CLUSTER", "INFO"]).await?.text();
            let state = info_field(&info, "cluster_state");
            if state != Some("ok") {
                return Err(format!("{port}: cluster_state {state:?}"));
            }
            let known = info_field(&info, "cluster_known_nodes");
            if known != Some(&CLUSTER_NODES.to_string()) {
                return Err(format!("{port}: cluster_known_nodes {known:?}"));
            }
            let view = Self::nodes_of(port).await?;
            let mut map = Vec::new();
            for node in &view {
                if !node.open_slots.is_empty() {
                    return Err(format!("{port} sees open slots {:?}", node.open_slots));
                }
                if live.contains(&node.port) {
                    let unhealthy = ["fail", "fail?", "handshake", "noaddr"]
                        .into_iter()
                        .find(|flag| node.has_flag(flag));
                    if let Some(flag) = unhealthy {
                        return Err(format!("{port} sees {} as {flag}", node.port));
                    }
                    if !node.has_flag("myself") && !node.connected {
                        return Err(format!("{port} is not connected to {}", node.port));
                    }
                } else if !node.has_flag("fail") {
                    return Err(format!("{port} does not see dead {} as failed", node.port));
                }
                if node.is_master() {
                    if !node.slots.is_empty() && !live.contains(&node.port) {
                        return Err(format!("{port} sees dead {} serving slots", node.port));
                    }
                    map.extend(node.slots.iter().map(|&(a, b)| (a, b, node.port)));
                }
            }
            map.sort_unstable();
            let served: u32 = map.iter().map(|&(a, b, _)| u32::from(b - a) + 1).sum();
            if served != 16384 {
                return Err(format!("{port} sees {served} of 16384 slots served"));
            }
            match &reference {
                None => reference = Some((port, view, map)),
                Some((first, _, first_map)) if *first_map != map => {
                    return Err(format!("{port} and {first} disagree on the slot map"));
                }
                Some(_) => {}
            }
        }
        let (_, view, _) = reference.ok_or("every node is dead")?;
        for node in view.iter().filter(|node| live.contains(&node.port)) {
            if node.has_flag("slave") {
                let master = view
                    .iter()
                    .find(|m| Some(&m.id) == node.master_id.as_ref())
                    .filter(|m| m.is_master() && live.contains(&m.port))
                    .ok_or_else(|| format!("{} replicates no live master", node.port))?;
                let info = command(node.port, &["INFO", "replication"]).await?.text();
                let link = info_field(&info, "master_link_status");
                if link != Some("up") {
                    return Err(format!(
                        "replica {} of {}: master_link_status {link:?}",
                        node.port, master.port
                    ));
                }
            } else if replicas
                && !node.slots.is_empty()
                && !view.iter().any(|r| r.master_id.as_ref() == Some(&node.id))
            {
                return Err(format!("master {} has no replica yet", node.port));
            }
        }
        Ok(view)
    }
}

// ---------------------------------------------------------------------------------------------
// Sentinel
// ---------------------------------------------------------------------------------------------

/// A master and its replica watched by three Sentinels (`redis-server sentinel.conf --sentinel`,
/// quorum 2) on loopback. A master unreachable for 1 s is subjectively down
/// (`down-after-milliseconds 1000`), and the Sentinels promote the replica a few seconds later.
/// Every process is killed, and its directory removed, when the fixture is dropped.
pub struct RedisSentinels {
    name: String,
    /// The first master, then its replica.
    servers: Vec<Process>,
    sentinels: Vec<Process>,
}

/// How long Sentinels may take to see each other (hello messages every 2 s) or to fail over (a
/// split vote retries after twice `failover-timeout`, 10 s).
const SENTINEL_SETTLE: Duration = Duration::from_secs(30);

impl RedisSentinels {
    /// Starts a master, its replica (waiting until it is in sync) and three Sentinels that
    /// monitor the master as `master_name`, and waits until every Sentinel sees the master up, the
    /// replica linked to it and the two other Sentinels.
    pub async fn start(master_name: &str) -> Self {
        let master_port = crate::free_port();
        let dir = server_dir();
        let args = common_args(master_port, dir.path());
        let master = Process::start("redis master", master_port, dir, &args).await;
        let replica_port = crate::free_port();
        let dir = server_dir();
        let mut args = common_args(replica_port, dir.path());
        args.extend([
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            master_port.to_string(),
        ]);
        let replica = Process::start("redis replica", replica_port, dir, &args).await;
        settle(
            Duration::from_secs(10),
            "redis replica: sync with its master",
            async || {
                let info = command(replica_port, &["INFO", "replication"])
                    .await?
                    .text();
                match info_field(&info, "master_link_status") {
                    Some("up") => Ok(()),
                    link => Err(format!("master_link_status {link:?}")),
                }
            },
        )
        .await;

        let mut sentinels = Vec::with_capacity(3);
        for _ in 0..3 {
            let port = crate::free_port();
            let dir = server_dir();
            let config = dir.path().join("sentinel.conf");
            std::fs::write(
                &config,
                format!(
                    "port {port}\n\
                     bind 127.0.0.1\n\
                     dir {dir}\n\
                     sentinel monitor {master_name} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {master_name} 1000\n\
                     sentinel failover-timeout {master_name} 5000\n\
                     sentinel parallel-syncs {master_name} 1\n",
                    dir = path_arg(dir.path()),
                ),
            )
            .expect("write sentinel.conf");
            let args = [path_arg(&config), "--sentinel".to_owned()];
            sentinels.push(Process::start("redis sentinel", port, dir, &args).await);
        }
        let fixture = Self {
            name: master_name.to_owned(),
            servers: vec![master, replica],
            sentinels,
        };
        settle(SENTINEL_SETTLE, "redis sentinels: discovery", async || {
            fixture.all_see_everyone().await
        })
        .await;
        fixture
    }

    /// `redis://127.0.0.1:port` of the three Sentinels.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|sentinel| format!("redis://127.0.0.1:{}", sentinel.port))
            .collect()
    }

    /// The name the Sentinels monitor the master by.
    pub fn master_name(&self) -> &str {
        &self.name
    }

    /// The port of the current master, as the first Sentinel that answers gives it
    /// (`SENTINEL get-master-addr-by-name`).
    pub async fn master_port(&self) -> u16 {
        let mut errors = Vec::new();
        for sentinel in self.sentinels.iter().filter(|s| s.alive()) {
            match command(
                sentinel.port,
                &["SENTINEL", "get-master-addr-by-name", &self.name],
            )
            .await
            {
                Ok(reply) => match reply.items().get(1).and_then(|p| p.text().parse().ok()) {
                    Some(port) => return port,
                    None => errors.push(format!("{}: {reply:?}", sentinel.port)),
                },
                Err(e) => errors.push(e),
            }
        }
        panic!(
            "redis sentinels: no master address for {}: {errors:?}",
            self.name
        )
    }

    /// Starts a killed server again; the sentinels make it a replica of the new master.
    pub async fn restart(&mut self, port: u16) {
        self.servers
            .iter_mut()
            .find(|server| server.port == port)
            .unwrap_or_else(|| panic!("redis sentinels: no server on port {port}"))
            .restart()
            .await;
    }

    /// Kills the current master (per [`master_port`](Self::master_port)) with SIGKILL, as a crash
    /// would, and returns its port.
    pub async fn kill_master(&mut self) -> u16 {
        let port = self.master_port().await;
        self.servers
            .iter_mut()
            .find(|server| server.port == port)
            .unwrap_or_else(|| {
                panic!("redis sentinels: the master {port} is not a server they watch")
            })
            .kill();
        port
    }

    /// Waits (up to 30 s) until every Sentinel names the same master, not `old_port`, and that
    /// server says `role:master`; returns its port.
    pub async fn wait_failover(&self, old_port: u16) -> u16 {
        settle(
            SENTINEL_SETTLE,
            &format!("redis sentinels: failover of {} from {old_port}", self.name),
            async || {
                let mut named = None;
                for sentinel in self.sentinels.iter().filter(|s| s.alive()) {
                    let reply = command(
                        sentinel.port,
                        &["SENTINEL", "get-master-addr-by-name", &self.name],
                    )
                    .await?;
                    let port: u16 = reply
                        .items()
                        .get(1)
                        .and_then(|p| p.text().parse().ok())
                        .ok_or_else(|| format!("{}: {reply:?}", sentinel.port))?;
                    if port == old_port {
                        return Err(format!("{} still names {old_port}", sentinel.port));
                    }
                    match named {
                        Some(other) if other != port => {
                            return Err(format!("Sentinels name both {other} and {port}"));
                        }
                        _ => named = Some(port),
                    }
                }
                let port = named.ok_or("every Sentinel is dead")?;
                let info = command(port, &["INFO", "replication"]).await?.text();
                match info_field(&info, "role") {
                    Some("master") => Ok(port),
                    role => Err(format!("{port} says role {role:?}")),
                }
            },
        )
        .await
    }

    async fn all_see_everyone(&self) -> Result<(), String> {
        for sentinel in &self.sentinels {
            let port = sentinel.port;
            let master = field_map(&command(port, &["SENTINEL", "MASTER", &self.name]).await?);
            let field = |name: &str| master.get(name).map(String::as_str).unwrap_or("");
            if field("flags") != "master" {
                return Err(format!(
                    "Sentinel {port}: master flags {:?}",
                    field("flags")
                ));
            }
            if field("num-slaves").parse::<u32>().unwrap_or(0) < 1 {
                return Err(format!("Sentinel {port} sees no replica yet"));
            }
            if field("num-other-sentinels") != "2" {
                return Err(format!(
                    "Sentinel {port} sees {} other Sentinels",
                    field("num-other-sentinels")
                ));
            }
            let replicas = command(port, &["SENTINEL", "REPLICAS", &self.name]).await?;
            for replica in replicas.items().iter().map(field_map) {
                let get = |name: &str| replica.get(name).cloned().unwrap_or_default();
                if get("flags") != "slave" || get("master-link-status") != "ok" {
                    return Err(format!(
                        "Sentinel {port} sees replica {}: flags {:?}, master link {:?}",
                        get("port"),
                        get("flags"),
                        get("master-link-status")
                    ));
                }
            }
        }
        Ok(())
    }
}
