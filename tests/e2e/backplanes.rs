//! Channels on a Redis Cluster and on a Sentinel-watched master: pollers hopping between
//! instances get every message once and in order; a master killed mid-stream with
//! `durability: replicated` loses nothing acknowledged; held polls survive a failover and a slot
//! migration; and the backplane configs that cannot work are refused with a clear error.

use holdfast_tests::redis::command;
use holdfast_tests::{eventually, run_holdfast, Holdfast, RedisCluster, RedisSentinels, SIGHUP};
use serde_json::{json, Value};
use std::time::Duration;

const ROUTES: &str = r#"
server: { shutdown_grace: 2s }
routes:
  - { name: poll, match: { path: "/poll/{room}", methods: [GET] }, longpoll: { channel: "room:{room}", timeout: 30s } }
  - { name: batch, match: { path: "/batch/{room}", methods: [GET] }, longpoll: { channel: "room:{room}", format: batch, limit: 1000, start: oldest, timeout: 60s } }
  - { name: push, match: { path: "/push/{room}", methods: [POST] }, publish: { channel: "room:{room}" } }
"#;

fn config(backplane: &str) -> String {
    format!("backplane: {{ redis: {backplane} }}{ROUTES}")
}

fn cluster_config(cluster: &RedisCluster, durability: &str) -> String {
    let nodes = cluster.urls().join(", ");
    config(&format!(
        "{{ cluster: [{nodes}], durability: {durability}, replication_timeout: 500ms }}"
    ))
}

fn sentinel_config(sentinels: &RedisSentinels, master: &str) -> String {
    let nodes = sentinels.sentinel_urls().join(", ");
    config(&format!(
        "{{ sentinel: {{ master: {master}, nodes: [{nodes}] }}, durability: replicated, replication_timeout: 500ms }}"
    ))
}

/// The key a room's messages live under in a cluster (its hash tag decides its slot).
fn room_key(room: &str) -> String {
    format!("holdfast:{{b:room:{room}}}")
}

/// One room per master, so the publishes below reach every shard.
async fn rooms_on_every_master(cluster: &RedisCluster) -> Vec<String> {
    let masters = cluster.master_ports().await;
    let mut rooms: Vec<(u16, String)> = Vec::new();
    for n in 0..1000 {
        let room = format!("r{n}");
        let master = cluster.master_for_key(&room_key(&room)).await;
        if !rooms.iter().any(|(m, _)| *m == master) {
            rooms.push((master, room));
        }
        if rooms.len() == masters.len() {
            break;
        }
    }
    assert_eq!(rooms.len(), 3, "a room on each of the 3 masters");
    rooms.into_iter().map(|(_, room)| room).collect()
}

async fn publish(client: &reqwest::Client, gw: &Holdfast, room: &str, n: u64) -> u16 {
    client
        .post(gw.url(&format!("/push/{room}")))
        .json(&json!({ "n": n }))
        .send()
        .await
        .expect("publish")
        .status()
        .as_u16()
}

