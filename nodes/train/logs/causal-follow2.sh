#!/bin/bash
# Variant of follow.sh with a far lighter single-shot emphasis (character 3, shape 4), one core.
cd /work/main
export RAYON_NUM_THREADS=1
[ -d runs/causal-follow2 ] || cp -r runs/causal-copy4 runs/causal-follow2
MIX="--workers 1 --batch 8 --context-prob 0.5 --single-frame-prob 0.5 --character-emphasis 2 --single-shot-prob 0.5 --single-shot-character-emphasis 3 --single-shot-shape-emphasis 4"
target/release/lct-train fit --stage causal --out runs/causal-follow2 $MIX --lr 4e-4 --minutes ${MIN:-65}
echo done
