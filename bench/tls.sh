#!/usr/bin/env bash
# bench/tls.sh — TLS and HTTP/2 (issue 8): Holdfast vs nginx over TLS, side by side in one run,
# and the memory of long-polls held as HTTP/2 streams.
#
# One self-signed ECDSA P-256 certificate (openssl, SAN localhost + 127.0.0.1) serves both
# proxies. Each proxy has ONE worker (Holdfast `server: { threads: 1 }`, nginx
# `worker_processes 1`), terminates TLS (1.2 and 1.3 offered, h2 and http/1.1 by ALPN) and
# proxies GET /api to the same origin (nginx `return 200 '{"ok":true,"id":1}'`, 1 worker, as in
# bench/proxy.sh) with upstream keep-alive. Access logs are off in both. The load tools connect
# to `localhost` (127.0.0.1 only here), so they send SNI `localhost`, as a client would: wrk puts
# the URL's host in SNI even when it is an IP address, which rustls ignores with a WARN line in
# Holdfast's log per handshake.
#   1. keep-alive: `wrk -t1 -c64 -d${DURATION}s --latency https://localhost:PORT/api` — req/s, p99;
#   2. new connections: the same with `-H "Connection: close"`, so every request is a new TCP
#      connection and a new TLS handshake — handshakes/s (= req/s), p99 — twice:
#      `resumed`: wrk as it is. wrk keeps each connection's SSL object across reconnects
#        (SSL_clear), so it offers the previous session and nearly every handshake is a TLS 1.3
#        resumption (PSK + X25519, no certificate signature). Both servers resume: rustls keeps a
#        256-entry stateful session cache and sends two TLS 1.3 tickets by default; nginx (no
#        `ssl_session_cache` set) issues stateless tickets.
#      `full`: wrk with a small LD_PRELOAD shim (built here with gcc) that drops the session in
#        SSL_clear, so every handshake is a FULL one (X25519 + ECDSA P-256 signature).
#      How many handshakes resumed, with and without the shim, is checked at start on a third
#      nginx port that logs `$ssl_session_reused` for a 1-second Connection-close wrk run.
#      Both servers count the connections they accepted (Holdfast `holdfast_connections_total`,
#      nginx `stub_status` on a side port), printed per request to show one connection each.
#   For 1 and 2 the figure is the mean over ROUNDS interleaved rounds (after a WARMUP-second
#   warm-up each), with the CPU time each proxy used per request (utime+stime of its process
#   from /proc/PID/stat), the steadier figure on a shared machine, and the cores wrk itself used
#   (its user+sys time ÷ wall time): wrk is one thread, so at ~1.0 it, not the proxy, sets the
#   rate — as it does for handshakes, where the client's half of the handshake costs as much as
#   the server's. Then compare CPU per handshake, not handshakes/s.
#   3. held polls over HTTP/2: a fresh Holdfast (threads: 1, route /poll long-polls channel
#      `updates` for 120 s, /push publishes to it) holds N polls (10,000) as streams of a few
#      HTTP/2 connections (`h2load -c H2_CONNS -m N/H2_CONNS -n N`, 10 × 1,000); once
#      `holdfast_longpoll_held` reaches N (plus ${SETTLE}s), VmRSS minus VmRSS before h2load
#      started, divided by N, is the memory per held poll. Then ONE publish (curl POST /push) must
#      answer every poll with the message (h2load's 2xx count and the `data` outcome of
#      `holdfast_longpoll_completions_total` must both be N). HOLD_MODES picks the transports, each
#      on a fresh Holdfast: `h2` (TLS + ALPN h2, the figure asked for), `h2c` (the same streams in
#      clear, to separate TLS from HTTP/2), `http1-tls` (one HTTP/1.1 connection over TLS per
#      poll: `h2load --h1 -c N`) and `http1` (the same in clear: the same-run baseline for
#      bench/longpoll.sh's 41 KiB).
#
# Run:    bench/tls.sh              (~4 min with the defaults)
# Knobs:  DURATION=10 WARMUP=2 ROUNDS=2 (0: the holds only) CONNS=64 N=10000 H2_CONNS=10 SETTLE=3
#         HOLD_MODES="h2 h2c http1-tls http1" PORT_BASE=28700 HOLDFAST_BIN=…
# Needs:  nginx, wrk, h2load (Debian nghttp2-client), curl, openssl, gcc (Debian packages; installed
#         with apt-get when run as root); `ulimit -n` ≥ N + 1000 for the http1 holds. Loopback
#         only; every process started here is stopped on exit and its temporary directory removed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
ROUNDS="${ROUNDS:-2}"
CONNS="${CONNS:-64}"
N="${N:-10000}"
H2_CONNS="${H2_CONNS:-10}"
SETTLE="${SETTLE:-3}"
HOLD_MODES="${HOLD_MODES:-h2 h2c http1-tls http1}"
PORT_BASE="${PORT_BASE:-28700}"
ORIGIN_PORT=$PORT_BASE
HOLDFAST_PORT=$((PORT_BASE + 1))
HOLDFAST_ADMIN_PORT=$((PORT_BASE + 2))
NGINX_PORT=$((PORT_BASE + 3))
NGINX_STATUS_PORT=$((PORT_BASE + 4))
REUSE_PROBE_PORT=$((PORT_BASE + 5))
POLL_TLS_PORT=$((PORT_BASE + 6))
POLL_H2C_PORT=$((PORT_BASE + 7))
POLL_ADMIN_PORT=$((PORT_BASE + 8))

