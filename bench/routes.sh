#!/usr/bin/env bash
# bench/routes.sh — what auth and mapping cost on a route, side by side in one run.
#
# One Holdfast (one worker thread) serves the same origin through six routes, and wrk drives
# each with the same request: a POST with a 1 KiB JSON body and a bearer token.
#   /plain   no auth, no mapping                                   (the baseline)
#   /hs256   JWT HS256 (secret)                                    issue 3
#   /rs256   JWT RS256 (PEM public key)                            issue 3
#   /es256   JWT ES256 (PEM public key)                            issue 3
#   /mapped  five mapping rules: 2 header, 1 query, 2 JSON body    issue 4
#   /both    JWT HS256 + the five rules                            design.md §7
#   /limited two rate limits (per IP and per Authorization header, never exceeded) with the
#            access log on (to a file)                             issue 9
#   /traced001, /traced1   /plain with OpenTelemetry tracing at ratio 0.01 and 1, exporting
#            over OTLP/HTTP to the origin nginx (which answers 200)  issue 20
#   /before  /plain on BEFORE_BIN, a build from before a change (only when BEFORE_BIN is set):
#            what the change costs with its feature off            issue 20
# The access log and tracing are process-wide, so each of those routes is served by a Holdfast
# of its own (one worker thread, same origin, ports from PORT_BASE+3 on); the first one logs
# and traces nothing.
# Every token is the same for the whole run, so the verified-token cache is what is measured
# (a repeated token pays the signature check once; the criterion benches in auth/benches give
# the uncached per-verification cost). It prints req/s and p99 per route and each route's
# ratio to /plain, and the CPU µs per request of the Holdfast serving it (utime+stime ÷
# requests, steadier than req/s on shared cores). Goal: ≥ 0.9 for every route.
#
# Run:    bench/routes.sh            (~1.5 min with the defaults)
# Knobs:  DURATION=10 WARMUP=2 ROUNDS=2 CONNS=64 WRK_THREADS=2 PORT_BASE=28500 HOLDFAST_BIN=…
#         BEFORE_BIN=… ROUTES="plain traced001 …" (a subset, /plain always first)
# Needs:  nginx (the origin), wrk, curl, openssl, python3 (Debian packages; installed with
#         apt-get when run as root). Loopback only; everything started is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
ROUNDS="${ROUNDS:-2}"
CONNS="${CONNS:-64}"
WRK_THREADS="${WRK_THREADS:-2}"
PORT_BASE="${PORT_BASE:-28500}"
ORIGIN_PORT=$PORT_BASE
HOLDFAST_PORT=$((PORT_BASE + 1))
HOLDFAST_ADMIN_PORT=$((PORT_BASE + 2))
SECRET="an-hmac-secret-of-at-least-32-bytes!"
TESTDATA="$ROOT/auth/src/testdata"

. "$ROOT/bench/lib.sh"
require nginx wrk curl openssl python3 -- nginx wrk curl openssl python3
ports_free "$ORIGIN_PORT" "$HOLDFAST_PORT" "$HOLDFAST_ADMIN_PORT"
HOLDFAST_BIN="$(holdfast_bin)"
bench_tmp routes

printf '%s\n' \
    "daemon off;" "master_process off;" "worker_processes 1;" "pid $TMP/origin.pid;" \
    "error_log $TMP/origin-error.log warn;" "events { worker_connections 4096; }" \
    "http {" "  access_log off;" "  client_body_temp_path $TMP;" "  proxy_temp_path $TMP;" \
    "  fastcgi_temp_path $TMP;" "  uwsgi_temp_path $TMP;" "  scgi_temp_path $TMP;" \
    "  keepalive_requests 1000000;" \
    "  server { listen 127.0.0.1:$ORIGIN_PORT; client_max_body_size 1m;" \
    "    location / { default_type application/json; return 200 '{\"ok\":true}'; }" \
    "    location = /v1/traces { default_type application/x-protobuf; return 200 ''; } }" \
    "}" >"$TMP/origin.conf"
nginx -e "$TMP/origin-error.log" -c "$TMP/origin.conf" -p "$TMP" &
PIDS+=($!)

RULES='    map:
      request:
        - set: { to: header.x-tenant, value: acme }
        - remove: header.x-debug
        - default: { to: query.limit, value: "20" }
        - rename: { from: body.inputText, to: body.user_input }
        - rename: { from: body.requirement, to: body.context }'
