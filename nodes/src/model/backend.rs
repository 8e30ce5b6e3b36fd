//! The model families a MODEL value can hold, behind one set of operations the nodes use:
//! the project's own LCT checkpoints ([`Pipeline`]) and Wan 2.1 / 2.2 checkpoints in the
//! diffusers layout ([`WanPipeline`]). Every difference between the two is settled here, so
//! the nodes read the same for both.

use std::sync::Arc;

use candle_core::Tensor;
use lct_model::wan::{wan_cache_history, wan_sample, WanHistory, WanPipeline};
use lct_model::{
    cache_history, sample, AttentionMask, KvView, Pipeline, ReferencePrompts, Result,
    SamplerConfig, SceneRequest, StepControl, StepInfo,
};

/// Wan's frame size when LoadModel's `width` and `height` are 0 (Wan 2.1's 480p).
pub const WAN_DEFAULT_FRAME: [usize; 2] = [480, 832];

/// A Wan checkpoint with what the nodes need around it.
pub struct WanBackend {
    pub pipeline: WanPipeline,
    /// The negative prompt's embeddings `[1, 512, d]` (the empty prompt): the unguided branch.
    pub null_text: Tensor,
    /// `[height, width]` of the frames this MODEL generates and takes.
    pub frame_size: [usize; 2],
}

// One per loaded model, behind an `Arc`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Backend {
    Lct(Pipeline),
    Wan(WanBackend),
}

/// A cached history, in the form of the model that built it.
#[derive(Clone)]
pub enum KvState {
    Lct(KvView),
    /// Wan: the global prompt lives in cross-attention only, so a cache with no shots yet is
    /// just the prompt's embeddings.
    Wan {
        global_text: Option<Tensor>,
        history: Option<Arc<WanHistory>>,
    },
}

