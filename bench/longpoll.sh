#!/usr/bin/env bash
# bench/longpoll.sh — held long-polls: Holdfast vs Nchan vs Pushpin, side by side in one run.
#
# What it measures, for each server in turn (the others idle), on 127.0.0.1:
#   1. memory per held poll: hold N polls (N = 5000 and 15000 by default) on one channel; the
#      resident memory (VmRSS summed over the server's processes) after holding N minus before,
#      divided by N;
#   2. fan-out latency: ONE publish to that channel; for every held poll, the time from just
#      before the publish request is written to the arrival of its answer at the client socket
#      (the kernel's receive timestamp, SO_TIMESTAMPNS) — p50 / p99 / max;
#   3. publish throughput: 100 channels × 100 subscribers (each re-polls at once after its
#      answer), publishes round robin over the channels from 4 keep-alive connections for
#      ${TP_SECS}s: publishes/s and answers delivered/s. Each publisher sends its next publish
#      when the previous one is answered — except for Pushpin (below).
# The client is bench/loadtool (Rust, tokio + raw HTTP/1.1; its own crate outside the workspace).
#
# Servers, each with ONE worker:
#   Holdfast  `server: { threads: 1 }`, routes /sub/{ch} (longpoll) and /pub/{ch} (publish).
#   Nchan     nginx `worker_processes 1` + libnginx-mod-nchan, /sub/<ch> longpoll subscriber
#             (`nchan_subscriber_first_message newest`), /pub/<ch> publisher.
#   Pushpin   Debian `pushpin` (condure + pushpin-proxy + pushpin-handler + zurl) in front of
#             `loadtool grip-origin` (answers every poll with `Grip-Hold: response` +
#             `Grip-Channel: <ch>`); publishes go to its HTTP publish API (port
#             PUSHPIN_PUBLISH_PORT, 5561 by default). Pushpin's RSS is the sum of all its
#             processes (the origin excluded). Every poll is a request to the origin (condure →
#             pushpin-proxy → zurl → origin → pushpin-handler, which then holds it); here that
#             path takes ~800-1000 new polls/s. With the Debian defaults a burst of polls got
#             502/500 at once: pushpin-proxy hands requests to zurl and to the handler over ZeroMQ
#             queues of 100 (compiled in) and fails a request when they are full. Settings, sized
#             for this load, in our copy of pushpin.conf and of its libdir (zurl template):
#               [proxy] max_open_requests=64  at most 64 polls in flight to the origin; the rest
#                       wait in condure (back-pressure) instead of failing;
#               [handler] message_rate, message_hwm=1000000  (defaults 2500/s and 25000)
#                       no delivery rate cap, no drops;
#               [runner] client_maxconn=max(NS)+2000; zurl max_open_requests, in_hwm,
#                       out_hwm=max(NS)+2000  (defaults 2000 / 1000 / 1000).
#             And in the test: (a) each channel is first held by one poll (curl, 2 s) before the
#             burst: 1 s after a channel's first subscription the handler re-sends every poll
#             already held on it back through the origin, in batches of 100 every 100 ms, which
#             overflows the same queues; afterwards the subscription lingers (60 s), so the
#             burst is not re-sent. (b) fan-out waits 2 + N/400 s (not 2 + N/5000) before the
#             publish, for the polls still queued in condure to reach the handler. (c) its
#             publish API answers before delivering, so the throughput test paces publishes to
#             PUSHPIN_PUB_RATE/s (8 by default, about what those re-polls sustain at 100 per
#             publish); unpaced publishing runs ahead of the re-polls (~0.5 delivered/publish).
#
#   4. Server-Sent Events and WebSocket (Holdfast and Nchan): the same fan-out with N = SSE_NS
#      streams (`Accept: text/event-stream`), then N WebSockets (Nchan's `nchan_subscriber
#      longpoll eventsource websocket`): memory per open subscriber once its head (or 101) has
#      arrived, and the time from the publish to each one's event or frame.
#   5. sustained delivery (Holdfast and Nchan), for each transport in SUSTAIN (SSE streams,
#      WebSockets): SUSTAIN_N subscribers on ONE broadcast channel, and once all are open,
#      SUSTAIN_RATE numbered messages/s published to it for SUSTAIN_SECS s (one keep-alive
#      connection, in order, each answered 2xx before the next): every subscriber must get every
#      message once and in order (lost, reordered, duplicates counted); the server's CPU
#      (utime+stime from /proc/PID/stat, first publish to last delivery) per delivered message,
#      and the time from each publish to each delivery (kernel receive timestamp) p50 / p99.
#      1000 × 100/s is 100,000 deliveries/s; the load tool shares the machine's CPUs with the
#      server, so its own CPU and the machine's busy share are reported beside it. Both servers
#      keep 1000 messages per channel in these rounds (16 elsewhere), so that a subscriber a few
#      hundred ms behind is not reset past its cursor.
# Run:    bench/longpoll.sh                (takes ~4 min)
# Knobs:  NS="5000 15000" (empty: no long-poll fan-out rounds)  SERVERS="holdfast nchan pushpin"
#         TP_SECS=10 (0: no throughput round)  PORT_BASE=28600
#         SSE_NS="15000" (empty: no stream rounds)
#         SUSTAIN="sse ws" (empty: no sustained rounds)  SUSTAIN_N=1000  SUSTAIN_RATE=100
#         SUSTAIN_SECS=10
#         e.g. only the sustained rounds, small:
#           NS= SSE_NS= TP_SECS=0 SERVERS="holdfast nchan" SUSTAIN_N=100 SUSTAIN_RATE=20 \
#             SUSTAIN_SECS=3 bench/longpoll.sh
#         PUSHPIN_PUB_RATE=8 (publishes/s in Pushpin's throughput test)
#         HOLDFAST_BIN=path/to/holdfast (default target/release/holdfast, built if missing)
# Needs:  nginx, libnginx-mod-nchan, pushpin (Debian packages; installed with apt-get when run
#         as root), cargo, curl, and `ulimit -n` ≥ max(NS) + 1000 (the client and each server
#         hold one descriptor per poll; each process has its own limit). A package that cannot
#         be installed is skipped with a message; the others are still measured.
#         Every process started here is stopped on exit and the temporary directory removed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/bench/lib.sh"
NS="${NS-5000 15000}"
SSE_NS="${SSE_NS-15000}"
TP_SECS="${TP_SECS:-10}"
SUSTAIN="${SUSTAIN-sse ws}"
SUSTAIN_N="${SUSTAIN_N:-1000}"
SUSTAIN_RATE="${SUSTAIN_RATE:-100}"
SUSTAIN_SECS="${SUSTAIN_SECS:-10}"
SERVERS="${SERVERS:-holdfast nchan pushpin}"
PORT_BASE="${PORT_BASE:-28600}"
HOLDFAST_PORT=$PORT_BASE
HOLDFAST_ADMIN_PORT=$((PORT_BASE + 1))
NCHAN_PORT=$((PORT_BASE + 2))
PUSHPIN_PORT=$((PORT_BASE + 3))
GRIP_ORIGIN_PORT=$((PORT_BASE + 4))
PUSHPIN_PUBLISH_PORT="${PUSHPIN_PUBLISH_PORT:-5561}"
PUSHPIN_PUB_RATE="${PUSHPIN_PUB_RATE:-8}"
export PATH="$PATH:/usr/sbin"

