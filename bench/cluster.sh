#!/usr/bin/env bash
# bench/cluster.sh — the Redis backplane on one Redis against a Redis Cluster, side by side in one
# run, on 127.0.0.1.
#
# Two setups, one after the other (the other stopped meanwhile), each with 3 Holdfast instances
# (`server: { threads: 1 }`, routes GET /sub/{ch} (longpoll) and POST /pub/{ch} (publish)):
#   one      one redis-server, `backplane: { redis: { url: redis://… } }`;
#   cluster  a Redis Cluster of 6 nodes, 3 masters + 3 replicas (`redis-cli --cluster create …
#            --cluster-replicas 1`, node timeout 2 s, no persistence),
#            `backplane: { redis: { cluster: [redis://…, …] } }` (all six nodes listed).
# What it measures in each:
#   1. publish throughput: $CHANNELS channels (c0 … c999), no poll held on them; bench/loadtool's
#      throughput mode, one process per instance, each with $PUBLISHERS keep-alive publishers
#      (closed loop: the next publish when the previous one is answered), round robin over the
#      channels, $WARMUP s of warm-up and then $DURATION s measured: publishes/s (all three
#      together), and CPU µs per publish (utime+stime from /proc/PID/stat, as lib.sh's
#      cpu_ticks) of the three Holdfast processes, of the Redis masters and of every Redis
#      process (the replicas too);
#   1b. the same for $DURATION s with instance 0's publishers alone (no warm-up): Holdfast's CPU
#      per publish on the instance taking the publishes, and on each of the two others (what a
#      publish's wake-up costs an instance that holds no poll on the channel);
#   1c. the same as 1 (3 instances, no warm-up) with one poll held on each channel on each
#      instance (loadtool's subscribers; an answered poll polls again at once, without a
#      cursor): publishes/s, answers per publish (3), CPU µs per publish (now with its answers);
#   2. fan-out: $FAN_CHANNELS channels × 3 instances × ($FAN_PER_INSTANCE ÷ $FAN_CHANNELS)
#      held polls each (3,000 by default, 1,000 per instance), held with `?cursor=` (Redis'
#      clock less 1 s: a fresh channel), then $FAN_ROUNDS rounds of: one publish to each
#      channel at once (channel k through instance k mod 3), the time from just before each
#      publish is written to the arrival of every answer on that channel (the kernel's receive
#      timestamp, SO_TIMESTAMPNS, as loadtool's fanout mode) — p50 / p99 / max over all rounds
#      — then every poller polls again with the answer's `Poll-Cursor` on the same connection,
#      and the round ends when all are held again. Holdfast's CPU per answer (the answer and
#      its re-poll) and Redis' per publish over the rounds.
#      (loadtool's fanout mode holds polls on one URL and publishes through it; this needs polls
#      on three instances and one publish for them all, so the client is a small python3
#      script written by this script, measuring the same way.)
#   3. Redis commands per publish, in 1 and in 2: `CONFIG RESETSTAT` on every node before,
#      `INFO commandstats` of every master after; calls summed over the masters ÷ publishes,
#      per command (the commands a Lua script calls are counted as well as its EVALSHA: the
#      publish script is EVALSHA + XADD, XLEN, [XRANGE + XDEL when trimming], [TIME + XRANGE
#      for buffer_age], PEXPIRE, PUBLISH or SPUBLISH; the read script EVALSHA + EXISTS, XINFO,
#      XRANGE); the masters' network bytes per publish (`INFO stats`): in, out to clients and
#      out to replicas (Redis 7.0 counts the replication stream in total_net_output_bytes; the
#      clients' figure is the difference); how the publish scripts spread over the masters.
# Then a table of both setups with cluster ÷ one.
#
# Run:    bench/cluster.sh                    (~2 min)
# Knobs:  DURATION=10 WARMUP=3 CHANNELS=1000 PUBLISHERS=4 FAN_CHANNELS=4 FAN_PER_INSTANCE=1000
#         FAN_ROUNDS=10 SETUPS="one cluster" PORT_BASE=29100
#         DURABILITY=replicated (the cluster's `durability:`; unset: the default, `written`)
#         HOLDFAST_BIN=path/to/holdfast (default target/release/holdfast, built if missing)
# Ports:  PORT_BASE … +5 the `one` instances (listen, admin), +6 … +11 the `cluster` instances,
#         +12 the one redis-server, +13 … +18 the cluster's nodes, +19 … +24 their cluster bus
#         ports (`--cluster-port`; Redis' default, port + 10000, would fall in Linux's ephemeral
#         range, 32768–60999, where the `one` setup's client connections can still hold them).
# Needs:  redis-server and redis-cli ≥ 7 (Debian `redis-server`, `redis-tools`), python3, curl,
#         cargo; `ulimit -n` ≥ 3 × FAN_PER_INSTANCE + 1000. A build of Holdfast that does not
#         take `backplane.redis.cluster` (`holdfast check` refuses the config) skips the cluster
#         setup with a message. Everything started here is stopped on exit and the temporary
#         directory removed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/bench/lib.sh"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-3}"
CHANNELS="${CHANNELS:-1000}"
PUBLISHERS="${PUBLISHERS:-4}"
FAN_CHANNELS="${FAN_CHANNELS:-4}"
FAN_PER_INSTANCE="${FAN_PER_INSTANCE:-1000}"
FAN_ROUNDS="${FAN_ROUNDS:-10}"
SETUPS="${SETUPS:-one cluster}"
DURABILITY="${DURABILITY:-}"
PORT_BASE="${PORT_BASE:-29100}"
REDIS_ONE_PORT=$((PORT_BASE + 12))
CLUSTER_PORTS=() BUS_PORTS=()
for i in 0 1 2 3 4 5; do CLUSTER_PORTS+=($((PORT_BASE + 13 + i))) BUS_PORTS+=($((PORT_BASE + 19 + i))); done

