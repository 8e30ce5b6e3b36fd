//! The model-backed nodes end to end, through the real plugin: scene -> generate -> decode ->
//! save; auto-regressive generation with KVCache and ShotExtend; what caching re-runs; errors.

use lct_host::{ColorSpace, EvalError, EvalOptions, Evaluator, Event, Graph, Plugin};
use lct_integration_tests::{fixture_model, plugin};
use lct_model::AttentionMask;

const SHOTS: [&str; 3] = [
    "wide shot of character 1 in a field.",
    "close-up of character 1.",
    "character 1 moves left.",
];

fn scene_node(graph: &mut Graph, shots: &[&str]) {
    graph
        .add("scene", "SceneContext")
        .param("global_prompt", "a field in the night.")
        .param("characters", "character 1: a red circle.")
        .param("shots", shots.join("\n"));
}

fn model_node(graph: &mut Graph, mask: AttentionMask) {
    graph
        .add("model", "LoadModel")
        .param("path", fixture_model(mask).display().to_string());
}

/// Sampler widgets shared by every generating node of a graph (and the KV cache).
fn sampler(graph: &mut Graph, label: &str) {
    graph
        .node_mut(label)
        .unwrap()
        .param("steps", 4)
        .param("seed", 5)
        .param("cfg", 2.0)
        .param("frames", 2);
}

fn frames_of(plugin: &Plugin, graph: &Graph, node: &str) -> Vec<u8> {
    let evaluator = Evaluator::new(plugin);
    let graph = plugin.validate(graph).unwrap();
    let options = EvalOptions {
        targets: Some(vec![node.to_owned()]),
        ..EvalOptions::default()
    };
    let evaluation = evaluator.evaluate(&graph, &options).unwrap();
    let frames = evaluation
        .output(node, "frames")
        .unwrap()
        .read_frames(ColorSpace::SRGB)
        .unwrap();
    frames.pixels
}

fn max_difference(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

#[test]
fn joint_generation_of_three_shots_writes_frames() {
    let plugin = plugin();
    let out = tempfile::tempdir().unwrap();
    // The graph `lct scene` builds: LoadModel -> SceneContext -> ShotGenerate -> DecodeFrames
    // -> SaveFrames.
    let spec = lct_host::scene::SceneSpec {
        global_prompt: "a field in the night.".into(),
        characters: vec!["character 1: a red circle.".into()],
        shots: SHOTS.iter().map(|s| s.to_string()).collect(),
        mode: "joint".into(),
        seed: 5,
        model: Some(
            fixture_model(AttentionMask::Bidirectional)
                .display()
                .to_string(),
        ),
        steps: 4,
        cfg: 2.0,
        frames: 2,
        context_cfg: None,
        width: None,
        height: None,
        shift: None,
        precision: None,
        identity: None,
        environment: None,
    };
    let graph = lct_host::scene::scene_graph(&spec);
    let validated = plugin.validate(&graph).unwrap();
    let evaluator = Evaluator::new(&plugin);
    let options = EvalOptions {
        output_directory: Some(out.path().to_owned()),
        ..EvalOptions::default()
    };
    let evaluation = evaluator.evaluate(&validated, &options).unwrap();
    assert_eq!(
        evaluation.executed,
        ["model", "scene", "generate", "decode", "save"]
    );
    // SaveFrames answers with the folder it created (never an existing one).
    let folder = std::path::PathBuf::from(evaluation.outputs["save"][0].1.read_string().unwrap());
    assert!(folder.starts_with(out.path()), "{}", folder.display());
    for i in 0..6 {
        let png = folder.join(format!("frame_{i:04}.png"));
        let image = image_size(&png);
        assert_eq!(image, (8, 8), "{}", png.display());
    }
    assert!(folder.join("contact_sheet.png").is_file());
    assert!(
        !folder.join("frame_0006.png").exists(),
        "3 shots x 2 frames"
    );
    // Latents never cross the boundary; the host sees kind, shape and hash.
    let again = evaluator
        .evaluate(
            &validated,
            &EvalOptions {
                targets: Some(vec!["generate".into()]),
                ..EvalOptions::default()
            },
        )
        .unwrap();
    assert!(
        again.executed.is_empty(),
        "served from the cache: {:?}",
        again.executed
    );
    let latent = again.output("generate", "latent").unwrap();
    assert_eq!(latent.shape().unwrap(), vec![3]);
}

fn image_size(path: &std::path::Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[1..4], b"PNG", "{} is not a PNG", path.display());
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    (width, height)
}