max_n=10000 # the throughput test holds 100 × 100
for n in $NS $SSE_NS; do [ "$n" -gt "$max_n" ] && max_n=$n; done
[ -n "$SUSTAIN" ] && [ "$SUSTAIN_N" -gt "$max_n" ] && max_n=$SUSTAIN_N
if [ "$(ulimit -n)" -lt $((max_n + 1000)) ]; then
    ulimit -n $((max_n + 1000)) 2>/dev/null || {
        echo "ulimit -n is $(ulimit -n); holding $max_n polls needs $((max_n + 1000))" >&2
        exit 1
    }
fi

# ---- prerequisites -----------------------------------------------------------------------------
have_nchan() { [ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] && command -v nginx >/dev/null; }
have_pushpin() { command -v pushpin >/dev/null; }
if ! have_nchan || ! have_pushpin; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y nginx libnginx-mod-nchan >&2 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y pushpin >&2 || true
    else
        echo "to compare against Nchan and Pushpin: sudo apt-get install -y nginx libnginx-mod-nchan pushpin" >&2
    fi
fi
ACTIVE=""
for server in $SERVERS; do
    case $server in
        nchan) have_nchan && ACTIVE="$ACTIVE nchan" || echo "SKIPPED: Nchan (libnginx-mod-nchan not installable here)" ;;
        pushpin) have_pushpin && ACTIVE="$ACTIVE pushpin" || echo "SKIPPED: Pushpin (pushpin not installable here)" ;;
        *) ACTIVE="$ACTIVE $server" ;;
    esac
