//! Values that flow between nodes: a small closed set of kinds.

use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::color::{ColorConfig, ColorError, ColorSpace};

/// Kind of a value, a port or a widget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueKind {
    Int,
    Float,
    Bool,
    String,
    Enum,
    Scene,
    Latent,
    KvCache,
    Frames,
    Model,
}

impl ValueKind {
    /// The UPPERCASE name node editors show on sockets.
    pub fn name(self) -> &'static str {
        match self {
            Self::Int => "INT",
            Self::Float => "FLOAT",
            Self::Bool => "BOOL",
            Self::String => "STRING",
            Self::Enum => "ENUM",
            Self::Scene => "SCENE",
            Self::Latent => "LATENT",
            Self::KvCache => "KV_CACHE",
            Self::Frames => "FRAMES",
            Self::Model => "MODEL",
        }
    }
}

impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An immutable value. Cloning is cheap (large payloads are shared).
///
/// The model-backed kinds hold engine data that never crosses the C boundary; hosts see
/// their kind, shape and content hash only.
#[derive(Clone, Debug)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    String(Arc<str>),
    Enum(Arc<str>),
    Scene(Arc<Scene>),
    Frames(Arc<Frames>),
    Model(Arc<crate::model_values::ModelValue>),
    Latent(Arc<crate::model_values::LatentValue>),
    KvCache(Arc<crate::model_values::KvCacheValue>),
}

impl Value {
    pub fn kind(&self) -> ValueKind {
        match self {
            Self::Int(_) => ValueKind::Int,
            Self::Float(_) => ValueKind::Float,
            Self::Bool(_) => ValueKind::Bool,
            Self::String(_) => ValueKind::String,
            Self::Enum(_) => ValueKind::Enum,
            Self::Scene(_) => ValueKind::Scene,
            Self::Frames(_) => ValueKind::Frames,
            Self::Model(_) => ValueKind::Model,
            Self::Latent(_) => ValueKind::Latent,
            Self::KvCache(_) => ValueKind::KvCache,
        }
    }

    /// FRAMES [frames, height, width, channels], SCENE [shots], text [bytes], scalars [],
    /// LATENT [shots], KV_CACHE [cached segments, tokens], MODEL [parameters].
    pub fn shape(&self) -> Vec<u64> {
        match self {
            Self::Int(_) | Self::Float(_) | Self::Bool(_) => Vec::new(),
            Self::String(text) | Self::Enum(text) => vec![text.len() as u64],
            Self::Scene(scene) => vec![scene.shots.len() as u64],
            Self::Frames(frames) => vec![
                frames.frame_count() as u64,
                frames.height() as u64,
                frames.width() as u64,
                frames.channels() as u64,
            ],
            Self::Model(model) => model.shape(),
            Self::Latent(latent) => vec![latent.shots.len() as u64],
            Self::KvCache(cache) => vec![cache.state.len() as u64, cache.state.tokens() as u64],
        }
    }

    /// Hash of the kind and contents, stable across runs of the same build.
    pub fn content_hash(&self) -> u64 {
        let mut hasher = StableHasher::new();
        hasher.write_str(self.kind().name());
        match self {
            Self::Int(value) => hasher.write_u64(*value as u64),
            Self::Float(value) => hasher.write_u64(value.to_bits()),
            Self::Bool(value) => hasher.write_u64(*value as u64),
            Self::String(text) | Self::Enum(text) => hasher.write_str(text),
            Self::Scene(scene) => hasher.write_u64(scene.content_hash()),
            Self::Frames(frames) => hasher.write_u64(frames.content_hash()),
            Self::Model(model) => hasher.write_u64(model.hash),
            Self::Latent(latent) => hasher.write_u64(latent.hash),
            Self::KvCache(cache) => hasher.write_u64(cache.hash),
        }
        hasher.finish()
    }
}

/// FNV-1a over 64-bit words: fast, and unlike `DefaultHasher` its results are documented to
/// stay the same across Rust versions, so content hashes can be compared between runs.
#[derive(Clone, Debug)]
pub struct StableHasher(u64);

impl StableHasher {
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    pub fn write_u64(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(Self::PRIME);
    }

