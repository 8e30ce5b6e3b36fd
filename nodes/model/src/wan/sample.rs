//! Sampling a scene with a Wan transformer: the project's rectified-flow loop (the same
//! [`SamplerConfig`] schedule and shift, the same per-shot noise streams, the same roles) with
//! Wan's denoiser. Wan's timestep scale is the flow time times 1000, and its unconditional
//! branch is the encoded negative prompt (`null_text`, the empty prompt by default), as in
//! diffusers' `WanPipeline`.
//!
//! Joint generation, auto-regressive generation recomputing the history, and auto-regressive
//! generation over a cached history ([`WanHistory`]) give the same shots when the mask is
//! context-causal: cached history is what recomputing would see.

use candle_core::{DType, Tensor};

use super::config::WAN_TIME_SCALE;
use super::scene::{WanSceneCache, WanShot};
use super::WanTransformer;
use crate::noise::gaussian;
use crate::sampler::{generation_stream, renoise, report_step, scene_result};
use crate::{
    AttentionMask, Error, HistoryMode, Result, SamplerConfig, SceneRequest, ShotInput, ShotRole,
    StepControl, StepInfo,
};

/// The history of a scene as cached self-attention keys and values: one cache for the
/// prompted branch and one for the negative-prompt branch (guidance), and the global prompt
/// the shots that follow are still conditioned on.
pub struct WanHistory {
    pub cond: WanSceneCache,
    pub uncond: Option<WanSceneCache>,
    pub global_text: Tensor,
}

impl WanHistory {
    pub fn shots(&self) -> usize {
        self.cond.shots
    }
}

/// The timestep a shot is run at, in flow time, while generated shots are at `t`.
fn shot_time(role: ShotRole, t: f32, cfg: &SamplerConfig) -> f32 {
    match role {
        ShotRole::Generate => t,
        ShotRole::Condition => cfg.condition_timestep,
        ShotRole::History => cfg.history_timestep,
    }
}

fn check_request(model: &WanTransformer, request: &SceneRequest) -> Result<()> {
    if request.shots.is_empty() {
        return Err(Error::Layout("a scene needs at least one shot".into()));
    }
    let text_dim = model.config().text_dim;
    for (i, shot) in request.shots.iter().enumerate() {
        shot.check(i, text_dim)?;
    }
    Ok(())
}

/// The global prompt: the request's, else the cached history's.
fn global_text<'a>(
    request: &'a SceneRequest,
    history: Option<&'a WanHistory>,
) -> Result<&'a Tensor> {
    request
        .global_text
        .as_ref()
        .or(history.map(|h| &h.global_text))
        .ok_or_else(|| Error::Layout("a Wan scene needs a global prompt".into()))
}

