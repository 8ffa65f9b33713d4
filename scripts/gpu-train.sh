#!/usr/bin/env bash
# Turns a short GPU window into a longer-trained network: on the device machine,
# fine-tunes the shipped lite weights (or resumes the run found in OUT) for at most
# MINUTES and leaves the checkpoints, the training log and the best weights in OUT.
#
#   scripts/gpu-train.sh BINARY DATA OUT [MINUTES] [DEVICE] [EPISODES_PER_STEP]
#
# BINARY and DATA as scripts/gpu-prepare.sh leaves them (.gpu/icseg[.xz], .gpu/data);
# MINUTES defaults to 7; DEVICE to gpu (cpu to try it here); EPISODES_PER_STEP to 4.
# The optimiser state is split into 15 MB parts (the device tool returns files of at
# most 16 MiB): `cat OUT/run/optimizer.bin.part-* > optimizer.bin` before resuming.
# Bring OUT/run back and continue it with `icseg train --resume --out OUT/run`, or ship
# its best.bpk with `icseg ship`.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$1"; data="$2"; out="$3"; minutes="${4:-7}"; device="${5:-gpu}"; eps="${6:-4}"
if [ ! -x "$bin" ] && [ -f "$bin.xz" ]; then
  xz -dc "$bin.xz" > "$bin" 2>/dev/null \
    || python3 -c 'import lzma,sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())' "$bin.xz" > "$bin"
  chmod +x "$bin"
fi
mkdir -p "$out"
args=(train --data "$data/openkbp/train" --data "$data/totalseg-ct"
      --synthseg "$data/synthseg" --synthseg-contrasts 3
      --val-data "$data/openkbp/validation" --validation-episodes 32
      --out "$out/run" --minutes "$minutes" --device "$device"
      --episodes-per-step "$eps" --checkpoint-every 100 --validate-every 200 --steps 100000)
if [ -f "$out/run/state.json" ]; then
  args+=(--resume)
else
  # A fine-tune: a lower peak learning rate than training from scratch. Episodes of
  # one shape, so that the GPU compiles its kernels once (a resumed run keeps the
  # shapes it started with).
  args+=(--init-weights weights/icseg-lite.bpk --lr 1e-4 --fixed-shapes)
fi
echo "icseg ${args[*]}"
"$bin" "${args[@]}" 2>&1 | tee "$out/train.log"
if [ -f "$out/run/optimizer.bin" ]; then
  split -b 15000000 -d "$out/run/optimizer.bin" "$out/run/optimizer.bin.part-"
  rm "$out/run/optimizer.bin"
fi
ls -l "$out/run"
