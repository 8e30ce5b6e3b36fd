//! Helpers for the integration tests: find (building if needed) the real plugin cdylib, compile
//! C sources, locate tools.
//!
//! How the plugin is found: `$LCT_PLUGIN` if set; otherwise the test runs
//! `cargo build -p lct-plugin -p lct-host -p lct-ofx --features lct-plugin/test-nodes` into the same target
//! directory and profile as the running test binary (derived from its own path,
//! `<target>/<profile>/deps/<test>`), once per process, and uses
//! `<target>/<profile>/liblct_plugin.so`. So `cargo test -p lct-integration-tests` (or
//! `--workspace`) always tests a plugin built from the current sources, with any
//! `CARGO_TARGET_DIR`. The `test-nodes` feature adds the model-free test nodes (TestPattern,
//! Delay, DebugPanic) and the panic-in-initialize hook that the tests use; the shipped build
//! (`cargo build --release -p lct-plugin -p lct-host`) has neither. `$LCT_PLUGIN` must name a
//! plugin built with that feature.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use lct_host::{EvalOptions, Evaluation, Evaluator, Graph, Plugin, Value};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// `<target>/<profile>` of the running test binary.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    // <target>/<profile>/deps/<test binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binaries live in <target>/<profile>/deps")
        .to_path_buf()
}

/// Path to the real plugin with its test nodes, built (with the `lct` binary) from the current
/// sources on first use.
pub fn plugin_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(path) = std::env::var_os("LCT_PLUGIN") {
            return PathBuf::from(path);
        }
        let profile_dir = profile_dir();
        let target_dir = profile_dir.parent().expect("profile dir has a parent");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_owned(),
            Some(other) => other.to_owned(),
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(&cargo)
            // The `lct` binary too, in the same call: the CLI tests run it.
            .args([
                "build",
                "--quiet",
                "-p",
                "lct-plugin",
                "-p",
                "lct-host",
                "-p",
                "lct-ofx",
                "--features",
                "lct-plugin/test-nodes",
                "--profile",
                &profile,
                "--target-dir",
            ])
            .arg(target_dir)
            .current_dir(workspace_root())
            .status()
            .expect("run cargo to build the plugin");
        assert!(status.success(), "building lct-plugin failed");
        let path = profile_dir.join(lct_host::plugin_file_name());
        assert!(path.is_file(), "{} was not built", path.display());
        path
    })
}

/// The OpenFX bundle (`lct.ofx` and the plugin it runs), assembled under `dir` by
/// `plugin/ofx/make_bundle.sh` from the build beside the plugin; `None` when `$LCT_PLUGIN` is
/// set (no OFX binary was built beside it).
pub fn ofx_bundle(dir: &Path) -> Option<PathBuf> {
    plugin_path();
    if std::env::var_os("LCT_PLUGIN").is_some() {
        return None;
    }
    let bundle = dir.join("lct.ofx.bundle");
    let output = Command::new("bash")
        .arg(workspace_root().join("plugin/ofx/make_bundle.sh"))
        .arg(profile_dir())
        .arg(&bundle)
        .output()
        .expect("run make_bundle.sh");
    assert!(
        output.status.success(),
        "make_bundle.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(bundle)
}

/// The `lct` command line built beside the plugin, if it was (not when `$LCT_PLUGIN` is set).
pub fn lct_binary() -> Option<PathBuf> {
    plugin_path();
    let path = profile_dir().join(format!("lct{}", std::env::consts::EXE_SUFFIX));
    path.is_file().then_some(path)
}

/// The real plugin, loaded (once per process; loading again returns the same library).
pub fn plugin() -> Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN
        .get_or_init(|| Plugin::load(plugin_path()).expect("the real plugin loads"))
        .clone()
}

/// The C compiler (`$CC` or `cc`). The host tests need one: a machine without it fails them
/// (CI installs build-essential), it never skips them.
pub fn c_compiler() -> String {
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let runs = Command::new(&compiler)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        runs,
        "no C compiler: `{compiler} --version` does not run; the C host tests need one \
         (apt-get install build-essential, or set CC)"
    );
    compiler
}

/// `python3`, which the Python host tests need (with numpy and Pillow for the ComfyUI pack):
/// a machine without it fails them (CI installs it), it never skips them.
pub fn python3() -> &'static str {
    let runs = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        runs,
        "no python3 on PATH; the Python host tests need it (apt-get install python3 \
         python3-numpy python3-pil)"
    );
    "python3"
}

/// Directory of the committed C header.
pub fn include_dir() -> PathBuf {
    workspace_root().join("plugin/abi/include")
}

