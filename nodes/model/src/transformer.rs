//! The MMDiT scene transformer: separate text and video weights (QKV, MLP, adaLN), one joint
//! self-attention over the packed scene, every token modulated by its own segment's timestep.
//!
//! Tensor names (the `vb.pp` paths) are the checkpoint's names, listed in `model.safetensors`.

use crate::attention::{attention, naive_attention, MaskSpec};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fused::{gelu_erf, linear};
use crate::kv_cache::{KvView, SegmentKv};
use crate::layout::{AttentionMask, SceneLayout, SegmentKind};
use crate::rope::{apply_rope, Rope};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Linear, RmsNorm, VarBuilder};
use std::sync::Arc;

use crate::fused::NORM_EPS;

/// One forward's inputs. Batch `B` is shared by every tensor (2 for classifier-free guidance).
#[derive(Debug, Clone, Copy)]
pub struct SceneBatch<'a> {
    pub layout: &'a SceneLayout,
    /// One per segment (global included): `[B, text_len, text_dim]`.
    pub text: &'a [Tensor],
    /// One per shot segment, in segment order: noisy latents `[B, C, T, H, W]`.
    pub latents: &'a [Tensor],
}

/// What a forward returns: one velocity per shot segment, and optionally the per-segment K/V.
pub struct SceneOutput {
    /// `[B, C, T, H, W]` per shot segment (empty when outputs were not requested).
    pub velocities: Vec<Tensor>,
    /// Post-RoPE keys and values of every segment of the batch, when captured.
    pub captured: Vec<SegmentKv>,
}

#[derive(Debug, Clone)]
struct StreamBlock {
    modulation: Linear,
    qkv: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    out_proj: Linear,
    mlp_in: Linear,
    mlp_out: Linear,
}

/// The six modulation tensors of a stream, each `[tokens, hidden]`.
struct Modulation {
    shift_attn: Tensor,
    scale_attn: Tensor,
    gate_attn: Tensor,
    shift_mlp: Tensor,
    scale_mlp: Tensor,
    gate_mlp: Tensor,
}

fn rms_norm(vb: VarBuilder, size: usize) -> Result<RmsNorm> {
    Ok(candle_nn::rms_norm(size, NORM_EPS, vb)?)
}

/// The fused norms have no backward pass; tensors carrying gradients take the composed path.
fn apply_rms(norm: &RmsNorm, x: &Tensor) -> Result<Tensor> {
    if x.track_op() {
        Ok(norm.forward_diff(x)?)
    } else {
        Ok(norm.forward(&x.contiguous()?)?)
    }
}

fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    crate::fused::modulate(x, shift, scale)
}

impl StreamBlock {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            modulation: candle_nn::linear(h, 6 * h, vb.pp("modulation"))?,
            qkv: candle_nn::linear(h, 3 * h, vb.pp("qkv"))?,
            q_norm: rms_norm(vb.pp("q_norm"), cfg.head_dim())?,
            k_norm: rms_norm(vb.pp("k_norm"), cfg.head_dim())?,
            out_proj: candle_nn::linear(h, h, vb.pp("out_proj"))?,
            mlp_in: candle_nn::linear(h, cfg.mlp_hidden_size, vb.pp("mlp_in"))?,
            mlp_out: candle_nn::linear(cfg.mlp_hidden_size, h, vb.pp("mlp_out"))?,
        })
    }

    /// `conditioning` is `[segments, hidden]`, or `[B, segments, hidden]` when each sample has
    /// its own timesteps (already through SiLU); `segment_ids` maps each token of this stream
    /// to its segment.
    fn modulation(&self, conditioning: &Tensor, segment_ids: &Tensor) -> Result<Modulation> {
        let per_segment = linear(&self.modulation, conditioning)?;
        let per_token = per_segment.index_select(segment_ids, conditioning.rank() - 2)?;
        let chunks = per_token.chunk(6, D::Minus1)?;
        Ok(Modulation {
            shift_attn: chunks[0].clone(),
            scale_attn: chunks[1].clone(),
            gate_attn: chunks[2].clone(),
            shift_mlp: chunks[3].clone(),
            scale_mlp: chunks[4].clone(),
            gate_mlp: chunks[5].clone(),
        })
    }

    /// Modulated norm and QKV: returns q, k, v as `[B, tokens, heads, head_dim]` with q and k
    /// RMS-normalised per head.
    fn qkv(&self, cfg: &Config, x: &Tensor, m: &Modulation) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, n, _) = x.dims3()?;
        let h = modulate(x, &m.shift_attn, &m.scale_attn)?;
        let qkv = linear(&self.qkv, &h)?.reshape((b, n, 3, cfg.num_heads, cfg.head_dim()))?;
        let q = apply_rms(&self.q_norm, &qkv.narrow(2, 0, 1)?.squeeze(2)?)?;
        let k = apply_rms(&self.k_norm, &qkv.narrow(2, 1, 1)?.squeeze(2)?)?;
        let v = qkv.narrow(2, 2, 1)?.squeeze(2)?;
        Ok((q, k, v))
    }

    /// Residual updates after attention: output projection, then the MLP.
    fn finish(&self, x: &Tensor, attended: &Tensor, m: &Modulation) -> Result<Tensor> {
        let x = (x + linear(&self.out_proj, attended)?.broadcast_mul(&m.gate_attn)?)?;
        let h = modulate(&x, &m.shift_mlp, &m.scale_mlp)?;
        let h = linear(&self.mlp_out, &gelu_erf(&linear(&self.mlp_in, &h)?)?)?;
        Ok((x + h.broadcast_mul(&m.gate_mlp)?)?)
    }
}

