//! Two-tier captions (a global prompt plus one prompt per shot), the closed vocabulary and a
//! deterministic word-level tokenizer.
//!
//! Per-shot prompts only say "Character 1" and never repeat its looks, as in the paper: whatever
//! consistency the model shows across shots has to come from the global prompt or, in
//! [`CaptionMode::NoLooks`], from the other shots in its context.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::spec::{Character, Environment, SceneSpec};
use crate::WorldError;

/// How much of the scene's looks the captions spell out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptionMode {
    /// Character looks and environment appear in the global prompt only.
    GlobalLooks,
    /// The environment is described, the character's looks appear nowhere.
    NoCharacterLooks,
    /// Neither the character's looks nor the environment appear anywhere: only the story.
    NoLooks,
}

impl CaptionMode {
    pub const ALL: [CaptionMode; 3] = [
        CaptionMode::GlobalLooks,
        CaptionMode::NoCharacterLooks,
        CaptionMode::NoLooks,
    ];
}

/// Captions of one scene.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneCaptions {
    pub mode: CaptionMode,
    pub global: String,
    pub shots: Vec<String>,
}

/// A look a caption can name; a caption may leave any of them out (classifier-free guidance
/// is trained by dropping them one by one, as well as whole prompts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attribute {
    Size,
    Colour,
    Shape,
    Pattern,
    Sky,
    Ground,
    Horizon,
    Tone,
    Time,
}

impl Attribute {
    pub const ALL: [Attribute; 9] = [
        Attribute::Size,
        Attribute::Colour,
        Attribute::Shape,
        Attribute::Pattern,
        Attribute::Sky,
        Attribute::Ground,
        Attribute::Horizon,
        Attribute::Tone,
        Attribute::Time,
    ];
}

/// "large red circle, striped", without the words of `omitted` ("" when all are).
fn character_words(c: &Character, omitted: &[Attribute]) -> String {
    let kept = |a: Attribute| !omitted.contains(&a);
    let mut noun: Vec<&str> = Vec::new();
    for (attribute, word) in [
        (Attribute::Size, c.size.word()),
        (Attribute::Colour, c.colour.word()),
        (Attribute::Shape, c.shape.word()),
    ] {
        if kept(attribute) {
            noun.push(word);
        }
    }
    let mut text = noun.join(" ");
    if kept(Attribute::Pattern) {
        if !text.is_empty() {
            text.push_str(", ");
        }
        text.push_str(c.pattern.word());
    }
    text
}

/// "blue sky, green ground, high horizon, warm light, day", without the items of `omitted`.
fn environment_words(e: &Environment, omitted: &[Attribute]) -> String {
    [
        (Attribute::Sky, format!("{} sky", e.sky.word())),
        (Attribute::Ground, format!("{} ground", e.ground.word())),
        (Attribute::Horizon, format!("{} horizon", e.horizon.word())),
        (Attribute::Tone, format!("{} light", e.tone.word())),
        (Attribute::Time, e.time.word().to_owned()),
    ]
    .into_iter()
    .filter(|(attribute, _)| !omitted.contains(attribute))
    .map(|(_, words)| words)
    .collect::<Vec<_>>()
    .join(", ")
}

/// "large red circle, striped"
pub fn describe_character(c: &Character) -> String {
    character_words(c, &[])
}

/// "blue sky, green ground, high horizon, warm light, day"
pub fn describe_environment(e: &Environment) -> String {
    environment_words(e, &[])
}

/// The global prompt of [`CaptionMode::GlobalLooks`] without the words of the `omitted`
/// looks, e.g. without the colour "Character 1: large circle, striped. Environment: ...";
/// a part left with no looks reads as in the other modes ("Character 1.", no environment).
pub fn global_prompt_omitting(spec: &SceneSpec, omitted: &[Attribute]) -> String {
    let mut text = match character_words(&spec.character, omitted) {
        looks if looks.is_empty() => "Character 1.".to_owned(),
        looks => format!("Character 1: {looks}."),
    };
    let environment = environment_words(&spec.environment, omitted);
    if !environment.is_empty() {
        text.push_str(&format!(" Environment: {environment}."));
    }
    format!("{text} Story: Character 1 {}.", spec.action.word())
}

/// The global prompt, e.g. "Character 1: large red circle, striped. Environment: blue sky, green
/// ground, high horizon, warm light, day. Story: Character 1 moves right."
pub fn global_prompt(spec: &SceneSpec, mode: CaptionMode) -> String {
    match mode {
        CaptionMode::GlobalLooks => global_prompt_omitting(spec, &[]),
        CaptionMode::NoCharacterLooks => global_prompt_omitting(
            spec,
            &[
                Attribute::Size,
                Attribute::Colour,
                Attribute::Shape,
                Attribute::Pattern,
            ],
        ),
        CaptionMode::NoLooks => format!("Story: Character 1 {}.", spec.action.word()),
    }
}

