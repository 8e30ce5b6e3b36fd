//! The hardened boundary, through the real plugin and the real `lct` binary: no file written
//! outside the output root by any path string, hostile reads refused with bounded memory, the
//! header's error contract under nested calls, exact parameter kinds, and concurrent saves
//! into one crowded folder each finishing with their own files.

use std::collections::BTreeSet;
use std::ffi::c_char;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use lct_abi::{LctHandle, LctParam, LctStatus, LctValueKind};
use lct_host::{EvalOptions, Evaluator, Graph, ParamValue, Plugin};
use lct_integration_tests::{evaluate_into, has_embedded_model, lct_binary, plugin, test_pattern};

/// TestPattern -> SaveFrames and SaveVideo, both into `directory`.
fn save_graph(directory: &str) -> Graph {
    let mut graph = Graph::new();
    graph.add("pattern", "TestPattern").param("frames", 2);
    graph
        .add("frames", "SaveFrames")
        .param("directory", directory)
        .input("frames", "pattern", "frames");
    graph
        .add("video", "SaveVideo")
        .param("directory", directory)
        .input("frames", "pattern", "frames");
    graph.output("frames");
    graph.output("video");
    graph
}

/// Every file and folder under `dir`, relative to it.
fn entries_under(dir: &Path) -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            found.insert(path.strip_prefix(dir).unwrap().to_path_buf());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    found
}

/// The directory strings that try to leave the output root, and what the error must say.
fn escapes(base: &Path) -> Vec<(String, &'static str)> {
    vec![
        ("../escaped".into(), "contains `..`"),
        ("frames/../../escaped".into(), "contains `..`"),
        ("..".into(), "contains `..`"),
        (
            base.join("escaped").display().to_string(),
            "is an absolute path",
        ),
        ("/tmp".into(), "is an absolute path"),
        ("..\\escaped".into(), "backslash"),
        ("link/inside".into(), "outside the output root"),
    ]
}

/// `base/out` (the root) with `out/link` pointing at `base/elsewhere`.
fn root_with_outward_link(base: &Path) -> PathBuf {
    let out = base.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(base.join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(base.join("elsewhere"), out.join("link")).unwrap();
    out
}

#[test]
fn no_directory_string_writes_outside_the_output_root_through_the_evaluator() {
    let plugin = plugin();
    let base = tempfile::tempdir().unwrap();
    let out = root_with_outward_link(base.path());
    let before = entries_under(base.path());
    for (directory, expected) in escapes(base.path()) {
        let error = evaluate_into(&plugin, &save_graph(&directory), &out).unwrap_err();
        assert!(
            error.contains("widget `directory`") && error.contains(expected),
            "{directory:?}: {error}"
        );
    }
    assert_eq!(entries_under(base.path()), before, "something was written");
    // The same graph with a plain relative folder writes inside the root.
    evaluate_into(&plugin, &save_graph("shots/a"), &out).unwrap();
    let written = entries_under(&out);
    assert!(
        written.contains(Path::new("shots/a/scene/frame_0001.png")),
        "{written:?}"
    );
    assert!(
        written.contains(Path::new("shots/a/scene.mp4")),
        "{written:?}"
    );
    assert!(entries_under(&base.path().join("elsewhere")).is_empty());
}

#[test]
fn no_directory_string_writes_outside_the_output_root_through_the_cli() {
    let Some(lct) = lct_binary() else {
        panic!("the lct binary is built beside the test plugin");
    };
    let base = tempfile::tempdir().unwrap();
    let out = root_with_outward_link(base.path());
    let before = entries_under(base.path());
    for (directory, expected) in escapes(base.path()) {
        let graph_file = base.path().join("graph.json");
        std::fs::write(&graph_file, save_graph(&directory).to_json()).unwrap();
        let output = Command::new(&lct)
            .arg("run")
            .arg(&graph_file)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{directory:?} was accepted");
        assert!(stderr.contains(expected), "{directory:?}: {stderr}");
        std::fs::remove_file(&graph_file).unwrap();
    }
    assert_eq!(entries_under(base.path()), before, "something was written");
}

/// Peak resident memory of a finished child, from `wait4` (the child's own, not the test
/// process's).
fn run_measuring_peak_rss(command: &mut Command) -> (std::process::Output, u64) {
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    // Read the pipes on threads so a chatty child cannot block on a full pipe.
    let mut child = child;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut bytes).unwrap();
        bytes
    });
    let err_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut bytes).unwrap();
        bytes
    });
    let mut status = 0;
    // SAFETY: plain libc calls on our own child's pid with valid out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4 failed");
    let output = std::process::Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(status),
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    };
    // Linux reports ru_maxrss in KiB.
    (output, usage.ru_maxrss as u64 * 1024)
}

