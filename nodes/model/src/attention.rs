//! Masked multi-head attention in query/key blocks with an online softmax.
//!
//! Memory is linear in sequence length: no `L x L` score matrix is ever built outside the
//! test-only [`naive_attention`]. Because segment ranks grow along the sequence, the keys a
//! query block may see under either mask form a prefix `[0, end)` of which `[0, full_end)` is
//! wholly visible; blocks past `end` are skipped, and only blocks in `[full_end, end)` consult
//! [`AttentionMask::allows`] per element.
//!
//! Three implementations share that plan ([`KeyRange`]):
//! - a fused CPU kernel (gemm + vectorised online softmax) with a fused backward pass that
//!   recomputes each query block's probabilities instead of storing them: inference and
//!   training on CPU;
//! - a composition of candle ops, differentiable and device-generic (GPU);
//! - the naive masked softmax, the reference the tests compare against.

use crate::error::{Error, Result};
use crate::layout::AttentionMask;
use candle_core::{CpuStorage, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;
use std::sync::Arc;

/// Query rows per block of the fused kernel and the composed path.
pub const BLOCK_Q: usize = 256;
/// Keys per block.
pub const BLOCK_K: usize = 256;
/// Largest score matrix (elements, all heads) the training path builds densely: 256 MiB.
const NAIVE_TRAINING_LIMIT: usize = 64 << 20;
// 256 x 256 blocks measured best on 2 cores (of 64..512 x 128..1024): fewer, larger gemm calls.

/// The mask of one attention call: the rule and each token's segment rank.
#[derive(Debug, Clone)]
pub struct MaskSpec {
    pub mask: AttentionMask,
    pub query_ranks: Arc<[u32]>,
    pub key_ranks: Arc<[u32]>,
}

/// Keys `[0, full_end)` are visible to every query of a block, `[full_end, end)` to some,
/// the rest to none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRange {
    pub full_end: usize,
    pub end: usize,
}

impl MaskSpec {
    pub fn new(mask: AttentionMask, query_ranks: Vec<u32>, key_ranks: Vec<u32>) -> Result<Self> {
        for (name, ranks) in [("query", &query_ranks), ("key", &key_ranks)] {
            if let Some(i) = ranks.windows(2).position(|w| w[1] < w[0]) {
                return Err(Error::Layout(format!(
                    "{name} segment ranks must not decrease along the sequence (token {} has rank {} after {})",
                    i + 1,
                    ranks[i + 1],
                    ranks[i]
                )));
            }
        }
        Ok(Self {
            mask,
            query_ranks: query_ranks.into(),
            key_ranks: key_ranks.into(),
        })
    }

    /// Self-attention over one sequence.
    pub fn self_attention(mask: AttentionMask, ranks: Vec<u32>) -> Result<Self> {
        Self::new(mask, ranks.clone(), ranks)
    }

    /// Which keys the queries `[q_start, q_end)` may see.
    pub fn key_range(&self, q_start: usize, q_end: usize) -> KeyRange {
        let keys = self.key_ranks.len();
        match self.mask {
            AttentionMask::Bidirectional => KeyRange {
                full_end: keys,
                end: keys,
            },
            AttentionMask::ContextCausal => {
                let lowest = self.query_ranks[q_start];
                let highest = self.query_ranks[q_end - 1];
                KeyRange {
                    full_end: self.key_ranks.partition_point(|&r| r <= lowest),
                    end: self.key_ranks.partition_point(|&r| r <= highest),
                }
            }
        }
    }

