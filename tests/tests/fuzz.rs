//! A seeded mutation fuzzer over everything lct parses from outside: graph JSON, scene JSON,
//! checkpoint folders (safetensors header and config.json), the image decoders behind
//! LoadImage (PNG 8/16-bit, JPEG, EXR), and the C table's parameter parsing. Each case starts
//! from a real, valid input (the examples, a fixture checkpoint, images this test writes) and
//! is damaged by a few random edits: bit flips, boundary bytes, truncation, splices, huge
//! numbers. The rule for every case: no panic (in-process, or `PANICKED` from the plugin), no
//! internal error, and a refusal that names what it refused.
//!
//! Deterministic: the seed is fixed, so a failure names the case that reproduces it. The number
//! of cases per target is `LCT_FUZZ_CASES` times the target's weight (default 1, a
//! few seconds of the test build on 2 cores: 30,000 graph and 30,000 scene files, 4,000
//! images, 1,200 checkpoints and 50,000 parameter calls; raise it for a longer run).

use std::ffi::CString;
use std::path::{Path, PathBuf};

use lct_abi::{LctHandle, LctParam, LctStatus, LctValueKind};
use lct_host::scene::{scene_graph, SceneSpec};
use lct_host::{Graph, ParamValue, Plugin};
use lct_integration_tests::{fixture_model, plugin, workspace_root, Rng};

/// A random index below `n`.
fn pick(rng: &mut Rng, n: usize) -> usize {
    rng.below(n as u64) as usize
}

fn cases(weight: usize) -> usize {
    let scale: usize = std::env::var("LCT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    weight * scale
}

/// One to four random edits of `bytes`; `focus` bytes at the start get most of them (a
/// header), the rest anywhere.
fn mutate(rng: &mut Rng, bytes: &[u8], focus: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..1 + pick(rng, 4) {
        if out.is_empty() {
            out.push(rng.next_u64() as u8);
        }
        let span = if focus > 0 && pick(rng, 4) != 0 {
            focus.min(out.len())
        } else {
            out.len()
        };
        let at = pick(rng, span);
        match pick(rng, 8) {
            0 => out[at] ^= 1 << pick(rng, 8),
            1 => out[at] = [0, 0xff, 0x7f, 0x80, b'"', b'-', b'9'][pick(rng, 7)],
            2 => out.truncate(at),
            3 => {
                let len = 1 + pick(rng, 16.min(out.len() - at));
                let piece: Vec<u8> = out[at..at + len].to_vec();
                let to = pick(rng, out.len());
                out.splice(to..to, piece);
            }
            4 => {
                let len = pick(rng, 8.min(out.len() - at) + 1);
                out.drain(at..at + len);
            }
            5 => {
                // A big number over whatever was there (sizes, offsets, counts).
                let number = [u32::MAX as u64, u64::MAX, 1 << 40, 0][pick(rng, 4)];
                let width = [4, 8][pick(rng, 2)].min(out.len() - at);
                out[at..at + width].copy_from_slice(&number.to_le_bytes()[..width]);
            }
            6 => {
                let text: &[u8] = [
                    &b"99999999999999999999"[..],
                    b"-1",
                    b"1e308",
                    b"null",
                    b"\"..\"",
                    b"[]",
                    b"{}",
                ][pick(rng, 7)];
                out.splice(at..at, text.iter().copied());
            }
            _ => {
                let value = rng.next_u64() as u8;
                out.insert(at, value);
            }
        }
    }
    out
}

/// Every status the header defines; anything else (or PANICKED, INTERNAL) is a finding.
fn assert_named_refusal(case: &str, status: LctStatus, message: &str) {
    assert!(
        status != LctStatus::PANICKED && status != LctStatus::INTERNAL,
        "{case}: {status}: {message}"
    );
    assert!(
        (0..=11).contains(&status.0),
        "{case}: status {status} outside the enum"
    );
    if status != LctStatus::OK {
        assert!(
            !message.trim().is_empty(),
            "{case}: a refusal without a message"
        );
    }
}

fn text_seeds(folder: &str) -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(workspace_root().join(folder))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {folder}");
    seeds
}

/// Damaged copies of the JSON files in `folder`, each parsed by `parse` into a graph (`None`:
/// refused by the parser) and validated against the plugin; a panic fails the test. Prints and
/// checks that some cases stayed parseable and valid, so the fuzzing reaches validation.
fn fuzz_json_graphs(what: &str, folder: &str, seed: u64, parse: impl Fn(&str) -> Option<Graph>) {
    let plugin = plugin();
    let seeds = text_seeds(folder);
    let mut rng = Rng(seed);
    let (mut parsed, mut valid) = (0, 0);
    for case in 0..cases(30_000) {
        let (name, seed) = &seeds[pick(&mut rng, seeds.len())];
        let Ok(text) = String::from_utf8(mutate(&mut rng, seed, 0)) else {
            continue;
        };
        let Some(graph) = parse(&text) else { continue };
        parsed += 1;
        match plugin.validate(&graph) {
            Ok(_) => valid += 1,
            Err(error) => assert!(!error.to_string().is_empty(), "case {case} ({name})"),
        }
    }
    println!(
        "{what}: {} cases, {parsed} parsed, {valid} valid",
        cases(30_000)
    );
    assert!(
        parsed > 0 && valid > 0,
        "{what}: the mutations never kept one whole"
    );
}

