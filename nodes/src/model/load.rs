//! LoadModel: a checkpoint directory (ours: config.json + model.safetensors; or a Wan 2.1 /
//! 2.2 checkpoint in the diffusers layout) or the embedded default.

use super::{engine_error, Backend, WanBackend, WAN_DEFAULT_FRAME};
use crate::model_values::ModelValue;
use crate::node::{
    ExecContext, Inputs, Node, NodeDescriptor, NodeError, Params, PortDescriptor, WidgetDescriptor,
    WidgetSpec,
};
use crate::value::{StableHasher, Value, ValueKind};
use candle_core::{DType, Device};
use lct_files::FileKind;
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
        "Loads a checkpoint: an LCT directory holding config.json and model.safetensors \
                  (transformer, text encoder, autoencoder), or a Wan 2.1 / 2.2 checkpoint folder in \
                  the diffusers layout (model_index.json, transformer/, vae/, text_encoder/, \
                  tokenizer/). Empty path: the embedded default model.",
    inputs: &[],
    outputs: &[PortDescriptor::required(
        "model",
        ValueKind::Model,
        "The loaded model, shared by every node and graph that loads the same files",
    )],
    widgets: &[
        WidgetDescriptor {
            name: "path",
            tooltip: "Checkpoint directory; empty for the embedded default model",
            spec: WidgetSpec::String {
                default: "",
                multiline: false,
            },
        },
        WidgetDescriptor {
            name: "width",
            tooltip: "Frame width for models without a fixed frame size (Wan); 0: 832. \
                      Models with a fixed size (LCT checkpoints) take only 0 or their own",
            spec: WidgetSpec::Int {
                default: 0,
                min: 0,
                max: 4096,
                step: 8,
            },
        },
        WidgetDescriptor {
            name: "height",
            tooltip: "Frame height for models without a fixed frame size (Wan); 0: 480. \
                      Models with a fixed size (LCT checkpoints) take only 0 or their own",
            spec: WidgetSpec::Int {
                default: 0,
                min: 0,
                max: 4096,
                step: 8,
            },
        },
        WidgetDescriptor {
            name: "precision",
            tooltip: "What a Wan checkpoint computes in: f32, or bf16 (half the memory; \
                      umT5 always runs in the half precision it is published in). LCT \
                      checkpoints run in f32",
            spec: WidgetSpec::Enum {
                default: "f32",
                choices: &["f32", "bf16"],
            },
        },
    ],
    is_output: false,
    not_idempotent: false,
};

/// Loaded models by (directory, weights size, weights modification time, frame size): every
/// graph that loads the same files shares one copy while any of them holds it.
type RegistryKey = (
    PathBuf,
    u64,
    Option<std::time::SystemTime>,
    [usize; 2],
    bool,
);
type Registry = Mutex<HashMap<RegistryKey, Weak<ModelValue>>>;

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

fn failed(message: String) -> NodeError {
    NodeError::Failed {
        node: DESCRIPTOR.id,
        message,
    }
}

/// Loads (or shares) the model in `dir`; `frame_size` `[height, width]` (0: the model's
/// own) for models that take any; `dtype` F32, or BF16 for Wan checkpoints.
pub fn load_model_value(
    dir: &Path,
    frame_size: [usize; 2],
    dtype: DType,
) -> Result<Arc<ModelValue>, NodeError> {
    let dir = dir.canonicalize().map_err(|e| io_error(dir, e))?;
    if lct_model::wan::is_wan_checkpoint(&dir) {
        return load_wan(&dir, frame_size, dtype);
    }
    check_f32(&dir.display().to_string(), dtype)?;
    let weights = dir.join(lct_model::weights::WEIGHTS_FILE);
    let meta = std::fs::metadata(&weights).map_err(|e| io_error(&weights, e))?;
    let key = (
        dir.clone(),
        meta.len(),
        meta.modified().ok(),
        frame_size,
        false,
    );
    let mut registry = registry().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(model) = registry.get(&key).and_then(Weak::upgrade) {
        return Ok(model);
    }
    // The session picks device and dtype; the engine takes them from here.
    let pipeline = lct_model::load_pipeline(&dir, DType::F32, &Device::Cpu)
        .map_err(engine_error(DESCRIPTOR.id))?;
    let mut hasher = StableHasher::new();
    let config = dir.join(lct_model::weights::CONFIG_FILE);
    hasher.write_bytes(&read_bounded(&config, FileKind::Json)?);
    hasher.write_bytes(&read_bounded(&weights, FileKind::Weights)?);
    let parameters = lct_model::weights::read_safetensors(&weights, &Device::Cpu)
        .map_err(engine_error(DESCRIPTOR.id))?
        .values()
        .map(|t| t.elem_count())
        .sum();
    let model = Arc::new(ModelValue {
        backend: Arc::new(Backend::Lct(pipeline)),
        source: dir.display().to_string(),
        hash: hasher.finish(),
        parameters,
    });
    check_fixed_frame_size(&model, frame_size)?;
    registry.retain(|_, weak| weak.strong_count() > 0);
    registry.insert(key, Arc::downgrade(&model));
    Ok(model)
}

