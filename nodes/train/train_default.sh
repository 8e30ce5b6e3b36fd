#!/usr/bin/env bash
# The embedded default model's recipe: single-shot pre-training, Long Context Tuning,
# context-causal fine-tuning (each at the learning rate 1e-3, then annealed at ANNEAL_LR),
# then the evaluation table. Every stage resumes from its own checkpoint when run again (and
# then trains for its minutes once more).
#   RUNS=runs WORKERS=2 BATCH=8 PRETRAIN_MINUTES=14 LCT_MINUTES=28 bash nodes/train/train_default.sh
# WORKERS threads build and score a batch's scenes side by side (data parallel); BATCH scenes
# make one step. The README lists the phases the committed model was trained with, and the
# 24-channel experiment (`lct-train widen`) that did not replace it.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-runs}
# Candle's thread pool spin-waits on every small op: one matrix thread per worker is faster.
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1}
WORKERS=${WORKERS:-$(nproc)}
BATCH=${BATCH:-$((4 * WORKERS))}
ANNEAL_LR=${ANNEAL_LR:-4e-4}
cargo build --release -q -p lct-train
train() { target/release/lct-train fit --workers "$WORKERS" --batch "$BATCH" "$@"; }
train --stage pretrain --out "$RUNS/pretrain" --minutes "${PRETRAIN_MINUTES:-14}"
train --stage lct --from "$RUNS/pretrain" --out "$RUNS/lct" --minutes "${LCT_MINUTES:-30}"
train --stage lct --out "$RUNS/lct" --minutes "${LCT_ANNEAL_MINUTES:-25}" --lr "$ANNEAL_LR"
train --stage causal --from "$RUNS/lct" --out "$RUNS/causal" --minutes "${CAUSAL_MINUTES:-10}"
train --stage causal --out "$RUNS/causal" --minutes "${CAUSAL_ANNEAL_MINUTES:-25}" --lr "$ANNEAL_LR"
target/release/lct-train eval --pretrain "$RUNS/pretrain" --lct "$RUNS/lct" --causal "$RUNS/causal" \
  --out "$RUNS/eval" --scenes "${EVAL_SCENES:-8}"
