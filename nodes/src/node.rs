//! The node trait and its schema: static descriptors, validated parameters, typed inputs and the
//! execution context that carries progress and abort.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lct_abi::widget::{check_param, ParamRuleError, WidgetRule};

use crate::value::{Frames, Scene, Value, ValueKind};

/// A parameter value as supplied by a host: lct-abi's, so plugin and hosts share one type.
pub use lct_abi::widget::ParamValue;

/// Static description of a node type, readable before any instance exists.
#[derive(Debug)]
pub struct NodeDescriptor {
    /// CamelCase, stable ("SceneContext").
    pub id: &'static str,
    /// Bump when results change for the same inputs; it is part of every cache signature.
    pub version: u32,
    pub display_name: &'static str,
    /// Slash path for menus ("lct/scene").
    pub category: &'static str,
    pub description: &'static str,
    pub inputs: &'static [PortDescriptor],
    pub outputs: &'static [PortDescriptor],
    pub widgets: &'static [WidgetDescriptor],
    /// Writes files or shows results; evaluated when a graph names no targets.
    pub is_output: bool,
    /// Same inputs may give different results: never cached.
    pub not_idempotent: bool,
}

#[derive(Debug)]
pub struct PortDescriptor {
    pub name: &'static str,
    pub kind: ValueKind,
    pub optional: bool,
    pub tooltip: &'static str,
}

impl PortDescriptor {
    pub const fn required(name: &'static str, kind: ValueKind, tooltip: &'static str) -> Self {
        Self {
            name,
            kind,
            optional: false,
            tooltip,
        }
    }
    pub const fn optional(name: &'static str, kind: ValueKind, tooltip: &'static str) -> Self {
        Self {
            name,
            kind,
            optional: true,
            tooltip,
        }
    }
}

#[derive(Debug)]
pub struct WidgetDescriptor {
    pub name: &'static str,
    pub tooltip: &'static str,
    pub spec: WidgetSpec,
}

/// Kind, default and limits of a widget.
#[derive(Debug)]
pub enum WidgetSpec {
    Int {
        default: i64,
        min: i64,
        max: i64,
        step: i64,
    },
    Float {
        default: f64,
        min: f64,
        max: f64,
        step: f64,
    },
    Bool {
        default: bool,
    },
    String {
        default: &'static str,
        multiline: bool,
    },
    Enum {
        default: &'static str,
        choices: &'static [&'static str],
    },
    /// A STRING naming something in an OCIO config (a colour space, display or view). Any
    /// text is accepted, since the node's `config` may be another config; hosts offer the
    /// built-in config's names as a list ([`ConfigList::names`]).
    ConfigName {
        default: &'static str,
        list: ConfigList,
    },
}

/// Which names of the OCIO config a [`WidgetSpec::ConfigName`] widget offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigList {
    ColorSpaces,
    Displays,
    Views,
}

impl WidgetSpec {
    pub fn kind(&self) -> ValueKind {
        match self {
            Self::Int { .. } => ValueKind::Int,
            Self::Float { .. } => ValueKind::Float,
            Self::Bool { .. } => ValueKind::Bool,
            Self::String { .. } | Self::ConfigName { .. } => ValueKind::String,
            Self::Enum { .. } => ValueKind::Enum,
        }
    }

    /// The rule lct-abi checks values against: the same one hosts apply before running a graph.
    pub fn rule(&self) -> WidgetRule<'static> {
        match *self {
            Self::Int { min, max, .. } => WidgetRule::Int { min, max },
            Self::Float { min, max, .. } => WidgetRule::Float { min, max },
            Self::Bool { .. } => WidgetRule::Bool,
            Self::String { .. } | Self::ConfigName { .. } => WidgetRule::Text,
            Self::Enum { choices, .. } => WidgetRule::Choices(choices),
        }
    }

    fn default_value(&self) -> ParamValue {
        match self {
            Self::Int { default, .. } => ParamValue::Int(*default),
            Self::Float { default, .. } => ParamValue::Float(*default),
            Self::Bool { default } => ParamValue::Bool(*default),
            Self::String { default, .. }
            | Self::Enum { default, .. }
            | Self::ConfigName { default, .. } => ParamValue::Text((*default).to_owned()),
        }
    }
}

