//! The evaluation table: held-out scenes (character/environment pairs never seen in training)
//! generated seven ways (and, as the detectors' ceiling, the rendered shots themselves), each
//! measured from pixels by the world's detectors; below it a
//! 10-shot auto-regressive rollout with the KV cache ([`rollout`]) and the KV cache's speed
//! at 4 history shots ([`kv_speed`]).

use crate::data::{encode, held_out_scene, tensor_frames, Result};
use candle_core::{DType, Device, Tensor};
use lct_model::{
    cache_history, generate_autoregressive, load_pipeline, sample, HistoryMode, KvView, Pipeline,
    SamplerConfig, SceneRequest, ShotInput, ShotRole, StepControl,
};
use lct_world::{
    captions, cross_scene_agreement, environment_consistency, environment_reference_prompt,
    identity_attribute_consistency, identity_consistency, identity_reference_prompt,
    metrics_from_readings, read_shot, render_environment_reference, render_identity_reference,
    render_shot, CaptionMode, Clip, SceneCaptions, SceneSpec, ShotReading, MAX_SHOTS,
};
use std::path::Path;
use std::time::Instant;

const REFERENCE_INDEX: usize = 1 << 20;

pub(super) fn prompt_shots(
    pipeline: &Pipeline,
    spec: &SceneSpec,
    caps: &SceneCaptions,
) -> Result<Vec<ShotInput>> {
    (0..spec.shots.len())
        .map(|k| {
            Ok(ShotInput {
                text: pipeline.encode_shot_prompt(&caps.shots[k])?,
                latent_dims: pipeline.shot_latent_dims(spec.frames_per_shot)?,
                role: ShotRole::Generate,
                latent: None,
                scene_index: k,
            })
        })
        .collect()
}

pub(super) fn condition(
    pipeline: &Pipeline,
    prompt: &str,
    frames: &[lct_world::Frame],
    index: usize,
) -> Result<ShotInput> {
    let latent = encode(pipeline, frames)?.unsqueeze(0)?;
    let dims = latent.dims().to_vec();
    Ok(ShotInput {
        text: pipeline.encode_shot_prompt(prompt)?,
        latent_dims: [dims[1], dims[2], dims[3], dims[4]],
        role: ShotRole::Condition,
        latent: Some(latent),
        scene_index: index,
    })
}

/// `request` sampled to the end under `sampling` with its seed replaced by `seed`.
pub(super) fn sample_seeded(
    pipeline: &Pipeline,
    request: &SceneRequest,
    sampling: &SamplerConfig,
    seed: u64,
) -> Result<Vec<Tensor>> {
    let cfg = SamplerConfig {
        seed,
        ..sampling.clone()
    };
    Ok(sample(&pipeline.transformer, request, &cfg, None, |_| {
        StepControl::Continue
    })?)
}

pub(super) fn clip(pipeline: &Pipeline, latent: &Tensor) -> Result<Clip> {
    let frames = tensor_frames(&pipeline.autoencoder()?.decode(latent)?)?;
    Ok(Clip {
        width: frames[0].width,
        height: frames[0].height,
        frames,
    })
}

/// What the held-out scenes' captions say (`--captions`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Captions {
    /// Looks appear nowhere: consistency can only come from context (or, for the
    /// compositional row, from the given images).
    #[default]
    NoLooks,
    /// The global prompt names the character's looks and the environment, as the paper's
    /// scenes and the main job do: consistency can come from the prompt as well.
    GlobalLooks,
}

impl Captions {
    fn mode(self) -> CaptionMode {
        match self {
            Captions::NoLooks => CaptionMode::NoLooks,
            Captions::GlobalLooks => CaptionMode::GlobalLooks,
        }
    }

    /// How the settings line of a table names them.
    fn note(self) -> &'static str {
        match self {
            Captions::NoLooks => "captions without looks",
            Captions::GlobalLooks => "looks in the global prompt",
        }
    }
}

