//! Scene transformer, KV cache and sampler properties on the tiny config.
mod common;

use candle_core::{Device, Tensor};
use common::{max_diff, randn, tiny_model, tiny_pooled_model};
use lct_model::sampler::renoise;
use lct_model::{
    cache_history, generate_autoregressive, sample, AttentionMask, HistoryMode, KvPool, KvView,
    SamplerConfig, SceneBatch, SceneLayout, SceneRequest, SceneTransformer, SegmentSpec, ShotInput,
    ShotRole, StepControl,
};
use std::sync::Arc;

const TEXT_DIM: usize = 16;
const CHANNELS: usize = 4;

struct Scene {
    layout: SceneLayout,
    text: Vec<Tensor>,
    latents: Vec<Tensor>,
}

/// Global prompt + shots with grids `grids` and timesteps `ts`, seeded inputs.
fn scene(seed: u64, grids: &[[usize; 3]], ts: &[f32]) -> Scene {
    let shots: Vec<SegmentSpec> = grids
        .iter()
        .zip(ts)
        .map(|(&g, &t)| SegmentSpec::shot(ShotRole::Generate, 3, g, t))
        .collect();
    let layout = SceneLayout::scene(Some(5), &shots).unwrap();
    let mut text = vec![randn(seed, &[1, 5, TEXT_DIM])];
    let mut latents = Vec::new();
    for (i, g) in grids.iter().enumerate() {
        text.push(randn(seed + 100 + i as u64, &[1, 3, TEXT_DIM]));
        latents.push(randn(
            seed + 200 + i as u64,
            &[1, CHANNELS, g[0], g[1], g[2]],
        ));
    }
    Scene {
        layout,
        text,
        latents,
    }
}

fn run(model: &SceneTransformer, s: &Scene, mask: AttentionMask) -> Vec<Tensor> {
    let batch = SceneBatch {
        layout: &s.layout,
        text: &s.text,
        latents: &s.latents,
    };
    model.forward(&batch, mask, None).unwrap()
}

#[test]
fn changing_shot_k_leaves_earlier_shots_unchanged_under_the_context_causal_mask() {
    let model = tiny_model(AttentionMask::ContextCausal, 1);
    let grids = [[2, 3, 3], [1, 4, 2], [2, 2, 3], [3, 2, 2]];
    let base = scene(10, &grids, &[0.2, 0.5, 0.7, 0.9]);
    let before = run(&model, &base, AttentionMask::ContextCausal);
    let k = 2;
    // Tokens, text and timestep of shot k all change.
    let mut changed = scene(10, &grids, &[0.2, 0.5, 0.1, 0.9]);
    changed.latents[k] = randn(999, changed.latents[k].dims());
    changed.text[k + 1] = randn(998, changed.text[k + 1].dims());
    let after = run(&model, &changed, AttentionMask::ContextCausal);
    for shot in 0..k {
        let d = max_diff(&before[shot], &after[shot]);
        assert!(d <= 1e-6, "shot {shot} changed by {d}");
    }
    for shot in k..grids.len() {
        assert!(
            max_diff(&before[shot], &after[shot]) > 1e-4,
            "shot {shot} must change"
        );
    }
    // The same edit reaches earlier shots under the bidirectional mask.
    let before = run(&model, &base, AttentionMask::Bidirectional);
    let after = run(&model, &changed, AttentionMask::Bidirectional);
    assert!(max_diff(&before[0], &after[0]) > 1e-4);
}

#[test]
fn one_shot_scene_equals_the_single_shot_path() {
    for mask in [AttentionMask::Bidirectional, AttentionMask::ContextCausal] {
        // With and without the pooled prompt in the conditioning.
        for model in [tiny_model(mask, 2), tiny_pooled_model(mask, 2)] {
            let layout = SceneLayout::scene(
                None,
                &[SegmentSpec::shot(ShotRole::Generate, 3, [2, 3, 3], 0.4)],
            )
            .unwrap();
            let text = randn(20, &[1, 3, TEXT_DIM]);
            let latent = randn(21, &[1, CHANNELS, 2, 3, 3]);
            let batch = SceneBatch {
                layout: &layout,
                text: std::slice::from_ref(&text),
                latents: std::slice::from_ref(&latent),
            };
            let scene = model.forward(&batch, mask, None).unwrap();
            let single = model.forward_single_shot(&latent, &text, 0.4).unwrap();
            let d = max_diff(&scene[0], &single);
            assert!(d < 1e-5, "{mask:?}: {d}");
            assert!(
                single
                    .abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    > 1e-3
            );
        }
    }
}

