//! Evaluation: only the nodes that reach the requested outputs, in topological order, each
//! served from the output cache when its signature was seen before.
//!
//! A node's signature hashes the plugin's name and version, the node type's id and version,
//! its complete parameters, and for each input what the node depends on in the input's value
//! (the plugin's `node_input_signature`: the content hash, or a narrower one). Because inputs
//! are identified by content, an edit re-runs the edited node, and downstream nodes only when
//! what they depend on actually changed.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crossbeam_channel::{Receiver, Sender};
use lct_abi::LctStatus;

use crate::graph::ParamValue;
use crate::plugin::{Plugin, PluginError, Preview};
use crate::validate::{GraphError, ValidatedGraph};
use crate::value::Value;

/// Progress of an evaluation, sent on [`EvalOptions::events`].
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The node starts executing (cached nodes send [`Event::Cached`] instead).
    Started {
        node: String,
        node_type: String,
        /// 1-based position among the nodes this evaluation needs, and their number.
        position: usize,
        total: usize,
    },
    /// `step` of `total` steps of the running node are done.
    Progress { node: String, step: u32, total: u32 },
    /// The node's outputs came from the cache.
    Cached { node: String },
    /// The running node's result so far (with [`EvalOptions::previews`]): sampling nodes send
    /// one every `preview_every` steps.
    Preview {
        node: String,
        step: u32,
        total: u32,
        preview: Preview,
    },
    /// The node finished executing.
    Finished { node: String },
}

/// Options of one evaluation.
#[derive(Clone, Debug, Default)]
pub struct EvalOptions {
    /// Labels of the nodes to evaluate; `None`: the graph's outputs.
    pub targets: Option<Vec<String>>,
    /// Where to send [`Event`]s.
    pub events: Option<Sender<Event>>,
    /// Any message (or a full channel) cancels the evaluation: the running node stops at its
    /// next step. Use a fresh channel per evaluation.
    pub cancel: Option<Receiver<()>>,
    /// Base directory for relative output paths of nodes such as SaveFrames.
    pub output_directory: Option<PathBuf>,
    /// Ask nodes for previews and send them as [`Event::Preview`] (costs a decode each).
    pub previews: bool,
}

/// Why an evaluation stopped. Names the node, by label and type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    #[error("cancelled in node `{node}` ({node_type})")]
    Cancelled { node: String, node_type: String },
    #[error("node `{node}` ({node_type}) failed: {source}")]
    Node {
        node: String,
        node_type: String,
        source: PluginError,
    },
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("the graph was validated against another plugin ({graph_plugin}) than this evaluator's ({evaluator_plugin})")]
    OtherPlugin {
        graph_plugin: String,
        evaluator_plugin: String,
    },
}

/// Result of one evaluation.
#[derive(Clone, Debug, Default)]
pub struct Evaluation {
    /// Outputs of the target nodes: label -> (output port name, value).
    pub outputs: BTreeMap<String, Vec<(String, Value)>>,
    /// Labels of the nodes that executed, in order.
    pub executed: Vec<String>,
    /// Labels of the nodes served from the cache.
    pub cached: Vec<String>,
}

impl Evaluation {
    pub fn output(&self, node: &str, port: &str) -> Option<&Value> {
        self.outputs
            .get(node)?
            .iter()
            .find(|(p, _)| p == port)
            .map(|(_, v)| v)
    }
}

struct CacheEntry {
    outputs: Vec<Value>,
    last_used: u64,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<u64, CacheEntry>,
    clock: u64,
}

/// Evaluates graphs against one plugin, caching outputs across evaluations. Share it between
/// threads (`&Evaluator` is enough): the cache is locked only for lookups and inserts, never
/// while a node runs.
pub struct Evaluator {
    plugin: Plugin,
    cache: Mutex<Cache>,
    capacity: usize,
    executions: AtomicU64,
}

/// Default number of cached node results before the least recently used is dropped.
pub const DEFAULT_CACHE_CAPACITY: usize = 1024;

