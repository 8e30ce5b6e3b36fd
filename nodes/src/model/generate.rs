//! ShotGenerate, ShotExtend and KVCache: one generation routine behind all three.
//!
//! A scene request is: the global prompt (characters first, then the global prompt), the
//! scene's reference frames as 1-frame condition shots, history shots (re-noised to t_c) and
//! the shots to generate. With a KV_CACHE the global prompt, references and history come
//! cached instead, which is exact for context-causal models.

use super::KvState;
use super::{engine_error, model_input, tensor_error};
use crate::color::{names, to_u8};
use crate::model_values::{CacheSettings, KvCacheValue, LatentValue, ModelValue, ShotLatent};
use crate::node::{
    ExecContext, Inputs, Node, NodeDescriptor, NodeError, Params, PortDescriptor, Preview,
    WidgetDescriptor, WidgetSpec,
};
use crate::value::{Scene, StableHasher, Value, ValueKind};
use candle_core::Tensor;
use lct_model::{AttentionMask, SamplerConfig, SceneRequest, ShotInput, ShotRole, StepControl};
use std::sync::Arc;

/// Scene indices of reference images: far from shot indices so their noise streams differ.
const REFERENCE_INDEX_BASE: usize = 1 << 20;

const MODEL_PORT: PortDescriptor =
    PortDescriptor::required("model", ValueKind::Model, "The loaded LCT model");
const SCENE_PORT: PortDescriptor = PortDescriptor::required(
    "scene",
    ValueKind::Scene,
    "Global prompt, characters, shot prompts and reference frames",
);

const SEED: WidgetDescriptor = WidgetDescriptor {
    name: "seed",
    tooltip: "Noise seed; each shot draws its own stream from it",
    spec: WidgetSpec::Int {
        default: 0,
        min: 0,
        max: u32::MAX as i64,
        step: 1,
    },
};
const STEPS: WidgetDescriptor = WidgetDescriptor {
    name: "steps",
    tooltip: "Euler steps from noise to image",
    spec: WidgetSpec::Int {
        default: SamplerConfig::DEFAULT.steps as i64,
        min: 1,
        max: 500,
        step: 1,
    },
};
const CFG: WidgetDescriptor = WidgetDescriptor {
    name: "cfg",
    tooltip: "Classifier-free guidance scale (1 = off)",
    spec: WidgetSpec::Float {
        default: SamplerConfig::DEFAULT.guidance as f64,
        min: 1.0,
        max: 30.0,
        step: 0.1,
    },
};
const SHIFT: WidgetDescriptor = WidgetDescriptor {
    name: "shift",
    tooltip: "Timestep shift: above 1 spends more steps at high noise; 0: the model's own \
              (a Wan checkpoint's scheduler shift; none for LCT checkpoints)",
    spec: WidgetSpec::Float {
        default: 0.0,
        min: 0.0,
        max: 20.0,
        step: 0.1,
    },
};
const HISTORY_TC: WidgetDescriptor = WidgetDescriptor {
    name: "history_tc",
    tooltip: "Noise level t_c that history shots are re-noised to (paper: 0.1..0.5)",
    spec: WidgetSpec::Float {
        default: SamplerConfig::DEFAULT.history_timestep as f64,
        min: 0.0,
        max: 1.0,
        step: 0.05,
    },
};
const CONTEXT_CFG: WidgetDescriptor = WidgetDescriptor {
    name: "context_cfg",
    tooltip: "Context guidance: how strongly each shot follows its scene (global prompt, references, history, the shots generated with it) against itself alone; 1 = off. LCT checkpoints only: Wan checkpoints run without it",
    spec: WidgetSpec::Float {
        default: SamplerConfig::DEFAULT.context_guidance as f64,
        min: 0.0,
        max: 10.0,
        step: 0.1,
    },
};
const PREVIEW_EVERY: WidgetDescriptor = WidgetDescriptor {
    name: "preview_every",
    tooltip: "Every this many steps (and at the last), a host that takes previews gets the \
              shots' current estimate, decoded and rendered for the sRGB display; 0: never",
    spec: WidgetSpec::Int {
        default: 5,
        min: 0,
        max: 500,
        step: 1,
    },
};
const FRAMES: WidgetDescriptor = WidgetDescriptor {
    name: "frames",
    tooltip: "Frames per generated shot (Wan: 1 + 4k, e.g. 81)",
    spec: WidgetSpec::Int {
        default: 4,
        min: 1,
        max: 257,
        step: 1,
    },
};

