//! The user's files: reading images (PNG 8/16-bit, JPEG, EXR half/float), and writing new
//! files without ever replacing one or leaving one half-written.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use crate::color::{names, to_u8, ColorConfig, ColorSpace};
use crate::node::{NodeError, Params, WidgetDescriptor, WidgetSpec};
use crate::value::Frames;

/// The `config` widget of every node that converts colour.
pub(crate) const CONFIG_WIDGET: WidgetDescriptor = WidgetDescriptor {
    name: "config",
    tooltip: "OCIO config: a config.ocio path or an ocio:// URI (empty: the built-in ACES CG \
              config)",
    spec: WidgetSpec::String {
        default: "",
        multiline: false,
    },
};

/// The OCIO config a node's `config` widget names.
pub(crate) fn load_config(
    node: &'static str,
    params: &Params,
) -> Result<Arc<ColorConfig>, NodeError> {
    ColorConfig::load(params.text("config")?).map_err(|e| failed(node, e.to_string()))
}

/// How frames become 8-bit pixels for a person to look at: through a display and view of a
/// config (SaveFrames' PNGs and contact sheet, SaveVideo).
pub(crate) struct DisplayRender<'a> {
    pub node: &'static str,
    pub config: &'a ColorConfig,
    pub display: &'a str,
    pub view: &'a str,
}

impl DisplayRender<'_> {
    /// Frame `index` as 8-bit samples, the frames' channels kept (alpha untouched).
    pub fn frame_u8(&self, frames: &Frames, index: u32) -> Result<Vec<u8>, NodeError> {
        let mut samples = frames.frame(index).unwrap_or_default().to_vec();
        self.config
            .to_display(
                &mut samples,
                frames.channels() as usize,
                frames.color_space(),
                self.display,
                self.view,
            )
            .map_err(|e| failed(self.node, e.to_string()))?;
        Ok(samples.into_iter().map(to_u8).collect())
    }
}

/// Interleaved 8-bit RGB or RGBA as RGB.
pub(crate) fn rgb_only(samples: &[u8], channels: u32) -> Vec<u8> {
    samples
        .chunks_exact(channels as usize)
        .flat_map(|pixel| [pixel[0], pixel[1], pixel[2]])
        .collect()
}

pub(crate) fn io_error(node: &'static str, path: &Path, source: std::io::Error) -> NodeError {
    NodeError::Io {
        node,
        path: path.display().to_string(),
        source,
    }
}

pub(crate) fn failed(node: &'static str, message: impl Into<String>) -> NodeError {
    NodeError::Failed {
        node,
        message: message.into(),
    }
}

/// Rejects names that would leave the chosen folder.
pub(crate) fn check_plain_name(
    node: &'static str,
    widget: &str,
    name: &str,
) -> Result<(), NodeError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\']) {
        return Err(failed(
            node,
            format!("widget `{widget}` must be a plain name without slashes, got {name:?}"),
        ));
    }
    Ok(())
}

/// Creates `parent/name`, or `name-2`, `name-3`... if taken. `create_dir` (not `_all`) makes
/// the choice atomic, so two evaluations never write into the same folder.
pub(crate) fn create_fresh_folder(
    node: &'static str,
    parent: &Path,
    name: &str,
) -> Result<PathBuf, NodeError> {
    fs::create_dir_all(parent).map_err(|e| io_error(node, parent, e))?;
    for attempt in 1..=10_000u32 {
        let folder = if attempt == 1 {
            parent.join(name)
        } else {
            parent.join(format!("{name}-{attempt}"))
        };
        match fs::create_dir(&folder) {
            Ok(()) => return Ok(folder),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_error(node, &folder, e)),
        }
    }
    Err(failed(
        node,
        format!(
            "{}: 10000 entries named {name}-N already exist",
            parent.display()
        ),
    ))
}

/// Writes a new file at `path` (an existing file is an error, never replaced). The bytes go
/// to a hidden partial file first and appear under `path` only once complete, so a failure
/// leaves nothing behind.
pub(crate) fn write_new_file(
    node: &'static str,
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), String>,
) -> Result<(), NodeError> {
    if path.exists() {
        return Err(io_error(
            node,
            path,
            std::io::Error::new(
                ErrorKind::AlreadyExists,
                "the file exists; lct never replaces one",
            ),
        ));
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| failed(node, format!("{}: not a file path", path.display())))?;
    let partial = path.with_file_name(format!(
        ".{}.partial-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
            .map_err(|e| io_error(node, &partial, e))?;
        let mut writer = BufWriter::new(file);
        write(&mut writer)
            .map_err(|message| failed(node, format!("{}: {message}", path.display())))?;
        writer
            .flush()
            .and_then(|()| writer.get_ref().sync_all())
            .map_err(|e| io_error(node, path, e))?;
        // A hard link does not replace an existing file: the no-overwrite rule holds even if
        // another writer took the name meanwhile.
        fs::hard_link(&partial, path).map_err(|e| io_error(node, path, e))
    })();
    let _ = fs::remove_file(&partial);
    result
}

