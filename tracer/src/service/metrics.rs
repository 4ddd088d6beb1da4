//! Prometheus metrics (`--metrics ADDR`, and `/metrics` on the local API):
//! the tracer's own health (records, drops by kind, sink delivery and
//! losses, each program's run time from the kernel's bpf_stats when
//! enabled) and the host by category (trees, containers, CPU cores and
//! bytes/s). Text exposition format 0.0.4, which every scraper reads.

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::api::{Request, Shared};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Label values are quoted strings: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", label(v))).collect();
            let _ = write!(self.0, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// One family from a JSON object of counts (`{"ringbuf_full": 3}`).
    fn counts(&mut self, name: &str, help: &str, key: &str, map: &Value) {
        let Some(map) = map.as_object() else { return };
        self.family(name, "counter", help);
        for (k, v) in map {
            if let Some(n) = v.as_f64() {
                self.sample(name, &[(key, k)], n);
            }
        }
    }
}

/// The whole exposition, from what the view holds now.
pub fn render(shared: &Shared) -> String {
    let mut t = Text(String::new());
    let view = shared.view();
    let h = view.health.as_ref().map(|r| &r["health"]).cloned().unwrap_or(Value::Null);
    let num = |k: &str| h[k].as_f64().unwrap_or(0.0);

    t.family("tracer_up", "gauge", "1 while the tracer runs and has written its first health record.");
    t.sample("tracer_up", &[], if view.health.is_some() { 1.0 } else { 0.0 });
    t.family("tracer_uptime_seconds", "gauge", "Seconds since the tracer started.");
    t.sample("tracer_uptime_seconds", &[], num("uptime_s"));
    t.family("tracer_events_read_total", "counter", "Kernel records read from the ring buffer.");
    t.sample("tracer_events_read_total", &[], num("events_read"));
    t.counts("tracer_events_by_kind_total", "Kernel records read, by kind.", "kind", &h["events_by_kind"]);
    t.counts(
        "tracer_kernel_dropped_total",
        "Kernel records lost (ring buffer full), by kind.",
        "kind",
        &h["dropped"],
    );
    t.counts(
        "tracer_kernel_losses_total",
        "Evidence the kernel programs saw and could not report, by why.",
        "why",
        &h["kernel_losses"],
    );
    t.counts(
        "tracer_truncated_total",
        "Records captured shorter than sent or received, by kind.",
        "kind",
        &h["truncated"],
    );
    t.family("tracer_decode_errors_total", "counter", "Kernel records that could not be decoded.");
    t.sample("tracer_decode_errors_total", &[], num("decode_errors"));
    t.family("tracer_programs", "gauge", "Kernel programs by state (attached, failed, skipped).");
    for state in ["attached", "failed", "skipped"] {
        t.sample("tracer_programs", &[("state", state)], num(&format!("programs_{state}")));
    }

    if let Some(sinks) = h["sinks"].as_array() {
        for (field, help) in [
            ("records", "Records that passed a sink's filter."),
            ("delivered", "Records a sink wrote or its receiver accepted."),
        ] {
            let name = format!("tracer_sink_{field}_total");
            t.family(&name, "counter", help);
            for s in sinks {
                t.sample(
                    &name,
                    &[("sink", s["sink"].as_str().unwrap_or(""))],
                    s[field].as_f64().unwrap_or(0.0),
                );
            }
        }
        t.family("tracer_sink_dropped_total", "counter", "Records a sink lost, by why.");
        for s in sinks {
            for (why, n) in s["dropped"].as_object().into_iter().flatten() {
                let sink = s["sink"].as_str().unwrap_or("");
                t.sample(
                    "tracer_sink_dropped_total",
                    &[("sink", sink), ("why", why)],
                    n.as_f64().unwrap_or(0.0),
                );
            }
        }
        t.family("tracer_sink_failed", "gauge", "1 while a sink is out of order.");
        for s in sinks {
            let failed = if s["failed"] == true { 1.0 } else { 0.0 };
            t.sample("tracer_sink_failed", &[("sink", s["sink"].as_str().unwrap_or(""))], failed);
        }
    }

    let programs = shared.program_stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    if !programs.is_empty() {
        t.family("tracer_program_runs_total", "counter", "Runs of each kernel program (bpf_stats).");
        for (name, runs, _) in &programs {
            t.sample("tracer_program_runs_total", &[("program", name)], *runs as f64);
        }
        t.family(
            "tracer_program_run_seconds_total",
            "counter",
            "CPU time each kernel program ran (bpf_stats).",
        );
        for (name, _, ns) in &programs {
            t.sample("tracer_program_run_seconds_total", &[("program", name)], *ns as f64 / 1e9);
        }
    }

    let by = view.by_category();
    t.family("tracer_category_trees", "gauge", "Process trees by workload category (ordinary: no verdict).");
    for (c, v) in &by {
        t.sample("tracer_category_trees", &[("category", c)], v.trees as f64);
    }
    t.family("tracer_category_containers", "gauge", "Containers by workload category.");
    for (c, v) in &by {
        t.sample("tracer_category_containers", &[("category", c)], v.containers as f64);
    }
    t.family(
        "tracer_category_cpu_cores",
        "gauge",
        "CPU in use by workload category, cores (last activity interval).",
    );
    for (c, v) in &by {
        t.sample("tracer_category_cpu_cores", &[("category", c)], (v.cpu_cores * 1000.0).round() / 1000.0);
    }
    t.family(
        "tracer_category_network_bytes_per_second",
        "gauge",
        "Network bytes per second by workload category and direction.",
    );
    for (c, v) in &by {
        t.sample(
            "tracer_category_network_bytes_per_second",
            &[("category", c), ("direction", "tx")],
            v.tx_bytes_per_s.round(),
        );
        t.sample(
            "tracer_category_network_bytes_per_second",
            &[("category", c), ("direction", "rx")],
            v.rx_bytes_per_s.round(),
        );
    }
    let alerts = view.entries().iter().filter(|e| e.alert()).count();
    t.family(
        "tracer_alerting_scopes",
        "gauge",
        "Trees and containers whose verdict calls for attention now.",
    );
    t.sample("tracer_alerting_scopes", &[], alerts as f64);
    t.0
}