impl Evaluator {
    pub fn new(plugin: &Plugin) -> Self {
        Self::with_capacity(plugin, DEFAULT_CACHE_CAPACITY)
    }

    /// An evaluator that keeps the results of at most `capacity` node executions.
    pub fn with_capacity(plugin: &Plugin, capacity: usize) -> Self {
        Self {
            plugin: plugin.clone(),
            cache: Mutex::new(Cache::default()),
            capacity,
            executions: AtomicU64::new(0),
        }
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// Node executions since this evaluator was created (cache hits do not count).
    pub fn executions(&self) -> u64 {
        self.executions.load(Ordering::Relaxed)
    }

    /// Values held by the cache (each one a live plugin handle).
    pub fn cached_values(&self) -> usize {
        self.cache().entries.values().map(|e| e.outputs.len()).sum()
    }

    /// Drops every cached result (releasing handles no one else holds).
    pub fn clear_cache(&self) {
        let entries = std::mem::take(&mut self.cache().entries);
        // Release outside the lock.
        drop(entries);
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        // Poisoning cannot leave the map inconsistent: nothing panics while it is held.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lookup(&self, signature: u64) -> Option<Vec<Value>> {
        let mut cache = self.cache();
        cache.clock += 1;
        let now = cache.clock;
        let entry = cache.entries.get_mut(&signature)?;
        entry.last_used = now;
        Some(entry.outputs.clone())
    }

    fn store(&self, signature: u64, outputs: &[Value]) {
        let evicted = {
            let mut cache = self.cache();
            cache.clock += 1;
            let now = cache.clock;
            cache.entries.insert(
                signature,
                CacheEntry {
                    outputs: outputs.to_vec(),
                    last_used: now,
                },
            );
            let mut evicted = Vec::new();
            while cache.entries.len() > self.capacity {
                let oldest = *cache
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.last_used)
                    .map(|(k, _)| k)
                    .expect("non-empty");
                evicted.extend(cache.entries.remove(&oldest));
            }
            evicted
        };
        drop(evicted);
    }

