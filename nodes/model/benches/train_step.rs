//! Training-step benchmark: one LCT step (forward, backward, clip, AdamW) of `Trainer::step`
//! at the embedded model's size and at twice its width, beside the plain f32 matmul and, when
//! a Python with PyTorch is named, the same-shaped PyTorch step, all in this one run.
//!
//! ```text
//! cargo bench -p lct-model --bench train_step                       # lct alone
//! LCT_TORCH_PYTHON=/path/to/python cargo bench -p lct-model --bench train_step   # side by side
//! cargo bench -p lct-model --bench train_step -- --quick            # fewer repetitions
//! cargo bench -p lct-model --bench train_step -- --only wider       # the rows whose name has it
//! ```
//! The PyTorch step is `benches/train_step_torch.py`, run with the same shapes. Data are
//! random latents and text embeddings: what is timed is the step, not building a batch.

use candle_core::{Device, Tensor};
use lct_model::noise::gaussian;
use lct_model::{AttentionMask, Config, TrainConfig, Trainer, TrainingScene, TrainingShot};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The embedded model's transformer (its checkpoint's `config.json`), `widen` times as wide
/// (heads and MLP alike, so the head size stays), bidirectional (the LCT stage), without its
/// text encoder and autoencoder: the bench feeds embeddings and latents directly.
fn config(widen: usize) -> Config {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/default/config.json");
    let embedded = Config::load(Path::new(path)).expect("the embedded model's config.json");
    Config {
        hidden_size: embedded.hidden_size * widen,
        num_heads: embedded.num_heads * widen,
        mlp_hidden_size: embedded.mlp_hidden_size * widen,
        attention: AttentionMask::Bidirectional,
        text_encoder: None,
        autoencoder: None,
        ..embedded
    }
}

/// The latent frame side of the embedded model (its autoencoder's frame over its patch).
fn latent_side() -> usize {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/default/config.json");
    let embedded = Config::load(Path::new(path)).expect("the embedded model's config.json");
    let autoencoder = embedded
        .autoencoder
        .expect("the embedded model has an autoencoder");
    autoencoder.frame_size[0] / autoencoder.patch
}

struct Case {
    name: &'static str,
    widen: usize,
    batch: usize,
    shots: usize,
    frames: usize,
}

fn randn(stream: u64, dims: &[usize]) -> Tensor {
    gaussian(11, stream, dims, &Device::Cpu).unwrap()
}

fn scenes(cfg: &Config, case: &Case) -> Vec<TrainingScene> {
    (0..case.batch as u64)
        .map(|s| TrainingScene {
            global_text: Some(randn(1000 * s, &[cfg.global_text_len, cfg.text_dim])),
            shots: (0..case.shots as u64)
                .map(|k| TrainingShot {
                    latent: randn(
                        1000 * s + 2 * k + 1,
                        &[
                            cfg.latent_channels,
                            case.frames,
                            latent_side(),
                            latent_side(),
                        ],
                    ),
                    text: randn(1000 * s + 2 * k + 2, &[cfg.shot_text_len, cfg.text_dim]),
                    weight: None,
                })
                .collect(),
        })
        .collect()
}

/// Tokens of one packed scene: global text plus its dummy video token, then each shot.
fn scene_tokens(cfg: &Config, case: &Case) -> usize {
    let per_frame = (latent_side() / cfg.patch_size).pow(2);
    cfg.global_text_len + 1 + case.shots * (cfg.shot_text_len + case.frames * per_frame)
}