    fn check(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(usize, usize, usize, usize, usize)> {
        let (b, h, lq, d) = q.dims4()?;
        let (kb, kh, lk, kd) = k.dims4()?;
        if (kb, kh, kd) != (b, h, d) || v.dims4()? != (kb, kh, lk, kd) {
            return Err(Error::Shape(format!(
                "attention q {:?}, k {:?}, v {:?} disagree",
                q.dims(),
                k.dims(),
                v.dims()
            )));
        }
        if self.query_ranks.len() != lq || self.key_ranks.len() != lk {
            return Err(Error::Shape(format!(
                "mask has {} query and {} key ranks for {lq} queries and {lk} keys",
                self.query_ranks.len(),
                self.key_ranks.len()
            )));
        }
        if lq == 0 || lk == 0 {
            return Err(Error::Shape("attention over an empty sequence".into()));
        }
        Ok((b, h, lq, lk, d))
    }
}

/// Attention for `q`, `k`, `v` of shape `[batch, heads, tokens, head_dim]`; returns
/// `[batch, query_tokens, heads * head_dim]`. Picks the fused kernel when it can.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, spec: &MaskSpec) -> Result<Tensor> {
    let needs_grad = q.track_op() || k.track_op() || v.track_op();
    if q.device().is_cpu() && q.dtype() == DType::F32 {
        return fused_attention(q, k, v, spec);
    }
    // For gradients on short sequences one dense score matrix is cheaper than many small
    // blocks (each a handful of ops on the backward tape); long ones stay blocked.
    let (b, h, lq, _) = q.dims4()?;
    let lk = k.dim(2)?;
    if needs_grad && b * h * lq * lk <= NAIVE_TRAINING_LIMIT {
        naive_attention(q, k, v, spec)
    } else {
        blocked_attention(q, k, v, spec)
    }
}

/// The reference: full masked softmax with the `L x L` matrix. Tests, and training on short
/// sequences.
pub fn naive_attention(q: &Tensor, k: &Tensor, v: &Tensor, spec: &MaskSpec) -> Result<Tensor> {
    let (b, h, lq, lk, d) = spec.check(q, k, v)?;
    // candle matmul needs standard strides; only the fused kernel reads arbitrary ones.
    let (q, k, v) = (&q.contiguous()?, &k.contiguous()?, &v.contiguous()?);
    let scale = 1.0 / (d as f64).sqrt();
    let mut bias = Vec::with_capacity(lq * lk);
    for &qr in spec.query_ranks.iter() {
        for &kr in spec.key_ranks.iter() {
            bias.push(if spec.mask.allows(qr, kr) {
                0f32
            } else {
                f32::NEG_INFINITY
            });
        }
    }
    let bias = Tensor::from_vec(bias, (lq, lk), q.device())?.to_dtype(q.dtype())?;
    let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&bias)?;
    // The fused softmax has no backward pass.
    let probabilities = if scores.track_op() {
        candle_nn::ops::softmax(&scores, D::Minus1)?
    } else {
        candle_nn::ops::softmax_last_dim(&scores)?
    };
    let out = probabilities.matmul(v)?;
    Ok(out.transpose(1, 2)?.reshape((b, lq, h * d))?)
}

