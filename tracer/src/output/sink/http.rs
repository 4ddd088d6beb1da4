//! Batched JSON POSTs: newline-delimited records, Splunk HEC events or
//! Elasticsearch `_bulk` create actions. Records go through the on-disk
//! spool (see spool.rs); a sender thread posts one sealed batch at a time,
//! retrying with exponential back-off (0.25 s doubling to 30 s) on network
//! errors, timeouts, 408, 429 and 5xx, and on 401/403/404 too, since a
//! fixed token or URL should find its records waiting. A batch the receiver
//! refuses as malformed (400, 413, 422) is dropped and counted `rejected`.
//!
//! `_bulk` actions carry an `_id` made from the record's bytes, so a batch
//! sent again after a lost response creates nothing twice.

use std::{
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::{
    Meta, SharedStats, Sink, lock,
    spec::{HttpOptions, HttpShape, hide_password},
    spool::{Queue, Segment, Spool},
};

/// Seconds since the epoch of an RFC 3339 UTC time as the tracer writes it.
fn epoch_seconds(time: &str) -> Option<f64> {
    let b = time.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| time.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (H. Hinnant), the inverse of rfc3339_nanos.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let frac: f64 = match time.get(19..20) {
        Some(".") => {
            let digits: String = time[20..].chars().take_while(char::is_ascii_digit).collect();
            format!("0.{digits}").parse().unwrap_or(0.0)
        }
        _ => 0.0,
    };
    Some((days * 86_400 + hh * 3600 + mm * 60 + ss) as f64 + frac)
}

/// A stable id for a record: the same bytes always give the same id, on
/// every build (std's hasher may change between Rust releases, and a batch
/// spooled before an upgrade and sent after must keep its ids). Two
/// FNV-1a 64-bit hashes with different offset bases: 128 bits.
fn record_id(line: &[u8]) -> String {
    fn fnv1a(basis: u64, bytes: &[u8]) -> u64 {
        bytes.iter().fold(basis, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
    }
    format!("{:016x}{:016x}", fnv1a(0xcbf2_9ce4_8422_2325, line), fnv1a(0x6c62_272e_07bb_0142, line))
}

/// The request-body lines for one record, in the endpoint's shape.
pub fn body_lines(opts: &HttpOptions, format: &str, meta: &Meta, line: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(line.len() + 160);
    match opts.shape {
        HttpShape::Ndjson => out.extend_from_slice(line),
        HttpShape::SplunkHec => {
            let mut envelope = serde_json::Map::new();
            if let Some(t) = epoch_seconds(meta.time) {
                envelope.insert("time".into(), Value::from((t * 1e6).round() / 1e6));
            }
            envelope.insert("host".into(), Value::from(meta.host));
            envelope.insert("source".into(), Value::from("tracer"));
            let sourcetype = opts.sourcetype.clone().unwrap_or_else(|| format!("tracer:{format}"));
            envelope.insert("sourcetype".into(), Value::from(sourcetype));
            if let Some(index) = &opts.index {
                envelope.insert("index".into(), Value::from(index.as_str()));
            }
            // The record goes in as it is, not re-encoded.
            let head = serde_json::to_vec(&Value::Object(envelope))?;
            out.extend_from_slice(&head[..head.len() - 1]);
            out.extend_from_slice(b",\"event\":");
            out.extend_from_slice(line);
            out.push(b'}');
        }
        HttpShape::EsBulk => {
            let mut action = serde_json::Map::new();
            if let Some(index) = &opts.index {
                action.insert("_index".into(), Value::from(index.as_str()));
            }
            action.insert("_id".into(), Value::from(record_id(line)));
            serde_json::to_writer(&mut out, &serde_json::json!({ "create": action }))?;
            out.push(b'\n');
            out.extend_from_slice(line);
        }
    }
    out.push(b'\n');
    Ok(out)
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Delivered { rejected: u64 },
    Rejected(String),
    Retry(String),
}

/// The policy per status (see the module comment), apart from the request
/// so that every status can be tested.
fn outcome_of(status: u16, shape: HttpShape, text: &str, records: u64) -> Outcome {
    match status {
        // Items Elasticsearch asks to retry (429: es_rejected_execution):
        // the whole batch goes again; the items it already took come
        // back 409 (same _id), which is not a failure.
        200..=299 if shape == HttpShape::EsBulk && bulk_items_to_retry(text) > 0 => {
            Outcome::Retry(format!("_bulk: {} items answered 429", bulk_items_to_retry(text)))
        }
        200..=299 if shape == HttpShape::EsBulk => {
            Outcome::Delivered { rejected: bulk_rejections(text).min(records) }
        }
        200..=299 => Outcome::Delivered { rejected: 0 },
        400 | 413 | 422 => Outcome::Rejected(format!("HTTP {status}: {}", snippet(text))),
        _ => Outcome::Retry(format!("HTTP {status}: {}", snippet(text))),
    }
}

struct Sender {
    opts: HttpOptions,
    /// The URL without `user:password@`, which goes in a Basic header.
    url: String,
    /// The URL as errors show it: the password hidden, the user kept.
    shown: String,
    basic: Option<String>,
    agent: ureq::Agent,
    queue: Queue,
}

impl Sender {
    fn new(opts: HttpOptions, agent: ureq::Agent, queue: Queue) -> Self {
        let (url, basic) = split_userinfo(&opts.url);
        let shown = hide_password(&opts.url);
        Self { opts, url, shown, basic, agent, queue }
    }

    fn post(&self, body: &[u8], records: u64) -> Outcome {
        let content_type = match self.opts.shape {
            HttpShape::SplunkHec => "application/json",
            _ => "application/x-ndjson",
        };
        let mut req = self.agent.post(&self.url).header("Content-Type", content_type);
        if let Some(basic) = &self.basic {
            req = req.header("Authorization", format!("Basic {basic}"));
        } else if let Some(token) = &self.opts.token {
            let scheme = match self.opts.shape {
                HttpShape::SplunkHec => "Splunk",
                HttpShape::EsBulk => "ApiKey",
                HttpShape::Ndjson => "Bearer",
            };
            req = req.header("Authorization", format!("{scheme} {token}"));
        }
        let mut resp = match req.send(body) {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(format!("{}: {e}", self.shown)),
        };
        let status = resp.status().as_u16();
        let text = resp.body_mut().with_config().limit(16 << 20).read_to_string().unwrap_or_default();
        outcome_of(status, self.opts.shape, &text, records)
    }

    fn run(self) {
        let mut backoff = Duration::from_millis(250);
        while let Some(seg) = self.queue.next() {
            let body = match std::fs::read(&seg.path) {
                Ok(b) => b,
                Err(e) => {
                    let mut s = lock(self.queue.stats());
                    s.error(format!("reading {}: {e}", seg.path.display()));
                    s.lost("spool_unreadable", seg.records);
                    drop(s);
                    self.queue.remove(&seg);
                    continue;
                }
            };
            match self.post(&body, seg.records) {
                Outcome::Delivered { rejected } => {
                    self.done(&seg, seg.records - rejected, rejected, None);
                    backoff = Duration::from_millis(250);
                }
                Outcome::Rejected(why) => self.done(&seg, 0, seg.records, Some(why)),
                Outcome::Retry(why) => {
                    lock(self.queue.stats()).error(why);
                    self.queue.release();
                    if !self.queue.pause(backoff) {
                        break;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    fn done(&self, seg: &Segment, delivered: u64, rejected: u64, why: Option<String>) {
        {
            let mut s = lock(self.queue.stats());
            s.delivered += delivered;
            s.lost("rejected", rejected);
            if let Some(why) = why {
                s.last_error = Some(why);
            }
        }
        self.queue.remove(seg);
    }
}

/// The status of each item of a `_bulk` response that reported errors.
fn bulk_item_statuses(text: &str) -> Vec<u64> {
    let Ok(v) = serde_json::from_str::<Value>(text) else { return Vec::new() };
    if v.get("errors") != Some(&Value::Bool(true)) {
        return Vec::new();
    }
    let items = v.get("items").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    items.iter().filter_map(|i| i.as_object()?.values().next()?.get("status")?.as_u64()).collect()
}

/// Items of a `_bulk` response to send again (429).
fn bulk_items_to_retry(text: &str) -> u64 {
    bulk_item_statuses(text).into_iter().filter(|&s| s == 429).count() as u64
}

/// Items of a `_bulk` response that failed for good; 409 (the id exists:
/// the record was delivered before) is not a failure.
fn bulk_rejections(text: &str) -> u64 {
    bulk_item_statuses(text).into_iter().filter(|s| !(200..300).contains(s) && *s != 409 && *s != 429).count()
        as u64
}

/// `https://user:pw@host/p` -> (`https://host/p`, base64 of `user:pw`).
pub(crate) fn split_userinfo(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else { return (url.to_string(), None) };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            (format!("{scheme}://{host}{}", &rest[authority_end..]), Some(base64(userinfo.as_bytes())))
        }
        None => (url.to_string(), None),
    }
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn snippet(text: &str) -> String {
    text.chars().take(200).collect()
}

/// TLS that trusts the certificates in a PEM file, and only those.
pub(crate) fn trusting(path: &std::path::Path) -> Result<ureq::tls::TlsConfig> {
    let pem = std::fs::read(path).with_context(|| format!("option ca_file: reading {}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(c) =
            item.with_context(|| format!("option ca_file: {} is not PEM", path.display()))?
        {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        anyhow::bail!("option ca_file: no certificate in {}", path.display());
    }
    let roots = ureq::tls::RootCerts::new_with_certs(&certs);
    Ok(ureq::tls::TlsConfig::builder().root_certs(roots).build())
}

pub struct HttpSink {
    opts: HttpOptions,
    format: &'static str,
    spool: Spool,
    sender: Option<JoinHandle<()>>,
}

impl HttpSink {
    pub fn open(opts: HttpOptions, format: &'static str, stats: SharedStats) -> Result<Self> {
        let lines_per_record = if opts.shape == HttpShape::EsBulk { 2 } else { 1 };
        let spool = Spool::open(
            &opts.spool_dir,
            opts.spool_max,
            (opts.batch_records, opts.batch_bytes, opts.batch_age),
            lines_per_record,
            stats,
        )?;
        let mut config = ureq::Agent::config_builder();
        if let Some(path) = &opts.ca_file {
            config = config.tls_config(trusting(path)?);
        }
        let agent: ureq::Agent = config
            .timeout_global(Some(opts.timeout))
            .http_status_as_error(false)
            .user_agent(concat!("tracer/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let sender = Sender::new(opts.clone(), agent, spool.queue.clone());
        let sender = std::thread::Builder::new()
            .name("http-sink".into())
            .spawn(move || sender.run())
            .context("starting the HTTP sender")?;
        Ok(Self { opts, format, spool, sender: Some(sender) })
    }
}

impl Sink for HttpSink {
    fn write(&mut self, line: &[u8], meta: &Meta) -> Result<()> {
        let lines = body_lines(&self.opts, self.format, meta, line)?;
        self.spool.append(&lines)
    }

    fn flush(&mut self) -> Result<()> {
        self.spool.tick()
    }

    fn finish(&mut self, deadline: Instant) -> Result<()> {
        self.spool.close(deadline)?;
        if let Some(s) = self.sender.take() {
            // Left behind, its batch stays in the spool: sent again at the
            // next start (with the same _id for Elasticsearch).
            super::join_by(s, deadline, "HTTP")?;
        }
        let pending = lock(self.spool.queue.stats()).pending.unwrap_or(0);
        if pending > 0 {
            eprintln!(
                "tracer: {pending} records for {} wait in {} and are sent at the next start",
                hide_password(&self.opts.url),
                self.opts.spool_dir.display()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_are_fixed_for_given_bytes() {
        // Pinned: a change here re-indexes every batch waiting in a spool.
        assert_eq!(record_id(b""), "cbf29ce4842223256c62272e07bb0142");
        assert_eq!(record_id(b"a"), "af63dc4c8601ec8ce5c9b63722c2ee79");
        assert_ne!(record_id(b"{\"n\":1}"), record_id(b"{\"n\":2}"));
    }

    #[test]
    fn epoch_from_rfc3339() {
        assert_eq!(epoch_seconds("1970-01-01T00:00:00.000000000Z"), Some(0.0));
        assert_eq!(epoch_seconds("2000-02-29T12:34:56.5Z"), Some(951_827_696.5));
        let ns = 1_795_219_200_123_000_000u128;
        let t = crate::output::record::rfc3339_nanos(ns);
        assert_eq!(epoch_seconds(&t), Some(1_795_219_200.123));
        assert_eq!(epoch_seconds("yesterday"), None);
    }

    fn opts(shape: HttpShape) -> HttpOptions {
        HttpOptions {
            url: "http://127.0.0.1:1/".into(),
            shape,
            token: None,
            index: Some("tracer".into()),
            sourcetype: None,
            batch_records: 10,
            batch_bytes: 1 << 20,
            batch_age: Duration::from_secs(1),
            spool_dir: "/nonexistent".into(),
            spool_max: 1 << 20,
            timeout: Duration::from_secs(1),
            ca_file: None,
        }
    }

    #[test]
    fn shapes() {
        let meta =
            Meta { kind: "process.exec", time: "2026-11-21T00:00:00.123000000Z", host: "vm", alert: false };
        let hec = body_lines(&opts(HttpShape::SplunkHec), "ecs", &meta, b"{\"a\":1}").unwrap();
        let v: Value = serde_json::from_slice(&hec).unwrap();
        assert_eq!(v["time"], 1_795_219_200.123);
        assert_eq!(
            (v["host"].as_str(), v["sourcetype"].as_str(), v["index"].as_str()),
            (Some("vm"), Some("tracer:ecs"), Some("tracer"))
        );
        assert_eq!(v["event"]["a"], 1);
        let bulk = body_lines(&opts(HttpShape::EsBulk), "ecs", &meta, b"{\"a\":1}").unwrap();
        let lines: Vec<&[u8]> = bulk.split(|b| *b == b'\n').collect();
        assert_eq!(lines.len(), 3, "action, document, end");
        let action: Value = serde_json::from_slice(lines[0]).unwrap();
        assert_eq!(action["create"]["_index"], "tracer");
        assert_eq!(action["create"]["_id"].as_str().unwrap().len(), 32);
        assert_eq!(lines[1], b"{\"a\":1}");
        // Same bytes, same id; other bytes, other id.
        let again = body_lines(&opts(HttpShape::EsBulk), "ecs", &meta, b"{\"a\":1}").unwrap();
        assert_eq!(bulk, again);
        assert_ne!(record_id(b"{\"a\":1}"), record_id(b"{\"a\":2}"));
    }

    #[test]
    fn basic_auth_from_the_url() {
        assert_eq!(base64(b"elastic:changeme"), "ZWxhc3RpYzpjaGFuZ2VtZQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
        let (url, basic) = split_userinfo("https://elastic:changeme@es:9200/_bulk");
        assert_eq!(
            (url.as_str(), basic.as_deref()),
            ("https://es:9200/_bulk", Some("ZWxhc3RpYzpjaGFuZ2VtZQ=="))
        );
        assert_eq!(split_userinfo("http://h/a@b").1, None);
    }

    #[test]
    fn errors_do_not_show_the_url_password() {
        let dir = std::env::temp_dir().join(format!("tracer-http-errors-{}", std::process::id()));
        let stats = SharedStats::default();
        let spool = Spool::open(&dir, 1 << 20, (10, 1 << 20, Duration::from_secs(1)), 1, stats).unwrap();
        let mut o = opts(HttpShape::EsBulk);
        // Nothing listens on port 1: the connection is refused.
        o.url = "http://elastic:s3cret@127.0.0.1:1/_bulk".into();
        let agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().into();
        let sender = Sender::new(o, agent, spool.queue.clone());
        let Outcome::Retry(why) = sender.post(b"{}\n", 1) else { panic!("a refused connection is retried") };
        assert!(!why.contains("s3cret"), "{why}");
        assert!(why.contains("http://elastic:***@127.0.0.1:1/_bulk"), "{why}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Malformed batches are dropped (and counted); everything a fixed
    /// receiver, token or URL could answer differently later is retried.
    #[test]
    fn each_status_is_retried_or_dropped_as_documented() {
        let retry = |o: &Outcome| matches!(o, Outcome::Retry(_));
        for shape in [HttpShape::Ndjson, HttpShape::SplunkHec, HttpShape::EsBulk] {
            for status in [200, 201, 204] {
                assert_eq!(
                    outcome_of(status, shape, "{}", 5),
                    Outcome::Delivered { rejected: 0 },
                    "{status}"
                );
            }
            for status in [400, 413, 422] {
                assert!(
                    matches!(outcome_of(status, shape, "bad", 5), Outcome::Rejected(_)),
                    "{status} {shape:?}"
                );
            }
            for status in [301, 401, 403, 404, 408, 409, 429, 500, 502, 503, 504] {
                assert!(retry(&outcome_of(status, shape, "", 5)), "{status} {shape:?} must be retried");
            }
        }
        // A _bulk answer of 200 can still hold refusals, or ask for a retry.
        let partial = r#"{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":400}}]}"#;
        assert_eq!(outcome_of(200, HttpShape::EsBulk, partial, 2), Outcome::Delivered { rejected: 1 });
        let busy = r#"{"errors":true,"items":[{"create":{"status":429}}]}"#;
        assert!(retry(&outcome_of(200, HttpShape::EsBulk, busy, 1)));
        // The same body means nothing to a plain NDJSON receiver.
        assert_eq!(outcome_of(200, HttpShape::Ndjson, busy, 1), Outcome::Delivered { rejected: 0 });
    }

    #[test]
    fn bulk_items_answered_429_are_retried_not_rejected() {
        let resp = r#"{"errors":true,"items":[{"create":{"status":201}},
            {"create":{"status":429,"error":{"type":"es_rejected_execution_exception"}}}]}"#;
        assert_eq!(bulk_items_to_retry(resp), 1);
        assert_eq!(bulk_rejections(resp), 0);
    }

    #[test]
    fn bulk_item_failures_except_conflicts() {
        let resp = r#"{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":409}},
            {"create":{"status":400,"error":{"type":"mapper_parsing_exception"}}}]}"#;
        assert_eq!(bulk_rejections(resp), 1);
        assert_eq!(bulk_rejections(r#"{"errors":false,"items":[]}"#), 0);
    }
}
