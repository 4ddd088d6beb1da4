//! A host as it comes: tracefs not mounted. Several tracers started at the
//! same moment (a test suite, a service and an operator's `tracer check`)
//! must all mount it or find it mounted, and run.
//!
//! A test binary of its own: it unmounts tracefs, which no other tracer may
//! be reading while it does.

mod support;

use std::{ffi::CString, path::Path};

use support::Tracer;

/// Unmounts every tracefs stacked on `dir`; false if none was mounted there.
fn unmount_all(dir: &str) -> bool {
    let c = CString::new(dir).unwrap();
    let mut any = false;
    // SAFETY: a NUL-terminated path; umount2 has no other preconditions.
    while unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        any = true;
    }
    any
}

#[test]
fn tracers_started_together_on_a_host_without_tracefs_all_run() {
    support::require_root();
    unmount_all("/sys/kernel/tracing");
    // With debugfs mounted, the kernel mounts tracefs under it on access;
    // then only the "already mounted" path is exercised.
    let debugfs_tracing = Path::new("/sys/kernel/debug/tracing/events").is_dir();
    if !debugfs_tracing {
        assert!(
            !Path::new("/sys/kernel/tracing/events").is_dir(),
            "tracefs is still mounted at /sys/kernel/tracing"
        );
    }
    // Spawned at the same instant: each checks, finds nothing and mounts.
    const TRACERS: usize = 6;
    let together = std::sync::Arc::new(std::sync::Barrier::new(TRACERS));
    let starts: Vec<_> = (0..TRACERS)
        .map(|_| {
            let together = together.clone();
            std::thread::spawn(move || {
                together.wait();
                Tracer::start(&[]).stop().len()
            })
        })
        .collect();
    for s in starts {
        let records = s.join().expect("a tracer started on a host without tracefs failed to run");
        assert!(records >= 2, "started and final health records at least");
    }
    assert!(
        Path::new("/sys/kernel/tracing/events").is_dir() || debugfs_tracing,
        "tracefs is mounted afterwards"
    );
}