/// History shots given as latents; the shot to generate last.
fn history_request(seed: u64, history: usize, guidance: bool) -> (SceneRequest, ShotInput) {
    let _ = guidance;
    let shots = (0..history)
        .map(|i| ShotInput {
            text: randn(seed + i as u64, &[1, 3, TEXT_DIM]),
            latent_dims: [CHANNELS, 2, 2, 3],
            role: ShotRole::History,
            latent: Some(randn(seed + 50 + i as u64, &[1, CHANNELS, 2, 2, 3])),
            scene_index: i,
        })
        .collect();
    let new_shot = ShotInput {
        text: randn(seed + 90, &[1, 3, TEXT_DIM]),
        latent_dims: [CHANNELS, 2, 2, 3],
        role: ShotRole::Generate,
        latent: None,
        scene_index: history,
    };
    (
        SceneRequest {
            global_text: Some(randn(seed + 99, &[1, 5, TEXT_DIM])),
            shots,
        },
        new_shot,
    )
}

#[test]
fn kv_cached_history_gives_the_same_velocities_as_the_full_sequence() {
    let model = tiny_model(AttentionMask::ContextCausal, 3);
    let cfg = SamplerConfig {
        guidance: 1.0,
        seed: 5,
        ..Default::default()
    };
    let (history, new_shot) = history_request(30, 3, false);
    // Full sequence: global, 3 history shots at t_c, the new shot at t = 0.7.
    let mut specs = vec![SegmentSpec::global(5)];
    let mut text = vec![history.global_text.clone().unwrap()];
    let mut latents = Vec::new();
    for shot in &history.shots {
        specs.push(SegmentSpec::shot(
            ShotRole::History,
            3,
            [2, 2, 3],
            cfg.history_timestep,
        ));
        text.push(shot.text.clone());
        latents.push(
            renoise(
                shot.latent.as_ref().unwrap(),
                cfg.history_timestep,
                cfg.seed,
                shot.scene_index,
            )
            .unwrap(),
        );
    }
    specs.push(SegmentSpec::shot(ShotRole::Generate, 3, [2, 2, 3], 0.7));
    text.push(new_shot.text.clone());
    let z = randn(77, &[1, CHANNELS, 2, 2, 3]);
    latents.push(z.clone());
    let full_layout = SceneLayout::new(&specs, 0).unwrap();
    let full = model
        .forward(
            &SceneBatch {
                layout: &full_layout,
                text: &text,
                latents: &latents,
            },
            AttentionMask::ContextCausal,
            None,
        )
        .unwrap();

    let cache = cache_history(&model, &history, &cfg, &KvView::empty()).unwrap();
    assert_eq!(cache.len(), 4);
    let layout = SceneLayout::new(
        &[SegmentSpec::shot(ShotRole::Generate, 3, [2, 2, 3], 0.7)],
        cache.rope_end(),
    )
    .unwrap();
    assert_eq!(
        layout.rope_positions(),
        full_layout.rope_positions()[full_layout.segments()[4].offset..]
    );
    let cached = model
        .forward(
            &SceneBatch {
                layout: &layout,
                text: std::slice::from_ref(&new_shot.text),
                latents: std::slice::from_ref(&z),
            },
            AttentionMask::ContextCausal,
            Some(&cache),
        )
        .unwrap();
    let d = max_diff(&cached[0], &full[3]);
    assert!(d < 1e-5, "velocity differs by {d}");
}

#[test]
fn kv_cached_sampling_gives_the_same_final_latents_with_and_without_guidance() {
    let model = tiny_model(AttentionMask::ContextCausal, 4);
    for guidance in [1.0, 2.5] {
        let cfg = SamplerConfig {
            steps: 6,
            guidance,
            seed: 11,
            ..Default::default()
        };
        let (history, new_shot) = history_request(40, 3, guidance != 1.0);
        let mut full = history.clone();
        full.shots.push(new_shot.clone());
        let want = sample(&model, &full, &cfg, None, |_| StepControl::Continue).unwrap();
        let cache = cache_history(&model, &history, &cfg, &KvView::empty()).unwrap();
        assert_eq!(cache.batch(), if guidance == 1.0 { 1 } else { 2 });
        let only_new = SceneRequest {
            global_text: None,
            shots: vec![new_shot],
        };
        let got = sample(&model, &only_new, &cfg, Some(&cache), |_| {
            StepControl::Continue
        })
        .unwrap();
        let d = max_diff(&got[0], &want[3]);
        assert!(d < 1e-5, "guidance {guidance}: final latent differs by {d}");
    }
}

