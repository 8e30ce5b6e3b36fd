#!/usr/bin/env bash
# The v4 recipe's LCT and causal stages (after runs/v4-pretrain.sh); each call resumes, and
# PHASE picks how far to go: lct (first LCT run), anneal (LCT at a lower rate), causal.
set -euo pipefail
export RAYON_NUM_THREADS=1
MIX=(--batch 8 --workers ${WORKERS:-2} --channel-weight-power 0.5 --character-emphasis 2 --single-shot-prob 0.3
     --single-shot-character-emphasis 8 --context-prob 0.5 --single-frame-prob 0.5)
fit() { target/release/lct-train fit "$@" "${MIX[@]}"; }
case ${PHASE:?lct, anneal or causal} in
  lct) if [ -e runs/v4-lct/trainer.json ]; then fit --stage lct --out runs/v4-lct --minutes ${MIN:-25}
       else fit --stage lct --from runs/v4-pretrain --out runs/v4-lct --minutes ${MIN:-25}; fi ;;
  anneal) fit --stage lct --out runs/v4-lct --minutes ${MIN:-8} --lr 4e-4 ;;
  causal) [ -e runs/v4-causal/trainer.json ] || fit --stage causal --from runs/v4-lct --out runs/v4-causal --minutes ${MIN:-12} --lr 6e-4
          fit --stage causal --out runs/v4-causal --minutes ${ANNEAL_MIN:-6} --lr 3e-4 ;;
esac