#[test]
fn graph_json_parser_and_validation() {
    fuzz_json_graphs(
        "graph JSON",
        "examples/graphs",
        0x6a09_e667_f3bc_c908,
        |text| Graph::from_json(text).ok(),
    );
}

#[test]
fn scene_json_parser_and_graph_building() {
    fuzz_json_graphs(
        "scene JSON",
        "examples/scenes",
        0xbb67_ae85_84ca_a73b,
        |text| {
            serde_json::from_str::<SceneSpec>(text)
                .ok()
                .map(|spec| scene_graph(&spec))
        },
    );
}

/// Runs one node through the plugin; returns its status and message.
fn execute(plugin: &Plugin, node: &str, params: &[(&str, ParamValue)]) -> (LctStatus, String) {
    let node = plugin.node(node).unwrap();
    let params: Vec<(String, ParamValue)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let inputs = vec![None; node.inputs.len()];
    match plugin.execute(node, &params, &inputs, None, &mut |_, _| true) {
        Ok(_) => (LctStatus::OK, String::new()),
        Err(error) => (error.status, error.message),
    }
}

/// Real files of every format LoadImage reads: PNG 8 and 16 bit, JPEG, and an EXR written by
/// SaveFrames.
fn image_seeds(plugin: &Plugin, dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let rgb = image::RgbImage::from_fn(12, 10, |x, y| image::Rgb([x as u8 * 20, y as u8 * 25, 90]));
    let mut seeds = Vec::new();
    for (extension, image) in [
        ("png", image::DynamicImage::ImageRgb8(rgb.clone())),
        (
            "png",
            image::DynamicImage::ImageRgba16(
                image::DynamicImage::ImageRgb8(rgb.clone()).to_rgba16(),
            ),
        ),
        ("jpg", image::DynamicImage::ImageRgb8(rgb)),
    ] {
        let path = dir.join(format!("seed-{}.{extension}", seeds.len()));
        image.save(&path).unwrap();
        seeds.push((extension, std::fs::read(&path).unwrap()));
    }
    let pattern = plugin.node("TestPattern").unwrap();
    let frames = plugin
        .execute(
            pattern,
            &[
                ("frames".into(), ParamValue::Int(1)),
                ("width".into(), ParamValue::Int(12)),
                ("height".into(), ParamValue::Int(10)),
            ],
            &[],
            None,
            &mut |_, _| true,
        )
        .unwrap()
        .remove(0);
    let save = plugin.node("SaveFrames").unwrap();
    let folder = plugin
        .execute(
            save,
            &[
                ("format".into(), ParamValue::Text("exr".into())),
                ("contact_sheet".into(), ParamValue::Bool(false)),
            ],
            &[Some(&frames)],
            Some(dir),
            &mut |_, _| true,
        )
        .unwrap()
        .remove(0)
        .read_string()
        .unwrap();
    seeds.push((
        "exr",
        std::fs::read(Path::new(&folder).join("frame_0000.exr")).unwrap(),
    ));
    seeds
}

#[test]
fn image_decoders_behind_load_image() {
    let plugin = plugin();
    let dir = tempfile::tempdir().unwrap();
    let seeds = image_seeds(&plugin, dir.path());
    let mut rng = Rng(0x3c6e_f372_fe94_f82b);
    let (mut loaded, mut refused) = (0, 0);
    for case in 0..cases(4_000) {
        let (extension, seed) = &seeds[pick(&mut rng, seeds.len())];
        let bytes = mutate(&mut rng, seed, 64);
        let path = dir.path().join(format!("case-{case}.{extension}"));
        std::fs::write(&path, &bytes).unwrap();
        let (status, message) = execute(
            &plugin,
            "LoadImage",
            &[("path", ParamValue::Text(path.display().to_string()))],
        );
        let what = format!("case {case} ({extension}, {} bytes)", bytes.len());
        assert_named_refusal(&what, status, &message);
        if status == LctStatus::OK {
            loaded += 1;
        } else {
            refused += 1;
            assert!(
                message.contains(&format!("case-{case}.{extension}")),
                "{what}: {message}"
            );
        }
        std::fs::remove_file(&path).unwrap();
    }
    println!("images: {loaded} loaded, {refused} refused by name");
    assert!(refused > 0);
}

/// A fixture checkpoint's two files, to damage: config.json and model.safetensors.
fn checkpoint_seed() -> (Vec<u8>, Vec<u8>) {
    let dir = fixture_model(lct_model::AttentionMask::Bidirectional);
    (
        std::fs::read(dir.join("config.json")).unwrap(),
        std::fs::read(dir.join("model.safetensors")).unwrap(),
    )
}

