//! Validation: everything that can be known wrong about a graph is reported here, before any
//! node runs. Errors name the node label, its type, and for connections both ends.

use std::collections::{BTreeSet, HashMap};

use lct_abi::widget::{check_param, ParamRuleError};
use lct_abi::LctValueKind;

use crate::graph::{Graph, ParamValue};
use crate::plugin::{NodeType, Plugin, Widget, WidgetLimits};

/// Why a graph was refused. Boxed (like `std::io::Error`) so that results stay small while
/// the error names both ends of a connection; match on [`GraphError::kind`].
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error(transparent)]
pub struct GraphError(Box<GraphErrorKind>);

impl GraphError {
    pub fn kind(&self) -> &GraphErrorKind {
        &self.0
    }
}

impl From<GraphErrorKind> for GraphError {
    fn from(kind: GraphErrorKind) -> Self {
        Self(Box::new(kind))
    }
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GraphErrorKind {
    #[error("node `{node}`: unknown node type `{node_type}` (this plugin has: {known})")]
    UnknownNodeType {
        node: String,
        node_type: String,
        known: String,
    },
    #[error("node `{node}` ({node_type}): no widget named `{widget}` (widgets: {available})")]
    UnknownWidget {
        node: String,
        node_type: String,
        widget: String,
        available: String,
    },
    #[error("node `{node}` ({node_type}): widget `{widget}` takes {expected}, got {value}")]
    WidgetKind {
        node: String,
        node_type: String,
        widget: String,
        expected: String,
        value: String,
    },
    #[error("node `{node}` ({node_type}): widget `{widget}` is {value}, outside {min}..={max}")]
    WidgetOutOfRange {
        node: String,
        node_type: String,
        widget: String,
        value: String,
        min: String,
        max: String,
    },
    #[error("node `{node}` ({node_type}): widget `{widget}` is {value}, not one of: {choices}")]
    NotAChoice {
        node: String,
        node_type: String,
        widget: String,
        value: String,
        choices: String,
    },
    #[error("node `{node}` ({node_type}) has no input `{port}` (inputs: {available})")]
    UnknownInput {
        node: String,
        node_type: String,
        port: String,
        available: String,
    },
    #[error(
        "input `{node}.{port}` is connected to `{from_node}`, which is not a node of this graph"
    )]
    UnknownSourceNode {
        node: String,
        port: String,
        from_node: String,
    },
    #[error(
        "`{from_node}` ({from_type}) has no output `{output}` (outputs: {available}); it is \
         connected to `{to_node}.{to_port}`"
    )]
    UnknownOutput {
        from_node: String,
        from_type: String,
        output: String,
        available: String,
        to_node: String,
        to_port: String,
    },
    #[error(
        "`{from_node}` ({from_type}) has outputs {available}: the connection to \
         `{to_node}.{to_port}` must name one"
    )]
    AmbiguousOutput {
        from_node: String,
        from_type: String,
        available: String,
        to_node: String,
        to_port: String,
    },
    #[error(
        "kind mismatch: `{from_node}.{from_port}` ({from_type}) outputs {from_kind}, but \
         `{to_node}.{to_port}` ({to_type}) takes {to_kind}"
    )]
    KindMismatch {
        from_node: String,
        from_type: String,
        from_port: String,
        from_kind: String,
        to_node: String,
        to_type: String,
        to_port: String,
        to_kind: String,
    },
    #[error("node `{node}` ({node_type}): required input `{port}` ({kind}) is not connected")]
    MissingInput {
        node: String,
        node_type: String,
        port: String,
        kind: String,
    },
    #[error("the graph has a cycle: {}", cycle.join(" -> "))]
    Cycle { cycle: Vec<String> },
    #[error("`{node}` is named as an output but is not a node of this graph")]
    UnknownTarget { node: String },
    #[error("nothing to evaluate: the graph names no outputs and has no output node")]
    NoTargets,
}

/// One node of a validated graph.
#[derive(Clone, Debug)]
pub(crate) struct GraphNode {
    pub label: String,
    pub node_type: NodeType,
    /// Every widget in widget order, defaults filled in: the canonical form for signatures.
    pub params: Vec<(String, ParamValue)>,
    /// Per input port: (position of the source node, its output index).
    pub inputs: Vec<Option<(usize, usize)>>,
}

/// A graph that passed validation against a plugin: types resolved, widgets checked and
/// completed, connections kind-checked, nodes in topological order.
#[derive(Clone, Debug)]
pub struct ValidatedGraph {
    pub(crate) plugin: Plugin,
    pub(crate) nodes: Vec<GraphNode>,
    pub(crate) default_targets: Vec<usize>,
}

