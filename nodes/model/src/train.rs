//! Long Context Tuning: the training step.
//!
//! Each shot draws its own timestep from a logit-normal distribution, every token is
//! modulated by its shot's timestep, the loss is computed per shot and averaged over shots,
//! and a shot is replaced by one of its frames with a configurable probability (how images
//! enter the model). Gradients flow through candle `Var`s; the optimiser is AdamW with global
//! gradient-norm clipping. Checkpoints hold weights, optimiser moments and the trainer state,
//! so a run resumes exactly where it stopped.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::layout::{AttentionMask, SceneLayout, SegmentSpec, ShotRole};
use crate::noise::SplitMix64;
use crate::pipeline::Pipeline;
use crate::transformer::{SceneBatch, SceneTransformer};
use crate::weights::{init_tensors, read_safetensors, save_checkpoint, Init, CONFIG_FILE};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const TRAINER_FILE: &str = "trainer.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    /// Global gradient-norm clip; 0 disables clipping.
    pub grad_clip: f64,
    /// Probability that a shot is replaced by a single frame of itself.
    pub single_frame_prob: f64,
    /// Probability that a scene's text is dropped (the null prompt guidance relies on).
    pub text_dropout_prob: f64,
    pub logit_normal_mean: f64,
    pub logit_normal_std: f64,
    /// Probability that a shot of a multi-shot scene is drawn as given context: timestep
    /// uniform in `[0, context_max_t]` and no loss of its own (a condition's output is
    /// discarded at inference too). Logit-normal timesteps almost never fall that low, yet
    /// given shots (t = 0.05) and clean history sit there. 0 keeps the paper's draw.
    pub context_prob: f64,
    pub context_max_t: f64,
    pub seed: u64,
    /// Weights for sampling are an exponential moving average of the trained ones with this
    /// decay per step (0: off, the trained weights themselves). A checkpoint's
    /// `model.safetensors` holds the average; the trained weights travel in the optimiser
    /// file, for resuming.
    pub ema_decay: f64,
    /// Steps over which the learning rate rises linearly from 0 to `learning_rate`.
    pub warmup_steps: u64,
    /// Steps after the warm-up over which it falls along a cosine to
    /// `min_lr_ratio x learning_rate`, where it stays (0: constant after the warm-up).
    pub decay_steps: u64,
    pub min_lr_ratio: f64,
}

impl TrainConfig {
    /// The learning rate of step `step` (counted from 1) under the warm-up and cosine decay.
    pub fn learning_rate_at(&self, step: u64) -> f64 {
        let base = self.learning_rate;
        if step <= self.warmup_steps {
            return base * step as f64 / self.warmup_steps.max(1) as f64;
        }
        if self.decay_steps == 0 {
            return base;
        }
        let progress = ((step - self.warmup_steps) as f64 / self.decay_steps as f64).min(1.0);
        let floor = base * self.min_lr_ratio;
        floor + (base - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            learning_rate: 1e-3,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            grad_clip: 1.0,
            single_frame_prob: 0.1,
            text_dropout_prob: 0.1,
            logit_normal_mean: 0.0,
            logit_normal_std: 1.0,
            context_prob: 0.0,
            context_max_t: 0.1,
            seed: 0,
            ema_decay: 0.0,
            warmup_steps: 0,
            decay_steps: 0,
            min_lr_ratio: 0.1,
        }
    }
}

