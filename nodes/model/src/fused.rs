//! Fused CPU kernels, each with its own backward pass, for the element-wise parts of a block:
//! adaLN modulation (`LayerNorm(x) * (1 + scale) + shift`), the exact (erf) GELU and a
//! linear layer's bias.
//!
//! Why: candle's autograd allocates, zero-fills and accumulates a full-size gradient for every
//! op on the tape, so a layer norm composed of nine ops costs nine such passes forward and
//! more backward; one fused op costs one. Other devices and dtypes take the composed path,
//! which the tests compare these kernels against.

use crate::attention::exp_approx;
use crate::error::Result;
use candle_core::{CpuStorage, DType, Layout, Shape, Tensor, D};

/// The layer norm's epsilon (the transformer's).
pub const NORM_EPS: f64 = 1e-6;

fn cpu_f32(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// The `f32` slice of a contiguous CPU storage.
fn contiguous<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    name: &str,
) -> candle_core::Result<&'a [f32]> {
    if !layout.is_contiguous() {
        candle_core::bail!("{name} must be contiguous");
    }
    let data = storage.as_slice::<f32>()?;
    Ok(&data[layout.start_offset()..layout.start_offset() + layout.shape().elem_count()])
}

/// The contiguous `f32` data of a CPU tensor, as a fresh vector (a backward's saved input).
fn values(x: &Tensor) -> candle_core::Result<Vec<f32>> {
    x.flatten_all()?.to_vec1::<f32>()
}

// ---------------------------------------------------------------------------------------------
// adaLN modulation

/// `LayerNorm(x) * (1 + scale) + shift` over the last dim, without affine parameters. `x` is
/// `[..., n, h]`; `shift` and `scale` are `[n, h]` (shared by the leading dims) or `x`'s shape.
pub fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    let shared = shift.dims() == scale.dims()
        && (shift.dims() == x.dims()
            || (shift.rank() == 2 && x.rank() >= 2 && shift.dims() == &x.dims()[x.rank() - 2..]));
    if !(cpu_f32(x) && cpu_f32(shift) && cpu_f32(scale) && shared) {
        return composed_modulate(x, shift, scale);
    }
    let (x, shift, scale) = (x.contiguous()?, shift.contiguous()?, scale.contiguous()?);
    if x.track_op() || shift.track_op() || scale.track_op() {
        Ok(x.apply_op3(&shift, &scale, Modulate)?)
    } else {
        Ok(x.apply_op3_no_bwd(&shift, &scale, &Modulate)?)
    }
}

/// The same from candle ops (any device and dtype; the reference of the tests).
pub fn composed_modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let variance = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(variance + NORM_EPS)?.sqrt()?)?;
    Ok(normed
        .broadcast_mul(&(scale + 1.0)?)?
        .broadcast_add(shift)?)
}

struct Modulate;

/// Per row: the normalised values and `1 / sqrt(var + eps)`.
fn normalise(row: &[f32], out: &mut [f32]) -> f32 {
    let h = row.len() as f32;
    let mean = row.iter().sum::<f32>() / h;
    let variance = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h;
    let inverse_std = 1.0 / (variance + NORM_EPS as f32).sqrt();
    for (o, v) in out.iter_mut().zip(row) {
        *o = (v - mean) * inverse_std;
    }
    inverse_std
}

