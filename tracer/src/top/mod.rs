//! `tracer top`: a live terminal view of the host's trees and containers,
//! read from the local API's `/v1/state` (or from a tracer of its own when
//! no service answers). This module holds the view's state and its keys,
//! testable without a terminal; `ui` draws it, `source` feeds it.

mod source;
pub mod ui;

use std::{
    io::IsTerminal as _,
    os::fd::{AsRawFd, RawFd},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use serde_json::Value;

use crate::{cli::TopArgs, service::view::ORDINARY};

/// How the rows are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// Busiest first.
    Cpu,
    /// Alerts first, then by confidence: what to look at first.
    Suspicion,
}

/// Which rows are shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    All,
    /// Scopes whose verdict has this category (primary or not).
    Category(String),
    /// Scopes with no verdict.
    Ordinary,
}

impl Filter {
    pub fn label(&self) -> &str {
        match self {
            Filter::All => "all",
            Filter::Category(c) => c,
            Filter::Ordinary => ORDINARY,
        }
    }
}

/// One tree or container as the table shows it.
#[derive(Debug, Clone)]
pub struct Row {
    pub scope: String,
    pub key: String,
    /// The tree leader's executable, or the container's cgroup.
    pub who: String,
    /// Primary first; empty: no verdict.
    pub categories: Vec<String>,
    pub confidence: f64,
    pub alert: bool,
    pub cpu_cores: f64,
    pub gpu_calls_per_s: f64,
    pub rx_bytes_per_s: f64,
    pub tx_bytes_per_s: f64,
    pub peers: u64,
    /// The state's object for this scope: what the detail view shows.
    pub raw: Value,
}