#[test]
fn a_non_contiguous_subset_of_the_pool_equals_the_full_sequence_of_that_subset() {
    let model = tiny_model(AttentionMask::ContextCausal, 5);
    let t_c = 0.3;
    let grid = [2, 2, 3];
    let inputs: Vec<(Tensor, Tensor)> = (0..3)
        .map(|i| {
            (
                randn(60 + i, &[1, 3, TEXT_DIM]),
                randn(70 + i, &[1, CHANNELS, 2, 2, 3]),
            )
        })
        .collect();
    let global_text = randn(80, &[1, 5, TEXT_DIM]);
    let history_spec = |start: Option<usize>| {
        let s = SegmentSpec::shot(ShotRole::History, 3, grid, t_c);
        match start {
            Some(p) => s.at_rope_start(p),
            None => s,
        }
    };
    let extend = |view: &KvView, spec: SegmentSpec, text: &Tensor, latent: &Tensor| {
        let layout = SceneLayout::history(&[spec], view.rope_end()).unwrap();
        model
            .extend_cache(
                &SceneBatch {
                    layout: &layout,
                    text: std::slice::from_ref(text),
                    latents: std::slice::from_ref(latent),
                },
                view,
            )
            .unwrap()
    };
    // Pool: global, shot 0, shot 1, and shot 2 cached on the branch [global, shot 0] while
    // keeping the RoPE start it has in the scene (after shot 1).
    let global_layout = SceneLayout::history(&[SegmentSpec::global(5)], 0).unwrap();
    let global = model
        .extend_cache(
            &SceneBatch {
                layout: &global_layout,
                text: std::slice::from_ref(&global_text),
                latents: &[],
            },
            &KvView::empty(),
        )
        .unwrap();
    let with_shot0 = extend(&global, history_spec(None), &inputs[0].0, &inputs[0].1);
    let with_shot1 = extend(&with_shot0, history_spec(None), &inputs[1].0, &inputs[1].1);
    let shot2_start = with_shot1.rope_end();
    let branch = extend(
        &with_shot0,
        history_spec(Some(shot2_start)),
        &inputs[2].0,
        &inputs[2].1,
    );
    // The branch did not disturb the view it extended from, nor its sibling.
    assert_eq!(with_shot0.len(), 2);
    assert_eq!(with_shot1.len(), 3);
    assert!(Arc::ptr_eq(&with_shot1.entries()[1], &branch.entries()[1]));

    let mut pool = KvPool::new();
    pool.insert_view(&with_shot1);
    let ids = pool.insert_view(&branch);
    assert_eq!(pool.len(), 4);
    let view = pool.view(&[ids[0], ids[1], ids[2]]).unwrap(); // global, shot 0, shot 2
    let new_text = randn(90, &[1, 3, TEXT_DIM]);
    let z = randn(91, &[1, CHANNELS, 2, 2, 3]);
    let new_spec = SegmentSpec::shot(ShotRole::Generate, 3, grid, 0.8);
    let layout = SceneLayout::new(std::slice::from_ref(&new_spec), view.rope_end()).unwrap();
    let cached = model
        .forward(
            &SceneBatch {
                layout: &layout,
                text: std::slice::from_ref(&new_text),
                latents: std::slice::from_ref(&z),
            },
            AttentionMask::ContextCausal,
            Some(&view),
        )
        .unwrap();

    // The full context-causal sequence of exactly that subset, positions kept.
    let full_layout = SceneLayout::new(
        &[
            SegmentSpec::global(5),
            history_spec(None),
            history_spec(Some(shot2_start)),
            new_spec.at_rope_start(view.rope_end()),
        ],
        0,
    )
    .unwrap();
    let full = model
        .forward(
            &SceneBatch {
                layout: &full_layout,
                text: &[
                    global_text,
                    inputs[0].0.clone(),
                    inputs[2].0.clone(),
                    new_text,
                ],
                latents: &[inputs[0].1.clone(), inputs[2].1.clone(), z],
            },
            AttentionMask::ContextCausal,
            None,
        )
        .unwrap();
    let d = max_diff(&cached[0], &full[2]);
    assert!(d < 1e-5, "subset velocity differs by {d}");
}

