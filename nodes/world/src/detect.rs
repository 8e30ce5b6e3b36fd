//! Detectors that read the procedural ground truth back from pixels, and scene consistency
//! metrics built on them. Nothing here looks at a [`SceneSpec`] except [`text_alignment`] (which
//! compares against the prompt) and [`scene_metrics`] (which calls it): the detectors work on
//! generated images exactly as on rendered ones.
//!
//! Pipeline for one frame: the top and bottom rows give the sky and ground colours; the horizon is
//! the row that best splits sky-like from ground-like pixels; the two colours are matched jointly
//! against every (sky, ground, tone, day/night) combination, which also yields the lighting
//! multiplier. Pixels far from the backdrop form the character (largest connected blob); its
//! colour is the palette entry that best explains them once the lighting is divided out; a soft
//! coverage map (un-mixing each pixel between backdrop and character colour) gives area and
//! centroid; the shape is the template with the best soft IoU at that centroid and area; the
//! framing follows from the extent.

use serde::{Deserialize, Serialize};

use crate::render::{shape_stats, Clip, Figure, Frame};
use crate::spec::{
    Action, Colour, Environment, Framing, Ground, Horizon, Pattern, SceneSpec, Shape, Sky,
    TimeOfDay, Tone, PLAIN_BACKDROP,
};

/// Environment read from one frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentReading {
    /// Measured sky and ground colours (after lighting).
    pub sky_rgb: [f32; 3],
    pub ground_rgb: [f32; 3],
    /// First ground row (equals the frame height on a plain backdrop).
    pub horizon_row: usize,
    /// Lighting multiplier of the best matching environment (1 for a plain backdrop).
    pub multiplier: [f32; 3],
    /// Best matching environment; `None` when the frame shows the plain reference backdrop.
    pub environment: Option<Environment>,
    /// Pixel noise level (robust standard deviation per channel, measured on the sky band).
    pub noise: f32,
}

impl EnvironmentReading {
    /// Rows `horizon - 2 ..= horizon + 1`, where blur mixes sky and ground.
    pub fn near_horizon(&self, y: usize) -> bool {
        y + 2 >= self.horizon_row && y <= self.horizon_row + 1
    }

    /// Backdrop colour of row `y`.
    pub fn backdrop(&self, y: usize) -> [f32; 3] {
        if y < self.horizon_row {
            self.sky_rgb
        } else {
            self.ground_rgb
        }
    }

    /// Distance of pixel `p` on row `y` from the backdrop. Within two rows of the horizon a blurred
    /// image mixes sky and ground, so there any mix of the two counts as backdrop.
    pub fn backdrop_distance(&self, p: [f32; 3], y: usize) -> f32 {
        if self.near_horizon(y) {
            let (_, d) = unmix(p, self.sky_rgb, self.ground_rgb);
            d
        } else {
            dist(p, self.backdrop(y))
        }
    }
}

/// Character read from one frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CharacterReading {
    pub colour: Colour,
    pub shape: Shape,
    pub pattern: Pattern,
    /// Soft area in pixels.
    pub area: f32,
    /// Area-weighted centroid in pixels (pixel centres at +0.5).
    pub centroid: [f32; 2],
    /// Bounding-box side implied by area and shape, as a fraction of the frame's shorter side.
    pub extent: f32,
    pub framing: Framing,
    /// Soft IoU of the best shape template (1 = exact).
    pub shape_score: f32,
}

/// Everything read from one shot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShotReading {
    pub environments: Vec<EnvironmentReading>,
    pub characters: Vec<Option<CharacterReading>>,
    /// Majority environment over frames.
    pub environment: Option<Environment>,
    /// Area-weighted votes over frames.
    pub colour: Option<Colour>,
    pub shape: Option<Shape>,
    pub pattern: Option<Pattern>,
    /// From the median extent over frames.
    pub framing: Option<Framing>,
    pub action: Option<Action>,
    /// Mean of [`sharpness`] over frames.
    pub sharpness: f32,
}

impl ShotReading {
    /// (colour, shape, pattern) when all three were read.
    pub fn identity(&self) -> Option<(Colour, Shape, Pattern)> {
        Some((self.colour?, self.shape?, self.pattern?))
    }

