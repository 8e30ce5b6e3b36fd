//! SaveFrames: a PNG sequence and a contact sheet per scene, never overwriting a file.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, ErrorKind};
use std::path::{Path, PathBuf};

use image::{imageops, ExtendedColorType, ImageFormat, RgbImage};

use crate::node::{
    ExecContext, Inputs, Node, NodeDescriptor, NodeError, Params, PortDescriptor, WidgetDescriptor,
    WidgetSpec,
};
use crate::value::{ColorSpace, Frames, Value, ValueKind};

pub struct SaveFrames;

static DESCRIPTOR: NodeDescriptor = NodeDescriptor {
    id: "SaveFrames",
    version: 1,
    display_name: "Save Frames",
    category: "lct/io",
    description: "Writes the frames as an sRGB PNG sequence plus a contact sheet into a new \
                  folder `directory/name` (`name-2`, `name-3`... if it exists; nothing is ever \
                  overwritten). Outputs the folder written.",
    inputs: &[PortDescriptor::required(
        "frames",
        ValueKind::Frames,
        "The frames to write",
    )],
    outputs: &[PortDescriptor::required(
        "folder",
        ValueKind::String,
        "The folder the PNGs were written to",
    )],
    widgets: &[
        WidgetDescriptor {
            name: "directory",
            tooltip: "Parent folder; relative paths start at the host's output directory",
            spec: WidgetSpec::String {
                default: "frames",
                multiline: false,
            },
        },
        WidgetDescriptor {
            name: "name",
            tooltip: "Folder name for this scene (a plain name, no slashes)",
            spec: WidgetSpec::String {
                default: "scene",
                multiline: false,
            },
        },
        WidgetDescriptor {
            name: "contact_sheet",
            tooltip: "Also write contact_sheet.png with every frame as a thumbnail",
            spec: WidgetSpec::Bool { default: true },
        },
        WidgetDescriptor {
            name: "columns",
            tooltip: "Thumbnails per row of the contact sheet",
            spec: WidgetSpec::Int {
                default: 4,
                min: 1,
                max: 64,
                step: 1,
            },
        },
    ],
    is_output: true,
    not_idempotent: false,
};

/// Widest thumbnail on a contact sheet.
const THUMBNAIL_WIDTH: u32 = 256;
const SHEET_GAP: u32 = 4;
const SHEET_BACKGROUND: [u8; 3] = [24, 24, 24];

fn io_error(path: &Path, source: std::io::Error) -> NodeError {
    NodeError::Io {
        node: DESCRIPTOR.id,
        path: path.display().to_string(),
        source,
    }
}

/// Creates `parent/name`, or `name-2`, `name-3`... if taken. `create_dir` (not `_all`) makes
/// the choice atomic, so two evaluations never write into the same folder.
fn create_fresh_folder(parent: &Path, name: &str) -> Result<PathBuf, NodeError> {
    fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    for attempt in 1..=10_000u32 {
        let folder = if attempt == 1 {
            parent.join(name)
        } else {
            parent.join(format!("{name}-{attempt}"))
        };
        match fs::create_dir(&folder) {
            Ok(()) => return Ok(folder),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_error(&folder, e)),
        }
    }
    Err(NodeError::Failed {
        node: DESCRIPTOR.id,
        message: format!(
            "{}: 10000 folders named {name}-N already exist",
            parent.display()
        ),
    })
}

fn write_png(
    path: &Path,
    pixels: &[u8],
    width: u32,
    height: u32,
    channels: u32,
) -> Result<(), NodeError> {
    // create_new: an existing file is an error, never silently replaced.
    let file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    let color = if channels == 4 {
        ExtendedColorType::Rgba8
    } else {
        ExtendedColorType::Rgb8
    };
    image::write_buffer_with_format(
        &mut BufWriter::new(file),
        pixels,
        width,
        height,
        color,
        ImageFormat::Png,
    )
    .map_err(|e| NodeError::Failed {
        node: DESCRIPTOR.id,
        message: format!("{}: {e}", path.display()),
    })
}