/// The path `folder/stem.extension`, or `stem-2.extension`... if taken.
pub(crate) fn fresh_file_path(folder: &Path, stem: &str, extension: &str) -> PathBuf {
    (1..)
        .map(|n| {
            if n == 1 {
                folder.join(format!("{stem}.{extension}"))
            } else {
                folder.join(format!("{stem}-{n}.{extension}"))
            }
        })
        .find(|p| !p.exists())
        .expect("an unused name")
}

/// The image formats LoadImage reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ImageFormat {
    Png,
    Jpeg,
    Exr,
}

impl ImageFormat {
    pub(crate) fn of(path: &Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "png" => Some(Self::Png),
            "jpg" | "jpeg" => Some(Self::Jpeg),
            "exr" => Some(Self::Exr),
            _ => None,
        }
    }
}

/// One decoded image: interleaved f32 samples, nominal 0..1 for integer formats.
pub(crate) struct Decoded {
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub samples: Vec<f32>,
    /// The colour space the file says it is in, if it says (EXR's `oiio:ColorSpace`).
    pub tagged_space: Option<String>,
}

/// The EXR attribute that names a file's colour space (as OpenImageIO writes it).
pub(crate) const EXR_COLOR_SPACE_ATTRIBUTE: &str = "oiio:ColorSpace";

pub(crate) fn read_image(node: &'static str, path: &Path) -> Result<Decoded, NodeError> {
    let format = ImageFormat::of(path).ok_or_else(|| {
        failed(
            node,
            format!(
                "{}: not a PNG, JPEG or EXR file name (.png, .jpg, .jpeg, .exr)",
                path.display()
            ),
        )
    })?;
    let metadata = fs::metadata(path).map_err(|e| io_error(node, path, e))?;
    if !metadata.is_file() {
        return Err(failed(node, format!("{}: not a file", path.display())));
    }
    if metadata.len() == 0 {
        return Err(failed(
            node,
            format!("{}: the file is empty (0 bytes)", path.display()),
        ));
    }
    match format {
        ImageFormat::Png | ImageFormat::Jpeg => read_raster(node, path),
        ImageFormat::Exr => read_exr(node, path),
    }
}

fn read_raster(node: &'static str, path: &Path) -> Result<Decoded, NodeError> {
    let unreadable = |e: image::ImageError| {
        failed(
            node,
            format!("{}: unreadable or truncated image: {e}", path.display()),
        )
    };
    let reader = image::ImageReader::open(path)
        .map_err(|e| io_error(node, path, e))?
        .with_guessed_format()
        .map_err(|e| io_error(node, path, e))?;
    let image = reader.decode().map_err(unreadable)?;
    let (width, height) = (image.width(), image.height());
    // Normalised to 0..1 from whatever depth the file has (8 or 16 bit).
    let (channels, samples) = if image.color().has_alpha() {
        (4, image.to_rgba32f().into_raw())
    } else {
        (3, image.to_rgb32f().into_raw())
    };
    Ok(Decoded {
        width,
        height,
        channels,
        samples,
        tagged_space: None,
    })
}

fn read_exr(node: &'static str, path: &Path) -> Result<Decoded, NodeError> {
    struct Pixels {
        width: usize,
        alpha: bool,
        samples: Vec<f32>,
    }
    let image = exr::prelude::read_first_rgba_layer_from_file(
        path,
        |resolution, channels: &exr::prelude::RgbaChannels| {
            let alpha = channels.3.is_some();
            let per_pixel = if alpha { 4 } else { 3 };
            Pixels {
                width: resolution.width(),
                alpha,
                samples: vec![0.0; resolution.width() * resolution.height() * per_pixel],
            }
        },
        |pixels: &mut Pixels, position, (r, g, b, a): (f32, f32, f32, f32)| {
            let per_pixel = if pixels.alpha { 4 } else { 3 };
            let start = (position.y() * pixels.width + position.x()) * per_pixel;
            pixels.samples[start..start + 3].copy_from_slice(&[r, g, b]);
            if pixels.alpha {
                pixels.samples[start + 3] = a;
            }
        },
    )
    .map_err(|e| {
        failed(
            node,
            format!("{}: unreadable or truncated EXR: {e}", path.display()),
        )
    })?;
    let layer = &image.layer_data;
    let tagged_space = layer
        .attributes
        .other
        .get(&exr::prelude::Text::from(EXR_COLOR_SPACE_ATTRIBUTE))
        .or_else(|| {
            image
                .attributes
                .other
                .get(&exr::prelude::Text::from(EXR_COLOR_SPACE_ATTRIBUTE))
        })
        .and_then(|value| match value {
            exr::meta::attribute::AttributeValue::Text(text) => Some(text.to_string()),
            _ => None,
        });
    let pixels = &layer.channel_data.pixels;
    Ok(Decoded {
        width: layer.size.width() as u32,
        height: layer.size.height() as u32,
        channels: if pixels.alpha { 4 } else { 3 },
        samples: pixels.samples.clone(),
        tagged_space,
    })
}

