//! `lct-train`: the embedded default model's recipe, stage by stage, each resumable
//! (`nodes/train/recipe.sh` runs them all).
//!
//! ```text
//! lct-train images --out runs/embedded/images --steps 6000          # the Wan model, images first
//! lct-train scenes --from runs/embedded/images --out runs/embedded/shots --max-shots 1
//! lct-train scenes --from runs/embedded/shots --out runs/embedded/lct --min-shots 2
//! lct-train scenes --from runs/embedded/lct --out runs/embedded/causal --attention context-causal
//! lct-train evaluate --model nodes/assets/default                   # the model card's table
//! ```
//! The earlier MMDiT line (its last model in `tests/mmdit_model`), until it leaves the tree:
//! ```text
//! lct-train fit --stage pretrain --out runs/pretrain --minutes 20
//! lct-train fit --stage lct      --out runs/lct      --from runs/pretrain --minutes 30
//! lct-train fit --stage causal   --out runs/causal   --from runs/lct      --minutes 15
//! lct-train eval --pretrain runs/pretrain --lct runs/lct --causal runs/causal --out runs/eval
//! lct-train probe-prompts --model nodes/train/tests/mmdit_model                # single shots follow their prompt?
//! lct-train probe-context --model nodes/train/tests/mmdit_model                # does a shot read its context?
//! lct-train wan --checkpoint Wan2.1-T2V-1.3B-Diffusers --scenes my-scenes --out wan-lct
//! ```
//! A stage whose `--out` already holds a checkpoint continues from it.
//!
//! The measuring commands live in [`diagnostics`]; past experiments are recorded, with the
//! commands that reproduce them, in `nodes/train/EXPERIMENTS.md`.
//!
//! Role: the recipe and its measurements only; it drives `lct-model` on `lct-world` data (and,
//! for `wan`, on the user's scenes) and must not depend on the plugin, the nodes or the host.

mod curve;
mod data;
mod device;
mod diagnostics;
mod evaluate;
mod images;
mod pca;
mod scenes;
mod wan;

