//! The user's files through the real plugin: images loaded by LoadImage, converted, written
//! as EXR and MP4; each bad input a named error through the C boundary, with nothing
//! half-written left behind.

use std::path::Path;

use lct_host::Graph;
use lct_integration_tests::{evaluate_into, plugin};

/// LoadImage(path) -> ColorConvert(to ACEScg) -> SaveFrames(exr) and SaveVideo(mp4).
fn load_and_write(path: &Path) -> Graph {
    let mut graph = Graph::new();
    graph
        .add("load", "LoadImage")
        .param("path", path.display().to_string());
    graph
        .add("linear", "ColorConvert")
        .param("to", "ACEScg")
        .input("frames", "load", "frames");
    graph
        .add("exr", "SaveFrames")
        .param("format", "exr")
        .param("name", "plate")
        .input("frames", "linear", "frames");
    graph
        .add("video", "SaveVideo")
        .param("name", "plate")
        .input("frames", "linear", "frames");
    graph.output("exr");
    graph.output("video");
    graph
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(files_under(&path));
            } else {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[test]
fn a_png_sequence_becomes_an_exr_sequence_and_an_mp4() {
    let plugin = plugin();
    let dir = tempfile::tempdir().unwrap();
    for i in 0..4u32 {
        image::RgbImage::from_fn(32, 16, |x, y| {
            image::Rgb([(x * 8) as u8, (y * 16) as u8, (i * 60) as u8])
        })
        .save(dir.path().join(format!("plate_{i:02}.png")))
        .unwrap();
    }
    let out = dir.path().join("out");
    let evaluation = evaluate_into(
        &plugin,
        &load_and_write(&dir.path().join("plate_##.png")),
        &out,
    )
    .unwrap();
    let folder = evaluation
        .output("exr", "folder")
        .unwrap()
        .read_string()
        .unwrap();
    let video = evaluation
        .output("video", "path")
        .unwrap()
        .read_string()
        .unwrap();
    for i in 0..4 {
        assert!(Path::new(&folder)
            .join(format!("frame_{i:04}.exr"))
            .is_file());
    }
    assert!(
        video.ends_with(".mp4") && Path::new(&video).is_file(),
        "{video}"
    );
}

#[test]
fn bad_inputs_are_named_errors_and_leave_no_files() {
    let plugin = plugin();
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.png");
    image::RgbImage::from_pixel(16, 16, image::Rgb([10, 200, 30]))
        .save(&truncated)
        .unwrap();
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let empty = dir.path().join("empty.exr");
    std::fs::write(&empty, b"").unwrap();
    let out = dir.path().join("out");
    for (path, expected) in [
        (dir.path().join("missing.png"), "missing.png"),
        (truncated.clone(), "truncated.png"),
        (empty.clone(), "empty.exr"),
    ] {
        let error = evaluate_into(&plugin, &load_and_write(&path), &out).unwrap_err();
        assert!(
            error.contains("`load` (LoadImage)") && error.contains(expected),
            "{error}"
        );
    }
    // An unknown colour space names itself; a wrong size with fit `none` names both sizes.
    let fine = dir.path().join("fine.png");
    image::RgbImage::from_pixel(16, 12, image::Rgb([10, 200, 30]))
        .save(&fine)
        .unwrap();
    let mut graph = load_and_write(&fine);
    graph
        .node_mut("load")
        .unwrap()
        .param("color_space", "Kodak 2383");
    let error = evaluate_into(&plugin, &graph, &out).unwrap_err();
    assert!(
        error.contains("Kodak 2383") && error.contains("fine.png"),
        "{error}"
    );
    let mut graph = load_and_write(&fine);
    graph
        .node_mut("load")
        .unwrap()
        .param("fit", "none")
        .param("width", 8)
        .param("height", 8);
    let error = evaluate_into(&plugin, &graph, &out).unwrap_err();
    assert!(error.contains("16x12") && error.contains("8x8"), "{error}");
    assert_eq!(files_under(&out), Vec::<String>::new(), "nothing written");
}
