//! Regression: a thread that starts after the thread that loaded the plugin has exited can
//! still call it (mimalloc's default TLS model segfaulted there inside a dlopen'ed library).
//! Its own binary so that the loading thread really is the first to touch the plugin.

use lct_host::{EvalOptions, Evaluator, Graph, Plugin};
use lct_integration_tests::plugin_path;

fn run_pattern(plugin: &Plugin) {
    let mut graph = Graph::new();
    graph.add("pattern", "TestPattern").param("frames", 2);
    graph.add("boom", "DebugPanic").param("panic", true);
    graph.output("pattern");
    let graph = plugin.validate(&graph).unwrap();
    Evaluator::new(plugin)
        .evaluate(&graph, &EvalOptions::default())
        .unwrap();
    let boom = EvalOptions {
        targets: Some(vec!["boom".into()]),
        ..EvalOptions::default()
    };
    assert!(Evaluator::new(plugin).evaluate(&graph, &boom).is_err());
}

#[test]
fn threads_started_after_the_loading_thread_exited_can_call_the_plugin() {
    let path = plugin_path();
    let plugin = std::thread::spawn(move || {
        let plugin = Plugin::load(path).unwrap();
        run_pattern(&plugin);
        plugin
    })
    .join()
    .unwrap();
    for _ in 0..3 {
        let plugin = plugin.clone();
        std::thread::spawn(move || run_pattern(&plugin))
            .join()
            .unwrap();
    }
}