#[test]
fn auto_regressive_generation_with_the_cache_matches_recomputing_history() {
    // With the pooled prompt too: a cached shot pools the global prompt from the cache.
    for model in [
        tiny_model(AttentionMask::ContextCausal, 6),
        tiny_pooled_model(AttentionMask::ContextCausal, 6),
    ] {
        let cfg = SamplerConfig {
            steps: 4,
            guidance: 2.0,
            seed: 3,
            ..Default::default()
        };
        let (mut request, new_shot) = history_request(100, 0, true);
        for i in 0..3 {
            let mut shot = new_shot.clone();
            shot.scene_index = i;
            shot.text = randn(120 + i as u64, &[1, 3, TEXT_DIM]);
            request.shots.push(shot);
        }
        let recomputed =
            generate_autoregressive(&model, &request, &cfg, HistoryMode::Recompute, |_, _| {
                StepControl::Continue
            })
            .unwrap();
        let cached =
            generate_autoregressive(&model, &request, &cfg, HistoryMode::KvCache, |_, _| {
                StepControl::Continue
            })
            .unwrap();
        for (a, b) in recomputed.iter().zip(&cached) {
            assert!(max_diff(a, b) < 1e-5);
        }
        // Context guidance sees each shot alone the same way in both modes, so they still agree,
        // and it changes every shot that has a scene to follow.
        let guided = SamplerConfig {
            context_guidance: 2.5,
            ..cfg.clone()
        };
        let recomputed_guided =
            generate_autoregressive(&model, &request, &guided, HistoryMode::Recompute, |_, _| {
                StepControl::Continue
            })
            .unwrap();
        let cached_guided =
            generate_autoregressive(&model, &request, &guided, HistoryMode::KvCache, |_, _| {
                StepControl::Continue
            })
            .unwrap();
        for (k, (a, b)) in recomputed_guided.iter().zip(&cached_guided).enumerate() {
            let d = max_diff(a, b);
            assert!(d < 1e-5, "shot {k}: cache and recompute differ by {d}");
            assert!(
                max_diff(a, &recomputed[k]) > 1e-3,
                "shot {k} ignores context guidance"
            );
        }
    }
}

