#!/usr/bin/env bash
# bench/llm.sh — an `llm` route beside Holdfast's plain proxied route and LiteLLM's proxy,
# side by side in one run, all three in front of the same local "provider".
#
# The provider is nginx answering `POST /v1/chat/completions` from memory: a fixed OpenAI chat
# completion (port PORT_BASE), or a fixed five-chunk event stream ending in a usage chunk and
# `[DONE]` (port PORT_BASE+1). Contenders, one worker each:
#   plain     Holdfast `upstream:` route (bytes proxied, nothing read)     PORT_BASE+2
#   llm       Holdfast `llm:` route, alias `fast` → that provider          PORT_BASE+2
#   litellm   LiteLLM proxy (`litellm --num_workers 1`), model `fast`      PORT_BASE+4
# Rounds: whole answers (wrk -c$CONNS), then streams (wrk -c$STREAMS: $STREAMS streams open at
# once; a stream's latency is the time to its last event, which the fixed stream sends at once,
# so it is the time to the first token plus a few bytes). Prints req/s, p50/p99 and CPU µs per
# request (utime+stime of the contender's processes ÷ requests), and the ratios
# llm ÷ plain (goal ≥ 0.8) and llm ÷ litellm; the added p99 is llm's p99 minus plain's.
#
# Run:    bench/llm.sh                        (~2 min)
# Knobs:  DURATION=10 WARMUP=2 ROUNDS=2 CONNS=64 STREAMS=1000 WRK_THREADS=2 PORT_BASE=28800
#         HOLDFAST_BIN=… SKIP_LITELLM=1
# Needs:  nginx, wrk, curl (Debian packages), and for LiteLLM `python3 -m pip install
#         'litellm[proxy]'`. Loopback only; everything started is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
ROUNDS="${ROUNDS:-2}"
CONNS="${CONNS:-64}"
STREAMS="${STREAMS:-1000}"
WRK_THREADS="${WRK_THREADS:-2}"
PORT_BASE="${PORT_BASE:-28800}"
JSON_PORT=$PORT_BASE
SSE_PORT=$((PORT_BASE + 1))
HOLDFAST_PORT=$((PORT_BASE + 2))
HOLDFAST_ADMIN_PORT=$((PORT_BASE + 3))
LITELLM_PORT=$((PORT_BASE + 4))
# The client's key: LiteLLM's master key (it refuses to start without one); Holdfast's routes
# here have no auth and pass over it.
CLIENT_KEY="sk-holdfast-bench-0123456789abcdef0123456789abcdef"

. "$ROOT/bench/lib.sh"
require nginx wrk curl -- nginx wrk curl
ports_free "$JSON_PORT" "$SSE_PORT" "$HOLDFAST_PORT" "$HOLDFAST_ADMIN_PORT" "$LITELLM_PORT"
HOLDFAST_BIN="$(holdfast_bin)"
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

cat >"$TMP/holdfast.yaml" <<EOF
listen: 127.0.0.1:$HOLDFAST_PORT
admin: 127.0.0.1:$HOLDFAST_ADMIN_PORT
server: { threads: 1, shutdown_grace: 1s, watch_interval: 0s }
upstreams:
  provider: { targets: [127.0.0.1:$JSON_PORT], timeout: 30s }
  streaming: { targets: [127.0.0.1:$SSE_PORT], timeout: 30s }
llm:
  providers:
    local: { kind: openai, upstream: provider, keys: [k] }
    local-sse: { kind: openai, upstream: streaming, keys: [k] }
  models:
    fast: { targets: [{ provider: local, model: gpt-4o-mini }] }
    fast-stream: { targets: [{ provider: local-sse, model: gpt-4o-mini }] }
routes:
  - { name: plain, match: { prefix: /plain }, upstream: provider }
  - { name: plain-stream, match: { prefix: /plainsse }, upstream: streaming }
  - { name: llm, match: { prefix: /v1 }, llm: {} }
EOF
RUST_LOG=warn "$HOLDFAST_BIN" run -c "$TMP/holdfast.yaml" 2>"$TMP/holdfast.log" &
PIDS+=($!)
HOLDFAST_PID=$!

