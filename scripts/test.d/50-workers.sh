#!/usr/bin/env bash
# The relay on Cloudflare Workers: build the Worker for wasm32, lint it, run
# it on a local workerd (scripts/worker-dev, 127.0.0.1 only, fresh state)
# and run the relay conformance suite against it (the same suite runs
# against the native relay in `cargo test`, tests/tests/conformance.rs),
# then the hibernation check (idle keepalives do not wake the room; it is
# evicted and the next message reaches every device), metering, the
# connect-time quota and the admin's per-room status, the cron sweep of
# expired blobs, session lifetimes, blob expiry and the login throttle
# (the last two natively in tests/tests/conformance.rs), and stock daemons
# on Xvfb through the Worker, across a restart of the runtime
# (tests/tests/worker.rs).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

echo "--- Worker: rustfmt"
(cd worker && cargo fmt -- --check)

echo "--- Worker: clippy for wasm32 (warnings denied)"
scripts/worker-dev --build-only
(
    cd worker
    PATH=/usr/bin:$PATH RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$root/target/worker \
        /usr/bin/cargo clippy --release --locked --quiet -- -D warnings
)

echo "--- Worker: conformance suite on a local workerd"
# Every cargo call here selects --workspace, like the base steps: a -p
# selection unifies dependency features differently and rebuilds most of the
# dependency graph (seen with `cargo --unit-graph`: libc, serde, tracing).
cargo build --quiet --workspace --bins --locked
state=$(mktemp -d)
log=$state/worker.log
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The suite fails logins on purpose: the throttle is checked on the third
# Worker instead (as natively, tests/tests/conformance.rs).
# SETUP_TOKEN: the suite's first signups check it (the native relay under
# test has the same one, clipmesh_tests::procs::SETUP_TOKEN).
scripts/worker-dev --port "$port" --state "$state/state" --var SIGNUP=open \
    --var THROTTLE_FREE_FAILURES=1000 --var SIGNUP_FREE_PER_IP=1000000 \
    --var SETUP_TOKEN=clipmesh-test-setup-token-xxxxxxxxxxxxxxxxx >"$log" 2>&1 &
pid=$!
qpid=
tpid=
cleanup() {
    kill "$pid" ${qpid:+"$qpid"} ${tpid:+"$tpid"} 2>/dev/null || true
    wait "$pid" ${qpid:+"$qpid"} ${tpid:+"$tpid"} 2>/dev/null || true
    rm -rf "$state"
}
trap cleanup EXIT
for _ in $(seq 1 240); do
    grep -q "listening on" "$log" && break
    kill -0 "$pid" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.5
done
grep -q "listening on" "$log" || { echo "worker did not start:"; cat "$log"; exit 1; }
target/debug/clipmesh-conformance --url "http://127.0.0.1:$port"

echo "--- Worker: hibernation (30 s idle per phase, keepalive every 5 s)"
target/debug/clipmesh-conformance --url "http://127.0.0.1:$port" --hibernation 30 5

echo "--- Worker: metering, the connect-time quota, the admin's room status and the rate-limiting binding (a second Worker, DAILY_MESSAGE_QUOTA=5, --rate-limit 5); Turnstile on signup (a fourth, started alongside, TURNSTILE_SECRET = Cloudflare's always-pass test secret, siteverify answered by serve.mjs)"
qport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
WRANGLER_SEND_METRICS=false NO_UPDATE_NOTIFIER=1 MINIFLARE_TELEMETRY_DISABLED=1 \
    node worker/dev/serve.mjs --build target/worker/bundle --port "$qport" --state "$state/quota-state" \
    --var SIGNUP=open --var DAILY_MESSAGE_QUOTA=5 --rate-limit 5 >"$state/quota.log" 2>&1 &
qpid=$!
tport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
WRANGLER_SEND_METRICS=false NO_UPDATE_NOTIFIER=1 MINIFLARE_TELEMETRY_DISABLED=1 \
    node worker/dev/serve.mjs --build target/worker/bundle --port "$tport" --state "$state/ts-state" \
    --var SIGNUP=open --var TURNSTILE_SECRET=1x0000000000000000000000000000000AA >"$state/ts.log" 2>&1 &
tpid=$!
for _ in $(seq 1 120); do
    grep -q "listening on" "$state/quota.log" && grep -q "listening on" "$state/ts.log" && break
    kill -0 "$qpid" 2>/dev/null || { cat "$state/quota.log"; exit 1; }
    kill -0 "$tpid" 2>/dev/null || { cat "$state/ts.log"; exit 1; }
    sleep 0.5
done
target/debug/clipmesh-conformance --url "http://127.0.0.1:$qport" --quota 5
target/debug/clipmesh-conformance --url "http://127.0.0.1:$qport" --rate-limit 5
target/debug/clipmesh-conformance --url "http://127.0.0.1:$tport" --turnstile
kill "$qpid" "$tpid"
wait "$qpid" "$tpid" 2>/dev/null || true
qpid=
tpid=

echo "--- Worker: the cron sweep, session lifetimes, blob expiry, the login throttle and the signup budget (a third Worker, SESSION_IDLE_S=2, BLOB_TTL_S=2, THROTTLE_FREE_FAILURES=2, THROTTLE_BASE_S=300, SIGNUP_FREE_PER_IP=6)"
qport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
WRANGLER_SEND_METRICS=false NO_UPDATE_NOTIFIER=1 MINIFLARE_TELEMETRY_DISABLED=1 \
    node worker/dev/serve.mjs --build target/worker/bundle --port "$qport" --state "$state/life-state" \
    --var SIGNUP=open --var SESSION_IDLE_S=2 --var BLOB_TTL_S=2 \
    --var THROTTLE_FREE_FAILURES=2 --var THROTTLE_BASE_S=300 \
    --var SIGNUP_FREE_PER_IP=6 >"$state/life.log" 2>&1 &
qpid=$!
for _ in $(seq 1 120); do
    grep -q "listening on" "$state/life.log" && break
    kill -0 "$qpid" 2>/dev/null || { cat "$state/life.log"; exit 1; }
    sleep 0.5
done
# First (its first account is the admin), and the throttle last (it blocks
# this network).
target/debug/clipmesh-conformance --url "http://127.0.0.1:$qport" --cron-sweep 2
target/debug/clipmesh-conformance --url "http://127.0.0.1:$qport" --lifetimes 2
target/debug/clipmesh-conformance --url "http://127.0.0.1:$qport" --blob-expiry 2
target/debug/clipmesh-conformance --url "http://127.0.0.1:$qport" --throttle 2
# The checks above made 5 signups from here; one of 6 is left.
target/debug/clipmesh-conformance --url "http://127.0.0.1:$qport" --signup-budget 6
kill "$qpid"
wait "$qpid" 2>/dev/null || true
qpid=

echo "--- Worker: two stock daemons on Xvfb through the Worker, and its restart"
CLIPMESH_WORKER_BUNDLE=$root/target/worker/bundle \
    cargo test --quiet --workspace --locked --test worker -- --ignored