done

HOLDFAST_BIN="${HOLDFAST_BIN:-$ROOT/target/release/holdfast}"
if [ ! -x "$HOLDFAST_BIN" ]; then
    (cd "$ROOT" && cargo build --release -p holdfast >&2)
fi
LOADTOOL="$ROOT/target/release/loadtool"
(cd "$ROOT" && cargo build --release --quiet --manifest-path bench/loadtool/Cargo.toml --target-dir target >&2)

bench_tmp longpoll

wait_port() { # port
    local i
    for i in $(seq 1 150); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}
descendants() { # pid -> the pid and all its descendants
    local pid=$1 child
    echo "$pid"
    for child in $(cat "/proc/$pid/task/"*/children 2>/dev/null); do descendants "$child"; done
}

# ---- servers: start_<name> sets SUB, PUB (URL templates with {ch}), BODY, SERVER_PIDS ---------
# BUFFER_MESSAGES: the messages a channel keeps (16 unless a round says otherwise).
start_holdfast() {
    cat >"$TMP/holdfast.yaml" <<EOF
listen: 127.0.0.1:$HOLDFAST_PORT
admin: 127.0.0.1:$HOLDFAST_ADMIN_PORT
server: { threads: 1, shutdown_grace: 1s, watch_interval: 0s }
channels: { max_held: 19500, buffer_messages: ${BUFFER_MESSAGES:-16} }
routes:
  - name: sub
    match: { path: "/sub/{ch}", methods: [GET] }
    longpoll: { channel: "{ch}", timeout: 600s }
  - name: pub
    match: { path: "/pub/{ch}", methods: [POST] }
    publish: { channel: "{ch}" }
EOF
    RUST_LOG="${RUST_LOG:-warn}" "$HOLDFAST_BIN" run -c "$TMP/holdfast.yaml" 2>"$TMP/holdfast.log" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_http "http://127.0.0.1:$HOLDFAST_ADMIN_PORT/healthz"
    SUB="http://127.0.0.1:$HOLDFAST_PORT/sub/{ch}"
    PUB="http://127.0.0.1:$HOLDFAST_PORT/pub/{ch}"
    BODY='{"n":1,"ch":"{ch}"}'
    SERVER_PIDS="$SERVER_PID"
    SETTLE_PER_S=5000 PRIME=0 PUB_RATE=0
}

