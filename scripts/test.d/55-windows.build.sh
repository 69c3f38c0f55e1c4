#!/usr/bin/env bash
# Windows, the build half of step 55 (scripts/test runs it ahead, in the
# background at the lowest CPU priority, from when the base steps' tests are
# compiled; step 55 waits for it): clippy with warnings denied for the client on
# x86_64-pc-windows-gnu and aarch64-pc-windows-gnullvm (Debian's Rust with
# -Zbuild-std, scripts/cross), and the release exes (clipmesh, clipmeshw,
# clipmesh-tray) and MSI (scripts/build-windows). It writes only under
# target/cross/<windows targets>, target/x86_64-pc-windows-gnu and
# target/windows, which no other step uses.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/apt.sh
. scripts/lib/apt.sh
apt_install gcc-mingw-w64-x86-64 wixl

# One clippy call for the client, the meter and the tray: two calls with
# different package selections unify dependency features differently
# (tracing, serde_json, windows-sys) and type-check the graph twice.
echo "--> clippy x86_64-pc-windows-gnu"
scripts/cross x86_64-pc-windows-gnu clippy --locked -p clipmesh -p clipmesh-winmeter \
    -p clipmesh-tray-shell -p clipmesh-tray --all-targets -- -D warnings
echo "--> clippy aarch64-pc-windows-gnullvm (check only)"
scripts/cross aarch64-pc-windows-gnullvm clippy --locked -p clipmesh -- -D warnings
echo "--> release exe and MSI"
scripts/build-windows
