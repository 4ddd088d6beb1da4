//! `tracer report`: the committed mining capture becomes an HTML report
//! that a real browser (headless Chromium) renders, with the verdict, its
//! evidence and nothing fetched from outside; the Markdown report has the
//! verdict table; markup in records stays text; damage names its line.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

fn tracer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tracer"))
}

fn capture() -> PathBuf {
    support::repo().join("tests/fixtures/captures/mining-xmrig-login.capture.jsonl")
}

fn report(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = tracer().arg("report").args(args).output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn html_report(input: &Path, dir: &Path) -> (PathBuf, String) {
    let html = dir.join("report.html");
    let (ok, _, err) = report(&[input.as_os_str(), "--html".as_ref(), html.as_os_str()]);
    assert!(ok, "report failed: {err}");
    let text = std::fs::read_to_string(&html).unwrap();
    (html, text)
}

/// Debian's Chromium; the test fails, never skips, without it.
fn chromium() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("chromium is not installed: `apt-get install chromium` (cargo xtask test installs it)")
}

/// Runs headless Chromium on `page` with `args`, killing it after 30 s.
fn headless(page: &Path, dir: &Path, args: &[String]) -> Output {
    let mut child = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", dir.join("chromium-profile").display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium took longer than 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn dump_dom(page: &Path, dir: &Path) -> String {
    String::from_utf8(headless(page, dir, &["--dump-dom".to_string()]).stdout).unwrap()
}

#[test]
fn the_mining_capture_reports_its_verdict_in_a_self_contained_page() {
    let dir = support::scratch("report-html");
    let (page, html) = html_report(&capture(), &dir);
    for want in [
        "crypto_mining",
        "ALERT",
        "tree 1077",
        "mining-protocol",
        "speaks a mining protocol on a connection it opened",
        "xmrig-stratum login to 127.0.0.1:33713",
        "miner-agent",
        "<svg class=\"chart\"",
        "<svg class=\"timeline\"",
    ] {
        assert!(html.contains(want), "the report lacks {want}");
    }
    let lower = html.to_ascii_lowercase();
    for external in [
        "src=\"http",
        "href=\"http",
        "src='http",
        "href='http",
        "@import",
        "url(http",
        "<link",
        "<script src",
    ] {
        assert!(!lower.contains(external), "the report fetches from outside: {external}");
    }

    // A real browser renders it: the page's script ran and met no error.
    let dom = dump_dom(&page, &dir);
    assert!(dom.contains("data-report-ready=\"charts=2 evidence=3\""), "not rendered as expected: {dom}");
    assert!(!dom.contains("data-report-error="), "a script error: {dom}");
    assert!(dom.contains("xmrig-stratum login to 127.0.0.1:33713"));

    // And draws it: a real PNG of the window's size, with the charts' and
    // the alert's colours on it.
    let shot = dir.join("report.png");
    headless(
        &page,
        &dir,
        &[format!("--screenshot={}", shot.display()), "--window-size=1280,2400".to_string()],
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().expect("the screenshot is a PNG");
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    assert_eq!((frame.width, frame.height), (1280, 2400));
    let channels = match frame.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected screenshot colour type {other:?}"),
    };
    assert_eq!(frame.bit_depth, png::BitDepth::Eight);
    let pixels: Vec<&[u8]> = buf[..frame.buffer_size()].chunks(channels).collect();
    let near = |p: &[u8], rgb: [u8; 3]| p.iter().zip(rgb).all(|(a, b)| a.abs_diff(b) <= 12);
    let non_white = pixels.iter().filter(|p| p[..3].iter().any(|c| *c < 235)).count();
    let header = pixels.iter().filter(|p| near(p, [0x26, 0x32, 0x38])).count();
    let mining = pixels.iter().filter(|p| near(p, [0xd6, 0x27, 0x28]) || near(p, [0xb7, 0x1c, 0x1c])).count();
    let fraction = non_white as f64 / pixels.len() as f64;
    assert!(fraction > 0.04, "the screenshot is nearly blank: {:.1}% not white", 100.0 * fraction);
    assert!(header > 1280 * 40, "no header band: {header} pixels");
    assert!(mining > 500, "no crypto_mining colour (chart, timeline, alert): {mining} pixels");
}

