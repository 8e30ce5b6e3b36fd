//! Interleaved 3D rotary position embedding: channel groups for (frame, height, width).
//!
//! Positions come from [`crate::layout::SceneLayout::rope_positions`]; this file only turns
//! them into rotations. Channel pairs `(2i, 2i+1)` are rotated together; the first
//! `rope_axes[0] / 2` pairs use the frame position, the next ones height, then width.

use crate::error::Result;
use candle_core::{Device, Tensor};

#[derive(Debug, Clone)]
pub struct Rope {
    axes: [usize; 3],
    theta: f64,
}

impl Rope {
    pub fn new(axes: [usize; 3], theta: f64) -> Self {
        Self { axes, theta }
    }

    /// `(cos, sin)`, each `[positions.len(), head_dim / 2]`, f32.
    pub fn cos_sin(&self, positions: &[[u32; 3]], device: &Device) -> Result<(Tensor, Tensor)> {
        let half: usize = self.axes.iter().sum::<usize>() / 2;
        let inverse_frequencies: Vec<(usize, f64)> = self
            .axes
            .iter()
            .enumerate()
            .flat_map(|(axis, &dim)| (0..dim / 2).map(move |i| (axis, (2 * i) as f64 / dim as f64)))
            .map(|(axis, exponent)| (axis, self.theta.powf(-exponent)))
            .collect();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for position in positions {
            for &(axis, frequency) in &inverse_frequencies {
                let angle = position[axis] as f64 * frequency;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let shape = (positions.len(), half);
        Ok((
            Tensor::from_vec(cos, shape, device)?,
            Tensor::from_vec(sin, shape, device)?,
        ))
    }
}

/// Rotates `x` (`[batch, heads, tokens, head_dim]`). The fused kernel has no backward pass,
/// so tensors that carry gradients take the composed (differentiable) path.
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    if x.track_op() {
        Ok(candle_nn::rotary_emb::rope_i_slow(&x, cos, sin)?)
    } else {
        Ok(candle_nn::rotary_emb::rope_i(&x, cos, sin)?)
    }
}
