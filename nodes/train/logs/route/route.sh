#!/usr/bin/env bash
# Routing supervision, two probes (EXPERIMENTS.md, "Routing supervision").
# 1. The embedded causal model fine-tuned with routing (copy-curriculum flags, route weight 0.1).
# 2. (default) An A/B from one fresh pre-training (24 channels, 4x4 patches, gains at 3): LCT with and
#    without routing, side by side on one core each, then probe-context and eval on both.
# 3. Both arms resumed with the character weighed 1 + 32 x coverage.
set -euo pipefail
export RAYON_NUM_THREADS=1
T=target/release/lct-train
if [ "${PART:-2}" = 1 ]; then
  $T fit --stage causal --from nodes/assets/default --out runs/route-causal --batch 8 --workers 2 --lr 4e-4 \
    --context-prob 0.5 --single-frame-prob 0.5 --character-emphasis 2 --route-weight 0.1 --minutes 55
  $T probe-context --model runs/route-causal --scenes 24 --out runs/context-route612.md
  P="--pretrain nodes/assets/default --lct runs/route-causal --causal runs/route-causal --scenes 16 --rollout-scenes 0"
  $T eval $P --rows joint --out runs/eval-route-joint & $T eval $P --rows kv-cache --out runs/eval-route-kv; wait
  exit 0
fi
if [ "${PART:-2}" = 3 ]; then
  # Both arms resumed from copies with the character weighed 1 + 32 x coverage.
  for ARM in plain route; do cp -r runs/r3-lct-$ARM runs/r3-lct-$ARM-e32; done
  MIX="--batch 8 --workers 1 --channel-weight-power 0.5 --character-emphasis 32 --single-shot-prob 0.3 --single-shot-character-emphasis 8 --context-prob 0.5 --single-frame-prob 0.5 --minutes 20"
  $T fit --stage lct --out runs/r3-lct-plain-e32 $MIX > runs/r3-lct-plain-e32.out 2>&1 &
  $T fit --stage lct --out runs/r3-lct-route-e32 $MIX > runs/r3-lct-route-e32.out 2>&1
  wait
  for ARM in plain route; do
    $T eval --pretrain runs/r3-pretrain --lct runs/r3-lct-$ARM-e32 --causal runs/r3-lct-$ARM-e32 --scenes 16 \
      --rollout-scenes 0 --rows joint,interpolation --out runs/r3e32-eval-$ARM &
  done
  wait
  for ARM in plain route; do $T probe-context --model runs/r3-lct-$ARM-e32 --scenes 24 --out runs/r3e32-context-$ARM.md; done
  exit 0
fi
$T fit --stage pretrain --out runs/r3-pretrain --minutes 12 --batch 8 --workers 2 --latent-channels 24 --patch-size 4 \
  --qk-gain 3 --character-emphasis 8 --channel-weight-power 0.5
MIX="--batch 8 --workers 1 --channel-weight-power 0.5 --character-emphasis 2 --single-shot-prob 0.3 --single-shot-character-emphasis 8 --context-prob 0.5 --single-frame-prob 0.5 --minutes ${MIN:-40}"
$T fit --stage lct --from runs/r3-pretrain --out runs/r3-lct-plain $MIX > runs/r3-lct-plain.out 2>&1 &
$T fit --stage lct --from runs/r3-pretrain --out runs/r3-lct-route $MIX --route-weight 0.1 > runs/r3-lct-route.out 2>&1
wait
$T probe-context --model runs/r3-lct-plain --scenes 24 --out runs/r3-context-plain.md &
$T probe-context --model runs/r3-lct-route --scenes 24 --out runs/r3-context-route.md
wait
for ARM in plain route; do
  $T eval --pretrain runs/r3-pretrain --lct runs/r3-lct-$ARM --causal runs/r3-lct-$ARM --scenes 16 \
    --rollout-scenes 0 --rows joint,interpolation --out runs/r3-eval-$ARM &
done
wait