impl candle_core::CustomOp3 for Modulate {
    fn name(&self) -> &'static str {
        "lct-modulate"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        shift: &CpuStorage,
        shift_layout: &Layout,
        scale: &CpuStorage,
        scale_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x_data = contiguous(x, x_layout, "modulate x")?;
        let shift = contiguous(shift, shift_layout, "modulate shift")?;
        let scale = contiguous(scale, scale_layout, "modulate scale")?;
        let h = *x_layout.dims().last().expect("rank >= 2");
        let period = shift.len();
        let mut out = vec![0f32; x_data.len()];
        for (r, (row, o)) in x_data
            .chunks_exact(h)
            .zip(out.chunks_exact_mut(h))
            .enumerate()
        {
            normalise(row, o);
            let at = (r * h) % period;
            for ((o, &sh), &sc) in o.iter_mut().zip(&shift[at..at + h]).zip(&scale[at..at + h]) {
                *o = *o * (1.0 + sc) + sh;
            }
        }
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        shift: &Tensor,
        scale: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let h = x.dim(D::Minus1)?;
        let (x_data, scale_data, grad_data) = (values(x)?, values(scale)?, values(grad)?);
        let period = scale_data.len();
        let mut dx = vec![0f32; x_data.len()];
        let mut dshift = vec![0f32; period];
        let mut dscale = vec![0f32; period];
        let mut normed = vec![0f32; h];
        let mut dnormed = vec![0f32; h];
        for (r, (row, g)) in x_data
            .chunks_exact(h)
            .zip(grad_data.chunks_exact(h))
            .enumerate()
        {
            let inverse_std = normalise(row, &mut normed);
            let at = (r * h) % period;
            let (mut mean_d, mut mean_dn) = (0f32, 0f32);
            for j in 0..h {
                dshift[at + j] += g[j];
                dscale[at + j] += g[j] * normed[j];
                dnormed[j] = g[j] * (1.0 + scale_data[at + j]);
                mean_d += dnormed[j];
                mean_dn += dnormed[j] * normed[j];
            }
            let (mean_d, mean_dn) = (mean_d / h as f32, mean_dn / h as f32);
            for j in 0..h {
                dx[r * h + j] = inverse_std * (dnormed[j] - mean_d - normed[j] * mean_dn);
            }
        }
        let device = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), device)?),
            Some(Tensor::from_vec(dshift, shift.shape(), device)?),
            Some(Tensor::from_vec(dscale, scale.shape(), device)?),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// GELU (erf)

/// erf(x) to about 1.5e-7 (Abramowitz and Stegun 7.1.26), branch-free so that loops vectorise.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp_approx(-a * a);
    y.copysign(x)
}

/// The exact GELU, `x Φ(x)` with Φ the normal CDF.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if !cpu_f32(x) {
        return Ok(x.gelu_erf()?);
    }
    let x = x.contiguous()?;
    if x.track_op() {
        Ok(x.apply_op1(GeluErf)?)
    } else {
        Ok(x.apply_op1_no_bwd(&GeluErf)?)
    }
}

struct GeluErf;

impl candle_core::CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "lct-gelu-erf"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(x, layout, "gelu x")?;
        let out = x
            .iter()
            .map(|&v| 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2)))
            .collect();
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _out: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // d/dx x Φ(x) = Φ(x) + x φ(x).
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        let (x_data, grad_data) = (values(x)?, values(grad)?);
        let dx = x_data
            .iter()
            .zip(&grad_data)
            .map(|(&v, &g)| {
                let cdf = 0.5 * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
                g * (cdf + v * INV_SQRT_2PI * exp_approx(-0.5 * v * v))
            })
            .collect();
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

// ---------------------------------------------------------------------------------------------
// Linear

/// `x W^T + b` for `x` of any rank (`[..., in]`), without broadcasting the weight over the
/// leading dims (whose gradient candle would reduce slowly) and with a fused bias.
pub fn linear(layer: &candle_nn::Linear, x: &Tensor) -> Result<Tensor> {
    let weight = layer.weight();
    if !cpu_f32(x) {
        return Ok(candle_core::Module::forward(layer, x)?);
    }
    let dims = x.dims().to_vec();
    let (rows, inputs) = (x.elem_count() / dims[dims.len() - 1], dims[dims.len() - 1]);
    let flat = x.reshape((rows, inputs))?.matmul(&weight.t()?)?;
    let out = match layer.bias() {
        Some(bias) if flat.track_op() || bias.track_op() => flat.apply_op2(bias, AddBias)?,
        Some(bias) => flat.apply_op2_no_bwd(bias, &AddBias)?,
        None => flat,
    };
    let mut out_dims = dims;
    *out_dims.last_mut().expect("rank >= 1") = weight.dim(0)?;
    Ok(out.reshape(out_dims)?)
}

struct AddBias;

impl candle_core::CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        "lct-add-bias"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(x, x_layout, "linear output")?;
        let bias = contiguous(bias, bias_layout, "linear bias")?;
        let mut out = x.to_vec();
        for row in out.chunks_exact_mut(bias.len()) {
            for (o, b) in row.iter_mut().zip(bias) {
                *o += b;
            }
        }
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        bias: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_data = values(grad)?;
        let mut dbias = vec![0f32; bias.elem_count()];
        for row in grad_data.chunks_exact(dbias.len()) {
            for (d, g) in dbias.iter_mut().zip(row) {
                *d += g;
            }
        }
        Ok((
            Some(grad.clone()),
            Some(Tensor::from_vec(dbias, bias.shape(), bias.device())?),
        ))
    }
}