impl KvState {
    /// Cached segments (Wan: shots).
    pub fn len(&self) -> usize {
        match self {
            Self::Lct(view) => view.len(),
            Self::Wan { history, .. } => history.as_ref().map_or(0, |h| h.shots()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cached key/value tokens per layer.
    pub fn tokens(&self) -> usize {
        match self {
            Self::Lct(view) => view.tokens(),
            Self::Wan { history, .. } => history.as_ref().map_or(0, |h| h.cond.tokens()),
        }
    }
}

fn mismatch() -> lct_model::Error {
    lct_model::Error::KvCache("the KV_CACHE was built by a different model family".into())
}

/// A Wan model's cached global prompt and history (none without a cache).
type WanPast = (Option<Tensor>, Option<Arc<WanHistory>>);

fn wan_past(past: Option<&KvState>) -> Result<WanPast> {
    match past {
        None => Ok((None, None)),
        Some(KvState::Wan {
            global_text,
            history,
        }) => Ok((global_text.clone(), history.clone())),
        Some(KvState::Lct(_)) => Err(mismatch()),
    }
}

impl Backend {
    pub fn family(&self) -> &'static str {
        match self {
            Self::Lct(_) => "lct",
            Self::Wan(_) => "wan",
        }
    }

    pub fn attention(&self) -> AttentionMask {
        match self {
            Self::Lct(p) => p.config().attention,
            Self::Wan(w) => w.pipeline.attention,
        }
    }

    /// `[height, width]` of the frames the model generates and encodes.
    pub fn frame_size(&self) -> Result<[usize; 2]> {
        match self {
            Self::Lct(p) => Ok(p.autoencoder()?.config().frame_size),
            Self::Wan(w) => Ok(w.frame_size),
        }
    }

    /// The colour space the model's frames are in: the checkpoint's declared one, or for Wan
    /// the sRGB-encoded video it was trained on.
    pub fn working_space(&self) -> Result<String> {
        match self {
            Self::Lct(p) => Ok(p.autoencoder()?.config().color_space.clone()),
            Self::Wan(_) => Ok(lct_model::default_working_color_space()),
        }
    }

    pub fn reference_prompts(&self) -> Option<&ReferencePrompts> {
        match self {
            Self::Lct(p) => p.config().reference_prompts.as_ref(),
            Self::Wan(_) => None,
        }
    }

    /// The scene's global prompt, `[1, tokens, text_dim]`; `None` for an empty one where the
    /// model runs without (Wan always has one: its context is never empty).
    pub fn encode_global(&self, text: &str) -> Result<Option<Tensor>> {
        match self {
            Self::Lct(_) if text.is_empty() => Ok(None),
            Self::Lct(p) => p.encode_global_prompt(text).map(Some),
            Self::Wan(w) => Ok(Some(w.pipeline.text.encode(text)?.unsqueeze(0)?)),
        }
    }

    /// Whether the model can read `text`: a closed vocabulary refuses unknown words (an
    /// error naming the word and listing the vocabulary); Wan's own tokenizer reads any text.
    pub fn check_prompt(&self, text: &str) -> Result<()> {
        match self {
            Self::Lct(_) if text.trim().is_empty() => Ok(()),
            Self::Lct(p) => p.encode_global_prompt(text).map(drop),
            // Tokenizing is cheap; a closed vocabulary refuses unknown words here.
            Self::Wan(w) => w.pipeline.text.tokenizer.encode(text).map(drop),
        }
    }

    pub fn encode_shot(&self, text: &str) -> Result<Tensor> {
        match self {
            Self::Lct(p) => p.encode_shot_prompt(text),
            Self::Wan(w) => Ok(w.pipeline.text.encode(text)?.unsqueeze(0)?),
        }
    }

    /// Latent `[C, T, h, w]` of a generated shot of `frames` frames.
    pub fn shot_latent_dims(&self, frames: usize) -> Result<[usize; 4]> {
        match self {
            Self::Lct(p) => p.shot_latent_dims(frames),
            Self::Wan(w) => {
                let [height, width] = w.frame_size;
                w.pipeline.latent_dims(frames, height, width)
            }
        }
    }

    /// Frames `[T, 3, H, W]` in the working space (0..1) to one shot's latent `[1, C, t, h, w]`.
    pub fn encode_frames(&self, frames: &Tensor) -> Result<Tensor> {
        match self {
            Self::Lct(p) => p.autoencoder()?.encode(frames),
            Self::Wan(w) => w.pipeline.encode_frames(frames),
        }
    }

    /// One shot's latent `[1, C, t, h, w]` to frames `[T, 3, H, W]` in the working space (0..1).
    pub fn decode(&self, latent: &Tensor) -> Result<Tensor> {
        match self {
            Self::Lct(p) => p.autoencoder()?.decode(latent),
            Self::Wan(w) => w.pipeline.decode_frames(latent),
        }
    }

    /// The sampler settings as the model wants them: a `shift` of 0 means the model's own
    /// (Wan: its scheduler's; ours: no shift).
    pub fn sampler(&self, cfg: &SamplerConfig) -> SamplerConfig {
        let mut cfg = cfg.clone();
        if cfg.shift == 0.0 {
            cfg.shift = match self {
                Self::Lct(_) => SamplerConfig::DEFAULT.shift,
                Self::Wan(w) => w.pipeline.shift,
            };
        }
        cfg
    }

    /// Generates the request's shots, after `past` when given.
    pub fn sample(
        &self,
        request: &SceneRequest,
        cfg: &SamplerConfig,
        past: Option<&KvState>,
        on_step: impl FnMut(&StepInfo) -> StepControl,
    ) -> Result<Vec<Tensor>> {
        let cfg = self.sampler(cfg);
        match (self, past) {
            (Self::Lct(p), None) => sample(&p.transformer, request, &cfg, None, on_step),
            (Self::Lct(p), Some(KvState::Lct(view))) => {
                sample(&p.transformer, request, &cfg, Some(view), on_step)
            }
            (Self::Wan(w), past) => {
                let (global, history) = wan_past(past)?;
                let mut request = request.clone();
                if request.global_text.is_none() {
                    request.global_text = global;
                }
                wan_sample(
                    &w.pipeline.transformer,
                    &request,
                    &cfg,
                    Some(&w.null_text),
                    w.pipeline.attention,
                    history.as_deref(),
                    on_step,
                )
            }
            (Self::Lct(_), Some(KvState::Wan { .. })) => Err(mismatch()),
        }
    }

    /// Caches the request's global prompt (when given) and shots after `past` (or from
    /// nothing).
    pub fn cache_history(
        &self,
        request: &SceneRequest,
        cfg: &SamplerConfig,
        past: Option<&KvState>,
    ) -> Result<KvState> {
        let cfg = self.sampler(cfg);
        match (self, past) {
            (Self::Lct(p), None) => Ok(KvState::Lct(cache_history(
                &p.transformer,
                request,
                &cfg,
                &KvView::empty(),
            )?)),
            (Self::Lct(p), Some(KvState::Lct(view))) => Ok(KvState::Lct(cache_history(
                &p.transformer,
                request,
                &cfg,
                view,
            )?)),
            (Self::Wan(w), past) => {
                let (global, history) = wan_past(past)?;
                let global = request.global_text.clone().or(global);
                if request.shots.is_empty() {
                    return Ok(KvState::Wan {
                        global_text: global,
                        history,
                    });
                }
                let mut request = request.clone();
                request.global_text = global.clone();
                let extended = wan_cache_history(
                    &w.pipeline.transformer,
                    &request,
                    &cfg,
                    Some(&w.null_text),
                    history.as_deref(),
                )?;
                Ok(KvState::Wan {
                    global_text: global,
                    history: Some(Arc::new(extended)),
                })
            }
            (Self::Lct(_), Some(KvState::Wan { .. })) => Err(mismatch()),
        }
    }
}
