//! SaveVideo: FRAMES as an H.264 MP4 (OpenH264 and an MP4 muxer) or an animated GIF, rendered
//! for a display through a view transform, never overwriting a file.

use std::io::Cursor;
use std::path::Path;

use super::files::{
    check_plain_name, failed, load_config, rgb_only, write_fresh_file, DisplayRender,
};
use crate::color::names;
use crate::node::{
    ConfigList, ExecContext, Inputs, Node, NodeDescriptor, NodeError, Params, PortDescriptor,
    WidgetDescriptor, WidgetSpec,
};
use crate::value::{Value, ValueKind};

pub struct SaveVideo;

static DESCRIPTOR: NodeDescriptor = NodeDescriptor {
    id: "SaveVideo",
    version: 1,
    display_name: "Save Video",
    category: "lct/io",
    description: "Writes the frames as an H.264 MP4 or an animated GIF at a frame rate, \
                  rendered for a display through a view transform, as `directory/name.mp4` \
                  (`name-2.mp4`... if it exists; nothing is ever overwritten). Outputs the \
                  file written.",
    inputs: &[PortDescriptor::required(
        "frames",
        ValueKind::Frames,
        "The frames to write, in order",
    )],
    outputs: &[PortDescriptor::required(
        "path",
        ValueKind::String,
        "The video file written",
    )],
    widgets: &[
        WidgetDescriptor {
            name: "directory",
            tooltip: "Folder inside the host's output folder (relative, no `..`; made if missing)",
            spec: WidgetSpec::String {
                default: "video",
                multiline: false,
            },
        },
        WidgetDescriptor {
            name: "name",
            tooltip: "File name without extension (a plain name, no slashes)",
            spec: WidgetSpec::String {
                default: "scene",
                multiline: false,
            },
        },
        WidgetDescriptor {
            name: "format",
            tooltip: "mp4 (H.264, even width and height) or gif",
            spec: WidgetSpec::Enum {
                default: "mp4",
                choices: &["mp4", "gif"],
            },
        },
        WidgetDescriptor {
            name: "fps",
            tooltip: "Frames per second",
            spec: WidgetSpec::Float {
                default: 8.0,
                min: 1.0,
                max: 120.0,
                step: 1.0,
            },
        },
        WidgetDescriptor {
            name: "display",
            tooltip: "OCIO display the video is rendered for",
            spec: WidgetSpec::ConfigName {
                default: names::SRGB_DISPLAY,
                list: ConfigList::Displays,
            },
        },
        WidgetDescriptor {
            name: "view",
            tooltip: "OCIO view transform of the display",
            spec: WidgetSpec::ConfigName {
                default: names::UNTONEMAPPED_VIEW,
                list: ConfigList::Views,
            },
        },
        super::files::CONFIG_WIDGET,
    ],
    is_output: true,
    not_idempotent: false,
};

/// Media timescale of the MP4 track: ticks per second.
const TIMESCALE: u32 = 90_000;

