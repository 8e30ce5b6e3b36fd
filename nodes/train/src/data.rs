//! From the procedural world to engine tensors: frames to latents, captions to embeddings,
//! and the training samples of each stage.

use candle_core::{Device, Tensor};
use lct_model::noise::SplitMix64;
use lct_model::{Pipeline, TrainingScene, TrainingShot};
use lct_world::{
    captions, environment_reference_prompt, identity_reference_prompt,
    render_environment_reference, render_identity_reference, render_shot, sample_scene,
    CaptionMode, Character, Colour, Frame, SceneSpec, Split,
};

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Most shots of a training scene (cost grows with the square of the sequence).
pub const MAX_TRAINING_SHOTS: usize = 4;

/// `[T, 3, H, W]` from world frames (RGB interleaved).
pub fn frames_tensor(frames: &[Frame]) -> Result<Tensor> {
    let (h, w) = (frames[0].height, frames[0].width);
    let mut planar = vec![0f32; frames.len() * 3 * h * w];
    for (t, frame) in frames.iter().enumerate() {
        for (pixel, rgb) in frame.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                planar[(t * 3 + c) * h * w + pixel] = rgb[c];
            }
        }
    }
    Ok(Tensor::from_vec(
        planar,
        (frames.len(), 3, h, w),
        &Device::Cpu,
    )?)
}

/// World frames from `[T, 3, H, W]`.
pub fn tensor_frames(frames: &Tensor) -> Result<Vec<Frame>> {
    let (t, _, h, w) = frames.dims4()?;
    let data = frames
        .permute((0, 2, 3, 1))?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok((0..t)
        .map(|i| Frame {
            width: w,
            height: h,
            data: data[i * h * w * 3..(i + 1) * h * w * 3].to_vec(),
        })
        .collect())
}

/// The clean latent `[C, T, h, w]` of frames, cut from the autoencoder's variables: the
/// autoencoder is fitted once and must not learn to shrink latents to please the loss.
pub fn encode(pipeline: &Pipeline, frames: &[Frame]) -> Result<Tensor> {
    let latent = pipeline.autoencoder()?.encode(&frames_tensor(frames)?)?;
    Ok(latent.squeeze(0)?.detach())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// Single-shot pre-training: one shot per sample (plus single frames).
    Pretrain,
    /// Long Context Tuning: whole scenes, bidirectional.
    Lct,
    /// Context-causal fine-tuning from the LCT weights.
    Causal,
}

/// The same character in another colour: every pixel it covers renders differently.
fn recoloured(character: &Character) -> Character {
    Character {
        colour: if character.colour == Colour::Red {
            Colour::Blue
        } else {
            Colour::Red
        },
        ..*character
    }
}

/// `[T, H/p, W/p]` loss weights `1 + sum of emphasis * coverage` over the contrasts, where
/// coverage is the fraction of each `p x p` patch whose pixels differ between `frames` and
/// the contrast's frames (the same shot with only the character changed).
fn loss_weight(frames: &[Frame], contrasts: &[(Vec<Frame>, f64)], patch: usize) -> Result<Tensor> {
    let (h, w) = (frames[0].height, frames[0].width);
    let (lh, lw) = (h / patch, w / patch);
    // Extra weight first and the 1 last, the order earlier runs summed in.
    let mut weight = vec![0f32; frames.len() * lh * lw];
    for (other, emphasis) in contrasts {
        let per_pixel = *emphasis as f32 / (patch * patch) as f32;
        for (t, (a, b)) in frames.iter().zip(other).enumerate() {
            for (pixel, (pa, pb)) in a
                .data
                .chunks_exact(3)
                .zip(b.data.chunks_exact(3))
                .enumerate()
            {
                if pa.iter().zip(pb).any(|(x, y)| (x - y).abs() > 1e-3) {
                    let (y, x) = (pixel / w, pixel % w);
                    weight[(t * lh + y / patch) * lw + x / patch] += per_pixel;
                }
            }
        }
    }
    for value in &mut weight {
        *value += 1.0;
    }
    Ok(Tensor::from_vec(
        weight,
        (frames.len(), lh, lw),
        &Device::Cpu,
    )?)
}