CONTENDERS=(plain llm)
# pip puts `litellm` beside the python3 that installed it (a pyenv's bin may not be on PATH).
LITELLM="${LITELLM:-$(command -v litellm || python3 -c 'import os, sys; print(os.path.join(os.path.dirname(sys.executable), "litellm"))')}"
if [ -z "${SKIP_LITELLM:-}" ] && [ -x "$LITELLM" ]; then
    cat >"$TMP/litellm.yaml" <<EOF
model_list:
  - model_name: fast
    litellm_params: { model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:$JSON_PORT/v1", api_key: k }
  - model_name: fast-stream
    litellm_params: { model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:$SSE_PORT/v1", api_key: k }
litellm_settings: { telemetry: false, drop_params: true }
general_settings: { master_key: "$CLIENT_KEY" }
EOF
    (cd "$TMP" && exec "$LITELLM" --config "$TMP/litellm.yaml" --host 127.0.0.1 --port "$LITELLM_PORT" --num_workers 1) >"$TMP/litellm.log" 2>&1 &
    PIDS+=($!)
    LITELLM_PID=$!
    CONTENDERS+=(litellm)
else
    echo "# LiteLLM left out (SKIP_LITELLM, or no litellm: python3 -m pip install 'litellm[proxy]')"
fi

wait_http "http://127.0.0.1:$HOLDFAST_PORT/v1/models"
if [[ " ${CONTENDERS[*]} " == *" litellm "* ]]; then
    for _ in $(seq 1 900); do
        curl -fs -o /dev/null "http://127.0.0.1:$LITELLM_PORT/health/liveliness" && break
        sleep 0.1
    done
    curl -fs -o /dev/null "http://127.0.0.1:$LITELLM_PORT/health/liveliness" || {
        echo "LiteLLM did not start:" >&2
        tail -20 "$TMP/litellm.log" >&2
        exit 1
    }
fi

url_of() { # contender stream? -> URL
    case "$1" in
        plain) [ "$2" = 1 ] && echo "http://127.0.0.1:$HOLDFAST_PORT/plainsse/v1/chat/completions" || echo "http://127.0.0.1:$HOLDFAST_PORT/plain/v1/chat/completions" ;;
        llm) echo "http://127.0.0.1:$HOLDFAST_PORT/v1/chat/completions" ;;
        litellm) echo "http://127.0.0.1:$LITELLM_PORT/v1/chat/completions" ;;
    esac
}
pids_of() { # contender -> its process ids (LiteLLM's workers are its children)
    if [ "$1" = litellm ]; then
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
printf '%-6s %-8s %-7s %10s %9s %9s %8s %10s\n' round who kind "req/s" "p50 ms" "p99 ms" errors "CPU µs/req"
declare -A SUM_RPS SUM_P99 SUM_P50 SUM_CPU
for round in $(seq 1 "$ROUNDS"); do
    for stream in 0 1; do
        conns=$CONNS kind=whole
        [ "$stream" = 1 ] && { conns=$STREAMS; kind=stream; }
        for contender in "${CONTENDERS[@]}"; do
            lua="$(lua_for $stream)"
            url="$(url_of "$contender" $stream)"
            wrk -t"$WRK_THREADS" -c"$conns" -d"${WARMUP}s" -s "$lua" "$url" >/dev/null 2>&1 || true
            before="$(ticks_of "$contender")"
            out="$(wrk -t"$WRK_THREADS" -c"$conns" -d"${DURATION}s" --latency -s "$lua" "$url" 2>&1)"
            after="$(ticks_of "$contender")"
            requests="$(awk '/requests in/ { print $1 }' <<<"$out")"
            cpu="$(cpu_us_per_request $((after - before)) "$requests")"
            rps="$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")"
            p50="$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")"
            p99="$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")"
            errors="$(awk '/Non-2xx/ { n += $NF } /Socket errors/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' <<<"$out")"
            printf '%-6s %-8s %-7s %10s %9s %9s %8s %10s\n' "$round" "$contender" "$kind" "$rps" "$p50" "$p99" "$errors" "$cpu"
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
            'BEGIN { printf "%-8s %-7s %9.0f req/s  p50 %8.3f ms  p99 %8.3f ms  ratio %.2f  added p99 %+8.3f ms  CPU %7.1f µs/request\n", n, k, r / m, p5 / m, p / m, r / br, (p - bp) / m, c / m }'
    done
done
