#!/usr/bin/env bash
# The v3 recipe's LCT and causal stages (after runs/v3-pretrain.sh); each call resumes.
set -euo pipefail
export RAYON_NUM_THREADS=1
MIX=(--batch 8 --workers 2 --channel-weight-power 0.5 --character-emphasis 2 --single-shot-prob 0.3
     --single-shot-character-emphasis 8 --context-prob 0.5 --single-frame-prob 0.5)
fit() { target/release/lct-train fit "$@" "${MIX[@]}"; }
[ -e runs/v3-lct/trainer.json ] || fit --stage lct --from runs/v3-pretrain --out runs/v3-lct --minutes ${LCT_MIN:-34}
fit --stage lct --out runs/v3-lct --minutes ${LCT_ANNEAL_MIN:-10} --lr 4e-4
[ -e runs/v3-causal/trainer.json ] || fit --stage causal --from runs/v3-lct --out runs/v3-causal --minutes ${CAUSAL_MIN:-14} --lr 6e-4
fit --stage causal --out runs/v3-causal --minutes ${CAUSAL_ANNEAL_MIN:-8} --lr 3e-4
