//! Measurements of a trained model, independent of training: held-out scenes, the world's
//! detectors on decoded pixels, chance-corrected agreement.
//!
//! - [`eval`]: the evaluation table (`lct-train eval`): seven ways of generating held-out
//!   scenes, a 10-shot KV-cache rollout and the KV cache's speed.
//! - [`prompts`]: prompt following of single shots (`lct-train probe-prompts`).
//! - [`context`]: whether a shot's loss depends on the context beside it
//!   (`lct-train probe-context`).

pub mod context;
pub mod eval;
pub mod prompts;
