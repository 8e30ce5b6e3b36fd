//! Detector accuracy on rendered ground truth (>= 95% over 200 random scenes per attribute) and
//! the converse: metrics must drop on mismatched scenes. Run with `--nocapture` to see the rates.

use std::sync::OnceLock;

use lct_world::*;

const SCENES: u64 = 200;

struct Rendered {
    spec: SceneSpec,
    clips: Vec<Clip>,
    reading: SceneReading,
}

/// Rendered and read once, shared by the tests (keeps the suite fast).
fn corpus() -> &'static [Rendered] {
    static C: OnceLock<Vec<Rendered>> = OnceLock::new();
    C.get_or_init(|| {
        (0..SCENES)
            .map(|seed| {
                // Mix both splits: detectors must not care which one a scene comes from.
                let split = if seed % 4 == 3 {
                    Split::HeldOut
                } else {
                    Split::Train
                };
                let spec = sample_scene(seed, split);
                let clips = render_scene(&spec).unwrap();
                let reading = read_scene(&clips);
                Rendered {
                    spec,
                    clips,
                    reading,
                }
            })
            .collect()
    })
}

fn assert_rate(name: &str, hits: usize, total: usize) {
    let r = hits as f32 / total as f32;
    println!("{name:<28} {hits:>4}/{total:<4} = {:.1}%", 100.0 * r);
    assert!(r >= 0.95, "{name}: {hits}/{total} below 95%");
}

#[test]
fn scene_level_attributes_are_recovered() {
    let c = corpus();
    let n = c.len();
    let count = |f: &dyn Fn(&Rendered) -> bool| c.iter().filter(|r| f(r)).count();
    assert_rate(
        "character colour",
        count(&|r| r.reading.colour == Some(r.spec.character.colour)),
        n,
    );
    assert_rate(
        "character shape",
        count(&|r| r.reading.shape == Some(r.spec.character.shape)),
        n,
    );
    assert_rate(
        "character pattern",
        count(&|r| r.reading.pattern == Some(r.spec.character.pattern)),
        n,
    );
    let env = |r: &Rendered| r.reading.environment;
    assert_rate(
        "sky colour",
        count(&|r| env(r).map(|e| e.sky) == Some(r.spec.environment.sky)),
        n,
    );
    assert_rate(
        "ground colour",
        count(&|r| env(r).map(|e| e.ground) == Some(r.spec.environment.ground)),
        n,
    );
    assert_rate(
        "horizon height",
        count(&|r| env(r).map(|e| e.horizon) == Some(r.spec.environment.horizon)),
        n,
    );
    assert_rate(
        "lighting tone",
        count(&|r| env(r).map(|e| e.tone) == Some(r.spec.environment.tone)),
        n,
    );
    assert_rate(
        "day/night",
        count(&|r| env(r).map(|e| e.time) == Some(r.spec.environment.time)),
        n,
    );
}

#[test]
fn shot_level_framing_and_motion_are_recovered() {
    let (mut shots, mut framing, mut action, mut colour, mut shape, mut pattern) =
        (0, 0, 0, 0, 0, 0);
    let (mut frames, mut frame_shape) = (0, 0);
    for r in corpus() {
        for (k, s) in r.reading.shots.iter().enumerate() {
            shots += 1;
            framing += (s.framing == Some(r.spec.shots[k])) as usize;
            action += (s.action == Some(r.spec.action)) as usize;
            colour += (s.colour == Some(r.spec.character.colour)) as usize;
            shape += (s.shape == Some(r.spec.character.shape)) as usize;
            pattern += (s.pattern == Some(r.spec.character.pattern)) as usize;
            for ch in &s.characters {
                frames += 1;
                frame_shape += ch.is_some_and(|c| c.shape == r.spec.character.shape) as usize;
            }
        }
    }
    assert_rate("shot framing", framing, shots);
    assert_rate("shot motion direction", action, shots);
    // Single shots and frames too: the evaluation of the model reads them one by one.
    assert_rate("shot colour", colour, shots);
    assert_rate("shot shape", shape, shots);
    assert_rate("shot pattern", pattern, shots);
    assert_rate("frame shape", frame_shape, frames);
}

