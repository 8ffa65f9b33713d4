#!/usr/bin/env bash
# Real-window PACS round trip (issue 11): starts `icseg` under Xvfb with the scripted
# ICSEG_PACS_DEMO session against the test PACS of $ICSEG_PACS_URL / $ICSEG_PACS_USER /
# $ICSEG_PACS_PASSWORD (scripts/orthanc.sh start): File → Open from PACS, search, open the
# largest series, paint, Send SEG to PACS. Saves pacs-search.png and pacs-sent.png, prints
# the time from "Open" to the first slice on screen, and checks that the app's output
# holds neither the password nor the user name.
#
#   scripts/pacs-smoke.sh [path/to/icseg] [output folder]
set -euo pipefail

bin=${1:-target/release/icseg}
out=${2:-target/pacs-smoke}
: "${ICSEG_PACS_URL:?start the test PACS first: scripts/orthanc.sh start, then source its env file}"
rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)

export ICSEG_PACS_DEMO="$out" ICSEG_RECOVERY_DIR="$out/recovery" ICSEG_NO_NETWORK=1 \
       ICSEG_PACS_CACHE="$out/cache" ICSEG_SETTINGS="$out/settings.json" RUST_LOG=debug
timeout 300 xvfb-run -a -s "-screen 0 1400x900x24" "$bin" > "$out/app.log" 2>&1 || {
    cat "$out/app.log" >&2; echo "the PACS round trip in the window failed" >&2; exit 1; }
grep -v XDG_RUNTIME_DIR "$out/app.log" || true
for shot in pacs-search pacs-sent; do
    [ -s "$out/$shot.png" ] || { echo "missing screenshot $shot.png" >&2; exit 1; }
done
grep -q "send SEG to PACS: Sent to the PACS: stored 1 instance" "$out/app.log" \
    || { echo "the SEG was not stored" >&2; exit 1; }
for secret in "${ICSEG_PACS_PASSWORD:-}" "${ICSEG_PACS_USER:-}"; do
    if [ -n "$secret" ] && grep -qF -- "$secret" "$out/app.log"; then
        echo "a credential appears in the app's output" >&2; exit 1
    fi
done
echo "PACS smoke test passed; screenshots in $out"
