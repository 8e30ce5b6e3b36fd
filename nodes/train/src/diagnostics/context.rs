//! Does a checkpoint read its context? The flow-matching loss of one noised shot of a
//! held-out scene (captions without looks), on the pixels its character covers and on the
//! rest, with four things beside it: nothing, the other shots as pure noise, the clean shots
//! of a different scene, and the scene's own clean shots. A model that carries the scene
//! across shots predicts the shot better from its own context than from noise or from a
//! wrong scene; one that ignores context scores the four alike. A fifth context is the own
//! scene with only its character recoloured: a wrong scene differs in everything, so it
//! cannot say whether the character's own looks are read; the recoloured scene can (a model
//! that copies the colour predicts the probed character worse beside it than beside its true
//! scene). It needs no sampling, so it is quick and free of the sampler's settings.

use crate::data::{
    character_coverage, encode, held_out_scene, recoloured_scene, Result, MAX_TRAINING_SHOTS,
};
use candle_core::{DType, Device, Tensor};
use lct_model::noise::gaussian;
use lct_model::{fixed_shot_losses, load_pipeline, Pipeline, TrainingScene, TrainingShot};
use lct_world::{captions, render_shot, CaptionMode, SceneSpec};
use std::path::PathBuf;

/// What stands beside the probed shot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Alone,
    Noise,
    WrongScene,
    OwnScene,
    /// The own scene with its character in another colour.
    Recoloured,
}

const CONTEXTS: [Context; 5] = [
    Context::Alone,
    Context::Noise,
    Context::WrongScene,
    Context::OwnScene,
    Context::Recoloured,
];

/// Held-out scenes whose shots make the wrong contexts start here (past the probed ones).
const WRONG_SCENE_OFFSET: u64 = 1 << 16;

/// Noise streams: the probed shot's, then the context shots'.
const TARGET_STREAM: u64 = 0xC0;

/// The clean latents and shot prompts (no looks) of shots `0..count` of `spec`.
fn clean_shots(pipeline: &Pipeline, spec: &SceneSpec, count: usize) -> Result<Vec<TrainingShot>> {
    let caps = captions(spec, CaptionMode::NoLooks);
    (0..count)
        .map(|k| {
            Ok(TrainingShot {
                latent: encode(pipeline, &render_shot(spec, k)?.frames)?,
                text: pipeline.encode_shot_prompt(&caps.shots[k])?.squeeze(0)?,
                weight: None,
            })
        })
        .collect()
}

/// `mask / mean(mask)`, so the weighted MSE is the MSE over the masked pixels.
fn normalised(mask: &Tensor) -> Result<Tensor> {
    let mean = mask.mean_all()?.to_scalar::<f32>()?;
    if mean <= 0.0 {
        return Err("a probed shot has an empty pixel region".into());
    }
    Ok((mask / mean as f64)?)
}

/// Mean losses of one checkpoint: `[timestep][context level][context][region]`, region 0
/// the character, 1 the rest of the frame.
type Means = Vec<Vec<[[f64; 2]; CONTEXTS.len()]>>;

/// The probe's means for one checkpoint; the clean contexts are noised to each of
/// `context_levels` in turn.
fn probe_model(
    pipeline: &Pipeline,
    scenes: u64,
    timesteps: &[f32],
    context_levels: &[f32],
) -> Result<Means> {
    let patch = pipeline.autoencoder()?.config().patch;
    let mut sums = vec![vec![[[0f64; 2]; CONTEXTS.len()]; context_levels.len()]; timesteps.len()];
    for i in 0..scenes {
        let spec = held_out_scene(i, 3);
        let target_index = spec.shots.len().min(MAX_TRAINING_SHOTS) - 1;
        let own = clean_shots(pipeline, &spec, target_index + 1)?;
        let wrong = clean_shots(
            pipeline,
            &held_out_scene(WRONG_SCENE_OFFSET + i, target_index),
            target_index,
        )?;
        let recoloured = clean_shots(pipeline, &recoloured_scene(&spec), target_index)?;
        let coverage = character_coverage(&spec, target_index, patch)?;
        let regions = [
            normalised(&coverage)?,
            normalised(&(coverage.ones_like()? - &coverage)?)?,
        ];
        let global = pipeline
            .encode_global_prompt(&captions(&spec, CaptionMode::NoLooks).global)?
            .squeeze(0)?;
        let target = &own[target_index];
        let dims = target.latent.unsqueeze(0)?.dims().to_vec();
        let target_noise = gaussian(i, TARGET_STREAM, &dims, &Device::Cpu)?;
        let context_noise = (0..target_index)
            .map(|j| gaussian(i, TARGET_STREAM + 1 + j as u64, &dims, &Device::Cpu))
            .collect::<lct_model::Result<Vec<_>>>()?;
        for (ti, &t) in timesteps.iter().enumerate() {
            for (li, &level) in context_levels.iter().enumerate() {
                for (ci, context) in CONTEXTS.iter().enumerate() {
                    let (beside, context_t): (&[TrainingShot], f32) = match context {
                        Context::Alone => (&[], 0.0),
                        Context::Noise => (&own[..target_index], 1.0),
                        Context::WrongScene => (&wrong, level),
                        Context::OwnScene => (&own[..target_index], level),
                        Context::Recoloured => (&recoloured, level),
                    };
                    for (ri, region) in regions.iter().enumerate() {
                        let mut shots = beside.to_vec();
                        shots.push(TrainingShot {
                            weight: Some(region.clone()),
                            ..target.clone()
                        });
                        let mut steps = vec![context_t; beside.len()];
                        steps.push(t);
                        let mut noise = context_noise[..beside.len()].to_vec();
                        noise.push(target_noise.clone());
                        let scene = TrainingScene {
                            global_text: Some(global.clone()),
                            shots,
                        };
                        let losses = fixed_shot_losses(pipeline, &scene, &steps, &noise)?;
                        sums[ti][li][ci][ri] += losses[beside.len()] as f64;
                    }
                }
            }
        }
    }
    for region in sums.iter_mut().flatten().flatten().flatten() {
        *region /= scenes as f64;
    }
    Ok(sums)
}

