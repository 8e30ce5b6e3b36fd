//! LCT tuning of a Wan transformer: full fine-tuning (every transformer weight; the VAE and
//! the text encoder stay frozen and only prepare the data) with the LCT recipe. A training
//! sample is a whole scene: its shots packed into one sequence, each shot noised to its own
//! independently drawn flow time, the loss the flow-matching error of every shot, under the
//! bidirectional mask or the context-causal one (the fine-tune that makes history cacheable).
//!
//! The same trainer also takes batches of same-shaped single-shot samples (frames or short
//! clips, [`WanBatch`]), the images-first stages of training a model from scratch, split over
//! worker threads by samples (data parallel): on a 2-core CPU two workers with one matrix
//! thread each beat one step with two matrix threads, whose small matrix products do not
//! split well.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::config::{WanPrediction, WAN_TIME_SCALE};
use super::load::weight_files;
use super::scene::WanShot;
use super::{WanTransformer, WanTransformerConfig};
use crate::noise::{gaussian, SplitMix64};
use crate::optim::{OptimConfig, Optimiser};
use crate::{AttentionMask, Error, Result};

#[derive(Debug, Clone)]
pub struct WanTrainConfig {
    /// AdamW, its schedule and the moving average of the weights.
    pub optim: OptimConfig,
    /// The mask scenes are trained under.
    pub attention: AttentionMask,
    /// Flow times are drawn logit-normal, then shifted by this (the checkpoint's scheduler
    /// shift), so training spends its steps where sampling does.
    pub shift: f32,
}

/// One scene of training data, already encoded: the global prompt `[1, tokens, text_dim]`
/// and its shots.
pub struct WanTrainingScene {
    pub global_text: Tensor,
    pub shots: Vec<WanTrainingShot>,
}

/// A shot of a training scene: normalised latents `[1, C, T, h, w]`, its prompt `[1, tokens,
/// text_dim]`, optional per-pixel loss weights `[1, 1, T, h, w]`, and whether it is `given`
/// (a reference image, a condition at sampling): always drawn as context, where otherwise
/// [`ShotDraw::context`] is drawn.
pub struct WanTrainingShot {
    pub latents: Tensor,
    pub prompt: Tensor,
    pub weights: Option<Tensor>,
    pub given: bool,
}

impl WanTrainingShot {
    pub fn new(latents: Tensor, prompt: Tensor) -> Self {
        Self {
            latents,
            prompt,
            weights: None,
            given: false,
        }
    }
}

/// A shot's draw for one step: its flow time, and whether it is context (clean or almost,
/// in the sequence, without loss) or trained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShotDraw {
    pub time: f32,
    pub context: bool,
}

impl ShotDraw {
    pub fn trained(time: f32) -> Self {
        Self {
            time,
            context: false,
        }
    }
}

/// How the flow times of a scene's shots are drawn for the scene steps of
/// [`WanTrainer::scenes_step`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SceneDraw {
    /// Uniform times in 0..1 (covering high noise, where looks are decided), else the
    /// trainer's logit-normal shifted draw.
    pub uniform: bool,
    /// Chance that a shot of a scene of several shots is context: time uniform in
    /// `0..context_max_time`, no loss. At least one shot of every scene is trained.
    pub context_prob: f64,
    pub context_max_time: f32,
}

/// A batch of same-shaped single-shot samples, already encoded: latents `[B, C, T, H, W]`,
/// text embeddings `[B, tokens, text_dim]`, and optional per-pixel loss weights
/// `[B, 1, T, H, W]` (e.g. more weight where the character is).
pub struct WanBatch {
    pub latents: Tensor,
    pub text: Tensor,
    pub weights: Option<Tensor>,
}

