//! `tracer top` in a real terminal: a tmux session of its own runs it,
//! keys are sent to it and the screen is read back (capture-pane), against
//! the real tracer's API and against the tracer top runs itself.

mod support;

use std::{
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

use support::{Tracer, scratch};

/// One at a time: each loads the programs, and the host has two cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// A tmux server and session of this test's own, killed on drop (also when
/// an assertion failed), running `tracer top` under a shell that writes its
/// exit status to a file (tmux tells a dead pane's status only at times).
struct Tmux {
    server: String,
    status: std::path::PathBuf,
}

impl Tmux {
    fn start(name: &str, dir: &std::path::Path, args: &str) -> Self {
        let status = dir.join("status");
        let t = Self { server: format!("tracer-{name}-{}", std::process::id()), status };
        let command = format!("{} top {args}; echo $? > {}", tracer_bin(), t.status.display());
        let ok =
            t.tmux(&["new-session", "-d", "-s", "top", "-x", "160", "-y", "45", &command]).status.success();
        assert!(ok, "tmux new-session {command}");
        t
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux").arg("-L").arg(&self.server).args(args).output().expect("running tmux")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        assert!(self.tmux(&["send-keys", "-t", "top", keys]).status.success(), "send-keys {keys}");
    }

    /// `tracer top`'s pid: the pane's shell's child.
    fn top_pid(&self) -> u32 {
        let out = self.tmux(&["display-message", "-p", "-t", "top", "#{pane_pid}"]);
        let shell = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap();
        children.split_whitespace().next().expect("the shell's child").parse().unwrap()
    }

    /// Captures until `pred` holds; panics with the last screen after `timeout`.
    fn wait_for(&self, timeout: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "{what} within {timeout:?}; the screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for `tracer top` to end; its exit status as the shell saw it
    /// (128 + N: signal N ended it).
    fn wait_exit(&self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(status) = std::fs::read_to_string(&self.status)
                && status.ends_with('\n')
            {
                return status.trim().parse().expect("an exit status");
            }
            assert!(Instant::now() < deadline, "top still runs; the screen:\n{}", self.screen());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// Sessions the test started, killed (each whole process group) and reaped on drop.
struct Sessions(Vec<u32>);

impl Drop for Sessions {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: signalling and reaping our own children and their groups.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
                libc::kill(pid as i32, libc::SIGKILL);
                libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// An ordinary tree: a session of two processes spinning on the CPU, busier
/// than the miner on this host's two cores.
fn busy_tree() -> u32 {
    support::fork_child(|| {
        // SAFETY: syscalls only.
        unsafe {
            libc::setsid();
            libc::fork();
        }
        support::burn_cpu(120_000);
        0
    })
}

/// The line under the table's header: the top row.
fn top_row(screen: &str) -> &str {
    let mut lines = screen.lines().skip_while(|l| !(l.contains("SCOPE") && l.contains("KEY")));
    lines.nth(1).unwrap_or_default()
}

fn names(line: &str, pid: u32) -> bool {
    line.split_whitespace().any(|w| w == pid.to_string())
}

fn tracer_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tracer")
}

#[test]
fn top_sorts_the_miner_first_by_suspicion_and_shows_its_evidence() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("top");
    let socket = dir.join("api.sock");
    let tracer = Tracer::start(&["--api", socket.to_str().unwrap(), "--activity-interval", "1s"]);
    let busy = busy_tree();
    let miner = support::mining_tree(120_000);
    let _sessions = Sessions(vec![busy, miner]);

    let tmux = Tmux::start("top", &dir, &format!("--socket {}", socket.display()));
    // Each wait holds out for the whole view: a capture can be taken while
    // the screen is being redrawn. By CPU (the default), the two-process
    // ordinary tree comes before the miner (other work on the host may
    // come before both).
    tmux.wait_for(
        Duration::from_secs(20),
        "sorted by cpu, the busy tree above the miner, and the category totals",
        |s| {
            let row = |pid| s.lines().position(|l| names(l, pid));
            let miner_row = s.lines().find(|l| names(l, miner)).unwrap_or_default();
            let totals = s.lines().nth(1).unwrap_or_default();
            matches!((row(busy), row(miner)), (Some(b), Some(m)) if b < m)
                && miner_row.contains("crypto_mining")
                && s.contains("sort: cpu")
                && totals.contains("crypto_mining")
                && totals.contains("tree")
        },
    );

    tmux.keys("s");
    tmux.wait_for(Duration::from_secs(5), "the miner on top by suspicion, with its verdict and alert", |s| {
        let row = top_row(s);
        s.contains("sort: suspicion")
            && names(row, miner)
            && row.contains("crypto_mining")
            && row.contains('!')
    });

    tmux.keys("Enter");
    // The verdict's lines can be drawn before the evidence rows are.
    tmux.wait_for(
        Duration::from_secs(5),
        "the miner's verdict (ALERT), what was seen (xmrig), and the process, the indicator and its weight on one line",
        |s| {
            s.contains(&format!("tree {miner}"))
                && s.contains("ALERT")
                && s.contains("xmrig")
                && s.lines().any(|l| names(l, miner) && l.contains("mining-protocol") && l.contains("4.0"))
        },
    );

    tmux.keys("Escape");
    tmux.wait_for(Duration::from_secs(5), "the table again", |s| names(top_row(s), miner));
    tmux.keys("q");
    assert_eq!(tmux.wait_exit(Duration::from_secs(5)), 0, "q ends it");
    drop(tracer);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn top_with_no_service_traces_the_host_itself() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    support::require_root();
    let dir = scratch("top-self");
    let nobody = dir.join("nobody.sock");
    let tmux = Tmux::start("top-self", &dir, &format!("--socket {}", nobody.display()));
    tmux.wait_for(Duration::from_secs(10), "the starting indication", |s| {
        s.contains("loading programs") || s.contains("waiting for the first activity interval")
    });
    let top = tmux.top_pid();
    let own = format!("/run/tracer/top-{top}.sock");
    let screen = tmux.wait_for(Duration::from_secs(30), "rows of its own tracing", |s| {
        s.contains("self-traced") && top_row(s).starts_with(['>', ' ']) && top_row(s).contains("tree")
    });
    assert!(std::path::Path::new(&own).exists(), "its private socket {own}: {screen}");
    // A signal ends it as q does: the view, its own tracer and its socket.
    // SAFETY: signalling the process the pane runs.
    assert_eq!(unsafe { libc::kill(top as i32, libc::SIGTERM) }, 0);
    assert_eq!(tmux.wait_exit(Duration::from_secs(25)), 0, "SIGTERM ends it cleanly");
    assert!(!std::path::Path::new(&own).exists(), "{own} is removed when top ends");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Its terminal closing under it (the tmux server killed, as an ssh session
/// drops) ends the view: it neither lingers nor spins on the dead terminal.
#[test]
fn top_ends_when_its_terminal_goes_away() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("top-hangup");
    let socket = dir.join("api.sock");
    let tracer = Tracer::start(&["--api", socket.to_str().unwrap(), "--activity-interval", "1s"]);
    let tmux = Tmux::start("top-hangup", &dir, &format!("--socket {}", socket.display()));
    tmux.wait_for(Duration::from_secs(20), "the table", |s| s.contains("SCOPE") && s.contains("KEY"));
    let top = tmux.top_pid();
    drop(tmux);
    let deadline = Instant::now() + Duration::from_secs(10);
    let state = || {
        std::fs::read_to_string(format!("/proc/{top}/stat")).ok().and_then(|s| {
            let after = s.rsplit_once(") ")?.1;
            after.chars().next()
        })
    };
    while matches!(state(), Some(s) if s != 'Z') {
        if Instant::now() >= deadline {
            let cpu = std::fs::read_to_string(format!("/proc/{top}/stat")).unwrap_or_default();
            // SAFETY: ending the process this test started, before failing.
            unsafe { libc::kill(top as i32, libc::SIGKILL) };
            panic!("tracer top (pid {top}) still runs 10 s after its terminal went away: {cpu}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(tracer);
    let _ = std::fs::remove_dir_all(&dir);
}
