//! `lct-world`: renders scenes to a folder so a person can look at the world.
//!
//! Usage: `lct-world [--out DIR] [--scenes N] [--seed S] [--split train|held-out]
//!                   [--width W] [--height H] [--frames F] [--scale K]`
//!
//! For scene i it writes `DIR/scene_NNN/` with `identity.png`, `environment.png`,
//! `shot_K_frame_F.png`, `contact.png` (row 1: references; then one row per shot) and
//! `captions.json` (spec, captions in every mode, reference prompts and the detector metrics).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use lct_world::{
    captions, environment_reference_prompt, identity_reference_prompt,
    render_environment_reference, render_identity_reference, render_scene, sample_scene_with,
    scene_contact_sheet, scene_metrics, CaptionMode, Split, WorldConfig, WorldError,
};

struct Args {
    out: PathBuf,
    scenes: u64,
    seed: u64,
    split: Split,
    config: WorldConfig,
    scale: usize,
}

const USAGE: &str =
    "usage: lct-world [--out DIR] [--scenes N] [--seed S] [--split train|held-out] \
[--width W] [--height H] [--frames F] [--scale K]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        out: PathBuf::from("world_out"),
        scenes: 4,
        seed: 0,
        split: Split::Train,
        config: WorldConfig::default(),
        scale: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_string());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--out" => a.out = PathBuf::from(value),
            "--scenes" => a.scenes = num(&value)?,
            "--seed" => a.seed = num(&value)?,
            "--split" => {
                a.split = match value.as_str() {
                    "train" => Split::Train,
                    "held-out" | "heldout" => Split::HeldOut,
                    _ => return Err(format!("--split must be train or held-out, got {value}")),
                }
            }
            "--width" => a.config.width = num(&value)? as usize,
            "--height" => a.config.height = num(&value)? as usize,
            "--frames" => a.config.frames_per_shot = num(&value)? as usize,
            "--scale" => a.scale = num(&value)? as usize,
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn mkdir(p: &Path) -> Result<(), WorldError> {
    std::fs::create_dir_all(p).map_err(|source| WorldError::Io {
        path: p.display().to_string(),
        source,
    })
}

fn run(args: &Args) -> Result<(), WorldError> {
    for i in 0..args.scenes {
        let seed = args.seed + i;
        let spec = sample_scene_with(seed, args.split, &args.config)?;
        let dir = args.out.join(format!("scene_{i:03}"));
        mkdir(&dir)?;
        render_identity_reference(&spec.character, spec.width, spec.height)
            .save_png(&dir.join("identity.png"))?;
        render_environment_reference(&spec.environment, spec.width, spec.height)
            .save_png(&dir.join("environment.png"))?;
        let clips = render_scene(&spec)?;
        for (k, clip) in clips.iter().enumerate() {
            for (f, frame) in clip.frames.iter().enumerate() {
                frame.save_png(&dir.join(format!("shot_{}_frame_{f}.png", k + 1)))?;
            }
        }
        let sheet_path = dir.join("contact.png");
        scene_contact_sheet(&spec, args.scale)?
            .save_with_format(&sheet_path, image::ImageFormat::Png)
            .map_err(|source| WorldError::Image {
                path: sheet_path.display().to_string(),
                source,
            })?;
        let caps: Vec<_> = CaptionMode::ALL
            .iter()
            .map(|&m| captions(&spec, m))
            .collect();
        let doc = serde_json::json!({
            "spec": spec,
            "captions": caps,
            "identity_reference_prompt": identity_reference_prompt(),
            "environment_reference_prompt": environment_reference_prompt(),
            "metrics_on_ground_truth": scene_metrics(&spec, &clips),
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|source| WorldError::Json {
            what: "captions".into(),
            source,
        })?;
        let path = dir.join("captions.json");
        std::fs::write(&path, text).map_err(|source| WorldError::Io {
            path: path.display().to_string(),
            source,
        })?;
        println!("{}: {}", dir.display(), caps[0].global);
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lct-world: {e}");
            ExitCode::FAILURE
        }
    }
}
