//! SceneContext: the prompts and shot plan every shot of a scene shares.

use std::sync::Arc;

use crate::model::Backend;
use crate::node::{
    ExecContext, Inputs, Node, NodeDescriptor, NodeError, Params, PortDescriptor, WidgetDescriptor,
    WidgetSpec,
};
use crate::value::{Scene, Value, ValueKind};

pub struct SceneContext;

static DESCRIPTOR: NodeDescriptor = NodeDescriptor {
    id: "SceneContext",
    version: 1,
    display_name: "Scene Context",
    category: "lct/scene",
    description: "Collects the global prompt, the characters and one prompt per shot (one per \
                  line, or a JSON list of strings) into a SCENE, with optional reference frames.",
    inputs: &[
        PortDescriptor::optional(
            "identity",
            ValueKind::Frames,
            "Images of the character alone (LoadImage): every shot keeps its looks",
        ),
        PortDescriptor::optional(
            "environment",
            ValueKind::Frames,
            "Images of the place without characters: every shot keeps its sky, ground and light",
        ),
        PortDescriptor::optional(
            "reference",
            ValueKind::Frames,
            "Other reference images, shared by every shot without a caption",
        ),
        PortDescriptor::optional(
            "model",
            ValueKind::Model,
            "The model the scene is for: its prompts and images are checked here, so that \
             an unknown word or a wrong image size is reported on this node",
        ),
    ],
    outputs: &[PortDescriptor::required(
        "scene",
        ValueKind::Scene,
        "The scene: global prompt, characters, shot plan, references",
    )],
    widgets: &[
        WidgetDescriptor {
            name: "global_prompt",
            tooltip: "What every shot shares: environment, light, time of day, story, e.g. \
                      \"Environment: blue sky, green ground, low horizon, warm light, day. \
                      Story: Character 1 moves right.\" (the embedded model knows only its \
                      world's words; an unknown word is an error that lists them)",
            spec: WidgetSpec::String {
                default: "",
                multiline: true,
            },
        },
        WidgetDescriptor {
            name: "characters",
            tooltip: "One character per line (\"Character 1: large red circle, striped.\") or \
                      a JSON list",
            spec: WidgetSpec::String {
                default: "",
                multiline: true,
            },
        },
        WidgetDescriptor {
            name: "shots",
            tooltip: "One prompt per shot (\"[SHOT 1] wide shot of Character 1 moving right.\"), \
                      one per line or a JSON list of strings",
            spec: WidgetSpec::String {
                default: "",
                multiline: true,
            },
        },
    ],
    is_output: false,
    not_idempotent: false,
};

/// Splits a widget's text into entries: a JSON list of strings when it is a JSON list or
/// opens like a list of strings (`[` then `"` or `]`), otherwise one entry per non-empty line, so prompts that begin with a tag
/// such as `[SHOT 1]` stay lines.
fn parse_list(widget: &str, text: &str) -> Result<Vec<String>, NodeError> {
    let trimmed = text.trim();
    let opens_json_list = trimmed
        .strip_prefix('[')
        .is_some_and(|rest| rest.trim_start().starts_with(['"', ']']))
        || serde_json::from_str::<serde_json::Value>(trimmed).is_ok_and(|v| v.is_array());
    if opens_json_list {
        serde_json::from_str::<Vec<String>>(trimmed).map_err(|error| NodeError::Failed {
            node: DESCRIPTOR.id,
            message: format!(
                "widget `{widget}` looks like JSON but is not a list of strings: {error}"
            ),
        })
    } else {
        Ok(trimmed
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect())
    }
}

