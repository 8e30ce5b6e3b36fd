//! World vocabulary (characters, environments, actions, framings) and the seeded scene sampler.
//!
//! Geometry conventions: world coordinates are the unit square seen by a wide shot, x to the right,
//! y downwards. A shot's camera has a centre (world) and a zoom; a world point maps to pixel
//! `W/2 + (x - cx) * zoom * S`, `H/2 + (y - cy) * zoom * S` with `S = min(W, H)`. The horizon is a
//! property of the environment and stays on the same frame row in every framing (stylised camera).

use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::WorldError;

/// Most shots a sampled scene has; also fixes the speed of actions (see [`SceneSpec::speed`]).
pub const MAX_SHOTS: usize = 5;
/// Extent (bounding-box side) of a large, ungrown character in a wide shot, as a fraction of the
/// frame's shorter side: 23 pixels of a 64-pixel frame, about three of the embedded model's
/// 8-pixel tokens, so a wide shot's character spans several tokens and its outline is learnable.
pub const BASE_EXTENT: f32 = 0.36;
/// World distance a moving character covers over a full `MAX_SHOTS` scene; keeps it in frame.
const TRAVEL: f32 = 0.6;
/// Bounce height (world units) and period (frames): a 3-frame period makes every window of three
/// frame steps contain a rise and a fall, so a 4-frame shot always shows the bounce.
const BOUNCE_HEIGHT: f32 = 0.12;
const BOUNCE_PERIOD: f32 = 3.0;
/// Extent ratio between the last and first frame of a shot for the `Grow` action. The character
/// keeps growing across shots while each shot's camera pulls back to hold its framing, so the
/// framing stays readable however long the scene is: see [`SceneSpec::camera`].
pub const GROW_PER_SHOT: f32 = 1.2;
/// Backdrop of identity reference images: a light blue-grey, away from every colour and stripe
/// shade and off the grey axis (on it, white, its grey stripes and the backdrop would be collinear
/// and a pixel's mix could not be told apart).
pub const PLAIN_BACKDROP: [f32; 3] = [0.72, 0.80, 0.90];

macro_rules! vocab_enum {
    ($(#[$m:meta])* $name:ident { $($var:ident => $word:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($var),+ }
        impl $name {
            /// Every value, in declaration order (the order defines [`Self::index`]).
            pub const ALL: &'static [$name] = &[$($name::$var),+];
            /// Caption word(s) for this value.
            pub fn word(self) -> &'static str {
                match self { $($name::$var => $word),+ }
            }
            /// Position in [`Self::ALL`].
            pub fn index(self) -> usize {
                self as usize
            }
        }
    };
}

vocab_enum!(
    /// Character outline (fixed orientation: triangle and star point up).
    Shape { Circle => "circle", Square => "square", Triangle => "triangle", Diamond => "diamond", Star => "star" }
);
vocab_enum!(
    /// Character colour; saturated so it stays apart from every sky and ground colour.
    Colour { Red => "red", Green => "green", Blue => "blue", Yellow => "yellow", Purple => "purple", Orange => "orange", White => "white" }
);
vocab_enum!(
    /// Character size relative to the framing's nominal size.
    Size { Small => "small", Large => "large" }
);
vocab_enum!(
    /// Striped characters have horizontal bands at half brightness.
    Pattern { Plain => "plain", Striped => "striped" }
);
vocab_enum!(
    /// Sky colour (above the horizon).
    Sky { Blue => "blue", Grey => "grey", Pink => "pink" }
);
vocab_enum!(
    /// Ground colour (below the horizon).
    Ground { Green => "green", Brown => "brown", Sandy => "sandy" }
);
vocab_enum!(
    /// Horizon height on the frame.
    Horizon { Low => "low", Middle => "middle", High => "high" }
);
vocab_enum!(
    /// Lighting tone: a global per-channel colour multiplier.
    Tone { Warm => "warm", Cool => "cool", Neutral => "neutral" }
);
vocab_enum!(
    /// Day or night: a global brightness.
    TimeOfDay { Day => "day", Night => "night" }
);
vocab_enum!(
    /// Shot framing: how far the camera zooms in on the character.
    Framing { Wide => "wide shot", Medium => "medium shot", CloseUp => "close-up" }
);
vocab_enum!(
    /// The scene's single continuous action; it carries on across shots.
    Action { MoveLeft => "moves left", MoveRight => "moves right", MoveUp => "moves up", MoveDown => "moves down", Bounce => "bounces in place", Grow => "grows" }
);
vocab_enum!(
    /// Which part of the (character, environment) space a scene comes from.
    Split { Train => "train", HeldOut => "held-out" }
);

