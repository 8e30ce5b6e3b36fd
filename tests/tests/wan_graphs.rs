//! A Wan checkpoint through the real plugin: the tiny random Wan 2.1 pipeline of
//! `nodes/model/tests/fixtures/wan_tiny` (saved by diffusers' `WanPipeline.save_pretrained`)
//! goes LoadModel -> SceneContext -> ShotGenerate -> DecodeFrames -> SaveVideo, joint and
//! auto-regressive with a KV cache; and its loading errors arrive named through the C boundary.

use std::path::{Path, PathBuf};

use lct_host::{ColorSpace, EvalOptions, Evaluator, Graph, Plugin};
use lct_integration_tests::{plugin, workspace_root};

const SHOTS: [&str; 3] = [
    "wide shot of a red cat in the park.",
    "close up of the cat.",
    "the cat runs at night.",
];

/// A copy of the tiny Wan checkpoint (only what a published checkpoint has), marked as
/// LCT-tuned context-causal when asked (the marker `lct-train` writes).
fn wan_checkpoint(context_causal: bool) -> tempfile::TempDir {
    let source = workspace_root().join("nodes/model/tests/fixtures/wan_tiny");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        source.join("model_index.json"),
        dir.path().join("model_index.json"),
    )
    .unwrap();
    for component in [
        "transformer",
        "vae",
        "text_encoder",
        "tokenizer",
        "scheduler",
    ] {
        let to = dir.path().join(component);
        std::fs::create_dir(&to).unwrap();
        for entry in std::fs::read_dir(source.join(component)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    if context_causal {
        std::fs::write(
            dir.path().join("lct.json"),
            r#"{"attention": "context_causal"}"#,
        )
        .unwrap();
    }
    dir
}

fn base_graph(checkpoint: &Path, shots: &[&str]) -> Graph {
    let mut graph = Graph::new();
    graph
        .add("model", "LoadModel")
        .param("path", checkpoint.display().to_string())
        .param("width", 16)
        .param("height", 16);
    graph
        .add("scene", "SceneContext")
        .param("global_prompt", "a city park at night.")
        .param("shots", shots.join("\n"));
    graph
}

fn sampler(graph: &mut Graph, label: &str) {
    graph
        .node_mut(label)
        .unwrap()
        .param("steps", 3)
        .param("seed", 7)
        .param("cfg", 3.0)
        .param("frames", 5);
}

fn decoded(plugin: &Plugin, graph: &Graph, node: &str) -> Vec<f32> {
    let graph = plugin.validate(graph).unwrap();
    let options = EvalOptions {
        targets: Some(vec![node.to_owned()]),
        ..EvalOptions::default()
    };
    let evaluation = Evaluator::new(plugin).evaluate(&graph, &options).unwrap();
    let frames = evaluation
        .output(node, "frames")
        .unwrap()
        .read_frames_f32(0, 0, ColorSpace::SRGB)
        .unwrap();
    assert_eq!((frames.width, frames.height), (16, 16));
    frames.pixels
}

fn error_of(plugin: &Plugin, graph: &Graph) -> String {
    let graph = plugin.validate(graph).unwrap();
    let message = Evaluator::new(plugin)
        .evaluate(&graph, &EvalOptions::default())
        .unwrap_err()
        .to_string();
    eprintln!("error: {message}");
    message
}

#[test]
fn a_wan_checkpoint_generates_a_joint_scene_and_saves_the_video() {
    let plugin = plugin();
    let checkpoint = wan_checkpoint(false);
    let out = tempfile::tempdir().unwrap();
    let mut graph = base_graph(checkpoint.path(), &SHOTS);
    graph
        .add("generate", "ShotGenerate")
        .input("model", "model", "model")
        .input("scene", "scene", "scene");
    sampler(&mut graph, "generate");
    graph
        .add("decode", "DecodeFrames")
        .input("model", "model", "model")
        .input("latent", "generate", "latent");
    graph
        .add("save", "SaveVideo")
        .param("directory", "")
        .input("frames", "decode", "frames");
    graph.output("save");
    let validated = plugin.validate(&graph).unwrap();
    let evaluator = Evaluator::new(&plugin);
    let evaluation = evaluator
        .evaluate(
            &validated,
            &EvalOptions {
                output_directory: Some(out.path().to_owned()),
                ..EvalOptions::default()
            },
        )
        .unwrap();
    let video = PathBuf::from(evaluation.outputs["save"][0].1.read_string().unwrap());
    let bytes = std::fs::read(&video).unwrap();
    assert_eq!(&bytes[4..8], b"ftyp", "{} is an MP4", video.display());
    // The model reports Wan's frame size, and the scene decodes to 3 shots of 5 frames.
    let model = Evaluator::new(&plugin)
        .evaluate(
            &validated,
            &EvalOptions {
                targets: Some(vec!["model".into()]),
                ..EvalOptions::default()
            },
        )
        .unwrap();
    let shape = model.output("model", "model").unwrap().shape().unwrap();
    assert_eq!(&shape[1..], &[16, 16]);
    assert!(shape[0] > 10_000, "parameters: {}", shape[0]);
    let pixels = decoded(&plugin, &graph, "decode");
    assert_eq!(pixels.len(), 3 * 5 * 16 * 16 * 3);
    // Deterministic, and the shots differ from each other (per-shot prompts and noise).
    assert_eq!(pixels, decoded(&plugin, &graph, "decode"));
    let shot = 5 * 16 * 16 * 3;
    assert!(pixels[..shot] != pixels[shot..2 * shot]);
}

/// Shots 1-2 auto-regressively, then shot 3 by ShotExtend, after a KVCache of shots 1-2 or
/// recomputing them.
fn extend_graph(checkpoint: &Path, with_cache: bool) -> Graph {
    let mut graph = base_graph(checkpoint, &SHOTS);
    graph
        .add("first", "ShotGenerate")
        .param("mode", "autoregressive")
        .param("last_shot", 2)
        .input("model", "model", "model")
        .input("scene", "scene", "scene");
    sampler(&mut graph, "first");
    graph
        .add("extend", "ShotExtend")
        .input("model", "model", "model")
        .input("scene", "scene", "scene")
        .input("latent", "first", "latent");
    sampler(&mut graph, "extend");
    if with_cache {
        graph
            .add("cache", "KVCache")
            .param("seed", 7)
            .param("cfg", 3.0)
            .input("model", "model", "model")
            .input("scene", "scene", "scene")
            .input("latent", "first", "latent");
        graph
            .node_mut("extend")
            .unwrap()
            .input("kv_cache", "cache", "kv_cache");
    }
    graph
        .add("decode", "DecodeFrames")
        .input("model", "model", "model")
        .input("latent", "extend", "latent");
    graph.output("decode");
    graph
}

#[test]
fn wan_shot_extension_with_a_kv_cache_equals_recomputing_the_history() {
    let plugin = plugin();
    let checkpoint = wan_checkpoint(true);
    let cached = decoded(&plugin, &extend_graph(checkpoint.path(), true), "decode");
    let recomputed = decoded(&plugin, &extend_graph(checkpoint.path(), false), "decode");
    assert_eq!(cached.len(), 3 * 5 * 16 * 16 * 3);
    let scale = recomputed.iter().fold(0f32, |m, v| m.max(v.abs()));
    let difference = cached
        .iter()
        .zip(&recomputed)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        difference / scale < 1e-4,
        "cached differs from recomputed by {difference} (scale {scale})"
    );
    // A checkpoint as published is bidirectional: its history cannot be cached.
    let published = wan_checkpoint(false);
    let message = error_of(&plugin, &extend_graph(published.path(), true));
    assert!(message.contains("bidirectional"), "{message}");
}

