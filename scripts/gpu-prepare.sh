#!/usr/bin/env bash
# Prepares what a short GPU window needs, on this machine, into .gpu/ (ignored by git):
# the icseg binary (stripped and xz-compressed), and a training subset small enough to
# travel with the working tree (the device tool carries at most 64 MiB in all).
#
#   scripts/gpu-prepare.sh [DATA_ROOT] [TRAIN_CASES] [BINARY] [SYNTHSEG_MAPS] [VAL_CASES]
#
# DATA_ROOT defaults to $ICSEG_DATA or ../shared/data; the first TRAIN_CASES (default 32)
# OpenKBP training patients, SYNTHSEG_MAPS (default 4) brain label maps and VAL_CASES
# (default 4) validation patients are copied. BINARY defaults to a fresh
# `cargo build --release --no-default-features` (the GUI is not needed there); any
# build of the icseg binary for x86-64 Linux will do.
# Then run, on the device: `scripts/gpu-train.sh .gpu/icseg .gpu/data $OUT 7 gpu`
# with `carry: [".gpu"]` (see docs/training.md).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-${ICSEG_DATA:-../shared/data}}"
cases="${2:-32}"
bin="${3:-}"
maps="${4:-4}"
val="${5:-4}"
if [ -z "$bin" ]; then
  cargo build --release --no-default-features --bin icseg
  bin="${CARGO_TARGET_DIR:-target}/release/icseg"
fi
rm -rf .gpu
mkdir -p .gpu/data/openkbp/train .gpu/data/openkbp/validation .gpu/data/synthseg
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
strip -o .gpu/icseg "$bin" 2>/dev/null || cp "$bin" .gpu/icseg
xz -T0 -6 .gpu/icseg
for ct in $(ls "$data/volumes/openkbp/train"/*_ct.nii.gz | sort -V | head -n "$cases"); do
  cp "${ct%_ct.nii.gz}"_* .gpu/data/openkbp/train/
done
for ct in $(ls "$data/volumes/openkbp/validation"/*_ct.nii.gz | sort -V | head -n "$val"); do
  cp "${ct%_ct.nii.gz}"_* .gpu/data/openkbp/validation/
done
for map in $(ls "$data/volumes/synthseg-labelmaps"/*.nii.gz | sort -V | head -n "$maps"); do
  cp "$map" .gpu/data/synthseg/
done
# The TotalSegmentator CT case only: its MR case, like voxelmorph-brain, is kept out of
# training for the MR evaluation (docs/evaluation.md).
mkdir -p .gpu/data/totalseg-ct
cp "$data/volumes/totalseg-examples"/ct_* .gpu/data/totalseg-ct/
du -sh .gpu