    /// Evaluates `graph`. Nodes that do not reach a target are not touched.
    pub fn evaluate(
        &self,
        graph: &ValidatedGraph,
        options: &EvalOptions,
    ) -> Result<Evaluation, EvalError> {
        if !graph.plugin.same_as(&self.plugin) {
            return Err(EvalError::OtherPlugin {
                graph_plugin: format!("{:?}", graph.plugin),
                evaluator_plugin: format!("{:?}", self.plugin),
            });
        }
        let targets = graph.resolve_targets(options.targets.as_deref())?;
        let nodes = &graph.nodes;
        // Prune: walk back from the targets. Inputs always sit earlier in the order.
        let mut needed = vec![false; nodes.len()];
        for &t in &targets {
            needed[t] = true;
        }
        for position in (0..nodes.len()).rev() {
            if needed[position] {
                for &(from, _) in nodes[position].inputs.iter().flatten() {
                    needed[from] = true;
                }
            }
        }
        let total = needed.iter().filter(|&&n| n).count();
        let cancelled = || options.cancel.as_ref().is_some_and(|c| !c.is_empty());
        let send = |event: Event| {
            if let Some(events) = &options.events {
                // A host that stopped listening does not stop the evaluation.
                let _ = events.send(event);
            }
        };
        let mut results: Vec<Option<Vec<Value>>> = vec![None; nodes.len()];
        let mut evaluation = Evaluation::default();
        let mut done = 0;
        for (position, node) in nodes.iter().enumerate() {
            if !needed[position] {
                continue;
            }
            done += 1;
            let node_error = |source: PluginError| EvalError::Node {
                node: node.label.clone(),
                node_type: node.node_type.id.clone(),
                source,
            };
            if cancelled() {
                return Err(EvalError::Cancelled {
                    node: node.label.clone(),
                    node_type: node.node_type.id.clone(),
                });
            }
            let inputs: Vec<Option<&Value>> = node
                .inputs
                .iter()
                .map(|input| {
                    input.map(|(from, output)| {
                        &results[from].as_ref().expect("inputs run first")[output]
                    })
                })
                .collect();
            let signature = self
                .signature(node, &inputs, options.output_directory.as_deref())
                .map_err(node_error)?;
            let cached = if node.node_type.not_idempotent {
                None
            } else {
                self.lookup(signature)
            };
            let outputs = match cached {
                Some(outputs) => {
                    send(Event::Cached {
                        node: node.label.clone(),
                    });
                    evaluation.cached.push(node.label.clone());
                    outputs
                }
                None => {
                    send(Event::Started {
                        node: node.label.clone(),
                        node_type: node.node_type.id.clone(),
                        position: done,
                        total,
                    });
                    let mut progress = |step, steps| {
                        send(Event::Progress {
                            node: node.label.clone(),
                            step,
                            total: steps,
                        });
                        !cancelled()
                    };
                    let mut preview = |step, steps, preview: &Preview| {
                        send(Event::Preview {
                            node: node.label.clone(),
                            step,
                            total: steps,
                            preview: preview.clone(),
                        });
                        !cancelled()
                    };
                    self.executions.fetch_add(1, Ordering::Relaxed);
                    let outputs = self
                        .plugin
                        .execute_with_preview(
                            &node.node_type,
                            &node.params,
                            &inputs,
                            options.output_directory.as_deref(),
                            &mut progress,
                            options.previews.then_some(
                                &mut preview as &mut dyn FnMut(u32, u32, &Preview) -> bool,
                            ),
                        )
                        .map_err(|error| match error.status {
                            LctStatus::CANCELLED => EvalError::Cancelled {
                                node: node.label.clone(),
                                node_type: node.node_type.id.clone(),
                            },
                            _ => node_error(error),
                        })?;
                    if !node.node_type.not_idempotent {
                        self.store(signature, &outputs);
                    }
                    send(Event::Finished {
                        node: node.label.clone(),
                    });
                    evaluation.executed.push(node.label.clone());
                    outputs
                }
            };
            results[position] = Some(outputs);
        }
        for &t in &targets {
            let node = &nodes[t];
            let values = results[t].clone().expect("targets were evaluated");
            let named = node
                .node_type
                .outputs
                .iter()
                .map(|p| p.name.clone())
                .zip(values)
                .collect();
            evaluation.outputs.insert(node.label.clone(), named);
        }
        Ok(evaluation)
    }

    fn signature(
        &self,
        node: &crate::validate::GraphNode,
        inputs: &[Option<&Value>],
        output_directory: Option<&std::path::Path>,
    ) -> Result<u64, PluginError> {
        // DefaultHasher has fixed keys: signatures are stable within one build, which is all
        // an in-memory cache needs.
        let mut hasher = DefaultHasher::new();
        if node.node_type.is_output {
            // An output node's result is what it wrote, and where: two output nodes with the
            // same settings each write their own files (SaveFrames "scene" twice gives
            // scene/ and scene-2/), and another output root is written to, not skipped. The
            // same node in the same root, unchanged, is served from the cache.
            node.label.hash(&mut hasher);
            output_directory.hash(&mut hasher);
        }
        self.plugin.name().hash(&mut hasher);
        self.plugin.version().hash(&mut hasher);
        node.node_type.id.hash(&mut hasher);
        node.node_type.version.hash(&mut hasher);
        for (name, value) in &node.params {
            name.hash(&mut hasher);
            match value {
                ParamValue::Bool(v) => (0u8, *v).hash(&mut hasher),
                ParamValue::Int(v) => (1u8, *v).hash(&mut hasher),
                ParamValue::Float(v) => (2u8, v.to_bits()).hash(&mut hasher),
                ParamValue::Text(v) => (3u8, v).hash(&mut hasher),
            }
        }
        for (port, input) in inputs.iter().enumerate() {
            match input {
                Some(value) => {
                    let narrowed =
                        self.plugin
                            .input_signature(&node.node_type, &node.params, port, value)?;
                    (1u8, narrowed).hash(&mut hasher);
                }
                None => 0u8.hash(&mut hasher),
            }
        }
        Ok(hasher.finish())
    }
}