use clap::{Parser, Subcommand};
use data::{training_scene, DataMix, Result, Stage};
use diagnostics::{context, eval, prompts};
use lct_model::{
    AttentionMask, AutoencoderConfig, Config, SamplerConfig, TextEncoderConfig, TrainConfig,
    Trainer,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "Train and evaluate the embedded default LCT model")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// LCT-tune a Wan checkpoint (diffusers layout) on a folder of scenes: each
    /// `<scene>/scene.json` names a global prompt and shots (prompt, folder of 1 + 4k frames).
    /// Full fine-tune of the transformer; writes a complete checkpoint folder with `lct.json`
    /// (the mask it was tuned for). Resumes when --out holds this tuning.
    Wan {
        /// The Wan checkpoint folder (model_index.json, transformer/, vae/, text_encoder/, tokenizer/).
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        scenes: PathBuf,
        /// A new folder (or this tuning's, to continue it).
        #[arg(long)]
        out: PathBuf,
        /// Optimiser steps in total, one scene each.
        #[arg(long, default_value_t = 500)]
        steps: usize,
        #[arg(long, default_value_t = 1e-5)]
        lr: f64,
        /// The mask to tune for: context_causal (history cacheable as K/V) or bidirectional.
        #[arg(long, default_value = "context_causal")]
        attention: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Write the checkpoint every this many steps (0: only at the end).
        #[arg(long, default_value_t = 100)]
        save_every: usize,
        /// cpu, cuda or cuda:N (a build with `--features cuda`).
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// The images-first stage of the next embedded model (a small pixel-space Wan with prompt
    /// modulation) on single frames, scored on held-out shots while it trains: the
    /// learnability check. Run with RAYON_NUM_THREADS=1 (one matrix thread per worker).
    Images(images::ImageStage),
    /// The stages of the next embedded model after images: short single shots, LCT scenes,
    /// the context-causal fine-tune (by their settings), each from the stage before.
    /// Run with RAYON_NUM_THREADS=1.
    Scenes(scenes::SceneStage),
    /// The embedded model's table on held-out scenes (a Wan checkpoint folder).
    Evaluate(evaluate::Evaluation),
    /// A run's training curve (held-out colour and shape against frames seen) as SVG.
    Curve(curve::Curve),
    /// Train one stage (resumes when --out holds a checkpoint).
    Fit {
        #[arg(long, value_enum)]
        stage: Stage,
        #[arg(long)]
        out: PathBuf,
        /// The previous stage's checkpoint (lct and causal stages).
        #[arg(long)]
        from: Option<PathBuf>,
        /// Wall-clock budget for this invocation.
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Stop at this many steps in total (0: no limit).
        #[arg(long, default_value_t = 0)]
        steps: u64,
        #[arg(long, default_value_t = 4)]
        batch: usize,
        /// Learning rate of a new run (default 1e-3); given when resuming, it replaces the
        /// saved one from this step on (to anneal a run).
        #[arg(long)]
        lr: Option<f64>,
        /// Where the steps run: cpu, cuda or cuda:N (a build with `--features cuda`). On a
        /// GPU give `--workers 1` and a larger `--batch`; the batches are built on the host.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Threads that build and score the batch's scenes side by side (0: one per core).
        /// Set RAYON_NUM_THREADS=1 with it, so each worker's matrix products stay on its thread.
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// The character's latent pixels weigh 1 + E x (the fraction of the patch it covers)
        /// in the loss, so a small subject counts against a large background. Data-side: give
        /// it on every invocation (0: all pixels alike).
        #[arg(long, default_value_t = 0.0)]
        character_emphasis: f64,
        /// Probability that an lct or causal sample is a single shot whose global prompt
        /// spells out the looks, rather than a scene (pre-training: always). Data-side: give
        /// it on every invocation.
        #[arg(long, default_value_t = DataMix::SINGLE_SHOT_PROB)]
        single_shot_prob: f64,
        /// Probability that a multi-shot lct or causal sample is instead the identity image,
        /// the environment image and one shot whose captions carry no looks, so that the
        /// images are the only source of the shot's looks (the compositional row's setting).
        /// Data-side: give it on every invocation.
        #[arg(long, default_value_t = 0.0)]
        reference_scene_prob: f64,
        /// Probability that a shot of a multi-shot scene is drawn as given context (timestep
        /// uniform in 0..=0.1, no loss of its own), so given shots and clean history are seen
        /// in training. A new run's default is 0; given when resuming, it replaces the saved
        /// one from this step on.
        #[arg(long)]
        context_prob: Option<f64>,
        /// Probability that a training shot is cut to one of its frames (image-shots are
        /// cheap: a scene of them trains several times faster). A new run's default is 0.1;
        /// given when resuming, it replaces the saved one from this step on.
        #[arg(long)]
        single_frame_prob: Option<f64>,
        /// Decay of the moving average of the weights that checkpoints hold for sampling
        /// (0: off). A new run's default is 0; given when resuming, it applies from now on.
        #[arg(long)]
        ema_decay: Option<f64>,
        /// Steps over which the learning rate warms up from 0 (default 0).
        #[arg(long)]
        warmup_steps: Option<u64>,
        /// Steps after the warm-up over which the learning rate falls along a cosine to a tenth
        /// (default 0: constant). Given when resuming, warm-up and decay apply from the run's
        /// step count on.
        #[arg(long)]
        decay_steps: Option<u64>,
        /// Latent channels of a new pre-training run's PCA autoencoder (default 8; later
        /// stages and resumed runs keep their checkpoint's).
        #[arg(long)]
        latent_channels: Option<usize>,
        /// Transformer patch size of a new pre-training run, in latent pixels (default 2:
        /// 64 tokens per 64x64 frame; 4 gives 16, a quarter of the sequence).
        #[arg(long)]
        patch_size: Option<usize>,
    },
    /// Prompt following: single shots generated from captions that spell out the looks, and
    /// the fraction of asked-for attributes read back from pixels, per checkpoint.
    ProbePrompts {
        /// Checkpoints to compare (one row each).
        #[arg(long = "model", required = true)]
        models: Vec<PathBuf>,
        #[arg(long, default_value_t = 24)]
        scenes: u64,
        #[command(flatten)]
        sampling: Sampling,
        /// Also write the table here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Context use: one noised shot's loss beside nothing, beside noise, beside a wrong
    /// scene's shots, beside its own scene's clean shots and beside them with the character
    /// recoloured, per checkpoint (no sampling).
    ProbeContext {
        /// Checkpoints to compare (rows each).
        #[arg(long = "model", required = true)]
        models: Vec<PathBuf>,
        #[arg(long, default_value_t = 24)]
        scenes: u64,
        /// Noise levels of the probed shot.
        #[arg(long = "t", num_args = 1.., default_values_t = [0.5f32, 0.8])]
        timesteps: Vec<f32>,
        /// Noise levels of the context shots (own, recoloured and wrong scene).
        #[arg(long = "context-t", num_args = 1.., default_values_t = [0.0f32, 0.3])]
        context_levels: Vec<f32>,
        /// Also write the table here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write the evaluation table on held-out scenes.
    Eval {
        #[arg(long)]
        pretrain: PathBuf,
        #[arg(long)]
        lct: PathBuf,
        #[arg(long)]
        causal: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 8)]
        scenes: u64,
        #[command(flatten)]
        sampling: Sampling,
        /// Held-out 5-shot scenes of the 10-shot rollout and of the KV-cache timing (0: skip).
        #[arg(long, default_value_t = 2)]
        rollout_scenes: u64,
        /// Skip the table: only the rollout and the KV-cache timing.
        #[arg(long)]
        only_extras: bool,
        /// Only these rows of the table, comma-separated (default: all).
        #[arg(long, value_enum, value_delimiter = ',')]
        rows: Vec<eval::Row>,
        /// What the held-out captions say: no-looks (consistency only from context) or
        /// global-looks (the paper's scenes: the global prompt names the looks).
        #[arg(long, value_enum, default_value_t)]
        captions: eval::Captions,
    },
}