/// A PNG whose header claims `width` x `height` pixels, with one tiny (wrong) data chunk.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut crc_input = kind.to_vec();
        crc_input.extend_from_slice(data);
        out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
        out
    }
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &byte in bytes {
            crc ^= byte as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    png
}

#[test]
fn hostile_reads_are_refused_by_name_with_bounded_memory() {
    let Some(lct) = lct_binary() else {
        panic!("the lct binary is built beside the test plugin");
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let sparse = dir.path().join("huge.png");
    // 2 GiB claimed, no disk used: over the 1 GiB image limit.
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let zero = dir.path().join("zero.png");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let giant = dir.path().join("giant.png");
    std::fs::write(&giant, png_claiming(60_000, 60_000)).unwrap();
    let sparse_config = dir.path().join("config.ocio");
    std::fs::File::create(&sparse_config)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let load_into_save = |path: &Path, config: &str| {
        let mut graph = Graph::new();
        graph
            .add("load", "LoadImage")
            .param("path", path.display().to_string())
            .param("config", config);
        graph
            .add("save", "SaveFrames")
            .input("frames", "load", "frames");
        graph.output("save");
        graph
    };
    let pattern_into_convert = |config: &str| {
        let mut graph = Graph::new();
        graph.add("pattern", "TestPattern");
        graph
            .add("convert", "ColorConvert")
            .param("config", config)
            .input("frames", "pattern", "frames");
        graph
            .add("save", "SaveFrames")
            .input("frames", "convert", "frames");
        graph.output("save");
        graph
    };
    let fine = dir.path().join("fine.png");
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 10, 10]))
        .save(&fine)
        .unwrap();
    let cases: Vec<(&str, Graph, String)> = vec![
        (
            "a readable image (baseline)",
            load_into_save(&fine, ""),
            String::new(),
        ),
        (
            "LoadImage config /dev/zero",
            load_into_save(&fine, "/dev/zero"),
            "/dev/zero: not a regular file (a character device)".into(),
        ),
        (
            "ColorConvert config /dev/zero",
            pattern_into_convert("/dev/zero"),
            "/dev/zero: not a regular file (a character device)".into(),
        ),
        (
            "a 1 GiB config",
            pattern_into_convert(&sparse_config.display().to_string()),
            "over the 16777216-byte limit for OCIO config files".into(),
        ),
        (
            "LoadImage of a link to /dev/zero",
            load_into_save(&zero, ""),
            "zero.png: not a regular file (a character device)".into(),
        ),
        (
            "a 2 GiB image file",
            load_into_save(&sparse, ""),
            "over the 1073741824-byte limit for image files".into(),
        ),
        (
            "a PNG claiming 60000x60000",
            load_into_save(&giant, ""),
            "declares 60000x60000 pixels, over the budget".into(),
        ),
    ];
    let mut baseline = 0;
    for (what, graph, expected) in cases {
        let graph_file = dir.path().join("graph.json");
        std::fs::write(&graph_file, graph.to_json()).unwrap();
        let (output, peak) = run_measuring_peak_rss(
            Command::new(&lct)
                .arg("run")
                .arg(&graph_file)
                .arg("--out")
                .arg(&out),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        println!("{what}: peak RSS {:.1} MiB", peak as f64 / (1 << 20) as f64);
        if expected.is_empty() {
            assert!(output.status.success(), "{what}: {stderr}");
            baseline = peak;
            continue;
        }
        assert!(!output.status.success(), "{what} was accepted");
        assert!(stderr.contains(&expected), "{what}: {stderr}");
        // The bound: a refused read costs no more than 64 MiB over reading a small image.
        assert!(
            peak < baseline + (64 << 20),
            "{what}: peak RSS {peak} bytes against a baseline of {baseline}"
        );
    }
}

/// A progress callback that makes a failing call into the plugin (a bogus handle) every step.
static NESTED_FAILURES: AtomicUsize = AtomicUsize::new(0);

fn last_error_len(plugin: &Plugin) -> usize {
    let last_error = plugin.raw_api().last_error.unwrap();
    // SAFETY: a null buffer asks for the length only.
    unsafe { last_error(std::ptr::null_mut(), 0) }
}

