#!/usr/bin/env bash
# Packaging checks (issue: desktop app and packages):
#
# the .deb and .rpm packages of the client and the relay, built from the
# debug binaries the base steps already built, then checked
# (installers/linux/check-packages).
#
# Not here yet: installers/container/check-static (the relay container's
# static binary). Debian's rustc has no self-contained musl start files or
# libunwind, so the final link of the static relay fails (see
# docs/packaging.md); it joins this step once that link is fixed.
set -euo pipefail
cd "$(dirname "$0")/../.."

installers/linux/build-packages --profile dev
installers/linux/check-packages
