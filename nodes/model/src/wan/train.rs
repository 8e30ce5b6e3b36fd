//! LCT tuning of a Wan transformer: full fine-tuning (every transformer weight; the VAE and
//! the text encoder stay frozen and only prepare the data) with the LCT recipe. A training
//! sample is a whole scene: its shots packed into one sequence, each shot noised to its own
//! independently drawn flow time, the loss the flow-matching error of every shot, under the
//! bidirectional mask or the context-causal one (the fine-tune that makes history cacheable).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};

use super::load::weight_files;
use super::scene::WanShot;
use super::{WanTransformer, WanTransformerConfig};
use crate::noise::{gaussian, SplitMix64};
use crate::{AttentionMask, Error, Result};

/// Wan's timesteps run 0..1000 where the flow time runs 0..1.
const WAN_TIME_SCALE: f64 = 1000.0;

#[derive(Debug, Clone)]
pub struct WanTrainConfig {
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// The mask scenes are trained under.
    pub attention: AttentionMask,
    /// Flow times are drawn logit-normal, then shifted by this (the checkpoint's scheduler
    /// shift), so training spends its steps where sampling does.
    pub shift: f32,
}

/// One scene of training data, already encoded: the global prompt `[1, tokens, text_dim]`,
/// and per shot its normalised latents `[1, C, T, h, w]` and prompt `[1, tokens, text_dim]`.
pub struct WanTrainingScene {
    pub global_text: Tensor,
    pub shots: Vec<(Tensor, Tensor)>,
}

pub struct WanTrainer {
    model: WanTransformer,
    config: WanTransformerConfig,
    vars: VarMap,
    optimizer: AdamW,
    cfg: WanTrainConfig,
}

impl WanTrainer {
    /// The transformer of `folder` (a Wan checkpoint, or its `transformer/` folder) as
    /// trainable f32 variables on `device`; every tensor is checked by name and shape.
    pub fn from_checkpoint(folder: &Path, cfg: WanTrainConfig, device: &Device) -> Result<Self> {
        let component = if folder.join("transformer").is_dir() {
            folder.join("transformer")
        } else {
            folder.to_path_buf()
        };
        let config = WanTransformerConfig::load(&component.join("config.json"))?;
        let vars = VarMap::new();
        let model =
            WanTransformer::new(&config, VarBuilder::from_varmap(&vars, DType::F32, device))?;
        crate::weights::load_varmap_mmap(&vars, &weight_files(&component)?)?;
        let optimizer = AdamW::new(
            vars.all_vars(),
            ParamsAdamW {
                lr: cfg.learning_rate,
                weight_decay: cfg.weight_decay,
                ..ParamsAdamW::default()
            },
        )?;
        Ok(Self {
            model,
            config,
            vars,
            optimizer,
            cfg,
        })
    }

    pub fn model(&self) -> &WanTransformer {
        &self.model
    }

    /// Flow times for `shots` shots: logit-normal, shifted, one per shot, independent.
    pub fn draw_times(&self, shots: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::stream(seed, 0x7157);
        let s = self.cfg.shift;
        (0..shots)
            .map(|_| {
                let t = 1.0 / (1.0 + (-rng.normal() as f32).exp());
                s * t / (1.0 + (s - 1.0) * t)
            })
            .collect()
    }

    /// The scene's flow-matching loss with its shots at `times`, noise drawn from `seed`:
    /// the mean squared error of the predicted velocity against `noise - latents`.
    pub fn loss(&self, scene: &WanTrainingScene, times: &[f32], seed: u64) -> Result<Tensor> {
        if scene.shots.is_empty() || times.len() != scene.shots.len() {
            return Err(Error::Training(format!(
                "a scene of {} shot(s) with {} time(s)",
                scene.shots.len(),
                times.len()
            )));
        }
        let mut noised = Vec::with_capacity(scene.shots.len());
        let mut targets = Vec::with_capacity(scene.shots.len());
        for (i, ((latents, _), &t)) in scene.shots.iter().zip(times).enumerate() {
            let noise = gaussian(seed, i as u64, latents.dims(), latents.device())?;
            noised.push(((latents * (1.0 - t as f64))? + (&noise * t as f64)?)?);
            targets.push((noise - latents)?);
        }
        let shots: Vec<WanShot> = scene
            .shots
            .iter()
            .zip(&noised)
            .zip(times)
            .map(|(((_, prompt), latents), &t)| WanShot {
                latents,
                timestep: t as f64 * WAN_TIME_SCALE,
                prompt,
            })
            .collect();
        let (outputs, _) =
            self.model
                .scene_forward(&scene.global_text, &shots, self.cfg.attention, None)?;
        let mut total = None;
        for (output, target) in outputs.iter().zip(&targets) {
            let error = (output - target)?.sqr()?.mean_all()?;
            total = Some(match total {
                None => error,
                Some(sum) => (sum + error)?,
            });
        }
        let total = total.expect("at least one shot");
        Ok((total / scene.shots.len() as f64)?)
    }

    /// One optimiser step on `scene`, with times and noise drawn from `seed`; returns the loss.
    pub fn step(&mut self, scene: &WanTrainingScene, seed: u64) -> Result<f32> {
        let times = self.draw_times(scene.shots.len(), seed);
        let loss = self.loss(scene, &times, seed)?;
        self.optimizer.backward_step(&loss)?;
        Ok(loss.to_scalar::<f32>()?)
    }

    /// Writes `transformer/config.json` and `transformer/diffusion_pytorch_model.safetensors`
    /// into `folder` (f32, diffusers' names).
    pub fn save_transformer(&self, folder: &Path) -> Result<()> {
        let component = folder.join("transformer");
        std::fs::create_dir_all(&component).map_err(|source| Error::Io {
            path: component.clone(),
            source,
        })?;
        let config = serde_json::to_string_pretty(&self.config_json()).expect("plain JSON");
        let config_path = component.join("config.json");
        std::fs::write(&config_path, config).map_err(|source| Error::Io {
            path: config_path,
            source,
        })?;
        let weights = component.join("diffusion_pytorch_model.safetensors");
        self.vars.save(&weights).map_err(|e| Error::Io {
            path: weights,
            source: std::io::Error::other(e.to_string()),
        })
    }

    fn config_json(&self) -> serde_json::Value {
        let c = &self.config;
        serde_json::json!({
            "_class_name": if c.num_frame_per_block > 1 { "SkyReelsV2Transformer3DModel" } else { "WanTransformer3DModel" },
            "patch_size": c.patch_size,
            "num_attention_heads": c.num_attention_heads,
            "attention_head_dim": c.attention_head_dim,
            "in_channels": c.in_channels,
            "out_channels": c.out_channels,
            "text_dim": c.text_dim,
            "freq_dim": c.freq_dim,
            "ffn_dim": c.ffn_dim,
            "num_layers": c.num_layers,
            "cross_attn_norm": c.cross_attn_norm,
            "qk_norm": c.qk_norm,
            "eps": c.eps,
            "rope_max_seq_len": c.rope_max_seq_len,
            "num_frame_per_block": c.num_frame_per_block,
        })
    }
}
