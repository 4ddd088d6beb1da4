use std::time::Duration;

use serde_json::{Value, json};

use super::*;

const MINING: &str = include_str!("../../../tests/fixtures/captures/mining-xmrig-login.capture.jsonl");
const ORDINARY: &str =
    include_str!("../../../tests/fixtures/captures/ordinary-http-and-hashing.capture.jsonl");

fn load_text(text: &str, every: Duration) -> Result<Model> {
    load(Box::new(std::io::Cursor::new(text.as_bytes().to_vec())), "test", Rules::load(None).unwrap(), every)
}

fn fixture(kind: &str) -> Value {
    let path = format!("{}/../tests/fixtures/formats/{kind}.native.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn fold(records: &[Value]) -> Model {
    let mut f = Folder::new();
    for r in records {
        f.observe(r);
    }
    f.finish("test")
}

#[test]
fn report_times_parse_as_rfc3339() {
    assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0.0));
    assert_eq!(parse_time("2026-11-21T19:39:24Z"), Some(1_795_289_964.0));
    let t = parse_time("2026-11-21T19:39:24.649057144Z").unwrap();
    assert!((t - 1_795_289_964.649).abs() < 1e-6, "{t}");
    assert_eq!(parse_time("2000-02-29T12:00:00+02:00"), Some(951_818_400.0));
    for bad in ["", "yesterday", "2026-13-01T00:00:00Z", "2026-11-21T19:39:24", "2026-11-21T19:39:24.Z"] {
        assert_eq!(parse_time(bad), None, "{bad}");
    }
    assert_eq!(short_time("2026-11-21T19:39:24.649057144Z"), "2026-11-21 19:39:24.649Z");
    assert_eq!(short_time("2026-11-21T19:39:24Z"), "2026-11-21 19:39:24Z");
}

#[test]
fn report_of_the_mining_capture_has_the_replayed_verdict() {
    let m = load_text(MINING, Duration::ZERO).unwrap();
    assert!(matches!(&m.source, Source::Capture { kernel: Some(k), .. } if k.starts_with("6.18")));
    assert_eq!(m.host.as_deref(), Some("vm"));
    assert_eq!(m.records, MINING.lines().filter(|l| !l.trim().is_empty()).count() as u64);
    assert_eq!(m.verdicts.len(), 1, "{:#?}", m.verdicts);
    let v = &m.verdicts[0];
    assert_eq!(
        (v.scope.as_str(), v.key.as_str(), v.category.as_str(), v.alert),
        ("tree", "1077", "crypto_mining", true)
    );
    assert_eq!(v.label.as_deref(), Some("/usr/bin/bash"));
    // The replayed verdict, not the capture's own: replay also finds the
    // listening socket, which the live verdict of that capture predates.
    let indicators: Vec<&str> = v.evidence.iter().map(|e| e.indicator.as_str()).collect();
    assert_eq!(indicators, ["serves", "mining-protocol", "miner-agent"]);
    assert_eq!(v.evidence[1].weight, 4.0);
    assert_eq!(v.evidence[1].comm, "python3");
    assert!(v.cpu_seconds > 1.0, "{}", v.cpu_seconds);
    // No summaries asked for: the charts come from tree activity, under the tree's verdict.
    assert_eq!(m.series_source, SeriesSource::Activity);
    assert_eq!(m.series.len(), 2);
    assert_eq!(m.totals[0].0, "crypto_mining");
    assert!((m.totals[0].1.cpu_seconds - v.cpu_seconds).abs() < 1e-9);
    assert_eq!(m.processes[0].comm, "python3");
    let pool = m.peers.iter().find(|p| p.port == Some(33713)).expect("the pool is a peer");
    assert_eq!(pool.connects, 1);
    assert!(pool.spoken.iter().any(|s| s.contains("xmrig")), "{:?}", pool.spoken);
    assert!(pool.tx_bytes > 0 && pool.comms.contains("python3"), "{pool:?}");
    assert_eq!(m.health.as_ref().map(|h| h.status.as_str()), Some("final"));
}