/// A row of the table (`--rows` picks some by these names).
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum Row {
    /// No generation: the held-out scene's own rendered shots through the autoencoder, the
    /// ceiling the detectors allow a model that reproduces the world exactly.
    Reference,
    Baseline,
    SingleAfterLct,
    Joint,
    AutoRegressive,
    KvCache,
    Compositional,
    Interpolation,
}

impl Row {
    pub(crate) const ALL: [Row; 8] = [
        Row::Reference,
        Row::Baseline,
        Row::SingleAfterLct,
        Row::Joint,
        Row::AutoRegressive,
        Row::KvCache,
        Row::Compositional,
        Row::Interpolation,
    ];
    pub(crate) fn name(self) -> &'static str {
        match self {
            Row::Reference => "reference: the rendered shots through the autoencoder (no model)",
            Row::Baseline => "single-shot model, shots generated independently (baseline)",
            Row::SingleAfterLct => "single-shot generation after LCT",
            Row::Joint => "LCT, bidirectional, joint",
            Row::AutoRegressive => "LCT, bidirectional, auto-regressive (history at t_c = 0.3)",
            Row::KvCache => "LCT, context-causal, auto-regressive with KV cache",
            Row::Compositional => "compositional: identity image + environment image as conditions",
            Row::Interpolation => "interpolation: first and last shot given, middle generated",
        }
    }
}

/// Generates `spec`'s shots as `row` does; returns the shots that count for its metrics.
fn generate(
    row: Row,
    models: [&Pipeline; 3],
    spec: &SceneSpec,
    cfg: &SamplerConfig,
    captions_given: Captions,
) -> Result<Vec<Tensor>> {
    let [pretrain, lct, causal] = models;
    let pipeline = match row {
        Row::Baseline => pretrain,
        Row::KvCache => causal,
        _ => lct,
    };
    let caps = captions(spec, captions_given.mode());
    let global = Some(pipeline.encode_global_prompt(&caps.global)?);
    let shots = prompt_shots(pipeline, spec, &caps)?;
    let model = &pipeline.transformer;
    let go = |_: &lct_model::StepInfo| StepControl::Continue;
    let joint = |shots: Vec<ShotInput>| {
        let request = SceneRequest {
            global_text: global.clone(),
            shots,
        };
        sample(model, &request, cfg, None, go)
    };
    Ok(match row {
        Row::Reference => (0..spec.shots.len())
            .map(|k| Ok(encode(pipeline, &render_shot(spec, k)?.frames)?.unsqueeze(0)?))
            .collect::<Result<Vec<_>>>()?,
        Row::Baseline | Row::SingleAfterLct => shots
            .into_iter()
            .map(|shot| {
                let request = SceneRequest {
                    global_text: global.clone(),
                    shots: vec![shot],
                };
                Ok(sample(model, &request, cfg, None, go)?.remove(0))
            })
            .collect::<Result<Vec<_>>>()?,
        Row::Joint => joint(shots)?,
        Row::AutoRegressive | Row::KvCache => {
            let mode = if row == Row::KvCache {
                HistoryMode::KvCache
            } else {
                HistoryMode::Recompute
            };
            generate_autoregressive(
                model,
                &SceneRequest {
                    global_text: global,
                    shots,
                },
                cfg,
                mode,
                |_, _| StepControl::Continue,
            )?
        }
        Row::Compositional => {
            let identity = render_identity_reference(&spec.character, spec.width, spec.height);
            let environment =
                render_environment_reference(&spec.environment, spec.width, spec.height);
            let mut all = vec![
                condition(
                    pipeline,
                    identity_reference_prompt(),
                    &[identity],
                    REFERENCE_INDEX,
                )?,
                condition(
                    pipeline,
                    environment_reference_prompt(),
                    &[environment],
                    REFERENCE_INDEX + 1,
                )?,
            ];
            all.extend(shots);
            let mut out = joint(all)?;
            out.drain(..2);
            out
        }
        Row::Interpolation => {
            let last = spec.shots.len() - 1;
            let mut all = shots;
            for k in [0, last] {
                all[k] = condition(pipeline, &caps.shots[k], &render_shot(spec, k)?.frames, k)?;
            }
            joint(all)?
        }
    })
}

