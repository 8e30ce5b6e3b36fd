//! Real files in and out: LoadImage and SaveFrames on PNG, JPEG and EXR written by the `image`
//! and `exr` crates, round trips, and each bad input's named error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lct_nodes::builtin::{LoadImage, SaveFrames};
use lct_nodes::{run_node, ColorSpace, Frames, NodeError, ParamValue, Value};

fn text(value: &str) -> ParamValue {
    ParamValue::Text(value.into())
}

fn load(path: &Path, extra: &[(&str, ParamValue)]) -> Result<Arc<Frames>, NodeError> {
    let mut params = vec![("path", text(path.to_str().unwrap()))];
    params.extend(extra.iter().cloned());
    match run_node(&LoadImage, &params, &[None], None)?.remove(0) {
        Value::Frames(frames) => Ok(frames),
        other => panic!("LoadImage gave {other:?}"),
    }
}

fn save(frames: Arc<Frames>, out: &Path, extra: &[(&str, ParamValue)]) -> PathBuf {
    let mut params = vec![("contact_sheet", ParamValue::Bool(false))];
    params.extend(extra.iter().cloned());
    match run_node(
        &SaveFrames,
        &params,
        &[Some(Value::Frames(frames))],
        Some(out),
    )
    .unwrap()
    .remove(0)
    {
        Value::String(folder) => PathBuf::from(folder.to_string()),
        other => panic!("SaveFrames gave {other:?}"),
    }
}

/// Every 8-bit value in each channel, in a 16 x 16 RGB image.
fn ramp_png(path: &Path) -> image::RgbImage {
    let image = image::RgbImage::from_fn(16, 16, |x, y| {
        let v = (y * 16 + x) as u8;
        image::Rgb([v, 255 - v, v.wrapping_mul(7)])
    });
    image.save(path).unwrap();
    image
}

#[test]
fn an_8_bit_srgb_png_comes_back_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("ramp.png");
    let original = ramp_png(&source);
    let frames = load(&source, &[]).unwrap();
    assert_eq!(frames.color_space(), &ColorSpace::srgb());
    assert_eq!(
        (frames.width(), frames.height(), frames.frame_count()),
        (16, 16, 1)
    );
    let folder = save(frames, dir.path(), &[]);
    let back = image::open(folder.join("frame_0000.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(back.as_raw(), original.as_raw());
}

#[test]
fn sixteen_bit_png_and_jpeg_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("deep.png");
    let pixels = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(4, 4, |x, y| {
        image::Rgb([(x * 16000) as u16, (y * 20000) as u16, 65535])
    });
    pixels.save(&deep).unwrap();
    let frames = load(&deep, &[]).unwrap();
    let first = frames.frame(0).unwrap();
    // (x, y) = (3, 3): 48000 / 65535 and 60000 / 65535, not 8-bit steps.
    let last = &first[first.len() - 3..];
    assert!((last[0] - 48000.0 / 65535.0).abs() < 1e-6, "{last:?}");
    assert!((last[1] - 60000.0 / 65535.0).abs() < 1e-6, "{last:?}");

    let jpeg = dir.path().join("photo.jpg");
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 40, 40]))
        .save(&jpeg)
        .unwrap();
    let frames = load(&jpeg, &[]).unwrap();
    assert_eq!(frames.color_space(), &ColorSpace::srgb());
    let red = frames.frame(0).unwrap()[0];
    assert!((red - 200.0 / 255.0).abs() < 4.0 / 255.0, "{red}");
}

