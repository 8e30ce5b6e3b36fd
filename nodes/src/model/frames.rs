//! EncodeFrames and DecodeFrames: between FRAMES (pixels, tagged with a colour space) and
//! LATENT (what the model works on). Frames are converted to the autoencoder's working colour
//! space (declared by the checkpoint) when encoded, and decoded frames are tagged with it.

use super::Backend;
use super::{engine_error, model_input, tensor_error};
use crate::color::{ColorConfig, ColorSpace};
use crate::model_values::{LatentValue, ShotLatent};
use crate::node::{
    ExecContext, Inputs, Node, NodeDescriptor, NodeError, Params, PortDescriptor, WidgetDescriptor,
    WidgetSpec,
};
use crate::value::{Frames, Value, ValueKind};
use candle_core::{Device, Tensor};
use std::sync::Arc;

/// Splits `frames` into shots of `per_shot` frames (0: one shot) and encodes each:
/// `[1, C, T, h, w]` latents.
pub(crate) fn encode(
    node: &'static str,
    backend: &Backend,
    frames: &Frames,
    per_shot: usize,
) -> Result<Vec<Tensor>, NodeError> {
    let [height, width] = backend.frame_size().map_err(engine_error(node))?;
    if (frames.height() as usize, frames.width() as usize) != (height, width) {
        return Err(NodeError::Failed {
            node,
            message: format!(
                "frames are {}x{} but the model works on {width}x{height}",
                frames.width(),
                frames.height()
            ),
        });
    }
    let count = frames.frame_count() as usize;
    let per_shot = if per_shot == 0 { count } else { per_shot };
    if !count.is_multiple_of(per_shot) {
        return Err(NodeError::Failed {
            node,
            message: format!("{count} frames do not split into shots of {per_shot}"),
        });
    }
    let channels = frames.channels() as usize;
    let (config, working) = working_space(node, backend)?;
    let mut out = Vec::with_capacity(count / per_shot);
    for shot in 0..count / per_shot {
        // [T, H, W, channels] interleaved -> [T, 3, H, W] sRGB-encoded.
        let mut planar = vec![0f32; per_shot * 3 * height * width];
        for t in 0..per_shot {
            let frame = frames
                .samples_in((shot * per_shot + t) as u32, 1, &working, &config)
                .map_err(|e| NodeError::Failed {
                    node,
                    message: e.to_string(),
                })?;
            for (pixel, sample) in frame.chunks_exact(channels).enumerate() {
                for c in 0..3 {
                    planar[(t * 3 + c) * height * width + pixel] = sample[c];
                }
            }
        }
        let tensor = Tensor::from_vec(planar, (per_shot, 3, height, width), &Device::Cpu)
            .map_err(tensor_error(node))?;
        out.push(backend.encode_frames(&tensor).map_err(engine_error(node))?);
    }
    Ok(out)
}

/// The model's working colour space, resolved in the built-in config.
pub(super) fn working_space(
    node: &'static str,
    backend: &Backend,
) -> Result<(Arc<ColorConfig>, ColorSpace), NodeError> {
    let config = ColorConfig::default_config();
    let name = backend.working_space().map_err(engine_error(node))?;
    let space = config.color_space(&name).map_err(|e| NodeError::Failed {
        node,
        message: format!("the checkpoint's working colour space: {e}"),
    })?;
    Ok((config, space))
}

pub struct EncodeFrames;

static ENCODE: NodeDescriptor = NodeDescriptor {
    id: "EncodeFrames",
    version: 1,
    display_name: "Encode Frames",
    category: "lct/latent",
    description: "Encodes frames into a LATENT of shots (for example footage to extend, or the \
                  first and last shot of an interpolation).",
    inputs: &[
        PortDescriptor::required(
            "model",
            ValueKind::Model,
            "The model whose autoencoder encodes",
        ),
        PortDescriptor::required(
            "frames",
            ValueKind::Frames,
            "Frames at the model's frame size",
        ),
    ],
    outputs: &[PortDescriptor::required(
        "latent",
        ValueKind::Latent,
        "One latent per shot",
    )],
    widgets: &[
        WidgetDescriptor {
            name: "frames_per_shot",
            tooltip: "Frames in each shot; 0 makes all frames one shot",
            spec: WidgetSpec::Int {
                default: 0,
                min: 0,
                max: 4096,
                step: 1,
            },
        },
        WidgetDescriptor {
            name: "prompt",
            tooltip: "What the shots show, used when they serve as history",
            spec: WidgetSpec::String {
                default: "",
                multiline: false,
            },
        },
    ],
    is_output: false,
    not_idempotent: false,
};

