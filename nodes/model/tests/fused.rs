//! The fused CPU kernels against the candle-op compositions they replace: values and
//! gradients.
mod common;

use candle_core::{Module, Tensor, Var};
use common::{assert_close, randn};
use lct_model::fused::{
    composed_modulate, composed_rms_norm, composed_rope_pairs, gated_residual, gelu_erf, gelu_tanh,
    linear, modulate, rms_norm, rope_pairs,
};

/// Values and the gradients of `sum(f(inputs) * weights)` with respect to every input.
fn with_grads(
    f: impl Fn(&[Tensor]) -> Tensor,
    inputs: &[Tensor],
    weights: &Tensor,
) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&tensors);
    let grads = (&out * weights)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let grads = tensors
        .iter()
        .map(|t| grads.get(t).expect("a gradient").clone())
        .collect();
    (out.detach(), grads)
}

#[test]
fn fused_modulation_equals_the_composed_layer_norm_with_gradients() {
    let x = randn(1, &[2, 7, 48]).affine(3.0, 0.5).unwrap();
    let weights = randn(2, &[2, 7, 48]);
    // Per-token modulation shared by the batch, one per element, one per sample (shared by
    // its tokens), one for all.
    for dims in [vec![7, 48], vec![2, 7, 48], vec![2, 1, 48], vec![1, 1, 48]] {
        let shift = randn(3, &dims);
        let scale = (randn(4, &dims) * 0.5).unwrap();
        let inputs = [x.clone(), shift, scale];
        let (want, want_grads) = with_grads(
            |t| composed_modulate(&t[0], &t[1], &t[2]).unwrap(),
            &inputs,
            &weights,
        );
        let (got, got_grads) = with_grads(
            |t| modulate(&t[0], &t[1], &t[2]).unwrap(),
            &inputs,
            &weights,
        );
        assert_close(&format!("{dims:?} values"), &got, &want, 1e-5);
        for (name, (g, w)) in ["dx", "dshift", "dscale"]
            .iter()
            .zip(got_grads.iter().zip(&want_grads))
        {
            assert_close(&format!("{dims:?} {name}"), g, w, 1e-4);
        }
    }
}

#[test]
fn fused_gelu_equals_candles_exact_gelu_with_gradients() {
    let x = (randn(5, &[3, 333]) * 3.0).unwrap();
    let weights = randn(6, &[3, 333]);
    let (want, want_grads) = with_grads(
        |t| t[0].gelu_erf().unwrap(),
        std::slice::from_ref(&x),
        &weights,
    );
    let (got, got_grads) = with_grads(|t| gelu_erf(&t[0]).unwrap(), &[x], &weights);
    assert_close("values", &got, &want, 1e-6);
    assert_close("dx", &got_grads[0], &want_grads[0], 1e-5);
}

#[test]
fn fused_gated_residual_equals_the_composed_one_with_gradients() {
    let x = randn(16, &[2, 7, 48]);
    let update = randn(17, &[2, 7, 48]);
    let weights = randn(18, &[2, 7, 48]);
    for dims in [vec![2, 7, 48], vec![2, 1, 48], vec![7, 48], vec![1, 48]] {
        let gate = randn(19, &dims);
        let inputs = [x.clone(), update.clone(), gate];
        let (want, want_grads) = with_grads(
            |t| (&t[0] + t[1].broadcast_mul(&t[2]).unwrap()).unwrap(),
            &inputs,
            &weights,
        );
        let (got, got_grads) = with_grads(
            |t| gated_residual(&t[0], &t[1], &t[2]).unwrap(),
            &inputs,
            &weights,
        );
        assert_close(&format!("{dims:?} values"), &got, &want, 1e-6);
        for (name, (g, w)) in ["dx", "dupdate", "dgate"]
            .iter()
            .zip(got_grads.iter().zip(&want_grads))
        {
            assert_close(&format!("{dims:?} {name}"), g, w, 1e-5);
        }
    }
}

#[test]
fn fused_rope_equals_the_composed_one_with_gradients() {
    let x = randn(20, &[2, 5, 3, 8]);
    let angles = (randn(21, &[5, 4]) * 3.0).unwrap();
    let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
    let weights = randn(22, &[2, 5, 3, 8]);
    let (want, want_grads) = with_grads(
        |t| composed_rope_pairs(&t[0], &cos, &sin).unwrap(),
        std::slice::from_ref(&x),
        &weights,
    );
    let (got, got_grads) = with_grads(|t| rope_pairs(&t[0], &cos, &sin).unwrap(), &[x], &weights);
    assert_close("values", &got, &want, 1e-6);
    assert_close("dx", &got_grads[0], &want_grads[0], 1e-6);
}

#[test]
fn fused_rms_norm_equals_the_composed_one_with_gradients() {
    let x = (randn(13, &[2, 9, 48]) * 2.0).unwrap();
    let weight = (randn(14, &[48]) + 1.0).unwrap();
    let weights = randn(15, &[2, 9, 48]);
    let inputs = [x, weight];
    let (want, want_grads) = with_grads(
        |t| composed_rms_norm(&t[0], &t[1], 1e-6).unwrap(),
        &inputs,
        &weights,
    );
    let (got, got_grads) = with_grads(|t| rms_norm(&t[0], &t[1], 1e-6).unwrap(), &inputs, &weights);
    assert_close("values", &got, &want, 1e-5);
    assert_close("dx", &got_grads[0], &want_grads[0], 1e-4);
    assert_close("dweight", &got_grads[1], &want_grads[1], 1e-4);
}

#[test]
fn fused_tanh_gelu_equals_candles_tanh_gelu_with_gradients() {
    let x = (randn(11, &[3, 333]) * 3.0).unwrap();
    let weights = randn(12, &[3, 333]);
    let (want, want_grads) =
        with_grads(|t| t[0].gelu().unwrap(), std::slice::from_ref(&x), &weights);
    let (got, got_grads) = with_grads(|t| gelu_tanh(&t[0]).unwrap(), &[x], &weights);
    assert_close("values", &got, &want, 1e-6);
    assert_close("dx", &got_grads[0], &want_grads[0], 1e-5);
}

#[test]
fn fused_linear_equals_candles_linear_with_gradients() {
    let x = randn(7, &[2, 9, 24]);
    let w = randn(8, &[40, 24]);
    let b = randn(9, &[40]);
    let weights = randn(10, &[2, 9, 40]);
    let layer = |t: &[Tensor]| candle_nn::Linear::new(t[1].clone(), Some(t[2].clone()));
    let inputs = [x, w, b];
    let (want, want_grads) = with_grads(|t| layer(t).forward(&t[0]).unwrap(), &inputs, &weights);
    let (got, got_grads) = with_grads(|t| linear(&layer(t), &t[0]).unwrap(), &inputs, &weights);
    assert_close("values", &got, &want, 1e-5);
    for (name, (g, w)) in ["dx", "dweight", "dbias"]
        .iter()
        .zip(got_grads.iter().zip(&want_grads))
    {
        assert_close(name, g, w, 1e-5);
    }
}
