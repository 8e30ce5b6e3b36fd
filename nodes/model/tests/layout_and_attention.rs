//! RoPE positions by hand, and blocked attention against the naive reference.
mod common;

use candle_core::Tensor;
use common::{assert_close, max_diff, randn};
use lct_model::attention::{blocked_attention, fused_attention, naive_attention};
use lct_model::{AttentionMask, Error, MaskSpec, SceneLayout, SegmentSpec, ShotRole};

#[test]
fn rope_positions_match_hand_computed_values() {
    // Global prompt of 3 tokens (+1 dummy video token), a 2x3x4 shot with 2 text tokens, a
    // 1-frame reference image 1x2x2 with 2 text tokens, and a 3x2x2 shot with 1 text token.
    let layout = SceneLayout::scene(
        Some(3),
        &[
            SegmentSpec::shot(ShotRole::Generate, 2, [2, 3, 4], 1.0),
            SegmentSpec::shot(ShotRole::Condition, 2, [1, 2, 2], 0.0),
            SegmentSpec::shot(ShotRole::Generate, 1, [3, 2, 2], 1.0),
        ],
    )
    .unwrap();
    let mut want: Vec<[u32; 3]> = vec![[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3]];
    // s_1 = 0 + 3 + max(1,1,1) = 4: text 4, 5; video starts at 6.
    want.extend([[4, 4, 4], [5, 5, 5]]);
    for t in 0..2 {
        for y in 0..3 {
            for x in 0..4 {
                want.push([6 + t, 6 + y, 6 + x]);
            }
        }
    }
    // s_2 = 4 + 2 + max(2,3,4) = 10: text 10, 11; video at 12.
    want.extend([[10, 10, 10], [11, 11, 11]]);
    for y in 0..2 {
        for x in 0..2 {
            want.push([12, 12 + y, 12 + x]);
        }
    }
    // s_3 = 10 + 2 + max(1,2,2) = 14: text 14; video at 15.
    want.push([14, 14, 14]);
    for t in 0..3 {
        for y in 0..2 {
            for x in 0..2 {
                want.push([15 + t, 15 + y, 15 + x]);
            }
        }
    }
    assert_eq!(layout.rope_positions(), want);
    assert_eq!(layout.rope_end(), 18);
    assert_eq!(layout.len(), want.len());
    let starts: Vec<usize> = layout.segments().iter().map(|s| s.rope_start).collect();
    assert_eq!(starts, vec![0, 4, 10, 14]);
}

#[test]
fn rope_positions_reproduce_the_worked_example_of_lct_md() {
    let layout = SceneLayout::scene(
        Some(120),
        &[
            SegmentSpec::shot(ShotRole::Generate, 60, [25, 30, 30], 1.0),
            SegmentSpec::shot(ShotRole::Generate, 60, [25, 30, 30], 1.0),
        ],
    )
    .unwrap();
    let shot = &layout.segments()[1];
    assert_eq!(shot.rope_start, 121);
    assert_eq!(shot.rope_end(), 211);
    assert_eq!(layout.segments()[2].rope_start, 211);
    let positions = layout.rope_positions();
    let text = &positions[shot.text_range()];
    assert_eq!(text.first(), Some(&[121, 121, 121]));
    assert_eq!(text.last(), Some(&[180, 180, 180]));
    let video = &positions[shot.video_range()];
    for axis in 0..3 {
        let min = video.iter().map(|p| p[axis]).min().unwrap();
        let max = video.iter().map(|p| p[axis]).max().unwrap();
        let want_max = if axis == 0 { 205 } else { 210 };
        assert_eq!((min, max), (181, want_max), "axis {axis}");
    }
}

/// Segment ranks for segments of the given lengths.
fn ranks(lengths: &[usize], first: u32) -> Vec<u32> {
    lengths
        .iter()
        .enumerate()
        .flat_map(|(i, &n)| std::iter::repeat_n(first + i as u32, n))
        .collect()
}

#[test]
fn blocked_attention_equals_naive_attention_for_both_masks() {
    // 7 + 50 + 1 + 180 + 62 = 300 tokens: not a multiple of either block size, and segment
    // edges fall inside blocks.
    let lengths = [7, 50, 1, 180, 62];
    let len: usize = lengths.iter().sum();
    for mask in [AttentionMask::Bidirectional, AttentionMask::ContextCausal] {
        let spec = MaskSpec::self_attention(mask, ranks(&lengths, 0)).unwrap();
        // Built as [B, L, H, D] and transposed: the kernels must honour strides.
        let q = randn(1, &[2, len, 3, 16]).transpose(1, 2).unwrap();
        let k = randn(2, &[2, len, 3, 16]).transpose(1, 2).unwrap();
        let v = randn(3, &[2, len, 3, 16]).transpose(1, 2).unwrap();
        let want = naive_attention(&q, &k, &v, &spec).unwrap();
        let fused = fused_attention(&q, &k, &v, &spec).unwrap();
        let blocked = blocked_attention(&q, &k, &v, &spec).unwrap();
        assert_eq!(want.dims(), &[2, len, 48]);
        assert!(
            max_diff(&fused, &want) < 1e-5,
            "{mask:?} fused {}",
            max_diff(&fused, &want)
        );
        assert!(
            max_diff(&blocked, &want) < 1e-5,
            "{mask:?} blocked {}",
            max_diff(&blocked, &want)
        );
    }
}