/// Shots 1-2 auto-regressively, then shot 3 by ShotExtend, with or without a KV cache, every
/// generating node at context guidance `context_cfg`.
fn extend_graph(with_cache: bool, context_cfg: f64) -> Graph {
    let mut graph = Graph::new();
    model_node(&mut graph, AttentionMask::ContextCausal);
    scene_node(&mut graph, &SHOTS);
    graph
        .add("first", "ShotGenerate")
        .param("mode", "autoregressive")
        .param("last_shot", 2)
        .input("model", "model", "model")
        .input("scene", "scene", "scene");
    sampler(&mut graph, "first");
    graph
        .add("extend", "ShotExtend")
        .input("model", "model", "model")
        .input("scene", "scene", "scene")
        .input("latent", "first", "latent");
    sampler(&mut graph, "extend");
    if with_cache {
        graph
            .add("cache", "KVCache")
            .param("seed", 5)
            .param("cfg", 2.0)
            .input("model", "model", "model")
            .input("scene", "scene", "scene")
            .input("latent", "first", "latent");
        graph
            .node_mut("extend")
            .unwrap()
            .input("kv_cache", "cache", "kv_cache");
        // A fourth shot from a new prompt, extending the cache by the third shot only.
        graph
            .add("cache2", "KVCache")
            .param("seed", 5)
            .param("cfg", 2.0)
            .input("model", "model", "model")
            .input("scene", "scene", "scene")
            .input("latent", "extend", "latent")
            .input("previous", "cache", "kv_cache");
    }
    graph
        .add("extend2", "ShotExtend")
        .param("prompt", "a blue square moves right.")
        .input("model", "model", "model")
        .input("scene", "scene", "scene")
        .input("latent", "extend", "latent");
    sampler(&mut graph, "extend2");
    if with_cache {
        graph
            .node_mut("extend2")
            .unwrap()
            .input("kv_cache", "cache2", "kv_cache");
    }
    for node in ["first", "extend", "extend2"] {
        graph
            .node_mut(node)
            .unwrap()
            .param("context_cfg", context_cfg);
    }
    graph
        .add("decode", "DecodeFrames")
        .input("model", "model", "model")
        .input("latent", "extend2", "latent");
    graph.output("decode");
    graph
}

#[test]
fn kv_cached_shot_extension_equals_recomputing_the_history() {
    let plugin = plugin();
    let mut unguided = Vec::new();
    for context_cfg in [1.0, 2.5] {
        let cached = frames_of(&plugin, &extend_graph(true, context_cfg), "decode");
        let recomputed = frames_of(&plugin, &extend_graph(false, context_cfg), "decode");
        assert_eq!(cached.len(), 4 * 2 * 8 * 8 * 3, "4 shots of 2 frames");
        // Exact up to float rounding (engine test: 1e-5); 8-bit output may round one level apart.
        let d = max_difference(&cached, &recomputed);
        assert!(
            d <= 1,
            "context cfg {context_cfg}: KV reuse differs from recomputing by {d} levels"
        );
        if context_cfg == 1.0 {
            unguided = cached;
        } else {
            assert!(
                max_difference(&cached, &unguided) > 1,
                "context_cfg has no effect"
            );
        }
    }
}

