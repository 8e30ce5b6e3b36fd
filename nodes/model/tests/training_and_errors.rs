//! The tuning loop learns and resumes exactly; bad input is an error, never a panic.
mod common;

use candle_core::{DType, Device, Tensor};
use common::{max_diff, randn, tiny_model};
use lct_model::weights::{load_model, save_checkpoint};
use lct_model::{
    cache_history, fixed_shot_losses, init_tensors, sample, AttentionMask, Config, Error, Init,
    KvView, SamplerConfig, SceneBatch, SceneLayout, SceneRequest, SegmentSpec, ShotInput, ShotRole,
    StepControl, TrainConfig, Trainer, TrainingScene, TrainingShot,
};

fn synthetic_scenes(count: usize) -> Vec<TrainingScene> {
    (0..count as u64)
        .map(|s| TrainingScene {
            global_text: Some(randn(1000 + s, &[6, 16])),
            shots: (0..2 + s as usize % 2)
                .map(|i| TrainingShot {
                    latent: randn(2000 + 10 * s + i as u64, &[4, 2, 3, 3]),
                    text: randn(3000 + 10 * s + i as u64, &[4, 16]),
                    weight: None,
                })
                .collect(),
        })
        .collect()
}

#[test]
fn a_tiny_model_overfits_a_handful_of_scenes() {
    let cfg = Config {
        hidden_size: 64,
        num_heads: 4,
        mlp_hidden_size: 128,
        ..Config::tiny()
    };
    let train = TrainConfig {
        learning_rate: 6e-3,
        single_frame_prob: 0.0,
        text_dropout_prob: 0.0,
        seed: 1,
        ..Default::default()
    };
    let mut trainer = Trainer::new(&cfg, train, &Device::Cpu).unwrap();
    let scenes = synthetic_scenes(4);
    let mut losses = Vec::new();
    // Measured: about 20x over 600 steps (1.99 -> 0.10 averaged over 20 steps).
    for _ in 0..600 {
        losses.push(trainer.step(&scenes).unwrap().loss);
    }
    let first: f32 = losses[..20].iter().sum::<f32>() / 20.0;
    let last: f32 = losses[losses.len() - 20..].iter().sum::<f32>() / 20.0;
    assert!(
        first / last >= 10.0,
        "loss fell only from {first} to {last}"
    );
}

#[test]
fn training_resumes_exactly_from_a_checkpoint() {
    let cfg = Config::tiny().with_attention(AttentionMask::ContextCausal);
    let train = TrainConfig {
        single_frame_prob: 0.5,
        text_dropout_prob: 0.3,
        // Given-context draws, the schedule and the moving average are part of the state a
        // resume must replay.
        context_prob: 0.4,
        seed: 9,
        ema_decay: 0.9,
        warmup_steps: 2,
        decay_steps: 2,
        ..Default::default()
    };
    let scenes = synthetic_scenes(2);
    let mut straight = Trainer::new(&cfg, train.clone(), &Device::Cpu).unwrap();
    let straight_losses: Vec<f32> = (0..5)
        .map(|_| straight.step(&scenes).unwrap().loss)
        .collect();

    let dir = tempdir("resume");
    let mut first = Trainer::new(&cfg, train, &Device::Cpu).unwrap();
    for _ in 0..3 {
        first.step(&scenes).unwrap();
    }
    first.save(&dir).unwrap();
    drop(first);
    let mut resumed = Trainer::resume(&dir, &Device::Cpu).unwrap();
    assert_eq!(resumed.step_count(), 3);
    let resumed_losses: Vec<f32> = (0..2)
        .map(|_| resumed.step(&scenes).unwrap().loss)
        .collect();
    assert_eq!(resumed_losses, straight_losses[3..]);
    let (a, b) = (straight.sampling_tensors(), resumed.sampling_tensors());
    for (name, tensor) in &a {
        assert_eq!(max_diff(tensor, &b[name]), 0.0, "EMA of {name}");
    }
    // The saved weights load for inference with the same config.
    assert!(load_model(&dir, DType::F32, &Device::Cpu).is_ok());
}