#[test]
fn markup_in_records_stays_text_in_the_browser() {
    let dir = support::scratch("report-hostile");
    let formats = support::repo().join("tests/fixtures/formats");
    let read = |kind: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(formats.join(format!("{kind}.native.json"))).unwrap())
            .unwrap()
    };
    // Each payload would mark the page if it ran.
    let pwn = "<img src=x onerror=\"document.documentElement.setAttribute('data-pwned','1')\">";
    let mut verdict = read("classification");
    verdict["classification"]["evidence"][0]["comm"] = json!("<script>alert(1)</script>");
    verdict["classification"]["evidence"][0]["seen"] = json!(pwn);
    let mut activity = read("process.activity");
    activity["process"]["comm"] = json!("<script>alert(1)</script>");
    activity["process"]["argv"] = json!(["\"><script>document.title='pwned'</script>", pwn]);
    let mut dns = read("network.dns");
    dns["dns"]["questions"][0]["name"] = json!("</code></td><script>alert(3)</script>.example");
    let log = dir.join("hostile.jsonl");
    let lines: Vec<String> = [verdict, activity, dns].iter().map(|r| r.to_string()).collect();
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();

    let (page, html) = html_report(&log, &dir);
    assert_eq!(html.matches("<script").count(), 1, "only the report's own script");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    let dom = dump_dom(&page, &dir);
    assert!(dom.contains("data-report-ready="), "not rendered: {dom}");
    assert!(!dom.contains("data-pwned=\"1\"") && !dom.contains("<title>pwned"), "a payload ran: {dom}");
    assert!(!dom.contains("data-report-error="), "a script error: {dom}");
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "the comm is shown as text");

    let (ok, md, err) = report(&[log.as_os_str(), "--format".as_ref(), "md".as_ref()]);
    assert!(ok, "{err}");
    // Markdown shows a backslash-escaped `<` as itself, never as a tag.
    assert!(md.contains("\\<script\\>alert(1)"), "{md}");
    assert!(md.match_indices('<').all(|(i, _)| md[..i].ends_with('\\')), "an unescaped <: {md}");
}

#[test]
fn the_markdown_report_has_the_verdict_table() {
    let (ok, md, err) = report(&[capture().as_os_str(), "--format".as_ref(), "md".as_ref()]);
    assert!(ok, "{err}");
    assert!(md.contains("| scope | key | what | verdict | confidence | alert | evidence | first |"), "{md}");
    assert!(md.contains("| tree | 1077 | /usr/bin/bash | crypto_mining | 0.969 | **yes** | 3 |"), "{md}");
    assert!(md.contains("| xmrig-stratum login to 127.0.0.1:33713 | 4 |"), "{md}");
    assert!(!md.contains("<svg"), "no charts in Markdown");

    // -o FILE.md means Markdown without --format.
    let dir = support::scratch("report-md");
    let out = dir.join("ticket.md");
    let (ok, _, err) = report(&[capture().as_os_str(), "-o".as_ref(), out.as_os_str()]);
    assert!(ok, "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), md);
}

#[test]
fn a_damaged_capture_is_an_error_naming_the_line() {
    let dir = support::scratch("report-damaged");
    let text = std::fs::read_to_string(capture()).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let cut = &lines[4][..lines[4].len() / 2];
    lines[4] = cut;
    let damaged = dir.join("damaged.jsonl");
    std::fs::write(&damaged, lines.join("\n")).unwrap();
    let out = dir.join("report.html");
    let (ok, _, err) = report(&[damaged.as_os_str(), "--html".as_ref(), out.as_os_str()]);
    assert!(!ok, "a damaged capture must fail");
    assert!(err.contains("capture line 5") && err.contains("not a JSON record"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "no report from a damaged capture");
}
