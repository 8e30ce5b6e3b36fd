//! Loading and saving checkpoints: `config.json` beside `model.safetensors`, tensors named as
//! the `VarBuilder` paths of the model. Every tensor the config asks for is checked by name
//! and shape, and tensors the config does not use are reported, so a config that disagrees
//! with the weights is a clear error rather than a silent partial load.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::transformer::SceneTransformer;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Reads a safetensors file into named tensors.
pub fn read_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(Error::Io {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
        });
    }
    candle_core::safetensors::load(path, device).map_err(|e| Error::Io {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    })
}

/// A `VarBuilder` backend over loaded tensors that records what was asked for and reports
/// mismatches in our own words.
struct CheckedTensors {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
    used: Mutex<BTreeSet<String>>,
    // The first problem found; candle's error type would lose our structured variant.
    problem: Mutex<Option<Error>>,
}

impl CheckedTensors {
    fn fail(&self, error: Error) -> candle_core::Error {
        let message = error.to_string();
        let mut problem = self.problem.lock().expect("not poisoned");
        problem.get_or_insert(error);
        candle_core::Error::Msg(message)
    }
}

impl SimpleBackend for CheckedTensors {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _init: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let Some(tensor) = self.tensors.get(name) else {
            return Err(self.fail(Error::MissingTensor {
                path: self.path.clone(),
                name: name.to_owned(),
                expected: shape.dims().to_vec(),
            }));
        };
        if tensor.shape() != &shape {
            return Err(self.fail(Error::TensorShape {
                path: self.path.clone(),
                name: name.to_owned(),
                expected: shape.dims().to_vec(),
                found: tensor.dims().to_vec(),
            }));
        }
        self.used
            .lock()
            .expect("not poisoned")
            .insert(name.to_owned());
        tensor.to_dtype(dtype)?.to_device(device)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        match self.tensors.get(name) {
            Some(t) => {
                self.used
                    .lock()
                    .expect("not poisoned")
                    .insert(name.to_owned());
                t.to_dtype(dtype)?.to_device(device)
            }
            None => Err(candle_core::Error::Msg(format!("no tensor '{name}'"))),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// Builds a model part from named tensors through `build`, checking every requested name
/// and shape, then that no tensor was left unused.
pub fn build_checked<T>(
    tensors: HashMap<String, Tensor>,
    origin: &Path,
    dtype: DType,
    device: &Device,
    build: impl FnOnce(VarBuilder) -> Result<T>,
) -> Result<T> {
    let backend = std::sync::Arc::new(CheckedTensors {
        path: origin.to_owned(),
        tensors,
        used: Mutex::default(),
        problem: Mutex::default(),
    });
    let shared: Box<dyn SimpleBackend> = Box::new(SharedBackend(backend.clone()));
    let built = build(VarBuilder::from_backend(shared, dtype, device.clone()));
    if let Some(problem) = backend.problem.lock().expect("not poisoned").take() {
        return Err(problem);
    }
    let built = built?;
    let used = backend.used.lock().expect("not poisoned");
    let unused: Vec<&String> = backend
        .tensors
        .keys()
        .filter(|name| !used.contains(*name))
        .collect();
    if let Some(first) = unused.iter().min() {
        return Err(Error::UnusedTensors {
            path: origin.to_owned(),
            count: unused.len(),
            first: (*first).clone(),
        });
    }
    Ok(built)
}

/// Builds the whole pipeline (transformer and any text encoder and autoencoder) from named
/// tensors, checking names and shapes against `cfg`.
pub fn pipeline_from_tensors(
    cfg: &Config,
    tensors: HashMap<String, Tensor>,
    origin: &Path,
    dtype: DType,
    device: &Device,
) -> Result<Pipeline> {
    cfg.validate()?;
    build_checked(tensors, origin, dtype, device, |vb| Pipeline::new(cfg, vb))
}

struct SharedBackend(std::sync::Arc<CheckedTensors>);

impl SimpleBackend for SharedBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0.get(s, name, h, dtype, dev)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.get_unchecked(name, dtype, dev)
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_tensor(name)
    }
}

/// Loads `dir/config.json` and `dir/model.safetensors`.
pub fn load_pipeline(dir: &Path, dtype: DType, device: &Device) -> Result<Pipeline> {
    let cfg = Config::load(&dir.join(CONFIG_FILE))?;
    let path = dir.join(WEIGHTS_FILE);
    let tensors = read_safetensors(&path, device)?;
    pipeline_from_tensors(&cfg, tensors, &path, dtype, device)
}

