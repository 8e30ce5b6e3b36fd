//! Graphs against the real plugin: validation errors before anything runs, the output cache,
//! outputs written by SaveFrames, concurrent evaluation.

use lct_host::{ColorSpace, EvalOptions, Evaluator, Graph, GraphError, GraphErrorKind, Plugin};
use lct_integration_tests::{plugin, workspace_root};

fn pattern_graph(seed: i64) -> Graph {
    let mut graph = Graph::new();
    graph
        .add("pattern", "TestPattern")
        .param("frames", 3)
        .param("width", 16)
        .param("height", 8)
        .param("seed", seed);
    graph
        .add("slow", "Delay")
        .param("steps", 3)
        .param("step_ms", 0)
        .input("frames", "pattern", "frames");
    graph.output("slow");
    graph
}

fn validate(plugin: &Plugin, graph: &Graph) -> GraphError {
    plugin.validate(graph).expect_err("the graph is invalid")
}

#[test]
fn a_kind_mismatch_names_both_ends() {
    let plugin = plugin();
    let mut graph = Graph::new();
    graph.add("story", "SceneContext").param("shots", "one");
    graph
        .add("save", "SaveFrames")
        .input("frames", "story", "scene");
    let error = validate(&plugin, &graph);
    assert!(
        matches!(error.kind(), GraphErrorKind::KindMismatch { .. }),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        "kind mismatch: `story.scene` (SceneContext) outputs SCENE, but `save.frames` (SaveFrames) takes FRAMES"
    );
}

#[test]
fn a_cycle_is_reported_with_its_path() {
    let plugin = plugin();
    let mut graph = Graph::new();
    graph.add("a", "Delay").input("frames", "b", "frames");
    graph.add("b", "Delay").input("frames", "a", "frames");
    graph
        .add("save", "SaveFrames")
        .input("frames", "b", "frames");
    let error = validate(&plugin, &graph);
    match error.kind() {
        GraphErrorKind::Cycle { cycle } => {
            assert_eq!(cycle.len(), 3, "{cycle:?}");
            assert_eq!(cycle.first(), cycle.last());
        }
        other => panic!("expected a cycle, got {other}"),
    }
    assert!(
        error.to_string().starts_with("the graph has a cycle: "),
        "{error}"
    );
}

#[test]
fn a_missing_required_input_is_an_error() {
    let plugin = plugin();
    let mut graph = Graph::new();
    graph.add("save", "SaveFrames");
    assert_eq!(
        validate(&plugin, &graph).to_string(),
        "node `save` (SaveFrames): required input `frames` (FRAMES) is not connected"
    );
}

#[test]
fn a_widget_out_of_range_or_of_the_wrong_kind_is_an_error() {
    let plugin = plugin();
    let mut graph = pattern_graph(0);
    graph.node_mut("pattern").unwrap().param("frames", 0);
    assert_eq!(
        validate(&plugin, &graph).to_string(),
        "node `pattern` (TestPattern): widget `frames` is 0, outside 1..=1024"
    );
    graph.node_mut("pattern").unwrap().param("frames", "three");
    assert!(matches!(
        validate(&plugin, &graph).kind(),
        GraphErrorKind::WidgetKind { .. }
    ));
    graph
        .node_mut("pattern")
        .unwrap()
        .param("frames", 3)
        .param("color_space", "ACES");
    let error = validate(&plugin, &graph);
    assert!(
        error.to_string().contains("not one of: SRGB, LINEAR"),
        "{error}"
    );
    graph
        .node_mut("pattern")
        .unwrap()
        .params
        .remove("color_space");
    graph.node_mut("pattern").unwrap().param("colour", 1);
    assert!(matches!(
        validate(&plugin, &graph).kind(),
        GraphErrorKind::UnknownWidget { .. }
    ));
}

