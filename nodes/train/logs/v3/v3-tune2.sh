#!/usr/bin/env bash
# The v3 recipe after its first LCT phase (runs/v3-tune.sh's first line): the anneal and the
# causal stage with the latent channels weighed more evenly (power 0.25, was 0.5), the colour
# being learned, the fine channels' noise not yet.
set -euo pipefail
export RAYON_NUM_THREADS=1
MIX=(--batch 8 --workers 2 --channel-weight-power 0.25 --character-emphasis 2 --single-shot-prob 0.3
     --single-shot-character-emphasis 8 --context-prob 0.5 --single-frame-prob 0.5)
fit() { target/release/lct-train fit "$@" "${MIX[@]}"; }
fit --stage lct --out runs/v3-lct --minutes ${LCT_ANNEAL_MIN:-10} --lr 4e-4
[ -e runs/v3-causal/trainer.json ] || fit --stage causal --from runs/v3-lct --out runs/v3-causal --minutes ${CAUSAL_MIN:-14} --lr 6e-4
fit --stage causal --out runs/v3-causal --minutes ${CAUSAL_ANNEAL_MIN:-8} --lr 3e-4
