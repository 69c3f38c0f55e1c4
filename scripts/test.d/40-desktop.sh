#!/usr/bin/env bash
# Packaging checks (issue: desktop app and packages):
#
# the .deb and .rpm packages of the client and the relay, built from the
# debug binaries the base steps already built, then checked
# (installers/linux/check-packages); then the relay's OCI image, built with
# buildah (no daemon) from the Containerfile's final stage around a static
# musl relay (debug build, scripts/cross), and checked: its config, a root
# with only the binary, passwd/group and /data, and /healthz served by that
# binary from that root (installers/container/build-image).
set -euo pipefail
cd "$(dirname "$0")/../.."

installers/linux/build-packages --profile dev
installers/linux/check-packages
installers/container/build-image --profile dev
