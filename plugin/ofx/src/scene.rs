//! The lct side of the effect: a scene request run through the plugin's own nodes
//! (LoadModel -> SceneContext -> ShotGenerate -> DecodeFrames) over the C table, and the last
//! scene kept per instance so that every frame of it renders without generating again.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::OnceLock;

use lct_host::{ColorSpace, FloatFrames, ParamValue, Plugin, PluginError, Status, Value};

/// What a scene is generated from: the effect's parameters and its reference images.
#[derive(Clone, Debug, Hash)]
pub struct SceneRequest {
    pub model: String,
    pub global_prompt: String,
    pub characters: String,
    pub shots: String,
    pub mode: String,
    pub frames: i64,
    pub seed: i64,
    pub steps: i64,
    pub identity: Option<Reference>,
    pub environment: Option<Reference>,
}

/// A reference image from an input clip, already at the model's frame size.
#[derive(Clone, Debug)]
pub struct Reference {
    pub width: u32,
    pub height: u32,
    pub color_space: ColorSpace,
    /// RGB, rows top to bottom.
    pub pixels: Vec<f32>,
}

impl Hash for Reference {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.width, self.height, self.color_space.0).hash(state);
        for value in &self.pixels {
            value.to_bits().hash(state);
        }
    }
}

/// A generated scene: its decoded frames and how they divide into shots.
pub struct Scene {
    key: u64,
    pub frames: Value,
    pub shot_count: u32,
    pub frames_per_shot: u32,
}

/// Why a render stopped.
pub enum Failure {
    /// The host asked to stop; not an error to report.
    Aborted,
    Error(String),
}

impl From<PluginError> for Failure {
    fn from(error: PluginError) -> Self {
        if error.status == Status::CANCELLED {
            Failure::Aborted
        } else {
            Failure::Error(error.message)
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Error(message)
    }
}

/// The lct plugin, loaded once per process: `$LCT_PLUGIN`, else `liblct_plugin.so` beside
/// this bundle's binary.
pub fn plugin() -> Result<&'static Plugin, String> {
    static PLUGIN: OnceLock<Result<Plugin, String>> = OnceLock::new();
    PLUGIN
        .get_or_init(|| {
            let path = match std::env::var_os("LCT_PLUGIN") {
                Some(path) => PathBuf::from(path),
                None => crate::own_directory()
                    .ok_or("cannot tell where the OFX binary was loaded from")?
                    .join(lct_host::plugin_file_name()),
            };
            Plugin::load(&path).map_err(|e| format!("LCT Scene: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn run(
    plugin: &Plugin,
    node: &str,
    params: Vec<(&str, ParamValue)>,
    inputs: &[Option<&Value>],
    progress: &mut dyn FnMut(u32, u32) -> bool,
) -> Result<Value, Failure> {
    let node_type = plugin
        .node(node)
        .ok_or_else(|| format!("the lct plugin has no {node} node"))?;
    let params: Vec<(String, ParamValue)> = params
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let mut outputs = plugin.execute(node_type, &params, inputs, None, progress)?;
    Ok(outputs.remove(0))
}

fn no_progress(_: u32, _: u32) -> bool {
    true
}

/// The model at `path` (empty: the embedded one); the plugin shares loaded models.
pub fn load_model(path: &str) -> Result<Value, Failure> {
    let plugin = plugin()?;
    run(
        plugin,
        "LoadModel",
        vec![("path", ParamValue::Text(path.into()))],
        &[],
        &mut no_progress,
    )
}

/// The model's frame size, `(width, height)`.
pub fn frame_size(model: &Value) -> Result<(u32, u32), Failure> {
    match model.shape()?.as_slice() {
        [_, height, width] => Ok((*width as u32, *height as u32)),
        _ => Err(Failure::Error(
            "LCT Scene: the model has no autoencoder, so it makes no images".into(),
        )),
    }
}

fn scene_value(request: &SceneRequest) -> Result<Value, Failure> {
    let plugin = plugin()?;
    let identity = request.identity.as_ref().map(import).transpose()?;
    let environment = request.environment.as_ref().map(import).transpose()?;
    run(
        plugin,
        "SceneContext",
        vec![
            (
                "global_prompt",
                ParamValue::Text(request.global_prompt.clone()),
            ),
            ("characters", ParamValue::Text(request.characters.clone())),
            ("shots", ParamValue::Text(request.shots.clone())),
        ],
        &[identity.as_ref(), environment.as_ref(), None],
        &mut no_progress,
    )
}

/// How many shots the request's scene has (cheap: no model runs).
pub fn shot_count(request: &SceneRequest) -> Result<u32, Failure> {
    Ok(scene_value(request)?.shape()?.first().copied().unwrap_or(0) as u32)
}

fn import(reference: &Reference) -> Result<Value, Failure> {
    let frames = FloatFrames {
        frame_count: 1,
        width: reference.width,
        height: reference.height,
        channels: 3,
        color_space: reference.color_space,
        pixels: reference.pixels.clone(),
    };
    Ok(plugin()?.import_frames(&frames)?)
}

/// The request's scene: the cached one when nothing changed, else generated with
/// `progress(step, total)` (which returns `false` to abort within one sampler step).
pub fn scene<'a>(
    cache: &'a mut Option<Scene>,
    request: &SceneRequest,
    progress: &mut dyn FnMut(u32, u32) -> bool,
) -> Result<&'a Scene, Failure> {
    let mut hasher = DefaultHasher::new();
    request.hash(&mut hasher);
    let key = hasher.finish();
    if cache.as_ref().is_some_and(|scene| scene.key == key) {
        return Ok(cache.as_ref().unwrap());
    }
    let plugin = plugin()?;
    let model = load_model(&request.model)?;
    let scene = scene_value(request)?;
    let shot_count = scene.shape()?.first().copied().unwrap_or(0) as u32;
    let latent = run(
        plugin,
        "ShotGenerate",
        vec![
            ("mode", ParamValue::Text(request.mode.clone())),
            ("frames", ParamValue::Int(request.frames)),
            ("seed", ParamValue::Int(request.seed)),
            ("steps", ParamValue::Int(request.steps)),
        ],
        &[Some(&model), Some(&scene), None, None],
        progress,
    )?;
    let frames = run(
        plugin,
        "DecodeFrames",
        vec![],
        &[Some(&model), Some(&latent)],
        &mut no_progress,
    )?;
    *cache = Some(Scene {
        key,
        frames,
        shot_count,
        frames_per_shot: request.frames as u32,
    });
    Ok(cache.as_ref().unwrap())
}

impl Scene {
    /// The frame index shown at `time` of `shot` (0: every shot one after another).
    pub fn frame_at(&self, shot: u32, time: f64) -> Result<u32, Failure> {
        let t = time.round().max(0.0) as u32;
        if shot == 0 {
            return Ok(t.min(self.shot_count * self.frames_per_shot - 1));
        }
        if shot > self.shot_count {
            return Err(Failure::Error(format!(
                "LCT Scene: shot {shot} asked of a scene of {} shots",
                self.shot_count
            )));
        }
        Ok((shot - 1) * self.frames_per_shot + t.min(self.frames_per_shot - 1))
    }
}