#[test]
fn wan_loading_and_shape_errors_are_named_through_the_plugin() {
    let plugin = plugin();
    let decode_graph = |checkpoint: &Path| {
        let mut graph = base_graph(checkpoint, &SHOTS[..1]);
        graph
            .add("generate", "ShotGenerate")
            .input("model", "model", "model")
            .input("scene", "scene", "scene");
        sampler(&mut graph, "generate");
        graph.output("generate");
        graph
    };

    // Shards: the transformer split in two with an index, then one shard missing.
    let checkpoint = wan_checkpoint(false);
    let transformer = checkpoint.path().join("transformer");
    let single = transformer.join("diffusion_pytorch_model.safetensors");
    let tensors = candle_core::safetensors::load(&single, &candle_core::Device::Cpu).unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut map = serde_json::Map::new();
    for (part, chunk) in names.chunks(names.len() / 2 + 1).enumerate() {
        let file = format!(
            "diffusion_pytorch_model-0000{}-of-00002.safetensors",
            part + 1
        );
        let shard: std::collections::HashMap<String, candle_core::Tensor> = chunk
            .iter()
            .map(|n| ((*n).clone(), tensors[*n].clone()))
            .collect();
        candle_core::safetensors::save(&shard, transformer.join(&file)).unwrap();
        for n in chunk {
            map.insert((*n).clone(), file.clone().into());
        }
    }
    std::fs::remove_file(&single).unwrap();
    std::fs::write(
        transformer.join("diffusion_pytorch_model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    // The sharded checkpoint loads and runs.
    let graph = plugin.validate(&decode_graph(checkpoint.path())).unwrap();
    Evaluator::new(&plugin)
        .evaluate(&graph, &EvalOptions::default())
        .unwrap();
    let second = transformer.join("diffusion_pytorch_model-00002-of-00002.safetensors");
    std::fs::remove_file(&second).unwrap();
    let message = error_of(&plugin, &decode_graph(checkpoint.path()));
    assert!(
        message.contains("00002-of-00002") && message.contains("missing"),
        "{message}"
    );

    // A weight stored as integers is named with its file and dtype.
    let checkpoint = wan_checkpoint(false);
    let path = checkpoint
        .path()
        .join("vae/diffusion_pytorch_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    let bad = "decoder.conv_in.bias";
    let as_int = tensors[bad].to_dtype(candle_core::DType::I64).unwrap();
    tensors.insert(bad.into(), as_int);
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let message = error_of(&plugin, &decode_graph(checkpoint.path()));
    assert!(
        message.contains(bad) && message.contains("I64") && message.contains("vae"),
        "{message}"
    );

    // A config that disagrees with the weights.
    let checkpoint = wan_checkpoint(false);
    let config = checkpoint.path().join("transformer/config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    let changed = text.replace("\"num_layers\": 2", "\"num_layers\": 1");
    assert_ne!(text, changed);
    std::fs::write(&config, changed).unwrap();
    let message = error_of(&plugin, &decode_graph(checkpoint.path()));
    assert!(
        message.contains("not used by the config") && message.contains("blocks.1."),
        "{message}"
    );
    let checkpoint = wan_checkpoint(false);
    let config = checkpoint.path().join("text_encoder/config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("\"d_model\": 16", "\"d_model\": 8")).unwrap();
    let message = error_of(&plugin, &decode_graph(checkpoint.path()));
    assert!(message.contains("text_encoder"), "{message}");

    // Frame counts Wan cannot take, and frame sizes its VAE cannot.
    let checkpoint = wan_checkpoint(false);
    let mut graph = decode_graph(checkpoint.path());
    graph.node_mut("generate").unwrap().param("frames", 4);
    let message = error_of(&plugin, &graph);
    assert!(message.contains("use 1 or 5"), "{message}");
    let mut graph = decode_graph(checkpoint.path());
    graph.node_mut("model").unwrap().param("width", 20);
    let message = error_of(&plugin, &graph);
    assert!(
        message.contains("multiple of 8 pixels wide") && message.contains("20x16"),
        "{message}"
    );
}

#[test]
fn a_wan_checkpoint_runs_in_bf16_close_to_f32() {
    let plugin = plugin();
    let checkpoint = wan_checkpoint(false);
    let graph = |precision: &str| {
        let mut graph = base_graph(checkpoint.path(), &SHOTS[..2]);
        graph
            .node_mut("model")
            .unwrap()
            .param("precision", precision);
        graph
            .add("generate", "ShotGenerate")
            .input("model", "model", "model")
            .input("scene", "scene", "scene");
        sampler(&mut graph, "generate");
        graph
            .add("decode", "DecodeFrames")
            .input("model", "model", "model")
            .input("latent", "generate", "latent");
        graph.output("decode");
        graph
    };
    let full = decoded(&plugin, &graph("f32"), "decode");
    let half = decoded(&plugin, &graph("bf16"), "decode");
    let mean = full
        .iter()
        .zip(&half)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / full.len() as f32;
    eprintln!("bf16 against f32: mean absolute difference {mean:.4} (pixels in 0..1)");
    assert!(mean > 0.0, "bf16 computed in f32");
    assert!(mean < 0.02, "bf16 differs from f32 by {mean} on average");
    // LCT checkpoints refuse it by name.
    let mut lct = Graph::new();
    lct.add("model", "LoadModel")
        .param(
            "path",
            lct_integration_tests::fixture_model(lct_model::AttentionMask::Bidirectional)
                .display()
                .to_string(),
        )
        .param("precision", "bf16");
    lct.output("model");
    let message = error_of(&plugin, &lct);
    assert!(message.contains("f32 only"), "{message}");
}

/// The tiny checkpoint with its VAE replaced by pixel space (lct's declared extension of the
/// family: `vae/config.json` `"_class_name": "LctPixelSpace"`, no weights) and a fresh
/// pixel-space transformer (3 channels, 4x4-pixel patches), as the embedded model is built.
fn pixel_space_checkpoint() -> tempfile::TempDir {
    use lct_model::wan::{WanTrainConfig, WanTrainer, WanTransformerConfig};
    let dir = wan_checkpoint(false);
    let vae = dir.path().join("vae");
    std::fs::remove_dir_all(&vae).unwrap();
    std::fs::create_dir(&vae).unwrap();
    std::fs::write(
        vae.join("config.json"),
        r#"{"_class_name": "LctPixelSpace", "channels": 3}"#,
    )
    .unwrap();
    std::fs::remove_dir_all(dir.path().join("transformer")).unwrap();
    let config = WanTransformerConfig {
        patch_size: [1, 4, 4],
        num_attention_heads: 2,
        attention_head_dim: 12,
        in_channels: 3,
        out_channels: Some(3),
        text_dim: 16,
        freq_dim: 32,
        ffn_dim: 48,
        num_layers: 2,
        rope_max_seq_len: 32,
        ..WanTransformerConfig::default()
    };
    let cfg = WanTrainConfig {
        optim: lct_model::optim::OptimConfig::default(),
        attention: lct_model::AttentionMask::Bidirectional,
        shift: 1.0,
    };
    WanTrainer::fresh(&config, cfg, 0, &candle_core::Device::Cpu)
        .unwrap()
        .save_transformer(dir.path())
        .unwrap();
    dir
}

#[test]
fn a_pixel_space_wan_checkpoint_runs_the_same_graph_with_any_frame_count() {
    let plugin = plugin();
    let checkpoint = pixel_space_checkpoint();
    let mut graph = base_graph(checkpoint.path(), &SHOTS[..2]);
    graph
        .add("generate", "ShotGenerate")
        .input("model", "model", "model")
        .input("scene", "scene", "scene");
    sampler(&mut graph, "generate");
    // Pixel space keeps every frame: 4 is a valid count (the VAE takes 1 + 4k only).
    graph.node_mut("generate").unwrap().param("frames", 4);
    graph
        .add("decode", "DecodeFrames")
        .input("model", "model", "model")
        .input("latent", "generate", "latent");
    graph.output("decode");
    let pixels = decoded(&plugin, &graph, "decode");
    assert_eq!(pixels.len(), 2 * 4 * 16 * 16 * 3);
    assert!(pixels.iter().all(|p| p.is_finite()));
    assert_eq!(pixels, decoded(&plugin, &graph, "decode"));
    // Frames in, the same frames out: pixel space encodes and decodes exactly.
    let image = tempfile::tempdir().unwrap();
    let path = image.path().join("plate.png");
    image::RgbImage::from_fn(16, 16, |x, y| image::Rgb([x as u8 * 16, y as u8 * 16, 128]))
        .save(&path)
        .unwrap();
    let mut graph = Graph::new();
    graph
        .add("model", "LoadModel")
        .param("path", checkpoint.path().display().to_string())
        .param("width", 16)
        .param("height", 16);
    graph
        .add("load", "LoadImage")
        .param("path", path.display().to_string());
    graph
        .add("encode", "EncodeFrames")
        .input("model", "model", "model")
        .input("frames", "load", "frames");
    graph
        .add("decode", "DecodeFrames")
        .input("model", "model", "model")
        .input("latent", "encode", "latent");
    graph.output("decode");
    let round_trip = decoded(&plugin, &graph, "decode");
    let original: Vec<f32> = image::open(&path).unwrap().to_rgb32f().into_raw();
    let worst = round_trip
        .iter()
        .zip(&original)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "round trip differs by {worst}");
}
