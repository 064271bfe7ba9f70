#!/usr/bin/env bash
# bench/idle.sh — memory per idle keep-alive HTTP/1.1 connection on Holdfast, and on nginx as
# the anchor: N connections (N=5000 by default) each send one request, read its answer and then
# stay open and idle; the server's VmRSS after minus before, divided by N (bench/idle.py).
# Holdfast is measured twice: after an answer it gave itself (a publish, 201) and after a
# proxied answer (nginx as the upstream, which Pingora's session serves). nginx is measured
# serving the same small answer itself.
#
# Run:    bench/idle.sh        Knobs: N=5000  PORT_BASE=28700  HOLDFAST_BIN=...
# Needs:  nginx (Debian package; installed with apt-get when run as root), python3, curl,
#         `ulimit -n` ≥ N + 1000. Every process started here is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/bench/lib.sh"
N="${N:-5000}"
PORT_BASE="${PORT_BASE:-28700}"
HOLDFAST_PORT=$PORT_BASE
HOLDFAST_ADMIN_PORT=$((PORT_BASE + 1))
NGINX_PORT=$((PORT_BASE + 2))
ulimit -n $((N + 1000)) 2>/dev/null || {
    echo "ulimit -n is $(ulimit -n); $N connections need $((N + 1000))" >&2
    exit 1
}
require nginx curl python3 -- nginx-light curl python3
ports_free "$HOLDFAST_PORT" "$HOLDFAST_ADMIN_PORT" "$NGINX_PORT"
HOLDFAST_BIN="$(holdfast_bin)"
bench_tmp idle

mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log;
events { worker_connections $((N + 1000)); }
http {
    access_log off;
    keepalive_timeout 600s;
    keepalive_requests 100000;
    client_body_temp_path $TMP/nginx;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / { return 200 "ok"; }
    }
}
EOF
nginx -c "$TMP/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
wait_http "http://127.0.0.1:$NGINX_PORT/"
NGINX_WORKER="$(cat "/proc/$(cat "$TMP/nginx/nginx.pid")/task/"*/children | awk '{print $1}')"

cat >"$TMP/holdfast.yaml" <<EOF
listen: 127.0.0.1:$HOLDFAST_PORT
admin: 127.0.0.1:$HOLDFAST_ADMIN_PORT
server: { threads: 1, shutdown_grace: 1s, watch_interval: 0s }
limits: { idle_timeout: 600s }
upstreams:
  nginx: { targets: ["127.0.0.1:$NGINX_PORT"] }
routes:
  - { name: pub, match: { path: "/pub/{ch}", methods: [POST] }, publish: { channel: "{ch}" } }
  - { name: proxied, match: { prefix: / }, upstream: nginx }
EOF
start_holdfast() {
    RUST_LOG="${RUST_LOG:-warn}" "$HOLDFAST_BIN" run -c "$TMP/holdfast.yaml" 2>"$TMP/holdfast.log" &
    HOLDFAST_PID=$!
    PIDS+=("$HOLDFAST_PID")
    wait_http "http://127.0.0.1:$HOLDFAST_ADMIN_PORT/healthz"
}
stop_holdfast() {
    kill "$HOLDFAST_PID"
    wait "$HOLDFAST_PID" 2>/dev/null || true
}

# Each Holdfast measurement on a fresh process: memory freed by the one before stays resident
# in the allocator and would be reused.
echo "# bench/idle.sh — $(date -u +%FT%TZ) — $(nproc) CPUs, N=$N"
start_holdfast
echo "holdfast-answered $(python3 "$ROOT/bench/idle.py" "$HOLDFAST_PID" "$N" POST "http://127.0.0.1:$HOLDFAST_PORT/pub/idle" x)"
stop_holdfast
start_holdfast
echo "holdfast-proxied $(python3 "$ROOT/bench/idle.py" "$HOLDFAST_PID" "$N" GET "http://127.0.0.1:$HOLDFAST_PORT/x")"
stop_holdfast
echo "nginx $(python3 "$ROOT/bench/idle.py" "$NGINX_WORKER" "$N" GET "http://127.0.0.1:$NGINX_PORT/x")"
