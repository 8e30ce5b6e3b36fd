//! The model-backed values: a loaded MODEL, a scene's shot LATENTs, and a KV_CACHE of history.
//! All immutable and shared by `Arc`; each carries a content hash for the graph cache.

use crate::model::{Backend, KvState};
use crate::value::StableHasher;
use candle_core::Tensor;
use std::fmt;
use std::sync::Arc;

/// A loaded checkpoint (transformer, text encoder, autoencoder) of either family.
pub struct ModelValue {
    pub backend: Arc<Backend>,
    /// Where it came from ("embedded" or a directory), for messages.
    pub source: String,
    /// Hash of the config and weight bytes (Wan: of the configs and the weight files' headers,
    /// sizes and modification times; hashing tens of gigabytes would take minutes).
    pub hash: u64,
    pub parameters: usize,
}

impl ModelValue {
    pub fn parameter_count(&self) -> usize {
        self.parameters
    }

    /// `[parameters, frame height, frame width]`: what a host needs to size its images
    /// before anything is generated (just `[parameters]` for a model without an autoencoder).
    pub fn shape(&self) -> Vec<u64> {
        let mut shape = vec![self.parameters as u64];
        if let Ok(size) = self.backend.frame_size() {
            shape.extend(size.map(|s| s as u64));
        }
        shape
    }
}

impl fmt::Debug for ModelValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Model({}, {}, {:?} mask)",
            self.source,
            self.backend.family(),
            self.backend.attention()
        )
    }
}

/// One generated (or encoded) shot.
#[derive(Clone)]
pub struct ShotLatent {
    /// The shot's prompt (what it was generated from; empty for encoded frames).
    pub prompt: String,
    /// `[1, C, T, H, W]`, clean.
    pub latent: Tensor,
    /// Index in the scene: picks the noise stream, so it must stay with the shot.
    pub scene_index: usize,
    pub hash: u64,
}

/// The shots of a scene so far, in scene order.
pub struct LatentValue {
    pub shots: Vec<ShotLatent>,
    pub hash: u64,
}

impl fmt::Debug for LatentValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Latent({} shots)", self.shots.len())
    }
}

/// Hash of a tensor's values (exact bits).
pub fn tensor_hash(tensor: &Tensor) -> candle_core::Result<u64> {
    let mut hasher = StableHasher::new();
    for d in tensor.dims() {
        hasher.write_u64(*d as u64);
    }
    for v in tensor
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?
    {
        hasher.write_u64(v.to_bits() as u64);
    }
    Ok(hasher.finish())
}

impl ShotLatent {
    pub fn new(prompt: String, latent: Tensor, scene_index: usize) -> candle_core::Result<Self> {
        let mut hasher = StableHasher::new();
        hasher.write_str(&prompt);
        hasher.write_u64(scene_index as u64);
        hasher.write_u64(tensor_hash(&latent)?);
        Ok(Self {
            prompt,
            latent,
            scene_index,
            hash: hasher.finish(),
        })
    }
}

impl LatentValue {
    pub fn new(shots: Vec<ShotLatent>) -> Self {
        let mut hasher = StableHasher::new();
        hasher.write_u64(shots.len() as u64);
        for shot in &shots {
            hasher.write_u64(shot.hash);
        }
        Self {
            shots,
            hash: hasher.finish(),
        }
    }
}

/// The sampler settings a cache depends on: the history is re-noised with this seed to this
/// t_c, with or without the unconditional branch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CacheSettings {
    pub seed: u64,
    pub history_timestep: f32,
    pub guidance: bool,
}

/// K/V of the global prompt, references and history shots, for context-causal models.
pub struct KvCacheValue {
    pub state: KvState,
    pub settings: CacheSettings,
    pub model_hash: u64,
    /// What the cache holds, to check it against the history it is used with.
    pub scene_prefix_hash: u64,
    pub shot_hashes: Vec<u64>,
    pub hash: u64,
}

impl fmt::Debug for KvCacheValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KvCache({} segments, {} shots, {} tokens)",
            self.state.len(),
            self.shot_hashes.len(),
            self.state.tokens()
        )
    }
}
