//! Rectified-flow sampling: Euler steps from t = 1 to 0 with a timestep shift and
//! classifier-free guidance. Joint, conditioned and auto-regressive generation are one loop:
//! shots marked [`ShotRole::Generate`] start from noise and are denoised; the others are
//! given latents held at a fixed noise level (`condition_timestep`, or `history_timestep`
//! = t_c for history) whose outputs are discarded. History may also come as a [`KvView`].
//!
//! The unconditional branch replaces every text token with zeros (the null prompt the model
//! is trained with) and keeps all visual conditions.
//!
//! Context guidance (`context_guidance` != 1) adds a third branch: each generated shot seen
//! alone, with a null global prompt and its own prompt, no other shot and no history. The
//! step then moves `context_guidance - 1` times further along (with scene - alone), which
//! strengthens what the shot takes from its scene: the global prompt, the given shots and
//! the shots generated with it.

use crate::error::{Error, Result};
use crate::kv_cache::KvView;
use crate::layout::{AttentionMask, SceneLayout, SegmentSpec, ShotRole};
use crate::noise::gaussian;
use crate::transformer::{SceneBatch, SceneTransformer};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// Sampler settings. `Default` gives the project's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplerConfig {
    pub steps: usize,
    /// Classifier-free guidance scale; 1 disables the unconditional branch.
    pub guidance: f32,
    /// Timestep shift: t' = shift * t / (1 + (shift - 1) * t); 1 is no shift.
    pub shift: f32,
    pub seed: u64,
    /// t_c: the noise level history shots are re-noised to (LCT.md section 4).
    pub history_timestep: f32,
    /// The noise level given condition shots are held at.
    pub condition_timestep: f32,
    /// Context guidance scale: how strongly a generated shot follows its scene (global prompt,
    /// given and other generated shots) against itself alone; 1 disables the extra branch.
    pub context_guidance: f32,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl SamplerConfig {
    /// The one home of the sampler defaults: the nodes' widgets, the `lct` CLI and the
    /// recipe's measuring commands all read them from here.
    pub const DEFAULT: Self = Self {
        steps: 20,
        guidance: 3.0,
        shift: 1.0,
        seed: 0,
        history_timestep: 0.3,
        condition_timestep: 0.05,
        // Context guidance 2 measured best on the embedded model (nodes/train/EXPERIMENTS.md).
        context_guidance: 2.0,
    };

    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Config(format!("sampler: {what}")));
        if self.steps == 0 || self.steps > 10_000 {
            return bad(format!("steps {} must be in 1..=10000", self.steps));
        }
        if !(self.guidance.is_finite() && self.guidance >= 0.0) {
            return bad(format!(
                "guidance {} must be finite and >= 0",
                self.guidance
            ));
        }
        if !(self.context_guidance.is_finite() && self.context_guidance >= 0.0) {
            return bad(format!(
                "context_guidance {} must be finite and >= 0",
                self.context_guidance
            ));
        }
        if !(self.shift.is_finite() && self.shift > 0.0) {
            return bad(format!("shift {} must be finite and > 0", self.shift));
        }
        for (name, t) in [
            ("history_timestep", self.history_timestep),
            ("condition_timestep", self.condition_timestep),
        ] {
            if !(0.0..=1.0).contains(&t) {
                return bad(format!("{name} {t} is outside [0, 1]"));
            }
        }
        Ok(())
    }

    /// Timesteps t_0 = 1 > t_1 > ... > t_steps = 0 after the shift.
    pub fn schedule(&self) -> Vec<f32> {
        (0..=self.steps)
            .map(|i| {
                let t = 1.0 - i as f32 / self.steps as f32;
                self.shift * t / (1.0 + (self.shift - 1.0) * t)
            })
            .collect()
    }

    fn uses_guidance(&self) -> bool {
        self.guidance != 1.0
    }

    fn uses_context_guidance(&self) -> bool {
        self.context_guidance != 1.0
    }
}

