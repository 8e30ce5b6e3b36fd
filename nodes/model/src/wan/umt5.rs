//! Wan's text encoder: the encoder stack of umT5 (transformers' `UMT5EncoderModel`: T5 blocks
//! with a relative position bias in every layer, gated-GELU feed-forward, RMS norms without
//! a mean), and its tokenizer read from `tokenizer.json`.
//!
//! Wan conditions on the encoder's output for the prompt's own tokens, zero-padded to a fixed
//! length (512 tokens). Padding keys are masked inside the encoder, and the relative bias only
//! depends on distances, so running the encoder on the unpadded tokens gives the same vectors
//! for them; that is what [`WanTextEncoder::encode`] does before padding.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{embedding, linear_no_bias, Embedding, Linear, VarBuilder};
use serde::Deserialize;

use crate::{Error, Result};

/// The fields of a published `text_encoder/config.json` (`UMT5EncoderModel`); defaults are
/// umt5-xxl's, as Wan uses it.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(default)]
pub struct UmT5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub relative_attention_num_buckets: usize,
    pub relative_attention_max_distance: usize,
    pub layer_norm_epsilon: f64,
    pub feed_forward_proj: String,
}

impl Default for UmT5Config {
    fn default() -> Self {
        Self {
            vocab_size: 256384,
            d_model: 4096,
            d_kv: 64,
            d_ff: 10240,
            num_layers: 24,
            num_heads: 64,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            layer_norm_epsilon: 1e-6,
            feed_forward_proj: "gated-gelu".into(),
        }
    }
}

impl UmT5Config {
    pub fn load(path: &Path) -> Result<Self> {
        let config: Self = super::config::read_json(path)?;
        if config.feed_forward_proj != "gated-gelu" {
            return Err(Error::Config(format!(
                "{}: feed_forward_proj \"{}\" is not umT5's \"gated-gelu\"",
                path.display(),
                config.feed_forward_proj
            )));
        }
        if config.relative_attention_num_buckets < 4 || config.relative_attention_max_distance < 2 {
            return Err(Error::Config(format!(
                "{}: relative_attention_num_buckets {} / max_distance {} are too small",
                path.display(),
                config.relative_attention_num_buckets,
                config.relative_attention_max_distance
            )));
        }
        Ok(config)
    }
}

/// T5's norm: scale by the root mean square, no mean subtracted, no bias.
fn t5_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x32 = x.to_dtype(DType::F32)?;
    let rms = (x32.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    Ok(x32
        .broadcast_div(&rms)?
        .to_dtype(dtype)?
        .broadcast_mul(weight)?)
}

struct Block {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    relative_bias: Embedding,
    attention_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
    feed_forward_norm: Tensor,
}

impl Block {
    fn new(cfg: &UmT5Config, vb: VarBuilder) -> Result<Self> {
        let inner = cfg.num_heads * cfg.d_kv;
        let attention = vb.pp("layer.0.SelfAttention");
        let feed_forward = vb.pp("layer.1.DenseReluDense");
        Ok(Self {
            q: linear_no_bias(cfg.d_model, inner, attention.pp("q"))?,
            k: linear_no_bias(cfg.d_model, inner, attention.pp("k"))?,
            v: linear_no_bias(cfg.d_model, inner, attention.pp("v"))?,
            o: linear_no_bias(inner, cfg.d_model, attention.pp("o"))?,
            relative_bias: embedding(
                cfg.relative_attention_num_buckets,
                cfg.num_heads,
                attention.pp("relative_attention_bias"),
            )?,
            attention_norm: vb.get(cfg.d_model, "layer.0.layer_norm.weight")?,
            gate: linear_no_bias(cfg.d_model, cfg.d_ff, feed_forward.pp("wi_0"))?,
            up: linear_no_bias(cfg.d_model, cfg.d_ff, feed_forward.pp("wi_1"))?,
            down: linear_no_bias(cfg.d_ff, cfg.d_model, feed_forward.pp("wo"))?,
            feed_forward_norm: vb.get(cfg.d_model, "layer.1.layer_norm.weight")?,
        })
    }
}

/// The umT5 encoder stack.
pub struct UmT5Encoder {
    cfg: UmT5Config,
    embeddings: Embedding,
    blocks: Vec<Block>,
    final_norm: Tensor,
}

