//! Colour management through `ocio` (a pure-Rust OpenColorIO): colour-space names, configs
//! and the conversions that happen at the edges of a graph (load, save, preview, the model's
//! working space).
//!
//! FRAMES carry the name of their colour space as the config that tagged them spells it
//! (its canonical name, so aliases compare equal). Conversions are never implicit: a node
//! that needs another space asks a [`ColorConfig`] for it, and an unknown name is an error
//! naming the space and the config.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

/// The config used when a node's `config` widget is empty: OCIO's built-in ACES CG config.
pub const DEFAULT_CONFIG: &str = "ocio://cg-config-latest";

/// Canonical names in the built-in CG configs.
pub mod names {
    /// sRGB-encoded Rec.709 (PNG, JPEG, the embedded model's working space).
    pub const SRGB_TEXTURE: &str = "sRGB Encoded Rec.709 (sRGB)";
    /// Linear light, Rec.709 primaries.
    pub const LINEAR_REC709: &str = "Linear Rec.709 (sRGB)";
    /// Scene-linear AP1 primaries: the compositing working space.
    pub const ACESCG: &str = "ACEScg";
    /// The sRGB display (what PNG previews are rendered for).
    pub const SRGB_DISPLAY: &str = "sRGB - Display";
    /// The view that maps scene-linear to the display without a tone curve.
    pub const UNTONEMAPPED_VIEW: &str = "Un-tone-mapped";
}

/// A colour-space name, canonical in the config that made it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ColorSpace(Arc<str>);

impl ColorSpace {
    /// sRGB-encoded Rec.709.
    pub fn srgb() -> Self {
        Self(names::SRGB_TEXTURE.into())
    }
    /// Linear light, Rec.709 primaries.
    pub fn linear() -> Self {
        Self(names::LINEAR_REC709.into())
    }
    /// Scene-linear ACEScg.
    pub fn acescg() -> Self {
        Self(names::ACESCG.into())
    }
    /// A name as a config spells it (see [`ColorConfig::color_space`] to check one).
    pub fn from_canonical(name: &str) -> Self {
        Self(name.into())
    }
    pub fn name(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ColorSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl fmt::Display for ColorSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a colour operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ColorError {
    #[error("colour config {config:?} could not be loaded: {message}")]
    Config { config: String, message: String },
    #[error(
        "colour space {name:?} is not in the colour config {config:?} (for example: {examples})"
    )]
    UnknownSpace {
        name: String,
        config: String,
        examples: String,
    },
    #[error("display {display:?} with view {view:?} is not in the colour config {config:?} (displays: {displays})")]
    UnknownView {
        display: String,
        view: String,
        config: String,
        displays: String,
    },
    #[error("colour conversion {from:?} -> {to:?} in {config:?} failed: {message}")]
    Processor {
        from: String,
        to: String,
        config: String,
        message: String,
    },
}

type Processor = Arc<ocio::CpuProcessor>;

/// A loaded OCIO config with its processors cached (building one is far slower than applying).
pub struct ColorConfig {
    source: String,
    config: ocio::Config,
    processors: Mutex<HashMap<(String, String, String), Processor>>,
}

impl ColorConfig {
    /// The config at `source`: a `config.ocio` / `.ocioz` path or an `ocio://` URI; empty means
    /// [`DEFAULT_CONFIG`]. Loaded once per process and shared.
    pub fn load(source: &str) -> Result<Arc<ColorConfig>, ColorError> {
        static CACHE: OnceLock<Mutex<HashMap<String, Arc<ColorConfig>>>> = OnceLock::new();
        let source = if source.trim().is_empty() {
            DEFAULT_CONFIG
        } else {
            source.trim()
        };
        let cache = CACHE.get_or_init(Default::default);
        if let Some(config) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(source) {
            return Ok(config.clone());
        }
        if !source.starts_with("ocio://") {
            // ocio reads the whole file: bound it first (a device such as /dev/zero, or a
            // file too large to be a config, is refused before a byte is read).
            lct_files::check(
                std::path::Path::new(source),
                lct_files::FileKind::OcioConfig,
            )
            .map_err(|e| ColorError::Config {
                config: source.to_string(),
                message: e.to_string(),
            })?;
        }
        let config = ocio::Config::create_from_file(source).map_err(|e| ColorError::Config {
            config: source.to_string(),
            message: e.to_string(),
        })?;
        let loaded = Arc::new(ColorConfig {
            source: source.to_string(),
            config,
            processors: Mutex::new(HashMap::new()),
        });
        cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(source.to_string(), loaded.clone());
        Ok(loaded)
    }