/// One shot of a request.
#[derive(Debug, Clone)]
pub struct ShotInput {
    /// Text embeddings `[1, text_len, text_dim]`.
    pub text: Tensor,
    /// Latent shape `[C, T, H, W]`.
    pub latent_dims: [usize; 4],
    pub role: ShotRole,
    /// The clean latent `[1, C, T, H, W]` of a condition or history shot.
    pub latent: Option<Tensor>,
    /// The shot's index in the whole scene: it picks the noise stream, so a shot gets the same
    /// noise whether generated jointly, auto-regressively or with a KV cache.
    pub scene_index: usize,
}

impl ShotInput {
    /// A given shot carries a latent of the declared shape, and the text is `[1, tokens,
    /// text_dim]`; `i` names the shot in errors.
    pub fn check(&self, i: usize, text_dim: usize) -> Result<()> {
        let [c, t, h, w] = self.latent_dims;
        if self.role != ShotRole::Generate {
            let latent = self.latent.as_ref().ok_or_else(|| {
                Error::Shape(format!(
                    "shot {i} is a {:?} shot but has no latent",
                    self.role
                ))
            })?;
            if latent.dims() != [1, c, t, h, w] {
                return Err(Error::Shape(format!(
                    "shot {i}: latent {:?} is not the declared [1, {c}, {t}, {h}, {w}]",
                    latent.dims()
                )));
            }
        }
        let dims = self.text.dims();
        if dims.len() != 3 || dims[0] != 1 || dims[2] != text_dim {
            return Err(Error::Shape(format!(
                "shot {i}: text {dims:?} is not [1, tokens, {text_dim}]"
            )));
        }
        Ok(())
    }
}

/// A scene (or the part of it still to be run after a cached history).
#[derive(Debug, Clone, Default)]
pub struct SceneRequest {
    /// Global prompt embeddings `[1, text_len, text_dim]`; omitted when history comes cached.
    pub global_text: Option<Tensor>,
    pub shots: Vec<ShotInput>,
}

/// Progress reported after every step.
pub struct StepInfo<'a> {
    pub step: usize,
    pub total: usize,
    pub t: f32,
    /// Current estimate of the clean latent of each generated shot (for previews).
    pub denoised: &'a [Tensor],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepControl {
    Continue,
    Abort,
}

/// Noise stream ids: one per shot for generation, another for re-noising given latents.
pub(crate) fn generation_stream(scene_index: usize) -> u64 {
    2 * scene_index as u64
}
fn renoise_stream(scene_index: usize) -> u64 {
    2 * scene_index as u64 + 1
}

/// z_t = (1 - t) z_0 + t eps, with the shot's own re-noising stream.
pub fn renoise(latent: &Tensor, t: f32, seed: u64, scene_index: usize) -> Result<Tensor> {
    let eps = gaussian(
        seed,
        renoise_stream(scene_index),
        latent.dims(),
        latent.device(),
    )?
    .to_dtype(latent.dtype())?;
    Ok(((latent * (1.0 - t as f64))? + (eps * t as f64)?)?)
}

/// Given shots carry a latent of the declared shape; returns the layout specs at `t`.
fn shot_specs(
    model: &SceneTransformer,
    request: &SceneRequest,
    cfg: &SamplerConfig,
) -> Result<Vec<SegmentSpec>> {
    if request.shots.is_empty() {
        return Err(Error::Layout("a scene needs at least one shot".into()));
    }
    let mc = model.config();
    request
        .shots
        .iter()
        .enumerate()
        .map(|(i, shot)| {
            let [c, t, h, w] = shot.latent_dims;
            let grid = model
                .token_grid(&[1, c, t, h, w])
                .map_err(|e| Error::Shape(format!("shot {i}: {e}")))?;
            shot.check(i, mc.text_dim)?;
            let text_dims = shot.text.dims();
            let timestep = match shot.role {
                ShotRole::Generate => 1.0,
                ShotRole::Condition => cfg.condition_timestep,
                ShotRole::History => cfg.history_timestep,
            };
            Ok(SegmentSpec::shot(shot.role, text_dims[1], grid, timestep))
        })
        .collect()
}

/// Text for the batch: `[cond]` or `[cond, null]` stacked along the batch.
fn batched_text(text: &Tensor, guidance: bool) -> Result<Tensor> {
    if guidance {
        Ok(Tensor::cat(&[text, &text.zeros_like()?], 0)?)
    } else {
        Ok(text.clone())
    }
}

