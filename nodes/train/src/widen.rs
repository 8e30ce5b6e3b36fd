//! Widens a trained checkpoint's latent space: a PCA autoencoder with more channels, and the
//! transformer's patch embedding and output layer grown to match, so training can go on in
//! the wider space without starting over.
//!
//! PCA components are nested: the first `c` channels of a wider fit on the same frames are
//! the `c`-channel fit itself. New input columns and output rows start at zero, so the
//! widened model gives the old model's prediction on the old channels (and zero velocity on
//! the new ones) until it trains.

use crate::data::Result;
use crate::pca;
use candle_core::{Device, Tensor};
use lct_model::weights::{read_safetensors, save_checkpoint, CONFIG_FILE, WEIGHTS_FILE};
use lct_model::Config;
use std::collections::HashMap;
use std::path::Path;

/// Largest difference allowed between the checkpoint's autoencoder and the refitted PCA's
/// leading channels (both are f32 copies of the same f64 fit).
const NESTING_TOLERANCE: f32 = 1e-4;

/// Reads the checkpoint in `from`, widens it to `channels` latent channels and writes the
/// widened checkpoint to `out` (which must not hold one already).
pub fn widen(from: &Path, out: &Path, channels: usize) -> Result<()> {
    if out.join(WEIGHTS_FILE).exists() {
        return Err(format!(
            "{} already holds a checkpoint; widen writes to a new directory",
            out.display()
        )
        .into());
    }
    let device = Device::Cpu;
    let cfg = Config::load(&from.join(CONFIG_FILE))?;
    let tensors = read_safetensors(&from.join(WEIGHTS_FILE), &device)?;
    let (wide_cfg, wide) = widen_tensors(&cfg, &tensors, channels, from)?;
    save_checkpoint(out, &wide_cfg, &wide)?;
    Ok(())
}

/// The widened config and tensors; `origin` names the checkpoint in errors.
pub fn widen_tensors(
    cfg: &Config,
    tensors: &HashMap<String, Tensor>,
    channels: usize,
    origin: &Path,
) -> Result<(Config, HashMap<String, Tensor>)> {
    let old = cfg.latent_channels;
    if channels <= old {
        return Err(format!(
            "{} already has {old} latent channels; widen to more than that, not {channels}",
            origin.display()
        )
        .into());
    }
    let Some(ae) = &cfg.autoencoder else {
        return Err(format!(
            "{} has no autoencoder to widen (its config names none)",
            origin.display()
        )
        .into());
    };
    let (fitted, _) = pca::fit(ae.patch, channels, pca::FIT_SCENES)?;
    check_nested(tensors, &fitted, old, origin)?;

    let p2 = cfg.patch_size * cfg.patch_size;
    let mut wide = tensors.clone();
    wide.extend(fitted);
    // Token values are channel-major (`c * p² + dy * p + dx`), so the old channels' values
    // stay first and the new ones append.
    let video_in = tensor(tensors, "video_in.weight", origin)?;
    let hidden = video_in.dim(0)?;
    let added_in = Tensor::zeros(
        (hidden, (channels - old) * p2),
        video_in.dtype(),
        &device_of(video_in),
    )?;
    wide.insert(
        "video_in.weight".into(),
        Tensor::cat(&[video_in, &added_in], 1)?,
    );
    for name in ["final_out.weight", "final_out.bias"] {
        let t = tensor(tensors, name, origin)?;
        let mut shape = t.dims().to_vec();
        shape[0] = (channels - old) * p2;
        let added = Tensor::zeros(shape, t.dtype(), &device_of(t))?;
        wide.insert(name.into(), Tensor::cat(&[t, &added], 0)?);
    }
    let mut wide_cfg = cfg.clone();
    wide_cfg.latent_channels = channels;
    wide_cfg.validate()?;
    Ok((wide_cfg, wide))
}

/// Largest elementwise difference of two same-shaped tensors.
fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

fn device_of(t: &Tensor) -> Device {
    t.device().clone()
}

fn tensor<'a>(
    tensors: &'a HashMap<String, Tensor>,
    name: &str,
    origin: &Path,
) -> Result<&'a Tensor> {
    tensors
        .get(name)
        .ok_or_else(|| format!("{} has no tensor {name}", origin.display()).into())
}

