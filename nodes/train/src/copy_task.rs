//! Can the architecture learn to copy across shots at all? A task without the text encoder:
//! each scene has an identity that every shot carries and that no prompt names, so a shot's
//! looks can come only from its sibling shots. In the synthetic variants the identity is a
//! random latent colour: `region` fills a square (a "character") of a size and place drawn
//! per shot over a fixed background, `frame` the whole frame (an "environment"). The world
//! variants take the procedural world's own shots through an autoencoder (the embedded one by
//! default): `world` whole scenes, `world-character` the same with one environment for every
//! scene, so that the character is all a scene has to copy. Trained from scratch on fresh
//! scenes, the run logs one held-out shot's loss on its identity's pixels (the square, or the
//! character's coverage) with its scene's clean shots beside it against alone: a model that
//! copies drives that ratio far below 1.

use crate::data::{character_coverage, encode, held_out_scene, recoloured_scene, Result};
use crate::default_config;
use candle_core::{Device, Tensor};
use lct_model::noise::gaussian;
use lct_model::noise::SplitMix64;
use lct_model::{
    fixed_shot_losses, load_pipeline, Pipeline, TrainConfig, Trainer, TrainingScene, TrainingShot,
};
use lct_world::{render_shot, sample_scene, SceneSpec, Split};
use std::path::PathBuf;

/// Where a scene's colour goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CopyVariant {
    /// A square per shot (an even side from 2 to `--max-side` latent pixels, anywhere), the
    /// rest a fixed background.
    Region,
    /// The whole frame.
    Frame,
    /// The world's scenes (their first shots' first frames) through the autoencoder; the
    /// identity's pixels are the character's.
    World,
    /// As `world`, with every scene in one environment: only the character (and the action)
    /// tells scenes apart.
    WorldCharacter,
}

/// Where a synthetic scene's colour goes: the whole frame, or squares of at most
/// `max_side`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Placement {
    whole_frame: bool,
    max_side: usize,
}

const SHOTS: usize = 3;
const FRAMES: usize = 2;
const SIDE: usize = 16;
/// Held-out scenes are drawn from seeds past every training seed.
const HELD_OUT: u64 = 1 << 40;

/// Where the scenes come from.
enum Source {
    Synthetic {
        placement: Placement,
        channels: usize,
    },
    /// The pipeline is boxed: it is far larger than the synthetic variant's settings.
    World {
        autoencoder: Box<Pipeline>,
        one_environment: bool,
    },
}

impl Source {
    /// The latent channels of every shot.
    fn channels(&self) -> Result<usize> {
        Ok(match self {
            Source::Synthetic { channels, .. } => *channels,
            Source::World { autoencoder, .. } => autoencoder.autoencoder()?.latent_channels(),
        })
    }

    /// Training scene `seed`, or held-out scene `seed` when `held_out`: each shot's latent
    /// `[C, FRAMES, SIDE, SIDE]` and the `[FRAMES, SIDE, SIDE]` share of each latent pixel
    /// that shows the scene's identity.
    fn scene(&self, seed: u64, held_out: bool) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
        match self {
            Source::Synthetic {
                placement,
                channels,
            } => scene(
                if held_out { HELD_OUT + seed } else { seed },
                *placement,
                *channels,
            ),
            Source::World { autoencoder, .. } => {
                world_scene(autoencoder, &self.world_spec(seed, held_out))
            }
        }
    }

    /// The latents of held-out scene `seed` with only its identity changed: the synthetic
    /// colour negated, or the world's character recoloured (everything else the same).
    fn recoloured(&self, seed: u64) -> Result<Vec<Tensor>> {
        Ok(match self {
            Source::Synthetic {
                placement,
                channels,
            } => {
                let (latents, masks) = scene(HELD_OUT + seed, *placement, *channels)?;
                latents
                    .iter()
                    .zip(&masks)
                    .map(|(latent, mask)| {
                        // Inside the mask the colour c becomes -c; outside nothing changes.
                        let colour = latent.broadcast_mul(&mask.unsqueeze(0)?)?;
                        Ok((latent - (colour * 2.0)?)?)
                    })
                    .collect::<Result<Vec<_>>>()?
            }
            Source::World { autoencoder, .. } => {
                world_scene(autoencoder, &recoloured_scene(&self.world_spec(seed, true)))?.0
            }
        })
    }

    /// The world variants' scene `seed` (held out or training).
    fn world_spec(&self, seed: u64, held_out: bool) -> SceneSpec {
        let mut spec = if held_out {
            held_out_scene(seed, SHOTS)
        } else {
            training_world_scene(seed)
        };
        if let Source::World {
            one_environment: true,
            ..
        } = self
        {
            spec.environment = sample_scene(0, Split::Train).environment;
        }
        spec
    }
}