start_nchan() {
    mkdir -p "$TMP/nchan"
    cat >"$TMP/nchan/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile $((max_n + 2000));
pid $TMP/nchan/nginx.pid;
error_log $TMP/nchan/error.log warn;
events { worker_connections $((max_n + 2000)); }
http {
    access_log off;
    client_body_temp_path $TMP/nchan;
    proxy_temp_path $TMP/nchan;
    fastcgi_temp_path $TMP/nchan;
    uwsgi_temp_path $TMP/nchan;
    scgi_temp_path $TMP/nchan;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$NCHAN_PORT backlog=4096;
        location ~ ^/sub/([A-Za-z0-9_]+)\$ {
            nchan_subscriber longpoll eventsource websocket;
            nchan_channel_id \$1;
            nchan_subscriber_first_message newest;
            nchan_subscriber_timeout 600s;
        }
        location ~ ^/pub/([A-Za-z0-9_]+)\$ {
            nchan_publisher;
            nchan_channel_id \$1;
            nchan_message_buffer_length ${BUFFER_MESSAGES:-16};
            nchan_message_timeout 60s;
        }
        location = /ping { return 200 "ok"; }
    }
}
EOF
    nginx -e "$TMP/nchan/error.log" -c "$TMP/nchan/nginx.conf" -p "$TMP/nchan" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_http "http://127.0.0.1:$NCHAN_PORT/ping"
    SUB="http://127.0.0.1:$NCHAN_PORT/sub/{ch}"
    PUB="http://127.0.0.1:$NCHAN_PORT/pub/{ch}"
    BODY='{"n":1,"ch":"{ch}"}'
    SERVER_PIDS="$SERVER_PID"
    SETTLE_PER_S=5000 PRIME=0 PUB_RATE=0
}

start_pushpin() {
    mkdir -p "$TMP/pushpin/run" "$TMP/pushpin/log"
    "$LOADTOOL" grip-origin --listen "127.0.0.1:$GRIP_ORIGIN_PORT" --threads 1 &
    PIDS+=($!)
    echo "* 127.0.0.1:$GRIP_ORIGIN_PORT" >"$TMP/pushpin/routes"
    # The Debian config with our own ports, run and log directories, sized for this load (header).
    sed -e "s|^rundir=.*|rundir=$TMP/pushpin/run|" \
        -e "s|^logdir=.*|logdir=$TMP/pushpin/log|" \
        -e "s|^http_port=.*|http_port=127.0.0.1:$PUSHPIN_PORT|" \
        -e "s|^services=.*|services=condure,zurl,pushpin-proxy,pushpin-handler|" \
        -e "s|^routesfile=.*|routesfile=$TMP/pushpin/routes|" \
        -e "s|^push_in_http_port=.*|push_in_http_port=$PUSHPIN_PUBLISH_PORT|" \
        -e "s|^client_maxconn=.*|client_maxconn=$((max_n + 2000))|" \
        -e "s|^message_rate=.*|message_rate=1000000|" \
        -e "s|^message_hwm=.*|message_hwm=1000000|" \
        -e "s|^\[proxy\]\$|[proxy]\nmax_open_requests=64|" \
        /etc/pushpin/pushpin.conf >"$TMP/pushpin/pushpin.conf"
    # Our own copy of the runner's libdir (internal.conf + the zurl config template):
    # pushpin-proxy reaches the origin through zurl, run by the runner on our rundir; zurl sized
    # for this load too.
    cp -r /usr/lib/pushpin "$TMP/pushpin/lib"
    sed -i "s|ipc:///var/run/zurl/|ipc://{rundir}/{ipc_prefix}|" "$TMP/pushpin/lib/internal.conf"
    sed -i -e "s|^max_open_requests=.*|max_open_requests=$((max_n + 2000))|" \
        -e "s|^in_hwm=.*|in_hwm=$((max_n + 2000))|" -e "s|^out_hwm=.*|out_hwm=$((max_n + 2000))|" \
        "$TMP/pushpin/lib/runner/zurl.conf.template"
    sed -i "0,/^\[global\]/s||[global]\nlibdir=$TMP/pushpin/lib|" "$TMP/pushpin/pushpin.conf"
    pushpin --config "$TMP/pushpin/pushpin.conf" >"$TMP/pushpin/pushpin.out" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_port "$PUSHPIN_PUBLISH_PORT" && wait_port "$PUSHPIN_PORT" ||
        { tail -20 "$TMP/pushpin/pushpin.out" "$TMP/pushpin/log/"* >&2; return 1; }
    sleep 1
    SUB="http://127.0.0.1:$PUSHPIN_PORT/sub/{ch}"
    PUB="http://127.0.0.1:$PUSHPIN_PUBLISH_PORT/publish/"
    BODY='{"items":[{"channel":"{ch}","formats":{"http-response":{"body":"{\"n\":1}\n"}}}]}'
    SERVER_PIDS="$(descendants "$SERVER_PID" | paste -sd, -)"
    SETTLE_PER_S=400 PRIME=1 PUB_RATE="$PUSHPIN_PUB_RATE"
}

