#!/usr/bin/env bash
# Prepares what a short GPU window needs, on this machine, into .gpu/ (ignored by git):
# a stripped headless release binary, the shipped weights and a training subset small
# enough to travel with the working tree (the device tool carries at most 64 MiB).
#
#   scripts/gpu-prepare.sh [DATA_ROOT] [TRAIN_CASES] [BINARY]
#
# DATA_ROOT defaults to $ICSEG_DATA or ../shared/data; TRAIN_CASES (default 60) OpenKBP
# training patients are copied; BINARY defaults to a fresh
# `cargo build --release --no-default-features` (the GUI is not needed there).
# Then run, on the device: `scripts/gpu-train.sh .gpu/icseg .gpu/data $OUT 9 gpu`
# with `carry: [".gpu"]` (see docs/training.md).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-${ICSEG_DATA:-../shared/data}}"
cases="${2:-60}"
bin="${3:-}"
if [ -z "$bin" ]; then
  cargo build --release --no-default-features --bin icseg
  bin="${CARGO_TARGET_DIR:-target}/release/icseg"
fi
rm -rf .gpu
mkdir -p .gpu/data/openkbp/train .gpu/data/openkbp/validation
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
cp "$bin" .gpu/icseg
strip .gpu/icseg 2>/dev/null || true
cp weights/icseg-lite.bpk .gpu/
# The first TRAIN_CASES training patients, and 8 validation patients for model selection.
for ct in $(ls "$data/volumes/openkbp/train"/*_ct.nii.gz | sort -V | head -n "$cases"); do
  cp "${ct%_ct.nii.gz}"_* .gpu/data/openkbp/train/
done
for ct in $(ls "$data/volumes/openkbp/validation"/*_ct.nii.gz | sort -V | head -n 8); do
  cp "${ct%_ct.nii.gz}"_* .gpu/data/openkbp/validation/
done
cp -r "$data/volumes/totalseg-examples" .gpu/data/
du -sh .gpu