fn batched_latent(latent: &Tensor, guidance: bool) -> Result<Tensor> {
    if guidance {
        Ok(Tensor::cat(&[latent, latent], 0)?)
    } else {
        Ok(latent.clone())
    }
}

/// Layout of a request; after a cached history it starts where the history ends.
fn request_layout(
    request: &SceneRequest,
    specs: &[SegmentSpec],
    past: Option<&KvView>,
) -> Result<SceneLayout> {
    let mut all = Vec::with_capacity(specs.len() + 1);
    if let Some(g) = &request.global_text {
        all.push(SegmentSpec::global(g.dim(1)?));
    }
    all.extend_from_slice(specs);
    SceneLayout::new(&all, past.map_or(0, |p| p.rope_end()))
}

/// Velocities of the generated shots `generate` seen alone at `t`: a null global prompt and
/// the shot's own prompt, no other shot, no history (the branch context guidance moves away
/// from). Shots of equal latent and text shape run as one batch.
fn isolated_velocities(
    model: &SceneTransformer,
    request: &SceneRequest,
    specs: &[SegmentSpec],
    generate: &[usize],
    latents: &[Tensor],
    t: f32,
) -> Result<Vec<Tensor>> {
    let mc = model.config();
    let null_global = Tensor::zeros(
        (1, mc.global_text_len, mc.text_dim),
        model.dtype(),
        model.device(),
    )?;
    let shape_of = |i: usize| {
        (
            latents[i].dims().to_vec(),
            request.shots[i].text.dims().to_vec(),
        )
    };
    let mut isolated: Vec<Option<Tensor>> = vec![None; generate.len()];
    let mut pending: Vec<usize> = (0..generate.len()).collect();
    while let Some(&first) = pending.first() {
        let (group, rest): (Vec<usize>, Vec<usize>) = pending
            .iter()
            .partition(|&&g| shape_of(generate[g]) == shape_of(generate[first]));
        pending = rest;
        let spec = &specs[generate[first]];
        let layout = SceneLayout::new(
            &[
                SegmentSpec::global(mc.global_text_len),
                SegmentSpec::shot(ShotRole::Generate, spec.text_len, spec.grid, t),
            ],
            0,
        )?;
        let shot_text: Vec<&Tensor> = group
            .iter()
            .map(|&g| &request.shots[generate[g]].text)
            .collect();
        let shot_latents: Vec<&Tensor> = group.iter().map(|&g| &latents[generate[g]]).collect();
        let text = [
            null_global.repeat((group.len(), 1, 1))?,
            Tensor::cat(&shot_text, 0)?,
        ];
        let batch_latents = [Tensor::cat(&shot_latents, 0)?];
        let batch = SceneBatch {
            layout: &layout,
            text: &text,
            latents: &batch_latents,
        };
        let v = model
            .forward(&batch, mc.attention, None)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Layout("the isolated shot returned no velocity".into()))?;
        for (k, &g) in group.iter().enumerate() {
            isolated[g] = Some(v.narrow(0, k, 1)?);
        }
    }
    Ok(isolated.into_iter().flatten().collect())
}

