//! Rendering: frames, clips, shots, reference images and contact sheets.
//!
//! Shapes are drawn with 4x4 supersampling; the same sampler renders the detector's templates so a
//! template at the true pose reproduces a clean character exactly.

use std::path::Path;
use std::sync::OnceLock;

use crate::spec::{Character, Environment, Pattern, SceneSpec, Shape, PLAIN_BACKDROP};
use crate::WorldError;

/// Subsamples per pixel side.
pub(crate) const SUPERSAMPLE: usize = 4;

/// An RGB image, row-major, interleaved `f32` channels in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub width: usize,
    pub height: usize,
    /// `width * height * 3` values.
    pub data: Vec<f32>,
}

impl Frame {
    /// A frame filled with one colour.
    pub fn filled(width: usize, height: usize, rgb: [f32; 3]) -> Frame {
        let mut data = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            data.extend_from_slice(&rgb);
        }
        Frame {
            width,
            height,
            data,
        }
    }

    pub fn pixel(&self, x: usize, y: usize) -> [f32; 3] {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    pub fn set_pixel(&mut self, x: usize, y: usize, rgb: [f32; 3]) {
        let i = (y * self.width + x) * 3;
        self.data[i..i + 3].copy_from_slice(&rgb);
    }

    /// 8-bit copy (rounded, clamped).
    pub fn to_rgb8(&self) -> image::RgbImage {
        let bytes = self
            .data
            .iter()
            .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect();
        image::RgbImage::from_raw(self.width as u32, self.height as u32, bytes)
            .expect("buffer length matches the frame size")
    }

    /// Float copy of an 8-bit image (e.g. a generated PNG read back for detection).
    pub fn from_rgb8(img: &image::RgbImage) -> Frame {
        Frame {
            width: img.width() as usize,
            height: img.height() as usize,
            data: img.as_raw().iter().map(|&b| b as f32 / 255.0).collect(),
        }
    }

    pub fn save_png(&self, path: &Path) -> Result<(), WorldError> {
        save_png(&self.to_rgb8(), path)
    }
}

pub(crate) fn save_png(img: &image::RgbImage, path: &Path) -> Result<(), WorldError> {
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|source| WorldError::Image {
            path: path.display().to_string(),
            source,
        })
}

/// Frames of one shot.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    pub frames: Vec<Frame>,
    pub width: usize,
    pub height: usize,
}

/// Whether local point `(u, v)` (bounding box `[-0.5, 0.5]^2`, v down) lies inside `shape`.
pub(crate) fn inside(shape: Shape, u: f32, v: f32) -> bool {
    match shape {
        Shape::Circle => u * u + v * v <= 0.25,
        // Slightly smaller than the box so a square does not look much heavier than a circle.
        Shape::Square => u.abs() <= 0.42 && v.abs() <= 0.42,
        Shape::Diamond => u.abs() + v.abs() <= 0.5,
        Shape::Triangle => (-0.5..=0.5).contains(&v) && u.abs() <= (v + 0.5) * 0.5,
        Shape::Star => star_inside(u, v),
    }
}

fn star_vertices() -> &'static [[f32; 2]; 10] {
    static V: OnceLock<[[f32; 2]; 10]> = OnceLock::new();
    V.get_or_init(|| {
        let mut v = [[0.0; 2]; 10];
        for (i, p) in v.iter_mut().enumerate() {
            let a = -std::f32::consts::FRAC_PI_2 + i as f32 * std::f32::consts::PI / 5.0;
            let r = if i % 2 == 0 { 0.5 } else { 0.24 };
            *p = [r * a.cos(), r * a.sin()];
        }
        v
    })
}