/// Blocked online-softmax attention from candle ops: differentiable, any device.
pub fn blocked_attention(q: &Tensor, k: &Tensor, v: &Tensor, spec: &MaskSpec) -> Result<Tensor> {
    let (b, h, lq, _lk, d) = spec.check(q, k, v)?;
    // candle matmul needs standard strides; only the fused kernel reads arbitrary ones.
    let (q, k, v) = (&q.contiguous()?, &k.contiguous()?, &v.contiguous()?);
    let scale = 1.0 / (d as f64).sqrt();
    // A large finite negative rather than -inf keeps a wholly masked row free of NaN.
    const MASKED: f32 = -1.0e30;
    let mut out_blocks = Vec::with_capacity(lq.div_ceil(BLOCK_Q));
    for q_start in (0..lq).step_by(BLOCK_Q) {
        let q_len = BLOCK_Q.min(lq - q_start);
        let range = spec.key_range(q_start, q_start + q_len);
        let q_block = q.narrow(2, q_start, q_len)?;
        let mut running_max: Option<Tensor> = None;
        let mut denominator: Option<Tensor> = None;
        let mut accumulator: Option<Tensor> = None;
        for k_start in (0..range.end).step_by(BLOCK_K) {
            let k_len = BLOCK_K.min(range.end - k_start);
            let k_block = k.narrow(2, k_start, k_len)?;
            let v_block = v.narrow(2, k_start, k_len)?;
            let mut scores = (q_block.matmul(&k_block.t()?)? * scale)?;
            if k_start + k_len > range.full_end {
                let mut bias = Vec::with_capacity(q_len * k_len);
                for &qr in &spec.query_ranks[q_start..q_start + q_len] {
                    for &kr in &spec.key_ranks[k_start..k_start + k_len] {
                        bias.push(if spec.mask.allows(qr, kr) {
                            0f32
                        } else {
                            MASKED
                        });
                    }
                }
                let bias =
                    Tensor::from_vec(bias, (q_len, k_len), q.device())?.to_dtype(scores.dtype())?;
                scores = scores.broadcast_add(&bias)?;
            }
            // The shift is arbitrary for softmax, so it needs no gradient.
            let block_max = scores.max_keepdim(D::Minus1)?.detach();
            let new_max = match &running_max {
                Some(m) => m.maximum(&block_max)?,
                None => block_max,
            };
            let p = scores.broadcast_sub(&new_max)?.exp()?;
            let p_sum = p.sum_keepdim(D::Minus1)?;
            let pv = p.matmul(&v_block)?;
            match (&running_max, &denominator, &accumulator) {
                (Some(m), Some(l), Some(acc)) => {
                    let correction = (m - &new_max)?.exp()?;
                    denominator = Some((l * &correction)?.add(&p_sum)?);
                    accumulator = Some(acc.broadcast_mul(&correction)?.add(&pv)?);
                }
                _ => {
                    denominator = Some(p_sum);
                    accumulator = Some(pv);
                }
            }
            running_max = Some(new_max);
        }
        let (acc, l) = accumulator
            .zip(denominator)
            .ok_or_else(|| Error::Layout(format!("query {q_start} may attend to no key")))?;
        out_blocks.push(acc.broadcast_div(&l)?);
    }
    let out = Tensor::cat(&out_blocks, 2)?;
    Ok(out.transpose(1, 2)?.reshape((b, lq, h * d))?)
}

/// The fused CPU kernel, as a candle custom op over `(q, k, v)`; differentiable (see
/// [`FusedAttentionBackward`]).
pub fn fused_attention(q: &Tensor, k: &Tensor, v: &Tensor, spec: &MaskSpec) -> Result<Tensor> {
    spec.check(q, k, v)?;
    let op = FusedAttention { spec: spec.clone() };
    if q.track_op() || k.track_op() || v.track_op() {
        Ok(q.apply_op3(k, v, op)?)
    } else {
        Ok(q.apply_op3_no_bwd(k, v, &op)?)
    }
}

struct FusedAttention {
    spec: MaskSpec,
}

/// Runs `task(i)` for `i` in `0..count`: on rayon's pool when it has threads to spare, on the
/// calling thread otherwise (with one pool thread, callers on several threads would queue on
/// it instead of each using their own core).
fn for_each_task<S: Send>(
    count: usize,
    init: impl Fn() -> S + Sync + Send,
    task: impl Fn(&mut S, usize) + Sync + Send,
) {
    if rayon::current_num_threads() > 1 && count > 1 {
        (0..count).into_par_iter().for_each_init(init, task);
    } else {
        let mut state = init();
        for i in 0..count {
            task(&mut state, i);
        }
    }
}

/// Raw pointer that rayon tasks may share; each task writes disjoint rows.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    // A method (not field access) so closures capture the whole Send + Sync wrapper.
    fn at(self, index: usize) -> *mut f32 {
        unsafe { self.0.add(index) }
    }
}

struct Strided<'a> {
    data: &'a [f32],
    offset: usize,
    stride: [usize; 4],
}

