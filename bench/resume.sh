#!/usr/bin/env bash
# bench/resume.sh — what resumable answers (`llm: { resumable }`) cost, in one run.
#
# The provider is nginx answering `POST /v1/chat/completions` from memory with an OpenAI event
# stream: a short one (port PORT_BASE: role chunk, two content chunks, finish, usage, [DONE])
# and a long one (PORT_BASE+1: $CHUNKS content chunks of about 100 bytes of JSON each).
#   1. Streams: the short stream through an `llm` route and through the same route with
#      `resumable` (ttl 5 s, so memory stays bounded), wrk -c$CONNS, $ROUNDS rounds in swapped
#      order; req/s, p50/p99 and CPU µs per request, and resumable ÷ llm. (No other gateway keeps AI answers to resume them:
#      the anchor is Holdfast's own route without it.)
#   2. Memory per kept answer: a fresh process (MIMALLOC_ALLOW_THP=0, as README recommends for
#      instances that hold many streams, and once as shipped), $KEPT long answers asked and
#      read to their end ($PARALLEL at a time), then VmRSS after − before, ÷ answers, ÷ the KiB
#      of one answer as the client gets it (ids included).
#   3. Resume latency: GET …/streams/<id> of one kept long answer, wrk -c$RESUMERS: after its
#      last event but one (`Last-Event-ID`: the tail of an answer), and from its start (the
#      whole answer replayed); on the instance that read it, and (with Redis, unless
#      SKIP_REDIS=1) on a second instance that reads it from the backplane.
#
# Run:    bench/resume.sh                     (~2 min)
# Knobs:  DURATION=8 ROUNDS=2 WARMUP=2 CONNS=64 RESUMERS=16 CHUNKS=200 KEPT=1000 PARALLEL=16
#         WRK_THREADS=2 PORT_BASE=28900 HOLDFAST_BIN=… SKIP_REDIS=1
# Needs:  nginx, wrk, curl, redis-server (Debian packages). Loopback only; everything started
#         is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-8}"
ROUNDS="${ROUNDS:-2}"
WARMUP="${WARMUP:-2}"
CONNS="${CONNS:-64}"
RESUMERS="${RESUMERS:-16}"
CHUNKS="${CHUNKS:-200}"
KEPT="${KEPT:-1000}"
PARALLEL="${PARALLEL:-16}"
WRK_THREADS="${WRK_THREADS:-2}"
PORT_BASE="${PORT_BASE:-28900}"
SHORT_PORT=$PORT_BASE
LONG_PORT=$((PORT_BASE + 1))
HOLDFAST_PORT=$((PORT_BASE + 2))
ADMIN_PORT=$((PORT_BASE + 3))
SECOND_PORT=$((PORT_BASE + 4))
SECOND_ADMIN_PORT=$((PORT_BASE + 5))
REDIS_PORT=$((PORT_BASE + 6))

. "$ROOT/bench/lib.sh"
tools=(nginx wrk curl)
packages=(nginx wrk curl)
[ -z "${SKIP_REDIS:-}" ] && { tools+=(redis-server); packages+=(redis-server); }
require "${tools[@]}" -- "${packages[@]}"
ports_free "$SHORT_PORT" "$LONG_PORT" "$HOLDFAST_PORT" "$ADMIN_PORT" "$SECOND_PORT" "$SECOND_ADMIN_PORT" "$REDIS_PORT"
HOLDFAST_BIN="$(holdfast_bin)"
bench_tmp resume
ulimit -n 20000 2>/dev/null || true

chunk() { printf 'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[%s]%s}\n\n' "$1" "${2:-}"; }
content() { chunk "{\"index\":0,\"delta\":{\"content\":\"$1\"},\"finish_reason\":null}"; }
ending() {
    chunk '{"index":0,"delta":{},"finish_reason":"stop"}'
    chunk '' ',"usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14}'
    printf 'data: [DONE]\n\n'
}
{ chunk '{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}'
  content "Hello!"; content " How can I help?"; ending; } >"$TMP/short.sse"
{ chunk '{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}'
  for i in $(seq 1 "$CHUNKS"); do content " word$i"; done; ending; } >"$TMP/long.sse"
