//! GPU ioctl attribution through the real kernel path. These hosts have no
//! GPU, so a device node is made with `mknod` on the major:minor of an
//! existing driver (/dev/full, 1:7) and registered as a GPU of a vendor;
//! a forked child then issues ioctls with real NVIDIA/AMD/Intel command
//! numbers and argument layouts on it. The driver rejects them (ENOTTY),
//! which the tracer must count as errors; everything else — device
//! resolution in the kernel, the class read from the argument, XFER
//! unwrapping, exact counts, attribution — is what real hardware exercises.

mod support;

use std::{ffi::CString, path::PathBuf, time::Duration};

use serde_json::Value;
use support::{Tracer, of_kind};

/// /dev/full: a driver every kernel has, rarely ioctl'd.
const MAJOR: u32 = 1;
const MINOR: u32 = 7;

struct Node {
    dir: PathBuf,
    path: PathBuf,
}

impl Node {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tracer-gpu-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let c = CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: mknod with a valid path; we are root in these tests.
        let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(MAJOR, MINOR)) };
        assert_eq!(rc, 0, "mknod: {}", std::io::Error::last_os_error());
        Self { dir, path }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One ioctl the child makes: (fd index: 0 = GPU node, 1 = /dev/null), cmd, arg.
type Call = (usize, u64, *mut u8);

/// Forks a child that opens the node and /dev/null and makes `calls`, then
/// exits. Everything is allocated before fork; the child only makes syscalls.
fn run_child(node: &std::path::Path, calls: &[Call]) -> u32 {
    let gpu = CString::new(node.to_str().unwrap()).unwrap();
    let null = CString::new("/dev/null").unwrap();
    // SAFETY: the child makes only async-signal-safe syscalls, then _exit.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            let fds = [libc::open(gpu.as_ptr(), libc::O_RDWR), libc::open(null.as_ptr(), libc::O_RDWR)];
            if fds[0] < 0 || fds[1] < 0 {
                libc::_exit(2);
            }
            for &(which, cmd, arg) in calls {
                libc::ioctl(fds[which], cmd as _, arg);
            }
            libc::_exit(0);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child failed: {status:#x}");
        pid as u32
    }
}

fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}
fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

fn op<'a>(activity: &'a Value, name: &str) -> &'a Value {
    activity["gpu"]["devices"][0]["ops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["op"] == name)
        .unwrap_or_else(|| panic!("no op {name} in {activity:#}"))
}

