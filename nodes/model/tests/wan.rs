//! The Wan transformer against diffusers: a tiny random `WanTransformer3DModel` saved in the
//! diffusers layout and its outputs, written by `fixtures/wan_reference.py` (pinned diffusers
//! 0.42.1, torch 2.15.0), loaded and run here in f32.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use lct_model::wan::{load_transformer, load_vae, WanTimestep};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wan_tiny")
}

fn reference() -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture().join("reference.safetensors"), &Device::Cpu).unwrap()
}

/// Largest difference relative to the reference's largest magnitude.
fn relative_error(ours: &Tensor, theirs: &Tensor) -> f32 {
    assert_eq!(ours.dims(), theirs.dims());
    let difference = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
    let scale = theirs.abs().unwrap().max_all().unwrap();
    (difference / scale).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn the_wan_transformer_matches_diffusers_with_one_timestep_and_per_token_timesteps() {
    let model = load_transformer(&fixture(), DType::F32, &Device::Cpu).unwrap();
    let tensors = reference();
    let latents = &tensors["latents"];
    let text = &tensors["text"];

    let single = model
        .forward(latents, WanTimestep::PerSample(&tensors["timestep"]), text)
        .unwrap();
    let error = relative_error(&single, &tensors["output"]);
    eprintln!("single timestep: relative error {error:.2e}");
    assert!(error < 1e-4, "single timestep: relative error {error}");

    let per_token = model
        .forward(
            latents,
            WanTimestep::PerToken(&tensors["per_token_timestep"]),
            text,
        )
        .unwrap();
    let error = relative_error(&per_token, &tensors["per_token_output"]);
    eprintln!("per-token timesteps: relative error {error:.2e}");
    assert!(error < 1e-4, "per-token timesteps: relative error {error}");
    // The per-token path is not the single one in disguise.
    assert!(relative_error(&per_token, &tensors["output"]) > 1e-2);
}

#[test]
fn skyreels_v2_diffusion_forcing_matches_diffusers_per_frame_and_block_causal() {
    let folder = fixture().join("skyreels_df");
    let model = load_transformer(&folder, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(model.config().num_frame_per_block, 2);
    let tensors =
        candle_core::safetensors::load(folder.join("reference.safetensors"), &Device::Cpu).unwrap();
    let output = model
        .forward(
            &tensors["latents"],
            WanTimestep::PerFrame(&tensors["per_frame_timestep"]),
            &tensors["text"],
        )
        .unwrap();
    let error = relative_error(&output, &tensors["output"]);
    eprintln!("SkyReels-V2 diffusion forcing: relative error {error:.2e}");
    assert!(error < 1e-4, "diffusion forcing: relative error {error}");
}

#[test]
fn the_wan_vaes_encode_and_decode_as_diffusers_does() {
    let tensors =
        candle_core::safetensors::load(fixture().join("vae_reference.safetensors"), &Device::Cpu)
            .unwrap();
    // Wan 2.1's VAE, and Wan 2.2 TI2V's (patchified, residual blocks with shortcuts).
    for name in ["vae", "vae22"] {
        let vae = load_vae(&fixture().join(name), DType::F32, &Device::Cpu).unwrap();
        let encoded = vae.encode(&tensors[&format!("{name}.video")]).unwrap();
        let error = relative_error(&encoded, &tensors[&format!("{name}.encoded")]);
        eprintln!("{name} encode: relative error {error:.2e}");
        assert!(error < 1e-4, "{name} encode: relative error {error}");
        let decoded = vae.decode(&tensors[&format!("{name}.latents")]).unwrap();
        let error = relative_error(&decoded, &tensors[&format!("{name}.decoded")]);
        eprintln!("{name} decode: relative error {error:.2e}");
        assert!(error < 1e-4, "{name} decode: relative error {error}");
        // Normalising is the inverse of denormalising.
        let back = vae.denormalize(&vae.normalize(&encoded).unwrap()).unwrap();
        assert!(relative_error(&back, &encoded) < 1e-6);
    }
    let vae = load_vae(&fixture().join("vae"), DType::F32, &Device::Cpu).unwrap();
    let eight = Tensor::zeros((1, 3, 8, 16, 16), DType::F32, &Device::Cpu).unwrap();
    let message = vae.encode(&eight).unwrap_err().to_string();
    assert!(message.contains("8 is not (use 5 or 9)"), "{message}");
}

#[test]
fn wan_loading_errors_name_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let transformer = dir.path().join("transformer");
    std::fs::create_dir(&transformer).unwrap();
    let config = std::fs::read_to_string(fixture().join("transformer/config.json")).unwrap();

    // No weights at all.
    std::fs::write(transformer.join("config.json"), &config).unwrap();
    let error = load_transformer(dir.path(), DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("diffusion_pytorch_model.safetensors"),
        "{error}"
    );

    // A shard index naming a shard that is not there.
    std::fs::write(
        transformer.join("diffusion_pytorch_model.safetensors.index.json"),
        r#"{"weight_map": {"proj_out.weight": "diffusion_pytorch_model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let error = load_transformer(dir.path(), DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("00001-of-00002") && error.contains("missing"),
        "{error}"
    );

    // A config the weights do not fit: the tensor is named with both shapes.
    std::fs::remove_file(transformer.join("diffusion_pytorch_model.safetensors.index.json"))
        .unwrap();
    std::fs::copy(
        fixture().join("transformer/diffusion_pytorch_model.safetensors"),
        transformer.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    std::fs::write(
        transformer.join("config.json"),
        config.replace("\"ffn_dim\": 48", "\"ffn_dim\": 64"),
    )
    .unwrap();
    let error = load_transformer(dir.path(), DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("ffn"), "{error}");

    // Image conditioning is refused by name.
    std::fs::write(
        transformer.join("config.json"),
        config.replace("\"image_dim\": null", "\"image_dim\": 1280"),
    )
    .unwrap();
    let error = load_transformer(dir.path(), DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("config.json") && error.contains("image_dim"),
        "{error}"
    );
}

mod scene {
    use super::*;
    use lct_model::wan::{WanShot, WanTransformer};
    use lct_model::AttentionMask;

    struct Inputs {
        global: Tensor,
        prompts: Vec<Tensor>,
        latents: Vec<Tensor>,
    }

    /// Three shots of 3, 2 and 2 latent frames and four prompt windows, from the fixture's
    /// tensors (deterministic, and not all alike).
    fn inputs() -> Inputs {
        let tensors = reference();
        let (latents, text) = (&tensors["latents"], &tensors["text"]);
        Inputs {
            global: text.narrow(1, 0, 2).unwrap(),
            prompts: vec![
                text.narrow(1, 2, 3).unwrap(),
                text.narrow(1, 5, 2).unwrap(),
                (text.narrow(1, 1, 4).unwrap() * -1.0).unwrap(),
            ],
            latents: vec![
                latents.clone(),
                (latents.narrow(2, 0, 2).unwrap() * -0.5).unwrap(),
                (latents.narrow(2, 1, 2).unwrap() + 0.25).unwrap(),
            ],
        }
    }

    fn shots<'a>(inputs: &'a Inputs, timesteps: &[f64]) -> Vec<WanShot<'a>> {
        timesteps
            .iter()
            .enumerate()
            .map(|(i, &timestep)| WanShot {
                latents: &inputs.latents[i],
                timestep,
                prompt: &inputs.prompts[i],
            })
            .collect()
    }

    fn model() -> WanTransformer {
        load_transformer(&fixture(), DType::F32, &Device::Cpu).unwrap()
    }

    #[test]
    fn a_one_shot_scene_is_the_single_shot_model() {
        let (model, inputs) = (model(), inputs());
        let (out, _) = model
            .scene_forward(
                &inputs.global,
                &shots(&inputs, &[637.0]),
                AttentionMask::Bidirectional,
                None,
            )
            .unwrap();
        let text = Tensor::cat(&[&inputs.global, &inputs.prompts[0]], 1).unwrap();
        let timestep = Tensor::new(&[637f32], &Device::Cpu).unwrap();
        let single = model
            .forward(&inputs.latents[0], WanTimestep::PerSample(&timestep), &text)
            .unwrap();
        let error = relative_error(&out[0], &single);
        assert!(
            error < 1e-5,
            "one-shot scene against the plain model: {error}"
        );
    }

    #[test]
    fn shots_see_each_other_as_the_mask_says_and_their_own_prompt_only() {
        let (model, mut inputs) = (model(), inputs());
        let run = |inputs: &Inputs, mask| {
            model
                .scene_forward(&inputs.global, &shots(inputs, &[800.0, 500.0]), mask, None)
                .unwrap()
                .0
        };
        let joint = run(&inputs, AttentionMask::Bidirectional);
        let causal = run(&inputs, AttentionMask::ContextCausal);
        // Shot 1 alone (a one-shot scene) for the context-causal comparison.
        let (alone, _) = model
            .scene_forward(
                &inputs.global,
                &shots(&inputs, &[800.0]),
                AttentionMask::ContextCausal,
                None,
            )
            .unwrap();
        assert!(
            relative_error(&causal[0], &alone[0]) < 1e-5,
            "causal shot 1 saw shot 2"
        );
        assert!(
            relative_error(&joint[0], &alone[0]) > 1e-3,
            "joint shot 1 did not see shot 2"
        );

        // Change shot 2's prompt: shot 1 (causal) is untouched, shot 2 changes.
        inputs.prompts[1] = (&inputs.prompts[1] * 3.0).unwrap();
        let changed = run(&inputs, AttentionMask::ContextCausal);
        assert!(relative_error(&changed[0], &causal[0]) < 1e-6);
        assert!(relative_error(&changed[1], &causal[1]) > 1e-3);
    }

    #[test]
    fn the_kv_cache_equals_recomputing_the_history() {
        let (model, inputs) = (model(), inputs());
        let mask = AttentionMask::ContextCausal;
        // Recompute: history shots 1 and 2 at t_c = 300 with shot 3 at 800, in one pass.
        let (full, _) = model
            .scene_forward(
                &inputs.global,
                &shots(&inputs, &[300.0, 300.0, 800.0]),
                mask,
                None,
            )
            .unwrap();
        // Cache: the history once, then shot 3 (at later steps too) against it.
        let history_shots = shots(&inputs, &[300.0, 300.0]);
        let (_, cache) = model
            .scene_forward(&inputs.global, &history_shots, mask, None)
            .unwrap();
        assert_eq!((cache.frames, cache.shots), (5, 2));
        let all = shots(&inputs, &[300.0, 300.0, 800.0]);
        let (cached, extended) = model
            .scene_forward(&inputs.global, &all[2..], mask, Some(&cache))
            .unwrap();
        let error = relative_error(&cached[0], &full[2]);
        eprintln!("KV cache against recompute, shot 3: relative error {error:.2e}");
        assert!(
            error < 1e-4,
            "cached shot 3 differs from recomputed: {error}"
        );
        assert_eq!((extended.frames, extended.shots), (7, 3));
        assert_eq!(extended.tokens(), 7 * 4 * 5);

        // The bidirectional mask cannot use a cache: refused by name.
        let error = model
            .scene_forward(
                &inputs.global,
                &all[2..],
                AttentionMask::Bidirectional,
                Some(&cache),
            )
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("context-causal"), "{error}");
    }
}