. "$ROOT/bench/lib.sh"
require nginx wrk h2load curl openssl gcc -- nginx wrk nghttp2-client curl openssl gcc
ports_free $(seq "$PORT_BASE" $((PORT_BASE + 8)))
if [ "$(ulimit -n)" -lt $((N + 1000)) ]; then
    ulimit -n $((N + 1000)) 2>/dev/null || {
        echo "ulimit -n is $(ulimit -n); the http1 holds need $((N + 1000))" >&2
        exit 1
    }
fi
if [ $((N % H2_CONNS)) -ne 0 ]; then
    echo "N ($N) must be a multiple of H2_CONNS ($H2_CONNS)" >&2
    exit 1
fi
HOLDFAST_BIN="$(holdfast_bin)"
bench_tmp tls

# ---- the certificate ---------------------------------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -keyout "$TMP/server.key" -out "$TMP/server.pem" -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null

# wrk with this preloaded offers no earlier session: every Connection-close handshake is a full one.
cat >"$TMP/noresume.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
/* wrk reuses a connection's SSL object after SSL_clear, which keeps the session: drop it. */
int SSL_clear(void *ssl) {
    static int (*real_clear)(void *);
    static int (*set_session)(void *, void *);
    if (!real_clear) {
        real_clear = (int (*)(void *))dlsym(RTLD_NEXT, "SSL_clear");
        set_session = (int (*)(void *, void *))dlsym(RTLD_NEXT, "SSL_set_session");
    }
    int ok = real_clear(ssl);
    set_session(ssl, 0);
    return ok;
}
EOF
gcc -shared -fPIC -O2 -o "$TMP/noresume.so" "$TMP/noresume.c" -ldl

# ---- origin and nginx --------------------------------------------------------------------------
nginx_conf() { # name server-block… -> writes $TMP/name.conf
    local name=$1
    shift
    printf '%s\n' "daemon off;" "master_process off;" "worker_processes 1;" \
        "pid $TMP/$name.pid;" "error_log $TMP/$name-error.log warn;" \
        "events { worker_connections 4096; }" "http {" "  access_log off;" \
        "  client_body_temp_path $TMP;" "  proxy_temp_path $TMP;" "  fastcgi_temp_path $TMP;" \
        "  uwsgi_temp_path $TMP;" "  scgi_temp_path $TMP;" \
        "  keepalive_requests 1000000;" "  keepalive_timeout 300s;" "$@" "}" >"$TMP/$name.conf"
}
nginx_conf origin \
    "  server { listen 127.0.0.1:$ORIGIN_PORT;" \
    "    location / { default_type application/json; return 200 '{\"ok\":true,\"id\":1}'; } }"
nginx -e "$TMP/origin-error.log" -c "$TMP/origin.conf" -p "$TMP" &
PIDS+=($!)

TLS="ssl_certificate $TMP/server.pem; ssl_certificate_key $TMP/server.key; ssl_protocols TLSv1.2 TLSv1.3;"
nginx_conf nginx \
    "  upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 128; keepalive_requests 1000000; }" \
    "  server { listen 127.0.0.1:$NGINX_PORT ssl http2; $TLS" \
    "    location / { proxy_pass http://origin; proxy_http_version 1.1;" \
    "      proxy_set_header Connection \"\"; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; } }" \
    "  server { listen 127.0.0.1:$NGINX_STATUS_PORT; location / { stub_status; } }" \
    "  log_format reuse '\$ssl_session_reused \$ssl_protocol \$ssl_cipher';" \
    "  server { listen 127.0.0.1:$REUSE_PROBE_PORT ssl; $TLS access_log $TMP/reuse.log reuse;" \
    "    location / { return 200 'probe'; } }"