/// H.264 with OpenH264, muxed into MP4 (AVC sample entry, one sample per frame).
fn encode_mp4(rgb: &[Vec<u8>], width: u32, height: u32, fps: f64) -> Result<Vec<u8>, String> {
    use openh264::encoder::{Encoder, EncoderConfig, FrameRate};
    use openh264::formats::{RgbSliceU8, YUVBuffer};
    use openh264::OpenH264API;

    let config = EncoderConfig::new().max_frame_rate(FrameRate::from_hz(fps as f32));
    let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
        .map_err(|e| format!("H.264 encoder: {e}"))?;
    let (mut sps, mut pps) = (None, None);
    let mut samples = Vec::with_capacity(rgb.len());
    for frame in rgb {
        let yuv =
            YUVBuffer::from_rgb8_source(RgbSliceU8::new(frame, (width as usize, height as usize)));
        let stream = encoder
            .encode(&yuv)
            .map_err(|e| format!("H.264 encoder: {e}"))?;
        let annex_b = stream.to_vec();
        // MP4 stores NAL units length-prefixed, and the parameter sets in the sample entry.
        let mut sample = Vec::new();
        let mut sync = false;
        for nal in openh264::nal_units(&annex_b) {
            let start = nal
                .windows(3)
                .position(|w| w == [0, 0, 1])
                .map_or(0, |p| p + 3);
            let unit = &nal[start..];
            let Some(&header) = unit.first() else {
                continue;
            };
            match header & 0x1f {
                7 => sps = sps.or_else(|| Some(unit.to_vec())),
                8 => pps = pps.or_else(|| Some(unit.to_vec())),
                kind => {
                    sync |= kind == 5;
                    sample.extend_from_slice(&(unit.len() as u32).to_be_bytes());
                    sample.extend_from_slice(unit);
                }
            }
        }
        samples.push((sample, sync));
    }
    let (Some(sps), Some(pps)) = (sps, pps) else {
        return Err("the H.264 encoder wrote no parameter sets".into());
    };
    let mut writer = mp4::Mp4Writer::write_start(
        Cursor::new(Vec::new()),
        &mp4::Mp4Config {
            major_brand: str::parse("isom").expect("a brand"),
            minor_version: 512,
            compatible_brands: ["isom", "iso2", "avc1", "mp41"]
                .iter()
                .map(|b| str::parse(b).expect("a brand"))
                .collect(),
            timescale: 1000,
        },
    )
    .map_err(|e| format!("MP4: {e}"))?;
    writer
        .add_track(&mp4::TrackConfig {
            track_type: mp4::TrackType::Video,
            timescale: TIMESCALE,
            language: "und".into(),
            media_conf: mp4::MediaConfig::AvcConfig(mp4::AvcConfig {
                width: width as u16,
                height: height as u16,
                seq_param_set: sps,
                pic_param_set: pps,
            }),
        })
        .map_err(|e| format!("MP4: {e}"))?;
    let mut time = 0u64;
    for (index, (bytes, is_sync)) in samples.into_iter().enumerate() {
        // Exact frame boundaries in ticks, so durations add up to the clip length.
        let next = ((index as f64 + 1.0) * TIMESCALE as f64 / fps).round() as u64;
        writer
            .write_sample(
                1,
                &mp4::Mp4Sample {
                    start_time: time,
                    duration: (next - time) as u32,
                    rendering_offset: 0,
                    is_sync,
                    bytes: bytes.into(),
                },
            )
            .map_err(|e| format!("MP4: {e}"))?;
        time = next;
    }
    writer.write_end().map_err(|e| format!("MP4: {e}"))?;
    Ok(writer.into_writer().into_inner())
}

fn encode_gif(rgb: &[Vec<u8>], width: u32, height: u32, fps: f64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let mut encoder = gif::Encoder::new(&mut out, width as u16, height as u16, &[])
            .map_err(|e| format!("GIF: {e}"))?;
        encoder
            .set_repeat(gif::Repeat::Infinite)
            .map_err(|e| format!("GIF: {e}"))?;
        // GIF delays are in hundredths of a second.
        let delay = (100.0 / fps).round().clamp(1.0, u16::MAX as f64) as u16;
        for frame in rgb {
            let mut frame = gif::Frame::from_rgb_speed(width as u16, height as u16, frame, 10);
            frame.delay = delay;
            encoder
                .write_frame(&frame)
                .map_err(|e| format!("GIF: {e}"))?;
        }
    }
    Ok(out)
}

impl Node for SaveVideo {
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
        let format = params.text("format")?;
        let fps = params.float("fps")?;
        let (width, height) = (frames.width(), frames.height());
        if format == "mp4" && (width % 2 != 0 || height % 2 != 0) {
            return Err(failed(
                node,
                format!("H.264 needs an even width and height, the frames are {width}x{height}"),
            ));
        }
        // Both containers store the frame size in 16 bits.
        if width > u16::MAX as u32 || height > u16::MAX as u32 {
            return Err(failed(
                node,
                format!(
                    "{width}x{height} is too large for a{} {format}",
                    if format == "mp4" { "n" } else { "" }
                ),
            ));
        }
        let config = load_config(node, params)?;
        let render = DisplayRender {
            node,
            config: &config,
            display: params.text("display")?,
            view: params.text("view")?,
        };
        let rgb = (0..frames.frame_count())
            .map(|index| {
                Ok(rgb_only(
                    &render.frame_u8(frames, index)?,
                    frames.channels(),
                ))
            })
            .collect::<Result<Vec<_>, NodeError>>()?;
        ctx.progress(1, 3)?;
        let bytes = match format {
            "gif" => encode_gif(&rgb, width, height, fps),
            _ => encode_mp4(&rgb, width, height, fps),
        }
        .map_err(|message| failed(node, message))?;
        ctx.progress(2, 3)?;
        let folder = ctx.output_folder("directory", params.text("directory")?)?;
        let path = write_fresh_file(node, &folder, name, format, |writer| {
            std::io::Write::write_all(writer, &bytes).map_err(|e| e.to_string())
        })?;
        ctx.progress(3, 3)?;
        Ok(vec![Value::String(display_path(&path).into())])
    }
}

fn display_path(path: &Path) -> String {
    path.display().to_string()
}
