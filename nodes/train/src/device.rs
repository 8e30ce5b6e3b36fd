//! `--device`: where a training run computes. The world is rendered and its batches are built
//! on the host either way; only the transformer's steps move.

use crate::data::Result;
use candle_core::Device;

/// The device a `--device` value names: `cpu`, `cuda` (GPU 0) or `cuda:N`.
pub fn parse_device(spec: &str) -> Result<Device> {
    let ordinal = match spec.trim() {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => {
                return Err(format!(
                    "--device '{spec}': expected cpu, cuda or cuda:N (N a GPU number)"
                )
                .into())
            }
        },
    };
    if !candle_core::utils::cuda_is_available() {
        return Err(format!(
            "--device {spec}: this lct-train was built without CUDA; build it with \
             `cargo build --release -p lct-train --features cuda` (needs the CUDA toolkit)"
        )
        .into());
    }
    Device::new_cuda(ordinal).map_err(|e| format!("--device {spec}: {e}").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_read_and_bad_ones_named() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        for bad in ["gpu", "cuda:x", "cuda:", "metal"] {
            let err = parse_device(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("'{bad}'")), "{err}");
            assert!(err.contains("cpu, cuda or cuda:N"), "{err}");
        }
        if !candle_core::utils::cuda_is_available() {
            let err = parse_device("cuda:1").unwrap_err().to_string();
            assert!(
                err.contains("cuda:1") && err.contains("--features cuda"),
                "{err}"
            );
        }
    }
}