#[derive(Default)]
struct Totals {
    identity: f64,
    environment: f64,
    tone: f64,
    text: f64,
    motion: f64,
    sharpness: f64,
    seconds: f64,
    matches: f64,
    /// Compositional row: the fraction of shots that show the given identity, environment,
    /// colour, shape and pattern, each on its own (`matches` needs identity and environment).
    given: [f64; 5],
    /// Identity agreement by attribute: colour, shape, pattern.
    attributes: [f64; 3],
    scenes: f64,
}

/// How a table header names the sampler: steps, guidance, and the timestep shift and context
/// guidance when they are on.
pub(super) fn sampling_note(cfg: &SamplerConfig) -> String {
    let mut note = format!("{} steps, cfg {:.1}", cfg.steps, cfg.guidance);
    if cfg.shift != 1.0 {
        note += &format!(", shift {:.1}", cfg.shift);
    }
    if cfg.context_guidance != 1.0 {
        note += &format!(", context guidance {:.1}", cfg.context_guidance);
    }
    note
}

/// What `lct-train eval` measures.
pub struct Options {
    /// Held-out scenes of the table.
    pub scenes: u64,
    /// Steps, guidance and timestep shift of every generation (the seed is set per scene).
    pub sampling: SamplerConfig,
    /// Held-out 5-shot scenes of the 10-shot rollout and of the KV-cache timing.
    pub rollout_scenes: u64,
    /// Skip the table (rollout and timing only).
    pub only_extras: bool,
    /// The table's rows to run (empty: all).
    pub rows: Vec<Row>,
    /// What the held-out captions say (table, rollout and timing alike).
    pub captions: Captions,
}

pub fn run(pretrain: &Path, lct: &Path, causal: &Path, out: &Path, opts: &Options) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let device = Device::Cpu;
    let load = |dir: &Path| load_pipeline(dir, DType::F32, &device);
    let (pretrain, lct, causal) = (load(pretrain)?, load(lct)?, load(causal)?);
    let scenes = opts.scenes;
    let cfg = SamplerConfig {
        seed: 1,
        ..opts.sampling.clone()
    };
    cfg.validate()?;
    let mut lines = Vec::new();
    if !opts.only_extras {
        lines.extend(table(
            [&pretrain, &lct, &causal],
            out,
            scenes,
            &cfg,
            &opts.rows,
            opts.captions,
        )?);
        lines.push(String::new());
    }
    if opts.rollout_scenes > 0 {
        lines.extend(rollout(
            &causal,
            out,
            opts.rollout_scenes,
            &cfg,
            opts.captions,
        )?);
        lines.push(String::new());
        println!();
        lines.extend(kv_speed(
            &lct,
            &causal,
            opts.rollout_scenes,
            &cfg,
            opts.captions,
        )?);
    }
    std::fs::write(out.join("eval.md"), lines.join("\n") + "\n")?;
    println!("wrote {}", out.join("eval.md").display());
    Ok(())
}

