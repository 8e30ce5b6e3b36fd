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
use candle_core::{DType, Device, Tensor, Var, D};
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
    /// Latent channel c weighs `e_c^p` in the loss (normalised to mean 1), where `e_c` is the
    /// pixel energy of its decoder column. 0 weighs every channel alike; 1 is pixel-space MSE
    /// for an orthogonal decoder. A whitened PCA latent's minor channels carry little of the
    /// image but, at p = 0, as much of the loss as the channels that hold colour and layout.
    pub channel_weight_power: f64,
    /// Probability that a shot of a multi-shot scene is drawn as given context: timestep
    /// uniform in `[0, context_max_t]` and no loss of its own (a condition's output is
    /// discarded at inference too). Logit-normal timesteps almost never fall that low, yet
    /// given shots (t = 0.05) and clean history sit there. 0 keeps the paper's draw.
    pub context_prob: f64,
    pub context_max_t: f64,
    /// Weight of the routing-supervision term (0: off, the paper's loss alone). With it, head
    /// 0 of every layer but the first is trained to put each shot's queries on the subject
    /// tokens of the other shots it may see (see [`TrainingShot::subject`]): the cross-shot
    /// lookup that copying needs, which the flow-matching loss alone finds only slowly.
    pub route_weight: f64,
    /// Only shots at this timestep or below serve as routing sources (a noisy sibling's
    /// subject cannot be found by its content).
    pub route_max_source_t: f64,
    pub seed: u64,
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
            channel_weight_power: 0.0,
            context_prob: 0.0,
            context_max_t: 0.1,
            route_weight: 0.0,
            route_max_source_t: 0.5,
            seed: 0,
        }
    }
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
    /// Optional `[T, H, W]` coverage (0..=1) of the shot's subject per latent pixel: where
    /// routing supervision sends other shots' queries. `None`: no subject to copy from.
    pub subject: Option<Tensor>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    pub step: u64,
    /// The batch's training loss (flow matching plus the weighted routing term).
    pub loss: f32,
    pub grad_norm: f32,
    /// The routing term before its weight, averaged over the scenes that have one.
    #[serde(default)]
    pub route_loss: Option<f32>,
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
    /// `[1, C, 1, 1, 1]` loss weights per latent channel; `None` weighs them alike.
    channel_weights: Option<Tensor>,
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

/// `[1, C, 1, 1, 1]` weights `e_c^power / mean(e^power)` from the autoencoder's per-channel
/// pixel energy `e_c`, or `None` at power 0.
fn channel_loss_weights(pipeline: &Pipeline, power: f64) -> Result<Option<Tensor>> {
    if !power.is_finite() || !(0.0..=2.0).contains(&power) {
        return Err(Error::Training(format!(
            "channel weight power {power} is outside 0..=2"
        )));
    }
    if power == 0.0 {
        return Ok(None);
    }
    let energy = pipeline
        .autoencoder()
        .map_err(|_| {
            Error::Training(format!(
                "channel weight power {power} needs the autoencoder's decoder to weigh channels, and this model has no autoencoder"
            ))
        })?
        .channel_pixel_energy()?;
    if let Some(c) = energy.iter().position(|&e| !(e.is_finite() && e > 0.0)) {
        return Err(Error::Training(format!(
            "latent channel {c} decodes to no pixel energy ({}), so it cannot be weighed by it",
            energy[c]
        )));
    }
    let raw: Vec<f64> = energy.iter().map(|&e| (e as f64).powf(power)).collect();
    let mean = raw.iter().sum::<f64>() / raw.len() as f64;
    let weights: Vec<f32> = raw.iter().map(|w| (w / mean) as f32).collect();
    let device = pipeline.transformer.device();
    Ok(Some(Tensor::from_vec(
        weights,
        (1, energy.len(), 1, 1, 1),
        device,
    )?))
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
    /// Per shot: which of its video tokens hold its subject (`None`: no subject given).
    subject_tokens: Vec<Option<Vec<bool>>>,
}