#[test]
fn editing_one_shot_reruns_only_that_shot_and_what_follows() {
    let plugin = plugin();
    let build = |third: &str| {
        let mut graph = Graph::new();
        model_node(&mut graph, AttentionMask::ContextCausal);
        scene_node(&mut graph, &[SHOTS[0], SHOTS[1], third]);
        let mut previous: Option<String> = None;
        for shot in 1..=3 {
            let label = format!("shot{shot}");
            graph
                .add(&label, "ShotGenerate")
                .param("first_shot", shot)
                .param("last_shot", shot)
                .input("model", "model", "model")
                .input("scene", "scene", "scene");
            sampler(&mut graph, &label);
            if let Some(p) = &previous {
                graph
                    .node_mut(&label)
                    .unwrap()
                    .input("history", p, "latent");
            }
            previous = Some(label);
        }
        graph
            .add("decode", "DecodeFrames")
            .input("model", "model", "model")
            .input("latent", "shot3", "latent");
        graph.output("decode");
        plugin.validate(&graph).unwrap()
    };
    let evaluator = Evaluator::new(&plugin);
    let options = EvalOptions::default();
    let first = evaluator.evaluate(&build(SHOTS[2]), &options).unwrap();
    assert_eq!(first.executed.len(), 6);
    let again = evaluator.evaluate(&build(SHOTS[2]), &options).unwrap();
    assert!(again.executed.is_empty(), "{:?}", again.executed);
    let edited = evaluator
        .evaluate(&build("close-up of character 1 moves right."), &options)
        .unwrap();
    assert_eq!(edited.executed, ["scene", "shot3", "decode"]);
}

#[test]
fn a_kv_cache_of_a_bidirectional_model_is_a_clear_error() {
    let plugin = plugin();
    let mut graph = Graph::new();
    model_node(&mut graph, AttentionMask::Bidirectional);
    scene_node(&mut graph, &SHOTS);
    graph
        .add("first", "ShotGenerate")
        .param("last_shot", 1)
        .param("steps", 2)
        .input("model", "model", "model")
        .input("scene", "scene", "scene");
    graph
        .add("cache", "KVCache")
        .input("model", "model", "model")
        .input("scene", "scene", "scene")
        .input("latent", "first", "latent");
    graph.output("cache");
    let validated = plugin.validate(&graph).unwrap();
    let error = Evaluator::new(&plugin)
        .evaluate(&validated, &EvalOptions::default())
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, EvalError::Node { .. }), "{message}");
    assert!(
        message.contains("bidirectional") && message.contains("cache"),
        "{message}"
    );
}

#[test]
fn mismatched_cache_settings_and_bad_prompts_are_named() {
    let plugin = plugin();
    // The cache was built with another seed than the node that uses it.
    let mut graph = extend_graph(true, 1.0);
    graph.node_mut("cache").unwrap().param("seed", 6);
    graph.outputs = vec!["extend".into()];
    let validated = plugin.validate(&graph).unwrap();
    let message = Evaluator::new(&plugin)
        .evaluate(&validated, &EvalOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("seed 6") && message.contains("seed 5"),
        "{message}"
    );

    // A word the model does not know.
    let mut graph = Graph::new();
    model_node(&mut graph, AttentionMask::Bidirectional);
    scene_node(&mut graph, &["a purple triangle."]);
    graph
        .add("generate", "ShotGenerate")
        .param("steps", 1)
        .input("model", "model", "model")
        .input("scene", "scene", "scene");
    graph.output("generate");
    let validated = plugin.validate(&graph).unwrap();
    let message = Evaluator::new(&plugin)
        .evaluate(&validated, &EvalOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("unknown word 'purple'") && message.contains("circle"),
        "{message}"
    );
}

#[test]
fn load_model_errors_name_the_path() {
    let plugin = plugin();
    let mut cases = vec![("/nowhere/at/all", "/nowhere/at/all")];
    if !lct_integration_tests::has_embedded_model() {
        cases.push(("", "no embedded default model"));
    }
    for (path, expected) in cases {
        let mut graph = Graph::new();
        graph.add("model", "LoadModel").param("path", path);
        graph.output("model");
        let validated = plugin.validate(&graph).unwrap();
        let message = Evaluator::new(&plugin)
            .evaluate(&validated, &EvalOptions::default())
            .unwrap_err()
            .to_string();
        assert!(message.contains(expected), "{message}");
    }
}