#[test]
fn unknown_ids_are_errors() {
    let plugin = plugin();
    let mut graph = pattern_graph(0);
    graph.add("gen", "ShotGenerat");
    let error = validate(&plugin, &graph);
    assert!(
        matches!(error.kind(), GraphErrorKind::UnknownNodeType { .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("unknown node type `ShotGenerat`"),
        "{error}"
    );

    let mut graph = pattern_graph(0);
    graph
        .node_mut("slow")
        .unwrap()
        .input("frames", "patern", "frames");
    assert_eq!(
        validate(&plugin, &graph).to_string(),
        "input `slow.frames` is connected to `patern`, which is not a node of this graph"
    );
    let mut graph = pattern_graph(0);
    graph
        .node_mut("slow")
        .unwrap()
        .input("frames", "pattern", "images");
    assert!(matches!(
        validate(&plugin, &graph).kind(),
        GraphErrorKind::UnknownOutput { .. }
    ));
    let mut graph = pattern_graph(0);
    graph
        .node_mut("slow")
        .unwrap()
        .input("pictures", "pattern", "frames");
    assert!(matches!(
        validate(&plugin, &graph).kind(),
        GraphErrorKind::UnknownInput { .. }
    ));
    let mut graph = pattern_graph(0);
    graph.outputs = vec!["nowhere".into()];
    assert!(matches!(
        validate(&plugin, &graph).kind(),
        GraphErrorKind::UnknownTarget { .. }
    ));
}

#[test]
fn nothing_runs_when_validation_fails() {
    let plugin = plugin();
    let evaluator = Evaluator::new(&plugin);
    let mut graph = pattern_graph(0);
    graph.node_mut("slow").unwrap().param("steps", -1);
    assert!(plugin.validate(&graph).is_err());
    assert_eq!(evaluator.executions(), 0);
}

#[test]
fn an_unchanged_graph_executes_no_node_the_second_time() {
    let plugin = plugin();
    let evaluator = Evaluator::new(&plugin);
    let graph = plugin.validate(&pattern_graph(1)).unwrap();
    let first = evaluator.evaluate(&graph, &EvalOptions::default()).unwrap();
    assert_eq!(first.executed, ["pattern", "slow"]);
    let second = evaluator.evaluate(&graph, &EvalOptions::default()).unwrap();
    assert!(second.executed.is_empty(), "{:?}", second.executed);
    assert_eq!(second.cached, ["pattern", "slow"]);
    assert_eq!(evaluator.executions(), 2);
    // A graph rebuilt from scratch with the same content hits the same cache entries.
    let rebuilt = plugin.validate(&pattern_graph(1)).unwrap();
    assert!(evaluator
        .evaluate(&rebuilt, &EvalOptions::default())
        .unwrap()
        .executed
        .is_empty());
    let a = first
        .output("slow", "frames")
        .unwrap()
        .read_frames(ColorSpace::UNSPECIFIED)
        .unwrap();
    let b = second
        .output("slow", "frames")
        .unwrap()
        .read_frames(ColorSpace::UNSPECIFIED)
        .unwrap();
    assert_eq!(a, b);
}

/// Two independent branches into two SaveFrames nodes.
fn two_branches() -> Graph {
    let mut graph = Graph::new();
    // Different seeds: identical branches would share cache entries (content signatures).
    for (branch, seed) in [("a", 1), ("b", 2)] {
        let pattern = format!("pattern_{branch}");
        let slow = format!("slow_{branch}");
        graph
            .add(&pattern, "TestPattern")
            .param("frames", 2)
            .param("width", 16)
            .param("height", 8)
            .param("seed", seed);
        graph
            .add(&slow, "Delay")
            .param("steps", 2)
            .param("step_ms", 0)
            .input("frames", &pattern, "frames");
        graph
            .add(&format!("save_{branch}"), "SaveFrames")
            .param("name", branch)
            .input("frames", &slow, "frames");
    }
    graph
}

#[test]
fn editing_one_node_reruns_it_and_its_dependents_only() {
    let plugin = plugin();
    let out = tempfile::tempdir().unwrap();
    let options = EvalOptions {
        output_directory: Some(out.path().to_path_buf()),
        ..EvalOptions::default()
    };
    let evaluator = Evaluator::new(&plugin);
    let mut graph = two_branches();
    let first = evaluator
        .evaluate(&plugin.validate(&graph).unwrap(), &options)
        .unwrap();
    assert_eq!(first.executed.len(), 6);

    graph.node_mut("pattern_a").unwrap().param("seed", 7);
    let second = evaluator
        .evaluate(&plugin.validate(&graph).unwrap(), &options)
        .unwrap();
    assert_eq!(second.executed, ["pattern_a", "slow_a", "save_a"]);
    assert_eq!(second.cached.len(), 3);

    // Content signatures: Delay re-runs with its new parameter but produces the same frames,
    // so the SaveFrames after it is not invalidated.
    graph.node_mut("slow_b").unwrap().param("step_ms", 1);
    let third = evaluator
        .evaluate(&plugin.validate(&graph).unwrap(), &options)
        .unwrap();
    assert_eq!(third.executed, ["slow_b"]);
    assert_eq!(evaluator.executions(), 10);
}

#[test]
fn only_nodes_that_reach_the_targets_run() {
    let plugin = plugin();
    let out = tempfile::tempdir().unwrap();
    let evaluator = Evaluator::new(&plugin);
    let graph = plugin.validate(&two_branches()).unwrap();
    let options = EvalOptions {
        targets: Some(vec!["slow_b".into()]),
        output_directory: Some(out.path().to_path_buf()),
        ..EvalOptions::default()
    };
    let evaluation = evaluator.evaluate(&graph, &options).unwrap();
    assert_eq!(evaluation.executed, ["pattern_b", "slow_b"]);
    assert_eq!(evaluation.outputs.keys().collect::<Vec<_>>(), ["slow_b"]);
}

#[test]
fn the_example_graph_file_writes_frames_and_a_contact_sheet() {
    let plugin = plugin();
    let out = tempfile::tempdir().unwrap();
    let graph = Graph::load(workspace_root().join("tests/graphs/test_pattern.json")).unwrap();
    let graph = plugin.validate(&graph).unwrap();
    let evaluator = Evaluator::new(&plugin);
    let options = EvalOptions {
        output_directory: Some(out.path().to_path_buf()),
        ..EvalOptions::default()
    };
    let evaluation = evaluator.evaluate(&graph, &options).unwrap();
    let folder = evaluation
        .output("save", "folder")
        .unwrap()
        .read_string()
        .unwrap();
    assert_eq!(
        folder,
        out.path().join("frames/pattern").display().to_string()
    );
    for file in ["frame_0000.png", "frame_0005.png", "contact_sheet.png"] {
        assert!(
            out.path().join("frames/pattern").join(file).is_file(),
            "{file}"
        );
    }
    // A second evaluator (nothing cached) never overwrites: it writes to a new folder.
    let again = Evaluator::new(&plugin).evaluate(&graph, &options).unwrap();
    let folder = again
        .output("save", "folder")
        .unwrap()
        .read_string()
        .unwrap();
    assert!(folder.ends_with("frames/pattern-2"), "{folder}");
}

#[test]
fn a_failing_node_names_itself() {
    let plugin = plugin();
    let mut graph = Graph::new();
    graph.add("boom", "DebugPanic").param("panic", true);
    graph.output("boom");
    let error = Evaluator::new(&plugin)
        .evaluate(&plugin.validate(&graph).unwrap(), &EvalOptions::default())
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("node `boom` (DebugPanic) failed: PANICKED"),
        "{message}"
    );
    assert!(
        message.contains("DebugPanic was asked to panic"),
        "{message}"
    );
}

#[test]
fn four_threads_give_the_same_outputs_as_one() {
    let plugin = plugin();
    let graphs: Vec<_> = (0..4)
        .map(|seed| plugin.validate(&pattern_graph(100 + seed)).unwrap())
        .collect();
    let read = |evaluation: &lct_host::Evaluation| {
        let value = evaluation.output("slow", "frames").unwrap();
        (
            value.content_hash().unwrap(),
            value.read_frames(ColorSpace::SRGB).unwrap(),
        )
    };
    let sequential: Vec<_> = {
        let evaluator = Evaluator::new(&plugin);
        graphs
            .iter()
            .map(|g| read(&evaluator.evaluate(g, &EvalOptions::default()).unwrap()))
            .collect()
    };
    let shared = Evaluator::new(&plugin);
    let concurrent: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = graphs
            .iter()
            .map(|g| scope.spawn(|| read(&shared.evaluate(g, &EvalOptions::default()).unwrap())))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(sequential, concurrent);
    // Different seeds really are different graphs.
    assert_ne!(sequential[0].0, sequential[1].0);
    // The same graph from four threads at once, sharing one cache.
    let same: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    read(
                        &shared
                            .evaluate(&graphs[2], &EvalOptions::default())
                            .unwrap(),
                    )
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert!(same.iter().all(|s| *s == sequential[2]));
}