impl UmT5Encoder {
    pub fn new(cfg: &UmT5Config, vb: VarBuilder) -> Result<Self> {
        let embeddings = embedding(cfg.vocab_size, cfg.d_model, vb.pp("shared"))?;
        // transformers ties `encoder.embed_tokens` to `shared`; some files store both.
        if vb.contains_tensor("encoder.embed_tokens.weight") {
            vb.get((cfg.vocab_size, cfg.d_model), "encoder.embed_tokens.weight")?;
        }
        let encoder = vb.pp("encoder");
        let blocks = (0..cfg.num_layers)
            .map(|i| Block::new(cfg, encoder.pp("block").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            embeddings,
            blocks,
            final_norm: encoder.get(cfg.d_model, "final_layer_norm.weight")?,
        })
    }

    pub fn config(&self) -> &UmT5Config {
        &self.cfg
    }

    /// T5's bidirectional bucket for `key - query`: half the buckets for each direction,
    /// exact below half of them, logarithmic up to the maximum distance.
    fn bucket(&self, relative: i64) -> u32 {
        let half = self.cfg.relative_attention_num_buckets / 2;
        let offset = if relative > 0 { half } else { 0 };
        let distance = relative.unsigned_abs() as usize;
        let exact = half / 2;
        let bucket = if distance < exact {
            distance
        } else {
            let ratio = (distance as f32 / exact as f32).ln()
                / (self.cfg.relative_attention_max_distance as f32 / exact as f32).ln();
            (exact + (ratio * (half - exact) as f32) as usize).min(half - 1)
        };
        (offset + bucket) as u32
    }

    /// The encoder's output `[tokens, d_model]` for one prompt's token ids.
    pub fn forward(&self, ids: &[u32]) -> Result<Tensor> {
        let device = self.final_norm.device();
        let n = ids.len();
        if n == 0 {
            return Err(Error::Shape("umT5: no tokens to encode".into()));
        }
        if let Some(bad) = ids.iter().find(|id| **id as usize >= self.cfg.vocab_size) {
            return Err(Error::Shape(format!(
                "umT5: token id {bad} is outside the vocabulary of {}",
                self.cfg.vocab_size
            )));
        }
        let buckets: Vec<u32> = (0..n)
            .flat_map(|q| (0..n).map(move |k| (q, k)))
            .map(|(q, k)| self.bucket(k as i64 - q as i64))
            .collect();
        let buckets = Tensor::from_vec(buckets, (n, n), device)?;
        let heads = self.cfg.num_heads;
        let head_dim = self.cfg.d_kv;
        let eps = self.cfg.layer_norm_epsilon;
        let mut x = self
            .embeddings
            .forward(&Tensor::new(ids, device)?)?
            .unsqueeze(0)?;
        for block in &self.blocks {
            let h = t5_norm(&x, &block.attention_norm, eps)?;
            let split = |t: Tensor| -> Result<Tensor> {
                Ok(t.reshape((1, n, heads, head_dim))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let q = split(block.q.forward(&h)?)?;
            let k = split(block.k.forward(&h)?)?;
            let v = split(block.v.forward(&h)?)?;
            // umT5 does not scale q·k; the per-layer relative bias is added to the scores.
            let bias = block
                .relative_bias
                .forward(&buckets)?
                .permute((2, 0, 1))?
                .unsqueeze(0)?;
            let scores = q.matmul(&k.t()?)?.broadcast_add(&bias)?;
            let weights = candle_nn::ops::softmax_last_dim(&scores)?;
            let attended =
                weights
                    .matmul(&v)?
                    .transpose(1, 2)?
                    .reshape((1, n, heads * head_dim))?;
            x = (x + block.o.forward(&attended)?)?;
            let h = t5_norm(&x, &block.feed_forward_norm, eps)?;
            let gated = (block.gate.forward(&h)?.gelu()? * block.up.forward(&h)?)?;
            x = (x + block.down.forward(&gated)?)?;
        }
        Ok(t5_norm(&x, &self.final_norm, eps)?.squeeze(0)?)
    }
}

/// Wan's prompt handling: whitespace collapsed, tokenized with the end-of-sequence token,
/// truncated to `max_length`.
pub struct WanTokenizer {
    tokenizer: tokenizers::Tokenizer,
    max_length: usize,
    /// For a closed vocabulary (lct's small models), the unknown token's id and the words:
    /// a prompt word outside them is an error, not a silent `<unk>`.
    closed: Option<(u32, String)>,
}

/// The field of `tokenizer_config.json` by which a word-level tokenizer declares that its
/// vocabulary is closed (lct's extension; published tokenizers never have it).
pub const CLOSED_VOCABULARY_FIELD: &str = "lct_closed_vocabulary";

impl WanTokenizer {
    /// Reads `tokenizer.json` (the fast tokenizer as transformers saves it).
    pub fn load(path: &Path, max_length: usize) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::Io {
                path: path.into(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no tokenizer.json here (lct reads the fast tokenizer's file, not spiece.model)",
                ),
            });
        }
        let invalid = |e: tokenizers::Error| Error::Io {
            path: path.into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        };
        let bytes = lct_files::read(path, lct_files::FileKind::Json)?;
        let mut tokenizer = tokenizers::Tokenizer::from_bytes(bytes).map_err(invalid)?;
        // Truncated as transformers does: the end-of-sequence token stays last.
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(invalid)?;
        tokenizer.with_padding(None);
        let config = path.with_file_name("tokenizer_config.json");
        let declared_closed = config.is_file()
            && super::config::read_json::<serde_json::Value>(&config)?
                .get(CLOSED_VOCABULARY_FIELD)
                .and_then(|v| v.as_bool())
                == Some(true);
        let closed = if declared_closed {
            let unknown = tokenizer.token_to_id("<unk>").ok_or_else(|| {
                Error::Config(format!(
                    "{}: a closed vocabulary needs an `<unk>` token",
                    path.display()
                ))
            })?;
            let special: std::collections::HashSet<u32> = tokenizer
                .get_added_tokens_decoder()
                .keys()
                .copied()
                .collect();
            let mut words: Vec<(u32, String)> = tokenizer
                .get_vocab(false)
                .into_iter()
                .filter(|(_, id)| !special.contains(id) && *id != unknown)
                .map(|(word, id)| (id, word))
                .collect();
            words.sort();
            let listing = words
                .into_iter()
                .map(|(_, word)| word)
                .collect::<Vec<_>>()
                .join(" ");
            Some((unknown, listing))
        } else {
            None
        };
        Ok(Self {
            tokenizer,
            max_length,
            closed,
        })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Token ids of a prompt, ending with the end-of-sequence token, at most `max_length`.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        let cleaned = prompt.split_whitespace().collect::<Vec<_>>().join(" ");
        let encoding = self
            .tokenizer
            .encode(cleaned.as_str(), true)
            .map_err(|e| Error::Config(format!("tokenizer: {e}")))?;
        if let Some((unknown, vocabulary)) = &self.closed {
            // Every unknown word named at once, so a prompt is fixed in one go.
            let words: Vec<&str> = encoding
                .get_ids()
                .iter()
                .zip(encoding.get_offsets())
                .filter(|(id, _)| *id == unknown)
                .map(|(_, &(start, end))| &cleaned[start..end])
                .collect();
            if !words.is_empty() {
                return Err(Error::UnknownWord {
                    word: words.join("', '"),
                    vocabulary: vocabulary.clone(),
                });
            }
        }
        Ok(encoding.get_ids().to_vec())
    }
}

