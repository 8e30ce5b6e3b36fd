//! Can the architecture learn to copy across shots at all? A synthetic task without the
//! world, the autoencoder or the text encoder: each scene has an identity, a random latent
//! colour, that every shot carries and that no prompt names, so a shot's colour can come only
//! from its sibling shots. In the `region` variant the colour fills a square (a "character")
//! of a size and place drawn per shot over a fixed background; in `frame` it fills the whole
//! frame (an "environment"). Trained from scratch on fresh scenes, the run logs one held-out
//! shot's loss on the coloured pixels with its scene's clean shots beside it against alone:
//! a model that copies drives that ratio far below 1.

use crate::data::Result;
use crate::default_config;
use candle_core::{Device, Tensor};
use lct_model::noise::gaussian;
use lct_model::noise::SplitMix64;
use lct_model::{fixed_shot_losses, TrainConfig, Trainer, TrainingScene, TrainingShot};

/// Where a scene's colour goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CopyVariant {
    /// A square per shot (an even side from 2 to `--max-side` latent pixels, anywhere), the
    /// rest a fixed background.
    Region,
    /// The whole frame.
    Frame,
}

/// Where a scene's colour goes, with the region variant's largest square.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Placement {
    variant: CopyVariant,
    max_side: usize,
}

const SHOTS: usize = 3;
const FRAMES: usize = 2;
const SIDE: usize = 16;
/// Held-out scenes are drawn from seeds past every training seed.
const HELD_OUT: u64 = 1 << 40;

/// One scene: its shots' latents and coloured-pixel masks.
fn scene(seed: u64, placement: Placement, channels: usize) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
    let device = Device::Cpu;
    let mut rng = SplitMix64::stream(seed, 0xc0b1);
    let colour: Vec<f32> = (0..channels).map(|_| 1.5 * rng.normal() as f32).collect();
    let background: Vec<f32> = (0..channels)
        .map(|c| if c % 2 == 0 { -0.8 } else { 0.6 })
        .collect();
    let mut latents = Vec::new();
    let mut masks = Vec::new();
    for _ in 0..SHOTS {
        let (side, y0, x0) = match placement.variant {
            CopyVariant::Region => {
                let side = 2 + 2 * rng.below(placement.max_side / 2);
                (side, rng.below(SIDE - side + 1), rng.below(SIDE - side + 1))
            }
            CopyVariant::Frame => (SIDE, 0, 0),
        };
        let mut mask = vec![0f32; FRAMES * SIDE * SIDE];
        for t in 0..FRAMES {
            for y in y0..y0 + side {
                for x in x0..x0 + side {
                    mask[(t * SIDE + y) * SIDE + x] = 1.0;
                }
            }
        }
        let mut data = vec![0f32; channels * FRAMES * SIDE * SIDE];
        for c in 0..channels {
            for (i, &m) in mask.iter().enumerate() {
                data[c * mask.len() + i] = if m > 0.0 { colour[c] } else { background[c] };
            }
        }
        latents.push(Tensor::from_vec(
            data,
            (channels, FRAMES, SIDE, SIDE),
            &device,
        )?);
        masks.push(Tensor::from_vec(mask, (FRAMES, SIDE, SIDE), &device)?);
    }
    Ok((latents, masks))
}