    fn total_area(&self) -> f32 {
        self.characters.iter().flatten().map(|c| c.area).sum()
    }
}

fn dist(a: [f32; 3], b: [f32; 3]) -> f32 {
    dist2(a, b).sqrt()
}

fn dist2(a: [f32; 3], b: [f32; 3]) -> f32 {
    (0..3).map(|i| (a[i] - b[i]).powi(2)).sum()
}

fn mul(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [a[0] * b[0], a[1] * b[1], a[2] * b[2]]
}

fn median(mut v: Vec<f32>) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn median_rgb(frame: &Frame, rows: std::ops::Range<usize>) -> [f32; 3] {
    let mut ch: [Vec<f32>; 3] = Default::default();
    for y in rows {
        for x in 0..frame.width {
            let p = frame.pixel(x, y);
            for k in 0..3 {
                ch[k].push(p[k]);
            }
        }
    }
    ch.map(median)
}

/// Reads the environment of a frame.
pub fn detect_environment(frame: &Frame) -> EnvironmentReading {
    let (w, h) = (frame.width, frame.height);
    // Characters never reach the outermost rows (see the sampler's path bounds and framings), and
    // the median ignores a partial overlap anyway.
    let band = (h / 20).max(1);
    let sky_rgb = median_rgb(frame, 0..band);
    let ground_rgb = median_rgb(frame, h - band..h);
    let split = dist(sky_rgb, ground_rgb);
    let mut dev: Vec<f32> = Vec::with_capacity(band * w * 3);
    for y in 0..band {
        for x in 0..w {
            let p = frame.pixel(x, y);
            dev.extend((0..3).map(|k| (p[k] - sky_rgb[k]).abs()));
        }
    }
    // 1.4826 * MAD estimates a Gaussian standard deviation.
    let noise = 1.4826 * median(dev);

    let plain_cost = dist2(sky_rgb, PLAIN_BACKDROP) + dist2(ground_rgb, PLAIN_BACKDROP);
    let mut best: Option<(f32, Environment)> = None;
    for &sky in Sky::ALL {
        for &ground in Ground::ALL {
            for &tone in Tone::ALL {
                for &time in TimeOfDay::ALL {
                    let env = Environment {
                        sky,
                        ground,
                        horizon: Horizon::Middle,
                        tone,
                        time,
                    };
                    let m = env.multiplier();
                    let cost =
                        dist2(sky_rgb, mul(sky.rgb(), m)) + dist2(ground_rgb, mul(ground.rgb(), m));
                    if best.is_none_or(|(c, _)| cost < c) {
                        best = Some((cost, env));
                    }
                }
            }
        }
    }
    let (env_cost, mut env) = best.expect("the palette is not empty");
    if plain_cost < env_cost || split < 0.02 {
        return EnvironmentReading {
            sky_rgb,
            ground_rgb,
            horizon_row: h,
            multiplier: [1.0; 3],
            environment: None,
            noise,
        };
    }

    // Horizon: the row minimising ground-like pixels above plus sky-like pixels below; pixels far
    // from both (the character) do not vote.
    let mut sky_like = vec![0usize; h];
    let mut ground_like = vec![0usize; h];
    for y in 0..h {
        for x in 0..w {
            let p = frame.pixel(x, y);
            let (ds, dg) = (dist(p, sky_rgb), dist(p, ground_rgb));
            if ds.min(dg) < 0.4 * split {
                if ds < dg {
                    sky_like[y] += 1;
                } else {
                    ground_like[y] += 1;
                }
            }
        }
    }
    let mut cost: usize = sky_like.iter().sum(); // horizon at row 0: everything is ground
    let (mut best_row, mut best_cost) = (0, cost);
    for r in 1..=h {
        cost = cost + ground_like[r - 1] - sky_like[r - 1];
        if cost < best_cost {
            best_cost = cost;
            best_row = r;
        }
    }
    env.horizon = *Horizon::ALL
        .iter()
        .min_by_key(|hz| hz.row(h).abs_diff(best_row))
        .expect("non-empty");
    EnvironmentReading {
        sky_rgb,
        ground_rgb,
        horizon_row: best_row,
        multiplier: env.multiplier(),
        environment: Some(env),
        noise,
    }
}

