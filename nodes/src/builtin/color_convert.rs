//! ColorConvert: FRAMES from their colour space to another, through an OCIO config.

use std::sync::Arc;

use super::files::failed;
use crate::node::{
    ConfigList, ExecContext, Inputs, Node, NodeDescriptor, NodeError, Params, PortDescriptor,
    WidgetDescriptor, WidgetSpec,
};
use crate::value::{Value, ValueKind};

pub struct ColorConvert;

static DESCRIPTOR: NodeDescriptor = NodeDescriptor {
    id: "ColorConvert",
    version: 1,
    display_name: "Color Convert",
    category: "lct/color",
    description: "Converts FRAMES from the colour space they are tagged with to another \
                  (OCIO names, aliases or roles), and tags them with it.",
    inputs: &[PortDescriptor::required(
        "frames",
        ValueKind::Frames,
        "The frames to convert",
    )],
    outputs: &[PortDescriptor::required(
        "frames",
        ValueKind::Frames,
        "The frames in the target colour space",
    )],
    widgets: &[
        WidgetDescriptor {
            name: "to",
            tooltip: "Target colour space: an OCIO name, alias or role (ACEScg, sRGB - Texture, \
                      scene_linear, ...)",
            spec: WidgetSpec::ConfigName {
                default: "ACEScg",
                list: ConfigList::ColorSpaces,
            },
        },
        super::files::CONFIG_WIDGET,
    ],
    is_output: false,
    not_idempotent: false,
};

impl Node for ColorConvert {
    fn descriptor(&self) -> &'static NodeDescriptor {
        &DESCRIPTOR
    }

    fn execute(
        &self,
        _ctx: &mut ExecContext<'_>,
        params: &Params,
        inputs: &Inputs<'_>,
    ) -> Result<Vec<Value>, NodeError> {
        let node = DESCRIPTOR.id;
        let frames = inputs.frames("frames")?;
        let config = super::files::load_config(node, params)?;
        let target = config
            .color_space(params.text("to")?)
            .map_err(|e| failed(node, format!("widget `to`: {e}")))?;
        let converted = frames
            .converted(&target, &config)
            .map_err(|e| failed(node, e.to_string()))?;
        Ok(vec![Value::Frames(Arc::new(converted))])
    }
}
