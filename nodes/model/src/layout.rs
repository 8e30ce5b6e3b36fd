//! `SceneLayout`: how a scene becomes one packed token sequence.
//!
//! Segments are packed one after another, each as `[text tokens][video tokens]`:
//! `[global text][dummy video] [text 1][video 1] [text 2][video 2] ...`.
//! This file owns the two conventions everything else relies on:
//! - interleaved 3D RoPE positions (LCT.md section 3, the Qwen2-VL M-RoPE rule);
//! - the attention mask, expressed per token as a *segment rank* and decided by
//!   [`AttentionMask::allows`] alone.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Which keys a query may see. The single mask convention of the project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionMask {
    /// Every token sees every token of the scene (LCT as tuned).
    Bidirectional,
    /// Bidirectional inside a segment; a segment sees only itself and earlier segments.
    ContextCausal,
}

impl AttentionMask {
    /// Whether a query in the segment of rank `query_rank` may attend to a key in the segment
    /// of rank `key_rank`. Ranks grow along the packed sequence.
    #[inline]
    pub fn allows(self, query_rank: u32, key_rank: u32) -> bool {
        match self {
            AttentionMask::Bidirectional => true,
            AttentionMask::ContextCausal => key_rank <= query_rank,
        }
    }
}

/// What a shot segment is for during sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShotRole {
    /// Starts from noise and is denoised.
    Generate,
    /// Given (a frame, a reference image as a 1-frame shot, or a shot): held at a low noise
    /// level; its output is discarded.
    Condition,
    /// An earlier generated shot, re-noised to `t_c` and held fixed (auto-regressive mode).
    History,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentKind {
    /// The global prompt: text plus one dummy video token.
    Global,
    Shot(ShotRole),
}

/// One segment of the packed sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub kind: SegmentKind,
    pub text_len: usize,
    /// Video token grid (frames, height, width) after patching; a reference image is T = 1.
    pub grid: [usize; 3],
    /// Diffusion timestep of every token of this segment, in [0, 1].
    pub timestep: f32,
    /// RoPE start `s_k` of the segment.
    pub rope_start: usize,
    /// Index of the segment's first token in the packed sequence.
    pub offset: usize,
}

impl Segment {
    pub fn video_len(&self) -> usize {
        self.grid.iter().product()
    }
    pub fn len(&self) -> usize {
        self.text_len + self.video_len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// RoPE start of whatever follows this segment: `s_k + L_k + max(T, H, W)`.
    pub fn rope_end(&self) -> usize {
        self.rope_start + self.text_len + self.grid.iter().copied().max().unwrap_or(0)
    }
    pub fn text_range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.text_len
    }
    pub fn video_range(&self) -> std::ops::Range<usize> {
        self.offset + self.text_len..self.offset + self.len()
    }
    pub fn is_shot(&self) -> bool {
        matches!(self.kind, SegmentKind::Shot(_))
    }
    pub fn role(&self) -> Option<ShotRole> {
        match self.kind {
            SegmentKind::Shot(role) => Some(role),
            SegmentKind::Global => None,
        }
    }
}

/// What a caller describes for one segment; the layout fills in offsets and RoPE starts.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentSpec {
    pub kind: SegmentKind,
    pub text_len: usize,
    pub grid: [usize; 3],
    pub timestep: f32,
    /// Force the RoPE start (a cached shot keeps the positions it was cached with);
    /// `None` continues after the previous segment.
    pub rope_start: Option<usize>,
}

impl SegmentSpec {
    pub fn global(text_len: usize) -> Self {
        Self {
            kind: SegmentKind::Global,
            text_len,
            grid: [1, 1, 1],
            timestep: 0.0,
            rope_start: None,
        }
    }
    pub fn shot(role: ShotRole, text_len: usize, grid: [usize; 3], timestep: f32) -> Self {
        Self {
            kind: SegmentKind::Shot(role),
            text_len,
            grid,
            timestep,
            rope_start: None,
        }
    }
    pub fn at_rope_start(mut self, start: usize) -> Self {
        self.rope_start = Some(start);
        self
    }
}

/// The packed sequence of a scene (or of the new segments appended to a cached history).
#[derive(Debug, Clone, PartialEq)]
pub struct SceneLayout {
    segments: Vec<Segment>,
    len: usize,
}

impl SceneLayout {
    /// Builds a layout; RoPE starts follow LCT.md section 3 unless a spec fixes its own.
    /// `rope_origin` is the start of the first segment without a fixed start (0 for a scene,
    /// the end of the cached history when appending).
    pub fn new(specs: &[SegmentSpec], rope_origin: usize) -> Result<Self> {
        if specs
            .iter()
            .all(|s| !matches!(s.kind, SegmentKind::Shot(_)))
        {
            return Err(Error::Layout("a scene needs at least one shot".into()));
        }
        Self::build(specs, rope_origin)
    }

    /// Segments that become cached history: like [`SceneLayout::new`], but a global prompt
    /// alone (the first entry of a history) is allowed.
    pub fn history(specs: &[SegmentSpec], rope_origin: usize) -> Result<Self> {
        if specs.is_empty() {
            return Err(Error::Layout("a history needs at least one segment".into()));
        }
        Self::build(specs, rope_origin)
    }