/// The sampler settings of the measuring commands (the seed is fixed per scene); the
/// defaults are the nodes' ([`SamplerConfig::DEFAULT`]).
#[derive(clap::Args, Debug, Clone)]
struct Sampling {
    /// Euler steps from noise to the clip.
    #[arg(long, default_value_t = SamplerConfig::DEFAULT.steps)]
    steps: usize,
    /// Classifier-free guidance scale (1: no unconditional branch).
    #[arg(long, default_value_t = SamplerConfig::DEFAULT.guidance)]
    guidance: f32,
    /// Timestep shift (above 1 spends more steps at high noise).
    #[arg(long, default_value_t = SamplerConfig::DEFAULT.shift)]
    shift: f32,
    /// Context guidance scale: a generated shot with its scene against itself alone
    /// (1: no extra branch).
    #[arg(long, default_value_t = SamplerConfig::DEFAULT.context_guidance)]
    context_guidance: f32,
}

impl Sampling {
    fn config(&self) -> SamplerConfig {
        SamplerConfig {
            steps: self.steps,
            guidance: self.guidance,
            shift: self.shift,
            context_guidance: self.context_guidance,
            ..SamplerConfig::DEFAULT
        }
    }
}

/// The last embedded model of the MMDiT line (the one before the Wan model), kept as the
/// checkpoint the MMDiT recipe's tests and probes run on until that line leaves the tree.
pub fn embedded_model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mmdit_model")
}