    pub fn write_bytes(&mut self, bytes: &[u8]) {
        // Length first, so ["ab", "c"] and ["a", "bc"] differ.
        self.write_u64(bytes.len() as u64);
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.write_u64(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.write_u64(u64::from_le_bytes(tail));
    }

    pub fn write_str(&mut self, text: &str) {
        self.write_bytes(text.as_bytes());
    }

    pub fn finish(&self) -> u64 {
        // A final avalanche so nearby inputs give distant hashes.
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x
    }
}

impl Default for StableHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// A scene: what every shot of one story shares, and the shot plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Scene {
    pub global_prompt: String,
    /// One entry per character ("Mara: red coat, short grey hair").
    pub characters: Vec<String>,
    /// One prompt per shot, in story order.
    pub shots: Vec<String>,
    /// Images of the character alone, each a 1-frame shot captioned as the model's
    /// identity reference.
    pub identity: Option<Arc<Frames>>,
    /// Images of the place without characters, captioned as the environment reference.
    pub environment: Option<Arc<Frames>>,
    /// Other reference images (no caption).
    pub references: Option<Arc<Frames>>,
}

impl Scene {
    pub fn content_hash(&self) -> u64 {
        self.prefix_hash(self.shots.len())
    }

    /// Hash of everything a node that generates shot number `shot_count` (1-based) sees: the
    /// global prompt, the characters, the references and the first `shot_count` shot prompts.
    /// Shot generators use it to narrow their cache signature.
    pub fn prefix_hash(&self, shot_count: usize) -> u64 {
        let mut hasher = StableHasher::new();
        hasher.write_str(&self.global_prompt);
        hasher.write_u64(self.characters.len() as u64);
        for character in &self.characters {
            hasher.write_str(character);
        }
        let shots = &self.shots[..shot_count.min(self.shots.len())];
        hasher.write_u64(shots.len() as u64);
        for shot in shots {
            hasher.write_str(shot);
        }
        for images in [&self.identity, &self.environment, &self.references] {
            hasher.write_u64(images.as_ref().map_or(0, |r| r.content_hash()));
        }
        hasher.finish()
    }
}

/// Why frames could not be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FramesError {
    #[error("frames need 3 (RGB) or 4 (RGBA) channels, got {0}")]
    Channels(u32),
    #[error("frames need a non-zero size, got {frames} frames of {width}x{height}")]
    Empty {
        frames: u32,
        width: u32,
        height: u32,
    },
    #[error("{frames} frames of {width}x{height}x{channels} need {expected} samples, got {got}")]
    Length {
        frames: u32,
        width: u32,
        height: u32,
        channels: u32,
        expected: usize,
        got: usize,
    },
}

/// A sequence of images: f32 samples, frame-major, rows top to bottom, channels interleaved.
pub struct Frames {
    width: u32,
    height: u32,
    channels: u32,
    color_space: ColorSpace,
    samples: Vec<f32>,
    hash: OnceLock<u64>,
}

impl fmt::Debug for Frames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Frames({}x{}x{}x{}, {:?})",
            self.frame_count(),
            self.height,
            self.width,
            self.channels,
            self.color_space
        )
    }
}

impl PartialEq for Frames {
    fn eq(&self, other: &Self) -> bool {
        (self.width, self.height, self.channels, &self.color_space)
            == (
                other.width,
                other.height,
                other.channels,
                &other.color_space,
            )
            && self.samples == other.samples
    }
}