/// Polls `room` with its cursor, each poll on the next instance, until `enough` says so; returns
/// the numbers in the order they came.
async fn collect(
    client: reqwest::Client,
    bases: Vec<String>,
    room: String,
    enough: impl Fn(&[u64]) -> bool,
) -> Vec<u64> {
    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    let mut hop = 0;
    while !enough(&seen) {
        let base = &bases[hop % bases.len()];
        hop += 1;
        let url = match &cursor {
            Some(cursor) => format!("{base}/batch/{room}?cursor={cursor}"),
            None => format!("{base}/batch/{room}"),
        };
        let response = client.get(url).send().await.expect("poll");
        match response.status().as_u16() {
            200 => {
                let batch: Value = response.json().await.expect("batch");
                for message in batch["messages"].as_array().expect("messages") {
                    seen.push(message["data"]["n"].as_u64().expect("n"));
                }
                cursor = Some(batch["cursor"].as_str().expect("cursor").to_owned());
            }
            204 => {}
            // A poll that arrives while the backplane fails over is told to come back.
            503 => tokio::time::sleep(Duration::from_millis(100)).await,
            status => panic!(
                "poll answered {status}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_pollers_hopping_between_instances_get_every_message_once_in_order() {
    const COUNT: u64 = 40;
    let cluster = RedisCluster::start().await;
    let config = cluster_config(&cluster, "written");
    let gws = [
        Holdfast::start(&config).await,
        Holdfast::start(&config).await,
        Holdfast::start(&config).await,
    ];
    let bases: Vec<String> = gws.iter().map(|gw| gw.url("")).collect();
    let rooms = rooms_on_every_master(&cluster).await;
    let client = reqwest::Client::new();
    let pollers: Vec<_> = rooms
        .iter()
        .map(|room| {
            tokio::spawn(collect(
                client.clone(),
                bases.clone(),
                room.clone(),
                |seen| seen.len() as u64 >= COUNT,
            ))
        })
        .collect();
    for n in 0..COUNT {
        for room in &rooms {
            let gw = &gws[(n as usize) % gws.len()];
            assert_eq!(publish(&client, gw, room, n).await, 201);
        }
    }
    for poller in pollers {
        let seen = tokio::time::timeout(Duration::from_secs(30), poller)
            .await
            .expect("the pollers finish")
            .expect("join");
        assert_eq!(seen, (0..COUNT).collect::<Vec<_>>());
    }
    // Each publish is one script on one shard, whose wake-up is a sharded publish there
    // (command stats count the commands scripts run too); nothing is published cluster-wide.
    let stats = cluster.commandstats().await;
    assert_eq!(stats.get("spublish").copied(), Some(3 * COUNT), "{stats:?}");
    assert_eq!(stats.get("publish"), None, "{stats:?}");
}

/// Publishes numbers to `room` on `publisher` while `failover` runs, until `after` publishes
/// were acknowledged after it; then checks that every acknowledged one is kept, in order, once,
/// and that a poll held on `poller` from before the failover received exactly those kept.
async fn nothing_acknowledged_is_lost(
    publisher: &Holdfast,
    poller: &Holdfast,
    room: &str,
    failover: impl std::future::Future<Output = ()>,
) {
    let client = reqwest::Client::new();
    for n in 0..5 {
        assert_eq!(publish(&client, publisher, room, n).await, 201);
    }
    // A poller that keeps its cursor across the failover.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let last = stop.clone();
    let held = tokio::spawn(collect(
        client.clone(),
        vec![poller.url("")],
        room.to_owned(),
        move |seen| seen.last().copied() == Some(last.load(std::sync::atomic::Ordering::SeqCst)),
    ));
    // The failover runs beside the publishes, never racing one: a publish cut short by a
    // `select!` would be sent again under the same number.
    let failed_over = std::sync::atomic::AtomicBool::new(false);
    let failing_over = async {
        failover.await;
        failed_over.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let publishing = async {
        let mut statuses = Vec::new();
        let mut readyz_down = false;
        let mut n = 5;
        let mut acked_after = 0;
        while acked_after < 10 {
            let after = failed_over.load(std::sync::atomic::Ordering::SeqCst);
            let status = publish(&client, publisher, room, n).await;
            if status == 503 && !readyz_down {
                readyz_down = reqwest::get(publisher.admin_url("/readyz"))
                    .await
                    .is_ok_and(|r| r.status() == 503);
            }
            if after && status == 201 {
                acked_after += 1;
            }
            statuses.push((n, status));
            n += 1;
            // Paced, so the failover's gap shows as a run of 503s, not thousands.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (statuses, readyz_down)
    };
    let publishing = async { tokio::join!(failing_over, publishing).1 };
    let (statuses, readyz_down) = tokio::time::timeout(Duration::from_secs(60), publishing)
        .await
        .expect("the failover ends and publishes are acknowledged again");
    let acked: Vec<u64> = (0..5)
        .chain(statuses.iter().filter(|(_, s)| *s == 201).map(|(n, _)| *n))
        .collect();
    let refused = statuses.iter().filter(|(_, s)| *s == 503).count();
    assert!(
        statuses.iter().all(|(_, s)| *s == 201 || *s == 503),
        "only 201 or 503: {statuses:?}"
    );
    assert!(
        refused > 0,
        "the failover's gap refused publishes: {statuses:?}"
    );
    assert!(readyz_down, "/readyz said 503 during the gap");
    assert!(
        publisher
            .metric("holdfast_backplane_unavailable_total{operation=\"publish\",reason=\"down\"}")
            .await
            .unwrap_or(0.0)
            + publisher
                .metric("holdfast_backplane_unavailable_total{operation=\"publish\",reason=\"unreplicated\"}")
                .await
                .unwrap_or(0.0)
            >= refused as f64,
        "{}",
        publisher.metrics().await
    );

    // Everything kept, read afresh: in order, once each, every acknowledged one among them.
    let kept = collect(
        client.clone(),
        vec![poller.url("")],
        room.to_owned(),
        |seen| seen.last() >= acked.last(),
    )
    .await;
    assert!(
        kept.windows(2).all(|w| w[0] < w[1]),
        "in order, once: {kept:?}"
    );
    let missing: Vec<u64> = acked
        .iter()
        .filter(|n| !kept.contains(n))
        .copied()
        .collect();
    assert!(missing.is_empty(), "acknowledged and lost: {missing:?}");

    // The poll held across the failover got exactly what is kept, and then this one (told
    // first, so that it stops on it rather than polling again).
    stop.store(1_000_000, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(publish(&client, publisher, room, 1_000_000).await, 201);
    let seen = tokio::time::timeout(Duration::from_secs(30), held)
        .await
        .expect("the held poller finishes")
        .expect("join");
    let mut expected = kept.clone();
    expected.push(1_000_000);
    assert_eq!(
        seen, expected,
        "the held poller got each kept message once, in order"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_master_killed_with_replicated_durability_loses_nothing_acknowledged() {
    let mut cluster = RedisCluster::start().await;
    let config = cluster_config(&cluster, "replicated");
    let publisher = Holdfast::start(&config).await;
    let poller = Holdfast::start(&config).await;
    let room = "failover";
    let master = cluster.master_for_key(&room_key(room)).await;
    let failover = async {
        // Let a few publishes through first, then crash the room's master.
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.kill(master);
        cluster.wait_failover(master).await;
        // The promoted replica has no replica of its own: `replicated` publishes are refused
        // until the crashed node is back (as its replica), as an orchestrator would bring it.
        cluster.restart(master).await;
    };
    nothing_acknowledged_is_lost(&publisher, &poller, room, failover).await;
    assert_ne!(cluster.master_for_key(&room_key(room)).await, master);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replicated_publish_no_replica_acknowledges_is_a_503() {
    let cluster = RedisCluster::start().await;
    let gw = Holdfast::start(&cluster_config(&cluster, "replicated")).await;
    let client = reqwest::Client::new();
    let room = "stalled";
    let master = cluster.master_for_key(&room_key(room)).await;
    let replica = cluster.replica_of(master).await;
    assert_eq!(publish(&client, &gw, room, 1).await, 201);
    // The replica stalls (connected, silent): the master has the message, no replica does.
    cluster.pause(replica);
    let response = client
        .post(gw.url(&format!("/push/{room}")))
        .json(&json!({ "n": 2 }))
        .send()
        .await
        .expect("publish");
    cluster.resume(replica);
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(
        problem["detail"],
        "no replica acknowledged the message in time, so it is not acknowledged as stored; publish it again"
    );
    assert_eq!(
        gw.metric(
            "holdfast_backplane_unavailable_total{operation=\"publish\",reason=\"unreplicated\"}"
        )
        .await,
        Some(1.0)
    );
    // Only that publish: the backplane itself stayed up, and the next one is acknowledged.
    assert_eq!(publish(&client, &gw, room, 3).await, 201);
}

#[tokio::test(flavor = "multi_thread")]
async fn sentinel_failover_loses_nothing_acknowledged() {
    let mut sentinels = RedisSentinels::start("holdfast").await;
    let config = sentinel_config(&sentinels, "holdfast");
    let publisher = Holdfast::start(&config).await;
    let poller = Holdfast::start(&config).await;
    let failover = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let old = sentinels.kill_master().await;
        let new = sentinels.wait_failover(old).await;
        assert_ne!(new, old);
        sentinels.restart(old).await;
    };
    nothing_acknowledged_is_lost(&publisher, &poller, "failover", failover).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn held_polls_are_woken_after_their_slot_moves() {
    let cluster = RedisCluster::start().await;
    let config = cluster_config(&cluster, "written");
    let a = Holdfast::start(&config).await;
    let b = Holdfast::start(&config).await;
    let client = reqwest::Client::new();
    let room = "moving";
    let owner = cluster.master_for_key(&room_key(room)).await;
    let masters = cluster.master_ports().await;
    let target = *masters
        .iter()
        .find(|&&p| p != owner)
        .expect("another master");

    for round in 0..2u64 {
        let polls: Vec<_> = [&a, &b]
            .iter()
            .map(|gw| tokio::spawn(client.get(gw.url(&format!("/poll/{room}"))).send()))
            .collect();
        for gw in [&a, &b] {
            eventually(Duration::from_secs(10), "the polls held", async || {
                gw.metric("holdfast_longpoll_held{route=\"poll\"}").await == Some(1.0)
            })
            .await;
        }
        if round == 0 {
            // The room's slot alone, the way `redis-cli --cluster reshard` moves each slot, with
            // the publish halfway: the key is on the target already and the source answers ASK.
            cluster
                .move_slot_of_with(&room_key(room), target, async || {
                    assert_eq!(publish(&client, &a, room, round).await, 201);
                })
                .await;
            assert_eq!(cluster.master_for_key(&room_key(room)).await, target);
            let stats = cluster.commandstats().await;
            assert!(
                stats.get("asking").is_some_and(|&n| n >= 1),
                "the publish followed ASK: {stats:?}"
            );
        } else {
            // Then a reshard of the new owner's first 200 slots back, and a publish after it.
            cluster.reshard(target, owner, 200).await;
            assert_eq!(publish(&client, &a, room, round).await, 201);
        }
        for poll in polls {
            let response = tokio::time::timeout(Duration::from_secs(10), poll)
                .await
                .expect("the held poll is woken")
                .expect("join")
                .expect("poll");
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.expect("json");
            assert_eq!(body, json!({ "n": round }));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_no_node_of_which_answers_is_refused_at_start_and_at_reload() {
    let dead = [holdfast_tests::free_port(), holdfast_tests::free_port()];
    let nodes = dead.map(|p| format!("redis://127.0.0.1:{p}")).join(", ");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("cluster.yaml");
    let yaml = format!(
        "listen: 127.0.0.1:{}\nbackplane: {{ redis: {{ cluster: [{nodes}] }} }}\nroutes: []\n",
        holdfast_tests::free_port()
    );
    std::fs::write(&file, &yaml).expect("write");
    let (code, _, stderr) = run_holdfast(&["run", "-c", &file.display().to_string()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "cannot start the channel hub: backplane.redis: no node of the cluster answers ("
        ),
        "{stderr}"
    );
    assert!(stderr.contains("check backplane.redis.cluster"), "{stderr}");

    // A running gateway told to move to that cluster keeps what it has.
    let gw = Holdfast::start(ROUTES).await;
    let client = reqwest::Client::new();
    assert_eq!(publish(&client, &gw, "kept", 1).await, 201);
    gw.write_config(&format!(
        "backplane: {{ redis: {{ cluster: [{nodes}] }} }}{ROUTES}"
    ));
    gw.signal(SIGHUP);
    eventually(Duration::from_secs(10), "the reload refused", async || {
        gw.metric("holdfast_config_reloads_total{result=\"error\"}")
            .await
            >= Some(1.0)
    })
    .await;
    assert!(
        gw.log().contains("configuration reload refused; the running configuration stays:\nbackplane.redis: no node of the cluster answers"),
        "{}",
        gw.log()
    );
    assert_eq!(publish(&client, &gw, "kept", 2).await, 201);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sentinel_that_knows_no_such_master_is_refused_at_start() {
    let sentinels = RedisSentinels::start("holdfast").await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("sentinel.yaml");
    let nodes = sentinels.sentinel_urls().join(", ");
    std::fs::write(
        &file,
        format!(
            "listen: 127.0.0.1:{}\nbackplane: {{ redis: {{ sentinel: {{ master: nosuch, nodes: [{nodes}] }} }} }}\nroutes: []\n",
            holdfast_tests::free_port()
        ),
    )
    .expect("write");
    let (code, _, stderr) = run_holdfast(&["run", "-c", &file.display().to_string()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("cannot start the channel hub: backplane.redis: the sentinels know no master named `nosuch`; check backplane.redis.sentinel.master"),
        "{stderr}"
    );
    // The master it does know answers: the sentinels were asked, not found missing.
    assert_eq!(
        command(sentinels.master_port().await, &["PING"])
            .await
            .expect("PING")
            .text(),
        "PONG"
    );
}

#[test]
fn url_and_cluster_together_are_refused_at_load_with_file_and_line() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("both.yaml");
    std::fs::write(
        &file,
        "listen: 127.0.0.1:8080\nbackplane:\n  redis:\n    url: redis://127.0.0.1:6379\n    cluster: [redis://127.0.0.1:7000]\nroutes: []\n",
    )
    .expect("write");
    let (code, _, stderr) = run_holdfast(&["check", &file.display().to_string()]);
    assert_eq!(code, 1, "{stderr}");
    let at = format!("{}:5:", file.display());
    assert!(
        stderr.contains(&at)
            && stderr.contains("backplane.redis.cluster: give `url` or `cluster`, not both"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_shares_rate_limits_between_instances() {
    let origin = holdfast_tests::Origin::echo().await;
    let cluster = RedisCluster::start().await;
    let nodes = cluster.urls().join(", ");
    // Two limits: their keys are on different slots, checked side by side.
    let config = format!(
        r#"
server: {{ shutdown_grace: 1s }}
backplane: {{ redis: {{ cluster: [{nodes}] }} }}
upstreams:
  o: {{ targets: [{origin}] }}
routes:
  - {{ name: r, match: {{ path: /r }}, rate_limits: [{{ key: ip, rate: 3/m }}, {{ key: ip, rate: 100/h }}], upstream: o }}
"#,
        origin = origin.addr
    );
    let a = Holdfast::start(&config).await;
    let b = Holdfast::start(&config).await;
    crate::limits::three_pass_then_the_fourth_is_refused(
        &a,
        &b,
        "\"ip:3/m\";q=3;w=60, \"ip:100/h\";q=100;w=3600",
    )
    .await;
}