#[test]
fn umt5_and_its_tokenizer_match_transformers_and_wan_pipeline_prompt_encoding() {
    use lct_model::wan::{load_text_encoder, WAN_TEXT_TOKENS};
    let text = load_text_encoder(&fixture(), DType::F32, &Device::Cpu).unwrap();
    let tensors =
        candle_core::safetensors::load(fixture().join("text_reference.safetensors"), &Device::Cpu)
            .unwrap();
    let prompts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("prompts.json")).unwrap())
            .unwrap();
    let ids_of = |name: &str| -> Vec<u32> {
        tensors[name]
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|id| id as u32)
            .collect()
    };
    for (i, prompt) in prompts["prompts"].as_array().unwrap().iter().enumerate() {
        let prompt = prompt.as_str().unwrap();
        assert_eq!(
            text.tokenizer.encode(prompt).unwrap(),
            ids_of(&format!("prompt{i}.ids")),
            "token ids of {prompt:?}"
        );
        let embeds = text.encode(prompt).unwrap();
        assert_eq!(embeds.dims(), &[WAN_TEXT_TOKENS, 16]);
        let error = relative_error(&embeds, &tensors[&format!("prompt{i}.embeds")]);
        eprintln!("prompt {i}: relative error {error:.2e}");
        assert!(error < 1e-4, "prompt {prompt:?}: relative error {error}");
    }
    // Truncated to 512 tokens with the end-of-sequence token kept last.
    let long = text
        .tokenizer
        .encode(prompts["long"].as_str().unwrap())
        .unwrap();
    assert_eq!(long, ids_of("long.ids"));
    assert_eq!(long.len(), WAN_TEXT_TOKENS);
}

