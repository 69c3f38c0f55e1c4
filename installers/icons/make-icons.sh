#!/usr/bin/env bash
# Draws clipmesh's icons with ImageMagick (no SVG renderer needed) and writes
# them where the packages and the tray take them from:
#
#   installers/icons/hicolor/NxN/apps/clipmesh.png   application icon, hicolor sizes
#   trayshell/icons/STATE.png                        tray icons, one per state (64x64)
#
# The PNGs are committed; run this only to change the drawing. Needs
# `imagemagick` (convert). Output is reproducible: dates and text chunks are
# stripped.
set -euo pipefail
cd "$(dirname "$0")/../.."

# The glyph, drawn at 256x256: a rounded tile with two overlapping sheets
# (two clipboards, the front one with lines of text).
glyph() { # $1 tile colour, $2 back sheet colour: sets G
    G=(-fill "$1" -draw "roundrectangle 8,8 247,247 48,48"
        -fill "$2" -draw "roundrectangle 48,40 156,176 16,16"
        -fill white -draw "roundrectangle 100,80 208,216 16,16"
        -fill "$1" -draw "roundrectangle 122,118 186,132 6,6"
        -fill "$1" -draw "roundrectangle 122,146 186,160 6,6"
        -fill "$1" -draw "roundrectangle 122,174 166,188 6,6")
}
# A badge in the lower right corner: a white-ringed disc. $1 colour: sets B
badge() {
    B=(-fill white -draw "circle 196,196 196,136" -fill "$1" -draw "circle 196,196 196,146")
}

clean=(-strip -define png:exclude-chunks=date,time,tEXt,zTXt,iTXt)

draw() { # $1 out (256 px master), $2 tile, $3 back sheet, then extra draw args
    local out=$1
    glyph "$2" "$3"
    shift 3
    convert -size 256x256 xc:none "${G[@]}" "$@" "${clean[@]}" "png32:$out"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

teal='#1f7a8c'
light='#bfe3ea'
grey='#7a7a7a'
pale='#d0d0d0'
draw "$tmp/app.png" "$teal" "$light"
for n in 16 22 24 32 48 64 128 256; do
    d=installers/icons/hicolor/${n}x${n}/apps
    mkdir -p "$d"
    convert "$tmp/app.png" -resize "${n}x${n}" "${clean[@]}" "png32:$d/clipmesh.png"
done

mkdir -p trayshell/icons
badge '#2e9d4c'
draw "$tmp/connected.png" "$teal" "$light" "${B[@]}"
badge '#e0a106'
draw "$tmp/connecting.png" "$teal" "$light" "${B[@]}" \
    -fill white -draw "circle 174,196 174,187" -draw "circle 196,196 196,187" -draw "circle 218,196 218,187"
badge "$grey"
draw "$tmp/offline.png" "$grey" "$pale" "${B[@]}" \
    -stroke white -strokewidth 12 -draw "line 176,176 216,216" -draw "line 216,176 176,216"
badge '#4a4a4a'
draw "$tmp/paused.png" "$grey" "$pale" "${B[@]}" \
    -fill white -draw "rectangle 178,172 190,220" -draw "rectangle 202,172 214,220"
badge '#2a6fdb'
draw "$tmp/direct.png" "$teal" "$light" "${B[@]}" \
    -stroke white -strokewidth 8 -draw "line 176,196 216,196" \
    -stroke none -fill white -draw "polygon 228,196 208,180 208,212" -draw "polygon 164,196 184,180 184,212"
badge '#d33a2c'
draw "$tmp/error.png" "$teal" "$light" "${B[@]}" \
    -fill white -draw "roundrectangle 189,160 203,204 5,5" -draw "circle 196,220 196,211"
for s in connected connecting offline paused direct error; do
    convert "$tmp/$s.png" -resize 64x64 "${clean[@]}" "png32:trayshell/icons/$s.png"
done
echo "icons written"