/// The default model: width 128, 4 layers, 64x64 frames through an 8-channel 4x4-patch
/// autoencoder and 2x2 transformer patches (64 tokens per frame).
pub fn default_config() -> Config {
    Config {
        hidden_size: 128,
        depth: 4,
        num_heads: 4,
        mlp_hidden_size: 512,
        latent_channels: 8,
        patch_size: 2,
        text_dim: 64,
        rope_axes: [8, 12, 12],
        rope_theta: 10_000.0,
        timestep_features: 128,
        shot_text_len: 12,
        global_text_len: 32,
        attention: AttentionMask::Bidirectional,
        pooled_text: false,
        text_encoder: Some(TextEncoderConfig {
            vocabulary: lct_world::vocabulary()
                .iter()
                .map(|w| w.to_string())
                .collect(),
            max_len: 32,
            hidden_size: 128,
        }),
        autoencoder: Some(AutoencoderConfig {
            patch: 4,
            frame_size: [64, 64],
            color_space: lct_model::default_working_color_space(),
        }),
        reference_prompts: Some(lct_model::ReferencePrompts {
            identity: lct_world::identity_reference_prompt().into(),
            environment: lct_world::environment_reference_prompt().into(),
        }),
    }
}

fn log(dir: &Path, line: &str) -> Result<()> {
    println!("{line}");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("train.log"))?;
    writeln!(file, "{line}")?;
    Ok(())
}

/// Training settings a new run takes (defaults where absent) and a resumed run replaces from
/// its next step on where given.
struct Overrides {
    lr: Option<f64>,
    architecture: Architecture,
    context_prob: Option<f64>,
    single_frame_prob: Option<f64>,
    ema_decay: Option<f64>,
    warmup_steps: Option<u64>,
    decay_steps: Option<u64>,
}

/// The architecture flags of a new pre-training run (absent: `default_config`'s).
#[derive(Clone, Copy, Default)]
struct Architecture {
    latent_channels: Option<usize>,
    patch_size: Option<usize>,
}

impl Architecture {
    fn given(&self) -> Option<&'static str> {
        if self.latent_channels.is_some() {
            Some("--latent-channels")
        } else if self.patch_size.is_some() {
            Some("--patch-size")
        } else {
            None
        }
    }

    /// `default_config` with the given changes, checked before any training starts.
    fn config(&self) -> Result<Config> {
        let mut cfg = default_config();
        if let Some(channels) = self.latent_channels {
            let patch = cfg.autoencoder.as_ref().map_or(4, |ae| ae.patch);
            let most = 3 * patch * patch;
            if !(1..=most).contains(&channels) {
                return Err(format!(
                    "--latent-channels {channels}: a PCA autoencoder of {patch}x{patch} RGB patches has 1 to {most} channels"
                )
                .into());
            }
            cfg.latent_channels = channels;
        }
        if let Some(patch) = self.patch_size {
            let side = cfg
                .autoencoder
                .as_ref()
                .map_or(16, |ae| ae.frame_size[0] / ae.patch);
            if patch == 0 || !side.is_multiple_of(patch) {
                return Err(format!(
                    "--patch-size {patch} must divide the {side}x{side} latent frame"
                )
                .into());
            }
            cfg.patch_size = patch;
        }
        Ok(cfg)
    }
}

/// The largest timestep of a shot drawn as given context (`--context-prob`).
const CONTEXT_MAX_T: f64 = 0.1;