#[test]
fn ground_truth_scenes_score_as_consistent() {
    let (mut id, mut env, mut tone, mut text, mut motion) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut multi = 0;
    for r in corpus() {
        let m = metrics_from_readings(&r.spec, &r.reading.shots);
        text += m.text_alignment;
        if r.spec.shots.len() > 1 {
            multi += 1;
            id += m.identity_consistency;
            env += m.environment_consistency;
            tone += m.tone_consistency;
            motion += m.motion_continuity;
        }
    }
    let n = corpus().len() as f32;
    let k = multi as f32;
    println!(
        "ground truth: identity {:.3} environment {:.3} tone {:.3} text {:.3} motion {:.3}",
        id / k,
        env / k,
        tone / k,
        text / n,
        motion / k
    );
    assert!(id / k >= 0.95 && env / k >= 0.95 && tone / k >= 0.95);
    assert!(text / n >= 0.95 && motion / k >= 0.95);
}

/// Shots alternating between two scenes, as a generator that loses track would produce.
fn interleave(a: &Rendered, b: &Rendered) -> Vec<ShotReading> {
    let mut out = Vec::new();
    for k in 0..2 {
        out.push(a.reading.shots[k % a.reading.shots.len()].clone());
        out.push(b.reading.shots[k % b.reading.shots.len()].clone());
    }
    out
}

#[test]
fn mismatched_scenes_score_low() {
    let c = corpus();
    let (mut id, mut id_n, mut env, mut env_n, mut tone, mut tone_n) = (0.0, 0, 0.0, 0, 0.0, 0);
    let (mut motion, mut motion_n) = (0.0, 0);
    for i in 0..c.len() {
        let (a, b) = (&c[i], &c[(i + 1) % c.len()]);
        let mixed = interleave(a, b);
        let (ca, cb) = (a.spec.character, b.spec.character);
        if (ca.colour, ca.shape, ca.pattern) != (cb.colour, cb.shape, cb.pattern) {
            id += identity_consistency(&mixed);
            id_n += 1;
        }
        let (ea, eb) = (a.spec.environment, b.spec.environment);
        if (ea.sky, ea.ground, ea.horizon) != (eb.sky, eb.ground, eb.horizon) {
            env += environment_consistency(&mixed);
            env_n += 1;
        }
        if (ea.tone, ea.time) != (eb.tone, eb.time) {
            tone += tone_consistency(&mixed);
            tone_n += 1;
        }
        if a.spec.action != b.spec.action {
            motion += motion_continuity(&mixed);
            motion_n += 1;
        }
    }
    // Two shots of each scene in four: the two same-scene pairs of six agree, so 1/3 is the
    // best a detector that tells scenes apart can score.
    let (id, env, tone, motion) = (
        id / id_n as f32,
        env / env_n as f32,
        tone / tone_n as f32,
        motion / motion_n as f32,
    );
    println!("mismatched: identity {id:.3} environment {env:.3} tone {tone:.3} motion {motion:.3}");
    assert!(id < 0.4 && env < 0.4 && tone < 0.4 && motion < 0.1);

    // Text alignment against another scene's prompts drops too.
    let (mut wrong, mut n) = (0.0, 0);
    for i in 0..c.len() {
        let (a, b) = (&c[i], &c[(i + 1) % c.len()]);
        if a.spec.action != b.spec.action {
            wrong += text_alignment(&b.spec, &a.reading.shots);
            n += 1;
        }
    }
    println!(
        "text alignment against the wrong prompts: {:.3}",
        wrong / n as f32
    );
    assert!(wrong / (n as f32) < 0.7);
}

#[test]
fn shot_order_breaks_motion_continuity() {
    // Consecutive wide shots of a moving character: played in order the second continues the
    // first; swapped, the character jumps back, which the positional check must catch.
    let (mut fwd, mut rev, mut n) = (0, 0, 0);
    for r in corpus() {
        if !matches!(
            r.spec.action,
            Action::MoveLeft | Action::MoveRight | Action::MoveUp | Action::MoveDown
        ) {
            continue;
        }
        for k in 0..r.spec.shots.len().saturating_sub(1) {
            if r.spec.shots[k] == Framing::Wide && r.spec.shots[k + 1] == Framing::Wide {
                let (a, b) = (&r.reading.shots[k], &r.reading.shots[k + 1]);
                fwd += detect::continues(a, b) as usize;
                rev += detect::continues(b, a) as usize;
                n += 1;
            }
        }
    }
    println!(
        "consecutive wide pairs of moving scenes: {n}, continue {fwd}, swapped continue {rev}"
    );
    assert!(n >= 10);
    assert!(fwd as f32 >= 0.95 * n as f32 && (rev as f32) < 0.05 * n as f32);
}

