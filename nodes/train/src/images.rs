//! The images-first stage of the next embedded model (issue 38): a small pixel-space Wan
//! transformer with prompt modulation, trained on single frames of the world's training
//! scenes at a large batch, and scored on held-out shots by the world's detectors while it
//! trains, so that learnability is measured before a long run.
//!
//! The text side is a word-level tokenizer over the world's captions (a closed vocabulary)
//! and a small umT5 encoder with fixed random weights: the transformer's text embedder and
//! prompt modulation learn to read its features.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lct_model::noise::{gaussian, SplitMix64};
use lct_model::optim::OptimConfig;
use lct_model::wan::umt5::{word_level_tokenizer_json, CLOSED_VOCABULARY_FIELD};
use lct_model::wan::{
    UmT5Config, UmT5Encoder, WanBatch, WanPrediction, WanTextEncoder, WanTimestep, WanTokenizer,
    WanTrainConfig, WanTrainer, WanTransformer, WanTransformerConfig,
};
use lct_model::wan::{LCT_MARKER, PIXEL_SPACE_CLASS};
use lct_model::AttentionMask;
use lct_world::{
    detect_character, environment_reference_prompt, global_prompt_omitting,
    identity_reference_prompt, render_shot, sample_scene, shot_prompt, Attribute, SceneSpec, Split,
};

use crate::data::{character_coverage, frames_tensor, held_out_scene, tensor_frames, Result};

const FRAME: usize = 64;

/// Settings of one run (or one piece of it: a run resumes from its folder).
#[derive(clap::Args, Debug, Clone)]
pub struct ImageStage {
    /// The run's folder: checkpoints, `log.tsv` and the held-out contact sheets. A folder
    /// holding a checkpoint is resumed.
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// Optimiser steps of the whole stage (the learning-rate schedule spans them).
    #[arg(long, default_value_t = 3000)]
    pub steps: u64,
    /// Wall-clock budget of this piece; the run stops (checkpointed) when it is spent.
    #[arg(long, default_value_t = 600.0)]
    pub minutes: f64,
    /// Training frames rendered up front (in parallel); batches are drawn from them.
    #[arg(long, default_value_t = 8192)]
    pub pool: usize,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Peak learning rate (2e-3 learned far faster than 5e-4 in the first probe).
    #[arg(long = "lr", default_value_t = 2e-3)]
    pub learning_rate: f64,
    /// Steps of linear warm-up; a cosine decay to a tenth follows over the rest.
    #[arg(long, default_value_t = 100)]
    pub warmup: u64,
    /// Decay of the moving average of the weights that sampling uses.
    #[arg(long, default_value_t = 0.999)]
    pub ema: f64,
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Steps between evaluations (each also checkpoints the run).
    #[arg(long, default_value_t = 500)]
    pub eval_steps: u64,
    /// Held-out scenes scored (two shots each).
    #[arg(long, default_value_t = 56)]
    pub eval_scenes: u64,
    /// Weight of the character's pixels in the loss (1: none).
    #[arg(long, default_value_t = 5.0)]
    pub character_weight: f32,
    /// Share of samples trained with the empty prompt (for guidance).
    #[arg(long, default_value_t = 0.1)]
    pub drop_prompt: f64,
    /// Chance that each look is left out of a caption (guidance per attribute).
    #[arg(long, default_value_t = 0.05)]
    pub drop_attribute: f64,
    #[arg(long, default_value_t = 3.0)]
    pub cfg: f64,
    #[arg(long, default_value_t = 20)]
    pub sample_steps: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// A single frame's prompt as the scene stages and the nodes give it: the global prompt (looks
/// and environment) and the shot's own, two windows of the cross-attention.
fn caption(spec: &SceneSpec, shot: usize) -> Result<[String; 2]> {
    caption_omitting(spec, shot, &[])
}

/// [`caption`] without the words of the `omitted` looks.
fn caption_omitting(spec: &SceneSpec, shot: usize, omitted: &[Attribute]) -> Result<[String; 2]> {
    Ok([
        global_prompt_omitting(spec, omitted),
        shot_prompt(spec, shot)?,
    ])
}

/// The empty prompt in both windows: what guidance runs against.
fn empty_caption() -> [String; 2] {
    [String::new(), String::new()]
}

/// Captions of many scenes of both splits (the vocabulary and the longest prompt are read
/// from them).
fn sample_captions() -> Result<Vec<String>> {
    // The reference images' prompts (scene stages) share the vocabulary.
    let mut captions = vec![
        identity_reference_prompt().to_owned(),
        environment_reference_prompt().to_owned(),
    ];
    // Shot numbers up to ten (the evaluation's long rollout), past the world's longest scene.
    let mut long = sample_scene(0, Split::Train);
    long.shots = vec![long.shots[0]; 10];
    for shot in 0..long.shots.len() {
        captions.push(shot_prompt(&long, shot)?);
    }
    for seed in 0..3000 {
        for split in [Split::Train, Split::HeldOut] {
            let spec = sample_scene(seed, split);
            for shot in 0..spec.shots.len() {
                captions.push(caption(&spec, shot)?.join(" "));
            }
        }
    }
    Ok(captions)
}

/// The tokens the word-level tokenizer makes of `text` (lowercased runs of word characters,
/// and runs of other non-space characters).
fn caption_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut word_kind = None;
    for c in text.to_lowercase().chars().chain([' ']) {
        let kind = if c.is_whitespace() {
            None
        } else {
            Some(c.is_alphanumeric() || c == '_')
        };
        if kind != word_kind && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        if kind.is_some() {
            word.push(c);
        }
        word_kind = kind;
    }
    words
}