impl Node for EncodeFrames {
    fn descriptor(&self) -> &'static NodeDescriptor {
        &ENCODE
    }

    fn execute(
        &self,
        _ctx: &mut ExecContext<'_>,
        params: &Params,
        inputs: &Inputs<'_>,
    ) -> Result<Vec<Value>, NodeError> {
        let model = model_input(inputs, ENCODE.id)?;
        let frames = inputs.frames("frames")?;
        let per_shot = params.int("frames_per_shot")? as usize;
        let prompt = params.text("prompt")?.to_owned();
        let latents = encode(ENCODE.id, &model.backend, frames, per_shot)?;
        let shots = latents
            .into_iter()
            .enumerate()
            .map(|(i, latent)| {
                ShotLatent::new(prompt.clone(), latent, i).map_err(tensor_error(ENCODE.id))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(vec![Value::Latent(Arc::new(LatentValue::new(shots)))])
    }
}

pub struct DecodeFrames;

static DECODE: NodeDescriptor = NodeDescriptor {
    id: "DecodeFrames",
    version: 1,
    display_name: "Decode Frames",
    category: "lct/latent",
    description: "Decodes every shot of a LATENT into sRGB frames, shot after shot.",
    inputs: &[
        PortDescriptor::required(
            "model",
            ValueKind::Model,
            "The model whose autoencoder decodes",
        ),
        PortDescriptor::required("latent", ValueKind::Latent, "The shots to decode"),
    ],
    outputs: &[PortDescriptor::required(
        "frames",
        ValueKind::Frames,
        "All frames of all shots, in order",
    )],
    widgets: &[],
    is_output: false,
    not_idempotent: false,
};

impl Node for DecodeFrames {
    fn descriptor(&self) -> &'static NodeDescriptor {
        &DECODE
    }

    fn execute(
        &self,
        ctx: &mut ExecContext<'_>,
        _params: &Params,
        inputs: &Inputs<'_>,
    ) -> Result<Vec<Value>, NodeError> {
        let node = DECODE.id;
        let model = model_input(inputs, node)?;
        let Some(Value::Latent(latent)) = inputs.get("latent")? else {
            return Err(NodeError::Failed {
                node,
                message: "bug: LATENT port without a latent".into(),
            });
        };
        let backend = &model.backend;
        let mut samples = Vec::new();
        let (mut width, mut height) = (0, 0);
        let total = latent.shots.len() as u32;
        for (i, shot) in latent.shots.iter().enumerate() {
            let frames = backend.decode(&shot.latent).map_err(engine_error(node))?;
            let (t, _, h, w) = frames.dims4().map_err(tensor_error(node))?;
            (width, height) = (w, h);
            // [T, 3, H, W] -> interleaved [T, H, W, 3].
            let interleaved = frames
                .permute((0, 2, 3, 1))
                .and_then(|f| f.flatten_all())
                .and_then(|f| f.to_vec1::<f32>())
                .map_err(tensor_error(node))?;
            debug_assert_eq!(interleaved.len(), t * h * w * 3);
            samples.extend(interleaved);
            ctx.progress(i as u32 + 1, total)?;
        }
        let (_, working) = working_space(node, backend)?;
        let frames =
            Frames::new(width as u32, height as u32, 3, working, samples).map_err(|e| {
                NodeError::Failed {
                    node,
                    message: format!("the LATENT decodes to no frames: {e}"),
                }
            })?;
        Ok(vec![Value::Frames(Arc::new(frames))])
    }
}