impl ValidatedGraph {
    /// Node labels in evaluation (topological) order.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|n| n.label.as_str())
    }

    pub(crate) fn position(&self, label: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.label == label)
    }

    /// Positions of the nodes to evaluate: `targets` if given, else the graph's defaults.
    pub(crate) fn resolve_targets(
        &self,
        targets: Option<&[String]>,
    ) -> Result<Vec<usize>, GraphError> {
        match targets {
            None => Ok(self.default_targets.clone()),
            Some(labels) => labels
                .iter()
                .map(|label| -> Result<usize, GraphError> {
                    self.position(label).ok_or_else(|| {
                        GraphErrorKind::UnknownTarget {
                            node: label.clone(),
                        }
                        .into()
                    })
                })
                .collect(),
        }
    }
}

fn kind_name(kind: LctValueKind) -> String {
    kind.name()
        .map_or_else(|| format!("kind {}", kind.0), str::to_owned)
}

/// Checks one widget value with lct-abi's rule, the one the plugin applies, so a graph that
/// validates is never refused by the plugin for its widgets.
fn check_widget(
    label: &str,
    node: &NodeType,
    widget: &Widget,
    value: &ParamValue,
) -> Result<ParamValue, GraphError> {
    let error = match check_param(&widget.limits.rule(), value.clone()) {
        Ok(checked) => return Ok(checked),
        Err(error) => error,
    };
    let (node, node_type, widget_name) = (label.to_owned(), node.id.clone(), widget.name.clone());
    Err(match error {
        ParamRuleError::WrongKind { .. } => GraphErrorKind::WidgetKind {
            node,
            node_type,
            widget: widget_name,
            expected: kind_name(widget.kind),
            value: value.to_string(),
        },
        ParamRuleError::OutOfRange { min, max, .. } => GraphErrorKind::WidgetOutOfRange {
            node,
            node_type,
            widget: widget_name,
            value: value.to_string(),
            min,
            max,
        },
        ParamRuleError::NotAChoice { .. } => GraphErrorKind::NotAChoice {
            node,
            node_type,
            widget: widget_name,
            value: value.to_string(),
            choices: match &widget.limits {
                WidgetLimits::Choices(choices) => choices.join(", "),
                _ => String::new(),
            },
        },
    }
    .into())
}

/// Finds one cycle among `remaining` nodes (each of which has a predecessor among them).
fn find_cycle(
    labels: &[&str],
    predecessors: &[Vec<usize>],
    remaining: &BTreeSet<usize>,
) -> Vec<String> {
    let mut path = Vec::new();
    let mut current = *remaining
        .iter()
        .next()
        .expect("a cycle leaves nodes behind");
    while !path.contains(&current) {
        path.push(current);
        current = *predecessors[current]
            .iter()
            .find(|p| remaining.contains(p))
            .expect("every remaining node has a remaining predecessor");
    }
    let start = path
        .iter()
        .position(|&n| n == current)
        .expect("found above");
    // `path` walks against the edges; reverse it to read in data-flow order.
    let mut cycle: Vec<String> = path[start..]
        .iter()
        .rev()
        .map(|&n| labels[n].to_owned())
        .collect();
    cycle.push(cycle[0].clone());
    cycle
}

