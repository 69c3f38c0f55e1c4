#!/usr/bin/env bash
# Runs the relay benchmarks of docs/benchmarks.md against clipmesh-relay and
# the baseline broadcast server, side by side, and prints RESULT lines.
#
#   cargo build --release -p clipmesh-relay -p clipmesh-loadtest
#   loadtest/bench.sh [idle|fanout|max|all] [RUNS]
#
# Environment: RELAY (relay binary, default target/release), CONNS (idle connections, default 19500), SERVER_CPU and
# TOOL_CPU (taskset CPU lists, default 0 and 1; SERVER_CPU=none runs both
# unpinned), PRIO (rt or nice, default rt), WORK (scratch directory, default
# a fresh mktemp -d), KINDS (servers to run, default "relay baseline";
# "clipcascade" is the relay holding ClipCascade STOMP sessions, idle only),
# HOLD_S (idle hold after the last join, default 10) and EVICT_S (the relay's
# room.evict_idle_s; unset = the relay's default of 60 s). Idle figures with
# rooms in memory: EVICT_S=3600; with rooms evicted: e.g. EVICT_S=2 HOLD_S=10
# (the idle RESULT line reports the relay's rooms_active gauge either way),
# MAX_USERS (users in the max run, default 100).
# Loopback only; every step is bounded.
set -euo pipefail

what=${1:-all}
runs=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release
relay=${RELAY:-$bin/clipmesh-relay}
load=$bin/clipmesh-load
conns=${CONNS:-19500}
server_cpu=${SERVER_CPU:-0}
tool_cpu=${TOOL_CPU:-1}
work=${WORK:-$(mktemp -d)}
# Other work on the machine (compilers) competes for the same cores. Under
# the fair scheduler a woken socket task can wait a full time slice behind a
# compiler, which shows up as milliseconds of "latency". So the server and
# the tool run SCHED_FIFO (PRIO=rt, the default; root only; the kernel's RT
# throttle still leaves 5% to everything else), or PRIO=nice for nice -10.
case ${PRIO:-rt} in
rt) prio_cmd="chrt -f 10" ;;
*) prio_cmd="nice -n -10" ;;
esac
$prio_cmd true 2>/dev/null || prio_cmd=
nice_cmd=$prio_cmd
pin_server="$nice_cmd taskset -c $server_cpu"
pin_tool="$nice_cmd taskset -c $tool_cpu"
if [ "$server_cpu" = none ]; then pin_server="$nice_cmd"; pin_tool="$nice_cmd"; fi
mkdir -p "$work/data"

# Benchmark relay config: open signup, cheap auth hashing (the benchmark
# creates thousands of sessions; hashing cost is not what is measured) and
# no per-device publish limit (one publisher per user drives the load).
cat > "$work/bench.toml" <<'TOML'
signup = "open"
[limits]
publish_per_s = 1000000.0
publish_burst = 1000000.0
[auth]
hash_m_kib = 8
hash_t = 1
hash_p = 1
signup_free_per_ip = 1000000000
TOML
if [ -n "${EVICT_S:-}" ]; then
    printf '[room]\nevict_idle_s = %s\n' "$EVICT_S" >> "$work/bench.toml"
fi

pid=
stop_server() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        if ! timeout 30 tail --pid="$pid" -f /dev/null; then
            # A server that does not stop within 30 s is hung; do not leave
            # it running on the shared data directory.
            echo "server $pid did not exit within 30 s of SIGTERM; killing it" >&2
            kill -9 "$pid" 2>/dev/null || true
        fi
        pid=
    fi
}
trap stop_server EXIT

# start_server relay|clipcascade|baseline: starts it pinned, sets $pid and
# $url (clipcascade is the relay too).
start_server() {
    local out=$work/server.out
    : > "$out"
    if [ "$1" = relay ] || [ "$1" = clipcascade ]; then
        $pin_server "$relay" --config "$work/bench.toml" \
            --listen 127.0.0.1:0 --data-dir "$work/data" > "$out" 2> "$work/relay.err" &
    else
        $pin_server "$load" baseline-server --listen 127.0.0.1:0 \
            --lifetime-s 1800 > "$out" 2> "$work/baseline.err" &
    fi
    pid=$!
    for _ in $(seq 100); do
        url=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$out" | head -1 || true)
        if [ -n "$url" ]; then
            # A fresh relay's first account needs its setup token.
            CLIPMESH_SETUP_TOKEN=$(cat "$work/data/setup-token" 2>/dev/null || true)
            export CLIPMESH_SETUP_TOKEN
            return 0
        fi
        sleep 0.1
    done
    echo "server did not start" >&2
    return 1
}

tool() {
    echo "## $*" >> "$work/tool.err"
    $pin_tool "$load" "$@" --sessions "$work/sessions.json" 2>> "$work/tool.err" \
        | tee -a "$work/tool.out" | grep RESULT
}

echo "# $(date -u +%FT%TZ) nproc=$(nproc) $(lscpu | sed -n 's/^Model name: *//p')"
if [ "$server_cpu" = none ]; then placement="unpinned"; else placement="server cpu $server_cpu, tool cpu $tool_cpu"; fi
echo "# $placement, priority ${nice_cmd:-default}, work $work"

if [ "$what" = idle ] || [ "$what" = all ]; then
    for kind in ${KINDS:-relay baseline}; do
        for r in $(seq "$runs"); do
            start_server "$kind"
            tool idle --server "$kind" --target "$url" --conns "$conns" --hold-s "${HOLD_S:-10}" \
                --server-pid "$pid" || echo "idle $kind run $r failed (see $work/tool.err)"
            stop_server
        done
    done
fi

if [ "$what" = fanout ] || [ "$what" = all ]; then
    for kind in ${KINDS:-relay baseline}; do
        [ "$kind" = clipcascade ] && continue
        start_server "$kind"
        tool fanout --server "$kind" --target "$url" --server-pid "$pid" --users 1000 --devices 3 \
            --rate 10000 --size 1024 --duration 10s --runs "$runs" \
            || echo "fanout $kind failed (see $work/tool.err)"
        stop_server
    done
fi

if [ "$what" = max ] || [ "$what" = all ]; then
    for kind in ${KINDS:-relay baseline}; do
        [ "$kind" = clipcascade ] && continue
        start_server "$kind"
        tool max --server "$kind" --target "$url" --server-pid "$pid" --users "${MAX_USERS:-100}" --devices 3 \
            --window 16 --size 1024 --duration 10s --runs "$runs" \
            || echo "max $kind failed (see $work/tool.err)"
        stop_server
    done
fi
