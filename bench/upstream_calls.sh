#!/usr/bin/env bash
# bench/upstream_calls.sh — issue 6's two figures, measured in one run.
#
# 1. Coalescing: N clients (1,000 and 10,000) long-poll the same resource through Holdfast, once
#    on a plain proxied route and once on a route with `coalesce: { shared: true }`. The origin
#    (bench/slow_origin.py) answers /resource after 200 ms and counts what it served; the figure
#    is upstream requests per client request (lower is better; coalesced ≈ 1 per 200 ms cycle
#    however many clients wait).
# 2. Fan-in overhead: p50/p99 of a fan-in of three upstreams (/news 20 ms, /ai 30 ms,
#    /weather 50 ms, `until: all`, `merge: by_name`) minus the same percentiles of the slowest
#    upstream (/weather) called directly. Goal: p99 ≤ 2 ms added.
#
# Run:    bench/upstream_calls.sh             (~1.5 min)
# Knobs:  DURATION=10 PORT_BASE=28600 HOLDFAST_BIN=… CLIENTS="1000 10000"
#    The same figure against an origin that answers at once (nginx `return 200`, so the origin
#    adds no queueing of its own): the fan-in's p50/p99 minus the direct call's.
# Needs:  wrk, curl, python3, nginx (Debian packages; installed with apt-get when root). The 10,000-client
#         run needs 10,000+ file descriptors in wrk and in Holdfast (`ulimit -n`, 20,000 here).
#         Loopback only; everything started is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-10}"
PORT_BASE="${PORT_BASE:-28600}"
CLIENTS="${CLIENTS:-1000 10000}"
ORIGIN_PORT=$PORT_BASE
HOLDFAST_PORT=$((PORT_BASE + 1))
HOLDFAST_ADMIN_PORT=$((PORT_BASE + 2))

. "$ROOT/bench/lib.sh"
require wrk curl python3 nginx -- wrk curl python3 nginx
FAST_PORT=$((PORT_BASE + 3))
ports_free "$ORIGIN_PORT" "$HOLDFAST_PORT" "$HOLDFAST_ADMIN_PORT" "$FAST_PORT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
HOLDFAST_BIN="$(holdfast_bin)"
bench_tmp calls

python3 "$ROOT/bench/slow_origin.py" "$ORIGIN_PORT" &
PIDS+=($!)
printf '%s\n' "daemon off;" "master_process off;" "worker_processes 1;" "pid $TMP/fast.pid;" \
    "error_log $TMP/fast-error.log warn;" "events { worker_connections 4096; }" \
    "http { access_log off; client_body_temp_path $TMP; proxy_temp_path $TMP; fastcgi_temp_path $TMP;" \
    "  uwsgi_temp_path $TMP; scgi_temp_path $TMP; keepalive_requests 1000000;" \
    "  server { listen 127.0.0.1:$FAST_PORT; location / { default_type application/json; return 200 '{\"ok\":true}'; } } }" \
    >"$TMP/fast.conf"
nginx -e "$TMP/fast-error.log" -c "$TMP/fast.conf" -p "$TMP" &
PIDS+=($!)

O="127.0.0.1:$ORIGIN_PORT"
{
    echo "listen: 127.0.0.1:$HOLDFAST_PORT"
    echo "admin: 127.0.0.1:$HOLDFAST_ADMIN_PORT"
    echo "server: { shutdown_grace: 1s, watch_interval: 0s, upstream_keepalive_pool: 20000 }"
    echo "upstreams:"
    for name in origin news ai weather; do
        echo "  $name: { targets: [$O], timeout: 30s }"
    done
    for name in fast1 fast2 fast3; do
        echo "  $name: { targets: [127.0.0.1:$FAST_PORT], timeout: 30s }"
    done
    echo "routes:"
    echo "  - { name: direct, match: { path: /resource }, upstream: origin }"
    echo "  - { name: coalesced, match: { path: /coalesced }, upstream: origin, coalesce: { shared: true }, hold: 30s }"
    echo "  - name: dashboard"
    echo "    match: { path: /dashboard }"
    echo "    fanin:"
    echo "      upstreams: [{ name: news, path: /news }, { name: ai, path: /ai }, { name: weather, path: /weather }]"
    echo "      until: all"
    echo "      merge: by_name"
    echo "  - name: fast"
    echo "    match: { path: /fast }"
    echo "    fanin: { upstreams: [fast1, fast2, fast3], until: all, merge: by_name }"
} >"$TMP/holdfast.yaml"
"$HOLDFAST_BIN" check "$TMP/holdfast.yaml" >/dev/null
RUST_LOG="${RUST_LOG:-warn}" "$HOLDFAST_BIN" run -c "$TMP/holdfast.yaml" 2>"$TMP/holdfast.log" &
PIDS+=($!)

