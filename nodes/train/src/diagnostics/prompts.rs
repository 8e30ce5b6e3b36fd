//! Prompt following: single shots generated from captions that spell out the looks, read back
//! from pixels by the world's detectors.

use super::eval::{clip, prompt_shots, sample_seeded, sampling_note};
use crate::data::{encode, held_out_scene, Result};
use candle_core::{DType, Device};
use lct_model::{load_pipeline, SamplerConfig, SceneRequest};
use lct_world::{captions, read_shot, render_shot, CaptionMode, SceneSpec, ShotReading};

/// Prompt following: for each checkpoint, the first shot of `scenes` held-out scenes generated
/// alone from captions that spell out the looks (the global prompt names the character and the
/// environment), and the fraction of shots whose attributes, read from pixels, are the ones
/// asked for. The reference row reads the rendered shots through the first checkpoint's
/// autoencoder. Returns the table's lines.
pub fn probe_prompts(
    models: &[std::path::PathBuf],
    scenes: u64,
    sampling: &SamplerConfig,
) -> Result<Vec<String>> {
    sampling.validate()?;
    let columns = [
        "colour", "shape", "pattern", "sky", "ground", "horizon", "framing", "action",
    ];
    let mut lines = vec![
        format!("prompt following: shot 1 of {scenes} held-out scenes generated alone, looks in the global prompt, {}", sampling_note(sampling)),
        String::new(),
        format!("| model | {} |", columns.join(" | ")),
        format!("|---|{}", "---|".repeat(columns.len())),
    ];
    let score = |spec: &SceneSpec, r: &ShotReading| -> [bool; 8] {
        let env = r.environment;
        [
            r.colour == Some(spec.character.colour),
            r.shape == Some(spec.character.shape),
            r.pattern == Some(spec.character.pattern),
            env.is_some_and(|e| e.sky == spec.environment.sky),
            env.is_some_and(|e| e.ground == spec.environment.ground),
            env.is_some_and(|e| e.horizon == spec.environment.horizon),
            r.framing == Some(spec.shots[0]),
            r.action == Some(spec.action),
        ]
    };
    let row = |name: String, hits: [u32; 8]| {
        let cells: Vec<String> = hits
            .iter()
            .map(|&h| format!("{:.2}", h as f64 / scenes.max(1) as f64))
            .collect();
        format!("| {name} | {} |", cells.join(" | "))
    };
    for (m, dir) in models.iter().enumerate() {
        let pipeline = load_pipeline(dir, DType::F32, &Device::Cpu)?;
        let mut hits = [0u32; 8];
        let mut reference = [0u32; 8];
        for i in 0..scenes {
            let spec = held_out_scene(i, 1);
            let caps = captions(&spec, CaptionMode::GlobalLooks);
            let shot = prompt_shots(&pipeline, &spec, &caps)?.remove(0);
            let request = SceneRequest {
                global_text: Some(pipeline.encode_global_prompt(&caps.global)?),
                shots: vec![shot],
            };
            let out = sample_seeded(&pipeline, &request, sampling, i)?;
            for (hit, ok) in hits
                .iter_mut()
                .zip(score(&spec, &read_shot(&clip(&pipeline, &out[0])?)))
            {
                *hit += u32::from(ok);
            }
            if m == 0 {
                let rendered = render_shot(&spec, 0)?;
                let through = clip(
                    &pipeline,
                    &encode(&pipeline, &rendered.frames)?.unsqueeze(0)?,
                )?;
                for (hit, ok) in reference.iter_mut().zip(score(&spec, &read_shot(&through))) {
                    *hit += u32::from(ok);
                }
            }
        }
        if m == 0 {
            lines.push(row(
                "reference: rendered shots through the autoencoder".into(),
                reference,
            ));
            println!("{}", lines.last().expect("a row was pushed"));
        }
        lines.push(row(format!("`{}`", dir.display()), hits));
        println!("{}", lines.last().expect("a row was pushed"));
    }
    Ok(lines)
}