#[test]
fn wan_auto_regressive_generation_with_a_kv_cache_equals_recomputing_the_history() {
    use lct_model::wan::{wan_generate_autoregressive, wan_sample};
    use lct_model::{
        AttentionMask, HistoryMode, SamplerConfig, SceneRequest, ShotInput, ShotRole, StepControl,
    };
    let model = load_transformer(&fixture(), DType::F32, &Device::Cpu).unwrap();
    let device = Device::Cpu;
    let text = |seed: u64, tokens: usize| {
        lct_model::noise::gaussian(seed, 7, &[1, tokens, 16], &device).unwrap()
    };
    let request = SceneRequest {
        global_text: Some(text(1, 7)),
        shots: (0..3)
            .map(|i| ShotInput {
                text: text(10 + i as u64, 5),
                latent_dims: [4, 2, 4, 4],
                role: ShotRole::Generate,
                latent: None,
                scene_index: i,
            })
            .collect(),
    };
    let null = text(99, 3);
    let cfg = SamplerConfig {
        steps: 3,
        guidance: 2.5,
        shift: 3.0,
        seed: 5,
        ..SamplerConfig::default()
    };
    let run = |mode| {
        wan_generate_autoregressive(
            &model,
            &request,
            &cfg,
            Some(&null),
            AttentionMask::ContextCausal,
            mode,
            |_, _| StepControl::Continue,
        )
        .unwrap()
    };
    let recomputed = run(HistoryMode::Recompute);
    let cached = run(HistoryMode::KvCache);
    for (k, (r, c)) in recomputed.iter().zip(&cached).enumerate() {
        let error = relative_error(c, r);
        eprintln!("shot {k}: cached vs recomputed relative error {error:.2e}");
        assert!(error < 1e-4, "shot {k}: {error}");
    }
    // The history matters: the last shot generated alone differs.
    let alone = wan_sample(
        &model,
        &SceneRequest {
            global_text: request.global_text.clone(),
            shots: vec![request.shots[2].clone()],
        },
        &cfg,
        Some(&null),
        AttentionMask::ContextCausal,
        None,
        |_| StepControl::Continue,
    )
    .unwrap();
    assert!(relative_error(&alone[0], &cached[2]) > 1e-3);
    // A bidirectional model refuses a cache, by name.
    let refused = wan_generate_autoregressive(
        &model,
        &request,
        &cfg,
        Some(&null),
        AttentionMask::Bidirectional,
        HistoryMode::KvCache,
        |_, _| StepControl::Continue,
    );
    assert!(refused.unwrap_err().to_string().contains("bidirectional"));
}

