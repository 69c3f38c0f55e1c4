#!/usr/bin/env bash
# Windows (docs/windows.md): clippy with warnings denied for the client on
# x86_64-pc-windows-gnu (Debian's Rust with -Zbuild-std, scripts/cross).
#
# Not run here yet (docs/windows.md, "What is tested"): the release exe and
# MSI (scripts/build-windows), clippy for aarch64-pc-windows-gnullvm, and the
# Wine tests `cargo test -p clipmesh-tests --test e2e windows_`.
set -euo pipefail
cd "$(dirname "$0")/../.."

echo "--> clippy x86_64-pc-windows-gnu"
scripts/cross x86_64-pc-windows-gnu clippy --locked -p clipmesh --all-targets -- -D warnings
