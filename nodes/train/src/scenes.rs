//! The stages of the embedded model after images (issue 38): short single shots, then LCT
//! scenes (global and per-shot prompts, one flow time per shot, shots drawn as given context),
//! then the context-causal fine-tune. Each starts from the model of the stage before (its
//! run folder, a complete Wan checkpoint), trains the transformer on scenes of the world's
//! training split, and scores held-out scenes sampled through the product's sampler
//! (`wan_sample`, joint generation of two shots) while it trains.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use lct_model::noise::SplitMix64;
use lct_model::optim::OptimConfig;
use lct_model::wan::{
    load_text_encoder, wan_sample, SceneDraw, WanTrainConfig, WanTrainer, WanTrainingScene,
    WanTrainingShot, LCT_MARKER,
};
use lct_model::{AttentionMask, SamplerConfig, SceneRequest, ShotInput, ShotRole, StepControl};
use lct_world::{
    detect_character, environment_reference_prompt, global_prompt, global_prompt_omitting,
    identity_reference_prompt, render_environment_reference, render_identity_reference,
    render_shot, sample_scene, shot_prompt, Attribute, CaptionMode, SceneSpec, Split,
};

use crate::data::{character_coverage, frames_tensor, held_out_scene, tensor_frames, Result};
use crate::images::Captions;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mask {
    Bidirectional,
    ContextCausal,
}