/// Generates the request's [`ShotRole::Generate`] shots. Returns one clean latent
/// `[1, C, T, H, W]` per shot of the request: generated ones denoised, given ones as given.
pub fn sample(
    model: &SceneTransformer,
    request: &SceneRequest,
    cfg: &SamplerConfig,
    past: Option<&KvView>,
    mut on_step: impl FnMut(&StepInfo) -> StepControl,
) -> Result<Vec<Tensor>> {
    cfg.validate()?;
    let mask = model.config().attention;
    if past.is_some_and(|p| !p.is_empty()) && mask != AttentionMask::ContextCausal {
        return Err(Error::KvCache(
            "this model is bidirectional; cached history needs a context-causal model".into(),
        ));
    }
    let specs = shot_specs(model, request, cfg)?;
    let generate: Vec<usize> = (0..request.shots.len())
        .filter(|&i| request.shots[i].role == ShotRole::Generate)
        .collect();
    if generate.is_empty() {
        return Err(Error::Layout("no shot has the generate role".into()));
    }
    let guidance = cfg.uses_guidance();
    // A lone shot without a global prompt or history has no scene to follow harder.
    let has_context = request.shots.len() > 1
        || request.global_text.is_some()
        || past.is_some_and(|p| !p.is_empty());
    let context_guidance = cfg.uses_context_guidance() && has_context;
    let layout = request_layout(request, &specs, past)?;
    let shot_segments = layout.shot_indices();
    let device = model.device();

    let mut text = Vec::with_capacity(layout.segments().len());
    if let Some(g) = &request.global_text {
        text.push(batched_text(g, guidance)?);
    }
    for shot in &request.shots {
        text.push(batched_text(&shot.text, guidance)?);
    }
    // Given shots are noised once and held; generated shots start from their own noise.
    let mut latents = Vec::with_capacity(request.shots.len());
    for (i, shot) in request.shots.iter().enumerate() {
        let z = match &shot.latent {
            Some(latent) if shot.role != ShotRole::Generate => {
                renoise(latent, specs[i].timestep, cfg.seed, shot.scene_index)?
            }
            _ => {
                let [c, t, h, w] = shot.latent_dims;
                gaussian(
                    cfg.seed,
                    generation_stream(shot.scene_index),
                    &[1, c, t, h, w],
                    device,
                )?
                .to_dtype(model.dtype())?
            }
        };
        latents.push(z);
    }

    let schedule = cfg.schedule();
    let mut timesteps = layout.timesteps();
    for step in 0..cfg.steps {
        let (t, t_next) = (schedule[step], schedule[step + 1]);
        for &i in &generate {
            timesteps[shot_segments[i]] = t;
        }
        let step_layout = layout.with_timesteps(&timesteps)?;
        let batch_latents = latents
            .iter()
            .map(|z| batched_latent(z, guidance))
            .collect::<Result<Vec<_>>>()?;
        let batch = SceneBatch {
            layout: &step_layout,
            text: &text,
            latents: &batch_latents,
        };
        let velocities = model.forward(&batch, mask, past)?;
        let isolated = if context_guidance {
            isolated_velocities(model, request, &specs, &generate, &latents, t)?
        } else {
            Vec::new()
        };
        let mut denoised = Vec::with_capacity(generate.len());
        for (g, &i) in generate.iter().enumerate() {
            let v = &velocities[i];
            let cond = if guidance {
                v.narrow(0, 0, 1)?
            } else {
                v.clone()
            };
            let mut v = if guidance {
                let uncond = v.narrow(0, 1, 1)?;
                (&uncond + ((&cond - &uncond)? * cfg.guidance as f64)?)?
            } else {
                cond.clone()
            };
            if let Some(alone) = isolated.get(g) {
                v = (&v + ((&cond - alone)? * (cfg.context_guidance - 1.0) as f64)?)?;
            }
            denoised.push((&latents[i] - (&v * t as f64)?)?);
            latents[i] = (&latents[i] + (v * (t_next - t) as f64)?)?;
        }
        report_step(step + 1, cfg.steps, t_next, &denoised, &mut on_step)?;
    }
    Ok(scene_result(request, latents))
}

/// Tells `on_step` that `step` of `total` is done; its abort becomes [`Error::Cancelled`].
pub(crate) fn report_step(
    step: usize,
    total: usize,
    t: f32,
    denoised: &[Tensor],
    on_step: &mut impl FnMut(&StepInfo) -> StepControl,
) -> Result<()> {
    let info = StepInfo {
        step,
        total,
        t,
        denoised,
    };
    if on_step(&info) == StepControl::Abort {
        return Err(Error::Cancelled { step, total });
    }
    Ok(())
}

/// One latent per shot of the request: generated ones as sampled, given ones as given.
pub(crate) fn scene_result(request: &SceneRequest, sampled: Vec<Tensor>) -> Vec<Tensor> {
    request
        .shots
        .iter()
        .zip(sampled)
        .map(|(shot, z)| match (&shot.latent, shot.role) {
            (Some(given), role) if role != ShotRole::Generate => given.clone(),
            _ => z,
        })
        .collect()
}