#[test]
fn lct_tuning_a_wan_transformer_lowers_its_scene_loss_and_saves_a_loadable_checkpoint() {
    use lct_model::wan::{WanTrainConfig, WanTrainer, WanTrainingScene, WanTrainingShot};
    use lct_model::AttentionMask;
    let device = Device::Cpu;
    let gaussian =
        |stream: u64, dims: &[usize]| lct_model::noise::gaussian(3, stream, dims, &device).unwrap();
    // A scene of two shots sharing a look: the same latent pattern, a little apart.
    let look = gaussian(1, &[1, 4, 2, 4, 4]);
    let scene = WanTrainingScene {
        global_text: gaussian(2, &[1, 6, 16]),
        shots: (0..2)
            .map(|i| {
                let latents =
                    (&look + (gaussian(10 + i, &[1, 4, 2, 4, 4]) * 0.1).unwrap()).unwrap();
                WanTrainingShot::new(latents, gaussian(20 + i, &[1, 5, 16]))
            })
            .collect(),
    };
    let cfg = WanTrainConfig {
        optim: lct_model::optim::OptimConfig {
            learning_rate: 3e-3,
            grad_clip: 0.0,
            ..Default::default()
        },
        attention: AttentionMask::ContextCausal,
        shift: 3.0,
    };
    let mut trainer = WanTrainer::from_checkpoint(&fixture(), cfg, &device).unwrap();
    let probe = |trainer: &WanTrainer| -> f32 {
        let mut total = 0.0;
        for seed in 100..104 {
            total += trainer
                .loss(&scene, &trainer.draw_trained(2, seed), seed)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
        }
        total / 4.0
    };
    let before = probe(&trainer);
    for step in 0..30 {
        trainer.step(&scene, step).unwrap();
    }
    let after = probe(&trainer);
    eprintln!("scene loss on fixed times and noise: {before:.4} -> {after:.4}");
    assert!(after < 0.8 * before, "{before} -> {after}");

    // The tuned transformer saves in the diffusers layout and loads as any Wan checkpoint.
    let out = tempfile::tempdir().unwrap();
    trainer.save_transformer(out.path()).unwrap();
    let tuned = load_transformer(out.path(), DType::F32, &Device::Cpu).unwrap();
    let original = load_transformer(&fixture(), DType::F32, &Device::Cpu).unwrap();
    let tensors = reference();
    let run = |model: &lct_model::wan::WanTransformer| {
        model
            .forward(
                &tensors["latents"],
                WanTimestep::PerSample(&tensors["timestep"]),
                &tensors["text"],
            )
            .unwrap()
    };
    assert!(relative_error(&run(&tuned), &run(&original)) > 1e-3);
    assert!(relative_error(&run(&tuned), &run(trainer.model())) < 1e-5);
}

