#!/usr/bin/env bash
# The embedded default model's recipe: single-shot pre-training, Long Context Tuning,
# context-causal fine-tuning (each at the learning rate 1e-3, then annealed at ANNEAL_LR; the
# pre-training's anneal only when PRETRAIN_ANNEAL_MINUTES is set), the given-context and copy
# phases when their minutes are set, then the evaluation table. Every stage resumes from its
# own checkpoint when run again (and then trains for its minutes once more).
#   RUNS=runs WORKERS=2 BATCH=8 PRETRAIN_MINUTES=14 LCT_MINUTES=28 bash nodes/train/train_default.sh
# WORKERS threads build and score a batch's scenes side by side (data parallel); BATCH scenes
# make one step. EMPHASIS adds loss-weighting flags to every stage of the main path, e.g.
# EMPHASIS="--character-emphasis 8"; unset, the path reproduces the embedded model. The README
# lists the phases the committed model was trained with.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-runs}
# Candle's thread pool spin-waits on every small op: one matrix thread per worker is faster.
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1}
WORKERS=${WORKERS:-$(nproc)}
BATCH=${BATCH:-$((4 * WORKERS))}
ANNEAL_LR=${ANNEAL_LR:-4e-4}
cargo build --release -q -p lct-train
# A stage's batch is BATCH unless STAGE_BATCH is set for that call.
fit() { target/release/lct-train fit --batch "${STAGE_BATCH:-$BATCH}" "$@"; }
read -r -a EMPHASIS_FLAGS <<< "${EMPHASIS:-}"
train() { fit --workers "$WORKERS" "${EMPHASIS_FLAGS[@]}" "$@"; }
STAGE_BATCH=${PRETRAIN_BATCH:-$BATCH} train --stage pretrain --out "$RUNS/pretrain" --minutes "${PRETRAIN_MINUTES:-14}"
# Unset, no annealing phase: the embedded model's pre-training ended at lr 1e-3.
if [ "${PRETRAIN_ANNEAL_MINUTES:-0}" != 0 ]; then
  STAGE_BATCH=${PRETRAIN_BATCH:-$BATCH} train --stage pretrain --out "$RUNS/pretrain" \
    --minutes "$PRETRAIN_ANNEAL_MINUTES" --lr "$ANNEAL_LR"
fi
train --stage lct --from "$RUNS/pretrain" --out "$RUNS/lct" --minutes "${LCT_MINUTES:-30}"
train --stage lct --out "$RUNS/lct" --minutes "${LCT_ANNEAL_MINUTES:-25}" --lr "$ANNEAL_LR"
train --stage causal --from "$RUNS/lct" --out "$RUNS/causal" --minutes "${CAUSAL_MINUTES:-10}"
train --stage causal --out "$RUNS/causal" --minutes "${CAUSAL_ANNEAL_MINUTES:-25}" --lr "$ANNEAL_LR"
# The embedded model's last two phases: shots drawn as given context (CONTEXT_LCT_MINUTES set;
# the README's phase table ran 70 and 33 minutes), the LCT stage from the causal checkpoint.
LCT_RUN=$RUNS/lct CAUSAL_RUN=$RUNS/causal
if [ "${CONTEXT_LCT_MINUTES:-0}" != 0 ]; then
  CONTEXT_FLAGS=(--lr "$ANNEAL_LR" --context-prob "${CONTEXT_PROB:-0.5}")
  train --stage lct --from "$RUNS/causal" --out "$RUNS/lct-cx" \
    --minutes "$CONTEXT_LCT_MINUTES" "${CONTEXT_FLAGS[@]}"
  train --stage causal --from "$RUNS/lct-cx" --out "$RUNS/causal-cx" \
    --minutes "${CONTEXT_CAUSAL_MINUTES:-33}" "${CONTEXT_FLAGS[@]}"
  LCT_RUN=$RUNS/lct-cx CAUSAL_RUN=$RUNS/causal-cx
fi
# The copy curriculum that made the embedded model (COPY_MINUTES set; the README's phase table
# ran 40 minutes, then the anneal in two sittings of 50 and 84): image-shot-heavy scenes with the character's pixels weighted,
# then resumed at half the learning rate with fewer image shots. The two stages run side by
# side, one worker each, as they did.
if [ "${COPY_MINUTES:-0}" != 0 ]; then
  COPY_FLAGS=(--workers 1 --context-prob "${CONTEXT_PROB:-0.5}" --character-emphasis 2)
  copy() {
    local stage=$1 from=$2
    fit --stage "$stage" --from "$from" --out "$RUNS/$stage-copy" --minutes "$COPY_MINUTES" \
      --lr "$ANNEAL_LR" --single-frame-prob 0.75 "${COPY_FLAGS[@]}"
    fit --stage "$stage" --out "$RUNS/$stage-copy" --minutes "${COPY_ANNEAL_MINUTES:-50}" \
      --lr 2e-4 --single-frame-prob 0.5 "${COPY_FLAGS[@]}"
  }
  copy lct "$LCT_RUN" & lct_copy=$!
  copy causal "$CAUSAL_RUN" & causal_copy=$!
  wait "$lct_copy" && wait "$causal_copy"
  LCT_RUN=$RUNS/lct-copy CAUSAL_RUN=$RUNS/causal-copy
fi
target/release/lct-train eval --pretrain "$RUNS/pretrain" --lct "$LCT_RUN" --causal "$CAUSAL_RUN" \
  --out "$RUNS/eval" --scenes "${EVAL_SCENES:-8}"
