//! The Wan DiT (Wan 2.1 / 2.2 text-to-video): patch embedding, 3D RoPE split over
//! frame / height / width, self-attention with RMS q/k norm across heads, cross-attention to
//! the text, and adaLN modulation from the timestep, per sample or per token (Wan 2.2 TI2V's
//! path, and what LCT needs for one timestep per shot). Tensor names are diffusers'.

use candle_core::{DType, Device, IndexOp, Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};

use super::config::{WanPrediction, WanTransformerConfig, WAN_TIME_SCALE};
use crate::fused::{gated_residual, gelu_tanh, linear};
use crate::{AttentionMask, Error, MaskSpec, Result};

/// The diffusion timestep: one per sample `[batch]`, one per latent frame `[batch, frames]`
/// (SkyReels-V2's diffusion forcing), or one per token `[batch, tokens]`.
#[derive(Clone, Copy)]
pub enum WanTimestep<'a> {
    PerSample(&'a Tensor),
    PerFrame(&'a Tensor),
    PerToken(&'a Tensor),
}

struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    norm_q: Tensor,
    norm_k: Tensor,
    heads: usize,
    eps: f64,
}

impl Attention {
    fn new(cfg: &WanTransformerConfig, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.inner_dim();
        Ok(Self {
            to_q: candle_nn::linear(dim, dim, vb.pp("to_q"))?,
            to_k: candle_nn::linear(dim, dim, vb.pp("to_k"))?,
            to_v: candle_nn::linear(dim, dim, vb.pp("to_v"))?,
            to_out: candle_nn::linear(dim, dim, vb.pp("to_out.0"))?,
            norm_q: vb.get(dim, "norm_q.weight")?,
            norm_k: vb.get(dim, "norm_k.weight")?,
            heads: cfg.num_attention_heads,
            eps: cfg.eps,
        })
    }

    /// `x` attends to `context` (itself when `None`), and after `past` (cached keys and
    /// values `[batch, heads, n, head_dim]` of earlier tokens) when given; RoPE only in
    /// self-attention. Self-attention runs the project's blocked attention under `ranks` (keys
    /// counting `past` first); cross-attention takes an additive `[queries, keys]` mask (0 or
    /// -inf), broadcast over batch and heads. Returns the output and this call's own keys and
    /// values (for a cache).
    fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        rope: Option<&Rope>,
        mask: AttentionKind,
        past: Option<&(Tensor, Tensor)>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let source = context.unwrap_or(x);
        let q = rms_norm(&linear(&self.to_q, x)?, &self.norm_q, self.eps)?;
        let k = rms_norm(&linear(&self.to_k, source)?, &self.norm_k, self.eps)?;
        let v = linear(&self.to_v, source)?;
        let (batch, tokens, dim) = q.dims3()?;
        let head_dim = dim / self.heads;
        let split = |t: &Tensor| -> Result<Tensor> {
            let n = t.dim(1)?;
            Ok(t.reshape((batch, n, self.heads, head_dim))?)
        };
        let (mut q, mut k, v) = (split(&q)?, split(&k)?, split(&v)?);
        if let Some(rope) = rope {
            q = rope.apply(&q)?;
            k = rope.apply(&k)?;
        }
        let q = q.transpose(1, 2)?.contiguous()?;
        let own = (
            k.transpose(1, 2)?.contiguous()?,
            v.transpose(1, 2)?.contiguous()?,
        );
        let (k, v) = match past {
            Some((past_k, past_v)) => (
                Tensor::cat(&[past_k, &own.0], 2)?,
                Tensor::cat(&[past_v, &own.1], 2)?,
            ),
            None => own.clone(),
        };
        let out = match mask {
            AttentionKind::Ranked(spec) => crate::attention::attention(&q, &k, &v, spec)?,
            AttentionKind::Additive(mask) => {
                let mut scores = (q.matmul(&k.t()?)? * (1.0 / (head_dim as f64).sqrt()))?;
                if let Some(mask) = mask {
                    scores = scores.broadcast_add(&mask.to_dtype(scores.dtype())?)?;
                }
                // The fused softmax has no backward pass.
                let weights = if scores.track_op() {
                    candle_nn::ops::softmax(&scores, D::Minus1)?
                } else {
                    candle_nn::ops::softmax_last_dim(&scores)?
                };
                weights
                    .matmul(&v)?
                    .transpose(1, 2)?
                    .reshape((batch, tokens, dim))?
            }
        };
        Ok((linear(&self.to_out, &out)?, own))
    }
}

