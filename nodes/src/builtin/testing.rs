//! Model-free nodes for tests and host development: deterministic frames, a slow step loop
//! that polls abort like a sampler, and a node that panics on request.

use std::sync::Arc;
use std::time::Duration;

use crate::color::ColorSpace;
use crate::node::{
    ExecContext, Inputs, Node, NodeDescriptor, NodeError, Params, PortDescriptor, WidgetDescriptor,
    WidgetSpec,
};
use crate::value::{Frames, Value, ValueKind};

/// Deterministic frames: a colour gradient with a bar that moves one step per frame.
pub struct TestPattern;

static TEST_PATTERN: NodeDescriptor = NodeDescriptor {
    id: "TestPattern",
    version: 1,
    display_name: "Test Pattern",
    category: "testing",
    description: "Deterministic frames (gradient, moving bar) for testing hosts without a model.",
    inputs: &[],
    outputs: &[PortDescriptor::required(
        "frames",
        ValueKind::Frames,
        "The generated frames",
    )],
    widgets: &[
        WidgetDescriptor {
            name: "frames",
            tooltip: "Number of frames",
            spec: WidgetSpec::Int {
                default: 8,
                min: 1,
                max: 1024,
                step: 1,
            },
        },
        WidgetDescriptor {
            name: "width",
            tooltip: "Width in pixels",
            spec: WidgetSpec::Int {
                default: 64,
                min: 8,
                max: 4096,
                step: 8,
            },
        },
        WidgetDescriptor {
            name: "height",
            tooltip: "Height in pixels",
            spec: WidgetSpec::Int {
                default: 48,
                min: 8,
                max: 4096,
                step: 8,
            },
        },
        WidgetDescriptor {
            name: "seed",
            tooltip: "Shifts colours and bar position, so different seeds give different frames",
            spec: WidgetSpec::Int {
                default: 0,
                min: 0,
                max: u32::MAX as i64,
                step: 1,
            },
        },
        WidgetDescriptor {
            name: "color_space",
            tooltip: "Colour space the samples are tagged with",
            spec: WidgetSpec::Enum {
                default: "SRGB",
                choices: &["SRGB", "LINEAR"],
            },
        },
    ],
    is_output: false,
    not_idempotent: false,
};

/// Largest TestPattern output, in pixels over all frames (768 MB of f32 RGB).
const MAX_PATTERN_PIXELS: u64 = 1 << 26;

impl Node for TestPattern {
    fn descriptor(&self) -> &'static NodeDescriptor {
        &TEST_PATTERN
    }

    fn execute(
        &self,
        ctx: &mut ExecContext<'_>,
        params: &Params,
        _inputs: &Inputs<'_>,
    ) -> Result<Vec<Value>, NodeError> {
        // Ranges are validated, so these conversions cannot truncate.
        let count = params.int("frames")? as u32;
        let width = params.int("width")? as u32;
        let height = params.int("height")? as u32;
        let seed = params.int("seed")? as u64;
        let color_space = match params.text("color_space")? {
            "LINEAR" => ColorSpace::linear(),
            _ => ColorSpace::srgb(),
        };
        // Widget ranges alone would allow ~200 GB; refuse rather than abort on allocation.
        let pixels = count as u64 * width as u64 * height as u64;
        if pixels > MAX_PATTERN_PIXELS {
            return Err(NodeError::Failed {
                node: TEST_PATTERN.id,
                message: format!(
                    "{count} frames of {width}x{height} are {pixels} pixels, more than the \
                     {MAX_PATTERN_PIXELS} this test node generates"
                ),
            });
        }
        let mut samples = Vec::with_capacity(count as usize * width as usize * height as usize * 3);
        for frame in 0..count {
            let bar = ((frame as u64 * 4 + seed) % width as u64) as u32;
            let blue = ((frame as u64 * 37 + seed * 11) % 256) as f32 / 255.0;
            for y in 0..height {
                for x in 0..width {
                    if x == bar {
                        samples.extend([1.0, 1.0, 1.0]);
                    } else {
                        samples.extend([
                            x as f32 / (width - 1) as f32,
                            y as f32 / (height - 1) as f32,
                            blue,
                        ]);
                    }
                }
            }
            ctx.progress(frame + 1, count)?;
        }
        let frames =
            Frames::new(width, height, 3, color_space, samples).map_err(|e| NodeError::Failed {
                node: TEST_PATTERN.id,
                message: e.to_string(),
            })?;
        Ok(vec![Value::Frames(Arc::new(frames))])
    }
}

/// Passes frames through after `steps` slow steps, reporting progress and polling abort at each
/// step like a sampler does: cancellation can be tested without a model.
pub struct Delay;