impl Colour {
    /// Linear RGB before lighting.
    pub fn rgb(self) -> [f32; 3] {
        match self {
            Colour::Red => [0.90, 0.12, 0.12],
            Colour::Green => [0.15, 0.80, 0.20],
            Colour::Blue => [0.15, 0.30, 0.95],
            Colour::Yellow => [0.98, 0.88, 0.10],
            Colour::Purple => [0.62, 0.20, 0.85],
            Colour::Orange => [1.00, 0.55, 0.05],
            Colour::White => [1.00, 1.00, 1.00],
        }
    }

    /// Colour of the dark stripes of a striped character.
    pub fn stripe_rgb(self) -> [f32; 3] {
        self.rgb().map(|c| c * STRIPE_SHADE)
    }
}

/// Brightness of a stripe relative to the character colour.
pub const STRIPE_SHADE: f32 = 0.5;

impl Size {
    pub fn scale(self) -> f32 {
        match self {
            Size::Small => 0.85,
            Size::Large => 1.0,
        }
    }
}

impl Sky {
    pub fn rgb(self) -> [f32; 3] {
        match self {
            Sky::Blue => [0.50, 0.70, 0.95],
            Sky::Grey => [0.64, 0.64, 0.68],
            Sky::Pink => [0.95, 0.72, 0.78],
        }
    }
}

impl Ground {
    pub fn rgb(self) -> [f32; 3] {
        match self {
            Ground::Green => [0.32, 0.50, 0.25],
            Ground::Brown => [0.45, 0.32, 0.28],
            Ground::Sandy => [0.88, 0.78, 0.52],
        }
    }
}

impl Horizon {
    /// Horizon row as a fraction of the frame height from the top.
    pub fn fraction(self) -> f32 {
        match self {
            Horizon::Low => 0.70,
            Horizon::Middle => 0.55,
            Horizon::High => 0.40,
        }
    }

    /// First ground row; the horizon sits on a pixel boundary so it needs no anti-aliasing.
    pub fn row(self, height: usize) -> usize {
        (self.fraction() * height as f32).round() as usize
    }
}

impl Tone {
    /// Per-channel multiplier (max 1, so lighting never clips).
    pub fn multiplier(self) -> [f32; 3] {
        match self {
            Tone::Warm => [1.00, 0.86, 0.68],
            Tone::Cool => [0.70, 0.86, 1.00],
            Tone::Neutral => [0.90, 0.90, 0.90],
        }
    }
}

impl TimeOfDay {
    pub fn brightness(self) -> f32 {
        match self {
            TimeOfDay::Day => 1.0,
            TimeOfDay::Night => 0.55,
        }
    }
}

impl Framing {
    /// Camera zoom relative to the wide shot.
    pub fn zoom(self) -> f32 {
        match self {
            Framing::Wide => 1.0,
            Framing::Medium => 1.5,
            Framing::CloseUp => 2.2,
        }
    }

    /// Extent (fraction of the frame's shorter side) separating wide|medium and medium|close-up.
    /// Each threshold is the geometric mean of the largest extent of the smaller framing and the
    /// smallest extent of the larger one, over both sizes and the whole growth range.
    pub fn thresholds() -> [f32; 2] {
        // A growing character spans GROW_PER_SHOT^(-1/2) .. GROW_PER_SHOT^(1/2) of nominal.
        let g = GROW_PER_SHOT.sqrt();
        let lo = |f: Framing| BASE_EXTENT * f.zoom() * Size::Small.scale() / g;
        let hi = |f: Framing| BASE_EXTENT * f.zoom() * Size::Large.scale() * g;
        [
            (hi(Framing::Wide) * lo(Framing::Medium)).sqrt(),
            (hi(Framing::Medium) * lo(Framing::CloseUp)).sqrt(),
        ]
    }

    /// Framing whose extent band contains `extent` (fraction of the shorter side).
    pub fn from_extent(extent: f32) -> Framing {
        let [a, b] = Framing::thresholds();
        if extent < a {
            Framing::Wide
        } else if extent < b {
            Framing::Medium
        } else {
            Framing::CloseUp
        }
    }
}

impl Action {
    /// Present participle used in per-shot prompts.
    pub fn participle(self) -> &'static str {
        match self {
            Action::MoveLeft => "moving left",
            Action::MoveRight => "moving right",
            Action::MoveUp => "moving up",
            Action::MoveDown => "moving down",
            Action::Bounce => "bouncing",
            Action::Grow => "growing",
        }
    }
}

