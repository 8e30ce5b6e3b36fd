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

/// `name`, then `name-N` for N from one past the highest taken (a single scan of the folder,
/// not a probe per taken name: a folder of thousands of scenes costs one `read_dir`).
/// `extension` (without the dot) follows the number for file names.
fn fresh_names<'a>(
    parent: &'a Path,
    name: &'a str,
    extension: Option<&'a str>,
) -> impl Iterator<Item = PathBuf> + 'a {
    let file_name = move |number: u64| {
        let stem = match number {
            1 => name.to_owned(),
            n => format!("{name}-{n}"),
        };
        match extension {
            Some(extension) => format!("{stem}.{extension}"),
            None => stem,
        }
    };
    let first = std::iter::once(parent.join(file_name(1)));
    // Scanned lazily: only when the plain name is taken.
    let numbered = std::iter::once(()).flat_map(move |()| {
        let highest = highest_number(parent, name, extension);
        (highest.max(1) + 1..).map(move |n| parent.join(file_name(n)))
    });
    first.chain(numbered)
}

/// The highest N of the entries `name-N[.extension]` in `parent` (0 if none).
fn highest_number(parent: &Path, name: &str, extension: Option<&str>) -> u64 {
    let Ok(entries) = fs::read_dir(parent) else {
        return 0;
    };
    let prefix = format!("{name}-");
    let suffix = extension.map(|e| format!(".{e}")).unwrap_or_default();
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let file_name = entry.file_name();
            let number = file_name
                .to_str()?
                .strip_prefix(&prefix)?
                .strip_suffix(suffix.as_str())?;
            // Only plain decimal numbers: `scene-02` or `scene-2b` are someone else's names.
            (!number.starts_with('0') && number.bytes().all(|b| b.is_ascii_digit()))
                .then(|| number.parse::<u64>().ok())
                .flatten()
        })
        .max()
        .unwrap_or(0)
}

/// Creates `parent/name`, or the next free `name-N`. `create_dir` (not `_all`) makes each
/// choice atomic: two evaluations never write into the same folder, and a name taken between
/// the scan and the attempt moves on to the next number.
pub(crate) fn create_fresh_folder(
    node: &'static str,
    parent: &Path,
    name: &str,
) -> Result<PathBuf, NodeError> {
    for folder in fresh_names(parent, name, None) {
        match fs::create_dir(&folder) {
            Ok(()) => return Ok(folder),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_error(node, &folder, e)),
        }
    }
    unreachable!("fresh_names never ends")
}

/// Writes the bytes `write` produces to a hidden partial file in `folder`, then gives it the
/// first name of `names` not taken, by hard link: a link never replaces an existing file, so
/// a name another writer took meanwhile is skipped, never overwritten, and a failure leaves
/// nothing behind. Returns the name given.
fn write_then_link(
    node: &'static str,
    folder: &Path,
    display_name: &str,
    mut names: impl Iterator<Item = PathBuf>,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), String>,
) -> Result<PathBuf, NodeError> {
    let partial = folder.join(format!(
        ".{display_name}.partial-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let result = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
            .map_err(|e| io_error(node, &partial, e))?;
        let mut writer = BufWriter::new(file);
        let target = folder.join(display_name);
        write(&mut writer)
            .map_err(|message| failed(node, format!("{}: {message}", target.display())))?;
        writer
            .flush()
            .and_then(|()| writer.get_ref().sync_all())
            .map_err(|e| io_error(node, &target, e))?;
        loop {
            let Some(path) = names.next() else {
                return Err(io_error(
                    node,
                    &target,
                    std::io::Error::new(
                        ErrorKind::AlreadyExists,
                        "the file exists; lct never replaces one",
                    ),
                ));
            };
            match fs::hard_link(&partial, &path) {
                Ok(()) => return Ok(path),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_error(node, &path, e)),
            }
        }
    })();
    let _ = fs::remove_file(&partial);
    result
}

/// Writes a new file at `path` (an existing file is an error, never replaced), complete or
/// not at all.
pub(crate) fn write_new_file(
    node: &'static str,
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), String>,
) -> Result<(), NodeError> {
    let (Some(folder), Some(file_name)) = (path.parent(), path.file_name()) else {
        return Err(failed(node, format!("{}: not a file path", path.display())));
    };
    let file_name = file_name.to_string_lossy();
    write_then_link(
        node,
        folder,
        &file_name,
        std::iter::once(path.to_path_buf()),
        write,
    )
    .map(drop)
}

