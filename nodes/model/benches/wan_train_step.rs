//! Training-step benchmark of a small pixel-space Wan transformer, the shape the embedded model
//! moves to (issue 38: width 192, 6 blocks, 8x8-pixel patches of 64x64 RGB frames, a batch of
//! 32 single frames, per-sample flow times): forward, mean squared velocity error, backward,
//! AdamW, as `WanTrainer::batch_step` runs it with one and with two workers, beside the same
//! step of diffusers' `WanTransformer3DModel` in PyTorch (two threads) when a Python with
//! diffusers is named, in this one run, on the same weights and inputs.
//!
//! ```text
//! cargo bench -p lct-model --bench wan_train_step                                # lct alone
//! LCT_TORCH_PYTHON=/path/to/python cargo bench -p lct-model --bench wan_train_step  # side by side
//! ```
//! With PyTorch, `benches/wan_train_step_diffusers.py` writes the weights and inputs, and the
//! bench also compares the first step's loss (before any update) with PyTorch's. The bench
//! sets `RAYON_NUM_THREADS=1` for itself: each worker computes on its own core.

#[path = "peer.rs"]
mod peer;

use std::time::Instant;

use candle_core::{Device, Tensor};
use lct_model::noise::gaussian;
use lct_model::wan::{WanBatch, WanTimestep, WanTrainConfig, WanTrainer, WanTransformerConfig};
use lct_model::AttentionMask;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const HEADS: usize = 3;
const HEAD_DIM: usize = 64;
const LAYERS: usize = 6;
const FFN: usize = 768;
const CHANNELS: usize = 3;
const SIDE: usize = 64;
const PATCH: usize = 8;
const BATCH: usize = 32;
const TEXT: usize = 24;
const TEXT_DIM: usize = 192;
const REPS: usize = 15;

fn config() -> WanTransformerConfig {
    WanTransformerConfig {
        patch_size: [1, PATCH, PATCH],
        num_attention_heads: HEADS,
        attention_head_dim: HEAD_DIM,
        in_channels: CHANNELS,
        out_channels: Some(CHANNELS),
        text_dim: TEXT_DIM,
        ffn_dim: FFN,
        num_layers: LAYERS,
        ..WanTransformerConfig::default()
    }
}

/// Multiply-adds x 2 of one forward pass over the batch: the projections, attention products
/// and FFN of every block, the text and patch embeddings and the output projection. A training
/// step is about three forward passes.
fn forward_flops() -> f64 {
    let d = (HEADS * HEAD_DIM) as f64;
    let n = ((SIDE / PATCH) * (SIDE / PATCH)) as f64;
    let m = TEXT as f64;
    let patch = (CHANNELS * PATCH * PATCH) as f64;
    let block = 2.0
        * (4.0 * n * d * d          // self-attention q, k, v, out
            + 2.0 * n * n * d       // self-attention scores and values
            + 2.0 * n * d * d       // cross-attention q, out
            + 2.0 * m * d * d       // cross-attention k, v (text tokens)
            + 2.0 * n * m * d       // cross-attention scores and values
            + 2.0 * n * d * FFN as f64);
    let embed = 2.0 * (m * (TEXT_DIM as f64 * d + d * d) + 2.0 * n * patch * d);
    BATCH as f64 * (LAYERS as f64 * block + embed)
}

/// Median and best of `values`.
fn median_and_best(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(|a, b| a.total_cmp(b));
    (values[values.len() / 2], values[0])
}

/// What the PyTorch side reported: median and best seconds per step, the first step's loss.
struct Torch {
    seconds: f64,
    best: f64,
    first_loss: f32,
}

/// Runs the PyTorch side into `dir`.
fn torch(dir: &std::path::Path) -> Result<Torch, String> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/wan_train_step_diffusers.py"
    );
    let stdout = peer::run(
        script,
        &[dir.as_os_str()],
        &[
            ("heads", HEADS),
            ("head-dim", HEAD_DIM),
            ("layers", LAYERS),
            ("ffn", FFN),
            ("channels", CHANNELS),
            ("side", SIDE),
            ("patch", PATCH),
            ("batch", BATCH),
            ("text", TEXT),
            ("text-dim", TEXT_DIM),
            ("reps", REPS),
        ],
    )?;
    if let Some(line) = stdout.lines().find(|l| l.starts_with("torch")) {
        println!("PyTorch: {line}");
    }
    Ok(Torch {
        seconds: peer::value(&stdout, "seconds ")?,
        best: peer::value(&stdout, "best ")?,
        first_loss: peer::value(&stdout, "loss0 ")? as f32,
    })
}

/// A trainer on the PyTorch side's weights (when it ran) or fresh random ones.
fn trainer(dir: &std::path::Path, torch_ran: bool, workers: usize) -> WanTrainer {
    let cfg = WanTrainConfig {
        optim: lct_model::optim::OptimConfig {
            learning_rate: 1e-4,
            grad_clip: 0.0,
            ..Default::default()
        },
        attention: AttentionMask::Bidirectional,
        shift: 1.0,
    };
    let mut trainer = if torch_ran {
        WanTrainer::from_checkpoint(dir, cfg, &Device::Cpu).expect("diffusers' weights")
    } else {
        WanTrainer::fresh(&config(), cfg, 0, &Device::Cpu).expect("random weights")
    };
    trainer.set_workers(workers);
    trainer
}