#[test]
fn batch_steps_split_over_workers_take_the_same_step_and_lower_the_loss() {
    use lct_model::wan::{WanBatch, WanTrainConfig, WanTrainer};
    use lct_model::AttentionMask;
    let device = Device::Cpu;
    let gaussian =
        |stream: u64, dims: &[usize]| lct_model::noise::gaussian(4, stream, dims, &device).unwrap();
    // Five single-frame samples (an odd count: uneven chunks), with pixel weights.
    let batch = WanBatch {
        latents: gaussian(1, &[5, 4, 1, 4, 4]),
        text: gaussian(2, &[5, 6, 16]),
        weights: Some((gaussian(3, &[5, 1, 1, 4, 4]).abs().unwrap() + 0.5).unwrap()),
    };
    let times = [0.1, 0.3, 0.5, 0.7, 0.9];
    let cfg = WanTrainConfig {
        optim: lct_model::optim::OptimConfig {
            learning_rate: 3e-3,
            grad_clip: 0.0,
            ..Default::default()
        },
        attention: AttentionMask::Bidirectional,
        shift: 1.0,
    };
    let mut trainers: Vec<WanTrainer> = [1, 2, 3]
        .into_iter()
        .map(|workers| {
            let mut trainer =
                WanTrainer::from_checkpoint(&fixture(), cfg.clone(), &device).unwrap();
            trainer.set_workers(workers);
            trainer
        })
        .collect();
    let tensors = reference();
    let output = |trainer: &WanTrainer| {
        trainer
            .model()
            .forward(
                &tensors["latents"],
                WanTimestep::PerSample(&tensors["timestep"]),
                &tensors["text"],
            )
            .unwrap()
    };
    let mut first_losses = Vec::new();
    for trainer in &mut trainers {
        first_losses.push(trainer.batch_step(&batch, &times, 7).unwrap());
    }
    // The same loss and the same updated weights, whatever the split.
    for (loss, trainer) in first_losses.iter().zip(&trainers).skip(1) {
        assert!(
            (loss - first_losses[0]).abs() <= 1e-6 * first_losses[0],
            "{first_losses:?}"
        );
        assert!(relative_error(&output(trainer), &output(&trainers[0])) < 1e-5);
    }
    for seed in 8..40 {
        trainers[1].batch_step(&batch, &times, seed).unwrap();
    }
    let last = trainers[1].batch_step(&batch, &times, 7).unwrap();
    eprintln!("batch loss at seed 7: {:.4} -> {last:.4}", first_losses[1]);
    assert!(
        last < 0.8 * first_losses[1],
        "{} -> {last}",
        first_losses[1]
    );
}

#[test]
fn a_transformer_in_the_original_wan_layout_loads_as_the_diffusers_one() {
    // The same weights under the original repositories' names and config fields (the fixture
    // script checks the names against diffusers' own conversion).
    let folder = fixture().join("original_transformer");
    let model = load_transformer(&folder, DType::F32, &Device::Cpu).unwrap();
    let tensors = reference();
    let output = model
        .forward(
            &tensors["latents"],
            WanTimestep::PerSample(&tensors["timestep"]),
            &tensors["text"],
        )
        .unwrap();
    let error = relative_error(&output, &tensors["output"]);
    eprintln!("original layout: relative error {error:.2e}");
    assert!(error < 1e-4, "original layout: relative error {error}");

    // An original repository as a whole is refused by name (its VAE and umT5 are pickles).
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(folder.join("config.json"), dir.path().join("config.json")).unwrap();
    assert!(lct_model::wan::is_wan_checkpoint(dir.path()));
    let message = lct_model::wan::WanPipeline::load(dir.path(), DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("-Diffusers"), "{message}");
    // Other original model types are named.
    let config = std::fs::read_to_string(folder.join("config.json")).unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        config.replace("\"t2v\"", "\"i2v\""),
    )
    .unwrap();
    std::fs::copy(
        folder.join("diffusion_pytorch_model.safetensors"),
        dir.path().join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let message = load_transformer(dir.path(), DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("\"i2v\""), "{message}");
}