JWT="issuer: https://id.bench, audiences: [holdfast]"
{
    echo "listen: 127.0.0.1:$HOLDFAST_PORT"
    echo "admin: 127.0.0.1:$HOLDFAST_ADMIN_PORT"
    echo "server: { threads: 1, shutdown_grace: 1s, watch_interval: 0s }"
    echo "auth:"
    echo "  hs: { jwt: { $JWT, secret: \"$SECRET\" } }"
    echo "  rs: { jwt: { $JWT, public_key_file: $TESTDATA/rsa.pub } }"
    echo "  es: { jwt: { $JWT, public_key_file: $TESTDATA/p256.pub } }"
    echo "upstreams:"
    echo "  origin: { targets: [127.0.0.1:$ORIGIN_PORT], timeout: 10s }"
    echo "routes:"
    echo "  - { name: plain, match: { path: /plain }, upstream: origin }"
    echo "  - { name: hs256, match: { path: /hs256 }, auth: { provider: hs }, upstream: origin }"
    echo "  - { name: rs256, match: { path: /rs256 }, auth: { provider: rs }, upstream: origin }"
    echo "  - { name: es256, match: { path: /es256 }, auth: { provider: es }, upstream: origin }"
    echo "  - name: mapped"
    echo "    match: { path: /mapped }"
    echo "$RULES"
    echo "    upstream: origin"
    echo "  - name: both"
    echo "    match: { path: /both }"
    echo "    auth: { provider: hs }"
    echo "$RULES"
    echo "    upstream: origin"
} >"$TMP/holdfast.yaml"
"$HOLDFAST_BIN" check "$TMP/holdfast.yaml" >/dev/null
RUST_LOG="${RUST_LOG:-warn}" "$HOLDFAST_BIN" run -c "$TMP/holdfast.yaml" 2>"$TMP/holdfast.log" &
PIDS+=($!)
HOLDFAST_PID=$!
# A Holdfast of its own (one worker thread, the same origin) for a route whose setting is
# process-wide: NAME, its route's YAML lines, the process-wide YAML lines, the binary.
declare -A PORT PID_OF
NEXT_PORT=$((PORT_BASE + 3))
start_alone() {
    local name="$1" route="$2" global="$3" bin="$4" port=$NEXT_PORT admin=$((NEXT_PORT + 1))
    NEXT_PORT=$((NEXT_PORT + 2))
    ports_free "$port" "$admin"
    {
        echo "listen: 127.0.0.1:$port"
        echo "admin: 127.0.0.1:$admin"
        echo "server: { threads: 1, shutdown_grace: 1s, watch_interval: 0s }"
        [ -n "$global" ] && echo "$global"
        echo "upstreams:"
        echo "  origin: { targets: [127.0.0.1:$ORIGIN_PORT], timeout: 10s }"
        echo "routes:"
        echo "  - name: $name"
        echo "    match: { path: /$name }"
        [ -n "$route" ] && echo "$route"
        echo "    upstream: origin"
    } >"$TMP/$name.yaml"
    "$bin" check "$TMP/$name.yaml" >/dev/null
    RUST_LOG="${RUST_LOG:-warn}" "$bin" run -c "$TMP/$name.yaml" 2>"$TMP/$name.log" &
    PIDS+=($!)
    PORT[$name]=$port
    PID_OF[$name]=$!
}
start_alone limited '    rate_limits:
      - { key: ip, rate: 1000000/s }
      - { key: header.authorization, rate: 1000000000/h }' "access_log: { path: $TMP/access.log }" "$HOLDFAST_BIN"
# Tracing (issue 20): the plain route again, exporting to the origin nginx's /v1/traces (which
# takes the spans and answers 200), at ratio 0.01 and at ratio 1. The export thread's CPU is
# the process's, so it is in CPU µs/request.
TRACING="tracing: { otlp: { endpoint: \"http://127.0.0.1:$ORIGIN_PORT\" }, sampler: { ratio: RATIO, parent_based: false } }"
start_alone traced001 "" "${TRACING/RATIO/0.01}" "$HOLDFAST_BIN"
start_alone traced1 "" "${TRACING/RATIO/1}" "$HOLDFAST_BIN"
# BEFORE_BIN=…: the plain route on another build (the one before tracing), for the cost of
# tracing's code with the section absent.
EXTRA_ROUTES=()
if [ -n "${BEFORE_BIN:-}" ]; then
    start_alone before "" "" "$BEFORE_BIN"
    EXTRA_ROUTES+=(before)
fi

