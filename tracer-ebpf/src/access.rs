//! Two file-like accesses that tell mining apart, from hooks that cost
//! nothing on the syscall path: the cgroup device hook (every open of a
//! device node, in the opener's context) sees an MSR device opened for
//! writing (XMRig's MSR mod: /dev/cpu/N/msr), and the cgroup sysctl hook
//! sees a write to the huge-page knob (vm.nr_hugepages). Both allow every
//! access (the kernel ANDs the verdicts of all programs, so others' policies
//! stand); they only report, as `file.open` records of the path.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_sysctl_get_name},
    macros::{cgroup_device, cgroup_sysctl},
    programs::{DeviceContext, SysctlContext},
};
use tracer_common::{EventKind, FileOpenEvent, file_source};

use crate::common::{fill_header, reserve, should_trace};

/// Documentation/admin-guide/devices.txt: char 202 is cpu/msr.
const MSR_MAJOR: u32 = 202;
/// include/uapi/linux/bpf.h: bpf_devcg_acc_type, bpf_devcg_dev_type.
const DEVCG_ACC_READ: u32 = 2;
const DEVCG_ACC_WRITE: u32 = 4;
const DEVCG_DEV_CHAR: u32 = 2;
const O_WRONLY: u32 = 1;
const O_RDWR: u32 = 2;

#[cgroup_device]
pub fn device_access(ctx: DeviceContext) -> i32 {
    let _ = on_device(&ctx);
    1
}

#[inline(always)]
fn on_device(ctx: &DeviceContext) -> Option<()> {
    // SAFETY: the context the kernel passed.
    let dev = unsafe { &*ctx.device };
    let (access, kind) = (dev.access_type >> 16, dev.access_type & 0xffff);
    if dev.major != MSR_MAJOR || kind != DEVCG_DEV_CHAR || access & DEVCG_ACC_WRITE == 0 {
        return None;
    }
    if !should_trace((bpf_get_current_pid_tgid() >> 32) as u32) {
        return None;
    }
    let flags = if access & DEVCG_ACC_READ != 0 { O_RDWR } else { O_WRONLY };
    let minor = dev.minor;
    report(flags, file_source::DEVICE, |path| {
        // "/dev/cpu/" + the minor (the CPU) + "/msr".
        const HEAD: &[u8] = b"/dev/cpu/";
        path[..HEAD.len()].copy_from_slice(HEAD);
        let mut digits = [0u8; 10];
        let (mut n, mut len) = (minor, 0usize);
        while len < digits.len() {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for i in 0..digits.len() {
            if i < len {
                path[HEAD.len() + i] = digits[len - 1 - i];
            }
        }
        let at = HEAD.len() + len;
        for (i, &c) in b"/msr".iter().enumerate() {
            path[(at + i) & 63] = c;
        }
        (at + 4) as u32
    })
}

#[cgroup_sysctl]
pub fn sysctl_access(ctx: SysctlContext) -> i32 {
    let _ = on_sysctl(&ctx);
    1
}

/// The knob's name as `bpf_sysctl_get_name` gives it (below /proc/sys).
const HUGEPAGES: &[u8] = b"vm/nr_hugepages";

#[inline(always)]
fn on_sysctl(ctx: &SysctlContext) -> Option<()> {
    // SAFETY: the context the kernel passed.
    if unsafe { (*ctx.sysctl).write } == 0 {
        return None;
    }
    let mut name = [0u8; 32];
    // SAFETY: the buffer and its length.
    let n = unsafe { bpf_sysctl_get_name(ctx.sysctl, name.as_mut_ptr().cast(), name.len() as u64, 0) };
    if n != HUGEPAGES.len() as i64 || name[..HUGEPAGES.len()] != *HUGEPAGES {
        return None;
    }
    if !should_trace((bpf_get_current_pid_tgid() >> 32) as u32) {
        return None;
    }
    report(O_WRONLY, file_source::SYSCTL, |path| {
        const HEAD: &[u8] = b"/proc/sys/";
        path[..HEAD.len()].copy_from_slice(HEAD);
        path[HEAD.len()..HEAD.len() + HUGEPAGES.len()].copy_from_slice(HUGEPAGES);
        (HEAD.len() + HUGEPAGES.len()) as u32
    })
}

/// A `file.open` record of the current task for the path `write_path`
/// puts at the start of the record's buffer (returning its length).
#[inline(always)]
fn report(flags: u32, source: u32, write_path: impl FnOnce(&mut [u8; 64]) -> u32) -> Option<()> {
    let mut entry = reserve::<FileOpenEvent>(EventKind::FileOpen)?;
    // SAFETY: reservation sized for FileOpenEvent; the fields user space
    // reads are written (the path up to path_len).
    let event = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut event.header, EventKind::FileOpen);
    let mut path = [0u8; 64];
    event.path_len = write_path(&mut path);
    event.path[..64].copy_from_slice(&path);
    event.flags = flags;
    event.old_path_len = 0;
    event.source = source;
    crate::common::submit(entry);
    Some(())
}