#[test]
fn nvidia_ioctls_are_resolved_decoded_and_counted_per_process() {
    let node = Node::new("nvidiactl");
    let spec = format!("{}=nvidia", node.path.display());
    let tracer = Tracer::start(&["--gpu-device", &spec, "--activity-interval", "1h"]);

    // NVOS64 (48 B): RM_ALLOC of HOPPER_COMPUTE_A; hClass @12.
    let mut nvos64 = [0u8; 48];
    put_u32(&mut nvos64, 12, 0xcbc0);
    // NVOS21 (32 B): RM_ALLOC of 1 MiB of VRAM; params->size @64.
    let mut alloc_params = [0u8; 128];
    put_u64(&mut alloc_params, 64, 1 << 20);
    let mut nvos21 = [0u8; 32];
    put_u32(&mut nvos21, 12, 0x40);
    put_u64(&mut nvos21, 16, alloc_params.as_mut_ptr() as u64);
    // NVOS54: RM_CONTROL GPU_GET_INFO_V2; cmd @8.
    let mut nvos54 = [0u8; 32];
    put_u32(&mut nvos54, 8, 0x20800102);
    // NV_ESC_IOCTL_XFER_CMD carrying RM_ALLOC(NVOS64) of AMPERE_COMPUTE_A.
    let mut inner = [0u8; 48];
    put_u32(&mut inner, 12, 0xc6c0);
    let mut xfer = [0u8; 16];
    put_u32(&mut xfer, 0, 0x2b);
    put_u32(&mut xfer, 4, 48);
    put_u64(&mut xfer, 8, inner.as_mut_ptr() as u64);

    let mut calls: Vec<Call> = Vec::new();
    calls.extend([(0, 0xc030462b, nvos64.as_mut_ptr()); 3]);
    calls.push((0, 0xc020462b, nvos21.as_mut_ptr()));
    calls.extend([(0, 0xc020462a, nvos54.as_mut_ptr()); 2]);
    calls.push((0, 0xc01046d3, xfer.as_mut_ptr()));
    // The same commands on a non-GPU fd must not appear anywhere.
    calls.extend([(1, 0xc030462b, nvos64.as_mut_ptr()); 5]);
    let child = run_child(&node.path, &calls);
    let records = tracer.stop();

    let opens = of_kind(&records, "gpu.open", child);
    assert_eq!(opens.len(), 1, "one first-use record per device: {opens:#?}");
    let open = &opens[0]["gpu"];
    assert_eq!(open["device"], node.path.to_str().unwrap());
    assert_eq!((open["major"].as_u64(), open["minor"].as_u64()), (Some(1), Some(7)));
    assert_eq!(open["vendor"], "nvidia");
    assert_eq!(open["first_op"], "RM_ALLOC HOPPER_COMPUTE_A");

    let activity = of_kind(&records, "gpu.activity", child);
    assert_eq!(activity.len(), 1, "the exit produces the final account: {activity:#?}");
    let a = activity[0];
    assert_eq!(a["process"]["pid"], child);
    assert_eq!(a["gpu"]["devices"].as_array().unwrap().len(), 1);
    let hopper = op(a, "RM_ALLOC HOPPER_COMPUTE_A");
    assert_eq!((hopper["calls"].as_u64(), hopper["errors"].as_u64()), (Some(3), Some(3)));
    assert_eq!(hopper["class"], "compute_context");
    let vram = op(a, "RM_ALLOC NV01_MEMORY_LOCAL_USER");
    assert_eq!(vram["calls"], 1);
    assert_eq!(vram["bytes_requested"], 1 << 20);
    assert!(vram.get("bytes").is_none(), "a failed allocation allocates nothing");
    assert_eq!(op(a, "RM_CONTROL GPU_GET_INFO_V2")["calls"], 2);
    let ampere = op(a, "RM_ALLOC AMPERE_COMPUTE_A");
    assert_eq!(ampere["calls"], 1, "XFER_CMD is unwrapped to the call it carries");
    assert_eq!(ampere["cmd"], "0xc030462b");
    let summary = &a["gpu"]["summary"];
    assert_eq!(summary["calls"], 7, "ioctls on /dev/null are not GPU activity: {summary}");
    assert_eq!(summary["errors"], 7);
    assert_eq!(summary["memory_requested_bytes"], 1 << 20);
}

#[test]
fn amd_and_intel_commands_are_decoded_with_their_arguments() {
    let kfd = Node::new("kfd");
    let spec = format!("{}=amd-kfd", kfd.path.display());
    let tracer = Tracer::start(&["--gpu-device", &spec, "--activity-interval", "1h"]);

    // kfd_ioctl_create_queue_args: queue_type @40 = COMPUTE_AQL (2).
    let mut create_queue = [0u8; 88];
    put_u32(&mut create_queue, 40, 2);
    // kfd_ioctl_alloc_memory_of_gpu_args: size @8, flags @36 = VRAM.
    let mut alloc = [0u8; 40];
    put_u64(&mut alloc, 8, 256 << 20);
    put_u32(&mut alloc, 36, 1);
    let mut wait = [0u8; 24];
    let mut calls: Vec<Call> =
        vec![(0, 0xc0584b02, create_queue.as_mut_ptr()), (0, 0xc0284b16, alloc.as_mut_ptr())];
    calls.extend([(0, 0xc0184b0c, wait.as_mut_ptr()); 4]);
    // An unknown KFD command is kept under its raw number.
    calls.push((0, 0xc0084b7f, wait.as_mut_ptr()));
    let child = run_child(&kfd.path, &calls);
    let records = tracer.stop();

    let activity = of_kind(&records, "gpu.activity", child);
    assert_eq!(activity.len(), 1, "{activity:#?}");
    let a = activity[0];
    assert_eq!(a["gpu"]["devices"][0]["vendor"], "amd-kfd");
    assert_eq!(op(a, "CREATE_QUEUE COMPUTE_AQL")["calls"], 1);
    assert_eq!(op(a, "ALLOC_MEMORY_OF_GPU VRAM")["bytes_requested"], 256u64 << 20);
    assert_eq!(op(a, "WAIT_EVENTS")["calls"], 4);
    assert_eq!(op(a, "KFD 0x7f")["calls"], 1);
    assert_eq!(a["gpu"]["summary"]["waits"], 4);
    assert_eq!(a["gpu"]["summary"]["calls"], 7);
}