/// Builds the K/V of a history: the global prompt (if any) and the given shots (condition
/// shots at `condition_timestep`, the others re-noised to t_c), appended to `past`. Guidance on means a batch of two (conditional, null text).
pub fn cache_history(
    model: &SceneTransformer,
    request: &SceneRequest,
    cfg: &SamplerConfig,
    past: &KvView,
) -> Result<KvView> {
    cfg.validate()?;
    if model.config().attention != AttentionMask::ContextCausal {
        return Err(Error::KvCache(
            "this model is bidirectional: its history cannot be cached exactly; use a context-causal model or auto-regressive mode without a cache".into(),
        ));
    }
    let guidance = cfg.uses_guidance();
    let mut segments = Vec::new();
    let mut text = Vec::new();
    if let Some(g) = &request.global_text {
        segments.push(SegmentSpec::global(g.dim(1)?));
        text.push(batched_text(g, guidance)?);
    }
    let mut latents = Vec::new();
    for (i, shot) in request.shots.iter().enumerate() {
        let latent = shot
            .latent
            .as_ref()
            .ok_or_else(|| Error::KvCache(format!("history shot {i} has no latent to cache")))?;
        let grid = model
            .token_grid(latent.dims())
            .map_err(|e| Error::Shape(format!("history shot {i}: {e}")))?;
        // Given references stay at the condition level, earlier shots at t_c: the same
        // timesteps `sample` gives them, so cached and recomputed history agree.
        let (role, timestep) = match shot.role {
            ShotRole::Condition => (ShotRole::Condition, cfg.condition_timestep),
            _ => (ShotRole::History, cfg.history_timestep),
        };
        segments.push(SegmentSpec::shot(role, shot.text.dim(1)?, grid, timestep));
        text.push(batched_text(&shot.text, guidance)?);
        let z = renoise(latent, timestep, cfg.seed, shot.scene_index)?;
        latents.push(batched_latent(&z, guidance)?);
    }
    if segments.is_empty() {
        return Ok(past.clone());
    }
    let layout = SceneLayout::history(&segments, past.rope_end())?;
    let batch = SceneBatch {
        layout: &layout,
        text: &text,
        latents: &latents,
    };
    model.extend_cache(&batch, past)
}

/// Mode of [`generate_autoregressive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryMode {
    /// Re-run every history shot (at t_c) in the sequence at every step.
    Recompute,
    /// Cache history K/V once per shot (context-causal models only).
    KvCache,
}

/// Generates all shots of `request` one after another; shot k sees shots 0..k-1 as history.
/// `on_step` receives the shot index being generated.
pub fn generate_autoregressive(
    model: &SceneTransformer,
    request: &SceneRequest,
    cfg: &SamplerConfig,
    mode: HistoryMode,
    mut on_step: impl FnMut(usize, &StepInfo) -> StepControl,
) -> Result<Vec<Tensor>> {
    let mut done: Vec<Tensor> = Vec::new();
    let mut cache = KvView::empty();
    for (k, shot) in request.shots.iter().enumerate() {
        let mut current = shot.clone();
        current.role = ShotRole::Generate;
        let latent = match mode {
            HistoryMode::Recompute => {
                let mut shots: Vec<ShotInput> = request.shots[..k]
                    .iter()
                    .zip(&done)
                    .map(|(s, z)| ShotInput {
                        role: ShotRole::History,
                        latent: Some(z.clone()),
                        ..s.clone()
                    })
                    .collect();
                shots.push(current);
                let sub = SceneRequest {
                    global_text: request.global_text.clone(),
                    shots,
                };
                sample(model, &sub, cfg, None, |info| on_step(k, info))?
                    .pop()
                    .expect("one shot per request")
            }
            HistoryMode::KvCache => {
                let previous = if k == 0 {
                    SceneRequest {
                        global_text: request.global_text.clone(),
                        shots: Vec::new(),
                    }
                } else {
                    SceneRequest {
                        global_text: None,
                        shots: vec![ShotInput {
                            role: ShotRole::History,
                            latent: Some(done[k - 1].clone()),
                            ..request.shots[k - 1].clone()
                        }],
                    }
                };
                cache = cache_history(model, &previous, cfg, &cache)?;
                let sub = SceneRequest {
                    global_text: None,
                    shots: vec![current],
                };
                sample(model, &sub, cfg, Some(&cache), |info| on_step(k, info))?
                    .pop()
                    .expect("one shot per request")
            }
        };
        done.push(latent);
    }
    Ok(done)
}
