#!/usr/bin/env bash
# Packaging checks (issue: desktop app and packages):
#
# 1. the .deb and .rpm packages of the client and the relay, built from the
#    debug binaries the base steps already built, then checked
#    (installers/linux/check-packages);
# 2. the relay container's static binary (musl, via scripts/cross):
#    installers/container/check-static.
set -euo pipefail
cd "$(dirname "$0")/../.."

installers/linux/build-packages --profile dev
installers/linux/check-packages
installers/container/check-static --profile dev
