#!/usr/bin/env bash
# Windows (docs/windows.md), after its build (55-windows.build.sh: clippy for
# both Windows targets, the release exes and the MSI): under Wine 8 on Xvfb
# the end-to-end test
# against a Linux daemon, the tray test (it connects, its icon docks in
# trayer, a second start says it runs, its menu opened by a right click on
# the icon pauses and quits) and the MSI install / --version / upgrade / uninstall test. Each Wine test makes its own fresh WINEPREFIX in
# its temp dir and ends it with `wineserver -k` on that prefix.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/apt.sh
. scripts/lib/apt.sh
apt_install wine wine64 xvfb xclip trayer

echo "--> under Wine: Windows <-> Linux end to end, and the MSI"
# The relay and the Linux client come from the base steps' `cargo build`;
# build and test with the same package selection (--workspace) so Cargo's
# feature unification matches and nothing is compiled a second time.
cargo build --workspace --bins --locked
cargo test --workspace --locked --test e2e windows_ -- --test-threads 1
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
mkdir -p "$target_dir/tray-screenshots"
cp "$target_dir"/tmp/desktop-test/windows-*.png "$target_dir/tray-screenshots/"
