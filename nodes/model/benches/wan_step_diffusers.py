"""The diffusers side of `cargo bench -p lct-model --bench wan_step`.

Builds a random `WanTransformer3DModel` of the given size (seed 0), saves it in the diffusers
layout under OUT/transformer/ with the inputs, times `reps` forward passes (per-token
timesteps) and writes OUT/reference.safetensors (inputs and output) so that the bench runs the
same weights and inputs through lct and checks the output. Prints the median seconds.

    python wan_step_diffusers.py OUT --heads 12 --head-dim 64 --layers 4 --ffn 3072 \
        --channels 16 --frames 9 --side 24 --text 64 --reps 3
"""
import argparse
import statistics
import time

import torch
from diffusers import WanTransformer3DModel
from safetensors.torch import save_file

parser = argparse.ArgumentParser()
parser.add_argument("out")
for name in ["heads", "head-dim", "layers", "ffn", "channels", "frames", "side", "text", "reps"]:
    parser.add_argument(f"--{name}", type=int, required=True)
args = parser.parse_args()

torch.manual_seed(0)
torch.set_grad_enabled(False)
model = WanTransformer3DModel(
    patch_size=(1, 2, 2),
    num_attention_heads=args.heads,
    attention_head_dim=args.head_dim,
    in_channels=args.channels,
    out_channels=args.channels,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=args.ffn,
    num_layers=args.layers,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
).eval()
model.save_pretrained(f"{args.out}/transformer", safe_serialization=True)

latents = torch.randn(1, args.channels, args.frames, args.side, args.side)
text = torch.randn(1, args.text, 4096)
tokens = args.frames * (args.side // 2) ** 2
timesteps = torch.linspace(900.0, 100.0, args.frames).repeat_interleave(tokens // args.frames).unsqueeze(0)

times = []
for _ in range(args.reps):
    start = time.perf_counter()
    output = model(latents, timesteps, text, return_dict=False)[0]
    times.append(time.perf_counter() - start)
save_file(
    {"latents": latents, "text": text, "per_token_timestep": timesteps.contiguous(), "output": output.contiguous()},
    f"{args.out}/reference.safetensors",
)
print(f"torch {torch.__version__} threads {torch.get_num_threads()}: median {statistics.median(times):.4f} s")
print(f"seconds {statistics.median(times)}")
