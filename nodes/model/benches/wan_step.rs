//! Wan step benchmark: one denoiser pass of a small Wan transformer (width 768, 8 blocks, 1296
//! video tokens) in lct, as a plain 9-frame video and as an LCT scene of three 3-frame shots
//! (per-shot timesteps and prompt windows, joint attention), beside diffusers' forward of the
//! same weights and inputs when a Python with diffusers is named, all in this one run.
//!
//! ```text
//! cargo bench -p lct-model --bench wan_step                               # lct alone (random weights)
//! LCT_TORCH_PYTHON=/path/to/python cargo bench -p lct-model --bench wan_step   # side by side
//! ```
//! With diffusers, the weights and inputs are diffusers' (`benches/wan_step_diffusers.py`
//! writes them), and the bench also reports how far lct's output is from diffusers'.

#[path = "peer.rs"]
mod peer;

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lct_model::noise::gaussian;
use lct_model::wan::{
    load_transformer, WanShot, WanTimestep, WanTransformer, WanTransformerConfig,
};
use lct_model::AttentionMask;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const HEADS: usize = 12;
const HEAD_DIM: usize = 64;
const LAYERS: usize = 8;
const FFN: usize = 3072;
const CHANNELS: usize = 16;
const FRAMES: usize = 9;
const SIDE: usize = 24;
const TEXT: usize = 64;
const REPS: usize = 3;

fn config() -> WanTransformerConfig {
    WanTransformerConfig {
        num_attention_heads: HEADS,
        attention_head_dim: HEAD_DIM,
        in_channels: CHANNELS,
        out_channels: Some(CHANNELS),
        ffn_dim: FFN,
        num_layers: LAYERS,
        ..WanTransformerConfig::default()
    }
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

fn time(reps: usize, mut run: impl FnMut()) -> f64 {
    run(); // warm-up: first-touch pages and thread pools
    median(
        (0..reps)
            .map(|_| {
                let start = Instant::now();
                run();
                start.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// Runs the diffusers side into `dir`; its median seconds.
fn diffusers(dir: &std::path::Path) -> Result<f64, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/wan_step_diffusers.py");
    let stdout = peer::run(
        script,
        &[dir.as_os_str()],
        &[
            ("heads", HEADS),
            ("head-dim", HEAD_DIM),
            ("layers", LAYERS),
            ("ffn", FFN),
            ("channels", CHANNELS),
            ("frames", FRAMES),
            ("side", SIDE),
            ("text", TEXT),
            ("reps", REPS),
        ],
    )?;
    if let Some(line) = stdout.lines().find(|l| l.starts_with("torch")) {
        println!("diffusers: {line}");
    }
    peer::value(&stdout, "seconds ")
}

fn main() {
    let device = Device::Cpu;
    let dir = tempfile::tempdir().expect("a temporary folder");
    let torch = diffusers(dir.path());
    let tokens = FRAMES * (SIDE / 2) * (SIDE / 2);
    let (model, latents, text, timesteps, reference): (
        WanTransformer,
        Tensor,
        Tensor,
        Tensor,
        Option<Tensor>,
    ) = match &torch {
        Ok(_) => {
            let model =
                load_transformer(dir.path(), DType::F32, &device).expect("diffusers' weights");
            let mut t =
                candle_core::safetensors::load(dir.path().join("reference.safetensors"), &device)
                    .expect("diffusers' inputs");
            (
                model,
                t.remove("latents").unwrap(),
                t.remove("text").unwrap(),
                t.remove("per_token_timestep").unwrap(),
                t.remove("output"),
            )
        }
        Err(why) => {
            println!("diffusers: not run ({why})");
            // Random weights, detached from their variables (no backward tape in a timing).
            let vars = VarMap::new();
            WanTransformer::new(
                &config(),
                VarBuilder::from_varmap(&vars, DType::F32, &device),
            )
            .expect("random weights");
            let weights: std::collections::HashMap<String, Tensor> = vars
                .data()
                .lock()
                .unwrap()
                .iter()
                .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
                .collect();
            let model = WanTransformer::new(
                &config(),
                VarBuilder::from_tensors(weights, DType::F32, &device),
            )
            .expect("random weights");
            let per_frame: Vec<f32> = (0..FRAMES)
                .flat_map(|f| std::iter::repeat_n(900.0 - 100.0 * f as f32, tokens / FRAMES))
                .collect();
            (
                model,
                gaussian(3, 0, &[1, CHANNELS, FRAMES, SIDE, SIDE], &device).unwrap(),
                gaussian(3, 1, &[1, TEXT, 4096], &device).unwrap(),
                Tensor::from_vec(per_frame, (1, tokens), &device).unwrap(),
                None,
            )
        }
    };

    let mut output = None;
    let video = time(REPS, || {
        output = Some(
            model
                .forward(&latents, WanTimestep::PerToken(&timesteps), &text)
                .unwrap(),
        );
    });
    // The same tokens as an LCT scene: three 3-frame shots, a global prompt window and one
    // prompt window per shot (16 text tokens each), joint attention.
    let shot_latents: Vec<Tensor> = (0..3)
        .map(|i| latents.narrow(2, 3 * i, 3).unwrap())
        .collect();
    let windows: Vec<Tensor> = (0..4)
        .map(|i| text.narrow(1, 16 * i, 16).unwrap())
        .collect();
    let shots: Vec<WanShot> = (0..3)
        .map(|i| WanShot {
            latents: &shot_latents[i],
            timestep: 900.0 - 300.0 * i as f64,
            prompt: &windows[i + 1],
        })
        .collect();
    let scene = time(REPS, || {
        model
            .scene_forward(&windows[0], &shots, AttentionMask::Bidirectional, None)
            .unwrap();
    });

    println!(
        "\nWan transformer, width {} ({HEADS} heads x {HEAD_DIM}), {LAYERS} blocks, FFN {FFN}, \
         {tokens} video tokens ({FRAMES} latent frames of {SIDE}x{SIDE}), {TEXT} text tokens, f32, \
         median of {REPS}\n",
        HEADS * HEAD_DIM
    );
    println!("| pass | lct s | diffusers s | lct / diffusers |");
    println!("|---|---|---|---|");
    let ratio = |s: f64| {
        torch
            .as_ref()
            .map_or("-".into(), |t| format!("{:.2}", s / t))
    };
    let shown = torch.as_ref().map_or("-".into(), |t| format!("{t:.3}"));
    println!(
        "| 9-frame video, per-token timesteps | {video:.3} | {shown} | {} |",
        ratio(video)
    );
    println!(
        "| LCT scene: 3 shots x 3 frames, joint, prompt windows | {scene:.3} | {shown} (the video pass) | {} |",
        ratio(scene)
    );
    if let (Some(reference), Some(output)) = (reference, output) {
        let difference = (&output - &reference)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        let scale = reference.abs().unwrap().max_all().unwrap();
        let relative = (difference / scale).unwrap().to_scalar::<f32>().unwrap();
        println!("\nlct's video output against diffusers': relative difference {relative:.1e}");
    }
}
