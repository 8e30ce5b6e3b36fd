//! Compiles the default model into the node library when its checkpoint is in the tree
//! (`nodes/assets/default/config.json` and `model.safetensors`); without it the library still
//! builds and `LoadModel` with no path says that no model is embedded.

fn main() {
    let dir = std::path::Path::new("assets/default");
    println!("cargo::rustc-check-cfg=cfg(embedded_model)");
    for file in ["config.json", "model.safetensors"] {
        println!("cargo::rerun-if-changed={}", dir.join(file).display());
    }
    println!("cargo::rerun-if-changed={}", dir.display());
    if dir.join("config.json").is_file() && dir.join("model.safetensors").is_file() {
        println!("cargo::rustc-cfg=embedded_model");
    }
}
