#!/usr/bin/env bash
# bench/proxy.sh — plain reverse-proxy throughput: Holdfast vs nginx vs HAProxy, side by side.
#
# What it measures: requests/s and p99 latency of one small JSON POST
# (`{"model":"m","prompt":"hello"}`, answered by `{"ok":true,"id":1}`) proxied by each proxy to
# the same origin, with ONE worker each (Holdfast `server: { threads: 1 }`, nginx
# `worker_processes 1`, HAProxy `nbthread 1`) and upstream keep-alive on everywhere; then the
# ratios Holdfast/nginx and Holdfast/HAProxy. Every proxy is driven the same way:
#   wrk -t2 -c64 -d${DURATION}s --latency -s post.lua http://127.0.0.1:PORT/api/echo
# after a ${WARMUP}s warm-up, and the whole set is repeated ${ROUNDS} times (interleaved), so
# machine noise shows up as the spread between rounds. It also counts the TCP connections the
# origin accepted during each proxy's run (origin nginx `stub_status`): a proxy that reuses its
# upstream connections opens at most a few dozen, one that does not opens one per request.
#
# The origin is nginx answering with `return 200` from memory (1 worker, no disk, no log) on its
# own port, so it is the same for every contender. Access logs are off in every proxy (Holdfast
# writes none on the proxy path; it only updates its Prometheus metrics).
#
# Run:    bench/proxy.sh                  (from anywhere; ~2 min with the defaults)
# Knobs:  DURATION=10 WARMUP=2 ROUNDS=2 CONNS=64 WRK_THREADS=2 PORT_BASE=28400
#         HOLDFAST_BIN=path/to/holdfast   (default: target/release/holdfast, built if missing)
#         METHOD=GET  drives a bodiless GET instead of the JSON POST
#         PIN=1  pins the proxy under test to CPU 0 and wrk + origin to the other CPUs (taskset)
#         RUST_LOG (default `warn` for Holdfast during the run)
#         HOLDFAST_BIN_B=path/to/other/holdfast  adds a second Holdfast (e.g. an older build) to
#         the same run, as `holdfast_b`, for an A/B of one change
# Prints for each proxy: req/s, p50/p99, origin connections, errors, and CPU µs per request
# (utime+stime of the proxy process over the timed run ÷ requests; steadier than req/s on a
# shared machine).
# Needs:  nginx, haproxy, wrk (Debian packages `nginx haproxy wrk`; installed with apt-get when
#         run as root), cargo (to build Holdfast when HOLDFAST_BIN is not given), curl.
#         Everything listens on 127.0.0.1 only; every process started here is stopped on exit
#         and the temporary directory is removed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/bench/lib.sh"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
ROUNDS="${ROUNDS:-2}"
CONNS="${CONNS:-64}"
WRK_THREADS="${WRK_THREADS:-2}"
PORT_BASE="${PORT_BASE:-28400}"
PIN="${PIN:-0}"
METHOD="${METHOD:-POST}"
ORIGIN_PORT=$PORT_BASE
ORIGIN_STATUS_PORT=$((PORT_BASE + 1))
HOLDFAST_PORT=$((PORT_BASE + 2))
HOLDFAST_ADMIN_PORT=$((PORT_BASE + 3))
NGINX_PORT=$((PORT_BASE + 4))
HAPROXY_PORT=$((PORT_BASE + 5))
HOLDFAST_B_PORT=$((PORT_BASE + 6))
HOLDFAST_B_ADMIN_PORT=$((PORT_BASE + 7))
HOLDFAST_BIN_B="${HOLDFAST_BIN_B:-}"

need() {
    local missing=()
    for tool in nginx haproxy wrk curl; do
        command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        if [ "$(id -u)" = 0 ]; then
            echo "installing: ${missing[*]}" >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y nginx haproxy wrk curl >&2
        else
            echo "missing: ${missing[*]}; run: sudo apt-get install -y nginx haproxy wrk curl" >&2
            exit 1
        fi
    fi
}
need
export PATH="$PATH:/usr/sbin"

HOLDFAST_BIN="${HOLDFAST_BIN:-$ROOT/target/release/holdfast}"
if [ ! -x "$HOLDFAST_BIN" ]; then
    echo "building holdfast (release)…" >&2
    (cd "$ROOT" && cargo build --release -p holdfast >&2)
fi