/// Serves `GET /metrics` on `addr` from a thread of its own.
pub fn serve(addr: SocketAddr, shared: Arc<Shared>) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr).with_context(|| format!("--metrics {addr}: binding"))?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new().name("tracer-metrics".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            // One scrape at a time: scrapers ask every few seconds.
            let _ = answer(stream, &shared);
        }
    })?;
    Ok(bound)
}

fn answer(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut header = String::new();
    while reader.read_line(&mut header)? > 0 && header.trim_end() != "" {
        header.clear();
    }
    let (status, ctype, body) = match Request::parse(&line) {
        Ok(r) if r.path == "/metrics" => ("200 OK", CONTENT_TYPE, render(shared)),
        Ok(_) => ("404 Not Found", "text/plain", "only /metrics is served here\n".to_owned()),
        Err((_, why)) => ("400 Bad Request", "text/plain", format!("{why}\n")),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::record_fixture as fixture;

    #[test]
    fn the_exposition_has_health_sinks_and_categories() {
        let shared = Shared::default();
        let activity = fixture("tree.activity");
        let mut health = fixture("tracer.health");
        // One run's records: the health comes in the same interval.
        health["mono_ns"] = activity["mono_ns"].clone();
        health["health"]["sinks"] = serde_json::json!([
            {"sink": "-", "records": 5, "delivered": 4, "dropped": {"queue_full": 1}, "failed": false},
        ]);
        for r in [fixture("classification"), activity, health] {
            shared.view().observe(&r);
        }
        *shared.program_stats.lock().unwrap() = vec![("sched_switch".into(), 10, 2_000)];
        let text = render(&shared);
        assert!(text.contains("tracer_up 1\n"), "{text}");
        assert!(text.contains("tracer_category_trees{category=\"crypto_mining\"} 1\n"), "{text}");
        assert!(text.contains("tracer_category_cpu_cores{category=\"crypto_mining\"} 0.818\n"), "{text}");
        assert!(
            text.contains("tracer_program_run_seconds_total{program=\"sched_switch\"} 0.000002\n"),
            "{text}"
        );
        assert!(text.contains("tracer_sink_dropped_total{sink=\"-\",why=\"queue_full\"} 1\n"), "{text}");
        // Every sample line is NAME{labels} VALUE with a family declared.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} ")), "undeclared {name}");
            assert!(l.rsplit(' ').next().unwrap().parse::<f64>().is_ok(), "{l}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
