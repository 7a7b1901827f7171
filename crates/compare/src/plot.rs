//! Charts with `plotters`, each written as PNG and SVG: line charts (optionally log-x, with error
//! bars) and heatmaps.
//!
//! Text in PNGs is rendered with DejaVu Sans embedded from the `dejavu` crate through plotters'
//! pure-Rust `ab_glyph` backend, so no system fonts (and no fontconfig) are needed anywhere.
//! SVGs carry text as `<text>` elements (rendered by the viewer).

use crate::error::{Error, Result};
use plotters::coord::ranged1d::SegmentValue;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Once;

/// Pixel size of line charts.
const LINE_SIZE: (u32, u32) = (820, 520);

/// One written chart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// title (also the caption in reports)
    pub title: String,
    /// the PNG
    pub png: PathBuf,
    /// the SVG
    pub svg: PathBuf,
}

/// One line of a line chart.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// legend label
    pub name: String,
    /// points `(x, y)`
    pub points: Vec<(f64, f64)>,
    /// optional symmetric error bar per point (same length as `points`)
    pub err: Vec<f64>,
    /// draw markers only (no connecting line)
    pub markers_only: bool,
    /// draw a thin dashed-looking line (used for fits)
    pub thin: bool,
    /// palette index (default: the series' position), so that related lines can share a color
    pub color: Option<usize>,
}

/// A line chart.
#[derive(Clone, Debug, Default)]
pub struct LineChart {
    /// caption
    pub title: String,
    /// x axis description
    pub x_desc: String,
    /// y axis description
    pub y_desc: String,
    /// logarithmic x axis
    pub log_x: bool,
    /// x tick labels are integers (batch sizes, expert counts)
    pub int_x: bool,
    /// the lines
    pub series: Vec<Series>,
}

/// A heatmap: `values[row][col]`, colored white (0) → dark blue (`max`).
#[derive(Clone, Debug, Default)]
pub struct Heatmap {
    /// caption
    pub title: String,
    /// x axis description
    pub x_desc: String,
    /// y axis description
    pub y_desc: String,
    /// label of each row (bottom to top)
    pub rows: Vec<String>,
    /// label of each column
    pub cols: Vec<String>,
    /// cell values
    pub values: Vec<Vec<f64>>,
    /// print each cell's value (as a percentage) inside it
    pub annotate: bool,
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font; failure would only mean missing text.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
    });
}