/// Why a node could not run, or failed while running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error("{node}: no widget named `{widget}` (widgets: {available})")]
    UnknownWidget {
        node: &'static str,
        widget: String,
        available: String,
    },
    #[error("{node}: widget `{widget}` is {expected}, got a {found} value")]
    WidgetKind {
        node: &'static str,
        widget: &'static str,
        expected: ValueKind,
        found: &'static str,
    },
    #[error("{node}: widget `{widget}` is {value}, outside {min}..={max}")]
    OutOfRange {
        node: &'static str,
        widget: &'static str,
        value: String,
        min: String,
        max: String,
    },
    #[error("{node}: widget `{widget}` is {value:?}, not one of {choices:?}")]
    NotAChoice {
        node: &'static str,
        widget: &'static str,
        value: String,
        choices: &'static [&'static str],
    },
    #[error("{node}: widget `{widget}` was given twice")]
    DuplicateWidget {
        node: &'static str,
        widget: &'static str,
    },
    #[error("{node}: required input `{port}` ({kind}) is not connected")]
    MissingInput {
        node: &'static str,
        port: &'static str,
        kind: ValueKind,
    },
    #[error("{node}: input `{port}` expects {expected}, got {found}")]
    InputKind {
        node: &'static str,
        port: &'static str,
        expected: ValueKind,
        found: ValueKind,
    },
    #[error("{node}: expected {expected} inputs, got {found}")]
    InputCount {
        node: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("{node}: cancelled at step {step} of {total}")]
    Cancelled {
        node: &'static str,
        step: u32,
        total: u32,
    },
    #[error("{node}: {path}: {source}")]
    Io {
        node: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{node}: {message}")]
    Failed { node: &'static str, message: String },
}

/// Parameters after validation against a descriptor: every widget present, in widget order,
/// with the right kind and within range.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    node: &'static str,
    values: Vec<(&'static str, ParamValue)>,
}

impl Params {
    /// Checks `given` against the widgets of `descriptor` and fills in defaults.
    pub fn resolve<'a>(
        descriptor: &'static NodeDescriptor,
        given: impl IntoIterator<Item = (&'a str, ParamValue)>,
    ) -> Result<Self, NodeError> {
        let node = descriptor.id;
        let mut values: Vec<(&'static str, Option<ParamValue>)> =
            descriptor.widgets.iter().map(|w| (w.name, None)).collect();
        for (name, value) in given {
            let Some(index) = descriptor.widgets.iter().position(|w| w.name == name) else {
                return Err(NodeError::UnknownWidget {
                    node,
                    widget: name.to_owned(),
                    available: descriptor
                        .widgets
                        .iter()
                        .map(|w| w.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            let widget = &descriptor.widgets[index];
            if values[index].1.is_some() {
                return Err(NodeError::DuplicateWidget {
                    node,
                    widget: widget.name,
                });
            }
            values[index].1 = Some(check_widget(node, widget, value)?);
        }
        let values = values
            .into_iter()
            .zip(descriptor.widgets)
            .map(|((name, value), widget)| {
                (name, value.unwrap_or_else(|| widget.spec.default_value()))
            })
            .collect();
        Ok(Self { node, values })
    }

    fn get(&self, name: &str) -> Result<&ParamValue, NodeError> {
        self.values
            .iter()
            .find(|(widget, _)| *widget == name)
            .map(|(_, value)| value)
            .ok_or_else(|| NodeError::Failed {
                node: self.node,
                message: format!("bug: the node reads widget `{name}` it does not declare"),
            })
    }

    fn wrong_kind(&self, name: &str, wanted: &str) -> NodeError {
        NodeError::Failed {
            node: self.node,
            message: format!("bug: the node reads widget `{name}` as {wanted}"),
        }
    }

    pub fn int(&self, name: &str) -> Result<i64, NodeError> {
        match self.get(name)? {
            ParamValue::Int(value) => Ok(*value),
            _ => Err(self.wrong_kind(name, "INT")),
        }
    }
    pub fn float(&self, name: &str) -> Result<f64, NodeError> {
        match self.get(name)? {
            ParamValue::Float(value) => Ok(*value),
            _ => Err(self.wrong_kind(name, "FLOAT")),
        }
    }
    pub fn bool(&self, name: &str) -> Result<bool, NodeError> {
        match self.get(name)? {
            ParamValue::Bool(value) => Ok(*value),
            _ => Err(self.wrong_kind(name, "BOOL")),
        }
    }
    /// A STRING or ENUM widget.
    pub fn text(&self, name: &str) -> Result<&str, NodeError> {
        match self.get(name)? {
            ParamValue::Text(value) => Ok(value),
            _ => Err(self.wrong_kind(name, "STRING")),
        }
    }
}

fn check_widget(
    node: &'static str,
    widget: &'static WidgetDescriptor,
    value: ParamValue,
) -> Result<ParamValue, NodeError> {
    check_param(&widget.spec.rule(), value).map_err(|error| match error {
        ParamRuleError::WrongKind { found, .. } => NodeError::WidgetKind {
            node,
            widget: widget.name,
            expected: widget.spec.kind(),
            found,
        },
        ParamRuleError::OutOfRange { value, min, max } => NodeError::OutOfRange {
            node,
            widget: widget.name,
            value,
            min,
            max,
        },
        ParamRuleError::NotAChoice { value } => NodeError::NotAChoice {
            node,
            widget: widget.name,
            value,
            choices: match widget.spec {
                WidgetSpec::Enum { choices, .. } => choices,
                _ => &[],
            },
        },
    })
}

/// The values on a node's input ports, already checked for kind and presence.
pub struct Inputs<'a> {
    descriptor: &'static NodeDescriptor,
    values: &'a [Option<Value>],
}

impl<'a> Inputs<'a> {
    /// Checks count, presence of required ports and kinds.
    pub fn new(
        descriptor: &'static NodeDescriptor,
        values: &'a [Option<Value>],
    ) -> Result<Self, NodeError> {
        let node = descriptor.id;
        if values.len() != descriptor.inputs.len() {
            return Err(NodeError::InputCount {
                node,
                expected: descriptor.inputs.len(),
                found: values.len(),
            });
        }
        for (port, value) in descriptor.inputs.iter().zip(values) {
            match value {
                None if !port.optional => {
                    return Err(NodeError::MissingInput {
                        node,
                        port: port.name,
                        kind: port.kind,
                    })
                }
                Some(value) if value.kind() != port.kind => {
                    return Err(NodeError::InputKind {
                        node,
                        port: port.name,
                        expected: port.kind,
                        found: value.kind(),
                    })
                }
                _ => {}
            }
        }
        Ok(Self { descriptor, values })
    }

    /// The value on port `name`, `None` when an optional port is unconnected.
    pub fn get(&self, name: &str) -> Result<Option<&'a Value>, NodeError> {
        let index = self
            .descriptor
            .inputs
            .iter()
            .position(|port| port.name == name)
            .ok_or_else(|| NodeError::Failed {
                node: self.descriptor.id,
                message: format!("bug: the node reads input `{name}` it does not declare"),
            })?;
        Ok(self.values[index].as_ref())
    }

    fn required(&self, name: &str) -> Result<&'a Value, NodeError> {
        self.get(name)?.ok_or_else(|| NodeError::Failed {
            node: self.descriptor.id,
            message: format!("bug: input `{name}` read as required but it is optional"),
        })
    }

    fn kind_bug(&self, name: &str, wanted: ValueKind) -> NodeError {
        NodeError::Failed {
            node: self.descriptor.id,
            message: format!("bug: input `{name}` read as {wanted}"),
        }
    }

    pub fn frames(&self, name: &str) -> Result<&'a Arc<Frames>, NodeError> {
        match self.required(name)? {
            Value::Frames(frames) => Ok(frames),
            _ => Err(self.kind_bug(name, ValueKind::Frames)),
        }
    }

    pub fn optional_frames(&self, name: &str) -> Result<Option<&'a Arc<Frames>>, NodeError> {
        match self.get(name)? {
            None => Ok(None),
            Some(Value::Frames(frames)) => Ok(Some(frames)),
            Some(_) => Err(self.kind_bug(name, ValueKind::Frames)),
        }
    }

    pub fn scene(&self, name: &str) -> Result<&'a Arc<Scene>, NodeError> {
        match self.required(name)? {
            Value::Scene(scene) => Ok(scene),
            _ => Err(self.kind_bug(name, ValueKind::Scene)),
        }
    }
}