nginx -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf" -p "$TMP" &
NGINX_PID=$!
PIDS+=($NGINX_PID)

# ---- Holdfast ----------------------------------------------------------------------------------
cat >"$TMP/holdfast.yaml" <<EOF
listen:
  - address: 127.0.0.1:$HOLDFAST_PORT
    tls:
      certificates:
        - { cert: $TMP/server.pem, key: $TMP/server.key }
    http2: true
admin: 127.0.0.1:$HOLDFAST_ADMIN_PORT
server: { threads: 1, shutdown_grace: 1s, watch_interval: 0s }
upstreams:
  origin: { targets: [127.0.0.1:$ORIGIN_PORT], timeout: 10s, connect_timeout: 2s }
routes:
  - name: api
    match: { prefix: /, methods: [GET, POST] }
    upstream: origin
EOF
"$HOLDFAST_BIN" check "$TMP/holdfast.yaml" >/dev/null
RUST_LOG="${RUST_LOG:-warn}" "$HOLDFAST_BIN" run -c "$TMP/holdfast.yaml" 2>"$TMP/holdfast.log" &
HOLDFAST_PID=$!
PIDS+=($HOLDFAST_PID)

wait_url() { # url [curl options…]
    local url=$1 i
    shift
    for i in $(seq 1 150); do
        curl -sk -o /dev/null --max-time 1 "$@" "$url" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing answers at $url" >&2
    tail -20 "$TMP"/*.log >&2 || true
    exit 1
}
wait_url "http://127.0.0.1:$ORIGIN_PORT/"
wait_url "http://127.0.0.1:$NGINX_STATUS_PORT/"
wait_url "http://127.0.0.1:$HOLDFAST_ADMIN_PORT/healthz"
for port in $HOLDFAST_PORT $NGINX_PORT; do
    wait_url "https://127.0.0.1:$port/api"
    for proto in --http1.1 --http2; do
        body="$(curl -sk "$proto" "https://127.0.0.1:$port/api")"
        if [ "$body" != '{"ok":true,"id":1}' ]; then
            echo "https://127.0.0.1:$port/api ($proto) does not proxy to the origin (got: $body)" >&2
            tail -20 "$TMP/holdfast.log" "$TMP/nginx-error.log" >&2 || true
            exit 1
        fi
    done
done

# What each server negotiates with an OpenSSL client (wrk links the same libssl).
negotiated() { # port -> "TLSv1.3 TLS_AES_256_GCM_SHA384 X25519"
    openssl s_client -connect "127.0.0.1:$1" -servername localhost </dev/null 2>/dev/null |
        awk '/^New, / { p = $2; sub(/,$/, "", p); c = $NF } /^Server Temp Key:/ { k = $4; sub(/,$/, "", k) }
             END { print p, c, k }'
}

# Does wrk resume sessions across its connections? nginx logs `$ssl_session_reused` on the probe port.
reuse_probe() { # [env…] -> "resumed of total (protocol cipher)"
    : >"$TMP/reuse.log"
    env "$@" wrk -t1 -c4 -d1s -H "Connection: close" "https://localhost:$REUSE_PROBE_PORT/" >/dev/null
    sleep 0.2
    awk '$1 == "r" { r++ } { n++; p[$2 " " $3]++ } END { for (k in p) if (p[k] > m) { m = p[k]; b = k }
        printf "%d of %d (%s)", r, n, b }' "$TMP/reuse.log"
}
REUSE_PLAIN="$(reuse_probe)"
REUSE_SHIM="$(reuse_probe LD_PRELOAD="$TMP/noresume.so")"

cpu_ticks() { # pid -> utime + stime of the whole process, in clock ticks
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
CLK_TCK="$(getconf CLK_TCK)"
holdfast_conns() { # sum of holdfast_connections_total over protocols
    curl -s "http://127.0.0.1:$HOLDFAST_ADMIN_PORT/metrics" |
        awk '/^holdfast_connections_total/ { n += $NF } END { print n + 0 }'
}
nginx_conns() { curl -s "http://127.0.0.1:$NGINX_STATUS_PORT/" | awk 'NR == 3 { print $1 }'; }

run_wrk() { # name mode -> "rps p99_ms errors cpu_us_per_req conns_per_req wrk_cores"
    local name=$1 mode=$2 port pid counter out rps p99 errors reqs t0 t1 c0 c1 hdr=()
    case $name in
        holdfast) port=$HOLDFAST_PORT pid=$HOLDFAST_PID counter=holdfast_conns ;;
        nginx) port=$NGINX_PORT pid=$NGINX_PID counter=nginx_conns ;;
    esac
    local pre=()
    [ "$mode" != keepalive ] && hdr=(-H "Connection: close")
    [ "$mode" = full ] && pre=(LD_PRELOAD="$TMP/noresume.so")
    local url="https://localhost:$port/api"
    env "${pre[@]}" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "${hdr[@]}" "$url" >/dev/null
    sleep 0.5
    c0="$($counter)"
    t0="$(cpu_ticks "$pid")"
    # bash's `time` gives wrk's own CPU time: a wrk at ~1.0 core is what limits the run.
    out="$( { TIMEFORMAT='%3R %3U %3S'; time env "${pre[@]}" wrk -t1 -c"$CONNS" -d"${DURATION}s" \
        --latency "${hdr[@]}" "$url"; } 2>"$TMP/wrk.time")"
    t1="$(cpu_ticks "$pid")"
    c1="$($counter)"
    rps="$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")"
    p99="$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")"
    reqs="$(awk '/requests in/ { print $1 }' <<<"$out")"
    errors="$(awk '/Non-2xx/ { n += $NF } /Socket errors/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' <<<"$out")"
    read -r wall user sys <"$TMP/wrk.time"
    awk -v r="$rps" -v p="$p99" -v e="$errors" -v t=$((t1 - t0)) -v k="$CLK_TCK" -v q="$reqs" \
        -v c=$((c1 - c0)) -v w="$wall" -v u="$user" -v s="$sys" \
        'BEGIN { printf "%s %s %s %.1f %.3f %.2f\n", r, p, e, t / k * 1e6 / q, c / q, (u + s) / w }'
}

echo "# bench/tls.sh — $(date -u +%Y-%m-%dT%H:%M:%SZ) — $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $(nginx -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | head -1 | awk '{ print "wrk", $2 }'), $(h2load --version | head -1), $(openssl version | awk '{ print $1, $2 }')"
echo "# negotiated with openssl s_client: Holdfast $(negotiated "$HOLDFAST_PORT"), nginx $(negotiated "$NGINX_PORT")"
echo "# wrk's Connection-close handshakes resumed (probe, nginx \$ssl_session_reused): $REUSE_PLAIN as it is; $REUSE_SHIM with the no-resume shim"
echo "# wrk -t1 -c$CONNS -d${DURATION}s --latency https://localhost:PORT/api; resumed: + -H 'Connection: close'; full: + LD_PRELOAD=noresume.so; ${WARMUP}s warm-up, $ROUNDS rounds"
printf '%-6s %-10s %-9s %10s %9s %7s %12s %10s %10s\n' round mode server "req/s" "p99 ms" errors "CPU us/req" "conns/req" "wrk cores"
declare -A SUM
for round in $(seq 1 "$ROUNDS"); do
    for mode in keepalive resumed full; do
        for server in holdfast nginx; do
            read -r rps p99 errors cpu cpr cores <<<"$(run_wrk "$server" "$mode")"
            printf '%-6s %-10s %-9s %10s %9s %7s %12s %10s %10s\n' "$round" "$mode" "$server" "$rps" "$p99" "$errors" "$cpu" "$cpr" "$cores"
            for f in rps p99 errors cpu cpr cores; do
                SUM[$mode.$server.$f]="$(awk -v a="${SUM[$mode.$server.$f]:-0}" -v b="${!f}" 'BEGIN { print a + b }')"
            done
        done
    done
done
mean() { awk -v a="${SUM[$1]}" -v k="$ROUNDS" -v f="${2:-%.0f}" 'BEGIN { printf f, a / k }'; }
# Handshakes Holdfast counted as failed, by reason (a wrk run that stops mid-handshake leaves some
# `closed`), and what either proxy logged at warn level or above.
TLS_ERRORS="$(curl -s "http://127.0.0.1:$HOLDFAST_ADMIN_PORT/metrics" | awk '/^holdfast_tls_handshake_failures_total/ {
    sub(/.*reason="/, "", $1); sub(/".*/, "", $1); printf "%s%s=%s", s, $1, $NF; s = "," }')"