/// Reads the character of a frame (`None` when nothing stands out from the backdrop).
pub fn detect_character(frame: &Frame) -> Option<CharacterReading> {
    detect_character_with(frame, &detect_environment(frame))
}

/// Un-mixes pixel `p` between backdrop `b` and colour `q`: coverage and residual distance.
fn unmix(p: [f32; 3], b: [f32; 3], q: [f32; 3]) -> (f32, f32) {
    let d = [q[0] - b[0], q[1] - b[1], q[2] - b[2]];
    let n2 = d.iter().map(|v| v * v).sum::<f32>().max(1e-8);
    let a = ((0..3).map(|k| (p[k] - b[k]) * d[k]).sum::<f32>() / n2).clamp(0.0, 1.0);
    let fit = [b[0] + a * d[0], b[1] + a * d[1], b[2] + a * d[2]];
    (a, dist(p, fit))
}

/// Un-mixes pixel `p` into backdrop `b`, main colour `q1` and stripe shade `q2` (a pixel on a
/// stripe boundary at the outline mixes all three): weights `(a1, a2)` with `a1, a2 >= 0` and
/// `a1 + a2 <= 1`, least squares, so the character's coverage is `a1 + a2`.
fn unmix3(p: [f32; 3], b: [f32; 3], q1: [f32; 3], q2: [f32; 3]) -> (f32, f32) {
    let d1 = [q1[0] - b[0], q1[1] - b[1], q1[2] - b[2]];
    let d2 = [q2[0] - b[0], q2[1] - b[1], q2[2] - b[2]];
    let r = [p[0] - b[0], p[1] - b[1], p[2] - b[2]];
    let dot = |a: [f32; 3], c: [f32; 3]| a[0] * c[0] + a[1] * c[1] + a[2] * c[2];
    let (g11, g12, g22) = (dot(d1, d1), dot(d1, d2), dot(d2, d2));
    let det = g11 * g22 - g12 * g12;
    if det > 1e-6 * g11.max(g22).max(1e-8).powi(2) {
        let (r1, r2) = (dot(d1, r), dot(d2, r));
        let a1 = (g22 * r1 - g12 * r2) / det;
        let a2 = (g11 * r2 - g12 * r1) / det;
        if a1 >= 0.0 && a2 >= 0.0 && a1 + a2 <= 1.0 {
            return (a1, a2);
        }
    }
    // Outside the triangle (or a degenerate one): best point on its three edges.
    let (a1, e1) = unmix(p, b, q1);
    let (a2, e2) = unmix(p, b, q2);
    let (t, e3) = unmix(p, q2, q1); // t = share of q1 on the q2-q1 edge, full coverage
    if e3 < e1 && e3 < e2 {
        (t, 1.0 - t)
    } else if e2 < e1 {
        (0.0, a2)
    } else {
        (a1, 0.0)
    }
}