impl Plugin {
    /// Checks `graph` against this plugin's node types. Nothing runs.
    pub fn validate(&self, graph: &Graph) -> Result<ValidatedGraph, GraphError> {
        let labels: Vec<&str> = graph.nodes.keys().map(String::as_str).collect();
        let index_of: HashMap<&str, usize> =
            labels.iter().enumerate().map(|(i, l)| (*l, i)).collect();
        let mut nodes = Vec::with_capacity(labels.len());
        for (label, spec) in &graph.nodes {
            let node_type =
                self.node(&spec.node_type)
                    .ok_or_else(|| GraphErrorKind::UnknownNodeType {
                        node: label.clone(),
                        node_type: spec.node_type.clone(),
                        known: self
                            .nodes()
                            .iter()
                            .map(|n| n.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
            for name in spec.params.keys() {
                if node_type.widget(name).is_none() {
                    return Err(GraphErrorKind::UnknownWidget {
                        node: label.clone(),
                        node_type: node_type.id.clone(),
                        widget: name.clone(),
                        available: node_type
                            .widgets
                            .iter()
                            .map(|w| w.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    }
                    .into());
                }
            }
            let params = node_type
                .widgets
                .iter()
                .map(|w| {
                    let value = match spec.params.get(&w.name) {
                        Some(v) => check_widget(label, node_type, w, v)?,
                        None => w.default.clone(),
                    };
                    Ok((w.name.clone(), value))
                })
                .collect::<Result<Vec<_>, GraphError>>()?;
            nodes.push(GraphNode {
                label: label.clone(),
                node_type: node_type.clone(),
                params,
                inputs: vec![None; node_type.inputs.len()],
            });
        }
        // Connections, by label index for now.
        for (to_index, spec) in graph.nodes.values().enumerate() {
            for (port, connection) in &spec.inputs {
                let to = &nodes[to_index];
                let (port_index, to_port) =
                    to.node_type
                        .input(port)
                        .ok_or_else(|| GraphErrorKind::UnknownInput {
                            node: to.label.clone(),
                            node_type: to.node_type.id.clone(),
                            port: port.clone(),
                            available: to
                                .node_type
                                .inputs
                                .iter()
                                .map(|p| p.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                        })?;
                let from_index = *index_of.get(connection.node.as_str()).ok_or_else(|| {
                    GraphErrorKind::UnknownSourceNode {
                        node: to.label.clone(),
                        port: port.clone(),
                        from_node: connection.node.clone(),
                    }
                })?;
                let from = &nodes[from_index];
                let outputs = &from.node_type.outputs;
                let available = || {
                    outputs
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let (output_index, from_port) = match &connection.output {
                    Some(name) => from.node_type.output(name).ok_or_else(|| {
                        GraphErrorKind::UnknownOutput {
                            from_node: from.label.clone(),
                            from_type: from.node_type.id.clone(),
                            output: name.clone(),
                            available: available(),
                            to_node: to.label.clone(),
                            to_port: port.clone(),
                        }
                    })?,
                    None if outputs.len() == 1 => (0, &outputs[0]),
                    None => {
                        return Err(GraphErrorKind::AmbiguousOutput {
                            from_node: from.label.clone(),
                            from_type: from.node_type.id.clone(),
                            available: available(),
                            to_node: to.label.clone(),
                            to_port: port.clone(),
                        }
                        .into())
                    }
                };
                if from_port.kind != to_port.kind {
                    return Err(GraphErrorKind::KindMismatch {
                        from_node: from.label.clone(),
                        from_type: from.node_type.id.clone(),
                        from_port: from_port.name.clone(),
                        from_kind: kind_name(from_port.kind),
                        to_node: to.label.clone(),
                        to_type: to.node_type.id.clone(),
                        to_port: to_port.name.clone(),
                        to_kind: kind_name(to_port.kind),
                    }
                    .into());
                }
                nodes[to_index].inputs[port_index] = Some((from_index, output_index));
            }
        }
        for node in &nodes {
            for (port, input) in node.node_type.inputs.iter().zip(&node.inputs) {
                if input.is_none() && !port.optional {
                    return Err(GraphErrorKind::MissingInput {
                        node: node.label.clone(),
                        node_type: node.node_type.id.clone(),
                        port: port.name.clone(),
                        kind: kind_name(port.kind),
                    }
                    .into());
                }
            }
        }
        // Kahn's algorithm; the ordered set makes the order deterministic (by label).
        let predecessors: Vec<Vec<usize>> = nodes
            .iter()
            .map(|n| n.inputs.iter().flatten().map(|&(from, _)| from).collect())
            .collect();
        let mut pending: Vec<usize> = predecessors.iter().map(Vec::len).collect();
        let mut successors = vec![Vec::new(); nodes.len()];
        for (to, preds) in predecessors.iter().enumerate() {
            for &from in preds {
                successors[from].push(to);
            }
        }
        let mut ready: BTreeSet<usize> = (0..nodes.len()).filter(|&i| pending[i] == 0).collect();
        let mut order = Vec::with_capacity(nodes.len());
        while let Some(next) = ready.pop_first() {
            order.push(next);
            for &to in &successors[next] {
                pending[to] -= 1;
                if pending[to] == 0 {
                    ready.insert(to);
                }
            }
        }
        if order.len() < nodes.len() {
            let placed: BTreeSet<usize> = order.iter().copied().collect();
            let remaining = (0..nodes.len()).filter(|i| !placed.contains(i)).collect();
            return Err(GraphErrorKind::Cycle {
                cycle: find_cycle(&labels, &predecessors, &remaining),
            }
            .into());
        }
        let mut position = vec![0; nodes.len()];
        for (pos, &index) in order.iter().enumerate() {
            position[index] = pos;
        }
        let mut slots: Vec<Option<GraphNode>> = nodes.into_iter().map(Some).collect();
        let nodes: Vec<GraphNode> = order
            .iter()
            .map(|&index| {
                let mut node = slots[index].take().expect("each index once");
                for input in node.inputs.iter_mut().flatten() {
                    input.0 = position[input.0];
                }
                node
            })
            .collect();
        let mut validated = ValidatedGraph {
            plugin: self.clone(),
            nodes,
            default_targets: Vec::new(),
        };
        validated.default_targets = if graph.outputs.is_empty() {
            (0..validated.nodes.len())
                .filter(|&i| validated.nodes[i].node_type.is_output)
                .collect()
        } else {
            validated.resolve_targets(Some(&graph.outputs))?
        };
        if validated.default_targets.is_empty() {
            return Err(GraphErrorKind::NoTargets.into());
        }
        Ok(validated)
    }
}