impl<'a> Strided<'a> {
    fn new(storage: &'a CpuStorage, layout: &Layout, name: &str) -> candle_core::Result<Self> {
        let data = storage.as_slice::<f32>()?;
        let stride: [usize; 4] = layout
            .stride()
            .try_into()
            .map_err(|_| candle_core::Error::Msg(format!("attention {name} must be 4-D")))?;
        if stride[3] != 1 {
            candle_core::bail!("attention {name} needs a contiguous head dimension");
        }
        Ok(Self {
            data,
            offset: layout.start_offset(),
            stride,
        })
    }
    fn row_ptr(&self, b: usize, h: usize, token: usize) -> *const f32 {
        let index = self.offset + b * self.stride[0] + h * self.stride[1] + token * self.stride[2];
        // In bounds: candle validated the layout against the storage.
        self.data[index..].as_ptr()
    }
}

/// `dst = keep * dst + scale * lhs rhs` for an `m x k` lhs and a `k x n` rhs, each given as
/// (pointer, row stride, column stride) in elements; `dst` is `m x n`, row-major with row
/// stride `dst_rs`.
///
/// # Safety
/// Every pointer and stride must describe memory valid for the extents named.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    keep: f32,
    (lhs, lhs_rs, lhs_cs): (*const f32, usize, usize),
    (rhs, rhs_rs, rhs_cs): (*const f32, usize, usize),
    scale: f32,
) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            keep != 0.0,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            keep,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// The three operands of an attention op, checked: `(b, h, lq, lk, d)` and strided views.
#[allow(clippy::type_complexity)]
fn operands<'a>(
    (q_storage, q_layout): (&'a CpuStorage, &Layout),
    (k_storage, k_layout): (&'a CpuStorage, &Layout),
    (v_storage, v_layout): (&'a CpuStorage, &Layout),
) -> candle_core::Result<((usize, usize, usize, usize, usize), [Strided<'a>; 3])> {
    let [b, h, lq, d]: [usize; 4] = q_layout.dims().try_into().expect("checked 4-D");
    let lk = k_layout.dims()[2];
    Ok((
        (b, h, lq, lk, d),
        [
            Strided::new(q_storage, q_layout, "q")?,
            Strided::new(k_storage, k_layout, "k")?,
            Strided::new(v_storage, v_layout, "v")?,
        ],
    ))
}

impl candle_core::CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "lct-fused-attention"
    }

    fn cpu_fwd(
        &self,
        q_storage: &CpuStorage,
        q_layout: &Layout,
        k_storage: &CpuStorage,
        k_layout: &Layout,
        v_storage: &CpuStorage,
        v_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let ((b, h, lq, lk, d), [q, k, v]) = operands(
            (q_storage, q_layout),
            (k_storage, k_layout),
            (v_storage, v_layout),
        )?;
        let mut out = vec![0f32; b * lq * h * d];
        let out_ptr = SharedOut(out.as_mut_ptr());
        let scale = 1.0 / (d as f32).sqrt();
        let (block_q, block_k) = (BLOCK_Q, BLOCK_K);
        let q_blocks = lq.div_ceil(block_q);
        let spec = &self.spec;
        debug_assert_eq!(spec.key_ranks.len(), lk);
        let kernel = row_kernels();
        for_each_task(
            b * h * q_blocks,
            || Scratch::new(d, block_q, block_k),
            |scratch, task| {
                let block = task % q_blocks;
                let head = (task / q_blocks) % h;
                let batch = task / (q_blocks * h);
                let q_start = block * block_q;
                let q_len = block_q.min(lq - q_start);
                let range = spec.key_range(q_start, q_start + q_len);
                scratch.reset(q_len, d);
                for k_start in (0..range.end).step_by(block_k) {
                    let k_len = block_k.min(range.end - k_start);
                    let scores = &mut scratch.scores[..q_len * k_len];
                    // SAFETY: pointers and strides describe the validated candle layouts;
                    // `scores` holds q_len x k_len floats.
                    unsafe {
                        matmul(
                            (q_len, k_len, d),
                            scores.as_mut_ptr(),
                            k_len,
                            0.0,
                            (q.row_ptr(batch, head, q_start), q.stride[2], 1),
                            (k.row_ptr(batch, head, k_start), 1, k.stride[2]),
                            scale,
                        );
                    }
                    if k_start + k_len > range.full_end {
                        for i in 0..q_len {
                            let qr = spec.query_ranks[q_start + i];
                            let row = &mut scores[i * k_len..(i + 1) * k_len];
                            for (j, s) in row.iter_mut().enumerate() {
                                if !spec.mask.allows(qr, spec.key_ranks[k_start + j]) {
                                    *s = f32::NEG_INFINITY;
                                }
                            }
                        }
                    }
                    for i in 0..q_len {
                        let row = &mut scores[i * k_len..(i + 1) * k_len];
                        let block_max = (kernel.row_max)(row);
                        let old_max = scratch.row_max[i];
                        let new_max = old_max.max(block_max);
                        if new_max == f32::NEG_INFINITY {
                            row.fill(0.0);
                            continue;
                        }
                        let row_sum = (kernel.exp_shifted)(row, new_max);
                        let correction = exp_approx(old_max - new_max);
                        scratch.row_sum[i] = scratch.row_sum[i] * correction + row_sum;
                        scratch.row_max[i] = new_max;
                        if correction != 1.0 {
                            for a in &mut scratch.accumulator[i * d..(i + 1) * d] {
                                *a *= correction;
                            }
                        }
                    }
                    // SAFETY: as above; accumulator holds q_len x d floats.
                    unsafe {
                        matmul(
                            (q_len, d, k_len),
                            scratch.accumulator.as_mut_ptr(),
                            d,
                            1.0,
                            (scores.as_ptr(), k_len, 1),
                            (v.row_ptr(batch, head, k_start), v.stride[2], 1),
                            1.0,
                        );
                    }
                }
                for i in 0..q_len {
                    let inverse = if scratch.row_sum[i] > 0.0 {
                        1.0 / scratch.row_sum[i]
                    } else {
                        0.0
                    };
                    let token = q_start + i;
                    let dst = ((batch * lq + token) * h + head) * d;
                    for c in 0..d {
                        // SAFETY: (batch, token, head) rows are disjoint across tasks.
                        unsafe {
                            *out_ptr.at(dst + c) = scratch.accumulator[i * d + c] * inverse;
                        }
                    }
                }
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((b, lq, h * d))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        grad_out: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (_, _, lq, _) = q.dims4()?;
        let lk = k.dim(2)?;
        let backward = FusedAttentionBackward {
            spec: self.spec.clone(),
            out: out.contiguous()?,
            grad_out: grad_out.contiguous()?,
        };
        let packed = q
            .detach()
            .apply_op3_no_bwd(&k.detach(), &v.detach(), &backward)?;
        Ok((
            Some(packed.narrow(2, 0, lq)?),
            Some(packed.narrow(2, lq, lk)?),
            Some(packed.narrow(2, lq + lk, lk)?),
        ))
    }
}

/// Query rows per block of the backward pass: its two `rows x keys` scratch matrices stay in
/// cache for scenes of a few thousand tokens.
const BACKWARD_BLOCK_Q: usize = 64;

/// The gradients of [`FusedAttention`] given its output `O` and the output's gradient `dO`
/// (both `[B, Lq, H * D]`), as one `[B, H, Lq + 2 Lk, D]` tensor: dQ, then dK, then dV.
///
/// Per (batch, head) and query block, the block's scores against every key it may see are
/// recomputed and softmaxed exactly (the whole row is at hand), then
/// `dV += P^T dO`, `dP = dO V^T`, `dS = P (dP - rowsum(dO O))`, `dQ = dS K / sqrt(D)`,
/// `dK += dS^T Q / sqrt(D)`. Nothing of size `L x L` is kept between blocks.
struct FusedAttentionBackward {
    spec: MaskSpec,
    out: Tensor,
    grad_out: Tensor,
}

/// The `f32` slice of a contiguous CPU tensor, from its start offset.
fn cpu_slice<'a>(
    storage: &'a candle_core::Storage,
    layout: &Layout,
    name: &str,
) -> candle_core::Result<&'a [f32]> {
    match storage {
        candle_core::Storage::Cpu(cpu) if layout.is_contiguous() => {
            Ok(&cpu.as_slice::<f32>()?[layout.start_offset()..])
        }
        _ => candle_core::bail!("attention backward: {name} must be a contiguous CPU f32 tensor"),
    }
}

struct BackwardScratch {
    probabilities: Vec<f32>,
    grad_scores: Vec<f32>,
    row_dot: Vec<f32>,
}

impl candle_core::CustomOp3 for FusedAttentionBackward {
    fn name(&self) -> &'static str {
        "lct-fused-attention-backward"
    }

    fn cpu_fwd(
        &self,
        q_storage: &CpuStorage,
        q_layout: &Layout,
        k_storage: &CpuStorage,
        k_layout: &Layout,
        v_storage: &CpuStorage,
        v_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let ((b, h, lq, lk, d), [q, k, v]) = operands(
            (q_storage, q_layout),
            (k_storage, k_layout),
            (v_storage, v_layout),
        )?;
        let (out_storage, out_layout) = self.out.storage_and_layout();
        let out = cpu_slice(&out_storage, out_layout, "the output")?;
        let (grad_storage, grad_layout) = self.grad_out.storage_and_layout();
        let grad_out = cpu_slice(&grad_storage, grad_layout, "the output's gradient")?;
        if out_layout.dims() != [b, lq, h * d] || grad_layout.dims() != [b, lq, h * d] {
            candle_core::bail!(
                "attention backward: output {:?} and gradient {:?} are not [{b}, {lq}, {}]",
                out_layout.dims(),
                grad_layout.dims(),
                h * d
            );
        }
        let rows = lq + 2 * lk;
        let mut grads = vec![0f32; b * h * rows * d];
        let grads_ptr = SharedOut(grads.as_mut_ptr());
        let scale = 1.0 / (d as f32).sqrt();
        let spec = &self.spec;
        let kernel = row_kernels();
        let block_q = BACKWARD_BLOCK_Q;
        // The (batch, head) pairs own disjoint slices of `grads`, so they run side by side.
        for_each_task(
            b * h,
            || BackwardScratch {
                probabilities: vec![0.0; block_q * lk],
                grad_scores: vec![0.0; block_q * lk],
                row_dot: vec![0.0; block_q],
            },
            |scratch, task| {
                let (batch, head) = (task / h, task % h);
                let base = task * rows * d;
                // This task's rows of `grads`; no other task touches them.
                let (dq, dk, dv) = (
                    grads_ptr.at(base),
                    grads_ptr.at(base + lq * d),
                    grads_ptr.at(base + (lq + lk) * d),
                );
                // Row `token` of this head in `[B, Lq, H * D]`.
                let row_of = |token: usize| ((batch * lq + token) * h + head) * d;
                let row_stride = h * d;
                for q_start in (0..lq).step_by(block_q) {
                    let n = block_q.min(lq - q_start);
                    let range = spec.key_range(q_start, q_start + n);
                    let e = range.end;
                    let p = &mut scratch.probabilities[..n * e];
                    let ds = &mut scratch.grad_scores[..n * e];
                    let o_block = &out[row_of(q_start)..];
                    let do_block = &grad_out[row_of(q_start)..];
                    // SAFETY (every gemm below): pointers and strides describe the validated
                    // candle layouts and this task's scratch and gradient rows.
                    unsafe {
                        // S = Q K^T / sqrt(D) over the visible keys.
                        matmul(
                            (n, e, d),
                            p.as_mut_ptr(),
                            e,
                            0.0,
                            (q.row_ptr(batch, head, q_start), q.stride[2], 1),
                            (k.row_ptr(batch, head, 0), 1, k.stride[2]),
                            scale,
                        );
                    }
                    for i in 0..n {
                        let row = &mut p[i * e..(i + 1) * e];
                        if range.full_end < e {
                            let qr = spec.query_ranks[q_start + i];
                            for (j, s) in row.iter_mut().enumerate().skip(range.full_end) {
                                if !spec.mask.allows(qr, spec.key_ranks[j]) {
                                    *s = f32::NEG_INFINITY;
                                }
                            }
                        }
                        let max = (kernel.row_max)(row);
                        if max == f32::NEG_INFINITY {
                            row.fill(0.0);
                        } else {
                            let inverse = 1.0 / (kernel.exp_shifted)(row, max);
                            row.iter_mut().for_each(|x| *x *= inverse);
                        }
                        let (o, g) = (&o_block[i * h * d..][..d], &do_block[i * h * d..][..d]);
                        scratch.row_dot[i] = o.iter().zip(g).map(|(a, b)| a * b).sum();
                    }
                    unsafe {
                        // dV[0..e] += P^T dO.
                        matmul(
                            (e, d, n),
                            dv,
                            d,
                            1.0,
                            (p.as_ptr(), 1, e),
                            (do_block.as_ptr(), row_stride, 1),
                            1.0,
                        );
                        // dP = dO V^T.
                        matmul(
                            (n, e, d),
                            ds.as_mut_ptr(),
                            e,
                            0.0,
                            (do_block.as_ptr(), row_stride, 1),
                            (v.row_ptr(batch, head, 0), 1, v.stride[2]),
                            1.0,
                        );
                    }
                    for i in 0..n {
                        let dot = scratch.row_dot[i];
                        for (g, &pr) in ds[i * e..(i + 1) * e]
                            .iter_mut()
                            .zip(&p[i * e..(i + 1) * e])
                        {
                            *g = pr * (*g - dot);
                        }
                    }
                    unsafe {
                        // dQ = dS K / sqrt(D).
                        matmul(
                            (n, d, e),
                            dq.add(q_start * d),
                            d,
                            0.0,
                            (ds.as_ptr(), e, 1),
                            (k.row_ptr(batch, head, 0), k.stride[2], 1),
                            scale,
                        );
                        // dK[0..e] += dS^T Q / sqrt(D).
                        matmul(
                            (e, d, n),
                            dk,
                            d,
                            1.0,
                            (ds.as_ptr(), 1, e),
                            (q.row_ptr(batch, head, q_start), q.stride[2], 1),
                            scale,
                        );
                    }
                }
            },
        );
        Ok((CpuStorage::F32(grads), Shape::from((b, h, rows, d))))
    }
}

