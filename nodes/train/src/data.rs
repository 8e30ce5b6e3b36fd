//! From the procedural world to engine tensors: frames to latents, captions to embeddings,
//! and the training samples of each stage.

use candle_core::{Device, Tensor};
use lct_model::noise::SplitMix64;
use lct_model::{Pipeline, TrainingScene, TrainingShot};
use lct_world::{
    captions, environment_reference_prompt, identity_reference_prompt,
    render_environment_reference, render_identity_reference, render_shot, sample_scene,
    CaptionMode, Frame, SceneSpec, Split,
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

fn shot(pipeline: &Pipeline, prompt: &str, frames: &[Frame]) -> Result<TrainingShot> {
    Ok(TrainingShot {
        latent: encode(pipeline, frames)?,
        text: pipeline.encode_shot_prompt(prompt)?.squeeze(0)?,
    })
}

/// One training sample of `stage`, drawn from `seed` (training split only).
pub fn training_scene(pipeline: &Pipeline, stage: Stage, seed: u64) -> Result<TrainingScene> {
    let mut rng = SplitMix64::stream(seed, 0x7ea1);
    let spec = sample_scene(seed, Split::Train);
    let single_shot = stage == Stage::Pretrain || rng.uniform() < 0.2;
    let mode = if single_shot {
        CaptionMode::GlobalLooks
    } else {
        CaptionMode::ALL[rng.below(CaptionMode::ALL.len())]
    };
    let caps = captions(&spec, mode);
    let global = Some(pipeline.encode_global_prompt(&caps.global)?.squeeze(0)?);
    let mut shots = Vec::new();
    if single_shot {
        let k = rng.below(spec.shots.len());
        shots.push(shot(
            pipeline,
            &caps.shots[k],
            &render_shot(&spec, k)?.frames,
        )?);
    } else {
        // References as 1-frame shots, so identity and environment images can condition.
        if rng.uniform() < 0.3 {
            let frame = render_identity_reference(&spec.character, spec.width, spec.height);
            shots.push(shot(pipeline, identity_reference_prompt(), &[frame])?);
        }
        if rng.uniform() < 0.3 {
            let frame = render_environment_reference(&spec.environment, spec.width, spec.height);
            shots.push(shot(pipeline, environment_reference_prompt(), &[frame])?);
        }
        for k in 0..spec.shots.len().min(MAX_TRAINING_SHOTS) {
            shots.push(shot(
                pipeline,
                &caps.shots[k],
                &render_shot(&spec, k)?.frames,
            )?);
        }
    }
    Ok(TrainingScene {
        global_text: global,
        shots,
    })
}

/// A held-out scene with at least `min_shots` shots (evaluation).
pub fn held_out_scene(index: u64, min_shots: usize) -> SceneSpec {
    (0..)
        .map(|attempt| sample_scene(10_000 + index * 97 + attempt, Split::HeldOut))
        .find(|s| s.shots.len() >= min_shots)
        .expect("the sampler yields every shot count")
}
