//! Compiles the default model into the node library when its checkpoint folder is in the tree
//! (`nodes/assets/default/`, a Wan checkpoint in the diffusers layout with its
//! `model_index.json`): every file of it becomes a `(relative path, bytes)` entry of
//! `EMBEDDED_FILES` in `$OUT_DIR/embedded_model.rs`. Without it the library still builds and
//! `LoadModel` with no path says that no model is embedded.

use std::path::{Path, PathBuf};

/// Files of `dir` and its subfolders, relative to `root`, sorted.
fn files(root: &Path, dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(root, &path, found);
        } else if path.file_name().is_some_and(|name| name != "README.md") {
            found.push(path.strip_prefix(root).expect("inside").to_path_buf());
        }
    }
    found.sort();
}

fn main() {
    let dir = Path::new("assets/default");
    println!("cargo::rustc-check-cfg=cfg(embedded_model)");
    println!("cargo::rerun-if-changed={}", dir.display());
    if !dir.join("model_index.json").is_file() {
        return;
    }
    let root = std::fs::canonicalize(dir).expect("assets/default resolves");
    let mut found = Vec::new();
    files(&root, &root, &mut found);
    let mut source = String::from("pub static EMBEDDED_FILES: &[(&str, &[u8])] = &[\n");
    for relative in &found {
        let absolute = root.join(relative);
        println!("cargo::rerun-if-changed={}", absolute.display());
        let name = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        source.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            absolute.display().to_string()
        ));
    }
    source.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("embedded_model.rs"), source).expect("OUT_DIR is writable");
    println!("cargo::rustc-cfg=embedded_model");
}