struct Settings {
    sampler: SamplerConfig,
    frames: usize,
    preview_every: usize,
}

fn settings(params: &Params) -> Result<Settings, NodeError> {
    Ok(Settings {
        sampler: SamplerConfig {
            steps: params.int("steps")? as usize,
            guidance: params.float("cfg")? as f32,
            shift: params.float("shift")? as f32,
            seed: params.int("seed")? as u64,
            history_timestep: params.float("history_tc")? as f32,
            context_guidance: params.float("context_cfg")? as f32,
            ..SamplerConfig::default()
        },
        frames: params.int("frames")? as usize,
        preview_every: params.int("preview_every")? as usize,
    })
}

fn cache_settings(sampler: &SamplerConfig) -> CacheSettings {
    CacheSettings {
        seed: sampler.seed,
        history_timestep: sampler.history_timestep,
        guidance: sampler.guidance != 1.0,
    }
}

fn latent_input<'a>(
    inputs: &Inputs<'a>,
    port: &str,
) -> Result<Option<&'a Arc<LatentValue>>, NodeError> {
    Ok(match inputs.get(port)? {
        Some(Value::Latent(l)) => Some(l),
        _ => None,
    })
}

fn kv_input<'a>(
    inputs: &Inputs<'a>,
    port: &str,
) -> Result<Option<&'a Arc<KvCacheValue>>, NodeError> {
    Ok(match inputs.get(port)? {
        Some(Value::KvCache(k)) => Some(k),
        _ => None,
    })
}

/// Characters first, then the global prompt: "Character 1: red circle. <global prompt>".
pub(crate) fn global_prompt(scene: &Scene) -> String {
    let mut parts: Vec<&str> = scene.characters.iter().map(String::as_str).collect();
    parts.push(&scene.global_prompt);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a cache of this scene's context (global prompt, characters, references) depends on.
fn context_hash(scene: &Scene) -> u64 {
    scene.prefix_hash(0)
}

/// The engine-side pieces of one generation.
struct Context<'a> {
    node: &'static str,
    model: &'a ModelValue,
    sampler: SamplerConfig,
    /// Steps between previews (0: none).
    preview_every: usize,
}