#[derive(Debug, Clone)]
struct JointBlock {
    text: StreamBlock,
    video: StreamBlock,
}

/// The LCT scene transformer. Holds no device or dtype choice: both come from the weights.
#[derive(Debug, Clone)]
pub struct SceneTransformer {
    cfg: Config,
    video_in: Linear,
    text_in: Linear,
    time_in: Linear,
    time_out: Linear,
    blocks: Vec<JointBlock>,
    final_modulation: Linear,
    final_out: Linear,
    /// Pooled prompt to conditioning (`Config::pooled_text`).
    pooled: Option<(Linear, Linear)>,
    rope: Rope,
    device: Device,
    dtype: DType,
}

/// Per-stream token bookkeeping of one forward.
struct Streams {
    text_ids: Tensor,
    video_ids: Tensor,
    text_len: usize,
    video_len: usize,
    /// For each packed position, its row in `[text tokens; video tokens]`.
    pack_order: Tensor,
    /// For each row of `[text tokens; video tokens]`, its packed position.
    unpack_order: Tensor,
}

impl SceneTransformer {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let h = cfg.hidden_size;
        let blocks = (0..cfg.depth)
            .map(|i| {
                let vb = vb.pp(format!("blocks.{i}"));
                Ok(JointBlock {
                    text: StreamBlock::new(cfg, vb.pp("text"))?,
                    video: StreamBlock::new(cfg, vb.pp("video"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            video_in: candle_nn::linear(cfg.patch_dim(), h, vb.pp("video_in"))?,
            text_in: candle_nn::linear(cfg.text_dim, h, vb.pp("text_in"))?,
            time_in: candle_nn::linear(cfg.timestep_features, h, vb.pp("time_in"))?,
            time_out: candle_nn::linear(h, h, vb.pp("time_out"))?,
            blocks,
            final_modulation: candle_nn::linear(h, 2 * h, vb.pp("final_modulation"))?,
            final_out: candle_nn::linear(h, cfg.patch_dim(), vb.pp("final_out"))?,
            pooled: if cfg.pooled_text {
                Some((
                    candle_nn::linear(cfg.text_dim, h, vb.pp("pooled_in"))?,
                    candle_nn::linear(h, h, vb.pp("pooled_out"))?,
                ))
            } else {
                None
            },
            rope: Rope::new(cfg.rope_axes, cfg.rope_theta),
            device: vb.device().clone(),
            dtype: vb.dtype(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Token grid of a latent `[B, C, T, H, W]`, checked against the config.
    pub fn token_grid(&self, latent_dims: &[usize]) -> Result<[usize; 3]> {
        let p = self.cfg.patch_size;
        match latent_dims {
            &[_, c, t, h, w] if c == self.cfg.latent_channels && h % p == 0 && w % p == 0 && t > 0 && h > 0 && w > 0 => {
                Ok([t, h / p, w / p])
            }
            dims => Err(Error::Shape(format!(
                "latent {dims:?} is not [B, {}, T, H, W] with H and W multiples of the patch size {p}",
                self.cfg.latent_channels
            ))),
        }
    }

    /// Sinusoidal features of `t * 1000` through the timestep MLP: `[n, hidden]` (before the
    /// SiLU that [`Self::conditioning`] applies).
    fn timestep_embedding(&self, timesteps: &[f32]) -> Result<Tensor> {
        let half = self.cfg.timestep_features / 2;
        let mut features = Vec::with_capacity(timesteps.len() * half * 2);
        for &t in timesteps {
            let t = t as f64 * 1000.0;
            let frequencies =
                (0..half).map(|i| (-(10_000f64.ln()) * i as f64 / half as f64).exp() * t);
            features.extend(frequencies.clone().map(|a| a.cos() as f32));
            features.extend(frequencies.map(|a| a.sin() as f32));
        }
        let features = Tensor::from_vec(features, (timesteps.len(), half * 2), &self.device)?
            .to_dtype(self.dtype)?;
        linear(&self.time_out, &linear(&self.time_in, &features)?.silu()?)
    }

    /// `[B, tokens, text_dim] -> [B, text_dim]`: the sum over tokens (zeros for no token).
    fn text_sum(&self, text: &Tensor) -> Result<Tensor> {
        let (b, tokens, dim) = text.dims3()?;
        if tokens == 0 {
            return Ok(Tensor::zeros((b, dim), self.dtype, &self.device)?);
        }
        Ok(text.to_dtype(self.dtype)?.sum(1)?)
    }

    /// Per segment, the conditioning its tokens are modulated by: the timestep embedding
    /// plus, with `pooled_text`, the pooled prompt through its MLP, then SiLU. `[S, hidden]`,
    /// or `[B, S, hidden]` when samples have their own timesteps or prompts. A shot pools its
    /// prompt with the global one; the global prompt's sum comes from `past` when the batch
    /// does not carry it (a KV-cached shot).
    fn conditioning(
        &self,
        batch: &SceneBatch,
        past: Option<&KvView>,
        per_sample_timesteps: Option<&[Vec<f32>]>,
        text_sums: &[Tensor],
        b: usize,
    ) -> Result<Tensor> {
        let layout = batch.layout;
        let segments = layout.segments();
        let time = match per_sample_timesteps {
            None => self.timestep_embedding(&layout.timesteps())?,
            Some(per_sample) => {
                if per_sample.len() != b || per_sample.iter().any(|t| t.len() != segments.len()) {
                    return Err(Error::Shape(format!(
                        "{} timestep rows for a batch of {b}; each needs {} (one per segment)",
                        per_sample.len(),
                        segments.len()
                    )));
                }
                self.timestep_embedding(&per_sample.concat())?.reshape((
                    b,
                    segments.len(),
                    self.cfg.hidden_size,
                ))?
            }
        };
        let Some((pooled_in, pooled_out)) = &self.pooled else {
            return Ok(time.silu()?);
        };
        let global = match segments.iter().position(|s| s.kind == SegmentKind::Global) {
            Some(g) => Some((text_sums[g].clone(), segments[g].text_len)),
            None => match past.and_then(|p| {
                p.entries()
                    .iter()
                    .find(|e| e.segment().kind == SegmentKind::Global)
            }) {
                Some(entry) => Some((
                    entry.text_sum().cloned().ok_or_else(|| {
                        Error::KvCache(
                            "the cached global prompt carries no pooled text: the cache was built by a model without it".into(),
                        )
                    })?,
                    entry.segment().text_len,
                )),
                None => None,
            },
        };
        let pooled = segments
            .iter()
            .zip(text_sums)
            .map(|(segment, sum)| {
                let (sum, count) = match (&global, segment.kind) {
                    (Some((g, g_len)), SegmentKind::Shot(_)) => {
                        ((sum + g)?, segment.text_len + g_len)
                    }
                    _ => (sum.clone(), segment.text_len),
                };
                Ok((sum / count.max(1) as f64)?)
            })
            .collect::<Result<Vec<_>>>()?;
        let pooled = Tensor::stack(&pooled, 1)?;
        let pooled = linear(pooled_out, &linear(pooled_in, &pooled)?.silu()?)?;
        Ok(pooled.broadcast_add(&time)?.silu()?)
    }

    fn patchify(&self, latent: &Tensor) -> Result<Tensor> {
        let (b, c, t, h, w) = latent.dims5()?;
        let p = self.cfg.patch_size;
        let x = latent
            .reshape(&[b, c, t, h / p, p, w / p, p][..])?
            .permute(&[0, 2, 3, 5, 1, 4, 6][..])?;
        Ok(x.reshape((b, t * (h / p) * (w / p), c * p * p))?)
    }

    fn unpatchify(&self, tokens: &Tensor, grid: [usize; 3]) -> Result<Tensor> {
        let b = tokens.dim(0)?;
        let [t, hp, wp] = grid;
        let p = self.cfg.patch_size;
        let c = self.cfg.latent_channels;
        let x = tokens
            .reshape(&[b, t, hp, wp, c, p, p][..])?
            .permute(&[0, 4, 1, 2, 5, 3, 6][..])?;
        Ok(x.reshape((b, c, t, hp * p, wp * p))?)
    }

    /// Checks the batch against the layout and embeds both streams:
    /// text `[B, text tokens, hidden]`, video `[B, video tokens, hidden]` in segment order.
    fn embed(&self, batch: &SceneBatch) -> Result<(usize, Tensor, Tensor)> {
        let layout = batch.layout;
        let segments = layout.segments();
        if batch.text.len() != segments.len() {
            return Err(Error::Shape(format!(
                "{} text tensors given for {} segments",
                batch.text.len(),
                segments.len()
            )));
        }
        let shots = layout.shot_indices();
        if batch.latents.len() != shots.len() {
            return Err(Error::Shape(format!(
                "{} latents given for {} shot segments",
                batch.latents.len(),
                shots.len()
            )));
        }
        let b = batch.text[0].dim(0).map_err(|_| {
            Error::Shape(format!(
                "segment 0 text has shape {:?}, expected [B, tokens, {}]",
                batch.text[0].dims(),
                self.cfg.text_dim
            ))
        })?;
        let mut text_parts = Vec::new();
        for (i, (segment, text)) in segments.iter().zip(batch.text).enumerate() {
            if text.dims() != [b, segment.text_len, self.cfg.text_dim] {
                return Err(Error::Shape(format!(
                    "segment {i} text has shape {:?}, expected [{b}, {}, {}]",
                    text.dims(),
                    segment.text_len,
                    self.cfg.text_dim
                )));
            }
            if segment.text_len > 0 {
                text_parts.push(text.to_dtype(self.dtype)?);
            }
        }
        let mut video_parts = Vec::new();
        let mut latents = batch.latents.iter();
        for (i, segment) in segments.iter().enumerate() {
            match segment.kind {
                SegmentKind::Global => video_parts.push(Tensor::zeros(
                    (b, 1, self.cfg.patch_dim()),
                    self.dtype,
                    &self.device,
                )?),
                SegmentKind::Shot(_) => {
                    let latent = latents.next().expect("counted above");
                    let grid = self
                        .token_grid(latent.dims())
                        .map_err(|e| Error::Shape(format!("segment {i}: {e}")))?;
                    if latent.dim(0)? != b || grid != segment.grid {
                        return Err(Error::Shape(format!(
                            "segment {i}: latent {:?} gives batch {} and token grid {grid:?}, but the layout says batch {b} and grid {:?}",
                            latent.dims(),
                            latent.dim(0)?,
                            segment.grid
                        )));
                    }
                    video_parts.push(self.patchify(&latent.to_dtype(self.dtype)?)?);
                }
            }
        }
        let text = if text_parts.is_empty() {
            Tensor::zeros((b, 0, self.cfg.hidden_size), self.dtype, &self.device)?
        } else {
            linear(&self.text_in, &Tensor::cat(&text_parts, 1)?)?
        };
        let video = linear(&self.video_in, &Tensor::cat(&video_parts, 1)?)?;
        Ok((b, text, video))
    }

    fn streams(&self, layout: &SceneLayout) -> Result<Streams> {
        let (text_ids, video_ids) = layout.stream_segment_ids();
        let (text_len, video_len) = (text_ids.len(), video_ids.len());
        let mut pack_order = Vec::with_capacity(text_len + video_len);
        let (mut text_at, mut video_at) = (0u32, text_len as u32);
        for s in layout.segments() {
            pack_order.extend(text_at..text_at + s.text_len as u32);
            text_at += s.text_len as u32;
            pack_order.extend(video_at..video_at + s.video_len() as u32);
            video_at += s.video_len() as u32;
        }
        let mut unpack_order = vec![0u32; pack_order.len()];
        for (packed, &row) in pack_order.iter().enumerate() {
            unpack_order[row as usize] = packed as u32;
        }
        Ok(Streams {
            text_len,
            video_len,
            text_ids: Tensor::new(text_ids, &self.device)?,
            video_ids: Tensor::new(video_ids, &self.device)?,
            pack_order: Tensor::new(pack_order, &self.device)?,
            unpack_order: Tensor::new(unpack_order, &self.device)?,
        })
    }

    /// Interleaves per-stream tensors `[B, n, ...]` into packed order along dim 1: one gather,
    /// so that the backward pass is one scatter rather than a zero-padded copy per segment.
    fn pack(streams: &Streams, text: &Tensor, video: &Tensor) -> Result<Tensor> {
        let joined = if streams.text_len > 0 {
            Tensor::cat(&[text, video], 1)?
        } else {
            video.clone()
        };
        Ok(joined.contiguous()?.index_select(&streams.pack_order, 1)?)
    }

    /// Splits a packed `[B, L, ...]` back into (text, video).
    fn unpack(streams: &Streams, packed: &Tensor) -> Result<(Option<Tensor>, Tensor)> {
        let joined = packed
            .contiguous()?
            .index_select(&streams.unpack_order, 1)?;
        let video = joined.narrow(1, streams.text_len, streams.video_len)?;
        let text = (streams.text_len > 0)
            .then(|| joined.narrow(1, 0, streams.text_len))
            .transpose()?;
        Ok((text, video))
    }

    /// The scene path. `past` holds cached K/V of earlier segments (context-causal only);
    /// `capture` returns this batch's per-segment K/V; `outputs` false skips the final layer.
    pub fn forward_scene(
        &self,
        batch: &SceneBatch,
        mask: AttentionMask,
        past: Option<&KvView>,
        capture: bool,
        outputs: bool,
    ) -> Result<SceneOutput> {
        self.forward_scene_with(batch, mask, past, capture, outputs, None)
    }

    /// The velocities of a batch whose samples share a layout but each have their own
    /// timesteps: `timesteps[b]` holds sample `b`'s, one per segment (the layout's are
    /// ignored). Same-layout training scenes run as one batch this way: fewer, larger ops.
    pub fn forward_per_sample_timesteps(
        &self,
        batch: &SceneBatch,
        mask: AttentionMask,
        timesteps: &[Vec<f32>],
    ) -> Result<Vec<Tensor>> {
        Ok(self
            .forward_scene_with(batch, mask, None, false, true, Some(timesteps))?
            .velocities)
    }

    fn forward_scene_with(
        &self,
        batch: &SceneBatch,
        mask: AttentionMask,
        past: Option<&KvView>,
        capture: bool,
        outputs: bool,
        per_sample_timesteps: Option<&[Vec<f32>]>,
    ) -> Result<SceneOutput> {
        let layout = batch.layout;
        let (b, mut text, mut video) = self.embed(batch)?;
        let past = past.filter(|p| !p.is_empty());
        if let Some(past) = past {
            if mask != AttentionMask::ContextCausal {
                return Err(Error::KvCache(
                    "cached history is exact only under the context-causal mask; this call uses the bidirectional mask".into(),
                ));
            }
            if past.batch() != b {
                return Err(Error::KvCache(format!(
                    "the cache was built with batch {} (guidance {}), this call has batch {b}",
                    past.batch(),
                    if past.batch() == 2 { "on" } else { "off" }
                )));
            }
            if past.layers() != self.cfg.depth {
                return Err(Error::KvCache(format!(
                    "the cache has {} layers, the model {}",
                    past.layers(),
                    self.cfg.depth
                )));
            }
        }
        let past_segments = past.map_or(0, |p| p.len()) as u32;
        let query_ranks = layout.segment_ranks(past_segments);
        let key_ranks = match past {
            Some(p) => {
                let mut ranks = p.segment_ranks();
                ranks.extend_from_slice(&query_ranks);
                ranks
            }
            None => query_ranks.clone(),
        };
        let spec = MaskSpec::new(mask, query_ranks, key_ranks)?;
        let (cos, sin) = self.rope.cos_sin(&layout.rope_positions(), &self.device)?;
        let (cos, sin) = (cos.to_dtype(self.dtype)?, sin.to_dtype(self.dtype)?);
        let streams = self.streams(layout)?;
        let text_sums = if self.pooled.is_some() {
            batch
                .text
                .iter()
                .map(|t| self.text_sum(t))
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let conditioning = self.conditioning(batch, past, per_sample_timesteps, &text_sums, b)?;
        let (heads, head_dim) = (self.cfg.num_heads, self.cfg.head_dim());
        let mut captured_layers = Vec::new();

        for (layer, block) in self.blocks.iter().enumerate() {
            let video_mod = block.video.modulation(&conditioning, &streams.video_ids)?;
            let (vq, vk, vv) = block.video.qkv(&self.cfg, &video, &video_mod)?;
            let text_mod = if streams.text_len > 0 {
                Some(block.text.modulation(&conditioning, &streams.text_ids)?)
            } else {
                None
            };
            let (tq, tk, tv) = match &text_mod {
                Some(m) => block.text.qkv(&self.cfg, &text, m)?,
                None => {
                    let empty = Tensor::zeros((b, 0, heads, head_dim), self.dtype, &self.device)?;
                    (empty.clone(), empty.clone(), empty)
                }
            };
            let to_heads = |t: &Tensor, v: &Tensor| -> Result<Tensor> {
                Ok(Self::pack(&streams, t, v)?.transpose(1, 2)?.contiguous()?)
            };
            let q = apply_rope(&to_heads(&tq, &vq)?, &cos, &sin)?;
            let k = apply_rope(&to_heads(&tk, &vk)?, &cos, &sin)?;
            let v = to_heads(&tv, &vv)?;
            if capture {
                captured_layers.push((k.clone(), v.clone()));
            }
            let attended = match past {
                Some(p) => {
                    let (past_k, past_v) = p.layer(layer)?;
                    let k = Tensor::cat(&[&past_k, &k], 2)?;
                    let v = Tensor::cat(&[&past_v, &v], 2)?;
                    attention(&q, &k, &v, &spec)?
                }
                None => attention(&q, &k, &v, &spec)?,
            };
            let (text_attended, video_attended) = Self::unpack(&streams, &attended)?;
            video = block.video.finish(&video, &video_attended, &video_mod)?;
            if let (Some(m), Some(a)) = (&text_mod, &text_attended) {
                text = block.text.finish(&text, a, m)?;
            }
        }

        let captured = if capture {
            layout
                .segments()
                .iter()
                .enumerate()
                .map(|(i, segment)| {
                    let layers = captured_layers
                        .iter()
                        .map(|(k, v)| {
                            Ok((
                                k.narrow(2, segment.offset, segment.len())?.contiguous()?,
                                v.narrow(2, segment.offset, segment.len())?.contiguous()?,
                            ))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let entry = SegmentKv::new(segment.clone(), layers);
                    Ok(match text_sums.get(i) {
                        Some(sum) => entry.with_text_sum(sum.clone()),
                        None => entry,
                    })
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };

        let velocities = if outputs {
            let final_mod = linear(&self.final_modulation, &conditioning)?
                .index_select(&streams.video_ids, conditioning.rank() - 2)?
                .chunk(2, D::Minus1)?;
            let out = linear(
                &self.final_out,
                &modulate(&video, &final_mod[0], &final_mod[1])?,
            )?;
            let mut velocities = Vec::new();
            let mut at = 0;
            for segment in layout.segments() {
                if segment.is_shot() {
                    let tokens = out.narrow(1, at, segment.video_len())?;
                    velocities.push(self.unpatchify(&tokens, segment.grid)?);
                }
                at += segment.video_len();
            }
            debug_assert_eq!(at, streams.video_len);
            velocities
        } else {
            Vec::new()
        };
        Ok(SceneOutput {
            velocities,
            captured,
        })
    }

    /// Velocities of every shot segment.
    pub fn forward(
        &self,
        batch: &SceneBatch,
        mask: AttentionMask,
        past: Option<&KvView>,
    ) -> Result<Vec<Tensor>> {
        Ok(self
            .forward_scene(batch, mask, past, false, true)?
            .velocities)
    }

    /// Runs `batch` as history under the context-causal mask and returns `past` extended by
    /// the K/V of each of its segments (the final layer is skipped).
    pub fn extend_cache(&self, batch: &SceneBatch, past: &KvView) -> Result<KvView> {
        let out =
            self.forward_scene(batch, AttentionMask::ContextCausal, Some(past), true, false)?;
        let mut view = past.clone();
        for segment in out.captured {
            view = view.extended(Arc::new(segment));
        }
        Ok(view)
    }

    /// The single-shot model as pre-trained: `[text][video]` with text positions `j` on all
    /// three axes, video after the text, full attention. Written independently of
    /// `SceneLayout` and the blocked kernels so that the scene path can be checked against it.
    pub fn forward_single_shot(
        &self,
        latent: &Tensor,
        text: &Tensor,
        timestep: f32,
    ) -> Result<Tensor> {
        if !(0.0..=1.0).contains(&timestep) {
            return Err(Error::Timestep {
                segment: 0,
                value: timestep,
            });
        }
        let grid = self.token_grid(latent.dims())?;
        let (_, text_len, _) = text.dims3()?;
        let mut positions = Vec::new();
        for j in 0..text_len as u32 {
            positions.push([j, j, j]);
        }
        let base = text_len as u32;
        for tau in 0..grid[0] as u32 {
            for y in 0..grid[1] as u32 {
                for x in 0..grid[2] as u32 {
                    positions.push([base + tau, base + y, base + x]);
                }
            }
        }
        let (cos, sin) = self.rope.cos_sin(&positions, &self.device)?;
        // The scene path's conditioning for a lone shot: its own timestep and prompt.
        let time = self.timestep_embedding(&[timestep])?;
        let conditioning = match &self.pooled {
            None => time.silu()?,
            Some((pooled_in, pooled_out)) => {
                let pooled = (self.text_sum(text)? / text_len.max(1) as f64)?.unsqueeze(1)?;
                linear(pooled_out, &linear(pooled_in, &pooled)?.silu()?)?
                    .broadcast_add(&time)?
                    .silu()?
            }
        };
        let text_ids = Tensor::zeros(text_len, DType::U32, &self.device)?;
        let video_len = grid.iter().product::<usize>();
        let video_ids = Tensor::zeros(video_len, DType::U32, &self.device)?;
        let mut t = linear(&self.text_in, text)?;
        let mut v = linear(&self.video_in, &self.patchify(latent)?)?;
        let all = vec![0u32; positions.len()];
        let spec = MaskSpec::self_attention(AttentionMask::Bidirectional, all)?;
        for block in &self.blocks {
            let tm = block.text.modulation(&conditioning, &text_ids)?;
            let vm = block.video.modulation(&conditioning, &video_ids)?;
            let (tq, tk, tv) = block.text.qkv(&self.cfg, &t, &tm)?;
            let (vq, vk, vv) = block.video.qkv(&self.cfg, &v, &vm)?;
            let joint = |a: &Tensor, b: &Tensor| -> Result<Tensor> {
                Ok(Tensor::cat(&[a, b], 1)?.transpose(1, 2)?.contiguous()?)
            };
            let q = candle_nn::rotary_emb::rope_i_slow(&joint(&tq, &vq)?, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_i_slow(&joint(&tk, &vk)?, &cos, &sin)?;
            let attended = naive_attention(&q, &k, &joint(&tv, &vv)?, &spec)?;
            let ta = attended.narrow(1, 0, text_len)?;
            let va = attended.narrow(1, text_len, video_len)?;
            t = block.text.finish(&t, &ta, &tm)?;
            v = block.video.finish(&v, &va, &vm)?;
        }
        let m = linear(&self.final_modulation, &conditioning)?.chunk(2, D::Minus1)?;
        let out = linear(&self.final_out, &modulate(&v, &m[0], &m[1])?)?;
        self.unpatchify(&out, grid)
    }
}