/// Settings of a scene stage (or a piece of it: a run resumes from its folder).
#[derive(clap::Args, Debug, Clone)]
pub struct SceneStage {
    /// The run folder of the stage before (images, or an earlier scene stage): its model is
    /// where this stage starts, its text encoder and tokenizer are this stage's.
    #[arg(long)]
    pub from: PathBuf,
    /// The run's folder: a complete Wan checkpoint, checkpoints of the run, `log.tsv`, sheets.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1500)]
    pub steps: u64,
    /// Wall-clock budget of this piece; the run stops (checkpointed) when it is spent.
    #[arg(long, default_value_t = 600.0)]
    pub minutes: f64,
    /// Shots of a training scene: drawn uniformly from `min_shots..=max_shots`.
    #[arg(long, default_value_t = 1)]
    pub min_shots: usize,
    #[arg(long, default_value_t = 3)]
    pub max_shots: usize,
    /// Scenes rendered up front; batches are drawn from them.
    #[arg(long, default_value_t = 1024)]
    pub pool: usize,
    /// Scenes per step.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Peak learning rate: about where the images stage ends (5e-4 lowered the agreement of
    /// shots in the first recipe).
    #[arg(long = "lr", default_value_t = 2e-4)]
    pub learning_rate: f64,
    #[arg(long, default_value_t = 50)]
    pub warmup: u64,
    #[arg(long, default_value_t = 0.998)]
    pub ema: f64,
    #[arg(long, value_enum, default_value_t = Mask::Bidirectional)]
    pub attention: Mask,
    /// Chance that a shot of a scene of several is drawn as context (near-clean, no loss).
    #[arg(long, default_value_t = 0.3)]
    pub context_prob: f64,
    /// Share of scenes whose global prompt names no looks at all (consistency from context
    /// only), and share naming the environment but not the character.
    #[arg(long, default_value_t = 0.15)]
    pub no_looks: f64,
    #[arg(long, default_value_t = 0.15)]
    pub no_character_looks: f64,
    /// Share of scenes led by two given reference images (the character on a plain
    /// background, the empty environment) under a global prompt naming no looks: the looks
    /// come from the images (the compositional use).
    #[arg(long, default_value_t = 0.2)]
    pub references: f64,
    #[arg(long, default_value_t = 5.0)]
    pub character_weight: f32,
    #[arg(long, default_value_t = 0.1)]
    pub drop_prompt: f64,
    #[arg(long, default_value_t = 0.05)]
    pub drop_attribute: f64,
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    #[arg(long, default_value_t = 250)]
    pub eval_steps: u64,
    /// Held-out scenes scored (two shots each, generated jointly).
    #[arg(long, default_value_t = 28)]
    pub eval_scenes: u64,
    #[arg(long, default_value_t = 3.0)]
    pub cfg: f32,
    #[arg(long, default_value_t = 20)]
    pub sample_steps: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// A rendered scene: per shot its pixels `[1, 3, T, 64, 64]` in -1..1 and loss weights; its
/// identity and environment reference images `[1, 3, 1, 64, 64]`.
struct PooledScene {
    spec: SceneSpec,
    shots: Vec<(Tensor, Tensor)>,
    references: [Tensor; 2],
}

/// Rendered frames as a clip's pixels `[1, 3, T, H, W]` in -1..1.
fn clip_pixels(frames: &[lct_world::Frame]) -> Result<Tensor> {
    let frames = frames_tensor(frames)?; // [T, 3, H, W] in 0..1
    Ok(((frames * 2.0)? - 1.0)?
        .permute((1, 0, 2, 3))?
        .unsqueeze(0)?)
}

/// The identity and environment reference images of `spec` as latents.
fn reference_pixels(spec: &SceneSpec) -> Result<[Tensor; 2]> {
    Ok([
        clip_pixels(&[render_identity_reference(&spec.character, 64, 64)])?,
        clip_pixels(&[render_environment_reference(&spec.environment, 64, 64)])?,
    ])
}

fn render_scene(stage: &SceneStage, seed: u64) -> Result<PooledScene> {
    let spec = (0..)
        .map(|attempt| sample_scene(seed.wrapping_mul(131) + attempt, Split::Train))
        .find(|s| s.shots.len() >= stage.max_shots)
        .expect("the sampler yields every shot count");
    let mut shots = Vec::with_capacity(stage.max_shots);
    for shot in 0..stage.max_shots {
        let pixels = clip_pixels(&render_shot(&spec, shot)?.frames)?;
        let coverage = character_coverage(&spec, shot, 1)?; // [T, H, W]
        let weights = ((coverage * (stage.character_weight as f64 - 1.0))? + 1.0)?
            .unsqueeze(0)?
            .unsqueeze(0)?;
        shots.push((pixels, weights));
    }
    let references = reference_pixels(&spec)?;
    Ok(PooledScene {
        spec,
        shots,
        references,
    })
}

/// The global prompt a training scene is shown with: looks in full, none, or the
/// environment only (by the stage's shares), each look left out now and then, or the empty
/// prompt.
fn training_global_prompt(stage: &SceneStage, spec: &SceneSpec, rng: &mut SplitMix64) -> String {
    let draw = rng.uniform();
    if draw < stage.drop_prompt {
        return String::new();
    }
    if draw < stage.drop_prompt + stage.no_looks {
        return global_prompt(spec, CaptionMode::NoLooks);
    }
    let mut omitted: Vec<Attribute> = Attribute::ALL
        .into_iter()
        .filter(|_| rng.uniform() < stage.drop_attribute)
        .collect();
    if draw < stage.drop_prompt + stage.no_looks + stage.no_character_looks {
        omitted.extend([
            Attribute::Size,
            Attribute::Colour,
            Attribute::Shape,
            Attribute::Pattern,
        ]);
    }
    global_prompt_omitting(spec, &omitted)
}

/// What the held-out scenes read back: hits out of `shots`, and scenes whose two shots agree
/// on the character (colour and shape) out of `scenes`.
struct Score {
    shots: usize,
    colour: usize,
    shape: usize,
    framing: usize,
    scenes: usize,
    agree: usize,
}

/// Frames of an evaluated shot (the main job's); the middle one is read.
const EVAL_FRAMES: usize = 4;

/// Generates each held-out scene's first two shots jointly with the looks in the global
/// prompt (the product's sampler: Euler, guidance against the empty prompt), reads them with
/// the world's detectors and writes them as a contact sheet (a scene's two shots side by
/// side, 7 scenes a row).
fn evaluate(
    stage: &SceneStage,
    trainer: &WanTrainer,
    prompts: &mut Captions,
    mask: AttentionMask,
    sheet: &Path,
) -> Result<Score> {
    let null_text = prompts.embed("")?;
    let sampler = SamplerConfig {
        steps: stage.sample_steps,
        guidance: stage.cfg,
        shift: 1.0,
        seed: stage.seed ^ 0xe7a1,
        ..SamplerConfig::default()
    };
    let mut score = Score {
        shots: 0,
        colour: 0,
        shape: 0,
        framing: 0,
        scenes: 0,
        agree: 0,
    };
    let mut frames = Vec::new();
    for index in 0..stage.eval_scenes {
        let spec = held_out_scene(index, 2);
        let request = SceneRequest {
            global_text: Some(prompts.embed(&global_prompt(&spec, CaptionMode::GlobalLooks))?),
            shots: (0..2)
                .map(|shot| {
                    Ok(ShotInput {
                        text: prompts.embed(&shot_prompt(&spec, shot)?)?,
                        latent_dims: [3, EVAL_FRAMES, 64, 64],
                        role: ShotRole::Generate,
                        latent: None,
                        scene_index: shot,
                    })
                })
                .collect::<Result<_>>()?,
        };
        let latents = trainer.with_sampling_model(|model| {
            wan_sample(
                model,
                &request,
                &sampler,
                Some(&null_text),
                mask,
                None,
                |_| StepControl::Continue,
            )
        })??;
        let mut readings = Vec::new();
        for (shot, latent) in latents.iter().enumerate() {
            // [1, 3, T, H, W] in -1..1 -> the middle frame.
            let clip = ((latent.clamp(-1f32, 1f32)? + 1.0)? * 0.5)?
                .squeeze(0)?
                .permute((1, 0, 2, 3))?;
            let frame = tensor_frames(&clip)?.remove(EVAL_FRAMES / 2);
            let reading = detect_character(&frame);
            score.shots += 1;
            if let Some(r) = &reading {
                score.colour += (r.colour == spec.character.colour) as usize;
                score.shape += (r.shape == spec.character.shape) as usize;
                score.framing += (r.framing == spec.shots[shot]) as usize;
            }
            readings.push(reading);
            frames.push(frame);
        }
        score.scenes += 1;
        if let [Some(a), Some(b)] = readings.as_slice() {
            score.agree += (a.colour == b.colour && a.shape == b.shape) as usize;
        }
    }
    let rows: Vec<Vec<lct_world::Frame>> = frames.chunks(14).map(<[_]>::to_vec).collect();
    lct_world::contact_sheet(&rows, 2).save(sheet)?;
    Ok(score)
}

/// Where a run stands, saved with each checkpoint.
#[derive(serde::Serialize, serde::Deserialize)]
struct Progress {
    step: u64,
    scenes_seen: u64,
    minutes: f64,
}

const PROGRESS_FILE: &str = "progress.json";

/// The files of a checkpoint folder besides the transformer, linked (or copied) from the
/// stage before, with `lct.json` naming this stage's mask.
fn carry_checkpoint_files(from: &Path, out: &Path, mask: AttentionMask) -> Result<()> {
    for component in ["text_encoder", "tokenizer", "vae", "scheduler"] {
        let source = from.join(component);
        let Ok(entries) = std::fs::read_dir(&source) else {
            continue;
        };
        std::fs::create_dir_all(out.join(component))?;
        for entry in entries.flatten() {
            let target = out.join(component).join(entry.file_name());
            if !target.exists() && std::fs::hard_link(entry.path(), &target).is_err() {
                std::fs::copy(entry.path(), &target)?;
            }
        }
    }
    std::fs::copy(from.join("model_index.json"), out.join("model_index.json"))?;
    let marker: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(from.join(LCT_MARKER))?)?;
    let mut marker = marker;
    marker["attention"] = match mask {
        AttentionMask::ContextCausal => "context_causal",
        _ => "bidirectional",
    }
    .into();
    std::fs::write(
        out.join(LCT_MARKER),
        serde_json::to_string_pretty(&marker)? + "\n",
    )?;
    Ok(())
}