/// Training scene `seed` of the world with at least [`SHOTS`] shots.
fn training_world_scene(seed: u64) -> SceneSpec {
    (0u64..)
        .map(|attempt| sample_scene(seed + (attempt << 40), Split::Train))
        .find(|spec| spec.shots.len() >= SHOTS)
        .expect("the sampler yields every shot count")
}

/// The first [`FRAMES`] frames of the first [`SHOTS`] shots of `spec`, encoded, and their
/// character's coverage.
fn world_scene(autoencoder: &Pipeline, spec: &SceneSpec) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
    let patch = autoencoder.autoencoder()?.config().patch;
    let mut latents = Vec::new();
    let mut masks = Vec::new();
    for k in 0..SHOTS {
        let frames = render_shot(spec, k)?.frames;
        if frames.len() < FRAMES {
            return Err(format!(
                "copy-task: the world's shots have {} frames, the task needs {FRAMES}",
                frames.len()
            )
            .into());
        }
        let latent = encode(autoencoder, &frames[..FRAMES])?;
        let (_, _, h, w) = latent.dims4()?;
        if (h, w) != (SIDE, SIDE) {
            return Err(format!(
                "copy-task: the autoencoder makes {h}x{w} latents of the world's frames, the task needs {SIDE}x{SIDE}"
            )
            .into());
        }
        latents.push(latent);
        masks.push(character_coverage(spec, k, patch)?.narrow(0, 0, FRAMES)?);
    }
    Ok((latents, masks))
}