/// The table: the reference and the 7 generated rows (one contact sheet each); returns its lines.
fn table(
    models: [&Pipeline; 3],
    out: &Path,
    scenes: u64,
    cfg: &SamplerConfig,
    rows: &[Row],
    captions_given: Captions,
) -> Result<Vec<String>> {
    let [pretrain, lct, causal] = models;
    let mut lines = vec![
        format!("held-out scenes: {scenes} (at least 3 shots each; {}), {}\n", captions_given.note(), sampling_note(cfg)),
        "| method | identity | environment | tone | text | motion | sharpness | matches given | s / scene |".to_owned(),
        "|---|---|---|---|---|---|---|---|---|".to_owned(),
    ];
    for line in &lines {
        println!("{line}");
    }
    let mut by_attribute = vec![
        String::new(),
        "identity by attribute (shot pairs whose colour, shape or pattern alone agree):\n"
            .to_owned(),
        "| method | colour | shape | pattern |".to_owned(),
        "|---|---|---|---|".to_owned(),
    ];
    let mut given_split = None;
    let mut by_chance = vec![
        String::new(),
        "consistency against chance: the table's within-scene agreement beside the agreement of \
         shot pairs from different held-out scenes (same row), and kappa = (within - across) / \
         (1 - across), 0 when shots agree no more with their own scene than with any other:\n"
            .to_owned(),
        "| method | identity: within / across / kappa | environment | tone |".to_owned(),
        "|---|---|---|---|".to_owned(),
    ];
    for row in Row::ALL
        .into_iter()
        .filter(|r| rows.is_empty() || rows.contains(r))
    {
        let mut totals = Totals::default();
        let mut sheet_rows = Vec::new();
        let mut scene_readings = Vec::new();
        for i in 0..scenes {
            let spec = held_out_scene(i, 3);
            let started = Instant::now();
            let latents = generate(row, [pretrain, lct, causal], &spec, cfg, captions_given)?;
            totals.seconds += started.elapsed().as_secs_f64();
            let pipeline = match row {
                Row::Baseline => pretrain,
                Row::KvCache => causal,
                _ => lct,
            };
            let clips = latents
                .iter()
                .map(|l| clip(pipeline, l))
                .collect::<Result<Vec<_>>>()?;
            let readings: Vec<ShotReading> = clips.iter().map(read_shot).collect();
            let m = metrics_from_readings(&spec, &readings);
            for (total, part) in totals
                .attributes
                .iter_mut()
                .zip(identity_attribute_consistency(&readings))
            {
                *total += part as f64;
            }
            totals.identity += m.identity_consistency as f64;
            totals.environment += m.environment_consistency as f64;
            totals.tone += m.tone_consistency as f64;
            totals.text += m.text_alignment as f64;
            totals.motion += m.motion_continuity as f64;
            totals.sharpness += m.sharpness as f64;
            if row == Row::Compositional {
                let want = (
                    spec.character.colour,
                    spec.character.shape,
                    spec.character.pattern,
                );
                let shown = |r: &ShotReading| {
                    [
                        r.identity() == Some(want),
                        r.environment.as_ref() == Some(&spec.environment),
                        r.colour == Some(want.0),
                        r.shape == Some(want.1),
                        r.pattern == Some(want.2),
                    ]
                };
                let per_shot = 1.0 / readings.len() as f64;
                for r in &readings {
                    let parts = shown(r);
                    if parts[0] && parts[1] {
                        totals.matches += per_shot;
                    }
                    for (total, hit) in totals.given.iter_mut().zip(parts) {
                        *total += if hit { per_shot } else { 0.0 };
                    }
                }
            }
            scene_readings.push(readings);
            totals.scenes += 1.0;
            if i == 0 {
                sheet_rows = clips.into_iter().map(|c| c.frames).collect();
            }
        }
        let n = totals.scenes;
        let matches = if row == Row::Compositional {
            let [identity, environment, colour, shape, pattern] = totals.given.map(|g| g / n);
            given_split = Some(format!(
                "compositional, the given looks shown, each on its own (fraction of shots): \
                 identity {identity:.2}, environment {environment:.2}, colour {colour:.2}, \
                 shape {shape:.2}, pattern {pattern:.2}"
            ));
            format!("{:.2}", totals.matches / n)
        } else {
            "-".into()
        };
        let line = format!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} | {matches} | {:.1} |",
            row.name(),
            totals.identity / n,
            totals.environment / n,
            totals.tone / n,
            totals.text / n,
            totals.motion / n,
            totals.sharpness / n,
            totals.seconds / n
        );
        println!("{line}");
        lines.push(line);
        let within = [totals.identity, totals.environment, totals.tone].map(|w| w / n);
        let across = cross_scene_agreement(&scene_readings).map(f64::from);
        let cells: Vec<String> = within
            .iter()
            .zip(across)
            .map(|(&w, a)| format!("{w:.2} / {a:.2} / {:.2}", chance_corrected(w, a)))
            .collect();
        by_chance.push(format!("| {} | {} |", row.name(), cells.join(" | ")));
        let [colour, shape, pattern] = totals.attributes.map(|a| a / n);
        by_attribute.push(format!(
            "| {} | {colour:.2} | {shape:.2} | {pattern:.2} |",
            row.name()
        ));
        // Generated rows keep their numbers (row1 is the baseline); the reference has its own name.
        let file = match row {
            Row::Reference => out.join("reference.png"),
            _ => out.join(format!(
                "row{}.png",
                Row::ALL.iter().position(|r| *r == row).unwrap_or(0)
            )),
        };
        lct_world::contact_sheet(&sheet_rows, 2).save(&file)?;
    }
    if let Some(split) = given_split {
        by_attribute.extend([String::new(), split]);
    }
    by_attribute.extend(by_chance);
    for line in &by_attribute {
        println!("{line}");
    }
    lines.extend(by_attribute);
    Ok(lines)
}