/// Reads the character given an already-read environment.
pub fn detect_character_with(frame: &Frame, env: &EnvironmentReading) -> Option<CharacterReading> {
    let (w, h) = (frame.width, frame.height);
    let bg = |y: usize| env.backdrop(y);
    let m = env.multiplier;
    let mean_m = (m[0] + m[1] + m[2]) / 3.0;
    // Scaled with brightness (at night every distance shrinks by the same factor) and kept above
    // the noise: 4 sigma per channel is about 2.3 sigma of a 3-channel distance.
    let tau = (0.1 * mean_m).max(4.0 * env.noise);

    let mut fg = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            fg[y * w + x] = env.backdrop_distance(frame.pixel(x, y), y) > tau;
        }
    }
    // Bands whose anti-aliased mix lands near the backdrop can leave a one-pixel gap inside a
    // striped character: group pixels through the mask dilated by one pixel, then keep the
    // foreground pixels of the largest group.
    let grown = dilate(&fg, w, h);
    let mut blob: Vec<usize> = largest_component(&grown, w, h)
        .into_iter()
        .filter(|&i| fg[i])
        .collect();
    if blob.len() < 2 {
        return None;
    }
    // Near the horizon the test above also drops character pixels whose colour happens to lie
    // between sky and ground (a grey stripe between grey sky and green ground). Where the blob
    // reaches the horizon band, take back the pixels that differ from their own row's backdrop
    // within the blob's columns; a blurred horizon elsewhere stays out.
    let (ys, xs) = (blob.iter().map(|i| i / w), blob.iter().map(|i| i % w));
    let (y_lo, y_hi) = (ys.clone().min().unwrap_or(0), ys.max().unwrap_or(0));
    let (x_lo, x_hi) = (xs.clone().min().unwrap_or(0), xs.max().unwrap_or(0));
    if y_lo <= env.horizon_row + 2 && y_hi + 3 >= env.horizon_row {
        for y in (0..h).filter(|&y| env.near_horizon(y)) {
            for x in x_lo.saturating_sub(1)..(x_hi + 2).min(w) {
                let i = y * w + x;
                if !fg[i] && dist(frame.pixel(x, y), bg(y)) > tau {
                    fg[i] = true;
                    blob.push(i);
                }
            }
        }
    }

    // Colour: palette entry (or its stripe shade) closest to the blob pixels with the lighting
    // divided out; a capped cost keeps edge pixels from dominating.
    let unlit = |p: [f32; 3]| [p[0] / m[0], p[1] / m[1], p[2] / m[2]];
    let colour = *Colour::ALL
        .iter()
        .min_by(|a, b| {
            let cost = |c: Colour| -> f32 {
                blob.iter()
                    .map(|&i| {
                        let q = unlit(frame.pixel(i % w, i / w));
                        dist(q, c.rgb()).min(dist(q, c.stripe_rgb())).min(0.3)
                    })
                    .sum()
            };
            cost(**a).total_cmp(&cost(**b))
        })
        .expect("non-empty palette");
    let main = mul(colour.rgb(), m);
    let stripe = mul(colour.stripe_rgb(), m);

    // Soft coverage on the blob grown by one pixel (its anti-aliased rim).
    let mut in_blob = vec![false; w * h];
    for &i in &blob {
        in_blob[i] = true;
    }
    let region = dilate(&in_blob, w, h);
    let mut alpha = vec![0.0f32; w * h];
    let (mut area, mut sx, mut sy) = (0.0f32, 0.0f32, 0.0f32);
    let (mut core, mut striped) = (0.0f32, 0.0f32);
    let mut bbox = [w, h, 0, 0];
    for (i, _) in region.iter().enumerate().filter(|(_, r)| **r) {
        let (x, y) = (i % w, i / w);
        let p = frame.pixel(x, y);
        if !in_blob[i] && env.backdrop_distance(p, y) <= 0.5 * tau {
            // Rim pixel that is backdrop up to noise (or a blurred horizon): no coverage.
            continue;
        }
        let (a_main, a_stripe) = unmix3(p, bg(y), main, stripe);
        let a = a_main + a_stripe;
        if a > 0.6 {
            core += a;
            striped += a_stripe;
        }
        alpha[i] = a;
        area += a;
        sx += a * (x as f32 + 0.5);
        sy += a * (y as f32 + 0.5);
        bbox = [
            bbox[0].min(x),
            bbox[1].min(y),
            bbox[2].max(x + 1),
            bbox[3].max(y + 1),
        ];
    }
    if area < 1.0 {
        return None;
    }
    let centroid = [sx / area, sy / area];
    // Plain characters un-mix exactly onto the main colour; stripes put ~40% of the core on the
    // stripe shade (less on tiny characters whose bands blur).
    let pattern = if core > 0.0 && striped / core > 0.12 {
        Pattern::Striped
    } else {
        Pattern::Plain
    };

    let mut best = (Shape::Circle, -1.0f32, 0.0f32);
    for &shape in Shape::ALL {
        let st = shape_stats(shape);
        let extent = (area / st.fill).sqrt();
        let fig = Figure {
            shape,
            main,
            stripe: None,
            origin: [
                centroid[0] - st.centroid[0] * extent,
                centroid[1] - st.centroid[1] * extent,
            ],
            extent,
        };
        let iou = soft_iou(&alpha, w, h, bbox, &fig);
        if iou > best.1 {
            best = (shape, iou, extent);
        }
    }
    let (shape, shape_score, extent_px) = best;
    let extent = extent_px / w.min(h) as f32;
    Some(CharacterReading {
        colour,
        shape,
        pattern,
        area,
        centroid,
        extent,
        framing: Framing::from_extent(extent),
        shape_score,
    })
}

