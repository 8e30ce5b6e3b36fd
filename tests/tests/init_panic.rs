//! A plugin that panics while initialising is refused with its own error, the host survives,
//! and the same plugin loads once the cause is gone.
//!
//! Its own test binary (its own process) because it sets the plugin's test-only environment
//! variable `LCT_PLUGIN_TEST_PANIC_IN_INIT`, which would break other tests running beside it.

use lct_host::{LoadError, Plugin};
use lct_integration_tests::plugin_path;

#[test]
fn a_panic_during_initialisation_is_its_own_error() {
    let path = plugin_path();
    std::env::set_var("LCT_PLUGIN_TEST_PANIC_IN_INIT", "1");
    let error = Plugin::load(path).unwrap_err();
    std::env::remove_var("LCT_PLUGIN_TEST_PANIC_IN_INIT");
    match &error {
        LoadError::InitPanicked { message, .. } => {
            assert!(message.contains("initialize: panicked"), "{message}");
            assert!(
                message.contains("LCT_PLUGIN_TEST_PANIC_IN_INIT"),
                "{message}"
            );
        }
        other => panic!("expected InitPanicked, got {other}"),
    }
    assert!(
        error.to_string().contains("panicked during initialisation"),
        "{error}"
    );
    let plugin = Plugin::load(path).expect("loads once the cause is gone");
    assert!(plugin.node("SceneContext").is_some());
}
