//! Plots of a run (`--out DIR` of `strata bench` and `strata load`): latency by percentile and
//! figures over time, one line per series, as SVG and PNG.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::prelude::*;

/// One chart of a run, drawn as `<name>_<file>.svg` and `.png`.
pub(crate) struct Chart<'a> {
    /// The file name's part after the run's name (`latency`, `hit_ratio`).
    pub(crate) file: &'static str,
    /// The caption.
    pub(crate) title: String,
    /// What it shows.
    pub(crate) kind: Kind<'a>,
}

/// What a chart shows, one line per labelled series.
pub(crate) enum Kind<'a> {
    /// Latency (µs) by percentile, up to 99.999 %.
    Latency(Vec<(&'a str, &'a Histogram<u64>)>),
    /// A figure over the run's seconds; `unit` draws it from 0 to 1 (a ratio).
    OverTime {
        y_desc: &'static str,
        unit: bool,
        series: Vec<(&'a str, Vec<(f64, f64)>)>,
    },
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

/// Draws every chart in SVG and PNG into `dir`, named `<name>_<chart>.<ext>`; returns the
/// files written.
pub(crate) fn draw(dir: &Path, name: &str, charts: &[Chart<'_>]) -> Result<Vec<PathBuf>, String> {
    register_font()?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let name = name.to_lowercase();
    let mut written = Vec::new();
    for chart in charts {
        let svg = dir.join(format!("{name}_{}.svg", chart.file));
        chart.render(&SVGBackend::new(&svg, SIZE).into_drawing_area())?;
        let png = dir.join(format!("{name}_{}.png", chart.file));
        {
            let area = BitMapBackend::new(&png, SIZE).into_drawing_area();
            chart.render(&area)?;
            area.present().map_err(|e| e.to_string())?;
        }
        written.extend([svg, png]);
    }
    Ok(written)
}

/// Says on stderr what [`draw`] wrote, or why it drew nothing.
pub(crate) fn report(drawn: Result<Vec<PathBuf>, String>) {
    match drawn {
        Ok(files) => {
            for f in files {
                eprintln!("wrote {}", f.display());
            }
        }
        Err(e) => eprintln!("plots: {e}"),
    }
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

impl Chart<'_> {
    fn render<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        match &self.kind {
            Kind::Latency(series) => latency(area, &self.title, series),
            Kind::OverTime {
                y_desc,
                unit,
                series,
            } => over_time(area, &self.title, y_desc, *unit, series),
        }
    }
}

fn latency<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    series: &[(&str, &Histogram<u64>)],
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    area.fill(&WHITE).map_err(err)?;
    let top = series.iter().map(|s| s.1.max()).max().unwrap_or(1).max(10);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 24))
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
    for (i, (label, histogram)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points = (0..=100).map(|k| {
            let nines = NINES * f64::from(k) / 100.0;
            let q = 1.0 - 10f64.powf(-nines);
            (nines, histogram.value_at_quantile(q).max(1))
        });
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(*label)
            .legend(legend_mark(color));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(err)
}

fn over_time<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    unit: bool,
    series: &[(&str, Vec<(f64, f64)>)],
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    area.fill(&WHITE).map_err(err)?;
    let points = || series.iter().flat_map(|s| s.1.iter());
    let end = points().map(|p| p.0).fold(1.0, f64::max);
    let top = if unit {
        1.0
    } else {
        points().map(|p| p.1).fold(1.0, f64::max) * 1.1
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end, 0f64..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(y_desc)
        .draw()
        .map_err(err)?;
    for (i, (label, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(*label)
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