/// The prompt of shot `shot` (0-based; printed 1-based), e.g. "[SHOT 2] close-up of Character 1
/// moving right." It is the same in every caption mode.
pub fn shot_prompt(spec: &SceneSpec, shot: usize) -> Result<String, WorldError> {
    let framing = spec.shots.get(shot).ok_or(WorldError::ShotIndex {
        index: shot,
        shots: spec.shots.len(),
    })?;
    Ok(format!(
        "[SHOT {}] {} of Character 1 {}.",
        shot + 1,
        framing.word(),
        spec.action.participle()
    ))
}

/// Prompt of an identity reference image-shot.
pub fn identity_reference_prompt() -> &'static str {
    "[IMAGE] Character 1 on a plain background."
}

/// Prompt of an environment reference image-shot.
pub fn environment_reference_prompt() -> &'static str {
    "[IMAGE] environment without characters."
}

/// All captions of a scene in one mode.
pub fn captions(spec: &SceneSpec, mode: CaptionMode) -> SceneCaptions {
    SceneCaptions {
        mode,
        global: global_prompt(spec, mode),
        shots: (0..spec.shots.len())
            .map(|k| shot_prompt(spec, k).expect("index is in range"))
            .collect(),
    }
}

/// Every word the captions can produce, in id order from 1 (id 0 pads: per-shot text is
/// padded to a fixed length so each shot keeps its single-shot text-to-video offset).
const VOCABULARY: &[&str] = &[
    ".",
    ",",
    ":",
    "[",
    "]",
    "character",
    "environment",
    "story",
    "shot",
    "image",
    "1",
    "2",
    "3",
    "4",
    "5", // structure
    "small",
    "large", // size
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "white", // colour
    "circle",
    "square",
    "triangle",
    "diamond",
    "star", // shape
    "plain",
    "striped", // pattern
    "sky",
    "ground",
    "grey",
    "pink",
    "brown",
    "sandy", // environment colours
    "low",
    "middle",
    "high",
    "horizon", // horizon
    "warm",
    "cool",
    "neutral",
    "light",
    "day",
    "night", // lighting
    "moves",
    "left",
    "right",
    "up",
    "down",
    "bounces",
    "in",
    "place",
    "grows", // story
    "wide",
    "medium",
    "close-up",
    "of",
    "moving",
    "bouncing",
    "growing", // shots
    "on",
    "a",
    "background",
    "without",
    "characters", // references
];

/// The full vocabulary, id order.
pub fn vocabulary() -> Vec<&'static str> {
    VOCABULARY.to_vec()
}

pub use lct_text::{split_words, PAD_ID};

/// The captions' vocabulary under the shared `lct-text` word rule (the model's rule too).
fn vocab() -> &'static lct_text::Vocabulary {
    static VOCAB: OnceLock<lct_text::Vocabulary> = OnceLock::new();
    VOCAB.get_or_init(|| {
        lct_text::Vocabulary::new(VOCABULARY).expect("the world vocabulary is valid")
    })
}

fn world_error(error: lct_text::TextError) -> WorldError {
    match error {
        lct_text::TextError::UnknownWord { word, vocabulary } => {
            WorldError::UnknownWord { word, vocabulary }
        }
        lct_text::TextError::UnknownTokenId(id) => WorldError::UnknownTokenId(id),
        other => WorldError::InvalidConfig(other.to_string()),
    }
}

/// Token ids of `text`; fails on the first word outside the vocabulary, naming it.
pub fn tokenize(text: &str) -> Result<Vec<u32>, WorldError> {
    vocab().tokenize(text).map_err(world_error)
}

/// Tokenizes and pads with [`PAD_ID`] (or truncates) to exactly `len` tokens.
pub fn tokenize_padded(text: &str, len: usize) -> Result<Vec<u32>, WorldError> {
    vocab().tokenize_padded(text, len).map_err(world_error)
}

