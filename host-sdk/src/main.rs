//! `lct`: list a plugin's nodes, run a graph file, or (with the model nodes) a plain scene.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use lct_host::scene::{scene_graph, SceneSpec};
use lct_host::{
    default_plugin_path, plugin_file_name, EvalOptions, Evaluator, Event, Graph, Plugin, Preview,
    ValueKind, WidgetLimits,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "lct",
    version,
    about = "Long Context Tuning: run lct node graphs from the command line"
)]
struct Cli {
    /// The plugin library; default: $LCT_PLUGIN, else the one next to this executable.
    #[arg(long, global = true)]
    plugin: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the plugin's node types with their ports and widgets.
    Nodes,
    /// Evaluate a graph file (JSON) and write its outputs under --out.
    Run {
        /// The graph file: JSON with one entry per node (type, widgets, inputs), as in
        /// examples/graphs/.
        graph: PathBuf,
        /// The output folder (made if missing): every file the graph writes goes inside it,
        /// and a SaveFrames or SaveVideo `directory` that leads out of it is an error.
        #[arg(long)]
        out: PathBuf,
        /// Evaluate only these nodes (labels); default: the graph's outputs.
        #[arg(long = "target")]
        targets: Vec<String>,
        /// Write the sampling nodes' previews here as PNGs (a new or empty directory): one
        /// per `preview_every` steps, the shots side by side, `<node>-step0005.png`.
        #[arg(long)]
        preview: Option<PathBuf>,
    },
    /// Generate a scene from a plain description (global prompt, characters, shots, mode):
    /// LoadModel -> SceneContext -> ShotGenerate -> DecodeFrames -> SaveFrames.
    Scene {
        /// The scene file: JSON with `global_prompt`, `characters`, `shots` and optional
        /// `mode`, `seed`, `steps`, `frames`, `model`, ... (examples/scenes/README.md).
        scene: PathBuf,
        /// The output folder (made if missing): the frames and contact sheet go to
        /// OUT/frames/scene/ (scene-2, scene-3... when taken; nothing is overwritten).
        #[arg(long)]
        out: PathBuf,
        /// Checkpoint directory (config.json + model.safetensors, or a Wan checkpoint in the
        /// diffusers layout); overrides the scene's `model`. Without either, the embedded
        /// default model.
        #[arg(long)]
        model: Option<PathBuf>,
        /// An image of the character alone (PNG, JPEG, EXR); overrides the scene's `identity`.
        #[arg(long)]
        identity: Option<PathBuf>,
        /// An image of the place without characters; overrides the scene's `environment`.
        #[arg(long)]
        environment: Option<PathBuf>,
        /// Write the sampler's previews here, as `lct run --preview` does.
        #[arg(long)]
        preview: Option<PathBuf>,
    },
}

type Error = Box<dyn std::error::Error>;

fn absolute(path: &Path) -> Result<PathBuf, Error> {
    std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()).into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    let path = match cli.plugin.or_else(default_plugin_path) {
        Some(path) => path,
        None => {
            return Err(format!(
                "no plugin found: pass --plugin or set LCT_PLUGIN to {}",
                plugin_file_name()
            )
            .into())
        }
    };
    let plugin = Plugin::load(&path)?;
    match cli.command {
        Command::Nodes => list_nodes(&plugin),
        Command::Run {
            graph,
            out,
            targets,
            preview,
        } => {
            let graph = Graph::load(&graph)?;
            let targets = (!targets.is_empty()).then_some(targets);
            run_graph(&plugin, &graph, &out, targets, preview.as_deref())
        }
        Command::Scene {
            scene,
            out,
            model,
            identity,
            environment,
            preview,
        } => {
            let text = lct_files::read_to_string(&scene, lct_files::FileKind::Json)
                .map_err(|e| format!("cannot read the scene: {e}"))?;
            let mut spec: SceneSpec =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", scene.display()))?;
            if let Some(model) = model {
                spec.model = Some(model.display().to_string());
            }
            // Images named in the scene file are relative to it; on the command line, to here.
            let folder = scene.parent().unwrap_or(Path::new(""));
            for (image, flag) in [
                (&mut spec.identity, identity),
                (&mut spec.environment, environment),
            ] {
                let path = match flag {
                    Some(path) => Some(path),
                    None => image.as_deref().map(|p| folder.join(p)),
                };
                if let Some(path) = path {
                    *image = Some(absolute(&path)?.display().to_string());
                }
            }
            run_graph(&plugin, &scene_graph(&spec), &out, None, preview.as_deref())
        }
    }
}

/// Writes previews as PNGs into a directory that held none of the user's files.
struct PreviewWriter {
    directory: PathBuf,
}

impl PreviewWriter {
    /// Creates `directory`, or takes it when empty: previews never replace a file.
    fn new(directory: &Path) -> Result<Self, Error> {
        let shown = directory.display();
        std::fs::create_dir_all(directory).map_err(|e| format!("--preview {shown}: {e}"))?;
        let mut entries =
            std::fs::read_dir(directory).map_err(|e| format!("--preview {shown}: {e}"))?;
        if entries.next().is_some() {
            return Err(
                format!("--preview {shown} is not empty; give a new or empty directory").into(),
            );
        }
        Ok(Self {
            directory: directory.to_path_buf(),
        })
    }