/// The character contrast of shot `k` of `spec`: the shot with only its character
/// recoloured, weighing `emphasis` (none at 0).
fn shot_contrasts(spec: &SceneSpec, k: usize, emphasis: f64) -> Result<Vec<(Vec<Frame>, f64)>> {
    if emphasis == 0.0 {
        return Ok(Vec::new());
    }
    Ok(vec![(recoloured_shot(spec, k)?, emphasis)])
}

/// `[T, H/p, W/p]`: the fraction of each latent pixel's patch that shot `k`'s character
/// covers (the pixels that change when only the character is recoloured).
pub fn character_coverage(spec: &SceneSpec, k: usize, patch: usize) -> Result<Tensor> {
    let frames = render_shot(spec, k)?.frames;
    coverage(&frames, recoloured_shot(spec, k)?, patch)
}

/// `spec` with only its character recoloured.
pub fn recoloured_scene(spec: &SceneSpec) -> SceneSpec {
    SceneSpec {
        character: recoloured(&spec.character),
        ..spec.clone()
    }
}

/// Shot `k` of `spec` with only its character recoloured.
fn recoloured_shot(spec: &SceneSpec, k: usize) -> Result<Vec<Frame>> {
    Ok(render_shot(&recoloured_scene(spec), k)?.frames)
}

/// `[T, H/p, W/p]`: the fraction of each latent pixel's patch that differs between `frames`
/// and `recoloured` (the same shot with only the character recoloured): where it is.
fn coverage(frames: &[Frame], recoloured: Vec<Frame>, patch: usize) -> Result<Tensor> {
    Ok((loss_weight(frames, &[(recoloured, 1.0)], patch)? - 1.0)?)
}

/// A training shot; its loss weighs each latent pixel by [`loss_weight`] over `contrasts`
/// (none: every pixel alike).
fn shot(
    pipeline: &Pipeline,
    prompt: &str,
    frames: &[Frame],
    contrasts: &[(Vec<Frame>, f64)],
) -> Result<TrainingShot> {
    let weight = if contrasts.is_empty() {
        None
    } else {
        Some(loss_weight(
            frames,
            contrasts,
            pipeline.autoencoder()?.config().patch,
        )?)
    };
    Ok(TrainingShot {
        latent: encode(pipeline, frames)?,
        text: pipeline.encode_shot_prompt(prompt)?.squeeze(0)?,
        weight,
    })
}

/// What the LCT and causal stages draw: how often a sample is a single shot rather than a
/// scene, and how much the character weighs in the loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataMix {
    /// Probability that a sample of the lct or causal stage is one shot whose global prompt
    /// spells out the looks (pre-training draws only such samples).
    pub single_shot_prob: f64,
    /// The character's latent pixels weigh `1 + character_emphasis x coverage` in the loss,
    /// so a small subject counts against a large background (0: all pixels alike).
    pub character_emphasis: f64,
    /// Probability that a multi-shot sample of the lct or causal stage is instead the identity
    /// image, the environment image and one shot without looks in its captions (the
    /// compositional row's setting, where only the images carry the looks).
    pub reference_scene_prob: f64,
}

impl DataMix {
    /// The recipe's default: a fifth of the lct and causal samples are single shots.
    pub const SINGLE_SHOT_PROB: f64 = 0.2;
}

