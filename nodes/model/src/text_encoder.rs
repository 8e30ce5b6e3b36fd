//! A small text encoder over a closed vocabulary: word embeddings plus learned positions,
//! refined by a residual MLP. The scene transformer's joint attention does the rest.
//!
//! Tokenising follows `lct-text` (the rule the world's captions use too); a word outside the
//! vocabulary is an error that names it and lists the vocabulary (never a silent `<unk>`).

use crate::error::{Error, Result};
use candle_core::{Module, Tensor};
use candle_nn::{embedding, linear, Embedding, Linear, VarBuilder};
use lct_text::{TextError, Vocabulary};
use serde::{Deserialize, Serialize};

pub use lct_text::{split_words, PAD_ID};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextEncoderConfig {
    /// Known words; token id = index + 1 (0 is padding).
    pub vocabulary: Vec<String>,
    /// Longest prompt in tokens (positions learned up to it).
    pub max_len: usize,
    /// Hidden width of the residual MLP.
    pub hidden_size: usize,
}

#[derive(Debug, Clone)]
pub struct TextEncoder {
    cfg: TextEncoderConfig,
    vocabulary: Vocabulary,
    tokens: Embedding,
    positions: Tensor,
    mlp_in: Linear,
    mlp_out: Linear,
    text_dim: usize,
}

impl TextEncoder {
    pub fn new(cfg: &TextEncoderConfig, text_dim: usize, vb: VarBuilder) -> Result<Self> {
        if cfg.vocabulary.is_empty() || cfg.max_len == 0 || cfg.hidden_size == 0 {
            return Err(Error::Config(
                "text_encoder needs a vocabulary, max_len > 0 and hidden_size > 0".into(),
            ));
        }
        let vocabulary = Vocabulary::new(&cfg.vocabulary)
            .map_err(|e| Error::Config(format!("text_encoder: {e}")))?;
        Ok(Self {
            vocabulary,
            tokens: embedding(cfg.vocabulary.len() + 1, text_dim, vb.pp("tokens"))?,
            positions: vb.get((cfg.max_len, text_dim), "positions")?,
            mlp_in: linear(text_dim, cfg.hidden_size, vb.pp("mlp_in"))?,
            mlp_out: linear(cfg.hidden_size, text_dim, vb.pp("mlp_out"))?,
            cfg: cfg.clone(),
            text_dim,
        })
    }

    pub fn config(&self) -> &TextEncoderConfig {
        &self.cfg
    }

    /// Token ids of `text`, or an error naming the first unknown word.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        self.vocabulary.tokenize(text).map_err(|e| match e {
            TextError::UnknownWord { word, vocabulary } => Error::UnknownWord { word, vocabulary },
            other => Error::Config(other.to_string()),
        })
    }

    /// `[1, len, text_dim]` embeddings of `text`, padded or truncated to `len` tokens (the
    /// fixed per-segment length that keeps RoPE offsets as in training).
    pub fn encode(&self, text: &str, len: usize) -> Result<Tensor> {
        if len > self.cfg.max_len {
            return Err(Error::Shape(format!(
                "prompt length {len} exceeds the text encoder's max_len {}",
                self.cfg.max_len
            )));
        }
        let mut ids = self.tokenize(text)?;
        ids.resize(len, PAD_ID);
        let device = self.positions.device();
        let ids = Tensor::new(ids, device)?;
        let x = self
            .tokens
            .forward(&ids)?
            .broadcast_add(&self.positions.narrow(0, 0, len)?)?;
        let x = (&x
            + self
                .mlp_out
                .forward(&self.mlp_in.forward(&x)?.gelu_erf()?)?)?;
        Ok(x.reshape((1, len, self.text_dim))?)
    }
}
