//! A small inline-SVG line-chart plotter: PR and FROC curves need axes, ticks,
//! one or two polylines and a marked point, which is far less than a chart
//! library (and keeps the report free of JavaScript for its plots).

use std::fmt::Write as _;

use crate::esc;

/// How an axis maps values to the plot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// Linear from `min` to `max`.
    Linear {
        /// Value at the left / bottom.
        min: f64,
        /// Value at the right / top.
        max: f64,
    },
    /// Base-2 logarithmic from `min` to `max` (both > 0); values at or below
    /// zero are drawn at `min`.
    Log2 {
        /// Value at the left / bottom (> 0).
        min: f64,
        /// Value at the right / top.
        max: f64,
    },
}

impl Scale {
    /// Position of `v` in [0, 1] (clamped).
    fn frac(self, v: f64) -> f64 {
        let f = match self {
            Scale::Linear { min, max } => (v - min) / (max - min),
            Scale::Log2 { min, max } => {
                let v = if v > min { v } else { min };
                (v.log2() - min.log2()) / (max.log2() - min.log2())
            }
        };
        if f.is_finite() { f.clamp(0.0, 1.0) } else { 0.0 }
    }

    fn ticks(self) -> Vec<f64> {
        match self {
            Scale::Linear { min, max } => (0..=5).map(|i| min + (max - min) * i as f64 / 5.0).collect(),
            Scale::Log2 { min, max } => {
                let mut t = Vec::new();
                let mut v = min;
                while v <= max * (1.0 + 1e-9) {
                    t.push(v);
                    v *= 2.0;
                }
                t
            }
        }
    }
}

/// One line on a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// CSS colour.
    pub color: String,
    /// Points in data coordinates, drawn in the given order.
    pub points: Vec<(f64, f64)>,
}

/// A chart to draw.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// X-axis label.
    pub x_label: String,
    /// Y-axis label.
    pub y_label: String,
    /// X scale.
    pub x: Scale,
    /// Y scale.
    pub y: Scale,
    /// Lines.
    pub series: Vec<Series>,
    /// A marked point (e.g. the operating threshold) and its label.
    pub marker: Option<((f64, f64), String)>,
}

const W: f64 = 420.0;
const H: f64 = 320.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 46.0;

fn tick_label(v: f64) -> String {
    if v != 0.0 && v.abs() < 1.0 && (v * 1000.0).fract().abs() > 1e-9 {
        format!("{v:.3}")
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').to_owned()
    }
}

/// Renders `chart` as an `<svg>` element.
pub fn render(chart: &Chart) -> String {
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let px = |x: f64| LEFT + chart.x.frac(x) * pw;
    let py = |y: f64| TOP + (1.0 - chart.y.frac(y)) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}" xmlns="http://www.w3.org/2000/svg">"#,
        t = esc(&chart.title)
    );
    let _ = write!(s, r##"<rect x="0" y="0" width="{W}" height="{H}" fill="#fff"/>"##);
    let _ = write!(
        s,
        r#"<text x="{}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
        W / 2.0,
        esc(&chart.title)
    );
    // Grid and ticks.
    for t in chart.x.ticks() {
        let x = px(t);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#e4e4e4"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"##,
            TOP + ph,
            TOP + ph + 15.0,
            tick_label(t)
        );
    }
    for t in chart.y.ticks() {
        let y = py(t);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{}</text>"##,
            LEFT + pw,
            LEFT - 5.0,
            y + 4.0,
            tick_label(t)
        );
    }
    let _ = write!(s, r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##);
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">{}</text>"#,
        LEFT + pw / 2.0,
        H - 8.0,
        esc(&chart.x_label)
    );
    let _ = write!(
        s,
        r#"<text x="14" y="{:.1}" text-anchor="middle" font-size="12" transform="rotate(-90 14 {:.1})">{}</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        esc(&chart.y_label)
    );
    for (k, series) in chart.series.iter().enumerate() {
        let pts: Vec<String> = series
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        if pts.len() == 1 {
            let _ =
                write!(s, r#"<circle cx="{}" r="3" fill="{}"/>"#, pts[0].replace(',', "\" cy=\""), esc(&series.color));
        } else if !pts.is_empty() {
            let _ = write!(
                s,
                r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
                esc(&series.color),
                pts.join(" ")
            );
        }
        let ly = TOP + 14.0 + 16.0 * k as f64;
        let _ = write!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{c}" stroke-width="2"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
            LEFT + pw - 120.0,
            LEFT + pw - 100.0,
            LEFT + pw - 95.0,
            ly + 4.0,
            esc(&series.name),
            c = esc(&series.color)
        );
    }
    if let Some(((x, y), label)) = &chart.marker
        && x.is_finite()
        && y.is_finite()
    {
        let (cx, cy) = (px(*x), py(*y));
        let _ = write!(
            s,
            r##"<circle cx="{cx:.1}" cy="{cy:.1}" r="5" fill="none" stroke="#d73027" stroke-width="2"/><text x="{:.1}" y="{:.1}" font-size="11" fill="#d73027">{}</text>"##,
            cx + 7.0,
            (cy - 7.0).max(TOP + 10.0),
            esc(label)
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_axes_lines_and_marker() {
        let chart = Chart {
            title: "PR <curve>".into(),
            x_label: "recall".into(),
            y_label: "precision".into(),
            x: Scale::Linear { min: 0.0, max: 1.0 },
            y: Scale::Linear { min: 0.0, max: 1.0 },
            series: vec![Series {
                name: "all".into(),
                color: "#000".into(),
                points: vec![(0.0, 1.0), (0.5, 0.8), (1.0, 0.2)],
            }],
            marker: Some(((0.5, 0.8), "t=0.5".into())),
        };
        let svg = render(&chart);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("PR &lt;curve&gt;"), "title escaped");
        assert!(svg.contains("<polyline"));
        // (0.5, 0.8): x = 56 + 0.5 * 348, y = 30 + 0.2 * 244.
        assert!(svg.contains("230.0,78.8"), "{svg}");
        assert!(svg.contains("t=0.5"));
    }

    #[test]
    fn log_scale_clamps_and_spaces_evenly() {
        let s = Scale::Log2 { min: 0.125, max: 8.0 };
        assert_eq!(s.frac(0.0), 0.0);
        assert_eq!(s.frac(8.0), 1.0);
        assert!((s.frac(1.0) - 0.5).abs() < 1e-12);
        assert_eq!(s.ticks().len(), 7);
    }
}