    /// `<node>-step0005.png`: the preview's frames (one per shot) side by side.
    fn write(&self, node: &str, step: u32, preview: &Preview) -> Result<(), Error> {
        let (w, h, count) = (preview.width, preview.height, preview.frame_count);
        let mut strip = image::RgbImage::new(w * count, h);
        for (index, frame) in preview.rgb.chunks_exact((w * h * 3) as usize).enumerate() {
            let frame = image::RgbImage::from_raw(w, h, frame.to_vec())
                .ok_or("a preview frame of the wrong size")?;
            image::imageops::replace(&mut strip, &frame, (index as u32 * w).into(), 0);
        }
        let mut png = Vec::new();
        strip.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
        let safe: String = node
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self.directory.join(format!("{safe}-step{step:04}.png"));
        let mut file = std::fs::File::create_new(&path)
            .map_err(|e| format!("preview {}: {e}", path.display()))?;
        std::io::Write::write_all(&mut file, &png)
            .map_err(|e| format!("preview {}: {e}", path.display()))?;
        Ok(())
    }
}

fn list_nodes(plugin: &Plugin) -> Result<(), Error> {
    println!(
        "{} {} ({})",
        plugin.name(),
        plugin.version(),
        plugin.path().display()
    );
    for node in plugin.nodes() {
        let mut flags = Vec::new();
        if node.is_output {
            flags.push("output");
        }
        if node.not_idempotent {
            flags.push("not idempotent");
        }
        let flags = if flags.is_empty() {
            String::new()
        } else {
            format!(" [{}]", flags.join(", "))
        };
        println!(
            "\n{} v{} \"{}\" in {}{flags}",
            node.id, node.version, node.display_name, node.category
        );
        println!("  {}", node.description);
        for (direction, ports) in [("in ", &node.inputs), ("out", &node.outputs)] {
            for port in ports {
                let optional = if port.optional { " (optional)" } else { "" };
                println!(
                    "  {direction} {:<14} {:<9}{optional}  {}",
                    port.name, port.kind_name, port.tooltip
                );
            }
        }
        for widget in &node.widgets {
            let limits = match &widget.limits {
                WidgetLimits::Int { min, max, step } => format!("{min}..={max} step {step}"),
                WidgetLimits::Float { min, max, step } => format!("{min}..={max} step {step}"),
                WidgetLimits::Choices(choices) => choices.join(" | "),
                WidgetLimits::Text { suggestions, .. } if !suggestions.is_empty() => {
                    format!("(names of the OCIO config: {} in all)", suggestions.len())
                }
                WidgetLimits::Bool | WidgetLimits::Text { .. } => String::new(),
            };
            let kind = widget.kind.name().unwrap_or("?");
            println!(
                "  set {:<14} {kind:<9} = {} {limits}  {}",
                widget.name, widget.default, widget.tooltip
            );
        }
    }
    Ok(())
}

fn run_graph(
    plugin: &Plugin,
    graph: &Graph,
    out: &Path,
    targets: Option<Vec<String>>,
    preview: Option<&Path>,
) -> Result<(), Error> {
    // Validation first: a bad graph fails before anything runs or any folder is created.
    let graph = plugin.validate(graph)?;
    let previews = preview.map(PreviewWriter::new).transpose()?;
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let evaluator = Evaluator::new(plugin);
    let (events, receiver) = crossbeam_channel::unbounded();
    let options = EvalOptions {
        targets,
        events: Some(events),
        cancel: None,
        output_directory: Some(out.to_path_buf()),
        previews: previews.is_some(),
    };
    let bars = MultiProgress::new();
    let style =
        ProgressStyle::with_template("{prefix:>16} {bar:32.cyan/blue} {pos:>4}/{len:<4} {msg}")
            .expect("valid template")
            .progress_chars("=> ");
    let result = std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let result = evaluator.evaluate(&graph, &options);
            drop(options); // closes the event channel, ending the loop below
            result
        });
        let mut node_bars: HashMap<String, ProgressBar> = HashMap::new();
        let mut preview_error = None;
        for event in receiver.iter() {
            match event {
                Event::Started {
                    node,
                    node_type,
                    position,
                    total,
                } => {
                    let bar = bars.add(ProgressBar::new(1).with_style(style.clone()));
                    bar.set_prefix(node.clone());
                    bar.set_message(format!("{node_type} ({position}/{total})"));
                    bar.enable_steady_tick(Duration::from_millis(200));
                    node_bars.insert(node, bar);
                }
                Event::Progress { node, step, total } => {
                    if let Some(bar) = node_bars.get(&node) {
                        bar.set_length(total.into());
                        bar.set_position(step.into());
                    }
                }
                Event::Finished { node } => {
                    if let Some(bar) = node_bars.get(&node) {
                        bar.finish();
                    }
                }
                Event::Cached { node } => {
                    let _ = bars.println(format!("{node:>16} cached"));
                }
                Event::Preview {
                    node,
                    step,
                    preview,
                    ..
                } => {
                    let written = previews.as_ref().map(|w| w.write(&node, step, &preview));
                    if let Some(Err(error)) = written {
                        preview_error.get_or_insert(error);
                    }
                }
            }
        }
        for bar in node_bars.values() {
            bar.abandon();
        }
        let result = worker.join().expect("the evaluation thread does not panic");
        match preview_error {
            Some(error) => Err(error),
            None => result.map_err(Error::from),
        }
    })?;
    for (label, outputs) in &result.outputs {
        for (port, value) in outputs {
            let shown = match value.kind() {
                ValueKind::STRING | ValueKind::ENUM => value.read_string()?,
                ValueKind::INT | ValueKind::BOOL => value.read_int()?.to_string(),
                ValueKind::FLOAT => value.read_float()?.to_string(),
                kind => format!(
                    "{kind} {:?} (hash {:016x})",
                    value.shape()?,
                    value.content_hash()?
                ),
            };
            println!("{label}.{port}: {shown}");
        }
    }
    Ok(())
}
