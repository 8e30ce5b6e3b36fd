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
use lct_model::wan::umt5::{word_level_tokenizer_json, CLOSED_VOCABULARY_FIELD};
use lct_model::wan::{
    UmT5Config, UmT5Encoder, WanBatch, WanTextEncoder, WanTimestep, WanTokenizer, WanTrainConfig,
    WanTrainer, WanTransformerConfig,
};
use lct_model::AttentionMask;
use lct_world::{
    detect_character, global_prompt, render_shot, sample_scene, shot_prompt, CaptionMode,
    SceneSpec, Split,
};

use crate::data::{character_coverage, frames_tensor, held_out_scene, tensor_frames, Result};

/// Prompt tokens the text encoder pads to (a caption is about 45 words and marks).
const TEXT_TOKENS: usize = 64;
const FRAME: usize = 64;

/// Settings of one run.
pub struct ImageStage {
    pub minutes: f64,
    /// Training frames rendered up front (in parallel); batches are drawn from them.
    pub pool: usize,
    pub batch: usize,
    pub learning_rate: f64,
    pub workers: usize,
    /// Minutes between evaluations.
    pub eval_minutes: f64,
    /// Held-out scenes scored (two shots each).
    pub eval_scenes: u64,
    /// Weight of the character's pixels in the loss (1: none).
    pub character_weight: f32,
    /// Share of samples trained with the empty prompt (for guidance).
    pub drop_prompt: f64,
    pub cfg: f64,
    pub sample_steps: usize,
    pub seed: u64,
}

/// A single frame's caption: the looks and environment (global prompt) and the shot's own.
fn caption(spec: &SceneSpec, shot: usize) -> Result<String> {
    Ok(format!(
        "{} {}",
        global_prompt(spec, CaptionMode::GlobalLooks),
        shot_prompt(spec, shot)?
    ))
}

/// The tokens the word-level tokenizer makes (lowercased runs of word characters, and runs
/// of other non-space characters), over the captions of many scenes of both splits.
fn caption_vocabulary() -> Result<Vec<String>> {
    let mut words = BTreeSet::new();
    for seed in 0..3000 {
        for split in [Split::Train, Split::HeldOut] {
            let spec = sample_scene(seed, split);
            for shot in 0..spec.shots.len() {
                let text = caption(&spec, shot)?.to_lowercase();
                let mut word = String::new();
                let mut word_kind = None;
                for c in text.chars().chain([' ']) {
                    let kind = if c.is_whitespace() {
                        None
                    } else {
                        Some(c.is_alphanumeric() || c == '_')
                    };
                    if kind != word_kind && !word.is_empty() {
                        words.insert(std::mem::take(&mut word));
                    }
                    if kind.is_some() {
                        word.push(c);
                    }
                    word_kind = kind;
                }
            }
        }
    }
    Ok(words.into_iter().collect())
}

/// The tokenizer files and a small umT5 with fixed random weights (seed 1, the same every run).
fn text_encoder(folder: &Path) -> Result<WanTextEncoder> {
    let words = caption_vocabulary()?;
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
    let tokenizer = WanTokenizer::load(&tokenizer_folder.join("tokenizer.json"), TEXT_TOKENS)?;
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
    Ok(WanTextEncoder {
        tokenizer,
        encoder,
        output_dtype: DType::F32,
    })
}

/// The transformer: width 192, 6 blocks, 8x8-pixel patches of RGB, prompt modulation.
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
        ..WanTransformerConfig::default()
    }
}

/// Embedded captions, computed once each (the encoder is fixed).
struct Captions {
    encoder: WanTextEncoder,
    cache: HashMap<String, Tensor>,
}

impl Captions {
    fn embed(&mut self, text: &str) -> Result<Tensor> {
        if let Some(found) = self.cache.get(text) {
            return Ok(found.clone());
        }
        let embedded = self.encoder.encode(text)?.unsqueeze(0)?;
        self.cache.insert(text.to_owned(), embedded.clone());
        Ok(embedded)
    }
}

/// One training frame: pixels `[1, 3, 1, 64, 64]` in -1..1, loss weights `[1, 1, 1, 64, 64]`,
/// and its caption.
fn training_frame(stage: &ImageStage, seed: u64) -> Result<(Tensor, Tensor, String)> {
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
    Ok((pixels, weight, caption(&spec, shot)?))
}

