#!/usr/bin/env bash
# bench/llm.sh — an `llm` route beside Holdfast's plain proxied route and LiteLLM's proxy,
# side by side in one run, all three in front of the same local "provider".
#
# The provider is nginx answering `POST /v1/chat/completions` from memory: a fixed OpenAI chat
# completion (port PORT_BASE), or a fixed five-chunk event stream ending in a usage chunk and
# `[DONE]` (port PORT_BASE+1). Contenders, one worker each:
#   plain     Holdfast `upstream:` route (bytes proxied, nothing read)     PORT_BASE+2
#   llm       Holdfast `llm:` route, alias `fast` → that provider          PORT_BASE+2
#   llm-quota the `llm` route with a token quota no request exhausts       PORT_BASE+2
#   litellm   LiteLLM proxy (`litellm --num_workers 1`), model `fast`      PORT_BASE+4
# Rounds: whole answers (wrk -c$CONNS), then streams (wrk -c$STREAMS: $STREAMS streams open at
# once; a stream's latency is the time to its last event, which the fixed stream sends at once,
# so it is the time to the first token plus a few bytes). Prints req/s, p50/p99 and CPU µs per
# request (utime+stime of the contender's processes ÷ requests), and the ratios
# llm ÷ plain (goal ≥ 0.8) and llm ÷ litellm; the added p99 is llm's p99 minus plain's.
# Then cache hits (unless CACHE_ROUND=0): one whole request with temperature 0, again and again,
# answered by Holdfast's answer cache (route /cached) and by a LiteLLM with its in-memory cache
# (`cache: true`, `cache_params: { type: local }`), plain proxying beside them for scale.
# Last, memory per open stream (unless OPEN_STREAMS=0): $OPEN_STREAMS streamed completions open
# and idle at once, per contender, one contender at a time, each on a fresh process (memory
# freed earlier stays in the allocator and would be reused; Holdfast is restarted between plain
# and llm) warmed by 8 streams first. The provider here is `loadtool llm-provider` (PORT_BASE+5;
# Holdfast upstream `held`, route /plainheld, alias `held-stream`; LiteLLM model `held-stream`):
# it sends the role chunk and one content chunk, then nothing until the client leaves.
# `loadtool hold-streams` opens the streams (200 being set up at once), each held once its
# first content event is in; KiB per stream = (VmRSS after − before, summed over the
# contender's processes) ÷ held. Prints held, failed, KiB per stream, how much of it
# transparent huge pages back ("of it THP"), the first content event's p50/p99 (request
# written → event read) and KiB per stream llm ÷ plain and llm ÷ litellm. Holdfast is measured
# twice: as it ships, and (-nothp) with MIMALLOC_ALLOW_THP=0. Where THP is `madvise` or
# `always`, mimalloc asks for huge pages on its arena, and a 2 MiB page is resident as soon as
# one byte of it is touched: a stream's allocated but untouched capacity (by the figures,
# mostly Pingora's 64 KiB body read buffer) then counts in full. Without THP only touched 4 KiB
# pages count, as for LiteLLM (CPython's allocator asks for no huge pages), hence "without THP"
# for llm ÷ litellm.
# LiteLLM is measured twice too: as it ships, where its aiohttp pool has at most 500
# connections to a provider (AIOHTTP_CONNECTOR_LIMIT_PER_HOST), so past 500 streams the rest
# wait in LiteLLM until they time out (30 s) — its figure then divides by the 500 held what the
# waiting ones left behind too; and (litellm-pool) with that pool raised to OPEN_STREAMS + 100.
#
# Run:    bench/llm.sh                        (~4 min)
# Knobs:  DURATION=10 WARMUP=2 ROUNDS=2 CONNS=64 STREAMS=1000 WRK_THREADS=2 PORT_BASE=28800
#         OPEN_STREAMS=1000 CACHE_ROUND=1 HOLDFAST_BIN=… SKIP_LITELLM=1 (CARGO_TARGET_DIR: where bench/loadtool
#         is built, target/ by default)
# Needs:  nginx, wrk, curl (Debian packages), and for LiteLLM `python3 -m pip install
#         'litellm[proxy]'`. Loadtool builds with cargo. Loopback only; everything started is
#         stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
ROUNDS="${ROUNDS:-2}"
CONNS="${CONNS:-64}"
STREAMS="${STREAMS:-1000}"
CACHE_ROUND="${CACHE_ROUND:-1}"
OPEN_STREAMS="${OPEN_STREAMS:-1000}"
WRK_THREADS="${WRK_THREADS:-2}"
PORT_BASE="${PORT_BASE:-28800}"
JSON_PORT=$PORT_BASE
SSE_PORT=$((PORT_BASE + 1))
HOLDFAST_PORT=$((PORT_BASE + 2))
HOLDFAST_ADMIN_PORT=$((PORT_BASE + 3))
LITELLM_PORT=$((PORT_BASE + 4))
HELD_PORT=$((PORT_BASE + 5))
# The client's key: LiteLLM's master key (it refuses to start without one); Holdfast's routes
# here have no auth and pass over it.
CLIENT_KEY="sk-holdfast-bench-0123456789abcdef0123456789abcdef"