#[test]
fn a_float_exr_comes_back_within_1e_6_and_keeps_its_colour_space() {
    use exr::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("plate.exr");
    let value =
        |x: usize, y: usize, c: usize| (x as f32 * 0.37 + y as f32 * 1.13 + c as f32) * 0.731;
    write_rgb_file(&source, 8, 6, |x, y| {
        (value(x, y, 0), value(x, y, 1), value(x, y, 2))
    })
    .unwrap();
    // An untagged EXR is read as scene-linear ACEScg.
    let frames = load(&source, &[]).unwrap();
    assert_eq!(frames.color_space(), &ColorSpace::acescg());
    let folder = save(frames, dir.path(), &[("format", text("exr"))]);
    let back = read_first_rgba_layer_from_file(
        folder.join("frame_0000.exr"),
        |resolution, _| vec![[0f32; 3]; resolution.width() * resolution.height()],
        |pixels, position, (r, g, b, _): (f32, f32, f32, f32)| {
            pixels[position.y() * 8 + position.x()] = [r, g, b];
        },
    )
    .unwrap();
    for y in 0..6 {
        for x in 0..8 {
            let got = back.layer_data.channel_data.pixels[y * 8 + x];
            for (c, &sample) in got.iter().enumerate() {
                assert!(
                    (sample - value(x, y, c)).abs() <= 1e-6 * value(x, y, c).abs().max(1.0),
                    "({x}, {y}) channel {c}: {sample} against {}",
                    value(x, y, c)
                );
            }
        }
    }
    // The colour space is in the header: read back, it is ACEScg again.
    let again = load(&folder.join("frame_0000.exr"), &[]).unwrap();
    assert_eq!(again.color_space(), &ColorSpace::acescg());
}

#[test]
fn a_numbered_sequence_loads_in_order() {
    let dir = tempfile::tempdir().unwrap();
    for i in [2u8, 0, 1] {
        image::RgbImage::from_pixel(4, 4, image::Rgb([i * 100, 0, 0]))
            .save(dir.path().join(format!("shot_{i:04}.png")))
            .unwrap();
    }
    let frames = load(&dir.path().join("shot_####.png"), &[]).unwrap();
    assert_eq!(frames.frame_count(), 3);
    let reds: Vec<f32> = (0..3).map(|i| frames.frame(i).unwrap()[0]).collect();
    assert_eq!(reds, [0.0, 100.0 / 255.0, 200.0 / 255.0]);
    let folder = load(dir.path(), &[]).unwrap();
    assert_eq!(folder.frame_count(), 3);
}

#[test]
fn fit_modes_reach_the_frame_size_and_none_names_both_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("wide.png");
    image::RgbImage::from_pixel(32, 16, image::Rgb([255, 255, 255]))
        .save(&source)
        .unwrap();
    let size = [
        ("width", ParamValue::Int(8)),
        ("height", ParamValue::Int(8)),
    ];
    for fit in ["fit", "fill", "stretch"] {
        let mut params = size.to_vec();
        params.push(("fit", text(fit)));
        let frames = load(&source, &params).unwrap();
        assert_eq!((frames.width(), frames.height()), (8, 8), "{fit}");
    }
    // `fit` keeps the aspect: black bars above and below the white band.
    let mut params = size.to_vec();
    params.push(("fit", text("fit")));
    let fitted = load(&source, &params).unwrap();
    assert_eq!(fitted.frame(0).unwrap()[0], 0.0);
    let mut params = size.to_vec();
    params.push(("fit", text("none")));
    let error = load(&source, &params).unwrap_err().to_string();
    assert!(error.contains("32x16") && error.contains("8x8"), "{error}");
    assert!(error.contains("wide.png"), "{error}");
}

#[test]
fn bad_files_each_give_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.png");
    let error = load(&missing, &[]).unwrap_err().to_string();
    assert!(error.contains("missing.png"), "{error}");

    let truncated = dir.path().join("truncated.png");
    ramp_png(&truncated);
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let error = load(&truncated, &[]).unwrap_err().to_string();
    assert!(error.contains("truncated.png"), "{error}");

    let empty = dir.path().join("empty.exr");
    std::fs::write(&empty, b"").unwrap();
    let error = load(&empty, &[]).unwrap_err().to_string();
    assert!(error.contains("empty.exr"), "{error}");

    let fine = dir.path().join("fine.png");
    ramp_png(&fine);
    let error = load(&fine, &[("color_space", text("Kodak 2383"))])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("Kodak 2383") && error.contains("fine.png"),
        "{error}"
    );
}