/// Trains until `stage.steps` or for `stage.minutes`, evaluating and checkpointing every
/// `stage.eval_steps`; resumes from `stage.out` when it holds a checkpoint.
pub fn run(stage: &SceneStage) -> Result<()> {
    if stage.min_shots == 0 || stage.min_shots > stage.max_shots {
        return Err(format!(
            "--min-shots {} and --max-shots {}: need 1 <= min <= max",
            stage.min_shots, stage.max_shots
        )
        .into());
    }
    let out = stage.out.as_path();
    std::fs::create_dir_all(out)?;
    let mask = match stage.attention {
        Mask::Bidirectional => AttentionMask::Bidirectional,
        Mask::ContextCausal => AttentionMask::ContextCausal,
    };
    carry_checkpoint_files(&stage.from, out, mask)?;
    let mut prompts = Captions {
        encoder: load_text_encoder(out, DType::F32, &Device::Cpu)?,
        cache: HashMap::new(),
    };
    let train = WanTrainConfig {
        optim: OptimConfig {
            learning_rate: stage.learning_rate,
            warmup_steps: stage.warmup,
            decay_steps: stage.steps.saturating_sub(stage.warmup),
            min_lr_ratio: 0.1,
            ema_decay: stage.ema,
            grad_clip: 1.0,
            ..OptimConfig::default()
        },
        attention: mask,
        shift: 1.0,
    };
    let progress_path = out.join(PROGRESS_FILE);
    let (mut trainer, mut progress) = if progress_path.is_file() {
        let progress: Progress = serde_json::from_str(&std::fs::read_to_string(&progress_path)?)?;
        println!(
            "resuming at step {} ({} scenes, {:.1} min)",
            progress.step, progress.scenes_seen, progress.minutes
        );
        (WanTrainer::resume(out, train, &Device::Cpu)?, progress)
    } else {
        std::fs::write(
            out.join("log.tsv"),
            "minutes\tscenes\tlr\tloss\tcolour\tshape\tframing\tagreement\n",
        )?;
        let progress = Progress {
            step: 0,
            scenes_seen: 0,
            minutes: 0.0,
        };
        (
            WanTrainer::from_checkpoint(&stage.from, train, &Device::Cpu)?,
            progress,
        )
    };
    if progress.step >= stage.steps {
        println!("{}: finished ({} steps)", out.display(), progress.step);
        return Ok(());
    }
    trainer.set_workers(stage.workers);
    let rendering = Instant::now();
    let seeds: Vec<u64> = (0..stage.pool as u64)
        .map(|i| stage.seed.wrapping_mul(1_000_003) + i)
        .collect();
    let pool: Vec<PooledScene> = lct_model::train::map_chunks(
        &seeds,
        stage.workers,
        |chunk| {
            chunk
                .iter()
                .map(|&seed| render_scene(stage, seed).map_err(|e| e.to_string()))
                .collect::<std::result::Result<Vec<_>, String>>()
        },
        || "a rendering thread panicked".to_owned(),
    )?
    .into_iter()
    .flatten()
    .collect();
    println!(
        "scene stage: {} scenes of {} shots rendered in {:.0} s; {}-{} shots a scene, batch {}",
        pool.len(),
        stage.max_shots,
        rendering.elapsed().as_secs_f64(),
        stage.min_shots,
        stage.max_shots,
        stage.batch
    );
    let draw = SceneDraw {
        uniform: true,
        context_prob: stage.context_prob,
        context_max_time: 0.1,
    };
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(out.join("log.tsv"))?;
    let started = Instant::now();
    let earlier_minutes = progress.minutes;
    let first_step = progress.step;
    let mut recent_loss = Vec::new();
    loop {
        let minutes = started.elapsed().as_secs_f64() / 60.0;
        let finished = progress.step >= stage.steps;
        let out_of_time = minutes >= stage.minutes;
        let due = progress.step != first_step && progress.step % stage.eval_steps.max(1) == 0;
        if due || finished || out_of_time {
            progress.minutes = earlier_minutes + minutes;
            let sheet = out.join(format!("held-out-{:06}.png", progress.step));
            let score = evaluate(stage, &trainer, &mut prompts, mask, &sheet)?;
            let loss = if recent_loss.is_empty() {
                f32::NAN
            } else {
                recent_loss.iter().sum::<f32>() / recent_loss.len() as f32
            };
            recent_loss.clear();
            let rate = |hits: usize| hits as f64 / score.shots.max(1) as f64;
            let agreement = score.agree as f64 / score.scenes.max(1) as f64;
            let lr = trainer
                .optimiser()
                .config()
                .learning_rate_at(progress.step.max(1));
            println!(
                "{:6.1} min  step {:5}  {:6} scenes  lr {lr:.1e}  loss {loss:.4}  held-out colour {:.2} shape {:.2} framing {:.2} agreement {agreement:.2} ({} shots)",
                progress.minutes,
                progress.step,
                progress.scenes_seen,
                rate(score.colour),
                rate(score.shape),
                rate(score.framing),
                score.shots
            );
            writeln!(
                log,
                "{:.1}\t{}\t{lr:.2e}\t{loss:.4}\t{:.3}\t{:.3}\t{:.3}\t{agreement:.3}",
                progress.minutes,
                progress.scenes_seen,
                rate(score.colour),
                rate(score.shape),
                rate(score.framing)
            )?;
            log.flush()?;
            trainer.save_checkpoint(out)?;
            std::fs::write(&progress_path, serde_json::to_string_pretty(&progress)?)?;
            if finished || out_of_time {
                return Ok(());
            }
        }
        let step = progress.step;
        let mut rng = SplitMix64::stream(stage.seed, 0x5ce4 + step);
        let mut scenes = Vec::with_capacity(stage.batch);
        for _ in 0..stage.batch {
            let pooled = &pool[rng.below(pool.len())];
            let count = stage.min_shots + rng.below(stage.max_shots - stage.min_shots + 1);
            let mut shots = Vec::with_capacity(count + 2);
            let global = if rng.uniform() < stage.references {
                let [identity, environment] = &pooled.references;
                for (latents, prompt) in [
                    (identity, identity_reference_prompt()),
                    (environment, environment_reference_prompt()),
                ] {
                    shots.push(WanTrainingShot {
                        latents: latents.clone(),
                        prompt: prompts.embed(prompt)?,
                        weights: None,
                        given: true,
                    });
                }
                global_prompt(&pooled.spec, CaptionMode::NoLooks)
            } else {
                training_global_prompt(stage, &pooled.spec, &mut rng)
            };
            for shot in 0..count {
                let (pixels, weights) = &pooled.shots[shot];
                shots.push(WanTrainingShot {
                    latents: pixels.clone(),
                    prompt: prompts.embed(&shot_prompt(&pooled.spec, shot)?)?,
                    weights: Some(weights.clone()),
                    given: false,
                });
            }
            scenes.push(WanTrainingScene {
                global_text: prompts.embed(&global)?,
                shots,
            });
        }
        recent_loss.push(trainer.scenes_step(&scenes, &draw, stage.seed + step)?);
        progress.step += 1;
        progress.scenes_seen += stage.batch as u64;
    }
}