. "$ROOT/bench/lib.sh"
require nginx wrk curl -- nginx wrk curl
ports_free "$JSON_PORT" "$SSE_PORT" "$HOLDFAST_PORT" "$HOLDFAST_ADMIN_PORT" "$LITELLM_PORT" "$HELD_PORT"
HOLDFAST_BIN="$(holdfast_bin)"
[ "$OPEN_STREAMS" = 0 ] || LOADTOOL="$(loadtool_bin)"
bench_tmp llm
ulimit -n 20000 2>/dev/null || true

ANSWER='{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}}'
chunk() { printf 'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[%s]%s}\n\n' "$1" "${2:-}"; }
# Real newlines inside the quoted string: nginx keeps them as they are.
STREAM="$(chunk '{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}'
    chunk '{"index":0,"delta":{"content":"Hello!"},"finish_reason":null}'
    chunk '{"index":0,"delta":{"content":" How can I help?"},"finish_reason":null}'
    chunk '{"index":0,"delta":{},"finish_reason":"stop"}'
    chunk '' ',"usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14}'
    printf 'data: [DONE]\n\n')"
STREAM="$STREAM
"
printf '%s\n' \
    "daemon off;" "master_process off;" "worker_processes 1;" "pid $TMP/origin.pid;" \
    "error_log $TMP/origin-error.log warn;" "events { worker_connections 8192; }" \
    "http {" "  access_log off;" "  client_body_temp_path $TMP;" "  proxy_temp_path $TMP;" \
    "  fastcgi_temp_path $TMP;" "  uwsgi_temp_path $TMP;" "  scgi_temp_path $TMP;" \
    "  keepalive_requests 1000000;" \
    "  server { listen 127.0.0.1:$JSON_PORT; client_max_body_size 1m;" \
    "    location / { default_type application/json; return 200 '$ANSWER'; } }" \
    "  server { listen 127.0.0.1:$SSE_PORT; client_max_body_size 1m;" \
    "    location / { default_type text/event-stream; return 200 '$STREAM'; } }" \
    "}" >"$TMP/origin.conf"
nginx -e "$TMP/origin-error.log" -c "$TMP/origin.conf" -p "$TMP" &
PIDS+=($!)
if [ "$OPEN_STREAMS" != 0 ]; then
    "$LOADTOOL" llm-provider --listen "127.0.0.1:$HELD_PORT" 2>"$TMP/held-provider.log" &
    PIDS+=($!)
fi

cat >"$TMP/holdfast.yaml" <<EOF
listen: 127.0.0.1:$HOLDFAST_PORT
admin: 127.0.0.1:$HOLDFAST_ADMIN_PORT
server: { threads: 1, shutdown_grace: 1s, watch_interval: 0s }
upstreams:
  provider: { targets: [127.0.0.1:$JSON_PORT], timeout: 30s }
  streaming: { targets: [127.0.0.1:$SSE_PORT], timeout: 30s }
  # the provider whose streams stay silent: a long read timeout, or Holdfast would cut them
  held: { targets: [127.0.0.1:$HELD_PORT], timeout: 10m }
llm:
  providers:
    local: { kind: openai, upstream: provider, keys: [k] }
    local-sse: { kind: openai, upstream: streaming, keys: [k] }
    local-held: { kind: openai, upstream: held, keys: [k] }
  models:
    fast: { targets: [{ provider: local, model: gpt-4o-mini }] }
    fast-stream: { targets: [{ provider: local-sse, model: gpt-4o-mini }] }
    held-stream: { targets: [{ provider: local-held, model: gpt-4o-mini }] }