impl Context<'_> {
    fn global_text(&self, scene: &Scene) -> Result<Option<Tensor>, NodeError> {
        self.model
            .backend
            .encode_global(&global_prompt(scene))
            .map_err(engine_error(self.node))
    }

    fn shot_text(&self, prompt: &str) -> Result<Tensor, NodeError> {
        self.model
            .backend
            .encode_shot(prompt)
            .map_err(engine_error(self.node))
    }

    /// Reference images become 1-frame condition shots, captioned as the model's training
    /// captioned its identity and environment images (other references: no caption).
    fn references(&self, scene: &Scene) -> Result<Vec<ShotInput>, NodeError> {
        let prompts = self.model.backend.reference_prompts();
        let groups = [
            (&scene.identity, prompts.map(|p| p.identity.as_str())),
            (&scene.environment, prompts.map(|p| p.environment.as_str())),
            (&scene.references, None),
        ];
        let mut shots = Vec::new();
        for (frames, prompt) in groups {
            let Some(frames) = frames else { continue };
            let text = self.shot_text(prompt.unwrap_or(""))?;
            for latent in super::frames::encode(self.node, &self.model.backend, frames, 1)? {
                let dims = latent.dims();
                shots.push(ShotInput {
                    text: text.clone(),
                    latent_dims: [dims[1], dims[2], dims[3], dims[4]],
                    role: ShotRole::Condition,
                    latent: Some(latent),
                    scene_index: REFERENCE_INDEX_BASE + shots.len(),
                });
            }
        }
        Ok(shots)
    }

    fn history(&self, shots: &[ShotLatent]) -> Result<Vec<ShotInput>, NodeError> {
        shots
            .iter()
            .map(|shot| {
                let dims = shot.latent.dims();
                Ok(ShotInput {
                    text: self.shot_text(&shot.prompt)?,
                    latent_dims: [dims[1], dims[2], dims[3], dims[4]],
                    role: ShotRole::History,
                    latent: Some(shot.latent.clone()),
                    scene_index: shot.scene_index,
                })
            })
            .collect()
    }

    fn target(
        &self,
        prompt: &str,
        scene_index: usize,
        frames: usize,
    ) -> Result<ShotInput, NodeError> {
        Ok(ShotInput {
            text: self.shot_text(prompt)?,
            latent_dims: self
                .model
                .backend
                .shot_latent_dims(frames)
                .map_err(engine_error(self.node))?,
            role: ShotRole::Generate,
            latent: None,
            scene_index,
        })
    }

    /// Checks that `cache` was built by this model, with these settings, from exactly this
    /// scene context and history.
    fn check_cache(
        &self,
        cache: &KvCacheValue,
        scene: &Scene,
        history: &[ShotLatent],
    ) -> Result<(), NodeError> {
        let fail = |message: String| {
            Err(NodeError::Failed {
                node: self.node,
                message,
            })
        };
        if cache.model_hash != self.model.hash {
            return fail("the KV_CACHE was built by a different model".into());
        }
        let wanted = cache_settings(&self.sampler);
        if cache.settings != wanted {
            return fail(format!(
                "the KV_CACHE was built with seed {}, history_tc {}, guidance {}; this node uses seed {}, history_tc {}, guidance {} (set the KVCache node's widgets to match)",
                cache.settings.seed, cache.settings.history_timestep, if cache.settings.guidance { "on" } else { "off" },
                wanted.seed, wanted.history_timestep, if wanted.guidance { "on" } else { "off" }
            ));
        }
        if cache.scene_prefix_hash != context_hash(scene) {
            return fail(
                "the KV_CACHE was built from a different global prompt, characters or references"
                    .into(),
            );
        }
        let history_hashes: Vec<u64> = history.iter().map(|s| s.hash).collect();
        if cache.shot_hashes != history_hashes {
            return fail(format!(
                "the KV_CACHE holds {} history shot(s) that differ from the {} shot(s) of the history LATENT",
                cache.shot_hashes.len(),
                history.len()
            ));
        }
        Ok(())
    }

    fn preview_due(&self, ctx: &ExecContext<'_>, step: usize, steps: usize) -> bool {
        self.preview_every > 0
            && ctx.wants_preview()
            && (step.is_multiple_of(self.preview_every) || step == steps)
    }

    /// The middle frame of each shot's current clean estimate, decoded and rendered for the
    /// sRGB display.
    fn preview(&self, denoised: &[Tensor]) -> Result<Preview, NodeError> {
        let node = self.node;
        let backend = &self.model.backend;
        let (config, working) = super::frames::working_space(node, backend)?;
        let (mut width, mut height) = (0, 0);
        let mut samples = Vec::new();
        for latent in denoised {
            let frames = backend.decode(latent).map_err(engine_error(node))?;
            let (t, _, h, w) = frames.dims4().map_err(tensor_error(node))?;
            (width, height) = (w as u32, h as u32);
            // [3, H, W] -> interleaved [H, W, 3].
            let middle = frames
                .get(t / 2)
                .and_then(|f| f.permute((1, 2, 0)))
                .and_then(|f| f.flatten_all())
                .and_then(|f| f.to_vec1::<f32>())
                .map_err(tensor_error(node))?;
            samples.extend(middle);
        }
        config
            .to_display(
                &mut samples,
                3,
                &working,
                names::SRGB_DISPLAY,
                names::UNTONEMAPPED_VIEW,
            )
            .map_err(|e| NodeError::Failed {
                node,
                message: format!("rendering the preview: {e}"),
            })?;
        Ok(Preview {
            width,
            height,
            frame_count: denoised.len() as u32,
            rgb: samples.into_iter().map(to_u8).collect(),
        })
    }

    /// Generates `targets` (prompt, scene index) after `history`, jointly or one by one.
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        ctx: &mut ExecContext<'_>,
        scene: &Scene,
        history: &[ShotLatent],
        cache: Option<&KvCacheValue>,
        targets: &[(String, usize)],
        frames: usize,
        autoregressive: bool,
    ) -> Result<Vec<ShotLatent>, NodeError> {
        let node = self.node;
        if let Some(cache) = cache {
            if self.model.backend.attention() != AttentionMask::ContextCausal {
                return Err(NodeError::Failed {
                    node,
                    message: "a KV_CACHE needs a context-causal model; this one is bidirectional"
                        .into(),
                });
            }
            self.check_cache(cache, scene, history)?;
        }
        let backend = &self.model.backend;
        let rounds = if autoregressive { targets.len() } else { 1 };
        let total = (rounds * self.sampler.steps) as u32;
        let mut done_steps = 0u32;
        let mut generated: Vec<ShotLatent> = Vec::new();
        let mut past: Option<KvState> = cache.map(|c| c.state.clone());
        let context_shots = if cache.is_some() {
            Vec::new()
        } else {
            let mut shots = self.references(scene)?;
            shots.extend(self.history(history)?);
            shots
        };
        let global = if cache.is_some() {
            None
        } else {
            self.global_text(scene)?
        };
        let groups: Vec<&[(String, usize)]> = if autoregressive {
            targets.chunks(1).collect()
        } else {
            vec![targets]
        };
        for group in groups {
            let mut shots = context_shots.clone();
            if past.is_none() {
                shots.extend(self.history(&generated)?);
            }
            let first_target = shots.len();
            for (prompt, index) in group {
                shots.push(self.target(prompt, *index, frames)?);
            }
            let request = SceneRequest {
                global_text: global.clone(),
                shots,
            };
            // The host's abort arrives through progress or a preview, and a preview can fail:
            // keep the error to return as is.
            let mut cancelled = None;
            let result = backend.sample(&request, &self.sampler, past.as_ref(), |info| {
                let step = done_steps + info.step as u32;
                let previewed = |ctx: &mut ExecContext<'_>| {
                    if !self.preview_due(ctx, info.step, info.total) {
                        return Ok(());
                    }
                    let preview = self.preview(info.denoised)?;
                    ctx.preview(step, total, &preview)
                };
                match ctx.progress(step, total).and_then(|()| previewed(ctx)) {
                    Ok(()) => StepControl::Continue,
                    Err(e) => {
                        cancelled = Some(e);
                        StepControl::Abort
                    }
                }
            });
            let latents = match (result, cancelled) {
                (_, Some(cancel)) => return Err(cancel),
                (result, None) => result.map_err(engine_error(node))?,
            };
            done_steps += self.sampler.steps as u32;
            let mut new_shots = Vec::new();
            for ((prompt, index), latent) in group.iter().zip(&latents[first_target..]) {
                new_shots.push(
                    ShotLatent::new(prompt.clone(), latent.clone(), *index)
                        .map_err(tensor_error(node))?,
                );
            }
            if let Some(state) = &past {
                if autoregressive {
                    let as_history = SceneRequest {
                        global_text: None,
                        shots: self.history(&new_shots)?,
                    };
                    past = Some(
                        backend
                            .cache_history(&as_history, &self.sampler, Some(state))
                            .map_err(engine_error(node))?,
                    );
                }
            }
            generated.extend(new_shots);
        }
        Ok(generated)
    }
}

