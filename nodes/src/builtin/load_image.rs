//! LoadImage: one image, a numbered sequence or a folder of images as FRAMES, tagged with
//! their colour space and fitted to the model's frame size.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::{imageops, ImageBuffer, Rgba};

use super::files::{failed, io_error, read_image, Decoded, ImageFormat};
use crate::color::names;
use crate::node::{
    ConfigList, ExecContext, Inputs, Node, NodeDescriptor, NodeError, Params, PortDescriptor,
    WidgetDescriptor, WidgetSpec,
};
use crate::value::{Frames, Value, ValueKind};

pub struct LoadImage;

static DESCRIPTOR: NodeDescriptor = NodeDescriptor {
    id: "LoadImage",
    version: 1,
    display_name: "Load Image",
    category: "lct/io",
    description: "Reads an image (PNG 8/16-bit, JPEG, EXR half/float), a numbered sequence \
                  (`shot_####.png`) or every image of a folder (sorted by name) as FRAMES, \
                  tagged with their colour space, and fits them to the model's frame size.",
    inputs: &[PortDescriptor::optional(
        "model",
        ValueKind::Model,
        "The model whose frame size the images are fitted to (else `width` x `height`)",
    )],
    outputs: &[PortDescriptor::required(
        "frames",
        ValueKind::Frames,
        "The images, one frame each",
    )],
    widgets: &[
        WidgetDescriptor {
            name: "path",
            tooltip: "An image file, a sequence pattern with # for the frame number \
                      (shot_####.exr), or a folder; relative paths start at the host's \
                      working directory",
            spec: WidgetSpec::String {
                default: "",
                multiline: false,
            },
        },
        WidgetDescriptor {
            name: "color_space",
            tooltip: "The files' colour space (an OCIO name, alias or role of the config); \
                      `auto`: sRGB - Texture for PNG and JPEG, the file's own tag or ACEScg \
                      for EXR",
            spec: WidgetSpec::ConfigName {
                default: "auto",
                list: ConfigList::ColorSpaces,
            },
        },
        WidgetDescriptor {
            name: "fit",
            tooltip: "To the frame size: `fit` inside with black bars, `fill` and crop, \
                      `stretch`, or `none` (a different size is an error)",
            spec: WidgetSpec::Enum {
                default: "fit",
                choices: &["fit", "fill", "stretch", "none"],
            },
        },
        WidgetDescriptor {
            name: "width",
            tooltip: "Frame width without a model (0: the image's own)",
            spec: WidgetSpec::Int {
                default: 0,
                min: 0,
                max: 16384,
                step: 1,
            },
        },
        WidgetDescriptor {
            name: "height",
            tooltip: "Frame height without a model (0: the image's own)",
            spec: WidgetSpec::Int {
                default: 0,
                min: 0,
                max: 16384,
                step: 1,
            },
        },
        super::files::CONFIG_WIDGET,
    ],
    is_output: false,
    // The files can change between evaluations.
    not_idempotent: true,
};

/// The files `path` names: itself, the matches of its `#` run, or a folder's images.
fn resolve_files(path: &Path) -> Result<Vec<PathBuf>, NodeError> {
    let node = DESCRIPTOR.id;
    if path.as_os_str().is_empty() {
        return Err(failed(
            node,
            "widget `path` is empty: name an image, a sequence or a folder",
        ));
    }
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| io_error(node, path, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && ImageFormat::of(p).is_some())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(failed(
                node,
                format!(
                    "{}: the folder holds no PNG, JPEG or EXR file",
                    path.display()
                ),
            ));
        }
        return Ok(files);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(start) = name.find('#') else {
        if !path.exists() {
            return Err(io_error(
                node,
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        return Ok(vec![path.to_path_buf()]);
    };
    let digits = name[start..].chars().take_while(|&c| c == '#').count();
    let (prefix, suffix) = (&name[..start], &name[start + digits..]);
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut numbered: Vec<(u64, PathBuf)> = std::fs::read_dir(&folder)
        .map_err(|e| io_error(node, &folder, e))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let file = entry.file_name().to_string_lossy().into_owned();
            let number = file.strip_prefix(prefix)?.strip_suffix(suffix)?;
            if number.len() < digits || !number.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            Some((number.parse().ok()?, entry.path()))
        })
        .collect();
    numbered.sort();
    if numbered.is_empty() {
        return Err(failed(
            node,
            format!("{}: no file matches the sequence pattern", path.display()),
        ));
    }
    Ok(numbered.into_iter().map(|(_, p)| p).collect())
}