fn training_scene(
    seed: u64,
    placement: Placement,
    text: &Tensor,
    channels: usize,
    emphasis: f64,
) -> Result<TrainingScene> {
    let (latents, masks) = scene(seed, placement, channels)?;
    let shots = latents
        .into_iter()
        .zip(masks)
        .map(|(latent, mask)| {
            let weight = if emphasis > 0.0 {
                Some(((&mask * emphasis)? + 1.0)?)
            } else {
                None
            };
            Ok(TrainingShot {
                latent,
                text: text.clone(),
                weight,
                // Used only under routing supervision: the square is what to look up.
                subject: Some(mask),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TrainingScene {
        global_text: None,
        shots,
    })
}

/// Mean loss of the last shot at `t` on its coloured pixels over `scenes` held-out scenes,
/// beside its scene's clean shots and alone.
fn probe(
    trainer: &Trainer,
    placement: Placement,
    text: &Tensor,
    channels: usize,
    scenes: u64,
    t: f32,
) -> Result<(f64, f64)> {
    let (mut own, mut alone) = (0.0, 0.0);
    for s in 0..scenes {
        let (latents, masks) = scene(HELD_OUT + s, placement, channels)?;
        let last = SHOTS - 1;
        let weight = (&masks[last] / masks[last].mean_all()?.to_scalar::<f32>()? as f64)?;
        let shot = |latent: &Tensor, weight: Option<Tensor>| TrainingShot {
            latent: latent.clone(),
            text: text.clone(),
            weight,
            subject: None,
        };
        let eps = gaussian(7, s, latents[last].dims(), &Device::Cpu)?.unsqueeze(0)?;
        let zero = Tensor::zeros_like(&eps)?;
        let mut shots: Vec<TrainingShot> = latents[..last].iter().map(|l| shot(l, None)).collect();
        shots.push(shot(&latents[last], Some(weight.clone())));
        let mut timesteps = vec![0.0; last];
        timesteps.push(t);
        let mut noise = vec![zero; last];
        noise.push(eps.clone());
        let with = TrainingScene {
            global_text: None,
            shots,
        };
        own += fixed_shot_losses(trainer.pipeline(), &with, &timesteps, &noise)?[last] as f64;
        let by_itself = TrainingScene {
            global_text: None,
            shots: vec![shot(&latents[last], Some(weight))],
        };
        alone += fixed_shot_losses(trainer.pipeline(), &by_itself, &[t], &[eps])?[0] as f64;
    }
    Ok((own / scenes as f64, alone / scenes as f64))
}

/// The copy task's settings (`lct-train copy-task`).
#[derive(clap::Args, Debug, Clone)]
pub struct CopyTask {
    #[arg(long, value_enum, default_value = "region")]
    pub variant: CopyVariant,
    /// The region variant's largest square side, in latent pixels (even, 2 to 16): a wide
    /// shot's character covers about 2.
    #[arg(long, default_value_t = 10)]
    pub max_side: usize,
    /// The coloured pixels weigh 1 + E in the training loss (as `fit --character-emphasis`
    /// weighs the world's character; 0: all pixels alike). The probe is unchanged.
    #[arg(long, default_value_t = 0.0)]
    pub emphasis: f64,
    /// Routing supervision's weight (`fit --route-weight`): head 0 of every layer but the
    /// first is trained to look up the square in the other shots (0: off).
    #[arg(long, default_value_t = 0.0)]
    pub route_weight: f64,
    #[arg(long = "latent-channels", default_value_t = 8)]
    pub channels: usize,
    #[arg(long = "patch-size", default_value_t = 2)]
    pub patch: usize,
    /// Initial gain of the query and key RMS norms (1: the engine's default init).
    #[arg(long, default_value_t = 1.0)]
    pub qk_gain: f64,
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Probe every this many steps.
    #[arg(long, default_value_t = 100)]
    pub every: u64,
}

/// Trains the default architecture (its latent width and patch size given) on the copy
/// task for `minutes` and logs the probe every `every` steps; returns the log lines.
pub fn run(settings: &CopyTask) -> Result<Vec<String>> {
    let &CopyTask {
        variant,
        max_side,
        emphasis,
        route_weight,
        channels,
        patch,
        qk_gain,
        minutes,
        batch,
        every,
    } = settings;
    if !(2..=SIDE).contains(&max_side) || max_side % 2 != 0 {
        return Err(format!(
            "copy-task: --max-side {max_side} must be even and within 2..={SIDE} latent pixels"
        )
        .into());
    }
    if !(emphasis >= 0.0 && emphasis.is_finite()) {
        return Err(format!("copy-task: --emphasis {emphasis} must be 0 or more").into());
    }
    let placement = Placement { variant, max_side };
    if every == 0 || batch == 0 {
        return Err(
            format!("copy-task: --every {every} and --batch {batch} must be at least 1").into(),
        );
    }
    let device = Device::Cpu;
    let mut cfg = default_config();
    cfg.text_encoder = None;
    cfg.autoencoder = None;
    cfg.latent_channels = channels;
    cfg.patch_size = patch;
    cfg.validate()?;
    let mut weights = lct_model::init_tensors(&cfg, 1, lct_model::Init::AdaLnZero, &device)?;
    crate::start_qk_gains(&mut weights, qk_gain)?;
    let mut trainer = Trainer::with_weights(
        &cfg,
        TrainConfig {
            learning_rate: 1e-3,
            single_frame_prob: 0.0,
            route_weight,
            ..TrainConfig::default()
        },
        &weights,
        &device,
    )?;
    let text = Tensor::zeros(
        (cfg.shot_text_len, cfg.text_dim),
        candle_core::DType::F32,
        &device,
    )?;
    let mut lines = vec![
        format!(
            "copy task ({variant:?}, squares up to {max_side}, coloured pixels weighing 1 + {emphasis} in training, routing supervision weight {route_weight}): {SHOTS} shots of {FRAMES} frames, {SIDE}x{SIDE} latents of {channels} channels, patch {patch}, query/key norm gains starting at {qk_gain}; \
             last shot's loss on its coloured pixels at t = 0.5 / 0.8, beside its scene's clean shots and alone (16 held-out scenes)"
        ),
        String::new(),
        "| step | minutes | train loss | own t=0.5 | alone t=0.5 | own / alone | own t=0.8 | alone t=0.8 | own / alone |".into(),
        "|---|---|---|---|---|---|---|---|---|".into(),
    ];
    for line in &lines {
        println!("{line}");
    }
    let started = std::time::Instant::now();
    let mut window = Vec::new();
    loop {
        let step = trainer.step_count();
        let done = started.elapsed().as_secs_f64() >= minutes * 60.0;
        if step % every == 0 || done {
            let (own5, alone5) = probe(&trainer, placement, &text, channels, 16, 0.5)?;
            let (own8, alone8) = probe(&trainer, placement, &text, channels, 16, 0.8)?;
            let mean = if window.is_empty() {
                f32::NAN
            } else {
                window.iter().sum::<f32>() / window.len() as f32
            };
            window.clear();
            let line = format!(
                "| {step} | {:.1} | {mean:.4} | {own5:.4} | {alone5:.4} | {:.2} | {own8:.4} | {alone8:.4} | {:.2} |",
                started.elapsed().as_secs_f64() / 60.0,
                own5 / alone5,
                own8 / alone8
            );
            println!("{line}");
            lines.push(line);
        }
        if done {
            break;
        }
        let scenes = (0..batch as u64)
            .map(|i| {
                training_scene(
                    step * batch as u64 + i,
                    placement,
                    &text,
                    channels,
                    emphasis,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        window.push(trainer.step(&scenes)?.loss);
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGION: Placement = Placement {
        variant: CopyVariant::Region,
        max_side: 10,
    };

    /// Every shot of a scene carries the scene's one colour on its mask and the shared
    /// background elsewhere; scenes differ in colour, and the same seed repeats.
    #[test]
    fn a_copy_scene_repeats_its_colour_in_every_shot_and_only_there() {
        let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let colour_of = |seed: u64| {
            let (latents, masks) = scene(seed, REGION, 3).unwrap();
            let mut colours = Vec::new();
            for (latent, mask) in latents.iter().zip(&masks) {
                let (l, m) = (values(latent), values(mask));
                let covered = m.iter().position(|&v| v > 0.0).expect("a square per shot");
                let plane = m.len();
                let colour: Vec<f32> = (0..3).map(|c| l[c * plane + covered]).collect();
                for (i, &inside) in m.iter().enumerate() {
                    for (c, &value) in colour.iter().enumerate() {
                        let expected = if inside > 0.0 {
                            value
                        } else {
                            [-0.8, 0.6, -0.8][c]
                        };
                        assert_eq!(
                            l[c * plane + i],
                            expected,
                            "seed {seed} pixel {i} channel {c}"
                        );
                    }
                }
                colours.push(colour);
            }
            assert!(
                colours.windows(2).all(|w| w[0] == w[1]),
                "one colour per scene"
            );
            colours[0].clone()
        };
        assert_eq!(colour_of(3), colour_of(3));
        assert_ne!(colour_of(3), colour_of(4));
        let frame = Placement {
            variant: CopyVariant::Frame,
            ..REGION
        };
        let (frames, masks) = scene(5, frame, 2).unwrap();
        assert_eq!(frames[0].dims(), [2, FRAMES, SIDE, SIDE]);
        assert!(
            values(&masks[0]).iter().all(|&v| v == 1.0),
            "frame fills every pixel"
        );
    }

    /// `--max-side 2` gives every shot a 2x2 square (a wide shot's character), for any seed, and
    /// `--emphasis E` weighs exactly those pixels 1 + E in training.
    #[test]
    fn small_squares_bound_every_shot_and_emphasis_weighs_only_them() {
        let small = Placement {
            max_side: 2,
            ..REGION
        };
        for seed in 0..20 {
            let (_, masks) = scene(seed, small, 1).unwrap();
            for mask in &masks {
                let covered: f32 = mask.sum_all().unwrap().to_scalar().unwrap();
                assert_eq!(covered, (FRAMES * 2 * 2) as f32, "seed {seed}");
            }
        }
        let text = Tensor::zeros((1, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
        let weighed = training_scene(0, small, &text, 1, 8.0).unwrap();
        for shot in &weighed.shots {
            let weight = shot.weight.as_ref().expect("a weight when emphasised");
            let total: f32 = weight.sum_all().unwrap().to_scalar().unwrap();
            let plane = (FRAMES * SIDE * SIDE) as f32;
            assert_eq!(total, plane + 8.0 * (FRAMES * 2 * 2) as f32);
        }
        let plain = training_scene(0, small, &text, 1, 0.0).unwrap();
        assert!(plain.shots.iter().all(|shot| shot.weight.is_none()));
        let err = run(&CopyTask {
            variant: CopyVariant::Region,
            max_side: 3,
            emphasis: 0.0,
            route_weight: 0.0,
            channels: 8,
            patch: 2,
            qk_gain: 1.0,
            minutes: 0.0,
            batch: 1,
            every: 1,
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("--max-side 3"), "{err}");
    }
}
