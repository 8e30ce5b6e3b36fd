//! `lct-train curve`: the training curve of a run (held-out colour and shape against frames
//! seen, from its `log.tsv`) as an SVG line chart, for the model card.

use std::path::PathBuf;

use crate::data::Result;

#[derive(clap::Args, Debug, Clone)]
pub struct Curve {
    /// `log.tsv` files of the stages, in training order (the images stage's counts frames,
    /// a scene stage's counts scenes; both are plotted as training frames seen).
    #[arg(long, num_args = 1.., required = true)]
    pub logs: Vec<PathBuf>,
    /// Frames a scene of a scene stage is counted as (its shots' frames, on average).
    #[arg(long, default_value_t = 8.0)]
    pub frames_per_scene: f64,
    #[arg(long)]
    pub out: PathBuf,
}

/// (frames seen, colour, shape) of every evaluation in the logs, frames accumulated over the
/// stages.
fn points(curve: &Curve) -> Result<Vec<(f64, f64, f64)>> {
    let mut points = Vec::new();
    let mut offset = 0.0;
    for log in &curve.logs {
        let text = std::fs::read_to_string(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
        let column = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .ok_or_else(|| format!("{}: no `{name}` column", log.display()))
        };
        let (count, scale) = match column("frames") {
            Ok(c) => (c, 1.0),
            Err(_) => (column("scenes")?, curve.frames_per_scene),
        };
        let (colour, shape) = (column("colour")?, column("shape")?);
        let mut last = 0.0;
        for line in lines {
            let fields: Vec<&str> = line.split('\t').collect();
            let number = |i: usize| -> Result<f64> {
                fields
                    .get(i)
                    .and_then(|f| f.parse().ok())
                    .ok_or_else(|| format!("{}: bad line {line:?}", log.display()).into())
            };
            last = number(count)? * scale;
            points.push((offset + last, number(colour)?, number(shape)?));
        }
        offset += last;
    }
    Ok(points)
}

pub fn run(curve: &Curve) -> Result<()> {
    let points = points(curve)?;
    let most = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let (width, height, left, bottom, top, right) = (640.0, 360.0, 56.0, 40.0, 16.0, 16.0);
    let x = |frames: f64| left + (width - left - right) * frames / most;
    let y = |rate: f64| top + (height - top - bottom) * (1.0 - rate);
    let line = |pick: fn(&(f64, f64, f64)) -> f64| {
        points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.0), y(pick(p))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for tick in 0..=5 {
        let rate = tick as f64 / 5.0;
        svg += &format!(
            "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{2}\" y=\"{3:.1}\" text-anchor=\"end\">{rate:.1}</text>\n",
            y(rate),
            width - right,
            left - 6.0,
            y(rate) + 4.0
        );
    }
    for tick in 0..=4 {
        let frames = most * tick as f64 / 4.0;
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{:.0}k</text>\n",
            x(frames),
            height - bottom + 16.0,
            frames / 1000.0
        );
    }
    svg += &format!(
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">training frames seen</text>\n",
        (left + width - right) / 2.0,
        height - 6.0
    );
    for (name, colour, pick) in [
        (
            "colour",
            "#c0392b",
            (|p: &(f64, f64, f64)| p.1) as fn(&_) -> f64,
        ),
        ("shape", "#2c6fbb", |p| p.2),
    ] {
        svg += &format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n",
            line(pick)
        );
        let last = points.last().map_or(0.0, pick);
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\" text-anchor=\"end\">{name} {last:.2}</text>\n",
            width - right - 4.0,
            y(last) - 6.0
        );
    }
    svg += "</svg>\n";
    std::fs::write(&curve.out, svg).map_err(|e| format!("{}: {e}", curve.out.display()))?;
    println!("{}: {} points", curve.out.display(), points.len());
    Ok(())
}