/// A look at a node's result while it runs: 8-bit RGB rendered for the sRGB display, one
/// frame per shot being generated, frame-major, rows top to bottom, no padding.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    pub width: u32,
    pub height: u32,
    pub frame_count: u32,
    pub rgb: Vec<u8>,
}

/// Where previews go: `(step, total, preview)`, returning `false` to ask the node to stop.
pub type PreviewSink<'a> = &'a mut dyn FnMut(u32, u32, &Preview) -> bool;

/// What a running node may ask of its caller: report progress (and learn it should stop),
/// hand over previews when the caller takes them, and where relative output paths go.
pub struct ExecContext<'a> {
    node: &'static str,
    progress: &'a mut dyn FnMut(u32, u32) -> bool,
    preview: Option<PreviewSink<'a>>,
    output_directory: Option<&'a Path>,
}

impl<'a> ExecContext<'a> {
    /// `progress(step, total)` returns `false` to ask the node to stop.
    pub fn new(
        node: &'static str,
        progress: &'a mut dyn FnMut(u32, u32) -> bool,
        output_directory: Option<&'a Path>,
    ) -> Self {
        Self {
            node,
            progress,
            preview: None,
            output_directory,
        }
    }

    /// The caller takes previews: nodes that make them call `sink` (see [`Self::preview`]).
    pub fn with_preview(mut self, sink: PreviewSink<'a>) -> Self {
        self.preview = Some(sink);
        self
    }