routes:
  - { name: plain, match: { prefix: /plain }, upstream: provider }
  - { name: plain-stream, match: { prefix: /plainsse }, upstream: streaming }
  - { name: plain-held, match: { prefix: /plainheld }, upstream: held }
  - { name: llm, match: { prefix: /v1 }, llm: {} }
  - { name: cached, match: { prefix: /cached }, llm: { models: [fast], cache: { ttl: 1h } } }
  # the llm route with a token quota no request exhausts: its check and settlement cost
  - name: quota
    match: { prefix: /quota }
    llm: { models: [fast, fast-stream] }
    token_limits: [{ key: ip, tokens: 1000000000/h }]
EOF
start_holdfast() { # [NAME=value…] — Holdfast's environment
    env RUST_LOG=warn "$@" "$HOLDFAST_BIN" run -c "$TMP/holdfast.yaml" 2>>"$TMP/holdfast.log" &
    HOLDFAST_PID=$!
    PIDS+=("$HOLDFAST_PID")
    wait_http "http://127.0.0.1:$HOLDFAST_PORT/v1/models"
}
start_holdfast

CONTENDERS=(plain llm llm-quota)
# pip puts `litellm` beside the python3 that installed it (a pyenv's bin may not be on PATH).
LITELLM="${LITELLM:-$(command -v litellm || python3 -c 'import os, sys; print(os.path.join(os.path.dirname(sys.executable), "litellm"))')}"
if [ -z "${SKIP_LITELLM:-}" ] && [ -x "$LITELLM" ]; then
    cat >"$TMP/litellm.yaml" <<EOF
model_list:
  - model_name: fast
    litellm_params: { model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:$JSON_PORT/v1", api_key: k }
  - model_name: fast-stream
    litellm_params: { model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:$SSE_PORT/v1", api_key: k }
  - model_name: held-stream
    litellm_params: { model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:$HELD_PORT/v1", api_key: k }
litellm_settings: { telemetry: false, drop_params: true }
general_settings: { master_key: "$CLIENT_KEY" }
EOF
    CONTENDERS+=(litellm)
else
    echo "# LiteLLM left out (SKIP_LITELLM, or no litellm: python3 -m pip install 'litellm[proxy]')"
fi
start_litellm() { # [NAME=value…] — LiteLLM's environment
    (cd "$TMP" && exec env "$@" "$LITELLM" --config "${LITELLM_CONFIG:-$TMP/litellm.yaml}" --host 127.0.0.1 --port "$LITELLM_PORT" --num_workers 1) >>"$TMP/litellm.log" 2>&1 &
    LITELLM_PID=$!
    PIDS+=("$LITELLM_PID")
    for _ in $(seq 1 900); do
        curl -fs -o /dev/null "http://127.0.0.1:$LITELLM_PORT/health/liveliness" && break
        sleep 0.1
    done
    curl -fs -o /dev/null "http://127.0.0.1:$LITELLM_PORT/health/liveliness" || {
        echo "LiteLLM did not start:" >&2
        tail -20 "$TMP/litellm.log" >&2
        exit 1
    }
}
stop_litellm() { # its workers (children) too, and waits until they and the port are gone
    local kids pid
    kids="$(pgrep -P "$LITELLM_PID" || true)"
    stop_one "$LITELLM_PID"
    for pid in $kids; do kill "$pid" 2>/dev/null || true; done
    for _ in $(seq 1 100); do
        pid=""
        for pid in $kids; do [ -d "/proc/$pid" ] && break; pid=""; done
        [ -z "$pid" ] && ! (exec 3<>"/dev/tcp/127.0.0.1/$LITELLM_PORT") 2>/dev/null && return 0
        sleep 0.1
    done
}
[[ " ${CONTENDERS[*]} " == *" litellm "* ]] && start_litellm

url_of() { # contender stream? -> URL
    case "$1" in
        plain) [ "$2" = 1 ] && echo "http://127.0.0.1:$HOLDFAST_PORT/plainsse/v1/chat/completions" || echo "http://127.0.0.1:$HOLDFAST_PORT/plain/v1/chat/completions" ;;
        llm) echo "http://127.0.0.1:$HOLDFAST_PORT/v1/chat/completions" ;;
        llm-quota) echo "http://127.0.0.1:$HOLDFAST_PORT/quota/v1/chat/completions" ;;
        litellm) echo "http://127.0.0.1:$LITELLM_PORT/v1/chat/completions" ;;
    esac
}
pids_of() { # contender -> its process ids (LiteLLM's workers are its children)
    if [[ "$1" == litellm* ]]; then
        echo "$LITELLM_PID $(pgrep -P "$LITELLM_PID" | tr '\n' ' ')"
    else
        echo "$HOLDFAST_PID"
    fi
}
ticks_of() { local sum=0 pid; for pid in $(pids_of "$1"); do sum=$((sum + $(cpu_ticks "$pid" 2>/dev/null || echo 0))); done; echo "$sum"; }
lua_for() { # stream? -> wrk script
    local model=fast stream=false
    [ "$1" = 1 ] && { model=fast-stream; stream=true; }
    printf '%s\n' 'wrk.method = "POST"' \
        "wrk.body = [[{\"model\":\"$model\",\"stream\":$stream,\"messages\":[{\"role\":\"system\",\"content\":\"You are terse.\"},{\"role\":\"user\",\"content\":\"Say hello.\"}]}]]" \
        'wrk.headers["Content-Type"] = "application/json"' \
        "wrk.headers[\"Authorization\"] = \"Bearer $CLIENT_KEY\"" >"$TMP/$1.lua"
    echo "$TMP/$1.lua"
}
for contender in "${CONTENDERS[@]}"; do
    for stream in 0 1; do
        code="$(curl -s -o "$TMP/check.out" -w '%{http_code}' -X POST -H 'content-type: application/json' \
            -H "authorization: Bearer $CLIENT_KEY" --data-binary @<(sed -n 's/^wrk.body = \[\[\(.*\)\]\]$/\1/p' "$(lua_for $stream)") "$(url_of "$contender" $stream)")"
        if [ "$code" != 200 ]; then
            echo "$contender (stream $stream) answers $code, not 200: $(head -c 300 "$TMP/check.out")" >&2
            exit 1
        fi
    done
