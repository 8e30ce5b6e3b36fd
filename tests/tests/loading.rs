//! Loading: the real plugin loads and describes its nodes; broken plugins are refused, each
//! with its own error naming what is wrong (and both versions where versions differ).

use std::path::PathBuf;

use lct_abi::{LctPluginApi, LCT_ABI_VERSION, LCT_OLDEST_ABI_VERSION};
use lct_host::{LoadError, Plugin, ValueKind};
use lct_integration_tests::{fixture_plugin, plugin, plugin_path};

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
fn broken_plugin(mode: &str) -> (tempfile::TempDir, PathBuf) {
    fixture_plugin("broken_plugin.c", mode)
}

#[test]
fn a_library_without_the_entry_symbol_is_refused() {
    let (_dir, library) = broken_plugin("BROKEN_NO_ENTRY");
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
    let (_dir, library) = broken_plugin("BROKEN_NULL_TABLE");
    let error = Plugin::load(&library).unwrap_err();
    assert!(matches!(error, LoadError::NullTable { .. }), "{error}");
}

#[test]
fn an_older_abi_version_is_refused_naming_both_versions() {
    let (_dir, library) = broken_plugin("BROKEN_OLD_ABI");
    let error = Plugin::load(&library).unwrap_err();
    match &error {
        LoadError::AbiTooOld {
            plugin_abi,
            oldest_abi,
            host_abi,
            ..
        } => {
            assert_eq!(
                (*plugin_abi, *oldest_abi, *host_abi),
                (0, LCT_OLDEST_ABI_VERSION, LCT_ABI_VERSION)
            );
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

/// Loads broken plugin `mode`, which must be refused as `TableTooSmall`: its plugin size,
/// required size, plugin ABI and host ABI.
fn table_too_small(mode: &str) -> (u32, usize, u32, u32) {
    let (_dir, library) = broken_plugin(mode);
    let error = Plugin::load(&library).unwrap_err();
    let message = error.to_string();
    match error {
        LoadError::TableTooSmall {
            plugin_size,
            required_size,
            plugin_abi,
            host_abi,
            ..
        } => {
            assert!(
                message.contains(&format!("{plugin_size} bytes")),
                "{message}"
            );
            assert!(message.contains(&required_size.to_string()), "{message}");
            (plugin_size, required_size as usize, plugin_abi, host_abi)
        }
        other => panic!("expected TableTooSmall, got {other}"),
    }
}

#[test]
fn a_too_small_table_is_refused_naming_both_sizes() {
    let refused = table_too_small("BROKEN_SMALL_TABLE");
    let full = std::mem::size_of::<LctPluginApi>();
    assert_eq!(refused, (8, full, LCT_ABI_VERSION, LCT_ABI_VERSION));
}

/// A smaller table is fine from an older plugin (tests/versions.rs), not from one that claims
/// this version: its functions would be missing.
#[test]
fn a_table_smaller_than_its_own_version_needs_is_refused() {
    let refused = table_too_small("BROKEN_SHORT_NEW_TABLE");
    let v1_size = std::mem::offset_of!(LctPluginApi, value_retain) as u32;
    let full = std::mem::size_of::<LctPluginApi>();
    assert_eq!(refused, (v1_size, full, LCT_ABI_VERSION, LCT_ABI_VERSION));
}

#[test]
fn a_table_size_that_is_no_size_is_refused() {
    let (_dir, library) = broken_plugin("BROKEN_HUGE_TABLE");
    let error = Plugin::load(&library).unwrap_err();
    assert!(
        matches!(
            error,
            LoadError::BadTableSize {
                source: lct_abi::SizeError::TooLarge {
                    declared: 0xFFFF_FFFF,
                    ..
                },
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("4294967295 bytes"), "{error}");
}

#[test]
fn a_table_with_null_functions_is_refused_naming_them() {
    let (_dir, library) = broken_plugin("BROKEN_MISSING_FUNCTIONS");
    let error = Plugin::load(&library).unwrap_err();
    match &error {
        LoadError::MissingFunctions { functions, .. } => {
            // The ABI 1 functions; those appended later may be absent.
            let required: Vec<_> = LctPluginApi::FUNCTION_VERSIONS
                .iter()
                .filter(|(_, since, _)| *since == 1)
                .map(|(name, _, _)| *name)
                .collect();
            assert_eq!(functions, &required);
            assert!(!functions.contains(&"value_retain"));
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