struct Block {
    self_attention: Attention,
    cross_attention: Attention,
    cross_norm: Option<(Tensor, Tensor)>,
    ffn_in: Linear,
    ffn_out: Linear,
    /// `[1, 6, dim]`: shift, scale, gate of self-attention, then of the feed-forward.
    scale_shift_table: Tensor,
    eps: f64,
}

impl Block {
    fn new(cfg: &WanTransformerConfig, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.inner_dim();
        let cross_norm = if cfg.cross_attn_norm {
            Some((vb.get(dim, "norm2.weight")?, vb.get(dim, "norm2.bias")?))
        } else {
            None
        };
        Ok(Self {
            self_attention: Attention::new(cfg, vb.pp("attn1"))?,
            cross_attention: Attention::new(cfg, vb.pp("attn2"))?,
            cross_norm,
            ffn_in: candle_nn::linear(dim, cfg.ffn_dim, vb.pp("ffn.net.0.proj"))?,
            ffn_out: candle_nn::linear(cfg.ffn_dim, dim, vb.pp("ffn.net.2"))?,
            scale_shift_table: vb.get((1, 6, dim), "scale_shift_table")?,
            eps: cfg.eps,
        })
    }

    /// `modulation`: `[batch, 1 or tokens, 6, dim]` from the timestep projection.
    fn forward(
        &self,
        x: &Tensor,
        text: &Tensor,
        modulation: &Tensor,
        rope: &Rope,
        masks: &Masks,
        past: Option<&(Tensor, Tensor)>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let m = modulation.broadcast_add(&self.scale_shift_table.unsqueeze(0)?)?;
        let part = |i: usize| -> Result<Tensor> { Ok(m.i((.., .., i))?) };
        let (shift, scale, gate) = (part(0)?, part(1)?, part(2)?);
        let (c_shift, c_scale, c_gate) = (part(3)?, part(4)?, part(5)?);

        let normed = norm_modulate(x, &shift, &scale, self.eps)?;
        let full;
        let ranks = match masks.self_attention {
            Some(spec) => spec,
            None => {
                let keys = x.dim(1)? + past.map_or(Ok(0), |(k, _)| k.dim(2))?;
                full = MaskSpec::new(
                    AttentionMask::Bidirectional,
                    vec![0; x.dim(1)?],
                    vec![0; keys],
                )?;
                &full
            }
        };
        let (attended, own_kv) = self.self_attention.forward(
            &normed,
            None,
            Some(rope),
            AttentionKind::Ranked(ranks),
            past,
        )?;
        let x = gated_residual(x, &attended, &gate)?;

        let normed = match &self.cross_norm {
            Some((weight, bias)) => affine_layer_norm(&x, weight, bias, self.eps)?,
            None => x.clone(),
        };
        let (crossed, _) = self.cross_attention.forward(
            &normed,
            Some(text),
            None,
            AttentionKind::Additive(masks.cross_attention),
            None,
        )?;
        let x = (&x + crossed)?;

        let normed = norm_modulate(&x, &c_shift, &c_scale, self.eps)?;
        let hidden = gelu_tanh(&linear(&self.ffn_in, &normed)?)?; // tanh approximation, as Wan's
        let x = gated_residual(&x, &linear(&self.ffn_out, &hidden)?, &c_gate)?;
        Ok((x, own_kv))
    }
}