pub struct WanTrainer {
    model: WanTransformer,
    config: WanTransformerConfig,
    vars: VarMap,
    optimiser: Optimiser,
    cfg: WanTrainConfig,
    /// Threads a [`WanBatch`] is split over, by samples.
    workers: usize,
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
        // Seeded, then overwritten by the checkpoint's weights.
        let trainer = Self::fresh(&config, cfg, 0, device)?;
        crate::weights::load_varmap_mmap(&trainer.vars, &weight_files(&component)?)?;
        Ok(trainer)
    }

    /// A transformer of `config` with f32 weights initialised from `seed` on `device`, to
    /// train from scratch (the same seed, the same start). The modulation starts at zero
    /// (adaLN-Zero: `time_proj` and every block's `scale_shift_table`), so each block starts
    /// as the identity and its gates open as it learns.
    pub fn fresh(
        config: &WanTransformerConfig,
        cfg: WanTrainConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let vars = VarMap::new();
        let model =
            WanTransformer::new(config, VarBuilder::from_varmap(&vars, DType::F32, device))?;
        crate::weights::seeded_init(&vars, seed)?;
        for (name, var) in vars.data().lock().expect("not poisoned").iter() {
            let gate = name == "condition_embedder.time_proj.weight"
                || (name.starts_with("blocks.") && name.ends_with("scale_shift_table"));
            if gate {
                var.set(&var.zeros_like()?)?;
            }
        }
        let optimiser = Optimiser::new(&vars, cfg.optim.clone())?;
        Ok(Self {
            model,
            config: config.clone(),
            vars,
            optimiser,
            cfg,
            workers: 1,
        })
    }

    /// Splits [`WanBatch`] steps over `workers` threads (at least 1).
    pub fn set_workers(&mut self, workers: usize) {
        self.workers = workers.max(1);
    }

    pub fn model(&self) -> &WanTransformer {
        &self.model
    }

    /// Trainable parameters (scalars).
    pub fn parameter_count(&self) -> usize {
        self.optimiser.parameter_count()
    }

    pub fn optimiser(&self) -> &Optimiser {
        &self.optimiser
    }

    /// The optimiser, e.g. to set the schedule of a stage.
    pub fn optimiser_mut(&mut self) -> &mut Optimiser {
        &mut self.optimiser
    }

    /// Runs `work` on the model holding its sampling weights (the moving average when the
    /// optimiser keeps one), then puts the trained weights back.
    pub fn with_sampling_model<R>(&self, work: impl FnOnce(&WanTransformer) -> R) -> Result<R> {
        self.optimiser.with_sampling_weights(|| work(&self.model))
    }

    /// Saves everything a run needs to go on exactly: the sampling transformer (diffusers
    /// layout, under `dir/transformer/`) and the optimiser's state.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        self.save_transformer(dir)?;
        self.optimiser.save(dir)
    }

    /// Continues from what [`WanTrainer::save_checkpoint`] wrote: `config` must be the
    /// saved transformer's.
    pub fn resume(dir: &Path, cfg: WanTrainConfig, device: &Device) -> Result<Self> {
        let config = WanTransformerConfig::load(&dir.join("transformer").join("config.json"))?;
        let mut trainer = Self::fresh(&config, cfg, 0, device)?;
        trainer.optimiser.restore(dir)?;
        trainer.cfg.optim = trainer.optimiser.config().clone();
        Ok(trainer)
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

    /// Every shot trained, at the times of [`WanTrainer::draw_times`].
    pub fn draw_trained(&self, shots: usize, seed: u64) -> Vec<ShotDraw> {
        self.draw_times(shots, seed)
            .into_iter()
            .map(ShotDraw::trained)
            .collect()
    }

    /// Each shot's draw for one scene step of `shots` shots, from `seed`.
    pub fn draw_shots(&self, shots: usize, draw: &SceneDraw, seed: u64) -> Vec<ShotDraw> {
        let mut rng = SplitMix64::stream(seed, 0xd7a3);
        let times = self.draw_times(shots, seed);
        let mut draws: Vec<ShotDraw> = times
            .into_iter()
            .map(|logit_normal| {
                let context = shots > 1 && rng.uniform() < draw.context_prob;
                let time = if context {
                    rng.uniform() as f32 * draw.context_max_time
                } else if draw.uniform {
                    rng.uniform() as f32
                } else {
                    logit_normal
                };
                ShotDraw { time, context }
            })
            .collect();
        if draws.iter().all(|d| d.context) {
            let last = draws.len() - 1;
            draws[last] = ShotDraw::trained(rng.uniform() as f32);
        }
        draws
    }

    /// [`WanTrainer::draw_shots`] for `scene`, its given shots always context; when that leaves
    /// nothing trained, its last shot that is not given is trained.
    pub fn draw_scene(
        &self,
        scene: &WanTrainingScene,
        draw: &SceneDraw,
        seed: u64,
    ) -> Vec<ShotDraw> {
        let mut draws = self.draw_shots(scene.shots.len(), draw, seed);
        let mut rng = SplitMix64::stream(seed, 0x61e7);
        for (shot_draw, shot) in draws.iter_mut().zip(&scene.shots) {
            if shot.given {
                *shot_draw = ShotDraw {
                    time: rng.uniform() as f32 * draw.context_max_time,
                    context: true,
                };
            }
        }
        if draws.iter().all(|d| d.context) {
            if let Some(last) = scene.shots.iter().rposition(|s| !s.given) {
                draws[last] = ShotDraw::trained(if draw.uniform {
                    rng.uniform() as f32
                } else {
                    self.draw_times(1, seed ^ 0x1a57)[0]
                });
            }
        }
        draws
    }

    /// The scene's flow-matching loss with its shots drawn as `draws`, noise from `seed`: the
    /// mean over the trained shots of their (weighted) mean squared error (see
    /// [`WanTrainer::error`]); context shots are in the sequence without loss.
    pub fn loss(&self, scene: &WanTrainingScene, draws: &[ShotDraw], seed: u64) -> Result<Tensor> {
        if scene.shots.is_empty() || draws.len() != scene.shots.len() {
            return Err(Error::Training(format!(
                "a scene of {} shot(s) with {} draw(s)",
                scene.shots.len(),
                draws.len()
            )));
        }
        let trained = draws.iter().filter(|d| !d.context).count();
        if trained == 0 {
            return Err(Error::Training(
                "every shot of the scene is context: nothing to train".into(),
            ));
        }
        let mut noised = Vec::with_capacity(scene.shots.len());
        let mut targets = Vec::with_capacity(scene.shots.len());
        for (i, (shot, draw)) in scene.shots.iter().zip(draws).enumerate() {
            let latents = &shot.latents;
            let t = draw.time as f64;
            let noise = gaussian(seed, i as u64, latents.dims(), latents.device())?;
            noised.push(((latents * (1.0 - t))? + (&noise * t)?)?);
            targets.push((noise - latents)?);
        }
        let shots: Vec<WanShot> = scene
            .shots
            .iter()
            .zip(&noised)
            .zip(draws)
            .map(|((shot, latents), draw)| WanShot {
                latents,
                timestep: draw.time as f64 * WAN_TIME_SCALE,
                prompt: &shot.prompt,
            })
            .collect();
        let (outputs, _) =
            self.model
                .scene_forward(&scene.global_text, &shots, self.cfg.attention, None)?;
        let mut total = None;
        for (((output, target), draw), shot) in
            outputs.iter().zip(&targets).zip(draws).zip(&scene.shots)
        {
            if draw.context {
                continue;
            }
            let t = Tensor::new(draw.time, output.device())?;
            let squared = self.error(output, target, &t)?.sqr()?;
            let error = match &shot.weights {
                Some(weights) => squared.broadcast_mul(weights)?.mean_all()?,
                None => squared.mean_all()?,
            };
            total = Some(match total {
                None => error,
                Some(sum) => (sum + error)?,
            });
        }
        let total = total.expect("at least one trained shot");
        Ok((total / trained as f64)?)
    }

    /// One optimiser step on a batch of scenes (each drawn by `draw` from `seed` and its
    /// place), split over the workers by scenes in contiguous chunks and summed in chunk
    /// order; returns the mean loss.
    pub fn scenes_step(
        &mut self,
        scenes: &[WanTrainingScene],
        draw: &SceneDraw,
        seed: u64,
    ) -> Result<f32> {
        if scenes.is_empty() {
            return Err(Error::Training("an empty batch of scenes".into()));
        }
        let share = 1.0 / scenes.len() as f64;
        let (loss, stores) = self.chunk_gradients(scenes.len(), |chunk| {
            let mut total: Option<Tensor> = None;
            for &i in chunk {
                let scene_seed = seed.wrapping_mul(0x9e37_79b9).wrapping_add(i as u64);
                let draws = self.draw_scene(&scenes[i], draw, scene_seed);
                let loss = (self.loss(&scenes[i], &draws, scene_seed)? * share)?;
                total = Some(match total {
                    None => loss,
                    Some(sum) => (sum + loss)?,
                });
            }
            Ok(total.expect("a chunk holds a scene"))
        })?;
        self.optimiser.apply(&stores)?;
        Ok(loss)
    }

    /// What is squared in the loss: the velocity's error, or for a sample-predicting model
    /// the clean sample's (its velocity scaled back by the time it was divided by), so that
    /// every time counts alike in pixels rather than low noise dominating through `1 / t`
    /// (the velocity loss, with noise-heavy times as JiT pairs it, learned colour slower and
    /// shape no faster here). `times` broadcast to the velocities.
    fn error(&self, velocity: &Tensor, target: &Tensor, times: &Tensor) -> Result<Tensor> {
        let error = (velocity - target)?;
        Ok(match self.config.prediction {
            WanPrediction::Velocity => error,
            WanPrediction::Sample => {
                error.broadcast_mul(&times.maximum(WanPrediction::MIN_TIME)?)?
            }
        })
    }

    /// One optimiser step on `scene`, with times and noise drawn from `seed`; returns the loss.
    pub fn step(&mut self, scene: &WanTrainingScene, seed: u64) -> Result<f32> {
        let loss = self.loss(scene, &self.draw_trained(scene.shots.len(), seed), seed)?;
        self.optimiser.apply(&[loss.backward()?])?;
        Ok(loss.to_scalar::<f32>()?)
    }

    /// The flow-matching loss of `batch` with sample `i` at flow time `times[i]` and noise from
    /// `seed` (stream `first + i`): the mean, over every sample and pixel, of the (weighted)
    /// squared error of the predicted velocity against `noise - latents`.
    fn batch_loss(
        &self,
        batch: &WanBatch,
        times: &[f32],
        seed: u64,
        first: usize,
    ) -> Result<Tensor> {
        let dims = batch.latents.dims().to_vec();
        let device = batch.latents.device();
        let samples = dims[0];
        if times.len() != samples || batch.text.dim(0)? != samples {
            return Err(Error::Training(format!(
                "a batch of {samples} latents with {} times and {} texts",
                times.len(),
                batch.text.dim(0)?
            )));
        }
        let mut sample_dims = dims.clone();
        sample_dims[0] = 1;
        let noise = Tensor::cat(
            &(0..samples)
                .map(|i| gaussian(seed, (first + i) as u64, &sample_dims, device))
                .collect::<Result<Vec<_>>>()?,
            0,
        )?;
        let t = Tensor::from_vec(times.to_vec(), samples, device)?;
        let t_wide = t.reshape((samples, 1, 1, 1, 1))?;
        let noised =
            (batch.latents.broadcast_mul(&(1.0 - &t_wide)?)? + noise.broadcast_mul(&t_wide)?)?;
        let target = (&noise - &batch.latents)?;
        let timesteps = (t * WAN_TIME_SCALE)?;
        let prediction = self.model.forward(
            &noised,
            super::WanTimestep::PerSample(&timesteps),
            &batch.text,
        )?;
        let error = self.error(&prediction, &target, &t_wide)?.sqr()?;
        Ok(match &batch.weights {
            Some(weights) => error.broadcast_mul(weights)?.mean_all()?,
            None => error.mean_all()?,
        })
    }

    /// One optimiser step on `batch`, sample `i` noised to `times[i]` with noise drawn from
    /// `seed`; returns the loss. The samples are split over the workers in contiguous chunks,
    /// each chunk's gradients weighted by its share of the batch and summed in chunk order, so
    /// the step does not depend on the number of workers (beyond float rounding) or on
    /// thread timing.
    pub fn batch_step(&mut self, batch: &WanBatch, times: &[f32], seed: u64) -> Result<f32> {
        let samples = batch.latents.dim(0)?;
        let (loss, stores) = self.chunk_gradients(samples, |chunk| {
            let (start, len) = (chunk[0], chunk.len());
            let part = WanBatch {
                latents: batch.latents.narrow(0, start, len)?,
                text: batch.text.narrow(0, start, len)?,
                weights: match &batch.weights {
                    Some(w) => Some(w.narrow(0, start, len)?),
                    None => None,
                },
            };
            let share = len as f64 / samples as f64;
            Ok((self.batch_loss(&part, &times[start..start + len], seed, start)? * share)?)
        })?;
        self.optimiser.apply(&stores)?;
        Ok(loss)
    }

    /// Items `0..count` split over the workers in contiguous chunks; each chunk's loss (its
    /// share of the batch's) differentiated on its thread. The summed loss and the gradient
    /// stores, in chunk order, so the step does not depend on thread timing.
    fn chunk_gradients(
        &self,
        count: usize,
        chunk_loss: impl Fn(&[usize]) -> Result<Tensor> + Sync,
    ) -> Result<(f32, Vec<candle_core::backprop::GradStore>)> {
        let indices: Vec<usize> = (0..count).collect();
        let chunks = crate::train::map_chunks(
            &indices,
            self.workers,
            |chunk| -> Result<(f32, candle_core::backprop::GradStore)> {
                let loss = chunk_loss(chunk)?;
                let gradients = loss.backward()?;
                Ok((loss.to_scalar::<f32>()?, gradients))
            },
            || Error::Training("a training worker panicked".into()),
        )?;
        let loss = chunks.iter().map(|(loss, _)| loss).sum::<f32>();
        Ok((loss, chunks.into_iter().map(|(_, g)| g).collect()))
    }

    /// Writes `transformer/config.json` and `transformer/diffusion_pytorch_model.safetensors`
    /// (the sampling weights: the moving average when there is one) into `folder` (f32,
    /// diffusers' names).
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
        candle_core::safetensors::save(&self.optimiser.sampling_tensors(), &weights).map_err(|e| {
            Error::Io {
                path: weights,
                source: std::io::Error::other(e.to_string()),
            }
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
            "prompt_modulation": c.prompt_modulation,
            "prompt_queries": c.prompt_queries,
            "prediction": c.prediction.name(),
        })
    }
}