impl Row {
    fn from_state(v: &Value) -> Self {
        let scope = v["scope"].as_str().unwrap_or("tree").to_owned();
        let who = if scope == "tree" {
            v["leader"]["exe"].as_str().unwrap_or("?").to_owned()
        } else {
            v["cgroup"]["path"].as_str().unwrap_or("?").to_owned()
        };
        let verdict = &v["verdict"];
        let mut categories: Vec<String> = verdict["categories"]
            .as_array()
            .map(|l| l.iter().filter_map(|c| c["category"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        // The primary category leads even where the list is ordered otherwise.
        if let Some(primary) = verdict["category"].as_str() {
            categories.retain(|c| c != primary);
            categories.insert(0, primary.to_owned());
        }
        Self {
            scope,
            key: v["key"].as_str().unwrap_or_default().to_owned(),
            who,
            categories,
            confidence: verdict["confidence"].as_f64().unwrap_or(0.0),
            alert: verdict["alert"] == true,
            cpu_cores: v["cpu"]["cores"].as_f64().unwrap_or(0.0),
            gpu_calls_per_s: v["gpu"]["calls_per_s"].as_f64().unwrap_or(0.0),
            rx_bytes_per_s: v["network"]["rx_bytes_per_s"].as_f64().unwrap_or(0.0),
            tx_bytes_per_s: v["network"]["tx_bytes_per_s"].as_f64().unwrap_or(0.0),
            peers: v["network"]["peers"].as_u64().unwrap_or(0),
            raw: v.clone(),
        }
    }

    fn matches(&self, filter: &Filter) -> bool {
        match filter {
            Filter::All => true,
            Filter::Category(c) => self.categories.contains(c),
            Filter::Ordinary => self.categories.is_empty(),
        }
    }

    fn id(&self) -> (String, String) {
        (self.scope.clone(), self.key.clone())
    }
}

/// Where the view stands before (and besides) its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Self-tracing: the programs are loading, no state yet.
    Loading,
    /// A state came, but no activity interval has ended yet.
    Waiting,
    Live,
}

#[derive(Debug)]
pub struct App {
    /// The latest `/v1/state`.
    pub state: Value,
    /// Every scope of the state, unsorted.
    all: Vec<Row>,
    /// What the table shows: filtered and sorted.
    pub rows: Vec<Row>,
    pub sort: Sort,
    pub filter: Filter,
    /// Index into `rows`.
    pub selected: usize,
    /// The scope shown in detail, by (scope, key): it stays open across
    /// refreshes, and says so when the scope has gone.
    pub detail: Option<(String, String)>,
    pub phase: Phase,
    /// Where the state comes from, for the header.
    pub source: String,
    /// The latest error or message (a failed read, the tracer's stderr).
    pub message: Option<String>,
    pub quit: bool,
}

impl App {
    pub fn new(source: impl Into<String>, phase: Phase) -> Self {
        Self {
            state: Value::Null,
            all: Vec::new(),
            rows: Vec::new(),
            sort: Sort::Cpu,
            filter: Filter::All,
            selected: 0,
            detail: None,
            phase,
            source: source.into(),
            message: None,
            quit: false,
        }
    }

    /// Takes a fresh state; the selection follows its scope.
    pub fn update(&mut self, state: Value) {
        let chosen = self.rows.get(self.selected).map(Row::id);
        self.all = ["trees", "containers"]
            .iter()
            .flat_map(|k| state[*k].as_array().cloned().unwrap_or_default())
            .map(|v| Row::from_state(&v))
            .collect();
        // Before the first activity interval ends there is nothing to show
        // but the verdicts of the first seconds.
        let activity = state["view"]["records"]["tree.activity"].as_u64().unwrap_or(0) > 0;
        self.phase = if activity || !self.all.is_empty() { Phase::Live } else { Phase::Waiting };
        self.state = state;
        self.rebuild(chosen);
    }

    /// Every category a verdict names, in order: what `f` cycles through.
    pub fn categories_seen(&self) -> Vec<String> {
        let mut seen: Vec<String> = self.all.iter().flat_map(|r| r.categories.iter().cloned()).collect();
        seen.sort();
        seen.dedup();
        seen
    }

    fn rebuild(&mut self, chosen: Option<(String, String)>) {
        let mut rows: Vec<Row> = self.all.iter().filter(|r| r.matches(&self.filter)).cloned().collect();
        let by_cpu = |a: &Row, b: &Row| b.cpu_cores.total_cmp(&a.cpu_cores);
        let by_key = |a: &Row, b: &Row| a.scope.cmp(&b.scope).then_with(|| a.key.cmp(&b.key));
        match self.sort {
            Sort::Cpu => rows.sort_by(|a, b| by_cpu(a, b).then_with(|| by_key(a, b))),
            Sort::Suspicion => rows.sort_by(|a, b| {
                b.alert
                    .cmp(&a.alert)
                    .then_with(|| b.confidence.total_cmp(&a.confidence))
                    .then_with(|| by_cpu(a, b))
                    .then_with(|| by_key(a, b))
            }),
        }
        self.rows = rows;
        self.selected = chosen
            .and_then(|id| self.rows.iter().position(|r| r.id() == id))
            .unwrap_or(self.selected)
            .min(self.rows.len().saturating_sub(1));
    }

    /// The row the detail view is about, if it is still in the state.
    pub fn detail_row(&self) -> Option<&Row> {
        let id = self.detail.as_ref()?;
        self.all.iter().find(|r| &r.id() == id)
    }

    pub fn key(&mut self, key: KeyEvent) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        // Esc and a key right after it reach us as Alt+key: Esc, then the key.
        if key.modifiers.contains(KeyModifiers::ALT) && self.detail.is_some() {
            self.detail = None;
            return self.key(KeyEvent::new(key.code, key.modifiers - KeyModifiers::ALT));
        }
        match key.code {
            KeyCode::Char('c') if ctrl => self.quit = true,
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Esc | KeyCode::Backspace => self.detail = None,
            _ if self.detail.is_some() => {}
            KeyCode::Char('c') => self.set_sort(Sort::Cpu),
            KeyCode::Char('s') => self.set_sort(Sort::Suspicion),
            KeyCode::Char('f') => self.cycle_filter(),
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected = (self.selected + 1).min(self.rows.len().saturating_sub(1))
            }
            KeyCode::Home => self.selected = 0,
            KeyCode::End => self.selected = self.rows.len().saturating_sub(1),
            KeyCode::Enter => self.detail = self.rows.get(self.selected).map(Row::id),
            _ => {}
        }
    }

    fn set_sort(&mut self, sort: Sort) {
        self.sort = sort;
        // The top row is what a new order is for: start there.
        self.selected = 0;
        self.rebuild(None);
    }