done

echo "# bench/llm.sh — $(date -u +%Y-%m-%dT%H:%M:%SZ) — $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# wrk -t$WRK_THREADS -d${DURATION}s --latency; whole: -c$CONNS; streams: -c$STREAMS; one worker each"
printf '%-6s %-9s %-7s %10s %9s %9s %8s %10s\n' round who kind "req/s" "p50 ms" "p99 ms" errors "CPU µs/req"
declare -A SUM_RPS SUM_P99 SUM_P50 SUM_CPU
measure() { # contender url lua conns — sets rps p50 p99 errors cpu
    wrk_measure "ticks_of $1" "$2" "$4" -s "$3"
}
for round in $(seq 1 "$ROUNDS"); do
    for stream in 0 1; do
        conns=$CONNS kind=whole
        [ "$stream" = 1 ] && { conns=$STREAMS; kind=stream; }
        for contender in "${CONTENDERS[@]}"; do
            measure "$contender" "$(url_of "$contender" $stream)" "$(lua_for $stream)" "$conns"
            printf '%-6s %-9s %-7s %10s %9s %9s %8s %10s\n' "$round" "$contender" "$kind" "$rps" "$p50" "$p99" "$errors" "$cpu"
            key="$contender/$kind"
            SUM_RPS[$key]="$(awk -v a="${SUM_RPS[$key]:-0}" -v b="$rps" 'BEGIN { print a + b }')"
            SUM_P50[$key]="$(awk -v a="${SUM_P50[$key]:-0}" -v b="$p50" 'BEGIN { print a + b }')"
            SUM_P99[$key]="$(awk -v a="${SUM_P99[$key]:-0}" -v b="$p99" 'BEGIN { print a + b }')"
            SUM_CPU[$key]="$(awk -v a="${SUM_CPU[$key]:-0}" -v b="$cpu" 'BEGIN { print a + b }')"
        done
    done