struct Scratch {
    scores: Vec<f32>,
    accumulator: Vec<f32>,
    row_max: Vec<f32>,
    row_sum: Vec<f32>,
}

impl Scratch {
    fn new(d: usize, block_q: usize, block_k: usize) -> Self {
        Self {
            scores: vec![0.0; block_q * block_k],
            accumulator: vec![0.0; block_q * d],
            row_max: vec![f32::NEG_INFINITY; block_q],
            row_sum: vec![0.0; block_q],
        }
    }
    fn reset(&mut self, q_len: usize, d: usize) {
        self.accumulator[..q_len * d].fill(0.0);
        self.row_max.fill(f32::NEG_INFINITY);
        self.row_sum.fill(0.0);
    }
}

/// e^x for x <= 0 (Cephes-style range reduction; relative error ~1e-7); 0 below -87.
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding then subtracting 1.5 * 2^23 rounds to the nearest integer without a libm call.
    const ROUND: f32 = 12_582_912.0;
    let clamped = if x < -87.0 { -87.0 } else { x };
    let shifted = clamped * LOG2E + ROUND;
    let n = shifted - ROUND;
    // The integer n also sits in the low mantissa bits of `shifted`: integer ops only, so
    // the loop vectorises (a saturating float-to-int cast does not).
    let n_int = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits((n_int.wrapping_add(127) << 23) as u32);
    if x < -87.0 {
        0.0
    } else {
        y * scale
    }
}

