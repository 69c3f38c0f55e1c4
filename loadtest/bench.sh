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
# Cloudflare Workers kinds (docs/benchmarks.md, "relay on Workers"): "worker"
# is the clipmesh Worker (build it first with scripts/worker-dev
# --build-only; WORKER_BUNDLE names another build's bundle directory, for
# comparing two builds; give each its own WORK, since a newer build's
# stored state need not read in an older one), "reference" the plain Durable Object relay of
# loadtest/reference/ and "floor" that reference plus the work a clipmesh
# room must do (do-relay-floor.mjs), all on the same local workerd (miniflare from
# worker/package-lock.json); memory and CPU are read from the workerd
# process. They need PRIO=nice: workerd's threads wait on each other
# busily, and under SCHED_FIFO on one CPU they livelock (seen: workerd at
# 93 % CPU answering nothing). FANOUT_USERS and FANOUT_RATE (default 1000
# and 10000) size the fanout run.
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
case " ${KINDS:-} " in
*" worker "* | *" reference "* | *" floor "*)
    case "$prio_cmd" in
    chrt*) echo "bench.sh: the worker, reference and floor kinds need PRIO=nice (workerd livelocks under SCHED_FIFO on one CPU)" >&2; exit 2 ;;
    esac ;;
esac
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

# The Worker with the benchmark's settings: open signup, cheap auth
# hashing (the same reason as above: account setup is not what is
# measured; production keeps the defaults) and no publish limit.
worker_vars=(--var SIGNUP=open --var HASH_M_KIB=8 --var HASH_T=1
    --var PUBLISH_PER_S=1000000 --var PUBLISH_BURST=1000000
    --var SIGNUP_FREE_PER_IP=1000000000)

pid=
server_pid=
stop_server() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        if ! timeout 30 tail --pid="$pid" -f /dev/null; then
            # A server that does not stop within 30 s is hung; do not leave
            # it running on the shared data directory.
            echo "server $pid did not exit within 30 s of SIGTERM; killing it" >&2
            kill -9 "$pid" 2>/dev/null || true
            # A Workers kind's workerd is a child of the node that was killed.
            if [ -n "$server_pid" ] && [ "$server_pid" != "$pid" ]; then
                kill -9 "$server_pid" 2>/dev/null || true
            fi
        fi
        pid=
        server_pid=
    fi
}
trap stop_server EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server relay|clipcascade|baseline|worker|reference|floor: starts it
# pinned, sets $pid, $server_pid (the process to measure: workerd for the
# Workers kinds), $url, $proto (the load tool's --server) and $sessions
# (clipcascade is the relay too).
start_server() {
    local out=$work/server.out
    : > "$out"
    proto=$1
    sessions=$work/sessions.json
    if [ "$1" = worker ] || [ "$1" = reference ] || [ "$1" = floor ]; then
        local port
        port=$(free_port)
        export WRANGLER_SEND_METRICS=false NO_UPDATE_NOTIFIER=1 MINIFLARE_TELEMETRY_DISABLED=1
        # node (miniflare) only starts workerd, and it polls while doing
        # so; both start pinned at normal priority, and workerd's threads
        # get the benchmark's nice level once it listens.
        local pin_node=
        [ "$server_cpu" = none ] || pin_node="taskset -c $server_cpu"
        if [ "$1" = worker ]; then
            proto=relay
            # Persistent state across runs, so the accounts are made once.
            sessions=$work/sessions-worker.json
            $pin_node node "$root/worker/dev/serve.mjs" --build "${WORKER_BUNDLE:-$root/target/worker/bundle}" \
                --port "$port" --state "$work/worker-state" "${worker_vars[@]}" \
                > "$out" 2> "$work/worker.err" &
        else
            proto=baseline
            local floor=()
            [ "$1" = floor ] && floor=(--floor --state "$work/floor-state")
            $pin_node node "$root/loadtest/reference/serve.mjs" --port "$port" "${floor[@]}" \
                > "$out" 2> "$work/$1.err" &
        fi
        pid=$!
        for _ in $(seq 600); do
            if grep -q "listening on" "$out"; then
                url=http://127.0.0.1:$port
                server_pid=$(ps -o pid= --ppid "$pid" | head -1 | tr -d ' ')
                if [ -n "$server_pid" ]; then
                    case "$prio_cmd" in
                    nice*) for t in /proc/"$server_pid"/task/*; do renice -n -10 -p "${t##*/}" >/dev/null; done ;;
                    esac
                    return 0
                fi
            fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        echo "$1 did not start" >&2
        return 1
    fi
    if [ "$1" = relay ] || [ "$1" = clipcascade ]; then
        $pin_server "$relay" --config "$work/bench.toml" \
            --listen 127.0.0.1:0 --data-dir "$work/data" > "$out" 2> "$work/relay.err" &
    else
        $pin_server "$load" baseline-server --listen 127.0.0.1:0 \
            --lifetime-s 1800 > "$out" 2> "$work/baseline.err" &
    fi
    pid=$!
    server_pid=$pid
    for _ in $(seq 100); do
        url=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$out" | head -1 || true)
        # A fresh relay's first account needs its setup token, which may
        # be written just after the address is printed.
        if [ -n "$url" ] && [ "$1" != baseline ] && [ ! -s "$work/sessions.json" ] \
            && [ ! -s "$work/data/setup-token" ]; then
            url=
        fi
        if [ -n "$url" ]; then
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
    $pin_tool "$load" "$@" --sessions "$sessions" 2>> "$work/tool.err" \
        | tee -a "$work/tool.out" | grep RESULT
}

echo "# $(date -u +%FT%TZ) nproc=$(nproc) $(lscpu | sed -n 's/^Model name: *//p')"
if [ "$server_cpu" = none ]; then placement="unpinned"; else placement="server cpu $server_cpu, tool cpu $tool_cpu"; fi
echo "# $placement, priority ${nice_cmd:-default}, work $work"

if [ "$what" = idle ] || [ "$what" = all ]; then
    for kind in ${KINDS:-relay baseline}; do
        for r in $(seq "$runs"); do
            start_server "$kind"
            echo "# idle $kind run $r"
            tool idle --server "$proto" --target "$url" --conns "$conns" --hold-s "${HOLD_S:-10}" \
                --server-pid "$server_pid" || echo "idle $kind run $r failed (see $work/tool.err)"
            stop_server
        done
    done
fi

if [ "$what" = fanout ] || [ "$what" = all ]; then
    for kind in ${KINDS:-relay baseline}; do
        [ "$kind" = clipcascade ] && continue
        start_server "$kind"
        echo "# fanout $kind"
        tool fanout --server "$proto" --target "$url" --server-pid "$server_pid" --users "${FANOUT_USERS:-1000}" --devices 3 \
            --rate "${FANOUT_RATE:-10000}" --size 1024 --duration 10s --runs "$runs" \
            || echo "fanout $kind failed (see $work/tool.err)"
        stop_server
    done
fi

if [ "$what" = max ] || [ "$what" = all ]; then
    for kind in ${KINDS:-relay baseline}; do
        [ "$kind" = clipcascade ] && continue
        start_server "$kind"
        echo "# max $kind"
        tool max --server "$proto" --target "$url" --server-pid "$server_pid" --users "${MAX_USERS:-100}" --devices 3 \
            --window 16 --size 1024 --duration 10s --runs "$runs" \
            || echo "max $kind failed (see $work/tool.err)"
        stop_server
    done
fi