    /// Reports that `step` of `total` steps is done; `Err(Cancelled)` when the host asked to
    /// stop. Long loops call it every step and return the error at once.
    pub fn progress(&mut self, step: u32, total: u32) -> Result<(), NodeError> {
        let proceed = (self.progress)(step, total);
        self.go_on(proceed, step, total)
    }

    /// Whether anyone takes previews; nodes skip the work of making one when not.
    pub fn wants_preview(&self) -> bool {
        self.preview.is_some()
    }

    /// Hands `preview` (made at `step` of `total`) to the caller; `Err(Cancelled)` when the
    /// caller asked to stop.
    pub fn preview(&mut self, step: u32, total: u32, preview: &Preview) -> Result<(), NodeError> {
        let proceed = match self.preview.as_mut() {
            Some(sink) => sink(step, total, preview),
            None => true,
        };
        self.go_on(proceed, step, total)
    }

    fn go_on(&self, proceed: bool, step: u32, total: u32) -> Result<(), NodeError> {
        if proceed {
            Ok(())
        } else {
            Err(NodeError::Cancelled {
                node: self.node,
                step,
                total,
            })
        }
    }

    /// The folder a writing node's `widget` names, made if missing, inside the host's output
    /// root (the current directory when the host gave none). The only way a node learns
    /// where to write: every path goes through [`crate::output_root::folder_inside`].
    pub fn output_folder(&self, widget: &str, directory: &str) -> Result<PathBuf, NodeError> {
        let root = self.output_directory.unwrap_or(Path::new("."));
        crate::output_root::folder_inside(root, directory).map_err(|error| NodeError::Failed {
            node: self.node,
            message: format!("widget `{widget}`: {error}"),
        })
    }
}

