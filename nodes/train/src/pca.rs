//! Fits the patch autoencoder in closed form: PCA of `patch x patch` RGB patches of world
//! frames, components whitened so every latent channel has unit variance (what the diffusion
//! loss assumes).

use crate::data::Result;
use candle_core::{Device, Tensor};
use lct_world::{render_shot, sample_scene, Split};
use std::collections::HashMap;

/// Training scenes the embedded autoencoder is fitted on (one shot each).
pub const FIT_SCENES: u64 = 96;

/// Eigenvalues and eigenvectors (columns) of a symmetric matrix, by cyclic Jacobi rotations.
fn symmetric_eigen(mut a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    let mut v: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off < 1e-22 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < 1e-30 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in a.iter_mut() {
                    let (akp, akq) = (row[p], row[q]);
                    row[p] = c * akp - s * akq;
                    row[q] = s * akp + c * akq;
                }
                let (row_p, row_q) = (a[p].clone(), a[q].clone());
                for (k, (apk, aqk)) in row_p.iter().zip(&row_q).enumerate() {
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let (vkp, vkq) = (row[p], row[q]);
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i][i]).collect(), v)
}

/// Autoencoder tensors (`autoencoder.encoder.*`, `autoencoder.decoder.*`) for `channels`
/// latent channels, fitted on `scenes` training scenes; also returns the explained variance.
pub fn fit(patch: usize, channels: usize, scenes: u64) -> Result<(HashMap<String, Tensor>, f64)> {
    let dim = 3 * patch * patch;
    if patch == 0 {
        return Err("a PCA autoencoder's patch size must be at least 1".into());
    }
    if !(1..=dim).contains(&channels) {
        return Err(format!(
            "a PCA autoencoder of {patch}x{patch} RGB patches has 1 to {dim} channels, not {channels}"
        )
        .into());
    }
    let mut mean = vec![0f64; dim];
    let mut second = vec![vec![0f64; dim]; dim];
    let mut count = 0f64;
    let mut x = vec![0f64; dim];
    for seed in 0..scenes {
        let spec = sample_scene(500_000 + seed, Split::Train);
        let clip = render_shot(&spec, (seed as usize) % spec.shots.len())?;
        for frame in &clip.frames {
            let (w, h) = (frame.width, frame.height);
            for py in 0..h / patch {
                for px in 0..w / patch {
                    // Channel-major within the patch, as the autoencoder lays patches out.
                    for c in 0..3 {
                        for dy in 0..patch {
                            for dx in 0..patch {
                                let (xx, yy) = (px * patch + dx, py * patch + dy);
                                x[c * patch * patch + dy * patch + dx] =
                                    frame.data[(yy * w + xx) * 3 + c] as f64;
                            }
                        }
                    }
                    for i in 0..dim {
                        mean[i] += x[i];
                        for j in 0..dim {
                            second[i][j] += x[i] * x[j];
                        }
                    }
                    count += 1.0;
                }
            }
        }
    }
    for m in &mut mean {
        *m /= count;
    }
    let covariance: Vec<Vec<f64>> = (0..dim)
        .map(|i| {
            (0..dim)
                .map(|j| second[i][j] / count - mean[i] * mean[j])
                .collect()
        })
        .collect();
    let (values, vectors) = symmetric_eigen(covariance);
    let mut order: Vec<usize> = (0..dim).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    let total: f64 = values.iter().map(|v| v.max(0.0)).sum();
    let kept: f64 = order[..channels].iter().map(|&i| values[i].max(0.0)).sum();
    let mut encoder = vec![0f32; channels * dim];
    let mut decoder = vec![0f32; dim * channels];
    let mut encoder_bias = vec![0f32; channels];
    for (k, &i) in order[..channels].iter().enumerate() {
        let scale = values[i].max(1e-8).sqrt();
        for d in 0..dim {
            let u = vectors[d][i];
            encoder[k * dim + d] = (u / scale) as f32;
            decoder[d * channels + k] = (u * scale) as f32;
            encoder_bias[k] -= (u / scale * mean[d]) as f32;
        }
    }
    let device = Device::Cpu;
    let mut out = HashMap::new();
    out.insert(
        "autoencoder.encoder.weight".into(),
        Tensor::from_vec(encoder, (channels, dim), &device)?,
    );
    out.insert(
        "autoencoder.encoder.bias".into(),
        Tensor::from_vec(encoder_bias, channels, &device)?,
    );
    out.insert(
        "autoencoder.decoder.weight".into(),
        Tensor::from_vec(decoder, (dim, channels), &device)?,
    );
    out.insert(
        "autoencoder.decoder.bias".into(),
        Tensor::from_vec(
            mean.iter().map(|&m| m as f32).collect::<Vec<_>>(),
            dim,
            &device,
        )?,
    );
    Ok((out, kept / total))
}

#[cfg(test)]
mod tests {
    use super::symmetric_eigen;

    #[test]
    fn jacobi_recovers_known_eigenvalues() {
        let a = vec![
            vec![2.0, 1.0, 0.0],
            vec![1.0, 2.0, 0.0],
            vec![0.0, 0.0, 5.0],
        ];
        let (mut values, _) = symmetric_eigen(a);
        values.sort_by(f64::total_cmp);
        for (got, want) in values.iter().zip([1.0, 3.0, 5.0]) {
            assert!((got - want).abs() < 1e-9, "{values:?}");
        }
    }
}