/// Multiply-adds x2 of one step: forward (every linear layer plus QK^T and PV over the full
/// bidirectional scene) and backward at twice the forward.
fn step_flops(cfg: &Config, case: &Case) -> f64 {
    let (h, m) = (cfg.hidden_size as f64, cfg.mlp_hidden_size as f64);
    let tokens = scene_tokens(cfg, case) as f64;
    let per_layer = 2.0 * tokens * (4.0 * h * h + 2.0 * h * m) + 4.0 * tokens * tokens * h;
    let embed = 2.0 * tokens * (cfg.patch_dim() as f64 * 2.0 + cfg.text_dim as f64) * h;
    3.0 * case.batch as f64 * (cfg.depth as f64 * per_layer + embed)
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Median seconds of `reps` lct steps after two warm-up steps.
fn lct_step(case: &Case, reps: usize, workers: usize) -> f64 {
    let cfg = config(case.widen);
    let train = TrainConfig {
        single_frame_prob: 0.0,
        text_dropout_prob: 0.0,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&cfg, train, &Device::Cpu).unwrap();
    trainer.set_workers(workers).unwrap();
    let batch = scenes(&cfg, case);
    for _ in 0..2 {
        trainer.step(&batch).unwrap();
    }
    median(
        (0..reps)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(trainer.step(&batch).unwrap());
                start.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// Median seconds of the same-shaped PyTorch step, when `LCT_TORCH_PYTHON` names a Python
/// with torch; `Err` says why there is none.
fn torch_step(case: &Case, reps: usize) -> Result<f64, String> {
    let python = std::env::var("LCT_TORCH_PYTHON")
        .map_err(|_| "set LCT_TORCH_PYTHON to a Python with torch to run it".to_owned())?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/train_step_torch.py");
    let cfg = config(case.widen);
    let args = [
        ("batch", case.batch),
        ("shots", case.shots),
        ("frames", case.frames),
        ("width", cfg.hidden_size),
        ("layers", cfg.depth),
        ("heads", cfg.num_heads),
        ("mlp", cfg.mlp_hidden_size),
        ("channels", cfg.latent_channels),
        ("patch", cfg.patch_size),
        ("side", latent_side()),
        ("text-dim", cfg.text_dim),
        ("shot-text", cfg.shot_text_len),
        ("global-text", cfg.global_text_len),
        ("time-features", cfg.timestep_features),
        ("reps", reps),
    ]
    .into_iter()
    .flat_map(|(name, value)| [format!("--{name}"), value.to_string()]);
    let output = Command::new(&python)
        .arg(script)
        .args(args)
        .output()
        .map_err(|e| format!("{python}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "{python} {script} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    stdout
        .split_whitespace()
        .rev()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no `S s/step` in the torch output: {stdout}"))
}

/// GFLOP/s of a plain f32 matmul `[2048, 512] x [512, 2048]`, best of `reps`.
fn matmul_gflops(reps: usize) -> f64 {
    let a = randn(1, &[2048, 512]);
    let b = randn(2, &[512, 2048]);
    let best = (0..reps.max(3))
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(a.matmul(&b).unwrap());
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    2.0 * 2048.0 * 512.0 * 2048.0 / best / 1e9
}

fn main() {
    // As `lct-train` does: the step is measured as the recipe runs it.
    lct_model::keep_freed_pages();
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1));
    let reps = if quick { 3 } else { 10 };
    let threads = rayon::current_num_threads();
    // With one matrix thread, the trainer's data-parallel workers take the cores.
    let workers = if threads == 1 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        1
    };
    println!(
        "# lct-model training-step benchmark ({threads} matrix threads, {workers} workers{})",
        if quick { ", quick" } else { "" }
    );
    let cases = [
        Case {
            name: "embedded size, pre-training",
            widen: 1,
            batch: 4,
            shots: 1,
            frames: 4,
        },
        Case {
            name: "embedded size, LCT scenes",
            widen: 1,
            batch: 8,
            shots: 3,
            frames: 4,
        },
        Case {
            name: "2x wider, LCT scenes",
            widen: 2,
            batch: 8,
            shots: 3,
            frames: 4,
        },
    ];
    let peak = matmul_gflops(reps);
    println!("| step | tokens/scene | lct s/step | lct GFLOP/s | / matmul | PyTorch s/step | PyTorch / lct |");
    println!("|---|---|---|---|---|---|---|");
    let mut notes = Vec::new();
    for case in cases
        .iter()
        .filter(|c| only.is_none_or(|o| c.name.contains(o.as_str())))
    {
        let cfg = config(case.widen);
        let seconds = lct_step(case, reps, workers);
        let gflops = step_flops(&cfg, case) / seconds / 1e9;
        let (torch, ratio) = match torch_step(case, reps) {
            Ok(t) => (format!("{t:.3}"), format!("**{:.2}**", t / seconds)),
            Err(why) => {
                notes.push(why);
                ("-".to_owned(), "-".to_owned())
            }
        };
        println!(
            "| {}: width {}, batch {} x {} shot(s) x {} frames | {} | {seconds:.3} | {gflops:.1} | {:.2} | {torch} | {ratio} |",
            case.name,
            cfg.hidden_size,
            case.batch,
            case.shots,
            case.frames,
            scene_tokens(&cfg, case),
            gflops / peak
        );
    }
    println!("\nplain f32 matmul [2048, 512] x [512, 2048]: {peak:.1} GFLOP/s");
    notes.dedup();
    for note in notes {
        println!("PyTorch not run: {note}");
    }
}
