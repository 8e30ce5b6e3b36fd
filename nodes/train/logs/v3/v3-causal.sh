#!/usr/bin/env bash
# The v3 causal stage, one worker (the other core runs the copy-task diagnostic).
set -euo pipefail
export RAYON_NUM_THREADS=1
target/release/lct-train fit --stage causal --from runs/v3-lct --out runs/v3-causal --minutes ${CAUSAL_MIN:-16} --lr 6e-4 \
  --batch 8 --workers 1 --channel-weight-power 0.25 --character-emphasis 2 --single-shot-prob 0.3 \
  --single-shot-character-emphasis 8 --context-prob 0.5 --single-frame-prob 0.5
