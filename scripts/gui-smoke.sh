#!/usr/bin/env bash
# Real-window smoke test of the desktop app (issue #5): starts `icseg` under Xvfb with
# Mesa's software Vulkan (lavapipe), runs the scripted demo (ICSEG_DEMO: open the bundled
# sample, paint, propagate with whatever weights are installed, accept, explain), takes
# the app's own screenshots plus an X root-window screenshot, and checks that the slice
# view really shows the image. A broken renderer, a crash or a hang fails the script.
#
#   scripts/gui-smoke.sh [path/to/icseg] [output folder]
#
# Needs: xvfb (xvfb-run), mesa-vulkan-drivers, imagemagick (import, convert).
set -euo pipefail

bin=${1:-target/release/icseg}
out=${2:-target/gui-smoke}
rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)

export ICSEG_DEMO="$out" ICSEG_RECOVERY_DIR="$out/recovery"
# Software rendering is slow: allow the scripted session up to 10 minutes.
timeout 600 xvfb-run -a -s "-screen 0 1400x900x24" bash -c '
    "$0" > "$1/app.log" 2>&1 &
    app=$!
    for _ in $(seq 1 600); do
        [ -f "$1/annotate.png" ] && break
        kill -0 "$app" 2>/dev/null || break
        sleep 1
    done
    import -window root "$1/root.png" || true
    wait "$app"
' "$bin" "$out"

grep -v XDG_RUNTIME_DIR "$out/app.log" || true
for shot in annotate propagated explain root; do
    [ -s "$out/$shot.png" ] || { echo "missing screenshot $shot.png" >&2; exit 1; }
done
# The central view must show an image (a black or uniform view means the renderer failed).
spread=$(convert "$out/annotate.png" -crop 500x500+550+200 -colorspace Gray -format "%[fx:standard_deviation]" info:)
echo "grey-level spread in the axial view: $spread"
awk -v s="$spread" 'BEGIN { exit !(s > 0.05) }' || { echo "the slice view looks empty" >&2; exit 1; }
echo "gui smoke test passed; screenshots in $out"