/// Cohen's kappa of an agreement rate against its chance rate: 1 for perfect agreement, 0 for
/// agreement at chance, negative below it (0 when chance agreement is already 1).
fn chance_corrected(within: f64, across: f64) -> f64 {
    if across >= 1.0 {
        0.0
    } else {
        (within - across) / (1.0 - across)
    }
}

/// Shots of the long auto-regressive rollout.
const ROLLOUT_SHOTS: usize = 10;

/// Per-shot prompts of a rollout longer than the world's scenes.
///
/// Rule: the scene is a held-out spec with [`MAX_SHOTS`] (= 5) shots, whose prompts are used
/// as they are for shots 1..5. The vocabulary only has the shot numbers 1..5 (it must not
/// change: the trained weights depend on it), so shot k > 5 repeats the prompt of shot
/// ((k - 1) mod 5) + 1 (shots 6..10 repeat shots 1..5 cyclically: same framing, same action)
/// with its tag replaced by the last available number, "[SHOT 5]".
fn rollout_prompts(caps: &SceneCaptions, shots: usize) -> Result<Vec<String>> {
    let n = caps.shots.len();
    if n != MAX_SHOTS {
        return Err(format!("a rollout scene needs {MAX_SHOTS} shots, this one has {n}").into());
    }
    (0..shots)
        .map(|k| {
            if k < n {
                return Ok(caps.shots[k].clone());
            }
            let j = k % n;
            let tag = format!("[SHOT {}]", j + 1);
            let body = caps.shots[j].strip_prefix(&tag).ok_or_else(|| {
                format!("shot prompt {:?} does not start with {tag}", caps.shots[j])
            })?;
            Ok(format!("[SHOT {MAX_SHOTS}]{body}"))
        })
        .collect()
}

/// Identity and environment of `shot` agree with `first` (the table's pair rule: an
/// attribute that was not read never agrees); 1 or 0 each.
fn agrees_with_first(first: &ShotReading, shot: &ShotReading) -> (f64, f64) {
    let pair = [first.clone(), shot.clone()];
    (
        identity_consistency(&pair) as f64,
        environment_consistency(&pair) as f64,
    )
}

/// Mean RGB over every pixel of every frame of a clip.
fn mean_rgb(clip: &Clip) -> [f64; 3] {
    let mut sum = [0.0f64; 3];
    let mut count = 0usize;
    for frame in &clip.frames {
        for p in frame.data.chunks_exact(3) {
            for c in 0..3 {
                sum[c] += p[c] as f64;
            }
            count += 1;
        }
    }
    sum.map(|v| v / count.max(1) as f64)
}

/// Euclidean distance between two RGB colours (channels in [0, 1]).
fn colour_distance(a: [f64; 3], b: [f64; 3]) -> f64 {
    (0..3).map(|c| (a[c] - b[c]).powi(2)).sum::<f64>().sqrt()
}