    /// The built-in default config.
    pub fn default_config() -> Arc<ColorConfig> {
        Self::load(DEFAULT_CONFIG).expect("the built-in OCIO config loads")
    }

    /// The names the built-in config offers for a [`crate::ConfigList`] widget: colour
    /// spaces, displays, or views (of every display, each once), in the config's order.
    pub fn names(&self, list: crate::node::ConfigList) -> Vec<String> {
        use crate::node::ConfigList;
        let config = &self.config;
        let mut names: Vec<String> = match list {
            ConfigList::ColorSpaces => (0..config.num_color_spaces())
                .map(|i| config.color_space_name_by_index(i).to_string())
                .collect(),
            ConfigList::Displays => (0..config.num_displays())
                .map(|i| config.display(i))
                .collect(),
            ConfigList::Views => (0..config.num_displays())
                .flat_map(|d| {
                    let display = config.display(d);
                    (0..config.num_views(&display))
                        .map(|v| config.view(&display, v))
                        .collect::<Vec<_>>()
                })
                .collect(),
        };
        let mut seen = std::collections::HashSet::new();
        names.retain(|name| seen.insert(name.clone()));
        names
    }

    /// Where the config came from (path or URI).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Resolves a name, alias or role to the config's canonical colour-space name.
    pub fn color_space(&self, name: &str) -> Result<ColorSpace, ColorError> {
        match self.config.get_color_space(name.trim()) {
            Some(space) if !name.trim().is_empty() => Ok(ColorSpace::from_canonical(space.name())),
            _ => Err(ColorError::UnknownSpace {
                name: name.to_string(),
                config: self.source.clone(),
                examples: self.example_spaces(),
            }),
        }
    }

    fn example_spaces(&self) -> String {
        let names: Vec<String> = (0..self.config.num_color_spaces().min(8))
            .map(|i| self.config.color_space_name_by_index(i).to_string())
            .collect();
        names.join(", ")
    }

    fn processor(&self, key: (String, String, String)) -> Result<Processor, ColorError> {
        if let Some(p) = self
            .processors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(p.clone());
        }
        let (from, to, view) = &key;
        let processor = if view.is_empty() {
            self.config.get_processor(from, to)
        } else {
            self.config.get_display_view_processor(from, to, view)
        }
        .map_err(|e| ColorError::Processor {
            from: from.clone(),
            to: if view.is_empty() {
                to.clone()
            } else {
                format!("{to} / {view}")
            },
            config: self.source.clone(),
            message: e.to_string(),
        })?;
        let cpu = Arc::new(processor.default_cpu_processor());
        self.processors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, cpu.clone());
        Ok(cpu)
    }

    /// Converts interleaved samples (`channels` 3 or 4; alpha untouched) in place.
    pub fn convert(
        &self,
        samples: &mut [f32],
        channels: usize,
        from: &ColorSpace,
        to: &ColorSpace,
    ) -> Result<(), ColorError> {
        if from == to {
            return Ok(());
        }
        self.color_space(from.name())?;
        self.color_space(to.name())?;
        let processor = self.processor((from.to_string(), to.to_string(), String::new()))?;
        apply(&processor, samples, channels);
        Ok(())
    }

    /// Renders interleaved samples in `from` for `display` through `view`, in place.
    pub fn to_display(
        &self,
        samples: &mut [f32],
        channels: usize,
        from: &ColorSpace,
        display: &str,
        view: &str,
    ) -> Result<(), ColorError> {
        self.color_space(from.name())?;
        if !self.config.has_view(display, view) {
            let displays: Vec<String> = (0..self.config.num_displays())
                .map(|i| self.config.display(i))
                .collect();
            return Err(ColorError::UnknownView {
                display: display.to_string(),
                view: view.to_string(),
                config: self.source.clone(),
                displays: displays.join(", "),
            });
        }
        let processor =
            self.processor((from.to_string(), display.to_string(), view.to_string()))?;
        apply(&processor, samples, channels);
        Ok(())
    }
}