fn soft_iou(alpha: &[f32], w: usize, h: usize, bbox: [usize; 4], fig: &Figure) -> f32 {
    let t = fig.pixel_box(w, h);
    let (x0, y0) = (bbox[0].min(t[0]), bbox[1].min(t[1]));
    let (x1, y1) = (bbox[2].max(t[2]), bbox[3].max(t[3]));
    let (mut inter, mut union) = (0.0f32, 0.0f32);
    for y in y0..y1 {
        for x in x0..x1 {
            let a = alpha[y * w + x];
            let inside_t = x >= t[0] && x < t[2] && y >= t[1] && y < t[3];
            let c = if inside_t { fig.coverage(x, y) } else { 0.0 };
            inter += a.min(c);
            union += a.max(c);
        }
    }
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Mask grown by one pixel (8-neighbourhood).
fn dilate(mask: &[bool], w: usize, h: usize) -> Vec<bool> {
    let mut out = vec![false; mask.len()];
    for (i, _) in mask.iter().enumerate().filter(|(_, m)| **m) {
        let (x, y) = (i % w, i / w);
        for ny in y.saturating_sub(1)..(y + 2).min(h) {
            for nx in x.saturating_sub(1)..(x + 2).min(w) {
                out[ny * w + nx] = true;
            }
        }
    }
    out
}

/// Pixel indices of the largest 8-connected `true` component.
fn largest_component(mask: &[bool], w: usize, h: usize) -> Vec<usize> {
    let mut seen = vec![false; mask.len()];
    let mut best: Vec<usize> = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        let mut comp = Vec::new();
        seen[start] = true;
        stack.push(start);
        while let Some(i) = stack.pop() {
            comp.push(i);
            let (x, y) = ((i % w) as isize, (i / w) as isize);
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx < 0 || ny < 0 || nx as usize >= w || ny as usize >= h {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if mask[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        if comp.len() > best.len() {
            best = comp;
        }
    }
    best
}

/// Action shown by a sequence of per-frame character readings (consecutive frames of one shot).
///
/// Displacements are measured in character extents so the rule is framing independent: a bounce
/// shows both a clear rise and a clear fall; otherwise a mean step over 0.05 extent per frame is a
/// move along its dominant axis; otherwise an extent gain of over 8% across the shot (the world
/// grows it by 20%) is growth.
pub fn detect_action(readings: &[Option<CharacterReading>]) -> Option<Action> {
    let seen: Vec<&CharacterReading> = readings.iter().flatten().collect();
    if seen.len() < 2 || seen.len() != readings.len() {
        return None;
    }
    let n = (seen.len() - 1) as f32;
    let first = seen[0];
    let last = seen[seen.len() - 1];
    let extent_px = seen
        .iter()
        .map(|r| (r.area / shape_stats(r.shape).fill).sqrt())
        .sum::<f32>()
        / seen.len() as f32;
    let step = |a: &CharacterReading, b: &CharacterReading| {
        [
            (b.centroid[0] - a.centroid[0]) / extent_px,
            (b.centroid[1] - a.centroid[1]) / extent_px,
        ]
    };
    let steps: Vec<[f32; 2]> = seen.windows(2).map(|p| step(p[0], p[1])).collect();
    let net = step(first, last);
    let rises = steps.iter().any(|s| s[1] < -0.15);
    let falls = steps.iter().any(|s| s[1] > 0.15);
    if rises && falls && net[0].abs() < 0.1 * n {
        return Some(Action::Bounce);
    }
    let mean = [net[0] / n, net[1] / n];
    if mean[0].abs().max(mean[1].abs()) > 0.05 {
        return Some(if mean[0].abs() >= mean[1].abs() {
            if mean[0] > 0.0 {
                Action::MoveRight
            } else {
                Action::MoveLeft
            }
        } else if mean[1] > 0.0 {
            Action::MoveDown
        } else {
            Action::MoveUp
        });
    }
    if last.area > first.area * 1.08f32.powi(2) {
        return Some(Action::Grow);
    }
    None
}

/// Sharpness: mean gradient magnitude of the luminance (forward differences), per pixel.
pub fn sharpness(frame: &Frame) -> f32 {
    let (w, h) = (frame.width, frame.height);
    let lum = |x: usize, y: usize| {
        let p = frame.pixel(x, y);
        0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
    };
    let mut sum = 0.0f32;
    for y in 0..h.saturating_sub(1) {
        for x in 0..w.saturating_sub(1) {
            let c = lum(x, y);
            let gx = lum(x + 1, y) - c;
            let gy = lum(x, y + 1) - c;
            sum += (gx * gx + gy * gy).sqrt();
        }
    }
    sum / ((w.saturating_sub(1)) * (h.saturating_sub(1))).max(1) as f32
}

/// Variance of the 4-neighbour Laplacian of the luminance (another common sharpness measure).
pub fn laplacian_variance(frame: &Frame) -> f32 {
    let (w, h) = (frame.width, frame.height);
    let lum = |x: usize, y: usize| {
        let p = frame.pixel(x, y);
        0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
    };
    let mut vals = Vec::new();
    for y in 1..h.saturating_sub(1) {
        for x in 1..w.saturating_sub(1) {
            vals.push(
                lum(x - 1, y) + lum(x + 1, y) + lum(x, y - 1) + lum(x, y + 1) - 4.0 * lum(x, y),
            );
        }
    }
    if vals.is_empty() {
        return 0.0;
    }
    let mean = vals.iter().sum::<f32>() / vals.len() as f32;
    vals.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / vals.len() as f32
}

/// Mean colour divided by its mean channel value: > 1 in red for warm light, in blue for cool.
pub fn colour_balance(frame: &Frame) -> [f32; 3] {
    let mut s = [0.0f32; 3];
    for p in frame.data.chunks_exact(3) {
        for k in 0..3 {
            s[k] += p[k];
        }
    }
    let mean = (s[0] + s[1] + s[2]) / 3.0;
    if mean <= 0.0 {
        return [1.0; 3];
    }
    s.map(|v| v / mean)
}

/// Most common value (ties: first reached); weights let large characters outvote tiny ones.
fn vote<T: Copy + PartialEq>(items: impl IntoIterator<Item = (T, f32)>) -> Option<T> {
    let mut tally: Vec<(T, f32)> = Vec::new();
    for (v, wgt) in items {
        match tally.iter_mut().find(|(t, _)| *t == v) {
            Some(e) => e.1 += wgt,
            None => tally.push((v, wgt)),
        }
    }
    tally
        .into_iter()
        .fold(None, |best: Option<(T, f32)>, (v, wgt)| match best {
            Some((_, bw)) if bw >= wgt => best,
            _ => Some((v, wgt)),
        })
        .map(|(v, _)| v)
}

/// Reads one shot.
pub fn read_shot(clip: &Clip) -> ShotReading {
    let environments: Vec<EnvironmentReading> =
        clip.frames.iter().map(detect_environment).collect();
    let characters: Vec<Option<CharacterReading>> = clip
        .frames
        .iter()
        .zip(&environments)
        .map(|(f, e)| detect_character_with(f, e))
        .collect();
    let chars = || characters.iter().flatten();
    let mut extents: Vec<f32> = chars().map(|c| c.extent).collect();
    let framing = (!extents.is_empty()).then(|| {
        extents.sort_by(|a, b| a.total_cmp(b));
        Framing::from_extent(extents[extents.len() / 2])
    });
    let sharp = if clip.frames.is_empty() {
        0.0
    } else {
        clip.frames.iter().map(sharpness).sum::<f32>() / clip.frames.len() as f32
    };
    ShotReading {
        environment: vote(
            environments
                .iter()
                .filter_map(|e| e.environment)
                .map(|e| (e, 1.0)),
        ),
        colour: vote(chars().map(|c| (c.colour, c.area))),
        shape: vote(chars().map(|c| (c.shape, c.area))),
        pattern: vote(chars().map(|c| (c.pattern, c.area))),
        framing,
        action: detect_action(&characters),
        sharpness: sharp,
        environments,
        characters,
    }
}

/// Scene-level reading: votes over shots (character attributes weighted by visible area, so
/// close-ups outvote tiny wide-shot characters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneReading {
    pub shots: Vec<ShotReading>,
    pub colour: Option<Colour>,
    pub shape: Option<Shape>,
    pub pattern: Option<Pattern>,
    pub environment: Option<Environment>,
}

pub fn read_scene(shots: &[Clip]) -> SceneReading {
    let shots: Vec<ShotReading> = shots.iter().map(read_shot).collect();
    SceneReading {
        colour: vote(
            shots
                .iter()
                .filter_map(|s| s.colour.map(|v| (v, s.total_area()))),
        ),
        shape: vote(
            shots
                .iter()
                .filter_map(|s| s.shape.map(|v| (v, s.total_area()))),
        ),
        pattern: vote(
            shots
                .iter()
                .filter_map(|s| s.pattern.map(|v| (v, s.total_area()))),
        ),
        environment: vote(shots.iter().filter_map(|s| s.environment.map(|e| (e, 1.0)))),
        shots,
    }
}

/// Consistency and alignment of a generated scene, each in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SceneMetrics {
    /// Fraction of shot pairs whose (colour, shape, pattern) were read and agree.
    pub identity_consistency: f32,
    /// Fraction of shot pairs whose (sky, ground, horizon) agree.
    pub environment_consistency: f32,
    /// Fraction of shot pairs whose (tone, day/night) agree.
    pub tone_consistency: f32,
    /// Mean over shots of the fraction of {framing, action} that match the prompt.
    pub text_alignment: f32,
    /// Fraction of consecutive shot pairs whose motion continues (see [`motion_continuity`]).
    pub motion_continuity: f32,
    /// Mean [`sharpness`] over all frames.
    pub sharpness: f32,
}

/// Fraction of unordered pairs that agree (`None` never agrees); 1 for fewer than two items.
fn pair_agreement<T: PartialEq>(items: &[Option<T>]) -> f32 {
    let (mut agree, mut total) = (0usize, 0usize);
    for i in 0..items.len() {
        for j in i + 1..items.len() {
            total += 1;
            if items[i].is_some() && items[i] == items[j] {
                agree += 1;
            }
        }
    }
    if total == 0 {
        1.0
    } else {
        agree as f32 / total as f32
    }
}

/// Identity consistency over shot readings.
pub fn identity_consistency(shots: &[ShotReading]) -> f32 {
    pair_agreement(&shots.iter().map(|s| s.identity()).collect::<Vec<_>>())
}

/// Identity consistency split by attribute: the fraction of shot pairs whose colour, shape
/// and pattern (each alone) were read and agree, so a low identity score says which part of
/// the character's looks did not carry over.
pub fn identity_attribute_consistency(shots: &[ShotReading]) -> [f32; 3] {
    [
        pair_agreement(&shots.iter().map(|s| s.colour).collect::<Vec<_>>()),
        pair_agreement(&shots.iter().map(|s| s.shape).collect::<Vec<_>>()),
        pair_agreement(&shots.iter().map(|s| s.pattern).collect::<Vec<_>>()),
    ]
}

/// Environment (sky, ground, horizon) consistency over shot readings.
pub fn environment_consistency(shots: &[ShotReading]) -> f32 {
    pair_agreement(&shots.iter().map(environment_key).collect::<Vec<_>>())
}

/// What environment consistency compares: (sky, ground, horizon).
fn environment_key(shot: &ShotReading) -> Option<(Sky, Ground, Horizon)> {
    shot.environment.map(|e| (e.sky, e.ground, e.horizon))
}

/// What tone consistency compares: (tone, day/night).
fn tone_key(shot: &ShotReading) -> Option<(Tone, TimeOfDay)> {
    shot.environment.map(|e| (e.tone, e.time))
}

/// Agreement expected by chance: identity, environment and tone agreement over pairs of shots
/// from *different* scenes (one shot of scene i against one of scene j, i < j; unread never
/// agrees). A model that draws one default look for every prompt agrees with itself across
/// shots without using its context; this is the level such agreement reaches, to read the
/// within-scene consistency against.
pub fn cross_scene_agreement(scenes: &[Vec<ShotReading>]) -> [f32; 3] {
    fn across<K: PartialEq>(
        scenes: &[Vec<ShotReading>],
        key: impl Fn(&ShotReading) -> Option<K>,
    ) -> f32 {
        let keys: Vec<Vec<Option<K>>> = scenes
            .iter()
            .map(|s| s.iter().map(&key).collect())
            .collect();
        let (mut agree, mut total) = (0usize, 0usize);
        for i in 0..keys.len() {
            for j in i + 1..keys.len() {
                for a in &keys[i] {
                    for b in &keys[j] {
                        total += 1;
                        if a.is_some() && a == b {
                            agree += 1;
                        }
                    }
                }
            }
        }
        if total == 0 {
            0.0
        } else {
            agree as f32 / total as f32
        }
    }
    [
        across(scenes, ShotReading::identity),
        across(scenes, environment_key),
        across(scenes, tone_key),
    ]
}

/// Lighting (tone, day/night) consistency over shot readings.
pub fn tone_consistency(shots: &[ShotReading]) -> f32 {
    pair_agreement(&shots.iter().map(tone_key).collect::<Vec<_>>())
}

/// Mean over shots of the fraction of {framing, action} matching the prompt's (from the spec the
/// prompts were written from).
pub fn text_alignment(spec: &SceneSpec, shots: &[ShotReading]) -> f32 {
    if shots.is_empty() {
        return 0.0;
    }
    let per_shot = shots.iter().enumerate().map(|(k, s)| {
        let framing_ok = spec.shots.get(k).is_some_and(|f| s.framing == Some(*f));
        let action_ok = s.action == Some(spec.action);
        (framing_ok as u8 + action_ok as u8) as f32 / 2.0
    });
    per_shot.sum::<f32>() / shots.len() as f32
}

/// Whether the motion of shot `b` continues that of shot `a` (the next shot in time): both show
/// the same action and, when both are wide shots (same fixed camera), a moving or bouncing
/// character in `b` starts where `a`'s motion predicts, within half a character extent.
pub fn continues(a: &ShotReading, b: &ShotReading) -> bool {
    let Some(action) = a.action else { return false };
    if b.action != Some(action) {
        return false;
    }
    if a.framing != Some(Framing::Wide) || b.framing != Some(Framing::Wide) {
        return true;
    }
    let ca: Vec<&CharacterReading> = a.characters.iter().flatten().collect();
    let cb: Vec<&CharacterReading> = b.characters.iter().flatten().collect();
    let (Some(last), Some(first)) = (ca.last(), cb.first()) else {
        return false;
    };
    let n = (ca.len() - 1).max(1) as f32;
    let step = [
        (last.centroid[0] - ca[0].centroid[0]) / n,
        (last.centroid[1] - ca[0].centroid[1]) / n,
    ];
    let predicted = match action {
        // Bounce positions are periodic: only the horizontal position must carry over.
        Action::Bounce => [last.centroid[0], first.centroid[1]],
        // The camera pulls back between shots of a growing character: no positional check.
        Action::Grow => return true,
        _ => [last.centroid[0] + step[0], last.centroid[1] + step[1]],
    };
    let extent_px = (last.area / shape_stats(last.shape).fill).sqrt();
    let err = ((first.centroid[0] - predicted[0]).powi(2)
        + (first.centroid[1] - predicted[1]).powi(2))
    .sqrt();
    err < 0.5 * extent_px
}

/// Fraction of consecutive shot pairs whose motion continues; 1 for a single shot.
pub fn motion_continuity(shots: &[ShotReading]) -> f32 {
    if shots.len() < 2 {
        return 1.0;
    }
    let ok = shots.windows(2).filter(|p| continues(&p[0], &p[1])).count();
    ok as f32 / (shots.len() - 1) as f32
}

/// All metrics of a generated scene against the spec its prompts were written from.
pub fn scene_metrics(spec: &SceneSpec, shots: &[Clip]) -> SceneMetrics {
    let readings: Vec<ShotReading> = shots.iter().map(read_shot).collect();
    metrics_from_readings(spec, &readings)
}

/// [`scene_metrics`] on shots that were already read.
pub fn metrics_from_readings(spec: &SceneSpec, readings: &[ShotReading]) -> SceneMetrics {
    SceneMetrics {
        identity_consistency: identity_consistency(readings),
        environment_consistency: environment_consistency(readings),
        tone_consistency: tone_consistency(readings),
        text_alignment: text_alignment(spec, readings),
        motion_continuity: motion_continuity(readings),
        sharpness: if readings.is_empty() {
            0.0
        } else {
            readings.iter().map(|r| r.sharpness).sum::<f32>() / readings.len() as f32
        },
    }
}