for port in $(seq "$PORT_BASE" $((PORT_BASE + 7))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "127.0.0.1:$port is taken; pick other ports with PORT_BASE=…" >&2
        exit 1
    fi
done

TMP="$(mktemp -d /tmp/holdfast-bench-proxy.XXXXXX)"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

pin_proxy=()
pin_load=()
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then
    pin_proxy=(taskset -c 0)
    pin_load=(taskset -c "1-$(($(nproc) - 1))")
fi

# ---- origin: nginx answering from memory -------------------------------------------------------
mkdir -p "$TMP/origin" "$TMP/nginx"
cat >"$TMP/origin/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $TMP/origin/nginx.pid;
error_log $TMP/origin/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/origin;
    proxy_temp_path $TMP/origin;
    fastcgi_temp_path $TMP/origin;
    uwsgi_temp_path $TMP/origin;
    scgi_temp_path $TMP/origin;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        location / {
            default_type application/json;
            return 200 '{"ok":true,"id":1}';
        }
    }
    server {
        listen 127.0.0.1:$ORIGIN_STATUS_PORT;
        location / { stub_status; }
    }
}
EOF
"${pin_load[@]}" nginx -e "$TMP/origin/error.log" -c "$TMP/origin/nginx.conf" -p "$TMP/origin" &
PIDS+=($!)

# ---- nginx as a reverse proxy -------------------------------------------------------------------
cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx;
    proxy_temp_path $TMP/nginx;
    fastcgi_temp_path $TMP/nginx;
    uwsgi_temp_path $TMP/nginx;
    scgi_temp_path $TMP/nginx;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
EOF
"${pin_proxy[@]}" nginx -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" &
PIDS+=($!)
declare -A PID_OF
PID_OF[nginx]=$!

# ---- HAProxy ------------------------------------------------------------------------------------
cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    option forwardfor
    http-reuse always
frontend bench
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend origin
backend origin
    server o1 127.0.0.1:$ORIGIN_PORT
EOF
"${pin_proxy[@]}" haproxy -db -f "$TMP/haproxy.cfg" &
PIDS+=($!)
PID_OF[haproxy]=$!

# ---- Holdfast ----------------------------------------------------------------------------------
cat >"$TMP/holdfast.yaml" <<EOF
listen: 127.0.0.1:$HOLDFAST_PORT
admin: 127.0.0.1:$HOLDFAST_ADMIN_PORT
server: { threads: 1, shutdown_grace: 1s, watch_interval: 0s }
upstreams:
  origin: { targets: [127.0.0.1:$ORIGIN_PORT], timeout: 10s, connect_timeout: 2s }
routes:
  - name: api
    match: { prefix: /, methods: [GET, POST] }
    upstream: origin
EOF
RUST_LOG="${RUST_LOG:-warn}" "${pin_proxy[@]}" "$HOLDFAST_BIN" run -c "$TMP/holdfast.yaml" \
    2>"$TMP/holdfast.log" &
PIDS+=($!)
PID_OF[holdfast]=$!
CONTENDERS=("holdfast:$HOLDFAST_PORT" "nginx:$NGINX_PORT" "haproxy:$HAPROXY_PORT")
if [ -n "$HOLDFAST_BIN_B" ]; then
    sed -e "s/:$HOLDFAST_PORT\$/:$HOLDFAST_B_PORT/" -e "s/:$HOLDFAST_ADMIN_PORT\$/:$HOLDFAST_B_ADMIN_PORT/" \
        "$TMP/holdfast.yaml" >"$TMP/holdfast-b.yaml"
    RUST_LOG="${RUST_LOG:-warn}" "${pin_proxy[@]}" "$HOLDFAST_BIN_B" run -c "$TMP/holdfast-b.yaml" \
        2>"$TMP/holdfast-b.log" &
    PIDS+=($!)
    PID_OF[holdfast_b]=$!
    CONTENDERS+=("holdfast_b:$HOLDFAST_B_PORT")
fi

if [ "$METHOD" = GET ]; then
    cat >"$TMP/post.lua" <<'EOF'
wrk.method = "GET"
wrk.headers["Accept"] = "application/json"
EOF
else
    cat >"$TMP/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"model":"m","prompt":"hello"}'
wrk.headers["Content-Type"] = "application/json"
EOF
fi

wait_port() {
    local port=$1 i
    for i in $(seq 1 100); do
        if curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing answers on 127.0.0.1:$port" >&2
    tail -20 "$TMP"/*.log "$TMP"/*/error.log 2>/dev/null >&2 || true
    exit 1
}
CONTENDER_PORTS=()
for entry in "${CONTENDERS[@]}"; do CONTENDER_PORTS+=("${entry##*:}"); done
for port in $ORIGIN_PORT $ORIGIN_STATUS_PORT "${CONTENDER_PORTS[@]}"; do
    wait_port "$port"
done
for port in "${CONTENDER_PORTS[@]}"; do
    body="$(curl -s -X POST -H 'content-type: application/json' -d '{}' "http://127.0.0.1:$port/api/echo")"
    if [ "$body" != '{"ok":true,"id":1}' ]; then
        echo "port $port does not proxy to the origin (got: $body)" >&2
        tail -20 "$TMP/holdfast.log" >&2 || true
        exit 1
    fi
done

origin_accepts() { curl -s "http://127.0.0.1:$ORIGIN_STATUS_PORT/" | awk 'NR == 3 { print $1 }'; }