/// `stage.pool` training frames, rendered on the workers' threads.
fn render_pool(stage: &ImageStage) -> Result<Vec<(Tensor, Tensor, String)>> {
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
    trainer: &WanTrainer,
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
            .map(|(spec, shot)| captions.embed(&caption(spec, *shot)?))
            .collect::<Result<Vec<_>>>()?,
        0,
    )?;
    let empty = captions.embed("")?.repeat((count, 1, 1))?;
    let mut x = gaussian(
        stage.seed ^ 0xe7a1,
        0,
        &[count, 3, 1, FRAME, FRAME],
        &Device::Cpu,
    )?;
    let model = trainer.model();
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

/// Trains for `stage.minutes`, evaluating every `stage.eval_minutes`; writes `out/log.tsv`
/// (minutes, frames seen, loss, colour, shape, framing) and the transformer at the end.
pub fn run(stage: &ImageStage, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let mut captions = Captions {
        encoder: text_encoder(out)?,
        cache: HashMap::new(),
    };
    let train = WanTrainConfig {
        learning_rate: stage.learning_rate,
        weight_decay: 0.0,
        attention: AttentionMask::Bidirectional,
        shift: 1.0,
    };
    let mut trainer = WanTrainer::fresh(&transformer_config(), train, stage.seed, &Device::Cpu)?;
    trainer.set_workers(stage.workers);
    println!(
        "images stage: {:.2}M parameters, batch {}, {} workers",
        trainer.parameter_count() as f64 / 1e6,
        stage.batch,
        stage.workers
    );
    let rendering = Instant::now();
    let pool = render_pool(stage)?;
    for (_, _, text) in &pool {
        captions.embed(text)?;
    }
    println!(
        "{} training frames rendered in {:.0} s",
        pool.len(),
        rendering.elapsed().as_secs_f64()
    );
    let mut log = std::fs::File::create(out.join("log.tsv"))?;
    writeln!(log, "minutes\tframes\tloss\tcolour\tshape\tframing")?;
    let started = Instant::now();
    let mut next_eval = 0.0;
    let (mut step, mut frames_seen, mut recent_loss) = (0u64, 0u64, Vec::new());
    loop {
        let minutes = started.elapsed().as_secs_f64() / 60.0;
        if minutes >= next_eval || minutes >= stage.minutes {
            let sheet = out.join(format!("held-out-{frames_seen:07}.png"));
            let score = evaluate(stage, &trainer, &mut captions, &sheet)?;
            let loss = recent_loss.iter().sum::<f32>() / recent_loss.len().max(1) as f32;
            let loss = if recent_loss.is_empty() {
                f32::NAN
            } else {
                loss
            };
            recent_loss.clear();
            let rate = |hits: usize| hits as f64 / score.shots as f64;
            println!(
                "{minutes:6.1} min  {frames_seen:7} frames  loss {loss:.4}  held-out colour {:.2} shape {:.2} framing {:.2} ({} shots)",
                rate(score.colour),
                rate(score.shape),
                rate(score.framing),
                score.shots
            );
            writeln!(
                log,
                "{minutes:.1}\t{frames_seen}\t{loss:.4}\t{:.3}\t{:.3}\t{:.3}",
                rate(score.colour),
                rate(score.shape),
                rate(score.framing)
            )?;
            log.flush()?;
            trainer.save_transformer(out)?;
            if minutes >= stage.minutes {
                return Ok(());
            }
            next_eval = minutes + stage.eval_minutes;
        }
        let mut latents = Vec::with_capacity(stage.batch);
        let mut weights = Vec::with_capacity(stage.batch);
        let mut texts = Vec::with_capacity(stage.batch);
        let mut draw = SplitMix64::stream(stage.seed, 0xba7c + step);
        for _ in 0..stage.batch {
            let (pixels, weight, text) = &pool[draw.below(pool.len())];
            latents.push(pixels.clone());
            weights.push(weight.clone());
            // The empty prompt now and then, for guidance at sampling.
            let text = if draw.uniform() < stage.drop_prompt {
                ""
            } else {
                text
            };
            texts.push(captions.embed(text)?);
        }
        let batch = WanBatch {
            latents: Tensor::cat(&latents, 0)?,
            text: Tensor::cat(&texts, 0)?,
            weights: Some(Tensor::cat(&weights, 0)?),
        };
        let mut rng = SplitMix64::stream(stage.seed, 0x71e5 + step);
        let times: Vec<f32> = (0..stage.batch).map(|_| rng.uniform() as f32).collect();
        recent_loss.push(trainer.batch_step(&batch, &times, stage.seed + step)?);
        step += 1;
        frames_seen += stage.batch as u64;
    }
}
