# bench/lib.sh — what the benchmark scripts share; sourced, not run.
#
#   require TOOL… -- PACKAGE…   tools that must be on PATH; as root the packages are installed
#                                with apt-get, otherwise the exact command is printed and we exit
#   ports_free PORT…             exits when one of the loopback ports is taken
#   bench_tmp NAME               makes $TMP, and stops every pid in $PIDS and removes $TMP on exit
#   stop_pids                    stops every pid in $PIDS now (TERM, then waits) and empties it
#   wait_http URL                waits up to 15 s for URL to answer; fails if nothing does
#   holdfast_bin                 prints the Holdfast binary: $HOLDFAST_BIN, else the release build
#                                (built if missing)
#   loadtool_bin                 builds bench/loadtool (release, into $CARGO_TARGET_DIR, else
#                                target/) and prints its binary
#   to_ms VALUE                  wrk's latency ("850.00us", "1.23ms", "1.02s") in milliseconds
#   cpu_ticks PID                utime+stime of a process, in clock ticks ($TICK per second)
#   cpu_us_per_request TICKS N   CPU microseconds per request for TICKS spent on N requests
#   stop_one PID                 stops one process started here (TERM, then waits) and takes it
#                                out of $PIDS
#   wrk_measure TICKS URL CONNS [WRK ARG…]
#                                wrk for $WARMUP s, then for $DURATION s with --latency (threads:
#                                $WRK_THREADS); TICKS is a command printing the CPU ticks of what
#                                is measured. Sets rps, p50, p99 (ms), errors and cpu (µs/request)

ROOT="${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
export PATH="$PATH:/usr/sbin"

require() {
    local tools=() packages=() seen=0 missing=()
    for arg in "$@"; do
        if [ "$arg" = "--" ]; then seen=1; elif [ "$seen" = 0 ]; then tools+=("$arg"); else packages+=("$arg"); fi
    done
    for tool in "${tools[@]}"; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" = 0 ]; then
        echo "installing: ${packages[*]}" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${packages[@]}" >&2
    else
        echo "missing ${missing[*]}; run: sudo apt-get install -y ${packages[*]}" >&2
        exit 1
    fi
}

ports_free() {
    local port
    for port in "$@"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "127.0.0.1:$port is taken; pick other ports with PORT_BASE=…" >&2
            exit 1
        fi
    done
}

PIDS=()
stop_pids() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}

bench_cleanup() {
    stop_pids
    [ -n "${TMP:-}" ] && rm -rf "$TMP"
}

wait_http() {
    local i
    for i in $(seq 1 150); do
        if curl -s -o /dev/null --max-time 1 "$1" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing answers at $1" >&2
    return 1
}

bench_tmp() {
    TMP="$(mktemp -d "/tmp/holdfast-bench-$1.XXXXXX")"
    trap bench_cleanup EXIT INT TERM
}

holdfast_bin() {
    local bin="${HOLDFAST_BIN:-$ROOT/target/release/holdfast}"
    if [ ! -x "$bin" ]; then
        echo "building holdfast (release)…" >&2
        (cd "$ROOT" && cargo build --release -p holdfast >&2)
    fi
    echo "$bin"
}

loadtool_bin() {
    local target="${CARGO_TARGET_DIR:-$ROOT/target}"
    (cd "$ROOT" && cargo build --release --quiet --manifest-path bench/loadtool/Cargo.toml --target-dir "$target" >&2)
    echo "$target/release/loadtool"
}

to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
        else { sub(/s$/, "", v); printf "%.3f", v * 1000 } }'
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK="$(getconf CLK_TCK)"

cpu_us_per_request() {
    awk -v t="$1" -v hz="$TICK" -v n="$2" 'BEGIN { printf "%.1f", (n > 0 ? t / hz * 1e6 / n : 0) }'
}

stop_one() {
    local pid kept=()
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    for pid in "${PIDS[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
    PIDS=("${kept[@]}")
}

wrk_measure() {
    local ticks="$1" url="$2" conns="$3" before after out requests
    shift 3
    wrk -t"$WRK_THREADS" -c"$conns" -d"${WARMUP}s" "$@" "$url" >/dev/null 2>&1 || true
    before="$($ticks)"
    out="$(wrk -t"$WRK_THREADS" -c"$conns" -d"${DURATION}s" --latency "$@" "$url" 2>&1)"
    after="$($ticks)"
    requests="$(awk '/requests in/ { print $1 }' <<<"$out")"
    cpu="$(cpu_us_per_request $((after - before)) "$requests")"
    rps="$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")"
    p50="$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")"
    p99="$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")"
    errors="$(awk '/Non-2xx/ { n += $NF } /Socket errors/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' <<<"$out")"
}