#[test]
fn four_model_graphs_on_four_threads_match_sequential_runs() {
    let plugin = plugin();
    let graph_for = |seed: i64| {
        let mut graph = Graph::new();
        model_node(&mut graph, AttentionMask::Bidirectional);
        scene_node(&mut graph, &SHOTS[..2]);
        graph
            .add("generate", "ShotGenerate")
            .input("model", "model", "model")
            .input("scene", "scene", "scene");
        sampler(&mut graph, "generate");
        graph.node_mut("generate").unwrap().param("seed", seed);
        graph
            .add("decode", "DecodeFrames")
            .input("model", "model", "model")
            .input("latent", "generate", "latent");
        graph.output("decode");
        graph
    };
    let sequential: Vec<Vec<u8>> = (0..4)
        .map(|s| frames_of(&plugin, &graph_for(s), "decode"))
        .collect();
    let parallel: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|s| {
                let plugin = &plugin;
                let graph = graph_for(s);
                scope.spawn(move || frames_of(plugin, &graph, "decode"))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(sequential, parallel);
    assert_ne!(sequential[0], sequential[1], "seeds must matter");
}

#[test]
fn lct_scene_runs_the_example_scene_and_writes_a_contact_sheet() {
    let Some(lct) = lct_integration_tests::lct_binary() else {
        return; // $LCT_PLUGIN points at a prebuilt plugin without the CLI beside it.
    };
    let out = tempfile::tempdir().unwrap();
    let scene = lct_integration_tests::workspace_root().join("tests/scenes/field_at_night.json");
    let output = std::process::Command::new(lct)
        .arg("--plugin")
        .arg(lct_integration_tests::plugin_path())
        .arg("scene")
        .arg(&scene)
        .arg("--out")
        .arg(out.path())
        .arg("--model")
        .arg(fixture_model(AttentionMask::Bidirectional))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "lct scene failed: {stderr}");
    let sheet = walk(out.path())
        .into_iter()
        .find(|p| p.ends_with("contact_sheet.png"))
        .expect("a contact sheet");
    // 3 shots x 2 frames of 8x8, one row per shot: 2 thumbnails wide, 3 high, with equal gaps.
    let (width, height) = image_size(&sheet);
    let gap = (width - 2 * 8) / 3;
    assert_eq!(
        (width, height),
        (2 * 8 + 3 * gap, 3 * 8 + 4 * gap),
        "{}",
        sheet.display()
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn the_embedded_model_generates_the_example_scene() {
    if !lct_integration_tests::has_embedded_model() {
        return; // This tree carries no default model; `load_model_errors_name_the_path` covers it.
    }
    let Some(lct) = lct_integration_tests::lct_binary() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let scene = lct_integration_tests::workspace_root().join("examples/scenes/striped_circle.json");
    let output = std::process::Command::new(lct)
        .arg("--plugin")
        .arg(lct_integration_tests::plugin_path())
        .args(["scene"])
        .arg(&scene)
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let frames: Vec<_> = walk(out.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    // 3 shots x 4 frames of 64x64, plus the contact sheet.
    assert_eq!(frames.len(), 13, "{frames:?}");
    assert!(frames.iter().any(|p| p.ends_with("frame_0011.png")));
}

#[test]
fn every_example_graph_validates_against_the_plugin() {
    let plugin = plugin();
    let dir = lct_integration_tests::workspace_root().join("examples/graphs");
    let mut checked = 0;
    for path in walk(&dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        let graph = Graph::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        plugin
            .validate(&graph)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        checked += 1;
    }
    assert!(checked >= 2, "example graphs found: {checked}");
}

/// A scene with the character's image and the place's image, loaded from PNG files by
/// LoadImage and fitted to the model's frame size.
fn reference_graph(identity: Option<&std::path::Path>, environment: &std::path::Path) -> Graph {
    let mut graph = Graph::new();
    model_node(&mut graph, AttentionMask::Bidirectional);
    scene_node(&mut graph, &SHOTS[..2]);
    for (label, path) in [("identity", identity), ("environment", Some(environment))] {
        let Some(path) = path else { continue };
        graph
            .add(label, "LoadImage")
            .param("path", path.display().to_string())
            .input("model", "model", "model");
        graph
            .node_mut("scene")
            .unwrap()
            .input(label, label, "frames");
    }
    graph
        .add("generate", "ShotGenerate")
        .input("model", "model", "model")
        .input("scene", "scene", "scene");
    sampler(&mut graph, "generate");
    graph
        .add("decode", "DecodeFrames")
        .input("model", "model", "model")
        .input("latent", "generate", "latent");
    graph.output("decode");
    graph
}

#[test]
fn reference_images_from_files_condition_every_shot() {
    let plugin = plugin();
    let dir = tempfile::tempdir().unwrap();
    let image = |name: &str, rgb: [u8; 3]| {
        let path = dir.path().join(name);
        // 16x12: LoadImage fits it into the fixture model's 8x8 frames.
        image::RgbImage::from_fn(16, 12, |x, _| {
            if x < 8 {
                image::Rgb(rgb)
            } else {
                image::Rgb([20, 20, 20])
            }
        })
        .save(&path)
        .unwrap();
        path
    };
    let (red, blue, field) = (
        image("red.png", [220, 30, 30]),
        image("blue.png", [30, 30, 220]),
        image("field.png", [40, 160, 60]),
    );
    let with_red = frames_of(&plugin, &reference_graph(Some(&red), &field), "decode");
    let again = frames_of(&plugin, &reference_graph(Some(&red), &field), "decode");
    let with_blue = frames_of(&plugin, &reference_graph(Some(&blue), &field), "decode");
    let no_identity = frames_of(&plugin, &reference_graph(None, &field), "decode");
    assert_eq!(with_red, again, "the same files give the same frames");
    assert!(
        max_difference(&with_red, &with_blue) > 0,
        "the identity image is read"
    );
    assert!(
        max_difference(&with_red, &no_identity) > 0,
        "the identity image is a shot of context"
    );
}

#[test]
fn lct_scene_takes_identity_and_environment_images() {
    let Some(lct) = lct_integration_tests::lct_binary() else {
        return; // $LCT_PLUGIN points at a prebuilt plugin without the CLI beside it.
    };
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("identity.png");
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 40, 40]))
        .save(&identity)
        .unwrap();
    let scene = lct_integration_tests::workspace_root().join("tests/scenes/field_at_night.json");
    let run = |environment: &std::path::Path| {
        std::process::Command::new(&lct)
            .arg("--plugin")
            .arg(lct_integration_tests::plugin_path())
            .arg("scene")
            .arg(&scene)
            .arg("--out")
            .arg(dir.path().join("out"))
            .arg("--model")
            .arg(fixture_model(AttentionMask::Bidirectional))
            .arg("--identity")
            .arg(&identity)
            .arg("--environment")
            .arg(environment)
            .output()
            .unwrap()
    };
    let output = run(&identity);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "lct scene failed: {stderr}");
    assert!(walk(&dir.path().join("out"))
        .iter()
        .any(|p| p.ends_with("contact_sheet.png")));
    // A missing image is an error that names it, before anything is generated.
    let output = run(&dir.path().join("nowhere.png"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("nowhere.png"),
        "{stderr}"
    );
}

