"""The PyTorch side of `cargo bench -p lct-model --bench wan_train_step`.

Builds a random diffusers `WanTransformer3DModel` of the given size (seed 0), saves it in the
diffusers layout under OUT/transformer/ with the step's inputs (OUT/inputs.safetensors: clean
frames, noise, per-sample flow times, text embeddings), then times training steps on them:
noised frames at each sample's time, the velocity `noise - frames` as the target, the mean
squared error, backward, AdamW. Prints the first step's loss (before any update, for the
bench to compare with lct's on the same weights and inputs) and the median and best seconds
per step.

    python wan_train_step_diffusers.py OUT --heads 3 --head-dim 64 --layers 6 --ffn 768 \
        --channels 3 --side 64 --patch 8 --batch 32 --text 24 --text-dim 192 --reps 10
"""
import argparse
import statistics
import time

import torch
from diffusers import WanTransformer3DModel
from safetensors.torch import save_file

parser = argparse.ArgumentParser()
parser.add_argument("out")
for name in ["heads", "head-dim", "layers", "ffn", "channels", "side", "patch", "batch", "text",
             "text-dim", "reps"]:
    parser.add_argument(f"--{name}", type=int, required=True)
args = parser.parse_args()

torch.manual_seed(0)
model = WanTransformer3DModel(
    patch_size=(1, args.patch, args.patch),
    num_attention_heads=args.heads,
    attention_head_dim=args.head_dim,
    in_channels=args.channels,
    out_channels=args.channels,
    text_dim=args.text_dim,
    freq_dim=256,
    ffn_dim=args.ffn,
    num_layers=args.layers,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
model.save_pretrained(f"{args.out}/transformer", safe_serialization=True)

frames = torch.randn(args.batch, args.channels, 1, args.side, args.side)
noise = torch.randn_like(frames)
times = torch.rand(args.batch)
text = torch.randn(args.batch, args.text, args.text_dim)
save_file({"frames": frames, "noise": noise, "times": times, "text": text},
          f"{args.out}/inputs.safetensors")

optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
t = times.view(-1, 1, 1, 1, 1)
noised = (1 - t) * frames + t * noise
target = noise - frames


def step():
    prediction = model(noised, times * 1000.0, text, return_dict=False)[0]
    loss = torch.nn.functional.mse_loss(prediction, target)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


first_loss = step()  # also the warm-up
seconds = []
for _ in range(args.reps):
    start = time.perf_counter()
    step()
    seconds.append(time.perf_counter() - start)
print(f"torch {torch.__version__} threads {torch.get_num_threads()}: median {statistics.median(seconds):.4f} s")
print(f"loss0 {first_loss}")
print(f"seconds {statistics.median(seconds)}")
print(f"best {min(seconds)}")
