//! Runs a bench's PyTorch peer: the Python named by `LCT_TORCH_PYTHON` with a committed
//! script, its sizes as `--name value` flags. Shared by the benches that run a peer side by
//! side (included with `#[path]`, as benches share no library of their own).

use std::process::Command;

/// The peer's standard output; an error says why it did not run (no `LCT_TORCH_PYTHON`, the
/// script failed).
pub fn run(
    script: &str,
    positional: &[&std::ffi::OsStr],
    sizes: &[(&str, usize)],
) -> Result<String, String> {
    let python = std::env::var("LCT_TORCH_PYTHON")
        .map_err(|_| "set LCT_TORCH_PYTHON to a Python with torch to run it".to_owned())?;
    let output = Command::new(&python)
        .arg(script)
        .args(positional)
        .args(
            sizes
                .iter()
                .flat_map(|(name, value)| [format!("--{name}"), value.to_string()]),
        )
        .output()
        .map_err(|e| format!("{python}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "{python} {script} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(stdout)
}

/// The number after `prefix` on a line of the peer's output.
pub fn value(stdout: &str, prefix: &str) -> Result<f64, String> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("no `{prefix}` in: {stdout}"))
}