/// What one worker's chunk of a batch gives back.
struct ChunkResult {
    /// The chunk's share of the batch loss.
    loss: f32,
    /// Sum of the routing terms of its scenes that have one, and how many do.
    route_sum: f32,
    routed: usize,
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
    /// `[T, H, W]` subject coverage, or `None`.
    subject: Option<Tensor>,
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
    if let Some(subject) = &shot.subject {
        if subject.dims() != [frames, h, w] {
            return Err(Error::Shape(format!(
                "training shot {i}: subject coverage {:?} is not the latent's [T, H, W] = [{frames}, {h}, {w}]",
                subject.dims()
            )));
        }
    }
    Ok(frames)
}

/// Which tokens of a `[T, H, W]` coverage map hold any of the subject, in the transformer's
/// token order (frame, row, column) at patch size `p`.
fn subject_tokens(coverage: &Tensor, p: usize) -> Result<Vec<bool>> {
    let (t, h, w) = coverage.dims3()?;
    let pooled = coverage
        .reshape((t, h / p, p, w / p, p))?
        .max(4)?
        .max(2)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(pooled.into_iter().map(|c| c > 0.0).collect())
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
    let mut subjects = Vec::with_capacity(shots.len());
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
        subjects.push(
            shot.subject
                .as_ref()
                .map(|c| subject_tokens(c, transformer.config().patch_size))
                .transpose()?,
        );
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
        subject_tokens: subjects,
    })
}

/// The weighted flow-matching MSE of each shot of a prepared scene (scalar tensors).
fn shot_losses(
    transformer: &SceneTransformer,
    attention: AttentionMask,
    prepared: &PreparedScene,
    channel_weights: Option<&Tensor>,
) -> Result<Vec<Tensor>> {
    Ok(scene_terms(transformer, attention, prepared, channel_weights, None)?.0)
}

/// The layers whose head 0 routing supervision trains: all but the first, whose keys hold
/// nothing yet but their own patch (a one-layer model: its only layer).
fn route_layers(depth: usize) -> Vec<usize> {
    if depth > 1 {
        (1..depth).collect()
    } else {
        vec![0]
    }
}

/// The per-shot flow-matching MSE of a prepared scene and, when `route_max_source_t` is
/// given, its routing term (see [`route_term`]; `None` when no shot has a source).
fn scene_terms(
    transformer: &SceneTransformer,
    attention: AttentionMask,
    prepared: &PreparedScene,
    channel_weights: Option<&Tensor>,
    route_max_source_t: Option<f64>,
) -> Result<(Vec<Tensor>, Option<Tensor>)> {
    let batch = SceneBatch {
        layout: &prepared.layout,
        text: &prepared.text,
        latents: &prepared.noisy,
    };
    let probe = match route_max_source_t {
        Some(_) => route_layers(transformer.config().depth),
        None => Vec::new(),
    };
    let output = transformer.forward_probed(&batch, attention, None, false, true, &probe)?;
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
        let squared = match channel_weights {
            Some(weights) => squared.broadcast_mul(weights)?,
            None => squared,
        };
        per_shot.push(squared.mean_all()?);
    }
    let route = match route_max_source_t {
        Some(max_t) => route_term(
            &prepared.layout,
            attention,
            &output.probed,
            &prepared.subject_tokens,
            max_t,
        )?,
        None => None,
    };
    Ok((per_shot, route))
}