/// Words of token ids joined by single spaces (padding dropped).
pub fn detokenize(ids: &[u32]) -> Result<String, WorldError> {
    vocab().detokenize(ids).map_err(world_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{sample_scene, Split};

    #[test]
    fn captions_leave_out_exactly_the_looks_asked() {
        let spec = sample_scene(3, Split::Train);
        let full = global_prompt(&spec, CaptionMode::GlobalLooks);
        assert_eq!(global_prompt_omitting(&spec, &[]), full);
        let colour = spec.character.colour.word();
        let without = global_prompt_omitting(&spec, &[Attribute::Colour]);
        assert_eq!(
            without,
            full.replacen(&format!(" {colour} "), " ", 1),
            "{full} -> {without}"
        );
        let no_sky = global_prompt_omitting(&spec, &[Attribute::Sky]);
        assert!(!no_sky.contains(" sky"), "{no_sky}");
        assert_eq!(
            global_prompt_omitting(&spec, &Attribute::ALL),
            global_prompt(&spec, CaptionMode::NoLooks).replacen("Story", "Character 1. Story", 1)
        );
        assert_eq!(
            global_prompt_omitting(
                &spec,
                &[
                    Attribute::Size,
                    Attribute::Colour,
                    Attribute::Shape,
                    Attribute::Pattern
                ]
            ),
            global_prompt(&spec, CaptionMode::NoCharacterLooks)
        );
    }

    #[test]
    fn vocabulary_has_no_duplicates() {
        let v = vocabulary();
        let set: std::collections::HashSet<_> = v.iter().collect();
        assert_eq!(set.len(), v.len());
        assert!(!v.contains(&"<pad>"), "padding is id 0, not a word");
        assert_eq!(tokenize(v[0]).unwrap(), [PAD_ID + 1]);
    }

    #[test]
    fn example_prompts() {
        let mut spec = sample_scene(0, Split::Train);
        spec.character = Character {
            shape: crate::Shape::Circle,
            colour: crate::Colour::Red,
            size: crate::Size::Large,
            pattern: crate::Pattern::Striped,
        };
        spec.environment = Environment {
            sky: crate::Sky::Blue,
            ground: crate::Ground::Green,
            horizon: crate::Horizon::High,
            tone: crate::Tone::Warm,
            time: crate::TimeOfDay::Day,
        };
        spec.action = crate::Action::MoveRight;
        spec.shots = vec![crate::Framing::Wide, crate::Framing::CloseUp];
        assert_eq!(
            global_prompt(&spec, CaptionMode::GlobalLooks),
            "Character 1: large red circle, striped. Environment: blue sky, green ground, \
             high horizon, warm light, day. Story: Character 1 moves right."
        );
        assert_eq!(
            global_prompt(&spec, CaptionMode::NoLooks),
            "Story: Character 1 moves right."
        );
        assert_eq!(
            shot_prompt(&spec, 1).unwrap(),
            "[SHOT 2] close-up of Character 1 moving right."
        );
        assert!(shot_prompt(&spec, 2).is_err());
    }

    #[test]
    fn looks_never_leak_into_shot_prompts_or_no_looks_mode() {
        for seed in 0..100 {
            let spec = sample_scene(seed, Split::Train);
            let looks = [
                spec.character.colour.word(),
                spec.character.shape.word(),
                "sky",
            ];
            for mode in CaptionMode::ALL {
                let caps = captions(&spec, mode);
                for s in &caps.shots {
                    for w in looks {
                        assert!(!split_words(s).iter().any(|x| x == w), "{s}");
                    }
                }
                if mode != CaptionMode::GlobalLooks {
                    let words = split_words(&caps.global);
                    assert!(!words.iter().any(|x| x == spec.character.shape.word()));
                }
                if mode == CaptionMode::NoLooks {
                    assert!(!split_words(&caps.global).iter().any(|x| x == "sky"));
                }
            }
        }
    }

    #[test]
    fn every_caption_tokenizes_and_round_trips() {
        for seed in 0..200 {
            for split in [Split::Train, Split::HeldOut] {
                let spec = sample_scene(seed, split);
                for mode in CaptionMode::ALL {
                    let caps = captions(&spec, mode);
                    for text in std::iter::once(&caps.global).chain(&caps.shots) {
                        let ids = tokenize(text).unwrap();
                        assert_eq!(detokenize(&ids).unwrap(), split_words(text).join(" "));
                    }
                }
            }
        }
        tokenize(identity_reference_prompt()).unwrap();
        tokenize(environment_reference_prompt()).unwrap();
    }

    #[test]
    fn tokenizer_is_deterministic_and_splits_punctuation() {
        assert_eq!(
            split_words("[SHOT 2] Close-up of Character 1."),
            vec![
                "[",
                "shot",
                "2",
                "]",
                "close-up",
                "of",
                "character",
                "1",
                "."
            ]
        );
        assert_eq!(
            tokenize("Red circle.").unwrap(),
            tokenize("red  CIRCLE .").unwrap()
        );
        assert_eq!(
            tokenize_padded("red", 3).unwrap(),
            vec![tokenize("red").unwrap()[0], 0, 0]
        );
    }

    #[test]
    fn unknown_word_error_names_it_and_lists_the_vocabulary() {
        let err = tokenize("a magenta circle").unwrap_err().to_string();
        assert!(err.contains("\"magenta\""), "{err}");
        assert!(err.contains("circle") && err.contains("close-up"), "{err}");
        let err = tokenize("red!").unwrap_err().to_string();
        assert!(err.contains("\"!\""), "{err}");
        assert!(detokenize(&[9999]).is_err());
    }
}