done
echo
echo "# mean over $ROUNDS round(s); ratio = req/s ÷ plain's; added p99 = p99 − plain's"
for kind in whole stream; do
    for contender in "${CONTENDERS[@]}"; do
        key="$contender/$kind"
        awk -v n="$contender" -v k="$kind" -v r="${SUM_RPS[$key]}" -v p5="${SUM_P50[$key]}" -v p="${SUM_P99[$key]}" \
            -v br="${SUM_RPS[plain/$kind]}" -v bp="${SUM_P99[plain/$kind]}" -v c="${SUM_CPU[$key]}" -v m="$ROUNDS" \
            'BEGIN { printf "%-9s %-7s %9.0f req/s  p50 %8.3f ms  p99 %8.3f ms  ratio %.2f  added p99 %+8.3f ms  CPU %7.1f µs/request\n", n, k, r / m, p5 / m, p / m, r / br, (p - bp) / m, c / m }'
    done
done

for kind in whole stream; do
    awk -v k="$kind" -v q="${SUM_RPS[llm-quota/$kind]}" -v l="${SUM_RPS[llm/$kind]}" \
        -v cq="${SUM_CPU[llm-quota/$kind]}" -v cl="${SUM_CPU[llm/$kind]}" \
        'BEGIN { printf "token quota, %s: llm-quota ÷ llm %.2f in req/s (goal ≥ 0.9), CPU %+.1f µs/request\n", k, q / l, (cq - cl) / '"$ROUNDS"' }'
done

# Cache hits: the same whole request (temperature 0) again and again, answered from Holdfast's
# answer cache (route /cached, memory store) and from LiteLLM's (a second LiteLLM with
# `cache: true`, type local: its in-memory cache), beside plain proxying for scale.
if [ "$CACHE_ROUND" != 0 ]; then
    printf '%s\n' 'wrk.method = "POST"' \
        'wrk.body = [[{"model":"fast","temperature":0,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello."}]}]]' \
        'wrk.headers["Content-Type"] = "application/json"' \
        "wrk.headers[\"Authorization\"] = \"Bearer $CLIENT_KEY\"" >"$TMP/cached.lua"
    CACHE_CONTENDERS=(plain llm-cached)
    if [[ " ${CONTENDERS[*]} " == *" litellm "* ]]; then
        stop_litellm
        sed 's/^litellm_settings: { telemetry: false, drop_params: true }$/litellm_settings: { telemetry: false, drop_params: true, cache: true, cache_params: { type: local } }/' \
            "$TMP/litellm.yaml" >"$TMP/litellm-cache.yaml"
        grep -q 'cache: true' "$TMP/litellm-cache.yaml" || { echo "no cache in LiteLLM's config" >&2; exit 1; }
        LITELLM_CONFIG="$TMP/litellm-cache.yaml" start_litellm
        CACHE_CONTENDERS+=(litellm-cached)
    fi
    cached_url() {
        case "$1" in
            plain) url_of plain 0 ;;
            llm-cached) echo "http://127.0.0.1:$HOLDFAST_PORT/cached/v1/chat/completions" ;;
            litellm-cached) url_of litellm 0 ;;
        esac
    }
    echo
    echo "# cache hits: the same whole request, wrk -c$CONNS; plain is the proxied route (no cache) for scale"
    printf '%-15s %10s %9s %9s %8s %10s\n' who "req/s" "p50 ms" "p99 ms" errors "CPU µs/req"
    declare -A CACHE_RPS
    for contender in "${CACHE_CONTENDERS[@]}"; do
        measure "$contender" "$(cached_url "$contender")" "$TMP/cached.lua" "$CONNS"
        CACHE_RPS[$contender]="$rps"
        printf '%-15s %10s %9s %9s %8s %10s\n' "$contender" "$rps" "$p50" "$p99" "$errors" "$cpu"
    done
    hits="$(curl -s "http://127.0.0.1:$HOLDFAST_ADMIN_PORT/metrics" | awk '/^holdfast_llm_cache_total\{.*result="hit"/ { print $2 }')"
    echo "# Holdfast's cache hits counted: ${hits:-0}"
    [ -n "${CACHE_RPS[litellm-cached]:-}" ] && awk -v a="${CACHE_RPS[llm-cached]}" -v b="${CACHE_RPS[litellm-cached]}" \
        'BEGIN { printf "cache hits: llm ÷ litellm %.0f×\n", a / b }'
    if [[ " ${CONTENDERS[*]} " == *" litellm "* ]]; then
        stop_litellm
        start_litellm
    fi