/// model -> scene (3 shots) -> generate (4 steps, 3 frames a shot, previews every
/// `preview_every`) -> decode.
fn preview_graph(preview_every: i64) -> Graph {
    let mut graph = Graph::new();
    model_node(&mut graph, AttentionMask::Bidirectional);
    scene_node(&mut graph, &SHOTS);
    graph
        .add("generate", "ShotGenerate")
        .input("model", "model", "model")
        .input("scene", "scene", "scene");
    sampler(&mut graph, "generate");
    graph
        .node_mut("generate")
        .unwrap()
        .param("frames", 3)
        .param("preview_every", preview_every);
    graph
        .add("decode", "DecodeFrames")
        .input("model", "model", "model")
        .input("latent", "generate", "latent");
    graph.outputs = vec!["decode".into()];
    graph
}

/// The previews an evaluation of `graph` sends, as (step, preview), and the decoded frames.
fn previews_of(
    plugin: &Plugin,
    graph: &Graph,
    previews: bool,
) -> (Vec<(u32, lct_host::Preview)>, Vec<u8>) {
    let graph = plugin.validate(graph).unwrap();
    let (events, received) = crossbeam_channel::unbounded();
    let options = EvalOptions {
        targets: Some(vec!["decode".into()]),
        events: Some(events),
        previews,
        ..EvalOptions::default()
    };
    let evaluation = Evaluator::new(plugin).evaluate(&graph, &options).unwrap();
    drop(options);
    let sent = received
        .iter()
        .filter_map(|event| match event {
            Event::Preview {
                node,
                step,
                total,
                preview,
            } => {
                assert_eq!((node.as_str(), total), ("generate", 4));
                Some((step, preview))
            }
            _ => None,
        })
        .collect();
    let frames = evaluation
        .output("decode", "frames")
        .unwrap()
        .read_frames(ColorSpace::SRGB)
        .unwrap();
    (sent, frames.pixels)
}