#[test]
fn warm_up_then_cosine_decay_and_a_moving_average_of_the_weights() {
    let train = TrainConfig {
        learning_rate: 1e-3,
        warmup_steps: 4,
        decay_steps: 10,
        min_lr_ratio: 0.1,
        ..Default::default()
    };
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(close(train.learning_rate_at(1), 2.5e-4));
    assert!(close(train.learning_rate_at(4), 1e-3));
    assert!(close(train.learning_rate_at(9), 1e-4 + 9e-4 * 0.5));
    assert!(close(train.learning_rate_at(14), 1e-4));
    assert!(close(train.learning_rate_at(1000), 1e-4));
    let constant = TrainConfig::default();
    assert!(close(constant.learning_rate_at(1), constant.learning_rate));

    // One step: the average moves (1 - decay) of the way from the start to the new weights.
    let decay = 0.75;
    let mut trainer = Trainer::new(
        &Config::tiny(),
        TrainConfig {
            ema_decay: decay,
            ..Default::default()
        },
        &Device::Cpu,
    )
    .unwrap();
    // Copies: the trainer's tensors share storage with the weights it updates in place.
    let start: std::collections::HashMap<String, Tensor> = trainer
        .tensors()
        .into_iter()
        .map(|(name, t)| (name, t.copy().unwrap()))
        .collect();
    trainer.step(&synthetic_scenes(2)).unwrap();
    let (trained, averaged) = (trainer.tensors(), trainer.sampling_tensors());
    let mut moved = 0;
    for (name, w0) in &start {
        let want = ((w0 * decay).unwrap() + (&trained[name] * (1.0 - decay)).unwrap()).unwrap();
        assert!(max_diff(&averaged[name], &want) < 1e-6, "{name}");
        moved += usize::from(max_diff(&averaged[name], &trained[name]) > 0.0);
    }
    assert!(moved > 0, "the average differs from the trained weights");
    // The average records no operation: one that did would hold every earlier average alive
    // through its graph, and a long run's memory would grow by the model's size each step.
    trainer.step(&synthetic_scenes(2)).unwrap();
    for (name, average) in trainer.sampling_tensors() {
        assert!(!average.track_op(), "{name}: the average keeps a graph");
    }
    assert!(trainer.set_ema_decay(1.0).is_err());
    assert!(trainer.set_schedule(1, 1, 2.0).is_err());
    trainer.set_ema_decay(0.0).unwrap();
    assert_eq!(trainer.sampling_tensors().len(), trained.len());
}

#[test]
fn data_parallel_workers_follow_the_single_thread_run() {
    let cfg = Config::tiny();
    let train = TrainConfig {
        single_frame_prob: 0.5,
        text_dropout_prob: 0.3,
        seed: 4,
        ..Default::default()
    };
    let scenes = synthetic_scenes(5);
    let run = |workers: usize| {
        let mut trainer = Trainer::new(&cfg, train.clone(), &Device::Cpu).unwrap();
        trainer.set_workers(workers).unwrap();
        let losses: Vec<f32> = (0..4)
            .map(|_| trainer.step(&scenes).unwrap().loss)
            .collect();
        (losses, trainer.tensors())
    };
    let (single, single_weights) = run(1);
    let (parallel, parallel_weights) = run(3);
    // Same random draws, gradients summed in another grouping: equal up to rounding.
    for (a, b) in single.iter().zip(&parallel) {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs(),
            "losses {single:?} vs {parallel:?}"
        );
    }
    for (name, a) in &single_weights {
        let diff = max_diff(a, &parallel_weights[name]);
        assert!(diff < 1e-4, "'{name}' differs by {diff} after 4 steps");
    }
    // A given worker count is deterministic, bit for bit.
    assert_eq!(run(3).0, parallel);
}

#[test]
fn a_resumed_run_takes_a_new_learning_rate_and_refuses_a_bad_one() {
    let mut trainer = Trainer::new(&Config::tiny(), TrainConfig::default(), &Device::Cpu).unwrap();
    assert!(trainer.set_learning_rate(0.0).is_err());
    assert!(trainer.set_learning_rate(f64::NAN).is_err());
    trainer.set_learning_rate(2e-4).unwrap();
    let dir = tempdir("anneal");
    trainer.save(&dir).unwrap();
    let saved = std::fs::read_to_string(dir.join(lct_model::train::TRAINER_FILE)).unwrap();
    assert!(saved.contains("0.0002"), "{saved}");
}