/// One training sample of `stage`, drawn from `seed` (training split only), single shot or
/// scene and weighted towards the character as `mix` says.
pub fn training_scene(
    pipeline: &Pipeline,
    stage: Stage,
    seed: u64,
    mix: DataMix,
) -> Result<TrainingScene> {
    let mut rng = SplitMix64::stream(seed, 0x7ea1);
    let spec = sample_scene(seed, Split::Train);
    let single_shot = stage == Stage::Pretrain || rng.uniform() < mix.single_shot_prob;
    let emphasis = mix.character_emphasis;
    let mode = if single_shot {
        CaptionMode::GlobalLooks
    } else {
        CaptionMode::ALL[rng.below(CaptionMode::ALL.len())]
    };
    let caps = captions(&spec, mode);
    let contrasts_of = |k: usize| shot_contrasts(&spec, k, emphasis);
    let global = Some(pipeline.encode_global_prompt(&caps.global)?.squeeze(0)?);
    let mut shots = Vec::new();
    // Drawn only when asked for, so the random stream of recipes without it is unchanged.
    let reference_scene =
        !single_shot && mix.reference_scene_prob > 0.0 && rng.uniform() < mix.reference_scene_prob;
    if reference_scene {
        // Both images and one shot whose captions carry no looks: the images are the only
        // place the shot can take its character and environment from.
        let caps = captions(&spec, CaptionMode::NoLooks);
        let k = rng.below(spec.shots.len());
        let frames = render_shot(&spec, k)?.frames;
        return Ok(TrainingScene {
            global_text: Some(pipeline.encode_global_prompt(&caps.global)?.squeeze(0)?),
            shots: vec![
                identity_reference_shot(pipeline, &spec, emphasis)?,
                environment_reference_shot(pipeline, &spec)?,
                shot(pipeline, &caps.shots[k], &frames, &contrasts_of(k)?)?,
            ],
        });
    }
    if single_shot {
        let k = rng.below(spec.shots.len());
        shots.push(shot(
            pipeline,
            &caps.shots[k],
            &render_shot(&spec, k)?.frames,
            &contrasts_of(k)?,
        )?);
    } else {
        // References as 1-frame shots, so identity and environment images can condition.
        if rng.uniform() < 0.3 {
            shots.push(identity_reference_shot(pipeline, &spec, emphasis)?);
        }
        if rng.uniform() < 0.3 {
            shots.push(environment_reference_shot(pipeline, &spec)?);
        }
        for k in 0..spec.shots.len().min(MAX_TRAINING_SHOTS) {
            let frames = render_shot(&spec, k)?.frames;
            shots.push(shot(pipeline, &caps.shots[k], &frames, &contrasts_of(k)?)?);
        }
    }
    Ok(TrainingScene {
        global_text: global,
        shots,
    })
}

/// The identity image of `spec`'s character as a 1-frame training shot, weighted like the
/// scene's shots.
fn identity_reference_shot(
    pipeline: &Pipeline,
    spec: &SceneSpec,
    emphasis: f64,
) -> Result<TrainingShot> {
    let (width, height) = (spec.width, spec.height);
    let frame = render_identity_reference(&spec.character, width, height);
    let contrasts = if emphasis == 0.0 {
        Vec::new()
    } else {
        let recoloured = render_identity_reference(&recoloured(&spec.character), width, height);
        vec![(vec![recoloured], emphasis)]
    };
    shot(pipeline, identity_reference_prompt(), &[frame], &contrasts)
}

/// The environment image of `spec` as a 1-frame training shot.
fn environment_reference_shot(pipeline: &Pipeline, spec: &SceneSpec) -> Result<TrainingShot> {
    let frame = render_environment_reference(&spec.environment, spec.width, spec.height);
    shot(pipeline, environment_reference_prompt(), &[frame], &[])
}

/// A held-out scene with at least `min_shots` shots (evaluation).
pub fn held_out_scene(index: u64, min_shots: usize) -> SceneSpec {
    (0..)
        .map(|attempt| sample_scene(10_000 + index * 97 + attempt, Split::HeldOut))
        .find(|s| s.shots.len() >= min_shots)
        .expect("the sampler yields every shot count")
}

#[cfg(test)]
mod tests {
    use super::*;
    use lct_world::Framing;

    /// A shot's loss weights under `emphasis`.
    fn shot_weight(spec: &SceneSpec, k: usize, emphasis: f64) -> (usize, Vec<f32>) {
        let frames = render_shot(spec, k).unwrap().frames;
        let contrasts = shot_contrasts(spec, k, emphasis).unwrap();
        let weight = loss_weight(&frames, &contrasts, 4).unwrap();
        assert_eq!(weight.dims(), [frames.len(), 16, 16]);
        let values = weight.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let most = 1.0 + emphasis as f32 + 1e-5;
        assert!(values.iter().all(|&v| (1.0..=most).contains(&v)));
        // The corners are background in every framing.
        for t in 0..frames.len() {
            assert_eq!(values[t * 256], 1.0, "top-left corner of frame {t}");
        }
        (frames.len(), values)
    }