const LANES: usize = 16;

#[inline(always)]
fn row_max_generic(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for j in 0..LANES {
            lanes[j] = if chunk[j] > lanes[j] {
                chunk[j]
            } else {
                lanes[j]
            };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &x in lanes.iter().chain(tail) {
        m = if x > m { x } else { m };
    }
    m
}

/// Replaces each score by e^(score - max) and returns their sum.
#[inline(always)]
fn exp_shifted_generic(row: &mut [f32], max: f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for j in 0..LANES {
            let e = exp_approx(chunk[j] - max);
            chunk[j] = e;
            lanes[j] += e;
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for x in chunks.into_remainder() {
        let e = exp_approx(*x - max);
        *x = e;
        sum += e;
    }
    sum
}

struct RowKernels {
    row_max: fn(&[f32]) -> f32,
    exp_shifted: fn(&mut [f32], f32) -> f32,
}

/// The widest vector instructions this CPU has, chosen once at run time so that release
/// binaries stay portable.
fn row_kernels() -> &'static RowKernels {
    static KERNELS: std::sync::OnceLock<RowKernels> = std::sync::OnceLock::new();
    KERNELS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return RowKernels {
                    row_max: |r| unsafe { x86::row_max_avx512(r) },
                    exp_shifted: |r, m| unsafe { x86::exp_shifted_avx512(r, m) },
                };
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return RowKernels {
                    row_max: |r| unsafe { x86::row_max_avx2(r) },
                    exp_shifted: |r, m| unsafe { x86::exp_shifted_avx2(r, m) },
                };
            }
        }
        RowKernels {
            row_max: row_max_generic,
            exp_shifted: exp_shifted_generic,
        }
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{exp_shifted_generic, row_max_generic};

    #[target_feature(enable = "avx512f")]
    pub unsafe fn row_max_avx512(row: &[f32]) -> f32 {
        row_max_generic(row)
    }
    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp_shifted_avx512(row: &mut [f32], max: f32) -> f32 {
        exp_shifted_generic(row, max)
    }
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn row_max_avx2(row: &[f32]) -> f32 {
        row_max_generic(row)
    }
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_shifted_avx2(row: &mut [f32], max: f32) -> f32 {
        exp_shifted_generic(row, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_approx_matches_std_exp() {
        for i in 0..2000 {
            let x = -(i as f32) * 0.05;
            let want = x.exp();
            let got = exp_approx(x);
            assert!(
                (got - want).abs() <= 2e-7 * want.max(1e-30) + 1e-38,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert_eq!(exp_approx(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn key_range_is_a_visible_prefix() {
        let spec =
            MaskSpec::self_attention(AttentionMask::ContextCausal, vec![0, 0, 1, 1, 1, 2, 2])
                .unwrap();
        assert_eq!(
            spec.key_range(0, 2),
            KeyRange {
                full_end: 2,
                end: 2
            }
        );
        assert_eq!(
            spec.key_range(1, 4),
            KeyRange {
                full_end: 2,
                end: 5
            }
        );
        assert_eq!(
            spec.key_range(5, 7),
            KeyRange {
                full_end: 7,
                end: 7
            }
        );
    }

    #[test]
    fn decreasing_ranks_are_refused() {
        let err =
            MaskSpec::self_attention(AttentionMask::ContextCausal, vec![0, 1, 0]).unwrap_err();
        assert!(err.to_string().contains("must not decrease"), "{err}");
    }
}