fn start_trainer(
    stage: Stage,
    out: &Path,
    from: Option<&Path>,
    device: &candle_core::Device,
    overrides: &Overrides,
) -> Result<Trainer> {
    let &Overrides {
        lr,
        architecture,
        context_prob,
        single_frame_prob,
        ema_decay,
        warmup_steps,
        decay_steps,
    } = overrides;
    let resuming = out.join(lct_model::train::TRAINER_FILE).exists();
    if let Some(flag) = architecture.given() {
        if resuming || stage != Stage::Pretrain {
            return Err(format!(
                "{flag} sets the architecture of a new pre-training run; {} keeps its checkpoint's",
                if resuming {
                    format!("resuming {}", out.display())
                } else {
                    format!("the {stage:?} stage")
                }
            )
            .into());
        }
    }
    if resuming {
        let mut trainer = Trainer::resume(out, device)?;
        log(
            out,
            &format!(
                "resuming {} at step {}",
                out.display(),
                trainer.step_count()
            ),
        )?;
        if let Some(lr) = lr {
            trainer.set_learning_rate(lr)?;
            log(out, &format!("learning rate from now on: {lr}"))?;
        }
        if let Some(prob) = context_prob {
            trainer.set_context_draw(prob, CONTEXT_MAX_T)?;
            log(
                out,
                &format!("shots drawn as given context from now on: {prob}"),
            )?;
        }
        if let Some(prob) = single_frame_prob {
            trainer.set_single_frame_prob(prob)?;
            log(out, &format!("single-frame shots from now on: {prob}"))?;
        }
        if let Some(decay) = ema_decay {
            trainer.set_ema_decay(decay)?;
            log(out, &format!("EMA decay from now on: {decay}"))?;
        }
        if warmup_steps.is_some() || decay_steps.is_some() {
            let saved = trainer.train_config().clone();
            let (warmup, decay) = (
                warmup_steps.unwrap_or(saved.warmup_steps),
                decay_steps.unwrap_or(saved.decay_steps),
            );
            trainer.set_schedule(warmup, decay, saved.min_lr_ratio)?;
            log(
                out,
                &format!(
                    "learning rate: warm-up to step {warmup}, then cosine decay over {decay} steps"
                ),
            )?;
        }
        return Ok(trainer);
    }
    let lr = lr.unwrap_or(1e-3);
    let attention = match stage {
        Stage::Causal => AttentionMask::ContextCausal,
        _ => AttentionMask::Bidirectional,
    };
    // A later stage keeps its parent's architecture and latent space; only the attention
    // mask is the stage's own.
    let cfg = match (stage, from) {
        (Stage::Pretrain, _) | (_, None) => architecture.config()?,
        (_, Some(from)) => Config::load(&from.join(lct_model::weights::CONFIG_FILE))?,
    }
    .with_attention(attention);
    // Only after the flags are checked: a refused run leaves nothing behind.
    std::fs::create_dir_all(out)?;
    let train = TrainConfig {
        learning_rate: lr,
        single_frame_prob: single_frame_prob.unwrap_or(0.1),
        text_dropout_prob: 0.1,
        seed: stage as u64 + 1,
        context_prob: context_prob.unwrap_or(0.0),
        context_max_t: CONTEXT_MAX_T,
        ema_decay: ema_decay.unwrap_or(0.0),
        warmup_steps: warmup_steps.unwrap_or(0),
        decay_steps: decay_steps.unwrap_or(0),
        ..TrainConfig::default()
    };
    let weights = match (stage, from) {
        (Stage::Pretrain, _) => {
            let mut weights = lct_model::init_tensors(&cfg, 1, lct_model::Init::AdaLnZero, device)?;
            let started = Instant::now();
            let (ae, explained) = pca::fit(4, cfg.latent_channels, pca::FIT_SCENES)?;
            log(out, &format!("autoencoder: PCA of 4x4 patches, {} channels keep {:.2}% of the variance ({:.1} s)", cfg.latent_channels, 100.0 * explained, started.elapsed().as_secs_f64()))?;
            weights.extend(ae);
            weights
        }
        (_, Some(from)) => lct_model::weights::read_safetensors(
            &from.join(lct_model::weights::WEIGHTS_FILE),
            device,
        )?,
        (_, None) => {
            return Err(
                format!("stage {stage:?} starts from the previous stage: give --from DIR").into(),
            )
        }
    };
    Ok(Trainer::with_weights(&cfg, train, &weights, device)?)
}