/// A word-level `tokenizer.json` (the tokenizers library's format) over `words`: ids 0, 1, 2
/// for `<pad>`, `</s>`, `<unk>`, then the words in order; lowercased, split on whitespace and
/// punctuation, every prompt ended by `</s>` as umT5's tokenizer ends it. With
/// `tokenizer_config.json` declaring [`CLOSED_VOCABULARY_FIELD`], the vocabulary of a small
/// model that knows its world's words only.
pub fn word_level_tokenizer_json(words: &[&str]) -> String {
    let special = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": false, "special": true})
    };
    let mut vocab = serde_json::Map::new();
    for (id, word) in ["<pad>", "</s>", "<unk>"].iter().chain(words).enumerate() {
        vocab.insert((*word).to_owned(), serde_json::json!(id));
    }
    let end = serde_json::json!({"SpecialToken": {"id": "</s>", "type_id": 0}});
    let sequence = |id: &str| serde_json::json!({"Sequence": {"id": id, "type_id": 0}});
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "<pad>"), special(1, "</s>"), special(2, "<unk>")],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [sequence("A"), end.clone()],
            "pair": [sequence("A"), sequence("B"), end],
            "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
    .to_string()
}

/// The tokenizer and encoder together: a prompt to Wan's `[max_length, d_model]` context.
pub struct WanTextEncoder {
    pub tokenizer: WanTokenizer,
    pub encoder: UmT5Encoder,
    /// The dtype [`Self::encode`] returns (the transformer's).
    pub output_dtype: candle_core::DType,
}

impl WanTextEncoder {
    /// The prompt's token vectors, zero-padded to the tokenizer's `max_length` rows.
    pub fn encode(&self, prompt: &str) -> Result<Tensor> {
        let ids = self.tokenizer.encode(prompt)?;
        let vectors = self.encoder.forward(&ids)?;
        let pad = self.tokenizer.max_length() - ids.len();
        Ok(vectors
            .to_dtype(self.output_dtype)?
            .pad_with_zeros(0, 0, pad)?)
    }

    pub fn device(&self) -> &Device {
        self.encoder.final_norm.device()
    }
}