/// One denoiser call over the request's shots at their times, in both branches when guided;
/// returns the guided velocity per shot and the branches' caches.
#[allow(clippy::too_many_arguments)]
fn velocities(
    model: &WanTransformer,
    request: &SceneRequest,
    global: &Tensor,
    latents: &[Tensor],
    times: &[f32],
    cfg: &SamplerConfig,
    null_text: Option<&Tensor>,
    mask: AttentionMask,
    history: Option<&WanHistory>,
) -> Result<(Vec<Tensor>, WanSceneCache, Option<WanSceneCache>)> {
    let shots = |prompt_of: &dyn Fn(usize) -> Tensor| -> Vec<(Tensor, f64)> {
        (0..latents.len())
            .map(|i| (prompt_of(i), times[i] as f64 * WAN_TIME_SCALE))
            .collect()
    };
    // The model computes in its own dtype (bf16 or f32); the sampler's latents and the
    // velocities it returns stay f32, as diffusers' pipeline keeps them.
    let model_latents = latents
        .iter()
        .map(|z| Ok(z.to_dtype(model.dtype())?))
        .collect::<Result<Vec<_>>>()?;
    let run = |global: &Tensor,
               prompts: &[(Tensor, f64)],
               past: Option<&WanSceneCache>|
     -> Result<(Vec<Tensor>, WanSceneCache)> {
        let shots: Vec<WanShot> = prompts
            .iter()
            .zip(&model_latents)
            .map(|((prompt, timestep), latents)| WanShot {
                latents,
                timestep: *timestep,
                prompt,
            })
            .collect();
        let (outputs, cache) = model.scene_forward(global, &shots, mask, past)?;
        let outputs = outputs
            .iter()
            .map(|v| Ok(v.to_dtype(DType::F32)?))
            .collect::<Result<Vec<_>>>()?;
        Ok((outputs, cache))
    };
    let cond_prompts = shots(&|i| request.shots[i].text.clone());
    let (cond, cond_cache) = run(global, &cond_prompts, history.map(|h| &h.cond))?;
    let guided = cfg.guidance != 1.0;
    if !guided {
        return Ok((cond, cond_cache, None));
    }
    let null = null_text.ok_or_else(|| {
        Error::Config("guidance needs the negative prompt's embeddings (null_text)".into())
    })?;
    let null_prompts = shots(&|_| null.clone());
    let past = history.and_then(|h| h.uncond.as_ref());
    if history.is_some() && past.is_none() {
        return Err(Error::KvCache(
            "the cached history was built without guidance; build it with the same guidance".into(),
        ));
    }
    let (uncond, uncond_cache) = run(null, &null_prompts, past)?;
    let guided = cond
        .iter()
        .zip(&uncond)
        .map(|(c, u)| Ok((u + ((c - u)? * cfg.guidance as f64)?)?))
        .collect::<Result<Vec<_>>>()?;
    Ok((guided, cond_cache, Some(uncond_cache)))
}

