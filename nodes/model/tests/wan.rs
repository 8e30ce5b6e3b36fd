//! The Wan transformer against diffusers: a tiny random `WanTransformer3DModel` saved in the
//! diffusers layout and its outputs, written by `fixtures/wan_reference.py` (pinned diffusers
//! 0.42.1, torch 2.15.0), loaded and run here in f32.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use lct_model::wan::{load_transformer, WanTimestep};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wan_tiny")
}

fn reference() -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture().join("reference.safetensors"), &Device::Cpu).unwrap()
}

/// Largest difference relative to the reference's largest magnitude.
fn relative_error(ours: &Tensor, theirs: &Tensor) -> f32 {
    assert_eq!(ours.dims(), theirs.dims());
    let difference = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
    let scale = theirs.abs().unwrap().max_all().unwrap();
    (difference / scale).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn the_wan_transformer_matches_diffusers_with_one_timestep_and_per_token_timesteps() {
    let model = load_transformer(&fixture(), DType::F32, &Device::Cpu).unwrap();
    let tensors = reference();
    let latents = &tensors["latents"];
    let text = &tensors["text"];

    let single = model
        .forward(latents, WanTimestep::PerSample(&tensors["timestep"]), text)
        .unwrap();
    let error = relative_error(&single, &tensors["output"]);
    eprintln!("single timestep: relative error {error:.2e}");
    assert!(error < 1e-4, "single timestep: relative error {error}");

    let per_token = model
        .forward(
            latents,
            WanTimestep::PerToken(&tensors["per_token_timestep"]),
            text,
        )
        .unwrap();
    let error = relative_error(&per_token, &tensors["per_token_output"]);
    eprintln!("per-token timesteps: relative error {error:.2e}");
    assert!(error < 1e-4, "per-token timesteps: relative error {error}");
    // The per-token path is not the single one in disguise.
    assert!(relative_error(&per_token, &tensors["output"]) > 1e-2);
}

#[test]
fn skyreels_v2_diffusion_forcing_matches_diffusers_per_frame_and_block_causal() {
    let folder = fixture().join("skyreels_df");
    let model = load_transformer(&folder, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(model.config().num_frame_per_block, 2);
    let tensors =
        candle_core::safetensors::load(folder.join("reference.safetensors"), &Device::Cpu).unwrap();
    let output = model
        .forward(
            &tensors["latents"],
            WanTimestep::PerFrame(&tensors["per_frame_timestep"]),
            &tensors["text"],
        )
        .unwrap();
    let error = relative_error(&output, &tensors["output"]);
    eprintln!("SkyReels-V2 diffusion forcing: relative error {error:.2e}");
    assert!(error < 1e-4, "diffusion forcing: relative error {error}");
}

#[test]
fn wan_loading_errors_name_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let transformer = dir.path().join("transformer");
    std::fs::create_dir(&transformer).unwrap();
    let config = std::fs::read_to_string(fixture().join("transformer/config.json")).unwrap();

    // No weights at all.
    std::fs::write(transformer.join("config.json"), &config).unwrap();
    let error = load_transformer(dir.path(), DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("diffusion_pytorch_model.safetensors"),
        "{error}"
    );

    // A shard index naming a shard that is not there.
    std::fs::write(
        transformer.join("diffusion_pytorch_model.safetensors.index.json"),
        r#"{"weight_map": {"proj_out.weight": "diffusion_pytorch_model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let error = load_transformer(dir.path(), DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("00001-of-00002") && error.contains("missing"),
        "{error}"
    );

    // A config the weights do not fit: the tensor is named with both shapes.
    std::fs::remove_file(transformer.join("diffusion_pytorch_model.safetensors.index.json"))
        .unwrap();
    std::fs::copy(
        fixture().join("transformer/diffusion_pytorch_model.safetensors"),
        transformer.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    std::fs::write(
        transformer.join("config.json"),
        config.replace("\"ffn_dim\": 48", "\"ffn_dim\": 64"),
    )
    .unwrap();
    let error = load_transformer(dir.path(), DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("ffn"), "{error}");

    // Image conditioning is refused by name.
    std::fs::write(
        transformer.join("config.json"),
        config.replace("\"image_dim\": null", "\"image_dim\": 1280"),
    )
    .unwrap();
    let error = load_transformer(dir.path(), DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("config.json") && error.contains("image_dim"),
        "{error}"
    );
}
