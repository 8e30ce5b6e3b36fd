//! The fused CPU kernels against the candle-op compositions they replace: values and
//! gradients.
mod common;

use candle_core::{Module, Tensor, Var};
use common::{assert_close, randn};
use lct_model::fused::{composed_modulate, gelu_erf, linear, modulate};

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
    // Per-token modulation shared by the batch, and one per element.
    for dims in [vec![7, 48], vec![2, 7, 48]] {
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