/// A character's looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Character {
    pub shape: Shape,
    pub colour: Colour,
    pub size: Size,
    pub pattern: Pattern,
}

/// A scene's environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Environment {
    pub sky: Sky,
    pub ground: Ground,
    pub horizon: Horizon,
    pub tone: Tone,
    pub time: TimeOfDay,
}

impl Environment {
    /// Global lighting multiplier (tone times day/night brightness).
    pub fn multiplier(&self) -> [f32; 3] {
        let b = self.time.brightness();
        self.tone.multiplier().map(|m| m * b)
    }

    /// Every environment, in a fixed order.
    pub fn all() -> Vec<Environment> {
        let mut out = Vec::new();
        for &sky in Sky::ALL {
            for &ground in Ground::ALL {
                for &horizon in Horizon::ALL {
                    for &tone in Tone::ALL {
                        for &time in TimeOfDay::ALL {
                            out.push(Environment {
                                sky,
                                ground,
                                horizon,
                                tone,
                                time,
                            });
                        }
                    }
                }
            }
        }
        out
    }
}

/// The held-out rule: a (character, environment) pair is reserved for evaluation when
/// `(shape + 2 * colour + 3 * sky + 5 * ground) % 7 == 0` (indices into the `ALL` lists).
///
/// Only identity (shape, colour) and environment colours (sky, ground) take part, so size,
/// pattern, horizon, lighting, action and framing never decide the split. About 1/7 of the
/// (shape, colour, sky, ground) combinations are held out; every character is held out with one
/// or two of the nine sky/ground pairs and trained with the others, and every sky/ground pair is
/// seen in training with most characters: held-out scenes test composition, not new words.
pub fn is_held_out(character: &Character, environment: &Environment) -> bool {
    (character.shape.index()
        + 2 * character.colour.index()
        + 3 * environment.sky.index()
        + 5 * environment.ground.index())
    .is_multiple_of(7)
}

/// Frame size and clip length shared by the scenes of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorldConfig {
    pub width: usize,
    pub height: usize,
    pub frames_per_shot: usize,
}

impl Default for WorldConfig {
    fn default() -> Self {
        WorldConfig {
            width: 64,
            height: 64,
            frames_per_shot: 4,
        }
    }
}

impl WorldConfig {
    /// Rejects sizes the detectors and shapes cannot work with.
    pub fn validate(&self) -> Result<(), WorldError> {
        if self.width < 16 || self.height < 16 {
            return Err(WorldError::InvalidConfig(format!(
                "frames must be at least 16x16 pixels, got {}x{}",
                self.width, self.height
            )));
        }
        if self.width > 4096 || self.height > 4096 {
            return Err(WorldError::InvalidConfig(format!(
                "frames must be at most 4096x4096 pixels, got {}x{}",
                self.width, self.height
            )));
        }
        if self.frames_per_shot == 0 || self.frames_per_shot > 256 {
            return Err(WorldError::InvalidConfig(format!(
                "frames_per_shot must be in 1..=256, got {}",
                self.frames_per_shot
            )));
        }
        Ok(())
    }
}

/// Everything needed to render and caption a scene. Rendering uses no randomness: the sampler
/// draws every free quantity (including the start position) into this struct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneSpec {
    pub seed: u64,
    pub split: Split,
    pub character: Character,
    pub environment: Environment,
    pub action: Action,
    /// Character position (world units) at the first frame of the first shot.
    pub start: [f32; 2],
    /// One framing per shot; shots cover consecutive stretches of the action.
    pub shots: Vec<Framing>,
    pub frames_per_shot: usize,
    pub width: usize,
    pub height: usize,
}

/// Camera of one shot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Camera {
    pub centre: [f32; 2],
    pub zoom: f32,
}

/// Character pose at one time step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CharacterState {
    /// World position of the shape's local origin (centre of its bounding box).
    pub position: [f32; 2],
    /// Growth factor (1 unless the action is `Grow`).
    pub growth: f32,
}

impl SceneSpec {
    pub fn config(&self) -> WorldConfig {
        WorldConfig {
            width: self.width,
            height: self.height,
            frames_per_shot: self.frames_per_shot,
        }
    }

    pub fn total_frames(&self) -> usize {
        self.shots.len() * self.frames_per_shot
    }

    /// World units per frame. Depends on the clip length but not on the number of shots, so the
    /// same action looks the same in short and long scenes.
    pub fn speed(&self) -> f32 {
        TRAVEL / (MAX_SHOTS * self.frames_per_shot - 1) as f32
    }