require redis-server redis-cli python3 curl -- redis-server redis-tools python3 curl
all_ports=()
for i in $(seq 0 24); do all_ports+=($((PORT_BASE + i))); done
ports_free "${all_ports[@]}"
need_fds=$((3 * FAN_PER_INSTANCE + 1000))
if [ "$(ulimit -n)" -lt "$need_fds" ]; then
    ulimit -n "$need_fds" 2>/dev/null || {
        echo "ulimit -n is $(ulimit -n); holding $((3 * FAN_PER_INSTANCE)) polls needs $need_fds" >&2
        exit 1
    }
fi
HOLDFAST_BIN="$(holdfast_bin)"
LOADTOOL="$(loadtool_bin)"
bench_tmp cluster

# ---- the client: fan-out, throughput driver, Redis stats and the final table ------------------
cat >"$TMP/client.py" <<'PY'
import json, os, socket, struct, subprocess, sys, time, urllib.request

SO_TIMESTAMPNS = 35  # SCM_TIMESTAMPNS too (Linux); not exported by Python's socket module
HZ = os.sysconf("SC_CLK_TCK")


def opts(argv):
    out = {}
    for i in range(0, len(argv), 2):
        out[argv[i].lstrip("-").replace("-", "_")] = argv[i + 1]
    return out


