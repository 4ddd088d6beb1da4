//! Wall time that follows the host's clock: after a step (NTP, `date -s`,
//! a VM resumed from a snapshot) records carry the new time, not the time
//! the tracer started with plus the monotonic clock.
//!
//! A binary of its own: it steps CLOCK_REALTIME, which no other test may
//! see; the step is undone when the test ends, even by a panic.

mod support;

use std::time::Duration;

use support::Tracer;

fn realtime_ns() -> i128 {
    clock_ns(libc::CLOCK_REALTIME)
}

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(id, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

fn set_realtime(ns: i128) {
    let ts = libc::timespec { tv_sec: (ns / 1_000_000_000) as i64, tv_nsec: (ns % 1_000_000_000) as i64 };
    // SAFETY: valid clock id and timespec.
    let rc = unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) };
    assert_eq!(rc, 0, "clock_settime: {}", std::io::Error::last_os_error());
}

/// Steps the wall clock by `by_ns`; dropping it steps it back by as much.
struct Step {
    by_ns: i128,
}

impl Step {
    fn forward(by_ns: i128) -> Self {
        set_realtime(realtime_ns() + by_ns);
        Self { by_ns }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        set_realtime(realtime_ns() - self.by_ns);
    }
}

/// RFC 3339 with nanoseconds, UTC, as the tracer writes it, to ns.
fn parse_time(t: &str) -> i128 {
    let out = std::process::Command::new("date").args(["-u", "-d", t, "+%s%N"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
}

#[test]
fn records_follow_a_clock_step() {
    support::require_root();
    const STEP_NS: i128 = 3_600 * 1_000_000_000;
    let mut tracer = Tracer::start(&["--health-interval", "60s", "--activity-interval", "60s"]);
    let step = Step::forward(STEP_NS);
    // A process started after the step: its exec record's time.
    let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    let exec = tracer
        .wait_for(Duration::from_secs(10), |r| r["kind"] == "process.exec" && r["process"]["pid"] == pid);
    let now = realtime_ns();
    drop(step);
    let records = tracer.stop();
    let recorded = parse_time(exec["time"].as_str().unwrap());
    let behind = now - recorded;
    eprintln!("exec recorded {:.3} s before the stepped clock's now", behind as f64 / 1e9);
    // Within the seconds the test took, not an hour behind.
    assert!(
        (0..5_000_000_000).contains(&behind),
        "exec time {} is {behind} ns behind the stepped clock",
        exec["time"]
    );
    // The final health record comes after the step was undone: back on time.
    let last = records.iter().rfind(|r| support::is_health(r, "final")).expect("a final health record");
    let last = parse_time(last["time"].as_str().unwrap());
    assert!((realtime_ns() - last).abs() < 5_000_000_000, "final health at {last}, now {}", realtime_ns());
}