#[test]
fn every_environment_reference_is_read_exactly() {
    for env in Environment::all() {
        let f = render_environment_reference(&env, 64, 64);
        let r = detect_environment(&f);
        assert_eq!(r.environment, Some(env));
        assert!(detect_character(&f).is_none(), "{env:?}: phantom character");
    }
}

#[test]
fn identity_references_are_read() {
    let mut hits = 0;
    let mut total = 0;
    for &shape in Shape::ALL {
        for &colour in Colour::ALL {
            for &size in Size::ALL {
                for &pattern in Pattern::ALL {
                    let c = Character {
                        shape,
                        colour,
                        size,
                        pattern,
                    };
                    let f = render_identity_reference(&c, 64, 64);
                    assert_eq!(detect_environment(&f).environment, None);
                    let r = detect_character(&f).unwrap();
                    total += 1;
                    let ok = r.colour == colour && r.shape == shape && r.pattern == pattern;
                    if !ok {
                        println!("identity reference miss: {c:?} -> {r:?}");
                    }
                    hits += ok as usize;
                }
            }
        }
    }
    assert_rate("identity reference", hits, total);
}

#[test]
fn lighting_shifts_the_colour_balance() {
    let mut env = sample_scene(0, Split::Train).environment;
    env.tone = Tone::Warm;
    let warm = colour_balance(&render_environment_reference(&env, 64, 64));
    env.tone = Tone::Cool;
    let cool = colour_balance(&render_environment_reference(&env, 64, 64));
    assert!(warm[0] / warm[2] > cool[0] / cool[2]);
}

fn box_blur(f: &Frame) -> Frame {
    let mut out = f.clone();
    for y in 0..f.height {
        for x in 0..f.width {
            let mut acc = [0.0f32; 3];
            let mut n = 0.0;
            for dy in -1i32..=1 {
                for dx in -1i32..=1 {
                    let (nx, ny) = (x as i32 + dx, y as i32 + dy);
                    if nx >= 0 && ny >= 0 && (nx as usize) < f.width && (ny as usize) < f.height {
                        let p = f.pixel(nx as usize, ny as usize);
                        for k in 0..3 {
                            acc[k] += p[k];
                        }
                        n += 1.0;
                    }
                }
            }
            out.set_pixel(x, y, acc.map(|a| a / n));
        }
    }
    out
}

#[test]
fn sharpness_drops_when_blurred() {
    let mut hits = 0;
    let c = corpus();
    for r in c {
        let f = &r.clips[0].frames[0];
        let b = box_blur(f);
        if sharpness(&b) < sharpness(f) && laplacian_variance(&b) < laplacian_variance(f) {
            hits += 1;
        }
    }
    assert_rate("sharpness ordering", hits, c.len());
}

/// Deterministic uniform noise in `[-amp, amp]`, then 8-bit quantisation, as a stand-in for the
/// artefacts of generated frames.
fn degrade(f: &Frame, amp: f32, seed: u64) -> Frame {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = box_blur_light(f);
    for v in out.data.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let u = (state >> 40) as f32 / (1u64 << 24) as f32;
        *v = (*v + amp * (2.0 * u - 1.0)).clamp(0.0, 1.0);
    }
    Frame::from_rgb8(&out.to_rgb8())
}

/// Mild blur (centre weight 4, neighbours 1): softer edges like a decoder's output.
fn box_blur_light(f: &Frame) -> Frame {
    let b = box_blur(f);
    let mut out = f.clone();
    for (o, (a, bb)) in out.data.iter_mut().zip(f.data.iter().zip(&b.data)) {
        *o = 0.5 * a + 0.5 * bb;
    }
    out
}

#[test]
fn detectors_survive_noise_blur_and_8_bit() {
    let c = &corpus()[..100];
    let (mut colour, mut shape, mut pattern, mut env, mut framing, mut action, mut shots) =
        (0, 0, 0, 0, 0, 0, 0);
    for (i, r) in c.iter().enumerate() {
        let clips: Vec<Clip> = r
            .clips
            .iter()
            .map(|clip| Clip {
                frames: clip
                    .frames
                    .iter()
                    .enumerate()
                    .map(|(j, f)| degrade(f, 0.03, (i * 100 + j) as u64))
                    .collect(),
                width: clip.width,
                height: clip.height,
            })
            .collect();
        let rd = read_scene(&clips);
        colour += (rd.colour == Some(r.spec.character.colour)) as usize;
        shape += (rd.shape == Some(r.spec.character.shape)) as usize;
        pattern += (rd.pattern == Some(r.spec.character.pattern)) as usize;
        env += (rd.environment == Some(r.spec.environment)) as usize;
        for (k, s) in rd.shots.iter().enumerate() {
            shots += 1;
            framing += (s.framing == Some(r.spec.shots[k])) as usize;
            action += (s.action == Some(r.spec.action)) as usize;
        }
    }
    let n = c.len();
    assert_rate("noisy: colour", colour, n);
    assert_rate("noisy: shape", shape, n);
    assert_rate("noisy: pattern", pattern, n);
    assert_rate("noisy: environment", env, n);
    assert_rate("noisy: shot framing", framing, shots);
    assert_rate("noisy: shot action", action, shots);
}