/// A node type. Close to a plain function: static schema in, values out, no graph knowledge.
pub trait Node: Send + Sync {
    fn descriptor(&self) -> &'static NodeDescriptor;

    /// Runs the node. `params` and `inputs` are already validated against the descriptor. Must
    /// return one value per output port, of the declared kinds.
    fn execute(
        &self,
        ctx: &mut ExecContext<'_>,
        params: &Params,
        inputs: &Inputs<'_>,
    ) -> Result<Vec<Value>, NodeError>;

    /// What this node depends on in the value on input `port`, as a hash. The default is the
    /// whole value; narrow it to avoid re-running when parts the node ignores change.
    fn input_signature(&self, params: &Params, port: usize, value: &Value) -> u64 {
        let _ = (params, port);
        value.content_hash()
    }
}

/// Runs `node` alone, as the plugin would: validates `params` and `inputs`, never aborts.
/// How nodes are tested without a graph or the C boundary.
pub fn run_node(
    node: &dyn Node,
    params: &[(&str, ParamValue)],
    inputs: &[Option<Value>],
    output_directory: Option<&Path>,
) -> Result<Vec<Value>, NodeError> {
    let descriptor = node.descriptor();
    let params = Params::resolve(descriptor, params.iter().cloned())?;
    let inputs = Inputs::new(descriptor, inputs)?;
    let mut progress = |_, _| true;
    let mut ctx = ExecContext::new(descriptor.id, &mut progress, output_directory);
    node.execute(&mut ctx, &params, &inputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    static WIDGETS: &[WidgetDescriptor] = &[
        WidgetDescriptor {
            name: "steps",
            tooltip: "",
            spec: WidgetSpec::Int {
                default: 4,
                min: 1,
                max: 10,
                step: 1,
            },
        },
        WidgetDescriptor {
            name: "cfg",
            tooltip: "",
            spec: WidgetSpec::Float {
                default: 1.0,
                min: 0.0,
                max: 2.0,
                step: 0.1,
            },
        },
        WidgetDescriptor {
            name: "mode",
            tooltip: "",
            spec: WidgetSpec::Enum {
                default: "joint",
                choices: &["joint", "autoregressive"],
            },
        },
    ];
    static DESCRIPTOR: NodeDescriptor = NodeDescriptor {
        id: "Probe",
        version: 1,
        display_name: "Probe",
        category: "test",
        description: "",
        inputs: &[],
        outputs: &[],
        widgets: WIDGETS,
        is_output: false,
        not_idempotent: false,
    };

    #[test]
    fn defaults_fill_missing_widgets() {
        let params = Params::resolve(&DESCRIPTOR, [("cfg", ParamValue::Int(2))]).unwrap();
        assert_eq!(params.int("steps").unwrap(), 4);
        assert_eq!(params.float("cfg").unwrap(), 2.0);
        assert_eq!(params.text("mode").unwrap(), "joint");
    }

    #[test]
    fn bad_params_name_node_and_widget() {
        let err = Params::resolve(&DESCRIPTOR, [("steps", ParamValue::Int(11))]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Probe: widget `steps` is 11, outside 1..=10"
        );
        let err = Params::resolve(&DESCRIPTOR, [("cfg", ParamValue::Float(f64::NAN))]).unwrap_err();
        assert!(matches!(err, NodeError::OutOfRange { .. }), "{err}");
        let err = Params::resolve(&DESCRIPTOR, [("seed", ParamValue::Int(1))]).unwrap_err();
        assert!(err.to_string().contains("steps, cfg, mode"), "{err}");
        let err =
            Params::resolve(&DESCRIPTOR, [("mode", ParamValue::Text("x".into()))]).unwrap_err();
        assert!(matches!(err, NodeError::NotAChoice { .. }), "{err}");
        let err = Params::resolve(&DESCRIPTOR, [("steps", ParamValue::Float(1.0))]).unwrap_err();
        assert!(matches!(err, NodeError::WidgetKind { .. }), "{err}");
    }
}
