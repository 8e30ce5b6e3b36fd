//! The evaluation table: held-out scenes (character/environment pairs never seen in training)
//! generated seven ways, each measured from pixels by the world's detectors.

use crate::data::{encode, held_out_scene, tensor_frames, Result};
use candle_core::{DType, Device, Tensor};
use lct_model::{
    generate_autoregressive, load_pipeline, sample, HistoryMode, Pipeline, SamplerConfig,
    SceneRequest, ShotInput, ShotRole, StepControl,
};
use lct_world::{
    captions, environment_reference_prompt, identity_reference_prompt, read_shot,
    render_environment_reference, render_identity_reference, render_shot, scene_metrics,
    CaptionMode, Clip, SceneCaptions, SceneSpec,
};
use std::path::Path;
use std::time::Instant;

const REFERENCE_INDEX: usize = 1 << 20;

fn prompt_shots(
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

fn condition(
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

fn clip(pipeline: &Pipeline, latent: &Tensor) -> Result<Clip> {
    let frames = tensor_frames(&pipeline.autoencoder()?.decode(latent)?)?;
    Ok(Clip {
        width: frames[0].width,
        height: frames[0].height,
        frames,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Row {
    Baseline,
    SingleAfterLct,
    Joint,
    AutoRegressive,
    KvCache,
    Compositional,
    Interpolation,
}

impl Row {
    const ALL: [Row; 7] = [
        Row::Baseline,
        Row::SingleAfterLct,
        Row::Joint,
        Row::AutoRegressive,
        Row::KvCache,
        Row::Compositional,
        Row::Interpolation,
    ];
    fn name(self) -> &'static str {
        match self {
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
) -> Result<Vec<Tensor>> {
    let [pretrain, lct, causal] = models;
    let pipeline = match row {
        Row::Baseline => pretrain,
        Row::KvCache => causal,
        _ => lct,
    };
    // Looks appear nowhere in the prompts: consistency can only come from context (or, for
    // the compositional row, from the given images).
    let caps = captions(spec, CaptionMode::NoLooks);
    let global = Some(pipeline.encode_global_prompt(&caps.global)?);
    let shots = prompt_shots(pipeline, spec, &caps)?;
    let model = &pipeline.transformer;
    let go = |_: &lct_model::StepInfo| StepControl::Continue;
    Ok(match row {
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
        Row::Joint => sample(
            model,
            &SceneRequest {
                global_text: global,
                shots,
            },
            cfg,
            None,
            go,
        )?,
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
            let mut out = sample(
                model,
                &SceneRequest {
                    global_text: global,
                    shots: all,
                },
                cfg,
                None,
                go,
            )?;
            out.drain(..2);
            out
        }
        Row::Interpolation => {
            let last = spec.shots.len() - 1;
            let mut all = shots;
            for k in [0, last] {
                all[k] = condition(pipeline, &caps.shots[k], &render_shot(spec, k)?.frames, k)?;
            }
            sample(
                model,
                &SceneRequest {
                    global_text: global,
                    shots: all,
                },
                cfg,
                None,
                go,
            )?
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
    scenes: f64,
}

pub fn run(
    pretrain: &Path,
    lct: &Path,
    causal: &Path,
    out: &Path,
    scenes: u64,
    steps: usize,
) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let device = Device::Cpu;
    let load = |dir: &Path| load_pipeline(dir, DType::F32, &device);
    let (pretrain, lct, causal) = (load(pretrain)?, load(lct)?, load(causal)?);
    let cfg = SamplerConfig {
        steps,
        guidance: 3.0,
        seed: 1,
        ..SamplerConfig::default()
    };
    let mut lines = vec![
        format!("held-out scenes: {scenes} (at least 3 shots each; captions without looks), {steps} steps, cfg 3.0\n"),
        "| method | identity | environment | tone | text | motion | sharpness | matches given | s / scene |".to_owned(),
        "|---|---|---|---|---|---|---|---|---|".to_owned(),
    ];
    for row in Row::ALL {
        let mut totals = Totals::default();
        let mut sheet_rows = Vec::new();
        for i in 0..scenes {
            let spec = held_out_scene(i, 3);
            let started = Instant::now();
            let latents = generate(row, [&pretrain, &lct, &causal], &spec, &cfg)?;
            totals.seconds += started.elapsed().as_secs_f64();
            let pipeline = match row {
                Row::Baseline => &pretrain,
                Row::KvCache => &causal,
                _ => &lct,
            };
            let clips = latents
                .iter()
                .map(|l| clip(pipeline, l))
                .collect::<Result<Vec<_>>>()?;
            let m = scene_metrics(&spec, &clips);
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
                let hits = clips
                    .iter()
                    .filter(|c| {
                        let r = read_shot(c);
                        r.identity() == Some(want)
                            && r.environment.as_ref() == Some(&spec.environment)
                    })
                    .count();
                totals.matches += hits as f64 / clips.len() as f64;
            }
            totals.scenes += 1.0;
            if i == 0 {
                sheet_rows = clips.into_iter().map(|c| c.frames).collect();
            }
        }
        let n = totals.scenes;
        let matches = if row == Row::Compositional {
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
        let file = out.join(format!(
            "row{}.png",
            Row::ALL.iter().position(|r| *r == row).unwrap_or(0) + 1
        ));
        lct_world::contact_sheet(&sheet_rows, 2).save(&file)?;
    }
    std::fs::write(out.join("eval.md"), lines.join("\n") + "\n")?;
    println!("wrote {}", out.join("eval.md").display());
    Ok(())
}
