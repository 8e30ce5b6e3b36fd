//! Trains a tiny LCT model briefly, then generates one scene in every mode. See README.md.

use candle_core::{Device, Tensor};
use lct_model::noise::gaussian;
use lct_model::{
    generate_autoregressive, sample, AttentionMask, Config, HistoryMode, SamplerConfig,
    SceneRequest, ShotInput, ShotRole, StepControl, TrainConfig, Trainer, TrainingScene,
    TrainingShot,
};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn randn(stream: u64, dims: &[usize]) -> lct_model::Result<Tensor> {
    gaussian(2025, stream, dims, &Device::Cpu)
}

fn main() -> lct_model::Result<()> {
    let device = Device::Cpu;
    let cfg = Config::tiny().with_attention(AttentionMask::ContextCausal);
    let shot_dims = [cfg.latent_channels, 2, 4, 4];
    // Three scenes of three shots: each scene's shots share a base latent (its "identity").
    let scenes: Vec<TrainingScene> = (0..3u64)
        .map(|s| {
            let identity = randn(s, &shot_dims)?;
            let shots = (0..3u64)
                .map(|i| {
                    Ok(TrainingShot {
                        latent: (&identity + (randn(100 + 10 * s + i, &shot_dims)? * 0.3)?)?,
                        text: randn(200 + 10 * s + i, &[cfg.shot_text_len, cfg.text_dim])?,
                        weight: None,
                    })
                })
                .collect::<lct_model::Result<Vec<_>>>()?;
            Ok(TrainingScene {
                global_text: Some(randn(300 + s, &[cfg.global_text_len, cfg.text_dim])?),
                shots,
            })
        })
        .collect::<lct_model::Result<_>>()?;

    let train = TrainConfig {
        learning_rate: 6e-3,
        ..Default::default()
    };
    let mut trainer = Trainer::new(&cfg, train, &device)?;
    let start = Instant::now();
    let mut first = None;
    let mut last = 0.0;
    for step in 0..600 {
        let stats = trainer.step(&scenes)?;
        first.get_or_insert(stats.loss);
        last = stats.loss;
        if step % 200 == 199 {
            println!("train step {:>3}: loss {:.4}", stats.step, stats.loss);
        }
    }
    println!(
        "trained 600 steps in {:.1} s: loss {:.3} -> {:.3}",
        start.elapsed().as_secs_f64(),
        first.unwrap_or(0.0),
        last
    );

    let model = trainer.model();
    let scene = &scenes[0];
    let request = SceneRequest {
        global_text: scene
            .global_text
            .as_ref()
            .map(|t| t.unsqueeze(0))
            .transpose()?,
        shots: scene
            .shots
            .iter()
            .enumerate()
            .map(|(i, shot)| {
                Ok(ShotInput {
                    text: shot.text.unsqueeze(0)?,
                    latent_dims: shot_dims,
                    role: ShotRole::Generate,
                    latent: None,
                    scene_index: i,
                })
            })
            .collect::<lct_model::Result<_>>()?,
    };
    let sampler = SamplerConfig {
        steps: 20,
        guidance: 2.0,
        seed: 7,
        ..Default::default()
    };
    let progress = |shot: usize, info: &lct_model::StepInfo| {
        if info.step == info.total {
            println!("  shot {shot}: {} steps done", info.total);
        }
        StepControl::Continue
    };
    let timed = |name: &str, run: &mut dyn FnMut() -> lct_model::Result<Vec<Tensor>>| {
        let start = Instant::now();
        let out = run()?;
        println!("{name}: {:.3} s", start.elapsed().as_secs_f64());
        Ok::<_, lct_model::Error>(out)
    };
    let recomputed = timed("auto-regressive, history recomputed", &mut || {
        generate_autoregressive(model, &request, &sampler, HistoryMode::Recompute, progress)
    })?;
    let cached = timed("auto-regressive, KV cache", &mut || {
        generate_autoregressive(model, &request, &sampler, HistoryMode::KvCache, progress)
    })?;
    let joint = timed("joint", &mut || {
        sample(model, &request, &sampler, None, |_| StepControl::Continue)
    })?;
    let mut worst = 0f32;
    for (a, b) in recomputed.iter().zip(&cached) {
        worst = worst.max((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?);
    }
    println!("KV-cache rollout vs recomputed rollout: max |difference| = {worst:.2e}");
    for (i, (shot, target)) in joint.iter().zip(&scene.shots).enumerate() {
        let error = (shot.squeeze(0)? - &target.latent)?
            .sqr()?
            .mean_all()?
            .to_scalar::<f32>()?;
        println!("joint shot {i}: mean squared distance to its training latent {error:.3}");
    }
    Ok(())
}