    fn build(specs: &[SegmentSpec], rope_origin: usize) -> Result<Self> {
        if let Some(i) = specs
            .iter()
            .skip(1)
            .position(|s| s.kind == SegmentKind::Global)
        {
            return Err(Error::Layout(format!(
                "segment {}: the global prompt must be the first segment",
                i + 1
            )));
        }
        let mut segments = Vec::with_capacity(specs.len());
        let mut offset = 0;
        let mut next_start = rope_origin;
        for (index, spec) in specs.iter().enumerate() {
            if spec.grid.contains(&0) {
                return Err(Error::Layout(format!(
                    "segment {index}: video grid {:?} has a zero dimension",
                    spec.grid
                )));
            }
            if !(0.0..=1.0).contains(&spec.timestep) || spec.timestep.is_nan() {
                return Err(Error::Timestep {
                    segment: index,
                    value: spec.timestep,
                });
            }
            if spec.kind == SegmentKind::Global && spec.grid != [1, 1, 1] {
                return Err(Error::Layout(format!(
                    "segment {index}: the global prompt has one dummy video token, not grid {:?}",
                    spec.grid
                )));
            }
            let segment = Segment {
                kind: spec.kind,
                text_len: spec.text_len,
                grid: spec.grid,
                timestep: spec.timestep,
                rope_start: spec.rope_start.unwrap_or(next_start),
                offset,
            };
            offset += segment.len();
            next_start = segment.rope_end();
            segments.push(segment);
        }
        Ok(Self {
            segments,
            len: offset,
        })
    }

    /// A scene: an optional global prompt segment followed by shot segments.
    pub fn scene(global_text_len: Option<usize>, shots: &[SegmentSpec]) -> Result<Self> {
        let mut specs = Vec::with_capacity(shots.len() + 1);
        if let Some(len) = global_text_len {
            specs.push(SegmentSpec::global(len));
        }
        specs.extend_from_slice(shots);
        Self::new(&specs, 0)
    }

    /// Keeps the chosen segments (in the given order) with the RoPE positions they have here.
    pub fn select(&self, indices: &[usize]) -> Result<Self> {
        let specs = indices
            .iter()
            .map(|&i| {
                let s = self.segments.get(i).ok_or_else(|| {
                    Error::Layout(format!(
                        "segment {i} selected but the layout has {} segments",
                        self.segments.len()
                    ))
                })?;
                Ok(SegmentSpec {
                    kind: s.kind,
                    text_len: s.text_len,
                    grid: s.grid,
                    timestep: s.timestep,
                    rope_start: Some(s.rope_start),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if specs.is_empty() {
            return Err(Error::Layout("no segment selected".into()));
        }
        Self::build(&specs, 0)
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }
    /// Total tokens in the packed sequence.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn text_len(&self) -> usize {
        self.segments.iter().map(|s| s.text_len).sum()
    }
    pub fn video_len(&self) -> usize {
        self.segments.iter().map(|s| s.video_len()).sum()
    }
    /// RoPE start of a segment appended after this layout.
    pub fn rope_end(&self) -> usize {
        self.segments
            .iter()
            .map(|s| s.rope_end())
            .max()
            .unwrap_or(0)
    }

    /// Per packed token, its (frame, height, width) RoPE position.
    pub fn rope_positions(&self) -> Vec<[u32; 3]> {
        let mut out = Vec::with_capacity(self.len);
        for s in &self.segments {
            for j in 0..s.text_len {
                let p = (s.rope_start + j) as u32;
                out.push([p, p, p]);
            }
            let base = (s.rope_start + s.text_len) as u32;
            let [t, h, w] = s.grid;
            for tau in 0..t {
                for y in 0..h {
                    for x in 0..w {
                        out.push([base + tau as u32, base + y as u32, base + x as u32]);
                    }
                }
            }
        }
        out
    }

    /// Per packed token, the index of its segment (the rank used by the mask).
    pub fn segment_ranks(&self, first_rank: u32) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.len);
        for (i, s) in self.segments.iter().enumerate() {
            out.extend(std::iter::repeat_n(first_rank + i as u32, s.len()));
        }
        out
    }

    /// Segment index of each text token (in text-stream order) and each video token.
    pub fn stream_segment_ids(&self) -> (Vec<u32>, Vec<u32>) {
        let mut text = Vec::with_capacity(self.text_len());
        let mut video = Vec::with_capacity(self.video_len());
        for (i, s) in self.segments.iter().enumerate() {
            text.extend(std::iter::repeat_n(i as u32, s.text_len));
            video.extend(std::iter::repeat_n(i as u32, s.video_len()));
        }
        (text, video)
    }

    pub fn timesteps(&self) -> Vec<f32> {
        self.segments.iter().map(|s| s.timestep).collect()
    }

    /// Indices of the shot segments (the global segment excluded).
    pub fn shot_indices(&self) -> Vec<usize> {
        (0..self.segments.len())
            .filter(|&i| self.segments[i].is_shot())
            .collect()
    }

    /// Replaces every segment's timestep (same count as segments).
    pub fn with_timesteps(&self, timesteps: &[f32]) -> Result<Self> {
        if timesteps.len() != self.segments.len() {
            return Err(Error::Layout(format!(
                "{} timesteps given for {} segments",
                timesteps.len(),
                self.segments.len()
            )));
        }
        let mut out = self.clone();
        for (i, (s, &t)) in out.segments.iter_mut().zip(timesteps).enumerate() {
            if !(0.0..=1.0).contains(&t) || t.is_nan() {
                return Err(Error::Timestep {
                    segment: i,
                    value: t,
                });
            }
            s.timestep = t;
        }
        Ok(out)
    }
}
