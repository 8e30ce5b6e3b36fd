#!/usr/bin/env bash
# The embedded default model's recipe: single-shot pre-training, Long Context Tuning,
# context-causal fine-tuning, then the evaluation table. Every stage resumes from its own
# checkpoint when run again (and then trains for its minutes once more).
#   RUNS=runs PRETRAIN_MINUTES=14 LCT_MINUTES=28 CAUSAL_MINUTES=10 bash nodes/train/train_default.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-runs}
# Candle's thread pool spin-waits on every small op; on 2 cores one thread trains faster.
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1}
cargo build --release -q -p lct-train
train=target/release/lct-train
$train fit --stage pretrain --out "$RUNS/pretrain" --minutes "${PRETRAIN_MINUTES:-14}"
$train fit --stage lct --from "$RUNS/pretrain" --out "$RUNS/lct" --minutes "${LCT_MINUTES:-28}"
$train fit --stage causal --from "$RUNS/lct" --out "$RUNS/causal" --minutes "${CAUSAL_MINUTES:-10}"
$train eval --pretrain "$RUNS/pretrain" --lct "$RUNS/lct" --causal "$RUNS/causal" --out "$RUNS/eval" --scenes "${EVAL_SCENES:-8}"
