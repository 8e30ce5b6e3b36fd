//! `lct-train evaluate`: the embedded model's table, measured on held-out scenes (pairs of
//! character and environment never trained) through the product's loader and samplers
//! (`WanPipeline`, `wan_sample`, `wan_generate_autoregressive`), read back by the world's
//! detectors:
//! - single shots with the looks in the prompt: colour, shape, pattern, sky, ground, framing;
//! - joint scenes with the looks in the global prompt: identity and environment agreement
//!   across a scene's shots;
//! - scenes whose captions name no looks, joint and with the KV cache (context-causal models):
//!   agreement within a scene against agreement across scenes (Cohen's kappa), i.e. how much
//!   of the consistency comes from the shots' shared context;
//! - compositional scenes: the looks only in an identity and an environment reference image;
//! - (context-causal models) a 10-shot KV-cached rollout, shot by shot.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use lct_model::wan::{wan_generate_autoregressive, wan_sample, WanPipeline};
use lct_model::{
    AttentionMask, HistoryMode, SamplerConfig, SceneRequest, ShotInput, ShotRole, StepControl,
};
use lct_world::{
    cross_scene_agreement, environment_consistency, environment_reference_prompt, global_prompt,
    identity_consistency, identity_reference_prompt, read_shot, render_environment_reference,
    render_identity_reference, shot_prompt, CaptionMode, Clip, Framing, SceneSpec, ShotReading,
};