/// Compiles `source` with the header on the include path. `extra` adds flags (`-shared`,
/// `-DMODE`, `-ldl`...); the output goes to `output`.
pub fn compile_c(compiler: &str, source: &Path, output: &Path, extra: &[&str]) {
    let result = Command::new(compiler)
        .args([
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-fPIC",
            "-o",
        ])
        .arg(output)
        .arg(source)
        .arg("-I")
        .arg(include_dir())
        .args(extra)
        .output()
        .expect("run the C compiler");
    assert!(
        result.status.success(),
        "compiling {} failed:\n{}",
        source.display(),
        String::from_utf8_lossy(&result.stderr)
    );
}

/// Builds the C plugin `tests/fixtures/<source>` with `-D<mode>` into a shared library in a
/// temporary directory (keep the directory alive while the library is used).
pub fn fixture_plugin(source: &str, mode: &str) -> (tempfile::TempDir, PathBuf) {
    let compiler = c_compiler();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let library = dir.path().join(format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        mode.to_lowercase(),
        std::env::consts::DLL_SUFFIX
    ));
    let source = workspace_root().join("tests/fixtures").join(source);
    compile_c(
        &compiler,
        &source,
        &library,
        &["-shared", &format!("-D{mode}")],
    );
    (dir, library)
}

/// Words the fixture models know: every prompt of the model tests uses only these.
pub const FIXTURE_VOCABULARY: &[&str] = &[
    "character",
    "1",
    ":",
    ".",
    ",",
    "a",
    "red",
    "blue",
    "circle",
    "square",
    "in",
    "field",
    "wide",
    "close-up",
    "shot",
    "of",
    "moves",
    "left",
    "right",
    "the",
    "night",
];

/// A real checkpoint directory (config.json + model.safetensors) of a tiny seeded model with a
/// text encoder and an 8x8 autoencoder, for the given mask; written once per process.
pub fn fixture_model(mask: lct_model::AttentionMask) -> PathBuf {
    static DIRS: OnceLock<std::sync::Mutex<Vec<(lct_model::AttentionMask, PathBuf)>>> =
        OnceLock::new();
    let dirs = DIRS.get_or_init(Default::default);
    let mut dirs = dirs.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, dir)) = dirs.iter().find(|(m, _)| *m == mask) {
        return dir.clone();
    }
    let cfg = lct_model::Config {
        text_encoder: Some(lct_model::TextEncoderConfig {
            vocabulary: FIXTURE_VOCABULARY.iter().map(|w| w.to_string()).collect(),
            max_len: 8,
            hidden_size: 32,
        }),
        autoencoder: Some(lct_model::AutoencoderConfig {
            patch: 2,
            frame_size: [8, 8],
            color_space: lct_model::default_working_color_space(),
        }),
        ..lct_model::Config::tiny().with_attention(mask)
    };
    let dir = std::env::temp_dir().join(format!("lct-fixture-{}-{:?}", std::process::id(), mask));
    let tensors =
        lct_model::init_tensors(&cfg, 11, lct_model::Init::Random, &candle_core::Device::Cpu)
            .expect("seeded weights");
    lct_model::save_checkpoint(&dir, &cfg, &tensors).expect("write the fixture checkpoint");
    dirs.push((mask, dir.clone()));
    dir
}

/// Whether this tree carries the embedded default model (then the plugin serves it).
pub fn has_embedded_model() -> bool {
    workspace_root()
        .join("nodes/assets/default/model_index.json")
        .is_file()
}

/// Validates and evaluates `graph` with `out` as the output root; any failure as its message.
pub fn evaluate_into(plugin: &Plugin, graph: &Graph, out: &Path) -> Result<Evaluation, String> {
    let graph = plugin.validate(graph).map_err(|e| e.to_string())?;
    let options = EvalOptions {
        output_directory: Some(out.to_path_buf()),
        ..EvalOptions::default()
    };
    Evaluator::new(plugin)
        .evaluate(&graph, &options)
        .map_err(|e| e.to_string())
}

/// TestPattern's default frames (8 frames of 64x48), run through the plugin directly.
pub fn test_pattern(plugin: &Plugin) -> Value {
    let pattern = plugin.node("TestPattern").expect("a test-nodes build");
    plugin
        .execute(pattern, &[], &[], None, &mut |_, _| true)
        .expect("TestPattern runs")
        .remove(0)
}

/// xorshift64*: deterministic random numbers, so a failing hostile or fuzz case reproduces.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform below `n` (`n` 0 counts as 1).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}