fn star_inside(u: f32, v: f32) -> bool {
    if u * u + v * v > 0.25 {
        return false;
    }
    // Even-odd rule.
    let vs = star_vertices();
    let mut inside = false;
    let mut j = vs.len() - 1;
    for i in 0..vs.len() {
        let [xi, yi] = vs[i];
        let [xj, yj] = vs[j];
        if (yi > v) != (yj > v) && u < (xj - xi) * (v - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// Whether local height `v` falls in a dark band of a striped character (5 bands, 2 dark).
pub(crate) fn in_stripe(v: f32) -> bool {
    let band = ((v + 0.5) * 5.0).floor() as i32;
    band == 1 || band == 3
}

/// Area (in units of extent squared) and centroid (local units) of each shape, measured on a fine
/// grid so detectors and renderer agree on the same outlines.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShapeStats {
    pub fill: f32,
    pub centroid: [f32; 2],
}

pub(crate) fn shape_stats(shape: Shape) -> ShapeStats {
    static STATS: OnceLock<Vec<ShapeStats>> = OnceLock::new();
    STATS.get_or_init(|| {
        const N: usize = 400;
        Shape::ALL
            .iter()
            .map(|&s| {
                let (mut n, mut su, mut sv) = (0usize, 0.0f64, 0.0f64);
                for j in 0..N {
                    for i in 0..N {
                        let u = (i as f32 + 0.5) / N as f32 - 0.5;
                        let v = (j as f32 + 0.5) / N as f32 - 0.5;
                        if inside(s, u, v) {
                            n += 1;
                            su += u as f64;
                            sv += v as f64;
                        }
                    }
                }
                ShapeStats {
                    fill: n as f32 / (N * N) as f32,
                    centroid: [(su / n as f64) as f32, (sv / n as f64) as f32],
                }
            })
            .collect()
    })[shape.index()]
}

/// A character placed on a frame: local origin in pixels and extent in pixels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Figure {
    pub shape: Shape,
    pub main: [f32; 3],
    pub stripe: Option<[f32; 3]>,
    pub origin: [f32; 2],
    pub extent: f32,
}

impl Figure {
    /// Colour at pixel-space point `(x, y)`, or `None` outside the outline.
    fn sample(&self, x: f32, y: f32) -> Option<[f32; 3]> {
        let u = (x - self.origin[0]) / self.extent;
        let v = (y - self.origin[1]) / self.extent;
        if !inside(self.shape, u, v) {
            return None;
        }
        Some(match self.stripe {
            Some(s) if in_stripe(v) => s,
            _ => self.main,
        })
    }

    /// Pixel range `[x0, x1) x [y0, y1)` (clipped to the frame) that the figure can touch.
    pub(crate) fn pixel_box(&self, width: usize, height: usize) -> [usize; 4] {
        let h = 0.5 * self.extent + 1.0;
        let clip = |v: f32, max: usize| v.floor().clamp(0.0, max as f32) as usize;
        [
            clip(self.origin[0] - h, width),
            clip(self.origin[1] - h, height),
            clip(self.origin[0] + h + 1.0, width),
            clip(self.origin[1] + h + 1.0, height),
        ]
    }

    /// Fraction of pixel `(px, py)` covered by the outline (4x4 supersampling).
    pub(crate) fn coverage(&self, px: usize, py: usize) -> f32 {
        let mut n = 0;
        for j in 0..SUPERSAMPLE {
            for i in 0..SUPERSAMPLE {
                let x = px as f32 + (i as f32 + 0.5) / SUPERSAMPLE as f32;
                let y = py as f32 + (j as f32 + 0.5) / SUPERSAMPLE as f32;
                let u = (x - self.origin[0]) / self.extent;
                let v = (y - self.origin[1]) / self.extent;
                if inside(self.shape, u, v) {
                    n += 1;
                }
            }
        }
        n as f32 / (SUPERSAMPLE * SUPERSAMPLE) as f32
    }
}

/// Two flat colours split at a pixel row.
#[derive(Debug, Clone, Copy)]
struct Backdrop {
    sky: [f32; 3],
    ground: [f32; 3],
    horizon_row: usize,
}

fn paint(
    width: usize,
    height: usize,
    backdrop: Backdrop,
    figure: Option<&Figure>,
    multiplier: [f32; 3],
) -> Frame {
    let mut frame = Frame::filled(width, height, [0.0; 3]);
    for y in 0..height {
        let bg = if y < backdrop.horizon_row {
            backdrop.sky
        } else {
            backdrop.ground
        };
        for x in 0..width {
            frame.set_pixel(x, y, bg);
        }
    }
    if let Some(fig) = figure {
        let [x0, y0, x1, y1] = fig.pixel_box(width, height);
        let n = (SUPERSAMPLE * SUPERSAMPLE) as f32;
        for py in y0..y1 {
            let bg = if py < backdrop.horizon_row {
                backdrop.sky
            } else {
                backdrop.ground
            };
            for px in x0..x1 {
                let mut acc = [0.0f32; 3];
                for j in 0..SUPERSAMPLE {
                    for i in 0..SUPERSAMPLE {
                        let x = px as f32 + (i as f32 + 0.5) / SUPERSAMPLE as f32;
                        let y = py as f32 + (j as f32 + 0.5) / SUPERSAMPLE as f32;
                        let c = fig.sample(x, y).unwrap_or(bg);
                        for k in 0..3 {
                            acc[k] += c[k];
                        }
                    }
                }
                frame.set_pixel(px, py, acc.map(|a| a / n));
            }
        }
    }
    for px in frame.data.chunks_exact_mut(3) {
        for k in 0..3 {
            px[k] *= multiplier[k];
        }
    }
    frame
}

fn figure(character: &Character, origin: [f32; 2], extent: f32) -> Figure {
    Figure {
        shape: character.shape,
        main: character.colour.rgb(),
        stripe: (character.pattern == Pattern::Striped).then(|| character.colour.stripe_rgb()),
        origin,
        extent,
    }
}

fn backdrop(env: &Environment, height: usize) -> Backdrop {
    Backdrop {
        sky: env.sky.rgb(),
        ground: env.ground.rgb(),
        horizon_row: env.horizon.row(height),
    }
}

/// Renders frame `frame_index` of shot `shot` (no bounds checks; callers check).
fn render_frame(spec: &SceneSpec, shot: usize, frame_index: usize) -> Frame {
    let camera = spec.camera(shot);
    let state = spec.state_at(shot * spec.frames_per_shot + frame_index);
    let fig = figure(
        &spec.character,
        spec.project(&camera, state.position),
        spec.extent_px(state.growth, camera.zoom),
    );
    paint(
        spec.width,
        spec.height,
        backdrop(&spec.environment, spec.height),
        Some(&fig),
        spec.environment.multiplier(),
    )
}

/// Renders one shot: `frames_per_shot` frames covering scene time
/// `shot * frames_per_shot .. (shot + 1) * frames_per_shot`.
pub fn render_shot(spec: &SceneSpec, shot: usize) -> Result<Clip, WorldError> {
    if shot >= spec.shots.len() {
        return Err(WorldError::ShotIndex {
            index: shot,
            shots: spec.shots.len(),
        });
    }
    spec.config().validate()?;
    Ok(Clip {
        frames: (0..spec.frames_per_shot)
            .map(|f| render_frame(spec, shot, f))
            .collect(),
        width: spec.width,
        height: spec.height,
    })
}

/// Renders every shot of a scene.
pub fn render_scene(spec: &SceneSpec) -> Result<Vec<Clip>, WorldError> {
    (0..spec.shots.len())
        .map(|k| render_shot(spec, k))
        .collect()
}

/// Identity reference (an image-shot): the character, large-ish and centred, on a plain grey
/// backdrop with neutral light, at the medium-shot scale.
pub fn render_identity_reference(character: &Character, width: usize, height: usize) -> Frame {
    let s = width.min(height) as f32;
    let extent =
        crate::spec::BASE_EXTENT * crate::spec::Framing::Medium.zoom() * character.size.scale() * s;
    let fig = figure(character, [width as f32 * 0.5, height as f32 * 0.5], extent);
    let plain = Backdrop {
        sky: PLAIN_BACKDROP,
        ground: PLAIN_BACKDROP,
        horizon_row: height,
    };
    paint(width, height, plain, Some(&fig), [1.0; 3])
}

/// Environment reference (an image-shot): the environment without the character.
pub fn render_environment_reference(env: &Environment, width: usize, height: usize) -> Frame {
    paint(width, height, backdrop(env, height), None, env.multiplier())
}

/// Lays frames out in rows (nearest-neighbour upscaled by `scale`, 2-pixel dark gaps).
pub fn contact_sheet(rows: &[Vec<Frame>], scale: usize) -> image::RgbImage {
    let scale = scale.max(1);
    let gap = 2;
    let cell_w = rows.iter().flatten().map(|f| f.width).max().unwrap_or(1) * scale;
    let cell_h = rows.iter().flatten().map(|f| f.height).max().unwrap_or(1) * scale;
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(1).max(1);
    let w = gap + cols * (cell_w + gap);
    let h = gap + rows.len().max(1) * (cell_h + gap);
    let mut img = image::RgbImage::from_pixel(w as u32, h as u32, image::Rgb([24, 24, 24]));
    for (r, row) in rows.iter().enumerate() {
        for (c, frame) in row.iter().enumerate() {
            let small = frame.to_rgb8();
            let ox = gap + c * (cell_w + gap);
            let oy = gap + r * (cell_h + gap);
            for y in 0..frame.height * scale {
                for x in 0..frame.width * scale {
                    let p = *small.get_pixel((x / scale) as u32, (y / scale) as u32);
                    img.put_pixel((ox + x) as u32, (oy + y) as u32, p);
                }
            }
        }
    }
    img
}

/// Contact sheet of a scene: first row the identity and environment references, then one row per
/// shot.
pub fn scene_contact_sheet(spec: &SceneSpec, scale: usize) -> Result<image::RgbImage, WorldError> {
    let mut rows = vec![vec![
        render_identity_reference(&spec.character, spec.width, spec.height),
        render_environment_reference(&spec.environment, spec.width, spec.height),
    ]];
    for clip in render_scene(spec)? {
        rows.push(clip.frames);
    }
    Ok(contact_sheet(&rows, scale))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{sample_scene, Split};

    #[test]
    fn same_seed_renders_identical_bytes() {
        for seed in [0u64, 7, 12345] {
            let a = sample_scene(seed, Split::Train);
            let b = sample_scene(seed, Split::Train);
            assert_eq!(
                serde_json::to_string(&a).unwrap(),
                serde_json::to_string(&b).unwrap()
            );
            let ra = render_scene(&a).unwrap();
            let rb = render_scene(&b).unwrap();
            for (ca, cb) in ra.iter().zip(&rb) {
                for (fa, fb) in ca.frames.iter().zip(&cb.frames) {
                    assert_eq!(fa.to_rgb8().as_raw(), fb.to_rgb8().as_raw());
                    let bits_a: Vec<u32> = fa.data.iter().map(|v| v.to_bits()).collect();
                    let bits_b: Vec<u32> = fb.data.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(bits_a, bits_b);
                }
            }
        }
    }

    #[test]
    fn frames_are_in_range_and_sized() {
        let spec = sample_scene(3, Split::Train);
        for clip in render_scene(&spec).unwrap() {
            assert_eq!(clip.frames.len(), spec.frames_per_shot);
            for f in &clip.frames {
                assert_eq!(f.data.len(), 64 * 64 * 3);
                assert!(f.data.iter().all(|v| (0.0..=1.0).contains(v)));
            }
        }
    }

    #[test]
    fn shot_index_out_of_range_is_an_error() {
        let spec = sample_scene(1, Split::Train);
        let err = render_shot(&spec, spec.shots.len()).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
    }

    #[test]
    fn shape_stats_are_sane() {
        for &s in Shape::ALL {
            let st = shape_stats(s);
            assert!(st.fill > 0.2 && st.fill < 0.9, "{s:?} {st:?}");
        }
        // The triangle's centroid sits below its box centre (apex up).
        assert!(shape_stats(Shape::Triangle).centroid[1] > 0.1);
    }

    #[test]
    fn png_round_trip_keeps_bytes() {
        let spec = sample_scene(5, Split::Train);
        let f = &render_shot(&spec, 0).unwrap().frames[0];
        let back = Frame::from_rgb8(&f.to_rgb8());
        assert_eq!(back.to_rgb8().as_raw(), f.to_rgb8().as_raw());
    }
}
