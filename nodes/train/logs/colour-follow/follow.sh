#!/usr/bin/env bash
# The probes of "The world's own characters in the copy task, and a recoloured control" in
# EXPERIMENTS.md, in the order they ran (two at a time, one thread each, on the 2-core machine).
# Run from the repository root after `cargo build --release -p lct-train`.
set -euo pipefail
T=target/release/lct-train
export RAYON_NUM_THREADS=1
mkdir -p runs
# Part 1: the copy task on the world's own shots, from scratch and from the embedded weights.
$T copy-task --variant world --emphasis 32 --patch-size 2 --qk-gain 3 --minutes 20 --every 50 --out runs/copy-world-scratch2.md &
$T copy-task --variant world --init nodes/assets/default --emphasis 32 --minutes 25 --every 50 --out runs/copy-world-init.md
wait
# Part 2: the recoloured control on the denoiser, and colour following in generation.
$T probe-context --model nodes/assets/default --scenes 24 --out runs/embedded-context-recoloured.md &
$T probe-follow --model nodes/assets/default --scenes 24 --out runs/follow-default5.md
wait
$T probe-follow --model nodes/assets/default --scenes 24 --context-guidance 1 --out runs/follow-cg1.md &
$T probe-follow --model nodes/assets/default --scenes 24 --context-guidance 4 --out runs/follow-cg4.md
wait
# Part 3: reference scenes (identity image + environment image + one shot without looks) in a
# causal fine-tune of the embedded model, then the same probes and rows for both.
$T fit --stage causal --from nodes/assets/default --out runs/ref-causal --batch 8 --workers 1 --lr 2e-4 \
  --context-prob 0.5 --single-frame-prob 0.5 --character-emphasis 2 --reference-scene-prob 0.3 --minutes 35
$T probe-follow --model runs/ref-causal --scenes 24 --out runs/follow-ref.md &
for m in nodes/assets/default runs/ref-causal; do
  $T eval --pretrain nodes/assets/default --lct $m --causal $m --scenes 16 --rollout-scenes 0 \
    --rows compositional,kv-cache --out runs/eval-$(basename $m)-ab
done
wait