fn apply(processor: &ocio::CpuProcessor, samples: &mut [f32], channels: usize) {
    if channels == 3 {
        processor.apply_rgb_slice(samples);
    } else {
        processor.apply_rgba_slice(samples);
    }
}

/// Quantises a nominal 0..1 sample to 8 bits (clamped, rounded).
pub fn to_u8(sample: f32) -> u8 {
    (sample.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Quantises a nominal 0..1 sample to 16 bits (clamped, rounded).
pub fn to_u16(sample: f32) -> u16 {
    (sample.clamp(0.0, 1.0) * 65535.0).round() as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_resolve_to_canonical_names() {
        let config = ColorConfig::default_config();
        assert_eq!(
            config.color_space("sRGB - Texture").unwrap(),
            ColorSpace::srgb()
        );
        assert_eq!(config.color_space("lin_ap1").unwrap(), ColorSpace::acescg());
        assert_eq!(
            config.color_space("scene_linear").unwrap(),
            ColorSpace::acescg()
        );
        let error = config.color_space("Kodak 2383").unwrap_err().to_string();
        assert!(
            error.contains("Kodak 2383") && error.contains(DEFAULT_CONFIG),
            "{error}"
        );
    }

    #[test]
    fn srgb_linear_and_back_is_the_standard_curve() {
        let config = ColorConfig::default_config();
        let mut samples = vec![0.0, 0.04045, 0.5, 1.0, 0.2, 0.7];
        let original = samples.clone();
        config
            .convert(&mut samples, 3, &ColorSpace::srgb(), &ColorSpace::linear())
            .unwrap();
        // IEC 61966-2-1 at 0.5: ((0.5 + 0.055) / 1.055)^2.4.
        assert!((samples[2] - 0.214_041_14).abs() < 1e-5, "{samples:?}");
        config
            .convert(&mut samples, 3, &ColorSpace::linear(), &ColorSpace::srgb())
            .unwrap();
        // `ocio` evaluates the curve in f32 with fast powers: a few 1e-5 off at worst, far
        // below one 16-bit code value.
        for (a, b) in samples.iter().zip(&original) {
            assert!((a - b).abs() < 5e-5, "{samples:?}");
        }
    }

    #[test]
    fn alpha_is_left_alone() {
        let config = ColorConfig::default_config();
        let mut samples = vec![0.5, 0.5, 0.5, 0.25];
        config
            .convert(&mut samples, 4, &ColorSpace::srgb(), &ColorSpace::acescg())
            .unwrap();
        assert_eq!(samples[3], 0.25);
        assert!(samples[0] < 0.5);
    }

    #[test]
    fn unknown_views_and_configs_are_named() {
        let config = ColorConfig::default_config();
        let mut samples = vec![0.5; 3];
        let error = config
            .to_display(
                &mut samples,
                3,
                &ColorSpace::acescg(),
                "sRGB - Display",
                "Filmic",
            )
            .unwrap_err()
            .to_string();
        assert!(error.contains("Filmic"), "{error}");
        let error = ColorConfig::load("/nowhere/config.ocio")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("/nowhere/config.ocio"), "{error}");
    }
}
