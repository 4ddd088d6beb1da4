//! Forensic record and replay: a live capture of a process speaking a mining
//! protocol holds the live verdict; replaying it offline gives the same
//! classification and host.summary records, byte for byte. Committed captures replay to their
//! committed verdicts; damaged captures are read up to the damage.

mod support;

use std::{io::Read as _, net::TcpListener, path::PathBuf, process::Command};

use support::{fork_child, wait_rusage};

fn tracer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tracer"))
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/captures")
}

fn replay(capture: &std::path::Path) -> (bool, String, String) {
    replay_with(capture, &[])
}

fn replay_with(capture: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = tracer().arg("replay").args(args).arg(capture).output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn classification_lines(text: &str) -> Vec<String> {
    text.lines().filter(|l| l.contains("\"kind\":\"classification\"")).map(str::to_string).collect()
}

/// What the classifier wrote: verdicts and host summaries.
fn classifier_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains("\"kind\":\"classification\"") || l.contains("\"kind\":\"host.summary\""))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_live_capture_replays_to_the_same_verdicts() {
    support::require_root();
    let dir = std::env::temp_dir().join(format!("tracer-capture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let capture = dir.join("capture.jsonl.gz");
    let pool = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = pool.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = pool.accept().unwrap();
        let mut b = Vec::new();
        s.read_to_end(&mut b).unwrap();
    });

    // The capture is gzip (unreadable while written): the same records on
    // stdout say when the programs are attached.
    let mut rec = tracer()
        .args(["record", "--health-interval", "1h", "--activity-interval", "1s", "--summary-interval", "1s"])
        .args(["--sink", "-", "-o"])
        .arg(&capture)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let stdout = rec.stdout.take().unwrap();
    let drain = std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("\"status\":\"started\"") {
                let _ = started_tx.send(());
            }
        }
    });
    started_rx.recv_timeout(support::READY_TIMEOUT).expect("the recorder started");

    let login = b"{\"id\":1,\"jsonrpc\":\"2.0\",\"method\":\"login\",\"params\":{\"login\":\"44AF\",\"pass\":\"x\",\"agent\":\"XMRig/6.21.0\"}}\n";
    let child = fork_child(|| {
        let mut buf = [0u8; 256];
        buf[..login.len()].copy_from_slice(login);
        // SAFETY: syscalls only.
        unsafe {
            let fd = support::connect_loopback(port);
            if fd < 0 {
                return 2;
            }
            libc::write(fd, buf.as_ptr().cast(), login.len());
            libc::close(fd);
        }
        0
    });
    assert_eq!(wait_rusage(child).0, 0);
    server.join().unwrap();
    // Activity reports and host summaries for a few seconds.
    std::thread::sleep(std::time::Duration::from_millis(3500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(rec.id() as i32, libc::SIGINT) };
    assert!(rec.wait().unwrap().success());
    drain.join().unwrap();

    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(&capture).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["kind"], "tracer.capture");
    let live = classification_lines(&text);
    let mining: Vec<&String> = live.iter().filter(|l| l.contains(&format!("\"pid\":{child}"))).collect();
    assert!(!mining.is_empty(), "the live stream classified the child: {live:#?}");
    // The verdict itself, not a mention in its evidence.
    let verdict: serde_json::Value = serde_json::from_str(mining[0]).unwrap();
    assert_eq!(verdict["classification"]["category"], "crypto_mining", "{verdict}");

    assert!(verdict["classification"]["usage"]["by_category"]["crypto_mining"].is_object(), "{verdict}");
    let summaries = text.lines().filter(|l| l.contains("\"kind\":\"host.summary\"")).count();
    assert!(summaries >= 2, "a host summary a second: {summaries}");

    let (ok, replayed, err) = replay_with(&capture, &["--summary-interval", "1s"]);
    assert!(ok, "{err}");
    assert_eq!(classification_lines(&replayed), live, "replay gives the live verdicts");
    assert_eq!(classifier_lines(&replayed), classifier_lines(&text), "and the live host summaries");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Each committed capture replays to its committed verdicts.