printf '%s\n' \
    "daemon off;" "master_process off;" "worker_processes 1;" "pid $TMP/origin.pid;" \
    "error_log $TMP/origin-error.log warn;" "events { worker_connections 8192; }" \
    "http {" "  access_log off;" "  client_body_temp_path $TMP;" "  proxy_temp_path $TMP;" \
    "  fastcgi_temp_path $TMP;" "  uwsgi_temp_path $TMP;" "  scgi_temp_path $TMP;" \
    "  keepalive_requests 1000000;" "  types { text/event-stream sse; }" \
    "  server { listen 127.0.0.1:$SHORT_PORT; client_max_body_size 1m; root $TMP;" \
    "    location / { error_page 405 =200 \$uri; rewrite ^ /short.sse break; } }" \
    "  server { listen 127.0.0.1:$LONG_PORT; client_max_body_size 1m; root $TMP;" \
    "    location / { error_page 405 =200 \$uri; rewrite ^ /long.sse break; } }" \
    "}" >"$TMP/origin.conf"
nginx -e "$TMP/origin-error.log" -c "$TMP/origin.conf" -p "$TMP" &
PIDS+=($!)

config() { # listen admin ttl backplane
    cat <<EOF
listen: 127.0.0.1:$1
admin: 127.0.0.1:$2
server: { threads: 1, shutdown_grace: 1s, watch_interval: 0s }
$4
upstreams:
  short: { targets: [127.0.0.1:$SHORT_PORT], timeout: 30s }
  long: { targets: [127.0.0.1:$LONG_PORT], timeout: 30s }
llm:
  providers:
    short: { kind: openai, upstream: short, keys: [k] }
    long: { kind: openai, upstream: long, keys: [k] }
  models:
    short: { targets: [{ provider: short, model: gpt-4o-mini }] }
    long: { targets: [{ provider: long, model: gpt-4o-mini }] }
routes:
  - { name: llm, match: { prefix: /v1 }, llm: {} }
  - { name: resumable, match: { prefix: /kept/v1 }, llm: { resumable: { ttl: $3 } } }
EOF
}
start_holdfast() { # config-file port [NAME=value…] — sets STARTED
    local file="$1" port="$2"
    shift 2
    env RUST_LOG=warn "$@" "$HOLDFAST_BIN" run -c "$file" 2>>"$TMP/holdfast.log" &
    STARTED=$!
    PIDS+=("$STARTED")
    wait_http "http://127.0.0.1:$port/v1/models"
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
body() { printf '{"model":"%s","stream":true,"messages":[{"role":"user","content":"Say hello."}]}' "$1"; }
lua() { # file model
    printf '%s\n' 'wrk.method = "POST"' "wrk.body = [[$(body "$2")]]" \
        'wrk.headers["Content-Type"] = "application/json"' >"$TMP/$1.lua"
    echo "$TMP/$1.lua"
}
measure() { # pid url conns [wrk args…] — sets rps p50 p99 errors cpu
    local pid="$1"
    shift
    wrk_measure "cpu_ticks $pid" "$@"
}
row() { printf '%-34s %10s %9s %9s %7s %10s\n' "$@"; }

echo "# bench/resume.sh — $(date -u +%Y-%m-%dT%H:%M:%SZ) — $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# 1. Streams, with and without keeping them.
config "$HOLDFAST_PORT" "$ADMIN_PORT" 5s "" >"$TMP/one.yaml"
start_holdfast "$TMP/one.yaml" "$HOLDFAST_PORT"
ONE=$STARTED
echo "# 1. short streams (5 events), wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s; one worker; $ROUNDS rounds, the order swapped each round"
row who "req/s" "p50 ms" "p99 ms" errors "CPU µs/req"
declare -A RPS CPU
order=(llm resumable)
for round in $(seq 1 "$ROUNDS"); do
    for who in "${order[@]}"; do
        path=/v1/chat/completions
        [ "$who" = resumable ] && path=/kept/v1/chat/completions
        measure "$ONE" "http://127.0.0.1:$HOLDFAST_PORT$path" "$CONNS" -s "$(lua short short)"
        row "$round $who" "$rps" "$p50" "$p99" "$errors" "$cpu"
        RPS[$who]="$(awk -v a="${RPS[$who]:-0}" -v b="$rps" 'BEGIN { print a + b }')"
        CPU[$who]="$(awk -v a="${CPU[$who]:-0}" -v b="$cpu" 'BEGIN { print a + b }')"
    done
    order=("${order[1]}" "${order[0]}")
done
awk -v a="${RPS[resumable]}" -v b="${RPS[llm]}" -v ca="${CPU[resumable]}" -v cb="${CPU[llm]}" -v n="$ROUNDS" \
    'BEGIN { printf "mean: resumable ÷ llm %.2f in req/s, CPU %.1f against %.1f µs/request (%+.1f)\n", a / b, ca / n, cb / n, (ca - cb) / n }'
stop_one "$ONE"

# 2. Memory per kept answer.
ask_long() { # url — asks one long answer and reads it to its end
    curl -s -o /dev/null -X POST -H 'content-type: application/json' --data-binary "$(body long)" "$1"
}
export -f ask_long body
config "$HOLDFAST_PORT" "$ADMIN_PORT" 1h "" >"$TMP/kept.yaml"
echo
echo "# 2. memory per kept answer: $KEPT long answers ($CHUNKS content chunks) read to their end, $PARALLEL at a time; a fresh process each"
for thp in 0 shipped; do
    env_thp=()
    [ "$thp" = 0 ] && env_thp=(MIMALLOC_ALLOW_THP=0)
    start_holdfast "$TMP/kept.yaml" "$HOLDFAST_PORT" "${env_thp[@]}"
    url="http://127.0.0.1:$HOLDFAST_PORT/kept/v1/chat/completions"
    for _ in $(seq 1 8); do ask_long "$url"; done
    answer_bytes="$(curl -s -X POST -H 'content-type: application/json' --data-binary "$(body long)" "$url" | wc -c)"
    before="$(rss_kib "$STARTED")"
    seq 1 "$KEPT" | xargs -P "$PARALLEL" -I{} bash -c "ask_long '$url'"
    after="$(rss_kib "$STARTED")"
    awk -v b="$before" -v a="$after" -v n="$KEPT" -v s="$answer_bytes" -v t="$thp" \
        'BEGIN { per = (a - b) / n; printf "THP %-8s answer %.1f KiB (with ids)  RSS +%d KiB for %d answers: %.1f KiB per answer, %.2f KiB per KiB of answer\n", (t == "0" ? "off" : "shipped"), s / 1024, a - b, n, per, per / (s / 1024) }'
    stop_one "$STARTED"
done

# 3. Resume latency.
kept_id() { # port — asks one long answer on that instance and prints its stream id
    curl -s -D - -o /dev/null -X POST -H 'content-type: application/json' --data-binary "$(body long)" \
        "http://127.0.0.1:$1/kept/v1/chat/completions" | awk -F': ' 'tolower($1) == "holdfast-stream" { gsub(/\r/, "", $2); print $2 }'
}
resume_rows() { # label pid port id
    local tail_from=$((CHUNKS + 3))
    measure "$2" "http://127.0.0.1:$3/kept/v1/streams/$4" "$RESUMERS" -H "Last-Event-ID: $4/$tail_from"
    row "$1, the last event" "$rps" "$p50" "$p99" "$errors" "$cpu"
    measure "$2" "http://127.0.0.1:$3/kept/v1/streams/$4" "$RESUMERS" -H "Last-Event-ID: 0"
    row "$1, whole answer" "$rps" "$p50" "$p99" "$errors" "$cpu"
}
echo
echo "# 3. resume latency: GET …/streams/<id> of one kept long answer, wrk -t$WRK_THREADS -c$RESUMERS -d${DURATION}s; one worker"
row where "req/s" "p50 ms" "p99 ms" errors "CPU µs/req"
if [ -z "${SKIP_REDIS:-}" ]; then
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$TMP/redis.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
    backplane="backplane: { redis: { url: \"redis://127.0.0.1:$REDIS_PORT\" } }"
else
    backplane=""
fi
config "$HOLDFAST_PORT" "$ADMIN_PORT" 1h "$backplane" >"$TMP/a.yaml"
start_holdfast "$TMP/a.yaml" "$HOLDFAST_PORT"
A=$STARTED
id="$(kept_id "$HOLDFAST_PORT")"
resume_rows "same instance" "$A" "$HOLDFAST_PORT" "$id"
if [ -z "${SKIP_REDIS:-}" ]; then
    config "$SECOND_PORT" "$SECOND_ADMIN_PORT" 1h "$backplane" >"$TMP/b.yaml"
    start_holdfast "$TMP/b.yaml" "$SECOND_PORT"
    resume_rows "another, through Redis" "$STARTED" "$SECOND_PORT" "$id"
fi
