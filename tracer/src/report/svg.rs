//! Inline SVG charts: drawn here so that the report needs nothing but itself.

use std::fmt::Write as _;

use super::{Model, Usage, Verdict, html::esc, short_time};

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 34.0;

/// Each category's colour, the same in every chart and legend.
pub fn color(category: &str) -> &'static str {
    match category {
        "crypto_mining" => "#d62728",
        "blockchain_node" => "#ff7f0e",
        "ai_training" => "#1f77b4",
        "ai_inference" => "#9467bd",
        "distributed_storage" => "#8c564b",
        "ordinary" => "#7f9f7f",
        _ => "#17becf",
    }
}

/// The smallest of 1, 2 or 5 times a power of ten that is at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|c| *c >= v * 0.999_999).unwrap_or(10.0 * p)
}

/// A stacked bar chart of `rate` (per second of each interval) by category
/// over the model's span; `label` formats the y axis.
pub fn stacked(m: &Model, title: &str, rate: fn(&Usage) -> f64, label: fn(f64) -> String) -> String {
    let cats = m.series_categories();
    let start = m.series.iter().map(|p| p.end - p.interval_s).fold(f64::INFINITY, f64::min);
    let end = m.series.iter().map(|p| p.end).fold(f64::NEG_INFINITY, f64::max);
    let span = (end - start).max(1e-3);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let per_s = |p: &super::Point, u: &Usage| if p.interval_s > 0.0 { rate(u) / p.interval_s } else { 0.0 };
    let peak =
        m.series.iter().map(|p| p.by_category.values().map(|u| per_s(p, u)).sum::<f64>()).fold(0.0, f64::max);
    let ymax = nice_ceiling(peak);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" aria-label="{}">"#,
        esc(title)
    );
    let _ = write!(s, "<title>{}</title>", esc(title));
    // Grid lines and y labels at 0, half and the top.
    for frac in [0.0, 0.5, 1.0] {
        let y = TOP + plot_h * (1.0 - frac);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11" fill="#555">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            esc(&label(ymax * frac))
        );
    }
    for p in &m.series {
        let x0 = LEFT + plot_w * ((p.end - p.interval_s - start) / span);
        let w = (plot_w * (p.interval_s / span)).max(1.5);
        let mut base = 0.0;
        for c in &cats {
            let Some(u) = p.by_category.get(c) else { continue };
            let v = per_s(p, u);
            if v <= 0.0 {
                continue;
            }
            let h = plot_h * v / ymax;
            let y = TOP + plot_h - base - h;
            base += h;
            let _ = write!(
                s,
                r#"<rect x="{x0:.1}" y="{y:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{}: {} at {}</title></rect>"#,
                (w - 0.5).max(1.0),
                color(c),
                esc(c),
                esc(&label(v)),
                offset(p.end - m.first.as_ref().map_or(start, |f| f.secs))
            );
        }
    }
    let axis_y = TOP + plot_h;
    let _ = write!(
        s,
        r##"<line x1="{LEFT}" y1="{axis_y:.1}" x2="{:.1}" y2="{axis_y:.1}" stroke="#888"/>"##,
        WIDTH - RIGHT
    );
    let origin = m.first.as_ref().map_or(start, |f| f.secs);
    for (x, t, anchor) in [(LEFT, start, "start"), (WIDTH - RIGHT, end, "end")] {
        let _ = write!(
            s,
            r##"<text x="{x:.1}" y="{:.1}" text-anchor="{anchor}" font-size="11" fill="#555">{}</text>"##,
            axis_y + 16.0,
            offset(t - origin)
        );
    }
    s.push_str("</svg>");
    s
}

/// Seconds from the report's start, signed (a summary's interval may
/// begin before the first record).
fn offset(s: f64) -> String {
    let s = if s.abs() < 0.05 { 0.0 } else { s };
    format!("{s:+.1} s")
}

/// A verdict's evidence on the report's time axis: one dot per item, its
/// size by weight, its colour by category.
pub fn timeline(m: &Model, v: &Verdict) -> String {
    const H: f64 = 56.0;
    let start = m.first.as_ref().map_or(0.0, |f| f.secs);
    let span = m.span_s().max(1e-3);
    let plot_w = WIDTH - LEFT - RIGHT;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg class="timeline" viewBox="0 0 {WIDTH} {H}" width="100%" role="img" aria-label="evidence timeline"><line x1="{LEFT}" y1="24" x2="{:.1}" y2="24" stroke="#888"/>"##,
        WIDTH - RIGHT
    );
    for e in &v.evidence {
        let Some(t) = &e.time else { continue };
        let x = LEFT + plot_w * ((t.secs - start) / span).clamp(0.0, 1.0);
        let r = 3.0 + 2.5 * e.weight.max(0.0).sqrt().min(4.0);
        let _ = write!(
            s,
            r##"<circle cx="{x:.1}" cy="24" r="{r:.1}" fill="{}" fill-opacity="0.75" stroke="#333" stroke-width="0.5"><title>{} +{:.2} s: {} ({}), weight {}</title></circle>"##,
            color(&e.category),
            esc(&short_time(&t.text)),
            t.secs - start,
            esc(&e.indicator),
            esc(&e.seen),
            e.weight
        );
    }
    for (x, label, anchor) in
        [(LEFT, "+0 s".to_string(), "start"), (WIDTH - RIGHT, format!("+{:.1} s", span), "end")]
    {
        let _ = write!(
            s,
            r##"<text x="{x:.1}" y="50" text-anchor="{anchor}" font-size="11" fill="#555">{}</text>"##,
            esc(&label)
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(0.83), 1.0);
        assert_eq!(nice_ceiling(1.2), 2.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(5.0), 5.0);
        assert_eq!(nice_ceiling(6100.0), 10_000.0);
    }
}