/// Attention masks of a forward pass: self-attention by segment ranks and the project's
/// mask rule (keys counting cached ones first), cross-attention additive (0 or -inf)
/// `[tokens, text tokens]`; `None` attends to everything.
#[derive(Clone, Copy, Default)]
pub struct Masks<'a> {
    pub self_attention: Option<&'a MaskSpec>,
    pub cross_attention: Option<&'a Tensor>,
}

#[derive(Clone, Copy)]
enum AttentionKind<'a> {
    Ranked(&'a MaskSpec),
    Additive(Option<&'a Tensor>),
}

/// An additive mask `[queries, keys]` from `allowed(query, key)`.
pub fn additive_mask(
    queries: usize,
    keys: usize,
    device: &Device,
    allowed: impl Fn(usize, usize) -> bool,
) -> Result<Tensor> {
    let values: Vec<f32> = (0..queries)
        .flat_map(|q| (0..keys).map(move |k| (q, k)))
        .map(|(q, k)| {
            if allowed(q, k) {
                0.0
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    Ok(Tensor::from_vec(values, (queries, keys), device)?)
}

/// Rotary position embedding of each token: `cos`, `sin` of shape `[tokens, head_dim / 2]`.
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// Positions `(frame, row, column)` of each token; the channels of each head are split
    /// over the three axes as `rope_split` says, each pair rotated by `position * theta^(-2i/d)`.
    pub fn new(
        cfg: &WanTransformerConfig,
        positions: &[[usize; 3]],
        device: &Device,
    ) -> Result<Self> {
        let split = cfg.rope_split();
        let half: usize = split.iter().sum::<usize>() / 2;
        let mut angles = Vec::with_capacity(positions.len() * half);
        for position in positions {
            for (axis, &dim) in split.iter().enumerate() {
                if position[axis] >= cfg.rope_max_seq_len {
                    return Err(Error::Shape(format!(
                        "position {} on RoPE axis {axis} is past rope_max_seq_len {}",
                        position[axis], cfg.rope_max_seq_len
                    )));
                }
                for i in 0..dim / 2 {
                    let frequency = 1.0 / 10000f64.powf((2 * i) as f64 / dim as f64);
                    angles.push(position[axis] as f64 * frequency);
                }
            }
        }
        let cos: Vec<f32> = angles.iter().map(|a| a.cos() as f32).collect();
        let sin: Vec<f32> = angles.iter().map(|a| a.sin() as f32).collect();
        let shape = (positions.len(), half);
        Ok(Self {
            cos: Tensor::from_vec(cos, shape, device)?,
            sin: Tensor::from_vec(sin, shape, device)?,
        })
    }

    /// The positions of a `frames x rows x columns` grid of tokens, frame-major.
    pub fn grid(frames: usize, rows: usize, columns: usize) -> Vec<[usize; 3]> {
        let mut positions = Vec::with_capacity(frames * rows * columns);
        for f in 0..frames {
            for r in 0..rows {
                for c in 0..columns {
                    positions.push([f, r, c]);
                }
            }
        }
        positions
    }

    /// Rotates `x` `[batch, tokens, heads, head_dim]` pair by pair (channels 2i, 2i+1).
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        crate::fused::rope_pairs(x, &self.cos, &self.sin)
    }
}

/// The Wan transformer, as `WanTransformer3DModel` in diffusers.
pub struct WanTransformer {
    cfg: WanTransformerConfig,
    patch_weight: Tensor,
    patch_bias: Tensor,
    time_linear_1: Linear,
    time_linear_2: Linear,
    time_projection: Linear,
    text_linear_1: Linear,
    text_linear_2: Linear,
    /// `prompt_modulation`: the pooled prompt into the timestep embedding.
    prompt_projection: Option<Linear>,
    /// `prompt_queries`: `[n, dim]`, the attention pooling's queries (none: the mean).
    prompt_queries: Option<Tensor>,
    blocks: Vec<Block>,
    proj_out: Linear,
    /// `[1, 2, dim]`: shift and scale of the output norm.
    scale_shift_table: Tensor,
}

impl WanTransformer {
    pub fn new(cfg: &WanTransformerConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(Error::Config)?;
        let dim = cfg.inner_dim();
        let [pt, ph, pw] = cfg.patch_size;
        let embedder = vb.pp("condition_embedder");
        Ok(Self {
            patch_weight: vb.get((dim, cfg.in_channels, pt, ph, pw), "patch_embedding.weight")?,
            patch_bias: vb.get(dim, "patch_embedding.bias")?,
            time_linear_1: candle_nn::linear(
                cfg.freq_dim,
                dim,
                embedder.pp("time_embedder.linear_1"),
            )?,
            time_linear_2: candle_nn::linear(dim, dim, embedder.pp("time_embedder.linear_2"))?,
            time_projection: candle_nn::linear(dim, 6 * dim, embedder.pp("time_proj"))?,
            text_linear_1: candle_nn::linear(
                cfg.text_dim,
                dim,
                embedder.pp("text_embedder.linear_1"),
            )?,
            text_linear_2: candle_nn::linear(dim, dim, embedder.pp("text_embedder.linear_2"))?,
            prompt_projection: cfg
                .prompt_modulation
                .then(|| {
                    candle_nn::linear(
                        dim * cfg.prompt_queries.max(1),
                        dim,
                        embedder.pp("prompt_proj"),
                    )
                })
                .transpose()?,
            prompt_queries: (cfg.prompt_queries > 0)
                .then(|| embedder.get((cfg.prompt_queries, dim), "prompt_queries"))
                .transpose()?,
            blocks: (0..cfg.num_layers)
                .map(|i| Block::new(cfg, vb.pp(format!("blocks.{i}"))))
                .collect::<Result<_>>()?,
            proj_out: candle_nn::linear(dim, cfg.out_channels() * pt * ph * pw, vb.pp("proj_out"))?,
            scale_shift_table: vb.get((1, 2, dim), "scale_shift_table")?,
            cfg: cfg.clone(),
        })
    }

    /// The dtype its weights were loaded in.
    pub fn dtype(&self) -> candle_core::DType {
        self.patch_bias.dtype()
    }

    pub fn config(&self) -> &WanTransformerConfig {
        &self.cfg
    }

    /// Latent video `[batch, channels, frames, height, width]` to patch tokens
    /// `[batch, tokens, dim]`, frame-major (the patch embedding is a strided 3D convolution).
    pub fn embed_patches(&self, latents: &Tensor) -> Result<Tensor> {
        let (batch, channels, frames, height, width) = latents.dims5()?;
        let [pt, ph, pw] = self.cfg.patch_size;
        if channels != self.cfg.in_channels
            || frames % pt != 0
            || height % ph != 0
            || width % pw != 0
        {
            return Err(Error::Shape(format!(
                "latents {:?}: expected {} channels and frames, height, width divisible by patch {:?}",
                latents.dims(),
                self.cfg.in_channels,
                self.cfg.patch_size
            )));
        }
        let (f, h, w) = (frames / pt, height / ph, width / pw);
        // [B, C, f, pt, h, ph, w, pw] -> [B, f, h, w, C, pt, ph, pw]: a patch's values in the
        // order of the convolution weight's (in, kt, kh, kw).
        let patches = latents
            .reshape(vec![batch, channels, f, pt, h, ph, w, pw])?
            .permute(vec![0, 2, 4, 6, 1, 3, 5, 7])?
            .reshape((batch, f * h * w, channels * pt * ph * pw))?;
        let dim = self.cfg.inner_dim();
        let weight = self.patch_weight.reshape((dim, channels * pt * ph * pw))?;
        Ok(patches
            .broadcast_matmul(&weight.t()?)?
            .broadcast_add(&self.patch_bias)?)
    }

    /// Sinusoidal embedding of timesteps `[n]` (cos first), then the time MLP: `[n, dim]`.
    fn time_embedding(&self, timesteps: &Tensor) -> Result<Tensor> {
        let half = self.cfg.freq_dim / 2;
        let device = timesteps.device();
        let exponents: Vec<f32> = (0..half)
            .map(|i| (-(10000f64.ln()) * i as f64 / half as f64).exp() as f32)
            .collect();
        let frequencies = Tensor::from_vec(exponents, (1, half), device)?;
        let arguments = timesteps
            .to_dtype(DType::F32)?
            .unsqueeze(1)?
            .broadcast_mul(&frequencies)?;
        let sinusoid =
            Tensor::cat(&[arguments.cos()?, arguments.sin()?], 1)?.to_dtype(self.dtype())?;
        let hidden = linear(&self.time_linear_1, &sinusoid)?.silu()?;
        linear(&self.time_linear_2, &hidden)
    }

    /// The denoiser's output (the flow velocity) for `latents` at `timestep` given `text`
    /// embeddings `[batch, text_tokens, text_dim]` (umT5 output): same shape as `latents`
    /// with `out_channels`.
    pub fn forward(
        &self,
        latents: &Tensor,
        timestep: WanTimestep,
        text: &Tensor,
    ) -> Result<Tensor> {
        let (batch, _, frames, height, width) = latents.dims5()?;
        let [pt, ph, pw] = self.cfg.patch_size;
        let (f, h, w) = (frames / pt, height / ph, width / pw);
        let device = latents.device();
        let rope = Rope::new(&self.cfg, &Rope::grid(f, h, w), device)?;
        let per_frame;
        let timestep = match timestep {
            WanTimestep::PerFrame(t) => {
                if t.dims() != [batch, f] {
                    return Err(Error::Shape(format!(
                        "per-frame timesteps {:?}: expected [{batch}, {f}]",
                        t.dims()
                    )));
                }
                // Each latent frame's timestep on each of its h x w tokens.
                per_frame = t
                    .unsqueeze(2)?
                    .repeat((1, 1, h * w))?
                    .reshape((batch, f * h * w))?;
                WanTimestep::PerToken(&per_frame)
            }
            other => other,
        };
        // SkyReels-V2: a token sees the tokens of its own frame block and of earlier blocks:
        // the context-causal rule with frame blocks as segments.
        let block = self.cfg.num_frame_per_block;
        let causal = (block > 1)
            .then(|| {
                let ranks = (0..f * h * w)
                    .map(|token| (token / (h * w) / block) as u32)
                    .collect();
                MaskSpec::self_attention(AttentionMask::ContextCausal, ranks)
            })
            .transpose()?;
        let masks = Masks {
            self_attention: causal.as_ref(),
            cross_attention: None,
        };
        let tokens =
            self.forward_tokens(&self.embed_patches(latents)?, timestep, text, &rope, &masks)?;
        let output = self.unpatchify(&tokens, batch, [f, h, w])?;
        if self.cfg.prediction == WanPrediction::Velocity {
            return Ok(output);
        }
        // The flow time of every position of the grid: [batch, 1, frames, height, width].
        let times = match timestep {
            WanTimestep::PerSample(t) => t.reshape((batch, 1, 1, 1, 1))?,
            WanTimestep::PerToken(t) => t
                .reshape(vec![batch, 1, f, 1, h, 1, w, 1])?
                .broadcast_as(vec![batch, 1, f, pt, h, ph, w, pw])?
                .reshape((batch, 1, frames, height, width))?,
            WanTimestep::PerFrame(_) => unreachable!("turned into per-token timesteps above"),
        };
        self.velocity(output, latents, &(times / WAN_TIME_SCALE)?)
    }

    /// The network's `output` for `latents` at flow times `times` (0..1, broadcastable to
    /// the latents) as Wan's velocity: itself, or for a sample prediction `(latents - output)
    /// / max(t, MIN_TIME)`.
    pub fn velocity(&self, output: Tensor, latents: &Tensor, times: &Tensor) -> Result<Tensor> {
        match self.cfg.prediction {
            WanPrediction::Velocity => Ok(output),
            WanPrediction::Sample => {
                let times = times
                    .to_dtype(output.dtype())?
                    .maximum(WanPrediction::MIN_TIME)?;
                Ok((latents.to_dtype(output.dtype())? - output)?.broadcast_div(&times)?)
            }
        }
    }

    /// The transformer on tokens `[batch, tokens, dim]` with their RoPE and masks: `[batch,
    /// tokens, out_channels * patch volume]` (for scenes, whose tokens, positions and masks
    /// lct packs). Timesteps per sample or per token.
    pub fn forward_tokens(
        &self,
        tokens: &Tensor,
        timestep: WanTimestep,
        text: &Tensor,
        rope: &Rope,
        masks: &Masks,
    ) -> Result<Tensor> {
        Ok(self
            .forward_tokens_cached(tokens, timestep, text, rope, masks, None)?
            .0)
    }

    /// [`Self::forward_tokens`] after the cached self-attention keys and values of earlier
    /// tokens (`past`, one entry per block; the self-attention mask then spans past and new
    /// keys); also returns the new tokens' own keys and values, per block.
    pub fn forward_tokens_cached(
        &self,
        tokens: &Tensor,
        timestep: WanTimestep,
        text: &Tensor,
        rope: &Rope,
        masks: &Masks,
        past: Option<&[(Tensor, Tensor)]>,
    ) -> Result<(Tensor, Vec<(Tensor, Tensor)>)> {
        if let Some(past) = past {
            if past.len() != self.blocks.len() {
                return Err(Error::KvCache(format!(
                    "{} cached layers for a transformer of {} blocks",
                    past.len(),
                    self.blocks.len()
                )));
            }
        }
        let (batch, count, dim) = tokens.dims3()?;
        // temb: [batch, 1 or tokens, dim]
        let temb =
            match timestep {
                WanTimestep::PerSample(t) => self.time_embedding(t)?.reshape((batch, 1, dim))?,
                WanTimestep::PerToken(t) => {
                    if t.dims() != [batch, count] {
                        return Err(Error::Shape(format!(
                            "per-token timesteps {:?}: expected [{batch}, {count}]",
                            t.dims()
                        )));
                    }
                    self.time_embedding(&t.flatten_all()?)?
                        .reshape((batch, count, dim))?
                }
                WanTimestep::PerFrame(_) => return Err(Error::Shape(
                    "per-frame timesteps need the latent grid: use forward, or per-token timesteps"
                        .into(),
                )),
            };
        let raw_text = text;
        let text = self
            .text_linear_2
            .forward(&gelu_tanh(&linear(&self.text_linear_1, text)?)?)?;
        let temb = match &self.prompt_projection {
            Some(projection) => {
                let readable = readable_prompt(raw_text, text.dtype(), masks.cross_attention)?;
                let pooled = match &self.prompt_queries {
                    Some(queries) => attention_pooled_prompt(&readable, &text, queries)?,
                    None => mean_pooled_prompt(&readable, &text)?,
                };
                temb.broadcast_add(&linear(projection, &pooled)?)?
            }
            None => temb,
        };
        let steps = temb.dim(1)?;
        let modulation = self
            .time_projection
            .forward(&temb.silu()?)?
            .reshape((batch, steps, 6, dim))?;
        let mut x = tokens.clone();
        let mut own = Vec::with_capacity(self.blocks.len());
        for (i, block) in self.blocks.iter().enumerate() {
            let (next, kv) =
                block.forward(&x, &text, &modulation, rope, masks, past.map(|p| &p[i]))?;
            x = next;
            own.push(kv);
        }
        let out = self
            .scale_shift_table
            .unsqueeze(0)?
            .broadcast_add(&temb.unsqueeze(2)?)?;
        let (shift, scale) = (out.i((.., .., 0))?, out.i((.., .., 1))?);
        let x = norm_modulate(&x, &shift, &scale, self.cfg.eps)?;
        Ok((linear(&self.proj_out, &x)?, own))
    }

    /// Output tokens back to `[batch, channels, frames, height, width]`.
    pub fn unpatchify(
        &self,
        tokens: &Tensor,
        batch: usize,
        [f, h, w]: [usize; 3],
    ) -> Result<Tensor> {
        let [pt, ph, pw] = self.cfg.patch_size;
        let channels = self.cfg.out_channels();
        Ok(tokens
            .reshape(vec![batch, f, h, w, pt, ph, pw, channels])?
            .permute(vec![0, 7, 1, 4, 2, 5, 3, 6])?
            .reshape((batch, channels, f * pt, h * ph, w * pw))?)
    }
}

/// Which prompt tokens each video token may read, 1 or 0 in `dtype`: the prompt's own tokens
/// (rows of `raw` `[batch, text_tokens, text_dim]` that are not the zero padding) within the
/// token's cross-attention window (`mask` `[tokens, text_tokens]`, 0 where allowed). `[batch,
/// 1, text_tokens]` without a mask, else `[batch, tokens, text_tokens]`.
fn readable_prompt(raw: &Tensor, dtype: DType, mask: Option<&Tensor>) -> Result<Tensor> {
    let present = raw
        .abs()?
        .sum_keepdim(D::Minus1)?
        .gt(0f64)?
        .to_dtype(dtype)?
        .transpose(1, 2)?;
    Ok(match mask {
        // 0 (allowed) -> 1, -inf -> 0, for every video token.
        Some(mask) => {
            let open = mask.eq(0f64)?.to_dtype(dtype)?.unsqueeze(0)?;
            present.broadcast_mul(&open)?
        }
        None => present,
    })
}

/// The mean of the embedded prompt tokens `text` `[batch, text_tokens, dim]` that each video
/// token may read (`readable`, from [`readable_prompt`]): `[batch, 1 or tokens, dim]`; a token
/// that may read nothing gets zeros.
fn mean_pooled_prompt(readable: &Tensor, text: &Tensor) -> Result<Tensor> {
    let counts = readable.sum_keepdim(D::Minus1)?.maximum(1f64)?;
    Ok(readable
        .broadcast_div(&counts)?
        .matmul(&text.contiguous()?)?)
}

/// Attention pooling of `text` `[batch, text_tokens, dim]` by `queries` `[n, dim]` over the
/// tokens each video token may read (`readable`): each query's softmax-weighted sum, side by
/// side, `[batch, 1 or tokens, n * dim]`; a token that may read nothing gets zeros.
fn attention_pooled_prompt(readable: &Tensor, text: &Tensor, queries: &Tensor) -> Result<Tensor> {
    let (batch, rows, text_tokens) = readable.dims3()?;
    let (n, dim) = queries.dims2()?;
    let text = text.contiguous()?;
    let logits = (queries.broadcast_matmul(&text.transpose(1, 2)?)? / (dim as f64).sqrt())?;
    // [batch, rows, n, text_tokens]: unreadable tokens pushed far down, then each row's
    // softmax shifted by its own largest readable logit (an unreadable one may be larger).
    let hidden = ((readable.unsqueeze(2)? - 1.0)? * 1e30)?;
    let logits = logits.unsqueeze(1)?.broadcast_add(&hidden)?;
    let weights = logits
        .broadcast_sub(&logits.max_keepdim(D::Minus1)?)?
        .exp()?
        .broadcast_mul(&readable.unsqueeze(2)?)?;
    let weights = weights.broadcast_div(&weights.sum_keepdim(D::Minus1)?.maximum(1e-30)?)?;
    Ok(weights
        .reshape((batch, rows * n, text_tokens))?
        .matmul(&text)?
        .reshape((batch, rows, n * dim))?)
}

/// `x * (1 + scale) + shift`, broadcast over tokens.
fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    Ok(x.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(shift)?)
}

/// `LayerNorm(x) * (1 + scale) + shift`: the project's fused kernel when Wan's eps is its
/// eps (modulation per token, as in LCT scenes, or per sample), else candle ops.
fn norm_modulate(x: &Tensor, shift: &Tensor, scale: &Tensor, eps: f64) -> Result<Tensor> {
    if eps == crate::fused::NORM_EPS {
        crate::fused::modulate(x, shift, scale)
    } else {
        modulate(&layer_norm(x, None, eps)?, shift, scale)
    }
}

/// Layer norm with an affine `weight` and `bias` `[dim]`: the fused modulation (a shared
/// `scale = weight - 1`, `shift = bias`) when Wan's eps is the project's, else candle ops.
fn affine_layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if eps == crate::fused::NORM_EPS {
        let dim = weight.dim(0)?;
        crate::fused::modulate(
            x,
            &bias.reshape((1, dim))?,
            &(weight - 1.0)?.reshape((1, dim))?,
        )
    } else {
        layer_norm(x, Some((weight, bias)), eps)
    }
}