fi

[ "$OPEN_STREAMS" = 0 ] && exit 0

# Memory per open stream: each contender on a fresh process, one at a time (see the header).
HELD_BODY='{"model":"held-stream","stream":true,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello."}]}'
held_url() { # contender -> URL
    case "$1" in
        plain*) echo "http://127.0.0.1:$HOLDFAST_PORT/plainheld/v1/chat/completions" ;;
        llm*) url_of llm 1 ;;
        litellm*) url_of litellm 1 ;;
    esac
}
hold() { # contender n label -> loadtool's line
    "$LOADTOOL" hold-streams --url "$(held_url "$1")" --body "$HELD_BODY" --n "$2" --label "$3" \
        --header "Authorization: Bearer $CLIENT_KEY" --pids "$(pids_of "$1" | xargs | tr ' ' ,)" \
        --settle 1 --concurrency 200 --timeout 30
}
field() { tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k { print $2 }'; }
POOL=$((OPEN_STREAMS + 100))
echo
echo "# memory per open stream: $OPEN_STREAMS streamed completions open and idle at once; a fresh process each;"
echo "# transparent huge pages: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo unknown);" \
    "-nothp: Holdfast with MIMALLOC_ALLOW_THP=0; litellm-pool: LiteLLM's provider pool $POOL, not 500"
HELD_CONTENDERS=(plain llm plain-nothp llm-nothp)
[[ " ${CONTENDERS[*]} " == *" litellm "* ]] && HELD_CONTENDERS+=(litellm litellm-pool)
declare -A HELD
for contender in "${HELD_CONTENDERS[@]}"; do
    case "$contender" in
        litellm) stop_litellm && start_litellm ;;
        litellm-pool) stop_litellm && start_litellm AIOHTTP_CONNECTOR_LIMIT=$POOL AIOHTTP_CONNECTOR_LIMIT_PER_HOST=$POOL ;;
        *-nothp) stop_one "$HOLDFAST_PID" && start_holdfast MIMALLOC_ALLOW_THP=0 ;;
        *) stop_one "$HOLDFAST_PID" && start_holdfast ;;
    esac
    warm="$(hold "$contender" 8 "$contender-warmup")"
    [ "$(field failed "$warm")" = 0 ] || echo "# $contender's warm-up: $warm" >&2
    sleep 1
    HELD[$contender]="$(hold "$contender" "$OPEN_STREAMS" "$contender")"
    echo "hold-streams ${HELD[$contender]}"
done
printf '%-12s %6s %6s %7s %10s %10s %9s %9s  %s\n' who held failed dropped "KiB/stream" "of it THP" \
    "p50 ms" "p99 ms" "failed by"
for contender in "${HELD_CONTENDERS[@]}"; do
    o="${HELD[$contender]}"
    thp="$(awk -v a="$(field huge_after_kib "$o")" -v b="$(field huge_before_kib "$o")" -v n="$(field held "$o")" \
        'BEGIN { if (n > 0) printf "%.2f", (a - b) / n; else printf "NaN" }')"
    printf '%-12s %6s %6s %7s %10s %10s %9s %9s  %s\n' "$contender" "$(field held "$o")" "$(field failed "$o")" \
        "$(field dropped "$o")" "$(field kib_per_stream "$o")" "$thp" "$(field first_event_p50_ms "$o")" \
        "$(field first_event_p99_ms "$o")" "$(field failed_by "$o")"
done
ratio() { awk -v a="$(field kib_per_stream "${HELD[$1]:-}")" -v b="$(field kib_per_stream "${HELD[$2]:-}")" \
    'BEGIN { if (b + 0 > 0 && a == a + 0) printf "%.2f", a / b; else printf "n/a" }'; }
line="KiB per stream: llm ÷ plain $(ratio llm plain) (without THP $(ratio llm-nothp plain-nothp))"
[ -n "${HELD[litellm]:-}" ] && line="$line; llm ÷ litellm $(ratio llm litellm) (without THP $(ratio llm-nothp litellm)),
  ÷ litellm-pool $(ratio llm litellm-pool) (without THP $(ratio llm-nothp litellm-pool))"
echo "$line"