/// LCT checkpoints compute in f32 (their fused CPU kernels are f32).
fn check_f32(source: &str, dtype: DType) -> Result<(), NodeError> {
    if dtype == DType::F32 {
        Ok(())
    } else {
        Err(failed(format!(
            "{source} is an LCT checkpoint: it runs in f32 only (`precision` bf16 is for Wan checkpoints)"
        )))
    }
}

/// A model with a fixed frame size takes 0 (its own) or exactly that size.
fn check_fixed_frame_size(model: &ModelValue, asked: [usize; 2]) -> Result<(), NodeError> {
    let own = model
        .backend
        .frame_size()
        .map_err(engine_error(DESCRIPTOR.id))?;
    match asked {
        [0, 0] => Ok(()),
        size if size == own => Ok(()),
        [height, width] => Err(failed(format!(
            "{} works on {}x{} frames only; `width` x `height` is {width}x{height} (set both to 0)",
            model.source, own[1], own[0]
        ))),
    }
}

/// A file the model folder holds, within lct's bounds (a regular file under its kind's limit).
fn read_bounded(path: &Path, kind: FileKind) -> Result<Vec<u8>, NodeError> {
    lct_files::read(path, kind).map_err(|e| failed(e.to_string()))
}

/// A safetensors file's header (the JSON before the data): its tensor names, dtypes, shapes
/// and offsets, without reading the weights.
fn safetensors_header(path: &Path) -> Result<Vec<u8>, NodeError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length)
        .map_err(|e| io_error(path, e))?;
    let length = u64::from_le_bytes(length);
    if length > 100 << 20 {
        return Err(failed(format!(
            "{}: a safetensors header of {length} bytes; the file is not safetensors",
            path.display()
        )));
    }
    let mut header = vec![0u8; length as usize];
    file.read_exact(&mut header)
        .map_err(|e| io_error(path, e))?;
    Ok(header)
}

/// Elements of every tensor a safetensors header lists.
fn header_parameters(path: &Path, header: &[u8]) -> Result<usize, NodeError> {
    let json: serde_json::Value = serde_json::from_slice(header)
        .map_err(|e| failed(format!("{}: safetensors header: {e}", path.display())))?;
    Ok(json
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| name.as_str() != "__metadata__")
        .filter_map(|(_, info)| info.get("shape")?.as_array().cloned())
        .map(|shape| shape.iter().filter_map(|d| d.as_u64()).product::<u64>() as usize)
        .sum())
}

