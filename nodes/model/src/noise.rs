//! Seeded Gaussian noise that depends only on (seed, stream), never on device or thread, so
//! the same seed gives the same scene whether shots are generated jointly or one by one.

use crate::error::Result;
use candle_core::{Device, Tensor};

/// SplitMix64: tiny, fast, and stable across crate upgrades (determinism is a promise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }
    /// A generator for a named sub-stream of `seed`.
    pub fn stream(seed: u64, stream: u64) -> Self {
        let mut mixer = Self::new(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        Self::new(mixer.next_u64())
    }
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }
}

/// Standard normal noise of `dims` (f32) for `(seed, stream)`.
pub fn gaussian(seed: u64, stream: u64, dims: &[usize], device: &Device) -> Result<Tensor> {
    let mut rng = SplitMix64::stream(seed, stream);
    let count: usize = dims.iter().product();
    let values: Vec<f32> = (0..count).map(|_| rng.normal() as f32).collect();
    Ok(Tensor::from_vec(values, dims, device)?)
}
