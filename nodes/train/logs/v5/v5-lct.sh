#!/usr/bin/env bash
# v5 probe: LCT from v4's pre-training with the scenes' character weighed 1 + 32 x coverage
# (copy-task: one-token squares are copied only near 32); then probe-context.
set -euo pipefail
export RAYON_NUM_THREADS=1
target/release/lct-train fit --stage lct --from runs/v4-pretrain --out runs/v5-lct --minutes ${MIN:-25} --batch 8 --workers 2 \
  --channel-weight-power 0.5 --character-emphasis 32 --single-shot-prob 0.3 --single-shot-character-emphasis 8 \
  --context-prob 0.5 --single-frame-prob 0.5
target/release/lct-train probe-context --model runs/v5-lct --scenes 24 --out runs/v5-context.md