for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$HOLDFAST_PORT/resource" && curl -s -o /dev/null "http://$O/count" && break
    sleep 0.1
done

resource_count() { curl -s "http://$O/count" | python3 -c 'import json,sys; print(json.load(sys.stdin)["resource"])'; }


echo "# bench/upstream_calls.sh — $(date -u +%Y-%m-%dT%H:%M:%SZ) — $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "## coalescing: upstream requests per client request (origin answers after 200 ms)"
printf '%-8s %-10s %12s %12s %12s\n' clients route "client req" "upstream req" "per client"
for clients in $CLIENTS; do
    threads=$(( clients >= 4 ? 4 : 1 ))
    for route in resource coalesced; do
        before="$(resource_count)"
        out="$(wrk -t"$threads" -c"$clients" -d"${DURATION}s" --timeout 30s "http://127.0.0.1:$HOLDFAST_PORT/$route" 2>&1 || true)"
        after="$(resource_count)"
        served="$(awk '/requests in/ { print $1 }' <<<"$out")"
        upstream=$((after - before))
        awk -v c="$clients" -v r="$route" -v s="${served:-0}" -v u="$upstream" \
            'BEGIN { printf "%-8s %-10s %12d %12d %12.4f\n", c, r, s, u, (s > 0 ? u / s : 0) }'
    done
done

echo
echo "## fan-in of 3 upstreams vs the slowest upstream alone (16 connections, ${DURATION}s each)"
direct="$(wrk -t2 -c16 -d"${DURATION}s" --latency "http://$O/weather")"
fanin="$(wrk -t2 -c16 -d"${DURATION}s" --latency "http://127.0.0.1:$HOLDFAST_PORT/dashboard")"
for pct in 50% 99%; do
    d="$(to_ms "$(awk -v p="$pct" '$1 == p { print $2 }' <<<"$direct")")"
    f="$(to_ms "$(awk -v p="$pct" '$1 == p { print $2 }' <<<"$fanin")")"
    awk -v p="$pct" -v d="$d" -v f="$f" \
        'BEGIN { printf "p%-3s  slowest alone %8.3f ms   fan-in %8.3f ms   added %7.3f ms\n", substr(p, 1, length(p) - 1), d, f, f - d }'
done
errors="$(awk '/Non-2xx/ { n += $NF } END { print n + 0 }' <<<"$fanin")"
echo "fan-in non-2xx answers: $errors"

echo
echo "## fan-in of 3 upstreams vs one direct call, origin answering at once (nginx, 16 connections)"
direct="$(wrk -t2 -c16 -d"${DURATION}s" --latency "http://127.0.0.1:$FAST_PORT/")"
fanin="$(wrk -t2 -c16 -d"${DURATION}s" --latency "http://127.0.0.1:$HOLDFAST_PORT/fast")"
for pct in 50% 99%; do
    d="$(to_ms "$(awk -v p="$pct" '$1 == p { print $2 }' <<<"$direct")")"
    f="$(to_ms "$(awk -v p="$pct" '$1 == p { print $2 }' <<<"$fanin")")"
    awk -v p="$pct" -v d="$d" -v f="$f" \
        'BEGIN { printf "p%-3s  direct %8.3f ms   fan-in %8.3f ms   added %7.3f ms\n", substr(p, 1, length(p) - 1), d, f, f - d }'
done
