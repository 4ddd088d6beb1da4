//! Drawing `tracer top`: the header, the table of scopes, the detail of
//! one scope, and the same table as plain text for `--once`.

use ratatui::{
    Frame,
    buffer::Buffer,
    layout::{Alignment, Constraint, Layout, Rect},
    style::{Modifier, Stylize as _},
    text::{Line, Span, Text},
    widgets::{Block, Borders, Cell, Paragraph, Row as TableRow, Table, TableState, Widget as _},
};
use serde_json::Value;

use super::{App, Phase, Row, Sort};
use crate::output::formats::epoch_ms;

const HEADER_LINES: u16 = 3;

pub fn phase_text(phase: &Phase) -> &'static str {
    match phase {
        Phase::Loading => "loading programs…",
        Phase::Waiting => "waiting for the first activity interval…",
        Phase::Live => "",
    }
}

pub fn draw(f: &mut Frame, app: &App) {
    let [header, body, footer] =
        Layout::vertical([Constraint::Length(HEADER_LINES), Constraint::Min(1), Constraint::Length(1)])
            .areas(f.area());
    f.render_widget(Paragraph::new(header_lines(app)), header);
    match (&app.detail, &app.phase) {
        (Some(_), _) => detail(f, body, app),
        (None, Phase::Live) => {
            let mut state = TableState::default().with_selected(Some(app.selected));
            f.render_stateful_widget(
                table(app, body.width).row_highlight_style(Modifier::REVERSED),
                body,
                &mut state,
            );
            if app.rows.is_empty() {
                let [_, below] = Layout::vertical([Constraint::Length(2), Constraint::Min(1)]).areas(body);
                let none = format!("no trees or containers (filter: {})", app.filter.label());
                f.render_widget(Paragraph::new(none).alignment(Alignment::Center), below);
            }
        }
        (None, phase) => {
            let [_, middle, _] =
                Layout::vertical([Constraint::Fill(1), Constraint::Length(1), Constraint::Fill(1)])
                    .areas(body);
            f.render_widget(Paragraph::new(phase_text(phase)).alignment(Alignment::Center).bold(), middle);
        }
    }
    let help = if app.detail.is_some() {
        "Esc back · q quit"
    } else {
        "c cpu · s suspicion · f filter · ↑↓/jk select · Enter detail · q quit"
    };
    let line = match &app.message {
        Some(m) => Line::from(vec![Span::raw(m.clone()).red(), Span::raw("  ·  "), Span::raw(help).dim()]),
        None => Line::from(help).dim(),
    };
    f.render_widget(Paragraph::new(line), footer);
}

