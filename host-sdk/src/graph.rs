//! Graphs as plain data: built in code or read from JSON, validated against a plugin later.
//!
//! JSON form:
//! ```json
//! {
//!   "nodes": {
//!     "model":    { "type": "LoadModel" },
//!     "scene":    { "type": "SceneContext", "params": { "shots": "wide shot\nclose-up" } },
//!     "generate": { "type": "ShotGenerate", "params": { "steps": 8 },
//!                   "inputs": { "model": "model", "scene": "scene" } },
//!     "decode":   { "type": "DecodeFrames",
//!                   "inputs": { "model": "model", "latent": "generate.latent" } },
//!     "save":     { "type": "SaveFrames", "params": { "columns": 2 },
//!                   "inputs": { "frames": "decode" } }
//!   },
//!   "outputs": ["save"]
//! }
//! ```
//! An input names `"node.output"`, or just `"node"` when that node has one output. `outputs`
//! is optional: without it every output node (SaveFrames...) is evaluated.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A widget value: lct-abi's, the same type the plugin checks, so both apply one rule.
pub use lct_abi::widget::ParamValue;

/// JSON form of a [`ParamValue`]: a bare `true`, `4`, `0.5` or `"text"`. A private mirror
/// because lct-abi stays free of serde; the order of the variants decides that `4` is an INT.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum JsonParam {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl From<JsonParam> for ParamValue {
    fn from(value: JsonParam) -> Self {
        match value {
            JsonParam::Bool(v) => Self::Bool(v),
            JsonParam::Int(v) => Self::Int(v),
            JsonParam::Float(v) => Self::Float(v),
            JsonParam::Text(v) => Self::Text(v),
        }
    }
}

impl From<&ParamValue> for JsonParam {
    fn from(value: &ParamValue) -> Self {
        match value {
            ParamValue::Bool(v) => Self::Bool(*v),
            ParamValue::Int(v) => Self::Int(*v),
            ParamValue::Float(v) => Self::Float(*v),
            ParamValue::Text(v) => Self::Text(v.clone()),
        }
    }
}

/// `#[serde(with)]` for a node's widget map.
mod json_params {
    use super::*;

    pub fn serialize<S: serde::Serializer>(
        params: &BTreeMap<String, ParamValue>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_map(params.iter().map(|(k, v)| (k, JsonParam::from(v))))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, ParamValue>, D::Error> {
        let params = BTreeMap::<String, JsonParam>::deserialize(deserializer)?;
        Ok(params.into_iter().map(|(k, v)| (k, v.into())).collect())
    }
}

/// Where an input comes from: a node's label and, optionally, which of its outputs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct Connection {
    pub node: String,
    /// `None`: the node's only output.
    pub output: Option<String>,
}

impl From<String> for Connection {
    fn from(text: String) -> Self {
        // Port names never contain '.', labels may: split at the last one.
        match text.rsplit_once('.') {
            Some((node, output)) => Self {
                node: node.to_owned(),
                output: Some(output.to_owned()),
            },
            None => Self {
                node: text,
                output: None,
            },
        }
    }
}

impl From<Connection> for String {
    fn from(c: Connection) -> Self {
        c.to_string()
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.output {
            Some(output) => write!(f, "{}.{output}", self.node),
            None => f.write_str(&self.node),
        }
    }
}

/// One node of a graph: its type, the widgets it sets, and where its inputs come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    #[serde(rename = "type")]
    pub node_type: String,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "json_params"
    )]
    pub params: BTreeMap<String, ParamValue>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, Connection>,
}

impl NodeSpec {
    pub fn param(&mut self, name: &str, value: impl Into<ParamValue>) -> &mut Self {
        self.params.insert(name.to_owned(), value.into());
        self
    }

    /// Connects input `port` of this node to output `output` of node `from`.
    pub fn input(&mut self, port: &str, from: &str, output: &str) -> &mut Self {
        self.inputs.insert(
            port.to_owned(),
            Connection {
                node: from.to_owned(),
                output: Some(output.to_owned()),
            },
        );
        self
    }
}

/// A node graph keyed by node labels (the user's names for nodes).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Graph {
    pub nodes: BTreeMap<String, NodeSpec>,
    /// Labels of the nodes to evaluate; empty means every output node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
}

/// A graph file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GraphFileError {
    #[error("cannot read graph: {0}")]
    Read(#[from] lct_files::ReadError),
    #[error("graph {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the node `label` of type `node_type`; set its widgets and inputs on
    /// the returned spec.
    pub fn add(&mut self, label: &str, node_type: &str) -> &mut NodeSpec {
        self.nodes.insert(
            label.to_owned(),
            NodeSpec {
                node_type: node_type.to_owned(),
                params: BTreeMap::new(),
                inputs: BTreeMap::new(),
            },
        );
        self.nodes.get_mut(label).expect("just inserted")
    }

    pub fn node_mut(&mut self, label: &str) -> Option<&mut NodeSpec> {
        self.nodes.get_mut(label)
    }

    /// Connects `from.output` to `to.port`; does nothing if `to` does not exist (validation
    /// reports dangling references, not the builder).
    pub fn connect(&mut self, from: &str, output: &str, to: &str, port: &str) -> &mut Self {
        if let Some(node) = self.nodes.get_mut(to) {
            node.input(port, from, output);
        }
        self
    }

    /// Marks `label` as a node to evaluate.
    pub fn output(&mut self, label: &str) -> &mut Self {
        self.outputs.push(label.to_owned());
        self
    }

    pub fn from_json(text: &str) -> Result<Graph, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a graph always serialises")
    }

    pub fn load(path: impl AsRef<Path>) -> Result<Graph, GraphFileError> {
        let path = path.as_ref();
        let text = lct_files::read_to_string(path, lct_files::FileKind::Json)?;
        Graph::from_json(&text).map_err(|source| GraphFileError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        let text = r#"{
            "nodes": {
                "shots": { "type": "ShotGenerate", "params": { "steps": 4, "cfg": 0.5, "on": true, "mode": "x" } },
                "save": { "type": "SaveFrames", "inputs": { "frames": "shots.frames", "other": "my.node" } }
            },
            "outputs": ["save"]
        }"#;
        let graph = Graph::from_json(text).unwrap();
        let shots = &graph.nodes["shots"];
        assert_eq!(shots.params["steps"], ParamValue::Int(4));
        assert_eq!(shots.params["cfg"], ParamValue::Float(0.5));
        assert_eq!(shots.params["on"], ParamValue::Bool(true));
        assert_eq!(shots.params["mode"], ParamValue::Text("x".into()));
        let save = &graph.nodes["save"];
        assert_eq!(save.inputs["frames"].node, "shots");
        assert_eq!(save.inputs["other"].node, "my");
        assert_eq!(Graph::from_json(&graph.to_json()).unwrap(), graph);
    }

    #[test]
    fn builder_matches_json() {
        let mut graph = Graph::new();
        graph.add("decode", "DecodeFrames");
        graph
            .add("save", "SaveFrames")
            .param("columns", 4)
            .input("frames", "decode", "frames");
        graph.output("save");
        let json = r#"{"nodes":{"decode":{"type":"DecodeFrames"},
            "save":{"type":"SaveFrames","params":{"columns":4},"inputs":{"frames":"decode.frames"}}},
            "outputs":["save"]}"#;
        assert_eq!(graph, Graph::from_json(json).unwrap());
    }

    #[test]
    fn unknown_fields_are_errors() {
        let err = Graph::from_json(r#"{"nodes":{"a":{"type":"X","parmas":{}}}}"#).unwrap_err();
        assert!(err.to_string().contains("parmas"), "{err}");
    }
}