stop_server() {
    stop_pids
    sleep 1
}

prime() { # url... — hold one poll on each channel for 2 s, all at once (see the header)
    local url pid pids=()
    for url in "$@"; do
        curl -s -o /dev/null --max-time 2 "$url" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}

field() { tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k { print $2 }'; }

echo "# bench/longpoll.sh — $(date -u +%Y-%m-%dT%H:%M:%SZ) — $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A FAN TP SSE WS SUS
round=0
fanout_round() { # server n sse(0|1) [ws(0|1)] — one fan-out on a fresh server and channel, into $out
    local server=$1 n=$2 sse=$3 ws=${4:-0} ch
    round=$((round + 1))
    "start_$server"
    ch="fan$round"
    if [ "$PRIME" = 1 ] && [ "$sse" = 0 ]; then prime "${SUB//\{ch\}/$ch}"; fi
    out="$("$LOADTOOL" fanout --sse "$sse" --ws "$ws" --label "$server" --n "$n" --sub "${SUB//\{ch\}/$ch}" \
        --pub "${PUB//\{ch\}/$ch}" --pub-body "${BODY//\{ch\}/$ch}" --pids "$SERVER_PIDS" \
        --settle $((2 + n / SETTLE_PER_S)) --timeout 30)"
    stop_server
}
sustain_round() { # server transport(sse|ws) — the sustained round on a fresh server, into $out
    local server=$1 transport=$2
    round=$((round + 1))
    BUFFER_MESSAGES=1000 "start_$server"
    out="$("$LOADTOOL" sustain --"$transport" 1 --label "$server" --n "$SUSTAIN_N" \
        --rate "$SUSTAIN_RATE" --secs "$SUSTAIN_SECS" --sub "${SUB//\{ch\}/sus$round}" \
        --pub "${PUB//\{ch\}/sus$round}" --pids "$SERVER_PIDS" --settle $((1 + SUSTAIN_N / SETTLE_PER_S)))"
    stop_server
}
for server in $ACTIVE; do
    for n in $NS; do
        fanout_round "$server" "$n" 0
        echo "fanout $out"
        FAN[$server.$n]="$out"
    done
    # Pushpin streams only through GRIP origins: no SSE or WebSocket round.
    [ "$server" = pushpin ] || for n in $SSE_NS; do
        fanout_round "$server" "$n" 1
        echo "sse fanout $out"
        SSE[$server.$n]="$out"
        fanout_round "$server" "$n" 1 1
        echo "ws fanout $out"
        WS[$server.$n]="$out"
    done
    [ "$server" = pushpin ] || for transport in $SUSTAIN; do
        sustain_round "$server" "$transport"
        echo "sustain $transport $out"
        SUS[$server.$transport]="$out"
    done
    [ "$TP_SECS" = 0 ] && continue
    "start_$server"
    [ "$PRIME" = 1 ] && prime $(for c in $(seq 0 99); do echo "${SUB//\{ch\}/c$c}"; done)
    out="$("$LOADTOOL" throughput --label "$server" --sub "$SUB" --pub "$PUB" --pub-body "$BODY" \
        --channels 100 --per-channel 100 --publishers 4 --duration "$TP_SECS" --pub-rate "$PUB_RATE")"
    echo "throughput $out"
    TP[$server]="$out"
    stop_server
done

echo
echo "# summary"
[ -z "$NS" ] || printf '%-9s %7s %7s %12s %9s %9s %9s %9s\n' server N held "KiB/held" "p50 ms" "p99 ms" "max ms" received
for server in $ACTIVE; do
    for n in $NS; do
        o="${FAN[$server.$n]}"
        printf '%-9s %7s %7s %12s %9s %9s %9s %9s\n' "$server" "$n" "$(field held "$o")" \
            "$(field kib_per_held "$o")" "$(field p50_ms "$o")" "$(field p99_ms "$o")" \
            "$(field max_ms "$o")" "$(field received "$o")"
    done
done
subscriber_table() { # title column array-name — the SSE or WebSocket fan-out rounds
    local -n rounds=$3
    local server n o
    echo
    printf '%-9s %7s %7s %12s %9s %9s %9s %9s  (%s)\n' server N "$2" "KiB/$2" "p50 ms" "p99 ms" "max ms" received "$1"
    for server in $ACTIVE; do
        for n in $SSE_NS; do
            o="${rounds[$server.$n]:-}"
            [ -z "$o" ] && continue
            printf '%-9s %7s %7s %12s %9s %9s %9s %9s\n' "$server" "$n" "$(field held "$o")" \
                "$(field kib_per_held "$o")" "$(field p50_ms "$o")" "$(field p99_ms "$o")" \
                "$(field max_ms "$o")" "$(field received "$o")"
        done
    done
}
if [ -n "$SSE_NS" ]; then
    subscriber_table "Server-Sent Events" stream SSE
    subscriber_table WebSocket socket WS
fi
if [ -n "$SUSTAIN" ]; then
    echo
    echo "# sustained: $SUSTAIN_N subscribers x $SUSTAIN_RATE messages/s, ${SUSTAIN_SECS}s, one channel" \
        "(us/deliv: the server's utime+stime per delivered message; srv %, tool %: the server's and" \
        "the load tool's CPU in % of one CPU; busy%: the whole machine's, in % of all $(nproc) CPUs)"
    printf '%-9s %-4s %6s %9s %10s %6s %9s %9s %7s %10s %7s %6s %8s %8s\n' server via held published \
        delivered lost "reord/dup" "srv CPU s" "srv %" "us/deliv" "tool %" "busy%" "p50 ms" "p99 ms"
    for server in $ACTIVE; do
        for transport in $SUSTAIN; do
            o="${SUS[$server.$transport]:-}"
            [ -z "$o" ] && continue
            printf '%-9s %-4s %6s %9s %10s %6s %9s %9s %7s %10s %7s %6s %8s %8s\n' "$server" "$transport" \
                "$(field held "$o")" "$(field published "$o")" "$(field delivered "$o")" \
                "$(field lost "$o")" "$(field reordered "$o")/$(field duplicates "$o")" \
                "$(field server_cpu_s "$o")" "$(field server_cpu_pct "$o")" \
                "$(field cpu_us_per_delivery "$o")" "$(field client_cpu_pct "$o")" \
                "$(field machine_busy_pct "$o")" "$(field p50_ms "$o")" "$(field p99_ms "$o")"
        done
    done
    for transport in $SUSTAIN; do
        h="${SUS[holdfast.$transport]:-}" c="${SUS[nchan.$transport]:-}"
        [ -z "$h" ] || [ -z "$c" ] && continue
        awk -v t="$transport" -v hc="$(field cpu_us_per_delivery "$h")" -v nc="$(field cpu_us_per_delivery "$c")" \
            -v hp="$(field p99_ms "$h")" -v np="$(field p99_ms "$c")" 'BEGIN {
                printf "holdfast/nchan %-4s CPU per delivery %s   p99 %s\n", t,
                    (nc > 0 ? sprintf("%.2f", hc / nc) : "-"), (np > 0 ? sprintf("%.2f", hp / np) : "-") }'
    done
fi
[ "$TP_SECS" = 0 ] || echo
[ "$TP_SECS" = 0 ] || printf '%-9s %14s %16s %22s\n' server "publishes/s" "delivered/s" "delivered/publish"
[ "$TP_SECS" = 0 ] || for server in $ACTIVE; do
    o="${TP[$server]}"
    printf '%-9s %14s %16s %22s\n' "$server" "$(field publish_per_s "$o")" \
        "$(field delivered_per_s "$o")" "$(field delivered_per_publish "$o")"
done