fn main() {
    // One matrix thread per worker, as `lct-train` runs (RAYON_NUM_THREADS=1): the two-worker
    // row uses both cores by samples; read by candle at every matrix product.
    std::env::set_var("RAYON_NUM_THREADS", "1");
    // As the trainers run: freed activations are kept, not returned to the OS each step.
    lct_model::keep_freed_pages();
    let device = Device::Cpu;
    let dir = tempfile::tempdir().expect("a temporary folder");
    let torch = torch(dir.path());
    let [frames, noise, times, text] = match &torch {
        Ok(_) => {
            let mut inputs =
                candle_core::safetensors::load(dir.path().join("inputs.safetensors"), &device)
                    .expect("the PyTorch side's inputs");
            let mut take = |name: &str| inputs.remove(name).expect(name);
            [take("frames"), take("noise"), take("times"), take("text")]
        }
        Err(why) => {
            println!("PyTorch: not run ({why})");
            let frames = [BATCH, CHANNELS, 1, SIDE, SIDE];
            let times: Vec<f32> = (0..BATCH)
                .map(|i| (i as f32 + 0.5) / BATCH as f32)
                .collect();
            [
                gaussian(5, 0, &frames, &device).unwrap(),
                gaussian(5, 1, &frames, &device).unwrap(),
                Tensor::from_vec(times, BATCH, &device).unwrap(),
                gaussian(5, 2, &[BATCH, TEXT, TEXT_DIM], &device).unwrap(),
            ]
        }
    };
    let times: Vec<f32> = times.to_vec1().unwrap();
    // The PyTorch side drew its own noise: lct's step draws noise from a seed, so the loss
    // check runs lct's loss on PyTorch's noise through the same formula, once, below.
    let batch = WanBatch {
        latents: frames.clone(),
        text: text.clone(),
        weights: None,
    };
    let mut rows = Vec::new();
    let mut first_loss = None;
    for workers in [1, 2] {
        let mut trainer = trainer(dir.path(), torch.is_ok(), workers);
        if workers == 1 {
            first_loss = Some(loss_on(&trainer, &frames, &noise, &times, &text));
        }
        let mut seed = 0;
        let mut step = || {
            seed += 1;
            trainer.batch_step(&batch, &times, seed).unwrap();
        };
        step(); // warm-up
        let (seconds, best) = median_and_best(
            (0..REPS)
                .map(|_| {
                    let start = Instant::now();
                    step();
                    start.elapsed().as_secs_f64()
                })
                .collect(),
        );
        rows.push((workers, seconds, best, trainer.parameter_count()));
    }
    let flops = 3.0 * forward_flops();
    println!(
        "\nWan transformer training step: width {} ({HEADS} heads x {HEAD_DIM}), {LAYERS} blocks, \
         FFN {FFN}, {:.2}M parameters; a batch of {BATCH} frames of {SIDE}x{SIDE}x{CHANNELS} in \
         {PATCH}x{PATCH} patches ({} tokens each), {TEXT} text tokens of {TEXT_DIM}; f32, median \
         of {REPS}; about {:.1} GFLOP a step\n",
        HEADS * HEAD_DIM,
        rows[0].3 as f64 / 1e6,
        (SIDE / PATCH) * (SIDE / PATCH),
        flops / 1e9
    );
    println!("| step | s/step (median / best) | GFLOP/s (best) | PyTorch / lct (median / best) |");
    println!("|---|---|---|---|");
    for (workers, seconds, best, _) in &rows {
        println!(
            "| lct `WanTrainer::batch_step`, {workers} worker{} (one matrix thread each) | {seconds:.3} / {best:.3} | {:.1} | {} |",
            if *workers == 1 { "" } else { "s" },
            flops / best / 1e9,
            torch.as_ref().map_or("-".into(), |t| format!(
                "**{:.2}** / **{:.2}**",
                t.seconds / seconds,
                t.best / best
            ))
        );
    }
    if let Ok(torch) = &torch {
        println!(
            "| PyTorch, diffusers' WanTransformer3DModel (2 threads) | {:.3} / {:.3} | {:.1} | 1 |",
            torch.seconds,
            torch.best,
            flops / torch.best / 1e9
        );
        let first_loss = first_loss.expect("measured");
        println!(
            "\nfirst step's loss (same weights, inputs and noise): lct {first_loss:.6}, PyTorch \
             {:.6}, relative difference {:.1e}",
            torch.first_loss,
            ((first_loss - torch.first_loss) / torch.first_loss).abs()
        );
    }
}

/// The flow-matching loss of the batch with PyTorch's noise, computed as `batch_step` does.
fn loss_on(
    trainer: &WanTrainer,
    frames: &Tensor,
    noise: &Tensor,
    times: &[f32],
    text: &Tensor,
) -> f32 {
    let t = Tensor::from_vec(times.to_vec(), (BATCH, 1, 1, 1, 1), frames.device()).unwrap();
    let noised = (frames.broadcast_mul(&(1.0 - &t).unwrap()).unwrap()
        + noise.broadcast_mul(&t).unwrap())
    .unwrap();
    let timesteps = (t.flatten_all().unwrap() * 1000.0).unwrap();
    let prediction = trainer
        .model()
        .forward(&noised, WanTimestep::PerSample(&timesteps), text)
        .unwrap();
    (prediction - (noise - frames).unwrap())
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
