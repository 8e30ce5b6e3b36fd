//! SaveFrames: a PNG (display-referred) or EXR (scene-linear) sequence and a contact sheet
//! per scene, never overwriting a file.

use image::{imageops, RgbImage};

use super::files::{
    check_plain_name, create_fresh_folder, failed, load_config, rgb_only, write_exr, write_png,
    DisplayRender,
};
use crate::color::names;

use crate::node::{
    ConfigList, ExecContext, Inputs, Node, NodeDescriptor, NodeError, Params, PortDescriptor,
    WidgetDescriptor, WidgetSpec,
};
use crate::value::{Frames, Value, ValueKind};

pub struct SaveFrames;

static DESCRIPTOR: NodeDescriptor = NodeDescriptor {
    id: "SaveFrames",
    version: 1,
    display_name: "Save Frames",
    category: "lct/io",
    description: "Writes the frames as a PNG sequence (rendered for a display through a view \
                  transform) or an EXR sequence (float, in a scene-linear colour space named in \
                  the header), plus a PNG contact sheet, into a new folder `directory/name` \
                  (`name-2`, `name-3`... if it exists; nothing is ever overwritten). Outputs \
                  the folder written.",
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
            tooltip:
                "Parent folder inside the host's output folder (relative, no `..`; made if missing)",
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
            name: "format",
            tooltip: "png: 8-bit, display-referred through `display` / `view`; exr: 32-bit \
                      float in `exr_color_space`",
            spec: WidgetSpec::Enum {
                default: "png",
                choices: &["png", "exr"],
            },
        },
        WidgetDescriptor {
            name: "display",
            tooltip: "OCIO display the PNGs and the contact sheet are rendered for",
            spec: WidgetSpec::ConfigName {
                default: names::SRGB_DISPLAY,
                list: ConfigList::Displays,
            },
        },
        WidgetDescriptor {
            name: "view",
            tooltip: "OCIO view transform of the display (Un-tone-mapped keeps sRGB frames as \
                      they are; ACES 2.0 - SDR 100 nits (Rec.709) tone-maps scene-linear ones)",
            spec: WidgetSpec::ConfigName {
                default: names::UNTONEMAPPED_VIEW,
                list: ConfigList::Views,
            },
        },
        WidgetDescriptor {
            name: "exr_color_space",
            tooltip: "Colour space of the EXR samples (an OCIO name, alias or role)",
            spec: WidgetSpec::ConfigName {
                default: names::ACESCG,
                list: ConfigList::ColorSpaces,
            },
        },
        super::files::CONFIG_WIDGET,
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

/// The frames, already rendered for the display (`displayed[i]`: frame i, 8-bit, the frames'
/// channels), as thumbnails in `columns` per row.
fn contact_sheet(frames: &Frames, displayed: &[Vec<u8>], columns: u32) -> RgbImage {
    let (width, height) = (frames.width(), frames.height());
    let thumb_width = width.min(THUMBNAIL_WIDTH);
    let thumb_height = ((height as u64 * thumb_width as u64) / width as u64).max(1) as u32;
    let count = displayed.len() as u32;
    let columns = columns.min(count).max(1);
    let rows = count.div_ceil(columns);
    let mut sheet = RgbImage::from_pixel(
        columns * thumb_width + (columns + 1) * SHEET_GAP,
        rows * thumb_height + (rows + 1) * SHEET_GAP,
        image::Rgb(SHEET_BACKGROUND),
    );
    for (index, samples) in (0..count).zip(displayed) {
        let rgb = rgb_only(samples, frames.channels());
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
        let node = DESCRIPTOR.id;
        let frames = inputs.frames("frames")?;
        let name = params.text("name")?;
        check_plain_name(node, "name", name)?;
        let config = load_config(node, params)?;
        let render = DisplayRender {
            node,
            config: &config,
            display: params.text("display")?,
            view: params.text("view")?,
        };
        let exr_space = match params.text("format")? {
            "exr" => Some(
                config
                    .color_space(params.text("exr_color_space")?)
                    .map_err(|e| failed(node, format!("widget `exr_color_space`: {e}")))?,
            ),
            _ => None,
        };
        // Check the display and view before creating the folder.
        render.frame_u8(frames, 0)?;
        let parent = ctx.output_folder("directory", params.text("directory")?)?;
        let folder = create_fresh_folder(node, &parent, name)?;
        let count = frames.frame_count();
        // One extra step for the contact sheet, so progress reaches the total only when done.
        let total = count + 1;
        let (width, height, channels) = (frames.width(), frames.height(), frames.channels());
        let sheet = params.bool("contact_sheet")?;
        // Each frame is rendered for the display once, for its PNG and its thumbnail.
        let mut displayed = Vec::new();
        for index in 0..count {
            match &exr_space {
                Some(space) => {
                    let samples = frames
                        .samples_in(index, 1, space, &config)
                        .map_err(|e| failed(node, e.to_string()))?;
                    let path = folder.join(format!("frame_{index:04}.exr"));
                    write_exr(node, &path, &samples, width, height, channels, space)?;
                }
                None => {
                    let pixels = render.frame_u8(frames, index)?;
                    let path = folder.join(format!("frame_{index:04}.png"));
                    write_png(node, &path, &pixels, width, height, channels)?;
                    if sheet {
                        displayed.push(pixels);
                    }
                }
            }
            if sheet && exr_space.is_some() {
                displayed.push(render.frame_u8(frames, index)?);
            }
            ctx.progress(index + 1, total)?;
        }
        if sheet {
            let columns = params.int("columns")?.clamp(1, 64) as u32;
            let sheet = contact_sheet(frames, &displayed, columns);
            let path = folder.join("contact_sheet.png");
            write_png(
                node,
                &path,
                sheet.as_raw(),
                sheet.width(),
                sheet.height(),
                3,
            )?;
        }
        ctx.progress(total, total)?;
        Ok(vec![Value::String(folder.display().to_string().into())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::color::{to_u8, ColorSpace};
    use crate::node::ParamValue;
    use std::path::Path;
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
        Arc::new(Frames::new(4, 2, 3, ColorSpace::srgb(), samples).unwrap())
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
        // Samples at exactly half a code value (3/6) may round either way after the display
        // transform's f32 arithmetic; everything else is exact.
        let expected: Vec<u8> = frames()
            .frame(1)
            .unwrap()
            .iter()
            .map(|&s| to_u8(s))
            .collect();
        for (got, want) in decoded.as_raw().iter().zip(&expected) {
            assert!(
                got.abs_diff(*want) <= 1,
                "{:?} against {expected:?}",
                decoded.as_raw()
            );
        }
        let sheet = image::open(Path::new(&first).join("contact_sheet.png")).unwrap();
        // 2 columns x 2 rows of 4x2 thumbnails with 4 px gaps.
        assert_eq!(
            (sheet.width(), sheet.height()),
            (2 * 4 + 3 * 4, 2 * 2 + 3 * 4)
        );
    }
}
