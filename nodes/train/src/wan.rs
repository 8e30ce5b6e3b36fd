//! `lct-train wan`: LCT-tunes a Wan checkpoint on a folder of the user's scenes.
//!
//! ```text
//! scenes/
//!   park/scene.json     {"global_prompt": "...", "shots": [{"prompt": "...", "frames": "shot1"}, ...]}
//!   park/shot1/0001.png ...   (1 + 4k frames per shot, all of one size)
//! ```
//! Every transformer weight is tuned (full fine-tuning; the VAE and umT5 only encode the data,
//! once, before the first step). The output is a complete checkpoint folder in the diffusers
//! layout: the tuned transformer, the other components hard-linked (or copied) from the
//! source, and `lct.json` naming the attention mask it was tuned for, which LoadModel reads.
//! A run whose `--out` already holds this source's tuning continues from its weights (the
//! optimiser's moments restart).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use lct_model::wan::{
    WanPipeline, WanTrainConfig, WanTrainer, WanTrainingScene, WanTrainingShot, LCT_MARKER,
};
use lct_model::AttentionMask;
use serde::Deserialize;

use crate::data::Result;

#[derive(Deserialize)]
struct SceneFile {
    global_prompt: String,
    shots: Vec<ShotFile>,
}

#[derive(Deserialize)]
struct ShotFile {
    prompt: String,
    /// A folder of frames (PNG, JPEG), relative to the scene's folder, in name order.
    frames: String,
}

pub struct WanTuning<'a> {
    pub checkpoint: &'a Path,
    pub scenes: &'a Path,
    pub out: &'a Path,
    pub steps: usize,
    pub learning_rate: f64,
    pub attention: AttentionMask,
    pub seed: u64,
    pub save_every: usize,
    pub device: Device,
}

/// Frames of one shot as `[T, 3, H, W]` in 0..1.
fn read_frames(folder: &Path) -> Result<Tensor> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .map_err(|e| format!("{}: {e}", folder.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("{}: no PNG or JPEG frames", folder.display()).into());
    }
    let mut size = None;
    let mut samples = Vec::new();
    for file in &files {
        let image = image::open(file)
            .map_err(|e| format!("{}: {e}", file.display()))?
            .to_rgb8();
        let dims = image.dimensions();
        if *size.get_or_insert(dims) != dims {
            return Err(format!(
                "{}: {}x{} where the shot's first frame is {}x{}",
                file.display(),
                dims.0,
                dims.1,
                size.unwrap().0,
                size.unwrap().1
            )
            .into());
        }
        // Interleaved RGB -> planar.
        let (w, h) = (dims.0 as usize, dims.1 as usize);
        let raw = image.into_raw();
        for c in 0..3 {
            samples.extend((0..w * h).map(|p| raw[p * 3 + c] as f32 / 255.0));
        }
    }
    let (w, h) = size.expect("one frame at least");
    Ok(Tensor::from_vec(
        samples,
        (files.len(), 3, h as usize, w as usize),
        &Device::Cpu,
    )?)
}

/// Every scene of `folder`, encoded by the checkpoint's VAE and text encoder.
fn encode_scenes(
    pipeline: &WanPipeline,
    folder: &Path,
    device: &Device,
) -> Result<Vec<WanTrainingScene>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(folder)
        .map_err(|e| format!("--scenes {}: {e}", folder.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("scene.json").is_file())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        return Err(format!("--scenes {}: no <scene>/scene.json here", folder.display()).into());
    }
    let mut scenes = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let path = dir.join("scene.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let spec: SceneFile =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if spec.shots.is_empty() {
            return Err(format!("{}: no shots", path.display()).into());
        }
        let encode_text = |prompt: &str| -> Result<Tensor> {
            Ok(pipeline
                .text
                .encode(prompt)?
                .unsqueeze(0)?
                .to_device(device)?)
        };
        let mut shots = Vec::with_capacity(spec.shots.len());
        for (i, shot) in spec.shots.iter().enumerate() {
            let frames = read_frames(&dir.join(&shot.frames))?;
            let latents = pipeline
                .encode_frames(&frames)
                .map_err(|e| format!("{} shot {} ({}): {e}", path.display(), i + 1, shot.frames))?;
            shots.push(WanTrainingShot::new(
                latents.to_device(device)?,
                encode_text(&shot.prompt)?,
            ));
        }
        scenes.push(WanTrainingScene {
            global_text: encode_text(&spec.global_prompt)?,
            shots,
        });
    }
    Ok(scenes)
}

/// Hard-links `from` to `to`, copying where links cannot be made (another file system).
fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            link_or_copy(&entry.path(), &to.join(entry.file_name()))?;
        }
        return Ok(());
    }
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)
            .map_err(|e| format!("{} -> {}: {e}", from.display(), to.display()))?;
    }
    Ok(())
}