/// Routing supervision: the mean over the probed layers and over every video token of every
/// shot that has a source of `-log` (the attention mass head 0 puts on source tokens). A
/// source token holds the subject of another shot that the query's shot may see under
/// `mask` and whose timestep is at most `max_source_t`. `None` when no shot has a source.
fn route_term(
    layout: &SceneLayout,
    mask: AttentionMask,
    probed: &[(Tensor, Tensor)],
    subjects: &[Option<Vec<bool>>],
    max_source_t: f64,
) -> Result<Option<Tensor>> {
    let segments = layout.segments();
    let shots = layout.shot_indices();
    // Packed positions of each shot's subject tokens, where that shot may serve as a source.
    let sources_of: Vec<Vec<u32>> = shots
        .iter()
        .zip(subjects)
        .map(|(&s, subject)| {
            let segment = &segments[s];
            match subject {
                Some(tokens) if segment.timestep as f64 <= max_source_t => tokens
                    .iter()
                    .enumerate()
                    .filter(|&(_, &on)| on)
                    .map(|(j, _)| (segment.offset + segment.text_len + j) as u32)
                    .collect(),
                _ => Vec::new(),
            }
        })
        .collect();
    let mut total: Option<Tensor> = None;
    let mut queries = 0usize;
    for (qi, &qs) in shots.iter().enumerate() {
        let sources: Vec<u32> = shots
            .iter()
            .enumerate()
            .filter(|&(si, &s)| si != qi && mask.allows(qs as u32, s as u32))
            .flat_map(|(si, _)| sources_of[si].iter().copied())
            .collect();
        if sources.is_empty() {
            continue;
        }
        let segment = &segments[qs];
        // The keys this shot's queries may see (a large negative, not -inf: no NaN on the tape).
        let bias: Vec<f32> = segments
            .iter()
            .enumerate()
            .flat_map(|(ki, key)| {
                let allowed = mask.allows(qs as u32, ki as u32);
                std::iter::repeat_n(if allowed { 0.0 } else { -1e9 }, key.len())
            })
            .collect();
        let Some((first_q, _)) = probed.first() else {
            return Ok(None);
        };
        let device = first_q.device();
        let bias = Tensor::from_vec(bias, (1, layout.len()), device)?;
        let sources = Tensor::new(sources.as_slice(), device)?;
        for (q, k) in probed {
            let q = q.get(0)?.get(0)?.narrow(
                0,
                segment.offset + segment.text_len,
                segment.video_len(),
            )?;
            let k = k.get(0)?.get(0)?;
            let scale = 1.0 / (q.dim(1)? as f64).sqrt();
            let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&bias)?;
            let log_p = candle_nn::ops::log_softmax(&scores, D::Minus1)?;
            let on_sources = log_p.index_select(&sources, 1)?.log_sum_exp(1)?;
            let term = on_sources.neg()?.sum_all()?;
            total = Some(match total {
                Some(sum) => (sum + term)?,
                None => term,
            });
            queries += segment.video_len();
        }
    }
    Ok(match total {
        Some(sum) => Some((sum / queries as f64)?),
        None => None,
    })
}

