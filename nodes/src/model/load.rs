//! LoadModel: a checkpoint directory (config.json + model.safetensors) or the embedded default.

use super::engine_error;
use crate::model_values::ModelValue;
use crate::node::{
    ExecContext, Inputs, Node, NodeDescriptor, NodeError, Params, PortDescriptor, WidgetDescriptor,
    WidgetSpec,
};
use crate::value::{StableHasher, Value, ValueKind};
use candle_core::{DType, Device};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

pub struct LoadModel;

static DESCRIPTOR: NodeDescriptor = NodeDescriptor {
    id: "LoadModel",
    version: 1,
    display_name: "Load Model",
    category: "lct/model",
    description:
        "Loads an LCT checkpoint: a directory holding config.json and model.safetensors \
                  (transformer, text encoder, autoencoder). Empty path: the embedded default model.",
    inputs: &[],
    outputs: &[PortDescriptor::required(
        "model",
        ValueKind::Model,
        "The loaded model, shared by every node and graph that loads the same files",
    )],
    widgets: &[WidgetDescriptor {
        name: "path",
        tooltip: "Checkpoint directory; empty for the embedded default model",
        spec: WidgetSpec::String {
            default: "",
            multiline: false,
        },
    }],
    is_output: false,
    not_idempotent: false,
};

/// Loaded models by (directory, weights size, weights modification time): every graph that
/// loads the same files shares one copy while any of them holds it.
type Registry = Mutex<HashMap<(PathBuf, u64, Option<std::time::SystemTime>), Weak<ModelValue>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

fn io_error(path: &Path, source: std::io::Error) -> NodeError {
    NodeError::Io {
        node: DESCRIPTOR.id,
        path: path.display().to_string(),
        source,
    }
}

/// Loads (or shares) the model in `dir`.
pub fn load_model_value(dir: &Path) -> Result<Arc<ModelValue>, NodeError> {
    let dir = dir.canonicalize().map_err(|e| io_error(dir, e))?;
    let weights = dir.join(lct_model::weights::WEIGHTS_FILE);
    let meta = std::fs::metadata(&weights).map_err(|e| io_error(&weights, e))?;
    let key = (dir.clone(), meta.len(), meta.modified().ok());
    let mut registry = registry().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(model) = registry.get(&key).and_then(Weak::upgrade) {
        return Ok(model);
    }
    // The session picks device and dtype; the engine takes them from here.
    let pipeline = lct_model::load_pipeline(&dir, DType::F32, &Device::Cpu)
        .map_err(engine_error(DESCRIPTOR.id))?;
    let mut hasher = StableHasher::new();
    let config = dir.join(lct_model::weights::CONFIG_FILE);
    hasher.write_bytes(&std::fs::read(&config).map_err(|e| io_error(&config, e))?);
    hasher.write_bytes(&std::fs::read(&weights).map_err(|e| io_error(&weights, e))?);
    let parameters = lct_model::weights::read_safetensors(&weights, &Device::Cpu)
        .map_err(engine_error(DESCRIPTOR.id))?
        .values()
        .map(|t| t.elem_count())
        .sum();
    let model = Arc::new(ModelValue {
        pipeline: Arc::new(pipeline),
        source: dir.display().to_string(),
        hash: hasher.finish(),
        parameters,
    });
    registry.retain(|_, weak| weak.strong_count() > 0);
    registry.insert(key, Arc::downgrade(&model));
    Ok(model)
}

/// The default model compiled into this library (see `nodes/build.rs`), loaded once.
#[cfg(embedded_model)]
fn embedded_model() -> Result<Arc<ModelValue>, NodeError> {
    const CONFIG: &str = include_str!("../../assets/default/config.json");
    const WEIGHTS: &[u8] = include_bytes!("../../assets/default/model.safetensors");
    static MODEL: OnceLock<Result<Arc<ModelValue>, String>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let origin = Path::new("<embedded default model>");
            let pipeline = lct_model::weights::pipeline_from_bytes(
                CONFIG,
                WEIGHTS,
                origin,
                DType::F32,
                &Device::Cpu,
            )
            .map_err(|e| e.to_string())?;
            let mut hasher = StableHasher::new();
            hasher.write_str(CONFIG);
            hasher.write_bytes(WEIGHTS);
            let parameters = candle_core::safetensors::load_buffer(WEIGHTS, &Device::Cpu)
                .map(|t| t.values().map(|t| t.elem_count()).sum())
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(ModelValue {
                pipeline: Arc::new(pipeline),
                source: "embedded default model".into(),
                hash: hasher.finish(),
                parameters,
            }))
        })
        .clone()
        .map_err(|message| NodeError::Failed {
            node: DESCRIPTOR.id,
            message,
        })
}

#[cfg(not(embedded_model))]
fn embedded_model() -> Result<Arc<ModelValue>, NodeError> {
    Err(NodeError::Failed {
        node: DESCRIPTOR.id,
        message: "this build carries no embedded default model (nodes/assets/default is empty); \
                  set `path` (with `lct scene`: --model DIR) to a checkpoint directory holding \
                  config.json and model.safetensors"
            .into(),
    })
}

impl Node for LoadModel {
    fn descriptor(&self) -> &'static NodeDescriptor {
        &DESCRIPTOR
    }

    fn execute(
        &self,
        _ctx: &mut ExecContext<'_>,
        params: &Params,
        _inputs: &Inputs<'_>,
    ) -> Result<Vec<Value>, NodeError> {
        let path = params.text("path")?.trim();
        if path.is_empty() {
            return Ok(vec![Value::Model(embedded_model()?)]);
        }
        Ok(vec![Value::Model(load_model_value(Path::new(path))?)])
    }
}

#[cfg(all(test, embedded_model))]
mod tests {
    use super::*;
    use crate::builtin::SceneContext;

    /// The quoted example in a SceneContext widget's tooltip.
    fn tooltip_example(widget: &str) -> String {
        let descriptor = SceneContext.descriptor();
        let tooltip = descriptor
            .widgets
            .iter()
            .find(|w| w.name == widget)
            .unwrap_or_else(|| panic!("SceneContext has a `{widget}` widget"))
            .tooltip;
        let quoted: Vec<&str> = tooltip.split('"').collect();
        assert!(
            quoted.len() >= 3,
            "`{widget}` tooltip quotes no example: {tooltip}"
        );
        quoted[1].to_owned()
    }

    #[test]
    fn the_scene_context_tooltips_give_prompts_the_embedded_model_accepts() {
        let model = embedded_model().unwrap();
        let global = format!(
            "{} {}",
            tooltip_example("characters"),
            tooltip_example("global_prompt")
        );
        model
            .pipeline
            .encode_global_prompt(&global)
            .unwrap_or_else(|e| panic!("the tooltips' global prompt {global:?}: {e}"));
        let shot = tooltip_example("shots");
        model
            .pipeline
            .encode_shot_prompt(&shot)
            .unwrap_or_else(|e| panic!("the tooltip's shot prompt {shot:?}: {e}"));
        // The check can fail: a word outside the world's vocabulary is refused.
        assert!(model
            .pipeline
            .encode_shot_prompt("[SHOT 1] wide shot of Mara in a red coat.")
            .is_err());
    }
}
