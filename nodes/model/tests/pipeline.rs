//! Text encoder, autoencoder and the checkpoint directory holding all three parts.
mod common;

use candle_core::{DType, Device, Tensor};
use common::max_diff;
use lct_model::{
    init_tensors, load_pipeline, save_checkpoint, AutoencoderConfig, Config, Error, Init,
    TextEncoderConfig,
};

fn config() -> Config {
    Config {
        text_encoder: Some(TextEncoderConfig {
            vocabulary: [
                "character",
                "1",
                ":",
                "red",
                "circle",
                ".",
                "close-up",
                "of",
            ]
            .map(String::from)
            .to_vec(),
            max_len: 8,
            hidden_size: 24,
        }),
        autoencoder: Some(AutoencoderConfig {
            patch: 2,
            frame_size: [8, 8],
            color_space: lct_model::default_working_color_space(),
        }),
        ..Config::tiny()
    }
}

fn saved(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lct-pipeline-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = config();
    let tensors = init_tensors(&cfg, 3, Init::Random, &Device::Cpu).unwrap();
    assert!(tensors.keys().any(|k| k.starts_with("text_encoder.")));
    assert!(tensors.keys().any(|k| k.starts_with("autoencoder.")));
    save_checkpoint(&dir, &cfg, &tensors).unwrap();
    dir
}

#[test]
fn prompts_encode_to_padded_embeddings_and_unknown_words_are_named() {
    let dir = saved("text");
    let pipeline = load_pipeline(&dir, DType::F32, &Device::Cpu).unwrap();
    let te = pipeline.text_encoder().unwrap();
    assert_eq!(
        te.tokenize("Character 1: red circle.").unwrap(),
        vec![1, 2, 3, 4, 5, 6]
    );
    let a = pipeline
        .encode_shot_prompt("Close-up of character 1")
        .unwrap();
    assert_eq!(a.dims(), &[1, 4, 16]);
    let b = pipeline
        .encode_shot_prompt("close-up OF Character 1.")
        .unwrap();
    assert_eq!(
        max_diff(&a, &b),
        0.0,
        "case and truncation past the length do not matter"
    );
    assert_eq!(
        pipeline.encode_global_prompt("red").unwrap().dims(),
        &[1, 6, 16]
    );
    let err = pipeline.encode_shot_prompt("a blue circle").unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, Error::UnknownWord { ref word, .. } if word == "a"),
        "{message}"
    );
    assert!(
        message.contains("close-up") && message.contains("circle"),
        "{message}"
    );
}

#[test]
fn frames_round_trip_through_the_autoencoder_shapes() {
    let dir = saved("frames");
    let pipeline = load_pipeline(&dir, DType::F32, &Device::Cpu).unwrap();
    let ae = pipeline.autoencoder().unwrap();
    let frames = (Tensor::rand(0f32, 1f32, (3, 3, 8, 8), &Device::Cpu).unwrap())
        .contiguous()
        .unwrap();
    let latent = ae.encode(&frames).unwrap();
    assert_eq!(latent.dims(), &[1, 4, 3, 4, 4]);
    assert_eq!(pipeline.shot_latent_dims(3).unwrap(), [4, 3, 4, 4]);
    let decoded = ae.decode(&latent).unwrap();
    assert_eq!(decoded.dims(), &[3, 3, 8, 8]);
    let min = decoded
        .flatten_all()
        .unwrap()
        .min(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let max = decoded
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!((0.0..=1.0).contains(&min) && (0.0..=1.0).contains(&max));
    assert!(matches!(
        ae.encode(&Tensor::zeros((1, 4, 8, 8), DType::F32, &Device::Cpu).unwrap()),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        ae.decode(&Tensor::zeros((1, 5, 1, 4, 4), DType::F32, &Device::Cpu).unwrap()),
        Err(Error::Shape(_))
    ));
}

#[test]
fn a_model_without_a_text_encoder_says_so() {
    let dir = std::env::temp_dir().join(format!("lct-pipeline-bare-{}", std::process::id()));
    let cfg = Config::tiny();
    save_checkpoint(
        &dir,
        &cfg,
        &init_tensors(&cfg, 1, Init::Random, &Device::Cpu).unwrap(),
    )
    .unwrap();
    let pipeline = load_pipeline(&dir, DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        pipeline.encode_shot_prompt("red"),
        Err(Error::MissingComponent(_))
    ));
    // Weights with extra parts that the config does not declare are refused.
    let full = init_tensors(&config(), 1, Init::Random, &Device::Cpu).unwrap();
    save_checkpoint(&dir, &cfg, &full).unwrap();
    assert!(matches!(
        load_pipeline(&dir, DType::F32, &Device::Cpu),
        Err(Error::UnusedTensors { .. })
    ));
}