impl Frames {
    pub fn new(
        width: u32,
        height: u32,
        channels: u32,
        color_space: ColorSpace,
        samples: Vec<f32>,
    ) -> Result<Self, FramesError> {
        if !(3..=4).contains(&channels) {
            return Err(FramesError::Channels(channels));
        }
        let frame_len = width as usize * height as usize * channels as usize;
        if frame_len == 0 || samples.is_empty() {
            return Err(FramesError::Empty {
                frames: samples.len().checked_div(frame_len).unwrap_or(0) as u32,
                width,
                height,
            });
        }
        let frames = samples.len().div_ceil(frame_len);
        if !samples.len().is_multiple_of(frame_len) || frames > u32::MAX as usize {
            return Err(FramesError::Length {
                frames: frames as u32,
                width,
                height,
                channels,
                expected: frames * frame_len,
                got: samples.len(),
            });
        }
        Ok(Self {
            width,
            height,
            channels,
            color_space,
            samples,
            hash: OnceLock::new(),
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }
    pub fn height(&self) -> u32 {
        self.height
    }
    pub fn channels(&self) -> u32 {
        self.channels
    }
    pub fn color_space(&self) -> &ColorSpace {
        &self.color_space
    }
    pub fn frame_count(&self) -> u32 {
        (self.samples.len() / self.frame_len()) as u32
    }
    /// Samples per frame.
    pub fn frame_len(&self) -> usize {
        self.width as usize * self.height as usize * self.channels as usize
    }
    /// All samples.
    pub fn samples(&self) -> &[f32] {
        &self.samples
    }
    /// The samples of frame `index`.
    pub fn frame(&self, index: u32) -> Option<&[f32]> {
        let len = self.frame_len();
        let start = index as usize * len;
        self.samples.get(start..start + len)
    }

    /// Frames `first..first + count` converted to `target` through `config` (a copy).
    pub fn samples_in(
        &self,
        first: u32,
        count: u32,
        target: &ColorSpace,
        config: &ColorConfig,
    ) -> Result<Vec<f32>, ColorError> {
        let len = self.frame_len();
        let start = (first as usize * len).min(self.samples.len());
        let end = (start + count as usize * len).min(self.samples.len());
        let mut out = self.samples[start..end].to_vec();
        config.convert(&mut out, self.channels as usize, &self.color_space, target)?;
        Ok(out)
    }

    /// The same pixels re-tagged after conversion to `target`.
    pub fn converted(
        &self,
        target: &ColorSpace,
        config: &ColorConfig,
    ) -> Result<Frames, ColorError> {
        let samples = self.samples_in(0, self.frame_count(), target, config)?;
        Ok(Frames {
            width: self.width,
            height: self.height,
            channels: self.channels,
            color_space: target.clone(),
            samples,
            hash: OnceLock::new(),
        })
    }

    /// Hash of dimensions, colour space and samples; computed once.
    pub fn content_hash(&self) -> u64 {
        *self.hash.get_or_init(|| {
            let mut hasher = StableHasher::new();
            hasher.write_u64(self.width as u64);
            hasher.write_u64(self.height as u64);
            hasher.write_u64(self.channels as u64);
            hasher.write_str(self.color_space.name());
            hasher.write_u64(self.samples.len() as u64);
            for pair in self.samples.chunks(2) {
                let low = pair[0].to_bits() as u64;
                let high = pair.get(1).map_or(0, |s| s.to_bits() as u64);
                hasher.write_u64(low | high << 32);
            }
            hasher.finish()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_reject_wrong_lengths() {
        assert!(Frames::new(2, 2, 3, ColorSpace::srgb(), vec![0.0; 12 * 2]).is_ok());
        assert!(matches!(
            Frames::new(2, 2, 3, ColorSpace::srgb(), vec![0.0; 13]),
            Err(FramesError::Length { .. })
        ));
        assert_eq!(
            Frames::new(2, 2, 2, ColorSpace::srgb(), vec![0.0; 8]).unwrap_err(),
            FramesError::Channels(2)
        );
        assert!(matches!(
            Frames::new(0, 2, 3, ColorSpace::srgb(), vec![]),
            Err(FramesError::Empty { .. })
        ));
    }

    #[test]
    fn scene_prefix_hash_ignores_later_shots() {
        let scene = Scene {
            global_prompt: "a harbour at dawn".into(),
            characters: vec![],
            shots: vec!["one".into(), "two".into(), "three".into()],
            identity: None,
            environment: None,
            references: None,
        };
        let mut edited = scene.clone();
        edited.shots[2] = "three, edited".into();
        assert_eq!(scene.prefix_hash(2), edited.prefix_hash(2));
        assert_ne!(scene.prefix_hash(3), edited.prefix_hash(3));
        assert_ne!(scene.content_hash(), edited.content_hash());
    }

    #[test]
    fn content_hash_depends_on_kind() {
        assert_ne!(
            Value::String("x".into()).content_hash(),
            Value::Enum("x".into()).content_hash()
        );
    }
}