/// Tells mimalloc (the global allocator of every binary of this project) to keep the pages
/// it frees rather than return them to the OS. A training step frees and reallocates the same
/// megabytes of activations every step, and a returned page costs a kernel zero-fill when it
/// comes back: 15-30% of a step in the `train_step` bench. Harmless where mimalloc is not the
/// allocator (it configures an instance nothing uses).
pub fn keep_freed_pages() {
    // The place of `mi_option_purge_delay` in mimalloc's `mi_option_t` (2.x and 3.x alike);
    // -1 is "never purge".
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets one of mimalloc's process-wide options; any value is valid for it.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

/// One training scene: an optional global prompt and shots with their clean latents.
#[derive(Debug, Clone)]
pub struct TrainingScene {
    /// `[text_len, text_dim]`.
    pub global_text: Option<Tensor>,
    pub shots: Vec<TrainingShot>,
}

#[derive(Debug, Clone)]
pub struct TrainingShot {
    /// `[C, T, H, W]`.
    pub latent: Tensor,
    /// `[text_len, text_dim]`.
    pub text: Tensor,
    /// Optional loss weight per latent pixel, `[T, H, W]` (shared by all channels), e.g. to
    /// make a small subject count as much as the background it sits on. `None` is all 1.
    pub weight: Option<Tensor>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    pub step: u64,
    /// The batch's flow-matching loss.
    pub loss: f32,
    pub grad_norm: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainerState {
    step: u64,
    rng: SplitMix64,
    train: TrainConfig,
}

/// Owns the trainable weights, the optimiser and the sampling state of a run.
pub struct Trainer {
    cfg: Config,
    train: TrainConfig,
    pipeline: Pipeline,
    // (name, var, first moment, second moment), sorted by name for reproducibility.
    params: Vec<(String, Var, Tensor, Tensor)>,
    step: u64,
    rng: SplitMix64,
    device: Device,
    workers: usize,
    /// The worker threads, kept for the whole run: threads spawned anew every step start with
    /// empty allocator heaps, and their fresh pages cost a kernel zero-fill each time.
    worker_pool: Option<std::sync::Arc<rayon::ThreadPool>>,
    /// The moving average of each parameter, in `params` order (empty when EMA is off).
    ema: Vec<Tensor>,
}

/// `work` applied to up to `workers` contiguous chunks of `items` on their own threads (on
/// the calling thread when one chunk covers them all); the results come back in chunk order,
/// so whatever is combined from them does not depend on thread timing. A panicking chunk
/// becomes `panicked()`.
pub fn map_chunks<T: Sync, R: Send, E: Send>(
    items: &[T],
    workers: usize,
    work: impl Fn(&[T]) -> std::result::Result<R, E> + Sync,
    panicked: impl Fn() -> E,
) -> std::result::Result<Vec<R>, E> {
    let per_chunk = items
        .len()
        .div_ceil(workers.clamp(1, items.len().max(1)))
        .max(1);
    if per_chunk >= items.len() {
        return Ok(vec![work(items)?]);
    }
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per_chunk)
            .map(|chunk| scope.spawn(move || work(chunk)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(panicked())))
            .collect()
    })
}

/// A scene with its random draws made: what a worker needs to compute its loss.
struct PreparedScene {
    layout: SceneLayout,
    text: Vec<Tensor>,
    noisy: Vec<Tensor>,
    targets: Vec<Tensor>,
    /// Per shot: `[1, 1, T, H, W]` pixel weights, or `None`.
    weights: Vec<Option<Tensor>>,
    /// Per shot: whether its loss counts (given context shots do not).
    scored: Vec<bool>,
}

/// What one worker's chunk of a batch gives back.
struct ChunkResult {
    /// The chunk's share of the batch loss.
    loss: f32,
    gradients: candle_core::backprop::GradStore,
}

/// One training shot with its random draws made.
struct DrawnShot {
    /// `[1, C, T, H, W]`.
    clean: Tensor,
    text: Tensor,
    /// `[T, H, W]`, or `None` for all 1.
    weight: Option<Tensor>,
    t: f32,
    /// Noise shaped like `clean`.
    eps: Tensor,
    /// Drawn as given context: no loss of its own.
    context: bool,
}

/// Frame count of training shot `i`, after checking its latent and weight shapes.
fn checked_shot(i: usize, shot: &TrainingShot) -> Result<usize> {
    let (_, frames, h, w) = shot.latent.dims4().map_err(|_| {
        Error::Shape(format!(
            "training shot {i}: latent {:?} is not [C, T, H, W]",
            shot.latent.dims()
        ))
    })?;
    if let Some(wt) = &shot.weight {
        if wt.dims() != [frames, h, w] {
            return Err(Error::Shape(format!(
                "training shot {i}: pixel weight {:?} is not the latent's [T, H, W] = [{frames}, {h}, {w}]",
                wt.dims()
            )));
        }
    }
    Ok(frames)
}