/// The probe's table over `models`, one row per model, timestep and pixel region.
pub fn probe_context(
    models: &[PathBuf],
    scenes: u64,
    timesteps: &[f32],
    context_levels: &[f32],
) -> Result<Vec<String>> {
    if scenes == 0 {
        return Err("--scenes must be at least 1".into());
    }
    for (flag, values) in [("--t", timesteps), ("--context-t", context_levels)] {
        if values.is_empty() {
            return Err(format!("{flag} needs at least one value").into());
        }
        if let Some(t) = values.iter().find(|t| !(0.0..=1.0).contains(*t)) {
            return Err(format!("{flag} {t} is outside 0..=1").into());
        }
    }
    let mut lines = vec![
        format!(
            "context probe: the last shot (at most the {MAX_TRAINING_SHOTS}th) of {scenes} held-out scenes, captions without looks, \
             noised to t; its flow-matching MSE beside nothing, beside the scene's other shots as pure noise (t = 1), \
             beside another held-out scene's shots, beside its own shots, and beside its own shots with the character recoloured, those three noised to t_c. \
             Same noise for the probed shot in every column; rows per checkpoint, noise level and pixel region."
        ),
        String::new(),
        "| model | t | t_c | pixels | alone | noise context | wrong scene | own scene | own, recoloured | own / noise | recoloured / own |".into(),
        "|---|---|---|---|---|---|---|---|---|---|---|".into(),
    ];
    println!("{}", lines.join("\n"));
    for dir in models {
        let pipeline = load_pipeline(dir, DType::F32, &Device::Cpu)?;
        let means = probe_model(&pipeline, scenes, timesteps, context_levels)?;
        for (&t, per_level) in timesteps.iter().zip(&means) {
            for (&level, per_context) in context_levels.iter().zip(per_level) {
                for (ri, region) in ["character", "rest"].iter().enumerate() {
                    let cells: Vec<String> = per_context
                        .iter()
                        .map(|c| format!("{:.4}", c[ri]))
                        .collect();
                    let ratio = per_context[3][ri] / per_context[1][ri];
                    let colour_ratio = per_context[4][ri] / per_context[3][ri];
                    lines.push(format!(
                        "| `{}` | {t} | {level} | {region} | {} | {ratio:.2} | {colour_ratio:.2} |",
                        dir.display(),
                        cells.join(" | ")
                    ));
                    println!("{}", lines.last().expect("a row was pushed"));
                }
            }
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embedded_model() -> PathBuf {
        crate::embedded_model_dir()
    }

    /// The numbers of a table row, after its model, t, t_c and region cells.
    fn numbers(row: &str) -> Vec<f64> {
        row.split('|')
            .map(str::trim)
            .skip(5)
            .filter(|cell| !cell.is_empty())
            .map(|cell| cell.parse().expect("a number"))
            .collect()
    }

    #[test]
    fn the_embedded_model_reads_its_context_and_the_probe_repeats_itself() {
        let models = [embedded_model()];
        let lines = probe_context(&models, 1, &[0.9], &[0.1]).unwrap();
        assert_eq!(lines, probe_context(&models, 1, &[0.9], &[0.1]).unwrap());
        let rows: Vec<&String> = lines.iter().filter(|l| l.starts_with("| `")).collect();
        assert_eq!(rows.len(), 2, "one row per pixel region");
        for row in &rows {
            let values = numbers(row);
            assert_eq!(values.len(), 7, "{row}");
            assert!(values.iter().all(|v| v.is_finite() && *v >= 0.0), "{row}");
        }
        // Beside its own clean shots the background is predicted better than from noise.
        let rest = numbers(rows[1]);
        assert!(
            rest[3] < rest[1],
            "own scene {} vs noise {}",
            rest[3],
            rest[1]
        );
    }

    #[test]
    fn bad_probe_settings_name_the_flag() {
        let models = [embedded_model()];
        let err = probe_context(&models, 1, &[1.5], &[0.1]).unwrap_err();
        assert!(err.to_string().contains("--t 1.5"), "{err}");
        let err = probe_context(&models, 1, &[0.5], &[]).unwrap_err();
        assert!(err.to_string().contains("--context-t"), "{err}");
        let err = probe_context(&models, 0, &[0.5], &[0.1]).unwrap_err();
        assert!(err.to_string().contains("--scenes"), "{err}");
    }
}
