//! The Markdown report, for tickets: the HTML report's sections as tables,
//! with text sparklines for the charts.

use std::fmt::Write as _;

use super::{Model, SeriesSource, TOP, Usage, bytes, clip, peer_name, secs, short_time, summary_lines};

/// Text made safe for a Markdown table cell: no cell breaks, no markup,
/// no raw HTML. Underscores inside words stay as they are (they mark
/// nothing there), so `crypto_mining` reads as written.
pub fn cell(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            '_' => {
                let inner =
                    |j: Option<usize>| j.and_then(|j| chars.get(j)).is_some_and(|c| c.is_alphanumeric());
                if !(inner(i.checked_sub(1)) && inner(Some(i + 1))) {
                    out.push('\\');
                }
                out.push('_');
            }
            '\\' | '`' | '*' | '[' | ']' | '<' | '>' | '|' | '&' | '~' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Values as a row of block characters, scaled to the largest.
pub fn sparkline(values: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().fold(0.0, f64::max);
    values
        .iter()
        // Nothing at all is a dot, so that it differs from a little.
        .map(|v| if max <= 0.0 || *v <= 0.0 { '·' } else { BARS[((v / max) * 7.0).round() as usize] })
        .collect()
}

fn table(s: &mut String, head: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let _ = writeln!(s, "| {} |", head.join(" | "));
    let _ = writeln!(s, "|{}", head.iter().map(|_| " --- |").collect::<String>());
    for row in rows {
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    s.push('\n');
}

fn join(set: &std::collections::BTreeSet<String>) -> String {
    cell(&set.iter().cloned().collect::<Vec<_>>().join(", "))
}

pub fn render(m: &Model) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Tracer report: {}\n", cell(m.host.as_deref().unwrap_or("unnamed host")));
    for line in summary_lines(m) {
        let _ = writeln!(s, "- {}", cell(&line));
    }
    s.push('\n');

    s.push_str("## Compute and network by category\n\n");
    match m.series_source {
        SeriesSource::None => s.push_str("No host.summary or activity records.\n\n"),
        source => {
            let _ = writeln!(
                s,
                "{} over {} intervals.\n",
                if source == SeriesSource::Summaries {
                    "From host.summary records"
                } else {
                    "From activity records"
                },
                m.series.len()
            );
            let rate = |c: &str, f: fn(&Usage) -> f64| -> Vec<f64> {
                m.series
                    .iter()
                    .map(|p| {
                        p.by_category
                            .get(c)
                            .map_or(0.0, |u| if p.interval_s > 0.0 { f(u) / p.interval_s } else { 0.0 })
                    })
                    .collect()
            };
            let rows = m.totals.iter().map(|(c, u)| {
                vec![
                    cell(c),
                    secs(u.cpu_seconds),
                    format!("`{}`", sparkline(&rate(c, |u| u.cpu_seconds))),
                    bytes(u.tx_bytes),
                    bytes(u.rx_bytes),
                    format!("`{}`", sparkline(&rate(c, |u| (u.tx_bytes + u.rx_bytes) as f64))),
                ]
            });
            table(
                &mut s,
                &["category", "CPU", "CPU over time", "sent", "received", "network over time"],
                rows,
            );
        }
    }

    s.push_str("## Verdicts\n\n");
    if m.verdicts.is_empty() {
        s.push_str("No tree or container got a verdict.\n\n");
    } else {
        let rows = m.verdicts.iter().map(|v| {
            vec![
                cell(&v.scope),
                cell(&v.key),
                cell(v.label.as_deref().unwrap_or("")),
                cell(&v.categories.join(" + ")),
                format!("{:.3}", v.confidence),
                if v.alert { "**yes**".into() } else { "no".into() },
                v.evidence.len().to_string(),
                cell(&v.first.as_ref().map(|t| short_time(&t.text)).unwrap_or_default()),
            ]
        });
        table(&mut s, &["scope", "key", "what", "verdict", "confidence", "alert", "evidence", "first"], rows);
        for v in &m.verdicts {
            let _ = writeln!(s, "### {} {}: {}\n", cell(&v.scope), cell(&v.key), cell(&v.category));
            let rows = v.evidence.iter().map(|e| {
                vec![
                    cell(&e.time.as_ref().map(|t| short_time(&t.text)).unwrap_or_default()),
                    e.time.as_ref().map(|t| format!("{:.2}", m.offset(t))).unwrap_or_default(),
                    cell(&format!("{} {}", e.comm, e.pid.map(|p| p.to_string()).unwrap_or_default())),
                    cell(&e.indicator),
                    cell(&e.what),
                    cell(&e.seen),
                    e.weight.to_string(),
                ]
            });
            table(&mut s, &["when", "+s", "process", "indicator", "what", "seen", "weight"], rows);
        }
    }

    s.push_str("## Top processes by CPU\n\n");
    if m.processes.is_empty() {
        s.push_str("No process activity records.\n\n");
    } else {
        let rows = m.processes.iter().take(TOP).map(|p| {
            vec![
                cell(&p.comm),
                p.pid.map(|x| x.to_string()).unwrap_or_default(),
                cell(&clip(&if p.argv.is_empty() { p.exe.clone() } else { p.argv.join(" ") }, 120)),
                secs(p.cpu_seconds),
                bytes(p.tx_bytes),
                bytes(p.rx_bytes),
            ]
        });
        table(&mut s, &["process", "pid", "command line", "CPU", "sent", "received"], rows);
    }

    s.push_str("## Top peers\n\n");
    if m.peers.is_empty() {
        s.push_str("No network records.\n\n");
    } else {
        let rows = m.peers.iter().take(TOP).map(|p| {
            vec![
                cell(&peer_name(p)),
                join(&p.names),
                bytes(p.tx_bytes),
                bytes(p.rx_bytes),
                p.connects.to_string(),
                join(&p.spoken),
                join(&p.comms),
            ]
        });
        table(&mut s, &["peer", "names", "sent", "received", "connects", "first bytes", "processes"], rows);
    }

    s.push_str("## Names\n\n");
    if m.names.is_empty() {
        s.push_str("No DNS records or connects by name.\n\n");
    } else {
        let rows = m
            .names
            .iter()
            .take(TOP)
            .map(|n| vec![cell(&n.name), n.lookups.to_string(), join(&n.addresses), join(&n.comms)]);
        table(&mut s, &["name", "lookups", "addresses", "asked by"], rows);
    }
    s
}
