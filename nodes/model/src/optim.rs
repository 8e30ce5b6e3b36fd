//! AdamW with global gradient-norm clipping, a warm-up and cosine learning-rate schedule and
//! an exponential moving average of the weights, over named candle `Var`s, with its state
//! saved and restored exactly (moments, trained weights, step), so that a long run can be
//! trained in pieces.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::weights::read_safetensors;
use crate::{Error, Result};

/// The optimiser's settings; saved with its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimConfig {
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    /// Global gradient-norm clip; 0 disables clipping.
    pub grad_clip: f64,
    /// Steps over which the learning rate rises linearly from 0 to `learning_rate`.
    pub warmup_steps: u64,
    /// Steps after the warm-up over which it falls along a cosine to
    /// `min_lr_ratio x learning_rate`, where it stays (0: constant after the warm-up).
    pub decay_steps: u64,
    pub min_lr_ratio: f64,
    /// Decay per step of the moving average of the weights (0: none). The average starts at
    /// the initial weights and uses `min(ema_decay, (1 + n) / (10 + n))` at step `n`, so that
    /// an early average is not dominated by the initialisation.
    pub ema_decay: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            learning_rate: 1e-3,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            grad_clip: 1.0,
            warmup_steps: 0,
            decay_steps: 0,
            min_lr_ratio: 0.1,
            ema_decay: 0.0,
        }
    }
}

impl OptimConfig {
    /// The learning rate of step `step` (counted from 1) under the warm-up and cosine decay.
    pub fn learning_rate_at(&self, step: u64) -> f64 {
        let base = self.learning_rate;
        if step <= self.warmup_steps {
            return base * step as f64 / self.warmup_steps.max(1) as f64;
        }
        if self.decay_steps == 0 {
            return base;
        }
        let progress = ((step - self.warmup_steps) as f64 / self.decay_steps as f64).min(1.0);
        let floor = base * self.min_lr_ratio;
        floor + (base - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }

    fn check(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(Error::Training(format!(
                "EMA decay {} must lie in 0..1 (0: off)",
                self.ema_decay
            )));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(Error::Training(format!(
                "the smallest learning-rate ratio {} must lie in 0..=1",
                self.min_lr_ratio
            )));
        }
        Ok(())
    }
}

/// What a step did.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    pub step: u64,
    pub learning_rate: f64,
    pub grad_norm: f32,
}

/// One trained variable: its name, the variable, AdamW's moments and its moving average.
struct Parameter {
    name: String,
    var: Var,
    first: Tensor,
    second: Tensor,
    average: Option<Tensor>,
}

/// The optimiser over every variable of a `VarMap`, in name order (so that sums and saved
/// files do not depend on hash order).
pub struct Optimiser {
    cfg: OptimConfig,
    parameters: Vec<Parameter>,
    step: u64,
}

#[derive(Serialize, Deserialize)]
struct SavedState {
    step: u64,
    config: OptimConfig,
}

/// The file of moments, trained weights and averages, and the file of the step and settings.
pub const OPTIMISER_TENSORS: &str = "optimiser.safetensors";
pub const OPTIMISER_STATE: &str = "optimiser.json";