#[test]
fn committed_captures_replay_to_their_verdicts() {
    let mut checked = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".capture.jsonl") {
            continue;
        }
        let expected =
            std::fs::read_to_string(path.with_file_name(name.replace(".capture.jsonl", ".verdicts.jsonl")))
                .unwrap();
        let (ok, replayed, err) = replay(&path);
        assert!(ok, "{name}: {err}");
        assert_eq!(replayed, expected, "{name}");
        checked += 1;
    }
    assert!(checked >= 2, "fixtures missing");
}

/// A capture cut mid-line, or with a corrupt line, is read up to the damage:
/// the verdicts from before it come out, and the error names the line.
#[test]
fn damaged_captures_are_read_up_to_the_damage() {
    let good = std::fs::read_to_string(fixtures().join("mining-xmrig-login.capture.jsonl")).unwrap();
    let expected = std::fs::read_to_string(fixtures().join("mining-xmrig-login.verdicts.jsonl")).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let dir = std::env::temp_dir().join(format!("tracer-damaged-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // Garbage after all the records: every verdict, then the error.
    let corrupt = dir.join("corrupt.jsonl");
    std::fs::write(&corrupt, format!("{}\n{{\"kind\": oops\n", lines.join("\n"))).unwrap();
    let (ok, out, err) = replay(&corrupt);
    assert!(!ok);
    assert_eq!(out, expected, "nothing before the damage is lost");
    assert!(err.contains(&format!("capture line {}", lines.len() + 1)), "{err}");

    // Garbage just before the record the verdict comes from (the miner's
    // login): reading stops there, so no verdict; going on past the bad
    // line would give it.
    let login = lines.iter().position(|l| l.contains("\"kind\":\"network.first_bytes\"")).unwrap();
    let mut damaged: Vec<&str> = lines.clone();
    damaged.insert(login, "{\"kind\": oops");
    let middle = dir.join("middle.jsonl");
    std::fs::write(&middle, damaged.join("\n") + "\n").unwrap();
    let (ok, out, err) = replay(&middle);
    assert!(!ok);
    assert!(!expected.is_empty());
    assert_eq!(out, "", "no verdict from records after the damage");
    assert!(err.contains(&format!("capture line {}", login + 1)), "{err}");

    // Cut mid-line: the verdicts of every whole line before the cut.
    let cut = dir.join("cut.jsonl");
    let text = lines.join("\n");
    std::fs::write(&cut, &text[..text.len() - 7]).unwrap();
    let (ok, out, err) = replay(&cut);
    assert!(!ok);
    assert!(err.contains(&format!("capture line {}", lines.len())), "{err}");
    let whole = dir.join("whole.jsonl");
    std::fs::write(&whole, lines[..lines.len() - 1].join("\n") + "\n").unwrap();
    let (_, before_cut, _) = replay(&whole);
    assert_eq!(out, before_cut, "the lines before the cut give what they give alone");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A capture piped in (`zcat x.gz | tracer replay -`, `/dev/stdin`, a
/// FIFO) replays like the file: the gzip magic is not read twice.
#[test]
fn a_piped_capture_replays_to_its_verdicts() {
    use std::{io::Write as _, process::Stdio};
    let capture = std::fs::read(fixtures().join("mining-xmrig-login.capture.jsonl")).unwrap();
    let expected = std::fs::read_to_string(fixtures().join("mining-xmrig-login.verdicts.jsonl")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&capture).unwrap();
    let gz = gz.finish().unwrap();
    for (arg, what, bytes) in [
        ("-", "plain", &capture),
        ("-", "gzip", &gz),
        ("/dev/stdin", "plain", &capture),
        ("/dev/stdin", "gzip", &gz),
    ] {
        let mut child = tracer()
            .args(["replay", arg])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let bytes = bytes.clone();
        let writer = std::thread::spawn(move || stdin.write_all(&bytes).unwrap());
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(out.status.success(), "replay {arg} ({what}): {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected, "replay {arg} ({what})");
    }
}