#[test]
fn checkpoint_folders_safetensors_header_and_config() {
    let plugin = plugin();
    let (config, weights) = checkpoint_seed();
    let header_len = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize + 8;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0xa54f_f53a_5f1d_36f1);
    let (mut loaded, mut refused) = (0, 0);
    for case in 0..cases(1_200) {
        let folder: PathBuf = dir.path().join(format!("case-{case}"));
        std::fs::create_dir(&folder).unwrap();
        let (config, weights) = match pick(&mut rng, 3) {
            0 => (mutate(&mut rng, &config, 0), weights.clone()),
            _ => (config.clone(), mutate(&mut rng, &weights, header_len)),
        };
        std::fs::write(folder.join("config.json"), &config).unwrap();
        std::fs::write(folder.join("model.safetensors"), &weights).unwrap();
        let (status, message) = execute(
            &plugin,
            "LoadModel",
            &[("path", ParamValue::Text(folder.display().to_string()))],
        );
        assert_named_refusal(&format!("case {case}"), status, &message);
        if status == LctStatus::OK {
            loaded += 1;
        } else {
            refused += 1;
            assert!(message.contains("LoadModel"), "case {case}: {message}");
        }
        std::fs::remove_dir_all(&folder).unwrap();
    }
    println!("checkpoints: {loaded} loaded, {refused} refused by name");
    assert!(refused > 0);
}

#[test]
fn c_table_parameter_parsing() {
    let plugin = plugin();
    let api = plugin.raw_api();
    let node_execute = api.node_execute.unwrap();
    let value_release = api.value_release.unwrap();
    let last_error = api.last_error.unwrap();
    // Nodes that run without inputs and without the embedded model, and no test node that
    // fails on purpose.
    let nodes = [
        "TestPattern",
        "SceneContext",
        "LoadImage",
        "SaveFrames",
        "ColorConvert",
    ];
    let texts = [
        "",
        "..",
        "../x",
        "/dev/zero",
        "png",
        "exr",
        "SRGB",
        "ACEScg",
        "\u{1F600}",
    ];
    let mut rng = Rng(0x510e_527f_ade6_82d1);
    let mut statuses = std::collections::BTreeMap::<i32, usize>::new();
    for case in 0..cases(50_000) {
        let node = plugin.node(nodes[pick(&mut rng, nodes.len())]).unwrap();
        let mut names: Vec<CString> = Vec::new();
        let mut values: Vec<CString> = Vec::new();
        let mut params = Vec::new();
        for _ in 0..pick(&mut rng, 4) {
            let name = match node.widgets.get(pick(&mut rng, node.widgets.len() + 1)) {
                Some(widget) => widget.name.clone(),
                None => "nonsense".to_owned(),
            };
            names.push(CString::new(name).unwrap());
            values.push(CString::new(texts[pick(&mut rng, texts.len())]).unwrap());
            params.push(LctParam {
                name: names.last().unwrap().as_ptr(),
                kind: LctValueKind(pick(&mut rng, 8) as u32),
                int_value: [0, 1, 2, -1, i64::MAX, i64::MIN, rng.next_u64() as i64]
                    [pick(&mut rng, 7)],
                float_value: [0.0, -1.0, f64::NAN, f64::INFINITY, 1e300, 0.5][pick(&mut rng, 6)],
                text_value: if pick(&mut rng, 10) == 0 {
                    std::ptr::null()
                } else {
                    values.last().unwrap().as_ptr()
                },
            });
        }
        let inputs = vec![LctHandle::NULL; node.inputs.len()];
        let mut outputs = vec![LctHandle::NULL; node.outputs.len()];
        // SAFETY: arrays of the declared lengths; every pointer in `params` lives to the end.
        let status = unsafe {
            node_execute(
                node.index,
                params.as_ptr(),
                params.len(),
                inputs.as_ptr(),
                inputs.len(),
                std::ptr::null(),
                outputs.as_mut_ptr(),
                outputs.len(),
            )
        };
        let mut buffer = vec![0u8; 2048];
        // SAFETY: a 2048-byte buffer.
        let length = unsafe { last_error(buffer.as_mut_ptr().cast(), buffer.len()) };
        let message = String::from_utf8_lossy(&buffer[..length.min(2047)]).into_owned();
        assert_named_refusal(&format!("case {case} ({})", node.id), status, &message);
        if status == LctStatus::OK {
            assert_eq!(length, 0, "case {case}: an error message after success");
            for handle in outputs {
                // SAFETY: handles this call created.
                assert_eq!(unsafe { value_release(handle) }, LctStatus::OK);
            }
        }
        *statuses.entry(status.0).or_default() += 1;
    }
    println!("C table parameters: statuses {statuses:?}");
    assert!(
        statuses.len() > 3,
        "the cases never reached past the first check"
    );
}