/// Writes 8-bit RGB or RGBA as PNG.
pub(crate) fn write_png(
    node: &'static str,
    path: &Path,
    pixels: &[u8],
    width: u32,
    height: u32,
    channels: u32,
) -> Result<(), NodeError> {
    let color = if channels == 4 {
        image::ExtendedColorType::Rgba8
    } else {
        image::ExtendedColorType::Rgb8
    };
    write_new_file(node, path, |writer| {
        image::write_buffer_with_format(
            writer,
            pixels,
            width,
            height,
            color,
            image::ImageFormat::Png,
        )
        .map_err(|e| e.to_string())
    })
}

/// CIE xy primaries and white point of the scene-linear spaces EXR headers can declare.
fn chromaticities(space: &ColorSpace) -> Option<exr::meta::attribute::Chromaticities> {
    use exr::math::Vec2;
    let xy = |values: [f32; 8]| exr::meta::attribute::Chromaticities {
        red: Vec2(values[0], values[1]),
        green: Vec2(values[2], values[3]),
        blue: Vec2(values[4], values[5]),
        white: Vec2(values[6], values[7]),
    };
    match space.name() {
        // ACES AP1 primaries, ACES white (about D60).
        names::ACESCG => Some(xy([
            0.713, 0.293, 0.165, 0.830, 0.128, 0.044, 0.32168, 0.33767,
        ])),
        // ACES AP0.
        "ACES2065-1" => Some(xy([
            0.7347, 0.2653, 0.0, 1.0, 0.0001, -0.077, 0.32168, 0.33767,
        ])),
        // Rec.709 / sRGB primaries, D65.
        names::LINEAR_REC709 | names::SRGB_TEXTURE => {
            Some(xy([0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290]))
        }
        _ => None,
    }
}

/// Writes float RGB or RGBA as an EXR, its colour space in the chromaticities (where they
/// describe it) and in the `oiio:ColorSpace` attribute.
pub(crate) fn write_exr(
    node: &'static str,
    path: &Path,
    samples: &[f32],
    width: u32,
    height: u32,
    channels: u32,
    space: &ColorSpace,
) -> Result<(), NodeError> {
    use exr::prelude::*;
    let (w, c) = (width as usize, channels as usize);
    let mut attributes = LayerAttributes::named("rgba");
    attributes.software_name = Some(Text::from("lct"));
    attributes.other.insert(
        Text::from(EXR_COLOR_SPACE_ATTRIBUTE),
        AttributeValue::Text(Text::from(space.name())),
    );
    let size = (w, height as usize);
    write_new_file(node, path, |writer| {
        let mut cursor = std::io::Cursor::new(Vec::new());
        if c == 4 {
            let layer = Layer::new(
                size,
                attributes,
                Encoding::SMALL_LOSSLESS,
                SpecificChannels::rgba(|p: Vec2<usize>| {
                    let i = (p.y() * w + p.x()) * 4;
                    (samples[i], samples[i + 1], samples[i + 2], samples[i + 3])
                }),
            );
            let mut image = Image::from_layer(layer);
            image.attributes.chromaticities = chromaticities(space);
            image
                .write()
                .to_buffered(&mut cursor)
                .map_err(|e| e.to_string())?;
        } else {
            let layer = Layer::new(
                size,
                attributes,
                Encoding::SMALL_LOSSLESS,
                SpecificChannels::rgb(|p: Vec2<usize>| {
                    let i = (p.y() * w + p.x()) * 3;
                    (samples[i], samples[i + 1], samples[i + 2])
                }),
            );
            let mut image = Image::from_layer(layer);
            image.attributes.chromaticities = chromaticities(space);
            image
                .write()
                .to_buffered(&mut cursor)
                .map_err(|e| e.to_string())?;
        }
        writer
            .write_all(cursor.get_ref())
            .map_err(|e| e.to_string())
    })
}