/// One plain-text rendering of the header and the table (no selection, no
/// help line): for scripts and a stdout that is not a terminal.
pub fn snapshot(app: &App, width: u16) -> String {
    let rows = if app.phase == Phase::Live { app.rows.len() as u16 + 1 } else { 1 };
    let area = Rect::new(0, 0, width, HEADER_LINES + rows);
    let mut buf = Buffer::empty(area);
    let [header, body] = Layout::vertical([Constraint::Length(HEADER_LINES), Constraint::Min(1)]).areas(area);
    Paragraph::new(header_lines(app)).render(header, &mut buf);
    if app.phase == Phase::Live {
        table(app, width).render(body, &mut buf);
    } else {
        Paragraph::new(phase_text(&app.phase)).render(body, &mut buf);
    }
    let mut out = String::new();
    for y in 0..area.height {
        let line: String = (0..width).map(|x| buf[(x, y)].symbol()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn plural(n: u64, one: &str) -> String {
    format!("{n} {one}{}", if n == 1 { "" } else { "s" })
}

/// `1h02m`, `3m05s`, `42s`.
fn age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// Bytes per second the way people read them: 950, 12.3K, 4.1M.
fn rate(v: f64) -> String {
    match v {
        v if v < 1000.0 => format!("{v:.0}"),
        v if v < 1e6 => format!("{:.1}K", v / 1e3),
        v if v < 1e9 => format!("{:.1}M", v / 1e6),
        v => format!("{:.1}G", v / 1e9),
    }
}

fn header_lines(app: &App) -> Vec<Line<'static>> {
    let s = &app.state;
    let h = &s["health"];
    let up = match (s["since"].as_str().and_then(epoch_ms), s["time"].as_str().and_then(epoch_ms)) {
        (Some(a), Some(b)) => age((b - a) / 1000),
        _ => "-".to_owned(),
    };
    let num = |v: &Value| v.as_u64().map_or_else(|| "-".to_owned(), |n| n.to_string());
    let host = s["host"].as_str().filter(|h| !h.is_empty()).unwrap_or("-");
    let first = Line::from(vec![
        Span::raw("tracer top").bold(),
        Span::raw(format!(
            " · host {host} · up {up} · events {} · drops {} · programs {} ({} failed) · {}",
            num(&h["events_read"]),
            num(&h["dropped_total"]),
            num(&h["programs_attached"]),
            num(&h["programs_failed"]),
            app.source,
        )),
    ]);
    let mut totals = Vec::new();
    if let Some(cats) = s["categories"].as_object() {
        for (name, t) in cats {
            let (trees, containers) =
                (t["trees"].as_u64().unwrap_or(0), t["containers"].as_u64().unwrap_or(0));
            let mut scopes = plural(trees, "tree");
            if containers > 0 {
                scopes.push_str(&format!(", {}", plural(containers, "container")));
            }
            let text = format!(
                "{name} {scopes} {:.2} cores ↓{}/s ↑{}/s",
                t["cpu_cores"].as_f64().unwrap_or(0.0),
                rate(t["rx_bytes_per_s"].as_f64().unwrap_or(0.0)),
                rate(t["tx_bytes_per_s"].as_f64().unwrap_or(0.0)),
            );
            if !totals.is_empty() {
                totals.push(Span::raw(" · "));
            }
            let span = Span::raw(text);
            totals.push(if name == super::ORDINARY { span } else { span.yellow() });
        }
    }
    let sort = match app.sort {
        Sort::Cpu => "cpu",
        Sort::Suspicion => "suspicion",
    };
    let third = Line::from(format!(
        "sort: {sort} · filter: {} · {} of {} scopes",
        app.filter.label(),
        app.rows.len(),
        app.all.len()
    ))
    .dim();
    vec![first, Line::from(totals), third]
}

/// Cuts a path from the left, where the directories are: the name stays.
fn fit_left(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width || width < 2 {
        return s.to_owned();
    }
    let tail: String = s.chars().skip(n - (width - 1)).collect();
    format!("…{tail}")
}

/// Widths of every column but the leader / cgroup, in order.
const FIXED: [u16; 10] = [9, 12, 24, 5, 1, 6, 6, 7, 7, 5];

fn table(app: &App, width: u16) -> Table<'static> {
    // What the fixed columns, the gaps between all eleven and the
    // selection's mark leave for the executable or cgroup.
    let who_width = width.saturating_sub(FIXED.iter().sum::<u16>() + 10 + 2).max(12) as usize;
    let header = TableRow::new([
        "SCOPE",
        "KEY",
        "LEADER / CGROUP",
        "VERDICT",
        "CONF",
        "!",
        "CPU",
        "GPU/s",
        "RX/s",
        "TX/s",
        "PEERS",
    ])
    .bold();
    let rows = app.rows.iter().map(|r| table_row(r, who_width));
    let mut widths: Vec<Constraint> = FIXED.iter().map(|w| Constraint::Length(*w)).collect();
    widths.insert(2, Constraint::Fill(1));
    Table::new(rows, widths).header(header).highlight_symbol("> ")
}

fn table_row(r: &Row, who_width: usize) -> TableRow<'static> {
    let verdict = match r.categories.split_first() {
        None => "-".to_owned(),
        Some((first, [])) => first.clone(),
        Some((first, rest)) => format!("{first} +{}", rest.join(" +")),
    };
    let conf = if r.categories.is_empty() { "-".to_owned() } else { format!("{:.2}", r.confidence) };
    // Container ids are long hex; their first twelve name them, as docker does.
    let key: String = r.key.chars().take(12).collect();
    let row = TableRow::new(vec![
        Cell::from(r.scope.clone()),
        Cell::from(key),
        Cell::from(fit_left(&r.who, who_width)),
        Cell::from(verdict),
        Cell::from(conf),
        Cell::from(if r.alert { "!" } else { "" }),
        Cell::from(format!("{:.2}", r.cpu_cores)),
        Cell::from(format!("{:.0}", r.gpu_calls_per_s)),
        Cell::from(rate(r.rx_bytes_per_s)),
        Cell::from(rate(r.tx_bytes_per_s)),
        Cell::from(r.peers.to_string()),
    ]);
    if r.alert {
        row.red().bold()
    } else if !r.categories.is_empty() {
        row.yellow()
    } else {
        row
    }
}

/// `19:39:24.649` of `2026-11-21T19:39:24.649057144Z`.
fn clock(time: &str) -> String {
    time.get(11..23).unwrap_or(time).to_owned()
}