/// The checkpoint's autoencoder must be the refitted PCA's first `old` channels: otherwise it
/// was not fitted by this recipe and its latents would not carry over.
fn check_nested(
    tensors: &HashMap<String, Tensor>,
    fitted: &HashMap<String, Tensor>,
    old: usize,
    origin: &Path,
) -> Result<()> {
    let leading = [
        ("autoencoder.encoder.weight", 0),
        ("autoencoder.encoder.bias", 0),
        ("autoencoder.decoder.weight", 1),
        ("autoencoder.decoder.bias", usize::MAX),
    ];
    for (name, channel_axis) in leading {
        let have = tensor(tensors, name, origin)?;
        let fit = &fitted[name];
        let fit = if channel_axis == usize::MAX {
            fit.clone()
        } else {
            fit.narrow(channel_axis, 0, old)?
        };
        if have.dims() != fit.dims() {
            return Err(format!(
                "{}: {name} has shape {:?}, the PCA refit's leading channels {:?}",
                origin.display(),
                have.dims(),
                fit.dims()
            )
            .into());
        }
        let diff = max_abs_diff(have, &fit)?;
        if diff > NESTING_TOLERANCE {
            return Err(format!(
                "{}: {name} differs from the PCA refit by up to {diff:.2e}; only an autoencoder \
                 fitted by lct-train's PCA can be widened",
                origin.display()
            )
            .into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lct_model::{AutoencoderConfig, Init};

    fn small_config(channels: usize) -> Config {
        let mut cfg = crate::default_config();
        cfg.hidden_size = 32;
        cfg.depth = 1;
        cfg.num_heads = 2;
        cfg.mlp_hidden_size = 64;
        cfg.text_dim = 16;
        cfg.rope_axes = [4, 6, 6];
        cfg.text_encoder = None;
        cfg.autoencoder = Some(AutoencoderConfig {
            patch: 4,
            frame_size: [64, 64],
        });
        cfg.latent_channels = channels;
        cfg
    }

    fn checkpoint(channels: usize) -> HashMap<String, Tensor> {
        let cfg = small_config(channels);
        let mut tensors = lct_model::init_tensors(&cfg, 7, Init::Random, &Device::Cpu).unwrap();
        tensors.extend(pca::fit(4, channels, pca::FIT_SCENES).unwrap().0);
        tensors
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        max_abs_diff(a, b).unwrap()
    }

    #[test]
    fn a_widened_model_predicts_what_the_narrow_one_did_on_the_old_channels() {
        let narrow_cfg = small_config(4);
        let narrow_tensors = checkpoint(4);
        let (wide_cfg, wide_tensors) =
            widen_tensors(&narrow_cfg, &narrow_tensors, 12, Path::new("test")).unwrap();
        assert_eq!(wide_cfg.latent_channels, 12);
        let load = |cfg: &Config, t: &HashMap<String, Tensor>| {
            lct_model::weights::pipeline_from_tensors(
                cfg,
                t.clone(),
                Path::new("test"),
                candle_core::DType::F32,
                &Device::Cpu,
            )
            .unwrap()
        };
        let narrow = load(&narrow_cfg, &narrow_tensors);
        let wide = load(&wide_cfg, &wide_tensors);

        // A real frame: the wide encoding's first 4 channels are the narrow encoding, and the
        // wide reconstruction is at least as close to the frame.
        let spec = lct_world::sample_scene(3, lct_world::Split::Train);
        let clip = lct_world::render_shot(&spec, 0).unwrap();
        let frame = &clip.frames[0];
        let pixels = Tensor::from_vec(
            frame.data.clone(),
            (1, frame.height, frame.width, 3),
            &Device::Cpu,
        )
        .unwrap()
        .permute((0, 3, 1, 2))
        .unwrap();
        let z_narrow = narrow.autoencoder().unwrap().encode(&pixels).unwrap();
        let z_wide = wide.autoencoder().unwrap().encode(&pixels).unwrap();
        assert!(max_diff(&z_wide.narrow(1, 0, 4).unwrap(), &z_narrow) < 1e-3);
        let error = |z: &Tensor, p: &lct_model::Pipeline| {
            let back = p.autoencoder().unwrap().decode(z).unwrap();
            (back - &pixels)
                .unwrap()
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert!(error(&z_wide, &wide) < error(&z_narrow, &narrow));

        // The transformer: same prediction on the old channels, zero on the new ones.
        let latent_narrow = Tensor::randn(0f32, 1f32, (1, 4, 2, 8, 8), &Device::Cpu).unwrap();
        let latent_wide = Tensor::cat(
            &[
                &latent_narrow,
                &Tensor::randn(0f32, 1f32, (1, 8, 2, 8, 8), &Device::Cpu).unwrap(),
            ],
            1,
        )
        .unwrap();
        let text = Tensor::randn(0f32, 1f32, (1, 5, 16), &Device::Cpu).unwrap();
        let before = narrow
            .transformer
            .forward_single_shot(&latent_narrow, &text, 0.6)
            .unwrap();
        let after = wide
            .transformer
            .forward_single_shot(&latent_wide, &text, 0.6)
            .unwrap();
        assert_eq!(after.dims(), &[1, 12, 2, 8, 8]);
        assert!(max_diff(&after.narrow(1, 0, 4).unwrap(), &before) < 1e-4);
        assert_eq!(
            after
                .narrow(1, 4, 8)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
    }

    #[test]
    fn widening_refuses_fewer_channels_and_a_foreign_autoencoder() {
        let cfg = small_config(4);
        let mut tensors = checkpoint(4);
        let err = widen_tensors(&cfg, &tensors, 4, Path::new("runs/x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("runs/x") && err.contains("more than"), "{err}");
        let bias = tensors["autoencoder.encoder.bias"].clone();
        tensors.insert("autoencoder.encoder.bias".into(), (bias + 0.5).unwrap());
        let err = widen_tensors(&cfg, &tensors, 8, Path::new("runs/x"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("autoencoder.encoder.bias") && err.contains("PCA"),
            "{err}"
        );
    }
}