#[test]
fn identity_by_attribute_drops_only_in_the_attribute_that_differs() {
    // Pairs of scenes whose characters differ in colour alone: mixing their shots must lower
    // colour agreement and leave shape and pattern agreement as the ground truth has them.
    let c = corpus();
    let mut checked = 0;
    for a in c.iter().filter(|r| r.spec.shots.len() > 1) {
        let Some(b) = c.iter().find(|b| {
            let (ca, cb) = (a.spec.character, b.spec.character);
            b.spec.shots.len() > 1
                && ca.colour != cb.colour
                && (ca.shape, ca.pattern) == (cb.shape, cb.pattern)
        }) else {
            continue;
        };
        let shots = |r: &Rendered| r.reading.shots.clone();
        let all_read = |r: &Rendered, f: &dyn Fn(&ShotReading) -> bool| shots(r).iter().all(f);
        let colour_right = |r: &Rendered| {
            all_read(r, &|s: &ShotReading| {
                s.colour == Some(r.spec.character.colour)
            })
        };
        if !colour_right(a) || !colour_right(b) {
            continue; // a misread colour in the ground truth says nothing about the split
        }
        let [colour, shape, pattern] = identity_attribute_consistency(&interleave(a, b));
        assert!(colour < 0.5, "colour agreement {colour} over mixed colours");
        // Shape and pattern agree across the two scenes wherever every shot reads them right.
        let shape_right = |r: &Rendered| {
            all_read(r, &|s: &ShotReading| {
                s.shape == Some(r.spec.character.shape)
            })
        };
        let pattern_right = |r: &Rendered| {
            all_read(r, &|s: &ShotReading| {
                s.pattern == Some(r.spec.character.pattern)
            })
        };
        if shape_right(a) && shape_right(b) {
            assert_eq!(shape, 1.0, "shape agreement over one shape");
        }
        if pattern_right(a) && pattern_right(b) {
            assert_eq!(pattern, 1.0, "pattern agreement over one pattern");
        }
        checked += 1;
    }
    assert!(
        checked >= 20,
        "only {checked} scene pairs differ in colour alone"
    );
}

#[test]
fn cross_scene_agreement_is_low_for_a_varied_world_and_full_for_one_repeated_look() {
    let c = corpus();
    let varied: Vec<Vec<ShotReading>> =
        c.iter().take(60).map(|r| r.reading.shots.clone()).collect();
    let [identity, environment, tone] = cross_scene_agreement(&varied);
    // Sampled characters and environments rarely repeat between scenes: chance agreement is low.
    assert!(
        identity < 0.15,
        "identity agreement across varied scenes {identity}"
    );
    assert!(
        environment < 0.15,
        "environment agreement across varied scenes {environment}"
    );
    assert!(tone < 0.6, "tone agreement across varied scenes {tone}");
    // A model that draws one look whatever the scene: every scene repeats the same shots, so
    // shots agree across scenes exactly as much as within one.
    let one = c
        .iter()
        .find(|r| r.reading.shots.len() > 1 && identity_consistency(&r.reading.shots) == 1.0)
        .expect("a multi-shot scene whose shots all read one identity");
    let repeated = vec![one.reading.shots.clone(); 5];
    let [identity, _, _] = cross_scene_agreement(&repeated);
    assert_eq!(
        identity, 1.0,
        "one look repeated in every scene agrees across scenes"
    );
    // Nothing read never agrees.
    let unread = vec![
        vec![ShotReading {
            colour: None,
            shape: None,
            pattern: None,
            environment: None,
            ..one.reading.shots[0].clone()
        }];
        3
    ];
    assert_eq!(cross_scene_agreement(&unread), [0.0; 3]);
}
