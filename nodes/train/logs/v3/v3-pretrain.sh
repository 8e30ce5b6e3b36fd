#!/usr/bin/env bash
set -euo pipefail
export RAYON_NUM_THREADS=1
target/release/lct-train fit --stage pretrain --out runs/v3-pretrain --minutes ${MIN:-27} --batch 8 --workers 2 \
  --latent-channels 24 --patch-size 4 --character-emphasis 8 --channel-weight-power 0.5
