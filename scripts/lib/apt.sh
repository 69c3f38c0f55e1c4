# shellcheck shell=bash
# apt_install PKG...: installs the Debian packages that are missing, with sudo
# when not root. Without apt-get it only says what to install. Calls from
# processes running at the same time (scripts/test runs a step's build ahead)
# take turns on a lock file instead of failing on apt's own lock.
apt_install() {
    if command -v flock >/dev/null 2>&1; then
        (
            flock -w 1800 9 || echo "apt_install: another install held the lock for 30 min; going on" >&2
            apt_install_now "$@"
        ) 9>"${TMPDIR:-/tmp}/clipmesh-apt.lock"
    else
        apt_install_now "$@"
    fi
}

apt_install_now() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "no apt-get here; make sure these are installed: $*" >&2
        return 0
    fi
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "==> installing ${missing[*]}" >&2
    # (9>&-: the lock is not inherited by apt or by anything a package starts.)
    $sudo apt-get update -qq 9>&-
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" 9>&-
}