    /// Mean extra weight of a shot's latent pixels, over the character emphasis.
    fn mean_coverage(spec: &SceneSpec, k: usize, emphasis: f64) -> f32 {
        let (_, values) = shot_weight(spec, k, emphasis);
        (values.iter().sum::<f32>() / values.len() as f32 - 1.0) / emphasis as f32
    }

    #[test]
    fn the_mix_sets_how_often_a_sample_is_one_shot_and_the_characters_weight() {
        let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mmdit_model");
        let pipeline =
            lct_model::load_pipeline(&model, candle_core::DType::F32, &Device::Cpu).unwrap();
        let mix = |single_shot_prob, character_emphasis| DataMix {
            single_shot_prob,
            character_emphasis,
            reference_scene_prob: 0.0,
        };
        let samples = |prob: f64, emphasis: f64, stage| -> Vec<TrainingScene> {
            (0..24)
                .map(|seed| training_scene(&pipeline, stage, seed, mix(prob, emphasis)).unwrap())
                .collect()
        };
        // A weighted shot has pixels above 1; an unweighted one has no weight at all.
        let weighted = |shot: &TrainingShot| match &shot.weight {
            None => false,
            Some(w) => w.max_all().unwrap().to_scalar::<f32>().unwrap() > 1.0,
        };
        let all_single = samples(1.0, 8.0, Stage::Lct);
        assert!(all_single
            .iter()
            .all(|s| s.shots.len() == 1 && weighted(&s.shots[0])));
        let no_single = samples(0.0, 0.0, Stage::Lct);
        assert!(no_single
            .iter()
            .all(|s| s.shots.iter().all(|k| !weighted(k))));
        assert!(
            no_single.iter().filter(|s| s.shots.len() > 1).count() > 12,
            "scenes drawn without single shots are mostly multi-shot"
        );
        // Pre-training draws single shots whatever the mix says.
        assert!(samples(0.0, 8.0, Stage::Pretrain)
            .iter()
            .all(|s| s.shots.len() == 1 && weighted(&s.shots[0])));
        // Reference scenes: the identity image, the environment image, then one whole shot.
        let references = DataMix {
            reference_scene_prob: 1.0,
            ..mix(0.0, 0.0)
        };
        for seed in 0..6 {
            let sample = training_scene(&pipeline, Stage::Causal, seed, references).unwrap();
            let frames: Vec<usize> = sample
                .shots
                .iter()
                .map(|s| s.latent.dim(1).unwrap())
                .collect();
            assert_eq!(frames, [1, 1, 4], "seed {seed}");
        }
        // The same seed and mix give the same sample.
        let again = training_scene(&pipeline, Stage::Lct, 3, mix(0.5, 2.0)).unwrap();
        let first = training_scene(&pipeline, Stage::Lct, 3, mix(0.5, 2.0)).unwrap();
        assert_eq!(again.shots.len(), first.shots.len());
        for (a, b) in again.shots.iter().zip(&first.shots) {
            let diff = (&a.latent - &b.latent).unwrap().abs().unwrap();
            assert_eq!(diff.max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        }
    }

    #[test]
    fn the_character_weight_covers_the_character_and_grows_with_the_framing() {
        let (mut close, mut wide) = (Vec::new(), Vec::new());
        for seed in 0..40 {
            let spec = sample_scene(seed, Split::Train);
            for (k, framing) in spec.shots.iter().enumerate() {
                match framing {
                    Framing::CloseUp => close.push(mean_coverage(&spec, k, 8.0)),
                    Framing::Wide => wide.push(mean_coverage(&spec, k, 8.0)),
                    Framing::Medium => {}
                }
            }
        }
        assert!(!close.is_empty() && !wide.is_empty());
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        assert!(
            wide.iter().all(|&c| c > 0.0),
            "a wide shot lost its character"
        );
        assert!(
            mean(&close) > 4.0 * mean(&wide),
            "close-ups cover {} of the frame, wide shots {}",
            mean(&close),
            mean(&wide)
        );
    }
}