/// The tokenizer files and a small umT5 with fixed random weights (seed 1, the same every
/// run); prompts pad to the longest caption's tokens and its end mark, rounded up to 8.
fn text_encoder(folder: &Path) -> Result<WanTextEncoder> {
    let captions = sample_captions()?;
    let mut words = BTreeSet::new();
    let mut longest = 0;
    for text in &captions {
        let caption = caption_words(text);
        longest = longest.max(caption.len());
        words.extend(caption);
    }
    let text_tokens = (longest + 1).next_multiple_of(8);
    let word_refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let tokenizer_folder = folder.join("tokenizer");
    std::fs::create_dir_all(&tokenizer_folder)?;
    std::fs::write(
        tokenizer_folder.join("tokenizer.json"),
        word_level_tokenizer_json(&word_refs),
    )?;
    std::fs::write(
        tokenizer_folder.join("tokenizer_config.json"),
        serde_json::json!({ CLOSED_VOCABULARY_FIELD: true }).to_string(),
    )?;
    let tokenizer = WanTokenizer::load(&tokenizer_folder.join("tokenizer.json"), text_tokens)?;
    let config = UmT5Config {
        vocab_size: words.len() + 3,
        d_model: 64,
        d_kv: 16,
        d_ff: 128,
        num_layers: 2,
        num_heads: 4,
        ..UmT5Config::default()
    };
    let vars = VarMap::new();
    let encoder = UmT5Encoder::new(
        &config,
        VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
    )?;
    lct_model::weights::seeded_init(&vars, 1)?;
    write_checkpoint_files(folder, &config, &vars, text_tokens)?;
    Ok(WanTextEncoder {
        tokenizer,
        encoder,
        output_dtype: DType::F32,
    })
}