    /// all → each category seen → ordinary → all.
    fn cycle_filter(&mut self) {
        let seen = self.categories_seen();
        self.filter = match &self.filter {
            Filter::All => seen.first().cloned().map_or(Filter::Ordinary, Filter::Category),
            Filter::Category(c) => match seen.iter().position(|s| s == c) {
                Some(i) if i + 1 < seen.len() => Filter::Category(seen[i + 1].clone()),
                _ => Filter::Ordinary,
            },
            Filter::Ordinary => Filter::All,
        };
        self.selected = 0;
        self.rebuild(None);
    }
}

/// Set by SIGTERM, SIGHUP or SIGINT: the view ends as on `q`, and the
/// terminal is restored (the default action would leave it raw).
static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

/// `tracer top`.
pub fn run(args: &TopArgs) -> Result<()> {
    if args.once || !std::io::stdout().is_terminal() {
        return once(&mut source::Feed::open(&args.socket, args.interval)?);
    }
    for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic. Before our own
        // tracer starts: its handlers (signal-hook's) call this one too,
        // where installing it after would replace theirs.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let mut feed = source::Feed::open(&args.socket, args.interval)?;
    let mut app = App::new(feed.describe(), feed.first_phase());
    // Keys come from stdin, or from the controlling terminal where stdin is
    // not one (as crossterm reads them).
    let tty = (!std::io::stdin().is_terminal())
        .then(|| std::fs::File::open("/dev/tty").context("opening /dev/tty for the keys"))
        .transpose()?;
    let input = tty.as_ref().map_or(libc::STDIN_FILENO, AsRawFd::as_raw_fd);
    let result = source::with_terminal(&mut feed, |terminal, feed| {
        let mut next = Instant::now();
        while !app.quit && !SIGNALLED.load(Ordering::SeqCst) {
            if Instant::now() >= next {
                feed.request();
                next = Instant::now() + feed.interval;
            }
            feed.poll(&mut app)?;
            terminal.draw(|f| ui::draw(f, &app))?;
            match terminal_input(input, Duration::from_millis(100)) {
                Input::Gone => break,
                Input::Idle => {}
                Input::Ready => {
                    if event::poll(Duration::ZERO)?
                        && let Event::Key(key) = event::read()?
                    {
                        app.key(key);
                    }
                }
            }
        }
        Ok(())
    });
    feed.stop();
    result
}

/// What the terminal has for the view.
enum Input {
    Ready,
    Idle,
    /// Hung up (its tmux, ssh or window closed): nothing will come again.
    Gone,
}

