//! Plots of a run (`--out DIR`): read-latency percentile curve and hit ratio over time, one
//! line per cache, as SVG and PNG.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::runner::Sample;

/// One cache's data.
pub(crate) struct Series<'a> {
    pub(crate) label: &'a str,
    pub(crate) latency: &'a Histogram<u64>,
    pub(crate) timeline: &'a [Sample],
}

const SIZE: (u32, u32) = (960, 540);
const COLORS: [RGBColor; 4] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
];
/// The percentile axis runs from 0 to this many nines (99.999 %).
const NINES: f64 = 5.0;

/// Draws both charts in SVG and PNG into `dir`; returns the files written.
pub(crate) fn draw(
    dir: &Path,
    workload: &str,
    series: &[Series<'_>],
) -> Result<Vec<PathBuf>, String> {
    register_font()?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let name = workload.to_lowercase();
    let file = |chart: &str, ext: &str| dir.join(format!("{name}_{chart}.{ext}"));
    let written = vec![
        file("latency", "svg"),
        file("hit_ratio", "svg"),
        file("latency", "png"),
        file("hit_ratio", "png"),
    ];
    latency(
        &SVGBackend::new(&written[0], SIZE).into_drawing_area(),
        workload,
        series,
    )?;
    hit_ratio(
        &SVGBackend::new(&written[1], SIZE).into_drawing_area(),
        workload,
        series,
    )?;
    {
        let png = BitMapBackend::new(&written[2], SIZE).into_drawing_area();
        latency(&png, workload, series)?;
        png.present().map_err(|e| e.to_string())?;
    }
    {
        let png = BitMapBackend::new(&written[3], SIZE).into_drawing_area();
        hit_ratio(&png, workload, series)?;
        png.present().map_err(|e| e.to_string())?;
    }
    Ok(written)
}

/// Text needs a TrueType font; plotters' `ab_glyph` backend takes it from us.
fn register_font() -> Result<(), String> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let candidates = [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        ];
        let bytes = candidates
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .ok_or("no TrueType font found (apt-get install fonts-dejavu-core); plots skipped")?;
        plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            Box::leak(bytes.into_boxed_slice()),
        )
        .map_err(|_| "the font file could not be read; plots skipped".to_owned())
    })
    .clone()
}

fn latency<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    workload: &str,
    series: &[Series<'_>],
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    area.fill(&WHITE).map_err(err)?;
    let top = series
        .iter()
        .map(|s| s.latency.max())
        .max()
        .unwrap_or(1)
        .max(10);
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{workload}: read latency by percentile"),
            ("sans-serif", 24),
        )
        .margin(16)
        .margin_right(48)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..NINES, (1u64..top * 2).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .x_labels(6)
        .x_label_formatter(&|nines| percentile_label(*nines))
        .draw()
        .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points = (0..=100).map(|k| {
            let nines = NINES * f64::from(k) / 100.0;
            let q = 1.0 - 10f64.powf(-nines);
            (nines, s.latency.value_at_quantile(q).max(1))
        });
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(s.label)
            .legend(legend_mark(color));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(err)
}

fn hit_ratio<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    workload: &str,
    series: &[Series<'_>],
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    area.fill(&WHITE).map_err(err)?;
    let end = series
        .iter()
        .filter_map(|s| s.timeline.last().map(|p| p.t_s))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{workload}: hit ratio over time"),
            ("sans-serif", 24),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..end, 0f64..1f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("hit ratio")
        .draw()
        .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                s.timeline.iter().map(|p| (p.t_s, p.hit_ratio)),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(s.label)
            .legend(legend_mark(color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(err)
}

/// The short line beside a series' name in the legend.
fn legend_mark(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
}

fn percentile_label(nines: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-nines));
    let s = format!("{p:.3}");
    format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_labels() {
        let labels: Vec<String> = [0.0, 1.0, 2.0, 3.0]
            .into_iter()
            .map(percentile_label)
            .collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%"]);
    }
}
