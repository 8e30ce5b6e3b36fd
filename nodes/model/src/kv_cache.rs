//! KV cache for context-causal models.
//!
//! Under the context-causal mask a history segment never attends to later segments, so its
//! per-layer keys and values depend only on earlier history and its timestep `t_c`: compute
//! them once ([`crate::SceneTransformer::extend_cache`]) and reuse them for every denoising
//! step of the next shots.
//!
//! Storage is shared and immutable: a [`SegmentKv`] is held by `Arc`, a [`KvView`] is an
//! ordered list of them. Extending a view returns a new view; the original (and any other
//! branch extended from it) is untouched, so two alternative next shots never clobber each
//! other. A [`KvPool`] keeps every cached shot so that any subset can be attended; each
//! entry keeps the RoPE positions it was cached with.

use crate::error::{Error, Result};
use crate::layout::{Segment, SegmentKind};
use candle_core::Tensor;
use std::sync::{Arc, OnceLock};

/// Post-RoPE keys and values of one segment, per layer: `[B, heads, tokens, head_dim]`.
#[derive(Debug)]
pub struct SegmentKv {
    segment: Segment,
    layers: Vec<(Tensor, Tensor)>,
    /// `[B, text_dim]`: the sum of the segment's text embeddings, for models whose later
    /// shots pool the global prompt (see `Config::pooled_text`).
    text_sum: Option<Tensor>,
}

impl SegmentKv {
    pub fn new(segment: Segment, layers: Vec<(Tensor, Tensor)>) -> Self {
        Self {
            segment,
            layers,
            text_sum: None,
        }
    }
    /// The same entry remembering the sum of its text embeddings.
    pub fn with_text_sum(mut self, text_sum: Tensor) -> Self {
        self.text_sum = Some(text_sum);
        self
    }
    pub fn text_sum(&self) -> Option<&Tensor> {
        self.text_sum.as_ref()
    }
    /// The segment as it was cached (kind, text length, grid, timestep, RoPE start).
    pub fn segment(&self) -> &Segment {
        &self.segment
    }
    pub fn layers(&self) -> &[(Tensor, Tensor)] {
        &self.layers
    }
    pub fn batch(&self) -> usize {
        self.layers.first().map_or(0, |(k, _)| k.dims()[0])
    }
    /// Bytes held by this entry.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum()
    }
}

/// An immutable, ordered selection of cached segments.
#[derive(Debug, Clone, Default)]
pub struct KvView {
    entries: Vec<Arc<SegmentKv>>,
    // Per layer, the entries' K and V joined along the sequence; built once per view.
    joined: Arc<OnceLock<Vec<(Tensor, Tensor)>>>,
}

impl KvView {
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn from_entries(entries: Vec<Arc<SegmentKv>>) -> Result<Self> {
        let view = Self {
            entries,
            joined: Arc::default(),
        };
        view.check()?;
        Ok(view)
    }

    fn check(&self) -> Result<()> {
        let Some(first) = self.entries.first() else {
            return Ok(());
        };
        for (i, e) in self.entries.iter().enumerate() {
            if e.batch() != first.batch() || e.layers.len() != first.layers.len() {
                return Err(Error::KvCache(format!(
                    "entry {i} has batch {} and {} layers, entry 0 has batch {} and {} layers",
                    e.batch(),
                    e.layers.len(),
                    first.batch(),
                    first.layers.len()
                )));
            }
            if i > 0 && e.segment.kind == SegmentKind::Global {
                return Err(Error::KvCache(format!(
                    "entry {i} is a global prompt; only the first entry may be"
                )));
            }
        }
        Ok(())
    }

    /// A new view with `entry` appended; `self` is unchanged.
    pub fn extended(&self, entry: Arc<SegmentKv>) -> Self {
        let mut entries = self.entries.clone();
        entries.push(entry);
        Self {
            entries,
            joined: Arc::default(),
        }
    }

    /// A new view of the chosen entries, in the given order.
    pub fn subset(&self, indices: &[usize]) -> Result<Self> {
        let entries = indices
            .iter()
            .map(|&i| {
                self.entries.get(i).cloned().ok_or_else(|| {
                    Error::KvCache(format!(
                        "entry {i} selected but the view has {}",
                        self.entries.len()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::from_entries(entries)
    }

    pub fn entries(&self) -> &[Arc<SegmentKv>] {
        &self.entries
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn batch(&self) -> usize {
        self.entries.first().map_or(0, |e| e.batch())
    }
    pub fn layers(&self) -> usize {
        self.entries.first().map_or(0, |e| e.layers.len())
    }
    pub fn tokens(&self) -> usize {
        self.entries.iter().map(|e| e.segment.len()).sum()
    }
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.bytes()).sum()
    }
    /// Where a segment appended after this history starts on the RoPE diagonal.
    pub fn rope_end(&self) -> usize {
        self.entries
            .iter()
            .map(|e| e.segment.rope_end())
            .max()
            .unwrap_or(0)
    }

    /// Mask rank of each cached token: entries rank 0, 1, ... in view order.
    pub fn segment_ranks(&self) -> Vec<u32> {
        let mut ranks = Vec::with_capacity(self.tokens());
        for (i, e) in self.entries.iter().enumerate() {
            ranks.extend(std::iter::repeat_n(i as u32, e.segment.len()));
        }
        ranks
    }

    /// Keys and values of layer `layer` over all entries, joined along the sequence.
    pub fn layer(&self, layer: usize) -> Result<(Tensor, Tensor)> {
        if self.entries.is_empty() || layer >= self.layers() {
            return Err(Error::KvCache(format!(
                "layer {layer} requested from a view of {} entries and {} layers",
                self.entries.len(),
                self.layers()
            )));
        }
        if let Some(joined) = self.joined.get() {
            return Ok(joined[layer].clone());
        }
        let joined = (0..self.layers())
            .map(|l| {
                let ks: Vec<&Tensor> = self.entries.iter().map(|e| &e.layers[l].0).collect();
                let vs: Vec<&Tensor> = self.entries.iter().map(|e| &e.layers[l].1).collect();
                Ok((Tensor::cat(&ks, 2)?, Tensor::cat(&vs, 2)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let joined = self.joined.get_or_init(|| joined);
        Ok(joined[layer].clone())
    }
}

/// Every cached segment of a rollout, addressable by the id [`KvPool::insert`] returned.
#[derive(Debug, Clone, Default)]
pub struct KvPool {
    entries: Vec<Arc<SegmentKv>>,
}

impl KvPool {
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds every entry of `view` not already in the pool; returns the ids of all of them.
    pub fn insert_view(&mut self, view: &KvView) -> Vec<usize> {
        view.entries
            .iter()
            .map(|e| self.insert(e.clone()))
            .collect()
    }
    pub fn insert(&mut self, entry: Arc<SegmentKv>) -> usize {
        if let Some(i) = self.entries.iter().position(|e| Arc::ptr_eq(e, &entry)) {
            return i;
        }
        self.entries.push(entry);
        self.entries.len() - 1
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// A view of the chosen entries; history is attended in the order given.
    pub fn view(&self, ids: &[usize]) -> Result<KvView> {
        KvView::from_entries(self.entries.clone()).and_then(|all| all.subset(ids))
    }
}