/// Writes a new file `folder/stem.extension`, or the next free `stem-N.extension`; returns
/// the path written. Concurrent writers of the same name each get their own file.
pub(crate) fn write_fresh_file(
    node: &'static str,
    folder: &Path,
    stem: &str,
    extension: &str,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), String>,
) -> Result<PathBuf, NodeError> {
    write_then_link(
        node,
        folder,
        &format!("{stem}.{extension}"),
        fresh_names(folder, stem, Some(extension)),
        write,
    )
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

fn read_error(node: &'static str, error: lct_files::ReadError) -> NodeError {
    failed(node, error.to_string())
}

/// Decodes the image at `path` within lct's bounds: a regular file under the image size
/// limit, whose header declares at most [`lct_files::MAX_IMAGE_PIXELS`] pixels (checked before
/// any pixel buffer is allocated).
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
    let bytes =
        lct_files::read(path, lct_files::FileKind::Image).map_err(|e| read_error(node, e))?;
    if bytes.is_empty() {
        return Err(failed(
            node,
            format!("{}: the file is empty (0 bytes)", path.display()),
        ));
    }
    match format {
        ImageFormat::Png | ImageFormat::Jpeg => read_raster(node, path, &bytes),
        ImageFormat::Exr => read_exr(node, path, &bytes),
    }
}

fn read_raster(node: &'static str, path: &Path, bytes: &[u8]) -> Result<Decoded, NodeError> {
    let unreadable = |e: image::ImageError| {
        failed(
            node,
            format!("{}: unreadable or truncated image: {e}", path.display()),
        )
    };
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| io_error(node, path, e))
    };
    // The header alone first: a hostile size is refused before the decoder allocates.
    let (width, height) = reader()?.into_dimensions().map_err(unreadable)?;
    lct_files::check_image_size(path, width.into(), height.into())
        .map_err(|e| read_error(node, e))?;
    let mut reader = reader()?;
    let mut limits = image::Limits::default();
    // The decoder's own buffers: at most 16-bit RGBA of the budget's pixels.
    limits.max_alloc = Some(lct_files::MAX_IMAGE_PIXELS * 8);
    reader.limits(limits);
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

fn read_exr(node: &'static str, path: &Path, bytes: &[u8]) -> Result<Decoded, NodeError> {
    struct Pixels {
        width: usize,
        alpha: bool,
        samples: Vec<f32>,
    }
    let unreadable = |e: exr::error::Error| {
        failed(
            node,
            format!("{}: unreadable or truncated EXR: {e}", path.display()),
        )
    };
    // The headers alone first: every layer's size against the pixel budget.
    let meta = exr::meta::MetaData::read_from_buffered(std::io::Cursor::new(bytes), false)
        .map_err(unreadable)?;
    for header in &meta.headers {
        let size = header.layer_size;
        lct_files::check_image_size(path, size.width() as u64, size.height() as u64)
            .map_err(|e| read_error(node, e))?;
    }
    let image = read_first_rgba_layer(
        bytes,
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
    .map_err(unreadable)?;
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

/// exr's `read_first_rgba_layer_from_file`, from bytes already read within bounds.
fn read_first_rgba_layer<Set, Create, Pixels: 'static>(
    bytes: &[u8],
    create: Create,
    set_pixel: Set,
) -> exr::error::Result<exr::prelude::PixelImage<Pixels, exr::prelude::RgbaChannels>>
where
    Create: Fn(exr::math::Vec2<usize>, &exr::prelude::RgbaChannels) -> Pixels + 'static,
    Set: Fn(&mut Pixels, exr::math::Vec2<usize>, (f32, f32, f32, f32)) + 'static,
{
    use exr::prelude::{ReadChannels, ReadLayers};
    exr::prelude::read()
        .no_deep_data()
        .largest_resolution_level()
        .rgba_channels(create, set_pixel)
        .first_valid_layer()
        .all_attributes()
        .from_buffered(std::io::Cursor::new(bytes))
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