fn marker(tuning: &WanTuning, steps: usize) -> serde_json::Value {
    serde_json::json!({
        "attention": match tuning.attention {
            AttentionMask::Bidirectional => "bidirectional",
            AttentionMask::ContextCausal => "context_causal",
        },
        "tuned_from": tuning.checkpoint.display().to_string(),
        "steps": steps,
        "recipe": "lct-train wan: full fine-tune, one flow time per shot",
    })
}

/// Steps already taken by an earlier run of this tuning in `out` (0: a fresh run).
fn resume_point(tuning: &WanTuning) -> Result<usize> {
    let out = tuning.out;
    let has_files = out.is_dir() && std::fs::read_dir(out)?.next().is_some();
    if !has_files {
        return Ok(0);
    }
    let marker_path = out.join(LCT_MARKER);
    let previous: serde_json::Value = std::fs::read_to_string(&marker_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(|| {
            format!(
                "--out {} holds files that are not an lct-train wan run; give a new folder (nothing is overwritten)",
                out.display()
            )
        })?;
    if previous["tuned_from"].as_str() != Some(&tuning.checkpoint.display().to_string()) {
        return Err(format!(
            "--out {} holds a tuning of {}, not of {}",
            out.display(),
            previous["tuned_from"],
            tuning.checkpoint.display()
        )
        .into());
    }
    Ok(previous["steps"].as_u64().unwrap_or(0) as usize)
}

pub fn tune(tuning: &WanTuning) -> Result<()> {
    let started = Instant::now();
    let done = resume_point(tuning)?;
    // The frozen parts encode the data on the CPU, once.
    let pipeline = WanPipeline::load(tuning.checkpoint, candle_core::DType::F32, &Device::Cpu)?;
    let scenes = encode_scenes(&pipeline, tuning.scenes, &tuning.device)?;
    let shots: usize = scenes.iter().map(|s| s.shots.len()).sum();
    println!(
        "{} scene(s), {shots} shot(s) encoded in {:.1} s",
        scenes.len(),
        started.elapsed().as_secs_f64()
    );
    let cfg = WanTrainConfig {
        optim: lct_model::optim::OptimConfig {
            learning_rate: tuning.learning_rate,
            grad_clip: 0.0,
            ..Default::default()
        },
        attention: tuning.attention,
        shift: pipeline.shift,
    };
    let source = if done > 0 {
        tuning.out
    } else {
        tuning.checkpoint
    };
    let mut trainer = WanTrainer::from_checkpoint(source, cfg, &tuning.device)?;
    if done == 0 {
        std::fs::create_dir_all(tuning.out)?;
        for part in [
            "vae",
            "text_encoder",
            "tokenizer",
            "scheduler",
            "model_index.json",
        ] {
            let from = tuning.checkpoint.join(part);
            if from.exists() {
                link_or_copy(&from, &tuning.out.join(part))?;
            }
        }
    } else {
        println!("continuing {} from step {done}", tuning.out.display());
    }
    // A fixed probe: every scene at fixed times and noise, before and after.
    let probe = |trainer: &WanTrainer| -> Result<f32> {
        let mut total = 0.0;
        for (i, scene) in scenes.iter().enumerate() {
            let seed = 1_000_000 + i as u64;
            let draws = trainer.draw_trained(scene.shots.len(), seed);
            total += trainer.loss(scene, &draws, seed)?.to_scalar::<f32>()?;
        }
        Ok(total / scenes.len() as f32)
    };
    let before = probe(&trainer)?;
    let save = |trainer: &WanTrainer, steps: usize| -> Result<()> {
        trainer.save_transformer(tuning.out)?;
        let text = serde_json::to_string_pretty(&marker(tuning, steps))?;
        std::fs::write(tuning.out.join(LCT_MARKER), text)?;
        Ok(())
    };
    let mut recent = Vec::new();
    for step in done..tuning.steps {
        let scene = &scenes[step % scenes.len()];
        let seed = tuning
            .seed
            .wrapping_mul(0x9E37_79B9)
            .wrapping_add(step as u64);
        recent.push(trainer.step(scene, seed)?);
        if (step + 1) % 10 == 0 || step + 1 == tuning.steps {
            let mean = recent.iter().sum::<f32>() / recent.len() as f32;
            println!(
                "step {:>6}/{}  loss {mean:.4}  {:.1} s",
                step + 1,
                tuning.steps,
                started.elapsed().as_secs_f64()
            );
            recent.clear();
        }
        if tuning.save_every > 0 && (step + 1) % tuning.save_every == 0 {
            save(&trainer, step + 1)?;
        }
    }
    save(&trainer, tuning.steps.max(done))?;
    let after = probe(&trainer)?;
    println!("probe loss (fixed times and noise): before {before:.4} after {after:.4}");
    println!("wrote {}", tuning.out.display());
    Ok(())
}