run_wrk() { # name port -> "rps p50 p99 origin_conns errors cpu_us_per_request"
    local name=$1 port=$2 out before after cpu_before cpu_after
    local url="http://127.0.0.1:$port/api/echo"
    "${pin_load[@]}" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${WARMUP}s" -s "$TMP/post.lua" "$url" >/dev/null
    before="$(origin_accepts)"
    cpu_before="$(cpu_ticks "${PID_OF[$name]}")"
    out="$("${pin_load[@]}" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s "$TMP/post.lua" "$url")"
    cpu_after="$(cpu_ticks "${PID_OF[$name]}")"
    after="$(origin_accepts)"
    echo "$out" >"$TMP/wrk-$name.txt"
    local requests cpu_us
    requests="$(awk '/requests in/ { print $1 }' <<<"$out")"
    cpu_us="$(cpu_us_per_request $((cpu_after - cpu_before)) "$requests")"
    local rps p50 p99 errors
    rps="$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")"
    p50="$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")"
    p99="$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")"
    errors="$(awk '/Non-2xx/ { n += $NF } /Socket errors/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' <<<"$out")"
    echo "$rps $p50 $p99 $((after - before)) $errors $cpu_us"
}

echo "# bench/proxy.sh — $(date -u +%Y-%m-%dT%H:%M:%SZ) — $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s --latency ($METHOD; POST carries a 30-byte JSON body), warm-up ${WARMUP}s, pin=$PIN"
printf '%-6s %-10s %12s %9s %9s %13s %7s %9s\n' round proxy "req/s" "p50 ms" "p99 ms" "origin conns" errors "CPU µs/req"
declare -A SUM_RPS SUM_P99 SUM_CPU
NAMES=()
for entry in "${CONTENDERS[@]}"; do
    name="${entry%%:*}"
    NAMES+=("$name")
    SUM_RPS[$name]=0
    SUM_P99[$name]=0
    SUM_CPU[$name]=0
done
for round in $(seq 1 "$ROUNDS"); do
    for entry in "${CONTENDERS[@]}"; do
        name="${entry%%:*}"
        port="${entry##*:}"
        read -r rps p50 p99 conns errors cpu < <(run_wrk "$name" "$port")
        printf '%-6s %-10s %12s %9s %9s %13s %7s %9s\n' "$round" "$name" "$rps" "$p50" "$p99" "$conns" "$errors" "$cpu"
        SUM_RPS[$name]="$(awk -v a="${SUM_RPS[$name]}" -v b="$rps" 'BEGIN { print a + b }')"
        SUM_P99[$name]="$(awk -v a="${SUM_P99[$name]}" -v b="$p99" 'BEGIN { print a + b }')"
        SUM_CPU[$name]="$(awk -v a="${SUM_CPU[$name]}" -v b="$cpu" 'BEGIN { print a + b }')"
    done
done
echo
echo "# mean over $ROUNDS round(s)"
for name in "${NAMES[@]}"; do
    awk -v n="$name" -v r="${SUM_RPS[$name]}" -v p="${SUM_P99[$name]}" -v c="${SUM_CPU[$name]}" -v k="$ROUNDS" \
        'BEGIN { printf "%-10s %10.0f req/s   p99 %7.3f ms   CPU %6.1f µs/request\n", n, r / k, p / k, c / k }'
done
awk -v h="${SUM_RPS[holdfast]}" -v n="${SUM_RPS[nginx]}" -v a="${SUM_RPS[haproxy]}" \
    -v hp="${SUM_P99[holdfast]}" -v np="${SUM_P99[nginx]}" -v ap="${SUM_P99[haproxy]}" \
    -v hc="${SUM_CPU[holdfast]}" -v nc="${SUM_CPU[nginx]}" 'BEGIN {
    printf "ratio req/s  Holdfast/nginx %.2f   Holdfast/HAProxy %.2f\n", h / n, h / a
    printf "ratio p99    Holdfast/nginx %.2f   Holdfast/HAProxy %.2f   (below 1 is better)\n", hp / np, hp / ap
    printf "ratio CPU    Holdfast/nginx %.2f   (below 1 is better)\n", hc / nc
}'
if [ -n "$HOLDFAST_BIN_B" ]; then
    awk -v h="${SUM_RPS[holdfast]}" -v b="${SUM_RPS[holdfast_b]}" -v hc="${SUM_CPU[holdfast]}" -v bc="${SUM_CPU[holdfast_b]}" 'BEGIN {
        printf "A/B          Holdfast/Holdfast_b req/s %.2f   CPU %.2f (below 1 is better)\n", h / b, hc / bc
    }'
fi
if [ -s "$TMP/holdfast.log" ]; then
    echo "# holdfast log (last lines):"
    tail -5 "$TMP/holdfast.log"
fi