use crate::data::{frames_tensor, held_out_scene, tensor_frames, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct Evaluation {
    /// A Wan checkpoint folder (the embedded model's: `nodes/assets/default`).
    #[arg(long)]
    pub model: PathBuf,
    /// Held-out scenes of the single-shot row (two shots each, generated alone).
    #[arg(long, default_value_t = 56)]
    pub single_scenes: u64,
    /// Held-out scenes of three shots for each scene row.
    #[arg(long, default_value_t = 24)]
    pub scenes: u64,
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    #[arg(long, default_value_t = 3.0)]
    pub cfg: f32,
    /// Frames a shot.
    #[arg(long, default_value_t = 4)]
    pub frames: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

struct Model {
    pipeline: WanPipeline,
    null_text: Tensor,
    sampler: SamplerConfig,
    frames: usize,
}

impl Model {
    fn embed(&self, text: &str) -> Result<Tensor> {
        Ok(self.pipeline.text.encode(text)?.unsqueeze(0)?)
    }

    /// The request of `spec`'s first `shots` shots under `mode`'s global prompt.
    fn request(&self, spec: &SceneSpec, shots: usize, mode: CaptionMode) -> Result<SceneRequest> {
        let dims = self.pipeline.latent_dims(self.frames, 64, 64)?;
        Ok(SceneRequest {
            global_text: Some(self.embed(&global_prompt(spec, mode))?),
            shots: (0..shots)
                .map(|shot| {
                    Ok(ShotInput {
                        text: self.embed(&shot_prompt(spec, shot)?)?,
                        latent_dims: dims,
                        role: ShotRole::Generate,
                        latent: None,
                        scene_index: shot,
                    })
                })
                .collect::<Result<_>>()?,
        })
    }

    /// [`Model::request`] under the global prompt naming no looks, led by `spec`'s identity
    /// and environment reference images as given shots (the compositional use).
    fn reference_request(&self, spec: &SceneSpec, shots: usize) -> Result<SceneRequest> {
        let mut request = self.request(spec, shots, CaptionMode::NoLooks)?;
        let references = [
            (
                render_identity_reference(&spec.character, 64, 64),
                identity_reference_prompt(),
            ),
            (
                render_environment_reference(&spec.environment, 64, 64),
                environment_reference_prompt(),
            ),
        ];
        let mut given = Vec::with_capacity(2);
        for (index, (frame, prompt)) in references.into_iter().enumerate() {
            let latent = self
                .pipeline
                .encode_frames(&frames_tensor(std::slice::from_ref(&frame))?)?;
            given.push(ShotInput {
                text: self.embed(prompt)?,
                latent_dims: self.pipeline.latent_dims(1, 64, 64)?,
                role: ShotRole::Condition,
                latent: Some(latent),
                scene_index: index,
            });
        }
        for shot in &mut request.shots {
            shot.scene_index += given.len();
        }
        request.shots.splice(0..0, given);
        Ok(request)
    }

    /// Latents to clips and their readings.
    fn read(&self, latents: &[Tensor]) -> Result<Vec<ShotReading>> {
        latents
            .iter()
            .map(|latent| {
                let frames =
                    tensor_frames(&self.pipeline.decode_frames(latent)?.clamp(0f32, 1f32)?)?;
                let (width, height) = (frames[0].width, frames[0].height);
                Ok(read_shot(&Clip {
                    frames,
                    width,
                    height,
                }))
            })
            .collect()
    }

    fn joint(&self, request: &SceneRequest) -> Result<Vec<ShotReading>> {
        let latents = wan_sample(
            &self.pipeline.transformer,
            request,
            &self.sampler,
            Some(&self.null_text),
            self.pipeline.attention,
            None,
            |_| StepControl::Continue,
        )?;
        self.read(&latents)
    }

    fn cached(&self, request: &SceneRequest) -> Result<Vec<ShotReading>> {
        let latents = wan_generate_autoregressive(
            &self.pipeline.transformer,
            request,
            &self.sampler,
            Some(&self.null_text),
            self.pipeline.attention,
            HistoryMode::KvCache,
            |_, _| StepControl::Continue,
        )?;
        self.read(&latents)
    }
}

/// Cohen's kappa of an agreement rate against its chance rate (0 when chance is already 1).
fn kappa(within: f64, across: f64) -> f64 {
    if across >= 1.0 {
        0.0
    } else {
        (within - across) / (1.0 - across)
    }
}

fn mean(values: impl Iterator<Item = f32>) -> f64 {
    let values: Vec<f32> = values.collect();
    values.iter().map(|&v| v as f64).sum::<f64>() / values.len().max(1) as f64
}

/// Identity and environment agreement within scenes, their kappas against agreement across
/// scenes.
fn scene_row(name: &str, scenes: &[Vec<ShotReading>]) -> String {
    let identity = mean(scenes.iter().map(|s| identity_consistency(s)));
    let environment = mean(scenes.iter().map(|s| environment_consistency(s)));
    let [identity_across, environment_across, _] = cross_scene_agreement(scenes);
    format!(
        "| {name} | {} | {identity:.2} | {environment:.2} | {:.2} | {:.2} |",
        scenes.len(),
        kappa(identity, identity_across as f64),
        kappa(environment, environment_across as f64)
    )
}

pub fn run(evaluation: &Evaluation) -> Result<()> {
    let pipeline = WanPipeline::load(&evaluation.model, DType::F32, &Device::Cpu)?;
    let null_text = pipeline.text.encode("")?.unsqueeze(0)?;
    let model = Model {
        sampler: SamplerConfig {
            steps: evaluation.steps,
            guidance: evaluation.cfg,
            shift: pipeline.shift,
            seed: evaluation.seed,
            ..SamplerConfig::default()
        },
        pipeline,
        null_text,
        frames: evaluation.frames,
    };
    println!(
        "{}: {} steps, guidance {}, {} frames a shot",
        evaluation.model.display(),
        evaluation.steps,
        evaluation.cfg,
        evaluation.frames
    );

    // Single shots, each generated alone, the looks in the global prompt.
    let mut hits = [0usize; 6];
    let mut shots = 0;
    for index in 0..evaluation.single_scenes {
        let spec = held_out_scene(index, 2);
        for shot in 0..2 {
            let mut request = model.request(&spec, shot + 1, CaptionMode::GlobalLooks)?;
            request.shots.drain(..shot);
            let reading = &model.joint(&request)?[0];
            let environment = reading.environment;
            let truth = &spec.environment;
            for (hit, ok) in hits.iter_mut().zip([
                reading.colour == Some(spec.character.colour),
                reading.shape == Some(spec.character.shape),
                reading.pattern == Some(spec.character.pattern),
                environment.is_some_and(|e| e.sky == truth.sky),
                environment.is_some_and(|e| e.ground == truth.ground),
                reading.framing == Some(spec.shots[shot]),
            ]) {
                *hit += ok as usize;
            }
            shots += 1;
        }
    }
    print_rates(
        "single shots, looks in the prompt",
        &["colour", "shape", "pattern", "sky", "ground", "framing"],
        "held-out",
        shots,
        &hits,
    );

    // Scenes of three shots.
    let specs: Vec<SceneSpec> = (0..evaluation.scenes)
        .map(|index| held_out_scene(index, 3))
        .collect();
    let mut rows = Vec::new();
    let run_rows = |mode: CaptionMode, cached: bool| -> Result<Vec<Vec<ShotReading>>> {
        specs
            .iter()
            .map(|spec| {
                let request = model.request(spec, 3, mode)?;
                if cached {
                    model.cached(&request)
                } else {
                    model.joint(&request)
                }
            })
            .collect()
    };
    rows.push(scene_row(
        "joint, looks in the global prompt",
        &run_rows(CaptionMode::GlobalLooks, false)?,
    ));
    rows.push(scene_row(
        "joint, no looks in any caption",
        &run_rows(CaptionMode::NoLooks, false)?,
    ));
    if model.pipeline.attention == AttentionMask::ContextCausal {
        rows.push(scene_row(
            "KV cache, no looks in any caption",
            &run_rows(CaptionMode::NoLooks, true)?,
        ));
    }
    println!();
    println!("| scenes of 3 shots | scenes | identity agreement | environment agreement | identity kappa | environment kappa |");
    println!("|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }

    // Compositional: the looks only in the two reference images.
    let mut matched = [0usize; 3];
    let mut generated = 0;
    for spec in &specs {
        let readings = model.joint(&model.reference_request(spec, 3)?)?;
        for reading in &readings[2..] {
            let identity = looks_match(reading, spec);
            let environment = environment_match(reading, spec);
            for (count, ok) in
                matched
                    .iter_mut()
                    .zip([identity, environment, identity && environment])
            {
                *count += ok as usize;
            }
            generated += 1;
        }
    }
    print_rates(
        "compositional: identity and environment images, no looks in any caption",
        &["identity matched", "environment matched", "both"],
        "joint",
        generated,
        &matched,
    );

    if model.pipeline.attention == AttentionMask::ContextCausal {
        rollout(&model, &specs)?;
    }
    Ok(())
}

/// A one-row markdown table: `row`, its `count` of shots, and each of `hits` as a share of them.
fn print_rates(title: &str, columns: &[&str], row: &str, count: usize, hits: &[usize]) {
    let rates: Vec<String> = hits
        .iter()
        .map(|&h| format!("{:.2}", h as f64 / count.max(1) as f64))
        .collect();
    println!();
    println!("| {title} | shots | {} |", columns.join(" | "));
    println!("|---|---|{}", "---|".repeat(columns.len()));
    println!("| {row} | {count} | {} |", rates.join(" | "));
}

/// The character reads as the scene's: colour, shape and pattern.
fn looks_match(reading: &ShotReading, spec: &SceneSpec) -> bool {
    let c = &spec.character;
    reading.colour == Some(c.colour)
        && reading.shape == Some(c.shape)
        && reading.pattern == Some(c.pattern)
}

/// The environment reads as the scene's: sky and ground.
fn environment_match(reading: &ShotReading, spec: &SceneSpec) -> bool {
    reading
        .environment
        .is_some_and(|e| e.sky == spec.environment.sky && e.ground == spec.environment.ground)
}

/// Shots of the long rollout.
const ROLLOUT_SHOTS: usize = 10;

/// A [`ROLLOUT_SHOTS`]-shot KV-cached rollout of each scene (the looks in the global prompt,
/// framings cycling wide, medium, close-up): per shot, the share of scenes whose shot reads the
/// asked looks and environment, and whose looks agree with the scene's first shot. Drift
/// shows as shot 10 falling below shot 2.
fn rollout(model: &Model, specs: &[SceneSpec]) -> Result<()> {
    let mut asked = [0usize; ROLLOUT_SHOTS];
    let mut agree = [0usize; ROLLOUT_SHOTS];
    for spec in specs {
        let mut long = spec.clone();
        long.shots = (0..ROLLOUT_SHOTS)
            .map(|k| Framing::ALL[k % Framing::ALL.len()])
            .collect();
        let readings =
            model.cached(&model.request(&long, ROLLOUT_SHOTS, CaptionMode::GlobalLooks)?)?;
        let first = readings[0].identity();
        for (k, reading) in readings.iter().enumerate() {
            asked[k] += (looks_match(reading, &long) && environment_match(reading, &long)) as usize;
            agree[k] += (first.is_some() && reading.identity() == first) as usize;
        }
    }
    let share = |count: usize| count as f64 / specs.len().max(1) as f64;
    println!();
    println!(
        "| {ROLLOUT_SHOTS}-shot KV-cached rollout, {} scenes | {} |",
        specs.len(),
        (1..=ROLLOUT_SHOTS)
            .map(|k| format!("shot {k}"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}", "---|".repeat(ROLLOUT_SHOTS));
    for (name, counts) in [
        ("looks and environment as asked", &asked),
        ("identity as shot 1", &agree),
    ] {
        println!(
            "| {name} | {} |",
            counts
                .iter()
                .map(|&c| format!("{:.2}", share(c)))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    Ok(())
}
