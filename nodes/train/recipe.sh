#!/usr/bin/env bash
# The embedded model's whole recipe, in one command: images first (single frames, large
# batch), then short single shots, then LCT scenes (global + per-shot prompts, one flow time
# per shot, shots drawn as context, some global prompts without looks), then the
# context-causal fine-tune; then the model is copied into nodes/assets/default, where the
# node library embeds it.
#   bash nodes/train/recipe.sh                  # RUNS=runs/embedded
# Every stage checkpoints at each evaluation and resumes from its folder when run again; a
# finished stage returns at once, so the recipe can be run in pieces (MINUTES bounds each
# stage's piece; run the command again to go on).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-runs/embedded}
MINUTES=${MINUTES:-600}
# One matrix thread per worker: candle's pool spin-waits on small ops.
export RAYON_NUM_THREADS=1
cargo build --release -q -p lct-train
train=target/release/lct-train
$train images --out "$RUNS/images" --steps "${IMAGE_STEPS:-6000}" --eval-steps 1000 \
  --minutes "$MINUTES"
$train scenes --from "$RUNS/images" --out "$RUNS/shots" --min-shots 1 --max-shots 1 \
  --batch 8 --steps "${SHOT_STEPS:-300}" --context-prob 0 --minutes "$MINUTES"
$train scenes --from "$RUNS/shots" --out "$RUNS/lct" --min-shots 2 --max-shots 3 \
  --steps "${LCT_STEPS:-800}" --minutes "$MINUTES"
$train scenes --from "$RUNS/lct" --out "$RUNS/causal" --min-shots 2 --max-shots 3 \
  --attention context-causal --steps "${CAUSAL_STEPS:-250}" --minutes "$MINUTES"

# The checkpoint folder, without the run's own files (optimiser state, logs, sheets).
assets=nodes/assets/default
find "$assets" -mindepth 1 ! -name README.md -delete
for file in model_index.json lct.json transformer/config.json \
  transformer/diffusion_pytorch_model.safetensors text_encoder/config.json \
  text_encoder/model.safetensors tokenizer/tokenizer.json tokenizer/tokenizer_config.json \
  vae/config.json scheduler/scheduler_config.json; do
  mkdir -p "$assets/$(dirname "$file")"
  cp "$RUNS/causal/$file" "$assets/$file"
done
du -sh "$assets"
$train curve --logs "$RUNS/images/log.tsv" --out nodes/train/training_curve.svg
# The model card's table.
$train evaluate --model "$assets"