fn detail(f: &mut Frame, area: Rect, app: &App) {
    let Some(r) = app.detail_row() else {
        let (scope, key) = app.detail.clone().unwrap_or_default();
        let gone = format!("{scope} {key} is no longer in the state (it ended or went quiet); Esc goes back");
        f.render_widget(Paragraph::new(gone).alignment(Alignment::Center), area);
        return;
    };
    let v = &r.raw;
    let verdict = &v["verdict"];
    let mut head = vec![
        Line::from(vec![
            Span::raw(format!("{} {}", r.scope, r.key)).bold(),
            Span::raw(format!(
                " · {}{} · {} · last seen {}",
                r.who,
                v["leader"]["pid"].as_u64().map_or_else(String::new, |p| format!(" (pid {p})")),
                plural(v["active_processes"].as_u64().unwrap_or(0), "active process"),
                clock(v["last_seen"].as_str().unwrap_or("")),
            )),
        ]),
        Line::from(format!(
            "cpu {:.2} cores ({:.1} s in all) · gpu {:.0} calls/s · ↓{}/s ↑{}/s ({} B in, {} B out in all) · {}",
            r.cpu_cores,
            v["cpu"]["seconds"].as_f64().unwrap_or(0.0),
            r.gpu_calls_per_s,
            rate(r.rx_bytes_per_s),
            rate(r.tx_bytes_per_s),
            v["network"]["rx_bytes"].as_u64().unwrap_or(0),
            v["network"]["tx_bytes"].as_u64().unwrap_or(0),
            plural(r.peers, "peer"),
        )),
        Line::from(""),
    ];
    if verdict.is_null() {
        head.push(Line::from("verdict: none (ordinary work)"));
    } else {
        let mut line = vec![
            Span::raw("verdict: "),
            Span::raw(verdict["category"].as_str().unwrap_or("?").to_owned()).bold(),
            Span::raw(format!(" confidence {:.2}", r.confidence)),
        ];
        if r.alert {
            line.push(Span::raw(" ALERT").red().bold());
        }
        head.push(Line::from(line));
        let listed = verdict["categories"].as_array().cloned().unwrap_or_default();
        // Older verdicts name one category and no list: show that one.
        let listed = if listed.is_empty() {
            vec![serde_json::json!({
                "category": verdict["category"], "confidence": verdict["confidence"],
                "score": verdict["scores"][verdict["category"].as_str().unwrap_or("")],
                "alert": verdict["alert"],
            })]
        } else {
            listed
        };
        for c in &listed {
            let indicators: Vec<&str> = c["indicators"]
                .as_array()
                .map(|l| l.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            head.push(Line::from(format!(
                "  {:<20} confidence {:.2}  score {:<5}{}{}",
                c["category"].as_str().unwrap_or("?"),
                c["confidence"].as_f64().unwrap_or(0.0),
                c["score"].as_f64().map_or_else(|| "-".to_owned(), |s| format!("{s:.1}")),
                if c["alert"] == true { "  alert" } else { "" },
                if indicators.is_empty() { String::new() } else { format!("  {}", indicators.join(", ")) },
            )));
        }
        if let Some(c) = verdict.get("compliance").filter(|c| !c.is_null()) {
            head.push(Line::from(format!("compliance: {c}")));
        }
    }
    let evidence = verdict["evidence"].as_array().cloned().unwrap_or_default();
    let peers = v["network"]["top_peers"].as_array().cloned().unwrap_or_default();
    let [head_area, evidence_area, peers_area] = Layout::vertical([
        Constraint::Length(head.len() as u16),
        Constraint::Min(4),
        Constraint::Length(peers.len().clamp(1, 8) as u16 + 3),
    ])
    .areas(area);
    f.render_widget(Paragraph::new(head), head_area);

    let rows = evidence.iter().map(|e| {
        let what = Text::from(vec![
            Line::from(e["what"].as_str().unwrap_or("").to_owned()),
            Line::from(format!("seen: {}", e["seen"].as_str().unwrap_or(""))).dim(),
        ]);
        TableRow::new(vec![
            Cell::from(clock(e["time"].as_str().unwrap_or(""))),
            Cell::from(e["pid"].as_u64().map_or_else(|| "-".to_owned(), |p| p.to_string())),
            Cell::from(e["comm"].as_str().unwrap_or("").to_owned()),
            Cell::from(e["indicator"].as_str().unwrap_or("").to_owned()),
            Cell::from(e["weight"].as_f64().map_or_else(|| "-".to_owned(), |w| format!("{w:.1}"))),
            Cell::from(what),
        ])
        .height(2)
    });
    let widths = [
        Constraint::Length(12),
        Constraint::Length(7),
        Constraint::Length(16),
        Constraint::Length(22),
        Constraint::Length(6),
        Constraint::Fill(1),
    ];
    let evidence_table = Table::new(rows, widths)
        .header(TableRow::new(["TIME", "PID", "COMM", "INDICATOR", "WEIGHT", "WHAT / SEEN"]).bold())
        .block(Block::default().borders(Borders::TOP).title(format!(" evidence ({}) ", evidence.len())));
    f.render_widget(evidence_table, evidence_area);

    let mut rows: Vec<TableRow> = peers
        .iter()
        .take(8)
        .map(|p| {
            let address = p["address"].as_str().unwrap_or("?");
            let at = if address.contains(':') { format!("[{address}]") } else { address.to_owned() };
            TableRow::new(vec![
                format!("{at}:{}", p["port"]),
                p["protocol"].as_str().unwrap_or("").to_owned(),
                p["tx_bytes"].as_u64().unwrap_or(0).to_string(),
                p["rx_bytes"].as_u64().unwrap_or(0).to_string(),
            ])
        })
        .collect();
    if rows.is_empty() {
        rows.push(TableRow::new(["no traffic in the last interval"]).dim());
    }
    let widths =
        [Constraint::Length(48), Constraint::Length(6), Constraint::Length(12), Constraint::Length(12)];
    let peers_table = Table::new(rows, widths)
        .header(TableRow::new(["PEER", "PROTO", "TX BYTES", "RX BYTES"]).bold())
        .block(Block::default().borders(Borders::TOP).title(" top peers (last interval) "));
    f.render_widget(peers_table, peers_area);
}
