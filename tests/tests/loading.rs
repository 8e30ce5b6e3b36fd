//! Loading: the real plugin loads and describes its nodes; broken plugins are refused, each
//! with its own error naming what is wrong (and both versions where versions differ).

use std::path::PathBuf;

use lct_abi::LCT_ABI_VERSION;
use lct_host::{LoadError, Plugin, ValueKind};
use lct_integration_tests::{c_compiler, compile_c, plugin, plugin_path, workspace_root};

#[test]
fn the_real_plugin_loads_and_describes_its_nodes() {
    let plugin = plugin();
    assert_eq!(plugin.name(), "lct");
    assert!(!plugin.version().is_empty());
    let scene = plugin.node("SceneContext").expect("SceneContext");
    assert_eq!(scene.outputs[0].kind, ValueKind::SCENE);
    assert_eq!(scene.outputs[0].kind_name, "SCENE");
    assert!(scene.inputs[0].optional);
    let save = plugin.node("SaveFrames").expect("SaveFrames");
    assert!(save.is_output);
    assert_eq!(save.inputs[0].kind_name, "FRAMES");
    for node in plugin.nodes() {
        assert!(
            !node.display_name.is_empty() && !node.category.is_empty(),
            "{}",
            node.id
        );
        for port in node.inputs.iter().chain(&node.outputs) {
            assert_eq!(port.kind_name, port.kind_name.to_uppercase());
        }
    }
    // Loading again gives the same library and the same descriptors.
    let again = Plugin::load(plugin_path()).unwrap();
    assert_eq!(again.nodes(), plugin.nodes());
}

/// Builds `tests/fixtures/broken_plugin.c` with `-D<mode>` into a shared library.
fn broken_plugin(mode: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    let Some(compiler) = c_compiler() else {
        eprintln!("skipped: no C compiler");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join(format!("lib{}.so", mode.to_lowercase()));
    let source = workspace_root().join("tests/fixtures/broken_plugin.c");
    compile_c(
        &compiler,
        &source,
        &library,
        &["-shared", &format!("-D{mode}")],
    );
    Some((dir, library))
}

#[test]
fn a_library_without_the_entry_symbol_is_refused() {
    let Some((_dir, library)) = broken_plugin("BROKEN_NO_ENTRY") else {
        return;
    };
    let error = Plugin::load(&library).unwrap_err();
    assert!(
        matches!(
            error,
            LoadError::MissingEntry {
                symbol: "lct_plugin_entry",
                ..
            }
        ),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("not an lct plugin") && message.contains("lct_plugin_entry"),
        "{message}"
    );
}

#[test]
fn a_null_table_is_refused() {
    let Some((_dir, library)) = broken_plugin("BROKEN_NULL_TABLE") else {
        return;
    };
    let error = Plugin::load(&library).unwrap_err();
    assert!(matches!(error, LoadError::NullTable { .. }), "{error}");
}

#[test]
fn an_older_abi_version_is_refused_naming_both_versions() {
    let Some((_dir, library)) = broken_plugin("BROKEN_OLD_ABI") else {
        return;
    };
    let error = Plugin::load(&library).unwrap_err();
    match &error {
        LoadError::AbiTooOld {
            plugin_abi,
            host_abi,
            ..
        } => {
            assert_eq!((*plugin_abi, *host_abi), (0, LCT_ABI_VERSION));
        }
        other => panic!("expected AbiTooOld, got {other}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("ABI version 0")
            && message.contains(&format!("version {LCT_ABI_VERSION}")),
        "{message}"
    );
}

#[test]
fn a_too_small_table_is_refused_naming_both_sizes() {
    let Some((_dir, library)) = broken_plugin("BROKEN_SMALL_TABLE") else {
        return;
    };
    let error = Plugin::load(&library).unwrap_err();
    match &error {
        LoadError::TableTooSmall {
            plugin_size,
            host_size,
            plugin_abi,
            host_abi,
            ..
        } => {
            assert_eq!(*plugin_size, 8);
            assert_eq!(
                *host_size as usize,
                std::mem::size_of::<lct_abi::LctPluginApi>()
            );
            assert_eq!((*plugin_abi, *host_abi), (LCT_ABI_VERSION, LCT_ABI_VERSION));
        }
        other => panic!("expected TableTooSmall, got {other}"),
    }
    assert!(error.to_string().contains("8 bytes"), "{error}");
}

#[test]
fn a_table_with_null_functions_is_refused_naming_them() {
    let Some((_dir, library)) = broken_plugin("BROKEN_MISSING_FUNCTIONS") else {
        return;
    };
    let error = Plugin::load(&library).unwrap_err();
    match &error {
        LoadError::MissingFunctions { functions, .. } => {
            assert_eq!(functions.as_slice(), lct_abi::LctPluginApi::FUNCTION_NAMES);
        }
        other => panic!("expected MissingFunctions, got {other}"),
    }
    assert!(
        error.to_string().contains("initialize, last_error"),
        "{error}"
    );
}

#[test]
fn a_missing_file_is_an_open_error() {
    let error = Plugin::load("/nonexistent/liblct_plugin.so").unwrap_err();
    assert!(matches!(error, LoadError::Open { .. }), "{error}");
    assert!(
        error.to_string().contains("/nonexistent/liblct_plugin.so"),
        "{error}"
    );
}
