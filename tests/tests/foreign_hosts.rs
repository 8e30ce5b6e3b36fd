//! Hosts that are not Rust: a C program compiled against the committed header alone, and a
//! Python ctypes script, each loading the real plugin, listing nodes (read by the sizes the
//! plugin declares), importing frames of their own and running SaveFrames on them (no test
//! node, so they work with the shipped plugin too). Plus the `lct` command line. A machine
//! without a C compiler or python3 fails these tests: CI installs both.

use std::path::Path;
use std::process::{Command, Output};

use lct_integration_tests::{
    c_compiler, compile_c, has_embedded_model, lct_binary, plugin_path, python3, workspace_root,
};

fn assert_host_output(output: &Output, out_dir: &Path, name: &str) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("node SceneContext (identity: FRAMES, environment: FRAMES, reference: FRAMES, model: MODEL) -> (scene: SCENE)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("node SaveFrames (frames: FRAMES) -> (folder: STRING) output"),
        "{stdout}"
    );
    assert!(stdout.contains("frames 4 x 32x24x3"), "{stdout}");
    assert!(stdout.contains("value_retain: provided"), "{stdout}");
    assert!(stdout.contains("live handles: 0"), "{stdout}");
    let folder = out_dir.join("frames").join(name);
    assert!(
        stdout.contains(&format!("saved to {}", folder.display())),
        "{stdout}"
    );
    for file in ["frame_0000.png", "frame_0003.png", "contact_sheet.png"] {
        assert!(
            folder.join(file).is_file(),
            "{} missing",
            folder.join(file).display()
        );
    }
    if !has_embedded_model() {
        assert!(stdout.contains("previews: skipped"), "{stdout}");
        return;
    }
    // ShotGenerate at 4 steps with preview_every 2: previews after steps 2 and 4, two shots
    // side by side in each PPM the host wrote.
    for step in [2, 4] {
        assert!(
            stdout.contains(&format!("preview step {step}/4: 2 shot(s) of 64x64")),
            "{stdout}"
        );
        let ppm = std::fs::read(out_dir.join(format!("preview_step{step:04}.ppm"))).unwrap();
        let header = b"P6\n128 64\n255\n";
        assert_eq!(&ppm[..header.len()], header);
        assert_eq!(ppm.len(), header.len() + 128 * 64 * 3);
    }
    assert!(stdout.contains("previews written: 2"), "{stdout}");
}

#[test]
fn a_c_program_using_only_the_header_runs_a_graph() {
    let compiler = c_compiler();
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("run_graph");
    compile_c(
        &compiler,
        &workspace_root().join("tests/c/run_graph.c"),
        &exe,
        &["-ldl"],
    );
    let out = dir.path().join("out");
    let output = Command::new(&exe)
        .arg(plugin_path())
        .arg(&out)
        .output()
        .unwrap();
    assert_host_output(&output, &out, "from_c");
}

#[test]
fn a_python_ctypes_script_runs_a_graph() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let output = Command::new(python3())
        .arg(workspace_root().join("tests/python/run_graph.py"))
        .arg(plugin_path())
        .arg(&out)
        .output()
        .unwrap();
    assert_host_output(&output, &out, "from_python");
    // The Python host's attempts to write outside its output root, refused by name.
    let stdout = String::from_utf8_lossy(&output.stdout);
    for directory in ["../escaped", "frames/../../escaped"] {
        assert!(
            stdout.contains(&format!(
                "escape {directory}: refused (node_execute: SaveFrames: widget `directory`:"
            )),
            "{stdout}"
        );
    }
    assert!(stdout.contains("/../escaped: refused ("), "{stdout}");
    assert!(stdout.contains("is an absolute path"), "{stdout}");
    assert!(!dir.path().join("escaped").exists());
}

#[test]
fn the_cli_lists_nodes_and_runs_a_graph_file() {
    let Some(lct) = lct_binary() else {
        eprintln!("skipped: the lct binary was not built (LCT_PLUGIN is set)");
        return;
    };
    let nodes = Command::new(&lct)
        .args(["nodes", "--plugin"])
        .arg(plugin_path())
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&nodes.stdout);
    assert!(nodes.status.success(), "{listing}");
    assert!(
        listing.contains("SceneContext v1 \"Scene Context\" in lct/scene"),
        "{listing}"
    );
    assert!(listing.contains("in  reference"), "{listing}");

    let dir = tempfile::tempdir().unwrap();
    let run = Command::new(&lct)
        .arg("run")
        .arg(workspace_root().join("tests/graphs/test_pattern.json"))
        .arg("--out")
        .arg(dir.path())
        .arg("--plugin")
        .arg(plugin_path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("save.folder: "), "{stdout}");
    assert!(dir
        .path()
        .join("frames/pattern/contact_sheet.png")
        .is_file());

    // A bad graph fails before anything runs, with the validation message.
    let graph = dir.path().join("bad.json");
    std::fs::write(&graph, r#"{"nodes":{"save":{"type":"SaveFrames"}}}"#).unwrap();
    let bad = Command::new(&lct)
        .arg("run")
        .arg(&graph)
        .arg("--out")
        .arg(dir.path().join("bad"))
        .arg("--plugin")
        .arg(plugin_path())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("required input `frames` (FRAMES) is not connected"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("bad").exists(),
        "an invalid graph created its output directory"
    );

    // `lct scene` with a scene the model cannot take says why.
    let scene = dir.path().join("scene.json");
    std::fs::write(
        &scene,
        r#"{"global_prompt":"a harbour at dawn","shots":["wide","close"]}"#,
    )
    .unwrap();
    let result = Command::new(&lct)
        .arg("scene")
        .arg(&scene)
        .arg("--out")
        .arg(dir.path())
        .arg("--plugin")
        .arg(plugin_path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    // Without an embedded model LoadModel says how to give one; with it, the prompt's words
    // are outside the model's vocabulary. Either way a clear error, nothing written.
    assert!(!result.status.success());
    assert!(
        (stderr.contains("LoadModel") && stderr.contains("--model"))
            || (stderr.contains("unknown word") && stderr.contains("'harbour'")),
        "{stderr}"
    );
}