/// One synthetic scene: its shots' latents and coloured-pixel masks.
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
        let (side, y0, x0) = if placement.whole_frame {
            (SIDE, 0, 0)
        } else {
            let side = 2 + 2 * rng.below(placement.max_side / 2);
            (side, rng.below(SIDE - side + 1), rng.below(SIDE - side + 1))
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
    source: &Source,
    seed: u64,
    text: &Tensor,
    emphasis: f64,
) -> Result<TrainingScene> {
    let (latents, masks) = source.scene(seed, false)?;
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

/// How far apart scenes' identities lie in the latent, beside the latent's spread.
struct Contrast {
    /// Mean over pairs of scenes of the squared distance between their identity latents,
    /// per channel.
    between_scenes: f64,
    /// Variance of the latent over every pixel of every shot, averaged over channels.
    pixel_variance: f64,
}

/// A held-out scene of the probe, built once for the whole run.
struct ProbeScene {
    latents: Vec<Tensor>,
    masks: Vec<Tensor>,
    /// The latents with only the identity changed ([`Source::recoloured`]).
    recoloured: Vec<Tensor>,
}

/// The first `scenes` held-out scenes of `source`.
fn probe_scenes(source: &Source, scenes: u64) -> Result<Vec<ProbeScene>> {
    (0..scenes)
        .map(|s| {
            let (latents, masks) = source.scene(s, true)?;
            Ok(ProbeScene {
                latents,
                masks,
                recoloured: source.recoloured(s)?,
            })
        })
        .collect()
}

/// [`Contrast`] over the probe's held-out scenes.
fn identity_contrast(scenes: &[ProbeScene]) -> Result<Contrast> {
    let mut identities = Vec::new();
    let mut pixels = Vec::new();
    for ProbeScene { latents, masks, .. } in scenes {
        let (mut weighted, mut covered) = (None::<Tensor>, 0f64);
        for (latent, mask) in latents.iter().zip(masks) {
            let sum = latent.broadcast_mul(&mask.unsqueeze(0)?)?.sum((1, 2, 3))?;
            weighted = Some(match weighted {
                None => sum,
                Some(w) => (w + sum)?,
            });
            covered += mask.sum_all()?.to_scalar::<f32>()? as f64;
            let channels = latent.dim(0)?;
            pixels.push(latent.reshape((channels, ()))?);
        }
        let weighted = weighted.ok_or("copy-task: a scene without shots")?;
        identities.push((weighted / covered)?);
    }
    let mut between = 0.0;
    let mut pairs = 0;
    for (i, a) in identities.iter().enumerate() {
        for b in &identities[i + 1..] {
            between += (a - b)?.sqr()?.mean_all()?.to_scalar::<f32>()? as f64;
            pairs += 1;
        }
    }
    let all = Tensor::cat(&pixels, 1)?;
    let centred = all.broadcast_sub(&all.mean_keepdim(1)?)?;
    Ok(Contrast {
        between_scenes: between / pairs.max(1) as f64,
        pixel_variance: centred.sqr()?.mean_all()?.to_scalar::<f32>()? as f64,
    })
}

/// The probe's mean losses of the last shot on its identity's pixels.
struct ProbeLosses {
    /// Beside its scene's clean shots.
    own: f64,
    /// Beside the same shots with the identity changed.
    recoloured: f64,
    /// With nothing beside it.
    alone: f64,
}

/// [`ProbeLosses`] at `t` over the probe's held-out scenes.
fn probe(trainer: &Trainer, scenes: &[ProbeScene], text: &Tensor, t: f32) -> Result<ProbeLosses> {
    let (mut own, mut recoloured, mut alone) = (0.0, 0.0, 0.0);
    for (s, scene) in (0u64..).zip(scenes) {
        let ProbeScene {
            latents,
            masks,
            recoloured: changed,
        } = scene;
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
        let mut timesteps = vec![0.0; last];
        timesteps.push(t);
        let mut noise = vec![zero; last];
        noise.push(eps.clone());
        // The last shot's loss with `context` (clean) beside it.
        let beside = |context: &[Tensor]| -> Result<f64> {
            let mut shots: Vec<TrainingShot> = context.iter().map(|l| shot(l, None)).collect();
            shots.push(shot(&latents[last], Some(weight.clone())));
            let scene = TrainingScene {
                global_text: None,
                shots,
            };
            Ok(fixed_shot_losses(trainer.pipeline(), &scene, &timesteps, &noise)?[last] as f64)
        };
        own += beside(&latents[..last])?;
        recoloured += beside(&changed[..last])?;
        let by_itself = TrainingScene {
            global_text: None,
            shots: vec![shot(&latents[last], Some(weight))],
        };
        alone += fixed_shot_losses(trainer.pipeline(), &by_itself, &[t], &[eps])?[0] as f64;
    }
    let n = scenes.len() as f64;
    Ok(ProbeLosses {
        own: own / n,
        recoloured: recoloured / n,
        alone: alone / n,
    })
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
    /// Latent channels of the synthetic variants (default 8); the world variants take the
    /// autoencoder's.
    #[arg(long = "latent-channels")]
    pub channels: Option<usize>,
    /// The world variants' autoencoder: a model directory whose autoencoder encodes the
    /// world's frames (default: the embedded model).
    #[arg(long)]
    pub autoencoder: Option<PathBuf>,
    #[arg(long = "patch-size", default_value_t = 2)]
    pub patch: usize,
    /// Initial gain of the query and key RMS norms (1: the engine's default init); with
    /// `--init`, a factor on the starting model's gains.
    #[arg(long, default_value_t = 1.0)]
    pub qk_gain: f64,
    /// Start from this model's transformer (its width, depth, latent channels and patch
    /// size; bidirectional attention like a fresh start) instead of a fresh initialisation:
    /// does a pre-trained prior learn to copy as fast as a blank model?
    #[arg(long)]
    pub init: Option<PathBuf>,
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
        ref autoencoder,
        patch,
        qk_gain,
        ref init,
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
    let placement = Placement {
        whole_frame: variant == CopyVariant::Frame,
        max_side,
    };
    if every == 0 || batch == 0 {
        return Err(
            format!("copy-task: --every {every} and --batch {batch} must be at least 1").into(),
        );
    }
    let device = Device::Cpu;
    let source = match variant {
        CopyVariant::Region | CopyVariant::Frame => {
            if let Some(path) = autoencoder {
                return Err(format!(
                    "copy-task: --autoencoder {} is for the world variants; --variant {variant:?} makes its own latents",
                    path.display()
                )
                .into());
            }
            Source::Synthetic {
                placement,
                channels: channels.unwrap_or(8),
            }
        }
        CopyVariant::World | CopyVariant::WorldCharacter => {
            let dir = autoencoder
                .clone()
                .unwrap_or_else(crate::embedded_model_dir);
            let pipeline = load_pipeline(&dir, candle_core::DType::F32, &device)
                .map_err(|e| format!("copy-task: --autoencoder {}: {e}", dir.display()))?;
            let source = Source::World {
                autoencoder: Box::new(pipeline),
                one_environment: variant == CopyVariant::WorldCharacter,
            };
            let own = source.channels()?;
            if let Some(asked) = channels.filter(|&asked| asked != own) {
                return Err(format!(
                    "copy-task: --latent-channels {asked}, but the autoencoder in {} makes {own}",
                    dir.display()
                )
                .into());
            }
            source
        }
    };
    let channels = source.channels()?;
    let (mut cfg, mut weights) = match init {
        None => {
            let mut cfg = default_config();
            cfg.latent_channels = channels;
            cfg.patch_size = patch;
            cfg.text_encoder = None;
            cfg.autoencoder = None;
            cfg.validate()?;
            let weights = lct_model::init_tensors(&cfg, 1, lct_model::Init::AdaLnZero, &device)?;
            (cfg, weights)
        }
        Some(dir) => {
            let named =
                |e: &dyn std::fmt::Display| format!("copy-task: --init {}: {e}", dir.display());
            let cfg = lct_model::Config::load(&dir.join(lct_model::weights::CONFIG_FILE))
                .map_err(|e| named(&e))?
                .with_attention(default_config().attention);
            if (cfg.latent_channels, cfg.patch_size) != (channels, patch) {
                return Err(named(&format!(
                    "its {} latent channels and patch {} differ from the task's {channels} and --patch-size {patch}",
                    cfg.latent_channels, cfg.patch_size
                ))
                .into());
            }
            let weights = lct_model::weights::read_safetensors(
                &dir.join(lct_model::weights::WEIGHTS_FILE),
                &device,
            )
            .map_err(|e| named(&e))?;
            (cfg, weights)
        }
    };
    // No prompts: the identity is only in the other shots.
    cfg.text_encoder = None;
    cfg.autoencoder = None;
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
            "copy task ({variant:?}, squares up to {max_side}, coloured pixels weighing 1 + {emphasis} in training, routing supervision weight {route_weight}): {SHOTS} shots of {FRAMES} frames, {SIDE}x{SIDE} latents of {channels} channels, patch {patch}, {}; \
             last shot's loss on its identity's pixels at t = 0.5 / 0.8, beside its scene's clean shots, alone, and beside the clean shots with the identity changed (recoloured; 16 held-out scenes)",
            match init {
                None => format!("query/key norm gains starting at {qk_gain}"),
                Some(dir) => format!("starting from {}'s transformer, its query/key norm gains times {qk_gain}", dir.display()),
            }
        ),
        String::new(),
        "| step | minutes | train loss | own t=0.5 | alone t=0.5 | own / alone | recoloured / own | own t=0.8 | alone t=0.8 | own / alone | recoloured / own |".into(),
        "|---|---|---|---|---|---|---|---|---|---|---|".into(),
    ];
    // Rendered and encoded once: the probe reads the same scenes at every step it runs.
    let held_out = probe_scenes(&source, 16)?;
    let contrast = identity_contrast(&held_out)?;
    lines.insert(
        1,
        format!(
            "\nHow much there is to copy: the identity latents (coverage-weighted means over a scene's shots) of two held-out scenes differ by {:.3} per channel in mean square; the latent's variance over all pixels is {:.3} per channel.",
            contrast.between_scenes, contrast.pixel_variance
        ),
    );
    for line in &lines {
        println!("{line}");
    }
    let started = std::time::Instant::now();
    let mut window = Vec::new();
    loop {
        let step = trainer.step_count();
        let done = started.elapsed().as_secs_f64() >= minutes * 60.0;
        if step % every == 0 || done {
            let at5 = probe(&trainer, &held_out, &text, 0.5)?;
            let at8 = probe(&trainer, &held_out, &text, 0.8)?;
            let mean = if window.is_empty() {
                f32::NAN
            } else {
                window.iter().sum::<f32>() / window.len() as f32
            };
            window.clear();
            let cells = |p: &ProbeLosses| {
                format!(
                    "{:.4} | {:.4} | {:.2} | {:.2}",
                    p.own,
                    p.alone,
                    p.own / p.alone,
                    p.recoloured / p.own
                )
            };
            let line = format!(
                "| {step} | {:.1} | {mean:.4} | {} | {} |",
                started.elapsed().as_secs_f64() / 60.0,
                cells(&at5),
                cells(&at8)
            );
            println!("{line}");
            lines.push(line);
        }
        if done {
            break;
        }
        let scenes = (0..batch as u64)
            .map(|i| training_scene(&source, step * batch as u64 + i, &text, emphasis))
            .collect::<Result<Vec<_>>>()?;
        window.push(trainer.step(&scenes)?.loss);
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGION: Placement = Placement {
        whole_frame: false,
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
        // The probe's recoloured scene negates the colour inside the squares only.
        let source = Source::Synthetic {
            placement: REGION,
            channels: 3,
        };
        let (latents, masks) = source.scene(3, true).unwrap();
        for ((changed, latent), mask) in source
            .recoloured(3)
            .unwrap()
            .iter()
            .zip(&latents)
            .zip(&masks)
        {
            let expected = (latent
                - (latent.broadcast_mul(&mask.unsqueeze(0).unwrap()).unwrap() * 2.0).unwrap())
            .unwrap();
            assert_eq!(values(changed), values(&expected));
            assert_ne!(values(changed), values(latent));
        }
        assert_ne!(colour_of(3), colour_of(4));
        let frame = Placement {
            whole_frame: true,
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
        let source = Source::Synthetic {
            placement: small,
            channels: 1,
        };
        let weighed = training_scene(&source, 0, &text, 8.0).unwrap();
        for shot in &weighed.shots {
            let weight = shot.weight.as_ref().expect("a weight when emphasised");
            let total: f32 = weight.sum_all().unwrap().to_scalar().unwrap();
            let plane = (FRAMES * SIDE * SIDE) as f32;
            assert_eq!(total, plane + 8.0 * (FRAMES * 2 * 2) as f32);
        }
        let plain = training_scene(&source, 0, &text, 0.0).unwrap();
        assert!(plain.shots.iter().all(|shot| shot.weight.is_none()));
        let err = run(&CopyTask {
            max_side: 3,
            ..settings(CopyVariant::Region)
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("--max-side 3"), "{err}");
    }

    fn settings(variant: CopyVariant) -> CopyTask {
        CopyTask {
            variant,
            max_side: 10,
            emphasis: 0.0,
            route_weight: 0.0,
            channels: None,
            autoencoder: None,
            patch: 2,
            qk_gain: 1.0,
            init: None,
            minutes: 0.0,
            batch: 1,
            every: 1,
        }
    }

    /// The world variants encode the world's shots with the embedded autoencoder, mark the
    /// character's pixels, and (`world-character`) put every scene in one environment.
    #[test]
    fn the_world_variants_carry_the_worlds_character_through_the_autoencoder() {
        let dir = crate::embedded_model_dir();
        let autoencoder = load_pipeline(&dir, candle_core::DType::F32, &Device::Cpu).unwrap();
        let channels = autoencoder.autoencoder().unwrap().latent_channels();
        let source = Source::World {
            autoencoder: Box::new(autoencoder),
            one_environment: true,
        };
        for held_out in [false, true] {
            let (latents, masks) = source.scene(3, held_out).unwrap();
            assert_eq!(latents.len(), SHOTS);
            for (latent, mask) in latents.iter().zip(&masks) {
                assert_eq!(latent.dims(), [channels, FRAMES, SIDE, SIDE]);
                assert_eq!(mask.dims(), [FRAMES, SIDE, SIDE]);
                let covered: f32 = mask.sum_all().unwrap().to_scalar().unwrap();
                assert!(covered > 0.0, "every shot shows its character");
            }
        }
        // The recoloured scene changes the character's pixels and nothing else.
        let (latents, masks) = source.scene(2, true).unwrap();
        for ((changed, latent), mask) in source
            .recoloured(2)
            .unwrap()
            .iter()
            .zip(&latents)
            .zip(&masks)
        {
            let diff = (changed - latent)
                .unwrap()
                .abs()
                .unwrap()
                .max_keepdim(0)
                .unwrap()
                .squeeze(0)
                .unwrap();
            let outside = diff
                .broadcast_mul(
                    &mask
                        .eq(0f32)
                        .unwrap()
                        .to_dtype(candle_core::DType::F32)
                        .unwrap(),
                )
                .unwrap();
            assert_eq!(outside.max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
            assert!(diff.max_all().unwrap().to_scalar::<f32>().unwrap() > 0.1);
        }
        // One environment for every scene, training or held out; the characters differ.
        let specs: Vec<SceneSpec> = (0..6)
            .flat_map(|seed| {
                [
                    source.world_spec(seed, false),
                    source.world_spec(seed, true),
                ]
            })
            .collect();
        assert!(specs
            .iter()
            .all(|spec| spec.environment == specs[0].environment));
        assert!(specs
            .iter()
            .any(|spec| spec.character != specs[0].character));
        // Flags that do not fit the variant are refused by name.
        let mut bad = settings(CopyVariant::World);
        bad.channels = Some(channels + 1);
        let err = run(&bad).unwrap_err().to_string();
        assert!(err.contains("--latent-channels"), "{err}");
        let mut bad = settings(CopyVariant::World);
        bad.init = Some(dir.clone());
        bad.patch = 4;
        let err = run(&bad).unwrap_err().to_string();
        assert!(
            err.contains("--init") && err.contains("--patch-size 4"),
            "{err}"
        );
        let mut bad = settings(CopyVariant::Region);
        bad.autoencoder = Some(dir);
        let err = run(&bad).unwrap_err().to_string();
        assert!(err.contains("--autoencoder"), "{err}");
    }
}