/// Layer norm over the last dimension, with an optional affine `(weight, bias)`.
fn layer_norm(x: &Tensor, affine: Option<(&Tensor, &Tensor)>, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let variance = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(variance + eps)?.sqrt()?)?;
    Ok(match affine {
        Some((weight, bias)) => normed.broadcast_mul(weight)?.broadcast_add(bias)?,
        None => normed,
    })
}

/// RMS norm over the last dimension (all heads together) with a weight.
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    crate::fused::rms_norm(x, weight, eps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pooled_prompt_reads_the_prompt_tokens_each_video_token_may_read() {
        let device = Device::Cpu;
        // One sample, four text tokens, the last one zero padding.
        let raw = Tensor::new(
            &[[[1f32, 0.0], [0.0, 2.0], [3.0, 3.0], [0.0, 0.0]]],
            &device,
        )
        .unwrap();
        let text = Tensor::new(
            &[[[1f32, 10.0], [2.0, 20.0], [3.0, 30.0], [100.0, 100.0]]],
            &device,
        )
        .unwrap();
        // Without a window: the mean of the three prompt tokens, padding left out.
        let mean = |mask: Option<&Tensor>| {
            let readable = readable_prompt(&raw, DType::F32, mask).unwrap();
            mean_pooled_prompt(&readable, &text).unwrap()
        };
        assert_eq!(mean(None).to_vec3::<f32>().unwrap(), [[[2.0, 20.0]]]);
        // Video token 0 may read text tokens 0 and 1, token 1 only the padding (nothing).
        let mask = additive_mask(2, 4, &device, |q, k| {
            (q == 0 && k < 2) || (q == 1 && k == 3)
        })
        .unwrap();
        assert_eq!(
            mean(Some(&mask)).to_vec3::<f32>().unwrap(),
            [[[1.5, 15.0], [0.0, 0.0]]]
        );

        // Attention pooling: a zero query weighs every readable token alike (the mean); a
        // query along the first channel picks the readable token largest there.
        let queries = Tensor::new(&[[0f32, 0.0], [200.0, 0.0]], &device).unwrap();
        let readable = readable_prompt(&raw, DType::F32, Some(&mask)).unwrap();
        let pooled = attention_pooled_prompt(&readable, &text, &queries)
            .unwrap()
            .to_vec3::<f32>()
            .unwrap();
        let expected = [[1.5f32, 15.0, 2.0, 20.0], [0.0, 0.0, 0.0, 0.0]];
        for (row, want) in pooled[0].iter().zip(expected) {
            for (got, want) in row.iter().zip(want) {
                assert!((got - want).abs() < 1e-4, "{pooled:?}");
            }
        }
    }
}
