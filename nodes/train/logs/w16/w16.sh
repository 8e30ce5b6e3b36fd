#!/usr/bin/env bash
# "A 16-channel latent from the embedded weights" in EXPERIMENTS.md: the embedded causal model
# widened to 16 latent channels, then two causal fine-tunes side by side (one thread each)
# that differ only in the loss's channel weights, then the same rows and probe for both.
# Run from the repository root after `cargo build --release -p lct-train`.
set -euo pipefail
T=target/release/lct-train
export RAYON_NUM_THREADS=1
mkdir -p runs
$T widen --from nodes/assets/default --out runs/w16-init --channels 16
$T eval --pretrain nodes/assets/default --lct runs/w16-init --causal runs/w16-init --scenes 16 \
  --rollout-scenes 0 --rows reference --out runs/eval-w16-reference
FLAGS="--stage causal --from runs/w16-init --batch 8 --workers 1 --lr 2e-4 --context-prob 0.5 \
  --single-frame-prob 0.5 --character-emphasis 2 --reference-scene-prob 0.3"
arm() {   # name, channel-weight power, minutes: fit, then the rows and the probe
  $T fit $FLAGS --out runs/$1 --channel-weight-power $2 --minutes $3
  $T eval --pretrain nodes/assets/default --lct runs/$1 --causal runs/$1 --scenes 16 --rollout-scenes 0 \
    --rows compositional,kv-cache --out runs/eval-$1
  $T probe-follow --model runs/$1 --scenes 24 --out runs/follow-$1.md
}
arm w16 0.25 75 &
sleep 900   # the second arm started a quarter of an hour later (after a test build)
arm w16b 0 57
wait