#[test]
fn a_successful_call_leaves_no_error_even_after_failing_nested_calls() {
    let plugin = plugin();
    let api = plugin.raw_api();
    let frames = test_pattern(&plugin);
    let delay = plugin.node("Delay").unwrap();
    let params = [
        ("steps".to_owned(), ParamValue::Int(4)),
        ("step_ms".to_owned(), ParamValue::Int(0)),
    ];
    let value_kind = api.value_kind.unwrap();
    let outputs = plugin
        .execute(delay, &params, &[Some(&frames)], None, &mut |_, _| {
            let mut kind = LctValueKind::NONE;
            // SAFETY: a valid out-pointer; the handle is bogus on purpose.
            let status = unsafe { value_kind(LctHandle(0xdead_beef), &mut kind) };
            assert_eq!(status, LctStatus::BAD_HANDLE);
            // The nested call's message is there while the node runs...
            assert!(last_error_len(&plugin) > 0);
            NESTED_FAILURES.fetch_add(1, Ordering::Relaxed);
            true
        })
        .unwrap();
    assert!(NESTED_FAILURES.load(Ordering::Relaxed) >= 4);
    // ...and gone once the outer call succeeded, as the header says.
    assert_eq!(last_error_len(&plugin), 0);
    drop(outputs);
}

/// `node_execute` of node `id` with the one raw parameter `param`.
fn execute_raw(plugin: &Plugin, id: &str, param: LctParam) -> LctStatus {
    let api = plugin.raw_api();
    let node = plugin.node(id).unwrap();
    let inputs = vec![LctHandle(0); node.inputs.len()];
    let mut outputs = vec![LctHandle(0); node.outputs.len()];
    // SAFETY: valid arrays of the declared lengths; options null (defaults).
    unsafe {
        api.node_execute.unwrap()(
            node.index,
            &param,
            1,
            inputs.as_ptr(),
            inputs.len(),
            std::ptr::null(),
            outputs.as_mut_ptr(),
            outputs.len(),
        )
    }
}

