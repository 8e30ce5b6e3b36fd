//! LCT on Wan: the shots of a scene packed into one token sequence. Each shot keeps the
//! single-shot RoPE grid it was pre-trained with, moved along the time axis past the frames
//! of the shots before it; each shot has its own timestep (through per-token modulation);
//! in cross-attention a shot's tokens see the global prompt and their own shot prompt; in
//! self-attention shots see each other as the project's [`AttentionMask`] rule says, with
//! the shot index as the segment rank. Under the context-causal mask earlier shots never see
//! later ones, so their self-attention keys and values can be cached ([`WanSceneCache`]) and
//! reused for every step of the shots that follow.

use candle_core::{Tensor, D};

use super::config::WAN_TIME_SCALE;
use super::transformer::{additive_mask, Masks, Rope, WanTimestep, WanTransformer};
use crate::{AttentionMask, Error, MaskSpec, Result};

/// One shot of a scene: its latents `[1, channels, frames, height, width]`, its diffusion
/// timestep (Wan's scale, 0..1000) and its prompt embeddings `[1, text_tokens, text_dim]`.
pub struct WanShot<'a> {
    pub latents: &'a Tensor,
    pub timestep: f64,
    pub prompt: &'a Tensor,
}

/// Self-attention keys and values of the shots seen so far, per block, and how many latent
/// frames and shots they hold (the next shot starts after them in time and rank).
pub struct WanSceneCache {
    layers: Vec<(Tensor, Tensor)>,
    /// The shot index of every cached token (its segment rank in self-attention).
    ranks: Vec<u32>,
    pub frames: usize,
    pub shots: usize,
}

impl WanSceneCache {
    /// Cached tokens (equal for every block).
    pub fn tokens(&self) -> usize {
        self.layers
            .first()
            .map_or(0, |(k, _)| k.dim(2).unwrap_or(0))
    }
}

impl WanTransformer {
    /// The denoiser's output for every shot of `shots` (same shapes as their latents), seen
    /// after `history` when given (which needs the context-causal mask); also the cache of
    /// `history` plus these shots, for the shots that follow.
    pub fn scene_forward(
        &self,
        global_prompt: &Tensor,
        shots: &[WanShot],
        mask: AttentionMask,
        history: Option<&WanSceneCache>,
    ) -> Result<(Vec<Tensor>, WanSceneCache)> {
        if shots.is_empty() {
            return Err(Error::Layout("a Wan scene needs at least one shot".into()));
        }
        if history.is_some() && mask != AttentionMask::ContextCausal {
            return Err(Error::KvCache(
                "cached history needs the context-causal mask: under the bidirectional mask \
                 history shots also attend to the new ones"
                    .into(),
            ));
        }
        let device = global_prompt.device();
        let [pt, ph, pw] = self.config().patch_size;
        let (first_frame, first_shot) = history.map_or((0, 0), |h| (h.frames, h.shots));

        let mut tokens = Vec::with_capacity(shots.len());
        let mut positions = Vec::new();
        let mut timesteps = Vec::new();
        let mut shot_of_token = Vec::new();
        let mut grids = Vec::with_capacity(shots.len());
        let mut frame = first_frame;
        for (index, shot) in shots.iter().enumerate() {
            let (batch, _, frames, height, width) = shot.latents.dims5()?;
            if batch != 1 {
                return Err(Error::Shape(format!(
                    "shot {}: latents {:?}, a scene's shots are batch 1",
                    index + 1,
                    shot.latents.dims()
                )));
            }
            let grid = [frames / pt, height / ph, width / pw];
            let count = grid.iter().product::<usize>();
            tokens.push(self.embed_patches(shot.latents)?);
            positions.extend(
                Rope::grid(grid[0], grid[1], grid[2])
                    .into_iter()
                    .map(|[f, r, c]| [frame + f, r, c]),
            );
            timesteps.extend(std::iter::repeat_n(shot.timestep as f32, count));
            shot_of_token.extend(std::iter::repeat_n(first_shot + index, count));
            grids.push(grid);
            frame += grid[0];
        }
        let tokens = Tensor::cat(&tokens, 1)?;
        let count = shot_of_token.len();
        let rope = Rope::new(self.config(), &positions, device)?;
        let timesteps = Tensor::from_vec(timesteps, (1, count), device)?;

        // Cross-attention: the global prompt, then each shot's own window.
        let global_len = global_prompt.dim(1)?;
        let mut text = vec![global_prompt.clone()];
        let mut windows = Vec::with_capacity(shots.len());
        let mut start = global_len;
        for shot in shots {
            let len = shot.prompt.dim(1)?;
            text.push(shot.prompt.clone());
            windows.push(start..start + len);
            start += len;
        }
        let text = Tensor::cat(&text, 1)?;
        let cross = (shots.len() > 1)
            .then(|| {
                additive_mask(count, start, device, |q, k| {
                    k < global_len || windows[shot_of_token[q] - first_shot].contains(&k)
                })
            })
            .transpose()?;

        // Self-attention over the cached keys (earlier shots: always visible to later ones)
        // and the new ones, by the project's mask rule with shots as ranks.
        let ranks: Vec<u32> = shot_of_token.iter().map(|&s| s as u32).collect();
        let cached_ranks = history.map_or(&[][..], |h| h.ranks.as_slice());
        let key_ranks: Vec<u32> = cached_ranks.iter().chain(&ranks).copied().collect();
        let own = MaskSpec::new(mask, ranks.clone(), key_ranks.clone())?;
        let masks = Masks {
            self_attention: Some(&own),
            cross_attention: cross.as_ref(),
        };
        let past = history.map(|h| h.layers.as_slice());
        let (out, kv) = self.forward_tokens_cached(
            &tokens,
            WanTimestep::PerToken(&timesteps),
            &text,
            &rope,
            &masks,
            past,
        )?;

        let mut outputs = Vec::with_capacity(shots.len());
        let mut offset = 0;
        for (grid, shot) in grids.iter().zip(shots) {
            let n = grid.iter().product::<usize>();
            let output = self.unpatchify(&out.narrow(1, offset, n)?, 1, *grid)?;
            let time = Tensor::new(shot.timestep as f32 / WAN_TIME_SCALE as f32, device)?;
            outputs.push(self.velocity(output, shot.latents, &time)?);
            offset += n;
        }
        let layers = match history {
            Some(h) => h
                .layers
                .iter()
                .zip(kv)
                .map(|((pk, pv), (k, v))| {
                    Ok((
                        Tensor::cat(&[pk, &k], D::Minus2)?,
                        Tensor::cat(&[pv, &v], D::Minus2)?,
                    ))
                })
                .collect::<Result<_>>()?,
            None => kv,
        };
        Ok((
            outputs,
            WanSceneCache {
                layers,
                ranks: key_ranks,
                frames: frame,
                shots: first_shot + shots.len(),
            },
        ))
    }
}