/// Everything of the run's folder, beside the transformer, that makes it a Wan checkpoint in
/// the diffusers layout: the text encoder's config and weights, pixel space for the VAE, the
/// pipeline index, the scheduler (no shift) and `lct.json` (prompt length, frame size).
fn write_checkpoint_files(
    folder: &Path,
    config: &UmT5Config,
    vars: &VarMap,
    text_tokens: usize,
) -> Result<()> {
    let write_json = |relative: &str, value: serde_json::Value| -> Result<()> {
        let path = folder.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&value)? + "\n")?;
        Ok(())
    };
    let mut encoder_config = serde_json::to_value(config)?;
    encoder_config["_class_name"] = "UMT5EncoderModel".into();
    write_json("text_encoder/config.json", encoder_config)?;
    vars.save(folder.join("text_encoder/model.safetensors"))?;
    write_json(
        "vae/config.json",
        serde_json::json!({ "_class_name": PIXEL_SPACE_CLASS, "channels": 3 }),
    )?;
    write_json(
        "scheduler/scheduler_config.json",
        serde_json::json!({ "_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 1.0 }),
    )?;
    write_json(
        "model_index.json",
        serde_json::json!({
            "_class_name": "WanPipeline",
            "transformer": ["diffusers", "WanTransformer3DModel"],
            "text_encoder": ["transformers", "UMT5EncoderModel"],
            "tokenizer": ["tokenizers", "WordLevel"],
            "vae": ["lct", PIXEL_SPACE_CLASS],
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        }),
    )?;
    write_json(
        LCT_MARKER,
        serde_json::json!({
            "text_tokens": text_tokens,
            "frame_size": [FRAME, FRAME],
            "attention": "bidirectional",
        }),
    )
}

/// The transformer: width 192, 6 blocks, 8x8-pixel patches of RGB, prompt modulation, the
/// clean frame predicted.
fn transformer_config() -> WanTransformerConfig {
    WanTransformerConfig {
        patch_size: [1, 8, 8],
        num_attention_heads: 3,
        attention_head_dim: 64,
        in_channels: 3,
        out_channels: Some(3),
        text_dim: 64,
        ffn_dim: 768,
        num_layers: 6,
        rope_max_seq_len: 64,
        prompt_modulation: true,
        prompt_queries: 8,
        prediction: WanPrediction::Sample,
        ..WanTransformerConfig::default()
    }
}

/// Embedded prompts `[1, tokens, dim]`, computed once each (the encoder is frozen); shared by
/// every stage.
pub(crate) struct Captions {
    pub(crate) encoder: WanTextEncoder,
    pub(crate) cache: HashMap<String, Tensor>,
}

impl Captions {
    pub(crate) fn embed(&mut self, text: &str) -> Result<Tensor> {
        if let Some(found) = self.cache.get(text) {
            return Ok(found.clone());
        }
        // Detached: the encoder's weights are variables, and a kept embedding would keep its
        // whole forward graph alive (gigabytes over tens of thousands of captions).
        let embedded = self.encoder.encode(text)?.unsqueeze(0)?.detach();
        self.cache.insert(text.to_owned(), embedded.clone());
        Ok(embedded)
    }

    /// A global prompt and a shot prompt, each embedded alone and read side by side
    /// (`[1, 2 * tokens, dim]`), as one shot of a scene reads them.
    pub(crate) fn embed_pair(&mut self, [global, shot]: &[String; 2]) -> Result<Tensor> {
        Ok(Tensor::cat(&[self.embed(global)?, self.embed(shot)?], 1)?)
    }
}

/// A rendered training frame: pixels `[1, 3, 1, 64, 64]` in -1..1, loss weights `[1, 1, 1,
/// 64, 64]`, and the scene and shot it shows (its caption's source).
struct TrainingFrame {
    pixels: Tensor,
    weights: Tensor,
    spec: SceneSpec,
    shot: usize,
}

fn training_frame(stage: &ImageStage, seed: u64) -> Result<TrainingFrame> {
    let mut rng = SplitMix64::stream(seed, 0x1a6e);
    let spec = sample_scene(seed, Split::Train);
    let shot = (rng.next_u64() % spec.shots.len() as u64) as usize;
    let clip = render_shot(&spec, shot)?;
    let middle = clip.frames.len() / 2;
    let frame = frames_tensor(&clip.frames[middle..middle + 1])?; // [1, 3, H, W] in 0..1
    let pixels = ((frame * 2.0)? - 1.0)?
        .permute((1, 0, 2, 3))?
        .unsqueeze(0)?;
    let coverage = character_coverage(&spec, shot, 1)?.narrow(0, middle, 1)?; // [1, H, W]
    let weight = ((coverage * (stage.character_weight as f64 - 1.0))? + 1.0)?
        .unsqueeze(0)?
        .unsqueeze(0)?;
    Ok(TrainingFrame {
        pixels,
        weights: weight,
        spec,
        shot,
    })
}

/// `stage.pool` training frames, rendered on the workers' threads.
fn render_pool(stage: &ImageStage) -> Result<Vec<TrainingFrame>> {
    let seeds: Vec<u64> = (0..stage.pool as u64)
        .map(|i| stage.seed.wrapping_mul(1_000_003) + i)
        .collect();
    let chunks = lct_model::train::map_chunks(
        &seeds,
        stage.workers,
        |chunk| {
            chunk
                .iter()
                .map(|&seed| training_frame(stage, seed).map_err(|e| e.to_string()))
                .collect::<std::result::Result<Vec<_>, String>>()
        },
        || "a rendering thread panicked".to_owned(),
    )?;
    Ok(chunks.into_iter().flatten().collect())
}

/// Colour, shape and framing read back from generated held-out shots: hits out of `shots`.
struct Score {
    shots: usize,
    colour: usize,
    shape: usize,
    framing: usize,
}

/// Samples every held-out shot (Euler, `sample_steps`, guidance `cfg` against the empty
/// prompt), reads it with the world's detectors, and writes the frames as a contact sheet
/// (`sheet`, 14 a row, in the order of the held-out scenes' first and second shots).
fn evaluate(
    stage: &ImageStage,
    model: &WanTransformer,
    captions: &mut Captions,
    sheet: &Path,
) -> Result<Score> {
    let mut shots = Vec::new();
    for index in 0..stage.eval_scenes {
        let spec = held_out_scene(index, 2);
        for shot in 0..2 {
            shots.push((spec.clone(), shot));
        }
    }
    let count = shots.len();
    let text = Tensor::cat(
        &shots
            .iter()
            .map(|(spec, shot)| captions.embed_pair(&caption(spec, *shot)?))
            .collect::<Result<Vec<_>>>()?,
        0,
    )?;
    let empty = captions
        .embed_pair(&empty_caption())?
        .repeat((count, 1, 1))?;
    let mut x = gaussian(
        stage.seed ^ 0xe7a1,
        0,
        &[count, 3, 1, FRAME, FRAME],
        &Device::Cpu,
    )?;
    for step in 0..stage.sample_steps {
        let t = 1.0 - step as f64 / stage.sample_steps as f64;
        let dt = 1.0 / stage.sample_steps as f64;
        let timesteps = Tensor::full((t * 1000.0) as f32, count, &Device::Cpu)?;
        let x_detached = x.detach();
        let conditional = model
            .forward(&x_detached, WanTimestep::PerSample(&timesteps), &text)?
            .detach();
        let unconditional = model
            .forward(&x_detached, WanTimestep::PerSample(&timesteps), &empty)?
            .detach();
        let velocity = (&unconditional + ((conditional - &unconditional)? * stage.cfg)?)?;
        x = (x_detached - (velocity * dt)?)?;
    }
    let frames = ((x.clamp(-1f32, 1f32)? + 1.0)? * 0.5)?.squeeze(2)?; // [count, 3, H, W]
    let frames = tensor_frames(&frames)?;
    let rows: Vec<Vec<lct_world::Frame>> = frames.chunks(14).map(<[_]>::to_vec).collect();
    lct_world::contact_sheet(&rows, 2).save(sheet)?;
    let mut score = Score {
        shots: count,
        colour: 0,
        shape: 0,
        framing: 0,
    };
    for ((spec, shot), frame) in shots.iter().zip(&frames) {
        if let Some(reading) = detect_character(frame) {
            score.colour += (reading.colour == spec.character.colour) as usize;
            score.shape += (reading.shape == spec.character.shape) as usize;
            score.framing += (reading.framing == spec.shots[*shot]) as usize;
        }
    }
    Ok(score)
}

/// Where a run stands, saved with each checkpoint.
#[derive(serde::Serialize, serde::Deserialize)]
struct Progress {
    step: u64,
    frames_seen: u64,
    /// Training minutes of the earlier pieces.
    minutes: f64,
}

const PROGRESS_FILE: &str = "progress.json";

/// Trains until `stage.steps` or for `stage.minutes` (whichever comes first), evaluating and
/// checkpointing every `stage.eval_steps`; resumes from `stage.out` when it holds a
/// checkpoint. Appends to `out/log.tsv` (minutes, frames seen, learning rate, loss, colour,
/// shape, framing).
pub fn run(stage: &ImageStage) -> Result<()> {
    let out = stage.out.as_path();
    std::fs::create_dir_all(out)?;
    let mut captions = Captions {
        encoder: text_encoder(out)?,
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
        attention: AttentionMask::Bidirectional,
        shift: 1.0,
    };
    let progress_path = out.join(PROGRESS_FILE);
    let (mut trainer, mut progress) = if progress_path.is_file() {
        let progress: Progress = serde_json::from_str(&std::fs::read_to_string(&progress_path)?)?;
        let trainer = WanTrainer::resume(out, train, &Device::Cpu)?;
        println!(
            "resuming at step {} ({} frames, {:.1} min)",
            progress.step, progress.frames_seen, progress.minutes
        );
        (trainer, progress)
    } else {
        let trainer = WanTrainer::fresh(&transformer_config(), train, stage.seed, &Device::Cpu)?;
        std::fs::write(
            out.join("log.tsv"),
            "minutes\tframes\tlr\tloss\tcolour\tshape\tframing\n",
        )?;
        let progress = Progress {
            step: 0,
            frames_seen: 0,
            minutes: 0.0,
        };
        (trainer, progress)
    };
    if progress.step >= stage.steps {
        println!("{}: finished ({} steps)", out.display(), progress.step);
        return Ok(());
    }
    trainer.set_workers(stage.workers);
    println!(
        "images stage: {:.2}M parameters, batch {}, {} workers",
        trainer.parameter_count() as f64 / 1e6,
        stage.batch,
        stage.workers
    );
    let rendering = Instant::now();
    let pool = render_pool(stage)?;
    for frame in &pool {
        captions.embed_pair(&caption(&frame.spec, frame.shot)?)?;
    }
    println!(
        "{} training frames rendered in {:.0} s",
        pool.len(),
        rendering.elapsed().as_secs_f64()
    );
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
            let sheet = out.join(format!("held-out-{:07}.png", progress.frames_seen));
            let score = trainer
                .with_sampling_model(|model| evaluate(stage, model, &mut captions, &sheet))??;
            let loss = if recent_loss.is_empty() {
                f32::NAN
            } else {
                recent_loss.iter().sum::<f32>() / recent_loss.len() as f32
            };
            recent_loss.clear();
            let rate = |hits: usize| hits as f64 / score.shots as f64;
            let lr = trainer
                .optimiser()
                .config()
                .learning_rate_at(progress.step.max(1));
            println!(
                "{:6.1} min  step {:5}  {:7} frames  lr {lr:.1e}  loss {loss:.4}  held-out colour {:.2} shape {:.2} framing {:.2} ({} shots)",
                progress.minutes,
                progress.step,
                progress.frames_seen,
                rate(score.colour),
                rate(score.shape),
                rate(score.framing),
                score.shots
            );
            writeln!(
                log,
                "{:.1}\t{}\t{lr:.2e}\t{loss:.4}\t{:.3}\t{:.3}\t{:.3}",
                progress.minutes,
                progress.frames_seen,
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
        let mut latents = Vec::with_capacity(stage.batch);
        let mut weights = Vec::with_capacity(stage.batch);
        let mut texts = Vec::with_capacity(stage.batch);
        let mut draw = SplitMix64::stream(stage.seed, 0xba7c + step);
        for _ in 0..stage.batch {
            let frame = &pool[draw.below(pool.len())];
            latents.push(frame.pixels.clone());
            weights.push(frame.weights.clone());
            // For guidance at sampling: now and then the empty prompt, and each look left out
            // of the caption now and then.
            let text = if draw.uniform() < stage.drop_prompt {
                empty_caption()
            } else {
                let omitted: Vec<Attribute> = Attribute::ALL
                    .into_iter()
                    .filter(|_| draw.uniform() < stage.drop_attribute)
                    .collect();
                caption_omitting(&frame.spec, frame.shot, &omitted)?
            };
            texts.push(captions.embed_pair(&text)?);
        }
        let batch = WanBatch {
            latents: Tensor::cat(&latents, 0)?,
            text: Tensor::cat(&texts, 0)?,
            weights: Some(Tensor::cat(&weights, 0)?),
        };
        let mut rng = SplitMix64::stream(stage.seed, 0x71e5 + step);
        let times: Vec<f32> = (0..stage.batch).map(|_| rng.uniform() as f32).collect();
        recent_loss.push(trainer.batch_step(&batch, &times, stage.seed + step)?);
        progress.step += 1;
        progress.frames_seen += stage.batch as u64;
    }
}