/// A Wan checkpoint folder (diffusers layout), at `frame_size` (0: the size its `lct.json`
/// declares, else 832x480).
fn load_wan(
    dir: &Path,
    frame_size: [usize; 2],
    dtype: DType,
) -> Result<Arc<ModelValue>, NodeError> {
    let [height, width] = frame_size;
    if (height == 0) != (width == 0) {
        return Err(failed(format!(
            "`width` and `height` must both be set or both 0, got {width}x{height}"
        )));
    }
    // What identifies the weights: every config and every weight file's header, size and
    // modification time.
    let mut hasher = StableHasher::new();
    let mut parameters = 0;
    let (mut bytes, mut newest) = (0u64, None);
    for component in [
        "transformer",
        "vae",
        "text_encoder",
        "tokenizer",
        "scheduler",
    ] {
        let folder = dir.join(component);
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for file in files {
            let meta = std::fs::metadata(&file).map_err(|e| io_error(&file, e))?;
            hasher.write_str(&file.to_string_lossy());
            hasher.write_u64(meta.len());
            bytes += meta.len();
            newest = newest.max(meta.modified().ok());
            if file.extension().is_some_and(|e| e == "safetensors") {
                let header = safetensors_header(&file)?;
                hasher.write_bytes(&header);
                parameters += header_parameters(&file, &header)?;
            } else if meta.len() < 64 << 20 {
                hasher.write_bytes(&read_bounded(&file, FileKind::Json)?);
            }
        }
    }
    for marker in ["model_index.json", lct_model::wan::LCT_MARKER] {
        let path = dir.join(marker);
        if path.exists() {
            hasher.write_bytes(&read_bounded(&path, FileKind::Json)?);
        }
    }
    if let Some(time) = newest {
        let since = time
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        hasher.write_u64(since.as_nanos() as u64);
    }
    hasher.write_u64(frame_size[0] as u64);
    hasher.write_u64(frame_size[1] as u64);
    let half = dtype == DType::BF16;
    hasher.write_u64(u64::from(half));
    let key = (dir.to_path_buf(), bytes, newest, frame_size, half);
    let mut registry = registry().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(model) = registry.get(&key).and_then(Weak::upgrade) {
        return Ok(model);
    }
    let pipeline = lct_model::wan::WanPipeline::load(dir, dtype, &Device::Cpu)
        .map_err(engine_error(DESCRIPTOR.id))?;
    // 0x0: the size the checkpoint declares (a small model's), else Wan's 832x480.
    let frame_size = match frame_size {
        [0, 0] => pipeline.frame_size.unwrap_or(WAN_DEFAULT_FRAME),
        set => set,
    };
    // The frame size must suit the VAE and the patches; checked once here, not per shot.
    pipeline
        .latent_dims(1, frame_size[0], frame_size[1])
        .map_err(engine_error(DESCRIPTOR.id))?;
    let null_text = pipeline
        .text
        .encode("")
        .and_then(|t| Ok(t.unsqueeze(0)?))
        .map_err(engine_error(DESCRIPTOR.id))?;
    let model = Arc::new(ModelValue {
        backend: Arc::new(Backend::Wan(WanBackend {
            pipeline,
            null_text,
            frame_size,
        })),
        source: dir.display().to_string(),
        hash: hasher.finish(),
        parameters,
    });
    registry.retain(|_, weak| weak.strong_count() > 0);
    registry.insert(key, Arc::downgrade(&model));
    Ok(model)
}

#[cfg(embedded_model)]
mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_model.rs"));
}

/// The default model compiled into this library (see `nodes/build.rs`): a Wan checkpoint
/// folder, unpacked once into the user's cache (`$LCT_CACHE_DIR`, else `$XDG_CACHE_HOME/lct`
/// or `~/.cache/lct`, else the temporary folder) under a name that is the hash of its bytes,
/// then loaded as any Wan folder (memory-mapped, shared).
#[cfg(embedded_model)]
fn embedded_model(frame_size: [usize; 2], dtype: DType) -> Result<Arc<ModelValue>, NodeError> {
    static FOLDER: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let folder = FOLDER
        .get_or_init(|| unpack_embedded(embedded::EMBEDDED_FILES, &cache_root()))
        .clone()
        .map_err(failed)?;
    load_wan(&folder, frame_size, dtype)
}

#[cfg(not(embedded_model))]
fn embedded_model(_frame_size: [usize; 2], _dtype: DType) -> Result<Arc<ModelValue>, NodeError> {
    Err(failed(
        "this build carries no embedded default model (nodes/assets/default is empty); set \
         `path` (with `lct scene`: --model DIR) to a Wan checkpoint folder"
            .into(),
    ))
}

/// Where the embedded model is unpacked.
#[cfg_attr(not(embedded_model), allow(dead_code))]
fn cache_root() -> PathBuf {
    let from_env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from_env("LCT_CACHE_DIR")
        .or_else(|| from_env("XDG_CACHE_HOME").map(|p| p.join("lct")))
        .or_else(|| from_env("HOME").map(|p| p.join(".cache").join("lct")))
        .unwrap_or_else(|| std::env::temp_dir().join("lct-cache"))
}

