//! SaveVideo's files read back by an independent decoder: `ffprobe` from FFmpeg (Debian's
//! `ffmpeg` package; CI installs it) reports codec, frame count, size and rate.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use lct_nodes::builtin::SaveVideo;
use lct_nodes::{run_node, ColorSpace, Frames, NodeError, ParamValue, Value};

/// `count` frames of a bright square moving right over a dark gradient.
fn moving_square(width: u32, height: u32, count: u32) -> Arc<Frames> {
    let mut samples = Vec::new();
    for t in 0..count {
        for y in 0..height {
            for x in 0..width {
                let inside = (4 + 3 * t..16 + 3 * t).contains(&x) && (8..20).contains(&y);
                let base = y as f32 / height as f32 * 0.3;
                samples.extend(if inside {
                    [0.9, 0.2, 0.1]
                } else {
                    [base, base, 0.4]
                });
            }
        }
    }
    Arc::new(Frames::new(width, height, 3, ColorSpace::srgb(), samples).unwrap())
}

fn save(frames: Arc<Frames>, out: &Path, format: &str) -> Result<PathBuf, NodeError> {
    let params = [
        ("format", ParamValue::Text(format.into())),
        ("fps", ParamValue::Float(12.0)),
    ];
    match run_node(
        &SaveVideo,
        &params,
        &[Some(Value::Frames(frames))],
        Some(out),
    )?
    .remove(0)
    {
        Value::String(path) => Ok(PathBuf::from(path.to_string())),
        other => panic!("SaveVideo gave {other:?}"),
    }
}

/// ffprobe's `key=value` report of the first video stream, frames counted by decoding.
fn probe(path: &Path) -> Vec<(String, String)> {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height,r_frame_rate,nb_read_frames",
            "-of",
            "default=noprint_wrappers=1",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs (install FFmpeg: apt-get install ffmpeg)");
    assert!(
        output.status.success(),
        "ffprobe rejected {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn field<'a>(report: &'a [(String, String)], key: &str) -> &'a str {
    report
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("ffprobe reported no {key}: {report:?}"))
}

#[test]
fn an_mp4_reads_back_as_h264_with_every_frame_at_its_size_and_rate() {
    let dir = tempfile::tempdir().unwrap();
    let path = save(moving_square(64, 48, 10), dir.path(), "mp4").unwrap();
    assert_eq!(path.extension().unwrap(), "mp4");
    let report = probe(&path);
    assert_eq!(field(&report, "codec_name"), "h264");
    assert_eq!(field(&report, "width"), "64");
    assert_eq!(field(&report, "height"), "48");
    assert_eq!(field(&report, "r_frame_rate"), "12/1");
    assert_eq!(field(&report, "nb_read_frames"), "10");
    // Never overwritten: the second file gets its own name.
    let second = save(moving_square(64, 48, 10), dir.path(), "mp4").unwrap();
    assert_ne!(second, path);
    assert!(path.exists() && second.exists());
}

#[test]
fn a_gif_reads_back_with_every_frame() {
    let dir = tempfile::tempdir().unwrap();
    let path = save(moving_square(40, 30, 6), dir.path(), "gif").unwrap();
    let report = probe(&path);
    assert_eq!(field(&report, "codec_name"), "gif");
    assert_eq!(field(&report, "width"), "40");
    assert_eq!(field(&report, "nb_read_frames"), "6");
}

#[test]
fn an_odd_size_mp4_is_refused_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let error = save(moving_square(63, 48, 2), dir.path(), "mp4")
        .unwrap_err()
        .to_string();
    assert!(error.contains("63x48"), "{error}");
    let video = dir.path().join("video");
    let left = std::fs::read_dir(&video).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "files left in {}", video.display());
}
