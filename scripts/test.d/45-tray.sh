#!/usr/bin/env bash
# The desktop app (issue: tray, login window, notifications, autostart):
# clipmesh-tray's display tests, which `cargo test --workspace` leaves out
# (tray/Cargo.toml: `test = false` on the desktop test target).
#
# On Xvfb, against a relay on 127.0.0.1: the tray icon appears in trayer's
# XEmbed tray and follows the connection, a second start says it runs, the
# login window is typed into with xdotool (a wrong password shows the error,
# the right one logs in), and start at login writes and removes the XDG
# autostart entry. On headless sway with a private session bus: waybar (a
# StatusNotifier host) shows the tray's item, pause and resume are clicked in
# its menu over dbusmenu, and dunst receives the debounced connection lost /
# restored notifications. The screenshots are kept in target/tray-screenshots/.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/apt.sh
. scripts/lib/apt.sh

# trayer: an XEmbed tray; xdotool: types into the login window; Mesa's
# software OpenGL for the egui window; libayatana-appindicator is opened at
# run time by tray-icon (the StatusNotifier path; without a session bus the
# XEmbed fallback is used).
# waybar, sway and grim: the StatusNotifier host, its compositor and
# screenshots; dunst: a notification server; dbus and gdbus: the private
# session bus and the dbusmenu clicks.
apt_install xvfb trayer xdotool libgl1-mesa-dri libegl1 libgl1 libxkbcommon-x11-0 \
    libayatana-appindicator3-1 pkg-config libgtk-3-dev \
    sway waybar grim dunst dbus libglib2.0-bin

# Every cargo call here selects --workspace, like the base steps: a -p
# selection unifies dependency features differently and rebuilds most of the
# dependency graph (seen with `cargo --unit-graph`: libc, serde, tracing).
cargo build --locked --workspace --bins
cargo clippy --locked --workspace --test desktop -- -D warnings
cargo test --locked --workspace --test desktop -- --test-threads 1

target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
keep=$target_dir/tray-screenshots
mkdir -p "$keep"
cp "$target_dir"/tmp/desktop-test/*.png "$keep/"
ls -l "$keep"
