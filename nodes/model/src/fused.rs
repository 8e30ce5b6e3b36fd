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

/// How a modulation `[samples, rows, h]` lines up with `x` viewed as `[batch, n, h]`:
/// `samples` is 1 (shared by the batch) or `batch`, `rows` is 1 (one per sample) or `n` (one
/// per token). `None` when it does not.
#[derive(Clone, Copy)]
struct ModulationShape {
    /// x's rows per sample.
    n: usize,
    h: usize,
    per_sample: bool,
    per_token: bool,
}

impl ModulationShape {
    fn of(x: &[usize], modulation: &[usize]) -> Option<Self> {
        if x.len() < 2 || modulation.len() < 2 || modulation.len() > x.len() {
            return None;
        }
        let (n, h) = (x[x.len() - 2], x[x.len() - 1]);
        let batch: usize = x[..x.len() - 2].iter().product();
        let (m_rows, m_h) = (
            modulation[modulation.len() - 2],
            modulation[modulation.len() - 1],
        );
        let m_samples: usize = modulation[..modulation.len() - 2].iter().product();
        let same_leading =
            modulation.len() == x.len() && modulation[..modulation.len() - 2] == x[..x.len() - 2];
        let per_sample = m_samples != 1 || (same_leading && batch == 1);
        let fits = m_h == h
            && (m_rows == n || m_rows == 1)
            && (m_samples == 1 || (same_leading && m_samples == batch));
        fits.then_some(Self {
            n,
            h,
            per_sample,
            per_token: m_rows == n,
        })
    }

    /// Offset into the modulation of x's row `r`.
    fn offset(&self, r: usize) -> usize {
        let (sample, token) = (r / self.n, r % self.n);
        let rows = if self.per_token { self.n } else { 1 };
        let row = if self.per_sample { sample * rows } else { 0 }
            + if self.per_token { token } else { 0 };
        row * self.h
    }
}

