//! What a Wan 2.1 T2V 1.3B scene step costs on this machine's CPU: a transformer of the
//! published 1.3B shape (width 1536, 30 blocks, 12 heads, FFN 8960, umT5's 4096-wide text),
//! random weights (the same arithmetic as the real ones), one denoiser pass over an LCT scene
//! of two 5-frame shots at 832x480 (2 x 3120 video tokens) with 512-token prompts. Reports the
//! pass's wall time and the process's peak resident memory.
//!
//! ```text
//! cargo bench -p lct-model --bench wan_1_3b_cpu
//! ```

use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use lct_model::noise::gaussian;
use lct_model::wan::{WanShot, WanTransformer, WanTransformerConfig};
use lct_model::AttentionMask;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn peak_resident_gib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / (1024.0 * 1024.0))
}

fn main() {
    let device = Device::Cpu;
    let cfg = WanTransformerConfig {
        num_attention_heads: 12,
        attention_head_dim: 128,
        in_channels: 16,
        out_channels: Some(16),
        text_dim: 4096,
        freq_dim: 256,
        ffn_dim: 8960,
        num_layers: 30,
        ..WanTransformerConfig::default()
    };
    // Random weights from candle's initialisers, then detached: inference through variables
    // would keep every intermediate for a backward pass.
    let vars = VarMap::new();
    WanTransformer::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, &device))
        .expect("the 1.3B shape");
    let weights: std::collections::HashMap<String, candle_core::Tensor> = vars
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
        .collect();
    drop(vars);
    let parameters: usize = weights.values().map(|t| t.elem_count()).sum();
    let model = WanTransformer::new(&cfg, VarBuilder::from_tensors(weights, DType::F32, &device))
        .expect("the 1.3B shape");
    // 5 video frames -> 2 latent frames; 480x832 -> 60x104 latents -> 30x52 patches.
    let latents: Vec<_> = (0..2)
        .map(|i| gaussian(1, i, &[1, 16, 2, 60, 104], &device).unwrap())
        .collect();
    let prompts: Vec<_> = (0..3)
        .map(|i| gaussian(2, i, &[1, 512, 4096], &device).unwrap())
        .collect();
    let shots: Vec<WanShot> = latents
        .iter()
        .zip(&prompts[1..])
        .zip([700.0, 300.0])
        .map(|((latents, prompt), timestep)| WanShot {
            latents,
            timestep,
            prompt,
        })
        .collect();
    let start = Instant::now();
    let (outputs, cache) = model
        .scene_forward(&prompts[0], &shots, AttentionMask::Bidirectional, None)
        .expect("a scene pass");
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(outputs[0].dims(), latents[0].dims());
    println!(
        "Wan 1.3B shape ({:.2}B parameters, f32): one LCT scene pass, 2 shots x 5 frames at 832x480 ({} video tokens, 3 x 512 prompt tokens): {seconds:.1} s, peak resident {:.1} GiB",
        parameters as f64 / 1e9,
        cache.tokens(),
        peak_resident_gib()
    );
}
