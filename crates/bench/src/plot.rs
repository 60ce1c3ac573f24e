//! PNG plots of bench results with plotters' bitmap backend (no system libraries). Text uses
//! plotters' pure-Rust `ab_glyph` renderer with DejaVu Sans read at run time from Debian's
//! `fonts-dejavu-core` (bench/run-all installs it when missing); without that file the plots are
//! drawn without any text.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::stats::Summary;

const FONTS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers DejaVu Sans as "sans-serif" once; false when no font file is available.
pub fn text_available() -> bool {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DONE.get_or_init(|| {
        let Some(bytes) = FONTS.iter().find_map(|p| std::fs::read(p).ok()) else {
            return false;
        };
        // plotters keeps fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
    })
}

const COLORS: [RGBColor; 2] = [RGBColor(200, 40, 30), RGBColor(30, 90, 200)];

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("plot: {e}")
}

/// x position of a percentile on a "nines" axis: 0 % → 0, 90 % → 1, 99 % → 2, 99.9 % → 3 …
fn nines(p: f64) -> f64 {
    (-(1.0 - p / 100.0).max(1e-5).log10()).min(5.0)
}

/// Latency distribution (percentile on a nines axis, latency on a log axis), one line per series.
pub fn latency(path: &Path, title: &str, series: &[(&str, &Summary)]) -> Result<()> {
    let text = text_available();
    let points: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(n, s)| {
            let pts = s
                .distribution
                .iter()
                .map(|[p, ms]| (nines(*p), ms.max(0.001)))
                .collect();
            (*n, pts)
        })
        .collect();
    let all = points.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y));
    let (lo, hi) = all.fold((f64::MAX, 0.0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if hi <= 0.0 {
        return Ok(());
    }
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut b = ChartBuilder::on(&root);
    b.margin(15).x_label_area_size(45).y_label_area_size(70);
    if text {
        b.caption(title, ("sans-serif", 20));
    }
    let mut chart = b
        .build_cartesian_2d(0f64..5f64, ((lo / 1.5).max(0.001)..hi * 1.5).log_scale())
        .map_err(err)?;
    if text {
        let pct = |x: &f64| {
            let p = 100.0 - 100.0 * 10f64.powf(-x);
            if p < 99.0 {
                format!("{p:.0}%")
            } else {
                format!("{p}%")
            }
        };
        chart
            .configure_mesh()
            .x_labels(6)
            .x_label_formatter(&pct)
            .y_label_formatter(&|v| format!("{v} ms"))
            .x_desc("percentile")
            .y_desc("latency")
            .draw()
            .map_err(err)?;
    }
    lines(&mut chart, points, text, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(err)
}

/// Throughput over time: events per bucket turned into a rate per second, one line per series.
pub fn timeline(
    path: &Path,
    title: &str,
    unit: &str,
    series: &[(&str, u64, &[u64])],
) -> Result<()> {
    let text = text_available();
    let points: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(n, bucket_ms, counts)| {
            let per_sec = 1000.0 / (*bucket_ms).max(1) as f64;
            let pts = counts
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    (
                        (i as f64 + 0.5) * *bucket_ms as f64 / 1000.0,
                        *c as f64 * per_sec,
                    )
                })
                .collect();
            (*n, pts)
        })
        .collect();
    let max_x = points
        .iter()
        .flat_map(|(_, p)| p.last().map(|(x, _)| *x))
        .fold(0.1, f64::max);
    let max_y = points
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(1.0, f64::max);
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut b = ChartBuilder::on(&root);
    b.margin(15).x_label_area_size(45).y_label_area_size(80);
    if text {
        b.caption(title, ("sans-serif", 20));
    }
    let mut chart = b
        .build_cartesian_2d(0f64..max_x * 1.02, 0f64..max_y * 1.1)
        .map_err(err)?;
    if text {
        chart
            .configure_mesh()
            .x_desc("seconds since the start of the measured phase")
            .y_desc(unit)
            .y_label_formatter(&|v| super::stats::thousands(*v))
            .draw()
            .map_err(err)?;
    }
    lines(&mut chart, points, text, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(err)
}

/// One line per series and, when text is available, their legend at `legend`.
fn lines<'a, CT>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    points: Vec<(&str, Vec<(f64, f64)>)>,
    text: bool,
    legend: SeriesLabelPosition,
) -> Result<()>
where
    CT: CoordTranslate<From = (f64, f64)>,
{
    for (i, (name, pts)) in points.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let s = chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?;
        if text {
            s.label(name).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(legend)
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_map_to_nines() {
        assert!((super::nines(0.0)).abs() < 1e-9);
        assert!((super::nines(99.0) - 2.0).abs() < 1e-9);
        assert!((super::nines(100.0) - 5.0).abs() < 1e-9);
    }
}