#[test]
fn blocked_attention_equals_naive_for_queries_after_cached_keys() {
    // Queries of two new segments attend to 4 cached segments plus themselves.
    let key_lengths = [5, 70, 70, 130, 33, 41];
    let query_ranks = ranks(&[33, 41], 4);
    let key_ranks = ranks(&key_lengths, 0);
    let (lq, lk) = (query_ranks.len(), key_ranks.len());
    let spec = MaskSpec::new(AttentionMask::ContextCausal, query_ranks, key_ranks).unwrap();
    let q = randn(4, &[1, 2, lq, 16]);
    let k = randn(5, &[1, 2, lk, 16]);
    let v = randn(6, &[1, 2, lk, 16]);
    let want = naive_attention(&q, &k, &v, &spec).unwrap();
    assert!(max_diff(&fused_attention(&q, &k, &v, &spec).unwrap(), &want) < 1e-5);
    assert!(max_diff(&blocked_attention(&q, &k, &v, &spec).unwrap(), &want) < 1e-5);
}

/// dQ, dK, dV of `sum(attention(q, k, v) * weights)` through `attend`, by candle's autograd.
fn attention_grads(
    attend: impl Fn(&Tensor, &Tensor, &Tensor) -> Tensor,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    weights: &Tensor,
) -> [Tensor; 3] {
    let (q, k, v) = (
        candle_core::Var::from_tensor(q).unwrap(),
        candle_core::Var::from_tensor(k).unwrap(),
        candle_core::Var::from_tensor(v).unwrap(),
    );
    let loss = (attend(q.as_tensor(), k.as_tensor(), v.as_tensor()) * weights)
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    [&q, &k, &v].map(|x| grads.get(x.as_tensor()).expect("a gradient").clone())
}

#[test]
fn the_fused_backward_equals_autograd_through_the_naive_softmax() {
    // Self-attention over segments whose edges fall inside the backward's query blocks, for
    // both masks; then queries after cached keys (fewer queries than keys).
    let lengths = [7, 50, 1, 90, 62];
    let len: usize = lengths.iter().sum();
    let mut cases = Vec::new();
    for mask in [AttentionMask::Bidirectional, AttentionMask::ContextCausal] {
        let spec = MaskSpec::self_attention(mask, ranks(&lengths, 0)).unwrap();
        cases.push((spec, len, len));
    }
    let key_ranks = ranks(&[5, 70, 33, 41], 0);
    let query_ranks = ranks(&[33, 41], 2);
    let (lq, lk) = (query_ranks.len(), key_ranks.len());
    cases.push((
        MaskSpec::new(AttentionMask::ContextCausal, query_ranks, key_ranks).unwrap(),
        lq,
        lk,
    ));
    for (case, (spec, lq, lk)) in cases.iter().enumerate() {
        let s = 10 * case as u64;
        // Strided like the transformer's: [B, L, H, D] transposed.
        let q = randn(s + 1, &[2, *lq, 3, 16]).transpose(1, 2).unwrap();
        let k = randn(s + 2, &[2, *lk, 3, 16]).transpose(1, 2).unwrap();
        let v = randn(s + 3, &[2, *lk, 3, 16]).transpose(1, 2).unwrap();
        let weights = randn(s + 4, &[2, *lq, 48]);
        let want = attention_grads(
            |q, k, v| naive_attention(q, k, v, spec).unwrap(),
            &q,
            &k,
            &v,
            &weights,
        );
        let got = attention_grads(
            |q, k, v| fused_attention(q, k, v, spec).unwrap(),
            &q,
            &k,
            &v,
            &weights,
        );
        for (name, (g, w)) in ["dq", "dk", "dv"].iter().zip(got.iter().zip(&want)) {
            assert_close(&format!("case {case} {name}"), g, w, 1e-4);
        }
    }
}

#[test]
fn context_causal_mask_hides_later_segments() {
    let lengths = [10, 20, 30];
    let spec = MaskSpec::self_attention(AttentionMask::ContextCausal, ranks(&lengths, 0)).unwrap();
    let q = randn(7, &[1, 1, 60, 16]);
    let k = randn(8, &[1, 1, 60, 16]);
    let v = randn(9, &[1, 1, 60, 16]);
    let before = fused_attention(&q, &k, &v, &spec).unwrap();
    // Change keys and values of the last segment only.
    let k2 = k
        .slice_assign(&[0..1, 0..1, 30..60, 0..16], &randn(10, &[1, 1, 30, 16]))
        .unwrap();
    let v2 = v
        .slice_assign(&[0..1, 0..1, 30..60, 0..16], &randn(11, &[1, 1, 30, 16]))
        .unwrap();
    let after = fused_attention(&q, &k2, &v2, &spec).unwrap();
    let earlier = |t: &candle_core::Tensor| t.narrow(1, 0, 30).unwrap();
    assert_eq!(max_diff(&earlier(&before), &earlier(&after)), 0.0);
    assert!(
        max_diff(&before, &after) > 1e-3,
        "the last segment must change"
    );
}

#[test]
fn mismatched_attention_inputs_are_errors() {
    let spec = MaskSpec::self_attention(AttentionMask::Bidirectional, vec![0; 8]).unwrap();
    let q = randn(1, &[1, 2, 8, 16]);
    let k = randn(2, &[1, 2, 9, 16]);
    assert!(matches!(
        fused_attention(&q, &k, &k, &spec),
        Err(Error::Shape(_))
    ));
    let q9 = randn(1, &[1, 2, 9, 16]);
    let err = naive_attention(&q9, &k, &k, &spec).unwrap_err();
    assert!(err.to_string().contains("ranks"), "{err}");
}