    /// Character pose at scene time `t` (frames since the start of the first shot).
    pub fn state_at(&self, t: usize) -> CharacterState {
        let tf = t as f32;
        let d = self.speed() * tf;
        let [x, y] = self.start;
        let (position, growth) = match self.action {
            Action::MoveLeft => ([x - d, y], 1.0),
            Action::MoveRight => ([x + d, y], 1.0),
            Action::MoveUp => ([x, y - d], 1.0),
            Action::MoveDown => ([x, y + d], 1.0),
            Action::Bounce => {
                let h = BOUNCE_HEIGHT * (std::f32::consts::PI * tf / BOUNCE_PERIOD).sin().abs();
                ([x, y - h], 1.0)
            }
            Action::Grow => ([x, y], self.growth_rate().powf(tf)),
        };
        CharacterState { position, growth }
    }

    /// Per-frame growth factor of the `Grow` action.
    pub fn growth_rate(&self) -> f32 {
        GROW_PER_SHOT.powf(1.0 / (self.frames_per_shot.max(2) - 1) as f32)
    }

    /// Wide shots use a fixed camera on the whole world; medium shots and close-ups centre on the
    /// character's mean position during the shot, so its motion stays visible inside the shot.
    /// For a growing character every camera also divides its zoom by the growth at the shot's
    /// middle, so the framing keeps its nominal size while growth shows inside each shot.
    pub fn camera(&self, shot: usize) -> Camera {
        let framing = self.shots[shot];
        let f = self.frames_per_shot;
        let zoom = if self.action == Action::Grow {
            let mid = (shot * f) as f32 + (f as f32 - 1.0) * 0.5;
            framing.zoom() / self.growth_rate().powf(mid)
        } else {
            framing.zoom()
        };
        if framing == Framing::Wide {
            return Camera {
                centre: [0.5, 0.5],
                zoom,
            };
        }
        let mut c = [0.0f32; 2];
        for i in 0..f {
            let p = self.state_at(shot * f + i).position;
            c[0] += p[0] / f as f32;
            c[1] += p[1] / f as f32;
        }
        Camera { centre: c, zoom }
    }

    /// Character extent in pixels for a growth factor and camera zoom.
    pub fn extent_px(&self, growth: f32, zoom: f32) -> f32 {
        BASE_EXTENT
            * self.character.size.scale()
            * growth
            * zoom
            * self.width.min(self.height) as f32
    }

    /// Pixel position of a world point under a camera.
    pub fn project(&self, camera: &Camera, p: [f32; 2]) -> [f32; 2] {
        let s = self.width.min(self.height) as f32;
        [
            self.width as f32 * 0.5 + (p[0] - camera.centre[0]) * camera.zoom * s,
            self.height as f32 * 0.5 + (p[1] - camera.centre[1]) * camera.zoom * s,
        ]
    }
}

/// Samples a scene with the default [`WorldConfig`] (64x64, 4 frames per shot).
pub fn sample_scene(seed: u64, split: Split) -> SceneSpec {
    sample_scene_with(seed, split, &WorldConfig::default()).expect("the default config is valid")
}

