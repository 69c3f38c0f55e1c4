#!/usr/bin/env bash
# macOS: type-check and lint for both Mac architectures, and the bundle test.
#
# No Mac binary can be linked here (no Apple linker or SDK), so CI gates on
# `cargo clippy -D warnings` (which type-checks everything `cargo check`
# does, then lints) for aarch64-apple-darwin and x86_64-apple-darwin. It covers
# the crates that build no C for the target: the whole client cannot be
# checked, because ring's build script (through webrtc/rustls) needs the Apple
# SDK's headers. The macOS pasteboard backend therefore lives in such a crate
# (docs/macos.md), and the tray's event loop lives in clipmesh-tray-shell
# (docs/desktop.md). Then installers/macos/test-bundle builds clipmesh.app and a
# .dmg from a dummy binary and checks the image and the plists.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/apt.sh
. scripts/lib/apt.sh
apt_install genisoimage python3

# The C-free crates CI gates on for macOS (see docs/macos.md).
MAC_CRATES=(-p clipmesh-proto -p clipmesh-room -p clipmesh-clipboard -p clipmesh-tray-shell)

# Both targets in one cargo run: the build scripts and proc macros (host
# code) are built once for the two.
echo "--- clippy (warnings denied) for aarch64-apple-darwin and x86_64-apple-darwin"
scripts/cross aarch64-apple-darwin clippy --target x86_64-apple-darwin --locked "${MAC_CRATES[@]}" -- -D warnings

echo "--- bundle and .dmg from a dummy binary"
installers/macos/test-bundle