fn color(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

fn heat(v: f64, max: f64) -> RGBColor {
    let t = if max > 0.0 { (v / max).clamp(0.0, 1.0) } else { 0.0 };
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    RGBColor(lerp(255.0, 8.0), lerp(255.0, 48.0), lerp(255.0, 107.0))
}

fn draw_err<E: std::fmt::Debug>(path: &Path, e: E) -> Error {
    Error::Plot { path: path.to_path_buf(), message: format!("{e:?}") }
}

/// Write `chart` to `<dir>/<stem>.png` and `<dir>/<stem>.svg`.
pub fn line_chart(dir: &Path, stem: &str, chart: &LineChart) -> Result<Figure> {
    register_font();
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    draw_lines(BitMapBackend::new(&png, LINE_SIZE).into_drawing_area(), chart).map_err(|e| draw_err(&png, e))?;
    draw_lines(SVGBackend::new(&svg, LINE_SIZE).into_drawing_area(), chart).map_err(|e| draw_err(&svg, e))?;
    Ok(Figure { title: chart.title.clone(), png, svg })
}

/// Write `map` to `<dir>/<stem>.png` and `<dir>/<stem>.svg`.
pub fn heatmap(dir: &Path, stem: &str, map: &Heatmap) -> Result<Figure> {
    register_font();
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    let h = (160 + 28 * map.rows.len() as u32).clamp(300, 900);
    let size = (900, h);
    draw_heat(BitMapBackend::new(&png, size).into_drawing_area(), map).map_err(|e| draw_err(&png, e))?;
    draw_heat(SVGBackend::new(&svg, size).into_drawing_area(), map).map_err(|e| draw_err(&svg, e))?;
    Ok(Figure { title: map.title.clone(), png, svg })
}

type DrawResult<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Axis transform: log10, or log2 for integer log axes (ticks then fall on powers of two).
fn tx(log: bool, int: bool, x: f64) -> f64 {
    match (log, int) {
        (true, true) => x.max(f64::MIN_POSITIVE).log2(),
        (true, false) => x.max(f64::MIN_POSITIVE).log10(),
        _ => x,
    }
}

fn fmt_x(log: bool, int: bool, v: f64) -> String {
    if log && int && (v - v.round()).abs() > 1e-6 {
        return String::new(); // only powers of two on an integer log axis
    }
    let x = match (log, int) {
        (true, true) => 2f64.powf(v),
        (true, false) => 10f64.powf(v),
        _ => v,
    };
    if int {
        format!("{:.0}", x)
    } else if x != 0.0 && (x.abs() >= 1e4 || x.abs() < 1e-2) {
        format!("{x:.1e}")
    } else {
        format!("{x:.3}")
    }
}

fn draw_lines<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &LineChart) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let pts = c.series.iter().flat_map(|s| s.points.iter().zip(s.err.iter().copied().chain(std::iter::repeat(0.0))));
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for (&(x, y), e) in pts {
        if !(x.is_finite() && y.is_finite()) || (c.log_x && x <= 0.0) {
            continue;
        }
        let x = tx(c.log_x, c.int_x, x);
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y - e.abs());
        y1 = y1.max(y + e.abs());
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let (px, py) = (((x1 - x0) * 0.05).max(1e-3), ((y1 - y0) * 0.08).max(1e-3));
    // a band above the data for the legend (upper right), so that it never covers a point
    let legend_room = py + (y1 - y0).max(1e-3) * 0.075 * c.series.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(&c.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((x0 - px)..(x1 + px), (y0 - py)..(y1 + legend_room))?;
    let (log, int) = (c.log_x, c.int_x);
    let xf = move |v: &f64| fmt_x(log, int, *v);
    // y labels with as many decimals as the axis span needs (3 below a span of 0.1, none above 100)
    let span = (y1 + legend_room) - (y0 - py);
    let y_dec = if span >= 100.0 {
        0
    } else if span >= 1.0 {
        1
    } else if span >= 0.1 {
        2
    } else {
        3
    };
    let yf = move |v: &f64| format!("{v:.y_dec$}");
    chart
        .configure_mesh()
        .x_desc(c.x_desc.as_str())
        .y_desc(c.y_desc.as_str())
        .x_label_formatter(&xf)
        .y_label_formatter(&yf)
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (i, s) in c.series.iter().enumerate() {
        let col = color(s.color.unwrap_or(i));
        let p: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log || *x > 0.0))
            .map(|&(x, y)| (tx(log, int, x), y))
            .collect();
        let width = if s.thin { 1 } else { 2 };
        let ann = if s.markers_only {
            chart.draw_series(p.iter().map(|&q| Circle::new(q, 4, col.filled())))?
        } else {
            chart.draw_series(LineSeries::new(p.iter().copied(), col.stroke_width(width)))?
        };
        ann.label(s.name.as_str()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
        if !s.markers_only && !s.thin {
            chart.draw_series(p.iter().map(|&q| Circle::new(q, 3, col.filled())))?;
        }
        for (&(x, y), &e) in p.iter().zip(&s.err) {
            if e > 0.0 && e.is_finite() {
                chart.draw_series(std::iter::once(PathElement::new(vec![(x, y - e), (x, y + e)], col.stroke_width(2))))?;
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()
}

fn draw_heat<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, m: &Heatmap) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let nr = m.rows.len().max(1);
    let nc = m.cols.len().max(1);
    let max = m.values.iter().flatten().copied().filter(|v| v.is_finite()).fold(0.0, f64::max);
    let title = format!("{}  (white 0 → blue {:.3})", m.title, max);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(110)
        .build_cartesian_2d((0..nc - 1).into_segmented(), (0..nr - 1).into_segmented())?; // integer ranges are inclusive
    let rows = m.rows.clone();
    let cols = m.cols.clone();
    let yf = move |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => rows.get(*i).cloned().unwrap_or_default(),
        SegmentValue::Last => String::new(),
    };
    let xf = move |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => cols.get(*i).cloned().unwrap_or_default(),
        SegmentValue::Last => String::new(),
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(m.x_desc.as_str())
        .y_desc(m.y_desc.as_str())
        .x_labels(nc.min(16))
        .y_labels(nr)
        .x_label_formatter(&xf)
        .y_label_formatter(&yf)
        .draw()?;
    for (r, row) in m.values.iter().enumerate() {
        for (c, &v) in row.iter().enumerate() {
            let edge = |i: usize, n: usize| if i >= n { SegmentValue::Last } else { SegmentValue::Exact(i) };
            let cell = [(SegmentValue::Exact(c), SegmentValue::Exact(r)), (edge(c + 1, nc), edge(r + 1, nr))];
            chart.draw_series(std::iter::once(Rectangle::new(cell, heat(v, max).filled())))?;
        }
    }
    if m.annotate {
        for (r, row) in m.values.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                let dark = max > 0.0 && v / max > 0.55;
                let style = TextStyle::from(("sans-serif", 12).into_font())
                    .color(if dark { &WHITE } else { &BLACK })
                    .pos(Pos::new(HPos::Center, VPos::Center));
                chart.draw_series(std::iter::once(Text::new(
                    format!("{:.0}", 100.0 * v),
                    (SegmentValue::CenterOf(c), SegmentValue::CenterOf(r)),
                    style,
                )))?;
            }
        }
    }
    root.present()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plot_writes_png_and_svg_with_text() {
        let tmp = tempfile::tempdir().unwrap();
        let chart = LineChart {
            title: "loss".into(),
            x_desc: "FLOPs".into(),
            y_desc: "val loss".into(),
            log_x: true,
            series: vec![
                Series { name: "dense".into(), points: vec![(1e9, 3.0), (1e10, 2.0)], err: vec![0.1, 0.1], ..Default::default() },
                Series { name: "fit".into(), points: vec![(1e9, 3.1), (1e10, 2.1)], thin: true, ..Default::default() },
            ],
            ..Default::default()
        };
        let f = line_chart(tmp.path(), "loss", &chart).unwrap();
        let png = std::fs::read(&f.png).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let svg = std::fs::read_to_string(&f.svg).unwrap();
        assert!(svg.contains("<svg") && svg.contains("dense"), "{}", &svg[..200.min(svg.len())]);
        let map = Heatmap {
            title: "domains".into(),
            rows: vec!["a".into(), "b".into()],
            cols: vec!["0".into(), "1".into(), "2".into()],
            values: vec![vec![0.5, 0.25, 0.25], vec![0.0, 0.0, 1.0]],
            annotate: true,
            ..Default::default()
        };
        let f = heatmap(tmp.path(), "heat", &map).unwrap();
        assert!(std::fs::metadata(&f.png).unwrap().len() > 1000);
        assert!(std::fs::read_to_string(&f.svg).unwrap().contains("<rect"));
    }
}