#[test]
fn drm_submissions_are_counted_by_driver() {
    let card = Node::new("renderD128");
    let spec = format!("{}=i915", card.path.display());
    let tracer = Tracer::start(&["--gpu-device", &spec, "--activity-interval", "1h"]);
    let mut execbuf = [0u8; 64];
    let mut create = [0u8; 16];
    put_u64(&mut create, 0, 4096);
    let mut calls: Vec<Call> = vec![(0, 0xc010645b, create.as_mut_ptr())];
    calls.extend([(0, 0x40406469, execbuf.as_mut_ptr()); 10]);
    let child = run_child(&card.path, &calls);
    let records = tracer.stop();

    let activity = of_kind(&records, "gpu.activity", child);
    assert_eq!(activity.len(), 1, "{activity:#?}");
    let a = activity[0];
    assert_eq!(op(a, "I915_GEM_EXECBUFFER2")["calls"], 10);
    assert_eq!(op(a, "I915_GEM_CREATE")["bytes_requested"], 4096);
    assert_eq!(a["gpu"]["summary"]["submissions"], 10);
}

/// A gpu.open lost in a full ring is written at the process's next GPU
/// call: without it the process would never be known as a GPU user, and
/// its final GPU account would never be written.
#[test]
fn a_dropped_gpu_open_is_written_at_the_next_call() {
    let card = Node::new("renderD129");
    let spec = format!("{}=i915", card.path.display());
    let tracer =
        Tracer::start(&["--gpu-device", &spec, "--ring-buffer-kib", "4", "--activity-interval", "1h"]);
    let gpu = CString::new(card.path.to_str().unwrap()).unwrap();
    let mut create = [0u8; 16];
    put_u64(&mut create, 0, 4096);
    let mut go = [0i32; 2];
    // SAFETY: pipe with a valid out array.
    assert_eq!(unsafe { libc::pipe(go.as_mut_ptr()) }, 0);
    // The ring fills while the tracer is stopped: these processes' records
    // alone are many times its 4 KiB.
    tracer.signal(libc::SIGSTOP);
    for _ in 0..50 {
        assert!(std::process::Command::new("/bin/true").status().unwrap().success());
    }
    // SAFETY: the child makes only async-signal-safe syscalls, then _exit.
    let child = unsafe {
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            let fd = libc::open(gpu.as_ptr(), libc::O_RDWR);
            // First call: its gpu.open finds the ring full.
            libc::ioctl(fd, 0xc010645b_u64 as _, create.as_mut_ptr());
            let mut byte = 0u8;
            libc::read(go[0], (&raw mut byte).cast(), 1);
            libc::ioctl(fd, 0xc010645b_u64 as _, create.as_mut_ptr());
            libc::_exit(0);
        }
        pid as u32
    };
    std::thread::sleep(Duration::from_millis(300));
    tracer.signal(libc::SIGCONT);
    // Read out (4 KiB take the tracer microseconds), so the second call
    // finds room.
    std::thread::sleep(Duration::from_millis(800));
    // SAFETY: writing one byte to our pipe, then reaping our child.
    unsafe {
        assert_eq!(libc::write(go[1], b"g".as_ptr().cast(), 1), 1);
        let mut status = 0;
        assert_eq!(libc::waitpid(child as i32, &mut status, 0), child as i32);
    }
    let records = tracer.stop();
    let health = support::final_health(&records);
    assert!(
        health["dropped"]["gpu_open"].as_u64().unwrap() >= 1,
        "the first gpu.open must be lost: {health}"
    );
    let opens = of_kind(&records, "gpu.open", child);
    assert_eq!(opens.len(), 1, "{opens:#?}");
    let activity = of_kind(&records, "gpu.activity", child);
    assert_eq!(activity.len(), 1, "the final GPU account: {activity:#?}");
    assert_eq!(op(activity[0], "I915_GEM_CREATE")["calls"], 2);
}
