#!/usr/bin/env bash
# ARCHITECTURE.md's invariant "no crate has an import cycle between its
# source files": scripts/import-cycles reads every crate's use paths and
# fails on a strongly connected component.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/apt.sh
. scripts/lib/apt.sh
apt_install python3
/usr/bin/python3 scripts/import-cycles