fn history_shots(history: Option<&Arc<LatentValue>>) -> &[ShotLatent] {
    history.map_or(&[], |h| h.shots.as_slice())
}

/// The output LATENT: history followed by the new shots.
fn scene_so_far(history: &[ShotLatent], new: Vec<ShotLatent>) -> Value {
    let mut shots = history.to_vec();
    shots.extend(new);
    Value::Latent(Arc::new(LatentValue::new(shots)))
}

pub struct ShotGenerate;

static GENERATE: NodeDescriptor = NodeDescriptor {
    id: "ShotGenerate",
    version: 1,
    display_name: "Shot Generate",
    category: "lct/sampling",
    description: "Generates shots first_shot..last_shot of the scene, all together (joint) or one \
                  after another (autoregressive), after the shots of an optional history LATENT \
                  (re-noised to history_tc) or its KV_CACHE. Outputs the history plus the new shots.",
    inputs: &[
        MODEL_PORT,
        SCENE_PORT,
        PortDescriptor::optional("history", ValueKind::Latent, "Shots 1..first_shot-1, already generated"),
        PortDescriptor::optional("kv_cache", ValueKind::KvCache, "Cached K/V of the history (context-causal models)"),
    ],
    outputs: &[PortDescriptor::required("latent", ValueKind::Latent, "History plus the generated shots")],
    widgets: &[
        WidgetDescriptor {
            name: "mode",
            tooltip: "joint: all shots attend to each other while denoising; autoregressive: shot by shot",
            spec: WidgetSpec::Enum { default: "joint", choices: &["joint", "autoregressive"] },
        },
        WidgetDescriptor {
            name: "first_shot",
            tooltip: "First shot to generate (1-based)",
            spec: WidgetSpec::Int { default: 1, min: 1, max: 256, step: 1 },
        },
        WidgetDescriptor {
            name: "last_shot",
            tooltip: "Last shot to generate (1-based); 0 for the scene's last shot",
            spec: WidgetSpec::Int { default: 0, min: 0, max: 256, step: 1 },
        },
        FRAMES,
        SEED,
        STEPS,
        PREVIEW_EVERY,
        CFG,
        CONTEXT_CFG,
        SHIFT,
        HISTORY_TC,
    ],
    is_output: false,
    not_idempotent: false,
};

