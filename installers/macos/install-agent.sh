#!/bin/sh
# Installs (or removes) the per-user LaunchAgent that keeps `clipmesh run`
# running in the logged-in session. Run it on the Mac, as the user, after
# copying clipmesh.app to /Applications and logging in once:
#
#   /Applications/clipmesh.app/Contents/MacOS/clipmesh login --server https://RELAY --username NAME
#   /Applications/clipmesh.app/Contents/Resources/install-agent.sh
#
#   install-agent.sh [--app PATH] [--no-load]   install (and load) the agent
#   install-agent.sh --uninstall                unload and remove it
#
# --app names the installed clipmesh.app (default: the app this script is
# in). --no-load only writes ~/Library/LaunchAgents/org.clipmesh.clipmesh.plist
# (the bundle test on Linux uses it; there is no launchctl there).
# Logs go to ~/Library/Logs/clipmesh/clipmesh.log.
set -eu

label=org.clipmesh.clipmesh
here=$(cd "$(dirname "$0")" && pwd)
app=$(cd "$here/../.." && pwd)
load=1
action=install
while [ $# -gt 0 ]; do
    case "$1" in
        --app) app=${2:?--app needs a path}; shift 2 ;;
        --no-load) load=0; shift ;;
        --uninstall) action=uninstall; shift ;;
        *) echo "install-agent.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

agents="$HOME/Library/LaunchAgents"
plist="$agents/$label.plist"
domain="gui/$(id -u)"

if [ "$action" = uninstall ]; then
    launchctl bootout "$domain/$label" 2>/dev/null || true
    rm -f "$plist"
    echo "removed $plist (config, keychain item and logs are left; see docs/macos.md)"
    exit 0
fi

program="$app/Contents/MacOS/clipmesh"
template="$app/Contents/Resources/$label.plist.in"
[ -f "$template" ] || template="$here/$label.plist.in"
if [ ! -x "$program" ]; then
    echo "install-agent.sh: no clipmesh binary at $program (use --app)" >&2
    exit 1
fi
logs="$HOME/Library/Logs/clipmesh"
mkdir -p "$agents" "$logs"

# Values go into XML text and a sed replacement: escape &, <, > and the
# sed delimiter.
xml() { printf '%s' "$1" | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e 's/[|&\\]/\\&/g'; }
sed -e "s|@PROGRAM@|$(xml "$program")|g" -e "s|@LOG_DIR@|$(xml "$logs")|g" "$template" >"$plist.tmp"
mv "$plist.tmp" "$plist"
chmod 0644 "$plist"
echo "wrote $plist"

if [ "$load" -eq 1 ]; then
    # Replace a loaded older copy, then load and start it.
    launchctl bootout "$domain/$label" 2>/dev/null || true
    launchctl bootstrap "$domain" "$plist"
    echo "loaded $label; logs in $logs"
fi