fn last_error(plugin: &Plugin) -> String {
    let mut buffer = vec![0 as c_char; 512];
    let last_error = plugin.raw_api().last_error.unwrap();
    // SAFETY: the buffer is 512 bytes.
    unsafe { last_error(buffer.as_mut_ptr(), buffer.len()) };
    let bytes: Vec<u8> = buffer
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn parameter_kinds_are_held_exactly() {
    let plugin = plugin();
    let text =
        |name: &'static std::ffi::CStr, kind: LctValueKind, value: &'static std::ffi::CStr| {
            LctParam {
                name: name.as_ptr(),
                kind,
                int_value: 0,
                float_value: 0.0,
                text_value: value.as_ptr(),
            }
        };
    // A STRING widget takes no ENUM value, an ENUM widget no STRING value.
    let status = execute_raw(
        &plugin,
        "SaveFrames",
        text(c"name", LctValueKind::ENUM, c"x"),
    );
    assert_eq!(status, LctStatus::WRONG_KIND);
    let message = last_error(&plugin);
    assert!(
        message.contains("widget `name` is STRING, got a ENUM value"),
        "{message}"
    );
    let status = execute_raw(
        &plugin,
        "SaveFrames",
        text(c"format", LctValueKind::STRING, c"png"),
    );
    assert_eq!(status, LctStatus::WRONG_KIND);
    assert!(last_error(&plugin).contains("`format` is ENUM"));
    // A BOOL is 0 or 1.
    for value in [2, 257, 1_000_001, -1] {
        let param = LctParam {
            name: c"contact_sheet".as_ptr(),
            kind: LctValueKind::BOOL,
            int_value: value,
            float_value: 0.0,
            text_value: std::ptr::null(),
        };
        assert_eq!(
            execute_raw(&plugin, "SaveFrames", param),
            LctStatus::OUT_OF_RANGE,
            "BOOL {value}"
        );
        let message = last_error(&plugin);
        assert!(
            message.contains(&format!("BOOL with int_value {value}; a BOOL is 0 or 1")),
            "{message}"
        );
    }
    // Every out-pointer is required, `value_read_string`'s `out_len` included.
    let frames = test_pattern(&plugin);
    let read_string = plugin.raw_api().value_read_string.unwrap();
    let mut buffer = [0 as c_char; 64];
    // SAFETY: a 64-byte buffer and a null out_len, refused before anything is written.
    let status = unsafe {
        read_string(
            frames.handle(),
            buffer.as_mut_ptr(),
            64,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(status, LctStatus::INVALID_ARGUMENT);
    assert!(last_error(&plugin).contains("`out_len` is null"));
}

#[test]
fn concurrent_saves_into_one_crowded_folder_each_get_their_own_files() {
    let plugin = plugin();
    let out = tempfile::tempdir().unwrap();
    let frames_dir = out.path().join("frames");
    for n in 2..=2200 {
        std::fs::create_dir_all(frames_dir.join(format!("scene-{n}"))).unwrap();
    }
    std::fs::create_dir(frames_dir.join("scene")).unwrap();
    let frames = test_pattern(&plugin);
    let save = plugin.node("SaveFrames").unwrap();
    let video = plugin.node("SaveVideo").unwrap();
    let written: Vec<Vec<String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    (0..5)
                        .flat_map(|_| {
                            [save, video].map(|node| {
                                plugin
                                    .execute(
                                        node,
                                        &[],
                                        &[Some(&frames)],
                                        Some(out.path()),
                                        &mut |_, _| true,
                                    )
                                    .unwrap()
                                    .remove(0)
                                    .read_string()
                                    .unwrap()
                            })
                        })
                        .collect()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let all: Vec<&String> = written.iter().flatten().collect();
    let distinct: BTreeSet<&String> = all.iter().copied().collect();
    assert_eq!(all.len(), 40);
    assert_eq!(distinct.len(), 40, "two saves shared a name: {all:?}");
    for path in &all {
        let path = Path::new(path);
        if path.extension().is_some_and(|e| e == "mp4") {
            assert!(
                std::fs::metadata(path).unwrap().len() > 0,
                "{}",
                path.display()
            );
        } else {
            // Each folder past the 2200 already there, complete.
            let number: u32 = path.file_name().unwrap().to_str().unwrap()["scene-".len()..]
                .parse()
                .unwrap();
            assert!(number > 2200, "{}", path.display());
            for file in ["frame_0000.png", "contact_sheet.png"] {
                assert!(path.join(file).is_file(), "{}/{file}", path.display());
            }
        }
    }
    // No partial file is left anywhere.
    let leftovers: Vec<_> = entries_under(out.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".partial-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn two_output_nodes_with_the_same_settings_each_write_their_own_files() {
    let plugin = plugin();
    let out = tempfile::tempdir().unwrap();
    let mut graph = Graph::new();
    graph.add("pattern", "TestPattern");
    for label in ["first", "second"] {
        graph
            .add(label, "SaveFrames")
            .input("frames", "pattern", "frames");
        graph.output(label);
    }
    let graph = plugin.validate(&graph).unwrap();
    let options = EvalOptions {
        output_directory: Some(out.path().to_path_buf()),
        ..EvalOptions::default()
    };
    let evaluator = Evaluator::new(&plugin);
    let evaluation = evaluator.evaluate(&graph, &options).unwrap();
    let folder = |label: &str| {
        evaluation
            .output(label, "folder")
            .unwrap()
            .read_string()
            .unwrap()
    };
    let (first, second) = (folder("first"), folder("second"));
    assert_ne!(first, second);
    let mut names = [first.clone(), second.clone()].map(|f| {
        Path::new(&f)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    });
    names.sort();
    assert_eq!(names, ["scene", "scene-2"]);
    // Evaluated again unchanged, nothing is rewritten: both come from the cache.
    let again = evaluator.evaluate(&graph, &options).unwrap();
    assert!(again.executed.is_empty(), "{:?}", again.executed);
    // Two folders, each with TestPattern's 8 frames and a contact sheet.
    assert_eq!(
        entries_under(&out.path().join("frames")).len(),
        2 * (8 + 1) + 2
    );
}

#[test]
fn scene_errors_are_reported_on_scene_context_when_it_has_the_model() {
    if !has_embedded_model() {
        eprintln!("the embedded model is absent from this tree: prompt words are not checked");
        return;
    }
    let plugin = plugin();
    let mut graph = Graph::new();
    graph.add("model", "LoadModel");
    graph
        .add("scene", "SceneContext")
        .param("shots", "[SHOT 1] wide shot of Character 1 in plaid.")
        .input("model", "model", "model");
    graph
        .add("generate", "ShotGenerate")
        .param("steps", 1)
        .input("model", "model", "model")
        .input("scene", "scene", "scene");
    graph.output("generate");
    let out = tempfile::tempdir().unwrap();
    let error = evaluate_into(&plugin, &graph, out.path()).unwrap_err();
    assert!(
        error.contains("node `scene` (SceneContext)")
            && error.contains("widget `shots`, shot 1")
            && error.contains("unknown word 'plaid'"),
        "{error}"
    );
    // A reference image of another size, on the port that carries it.
    let image = out.path().join("big.png");
    image::RgbImage::new(32, 16).save(&image).unwrap();
    let mut graph = Graph::new();
    graph.add("model", "LoadModel");
    graph
        .add("identity", "LoadImage")
        .param("path", image.display().to_string());
    graph
        .add("scene", "SceneContext")
        .param("shots", "[SHOT 1] wide shot of Character 1.")
        .input("identity", "identity", "frames")
        .input("model", "model", "model");
    graph.output("scene");
    let error = evaluate_into(&plugin, &graph, out.path()).unwrap_err();
    assert!(
        error.contains("node `scene` (SceneContext)")
            && error.contains("input `identity` is 32x16"),
        "{error}"
    );
}