/// The flow-matching loss of each shot of `scene` at the given per-shot timesteps and noise
/// (each noise shaped `[1, C, T, H, W]` like its shot's latent), with nothing drawn at random:
/// no text dropout, no single-frame substitution, every channel alike. Shot weights apply.
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
            subject: shot.subject.clone(),
        });
    }
    let transformer = &pipeline.transformer;
    let prepared = prepare_drawn(transformer, scene.global_text.as_ref(), drawn, false)?;
    shot_losses(transformer, pipeline.config().attention, &prepared, None)?
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
        trainer.set_channel_weight_power(trainer.train.channel_weight_power)?;
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
            // Set once the weights are in: they depend on the loaded decoder.
            channel_weights: None,
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

    /// The weights by checkpoint name.
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
        Ok(self.prepared_loss(&prepared)?.0)
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
            let mut subject = shot.subject.clone();
            if frames > 1 && self.rng.uniform() < self.train.single_frame_prob {
                let frame = self.rng.below(frames);
                clean = clean.narrow(1, frame, 1)?;
                weight = weight.map(|wt| wt.narrow(0, frame, 1)).transpose()?;
                subject = subject.map(|c| c.narrow(0, frame, 1)).transpose()?;
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
                subject,
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

    /// The loss of a prepared scene (flow matching plus the weighted routing term) and the
    /// routing term alone when it applies; reads the weights only, so workers share them.
    fn prepared_loss(&self, prepared: &PreparedScene) -> Result<(Tensor, Option<Tensor>)> {
        let route = (self.train.route_weight > 0.0).then_some(self.train.route_max_source_t);
        let (per_shot, route) = scene_terms(
            &self.pipeline.transformer,
            self.cfg.attention,
            prepared,
            self.channel_weights.as_ref(),
            route,
        )?;
        let per_shot: Vec<Tensor> = per_shot
            .into_iter()
            .zip(&prepared.scored)
            .filter_map(|(loss, &scored)| scored.then_some(loss))
            .collect();
        let flow = Tensor::stack(&per_shot, 0)?.mean_all()?;
        Ok(match route {
            Some(route) => (
                (flow + (&route * self.train.route_weight)?)?,
                Some(route.detach()),
            ),
            None => (flow, None),
        })
    }

    /// Turns routing supervision (see [`TrainConfig::route_weight`]) on, off (weight 0) or
    /// to another weight for the steps to come.
    pub fn set_route_supervision(&mut self, weight: f64, max_source_t: f64) -> Result<()> {
        if !(weight.is_finite() && weight >= 0.0 && (0.0..=1.0).contains(&max_source_t)) {
            return Err(Error::Training(format!(
                "routing weight {weight} must be >= 0 and its largest source timestep {max_source_t} lie in 0..=1"
            )));
        }
        self.train.route_weight = weight;
        self.train.route_max_source_t = max_source_t;
        Ok(())
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

    /// Replaces the loss's channel-weight power for the steps to come (see
    /// [`TrainConfig::channel_weight_power`]).
    pub fn set_channel_weight_power(&mut self, power: f64) -> Result<()> {
        self.channel_weights = channel_loss_weights(&self.pipeline, power)?;
        self.train.channel_weight_power = power;
        Ok(())
    }

    /// The loss weight of each latent channel (all 1 when the power is 0).
    pub fn channel_weights(&self) -> Result<Vec<f32>> {
        match &self.channel_weights {
            Some(w) => Ok(w.flatten_all()?.to_vec1::<f32>()?),
            None => Ok(vec![1.0; self.cfg.latent_channels]),
        }
    }

    /// Threads that compute a batch's scene losses and gradients side by side (data
    /// parallelism: each scene has its own sequence layout, so scenes do not stack). The
    /// gradients are summed in a fixed order, so a run is deterministic for a given count;
    /// different counts agree to rounding.
    pub fn set_workers(&mut self, workers: usize) {
        self.workers = workers.max(1);
    }

    /// The loss sum of `chunk` divided by `batch`, and its gradients.
    fn chunk_gradients(&self, chunk: &[PreparedScene], batch: usize) -> Result<ChunkResult> {
        let mut losses = Vec::with_capacity(chunk.len());
        let (mut route_sum, mut routed) = (0f32, 0usize);
        for prepared in chunk {
            let (loss, route) = self.prepared_loss(prepared)?;
            losses.push(loss);
            if let Some(route) = route {
                route_sum += route.to_scalar::<f32>()?;
                routed += 1;
            }
        }
        let loss = (Tensor::stack(&losses, 0)?.sum_all()? / batch as f64)?;
        let value = loss.to_scalar::<f32>()?;
        Ok(ChunkResult {
            loss: value,
            route_sum,
            routed,
            gradients: loss.backward()?,
        })
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
        let results = map_chunks(
            &prepared,
            self.workers,
            |chunk| self.chunk_gradients(chunk, batch),
            || Error::Training("a training worker panicked".into()),
        )?;
        let mut loss_value = 0f32;
        let (mut route_sum, mut routed) = (0f32, 0usize);
        let mut stores = Vec::with_capacity(results.len());
        for chunk in results {
            loss_value += chunk.loss;
            route_sum += chunk.route_sum;
            routed += chunk.routed;
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
        let lr = self.train.learning_rate;
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
        Ok(StepStats {
            step: self.step,
            loss: loss_value,
            grad_norm: grad_norm as f32,
            route_loss: (routed > 0).then(|| route_sum / routed as f32),
        })
    }

    /// Writes `config.json`, `model.safetensors`, `optimizer.safetensors`, `trainer.json`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        save_checkpoint(dir, &self.cfg, &self.tensors())?;
        let mut moments = HashMap::new();
        for (name, _, m, v) in &self.params {
            moments.insert(format!("m.{name}"), m.clone());
            moments.insert(format!("v.{name}"), v.clone());
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
        for (name, var, m, v) in &mut trainer.params {
            var.set(&weights[name.as_str()])?;
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
        }
        trainer.set_channel_weight_power(trainer.train.channel_weight_power)?;
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

    /// `[T, H, W]` coverage of a `[4, 2, 3, 3]` tiny-model shot with the given (t, y, x) set.
    fn coverage(cells: &[(usize, usize, usize)]) -> Tensor {
        let mut values = vec![0f32; 18];
        for &(t, y, x) in cells {
            values[t * 9 + y * 3 + x] = 0.5;
        }
        Tensor::from_vec(values, (2, 3, 3), &Device::Cpu).unwrap()
    }

    fn drawn(seed: u64, t: f32, subject: Option<Tensor>) -> DrawnShot {
        DrawnShot {
            clean: randn(seed, &[1, 4, 2, 3, 3]),
            text: randn(seed + 1, &[4, 16]),
            weight: None,
            t,
            eps: randn(seed + 2, &[1, 4, 2, 3, 3]),
            context: false,
            subject,
        }
    }

    /// The routing term computed the slow way from the probed queries and keys: per query
    /// token of every shot with a source, softmax over the keys it may see, `-ln` of the mass
    /// on the sources, averaged over queries and layers.
    fn brute_force_route(
        layout: &SceneLayout,
        mask: AttentionMask,
        probed: &[(Tensor, Tensor)],
        sources: &[(usize, Vec<usize>)],
    ) -> Option<f64> {
        let ranks = layout.segment_ranks(0);
        let (mut sum, mut count) = (0f64, 0usize);
        for (q, k) in probed {
            let q = q.get(0).unwrap().get(0).unwrap().to_vec2::<f32>().unwrap();
            let k = k.get(0).unwrap().get(0).unwrap().to_vec2::<f32>().unwrap();
            for (query_segment, source_positions) in sources {
                let segment = &layout.segments()[*query_segment];
                for query in segment.video_range() {
                    let scores: Vec<f64> = (0..k.len())
                        .map(|key| {
                            if !mask.allows(ranks[query], ranks[key]) {
                                return f64::NEG_INFINITY;
                            }
                            let dot: f64 = q[query]
                                .iter()
                                .zip(&k[key])
                                .map(|(a, b)| (a * b) as f64)
                                .sum();
                            dot / (q[query].len() as f64).sqrt()
                        })
                        .collect();
                    let total: f64 = scores.iter().map(|s| s.exp()).sum();
                    let on: f64 = source_positions.iter().map(|&p| scores[p].exp()).sum();
                    sum += -(on / total).ln();
                    count += 1;
                }
            }
        }
        (count > 0).then(|| sum / count as f64)
    }

    #[test]
    fn the_routing_term_is_the_attention_mass_on_visible_clean_sibling_subjects() {
        let cfg = Config::tiny();
        let trainer = Trainer::new(&cfg, TrainConfig::default(), &Device::Cpu).unwrap();
        let model = trainer.model();
        // Shot A (clean, subject at two tokens) is the only source; B's subject is too noisy
        // to count; C has none.
        let shots = vec![
            drawn(10, 0.1, Some(coverage(&[(0, 0, 0), (1, 2, 2)]))),
            drawn(20, 0.9, Some(coverage(&[(0, 1, 1)]))),
            drawn(30, 0.2, None),
        ];
        let prepared = prepare_drawn(model, Some(&randn(5, &[6, 16])), shots, false).unwrap();
        let layout = &prepared.layout;
        let a = &layout.segments()[1];
        let a_subject = vec![a.video_range().start, a.video_range().start + 9 + 2 * 3 + 2];
        for mask in [AttentionMask::Bidirectional, AttentionMask::ContextCausal] {
            let batch = SceneBatch {
                layout,
                text: &prepared.text,
                latents: &prepared.noisy,
            };
            let layers = route_layers(cfg.depth);
            assert_eq!(layers, vec![1]);
            let probed = model
                .forward_probed(&batch, mask, None, false, false, &layers)
                .unwrap()
                .probed;
            let route = route_term(layout, mask, &probed, &prepared.subject_tokens, 0.5)
                .unwrap()
                .expect("B and C see A under either mask")
                .to_scalar::<f32>()
                .unwrap() as f64;
            // B (segment 2) and C (segment 3) look up A; A has no source of its own.
            let expected = brute_force_route(
                layout,
                mask,
                &probed,
                &[(2, a_subject.clone()), (3, a_subject.clone())],
            )
            .unwrap();
            assert!(
                (route - expected).abs() < 1e-4,
                "{mask:?}: routing term {route}, brute force {expected}"
            );
        }

        // A source only after every other shot: the causal mask hides it, bidirectional not.
        let shots = vec![
            drawn(10, 0.9, None),
            drawn(20, 0.9, None),
            drawn(30, 0.1, Some(coverage(&[(1, 0, 2)]))),
        ];
        let prepared = prepare_drawn(model, None, shots, false).unwrap();
        let batch = SceneBatch {
            layout: &prepared.layout,
            text: &prepared.text,
            latents: &prepared.noisy,
        };
        let term = |mask| {
            let probed = model
                .forward_probed(&batch, mask, None, false, false, &[1])
                .unwrap()
                .probed;
            route_term(
                &prepared.layout,
                mask,
                &probed,
                &prepared.subject_tokens,
                0.5,
            )
            .unwrap()
        };
        assert!(term(AttentionMask::ContextCausal).is_none());
        assert!(term(AttentionMask::Bidirectional).is_some());
    }

    #[test]
    fn routing_supervision_teaches_head_zero_to_look_up_the_subject() {
        let cfg = Config::tiny();
        let train = TrainConfig {
            learning_rate: 3e-3,
            single_frame_prob: 0.0,
            text_dropout_prob: 0.0,
            context_prob: 0.5,
            route_weight: 1.0,
            seed: 3,
            ..TrainConfig::default()
        };
        let mut trainer = Trainer::new(&cfg, train, &Device::Cpu).unwrap();
        // Each scene's subject sits at one token per frame, in a different place per shot,
        // and its latent there is the scene's own colour.
        let scenes: Vec<TrainingScene> = (0..4u64)
            .map(|s| TrainingScene {
                global_text: None,
                shots: (0..3u64)
                    .map(|i| {
                        let cell = ((s + i) % 3) as usize;
                        let subject = coverage(&[(0, cell, cell), (1, cell, 2 - cell)]);
                        let colour = randn(100 + s, &[4, 1, 1, 1]);
                        let background = (randn(200 + 10 * s + i, &[4, 2, 3, 3]) * 0.1).unwrap();
                        let latent = (background
                            + colour
                                .broadcast_mul(&subject.unsqueeze(0).unwrap())
                                .unwrap())
                        .unwrap();
                        TrainingShot {
                            latent,
                            text: randn(300 + i, &[4, 16]),
                            weight: None,
                            subject: Some(subject),
                        }
                    })
                    .collect(),
            })
            .collect();
        let mut routes = Vec::new();
        for _ in 0..200 {
            if let Some(route) = trainer.step(&scenes).unwrap().route_loss {
                routes.push(route);
            }
        }
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        let (first, last) = (mean(&routes[..20]), mean(&routes[routes.len() - 20..]));
        assert!(
            routes.len() > 150 && last < 0.5 * first,
            "the routing term went from {first} to {last} over {} steps with a source",
            routes.len()
        );
        // Off, the term is neither computed nor reported.
        trainer.set_route_supervision(0.0, 0.5).unwrap();
        assert_eq!(trainer.step(&scenes).unwrap().route_loss, None);
        assert!(trainer.set_route_supervision(-1.0, 0.5).is_err());
        assert!(trainer.set_route_supervision(1.0, 1.5).is_err());
    }
}