#[test]
fn pixel_weights_scale_the_loss_where_they_are_given_and_must_fit_the_latent() {
    let train = TrainConfig {
        single_frame_prob: 0.5,
        text_dropout_prob: 0.0,
        seed: 8,
        ..Default::default()
    };
    let loss = |scene: &TrainingScene| {
        let mut trainer = Trainer::new(&Config::tiny(), train.clone(), &Device::Cpu).unwrap();
        trainer
            .scene_loss(scene)
            .map(|l| l.to_scalar::<f32>().unwrap())
    };
    let mut scene = synthetic_scenes(1).remove(0);
    let plain = loss(&scene).unwrap();
    for shot in &mut scene.shots {
        let (_, t, h, w) = shot.latent.dims4().unwrap();
        shot.weight = Some(Tensor::full(3f32, (t, h, w), &Device::Cpu).unwrap());
    }
    let tripled = loss(&scene).unwrap();
    assert!(
        (tripled - 3.0 * plain).abs() < 1e-5 * tripled,
        "{tripled} vs 3 x {plain}"
    );
    scene.shots[1].weight = Some(Tensor::ones((1, 3, 3), DType::F32, &Device::Cpu).unwrap());
    let error = loss(&scene).unwrap_err().to_string();
    assert!(
        error.contains(
            "training shot 1: pixel weight [1, 3, 3] is not the latent's [T, H, W] = [2, 3, 3]"
        ),
        "{error}"
    );
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lct-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_config_that_disagrees_with_the_weights_is_a_clear_error() {
    let cfg = Config::tiny();
    let tensors = init_tensors(&cfg, 1, Init::Random, &Device::Cpu).unwrap();
    let dir = tempdir("mismatch");
    save_checkpoint(&dir, &cfg, &tensors).unwrap();
    assert!(load_model(&dir, DType::F32, &Device::Cpu).is_ok());

    let deeper = Config {
        depth: 3,
        ..cfg.clone()
    };
    deeper.save(&dir.join("config.json")).unwrap();
    let err = load_model(&dir, DType::F32, &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, Error::MissingTensor { name, .. } if name.starts_with("blocks.2.")),
        "{err}"
    );

    let wider = Config {
        mlp_hidden_size: 80,
        ..cfg.clone()
    };
    wider.save(&dir.join("config.json")).unwrap();
    let err = load_model(&dir, DType::F32, &Device::Cpu).unwrap_err();
    let message = err.to_string();
    assert!(matches!(&err, Error::TensorShape { .. }), "{err}");
    assert!(
        message.contains("mlp_in") && message.contains("[64, 32]") && message.contains("[80, 32]"),
        "{message}"
    );

    let shallower = Config {
        depth: 1,
        ..cfg.clone()
    };
    shallower.save(&dir.join("config.json")).unwrap();
    let err = load_model(&dir, DType::F32, &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, Error::UnusedTensors { first, .. } if first.starts_with("blocks.1.")),
        "{err}"
    );

    let broken = Config {
        num_heads: 3,
        ..cfg.clone()
    };
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string(&broken).unwrap(),
    )
    .unwrap();
    let err = load_model(&dir, DType::F32, &Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");

    std::fs::write(dir.join("config.json"), "{\"hidden_size\": 32}").unwrap();
    assert!(matches!(
        load_model(&dir, DType::F32, &Device::Cpu),
        Err(Error::Json { .. })
    ));
    assert!(matches!(
        load_model(&dir.join("nowhere"), DType::F32, &Device::Cpu),
        Err(Error::Io { .. })
    ));
}

