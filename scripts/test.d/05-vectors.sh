#!/usr/bin/env bash
# Checks every committed crypto test vector (proto/tests/vectors/*.json)
# against an independent Python implementation (scripts/vectors.py:
# argon2-cffi's reference Argon2, libsodium through PyNaCl, RFC 5869 HKDF
# written out). Debian's python3-argon2 and python3-nacl, run with Debian's
# own python3 so another python3 earlier in PATH does not hide them.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/apt.sh
. scripts/lib/apt.sh
apt_install python3 python3-argon2 python3-nacl
/usr/bin/python3 scripts/vectors.py --check
