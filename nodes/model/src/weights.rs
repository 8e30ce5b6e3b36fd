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

/// Where checked tensors come from: tensors already in memory, or memory-mapped safetensors
/// files (one checkpoint or its shards), each tensor remembered with its file.
enum TensorSource {
    Loaded {
        path: PathBuf,
        tensors: HashMap<String, Tensor>,
    },
    /// `file_of`: by the name the model asks for, the file index and the name stored there
    /// (they differ for checkpoints in another key layout).
    Mapped {
        files: Vec<(PathBuf, candle_core::safetensors::MmapedSafetensors)>,
        file_of: HashMap<String, (usize, String)>,
    },
}

impl TensorSource {
    fn names(&self) -> Vec<String> {
        match self {
            Self::Loaded { tensors, .. } => tensors.keys().cloned().collect(),
            Self::Mapped { file_of, .. } => file_of.keys().cloned().collect(),
        }
    }

    /// The file a tensor is in (or would be, for a missing one: the first).
    fn path(&self, name: &str) -> PathBuf {
        match self {
            Self::Loaded { path, .. } => path.clone(),
            Self::Mapped { files, file_of } => {
                let index = file_of.get(name).map_or(0, |(i, _)| *i);
                files.get(index).map(|(p, _)| p.clone()).unwrap_or_default()
            }
        }
    }

    /// Shape and stored dtype name, without reading the data.
    fn info(&self, name: &str) -> Option<(Vec<usize>, String, bool)> {
        match self {
            Self::Loaded { tensors, .. } => tensors.get(name).map(|t| {
                let dtype = t.dtype();
                (t.dims().to_vec(), format!("{dtype:?}"), dtype.is_float())
            }),
            Self::Mapped { files, file_of } => {
                let (index, stored) = file_of.get(name)?;
                let view = files[*index].1.get(stored).ok()?;
                use safetensors::Dtype;
                let float = matches!(
                    view.dtype(),
                    Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64
                );
                Some((view.shape().to_vec(), format!("{:?}", view.dtype()), float))
            }
        }
    }

    fn load(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        match self {
            Self::Loaded { tensors, .. } => tensors
                .get(name)
                .cloned()
                .ok_or_else(|| candle_core::Error::Msg(format!("no tensor '{name}'"))),
            Self::Mapped { files, file_of } => match file_of.get(name) {
                Some((index, stored)) => files[*index].1.load(stored, device),
                None => Err(candle_core::Error::Msg(format!("no tensor '{name}'"))),
            },
        }
    }
}

/// A `VarBuilder` backend that records what was asked for and reports mismatches (missing,
/// mis-shaped, not floating point) in our own words, naming the tensor and its file.
struct CheckedTensors {
    source: TensorSource,
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