#[test]
fn bad_scene_input_is_an_error_not_a_panic() {
    let model = tiny_model(AttentionMask::Bidirectional, 1);
    // Zero shots.
    assert!(matches!(
        SceneLayout::scene(Some(4), &[]),
        Err(Error::Layout(_))
    ));
    assert!(sample(
        &model,
        &SceneRequest::default(),
        &SamplerConfig::default(),
        None,
        |_| StepControl::Continue
    )
    .is_err());
    // A timestep outside [0, 1].
    for t in [1.5, -0.1, f32::NAN] {
        let err = SceneLayout::scene(
            None,
            &[SegmentSpec::shot(ShotRole::Generate, 2, [1, 2, 2], t)],
        )
        .unwrap_err();
        assert!(matches!(err, Error::Timestep { segment: 0, .. }), "{err}");
    }
    let text = randn(1, &[1, 2, 16]);
    let latent = randn(2, &[1, 4, 1, 2, 2]);
    assert!(matches!(
        model.forward_single_shot(&latent, &text, 2.0),
        Err(Error::Timestep { .. })
    ));
    // A zero-sized grid and a misplaced global prompt.
    assert!(SceneLayout::scene(
        None,
        &[SegmentSpec::shot(ShotRole::Generate, 2, [0, 2, 2], 0.5)]
    )
    .is_err());
    assert!(SceneLayout::new(
        &[
            SegmentSpec::shot(ShotRole::Generate, 2, [1, 2, 2], 0.5),
            SegmentSpec::global(3)
        ],
        0
    )
    .is_err());

    let layout = SceneLayout::scene(
        None,
        &[SegmentSpec::shot(ShotRole::Generate, 2, [1, 2, 2], 0.5)],
    )
    .unwrap();
    let forward = |text: &Tensor, latent: &Tensor| {
        model.forward(
            &SceneBatch {
                layout: &layout,
                text: std::slice::from_ref(text),
                latents: std::slice::from_ref(latent),
            },
            AttentionMask::Bidirectional,
            None,
        )
    };
    assert!(forward(&text, &latent).is_ok());
    let cases = [
        (randn(3, &[1, 2, 15]), latent.clone(), "text"), // wrong text width
        (randn(3, &[1, 3, 16]), latent.clone(), "text"), // wrong text length
        (text.clone(), randn(4, &[1, 3, 1, 2, 2]), "latent"), // wrong channels
        (text.clone(), randn(4, &[1, 4, 1, 2, 3]), "grid"), // grid disagrees with layout
        (text.clone(), randn(4, &[1, 4, 2, 2]), "latent"), // 4-D latent
        (randn(3, &[2, 2, 16]), latent.clone(), "batch"), // batch mismatch
    ];
    for (text, latent, what) in cases {
        let err = forward(&text, &latent).unwrap_err();
        assert!(matches!(err, Error::Shape(_)), "{what}: {err}");
        assert!(
            err.to_string().contains("segment 0") || err.to_string().contains(what),
            "{what}: {err}"
        );
    }
    // Wrong number of tensors.
    let err = model
        .forward(
            &SceneBatch {
                layout: &layout,
                text: &[],
                latents: &[],
            },
            AttentionMask::Bidirectional,
            None,
        )
        .unwrap_err();
    assert!(matches!(err, Error::Shape(_)), "{err}");
}

#[test]
fn bad_sampler_requests_are_errors() {
    let model = tiny_model(AttentionMask::Bidirectional, 2);
    let shot = ShotInput {
        text: randn(1, &[1, 2, 16]),
        latent_dims: [4, 1, 2, 2],
        role: ShotRole::Generate,
        latent: None,
        scene_index: 0,
    };
    let request = SceneRequest {
        global_text: None,
        shots: vec![shot.clone()],
    };
    for bad in [
        SamplerConfig {
            steps: 0,
            ..Default::default()
        },
        SamplerConfig {
            history_timestep: 1.2,
            ..Default::default()
        },
        SamplerConfig {
            shift: 0.0,
            ..Default::default()
        },
        SamplerConfig {
            guidance: f32::NAN,
            ..Default::default()
        },
        SamplerConfig {
            context_guidance: -1.0,
            ..Default::default()
        },
    ] {
        let err = sample(&model, &request, &bad, None, |_| StepControl::Continue).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
    }
    // A condition shot without its latent, and one whose latent disagrees with its shape.
    let mut missing = request.clone();
    missing.shots[0].role = ShotRole::Condition;
    let generate = ShotInput {
        scene_index: 1,
        ..shot.clone()
    };
    missing.shots.push(generate.clone());
    assert!(matches!(
        sample(&model, &missing, &SamplerConfig::default(), None, |_| {
            StepControl::Continue
        }),
        Err(Error::Shape(_))
    ));
    missing.shots[0].latent = Some(randn(5, &[1, 4, 2, 2, 2]));
    assert!(matches!(
        sample(&model, &missing, &SamplerConfig::default(), None, |_| {
            StepControl::Continue
        }),
        Err(Error::Shape(_))
    ));
    // No shot to generate.
    let only_given = SceneRequest {
        global_text: None,
        shots: vec![ShotInput {
            role: ShotRole::Condition,
            latent: Some(randn(6, &[1, 4, 1, 2, 2])),
            ..shot
        }],
    };
    assert!(matches!(
        sample(&model, &only_given, &SamplerConfig::default(), None, |_| {
            StepControl::Continue
        }),
        Err(Error::Layout(_))
    ));
    // A KV cache for a bidirectional model.
    let err = cache_history(
        &model,
        &request,
        &SamplerConfig::default(),
        &KvView::empty(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::KvCache(_)), "{err}");
    // Unknown preset.
    assert!(matches!(Config::preset("huge"), Err(Error::Config(m)) if m.contains("tiny")));
}

