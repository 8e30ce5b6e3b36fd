//! The ComfyUI pack (`plugin/comfyui/`) against the real plugin, without a ComfyUI install:
//! its test script stands in for ComfyUI's progress bar, interrupt flag and output folder and
//! checks the descriptor mapping, IMAGE conversion, error mapping, previews, interrupt and
//! handle release. Needs python3 with numpy and Pillow (CI installs python3-numpy and
//! python3-pil); a machine without them fails it.

use std::process::Command;

use lct_integration_tests::{has_embedded_model, plugin_path, python3, workspace_root};

#[test]
fn the_comfyui_pack_maps_runs_and_interrupts_the_real_plugin() {
    let modules = Command::new(python3())
        .args(["-c", "import numpy, PIL"])
        .output()
        .unwrap();
    assert!(
        modules.status.success(),
        "the ComfyUI pack's test needs numpy and Pillow (apt-get install python3-numpy python3-pil): {}",
        String::from_utf8_lossy(&modules.stderr)
    );
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(python3())
        .arg(workspace_root().join("plugin/comfyui/tests/test_pack.py"))
        .arg(plugin_path())
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let nodes = lct_integration_tests::plugin().nodes().len();
    assert!(
        stdout.contains(&format!("descriptors: {nodes} nodes mapped")),
        "{stdout}"
    );
    assert!(stdout.contains("IMAGE round trip: max error"), "{stdout}");
    assert!(
        stdout.contains("no_such_image.png: no such file"),
        "{stdout}"
    );
    assert!(stdout.contains("truncated.png: unreadable"), "{stdout}");
    if has_embedded_model() {
        assert!(stdout.contains("unknown word 'plaid'"), "{stdout}");
        assert!(
            stdout.contains("generation: progress [1, 2, 3, 4], previews at [2, 4] of (128, 64)"),
            "{stdout}"
        );
        assert!(
            stdout.contains("interrupt: stopped at step 1 of 4"),
            "{stdout}"
        );
        assert!(
            stdout.contains("handles: back to 0 after the outputs are dropped"),
            "{stdout}"
        );
    } else {
        assert!(stdout.contains("generation: skipped"), "{stdout}");
    }
}