#[test]
fn previews_arrive_every_n_steps_and_the_last_shows_the_result() {
    let plugin = plugin();
    let (previews, frames) = previews_of(&plugin, &preview_graph(3), true);
    // Every 3rd step and the last of 4.
    let steps: Vec<u32> = previews.iter().map(|(step, _)| *step).collect();
    assert_eq!(steps, [3, 4]);
    let frame_bytes = 8 * 8 * 3;
    for (_, preview) in &previews {
        assert_eq!(
            (preview.width, preview.height, preview.frame_count),
            (8, 8, 3)
        );
        assert_eq!(preview.rgb.len(), 3 * frame_bytes);
    }
    // The last estimate is the result: each shot's preview is its middle frame (1 of 0..3),
    // rendered for the sRGB display as the decoded frames are read in sRGB.
    let last = &previews[1].1;
    for shot in 0..3 {
        let middle = (shot * 3 + 1) * frame_bytes;
        let decoded = &frames[middle..middle + frame_bytes];
        let shown = &last.rgb[shot * frame_bytes..(shot + 1) * frame_bytes];
        assert!(max_difference(decoded, shown) <= 1, "shot {shot}");
    }
    // An earlier estimate is not the result yet.
    assert_ne!(previews[0].1.rgb, last.rgb);
    // No previews asked (or preview_every 0): none made, and the result is the same.
    let (none, same) = previews_of(&plugin, &preview_graph(3), false);
    assert!(none.is_empty());
    assert_eq!(same, frames);
    let (none, same) = previews_of(&plugin, &preview_graph(0), true);
    assert!(none.is_empty());
    assert_eq!(same, frames);
}

#[test]
fn lct_run_writes_previews_into_a_new_directory_only() {
    let Some(lct) = lct_integration_tests::lct_binary() else {
        return; // $LCT_PLUGIN points at a prebuilt plugin without the CLI beside it.
    };
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("graph.json");
    std::fs::write(&graph, preview_graph(2).to_json()).unwrap();
    let run = |previews: &std::path::Path| {
        std::process::Command::new(&lct)
            .arg("--plugin")
            .arg(lct_integration_tests::plugin_path())
            .arg("run")
            .arg(&graph)
            .arg("--out")
            .arg(dir.path().join("out"))
            .arg("--target")
            .arg("decode")
            .arg("--preview")
            .arg(previews)
            .output()
            .unwrap()
    };
    let previews = dir.path().join("previews");
    let output = run(&previews);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut written: Vec<String> = std::fs::read_dir(&previews)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, ["generate-step0002.png", "generate-step0004.png"]);
    // Three 8x8 shots side by side.
    assert_eq!(image_size(&previews.join("generate-step0004.png")), (24, 8));
    // A directory holding files is refused before anything runs; nothing in it changes.
    let before = std::fs::read(previews.join("generate-step0002.png")).unwrap();
    let refused = run(&previews);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("is not empty"), "{stderr}");
    assert_eq!(
        std::fs::read(previews.join("generate-step0002.png")).unwrap(),
        before
    );
}