#[test]
fn report_charts_come_from_summaries_when_the_capture_gives_them() {
    let m = load_text(MINING, Duration::from_secs(1)).unwrap();
    assert_eq!(m.series_source, SeriesSource::Summaries);
    assert!(!m.series.is_empty());
    assert!(m.series.iter().any(|p| p.by_category.contains_key("crypto_mining")), "{:?}", m.series);
    // The capture's own (none here) and the replayed summaries are not both counted.
    let ordinary = load_text(ORDINARY, Duration::from_secs(1)).unwrap();
    assert!(ordinary.verdicts.is_empty(), "{:?}", ordinary.verdicts);
    assert!(ordinary.series.iter().all(|p| !p.by_category.contains_key("crypto_mining")));
}

#[test]
fn report_of_a_log_uses_its_records_as_they_are() {
    let m = fold(&[
        fixture("tracer.health"),
        fixture("classification"),
        fixture("tree.activity"),
        fixture("host.summary"),
        fixture("network.connect"),
        fixture("network.dns"),
        fixture("process.activity"),
    ]);
    assert_eq!(m.source, Source::Log);
    assert_eq!(m.verdicts.len(), 1);
    assert_eq!(m.verdicts[0].evidence.len(), 2);
    assert_eq!(m.series_source, SeriesSource::Summaries);
    assert_eq!(m.totals[0].0, "crypto_mining");
    assert_eq!(m.totals[0].1.cpu_seconds, 2.993);
    let name = m.names.iter().find(|n| n.name == "api.pool.example").unwrap();
    assert!(name.addresses.contains("127.0.0.1"));
    // A response is not a lookup of its own.
    assert_eq!(name.lookups, 0);
    let refused = m.peers.iter().find(|p| p.port == Some(9)).unwrap();
    assert_eq!((refused.connects, refused.failed), (1, 1));
    assert!(refused.names.contains("api.pool.example"));
    // Peer bytes are the process level's, not process + tree counted twice.
    let p = m.peers.iter().find(|p| p.port == Some(33713)).unwrap();
    assert_eq!((p.tx_bytes, p.rx_bytes), (165, 81));
}

#[test]
fn report_keeps_a_verdicts_history_and_each_evidence_once() {
    let mut first = fixture("classification");
    first["classification"]["category"] = json!("ai_inference");
    first["classification"]["alert"] = json!(false);
    first["classification"]["evidence"].as_array_mut().unwrap().truncate(1);
    let mut later = fixture("classification");
    later["time"] = json!("2026-11-21T19:39:30Z");
    let m = fold(&[first, later.clone(), later]);
    let v = &m.verdicts[0];
    assert_eq!(v.category, "crypto_mining");
    let history: Vec<&str> = v.history.iter().map(|h| h.1.as_str()).collect();
    assert_eq!(history, ["ai_inference", "crypto_mining"]);
    assert_eq!(v.evidence.len(), 2);
    assert_eq!(v.last.as_ref().unwrap().text, "2026-11-21T19:39:30Z");
}

#[test]
fn report_tree_activity_without_summaries_is_charted_under_its_verdict() {
    let mut other = fixture("tree.activity");
    other["tree"]["sid"] = json!(42);
    let m = fold(&[fixture("classification"), fixture("tree.activity"), other]);
    assert_eq!(m.series_source, SeriesSource::Activity);
    assert_eq!(m.series.len(), 1, "one tick, one point");
    let p = &m.series[0];
    assert!((p.by_category["crypto_mining"].cpu_seconds - 0.825915).abs() < 1e-9);
    assert!((p.by_category["ordinary"].cpu_seconds - 0.825915).abs() < 1e-9);
    assert_eq!(p.interval_s, 1.01);
}

/// A log whose every text field an attacker could set holds markup.
fn hostile() -> Model {
    const EVIL: &str = "<script>alert(1)</script>";
    let mut activity = fixture("process.activity");
    activity["process"]["comm"] = json!(EVIL);
    activity["process"]["argv"] = json!([EVIL, "\"><img src=x onerror=alert(2)>", "a|b"]);
    let mut verdict = fixture("classification");
    verdict["host"] = json!(EVIL);
    verdict["classification"]["evidence"][0]["comm"] = json!(EVIL);
    verdict["classification"]["evidence"][0]["seen"] = json!("login to <b>pool</b> | ' \" &amp;");
    let mut dns = fixture("network.dns");
    dns["dns"]["questions"][0]["name"] = json!("<svg onload=alert(3)>.example");
    fold(&[verdict, activity, dns])
}