static DELAY: NodeDescriptor = NodeDescriptor {
    id: "Delay",
    version: 1,
    display_name: "Delay",
    category: "testing",
    description: "Passes frames through after `steps` steps of `step_ms` each, reporting \
                  progress and polling abort every step (a model-free stand-in for a sampler).",
    inputs: &[PortDescriptor::required(
        "frames",
        ValueKind::Frames,
        "Frames to pass through",
    )],
    outputs: &[PortDescriptor::required(
        "frames",
        ValueKind::Frames,
        "The same frames",
    )],
    widgets: &[
        WidgetDescriptor {
            name: "steps",
            tooltip: "Number of steps",
            spec: WidgetSpec::Int {
                default: 10,
                min: 1,
                max: 1_000_000,
                step: 1,
            },
        },
        WidgetDescriptor {
            name: "step_ms",
            tooltip: "Milliseconds per step",
            spec: WidgetSpec::Int {
                default: 10,
                min: 0,
                max: 60_000,
                step: 1,
            },
        },
    ],
    is_output: false,
    not_idempotent: false,
};

impl Node for Delay {
    fn descriptor(&self) -> &'static NodeDescriptor {
        &DELAY
    }

    fn execute(
        &self,
        ctx: &mut ExecContext<'_>,
        params: &Params,
        inputs: &Inputs<'_>,
    ) -> Result<Vec<Value>, NodeError> {
        let frames = inputs.frames("frames")?;
        let steps = params.int("steps")? as u32;
        let step = Duration::from_millis(params.int("step_ms")? as u64);
        for done in 1..=steps {
            std::thread::sleep(step);
            ctx.progress(done, steps)?;
        }
        Ok(vec![Value::Frames(frames.clone())])
    }
}

/// Panics when its `panic` widget is true: exercises the plugin's panic firewall.
pub struct DebugPanic;

static DEBUG_PANIC: NodeDescriptor = NodeDescriptor {
    id: "DebugPanic",
    version: 1,
    display_name: "Debug Panic (diagnostics)",
    category: "testing/diagnostics",
    description: "Panics with `message` when `panic` is on, to check that hosts survive a \
                  panicking node; otherwise outputs 0.",
    inputs: &[],
    outputs: &[PortDescriptor::required(
        "value",
        ValueKind::Int,
        "Always 0",
    )],
    widgets: &[
        WidgetDescriptor {
            name: "panic",
            tooltip: "Panic inside execute",
            spec: WidgetSpec::Bool { default: false },
        },
        WidgetDescriptor {
            name: "message",
            tooltip: "The panic message",
            spec: WidgetSpec::String {
                default: "DebugPanic was asked to panic",
                multiline: false,
            },
        },
    ],
    is_output: false,
    not_idempotent: false,
};

impl Node for DebugPanic {
    fn descriptor(&self) -> &'static NodeDescriptor {
        &DEBUG_PANIC
    }

    fn execute(
        &self,
        _ctx: &mut ExecContext<'_>,
        params: &Params,
        _inputs: &Inputs<'_>,
    ) -> Result<Vec<Value>, NodeError> {
        if params.bool("panic")? {
            panic!("{}", params.text("message")?);
        }
        Ok(vec![Value::Int(0)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::ParamValue;

    fn pattern(seed: i64) -> Arc<Frames> {
        let params = [
            ("frames", ParamValue::Int(3)),
            ("seed", ParamValue::Int(seed)),
        ];
        match crate::run_node(&TestPattern, &params, &[], None)
            .unwrap()
            .remove(0)
        {
            Value::Frames(frames) => frames,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn test_pattern_is_deterministic_and_seeded() {
        assert_eq!(pattern(1).content_hash(), pattern(1).content_hash());
        assert_ne!(pattern(1).content_hash(), pattern(2).content_hash());
        assert_eq!(pattern(0).frame_count(), 3);
    }

    #[test]
    fn delay_stops_at_the_step_that_was_refused() {
        let params = Params::resolve(
            &DELAY,
            [
                ("steps", ParamValue::Int(100)),
                ("step_ms", ParamValue::Int(0)),
            ],
        )
        .unwrap();
        let values = [Some(Value::Frames(pattern(0)))];
        let inputs = Inputs::new(&DELAY, &values).unwrap();
        let mut calls = 0;
        let mut progress = |step, _| {
            calls += 1;
            step < 5
        };
        let mut ctx = ExecContext::new("Delay", &mut progress, None);
        let err = Delay.execute(&mut ctx, &params, &inputs).unwrap_err();
        assert!(
            matches!(
                err,
                NodeError::Cancelled {
                    step: 5,
                    total: 100,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(calls, 5);
    }
}
