//! Aborting during sampling: ShotGenerate stops at the step whose progress callback said
//! abort, returns Cancelled, leaks no handle, and the same call then completes.
//!
//! Its own binary (own process): it counts the plugin's live handles.

use lct_host::Status;
use lct_integration_tests::{fixture_model, plugin};
use lct_model::AttentionMask;

#[test]
fn aborting_shot_generate_stops_within_one_step_and_leaks_nothing() {
    let plugin = plugin();
    let baseline = plugin.live_handles();
    let path = fixture_model(AttentionMask::Bidirectional)
        .display()
        .to_string();
    let load = plugin.node("LoadModel").unwrap();
    let model = plugin
        .execute(
            load,
            &[("path".to_owned(), path.as_str().into())],
            &[],
            None,
            &mut |_, _| true,
        )
        .unwrap()
        .remove(0);
    let context = plugin.node("SceneContext").unwrap();
    let scene = plugin
        .execute(
            context,
            &[(
                "shots".to_owned(),
                "close-up of character 1.\ncharacter 1 moves left.".into(),
            )],
            &[None, None, None],
            None,
            &mut |_, _| true,
        )
        .unwrap()
        .remove(0);
    let generate = plugin.node("ShotGenerate").unwrap();
    let params = [
        ("steps".to_owned(), 50.into()),
        ("frames".to_owned(), 2.into()),
    ];
    let inputs = [Some(&model), Some(&scene), None, None];
    let mut calls = 0;
    let error = plugin
        .execute(generate, &params, &inputs, None, &mut |step, total| {
            calls += 1;
            assert_eq!(total, 50);
            step < 3
        })
        .unwrap_err();
    assert_eq!(error.status, Status::CANCELLED, "{}", error.message);
    assert_eq!(
        calls, 3,
        "sampling must stop at the step that asked to abort"
    );
    assert!(
        error.message.contains("cancelled at step 3 of 50"),
        "{}",
        error.message
    );
    assert_eq!(
        plugin.live_handles(),
        baseline + 2,
        "only the model and scene handles remain"
    );

    // The next call works.
    let latent = plugin
        .execute(generate, &params, &inputs, None, &mut |_, _| true)
        .unwrap()
        .remove(0);
    assert_eq!(latent.shape().unwrap(), vec![2]);
    drop((latent, model, scene));
    assert_eq!(plugin.live_handles(), baseline);
}