/// 10-shot auto-regressive rollout of the context-causal model with the KV cache, once with
/// t_c = 0 (clean history) and once with the sampler's default t_c, on `scenes` held-out
/// 5-shot scenes (prompts from [`rollout_prompts`]). For shots 2 and 10 it reports identity and
/// environment agreement with shot 1, sharpness (the table's quality statistic) and colour
/// drift from shot 1 (distance of the shots' mean RGB: a collapse into a haze shows here even
/// where the categorical detectors read nothing for either setting); writes
/// rollout.png (one row per t_c, the middle frame of each shot of the first scene).
fn rollout(
    causal: &Pipeline,
    out: &Path,
    scenes: u64,
    cfg: &SamplerConfig,
    captions_given: Captions,
) -> Result<Vec<String>> {
    let settings = [0.0, SamplerConfig::default().history_timestep];
    let mut lines = vec![
        format!(
            "## {ROLLOUT_SHOTS}-shot auto-regressive rollout (context-causal model, history kept as K/V)\n"
        ),
        format!(
            "held-out 5-shot scenes: {scenes}, {}; {}. The vocabulary \
             only has [SHOT 1]..[SHOT 5]: shots 6..10 repeat the prompts of shots 1..5 in order \
             (same framing and action) tagged \"[SHOT 5]\". Identity / environment: fraction of \
             scenes where the shot's (colour, shape, pattern) / (sky, ground, horizon), read from \
             pixels, equal shot 1's (unread never agrees). Colour drift: distance between the shot's and shot 1's \
             mean RGB (channels in [0, 1]). Sharpness: mean luminance gradient, \
             as in the table (compare with the reference below: far above it is noise, not detail).\n",
            sampling_note(cfg),
            captions_given.note()
        ),
        "| history t_c | identity, shot 2 | identity, shot 10 | environment, shot 2 | environment, shot 10 | sharpness, shot 2 | sharpness, shot 10 | colour drift, shot 2 | colour drift, shot 10 | s / rollout |".to_owned(),
        "|---|---|---|---|---|---|---|---|---|---|".to_owned(),
    ];
    for line in &lines {
        println!("{line}");
    }
    let mut sheet = Vec::new();
    let mut per_shot = Vec::new();
    for t_c in settings {
        let cfg = SamplerConfig {
            history_timestep: t_c,
            ..cfg.clone()
        };
        let mut identity = vec![0.0; ROLLOUT_SHOTS];
        let mut environment = vec![0.0; ROLLOUT_SHOTS];
        let mut sharpness = vec![0.0; ROLLOUT_SHOTS];
        let mut drift = vec![0.0; ROLLOUT_SHOTS];
        let mut seconds = 0.0;
        for i in 0..scenes {
            let spec = held_out_scene(i, MAX_SHOTS);
            let caps = captions(&spec, captions_given.mode());
            let dims = causal.shot_latent_dims(spec.frames_per_shot)?;
            let shots = rollout_prompts(&caps, ROLLOUT_SHOTS)?
                .iter()
                .enumerate()
                .map(|(k, prompt)| {
                    Ok(ShotInput {
                        text: causal.encode_shot_prompt(prompt)?,
                        latent_dims: dims,
                        role: ShotRole::Generate,
                        latent: None,
                        scene_index: k,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let request = SceneRequest {
                global_text: Some(causal.encode_global_prompt(&caps.global)?),
                shots,
            };
            let started = Instant::now();
            let latents = generate_autoregressive(
                &causal.transformer,
                &request,
                &cfg,
                HistoryMode::KvCache,
                |_, _| StepControl::Continue,
            )?;
            seconds += started.elapsed().as_secs_f64();
            let clips = latents
                .iter()
                .map(|l| clip(causal, l))
                .collect::<Result<Vec<_>>>()?;
            let readings: Vec<ShotReading> = clips.iter().map(read_shot).collect();
            for (k, reading) in readings.iter().enumerate() {
                let (id, env) = agrees_with_first(&readings[0], reading);
                identity[k] += id;
                environment[k] += env;
                sharpness[k] += reading.sharpness as f64;
                drift[k] += colour_distance(mean_rgb(&clips[0]), mean_rgb(&clips[k]));
            }
            if i == 0 {
                sheet.push(
                    clips
                        .iter()
                        .map(|c| c.frames[c.frames.len() / 2].clone())
                        .collect::<Vec<_>>(),
                );
            }
        }
        let n = scenes as f64;
        let last = ROLLOUT_SHOTS - 1;
        let line = format!(
            "| {t_c:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} |",
            identity[1] / n,
            identity[last] / n,
            environment[1] / n,
            environment[last] / n,
            sharpness[1] / n,
            sharpness[last] / n,
            drift[1] / n,
            drift[last] / n,
            seconds / n
        );
        println!("{line}");
        lines.push(line);
        let row = |v: &[f64], digits: usize| {
            v.iter()
                .map(|x| format!("{:.digits$}", x / n))
                .collect::<Vec<_>>()
                .join(" ")
        };
        per_shot.push(format!(
            "- t_c = {t_c:.1}, shots 1..{ROLLOUT_SHOTS}: identity as shot 1: {}; environment as shot 1: {}; sharpness: {}; colour drift: {}",
            row(&identity, 2),
            row(&environment, 2),
            row(&sharpness, 3),
            row(&drift, 3)
        ));
    }
    // What the pixels should look like: the rendered shots and their autoencoder round trip.
    let (mut rendered, mut round_trip, mut count) = (0.0, 0.0, 0.0);
    let (mut rendered_drift, mut drift_count) = (0.0, 0.0);
    for i in 0..scenes {
        let spec = held_out_scene(i, MAX_SHOTS);
        let mut first = None;
        for k in 0..spec.shots.len() {
            let shot = render_shot(&spec, k)?;
            rendered += read_shot(&shot).sharpness as f64;
            let latent = encode(causal, &shot.frames)?.unsqueeze(0)?;
            round_trip += read_shot(&clip(causal, &latent)?).sharpness as f64;
            count += 1.0;
            let rgb = mean_rgb(&shot);
            match first {
                None => first = Some(rgb),
                Some(first) => {
                    rendered_drift += colour_distance(first, rgb);
                    drift_count += 1.0;
                }
            }
        }
    }
    per_shot.push(format!(
        "- reference, the same scenes' 5 rendered shots: sharpness {:.3} (through the autoencoder {:.3}); colour drift of shots 2..5 from shot 1 {:.3}",
        rendered / count,
        round_trip / count,
        rendered_drift / f64::max(drift_count, 1.0)
    ));
    lines.push(String::new());
    for line in per_shot {
        println!("{line}");
        lines.push(line);
    }
    let note = format!(
        "\nrollout.png: first scene, middle frame of shots 1..{ROLLOUT_SHOTS}; top row t_c = {:.1}, bottom row t_c = {:.1}.",
        settings[0], settings[1]
    );
    println!("{note}");
    lines.push(note);
    lct_world::contact_sheet(&sheet, 2).save(out.join("rollout.png"))?;
    Ok(lines)
}

/// Seconds of `f` and its value.
fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(f64, T)> {
    let started = Instant::now();
    let value = f()?;
    Ok((started.elapsed().as_secs_f64(), value))
}

/// Largest absolute difference of two tensors.
fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// Time to generate shot 5 given 4 history shots (the scene's rendered shots 1..4, encoded),
/// same steps and cfg as the table, averaged over `scenes` held-out 5-shot scenes:
/// (a) the bidirectional LCT model re-running the history (at t_c) at every step, against
/// (b) the context-causal model with the history cached as K/V once (timed apart, so the
/// shot is reported with and without building the cache). The context-causal model is also
/// run recomputing its history, to check that the cache gives the same shot and to time the
/// same model both ways.
fn kv_speed(
    lct: &Pipeline,
    causal: &Pipeline,
    scenes: u64,
    cfg: &SamplerConfig,
    captions_given: Captions,
) -> Result<Vec<String>> {
    const HISTORY: usize = 4;
    let go = |_: &lct_model::StepInfo| StepControl::Continue;
    let (mut recompute, mut build, mut cached, mut causal_recompute, mut diff) =
        (0.0, 0.0, 0.0, 0.0, 0.0f32);
    for i in 0..scenes {
        let spec = held_out_scene(i, MAX_SHOTS);
        let caps = captions(&spec, captions_given.mode());
        // The full request: 4 history shots at t_c, then shot 5 to generate.
        let request = |pipeline: &Pipeline| -> Result<SceneRequest> {
            let mut shots = prompt_shots(pipeline, &spec, &caps)?;
            shots.truncate(HISTORY + 1);
            for (k, shot) in shots.iter_mut().take(HISTORY).enumerate() {
                shot.role = ShotRole::History;
                shot.latent = Some(encode(pipeline, &render_shot(&spec, k)?.frames)?.unsqueeze(0)?);
            }
            Ok(SceneRequest {
                global_text: Some(pipeline.encode_global_prompt(&caps.global)?),
                shots,
            })
        };
        let (full_lct, full_causal) = (request(lct)?, request(causal)?);
        let (a, _) = timed(|| Ok(sample(&lct.transformer, &full_lct, cfg, None, go)?))?;
        let history = SceneRequest {
            global_text: full_causal.global_text.clone(),
            shots: full_causal.shots[..HISTORY].to_vec(),
        };
        let (b_build, cache) = timed(|| {
            Ok(cache_history(
                &causal.transformer,
                &history,
                cfg,
                &KvView::empty(),
            )?)
        })?;
        let next = SceneRequest {
            global_text: None,
            shots: full_causal.shots[HISTORY..].to_vec(),
        };
        let (b, with_cache) =
            timed(|| Ok(sample(&causal.transformer, &next, cfg, Some(&cache), go)?))?;
        let (c, without_cache) =
            timed(|| Ok(sample(&causal.transformer, &full_causal, cfg, None, go)?))?;
        diff = diff.max(max_abs_diff(&with_cache[0], &without_cache[HISTORY])?);
        recompute += a;
        build += b_build;
        cached += b;
        causal_recompute += c;
    }
    let n = scenes as f64;
    let (a, build, b, c) = (recompute / n, build / n, cached / n, causal_recompute / n);
    let lines = vec![
        format!("## KV cache speed at {HISTORY} history shots\n"),
        format!(
            "shot 5 after {HISTORY} history shots ({}, mean of {scenes} held-out scenes, history = the rendered shots 1..4): \
             recompute {a:.2} s, KV cache {b:.2} s ({:.1}x faster; {:.2} s including building the cache, {:.1}x)",
            sampling_note(cfg),
            a / b,
            b + build,
            a / (b + build)
        ),
        String::new(),
        format!(
            "- recompute: the bidirectional LCT model re-runs the {HISTORY} history shots at t_c = {:.1} at every step; \
             KV cache: the context-causal model (same size) caches them once ({build:.2} s) and attends to the cached K/V",
            cfg.history_timestep
        ),
        format!(
            "- the context-causal model recomputing its history instead: {c:.2} s; its shot 5 differs from the cached one by at most {diff:.1e}"
        ),
    ];
    for line in &lines {
        println!("{line}");
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caption_setting_is_named_in_the_table() {
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mmdit_model");
        let pipeline = load_pipeline(&model, DType::F32, &Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg = SamplerConfig {
            seed: 1,
            ..SamplerConfig::default()
        };
        for captions_given in [Captions::NoLooks, Captions::GlobalLooks] {
            let out = dir.path().join(format!("{captions_given:?}"));
            std::fs::create_dir_all(&out).unwrap();
            let models = [&pipeline, &pipeline, &pipeline];
            let lines = table(models, &out, 1, &cfg, &[Row::Reference], captions_given).unwrap();
            // The rendered shots are the same either way: only the settings line tells
            // the two tables apart.
            assert!(lines[0].contains(captions_given.note()), "{}", lines[0]);
        }
    }
}