#[test]
fn report_html_escapes_every_record_text() {
    let html = html::render(&hostile());
    assert_eq!(html.matches("<script").count(), 1, "only the report's own script");
    for raw in ["<script>alert(1)", "<img", "<svg onload", "<b>pool"] {
        assert!(!html.contains(raw), "{raw} is not escaped");
    }
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"));
    assert!(html.contains("&#39; &quot; &amp;amp;"));
    assert_eq!(html::esc("a\u{1}b"), "a\u{fffd}b");
}

#[test]
fn report_markdown_has_the_verdict_table_and_escapes_cells() {
    let m = load_text(MINING, Duration::ZERO).unwrap();
    let md = markdown::render(&m);
    assert!(md.starts_with("# Tracer report: vm\n"), "{md}");
    assert!(
        md.contains("| scope | key | what | verdict | confidence | alert | evidence | first |\n| --- |"),
        "{md}"
    );
    assert!(md.contains("| tree | 1077 | /usr/bin/bash | crypto_mining | 0.969 | **yes** | 3 |"), "{md}");
    assert!(md.contains("| mining-protocol | speaks a mining protocol on a connection it opened |"), "{md}");
    assert!(md.contains("## Top peers") && md.contains("127.0.0.1:33713"), "{md}");

    let md = markdown::render(&hostile());
    assert!(!md.contains("<script>") && md.contains("\\<script\\>alert(1)\\</script\\>"), "{md}");
    assert!(md.contains("a\\|b"), "a cell's | is escaped");
    assert_eq!(
        markdown::cell("crypto_mining _x_ *y* `z`\nnext"),
        "crypto_mining \\_x\\_ \\*y\\* \\`z\\` next"
    );
    // Every row of every table has as many cells as its header.
    for block in md.split("\n\n").filter(|b| b.starts_with('|')) {
        let cells = |l: &str| l.replace("\\|", "").matches('|').count();
        let head = cells(block.lines().next().unwrap());
        assert!(block.lines().all(|l| cells(l) == head), "{block}");
    }
}

#[test]
fn report_sparklines_scale_to_the_largest() {
    assert_eq!(markdown::sparkline(&[0.0, 1.0, 2.0, 4.0]), "·▃▅█");
    assert_eq!(markdown::sparkline(&[0.0, 0.0]), "··");
}

#[test]
fn report_of_damaged_input_names_the_line() {
    let mut text: Vec<&str> = MINING.lines().take(3).collect();
    text.push("{\"kind\": \"process.exec\", truncated");
    let e = format!("{:#}", load_text(&text.join("\n"), Duration::ZERO).unwrap_err());
    assert!(e.contains("capture line 4") && e.contains("not a JSON record"), "{e}");
    let e = format!("{:#}", load_text("", Duration::ZERO).unwrap_err());
    assert!(e.contains("no records"), "{e}");
    let e = format!("{:#}", load_text("[1, 2]\n", Duration::ZERO).unwrap_err());
    assert!(e.contains("capture line 1") && e.contains("no kind"), "{e}");
}

#[test]
fn report_long_runs_are_merged_into_bins() {
    let points: Vec<Point> = (0..1000)
        .map(|i| Point {
            end: f64::from(i),
            interval_s: 1.0,
            by_category: BTreeMap::from([(
                "ordinary".to_string(),
                Usage { cpu_seconds: 0.5, tx_bytes: 10, rx_bytes: 0 },
            )]),
        })
        .collect();
    let bins = rebin(points, 120);
    assert!(bins.len() <= 120, "{}", bins.len());
    let cpu: f64 = bins.iter().map(|b| b.by_category["ordinary"].cpu_seconds).sum();
    assert_eq!(cpu, 500.0);
    assert_eq!(bins.iter().map(|b| b.interval_s).sum::<f64>(), 1000.0);
}

#[test]
fn report_command_lines_are_clipped_on_characters() {
    assert_eq!(clip("abc", 3), "abc");
    assert_eq!(clip("abcd", 3), "abc…");
    assert_eq!(clip("ééé", 2), "éé…");
}