impl ShotGenerate {
    /// (first, last) as 0-based inclusive-exclusive range over the scene's shots.
    fn range(params: &Params, shot_count: usize) -> Result<(usize, usize), NodeError> {
        let first = params.int("first_shot")? as usize - 1;
        let last = match params.int("last_shot")? as usize {
            0 => shot_count,
            n => n,
        };
        if shot_count == 0 || first >= last || last > shot_count {
            return Err(NodeError::Failed {
                node: GENERATE.id,
                message: format!(
                    "shots {}..={} asked of a scene with {shot_count} shot prompt(s)",
                    first + 1,
                    last
                ),
            });
        }
        Ok((first, last))
    }
}

impl Node for ShotGenerate {
    fn descriptor(&self) -> &'static NodeDescriptor {
        &GENERATE
    }

    fn execute(
        &self,
        ctx: &mut ExecContext<'_>,
        params: &Params,
        inputs: &Inputs<'_>,
    ) -> Result<Vec<Value>, NodeError> {
        let model = model_input(inputs, GENERATE.id)?;
        let scene = inputs.scene("scene")?;
        let history = latent_input(inputs, "history")?;
        let cache = kv_input(inputs, "kv_cache")?;
        let (first, last) = Self::range(params, scene.shots.len())?;
        let history = history_shots(history);
        if history.len() != first {
            return Err(NodeError::Failed {
                node: GENERATE.id,
                message: format!(
                    "first_shot is {} so the history LATENT must hold {first} shot(s); it holds {}",
                    first + 1,
                    history.len()
                ),
            });
        }
        let settings = settings(params)?;
        let targets: Vec<(String, usize)> =
            (first..last).map(|i| (scene.shots[i].clone(), i)).collect();
        let context = Context {
            node: GENERATE.id,
            model,
            sampler: settings.sampler,
            preview_every: settings.preview_every,
        };
        let autoregressive = params.text("mode")? == "autoregressive";
        let new = context.generate(
            ctx,
            scene,
            history,
            cache.map(|c| c.as_ref()),
            &targets,
            settings.frames,
            autoregressive,
        )?;
        Ok(vec![scene_so_far(history, new)])
    }

    /// Shot k depends on the global prompt and shots 1..k only: editing a later shot's prompt
    /// leaves this node's cached output valid.
    fn input_signature(&self, params: &Params, port: usize, value: &Value) -> u64 {
        match (port, value) {
            (1, Value::Scene(scene)) => {
                let last = params.int("last_shot").unwrap_or(0) as usize;
                let used = if last == 0 {
                    scene.shots.len()
                } else {
                    last.min(scene.shots.len())
                };
                let mut hasher = StableHasher::new();
                hasher.write_u64(scene.prefix_hash(used));
                hasher.write_u64(scene.shots.len().min(used) as u64);
                hasher.finish()
            }
            _ => value.content_hash(),
        }
    }
}