/// The `count` training scenes from seed `first` on, built by up to `workers` threads; the
/// scenes depend only on their seeds, never on the thread count.
fn training_batch(
    pipeline: &lct_model::Pipeline,
    stage: Stage,
    first: u64,
    count: usize,
    workers: usize,
    mix: DataMix,
) -> Result<Vec<lct_model::TrainingScene>> {
    let seeds: Vec<u64> = (first..first + count as u64).collect();
    let chunks = lct_model::train::map_chunks(
        &seeds,
        workers,
        |chunk| {
            chunk
                .iter()
                .map(|&seed| training_scene(pipeline, stage, seed, mix).map_err(|e| e.to_string()))
                .collect::<std::result::Result<Vec<_>, String>>()
        },
        || "a data worker panicked".to_owned(),
    )?;
    Ok(chunks.into_iter().flatten().collect())
}

#[allow(clippy::too_many_arguments)]
fn fit(
    stage: Stage,
    out: &Path,
    from: Option<&Path>,
    minutes: f64,
    steps: u64,
    batch: usize,
    workers: usize,
    device: &str,
    overrides: &Overrides,
    mix: DataMix,
) -> Result<()> {
    let device = device::parse_device(device)?;
    let emphasis = mix.character_emphasis;
    if !(emphasis.is_finite() && emphasis >= 0.0) {
        return Err(format!("--character-emphasis {emphasis} must be a number >= 0").into());
    }
    for (flag, prob) in [
        ("--context-prob", overrides.context_prob),
        ("--single-frame-prob", overrides.single_frame_prob),
        ("--single-shot-prob", Some(mix.single_shot_prob)),
        ("--reference-scene-prob", Some(mix.reference_scene_prob)),
    ] {
        if let Some(prob) = prob {
            if !(0.0..=1.0).contains(&prob) {
                return Err(format!("{flag} {prob} must lie in 0..=1").into());
            }
        }
    }
    // Checked here too, so that a refused new run leaves no folder behind.
    if let Some(decay) = overrides.ema_decay {
        if !(0.0..1.0).contains(&decay) {
            return Err(format!("--ema-decay {decay} must lie in 0..1 (0: off)").into());
        }
    }
    let mut trainer = start_trainer(stage, out, from, &device, overrides)?;
    let workers = match workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    trainer.set_workers(workers)?;
    let single_shot_prob = if stage == Stage::Pretrain {
        1.0
    } else {
        mix.single_shot_prob
    };
    log(
        out,
        &format!("single-shot samples (looks in the global prompt): {single_shot_prob}"),
    )?;
    if mix.reference_scene_prob > 0.0 && stage != Stage::Pretrain {
        log(
            out,
            &format!(
                "scenes drawn as identity image + environment image + one shot without looks: {}",
                mix.reference_scene_prob
            ),
        )?;
    }
    if emphasis > 0.0 {
        log(
            out,
            &format!("character pixels weigh 1 + {emphasis} x coverage"),
        )?;
    }
    let first_step = trainer.step_count();
    let started = Instant::now();
    let mut last_save = Instant::now();
    let mut window = Vec::new();
    while started.elapsed().as_secs_f64() < minutes * 60.0
        && (steps == 0 || trainer.step_count() < steps)
    {
        let step = trainer.step_count();
        let scenes = training_batch(
            trainer.pipeline(),
            stage,
            step * batch as u64,
            batch,
            workers,
            mix,
        )?;
        let stats = trainer.step(&scenes)?;
        window.push(stats.loss);
        if stats.step % 25 == 0 {
            let mean = window.iter().sum::<f32>() / window.len() as f32;
            window.clear();
            log(
                out,
                &format!(
                    "{stage:?} step {:>6}  loss {mean:.4}  grad {:.3}  lr {:.2e}  {:.2} s/step",
                    stats.step,
                    stats.grad_norm,
                    trainer.train_config().learning_rate_at(stats.step),
                    started.elapsed().as_secs_f64() / (stats.step - first_step) as f64
                ),
            )?;
        }
        if last_save.elapsed().as_secs() > 300 {
            trainer.save(out)?;
            last_save = Instant::now();
        }
    }
    trainer.save(out)?;
    log(
        out,
        &format!(
            "{stage:?}: saved {} at step {}",
            out.display(),
            trainer.step_count()
        ),
    )?;
    Ok(())
}

