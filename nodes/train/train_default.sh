#!/usr/bin/env bash
# The embedded default model's recipe, in one command: Long Context Tuning from scratch (the
# base model trained on whole scenes and single shots together), context-causal fine-tuning, then the measurements the README's
# model card prints. Each stage runs to a fixed step count with warm-up, cosine decay and EMA
# weights; run the script again after an interruption and every stage resumes from its last
# checkpoint (a finished stage is skipped at once).
#   RUNS=runs bash nodes/train/train_default.sh
# About 70 minutes of training and 15 of measuring on this project's 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-runs}
# Candle's thread pool spin-waits on every small op: one matrix thread per worker is faster.
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1}
WORKERS=${WORKERS:-$(nproc)}
cargo build --release -q -p lct-train
T=target/release/lct-train
# A stage: STEPS in total, the learning rate warming up over 100 steps then falling along a
# cosine to a tenth by the last step; the wall-clock limit only guards against a stuck run.
stage() {
  local steps=$1
  shift
  $T fit --workers "$WORKERS" --batch 8 --minutes 600 --steps "$steps" \
    --warmup-steps 100 --decay-steps $((steps - 100)) "$@"
}
# The base model learns on the LCT mix from its first step: whole scenes (half their shots drawn
# as given context, nearly clean with no loss of their own: the history a conditioned or
# KV-cached shot is generated beside) and single shots whose global prompt spells out the looks.
stage 3000 --stage lct --out "$RUNS/lct" --ema-decay 0.998 --context-prob 0.5 \
  --single-shot-prob 0.3
stage 400 --stage causal --from "$RUNS/lct" --out "$RUNS/causal" --ema-decay 0.995 \
  --context-prob 0.5 --single-shot-prob 0.3
# The model card: prompt following, the evaluation table with no looks in the captions and
# with the looks in the global prompt, the KV-cache timing and the 10-shot rollout.
mkdir -p "$RUNS/eval"
M="--pretrain $RUNS/lct --lct $RUNS/lct --causal $RUNS/causal"
$T probe-prompts --model "$RUNS/lct" --model "$RUNS/causal" --scenes "${EVAL_SCENES:-24}" \
  --out "$RUNS/eval/prompt_following.md"
$T eval $M --scenes "${EVAL_SCENES:-8}" --rollout-scenes 0 --out "$RUNS/eval/no-looks"
$T eval $M --scenes "${EVAL_SCENES:-8}" --rollout-scenes 0 --out "$RUNS/eval/global-looks" \
  --rows joint,kv-cache --captions global-looks
$T eval $M --scenes 4 --only-extras --out "$RUNS/eval/extras"