/// Waits up to `timeout` for input on the terminal. Its own poll, not
/// crossterm's: on a terminal that hung up, crossterm's read loop spins
/// (reads of 0 bytes) and never returns, a core burnt by a view no one sees.
fn terminal_input(tty: RawFd, timeout: Duration) -> Input {
    let mut fd = libc::pollfd { fd: tty, events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd of our own, for the call's duration.
    let n = unsafe { libc::poll(&mut fd, 1, timeout.as_millis() as libc::c_int) };
    match n {
        ..0 if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => Input::Idle,
        ..0 => Input::Gone,
        0 => Input::Idle,
        _ if fd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 => Input::Gone,
        _ => Input::Ready,
    }
}

/// `--once`: the first state with activity in it, as text.
fn once(feed: &mut source::Feed) -> Result<()> {
    let mut app = App::new(feed.describe(), feed.first_phase());
    let width = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).unwrap_or(160);
    let result = (|| {
        let mut said = None;
        loop {
            feed.request();
            let deadline = Instant::now() + feed.interval;
            loop {
                feed.poll(&mut app)?;
                // A service already running answers at once; a tracer of
                // our own has nothing to tell before its first interval.
                if app.phase == Phase::Live || !feed.is_self_traced() && !app.state.is_null() {
                    print!("{}", ui::snapshot(&app, width));
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if said.as_ref() != Some(&app.phase) {
                eprintln!("tracer top: {}", ui::phase_text(&app.phase));
                said = Some(app.phase.clone());
            }
        }
    })();
    feed.stop();
    result
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};
    use serde_json::json;

    use super::*;
    use crate::service::view::HostView;

    fn fixture(kind: &str) -> Value {
        let path = format!("{}/../tests/fixtures/formats/{kind}.native.json", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    /// The fixtures' mining tree (1077, alert, 0.82 cores), a busier
    /// ordinary tree (2000, 1.5 cores), an idle tree with a verdict that is
    /// no alert (3000, ai_inference) and a container, through a HostView.
    fn state() -> Value {
        let mut v = HostView::default();
        v.observe(&fixture("classification"));
        let activity = fixture("tree.activity");
        v.observe(&activity);
        let mut busy = activity.clone();
        busy["tree"]["sid"] = 2000.into();
        busy["tree"]["leader"] = json!({"pid": 2000, "exe": "/usr/bin/make", "entity_id": "x:1:2000"});
        busy["tree"]["activity"]["cpu"]["time_ms"] = 1515.0.into();
        v.observe(&busy);
        let mut idle = activity.clone();
        idle["tree"]["sid"] = 3000.into();
        idle["tree"]["leader"] = json!({"pid": 3000, "exe": "/usr/bin/python3", "entity_id": "x:1:3000"});
        idle["tree"]["activity"]["cpu"]["time_ms"] = 10.1.into();
        v.observe(&idle);
        let mut verdict = fixture("classification");
        verdict["classification"] = json!({
            "scope": "tree", "key": "3000", "category": "ai_inference", "confidence": 0.6, "alert": false,
            "categories": [{"category": "ai_inference", "confidence": 0.6, "score": 2.0, "alert": false,
                            "indicators": ["model-file"]}],
            "evidence": [],
        });
        v.observe(&verdict);
        let mut c = fixture("container.activity");
        c["container"]["container_id"] = "c0ffee".into();
        v.observe(&c);
        v.to_json()
    }

    fn app() -> App {
        let mut app = App::new("test", Phase::Loading);
        app.update(state());
        app
    }

    fn keys(app: &mut App, codes: &[KeyCode]) {
        for c in codes {
            app.key(KeyEvent::new(*c, KeyModifiers::NONE));
        }
    }

    fn keys_of(app: &App) -> Vec<String> {
        app.rows.iter().map(|r| r.key.clone()).collect()
    }

    /// The screen as text, one line per row.
    fn screen(app: &App, w: u16, h: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| ui::draw(f, app)).unwrap();
        let buf = t.backend().buffer();
        (0..h)
            .map(|y| (0..w).map(|x| buf[(x, y)].symbol()).collect::<String>().trim_end().to_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn rows_sort_by_cpu_or_by_suspicion() {
        let mut app = app();
        assert_eq!(app.phase, Phase::Live);
        // The container (0.6 cores in the fixture) sits between the trees.
        let cpu = keys_of(&app);
        assert_eq!(cpu[0], "2000", "{cpu:?}");
        assert!(cpu.iter().position(|k| *k == "1077") < cpu.iter().position(|k| *k == "3000"), "{cpu:?}");
        keys(&mut app, &[KeyCode::Char('s')]);
        assert_eq!(app.sort, Sort::Suspicion);
        // The alert first, then the verdict with some confidence, then the rest by CPU.
        assert_eq!(&keys_of(&app)[..3], ["1077", "3000", "2000"]);
        keys(&mut app, &[KeyCode::Char('c')]);
        assert_eq!(keys_of(&app), cpu);
    }

    #[test]
    fn the_filter_cycles_through_the_categories_seen_then_ordinary() {
        let mut app = app();
        assert_eq!(app.categories_seen(), ["ai_inference", "crypto_mining"]);
        let mut seen = Vec::new();
        for _ in 0..4 {
            keys(&mut app, &[KeyCode::Char('f')]);
            seen.push((app.filter.label().to_owned(), keys_of(&app).join(",")));
        }
        assert_eq!(seen[0], ("ai_inference".into(), "3000".into()));
        assert_eq!(seen[1], ("crypto_mining".into(), "1077".into()));
        assert_eq!(seen[2].0, "ordinary");
        assert!(seen[2].1.contains("2000") && seen[2].1.contains("c0ffee") && !seen[2].1.contains("1077"));
        assert_eq!(seen[3].0, "all");
        assert_eq!(app.rows.len(), 4);
    }

    #[test]
    fn the_selection_moves_within_the_rows_and_follows_its_scope() {
        let mut app = app();
        keys(&mut app, &[KeyCode::Up]);
        assert_eq!(app.selected, 0);
        keys(
            &mut app,
            &[KeyCode::Down, KeyCode::Char('j'), KeyCode::Char('j'), KeyCode::Down, KeyCode::Down],
        );
        assert_eq!(app.selected, 3, "stops at the last row");
        keys(&mut app, &[KeyCode::Char('k')]);
        let chosen = app.rows[app.selected].key.clone();
        // A refresh where the order changes: the selection stays on its scope.
        let mut s = state();
        s["trees"].as_array_mut().unwrap().reverse();
        app.update(s);
        assert_eq!(app.rows[app.selected].key, chosen);
        // Sorting anew starts at the top.
        keys(&mut app, &[KeyCode::Char('s')]);
        assert_eq!(app.selected, 0);
    }

    #[test]
    fn keys_quit_and_the_detail_closes() {
        let mut app = app();
        keys(&mut app, &[KeyCode::Char('s'), KeyCode::Enter]);
        assert_eq!(app.detail, Some(("tree".into(), "1077".into())));
        // Sorting keys do nothing under the detail.
        keys(&mut app, &[KeyCode::Char('c')]);
        assert_eq!(app.sort, Sort::Suspicion);
        keys(&mut app, &[KeyCode::Esc]);
        assert_eq!(app.detail, None);
        keys(&mut app, &[KeyCode::Enter, KeyCode::Backspace]);
        assert_eq!(app.detail, None);
        // Esc then f, typed quickly, reads as Alt+f: back, then the filter.
        keys(&mut app, &[KeyCode::Enter]);
        app.key(KeyEvent::new(KeyCode::Char('f'), KeyModifiers::ALT));
        assert_eq!((app.detail.clone(), app.filter.label()), (None, "ai_inference"));
        assert!(!app.quit);
        app.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert!(app.quit);
        let mut app = self::app();
        keys(&mut app, &[KeyCode::Char('q')]);
        assert!(app.quit);
    }

    #[test]
    fn the_table_shows_header_totals_and_rows() {
        let mut app = app();
        keys(&mut app, &[KeyCode::Char('s')]);
        let s = screen(&app, 160, 20);
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines[0].contains("host vm"), "{s}");
        assert!(s.contains("crypto_mining 1 tree"), "{s}");
        assert!(s.contains("sort: suspicion"), "{s}");
        let first = lines.iter().position(|l| l.contains("KEY")).unwrap() + 1;
        let top = lines[first];
        for want in ["tree", "1077", "/usr/bin/bash", "crypto_mining", "0.97", "!", "0.82"] {
            assert!(top.contains(want), "{want} in the top row: {s}");
        }
        assert!(lines[first + 1].contains("3000") && lines[first + 1].contains("ai_inference"), "{s}");
        assert!(s.contains("c0ffee"), "{s}");
        // The text snapshot is the same table, without the keys' help.
        let text = ui::snapshot(&app, 160);
        assert!(text.lines().any(|l| l.contains("1077") && l.contains("crypto_mining")), "{text}");
    }

    #[test]
    fn the_detail_shows_verdict_evidence_and_peers() {
        let mut app = app();
        keys(&mut app, &[KeyCode::Char('s'), KeyCode::Enter]);
        let s = screen(&app, 160, 40);
        for want in [
            "tree 1077",
            "/usr/bin/bash",
            "crypto_mining",
            "0.97",
            "ALERT",
            "mining-protocol",
            "miner-agent",
            "speaks a mining protocol on a connection it opened",
            "xmrig-stratum login to 127.0.0.1:33713",
            "2965",
            "python3",
            "19:39:24",
            "4.0",
            "127.0.0.1:33713",
        ] {
            assert!(s.contains(want), "{want} in the detail:\n{s}");
        }
        // The scope ended: the detail says so rather than showing another.
        let mut gone = state();
        gone["trees"].as_array_mut().unwrap().retain(|t| t["key"] != "1077");
        app.update(gone);
        assert!(screen(&app, 160, 40).contains("no longer in the state"));
    }

    #[test]
    fn before_activity_the_view_says_what_it_waits_for() {
        let app = App::new("test", Phase::Loading);
        assert!(screen(&app, 100, 10).contains("loading programs"));
        let mut app = App::new("test", Phase::Loading);
        app.update(HostView::default().to_json());
        assert_eq!(app.phase, Phase::Waiting);
        assert!(screen(&app, 100, 10).contains("waiting for the first activity interval"));
    }
}