/// Resizes interleaved samples to `width` x `height` by `fit` (bilinear, in the file's space).
fn fit_to(
    image: Decoded,
    width: u32,
    height: u32,
    fit: &str,
    file: &Path,
) -> Result<Decoded, NodeError> {
    if (image.width, image.height) == (width, height) {
        return Ok(image);
    }
    if fit == "none" {
        return Err(failed(
            DESCRIPTOR.id,
            format!(
                "{}: the image is {}x{} but frames must be {width}x{height} (widget `fit` is \
                 `none`; choose fit, fill or stretch to resize)",
                file.display(),
                image.width,
                image.height
            ),
        ));
    }
    let c = image.channels as usize;
    // RGBA f32 for the resampler; alpha 1 where the file has none.
    let rgba: Vec<f32> = image
        .samples
        .chunks_exact(c)
        .flat_map(|p| [p[0], p[1], p[2], if c == 4 { p[3] } else { 1.0 }])
        .collect();
    let source: ImageBuffer<Rgba<f32>, Vec<f32>> =
        ImageBuffer::from_raw(image.width, image.height, rgba).expect("sizes agree");
    let filter = imageops::FilterType::Triangle;
    let (sx, sy) = (
        width as f64 / image.width as f64,
        height as f64 / image.height as f64,
    );
    let resized = match fit {
        "stretch" => imageops::resize(&source, width, height, filter),
        "fill" => {
            let scale = sx.max(sy);
            let (w, h) = (
                ((image.width as f64 * scale).round() as u32).max(width),
                ((image.height as f64 * scale).round() as u32).max(height),
            );
            let big = imageops::resize(&source, w, h, filter);
            imageops::crop_imm(&big, (w - width) / 2, (h - height) / 2, width, height).to_image()
        }
        _ => {
            let scale = sx.min(sy);
            let (w, h) = (
                ((image.width as f64 * scale).round() as u32).clamp(1, width),
                ((image.height as f64 * scale).round() as u32).clamp(1, height),
            );
            let small = imageops::resize(&source, w, h, filter);
            let mut canvas = ImageBuffer::from_pixel(width, height, Rgba([0.0, 0.0, 0.0, 1.0]));
            imageops::replace(
                &mut canvas,
                &small,
                ((width - w) / 2) as i64,
                ((height - h) / 2) as i64,
            );
            canvas
        }
    };
    let samples = resized
        .pixels()
        .flat_map(|p| p.0.into_iter().take(c))
        .collect();
    Ok(Decoded {
        width,
        height,
        channels: image.channels,
        samples,
        tagged_space: image.tagged_space,
    })
}

impl Node for LoadImage {
    fn descriptor(&self) -> &'static NodeDescriptor {
        &DESCRIPTOR
    }

    fn execute(
        &self,
        ctx: &mut ExecContext<'_>,
        params: &Params,
        inputs: &Inputs<'_>,
    ) -> Result<Vec<Value>, NodeError> {
        let node = DESCRIPTOR.id;
        let config = super::files::load_config(node, params)?;
        let files = resolve_files(Path::new(params.text("path")?.trim()))?;
        let fit = params.text("fit")?;
        let target = match inputs.get("model")? {
            Some(Value::Model(model)) => {
                let [h, w] = model
                    .backend
                    .frame_size()
                    .map_err(crate::model::engine_error(node))?;
                Some((w as u32, h as u32))
            }
            _ => match (params.int("width")?, params.int("height")?) {
                (0, 0) => None,
                (w, h) if w > 0 && h > 0 => Some((w as u32, h as u32)),
                (w, h) => {
                    return Err(failed(
                        node,
                        format!(
                            "widgets `width` and `height` must both be set or both 0, got {w}x{h}"
                        ),
                    ))
                }
            },
        };
        let space_widget = params.text("color_space")?.trim().to_owned();
        let mut samples = Vec::new();
        let mut shape: Option<(u32, u32, u32)> = None;
        let mut space = None;
        let total = files.len() as u32;
        for (index, file) in files.iter().enumerate() {
            let image = read_image(node, file)?;
            let (w, h) = target.unwrap_or((image.width, image.height));
            let image = fit_to(image, w, h, fit, file)?;
            let name = if space_widget.eq_ignore_ascii_case("auto") || space_widget.is_empty() {
                match ImageFormat::of(file) {
                    Some(ImageFormat::Exr) => image
                        .tagged_space
                        .clone()
                        .unwrap_or_else(|| names::ACESCG.to_owned()),
                    _ => names::SRGB_TEXTURE.to_owned(),
                }
            } else {
                space_widget.clone()
            };
            let this_space = config
                .color_space(&name)
                .map_err(|e| failed(node, format!("{}: {e}", file.display())))?;
            match (&shape, &space) {
                (Some(s), _) if *s != (image.width, image.height, image.channels) => {
                    return Err(failed(
                        node,
                        format!(
                            "{}: {}x{} with {} channels, but the first file is {}x{} with {}",
                            file.display(),
                            image.width,
                            image.height,
                            image.channels,
                            s.0,
                            s.1,
                            s.2
                        ),
                    ))
                }
                (_, Some(first)) if *first != this_space => {
                    return Err(failed(
                        node,
                        format!(
                            "{}: tagged {this_space}, but the first file is {first}; load them \
                             separately or set `color_space`",
                            file.display()
                        ),
                    ))
                }
                _ => {}
            }
            shape = Some((image.width, image.height, image.channels));
            space = Some(this_space);
            samples.extend(image.samples);
            ctx.progress(index as u32 + 1, total)?;
        }
        let (width, height, channels) = shape.expect("at least one file");
        let frames = Frames::new(width, height, channels, space.expect("set"), samples)
            .map_err(|e| failed(node, e.to_string()))?;
        Ok(vec![Value::Frames(Arc::new(frames))])
    }
}
