#!/usr/bin/env bash
# v4: 16 latent channels (the autoencoder reads wide shots' colour 1.00, shape 0.89), 2x2
# patches (clean frames), query/key gains started at 3 (copy-task: reads context sooner).
set -euo pipefail
export RAYON_NUM_THREADS=1
target/release/lct-train fit --stage pretrain --out runs/v4-pretrain --minutes ${MIN:-30} --batch 8 --workers 2 \
  --latent-channels 16 --patch-size 2 --qk-gain 3 --character-emphasis 8 --channel-weight-power 0.5