/// Writes a probe's table to `out` when given (never over an existing file).
fn write_table(lines: &[String], out: Option<&Path>) -> Result<()> {
    if let Some(out) = out {
        if out.exists() {
            return Err(format!(
                "{} exists; give a new path (nothing is overwritten)",
                out.display()
            )
            .into());
        }
        std::fs::write(out, lines.join("\n") + "\n")?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    lct_model::keep_freed_pages();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Images(stage) => images::run(&stage),
        Command::Scenes(stage) => scenes::run(&stage),
        Command::Evaluate(evaluation) => evaluate::run(&evaluation),
        Command::Curve(curve) => curve::run(&curve),
        Command::Wan {
            checkpoint,
            scenes,
            out,
            steps,
            lr,
            attention,
            seed,
            save_every,
            device,
        } => (|| -> Result<()> {
            let attention = match attention.as_str() {
                "context_causal" => AttentionMask::ContextCausal,
                "bidirectional" => AttentionMask::Bidirectional,
                other => {
                    return Err(format!(
                        "--attention {other}: expected context_causal or bidirectional"
                    )
                    .into())
                }
            };
            wan::tune(&wan::WanTuning {
                checkpoint: &checkpoint,
                scenes: &scenes,
                out: &out,
                steps,
                learning_rate: lr,
                attention,
                seed,
                save_every,
                device: device::parse_device(&device)?,
            })
        })(),
        Command::Fit {
            stage,
            out,
            from,
            minutes,
            steps,
            batch,
            lr,
            workers,
            device,
            character_emphasis,
            single_shot_prob,
            reference_scene_prob,
            context_prob,
            single_frame_prob,
            ema_decay,
            warmup_steps,
            decay_steps,
            latent_channels,
            patch_size,
        } => fit(
            stage,
            &out,
            from.as_deref(),
            minutes,
            steps,
            batch,
            workers,
            &device,
            &Overrides {
                lr,
                architecture: Architecture {
                    latent_channels,
                    patch_size,
                },
                context_prob,
                single_frame_prob,
                ema_decay,
                warmup_steps,
                decay_steps,
            },
            DataMix {
                single_shot_prob,
                reference_scene_prob,
                character_emphasis,
            },
        ),
        Command::ProbePrompts {
            models,
            scenes,
            sampling,
            out,
        } => prompts::probe_prompts(&models, scenes, &sampling.config())
            .and_then(|lines| write_table(&lines, out.as_deref())),
        Command::ProbeContext {
            models,
            scenes,
            timesteps,
            context_levels,
            out,
        } => context::probe_context(&models, scenes, &timesteps, &context_levels)
            .and_then(|lines| write_table(&lines, out.as_deref())),
        Command::Eval {
            pretrain,
            lct,
            causal,
            out,
            scenes,
            sampling,
            rollout_scenes,
            only_extras,
            rows,
            captions,
        } => eval::run(
            &pretrain,
            &lct,
            &causal,
            &out,
            &eval::Options {
                scenes,
                sampling: sampling.config(),
                rollout_scenes,
                only_extras,
                rows,
                captions,
            },
        ),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampling_of(args: &[&str]) -> lct_model::SamplerConfig {
        let cli = Cli::try_parse_from(args).expect("the arguments parse");
        match cli.command {
            Command::ProbePrompts { sampling, .. } | Command::Eval { sampling, .. } => {
                sampling.config()
            }
            _ => panic!("not a measuring command"),
        }
    }

    #[test]
    fn measuring_commands_take_the_sampler_settings() {
        let probe = sampling_of(&["lct-train", "probe-prompts", "--model", "m"]);
        let defaults = SamplerConfig::DEFAULT;
        assert_eq!(
            (
                probe.steps,
                probe.guidance,
                probe.shift,
                probe.context_guidance
            ),
            (
                defaults.steps,
                defaults.guidance,
                defaults.shift,
                defaults.context_guidance
            )
        );
        let eval = sampling_of(&[
            "lct-train",
            "eval",
            "--pretrain",
            "p",
            "--lct",
            "l",
            "--causal",
            "c",
            "--out",
            "o",
            "--steps",
            "8",
            "--guidance",
            "1.5",
            "--shift",
            "3",
        ]);
        assert_eq!((eval.steps, eval.guidance, eval.shift), (8, 1.5, 3.0));
    }

    #[test]
    fn bad_sampler_settings_are_refused_before_any_model_loads() {
        let sampling = sampling_of(&[
            "lct-train",
            "probe-prompts",
            "--model",
            "no/such/dir",
            "--guidance=-1",
        ]);
        let err = prompts::probe_prompts(&[PathBuf::from("no/such/dir")], 1, &sampling)
            .expect_err("a negative guidance is refused")
            .to_string();
        assert!(err.contains("guidance -1"), "{err}");
    }

    #[test]
    fn architecture_flags_shape_a_new_pretraining_run_and_nothing_else() {
        let wide = Architecture {
            latent_channels: Some(24),
            patch_size: Some(4),
        }
        .config()
        .expect("24 channels and 4x4 patches are valid");
        assert_eq!((wide.latent_channels, wide.patch_size), (24, 4));
        assert_eq!(wide.patch_dim(), 24 * 16);
        assert_eq!(Architecture::default().config().unwrap(), default_config());
        for (architecture, named) in [
            (
                Architecture {
                    latent_channels: Some(49),
                    ..Architecture::default()
                },
                "--latent-channels 49",
            ),
            (
                Architecture {
                    patch_size: Some(3),
                    ..Architecture::default()
                },
                "--patch-size 3",
            ),
        ] {
            let err = architecture.config().expect_err(named).to_string();
            assert!(err.contains(named), "{err}");
        }
        let out = std::env::temp_dir().join(format!("lct-arch-{}", std::process::id()));
        let overrides = Overrides {
            lr: None,
            architecture: Architecture {
                patch_size: Some(4),
                ..Architecture::default()
            },
            context_prob: None,
            single_frame_prob: None,
            ema_decay: None,
            warmup_steps: None,
            decay_steps: None,
        };
        let refusal = |stage, overrides: &Overrides, why: &str| {
            start_trainer(stage, &out, None, &candle_core::Device::Cpu, overrides)
                .err()
                .expect(why)
                .to_string()
        };
        let err = refusal(
            Stage::Lct,
            &overrides,
            "a later stage keeps its parent's architecture",
        );
        assert!(err.contains("--patch-size") && err.contains("Lct"), "{err}");
        assert!(!out.exists(), "nothing is written for a refused run");
        let bad_patch = Overrides {
            architecture: Architecture {
                patch_size: Some(3),
                ..Architecture::default()
            },
            ..overrides
        };
        let err = refusal(
            Stage::Pretrain,
            &bad_patch,
            "a patch that does not divide the latent frame",
        );
        assert!(err.contains("--patch-size 3"), "{err}");
        assert!(!out.exists(), "a refused pre-training run leaves no folder");
    }

    #[test]
    fn a_bad_ema_decay_is_refused_by_name_before_anything_is_written() {
        let out = std::env::temp_dir().join(format!("lct-ema-{}", std::process::id()));
        let overrides = Overrides {
            lr: None,
            architecture: Architecture::default(),
            context_prob: None,
            single_frame_prob: None,
            ema_decay: Some(1.5),
            warmup_steps: None,
            decay_steps: None,
        };
        let mix = DataMix {
            single_shot_prob: DataMix::SINGLE_SHOT_PROB,
            reference_scene_prob: 0.0,
            character_emphasis: 0.0,
        };
        let err = fit(
            Stage::Pretrain,
            &out,
            None,
            1.0,
            1,
            1,
            1,
            "cpu",
            &overrides,
            mix,
        )
        .expect_err("an EMA decay of 1.5 is refused")
        .to_string();
        assert!(err.contains("--ema-decay 1.5"), "{err}");
        assert!(!out.exists(), "a refused run leaves no folder");
    }
}