LOG_LINES="Holdfast $(grep -c . "$TMP/holdfast.log" || true), nginx $(grep -c . "$TMP/nginx-error.log" || true)"

# The proxies are done: stop them so the hold below runs on a quiet machine.
kill "$HOLDFAST_PID" "$NGINX_PID" 2>/dev/null || true
wait "$HOLDFAST_PID" "$NGINX_PID" 2>/dev/null || true

# ---- held polls as HTTP/2 streams ----------------------------------------------------------------
cat >"$TMP/poll.yaml" <<EOF
listen:
  - address: 127.0.0.1:$POLL_TLS_PORT
    tls:
      certificates:
        - { cert: $TMP/server.pem, key: $TMP/server.key }
  - { address: 127.0.0.1:$POLL_H2C_PORT, h2c: true }
admin: 127.0.0.1:$POLL_ADMIN_PORT
server: { threads: 1, shutdown_grace: 1s, watch_interval: 0s, max_concurrent_streams: $((N / H2_CONNS)) }
channels: { max_held: $((N + 1000)) }
routes:
  - name: poll
    match: { path: /poll, methods: [GET] }
    longpoll: { channel: updates, timeout: 120s }
  - name: push
    match: { path: /push, methods: [POST] }
    publish: { channel: updates }
EOF
"$HOLDFAST_BIN" check "$TMP/poll.yaml" >/dev/null
poll_metric() { # name outcome-or-empty -> value
    curl -s "http://127.0.0.1:$POLL_ADMIN_PORT/metrics" |
        awk -v m="$1" -v o="${2:-}" 'index($1, m "{") == 1 && (o == "" || index($1, "outcome=\"" o "\"")) { n += $NF } END { print n + 0 }'
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

declare -A HOLD
for mode in $HOLD_MODES; do
    RUST_LOG="${RUST_LOG:-warn}" "$HOLDFAST_BIN" run -c "$TMP/poll.yaml" 2>"$TMP/poll-$mode.log" &
    pid=$!
    PIDS+=($pid)
    wait_url "http://127.0.0.1:$POLL_ADMIN_PORT/healthz"
    wait_url "https://127.0.0.1:$POLL_TLS_PORT/"
    sleep 1
    case $mode in
        h2) cmd=(h2load -t1 -c "$H2_CONNS" -m $((N / H2_CONNS)) -n "$N" "https://localhost:$POLL_TLS_PORT/poll") ;;
        h2c) cmd=(h2load -t1 -c "$H2_CONNS" -m $((N / H2_CONNS)) -n "$N" "http://localhost:$POLL_H2C_PORT/poll") ;;
        http1-tls) cmd=(h2load --h1 -t1 -c "$N" -m 1 -n "$N" "https://localhost:$POLL_TLS_PORT/poll") ;;
        http1) cmd=(h2load --h1 -t1 -c "$N" -m 1 -n "$N" "http://localhost:$POLL_H2C_PORT/poll") ;;
        *) echo "unknown hold mode $mode (h2, h2c, http1-tls, http1)" >&2; exit 1 ;;
    esac
    before="$(rss_kib "$pid")"
    started=$(date +%s.%N)
    "${cmd[@]}" >"$TMP/h2load-$mode.out" 2>&1 &
    loader=$!
    PIDS+=($loader)
    held=0
    for _ in $(seq 1 600); do
        held="$(poll_metric holdfast_longpoll_held)"
        [ "$held" -ge "$N" ] && break
        kill -0 "$loader" 2>/dev/null || break
        sleep 0.1
    done
    reached="$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')"
    sleep "$SETTLE"
    held="$(poll_metric holdfast_longpoll_held)"
    after="$(rss_kib "$pid")"
    published=$(date +%s.%N)
    curl -sk -o /dev/null -X POST -H 'content-type: application/json' -d '{"news":"hello"}' \
        "https://127.0.0.1:$POLL_TLS_PORT/push"
    for _ in $(seq 1 300); do kill -0 "$loader" 2>/dev/null || break; sleep 0.1; done
    answered="$(awk -v s="$published" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }')"
    kill "$loader" 2>/dev/null || true
    wait "$loader" 2>/dev/null || true
    out="$(cat "$TMP/h2load-$mode.out")"
    ok2xx="$(awk '/^status codes:/ { print $3 }' <<<"$out")"
    reqline="$(grep '^requests:' <<<"$out" || echo 'requests: (h2load gave no summary)')"
    data="$(poll_metric holdfast_longpoll_completions_total data)"
    conns="$(curl -s "http://127.0.0.1:$POLL_ADMIN_PORT/metrics" | awk '/^holdfast_connections_total/ { sub(/.*protocol="/, "", $1); sub(/".*/, "", $1); printf "%s%s=%s", s, $1, $NF; s = "," }')"
    failures="$(poll_metric holdfast_tls_handshake_failures_total)"
    warnings="$(grep -ci 'warn\|error' "$TMP/poll-$mode.log" || true)"
    kib="$(awk -v a="$after" -v b="$before" -v n="$held" 'BEGIN { if (n > 0) printf "%.2f", (a - b) / n; else print "-" }')"
    echo
    echo "## hold $mode: ${cmd[*]}"
    echo "held $held of $N after ${reached}s (+${SETTLE}s settle); VmRSS $before -> $after KiB = $kib KiB per held poll"
    echo "one publish -> h2load done in ${answered}s; $reqline"
    grep -E '^status codes:|^traffic:' <<<"$out" || true
    echo "answered with data (holdfast_longpoll_completions_total{outcome=\"data\"}): $data; connections: ${conns:-none}; TLS handshake failures: $failures; warn/error lines in Holdfast's log: $warnings"
    [ "$warnings" -gt 0 ] && head -5 "$TMP/poll-$mode.log"
    HOLD[$mode]="$held $kib ${ok2xx:-0} $data $answered $before $after"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    sleep 1
