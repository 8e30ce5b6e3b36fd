"""The PyTorch side of `cargo bench -p lct-model --bench train_step`: one LCT training step
(forward, backward, global-norm clip, AdamW) of a model shaped like lct-model's
`SceneTransformer`, on CPU, so the two can be timed side by side in one run.

Same shapes and the same work as the Rust step: per-segment adaLN modulation gathered to the
tokens, separate text/video (MMDiT) weights, per-head RMS-normalised q/k with rotary
embeddings, one joint attention over the packed scene (bidirectional: the LCT stage), GELU
MLP, per-shot MSE averaged over shots. Random data; no text encoder or autoencoder (the Rust
bench has none either).

Usage: python train_step_torch.py --batch 8 --shots 3 --frames 4 --width 128 --layers 4 \
    --heads 4 --mlp 512 --channels 8 --patch 2 --side 16 --text-dim 64 --shot-text 12 \
    --global-text 32 --time-features 128 [--reps 10]
(the Rust bench passes the embedded model's values). Prints one line:
`torch VERSION threads N: ... S s/step` (median of REPS timed steps after three warm-ups).
"""
import argparse
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

parser = argparse.ArgumentParser()
for name in ["batch", "shots", "frames", "width", "layers", "heads", "mlp", "channels", "patch",
             "side", "text-dim", "shot-text", "global-text", "time-features"]:
    parser.add_argument("--" + name, type=int, required=True)
parser.add_argument("--reps", type=int, default=10)
A = parser.parse_args()
B, SHOTS, FRAMES, W, LAYERS, HEADS, MLP = A.batch, A.shots, A.frames, A.width, A.layers, A.heads, A.mlp
REPS, CHANNELS, PATCH, SIDE = A.reps, A.channels, A.patch, A.side
TEXT_DIM, SHOT_TEXT, GLOBAL_TEXT, TIME_FEATURES = A.text_dim, A.shot_text, A.global_text, A.time_features
HEAD_DIM = W // HEADS
PATCH_DIM = CHANNELS * PATCH * PATCH
TOKENS_PER_FRAME = (SIDE // PATCH) ** 2
torch.manual_seed(0)


class Stream(nn.Module):
    def __init__(self):
        super().__init__()
        self.modulation = nn.Linear(W, 6 * W)
        self.qkv = nn.Linear(W, 3 * W)
        self.q_norm = nn.RMSNorm(HEAD_DIM, eps=1e-6)
        self.k_norm = nn.RMSNorm(HEAD_DIM, eps=1e-6)
        self.out_proj = nn.Linear(W, W)
        self.mlp_in = nn.Linear(W, MLP)
        self.mlp_out = nn.Linear(MLP, W)


def modulate(x, shift, scale):
    return F.layer_norm(x, (W,), eps=1e-6) * (1 + scale) + shift


def rope(x, cos, sin):
    x1, x2 = x[..., ::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1).flatten(-2)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.text = Stream()
        self.video = Stream()

    def forward(self, text, video, cond, text_ids, video_ids, order, cos, sin):
        mods, qkvs = [], []
        for x, stream, ids in ((text, self.text, text_ids), (video, self.video, video_ids)):
            m = stream.modulation(cond)[:, ids].chunk(6, -1)
            mods.append(m)
            b, n, _ = x.shape
            qkv = stream.qkv(modulate(x, m[0], m[1])).view(b, n, 3, HEADS, HEAD_DIM)
            q = stream.q_norm(qkv[:, :, 0])
            k = stream.k_norm(qkv[:, :, 1])
            qkvs.append((q, k, qkv[:, :, 2]))
        # Packed scene order: text and video tokens interleaved by segment.
        q, k, v = (torch.cat((qkvs[0][i], qkvs[1][i]), 1)[:, order] for i in range(3))
        q = rope(q, cos, sin).transpose(1, 2)
        k = rope(k, cos, sin).transpose(1, 2)
        v = v.transpose(1, 2)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        unpacked = torch.empty_like(attended)
        unpacked[:, order] = attended
        parts = (unpacked[:, : text.shape[1]], unpacked[:, text.shape[1]:])
        out = []
        for x, a, m, stream in zip((text, video), parts, mods, (self.text, self.video)):
            x = x + stream.out_proj(a) * m[2]
            h = stream.mlp_out(F.gelu(stream.mlp_in(modulate(x, m[3], m[4]))))
            out.append(x + h * m[5])
        return out


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.video_in = nn.Linear(PATCH_DIM, W)
        self.text_in = nn.Linear(TEXT_DIM, W)
        self.time_in = nn.Linear(TIME_FEATURES, W)
        self.time_out = nn.Linear(W, W)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.final_modulation = nn.Linear(W, 2 * W)
        self.final_out = nn.Linear(W, PATCH_DIM)

    def forward(self, text, video, timesteps, text_ids, video_ids, order, cos, sin):
        half = TIME_FEATURES // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half) / half)
        angles = timesteps[..., None] * 1000 * freqs
        features = torch.cat((angles.cos(), angles.sin()), -1)
        cond = F.silu(self.time_out(F.silu(self.time_in(features))))
        text, video = self.text_in(text), self.video_in(video)
        for block in self.blocks:
            text, video = block(text, video, cond, text_ids, video_ids, order, cos, sin)
        shift, scale = self.final_modulation(cond)[:, video_ids].chunk(2, -1)
        return self.final_out(modulate(video, shift, scale))


# The layout: a global segment (text plus one dummy video token) then the shots.
segments = [(GLOBAL_TEXT, 1)] + [(SHOT_TEXT, FRAMES * TOKENS_PER_FRAME)] * SHOTS
text_ids = torch.tensor([s for s, (t, _) in enumerate(segments) for _ in range(t)])
video_ids = torch.tensor([s for s, (_, v) in enumerate(segments) for _ in range(v)])
n_text, n_video = len(text_ids), len(video_ids)
order, text_at, video_at = [], 0, n_text
for t, v in segments:
    order += list(range(text_at, text_at + t)) + list(range(video_at, video_at + v))
    text_at, video_at = text_at + t, video_at + v
order = torch.tensor(order)
length = n_text + n_video
angles = torch.randn(length, HEAD_DIM // 2)  # positions do not change the cost
cos, sin = angles.cos()[:, None], angles.sin()[:, None]

net = Net()
optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.0)
text = torch.randn(B, n_text, TEXT_DIM)
clean = torch.randn(B, n_video, PATCH_DIM)
shot_of_token = video_ids - 1  # the global's dummy token carries no loss


def step():
    optimizer.zero_grad(set_to_none=True)
    timesteps = torch.sigmoid(torch.randn(B, len(segments)))
    noise = torch.randn_like(clean)
    t = timesteps[:, video_ids][..., None]
    noisy = (1 - t) * clean + t * noise
    prediction = net(text, noisy, timesteps, text_ids, video_ids, order, cos, sin)
    squared = ((prediction - (noise - clean)) ** 2).mean(-1)
    per_shot = torch.stack([squared[:, shot_of_token == s].mean(1) for s in range(SHOTS)], 1)
    loss = per_shot.mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    optimizer.step()


for _ in range(3):
    step()
times = []
for _ in range(REPS):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
print(
    f"torch {torch.__version__} threads {torch.get_num_threads()}: batch {B}, {SHOTS} shot(s) x "
    f"{FRAMES} frames, width {W}, {LAYERS} layers, {length} tokens: "
    f"{statistics.median(times):.4f} s/step"
)
