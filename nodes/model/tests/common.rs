//! Shared test helpers: seeded tensors and a random tiny model.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use lct_model::{init_model, noise::gaussian, AttentionMask, Config, Init, SceneTransformer};

pub fn randn(seed: u64, dims: &[usize]) -> Tensor {
    gaussian(seed, 0, dims, &Device::Cpu).unwrap()
}

pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Asserts `got` is within `tolerance` of `want`, relative to `want`'s largest magnitude (at
/// least 1).
pub fn assert_close(name: &str, got: &Tensor, want: &Tensor, tolerance: f32) {
    let scale = want
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let diff = max_diff(got, want);
    assert!(
        diff <= tolerance * scale.max(1.0),
        "{name}: differs by {diff} (largest value {scale})"
    );
}

/// The tiny model with pooled-prompt conditioning (`Config::pooled_text`).
pub fn tiny_pooled_model(mask: AttentionMask, seed: u64) -> SceneTransformer {
    let cfg = Config {
        pooled_text: true,
        ..Config::tiny().with_attention(mask)
    };
    init_model(&cfg, seed, Init::Random, &Device::Cpu).unwrap()
}

pub fn tiny_model(mask: AttentionMask, seed: u64) -> SceneTransformer {
    let cfg = Config::tiny().with_attention(mask);
    init_model(&cfg, seed, Init::Random, &Device::Cpu).unwrap()
}

// Every binary of the project uses mimalloc, test binaries included.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