done

# ---- summary -----------------------------------------------------------------------------------
echo
# ROUNDS=0 measures the holds only.
if [ "$ROUNDS" -gt 0 ]; then
    echo "# summary (mean of $ROUNDS rounds; ratio = Holdfast ÷ nginx)"
    printf '%-22s %9s %9s %6s %16s %18s %14s\n' "" Holdfast nginx ratio "p99 ms H / n" "CPU us/req H / n" "wrk cores H/n"
    for mode in keepalive resumed full; do
        case $mode in
            keepalive) label="TLS keep-alive req/s" ;;
            resumed) label="resumed handshakes/s" ;;
            full) label="full handshakes/s" ;;
        esac
        h="$(mean "$mode.holdfast.rps")" n="$(mean "$mode.nginx.rps")"
        printf '%-22s %9s %9s %6s %16s %18s %14s\n' "$label" "$h" "$n" \
            "$(awk -v a="${SUM[$mode.holdfast.rps]}" -v b="${SUM[$mode.nginx.rps]}" 'BEGIN { printf "%.2f", a / b }')" \
            "$(mean "$mode.holdfast.p99" %.2f) / $(mean "$mode.nginx.p99" %.2f)" \
            "$(mean "$mode.holdfast.cpu" %.1f) / $(mean "$mode.nginx.cpu" %.1f)" \
            "$(mean "$mode.holdfast.cores" %.2f) / $(mean "$mode.nginx.cores" %.2f)"
    done
    echo "errors (all rounds, H / nginx): keep-alive ${SUM[keepalive.holdfast.errors]} / ${SUM[keepalive.nginx.errors]}," \
        "resumed ${SUM[resumed.holdfast.errors]} / ${SUM[resumed.nginx.errors]}, full ${SUM[full.holdfast.errors]} / ${SUM[full.nginx.errors]};" \
        "connections per request: resumed $(mean resumed.holdfast.cpr %.3f) / $(mean resumed.nginx.cpr %.3f)," \
        "full $(mean full.holdfast.cpr %.3f) / $(mean full.nginx.cpr %.3f)"
    echo "Holdfast's failed handshakes (all runs, by reason): ${TLS_ERRORS:-none}; log lines (warn and above): $LOG_LINES"
fi
echo
printf '%-10s %7s %10s %12s %12s %16s\n' hold held "KiB/held" "2xx (h2load)" "data answers" "publish->done s"
for mode in $HOLD_MODES; do
    read -r held kib ok data answered _ _ <<<"${HOLD[$mode]}"
    printf '%-10s %7s %10s %12s %12s %16s\n' "$mode" "$held" "$kib" "$ok" "$data" "$answered"
done
echo "(bench/longpoll.sh's figure, HTTP/1.1 in clear with its own client: 41 KiB per held poll — bench/RESULTS.md §2)"
