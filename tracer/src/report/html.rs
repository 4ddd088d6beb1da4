//! The HTML report: one file, inline CSS and SVG, nothing fetched. Every
//! text from a record goes through [`esc`]: argv, comm and DNS names are
//! whatever the traced host chose.

use std::fmt::Write as _;

use super::{
    Model, SeriesSource, Source, TOP, Usage, bytes, clip, peer_name, secs, short_time, summary_lines,
    svg::{self, color},
};

/// Text made safe for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab and newline have no place in
            // a page (and some are invalid in HTML).
            c if c.is_control() && c != '\t' && c != '\n' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0; background: #fff; }
header { background: #263238; color: #fff; padding: 18px 28px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #cfd8dc; }
main { padding: 8px 28px 40px; max-width: 1200px; }
h2 { border-bottom: 2px solid #eceff1; padding-bottom: 4px; margin-top: 28px; }
h3 { margin: 18px 0 6px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #cfd8dc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eceff1; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code { font: 12px ui-monospace, monospace; word-break: break-all; }
.summary li { margin: 2px 0; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-size: 12px; font-weight: 600; }
.alert { background: #b71c1c; }
.ok { background: #607d8b; }
.verdict { border: 1px solid #cfd8dc; border-left: 6px solid #999; padding: 6px 14px; margin: 12px 0; }
.legend span { margin-right: 14px; white-space: nowrap; }
.legend i { display: inline-block; width: 11px; height: 11px; margin-right: 4px; vertical-align: -1px; }
.muted { color: #666; }
"#;

/// Marks the page rendered, or names the first script error: headless
/// checks read these attributes.
const SCRIPT: &str = r#"
window.onerror = function (msg) { document.documentElement.setAttribute("data-report-error", String(msg)); };
document.addEventListener("DOMContentLoaded", function () {
  var charts = document.querySelectorAll("svg.chart").length;
  var rows = document.querySelectorAll("table.evidence tbody tr").length;
  document.documentElement.setAttribute("data-report-ready", "charts=" + charts + " evidence=" + rows);
});
"#;

fn legend(cats: &[String]) -> String {
    let mut s = String::from(r#"<p class="legend">"#);
    for c in cats {
        let _ = write!(s, r#"<span><i style="background:{}"></i>{}</span>"#, color(c), esc(c));
    }
    s.push_str("</p>");
    s
}

fn badge(alert: bool) -> &'static str {
    if alert {
        r#"<span class="badge alert">ALERT</span>"#
    } else {
        r#"<span class="badge ok">no alert</span>"#
    }
}

fn cores(u: &Usage) -> f64 {
    u.cpu_seconds
}

fn net(u: &Usage) -> f64 {
    (u.tx_bytes + u.rx_bytes) as f64
}

pub fn render(m: &Model) -> String {
    let mut s = String::new();
    let host = m.host.as_deref().unwrap_or("unnamed host");
    let _ = write!(
        s,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Tracer report: {}</title><style>{STYLE}</style><script>{SCRIPT}</script></head><body>"#,
        esc(host)
    );
    let _ = write!(s, "<header><h1>Tracer report: {}</h1><p>{}</p></header><main>", esc(host), esc(&m.input));

    s.push_str(r#"<section id="summary"><h2>Summary</h2><ul class="summary">"#);
    for line in summary_lines(m) {
        let _ = write!(s, "<li>{}</li>", esc(&line));
    }
    s.push_str("</ul></section>");

    s.push_str(r#"<section id="usage"><h2>Compute and network by category</h2>"#);
    match m.series_source {
        SeriesSource::None => s.push_str(r#"<p class="muted">No host.summary or activity records.</p>"#),
        source => {
            let _ = write!(
                s,
                r#"<p class="muted">{}</p>"#,
                if source == SeriesSource::Summaries {
                    "From the classifier's host.summary records."
                } else {
                    "From activity records, each tree counted under its verdict (no host.summary records)."
                }
            );
            s.push_str(&legend(&m.series_categories()));
            s.push_str("<h3>CPU (cores busy)</h3>");
            s.push_str(&svg::stacked(m, "CPU by category", cores, |v| format!("{v:.2}")));
            s.push_str("<h3>Network (bytes per second, sent and received)</h3>");
            s.push_str(&svg::stacked(m, "Network by category", net, |v| {
                if v < 10.0 { format!("{v:.1} B/s") } else { format!("{}/s", bytes(v as u64)) }
            }));
            s.push_str("<table><thead><tr><th>category</th><th>CPU</th><th>sent</th><th>received</th></tr></thead><tbody>");
            for (c, u) in &m.totals {
                let _ = write!(
                    s,
                    r#"<tr><td><i style="display:inline-block;width:10px;height:10px;background:{}"></i> {}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
                    color(c),
                    esc(c),
                    secs(u.cpu_seconds),
                    bytes(u.tx_bytes),
                    bytes(u.rx_bytes)
                );
            }
            s.push_str("</tbody></table>");
        }
    }
    s.push_str("</section>");

    s.push_str(r#"<section id="verdicts"><h2>Verdicts</h2>"#);
    if m.verdicts.is_empty() {
        s.push_str(r#"<p class="muted">No tree or container got a verdict.</p>"#);
    }
    for v in &m.verdicts {
        let _ = write!(
            s,
            r#"<div class="verdict" style="border-left-color:{}"><h3>{} {} <code>{}</code>: {} {}</h3>"#,
            color(&v.category),
            esc(&v.scope),
            esc(&v.key),
            esc(v.label.as_deref().unwrap_or("")),
            esc(&v.category),
            badge(v.alert)
        );
        let scores: Vec<String> = v.scores.iter().map(|(c, x)| format!("{c} {x}")).collect();
        let _ = write!(
            s,
            "<p>Confidence {:.3}; categories {}; scores {}; CPU in its activity records {}.",
            v.confidence,
            esc(&v.categories.join(" + ")),
            esc(&scores.join(", ")),
            secs(v.cpu_seconds)
        );
        if let Some(c) = &v.compliance {
            let _ = write!(s, " Compliance: {}.", esc(c));
        }
        if v.history.len() > 1 {
            let steps: Vec<String> = v
                .history
                .iter()
                .map(|(t, c)| format!("{c} at {}", t.as_ref().map_or("?".into(), |t| short_time(&t.text))))
                .collect();
            let _ = write!(s, " History: {}.", esc(&steps.join(", then ")));
        }
        s.push_str("</p>");
        s.push_str(&svg::timeline(m, v));
        s.push_str(r#"<table class="evidence"><thead><tr><th>when</th><th>+s</th><th>process</th><th>indicator</th><th>category</th><th>what</th><th>seen</th><th>from</th><th>weight</th></tr></thead><tbody>"#);
        for e in &v.evidence {
            let (when, off) = match &e.time {
                Some(t) => (short_time(&t.text), format!("{:.2}", m.offset(t))),
                None => (String::new(), String::new()),
            };
            let pid = e.pid.map(|p| p.to_string()).unwrap_or_default();
            let _ = write!(
                s,
                r#"<tr><td>{}</td><td class="num">{}</td><td><code>{}</code> {}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td class="num">{}</td></tr>"#,
                esc(&when),
                esc(&off),
                esc(&e.comm),
                esc(&pid),
                esc(&e.indicator),
                esc(&e.category),
                esc(&e.what),
                esc(&e.seen),
                esc(&e.record),
                e.weight
            );
        }
        s.push_str("</tbody></table></div>");
    }
    s.push_str("</section>");

    let processes = m.processes.iter().take(TOP).map(|p| {
        let argv = clip(&if p.argv.is_empty() { p.exe.clone() } else { p.argv.join(" ") }, 200);
        format!(
            r#"<tr><td><code>{}</code></td><td class="num">{}</td><td class="num">{}</td><td><code>{}</code></td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            esc(&p.comm),
            p.pid.map(|x| x.to_string()).unwrap_or_default(),
            p.session.map(|x| x.to_string()).unwrap_or_default(),
            esc(&argv),
            secs(p.cpu_seconds),
            bytes(p.tx_bytes),
            bytes(p.rx_bytes)
        )
    });
    table_section(
        &mut s,
        ("processes", "Top processes by CPU", "No process activity records."),
        &["process", "pid", "session", "command line", "CPU", "sent", "received"],
        m.processes.len(),
        processes,
    );

    let join = |set: &std::collections::BTreeSet<String>| esc(&set.iter().cloned().collect::<Vec<_>>().join(", "));
    let peers = m.peers.iter().take(TOP).map(|p| {
        format!(
            r#"<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td>{}</td><td><code>{}</code></td></tr>"#,
            esc(&peer_name(p)),
            if p.mining { r#" <span class="badge alert">mining</span>"# } else { "" },
            join(&p.transports),
            join(&p.names),
            bytes(p.tx_bytes),
            bytes(p.rx_bytes),
            p.connects,
            p.failed,
            join(&p.spoken),
            join(&p.comms)
        )
    });
    table_section(
        &mut s,
        ("peers", "Top peers", "No network records."),
        &["peer", "transport", "names", "sent", "received", "connects", "failed", "first bytes", "processes"],
        m.peers.len(),
        peers,
    );

    let names = m.names.iter().take(TOP).map(|n| {
        format!(
            r#"<tr><td><code>{}</code></td><td class="num">{}</td><td><code>{}</code></td><td><code>{}</code></td></tr>"#,
            esc(&n.name),
            n.lookups,
            join(&n.addresses),
            join(&n.comms)
        )
    });
    table_section(
        &mut s,
        ("names", "Names", "No DNS records or connects by name."),
        &["name", "lookups", "addresses", "asked by"],
        m.names.len(),
        names,
    );

    if let Source::Capture { kernel, tracer_version, argv } = &m.source {
        let _ = write!(
            s,
            r#"<p class="muted">Captured by tracer {} on kernel {}: <code>{}</code></p>"#,
            esc(tracer_version.as_deref().unwrap_or("?")),
            esc(kernel.as_deref().unwrap_or("?")),
            esc(&argv.join(" "))
        );
    }
    s.push_str("</main></body></html>\n");
    s
}

/// A section holding one table of the top rows (or `empty` when there are
/// none), and how many rows it left out. `(id, title, empty)`.
fn table_section(
    s: &mut String,
    (id, title, empty): (&str, &str, &str),
    headers: &[&str],
    total: usize,
    rows: impl Iterator<Item = String>,
) {
    let _ = write!(s, r#"<section id="{id}"><h2>{title}</h2>"#);
    if total == 0 {
        let _ = write!(s, r#"<p class="muted">{empty}</p>"#);
    } else {
        s.push_str("<table><thead><tr>");
        for h in headers {
            let _ = write!(s, "<th>{h}</th>");
        }
        s.push_str("</tr></thead><tbody>");
        rows.for_each(|r| s.push_str(&r));
        s.push_str("</tbody></table>");
        more(s, total);
    }
    s.push_str("</section>");
}

/// Says how many rows a table left out.
fn more(s: &mut String, total: usize) {
    if total > TOP {
        let _ = write!(s, r#"<p class="muted">and {} more.</p>"#, total - TOP);
    }
}
