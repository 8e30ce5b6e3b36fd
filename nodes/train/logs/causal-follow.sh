#!/bin/bash
# Prompt following on the embedded causal model: half the samples single shots with the looks
# in the global prompt, emphasised (character 8, shape 16); scenes keep copy4's flags. Both cores.
cd /work/main
export RAYON_NUM_THREADS=1
[ -d runs/causal-follow ] || cp -r runs/causal-copy4 runs/causal-follow
MIX="--workers 2 --batch 8 --context-prob 0.5 --single-frame-prob 0.5 --character-emphasis 2 --single-shot-prob 0.5 --single-shot-character-emphasis 8 --single-shot-shape-emphasis 16"
target/release/lct-train fit --stage causal --out runs/causal-follow $MIX --lr 4e-4 --minutes 60
cp -r runs/causal-follow runs/causal-follow-a
target/release/lct-train fit --stage causal --out runs/causal-follow $MIX --lr 2e-4 --minutes 22
echo done