/// Samples a scene: the (character, environment) pair is redrawn until [`is_held_out`] agrees
/// with `split`, so the training sampler never yields a held-out pair and vice versa.
pub fn sample_scene_with(
    seed: u64,
    split: Split,
    config: &WorldConfig,
) -> Result<SceneSpec, WorldError> {
    config.validate()?;
    // Different streams per split, so seed 0 of each split are unrelated scenes.
    let salt = match split {
        Split::Train => 0x5452_4149_4E00_0000u64,
        Split::HeldOut => 0x484F_4C44_4F55_5400u64,
    };
    let mut rng = Rng::new(seed ^ salt);
    let (character, environment) = loop {
        let character = Character {
            shape: rng.pick(Shape::ALL),
            colour: rng.pick(Colour::ALL),
            size: rng.pick(Size::ALL),
            pattern: rng.pick(Pattern::ALL),
        };
        let environment = Environment {
            sky: rng.pick(Sky::ALL),
            ground: rng.pick(Ground::ALL),
            horizon: rng.pick(Horizon::ALL),
            tone: rng.pick(Tone::ALL),
            time: rng.pick(TimeOfDay::ALL),
        };
        if is_held_out(&character, &environment) == (split == Split::HeldOut) {
            break (character, environment);
        }
    };
    let action = rng.pick(Action::ALL);
    let n_shots = 1 + rng.below(MAX_SHOTS);
    let shots: Vec<Framing> = (0..n_shots).map(|_| rng.pick(Framing::ALL)).collect();
    let mut spec = SceneSpec {
        seed,
        split,
        character,
        environment,
        action,
        start: [0.5, 0.5],
        shots,
        frames_per_shot: config.frames_per_shot,
        width: config.width,
        height: config.height,
    };
    // Keep the whole path inside [0.2, 0.8] so wide shots never lose the character.
    let travelled = spec.speed() * (spec.total_frames() - 1) as f32;
    spec.start = match action {
        Action::MoveRight => [rng.range(0.2, 0.8 - travelled), rng.range(0.3, 0.7)],
        Action::MoveLeft => [rng.range(0.2 + travelled, 0.8), rng.range(0.3, 0.7)],
        Action::MoveUp => [rng.range(0.3, 0.7), rng.range(0.2 + travelled, 0.8)],
        Action::MoveDown => [rng.range(0.3, 0.7), rng.range(0.2, 0.8 - travelled)],
        Action::Bounce => [rng.range(0.3, 0.7), rng.range(0.4, 0.75)],
        Action::Grow => [rng.range(0.3, 0.7), rng.range(0.3, 0.7)],
    };
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dist(a: [f32; 3], b: [f32; 3]) -> f32 {
        (0..3).map(|i| (a[i] - b[i]).powi(2)).sum::<f32>().sqrt()
    }

    #[test]
    fn palette_keeps_characters_apart_from_backgrounds() {
        let bgs: Vec<[f32; 3]> = Sky::ALL
            .iter()
            .map(|s| s.rgb())
            .chain(Ground::ALL.iter().map(|g| g.rgb()))
            .chain([PLAIN_BACKDROP])
            .collect();
        for &c in Colour::ALL {
            for &b in &bgs {
                assert!(dist(c.rgb(), b) >= 0.25, "{c:?} vs {b:?}");
                assert!(dist(c.stripe_rgb(), b) >= 0.2, "{c:?} stripe vs {b:?}");
            }
        }
        for &s in Sky::ALL {
            for &g in Ground::ALL {
                assert!(dist(s.rgb(), g.rgb()) >= 0.25, "{s:?} vs {g:?}");
            }
        }
    }

    #[test]
    fn framings_keep_apart_and_in_frame() {
        let g = GROW_PER_SHOT.sqrt();
        let extent =
            |f: Framing, size: Size, growth: f32| BASE_EXTENT * f.zoom() * size.scale() * growth;
        for pair in Framing::ALL.windows(2) {
            let (smaller, larger) = (pair[0], pair[1]);
            let hi = extent(smaller, Size::Large, g);
            let lo = extent(larger, Size::Small, 1.0 / g);
            assert!(
                lo > hi * 1.03,
                "{smaller:?} reaches {hi}, {larger:?} starts at {lo}"
            );
        }
        let widest = extent(Framing::CloseUp, Size::Large, g);
        assert!(widest < 0.9, "a large close-up spans {widest} of the frame");
        // About three 8-pixel tokens across a large wide-shot character in a 64-pixel frame.
        const { assert!(BASE_EXTENT * 64.0 >= 2.8 * 8.0) };
    }

    #[test]
    fn samplers_respect_the_split() {
        for seed in 0..300 {
            let t = sample_scene(seed, Split::Train);
            assert!(!is_held_out(&t.character, &t.environment));
            let h = sample_scene(seed, Split::HeldOut);
            assert!(is_held_out(&h.character, &h.environment));
            assert!((1..=MAX_SHOTS).contains(&t.shots.len()));
        }
    }

    #[test]
    fn every_character_is_trained_and_held_out_somewhere() {
        for &shape in Shape::ALL {
            for &colour in Colour::ALL {
                let c = Character {
                    shape,
                    colour,
                    size: Size::Large,
                    pattern: Pattern::Plain,
                };
                let held = Environment::all()
                    .iter()
                    .filter(|e| is_held_out(&c, e))
                    .count();
                assert!(
                    held > 0 && held < Environment::all().len() / 3,
                    "{c:?}: {held}"
                );
            }
        }
    }

    #[test]
    fn paths_stay_in_the_wide_frame() {
        for seed in 0..300 {
            let s = sample_scene(seed, Split::Train);
            for t in 0..s.total_frames() {
                let p = s.state_at(t).position;
                assert!(
                    (0.15..=0.85).contains(&p[0]) && (0.15..=0.85).contains(&p[1]),
                    "{p:?}"
                );
            }
        }
    }

    #[test]
    fn invalid_config_is_rejected() {
        let bad = WorldConfig {
            width: 8,
            height: 64,
            frames_per_shot: 4,
        };
        let err = sample_scene_with(0, Split::Train, &bad).unwrap_err();
        assert!(err.to_string().contains("at least 16x16"), "{err}");
    }
}