pub struct ShotExtend;

static EXTEND: NodeDescriptor = NodeDescriptor {
    id: "ShotExtend",
    version: 1,
    display_name: "Shot Extend",
    category: "lct/sampling",
    description: "Generates one more shot after the given ones, from a new prompt (or the scene's \
                  next shot prompt when empty), seeing the earlier shots as history or through \
                  their KV_CACHE.",
    inputs: &[
        MODEL_PORT,
        SCENE_PORT,
        PortDescriptor::required("latent", ValueKind::Latent, "The shots so far"),
        PortDescriptor::optional(
            "kv_cache",
            ValueKind::KvCache,
            "Cached K/V of the shots so far",
        ),
    ],
    outputs: &[PortDescriptor::required(
        "latent",
        ValueKind::Latent,
        "The shots so far plus the new one",
    )],
    widgets: &[
        WidgetDescriptor {
            name: "prompt",
            tooltip: "Prompt of the new shot; empty takes the scene's next shot prompt",
            spec: WidgetSpec::String {
                default: "",
                multiline: true,
            },
        },
        FRAMES,
        SEED,
        STEPS,
        PREVIEW_EVERY,
        CFG,
        CONTEXT_CFG,
        SHIFT,
        HISTORY_TC,
    ],
    is_output: false,
    not_idempotent: false,
};

impl Node for ShotExtend {
    fn descriptor(&self) -> &'static NodeDescriptor {
        &EXTEND
    }

    fn execute(
        &self,
        ctx: &mut ExecContext<'_>,
        params: &Params,
        inputs: &Inputs<'_>,
    ) -> Result<Vec<Value>, NodeError> {
        let model = model_input(inputs, EXTEND.id)?;
        let scene = inputs.scene("scene")?;
        let history = latent_input(inputs, "latent")?;
        let cache = kv_input(inputs, "kv_cache")?;
        let history = history_shots(history);
        let index = history.len();
        let prompt = match params.text("prompt")?.trim() {
            "" => scene
                .shots
                .get(index)
                .cloned()
                .ok_or_else(|| NodeError::Failed {
                    node: EXTEND.id,
                    message: format!(
                        "`prompt` is empty and the scene has no shot {} prompt ({} given)",
                        index + 1,
                        scene.shots.len()
                    ),
                })?,
            text => text.to_owned(),
        };
        let settings = settings(params)?;
        let context = Context {
            node: EXTEND.id,
            model,
            sampler: settings.sampler,
            preview_every: settings.preview_every,
        };
        let new = context.generate(
            ctx,
            scene,
            history,
            cache.map(|c| c.as_ref()),
            &[(prompt, index)],
            settings.frames,
            true,
        )?;
        Ok(vec![scene_so_far(history, new)])
    }
}

pub struct KvCacheNode;

