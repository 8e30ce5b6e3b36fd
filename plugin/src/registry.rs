//! The node registry and the C view of its static descriptors, built once and never freed
//! (plugins are never unloaded, so descriptor pointers stay valid for the process).

use std::ffi::{c_char, CString};
use std::sync::OnceLock;

use lct_abi::{
    LctNodeDesc, LctNodeFlags, LctPortDesc, LctPortFlags, LctStatus, LctValueKind, LctWidgetDesc,
    LctWidgetFlags,
};
use lct_nodes::{ColorConfig, Node, PortDescriptor, ValueKind, WidgetSpec};

use crate::firewall::{Failure, Result};

pub fn abi_kind(kind: ValueKind) -> LctValueKind {
    match kind {
        ValueKind::Int => LctValueKind::INT,
        ValueKind::Float => LctValueKind::FLOAT,
        ValueKind::Bool => LctValueKind::BOOL,
        ValueKind::String => LctValueKind::STRING,
        ValueKind::Enum => LctValueKind::ENUM,
        ValueKind::Scene => LctValueKind::SCENE,
        ValueKind::Latent => LctValueKind::LATENT,
        ValueKind::KvCache => LctValueKind::KV_CACHE,
        ValueKind::Frames => LctValueKind::FRAMES,
        ValueKind::Model => LctValueKind::MODEL,
    }
}

pub struct Registry {
    nodes: Vec<Box<dyn Node>>,
    descriptors: Vec<LctNodeDesc>,
    // Owners of everything the descriptors point into; never read, only kept alive.
    _strings: Vec<CString>,
    _ports: Vec<Vec<LctPortDesc>>,
    _widgets: Vec<Vec<LctWidgetDesc>>,
    _choices: Vec<Vec<*const c_char>>,
}

// SAFETY: the raw pointers point into heap buffers owned by the registry itself, which is
// immutable after construction and lives in a static until the process ends.
unsafe impl Send for Registry {}
unsafe impl Sync for Registry {}

/// Builds C descriptors; panics on a descriptor string with an interior NUL (a bug in a node,
/// reported by the firewall as a panic during `initialize`).
struct Builder {
    strings: Vec<CString>,
}

impl Builder {
    fn intern(&mut self, text: &str) -> *const c_char {
        let owned =
            CString::new(text).unwrap_or_else(|_| panic!("descriptor text {text:?} contains NUL"));
        // The CString's heap buffer does not move when the CString is moved into the Vec.
        let ptr = owned.as_ptr();
        self.strings.push(owned);
        ptr
    }

    fn ports(&mut self, ports: &[PortDescriptor]) -> Vec<LctPortDesc> {
        ports
            .iter()
            .map(|port| LctPortDesc {
                name: self.intern(port.name),
                kind_name: self.intern(port.kind.name()),
                kind: abi_kind(port.kind),
                flags: if port.optional {
                    LctPortFlags::OPTIONAL
                } else {
                    LctPortFlags::NONE
                },
                tooltip: self.intern(port.tooltip),
            })
            .collect()
    }
}

fn empty_widget(name: *const c_char, kind: LctValueKind, tooltip: *const c_char) -> LctWidgetDesc {
    LctWidgetDesc {
        name,
        kind,
        flags: LctWidgetFlags::NONE,
        tooltip,
        int_default: 0,
        int_min: 0,
        int_max: 0,
        int_step: 0,
        float_default: 0.0,
        float_min: 0.0,
        float_max: 0.0,
        float_step: 0.0,
        text_default: std::ptr::null(),
        choices: std::ptr::null(),
        choice_count: 0,
    }
}