#[test]
fn fixed_shot_losses_read_the_context_only_where_the_mask_lets_them() {
    for mask in [AttentionMask::Bidirectional, AttentionMask::ContextCausal] {
        let cfg = Config::tiny().with_attention(mask);
        let weights = init_tensors(&cfg, 4, Init::Random, &Device::Cpu).unwrap();
        let trainer =
            Trainer::with_weights(&cfg, TrainConfig::default(), &weights, &Device::Cpu).unwrap();
        let scene = synthetic_scenes(1).remove(0);
        assert_eq!(scene.shots.len(), 2);
        let noise: Vec<Tensor> = (0..2).map(|i| randn(7000 + i, &[1, 4, 2, 3, 3])).collect();
        let losses = |scene: &TrainingScene| {
            fixed_shot_losses(trainer.pipeline(), scene, &[0.5, 0.7], &noise)
        };
        let base = losses(&scene).unwrap();
        assert_eq!(base, losses(&scene).unwrap(), "{mask:?}: not deterministic");
        let mut changed = scene.clone();
        changed.shots[1].latent = randn(7100, &[4, 2, 3, 3]);
        let after = losses(&changed).unwrap();
        assert_ne!(base[1], after[1], "{mask:?}: shot 1's own latent changed");
        match mask {
            // The first shot attends to the second only when attention is bidirectional.
            AttentionMask::Bidirectional => assert_ne!(base[0], after[0]),
            _ => assert_eq!(base[0], after[0], "a causal shot read a later one"),
        }
    }
}

#[test]
fn fixed_shot_losses_name_what_does_not_match() {
    let cfg = Config::tiny();
    let weights = init_tensors(&cfg, 4, Init::Random, &Device::Cpu).unwrap();
    let trainer =
        Trainer::with_weights(&cfg, TrainConfig::default(), &weights, &Device::Cpu).unwrap();
    let scene = synthetic_scenes(1).remove(0);
    let noise: Vec<Tensor> = (0..2).map(|i| randn(i, &[1, 4, 2, 3, 3])).collect();
    let err = fixed_shot_losses(trainer.pipeline(), &scene, &[0.5], &noise).unwrap_err();
    assert!(err.to_string().contains("2 shots"), "{err}");
    let err = fixed_shot_losses(trainer.pipeline(), &scene, &[0.5, 1.5], &noise).unwrap_err();
    assert!(matches!(err, Error::Timestep { segment: 1, .. }), "{err}");
    let wrong = vec![noise[0].clone(), randn(9, &[1, 4, 1, 3, 3])];
    let err = fixed_shot_losses(trainer.pipeline(), &scene, &[0.5, 0.5], &wrong).unwrap_err();
    assert!(err.to_string().contains("shot 1: noise"), "{err}");
}

#[test]
fn a_bad_context_draw_is_refused() {
    let mut trainer = Trainer::new(&Config::tiny(), TrainConfig::default(), &Device::Cpu).unwrap();
    let err = trainer.set_context_draw(1.5, 0.1).unwrap_err();
    assert!(err.to_string().contains("1.5"), "{err}");
    trainer.set_context_draw(0.3, 0.1).unwrap();
}