/// The noisy inputs, velocity targets and layout of a scene whose draws are made.
fn prepare_drawn(
    transformer: &SceneTransformer,
    global_text: Option<&Tensor>,
    shots: Vec<DrawnShot>,
    drop_text: bool,
) -> Result<PreparedScene> {
    let mut specs = Vec::new();
    let mut text = Vec::new();
    if let Some(g) = global_text {
        specs.push(SegmentSpec::global(g.dim(0)?));
        text.push(g.clone());
    }
    let mut noisy = Vec::with_capacity(shots.len());
    let mut targets = Vec::with_capacity(shots.len());
    let mut weights = Vec::with_capacity(shots.len());
    // A scene drawn as all context still scores every shot, so no sample is wasted.
    let all_context = shots.iter().all(|shot| shot.context);
    let scored = shots
        .iter()
        .map(|shot| all_context || !shot.context)
        .collect();
    for (i, shot) in shots.into_iter().enumerate() {
        let t = shot.t as f64;
        noisy.push(((&shot.clean * (1.0 - t))? + (&shot.eps * t)?)?);
        targets.push((&shot.eps - &shot.clean)?);
        weights.push(
            shot.weight
                .map(|wt| wt.unsqueeze(0)?.unsqueeze(0))
                .transpose()?,
        );
        let grid = transformer
            .token_grid(shot.clean.dims())
            .map_err(|e| Error::Shape(format!("training shot {i}: {e}")))?;
        specs.push(SegmentSpec::shot(
            ShotRole::Generate,
            shot.text.dim(0)?,
            grid,
            shot.t,
        ));
        text.push(shot.text);
    }
    let text = text
        .into_iter()
        .map(|t| {
            let t = t.unsqueeze(0)?;
            if drop_text {
                Ok(t.zeros_like()?)
            } else {
                Ok(t)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(PreparedScene {
        layout: SceneLayout::new(&specs, 0)?,
        text,
        noisy,
        targets,
        weights,
        scored,
    })
}

/// The weighted flow-matching MSE of each shot of a prepared scene (scalar tensors).
fn shot_losses(
    transformer: &SceneTransformer,
    attention: AttentionMask,
    prepared: &PreparedScene,
) -> Result<Vec<Tensor>> {
    let batch = SceneBatch {
        layout: &prepared.layout,
        text: &prepared.text,
        latents: &prepared.noisy,
    };
    let output = transformer.forward_scene(&batch, attention, None, false, true)?;
    let mut per_shot = Vec::with_capacity(output.velocities.len());
    for ((prediction, target), pixel_weight) in output
        .velocities
        .iter()
        .zip(&prepared.targets)
        .zip(&prepared.weights)
    {
        let squared = (prediction - target)?.sqr()?;
        let squared = match pixel_weight {
            Some(weight) => squared.broadcast_mul(weight)?,
            None => squared,
        };
        per_shot.push(squared.mean_all()?);
    }
    Ok(per_shot)
}

/// The flow-matching loss of each shot of `scene` at the given per-shot timesteps and noise
/// (each noise shaped `[1, C, T, H, W]` like its shot's latent), with nothing drawn at random:
/// no text dropout, no single-frame substitution. Shot weights apply.
/// It lets a probe compare one shot's loss across the contexts put beside it.
pub fn fixed_shot_losses(
    pipeline: &Pipeline,
    scene: &TrainingScene,
    timesteps: &[f32],
    noise: &[Tensor],
) -> Result<Vec<f32>> {
    if timesteps.len() != scene.shots.len() || noise.len() != scene.shots.len() {
        return Err(Error::Training(format!(
            "{} shots need as many timesteps and noises, got {} and {}",
            scene.shots.len(),
            timesteps.len(),
            noise.len()
        )));
    }
    let mut drawn = Vec::with_capacity(scene.shots.len());
    for (i, ((shot, &t), eps)) in scene.shots.iter().zip(timesteps).zip(noise).enumerate() {
        checked_shot(i, shot)?;
        if !(0.0..=1.0).contains(&t) {
            return Err(Error::Timestep {
                segment: i,
                value: t,
            });
        }
        let clean = shot.latent.unsqueeze(0)?;
        if eps.dims() != clean.dims() {
            return Err(Error::Shape(format!(
                "shot {i}: noise {:?} is not the latent's {:?}",
                eps.dims(),
                clean.dims()
            )));
        }
        drawn.push(DrawnShot {
            clean,
            text: shot.text.clone(),
            weight: shot.weight.clone(),
            t,
            eps: eps.clone(),
            context: false,
        });
    }
    let transformer = &pipeline.transformer;
    let prepared = prepare_drawn(transformer, scene.global_text.as_ref(), drawn, false)?;
    shot_losses(transformer, pipeline.config().attention, &prepared)?
        .iter()
        .map(|loss| Ok(loss.to_scalar::<f32>()?))
        .collect()
}

impl Trainer {
    /// A fresh model with a seeded initialisation (adaLN-zero: modulations and the output
    /// layer start at zero, so every block starts as the identity).
    pub fn new(cfg: &Config, train: TrainConfig, device: &Device) -> Result<Self> {
        let initial = init_tensors(cfg, train.seed, Init::AdaLnZero, device)?;
        Self::with_weights(cfg, train, &initial, device)
    }

    /// A fresh run (new optimiser state, step 0) starting from the given weights, e.g. the
    /// previous stage's. Every tensor of `cfg` must be present with its shape.
    pub fn with_weights(
        cfg: &Config,
        train: TrainConfig,
        weights: &HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        let vars = VarMap::new();
        let pipeline = Pipeline::new(cfg, VarBuilder::from_varmap(&vars, DType::F32, device))?;
        let rng = SplitMix64::stream(train.seed, 0x5eed);
        let mut trainer = Self::assemble(cfg, train, &vars, pipeline, 0, rng)?;
        for (name, var, _, _) in &trainer.params {
            let value = weights.get(name).ok_or_else(|| {
                Error::Training(format!("the starting weights have no tensor '{name}'"))
            })?;
            if value.dims() != var.dims() {
                return Err(Error::Training(format!(
                    "starting tensor '{name}' has shape {:?}, the config expects {:?}",
                    value.dims(),
                    var.dims()
                )));
            }
            var.set(&value.to_device(device)?)?;
        }
        trainer.set_ema_decay(trainer.train.ema_decay)?;
        Ok(trainer)
    }

    fn assemble(
        cfg: &Config,
        train: TrainConfig,
        vars: &VarMap,
        pipeline: Pipeline,
        step: u64,
        rng: SplitMix64,
    ) -> Result<Self> {
        let device = pipeline.transformer.device().clone();
        let mut params: Vec<(String, Var, Tensor, Tensor)> = vars
            .data()
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(n, v)| {
                let zeros = v.zeros_like()?;
                Ok((n.clone(), v.clone(), zeros.clone(), zeros))
            })
            .collect::<Result<Vec<_>>>()?;
        params.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self {
            cfg: cfg.clone(),
            train,
            pipeline,
            params,
            step,
            rng,
            device,
            workers: 1,
            worker_pool: None,
            ema: Vec::new(),
        })
    }

    pub fn model(&self) -> &SceneTransformer {
        &self.pipeline.transformer
    }

    /// The trained pipeline; its text encoder is differentiable, so prompts encoded through it
    /// before [`Trainer::step`] train it too.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }
    /// The run's training settings as they stand.
    pub fn train_config(&self) -> &TrainConfig {
        &self.train
    }
    pub fn step_count(&self) -> u64 {
        self.step
    }
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The weights to sample with, by checkpoint name: the moving average when EMA is on,
    /// the trained weights otherwise. What [`Trainer::save`] writes to `model.safetensors`.
    pub fn sampling_tensors(&self) -> HashMap<String, Tensor> {
        if self.ema.is_empty() {
            return self.tensors();
        }
        self.params
            .iter()
            .zip(&self.ema)
            .map(|((n, _, _, _), e)| (n.clone(), e.clone()))
            .collect()
    }

    /// Turns the moving average on (from the current weights, when it was off), changes its
    /// decay, or turns it off (0).
    pub fn set_ema_decay(&mut self, decay: f64) -> Result<()> {
        if !(0.0..1.0).contains(&decay) {
            return Err(Error::Training(format!(
                "EMA decay {decay} must lie in 0..1 (0: off)"
            )));
        }
        if decay == 0.0 {
            self.ema.clear();
        } else if self.ema.is_empty() {
            self.ema = self
                .params
                .iter()
                .map(|(_, var, _, _)| Ok(var.as_tensor().copy()?))
                .collect::<Result<_>>()?;
        }
        self.train.ema_decay = decay;
        Ok(())
    }

    /// Replaces the warm-up and decay (see [`TrainConfig::learning_rate_at`]) for the steps
    /// to come; the step count goes on, so a schedule set on a resumed run applies from where
    /// the run stands.
    pub fn set_schedule(
        &mut self,
        warmup_steps: u64,
        decay_steps: u64,
        min_lr_ratio: f64,
    ) -> Result<()> {
        if !(0.0..=1.0).contains(&min_lr_ratio) {
            return Err(Error::Training(format!(
                "the smallest learning-rate ratio {min_lr_ratio} must lie in 0..=1"
            )));
        }
        self.train.warmup_steps = warmup_steps;
        self.train.decay_steps = decay_steps;
        self.train.min_lr_ratio = min_lr_ratio;
        Ok(())
    }

    /// The trained weights by checkpoint name.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.params
            .iter()
            .map(|(n, v, _, _)| (n.clone(), v.as_tensor().clone()))
            .collect()
    }

    fn logit_normal(&mut self) -> f32 {
        let x = self.train.logit_normal_mean + self.train.logit_normal_std * self.rng.normal();
        (1.0 / (1.0 + (-x).exp())) as f32
    }

    fn gaussian_like(&mut self, dims: &[usize]) -> Result<Tensor> {
        let count: usize = dims.iter().product();
        let values: Vec<f32> = (0..count).map(|_| self.rng.normal() as f32).collect();
        Ok(Tensor::from_vec(values, dims, &self.device)?)
    }

    /// The flow-matching loss of one scene: per-shot MSE averaged over shots.
    pub fn scene_loss(&mut self, scene: &TrainingScene) -> Result<Tensor> {
        let prepared = self.prepare(scene)?;
        self.prepared_loss(&prepared)
    }

    /// Draws everything random about one scene's sample (text dropout, single-frame choice,
    /// per-shot timesteps, noise), in scene order, so the draws do not depend on how many
    /// workers later compute the losses.
    fn prepare(&mut self, scene: &TrainingScene) -> Result<PreparedScene> {
        if scene.shots.is_empty() {
            return Err(Error::Training("a training scene has no shot".into()));
        }
        let drop_text = self.rng.uniform() < self.train.text_dropout_prob;
        let mut drawn = Vec::with_capacity(scene.shots.len());
        for (i, shot) in scene.shots.iter().enumerate() {
            let frames = checked_shot(i, shot)?;
            // Samples are built on the host; the step runs where the weights are.
            let mut clean = shot.latent.to_device(&self.device)?;
            let mut weight = shot
                .weight
                .as_ref()
                .map(|w| w.to_device(&self.device))
                .transpose()?;
            if frames > 1 && self.rng.uniform() < self.train.single_frame_prob {
                let frame = self.rng.below(frames);
                clean = clean.narrow(1, frame, 1)?;
                weight = weight.map(|wt| wt.narrow(0, frame, 1)).transpose()?;
            }
            let clean = clean.unsqueeze(0)?;
            // No extra draw at probability 0, so runs from before the option replay exactly.
            let context = scene.shots.len() > 1
                && self.train.context_prob > 0.0
                && self.rng.uniform() < self.train.context_prob;
            let t = if context {
                (self.rng.uniform() * self.train.context_max_t) as f32
            } else {
                self.logit_normal()
            };
            let eps = self.gaussian_like(clean.dims())?;
            drawn.push(DrawnShot {
                clean,
                text: shot.text.to_device(&self.device)?,
                weight,
                t,
                eps,
                context,
            });
        }
        let global_text = scene
            .global_text
            .as_ref()
            .map(|g| g.to_device(&self.device))
            .transpose()?;
        prepare_drawn(
            &self.pipeline.transformer,
            global_text.as_ref(),
            drawn,
            drop_text,
        )
    }

    /// The flow-matching loss of a prepared scene: the mean over its scored shots. Reads the
    /// weights only, so workers share them.
    fn prepared_loss(&self, prepared: &PreparedScene) -> Result<Tensor> {
        let per_shot: Vec<Tensor> =
            shot_losses(&self.pipeline.transformer, self.cfg.attention, prepared)?
                .into_iter()
                .zip(&prepared.scored)
                .filter_map(|(loss, &scored)| scored.then_some(loss))
                .collect();
        Ok(Tensor::stack(&per_shot, 0)?.mean_all()?)
    }

    /// Replaces the given-context draw (see [`TrainConfig::context_prob`]) for the steps to
    /// come.
    pub fn set_context_draw(&mut self, prob: f64, max_t: f64) -> Result<()> {
        if !(0.0..=1.0).contains(&prob) || !(0.0..=1.0).contains(&max_t) {
            return Err(Error::Training(format!(
                "context probability {prob} and largest context timestep {max_t} must lie in 0..=1"
            )));
        }
        self.train.context_prob = prob;
        self.train.context_max_t = max_t;
        Ok(())
    }

    /// Replaces the single-frame substitution probability (see
    /// [`TrainConfig::single_frame_prob`]) for the steps to come.
    pub fn set_single_frame_prob(&mut self, prob: f64) -> Result<()> {
        if !(0.0..=1.0).contains(&prob) {
            return Err(Error::Training(format!(
                "single-frame probability {prob} must lie in 0..=1"
            )));
        }
        self.train.single_frame_prob = prob;
        Ok(())
    }

    /// Replaces the learning rate for the steps to come (a resumed run being annealed).
    pub fn set_learning_rate(&mut self, learning_rate: f64) -> Result<()> {
        if !(learning_rate.is_finite() && learning_rate > 0.0) {
            return Err(Error::Training(format!(
                "learning rate {learning_rate} is not a positive number"
            )));
        }
        self.train.learning_rate = learning_rate;
        Ok(())
    }

    /// Threads that compute a batch's scene losses and gradients side by side (data
    /// parallelism: each scene has its own sequence layout, so scenes do not stack). The
    /// gradients are summed in a fixed order, so a run is deterministic for a given count;
    /// different counts agree to rounding.
    pub fn set_workers(&mut self, workers: usize) -> Result<()> {
        self.workers = workers.max(1);
        self.worker_pool = if self.workers > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(self.workers)
                .thread_name(|i| format!("lct-train-worker-{i}"))
                .build()
                .map_err(|e| Error::Training(format!("cannot start {workers} workers: {e}")))?;
            Some(std::sync::Arc::new(pool))
        } else {
            None
        };
        Ok(())
    }

    /// The summed loss of scenes that share a layout, run as one batch (each sample with its
    /// own timesteps); equal, to rounding, to the sum of their [`Self::prepared_loss`].
    fn group_loss(&self, scenes: &[&PreparedScene]) -> Result<Tensor> {
        let [first, ..] = scenes else {
            return Err(Error::Training("an empty group of scenes".into()));
        };
        if scenes.len() == 1 {
            return self.prepared_loss(first);
        }
        let stack = |pick: fn(&PreparedScene) -> &Vec<Tensor>, i: usize| -> Result<Tensor> {
            let parts: Vec<&Tensor> = scenes.iter().map(|s| &pick(s)[i]).collect();
            Ok(Tensor::cat(&parts, 0)?)
        };
        let text = (0..first.text.len())
            .map(|i| stack(|s| &s.text, i))
            .collect::<Result<Vec<_>>>()?;
        let noisy = (0..first.noisy.len())
            .map(|i| stack(|s| &s.noisy, i))
            .collect::<Result<Vec<_>>>()?;
        let timesteps: Vec<Vec<f32>> = scenes.iter().map(|s| s.layout.timesteps()).collect();
        let batch = SceneBatch {
            layout: &first.layout,
            text: &text,
            latents: &noisy,
        };
        let velocities = self.pipeline.transformer.forward_per_sample_timesteps(
            &batch,
            self.cfg.attention,
            &timesteps,
        )?;
        let mut per_shot = Vec::with_capacity(velocities.len());
        for (i, prediction) in velocities.iter().enumerate() {
            let squared = (prediction - stack(|s| &s.targets, i)?)?.sqr()?;
            let squared = if scenes.iter().any(|s| s.weights[i].is_some()) {
                let weights = scenes
                    .iter()
                    .map(|s| match &s.weights[i] {
                        Some(w) => Ok(w.clone()),
                        None => Ok(Tensor::ones_like(&s.targets[i].narrow(1, 0, 1)?)?),
                    })
                    .collect::<Result<Vec<_>>>()?;
                squared.broadcast_mul(&Tensor::cat(&weights, 0)?)?
            } else {
                squared
            };
            // Per sample: the mean over the shot's latent.
            per_shot.push(squared.flatten_from(1)?.mean(1)?);
        }
        // [samples, shots]: each sample's loss is the mean over its scored shots.
        let losses = Tensor::stack(&per_shot, 1)?;
        let scored: Vec<f32> = scenes
            .iter()
            .flat_map(|s| s.scored.iter().map(|&on| if on { 1.0 } else { 0.0 }))
            .collect();
        let scored = Tensor::from_vec(scored, losses.dims(), losses.device())?;
        let per_sample = ((losses * &scored)?.sum(1)? / scored.sum(1)?)?;
        Ok(per_sample.sum_all()?)
    }

    /// The loss of `units` (groups of same-layout scenes of `prepared`) summed and divided by
    /// `batch`, and its gradients.
    fn chunk_gradients(
        &self,
        prepared: &[PreparedScene],
        units: &[Vec<usize>],
        batch: usize,
    ) -> Result<ChunkResult> {
        let losses = units
            .iter()
            .map(|unit| {
                let scenes: Vec<&PreparedScene> = unit.iter().map(|&i| &prepared[i]).collect();
                self.group_loss(&scenes)
            })
            .collect::<Result<Vec<_>>>()?;
        let loss = (Tensor::stack(&losses, 0)?.sum_all()? / batch as f64)?;
        let value = loss.to_scalar::<f32>()?;
        Ok(ChunkResult {
            loss: value,
            gradients: loss.backward()?,
        })
    }

    /// The batch's scenes grouped by layout (in order of first appearance), each group split
    /// into up to one part per worker so that the workers share even a single group.
    fn units_of_work(&self, prepared: &[PreparedScene]) -> Vec<Vec<usize>> {
        // What a layout is made of, timesteps aside: per segment, shot or not, text, grid.
        type LayoutShape = Vec<(bool, usize, [usize; 3])>;
        let key = |p: &PreparedScene| -> LayoutShape {
            let segments = p.layout.segments();
            segments
                .iter()
                .map(|s| (s.is_shot(), s.text_len, s.grid))
                .collect()
        };
        let mut groups: Vec<(LayoutShape, Vec<usize>)> = Vec::new();
        for (i, p) in prepared.iter().enumerate() {
            let k = key(p);
            match groups.iter_mut().find(|(g, _)| *g == k) {
                Some((_, members)) => members.push(i),
                None => groups.push((k, vec![i])),
            }
        }
        let mut units = Vec::new();
        for (_, members) in groups {
            let per_part = members.len().div_ceil(self.workers).max(1);
            units.extend(members.chunks(per_part).map(<[usize]>::to_vec));
        }
        units
    }

    /// One optimiser step over a batch of scenes (loss averaged over scenes).
    pub fn step(&mut self, scenes: &[TrainingScene]) -> Result<StepStats> {
        if scenes.is_empty() {
            return Err(Error::Training("empty batch".into()));
        }
        let prepared = scenes
            .iter()
            .map(|scene| self.prepare(scene))
            .collect::<Result<Vec<_>>>()?;
        let batch = prepared.len();
        let units = self.units_of_work(&prepared);
        let results = match &self.worker_pool {
            Some(pool) => {
                use rayon::prelude::*;
                let per_chunk = units.len().div_ceil(self.workers).max(1);
                let chunks: Vec<&[Vec<usize>]> = units.chunks(per_chunk).collect();
                // Collected in chunk order, so the gradients add up in a fixed order.
                pool.install(|| {
                    chunks
                        .par_iter()
                        .map(|chunk| {
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                self.chunk_gradients(&prepared, chunk, batch)
                            }))
                            .unwrap_or_else(|_| {
                                Err(Error::Training("a training worker panicked".into()))
                            })
                        })
                        .collect::<Result<Vec<_>>>()
                })?
            }
            None => vec![self.chunk_gradients(&prepared, &units, batch)?],
        };
        let mut loss_value = 0f32;
        let mut stores = Vec::with_capacity(results.len());
        for chunk in results {
            loss_value += chunk.loss;
            stores.push(chunk.gradients);
        }
        if !loss_value.is_finite() {
            return Err(Error::Training(format!(
                "loss is {loss_value} at step {}",
                self.step
            )));
        }
        let mut gradients = Vec::with_capacity(self.params.len());
        let mut squared = 0f64;
        for (_, var, _, _) in &self.params {
            let mut sum: Option<Tensor> = None;
            for store in &stores {
                if let Some(g) = store.get(var.as_tensor()) {
                    sum = Some(match sum {
                        Some(s) => (s + g)?,
                        None => g.clone(),
                    });
                }
            }
            if let Some(g) = &sum {
                squared += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
            gradients.push(sum);
        }
        let grad_norm = squared.sqrt();
        let clip = if self.train.grad_clip > 0.0 && grad_norm > self.train.grad_clip {
            self.train.grad_clip / grad_norm
        } else {
            1.0
        };
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.train.beta1, self.train.beta2);
        let correction1 = 1.0 - b1.powi(t);
        let correction2 = 1.0 - b2.powi(t);
        let lr = self.train.learning_rate_at(self.step);
        for ((_, var, m, v), g) in self.params.iter_mut().zip(gradients) {
            let Some(g) = g else {
                continue;
            };
            let g = (g * clip)?;
            *m = ((&*m * b1)? + (&g * (1.0 - b1))?)?;
            *v = ((&*v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let m_hat = (&*m / correction1)?;
            let v_hat = (&*v / correction2)?;
            let update = (m_hat / (v_hat.sqrt()? + self.train.epsilon)?)?;
            let decayed = (var.as_tensor() * (1.0 - lr * self.train.weight_decay))?;
            var.set(&(decayed - (update * lr)?)?)?;
        }
        let decay = self.train.ema_decay;
        for ((_, var, _, _), average) in self.params.iter().zip(&mut self.ema) {
            // Detached: an average built from the variable would record the operation and
            // keep every earlier average alive through its graph.
            *average = ((&*average * decay)? + (var.as_tensor() * (1.0 - decay))?)?.detach();
        }
        Ok(StepStats {
            step: self.step,
            loss: loss_value,
            grad_norm: grad_norm as f32,
        })
    }

    /// Writes `config.json`, `model.safetensors` (the weights to sample with: see
    /// [`Trainer::sampling_tensors`]), `optimizer.safetensors` (moments, and the trained
    /// weights when they differ), `trainer.json`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        save_checkpoint(dir, &self.cfg, &self.sampling_tensors())?;
        let mut moments = HashMap::new();
        for (name, var, m, v) in &self.params {
            moments.insert(format!("m.{name}"), m.clone());
            moments.insert(format!("v.{name}"), v.clone());
            if !self.ema.is_empty() {
                moments.insert(format!("w.{name}"), var.as_tensor().clone());
            }
        }
        let path = dir.join(OPTIMIZER_FILE);
        candle_core::safetensors::save(&moments, &path).map_err(|e| Error::Io {
            path,
            source: std::io::Error::other(e.to_string()),
        })?;
        let state = TrainerState {
            step: self.step,
            rng: self.rng,
            train: self.train.clone(),
        };
        let path = dir.join(TRAINER_FILE);
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&state).expect("serialises"),
        )
        .map_err(|source| Error::Io { path, source })
    }

    /// Continues a run saved by [`Trainer::save`].
    pub fn resume(dir: &Path, device: &Device) -> Result<Self> {
        let cfg = Config::load(&dir.join(CONFIG_FILE))?;
        let path = dir.join(TRAINER_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let state: TrainerState =
            serde_json::from_str(&text).map_err(|source| Error::Json { path, source })?;
        let vars = VarMap::new();
        let pipeline = Pipeline::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, device))?;
        let weights_path = dir.join(crate::weights::WEIGHTS_FILE);
        let weights = read_safetensors(&weights_path, device)?;
        // Checks names and shapes against the config before anything is overwritten.
        crate::weights::pipeline_from_tensors(
            &cfg,
            weights.clone(),
            &weights_path,
            DType::F32,
            device,
        )?;
        let mut trainer =
            Self::assemble(&cfg, state.train, &vars, pipeline, state.step, state.rng)?;
        let moments = read_safetensors(&dir.join(OPTIMIZER_FILE), device)?;
        let averaged = trainer.train.ema_decay > 0.0;
        for (name, var, m, v) in &mut trainer.params {
            let missing = |kind: &str| {
                Error::Training(format!(
                    "{}: no {kind} moment for '{name}'",
                    dir.join(OPTIMIZER_FILE).display()
                ))
            };
            *m = moments
                .get(&format!("m.{name}"))
                .ok_or_else(|| missing("first"))?
                .clone();
            *v = moments
                .get(&format!("v.{name}"))
                .ok_or_else(|| missing("second"))?
                .clone();
            // With EMA, model.safetensors holds the average; the trained weights are here.
            let trained = if averaged {
                moments
                    .get(&format!("w.{name}"))
                    .ok_or_else(|| missing("trained weight (EMA run)"))?
            } else {
                &weights[name.as_str()]
            };
            var.set(trained)?;
        }
        if averaged {
            trainer.ema = trainer
                .params
                .iter()
                .map(|(name, _, _, _)| weights[name.as_str()].clone())
                .collect();
        }
        Ok(trainer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::gaussian;

    fn randn(seed: u64, dims: &[usize]) -> Tensor {
        gaussian(seed, 0, dims, &Device::Cpu).unwrap()
    }

    /// Three shots of 2 frames; the middle one weighted in the second scene.
    fn scene(seed: u64, weighted: bool) -> TrainingScene {
        TrainingScene {
            global_text: Some(randn(seed, &[6, 16])),
            shots: (0..3u64)
                .map(|k| TrainingShot {
                    latent: randn(seed + 10 + k, &[4, 2, 3, 3]),
                    text: randn(seed + 20 + k, &[4, 16]),
                    weight: (weighted && k == 1)
                        .then(|| randn(seed + 30, &[2, 3, 3]).abs().unwrap()),
                })
                .collect(),
        }
    }

    #[test]
    fn a_same_layout_group_runs_as_one_batch_with_the_same_loss_and_gradients() {
        let train = TrainConfig {
            single_frame_prob: 0.0,
            text_dropout_prob: 0.0,
            // Some shots drawn as context: unscored, and different per sample.
            context_prob: 0.4,
            seed: 5,
            ..TrainConfig::default()
        };
        let mut trainer = Trainer::new(&Config::tiny(), train, &Device::Cpu).unwrap();
        let prepared: Vec<PreparedScene> = [scene(100, false), scene(200, true), scene(300, false)]
            .iter()
            .map(|s| trainer.prepare(s).unwrap())
            .collect();
        let timesteps: Vec<Vec<f32>> = prepared.iter().map(|p| p.layout.timesteps()).collect();
        assert_ne!(
            timesteps[0], timesteps[1],
            "each sample draws its own timesteps"
        );
        assert_eq!(trainer.units_of_work(&prepared), vec![vec![0, 1, 2]]);
        let scenes: Vec<&PreparedScene> = prepared.iter().collect();
        let grouped = trainer.group_loss(&scenes).unwrap();
        let separate = prepared
            .iter()
            .map(|p| trainer.prepared_loss(p).unwrap())
            .reduce(|a, b| (a + b).unwrap())
            .unwrap();
        let (g, s) = (
            grouped.to_scalar::<f32>().unwrap(),
            separate.to_scalar::<f32>().unwrap(),
        );
        assert!((g - s).abs() <= 1e-5 * s.abs(), "grouped {g}, separate {s}");
        let (grouped_grads, separate_grads) =
            (grouped.backward().unwrap(), separate.backward().unwrap());
        for (name, var, _, _) in &trainer.params {
            let (a, b) = match (
                grouped_grads.get(var.as_tensor()),
                separate_grads.get(var.as_tensor()),
            ) {
                (Some(a), Some(b)) => (a, b),
                (None, None) => continue,
                _ => panic!("{name} has a gradient one way only"),
            };
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            let scale = b
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let diff = diff.to_scalar::<f32>().unwrap();
            assert!(
                diff <= 1e-4 * scale.max(1e-3),
                "{name}: {diff} (largest {scale})"
            );
        }
        // Two workers split one group in two.
        trainer.set_workers(2).unwrap();
        assert_eq!(trainer.units_of_work(&prepared), vec![vec![0, 1], vec![2]]);
    }
}