/// `LayerNorm(x) * (1 + scale) + shift` over the last dim, without affine parameters. `x` is
/// `[..., n, h]`; `shift` and `scale` are `[n, h]` (shared by the leading dims), x's shape, or
/// `[..., 1, h]` (one per sample, shared by its tokens: Wan's per-sample timestep).
pub fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    let shared =
        shift.dims() == scale.dims() && ModulationShape::of(x.dims(), shift.dims()).is_some();
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
        let shape = ModulationShape::of(x_layout.dims(), shift_layout.dims())
            .ok_or_else(|| candle_core::Error::Msg("modulate: shapes do not line up".into()))?;
        let shift = contiguous(shift, shift_layout, "modulate shift")?;
        let scale = contiguous(scale, scale_layout, "modulate scale")?;
        let h = shape.h;
        let mut out = vec![0f32; x_data.len()];
        for (r, (row, o)) in x_data
            .chunks_exact(h)
            .zip(out.chunks_exact_mut(h))
            .enumerate()
        {
            normalise(row, o);
            let at = shape.offset(r);
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
        let shape = ModulationShape::of(x.dims(), shift.dims())
            .ok_or_else(|| candle_core::Error::Msg("modulate: shapes do not line up".into()))?;
        let h = shape.h;
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
            let at = shape.offset(r);
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
// Gated residual

/// `x + update * gate`, the adaLN-Zero residual: `x` and `update` `[..., n, h]`, `gate` shaped
/// as a [`modulate`] modulation (per token, per sample, or shared). One pass each way, and
/// the gate's gradient summed as it is read, not through candle's broadcast reduction.
pub fn gated_residual(x: &Tensor, update: &Tensor, gate: &Tensor) -> Result<Tensor> {
    let fits = x.dims() == update.dims() && ModulationShape::of(x.dims(), gate.dims()).is_some();
    if !(cpu_f32(x) && cpu_f32(update) && cpu_f32(gate) && fits) {
        return Ok((x + update.broadcast_mul(gate)?)?);
    }
    let (x, update, gate) = (x.contiguous()?, update.contiguous()?, gate.contiguous()?);
    if x.track_op() || update.track_op() || gate.track_op() {
        Ok(x.apply_op3(&update, &gate, GatedResidual)?)
    } else {
        Ok(x.apply_op3_no_bwd(&update, &gate, &GatedResidual)?)
    }
}

struct GatedResidual;

impl candle_core::CustomOp3 for GatedResidual {
    fn name(&self) -> &'static str {
        "lct-gated-residual"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        update: &CpuStorage,
        update_layout: &Layout,
        gate: &CpuStorage,
        gate_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let shape = ModulationShape::of(x_layout.dims(), gate_layout.dims()).ok_or_else(|| {
            candle_core::Error::Msg("gated residual: shapes do not line up".into())
        })?;
        let x = contiguous(x, x_layout, "residual x")?;
        let update = contiguous(update, update_layout, "residual update")?;
        let gate = contiguous(gate, gate_layout, "residual gate")?;
        let h = shape.h;
        let mut out = x.to_vec();
        for (r, (o, u)) in out
            .chunks_exact_mut(h)
            .zip(update.chunks_exact(h))
            .enumerate()
        {
            let at = shape.offset(r);
            for ((o, u), g) in o.iter_mut().zip(u).zip(&gate[at..at + h]) {
                *o += u * g;
            }
        }
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        update: &Tensor,
        gate: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let shape = ModulationShape::of(x.dims(), gate.dims()).ok_or_else(|| {
            candle_core::Error::Msg("gated residual: shapes do not line up".into())
        })?;
        let h = shape.h;
        let (update_data, gate_data, grad_data) = (values(update)?, values(gate)?, values(grad)?);
        let mut dupdate = vec![0f32; update_data.len()];
        let mut dgate = vec![0f32; gate_data.len()];
        for (r, ((g, u), du)) in grad_data
            .chunks_exact(h)
            .zip(update_data.chunks_exact(h))
            .zip(dupdate.chunks_exact_mut(h))
            .enumerate()
        {
            let at = shape.offset(r);
            for j in 0..h {
                du[j] = g[j] * gate_data[at + j];
                dgate[at + j] += g[j] * u[j];
            }
        }
        let device = x.device();
        Ok((
            Some(grad.clone()),
            Some(Tensor::from_vec(dupdate, update.shape(), device)?),
            Some(Tensor::from_vec(dgate, gate.shape(), device)?),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Rotary position embedding on adjacent pairs

/// Rotates each adjacent pair `(x[2i], x[2i+1])` of `x` `[batch, tokens, heads, head_dim]` by
/// its token's angle: `cos`, `sin` `[tokens, head_dim / 2]` (Wan's RoPE). One pass each way;
/// the backward pass rotates the gradient back.
pub fn rope_pairs(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (_, tokens, heads, head_dim) = x.dims4()?;
    let table = [tokens, head_dim / 2];
    if !(cpu_f32(x) && cpu_f32(cos) && cos.dims() == table && sin.dims() == table) {
        return composed_rope_pairs(x, cos, sin);
    }
    let op = RopePairs {
        cos: values(cos)?,
        sin: values(sin)?,
        tokens,
        heads,
        head_dim,
    };
    let x = x.contiguous()?;
    if x.track_op() {
        Ok(x.apply_op1(op)?)
    } else {
        Ok(x.apply_op1_no_bwd(&op)?)
    }
}

/// The same from candle ops (any device and dtype; the reference of the tests).
pub fn composed_rope_pairs(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    use candle_core::IndexOp;
    let (batch, tokens, heads, head_dim) = x.dims4()?;
    let pairs = x.reshape((batch, tokens, heads, head_dim / 2, 2))?;
    let x1 = pairs.i((.., .., .., .., 0))?;
    let x2 = pairs.i((.., .., .., .., 1))?;
    let cos = cos
        .reshape((1, tokens, 1, head_dim / 2))?
        .to_dtype(x.dtype())?;
    let sin = sin
        .reshape((1, tokens, 1, head_dim / 2))?
        .to_dtype(x.dtype())?;
    let even = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
    let odd = (x1.broadcast_mul(&sin)? + x2.broadcast_mul(&cos)?)?;
    Ok(Tensor::stack(&[even, odd], D::Minus1)?.reshape((batch, tokens, heads, head_dim))?)
}

struct RopePairs {
    cos: Vec<f32>,
    sin: Vec<f32>,
    tokens: usize,
    heads: usize,
    head_dim: usize,
}

impl RopePairs {
    /// Rotates every pair of `data` (`[batch, tokens, heads, head_dim]`) by its token's angle,
    /// or back (`direction` -1).
    fn rotate(&self, data: &[f32], direction: f32) -> Vec<f32> {
        let (d, half) = (self.head_dim, self.head_dim / 2);
        let mut out = vec![0f32; data.len()];
        for (row, (x, o)) in data
            .chunks_exact(d)
            .zip(out.chunks_exact_mut(d))
            .enumerate()
        {
            let at = ((row / self.heads) % self.tokens) * half;
            let (cos, sin) = (&self.cos[at..at + half], &self.sin[at..at + half]);
            for i in 0..half {
                let (a, b) = (x[2 * i], x[2 * i + 1]);
                let s = direction * sin[i];
                o[2 * i] = a * cos[i] - b * s;
                o[2 * i + 1] = a * s + b * cos[i];
            }
        }
        out
    }
}

impl candle_core::CustomOp1 for RopePairs {
    fn name(&self) -> &'static str {
        "lct-rope-pairs"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(x, layout, "rope x")?;
        Ok((CpuStorage::F32(self.rotate(x, 1.0)), layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _out: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dx = self.rotate(&values(grad)?, -1.0);
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

// ---------------------------------------------------------------------------------------------
// RMS norm

/// `x / sqrt(mean(x^2) + eps) * weight` over the last dim (Wan's q/k norm across heads), in one
/// pass forward and one backward instead of six candle ops and their gradients.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let h = x.dim(D::Minus1)?;
    if !(cpu_f32(x) && cpu_f32(weight) && weight.dims() == [h]) {
        return composed_rms_norm(x, weight, eps);
    }
    let (x, weight) = (x.contiguous()?, weight.contiguous()?);
    let op = RmsNorm { eps: eps as f32 };
    if x.track_op() || weight.track_op() {
        Ok(x.apply_op2(&weight, op)?)
    } else {
        Ok(x.apply_op2_no_bwd(&weight, &op)?)
    }
}

/// The same from candle ops (any device and dtype; the reference of the tests).
pub fn composed_rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let rms = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    Ok(x.broadcast_div(&rms)?.broadcast_mul(weight)?)
}

struct RmsNorm {
    eps: f32,
}

/// `1 / sqrt(mean(row^2) + eps)`.
fn inverse_rms(row: &[f32], eps: f32) -> f32 {
    let mean_square = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
    1.0 / (mean_square + eps).sqrt()
}

impl candle_core::CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "lct-rms-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(x, x_layout, "rms norm x")?;
        let weight = contiguous(weight, weight_layout, "rms norm weight")?;
        let mut out = vec![0f32; x.len()];
        for (row, o) in x
            .chunks_exact(weight.len())
            .zip(out.chunks_exact_mut(weight.len()))
        {
            let r = inverse_rms(row, self.eps);
            for ((o, v), w) in o.iter_mut().zip(row).zip(weight) {
                *o = v * r * w;
            }
        }
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // y = x r w with r = (mean(x^2) + eps)^-1/2: dx = r (g w) - x r^3 mean(g w x),
        // dw = sum over rows of g x r.
        let (x_data, w, grad_data) = (values(x)?, values(weight)?, values(grad)?);
        let h = w.len();
        let mut dx = vec![0f32; x_data.len()];
        let mut dw = vec![0f32; h];
        for ((row, g), d) in x_data
            .chunks_exact(h)
            .zip(grad_data.chunks_exact(h))
            .zip(dx.chunks_exact_mut(h))
        {
            let r = inverse_rms(row, self.eps);
            let mut mean_gwx = 0f32;
            for j in 0..h {
                mean_gwx += g[j] * w[j] * row[j];
                dw[j] += g[j] * row[j] * r;
            }
            let correction = mean_gwx / h as f32 * r * r * r;
            for j in 0..h {
                d[j] = r * g[j] * w[j] - row[j] * correction;
            }
        }
        let device = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), device)?),
            Some(Tensor::from_vec(dw, weight.shape(), device)?),
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

/// `tanh` from one [`exp_approx`] of a non-positive argument: vectorises, absolute error
/// about 1e-7 (relative error grows only where tanh is near 0, where GELU multiplies it by a
/// small x anyway).
fn tanh_approx(u: f32) -> f32 {
    let e = exp_approx(-2.0 * u.abs());
    ((1.0 - e) / (1.0 + e)).copysign(u)
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_CUBIC: f32 = 0.044_715;

/// GELU's tanh approximation, `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, as Wan's
/// feed-forward uses it; forward and backward in one pass each, without libm's scalar tanh.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    if !cpu_f32(x) {
        return Ok(x.gelu()?);
    }
    let x = x.contiguous()?;
    if x.track_op() {
        Ok(x.apply_op1(GeluTanh)?)
    } else {
        Ok(x.apply_op1_no_bwd(&GeluTanh)?)
    }
}

struct GeluTanh;

impl candle_core::CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "lct-gelu-tanh"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(x, layout, "gelu x")?;
        let out = x
            .iter()
            .map(|&v| {
                let u = SQRT_2_OVER_PI * (v + GELU_CUBIC * v * v * v);
                0.5 * v * (1.0 + tanh_approx(u))
            })
            .collect();
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _out: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // d/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) du/dx, du/dx = c (1 + 3 a x^2).
        let (x_data, grad_data) = (values(x)?, values(grad)?);
        let dx = x_data
            .iter()
            .zip(&grad_data)
            .map(|(&v, &g)| {
                let u = SQRT_2_OVER_PI * (v + GELU_CUBIC * v * v * v);
                let t = tanh_approx(u);
                let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * v * v);
                g * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du)
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
