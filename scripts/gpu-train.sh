#!/usr/bin/env bash
# Turns a short GPU window into a longer-trained network: on the device machine,
# fine-tunes the shipped lite weights (or resumes the run found in OUT) for at most
# MINUTES and leaves the checkpoints, the training log and the best weights in OUT.
#
#   scripts/gpu-train.sh BINARY DATA OUT [MINUTES] [DEVICE]
#
# BINARY and DATA as scripts/gpu-prepare.sh leaves them (.gpu/icseg, .gpu/data);
# MINUTES defaults to 9 (a device call may run 10); DEVICE to gpu (cpu to try it here).
# Bring OUT/run back and continue it with `icseg train --resume --out OUT/run`, or ship
# its best.bpk with `icseg ship`.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$1"; data="$2"; out="$3"; minutes="${4:-9}"; device="${5:-gpu}"
mkdir -p "$out"
init="weights/icseg-lite.bpk"
[ -f .gpu/icseg-lite.bpk ] && init=.gpu/icseg-lite.bpk
args=(train --data "$data/openkbp/train" --data "$data/totalseg-examples"
      --val-data "$data/openkbp/validation" --validation-episodes 24
      --out "$out/run" --minutes "$minutes" --device "$device"
      --checkpoint-every 25 --validate-every 100 --steps 100000)
if [ -f "$out/run/state.json" ]; then
  args+=(--resume)
else
  # A fine-tune: a lower peak learning rate than training from scratch.
  args+=(--init-weights "$init" --lr 1e-4)
fi
echo "icseg ${args[*]}"
"$bin" "${args[@]}" 2>&1 | tee "$out/train.log"
ls -l "$out/run"