    fn load_used(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        self.used
            .lock()
            .expect("not poisoned")
            .insert(name.to_owned());
        self.source
            .load(name, device)?
            .to_dtype(dtype)?
            .to_device(device)
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
        let Some((found, stored, float)) = self.source.info(name) else {
            return Err(self.fail(Error::MissingTensor {
                path: self.source.path(name),
                name: name.to_owned(),
                expected: shape.dims().to_vec(),
            }));
        };
        if found != shape.dims() {
            return Err(self.fail(Error::TensorShape {
                path: self.source.path(name),
                name: name.to_owned(),
                expected: shape.dims().to_vec(),
                found,
            }));
        }
        if !float {
            return Err(self.fail(Error::TensorDType {
                path: self.source.path(name),
                name: name.to_owned(),
                found: stored,
            }));
        }
        self.load_used(name, dtype, device)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.load_used(name, dtype, device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.source.info(name).is_some()
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
    let source = TensorSource::Loaded {
        path: origin.to_owned(),
        tensors,
    };
    build_from_source(source, dtype, device, build)
}

/// Sets every variable of `vars` (built by a model through a `VarBuilder` over it) from
/// memory-mapped safetensors files, checking names and shapes and that no tensor is left over.
/// Sets every variable of `vars` from `seed`, so that a model trained from scratch starts the
/// same every time (candle's own initialisation draws from an unseeded generator): weights of
/// rank 2 and more normal with standard deviation `1 / sqrt(fan_in)` (fan-in: all but the
/// first dim), norm weights 1, biases 0, other vectors and tables normal scaled by their last
/// dim. Variables are visited in name order, each with its own noise stream.
pub fn seeded_init(vars: &candle_nn::VarMap, seed: u64) -> Result<()> {
    let data = vars.data().lock().expect("not poisoned");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for (stream, name) in names.into_iter().enumerate() {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let device = var.device();
        let value = if name.ends_with(".bias") {
            Tensor::zeros(dims.as_slice(), DType::F32, device)?
        } else if dims.len() == 1 && name.contains("norm") {
            Tensor::ones(dims.as_slice(), DType::F32, device)?
        } else {
            let fan_in: usize = if dims.len() >= 2 {
                dims[1..].iter().product()
            } else {
                *dims.last().unwrap_or(&1)
            };
            (crate::noise::gaussian(seed, stream as u64, &dims, device)? / (fan_in as f64).sqrt())?
        };
        var.set(&value.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

pub fn load_varmap_mmap(vars: &candle_nn::VarMap, files: &[PathBuf]) -> Result<()> {
    let source = map_files(files)?;
    let data = vars.data().lock().expect("not poisoned");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in &names {
        let var = &data[*name];
        let Some((found, stored, float)) = source.info(name) else {
            return Err(Error::MissingTensor {
                path: source.path(name),
                name: (*name).clone(),
                expected: var.dims().to_vec(),
            });
        };
        if found != var.dims() {
            return Err(Error::TensorShape {
                path: source.path(name),
                name: (*name).clone(),
                expected: var.dims().to_vec(),
                found,
            });
        }
        if !float {
            return Err(Error::TensorDType {
                path: source.path(name),
                name: (*name).clone(),
                found: stored,
            });
        }
        let value = source.load(name, var.device())?.to_dtype(var.dtype())?;
        var.set(&value)?;
    }
    let mut unused: Vec<String> = source
        .names()
        .into_iter()
        .filter(|name| !data.contains_key(name))
        .collect();
    unused.sort();
    if let Some(first) = unused.first() {
        return Err(Error::UnusedTensors {
            path: source.path(first),
            count: unused.len(),
            first: first.clone(),
        });
    }
    Ok(())
}

fn map_files(files: &[PathBuf]) -> Result<TensorSource> {
    map_files_renamed(files, &|name| name.to_owned())
}

/// The tensors of `files` under the names `rename` gives their stored names.
fn map_files_renamed(files: &[PathBuf], rename: &dyn Fn(&str) -> String) -> Result<TensorSource> {
    let mut mapped = Vec::with_capacity(files.len());
    let mut file_of = HashMap::new();
    for (index, path) in files.iter().enumerate() {
        // SAFETY: mapped read-only; lct never writes a checkpoint it has loaded.
        let file =
            unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }.map_err(|e| {
                Error::Io {
                    path: path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
                }
            })?;
        for (name, _) in file.tensors() {
            file_of.insert(rename(&name), (index, name));
        }
        mapped.push((path.clone(), file));
    }
    Ok(TensorSource::Mapped {
        files: mapped,
        file_of,
    })
}

/// [`build_checked_mmap`] for a checkpoint stored in another key layout: `rename` turns each
/// stored name into the name the model asks for.
pub fn build_checked_mmap_renamed<T>(
    files: &[PathBuf],
    rename: &dyn Fn(&str) -> String,
    dtype: DType,
    device: &Device,
    build: impl FnOnce(VarBuilder) -> Result<T>,
) -> Result<T> {
    build_from_source(map_files_renamed(files, rename)?, dtype, device, build)
}

/// [`build_checked`] over memory-mapped safetensors files (a checkpoint or its shards): only
/// the tensors `build` asks for are read, converted to `dtype` as they load.
pub fn build_checked_mmap<T>(
    files: &[PathBuf],
    dtype: DType,
    device: &Device,
    build: impl FnOnce(VarBuilder) -> Result<T>,
) -> Result<T> {
    build_from_source(map_files(files)?, dtype, device, build)
}

fn build_from_source<T>(
    source: TensorSource,
    dtype: DType,
    device: &Device,
    build: impl FnOnce(VarBuilder) -> Result<T>,
) -> Result<T> {
    let backend = std::sync::Arc::new(CheckedTensors {
        source,
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
    let mut unused: Vec<String> = backend
        .source
        .names()
        .into_iter()
        .filter(|name| !used.contains(name))
        .collect();
    unused.sort();
    if let Some(first) = unused.first() {
        return Err(Error::UnusedTensors {
            path: backend.source.path(first),
            count: unused.len(),
            first: first.clone(),
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
