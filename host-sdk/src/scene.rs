//! `lct scene`: the usual graph built from a plain scene description, for people who do not
//! want to write a graph.
//!
//! The graph is LoadModel -> SceneContext -> ShotGenerate -> DecodeFrames -> SaveFrames, with
//! a LoadImage (fitted to the model's frame size) for each reference image given; node,
//! port and widget names follow the plugin's descriptors (`lct nodes` lists them), and an
//! integration test runs this graph against the real plugin.

use serde::Deserialize;

use crate::graph::Graph;

/// A scene as people write it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SceneSpec {
    pub global_prompt: String,
    #[serde(default)]
    pub characters: Vec<String>,
    pub shots: Vec<String>,
    /// "joint" or "autoregressive".
    #[serde(default = "default_mode")]
    pub mode: String,
    #[serde(default)]
    pub seed: i64,
    /// Model directory; the embedded default model when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// Sampler steps per shot.
    #[serde(default = "default_steps")]
    pub steps: i64,
    /// Classifier-free guidance scale.
    #[serde(default = "default_cfg")]
    pub cfg: f64,
    /// Frames per shot.
    #[serde(default = "default_frames")]
    pub frames: i64,
    /// Frame width and height for models without a fixed frame size (Wan checkpoints);
    /// LoadModel's default (832x480 for Wan) when absent.
    #[serde(default)]
    pub width: Option<i64>,
    #[serde(default)]
    pub height: Option<i64>,
    /// What a Wan checkpoint computes in: "f32" (LoadModel's default) or "bf16".
    #[serde(default)]
    pub precision: Option<String>,
    /// Timestep shift (ShotGenerate's `shift`); the model's own when absent.
    #[serde(default)]
    pub shift: Option<f64>,
    /// Context guidance scale (ShotGenerate's `context_cfg`); the node's default when absent.
    #[serde(default)]
    pub context_cfg: Option<f64>,
    /// An image of the character alone (PNG, JPEG or EXR) every shot keeps the looks of;
    /// relative to the scene file.
    #[serde(default)]
    pub identity: Option<String>,
    /// An image of the place without characters every shot is set in; relative to the scene
    /// file.
    #[serde(default)]
    pub environment: Option<String>,
}

fn default_mode() -> String {
    "joint".to_owned()
}
fn default_steps() -> i64 {
    20
}
fn default_cfg() -> f64 {
    3.0
}
fn default_frames() -> i64 {
    4
}

/// LoadModel -> SceneContext -> ShotGenerate -> DecodeFrames -> SaveFrames.
pub fn scene_graph(scene: &SceneSpec) -> Graph {
    let mut graph = Graph::new();
    let model = graph.add("model", "LoadModel");
    if let Some(path) = &scene.model {
        model.param("path", path.as_str());
    }
    if let Some(width) = scene.width {
        model.param("width", width);
    }
    if let Some(height) = scene.height {
        model.param("height", height);
    }
    if let Some(precision) = &scene.precision {
        model.param("precision", precision.as_str());
    }
    let context = graph
        .add("scene", "SceneContext")
        .param("global_prompt", scene.global_prompt.as_str())
        .param("characters", scene.characters.join("\n"))
        .param(
            "shots",
            serde_json::to_string(&scene.shots).expect("strings serialise"),
        )
        // The model checks the prompts and images here, so errors name SceneContext.
        .input("model", "model", "model");
    let references = [
        ("identity", &scene.identity),
        ("environment", &scene.environment),
    ];
    for (port, image) in references {
        if image.is_some() {
            context.input(port, port, "frames");
        }
    }
    for (port, image) in references {
        if let Some(path) = image {
            graph
                .add(port, "LoadImage")
                .param("path", path.as_str())
                .input("model", "model", "model");
        }
    }
    let generate = graph
        .add("generate", "ShotGenerate")
        .param("mode", scene.mode.as_str())
        .param("seed", scene.seed)
        .param("steps", scene.steps)
        .param("cfg", scene.cfg)
        .param("frames", scene.frames)
        .input("model", "model", "model")
        .input("scene", "scene", "scene");
    if let Some(context_cfg) = scene.context_cfg {
        generate.param("context_cfg", context_cfg);
    }
    if let Some(shift) = scene.shift {
        generate.param("shift", shift);
    }
    graph
        .add("decode", "DecodeFrames")
        .input("model", "model", "model")
        .input("latent", "generate", "latent");
    graph
        .add("save", "SaveFrames")
        .param("name", "scene")
        // One contact-sheet row per shot.
        .param("columns", scene.frames)
        .input("frames", "decode", "frames");
    graph.output("save");
    graph
}