impl Registry {
    fn build(nodes: Vec<Box<dyn Node>>) -> Self {
        let mut builder = Builder {
            strings: Vec::new(),
        };
        let mut all_ports = Vec::new();
        let mut all_widgets = Vec::new();
        let mut all_choices = Vec::new();
        let mut descriptors = Vec::new();
        for node in &nodes {
            let d = node.descriptor();
            let inputs = builder.ports(d.inputs);
            let outputs = builder.ports(d.outputs);
            let mut widgets = Vec::new();
            for widget in d.widgets {
                let name = builder.intern(widget.name);
                let tooltip = builder.intern(widget.tooltip);
                let kind = abi_kind(widget.spec.kind());
                let mut w = empty_widget(name, kind, tooltip);
                match &widget.spec {
                    WidgetSpec::Int {
                        default,
                        min,
                        max,
                        step,
                    } => {
                        (w.int_default, w.int_min, w.int_max, w.int_step) =
                            (*default, *min, *max, *step);
                    }
                    WidgetSpec::Float {
                        default,
                        min,
                        max,
                        step,
                    } => {
                        (w.float_default, w.float_min, w.float_max, w.float_step) =
                            (*default, *min, *max, *step);
                    }
                    WidgetSpec::Bool { default } => {
                        (w.int_default, w.int_min, w.int_max, w.int_step) =
                            (*default as i64, 0, 1, 1);
                    }
                    WidgetSpec::String { default, multiline } => {
                        w.text_default = builder.intern(default);
                        if *multiline {
                            w.flags = LctWidgetFlags::MULTILINE;
                        }
                    }
                    WidgetSpec::ConfigName { default, list } => {
                        w.text_default = builder.intern(default);
                        w.flags = LctWidgetFlags::SUGGESTIONS;
                        // The default first when the config does not name it ("auto").
                        let mut names = ColorConfig::default_config().names(*list);
                        if !names.iter().any(|n| n == default) {
                            names.insert(0, (*default).to_owned());
                        }
                        let list: Vec<*const c_char> =
                            names.iter().map(|c| builder.intern(c)).collect();
                        w.choices = list.as_ptr();
                        w.choice_count = list.len();
                        all_choices.push(list);
                    }
                    WidgetSpec::Enum { default, choices } => {
                        w.text_default = builder.intern(default);
                        let list: Vec<*const c_char> =
                            choices.iter().map(|c| builder.intern(c)).collect();
                        w.choices = list.as_ptr();
                        w.choice_count = list.len();
                        all_choices.push(list);
                    }
                }
                widgets.push(w);
            }
            let mut flags = LctNodeFlags::NONE;
            if d.is_output {
                flags = flags | LctNodeFlags::OUTPUT;
            }
            if d.not_idempotent {
                flags = flags | LctNodeFlags::NOT_IDEMPOTENT;
            }
            descriptors.push(LctNodeDesc {
                id: builder.intern(d.id),
                version: d.version,
                flags,
                display_name: builder.intern(d.display_name),
                category: builder.intern(d.category),
                description: builder.intern(d.description),
                inputs: inputs.as_ptr(),
                input_count: inputs.len(),
                outputs: outputs.as_ptr(),
                output_count: outputs.len(),
                widgets: widgets.as_ptr(),
                widget_count: widgets.len(),
                struct_size: std::mem::size_of::<LctNodeDesc>() as u32,
                port_desc_size: std::mem::size_of::<LctPortDesc>() as u32,
                widget_desc_size: std::mem::size_of::<LctWidgetDesc>() as u32,
                reserved: 0,
            });
            all_ports.push(inputs);
            all_ports.push(outputs);
            all_widgets.push(widgets);
        }
        Self {
            nodes,
            descriptors,
            _strings: builder.strings,
            _ports: all_ports,
            _widgets: all_widgets,
            _choices: all_choices,
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn node(&self, index: u32) -> Result<&dyn Node> {
        self.nodes
            .get(index as usize)
            .map(|n| n.as_ref())
            .ok_or_else(|| {
                Failure::new(
                    LctStatus::NOT_FOUND,
                    format!(
                        "no node type at index {index} (this plugin has {})",
                        self.nodes.len()
                    ),
                )
            })
    }

    pub fn descriptor(&self, index: u32) -> Result<&LctNodeDesc> {
        self.node(index)?;
        Ok(&self.descriptors[index as usize])
    }

    pub fn find(&self, id: &str) -> Option<u32> {
        self.nodes
            .iter()
            .position(|n| n.descriptor().id == id)
            .map(|i| i as u32)
    }
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// The registry, built on first use. A panic while building leaves it unbuilt (the next call
/// tries again) and reaches the caller as `PANICKED`.
pub fn registry() -> &'static Registry {
    REGISTRY.get_or_init(|| Registry::build(lct_nodes::all_nodes()))
}