fn contact_sheet(frames: &Frames, columns: u32) -> RgbImage {
    let (width, height) = (frames.width(), frames.height());
    let thumb_width = width.min(THUMBNAIL_WIDTH);
    let thumb_height = ((height as u64 * thumb_width as u64) / width as u64).max(1) as u32;
    let count = frames.frame_count();
    let columns = columns.min(count);
    let rows = count.div_ceil(columns);
    let mut sheet = RgbImage::from_pixel(
        columns * thumb_width + (columns + 1) * SHEET_GAP,
        rows * thumb_height + (rows + 1) * SHEET_GAP,
        image::Rgb(SHEET_BACKGROUND),
    );
    for index in 0..count {
        let samples = frames.frame_u8(index, ColorSpace::Srgb).unwrap_or_default();
        let rgb: Vec<u8> = samples
            .chunks_exact(frames.channels() as usize)
            .flat_map(|pixel| [pixel[0], pixel[1], pixel[2]])
            .collect();
        let Some(frame) = RgbImage::from_raw(width, height, rgb) else {
            continue;
        };
        let thumb = imageops::thumbnail(&frame, thumb_width, thumb_height);
        let x = SHEET_GAP + (index % columns) * (thumb_width + SHEET_GAP);
        let y = SHEET_GAP + (index / columns) * (thumb_height + SHEET_GAP);
        imageops::replace(&mut sheet, &thumb, x as i64, y as i64);
    }
    sheet
}

impl Node for SaveFrames {
    fn descriptor(&self) -> &'static NodeDescriptor {
        &DESCRIPTOR
    }

    fn execute(
        &self,
        ctx: &mut ExecContext<'_>,
        params: &Params,
        inputs: &Inputs<'_>,
    ) -> Result<Vec<Value>, NodeError> {
        let frames = inputs.frames("frames")?;
        let name = params.text("name")?;
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\']) {
            return Err(NodeError::Failed {
                node: DESCRIPTOR.id,
                message: format!("widget `name` must be a plain folder name, got {name:?}"),
            });
        }
        let parent = ctx.output_directory().join(params.text("directory")?);
        let folder = create_fresh_folder(&parent, name)?;
        let count = frames.frame_count();
        // One extra step for the contact sheet, so progress reaches the total only when done.
        let total = count + 1;
        for index in 0..count {
            let pixels = frames.frame_u8(index, ColorSpace::Srgb).unwrap_or_default();
            let path = folder.join(format!("frame_{index:04}.png"));
            write_png(
                &path,
                &pixels,
                frames.width(),
                frames.height(),
                frames.channels(),
            )?;
            ctx.progress(index + 1, total)?;
        }
        if params.bool("contact_sheet")? {
            let columns = params.int("columns")?.clamp(1, 64) as u32;
            let sheet = contact_sheet(frames, columns);
            let path = folder.join("contact_sheet.png");
            write_png(&path, sheet.as_raw(), sheet.width(), sheet.height(), 3)?;
        }
        ctx.progress(total, total)?;
        Ok(vec![Value::String(folder.display().to_string().into())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::ParamValue;
    use std::sync::Arc;

    fn save(frames: Arc<Frames>, out: &Path) -> Result<String, NodeError> {
        let params = [("columns", ParamValue::Int(2))];
        let inputs = [Some(Value::Frames(frames))];
        match crate::run_node(&SaveFrames, &params, &inputs, Some(out))?.remove(0) {
            Value::String(folder) => Ok(folder.to_string()),
            other => panic!("expected a folder, got {other:?}"),
        }
    }

    fn frames() -> Arc<Frames> {
        let samples = (0..3 * 4 * 2 * 3).map(|i| (i % 7) as f32 / 6.0).collect();
        Arc::new(Frames::new(4, 2, 3, ColorSpace::Srgb, samples).unwrap())
    }

    #[test]
    fn writes_sequence_and_contact_sheet_without_overwriting() {
        let out = tempfile::tempdir().unwrap();
        let first = save(frames(), out.path()).unwrap();
        let second = save(frames(), out.path()).unwrap();
        assert!(first.ends_with("frames/scene"), "{first}");
        assert!(second.ends_with("frames/scene-2"), "{second}");
        for folder in [&first, &second] {
            for file in ["frame_0000.png", "frame_0002.png", "contact_sheet.png"] {
                assert!(Path::new(folder).join(file).is_file(), "{folder}/{file}");
            }
        }
        let decoded = image::open(Path::new(&first).join("frame_0001.png"))
            .unwrap()
            .to_rgb8();
        let expected = frames().frame_u8(1, ColorSpace::Srgb).unwrap();
        assert_eq!(decoded.as_raw(), &expected);
        let sheet = image::open(Path::new(&first).join("contact_sheet.png")).unwrap();
        // 2 columns x 2 rows of 4x2 thumbnails with 4 px gaps.
        assert_eq!(
            (sheet.width(), sheet.height()),
            (2 * 4 + 3 * 4, 2 * 2 + 3 * 4)
        );
    }
}