static KV: NodeDescriptor = NodeDescriptor {
    id: "KVCache",
    version: 1,
    display_name: "KV Cache",
    category: "lct/sampling",
    description: "Computes the K/V of the scene's global prompt, references and the given shots \
                  (re-noised to history_tc) once, for context-causal models, so that generating the \
                  next shots does not recompute them. Extends a previous cache when it holds a prefix \
                  of the shots. Seed, cfg and history_tc must match the generating node's.",
    inputs: &[
        MODEL_PORT,
        SCENE_PORT,
        PortDescriptor::required("latent", ValueKind::Latent, "The history shots to cache"),
        PortDescriptor::optional("previous", ValueKind::KvCache, "A cache of the first shots, to extend"),
    ],
    outputs: &[PortDescriptor::required("kv_cache", ValueKind::KvCache, "The history K/V")],
    widgets: &[SEED, CFG, HISTORY_TC],
    is_output: false,
    not_idempotent: false,
};

impl Node for KvCacheNode {
    fn descriptor(&self) -> &'static NodeDescriptor {
        &KV
    }

    fn execute(
        &self,
        _ctx: &mut ExecContext<'_>,
        params: &Params,
        inputs: &Inputs<'_>,
    ) -> Result<Vec<Value>, NodeError> {
        let node = KV.id;
        let model = model_input(inputs, node)?;
        let scene = inputs.scene("scene")?;
        let latent = latent_input(inputs, "latent")?;
        let previous = kv_input(inputs, "previous")?;
        if model.backend.attention() != AttentionMask::ContextCausal {
            return Err(NodeError::Failed {
                node,
                message: format!(
                    "{} is a bidirectional model: its history K/V change with every new shot, so they cannot be cached; use a context-causal model, or ShotGenerate/ShotExtend without a KV_CACHE",
                    model.source
                ),
            });
        }
        let sampler = SamplerConfig {
            seed: params.int("seed")? as u64,
            guidance: params.float("cfg")? as f32,
            history_timestep: params.float("history_tc")? as f32,
            ..SamplerConfig::default()
        };
        let context = Context {
            node,
            model,
            sampler: sampler.clone(),
            preview_every: 0,
        };
        let shots = history_shots(latent);
        let hashes: Vec<u64> = shots.iter().map(|s| s.hash).collect();
        // Reuse a previous cache when it is this model's, these settings' and a prefix of these
        // shots; its view is immutable, so extending it never disturbs other branches.
        let reusable = previous.filter(|p| {
            p.model_hash == model.hash
                && p.settings == cache_settings(&sampler)
                && p.scene_prefix_hash == context_hash(scene)
                && hashes.starts_with(&p.shot_hashes)
        });
        let backend = &model.backend;
        let (state, cached) = match reusable {
            Some(p) => (p.state.clone(), p.shot_hashes.len()),
            None => {
                let request = SceneRequest {
                    global_text: context.global_text(scene)?,
                    shots: context.references(scene)?,
                };
                let state = backend
                    .cache_history(&request, &sampler, None)
                    .map_err(engine_error(node))?;
                (state, 0)
            }
        };
        let rest = SceneRequest {
            global_text: None,
            shots: context.history(&shots[cached..])?,
        };
        let state = backend
            .cache_history(&rest, &sampler, Some(&state))
            .map_err(engine_error(node))?;
        let mut hasher = StableHasher::new();
        hasher.write_u64(model.hash);
        hasher.write_u64(context_hash(scene));
        for h in &hashes {
            hasher.write_u64(*h);
        }
        hasher.write_u64(sampler.seed);
        hasher.write_u64(sampler.history_timestep.to_bits() as u64);
        hasher.write_u64(u64::from(sampler.guidance != 1.0));
        Ok(vec![Value::KvCache(Arc::new(KvCacheValue {
            state,
            settings: cache_settings(&sampler),
            model_hash: model.hash,
            scene_prefix_hash: context_hash(scene),
            shot_hashes: hashes,
            hash: hasher.finish(),
        }))])
    }
}