impl Optimiser {
    pub fn new(vars: &VarMap, cfg: OptimConfig) -> Result<Self> {
        cfg.check()?;
        let mut parameters = vars
            .data()
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(name, var)| {
                let zeros = var.zeros_like()?;
                Ok(Parameter {
                    name: name.clone(),
                    var: var.clone(),
                    first: zeros.clone(),
                    second: zeros,
                    average: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        parameters.sort_by(|a, b| a.name.cmp(&b.name));
        let mut optimiser = Self {
            cfg,
            parameters,
            step: 0,
        };
        optimiser.start_average()?;
        Ok(optimiser)
    }

    fn start_average(&mut self) -> Result<()> {
        let on = self.cfg.ema_decay > 0.0;
        for p in &mut self.parameters {
            p.average = if on {
                Some(p.var.as_tensor().copy()?.detach())
            } else {
                None
            };
        }
        Ok(())
    }

    pub fn config(&self) -> &OptimConfig {
        &self.cfg
    }

    /// Steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Trainable scalars.
    pub fn parameter_count(&self) -> usize {
        self.parameters.iter().map(|p| p.var.elem_count()).sum()
    }

    /// Replaces the warm-up, decay and base rate for the steps to come; the step count goes
    /// on, so a schedule set on a resumed run applies from where the run stands.
    pub fn set_schedule(
        &mut self,
        learning_rate: f64,
        warmup_steps: u64,
        decay_steps: u64,
        min_lr_ratio: f64,
    ) -> Result<()> {
        let cfg = OptimConfig {
            learning_rate,
            warmup_steps,
            decay_steps,
            min_lr_ratio,
            ..self.cfg.clone()
        };
        cfg.check()?;
        self.cfg = cfg;
        Ok(())
    }

    /// One AdamW step from `gradients` (summed from every store, in store order), clipped to
    /// the global norm; then the moving average.
    pub fn apply(&mut self, stores: &[GradStore]) -> Result<StepReport> {
        let mut gradients = Vec::with_capacity(self.parameters.len());
        let mut squared = 0f64;
        for p in &self.parameters {
            let mut sum: Option<Tensor> = None;
            for store in stores {
                if let Some(g) = store.get(p.var.as_tensor()) {
                    sum = Some(match sum {
                        Some(s) => (s + g)?,
                        None => g.clone(),
                    });
                }
            }
            if let Some(g) = &sum {
                squared += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
            gradients.push(sum);
        }
        let grad_norm = squared.sqrt();
        if !grad_norm.is_finite() {
            return Err(Error::Training(format!(
                "the gradient norm is {grad_norm} at step {}",
                self.step + 1
            )));
        }
        let clip = if self.cfg.grad_clip > 0.0 && grad_norm > self.cfg.grad_clip {
            self.cfg.grad_clip / grad_norm
        } else {
            1.0
        };
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let correction1 = 1.0 - b1.powi(t);
        let correction2 = 1.0 - b2.powi(t);
        let lr = self.cfg.learning_rate_at(self.step);
        let n = self.step as f64;
        let decay = self.cfg.ema_decay.min((1.0 + n) / (10.0 + n));
        for (p, g) in self.parameters.iter_mut().zip(gradients) {
            if let Some(g) = g {
                // Detached: a gradient may carry the graph it was computed through, and a
                // moment built from it would keep every earlier step's graph alive.
                let g = (g * clip)?.detach();
                p.first = ((&p.first * b1)? + (&g * (1.0 - b1))?)?.detach();
                p.second = ((&p.second * b2)? + (g.sqr()? * (1.0 - b2))?)?.detach();
                let update = ((&p.first / correction1)?
                    / ((&p.second / correction2)?.sqrt()? + self.cfg.epsilon)?)?;
                let decayed = (p.var.as_tensor() * (1.0 - lr * self.cfg.weight_decay))?;
                p.var.set(&(decayed - (update * lr)?)?)?;
            }
            if let Some(average) = &mut p.average {
                // Detached: an average built from the variable would record the operation
                // and keep every earlier average alive through its graph.
                *average = ((&*average * decay)? + (p.var.as_tensor() * (1.0 - decay))?)?.detach();
            }
        }
        Ok(StepReport {
            step: self.step,
            learning_rate: lr,
            grad_norm: grad_norm as f32,
        })
    }

    /// The weights to sample with, by name: the moving average when there is one, else the
    /// trained weights.
    pub fn sampling_tensors(&self) -> HashMap<String, Tensor> {
        self.parameters
            .iter()
            .map(|p| {
                let value = p.average.as_ref().unwrap_or(p.var.as_tensor());
                (p.name.clone(), value.clone())
            })
            .collect()
    }

    /// Runs `work` with the variables holding the sampling weights (the average), then puts
    /// the trained weights back.
    pub fn with_sampling_weights<R>(&self, work: impl FnOnce() -> R) -> Result<R> {
        if self.cfg.ema_decay == 0.0 {
            return Ok(work());
        }
        let trained: Vec<Tensor> = self
            .parameters
            .iter()
            .map(|p| p.var.as_tensor().copy())
            .collect::<candle_core::Result<_>>()?;
        for p in &self.parameters {
            p.var.set(p.average.as_ref().expect("averaged"))?;
        }
        let result = work();
        for (p, value) in self.parameters.iter().zip(&trained) {
            p.var.set(value)?;
        }
        Ok(result)
    }

    /// Writes [`OPTIMISER_TENSORS`] (moments, trained weights, averages) and
    /// [`OPTIMISER_STATE`] into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut tensors = HashMap::new();
        for p in &self.parameters {
            tensors.insert(format!("m.{}", p.name), p.first.clone());
            tensors.insert(format!("v.{}", p.name), p.second.clone());
            tensors.insert(format!("w.{}", p.name), p.var.as_tensor().clone());
            if let Some(average) = &p.average {
                tensors.insert(format!("a.{}", p.name), average.clone());
            }
        }
        let path = dir.join(OPTIMISER_TENSORS);
        candle_core::safetensors::save(&tensors, &path).map_err(|e| Error::Io {
            path,
            source: std::io::Error::other(e.to_string()),
        })?;
        let state = SavedState {
            step: self.step,
            config: self.cfg.clone(),
        };
        let path = dir.join(OPTIMISER_STATE);
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&state).expect("plain JSON"),
        )
        .map_err(|source| Error::Io { path, source })
    }

    /// Restores what [`Optimiser::save`] wrote into `dir`: the variables take the trained
    /// weights; every tensor is checked by name and shape.
    pub fn restore(&mut self, dir: &Path) -> Result<()> {
        let path = dir.join(OPTIMISER_STATE);
        let state: SavedState = crate::wan::config::read_json(&path)?;
        state.config.check()?;
        let tensors_path = dir.join(OPTIMISER_TENSORS);
        let device = match self.parameters.first() {
            Some(p) => p.var.device().clone(),
            None => candle_core::Device::Cpu,
        };
        let tensors = read_safetensors(&tensors_path, &device)?;
        let averaged = state.config.ema_decay > 0.0;
        for p in &mut self.parameters {
            let get = |kind: &str| -> Result<Tensor> {
                let name = format!("{kind}.{}", p.name);
                let found = tensors.get(&name).ok_or_else(|| {
                    Error::Training(format!("{}: no '{name}'", tensors_path.display()))
                })?;
                if found.dims() != p.var.dims() {
                    return Err(Error::Training(format!(
                        "{}: '{name}' has shape {:?}, the model's is {:?}",
                        tensors_path.display(),
                        found.dims(),
                        p.var.dims()
                    )));
                }
                Ok(found.clone())
            };
            p.first = get("m")?;
            p.second = get("v")?;
            p.var.set(&get("w")?)?;
            p.average = if averaged { Some(get("a")?) } else { None };
        }
        self.step = state.step;
        self.cfg = state.config;
        Ok(())
    }
}