/// Writes `files` (relative path, bytes) into `<root>/embedded-model-<hash>/` unless a
/// complete copy is there (every file present with its length), and returns that folder.
/// Written into a private staging folder and renamed into place, so that processes
/// unpacking at once never see each other's partial files.
#[cfg_attr(not(embedded_model), allow(dead_code))]
fn unpack_embedded(files: &[(&str, &[u8])], root: &Path) -> Result<PathBuf, String> {
    let mut hasher = StableHasher::new();
    for (name, bytes) in files {
        hasher.write_str(name);
        hasher.write_bytes(bytes);
    }
    let folder = root.join(format!("embedded-model-{:016x}", hasher.finish()));
    let complete = |folder: &Path| {
        files.iter().all(|(name, bytes)| {
            std::fs::metadata(folder.join(name))
                .is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64)
        })
    };
    if complete(&folder) {
        return Ok(folder);
    }
    let context = |path: &Path, e: std::io::Error| {
        format!(
            "unpacking the embedded model into {}: {e} (set LCT_CACHE_DIR to a writable folder)",
            path.display()
        )
    };
    static UNPACKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let staging = root.join(format!(
        ".embedded-model-{}-{}",
        std::process::id(),
        UNPACKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    for (name, bytes) in files {
        let path = staging.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| context(parent, e))?;
        }
        std::fs::write(&path, bytes).map_err(|e| context(&path, e))?;
    }
    if std::fs::rename(&staging, &folder).is_err() {
        // Another process got there first (or an incomplete copy is in the way: replaced).
        if !complete(&folder) {
            let _ = std::fs::remove_dir_all(&folder);
            std::fs::rename(&staging, &folder).map_err(|e| context(&folder, e))?;
            return Ok(folder);
        }
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(folder)
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
        let frame_size = [
            params.int("height")? as usize,
            params.int("width")? as usize,
        ];
        let dtype = match params.text("precision")? {
            "bf16" => DType::BF16,
            _ => DType::F32,
        };
        if path.is_empty() {
            return Ok(vec![Value::Model(embedded_model(frame_size, dtype)?)]);
        }
        Ok(vec![Value::Model(load_model_value(
            Path::new(path),
            frame_size,
            dtype,
        )?)])
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
        let model = embedded_model([0, 0], DType::F32).unwrap();
        let global = format!(
            "{} {}",
            tooltip_example("characters"),
            tooltip_example("global_prompt")
        );
        model
            .backend
            .encode_global(&global)
            .unwrap_or_else(|e| panic!("the tooltips' global prompt {global:?}: {e}"));
        let shot = tooltip_example("shots");
        model
            .backend
            .encode_shot(&shot)
            .unwrap_or_else(|e| panic!("the tooltip's shot prompt {shot:?}: {e}"));
        // The check can fail: a word outside the world's vocabulary is refused.
        assert!(model
            .backend
            .encode_shot("[SHOT 1] wide shot of Mara in a red coat.")
            .is_err());
    }
}

#[cfg(test)]
mod unpack_tests {
    use super::*;

    #[test]
    fn the_embedded_folder_is_unpacked_once_and_a_damaged_copy_is_replaced() {
        let cache = tempfile::tempdir().unwrap();
        let files: &[(&str, &[u8])] = &[("model_index.json", b"{}"), ("transformer/w", b"1234")];
        // Four threads at once: one folder, complete, no staging left behind.
        let folders: Vec<PathBuf> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| unpack_embedded(files, cache.path()).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(folders.iter().all(|f| f == &folders[0]));
        assert_eq!(
            std::fs::read(folders[0].join("transformer/w")).unwrap(),
            b"1234"
        );
        let entries = std::fs::read_dir(cache.path()).unwrap().count();
        assert_eq!(entries, 1, "staging folders left behind");
        // A truncated file is noticed and the copy replaced.
        std::fs::write(folders[0].join("transformer/w"), b"12").unwrap();
        let again = unpack_embedded(files, cache.path()).unwrap();
        assert_eq!(again, folders[0]);
        assert_eq!(std::fs::read(again.join("transformer/w")).unwrap(), b"1234");
    }
}