/// Generates the request's [`ShotRole::Generate`] shots with `model`, after `history` when
/// given (which needs the context-causal mask). `request.global_text` is the global prompt;
/// after a history it may be left out (the history's is used). Returns one clean latent per
/// shot: generated ones denoised, given ones as given.
#[allow(clippy::too_many_arguments)]
pub fn wan_sample(
    model: &WanTransformer,
    request: &SceneRequest,
    cfg: &SamplerConfig,
    null_text: Option<&Tensor>,
    mask: AttentionMask,
    history: Option<&WanHistory>,
    mut on_step: impl FnMut(&StepInfo) -> StepControl,
) -> Result<Vec<Tensor>> {
    cfg.validate()?;
    check_request(model, request)?;
    let global = global_text(request, history)?;
    let generate: Vec<usize> = (0..request.shots.len())
        .filter(|&i| request.shots[i].role == ShotRole::Generate)
        .collect();
    if generate.is_empty() {
        return Err(Error::Layout("no shot has the generate role".into()));
    }
    let device = global.device();
    let mut latents = request
        .shots
        .iter()
        .map(|shot| match &shot.latent {
            Some(latent) if shot.role != ShotRole::Generate => renoise(
                &latent.to_dtype(DType::F32)?,
                shot_time(shot.role, 1.0, cfg),
                cfg.seed,
                shot.scene_index,
            ),
            _ => {
                let [c, t, h, w] = shot.latent_dims;
                gaussian(
                    cfg.seed,
                    generation_stream(shot.scene_index),
                    &[1, c, t, h, w],
                    device,
                )
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let schedule = cfg.schedule();
    for step in 0..cfg.steps {
        let (t, t_next) = (schedule[step], schedule[step + 1]);
        let times: Vec<f32> = request
            .shots
            .iter()
            .map(|shot| shot_time(shot.role, t, cfg))
            .collect();
        let (v, _, _) = velocities(
            model, request, global, &latents, &times, cfg, null_text, mask, history,
        )?;
        let mut denoised = Vec::with_capacity(generate.len());
        for &i in &generate {
            denoised.push((&latents[i] - (&v[i] * t as f64)?)?);
            latents[i] = (&latents[i] + (&v[i] * (t_next - t) as f64)?)?;
        }
        report_step(step + 1, cfg.steps, t_next, &denoised, &mut on_step)?;
    }
    Ok(scene_result(request, latents))
}

/// Appends the request's given shots (condition shots at `condition_timestep`, the others at
/// t_c, re-noised as [`wan_sample`] does) to `history`: their self-attention keys and values
/// under the context-causal mask, in both branches when guided.
pub fn wan_cache_history(
    model: &WanTransformer,
    request: &SceneRequest,
    cfg: &SamplerConfig,
    null_text: Option<&Tensor>,
    history: Option<&WanHistory>,
) -> Result<WanHistory> {
    cfg.validate()?;
    check_request(model, request)?;
    let global = global_text(request, history)?.clone();
    let mut latents = Vec::with_capacity(request.shots.len());
    let mut times = Vec::with_capacity(request.shots.len());
    for (i, shot) in request.shots.iter().enumerate() {
        let latent = shot
            .latent
            .as_ref()
            .ok_or_else(|| Error::KvCache(format!("history shot {i} has no latent to cache")))?;
        let role = match shot.role {
            ShotRole::Condition => ShotRole::Condition,
            _ => ShotRole::History,
        };
        let t = shot_time(role, 1.0, cfg);
        latents.push(renoise(
            &latent.to_dtype(DType::F32)?,
            t,
            cfg.seed,
            shot.scene_index,
        )?);
        times.push(t);
    }
    let (_, cond, uncond) = velocities(
        model,
        request,
        &global,
        &latents,
        &times,
        cfg,
        null_text,
        AttentionMask::ContextCausal,
        history,
    )?;
    Ok(WanHistory {
        cond,
        uncond,
        global_text: global,
    })
}

/// Generates all shots of `request` one after another; shot k sees shots 0..k-1 as history,
/// recomputed in the sequence at every step or cached once per shot (context-causal only).
/// `on_step` receives the index of the shot being generated.
pub fn wan_generate_autoregressive(
    model: &WanTransformer,
    request: &SceneRequest,
    cfg: &SamplerConfig,
    null_text: Option<&Tensor>,
    mask: AttentionMask,
    mode: HistoryMode,
    mut on_step: impl FnMut(usize, &StepInfo) -> StepControl,
) -> Result<Vec<Tensor>> {
    if mode == HistoryMode::KvCache && mask != AttentionMask::ContextCausal {
        return Err(Error::KvCache(
            "this model is bidirectional: its history cannot be cached exactly; use a context-causal model or auto-regressive mode without a cache".into(),
        ));
    }
    let mut done: Vec<Tensor> = Vec::new();
    let mut cache: Option<WanHistory> = None;
    for (k, shot) in request.shots.iter().enumerate() {
        let mut current = shot.clone();
        current.role = ShotRole::Generate;
        let as_history = |i: usize, z: &Tensor| ShotInput {
            role: ShotRole::History,
            latent: Some(z.clone()),
            ..request.shots[i].clone()
        };
        let latent = match mode {
            HistoryMode::Recompute => {
                let mut shots: Vec<ShotInput> = done
                    .iter()
                    .enumerate()
                    .map(|(i, z)| as_history(i, z))
                    .collect();
                shots.push(current);
                let sub = SceneRequest {
                    global_text: request.global_text.clone(),
                    shots,
                };
                wan_sample(model, &sub, cfg, null_text, mask, None, |info| {
                    on_step(k, info)
                })?
            }
            HistoryMode::KvCache => {
                if k > 0 {
                    let previous = SceneRequest {
                        global_text: request.global_text.clone(),
                        shots: vec![as_history(k - 1, &done[k - 1])],
                    };
                    cache = Some(wan_cache_history(
                        model,
                        &previous,
                        cfg,
                        null_text,
                        cache.as_ref(),
                    )?);
                }
                let sub = SceneRequest {
                    global_text: request.global_text.clone(),
                    shots: vec![current],
                };
                wan_sample(model, &sub, cfg, null_text, mask, cache.as_ref(), |info| {
                    on_step(k, info)
                })?
            }
        }
        .pop()
        .expect("one latent per shot");
        done.push(latent);
    }
    Ok(done)
}