mapfile -t TOKENS < <(python3 "$ROOT/bench/mint_tokens.py" "$SECRET" "$TESTDATA/rsa.key" "$TESTDATA/p256.key")
declare -A TOKEN=([hs256]="${TOKENS[0]}" [rs256]="${TOKENS[1]}" [es256]="${TOKENS[2]}")
token_of() { echo "${TOKEN[$1]:-${TOKENS[0]}}"; }
port_of() { echo "${PORT[$1]:-$HOLDFAST_PORT}"; }
pid_of() { echo "${PID_OF[$1]:-$HOLDFAST_PID}"; }

# A 1 KiB JSON body in the seed's shape.
BODY="$(python3 -c 'import json; print(json.dumps({"inputText": "Hello", "requirement": "new data", "history": ["x" * 60] * 14}))')"
for port in $HOLDFAST_PORT "${PORT[@]}"; do
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$port/" && break
        sleep 0.1
    done
done

lua_for() { # route -> the path of its wrk script
    printf '%s\n' 'wrk.method = "POST"' "wrk.body = [[$BODY]]" \
        'wrk.headers["Content-Type"] = "application/json"' \
        "wrk.headers[\"Authorization\"] = \"Bearer $(token_of "$1")\"" \
        "wrk.path = \"/$1?page=2\"" >"$TMP/$1.lua"
    echo "$TMP/$1.lua"
}


if [ -n "${ROUTES:-}" ]; then
    read -r -a ROUTES <<<"$ROUTES"
else
    ROUTES=(plain hs256 rs256 es256 mapped both limited traced001 traced1 "${EXTRA_ROUTES[@]}")
fi
for route in "${ROUTES[@]}"; do
    code="$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "authorization: Bearer $(token_of "$route")" \
        -H 'content-type: application/json' -d "$BODY" "http://127.0.0.1:$(port_of "$route")/$route")"
    if [ "$code" != 200 ]; then
        echo "/$route answers $code, not 200" >&2
        tail -5 "$TMP"/*.log >&2
        exit 1
    fi
done

echo "# bench/routes.sh — $(date -u +%Y-%m-%dT%H:%M:%SZ) — $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s --latency, POST ${#BODY}-byte JSON + bearer token, Holdfast threads: 1"
declare -A SUM_RPS SUM_P99 SUM_CPU
for route in "${ROUTES[@]}"; do SUM_RPS[$route]=0; SUM_P99[$route]=0; SUM_CPU[$route]=0; done
printf '%-6s %-8s %10s %9s %8s %10s\n' round route "req/s" "p99 ms" errors "CPU µs/req"
for round in $(seq 1 "$ROUNDS"); do
    for route in "${ROUTES[@]}"; do
        lua="$(lua_for "$route")"
        url="http://127.0.0.1:$(port_of "$route")"
        wrk -t"$WRK_THREADS" -c"$CONNS" -d"${WARMUP}s" -s "$lua" "$url" >/dev/null
        cpu_before="$(cpu_ticks "$(pid_of "$route")")"
        out="$(wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s "$lua" "$url")"
        cpu_after="$(cpu_ticks "$(pid_of "$route")")"
        cpu="$(cpu_us_per_request $((cpu_after - cpu_before)) "$(awk '/requests in/ { print $1 }' <<<"$out")")"
        rps="$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")"
        p99="$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")"
        errors="$(awk '/Non-2xx/ { n += $NF } /Socket errors/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' <<<"$out")"
        printf '%-6s %-8s %10s %9s %8s %10s\n' "$round" "$route" "$rps" "$p99" "$errors" "$cpu"
        SUM_CPU[$route]="$(awk -v a="${SUM_CPU[$route]}" -v b="$cpu" 'BEGIN { print a + b }')"
        SUM_RPS[$route]="$(awk -v a="${SUM_RPS[$route]}" -v b="$rps" 'BEGIN { print a + b }')"
        SUM_P99[$route]="$(awk -v a="${SUM_P99[$route]}" -v b="$p99" 'BEGIN { print a + b }')"
    done
done
echo
echo "# mean over $ROUNDS round(s); ratio = route req/s ÷ /plain req/s (goals: ≥ 0.9; traced001 ≥ 0.95; before ≤ 1.02, i.e. this build ≥ 0.98 × BEFORE_BIN)"
for route in "${ROUTES[@]}"; do
    awk -v n="$route" -v r="${SUM_RPS[$route]}" -v p="${SUM_P99[$route]}" -v b="${SUM_RPS[plain]}" -v k="$ROUNDS" \
        -v c="${SUM_CPU[$route]}" \
        'BEGIN { printf "%-8s %10.0f req/s   p99 %7.3f ms   ratio %.2f   CPU %6.1f µs/request\n", n, r / k, p / k, r / b, c / k }'
done