#[test]
fn a_closed_word_level_vocabulary_refuses_unknown_words_and_prompts_pad_to_the_declared_length() {
    use lct_model::wan::load::load_text_encoder;
    let dir = tempfile::tempdir().unwrap();
    for component in ["text_encoder", "tokenizer"] {
        std::fs::create_dir(dir.path().join(component)).unwrap();
    }
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(
            fixture().join("text_encoder").join(file),
            dir.path().join("text_encoder").join(file),
        )
        .unwrap();
    }
    let tokenizer = dir.path().join("tokenizer");
    std::fs::write(
        tokenizer.join("tokenizer.json"),
        lct_model::wan::umt5::word_level_tokenizer_json(&[
            "large", "red", "circle", "striped", ",", ".",
        ]),
    )
    .unwrap();
    std::fs::write(
        tokenizer.join("tokenizer_config.json"),
        r#"{"lct_closed_vocabulary": true}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("lct.json"), r#"{"text_tokens": 8}"#).unwrap();
    let text = load_text_encoder(dir.path(), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(
        text.tokenizer.encode("Large red circle, striped.").unwrap(),
        [3, 4, 5, 7, 6, 8, 1]
    );
    let encoded = text.encode("large red circle.").unwrap();
    assert_eq!(encoded.dims(), [8, 16]);
    let error = text.encode("large plaid circle.").unwrap_err().to_string();
    assert!(
        error.contains("unknown word 'plaid'") && error.contains("large red circle striped , ."),
        "{error}"
    );
    // Without the declaration the same tokenizer is open: `<unk>` passes, as published ones do.
    std::fs::write(tokenizer.join("tokenizer_config.json"), "{}").unwrap();
    std::fs::write(dir.path().join("lct.json"), r#"{"text_tokens": 600}"#).unwrap();
    let error = load_text_encoder(dir.path(), DType::F32, &Device::Cpu)
        .err()
        .expect("600 text tokens")
        .to_string();
    assert!(error.contains("text_tokens 600"), "{error}");
    std::fs::remove_file(dir.path().join("lct.json")).unwrap();
    let open = load_text_encoder(dir.path(), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(open.tokenizer.encode("plaid").unwrap(), [2, 1]);
    assert_eq!(open.encode("red").unwrap().dims(), [512, 16]);
}

#[test]
fn prompt_modulation_adds_one_projection_saves_loads_and_runs_scenes() {
    use lct_model::wan::{WanShot, WanTrainConfig, WanTrainer, WanTransformerConfig};
    use lct_model::AttentionMask;
    let device = Device::Cpu;
    let base = WanTransformerConfig::load(&fixture().join("transformer/config.json")).unwrap();
    let extended = WanTransformerConfig {
        prompt_modulation: true,
        ..base.clone()
    };
    let cfg = WanTrainConfig {
        optim: lct_model::optim::OptimConfig {
            learning_rate: 1e-3,
            grad_clip: 0.0,
            ..Default::default()
        },
        attention: AttentionMask::Bidirectional,
        shift: 1.0,
    };
    let plain = WanTrainer::fresh(&base, cfg.clone(), 0, &device).unwrap();
    let trainer = WanTrainer::fresh(&extended, cfg, 0, &device).unwrap();
    let dim = base.num_attention_heads * base.attention_head_dim;
    assert_eq!(
        trainer.parameter_count(),
        plain.parameter_count() + dim * dim + dim
    );
    // Saved with the field, loaded back as the same model.
    let out = tempfile::tempdir().unwrap();
    trainer.save_transformer(out.path()).unwrap();
    let loaded = load_transformer(out.path(), DType::F32, &device).unwrap();
    assert!(loaded.config().prompt_modulation);
    let tensors = reference();
    let run = |model: &lct_model::wan::WanTransformer, text: &Tensor| {
        model
            .forward(
                &tensors["latents"],
                WanTimestep::PerSample(&tensors["timestep"]),
                text,
            )
            .unwrap()
    };
    let text = &tensors["text"];
    assert!(relative_error(&run(&loaded, text), &run(trainer.model(), text)) < 1e-6);
    // A scene: per-shot windows pool per token, and every output is finite.
    let gaussian =
        |stream: u64, dims: &[usize]| lct_model::noise::gaussian(5, stream, dims, &device).unwrap();
    let latents: Vec<Tensor> = (0..2).map(|i| gaussian(i, &[1, 4, 1, 4, 4])).collect();
    let prompts: Vec<Tensor> = (0..2).map(|i| gaussian(10 + i, &[1, 5, 16])).collect();
    let global = gaussian(20, &[1, 6, 16]);
    let shots: Vec<WanShot> = (0..2)
        .map(|i| WanShot {
            latents: &latents[i],
            timestep: 500.0,
            prompt: &prompts[i],
        })
        .collect();
    let (outputs, _) = loaded
        .scene_forward(&global, &shots, AttentionMask::Bidirectional, None)
        .unwrap();
    for output in outputs {
        let values = output.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(values.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn a_fresh_transformer_starts_from_its_seed() {
    use lct_model::wan::{WanTrainConfig, WanTrainer, WanTransformerConfig};
    use lct_model::AttentionMask;
    let device = Device::Cpu;
    let config = WanTransformerConfig::load(&fixture().join("transformer/config.json")).unwrap();
    let cfg = WanTrainConfig {
        optim: lct_model::optim::OptimConfig {
            learning_rate: 1e-3,
            grad_clip: 0.0,
            ..Default::default()
        },
        attention: AttentionMask::Bidirectional,
        shift: 1.0,
    };
    let tensors = reference();
    let output = |seed: u64| {
        WanTrainer::fresh(&config, cfg.clone(), seed, &device)
            .unwrap()
            .model()
            .forward(
                &tensors["latents"],
                WanTimestep::PerSample(&tensors["timestep"]),
                &tensors["text"],
            )
            .unwrap()
    };
    assert_eq!(relative_error(&output(3), &output(3)), 0.0);
    assert!(relative_error(&output(3), &output(4)) > 1e-2);
}

/// A fresh trainer over the fixture's transformer config, with `prediction`, EMA on.
fn small_trainer(
    prediction: lct_model::wan::WanPrediction,
    workers: usize,
) -> lct_model::wan::WanTrainer {
    use lct_model::wan::{WanTrainConfig, WanTrainer, WanTransformerConfig};
    let base = WanTransformerConfig::load(&fixture().join("transformer/config.json")).unwrap();
    let config = WanTransformerConfig { prediction, ..base };
    let cfg = WanTrainConfig {
        optim: lct_model::optim::OptimConfig {
            learning_rate: 3e-3,
            warmup_steps: 2,
            decay_steps: 10,
            ema_decay: 0.9,
            ..Default::default()
        },
        attention: lct_model::AttentionMask::Bidirectional,
        shift: 1.0,
    };
    let mut trainer = WanTrainer::fresh(&config, cfg, 7, &Device::Cpu).unwrap();
    trainer.set_workers(workers);
    trainer
}

/// Three scenes of one to three shots (latents `[1, 4, 1, 4, 4]`), weighted pixels.
fn small_scenes(seed: u64) -> Vec<lct_model::wan::WanTrainingScene> {
    use lct_model::wan::{WanTrainingScene, WanTrainingShot};
    let gaussian = |stream: u64, dims: &[usize]| {
        lct_model::noise::gaussian(seed, stream, dims, &Device::Cpu).unwrap()
    };
    (0..3u64)
        .map(|s| WanTrainingScene {
            global_text: gaussian(100 + s, &[1, 6, 16]),
            shots: (0..=s)
                .map(|k| WanTrainingShot {
                    latents: gaussian(10 * s + k, &[1, 4, 1, 4, 4]),
                    prompt: gaussian(200 + 10 * s + k, &[1, 5, 16]),
                    weights: Some(
                        (gaussian(300 + 10 * s + k, &[1, 1, 1, 4, 4]).abs().unwrap() + 0.5)
                            .unwrap(),
                    ),
                    given: false,
                })
                .collect(),
        })
        .collect()
}

fn fixture_output(model: &lct_model::wan::WanTransformer) -> Tensor {
    let tensors = reference();
    model
        .forward(
            &tensors["latents"],
            WanTimestep::PerSample(&tensors["timestep"]),
            &tensors["text"],
        )
        .unwrap()
}

#[test]
fn a_sample_predicting_transformer_gives_the_velocity_of_its_clean_sample() {
    use lct_model::wan::WanPrediction;
    let velocity = small_trainer(WanPrediction::Velocity, 1);
    let sample = small_trainer(WanPrediction::Sample, 1);
    let tensors = reference();
    let latents = &tensors["latents"];
    // The same weights: the raw network output is the clean sample for one, the velocity for
    // the other; (x_t - x) / t turns one into the other.
    let raw = fixture_output(velocity.model());
    let t = (tensors["timestep"].to_dtype(DType::F32).unwrap() / 1000.0)
        .unwrap()
        .maximum(WanPrediction::MIN_TIME)
        .unwrap()
        .reshape(((), 1, 1, 1, 1))
        .unwrap();
    let expected = (latents - &raw).unwrap().broadcast_div(&t).unwrap();
    assert!(relative_error(&fixture_output(sample.model()), &expected) < 1e-5);
    // Scenes go through the same conversion, per shot.
    let scenes = small_scenes(1);
    let draws = sample.draw_trained(scenes[2].shots.len(), 3);
    let loss = sample.loss(&scenes[2], &draws, 3).unwrap();
    assert!(loss.to_scalar::<f32>().unwrap().is_finite());
}

#[test]
fn scene_batches_split_over_workers_take_the_same_step_and_context_shots_carry_no_loss() {
    use lct_model::wan::{SceneDraw, ShotDraw, WanPrediction};
    let scenes = small_scenes(2);
    let draw = SceneDraw {
        uniform: true,
        context_prob: 0.5,
        context_max_time: 0.1,
    };
    let mut one = small_trainer(WanPrediction::Sample, 1);
    let mut two = small_trainer(WanPrediction::Sample, 2);
    for step in 0..3 {
        let a = one.scenes_step(&scenes, &draw, step).unwrap();
        let b = two.scenes_step(&scenes, &draw, step).unwrap();
        assert!((a - b).abs() <= 1e-5 * a.abs(), "{a} against {b}");
    }
    assert!(relative_error(&fixture_output(one.model()), &fixture_output(two.model())) < 1e-5);
    // A context shot changes the trained shot's loss only through attention: with every
    // other shot context, the loss is the last shot's alone.
    let scene = &scenes[2];
    let context = [
        ShotDraw {
            time: 0.05,
            context: true,
        },
        ShotDraw {
            time: 0.05,
            context: true,
        },
        ShotDraw::trained(0.6),
    ];
    let loss = one
        .loss(scene, &context, 9)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(loss.is_finite() && loss > 0.0);
    let all_context = [ShotDraw {
        time: 0.05,
        context: true,
    }; 3];
    assert!(one.loss(scene, &all_context, 9).is_err());
    // Draws: context only in scenes of several shots, at most context_max_time, and at least
    // one shot trained.
    for seed in 0..50 {
        let draws = one.draw_shots(3, &draw, seed);
        assert!(draws.iter().any(|d| !d.context));
        assert!(draws.iter().filter(|d| d.context).all(|d| d.time <= 0.1));
        assert!(one.draw_shots(1, &draw, seed).iter().all(|d| !d.context));
        // Given shots (reference images) are always context; the others keep one trained.
        let mut given = small_scenes(2).remove(2);
        given.shots[0].given = true;
        given.shots[1].given = true;
        let draws = one.draw_scene(&given, &draw, seed);
        assert!(draws[..2].iter().all(|d| d.context && d.time <= 0.1));
        assert!(!draws[2].context);
    }
}

#[test]
fn a_checkpointed_run_resumes_exactly() {
    use lct_model::wan::{SceneDraw, WanPrediction, WanTrainConfig, WanTrainer};
    let scenes = small_scenes(3);
    let draw = SceneDraw {
        uniform: true,
        context_prob: 0.3,
        context_max_time: 0.1,
    };
    let mut straight = small_trainer(WanPrediction::Sample, 1);
    let mut first = small_trainer(WanPrediction::Sample, 1);
    for step in 0..3 {
        straight.scenes_step(&scenes, &draw, step).unwrap();
        first.scenes_step(&scenes, &draw, step).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    first.save_checkpoint(dir.path()).unwrap();
    // The settings given at resume are replaced by the saved ones.
    let cfg = WanTrainConfig {
        optim: lct_model::optim::OptimConfig::default(),
        attention: lct_model::AttentionMask::Bidirectional,
        shift: 1.0,
    };
    let mut resumed = WanTrainer::resume(dir.path(), cfg, &Device::Cpu).unwrap();
    assert_eq!(resumed.optimiser().step_count(), 3);
    assert_eq!(resumed.optimiser().config(), straight.optimiser().config());
    for step in 3..6 {
        let a = straight.scenes_step(&scenes, &draw, step).unwrap();
        let b = resumed.scenes_step(&scenes, &draw, step).unwrap();
        assert_eq!(a, b, "step {step}");
    }
    assert_eq!(
        relative_error(
            &fixture_output(straight.model()),
            &fixture_output(resumed.model())
        ),
        0.0
    );
    // Sampling uses the moving average, which differs from the trained weights, and the
    // saved transformer is the average.
    let averaged = straight.with_sampling_model(fixture_output).unwrap();
    assert!(relative_error(&averaged, &fixture_output(straight.model())) > 1e-4);
    straight.save_transformer(dir.path()).unwrap();
    let saved = load_transformer(dir.path(), DType::F32, &Device::Cpu).unwrap();
    assert!(relative_error(&fixture_output(&saved), &averaged) < 1e-6);
    // A damaged optimiser file is named.
    std::fs::write(dir.path().join("optimiser.safetensors"), b"nonsense").unwrap();
    let cfg = WanTrainConfig {
        optim: lct_model::optim::OptimConfig::default(),
        attention: lct_model::AttentionMask::Bidirectional,
        shift: 1.0,
    };
    let error = WanTrainer::resume(dir.path(), cfg, &Device::Cpu)
        .err()
        .expect("a damaged file")
        .to_string();
    assert!(error.contains("optimiser.safetensors"), "{error}");
}