impl Node for SceneContext {
    fn descriptor(&self) -> &'static NodeDescriptor {
        &DESCRIPTOR
    }

    fn execute(
        &self,
        _ctx: &mut ExecContext<'_>,
        params: &Params,
        inputs: &Inputs<'_>,
    ) -> Result<Vec<Value>, NodeError> {
        let shots = parse_list("shots", params.text("shots")?)?;
        if shots.is_empty() {
            return Err(NodeError::Failed {
                node: DESCRIPTOR.id,
                message: "widget `shots` is empty: give one prompt per line or a JSON list".into(),
            });
        }
        let scene = Scene {
            global_prompt: params.text("global_prompt")?.trim().to_owned(),
            characters: parse_list("characters", params.text("characters")?)?,
            shots,
            identity: inputs.optional_frames("identity")?.cloned(),
            environment: inputs.optional_frames("environment")?.cloned(),
            references: inputs.optional_frames("reference")?.cloned(),
        };
        if let Some(Value::Model(model)) = inputs.get("model")? {
            check_for_model(&scene, &model.backend)?;
        }
        Ok(vec![Value::Scene(Arc::new(scene))])
    }
}

/// What the generating node would refuse, refused here where the user typed it: a word the
/// model does not know (naming the widget) and reference images of another size (naming the
/// input).
fn check_for_model(scene: &Scene, backend: &Backend) -> Result<(), NodeError> {
    let failed = |message: String| NodeError::Failed {
        node: DESCRIPTOR.id,
        message,
    };
    let global = crate::model::global_prompt(scene);
    backend
        .check_prompt(&global)
        .map_err(|e| failed(format!("widget `characters` or `global_prompt`: {e}")))?;
    for (index, shot) in scene.shots.iter().enumerate() {
        backend
            .check_prompt(shot)
            .map_err(|e| failed(format!("widget `shots`, shot {}: {e}", index + 1)))?;
    }
    let [height, width] = backend.frame_size().map_err(|e| failed(e.to_string()))?;
    for (port, frames) in [
        ("identity", &scene.identity),
        ("environment", &scene.environment),
        ("reference", &scene.references),
    ] {
        let Some(frames) = frames else { continue };
        if (frames.width() as usize, frames.height() as usize) != (width, height) {
            return Err(failed(format!(
                "input `{port}` is {}x{} but the model works on {width}x{height} frames \
                 (connect the model to LoadImage's `model` input to fit them)",
                frames.width(),
                frames.height()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::ParamValue;

    fn run(shots: &str) -> Result<Scene, NodeError> {
        let params = [
            (
                "global_prompt",
                ParamValue::Text("  a harbour at dawn ".into()),
            ),
            (
                "characters",
                ParamValue::Text("Mara: red coat\n\nIvo: fisherman".into()),
            ),
            ("shots", ParamValue::Text(shots.into())),
        ];
        match crate::run_node(&SceneContext, &params, &[None, None, None, None], None)?.remove(0) {
            Value::Scene(scene) => Ok((*scene).clone()),
            other => panic!("expected a scene, got {other:?}"),
        }
    }

    #[test]
    fn shots_split_on_lines_or_json() {
        let scene = run("Wide shot of the harbour.\n\n  Mara walks in.  \n").unwrap();
        assert_eq!(scene.shots, ["Wide shot of the harbour.", "Mara walks in."]);
        assert_eq!(scene.global_prompt, "a harbour at dawn");
        assert_eq!(scene.characters, ["Mara: red coat", "Ivo: fisherman"]);
        let scene = run(r#"["one, with a\nnewline", "two"]"#).unwrap();
        assert_eq!(scene.shots, ["one, with a\nnewline", "two"]);
    }

    #[test]
    fn tagged_prompts_one_per_line_are_not_json() {
        let scene =
            run("[SHOT 1] wide shot of Character 1.\n[SHOT 2] close-up of Character 1.").unwrap();
        assert_eq!(
            scene.shots,
            [
                "[SHOT 1] wide shot of Character 1.",
                "[SHOT 2] close-up of Character 1."
            ]
        );
    }

    #[test]
    fn empty_or_malformed_shots_are_errors() {
        assert!(run("  \n ")
            .unwrap_err()
            .to_string()
            .contains("`shots` is empty"));
        assert!(run("[1, 2]")
            .unwrap_err()
            .to_string()
            .contains("not a list of strings"));
    }
}
