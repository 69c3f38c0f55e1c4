#!/usr/bin/env bash
# Hostile-network checks (issue 15) that need tools outside cargo test:
#
# 1. The client refuses plain http:// to a non-loopback relay before it opens
#    any socket. It runs under strace with every connect() failed by strace
#    itself (and in an empty network namespace when one can be made), so even
#    a regression sends nothing anywhere; the trace must show no IP socket.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/apt.sh
. scripts/lib/apt.sh
apt_install strace

# Every cargo call here selects --workspace, like the base steps: a -p
# selection unifies dependency features differently and rebuilds most of the
# dependency graph (seen with `cargo --unit-graph`: libc, serde, tracing).
cargo build -q --workspace --bins --locked
client=target/debug/clipmesh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# An empty network namespace (only a down loopback) when we may make one.
netns=()
if unshare -n true 2>/dev/null; then
    netns=(unshare -n)
elif unshare -rn true 2>/dev/null; then
    netns=(unshare -rn)
fi

echo "-- plain http:// to another host is refused before any socket opens"
for verb in signup login login-clipcascade; do
    args=("$verb")
    [ "$verb" = login-clipcascade ] && args=(login --profile clipcascade)
    set +e
    out=$(printf 'pw\n' | "${netns[@]}" strace -f -qq -o "$work/trace" \
        -e trace=socket,connect -e inject=connect:error=ENETUNREACH \
        "$client" --config-dir "$work/cfg-$verb" "${args[@]}" \
        --server http://192.0.2.1:8787 --username ann --password-stdin 2>&1)
    status=$?
    set -e
    if [ "$status" -eq 0 ]; then
        echo "FAIL: $verb to http://192.0.2.1 succeeded" >&2; exit 1
    fi
    case $out in
        *"refusing plain http:// to 192.0.2.1"*"--insecure-http"*) ;;
        *) echo "FAIL: $verb did not say why: $out" >&2; exit 1 ;;
    esac
    if grep -E 'socket\(AF_INET6?|connect\(' "$work/trace"; then
        echo "FAIL: $verb opened an IP socket before refusing" >&2; exit 1
    fi
    echo "ok: $verb refused, no IP socket (${#netns[@]} ns args)"
done