fn null_global(model: &SceneTransformer) -> Tensor {
    Tensor::zeros(
        (1, model.config().global_text_len, TEXT_DIM),
        candle_core::DType::F32,
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn context_guidance_zero_generates_every_shot_as_if_alone() {
    let go = |_: &lct_model::StepInfo| StepControl::Continue;
    for mask in [AttentionMask::Bidirectional, AttentionMask::ContextCausal] {
        let model = tiny_model(mask, 12);
        let mut request = joint_request(300);
        // A shot of another length runs in a batch of its own.
        request.shots[1].latent_dims = [CHANNELS, 1, 2, 3];
        let cfg = SamplerConfig {
            steps: 4,
            guidance: 1.0,
            context_guidance: 0.0,
            seed: 9,
            ..Default::default()
        };
        let joint = sample(&model, &request, &cfg, None, go).unwrap();
        let plain = SamplerConfig {
            context_guidance: 1.0,
            ..cfg.clone()
        };
        let unguided = sample(&model, &request, &plain, None, go).unwrap();
        for (i, shot) in request.shots.iter().enumerate() {
            let alone = SceneRequest {
                global_text: Some(null_global(&model)),
                shots: vec![shot.clone()],
            };
            let want = sample(&model, &alone, &plain, None, go).unwrap();
            let d = max_diff(&joint[i], &want[0]);
            assert!(d < 1e-4, "{mask:?} shot {i}: differs from alone by {d}");
            assert!(max_diff(&unguided[i], &want[0]) > 1e-3);
        }
    }
}

#[test]
fn context_guidance_leaves_a_lone_shot_without_scene_unchanged() {
    let model = tiny_model(AttentionMask::Bidirectional, 13);
    let (_, shot) = history_request(400, 0, false);
    let request = SceneRequest {
        global_text: None,
        shots: vec![shot],
    };
    let go = |_: &lct_model::StepInfo| StepControl::Continue;
    let cfg = SamplerConfig {
        steps: 3,
        seed: 2,
        ..Default::default()
    };
    let plain = sample(&model, &request, &cfg, None, go).unwrap();
    let guided = SamplerConfig {
        context_guidance: 3.0,
        ..cfg
    };
    let same = sample(&model, &request, &guided, None, go).unwrap();
    assert_eq!(max_diff(&plain[0], &same[0]), 0.0);
}

fn joint_request(seed: u64) -> SceneRequest {
    let (mut request, new_shot) = history_request(seed, 0, true);
    for i in 0..3 {
        let mut shot = new_shot.clone();
        shot.scene_index = i;
        request.shots.push(shot);
    }
    request
}

#[test]
fn same_seed_same_output_different_seed_different_output() {
    let model = tiny_model(AttentionMask::Bidirectional, 7);
    let request = joint_request(200);
    let cfg = SamplerConfig {
        steps: 5,
        seed: 42,
        ..Default::default()
    };
    let a = sample(&model, &request, &cfg, None, |_| StepControl::Continue).unwrap();
    let b = sample(&model, &request, &cfg, None, |_| StepControl::Continue).unwrap();
    let other = SamplerConfig {
        seed: 43,
        ..cfg.clone()
    };
    let c = sample(&model, &request, &other, None, |_| StepControl::Continue).unwrap();
    for i in 0..3 {
        assert_eq!(max_diff(&a[i], &b[i]), 0.0, "shot {i} not reproducible");
        assert!(max_diff(&a[i], &c[i]) > 1e-3, "shot {i} ignores the seed");
    }
}

#[test]
fn the_step_callback_sees_every_step_and_can_abort() {
    let model = tiny_model(AttentionMask::Bidirectional, 8);
    let request = joint_request(300);
    let cfg = SamplerConfig {
        steps: 6,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let err = sample(&model, &request, &cfg, None, |info| {
        seen.push((info.step, info.total, info.denoised.len()));
        if info.step == 2 {
            StepControl::Abort
        } else {
            StepControl::Continue
        }
    })
    .unwrap_err();
    assert!(
        matches!(err, lct_model::Error::Cancelled { step: 2, total: 6 }),
        "{err}"
    );
    assert_eq!(seen, vec![(1, 6, 3), (2, 6, 3)]);
}

#[test]
fn condition_shots_are_returned_as_given() {
    let model = tiny_model(AttentionMask::Bidirectional, 9);
    let mut request = joint_request(400);
    let given = randn(401, &[1, CHANNELS, 1, 2, 3]);
    request.shots[1].role = ShotRole::Condition;
    request.shots[1].latent_dims = [CHANNELS, 1, 2, 3];
    request.shots[1].latent = Some(given.clone());
    let cfg = SamplerConfig {
        steps: 3,
        ..Default::default()
    };
    let out = sample(&model, &request, &cfg, None, |_| StepControl::Continue).unwrap();
    assert_eq!(max_diff(&out[1], &given), 0.0);
    assert_eq!(out[0].dims(), &[1, CHANNELS, 2, 2, 3]);
    let _ = Device::Cpu;
}

/// Same-layout scenes run as one batch with their own timesteps (how training groups them)
/// give each scene's velocities as when it runs alone, with and without the pooled prompt:
/// each sample must be modulated by its own prompts and timesteps, not its neighbour's.
#[test]
fn a_batch_of_same_layout_scenes_equals_each_scene_alone() {
    let grids = [[2, 3, 3], [1, 3, 3], [2, 3, 3]];
    let timesteps = [[0.2f32, 0.6, 0.9], [0.8, 0.1, 0.4], [0.5, 0.5, 0.3]];
    let scenes: Vec<Scene> = timesteps
        .iter()
        .enumerate()
        .map(|(i, ts)| scene(40 + 10 * i as u64, &grids, ts))
        .collect();
    for mask in [AttentionMask::Bidirectional, AttentionMask::ContextCausal] {
        for model in [tiny_model(mask, 3), tiny_pooled_model(mask, 3)] {
            let stack = |part: fn(&Scene) -> &Vec<Tensor>, i: usize| {
                let parts: Vec<&Tensor> = scenes.iter().map(|s| &part(s)[i]).collect();
                Tensor::cat(&parts, 0).unwrap()
            };
            let text: Vec<Tensor> = (0..scenes[0].text.len())
                .map(|i| stack(|s| &s.text, i))
                .collect();
            let latents: Vec<Tensor> = (0..grids.len()).map(|i| stack(|s| &s.latents, i)).collect();
            let per_sample: Vec<Vec<f32>> = scenes.iter().map(|s| s.layout.timesteps()).collect();
            let batch = SceneBatch {
                layout: &scenes[0].layout,
                text: &text,
                latents: &latents,
            };
            let together = model
                .forward_per_sample_timesteps(&batch, mask, &per_sample)
                .unwrap();
            for (b, s) in scenes.iter().enumerate() {
                let alone = run(&model, s, mask);
                for (shot, (v, want)) in together.iter().zip(&alone).enumerate() {
                    let d = max_diff(&v.narrow(0, b, 1).unwrap(), want);
                    assert!(d < 1e-5, "{mask:?}, scene {b}, shot {shot}: {d}");
                }
            }
        }
    }
}