/// Loads only what the scene transformer needs (see [`load_pipeline`]).
pub fn load_model(dir: &Path, dtype: DType, device: &Device) -> Result<SceneTransformer> {
    Ok(load_pipeline(dir, dtype, device)?.transformer)
}

/// Writes `dir/config.json` and `dir/model.safetensors` from named tensors.
pub fn save_checkpoint(dir: &Path, cfg: &Config, tensors: &HashMap<String, Tensor>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_owned(),
        source,
    })?;
    cfg.save(&dir.join(CONFIG_FILE))?;
    let path = dir.join(WEIGHTS_FILE);
    candle_core::safetensors::save(tensors, &path).map_err(|e| Error::Io {
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// How [`init_tensors`] fills the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// Training start: adaLN modulations and the output layer at zero, so every block starts
    /// as the identity; other matrices N(0, 1/fan_in), biases 0, norms 1.
    AdaLnZero,
    /// Every tensor random (tests and benchmarks, where zero outputs would prove nothing).
    Random,
}

/// Seeded weights for `cfg`, by checkpoint name (names and shapes from the model itself).
pub fn init_tensors(
    cfg: &Config,
    seed: u64,
    init: Init,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let vars = candle_nn::VarMap::new();
    Pipeline::new(cfg, VarBuilder::from_varmap(&vars, DType::F32, device))?;
    let mut shapes: Vec<(String, Vec<usize>)> = vars
        .data()
        .lock()
        .expect("not poisoned")
        .iter()
        .map(|(n, v)| (n.clone(), v.dims().to_vec()))
        .collect();
    shapes.sort();
    let mut rng = crate::noise::SplitMix64::stream(seed, 0x1417);
    let mut out = HashMap::with_capacity(shapes.len());
    for (name, dims) in shapes {
        let count: usize = dims.iter().product();
        let fan_in = *dims.last().unwrap_or(&1) as f64;
        let zero = init == Init::AdaLnZero
            && (name.contains("modulation")
                || name.starts_with("final_out")
                || name.starts_with("pooled_out"));
        // Patch autoencoder: start near the identity on the first channels' worth of pixels.
        let fan_in = if name.starts_with("autoencoder.") {
            fan_in.max(3.0)
        } else {
            fan_in
        };
        let values: Vec<f32> = if zero || (init == Init::AdaLnZero && name.ends_with(".bias")) {
            vec![0.0; count]
        } else if name.ends_with("norm.weight") {
            (0..count)
                .map(|_| {
                    if init == Init::Random {
                        1.0 + 0.1 * rng.normal() as f32
                    } else {
                        1.0
                    }
                })
                .collect()
        } else if name.ends_with(".bias") {
            (0..count).map(|_| 0.02 * rng.normal() as f32).collect()
        } else {
            let std = 1.0 / fan_in.sqrt();
            (0..count).map(|_| (rng.normal() * std) as f32).collect()
        };
        out.insert(name, Tensor::from_vec(values, dims.as_slice(), device)?);
    }
    Ok(out)
}

/// A model with seeded weights (see [`Init`]).
pub fn init_model(
    cfg: &Config,
    seed: u64,
    init: Init,
    device: &Device,
) -> Result<SceneTransformer> {
    Ok(init_pipeline(cfg, seed, init, device)?.transformer)
}

/// A whole pipeline with seeded weights (see [`Init`]).
pub fn init_pipeline(cfg: &Config, seed: u64, init: Init, device: &Device) -> Result<Pipeline> {
    let tensors = init_tensors(cfg, seed, init, device)?;
    pipeline_from_tensors(cfg, tensors, Path::new("<initialised>"), DType::F32, device)
}

/// Builds a pipeline from a `config.json` text and `model.safetensors` bytes (a model compiled
/// into a binary); `origin` names it in errors.
pub fn pipeline_from_bytes(
    config_json: &str,
    weights: &[u8],
    origin: &Path,
    dtype: DType,
    device: &Device,
) -> Result<Pipeline> {
    let cfg: Config = serde_json::from_str(config_json).map_err(|source| Error::Json {
        path: origin.join(CONFIG_FILE),
        source,
    })?;
    let tensors =
        candle_core::safetensors::load_buffer(weights, device).map_err(|e| Error::Io {
            path: origin.join(WEIGHTS_FILE),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        })?;
    pipeline_from_tensors(&cfg, tensors, &origin.join(WEIGHTS_FILE), dtype, device)
}
