//! The OpenFX bundle as a compositor loads it: `plugin/ofx/make_bundle.sh` assembles
//! `lct.ofx.bundle` from the build, and a small OpenFX host written in C from the
//! specification (`tests/ofx/ofx_host.c`, compiled against the official OpenFX headers) loads
//! it, describes the "LCT Scene" generator, creates an instance, renders frames (float and
//! byte, cached, with a reference clip), aborts a render and reads the errors the effect
//! posts. Skipped (not failed) without a C compiler or when `$LCT_PLUGIN` names a prebuilt
//! plugin (no OFX binary beside it).

use std::process::Command;

use lct_integration_tests::{
    c_compiler, compile_c, has_embedded_model, ofx_bundle, workspace_root,
};

#[test]
fn the_ofx_bundle_describes_renders_aborts_and_reports_errors_in_a_spec_host() {
    let compiler = c_compiler();
    if !has_embedded_model() {
        eprintln!(
            "skipped: the OFX effect renders with the embedded model, absent from this build"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(bundle) = ofx_bundle(dir.path()) else {
        eprintln!("skipped: $LCT_PLUGIN is set, so no OFX binary was built beside it");
        return;
    };
    let host = dir.path().join("ofx_host");
    let headers = workspace_root().join("tests/ofx/openfx");
    compile_c(
        &compiler,
        &workspace_root().join("tests/ofx/ofx_host.c"),
        &host,
        &["-I", headers.to_str().unwrap(), "-ldl", "-lm"],
    );
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let output = Command::new(&host).arg(&bundle).arg(&out).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in [
        "plugin org.lct.LCTScene 1.0 (OfxImageEffectPluginAPI v1)",
        "describe: \"LCT Scene\", contexts OfxImageEffectContextGenerator OfxImageEffectContextGeneral",
        "clips: Output Identity (optional) Environment (optional)",
        "params: global_prompt characters shots shot frames seed steps mode color_space model",
        "region of definition: 0 0 64 64",
        "time domain: 0 5",
        "render shot 2 frame 1: 4 progress updates",
        "cached: shot 2 frame 1 again and shot 0 at time 3 without sampling",
        "byte output: sRGB encoding of the float output",
        "identity clip: new scene (4 progress updates)",
        "abort: render returned 1 after 3 of 50 steps",
        "unknown word 'plaid'",
        "LCT Scene: shot 9 asked of a scene of 3 shots",
        "/no/such/checkpoint",
        "done",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    // The rendered frame: 96x80 with the 64x64 picture in it.
    let ppm = std::fs::read(out.join("ofx_shot2_frame1.ppm")).unwrap();
    assert!(ppm.starts_with(b"P6\n96 80\n255\n"));
    assert_eq!(ppm.len(), "P6\n96 80\n255\n".len() + 96 * 80 * 3);
}