def hostport(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


# -- Redis, a few commands over RESP ----------------------------------------------------------
def redis(addr, *args):
    with socket.create_connection(hostport(addr), timeout=10) as s:
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            a = str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
        s.sendall(b"".join(parts))
        f = s.makefile("rb")
        line = f.readline()
        kind, rest = line[:1], line[1:].strip()
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else f.read(n + 2)[:-2].decode()
        if kind == b"-":
            raise RuntimeError(f"{addr}: {rest.decode()}")
        return rest.decode()


def info(addr, section):
    out = {}
    for line in redis(addr, "INFO", section).splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v
    return out


class Nodes:
    """--redis-nodes port:pid,… — every Redis process of the setup."""

    def __init__(self, spec):
        self.nodes = [(f"127.0.0.1:{p}", int(pid)) for p, pid in (x.split(":") for x in spec.split(","))]

    def masters(self):
        return [(a, pid) for a, pid in self.nodes if info(a, "replication").get("role") == "master"]

    def reset(self):
        for a, _ in self.nodes:
            redis(a, "CONFIG", "RESETSTAT")

    def stats(self):
        """Commands (calls, usec) and network bytes summed over the masters, and each master's
        EVALSHA calls."""
        calls, usec, net, per_master = {}, {}, {}, []
        for a, _ in self.masters():
            for k, v in info(a, "commandstats").items():
                name = k[len("cmdstat_"):]
                if name in ("info", "config|resetstat"):
                    continue  # this script's own
                fields = dict(x.split("=") for x in v.split(","))
                calls[name] = calls.get(name, 0) + int(fields["calls"])
                usec[name] = usec.get(name, 0) + int(fields["usec"])
            s = info(a, "stats")
            for k in ("total_net_input_bytes", "total_net_output_bytes", "total_net_repl_output_bytes"):
                net[k] = net.get(k, 0) + int(s.get(k, 0))
            per_master.append(calls_of(a, "evalsha"))
        return {"calls": calls, "usec": usec, "net": net, "evalsha_per_master": per_master}


def calls_of(addr, command):
    v = info(addr, "commandstats").get(f"cmdstat_{command}")
    return int(dict(x.split("=") for x in v.split(","))["calls"]) if v else 0


def add_stats(a, b):
    if a is None:
        return b
    out = {}
    for key in ("calls", "usec", "net"):
        out[key] = dict(a[key])
        for k, v in b[key].items():
            out[key][k] = out[key].get(k, 0) + v
    out["evalsha_per_master"] = [x + y for x, y in zip(a["evalsha_per_master"], b["evalsha_per_master"])]
    return out


def ticks(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total


def cpu_snapshot(hf_pids, nodes):
    masters = [pid for _, pid in nodes.masters()]
    return {"holdfast": ticks(hf_pids), "redis_masters": ticks(masters),
            "redis_all": ticks([pid for _, pid in nodes.nodes])}


def cpu_delta(a, b):
    return {k: b[k] - a[k] for k in a}


def add_cpu(a, b):
    return b if a is None else {k: a[k] + b[k] for k in a}


def us_per(ticks_, n):
    return ticks_ / HZ * 1e6 / n if n else float("nan")


def held(admins):
    total = 0
    for admin in admins:
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("holdfast_longpoll_held{") and 'route="sub"' in line:
                    total += int(float(line.rsplit(" ", 1)[1]))
    return total


def wait_held(admins, n, secs):
    end = time.time() + secs
    while time.time() < end:
        if held(admins) >= n:
            return True
        time.sleep(0.1)
    return False


# -- HTTP/1.1 answers ------------------------------------------------------------------------
def parse_answer(buf):
    """(status, headers) once the whole answer is in buf, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buf[:end].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    if len(buf) < end + 4 + length:
        return None
    return int(lines[0].split()[1]), headers


def recv_stamped(sock):
    """Non-blocking: (data, kernel receive time in ns or None); None when nothing is there."""
    try:
        data, anc, _, _ = sock.recvmsg(65536, 256, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None
    except OSError:
        return b"", None
    stamp = None
    for level, kind, raw in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= 16:
            sec, nsec = struct.unpack("qq", raw[:16])
            stamp = sec * 1_000_000_000 + nsec
    return data, stamp


def percentile(sorted_, p):
    if not sorted_:
        return float("nan")
    rank = max(1, min(len(sorted_), -(-int(p * len(sorted_)) // 100)))
    return sorted_[rank - 1]


# -- 2. fan-out ------------------------------------------------------------------------------
def fanout(o):
    instances = o["instances"].split(",")
    admins = o["admins"].split(",")
    hf_pids = [int(x) for x in o["hf_pids"].split(",")]
    nodes = Nodes(o["redis_nodes"])
    channels = int(o["channels"])
    per_instance = int(o["per_instance"])
    rounds = int(o["rounds"])
    tag = o["tag"]
    timeout = float(o.get("timeout", "20"))
    total = per_instance * len(instances)
    names = [f"{tag}{k}" for k in range(channels)]
    # A cursor from Redis' clock less 1 s: the channels are new, so nothing is after it and it is
    # not ahead. Every poller of a channel holds the same cursor: one shared read per instance.
    cursor = f"{int(time.time() * 1000) - 1000}-0"

    socks, chan, inst = [], [], []
    for i in range(total):
        k = i % len(instances)
        c = (i // len(instances)) % channels
        s = socket.create_connection(hostport(instances[k]))
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(f"GET /sub/{names[c]}?cursor={cursor} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        socks.append(s)
        chan.append(c)
        inst.append(k)
    if not wait_held(admins, total, 60):
        print(f"fanout: only {held(admins)} of {total} polls held", file=sys.stderr)
    time.sleep(0.5)
    pubs = [socket.create_connection(hostport(instances[c % len(instances)])) for c in range(channels)]
    for p in pubs:
        p.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    latencies, round_p99, missing, non200, closed, unstamped, publishes = [], [], 0, 0, 0, 0, 0
    stats, cpu = None, None
    for r in range(rounds):
        nodes.reset()
        before = cpu_snapshot(hf_pids, nodes)
        t0 = []
        for c in range(channels):
            body = json.dumps({"round": r, "ch": names[c]})
            req = (f"POST /pub/{names[c]} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n{body}").encode()
            t0.append(time.time_ns())
            pubs[c].sendall(req)
        for c in range(channels):
            buf = b""
            pubs[c].settimeout(10)
            while parse_answer(buf) is None:
                data = pubs[c].recv(65536)
                if not data:
                    raise SystemExit(f"publish {names[c]}: connection closed")
                buf += data
            status, _ = parse_answer(buf)
            if status // 100 != 2:
                raise SystemExit(f"publish {names[c]}: status {status}: {buf!r}")
            publishes += 1
        pending = set(range(total))
        bufs = [b""] * total
        first = [None] * total
        cursors = [None] * total
        this_round = []
        deadline = time.time() + timeout
        while pending and time.time() < deadline:
            time.sleep(0.1)  # idle while the answers arrive; their times are the kernel's
            for i in list(pending):
                got = recv_stamped(socks[i])
                while got is not None:
                    data, stamp = got
                    if not data:
                        closed += 1
                        pending.discard(i)
                        break
                    if first[i] is None:
                        if stamp is None:
                            unstamped += 1
                            stamp = time.time_ns()
                        first[i] = stamp
                    bufs[i] += data
                    answer = parse_answer(bufs[i])
                    if answer is not None:
                        status, headers = answer
                        if status != 200:
                            non200 += 1
                        cursors[i] = headers.get("poll-cursor")
                        this_round.append((first[i] - t0[chan[i]]) / 1e6)
                        pending.discard(i)
                        break
                    got = recv_stamped(socks[i])
        missing += len(pending)
        latencies += this_round
        this_round.sort()
        round_p99.append(percentile(this_round, 99))
        # Everyone polls again from the cursor it got; the round ends when all are held again.
        for i in range(total):
            if i not in pending and cursors[i]:
                socks[i].sendall(f"GET /sub/{names[chan[i]]}?cursor={cursors[i]} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        wait_held(admins, total - len(pending), 20)
        time.sleep(0.3)
        cpu = add_cpu(cpu, cpu_delta(before, cpu_snapshot(hf_pids, nodes)))
        stats = add_stats(stats, nodes.stats())
    for s in socks + pubs:
        s.close()
    latencies.sort()
    answers = len(latencies)
    result = {
        "held": total, "channels": channels, "rounds": rounds, "publishes": publishes,
        "answers": answers, "missing": missing, "non200": non200, "closed": closed, "unstamped": unstamped,
        "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else float("nan"), "round_p99_ms": round_p99,
        "holdfast_us_per_answer": us_per(cpu["holdfast"], answers),
        "holdfast_us_per_publish": us_per(cpu["holdfast"], publishes),
        "redis_masters_us_per_publish": us_per(cpu["redis_masters"], publishes),
        "redis_all_us_per_publish": us_per(cpu["redis_all"], publishes),
        "stats": stats,
    }
    save(o, "fan", result)
    print(f"fanout {o['label']}: held={total} answers={answers} missing={missing} non200={non200} "
          f"closed={closed} unstamped={unstamped} "
          f"p50_ms={result['p50_ms']:.1f} p99_ms={result['p99_ms']:.1f} max_ms={result['max_ms']:.1f} "
          f"round_p99_ms={','.join(f'{x:.1f}' for x in round_p99)} "
          f"holdfast_us_per_answer={result['holdfast_us_per_answer']:.1f} "
          f"evalsha_per_publish={stats['calls'].get('evalsha', 0) / max(publishes, 1):.2f}")


# -- 1. publish throughput -------------------------------------------------------------------
def start_loadtools(o, secs, per_channel="0", settle="0"):
    procs = []
    for k, addr in enumerate(o["instances"].split(",")):
        if o.get("via", "all") != "all" and str(k) != o["via"]:
            continue
        procs.append(subprocess.Popen(
            [o["loadtool"], "throughput", "--label", f"i{k}", "--threads", "1",
             "--sub", f"http://{addr}/sub/{{ch}}", "--pub", f"http://{addr}/pub/{{ch}}",
             "--pub-body", '{"n":{seq},"ch":"{ch}"}', "--channels", o["channels"], "--per-channel", per_channel,
             "--publishers", o["publishers"], "--duration", str(secs), "--settle", settle],
            stdout=subprocess.PIPE, text=True))
    return procs


def finish_loadtools(procs):
    outs = []
    for p in procs:
        out, _ = p.communicate()
        outs.append(dict(x.split("=", 1) for x in out.split() if "=" in x))
    return outs


def throughput(o):
    """Publishes through every instance (or --via K alone) for --duration s; with --per-channel
    P, P polls held per channel on each instance, each polling again (no cursor) when answered."""
    hf_pids = [int(x) for x in o["hf_pids"].split(",")]
    nodes = Nodes(o["redis_nodes"])
    per_channel = o.get("per_channel", "0")
    if float(o["warmup"]) > 0:
        finish_loadtools(start_loadtools(o, float(o["warmup"])))
    if per_channel != "0":
        procs = start_loadtools(o, float(o["duration"]), per_channel, "2")
        want = len(procs) * int(o["channels"]) * int(per_channel)
        if not wait_held(o["admins"].split(","), want, 60):
            print(f"throughput: only {held(o['admins'].split(','))} of {want} polls held", file=sys.stderr)
    nodes.reset()
    before = cpu_snapshot(hf_pids, nodes)
    each_before = [ticks([pid]) for pid in hf_pids]
    if per_channel == "0":
        procs = start_loadtools(o, float(o["duration"]))
    outs = finish_loadtools(procs)
    each = [ticks([pid]) - t for pid, t in zip(hf_pids, each_before)]
    cpu = cpu_delta(before, cpu_snapshot(hf_pids, nodes))
    stats = nodes.stats()
    published = sum(int(x["published"]) for x in outs)
    delivered = sum(int(x["delivered"]) for x in outs)
    secs = max(float(x["secs"]) for x in outs)
    result = {
        "published": published, "secs": secs, "publish_per_s": published / secs,
        "pub_errors": sum(int(x["pub_errors"]) for x in outs),
        "delivered": delivered, "delivered_per_publish": delivered / published if published else 0,
        "sub_errors": sum(int(x["sub_errors"]) + int(x["other_answers"]) for x in outs),
        "per_instance_per_s": [int(x["published"]) / float(x["secs"]) for x in outs],
        "holdfast_us_per_publish": us_per(cpu["holdfast"], published),
        "holdfast_us_per_publish_each": [us_per(t, published) for t in each],
        "redis_masters_us_per_publish": us_per(cpu["redis_masters"], published),
        "redis_all_us_per_publish": us_per(cpu["redis_all"], published),
        "stats": stats,
    }
    part = "tp1" if o.get("via", "all") != "all" else "tpw" if per_channel != "0" else "tp"
    save(o, part, result)
    print(f"throughput {o['label']} via {o.get('via', 'all')}, {per_channel} held per channel and instance: "
          f"published={published} secs={secs:.1f} publish_per_s={result['publish_per_s']:.0f} "
          f"delivered_per_publish={result['delivered_per_publish']:.2f} "
          f"pub_errors={result['pub_errors']} holdfast_us_per_publish={result['holdfast_us_per_publish']:.1f} "
          f"redis_us_per_publish={result['redis_all_us_per_publish']:.1f} "
          f"evalsha_per_master={','.join(map(str, stats['evalsha_per_master']))} "
          f"holdfast_us_per_publish_each={','.join(f'{x:.1f}' for x in result['holdfast_us_per_publish_each'])}")


def save(o, part, result):
    path = os.path.join(o["out"], f"{o['label']}.json")
    data = json.load(open(path)) if os.path.exists(path) else {}
    data[part] = result
    json.dump(data, open(path, "w"))


# -- the table -------------------------------------------------------------------------------
def report(o):
    labels = o["labels"].split(",")
    data = {}
    for label in labels:
        path = os.path.join(o["out"], f"{label}.json")
        if os.path.exists(path):
            data[label] = json.load(open(path))
    labels = [x for x in labels if x in data]
    pair = labels == ["one", "cluster"]

    def fmt(v, digits=1):
        if isinstance(v, (int, float)) and v == v:
            return f"{v:,.{digits}f}"
        return "-"

    def ratio(a, b):
        return f"{b / a:.2f}" if a and a == a and b == b else "-"

    def out_clients(d, part, div):
        # Redis 7.0's total_net_output_bytes includes the stream to the replicas: taken out here.
        net = d[part]["stats"]["net"]
        return (net["total_net_output_bytes"] - net["total_net_repl_output_bytes"]) / d[part][div]

    def out_repl(d, part, div):
        return d[part]["stats"]["net"]["total_net_repl_output_bytes"] / d[part][div]

    def row(name, get, digits=1, unit=""):
        vals = []
        for label in labels:
            try:
                vals.append(get(data[label]))
            except (KeyError, TypeError, IndexError):
                vals.append(float("nan"))
        cells = [fmt(v, digits) for v in vals]
        r = ratio(vals[0], vals[1]) if pair else ""
        print(f"{name:<52}" + "".join(f"{c:>14}" for c in cells) + (f"{r:>10}" if pair else ""))

    head = f"{'':<52}" + "".join(f"{x:>14}" for x in labels) + (f"{'cl ÷ one':>10}" if pair else "")
    print(head)
    print("# 1. publish throughput (no poll held on the channels)")
    row("publishes/s, 3 instances together", lambda d: d["tp"]["publish_per_s"], 0)
    row("publish errors", lambda d: d["tp"]["pub_errors"], 0)
    row("Holdfast CPU µs per publish (3 processes)", lambda d: d["tp"]["holdfast_us_per_publish"])
    row("Redis CPU µs per publish, masters", lambda d: d["tp"]["redis_masters_us_per_publish"])
    row("Redis CPU µs per publish, all nodes", lambda d: d["tp"]["redis_all_us_per_publish"])
    row("Redis µs in EVALSHA per publish (commandstats, wall)",
        lambda d: d["tp"]["stats"]["usec"]["evalsha"] / d["tp"]["published"])
    row("masters' bytes in per publish", lambda d: d["tp"]["stats"]["net"]["total_net_input_bytes"] / d["tp"]["published"], 0)
    row("masters' bytes out per publish (clients)", lambda d: out_clients(d, "tp", "published"), 0)
    row("masters' bytes out per publish (replicas)", lambda d: out_repl(d, "tp", "published"), 0)
    print("# 1b. the same publishes through instance 0 only (its publishers alone), no poll held")
    row("publishes/s", lambda d: d["tp1"]["publish_per_s"], 0)
    row("Holdfast CPU µs per publish, the instance taking it", lambda d: d["tp1"]["holdfast_us_per_publish_each"][0])
    row("Holdfast CPU µs per publish, each other instance",
        lambda d: (d["tp1"]["holdfast_us_per_publish_each"][1] + d["tp1"]["holdfast_us_per_publish_each"][2]) / 2)
    row("Redis CPU µs per publish, all nodes", lambda d: d["tp1"]["redis_all_us_per_publish"])
    print("# 1c. the same publishes (3 instances) with one poll held per channel on each instance;"
          " an answered poll polls again at once, without a cursor (loadtool)")
    row("publishes/s", lambda d: d["tpw"]["publish_per_s"], 0)
    row("answers per publish", lambda d: d["tpw"]["delivered_per_publish"], 2)
    row("publish errors + poll errors / non-200", lambda d: d["tpw"]["pub_errors"] + d["tpw"]["sub_errors"], 0)
    row("Holdfast CPU µs per publish (3 processes)", lambda d: d["tpw"]["holdfast_us_per_publish"])
    row("Redis CPU µs per publish, masters", lambda d: d["tpw"]["redis_masters_us_per_publish"])
    row("Redis CPU µs per publish, all nodes", lambda d: d["tpw"]["redis_all_us_per_publish"])
    row("EVALSHA per publish", lambda d: d["tpw"]["stats"]["calls"].get("evalsha", 0) / d["tpw"]["published"], 2)
    row("masters' bytes out per publish (clients)", lambda d: out_clients(d, "tpw", "published"), 0)
    row("masters' bytes out per publish (replicas)", lambda d: out_repl(d, "tpw", "published"), 0)
    print(f"# 2. fan-out: one publish to each of the channels, every answer timed (kernel receive time)")
    row("polls held (3 instances)", lambda d: d["fan"]["held"], 0)
    row("channels × rounds = publishes", lambda d: d["fan"]["publishes"], 0)
    row("answers", lambda d: d["fan"]["answers"], 0)
    row("missing / non-200 / closed", lambda d: d["fan"]["missing"] + d["fan"]["non200"] + d["fan"]["closed"], 0)
    row("publish → answer p50 ms", lambda d: d["fan"]["p50_ms"])
    row("publish → answer p99 ms", lambda d: d["fan"]["p99_ms"])
    row("publish → answer max ms", lambda d: d["fan"]["max_ms"])
    row("Holdfast CPU µs per answer (+ its re-poll)", lambda d: d["fan"]["holdfast_us_per_answer"])
    row("Redis µs in EVALSHA per publish (commandstats, wall)",
        lambda d: d["fan"]["stats"]["usec"]["evalsha"] / d["fan"]["publishes"])
    row("masters' bytes out per publish (clients)", lambda d: out_clients(d, "fan", "publishes"), 0)
    row("masters' bytes out per publish (replicas)", lambda d: out_repl(d, "fan", "publishes"), 0)
    for label in labels:
        f = data[label].get("fan")
        if f:
            print(f"  {label}: p99 per round ms " + " ".join(f"{x:.1f}" for x in f["round_p99_ms"]))
    for part, title, div in (("tp", "1 (publishes only)", "published"),
                             ("tpw", "1c (a poll per channel on each instance, re-polls without a cursor)", "published"),
                             ("fan", "2 (fan-out: wake-up reads, re-polls with the cursor)", "publishes")):
        print(f"# 3. Redis commands per publish in {title}: calls summed over the masters ÷ publishes"
              " (a script's EVALSHA and the commands it calls each count; ping: Holdfast's health check)")
        names = set()
        for label in labels:
            if part in data[label]:
                names |= set(data[label][part]["stats"]["calls"])
        def calls(d, name, part=part, div=div):
            return d[part]["stats"]["calls"].get(name, 0) / d[part][div]
        for name in sorted(names, key=lambda n: -max(calls(data[l], n) for l in labels if part in data[l])):
            row(f"  {name}", lambda d, name=name: calls(d, name), 3)
        row("  all commands", lambda d: sum(d[part]["stats"]["calls"].values()) / d[part][div], 3)
    for label in labels:
        t = data[label].get("tp")
        if t:
            spread = t["stats"]["evalsha_per_master"]
            s = sum(spread) or 1
            print(f"  {label}: EVALSHA per master in 1: " + " ".join(f"{x} ({100 * x / s:.0f}%)" for x in spread)
                  + "; publishes/s per instance: " + " ".join(f"{x:.0f}" for x in t["per_instance_per_s"]))


if __name__ == "__main__":
    {"fanout": fanout, "throughput": throughput, "report": report}[sys.argv[1]](opts(sys.argv[2:]))
PY

# ---- servers -----------------------------------------------------------------------------------
wait_redis() { # port
    local i
    for i in $(seq 1 100); do
        redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "redis on port $1 does not answer" >&2
    return 1
}

wait_ready() { # admin address: /readyz answers 200 (the backplane is up)
    local i
    for i in $(seq 1 150); do
        curl -sf -o /dev/null --max-time 1 "http://$1/readyz" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "http://$1/readyz is not ready" >&2
    return 1
}

REDIS_NODES="" # port:pid,…
start_one_redis() {
    redis-server --port "$REDIS_ONE_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        >"$TMP/redis-one.log" 2>&1 &
    PIDS+=($!)
    REDIS_NODES="$REDIS_ONE_PORT:$!"
    wait_redis "$REDIS_ONE_PORT"
    BACKPLANE="backplane: { redis: { url: \"redis://127.0.0.1:$REDIS_ONE_PORT\", prefix: \"holdfast:\" } }"
}

start_cluster() {
    local i port nodes=() urls=() ok
    REDIS_NODES=""
    for i in 0 1 2 3 4 5; do
        port=${CLUSTER_PORTS[$i]}
        mkdir -p "$TMP/node$i"
        redis-server --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file nodes.conf \
            --cluster-node-timeout 2000 --save "" --appendonly no --dir "$TMP/node$i" --port "$port" \
            --cluster-port "${BUS_PORTS[$i]}" \
            >"$TMP/node$i/redis.log" 2>&1 &
        PIDS+=($!)
        REDIS_NODES="$REDIS_NODES${REDIS_NODES:+,}$port:$!"
        nodes+=("127.0.0.1:$port")
        urls+=("redis://127.0.0.1:$port")
    done
    for i in 0 1 2 3 4 5; do
        wait_redis "${CLUSTER_PORTS[$i]}" || { tail -5 "$TMP/node$i/redis.log" >&2; return 1; }
    done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$TMP/cluster-create.log" 2>&1 ||
        { cat "$TMP/cluster-create.log" >&2; return 1; }
    for i in $(seq 1 300); do
        ok=1
        for port in "${CLUSTER_PORTS[@]}"; do
            redis-cli -p "$port" cluster info | grep -q '^cluster_state:ok' || ok=0
            if redis-cli -p "$port" info replication | grep -q '^role:slave'; then
                redis-cli -p "$port" info replication | grep -q '^master_link_status:up' || ok=0
            fi
        done
        [ "$ok" = 1 ] && break
        sleep 0.1
    done
    [ "$ok" = 1 ] || { echo "the cluster did not reach cluster_state:ok" >&2; return 1; }
    BACKPLANE="backplane:
  redis:
    cluster: [$(IFS=,; echo "${urls[*]}" | sed 's/,/, /g')]
    prefix: \"holdfast:\"${DURABILITY:+
    durability: $DURABILITY}"
}

holdfast_config() { # file listen admin
    cat >"$1" <<EOF
listen: $2
admin: $3
server: { threads: 1, shutdown_grace: 1s, watch_interval: 0s }
channels: { max_held: 19500, buffer_messages: 16 }
$BACKPLANE
routes:
  - name: sub
    match: { path: "/sub/{ch}", methods: [GET] }
    longpoll: { channel: "{ch}", timeout: 600s }
  - name: pub
    match: { path: "/pub/{ch}", methods: [POST] }
    publish: { channel: "{ch}" }
EOF
}

INSTANCES="" ADMINS="" HF_PIDS=""
start_holdfasts() { # setup first-port
    local k listen admin
    INSTANCES="" ADMINS="" HF_PIDS=""
    for k in 0 1 2; do
        listen="127.0.0.1:$(($2 + 2 * k))"
        admin="127.0.0.1:$(($2 + 2 * k + 1))"
        holdfast_config "$TMP/$1-$k.yaml" "$listen" "$admin"
        RUST_LOG="${RUST_LOG:-warn}" "$HOLDFAST_BIN" run -c "$TMP/$1-$k.yaml" 2>"$TMP/$1-$k.log" &
        PIDS+=($!)
        HF_PIDS="$HF_PIDS${HF_PIDS:+,}$!"
        INSTANCES="$INSTANCES${INSTANCES:+,}$listen"
        ADMINS="$ADMINS${ADMINS:+,}$admin"
    done
    for admin in ${ADMINS//,/ }; do wait_ready "$admin"; done
}

supports_cluster() { # does this build take `cluster:`?
    BACKPLANE="backplane: { redis: { cluster: [\"redis://127.0.0.1:${CLUSTER_PORTS[0]}\"] } }"
    holdfast_config "$TMP/probe.yaml" 127.0.0.1:1 127.0.0.1:2
    "$HOLDFAST_BIN" check -c "$TMP/probe.yaml" >"$TMP/probe.out" 2>&1
}

# ---- the run -----------------------------------------------------------------------------------
echo "# bench/cluster.sh — $(date -u +%Y-%m-%dT%H:%M:%SZ) — $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $(redis-server --version | cut -d' ' -f1-3); holdfast $HOLDFAST_BIN ($("$HOLDFAST_BIN" --version 2>/dev/null || echo '?'))"
echo "# 3 Holdfast instances (threads: 1) per setup; 1: $CHANNELS channels, 3 × $PUBLISHERS publishers," \
    "${WARMUP}s warm-up + ${DURATION}s; 2: $FAN_CHANNELS channels × $((3 * FAN_PER_INSTANCE)) polls," \
    "$FAN_ROUNDS rounds${DURABILITY:+; cluster durability: $DURABILITY}"
DONE=""
for setup in $SETUPS; do
    case $setup in
        one)
            start_one_redis
            start_holdfasts one "$PORT_BASE"
            ;;
        cluster)
            if ! supports_cluster; then
                echo "SKIPPED: cluster — this build does not take backplane.redis.cluster:" \
                    "$(head -3 "$TMP/probe.out" | tr '\n' ' ')"
                continue
            fi
            start_cluster
            start_holdfasts cluster $((PORT_BASE + 6))
            ;;
        *) echo "unknown setup $setup (one, cluster)" >&2; exit 1 ;;
    esac
    common=(--label "$setup" --out "$TMP" --instances "$INSTANCES" --hf-pids "$HF_PIDS" --redis-nodes "$REDIS_NODES")
    python3 "$TMP/client.py" throughput "${common[@]}" --loadtool "$LOADTOOL" --channels "$CHANNELS" \
        --publishers "$PUBLISHERS" --duration "$DURATION" --warmup "$WARMUP"
    python3 "$TMP/client.py" throughput "${common[@]}" --loadtool "$LOADTOOL" --channels "$CHANNELS" \
        --publishers "$PUBLISHERS" --duration "$DURATION" --warmup 0 --via 0
    python3 "$TMP/client.py" throughput "${common[@]}" --loadtool "$LOADTOOL" --channels "$CHANNELS" \
        --publishers "$PUBLISHERS" --duration "$DURATION" --warmup 0 --per-channel 1 --admins "$ADMINS"
    python3 "$TMP/client.py" fanout "${common[@]}" --admins "$ADMINS" --channels "$FAN_CHANNELS" \
        --per-instance "$FAN_PER_INSTANCE" --rounds "$FAN_ROUNDS" --tag "fan${setup}"
    problems="$(cat "$TMP/$setup"-[0-9].log | grep -c -E 'WARN|ERROR' || true)"
    [ "$problems" = 0 ] || { echo "$setup: $problems warn/error lines in Holdfast's logs, e.g.:"; grep -h -E 'WARN|ERROR' "$TMP/$setup"-[0-9].log | head -3; }
    DONE="$DONE${DONE:+,}$setup"
    stop_pids
    sleep 1
done

echo
echo "# summary"
python3 "$TMP/client.py" report --out "$TMP" --labels "$DONE"
