//! `lct-train wan` end to end on the tiny random Wan checkpoint of the model crate's fixtures:
//! a folder of two scenes of PNG frames is encoded, the transformer tuned, the checkpoint
//! written whole (and continued), and it loads as a context-causal Wan model.

use std::path::{Path, PathBuf};
use std::process::Command;

fn checkpoint() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures/wan_tiny")
}

/// Two scenes of two shots, 5 frames of 16x16 each: a coloured square that moves.
fn write_scenes(root: &Path) {
    for (s, colour) in [[220u8, 40, 40], [40, 80, 220]].iter().enumerate() {
        let scene = root.join(format!("scene{s}"));
        for shot in 0..2 {
            let folder = scene.join(format!("shot{shot}"));
            std::fs::create_dir_all(&folder).unwrap();
            for t in 0..5u32 {
                let image = image::RgbImage::from_fn(16, 16, |x, y| {
                    let inside = (x + 16 - t - 2 * shot) % 16 < 6 && (4..12).contains(&y);
                    if inside {
                        image::Rgb(*colour)
                    } else {
                        image::Rgb([30, 120, 60])
                    }
                });
                image.save(folder.join(format!("{t:04}.png"))).unwrap();
            }
        }
        let spec = serde_json::json!({
            "global_prompt": "a red cat in the park",
            "shots": [
                {"prompt": "wide shot of a red cat", "frames": "shot0"},
                {"prompt": "close up of the cat", "frames": "shot1"},
            ],
        });
        std::fs::write(scene.join("scene.json"), spec.to_string()).unwrap();
    }
}

fn lct_train(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_lct-train"))
        .arg("wan")
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn lct_train_wan_tunes_a_checkpoint_from_a_folder_of_scenes() {
    let dir = tempfile::tempdir().unwrap();
    let scenes = dir.path().join("scenes");
    write_scenes(&scenes);
    let out = dir.path().join("tuned");
    let common = |steps: &str| {
        vec![
            "--checkpoint".to_owned(),
            checkpoint().display().to_string(),
            "--scenes".into(),
            scenes.display().to_string(),
            "--out".into(),
            out.display().to_string(),
            "--steps".into(),
            steps.into(),
            "--lr".into(),
            "3e-3".into(),
            "--save-every".into(),
            "10".into(),
        ]
    };
    let args = common("30");
    let (ok, log) = lct_train(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{log}");
    let probe = log
        .lines()
        .find(|l| l.starts_with("probe loss"))
        .unwrap_or_else(|| panic!("{log}"));
    let numbers: Vec<f32> = probe
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    eprintln!("{log}");
    assert!(numbers[1] < numbers[0], "{probe}");

    // A whole checkpoint, marked context-causal, that loads as one.
    for part in [
        "model_index.json",
        "transformer",
        "vae",
        "text_encoder",
        "tokenizer",
        "lct.json",
    ] {
        assert!(out.join(part).exists(), "{part} missing: {log}");
    }
    let tuned =
        lct_model::wan::WanPipeline::load(&out, candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap();
    assert_eq!(tuned.attention, lct_model::AttentionMask::ContextCausal);

    // Continuing the same tuning to more steps.
    let args = common("40");
    let (ok, log) = lct_train(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok && log.contains("from step 30"), "{log}");
    let marker: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("lct.json")).unwrap()).unwrap();
    assert_eq!(marker["steps"], 40);

    // A folder of the user's own is never written into.
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::write(theirs.join("notes.txt"), "mine").unwrap();
    let mut args = common("5");
    args[5] = theirs.display().to_string();
    let (ok, log) = lct_train(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok && log.contains("nothing is overwritten"), "{log}");
    assert_eq!(
        std::fs::read_to_string(theirs.join("notes.txt")).unwrap(),
        "mine"
    );

    // Frames Wan cannot take are named with their scene and shot.
    std::fs::remove_file(scenes.join("scene1/shot1/0004.png")).unwrap();
    let mut args = common("5");
    args[5] = dir.path().join("new").display().to_string();
    let (ok, log) = lct_train(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        !ok && log.contains("scene1") && log.contains("shot 2") && log.contains("use 1 or 5"),
        "{log}"
    );
}
