//! GPU driver activity per process: device discovery, ioctl decoding, and
//! the ledger that turns the kernel's cumulative per-CPU counters into
//! per-interval activity.
//!
//! What this measures is driver activity, not GPU utilisation: kernel
//! launches on NVIDIA and ROCm go through mapped doorbells, not ioctls.

pub mod decode;
pub mod devices;
pub mod nvml;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use tracer_common::{ANY_MINOR, GpuStat, GpuStatKey};

use self::{
    decode::{OpClass, decode},
    devices::{GpuDevice, vendor_name},
};

/// One decoded operation's activity over an interval.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OpView {
    pub op: String,
    pub class: OpClass,
    pub calls: u64,
    pub errors: u64,
    pub time_us: u64,
    /// Bytes allocated or mapped by successful calls.
    #[serde(skip_serializing_if = "is_zero")]
    pub bytes: u64,
    /// Bytes asked for, failed calls included.
    #[serde(skip_serializing_if = "is_zero")]
    pub bytes_requested: u64,
    /// The raw ioctl command, for anything a reader wants to check.
    pub cmd: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeviceView {
    pub device: Option<String>,
    pub major: u32,
    pub minor: u32,
    pub vendor: &'static str,
    pub driver: String,
    pub calls: u64,
    pub errors: u64,
    pub ioctl_time_us: u64,
    pub ops: Vec<OpView>,
}

/// The per-process summary the classifier reads.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub calls: u64,
    pub errors: u64,
    pub ioctl_time_us: u64,
    /// Compute engines, channels, queues and contexts created.
    pub compute_contexts: u64,
    pub memory_allocs: u64,
    /// Bytes allocated by successful calls, where the argument carries a size.
    pub memory_allocated_bytes: u64,
    /// Bytes asked for, failed calls included.
    pub memory_requested_bytes: u64,
    pub submissions: u64,
    pub waits: u64,
}

impl Summary {
    pub fn add(&mut self, o: &Summary) {
        self.calls += o.calls;
        self.errors += o.errors;
        self.ioctl_time_us += o.ioctl_time_us;
        self.compute_contexts += o.compute_contexts;
        self.memory_allocs += o.memory_allocs;
        self.memory_allocated_bytes += o.memory_allocated_bytes;
        self.memory_requested_bytes += o.memory_requested_bytes;
        self.submissions += o.submissions;
        self.waits += o.waits;
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ActivityView {
    pub interval_s: f64,
    pub summary: Summary,
    pub devices: Vec<DeviceView>,
    /// Utilisation and memory from NVIDIA's management library, where present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvml: Option<nvml::NvmlSample>,
}

/// Turns snapshots of `GPU_STATS` into per-process activity.
pub struct GpuLedger {
    devices: Vec<GpuDevice>,
    paths: HashMap<(u32, u32), String>,
    /// Cumulative counters as of the last report, per key.
    reported: HashMap<GpuStatKey, GpuStat>,
}

impl GpuLedger {
    pub fn new(devices: Vec<GpuDevice>, extra_paths: HashMap<(u32, u32), String>) -> Self {
        let mut paths = devices::device_paths();
        paths.extend(extra_paths);
        Self { devices, paths, reported: HashMap::new() }
    }

    /// Devices in `found` not registered yet (a driver loaded after start),
    /// now registered here; the caller registers them in the kernel.
    pub fn add_new(&mut self, found: Vec<GpuDevice>) -> Vec<GpuDevice> {
        let new: Vec<GpuDevice> =
            found.into_iter().filter(|f| !self.devices.iter().any(|d| d.key() == f.key())).collect();
        if !new.is_empty() {
            self.devices.extend(new.iter().cloned());
            self.paths.extend(devices::device_paths());
        }
        new
    }

    pub fn device_for(&self, rdev: u32) -> Option<&GpuDevice> {
        let any = (rdev & !0xfffff) | ANY_MINOR;
        self.devices.iter().find(|d| d.key() == rdev).or_else(|| self.devices.iter().find(|d| d.key() == any))
    }

    /// `major:minor=vendor (driver)` for each registered device, for health.
    pub fn describe_devices(&self) -> Vec<String> {
        self.devices
            .iter()
            .map(|d| {
                let minor = d.minor.map_or_else(|| "*".to_string(), |m| m.to_string());
                format!("{}:{minor}={} ({})", d.major, vendor_name(d.vendor), d.driver)
            })
            .collect()
    }

    pub fn device_path(&self, rdev: u32) -> Option<String> {
        self.paths.get(&(rdev >> 20, rdev & 0xfffff)).cloned()
    }

    /// Activity since the last call, per process, from a fresh snapshot.
    /// Keys of `only` (when given) are the only ones considered.
    pub fn activity(
        &mut self,
        snapshot: &HashMap<GpuStatKey, GpuStat>,
        only: Option<u32>,
        interval_s: f64,
    ) -> BTreeMap<u32, ActivityView> {
        // (tgid, rdev) -> ops
        let mut per: BTreeMap<u32, BTreeMap<u32, Vec<(GpuStatKey, GpuStat)>>> = BTreeMap::new();
        for (key, now) in snapshot {
            if only.is_some_and(|t| t != key.tgid) {
                continue;
            }
            let before = self.reported.get(key).copied().unwrap_or_default();
            let delta = GpuStat {
                calls: now.calls.saturating_sub(before.calls),
                errors: now.errors.saturating_sub(before.errors),
                total_ns: now.total_ns.saturating_sub(before.total_ns),
                bytes: now.bytes.saturating_sub(before.bytes),
                bytes_requested: now.bytes_requested.saturating_sub(before.bytes_requested),
            };
            self.reported.insert(*key, *now);
            if delta.calls > 0 {
                per.entry(key.tgid).or_default().entry(key.rdev).or_default().push((*key, delta));
            }
        }
        per.into_iter()
            .map(|(tgid, devices)| {
                let mut summary = Summary::default();
                let devices = devices
                    .into_iter()
                    .map(|(rdev, mut ops)| self.device_view(rdev, &mut ops, &mut summary))
                    .collect();
                (tgid, ActivityView { interval_s, summary, devices, nvml: None })
            })
            .collect()
    }

    fn device_view(&self, rdev: u32, ops: &mut [(GpuStatKey, GpuStat)], summary: &mut Summary) -> DeviceView {
        let dev = self.device_for(rdev);
        let vendor = dev.map_or(tracer_common::gpu_vendor::OTHER, |d| d.vendor);
        ops.sort_by(|a, b| b.1.calls.cmp(&a.1.calls).then(a.0.cmp(&b.0)));
        let mut view = DeviceView {
            device: self.device_path(rdev),
            major: rdev >> 20,
            minor: rdev & 0xfffff,
            vendor: vendor_name(vendor),
            driver: dev.map_or_else(|| "unknown".into(), |d| d.driver.clone()),
            calls: 0,
            errors: 0,
            ioctl_time_us: 0,
            ops: Vec::new(),
        };
        for (key, stat) in ops.iter() {
            let op = decode(vendor, key.cmd, key.sub);
            let time_us = stat.total_ns / 1000;
            view.calls += stat.calls;
            view.errors += stat.errors;
            view.ioctl_time_us += time_us;
            let ok = stat.calls - stat.errors.min(stat.calls);
            match op.class {
                OpClass::ComputeContext => summary.compute_contexts += ok,
                OpClass::MemoryAlloc => {
                    summary.memory_allocs += ok;
                    summary.memory_allocated_bytes += stat.bytes;
                    summary.memory_requested_bytes += stat.bytes_requested;
                }
                OpClass::Submission => summary.submissions += stat.calls,
                OpClass::Wait => summary.waits += stat.calls,
                _ => {}
            }
            view.ops.push(OpView {
                op: op.name,
                class: op.class,
                calls: stat.calls,
                errors: stat.errors,
                time_us,
                bytes: stat.bytes,
                bytes_requested: stat.bytes_requested,
                cmd: format!("{:#x}", key.cmd),
            });
        }
        summary.calls += view.calls;
        summary.errors += view.errors;
        summary.ioctl_time_us += view.ioctl_time_us;
        view
    }

    /// Forgets a process's keys (after its final account).
    pub fn forget(&mut self, tgid: u32) {
        self.reported.retain(|k, _| k.tgid != tgid);
    }
}

/// The `gpu_open` record body.
#[derive(Debug, Serialize)]
pub struct OpenView {
    pub device: Option<String>,
    pub major: u32,
    pub minor: u32,
    pub vendor: &'static str,
    pub driver: String,
    pub fd: i32,
    pub first_op: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::gpu_vendor;

    fn ledger() -> GpuLedger {
        let nv = GpuDevice { major: 195, minor: None, vendor: gpu_vendor::NVIDIA, driver: "nvidia".into() };
        GpuLedger { devices: vec![nv], paths: HashMap::new(), reported: HashMap::new() }
    }

    fn key(tgid: u32, cmd: u32, sub: u32) -> GpuStatKey {
        GpuStatKey { tgid, rdev: tracer_common::kernel_dev(195, 255), cmd, sub }
    }

    #[test]
    fn intervals_report_deltas_and_idle_processes_nothing() {
        let mut l = ledger();
        let mut snap = HashMap::new();
        snap.insert(
            key(10, 0xc030462b, 0xcbc0),
            GpuStat { calls: 2, errors: 0, total_ns: 4000, bytes: 0, bytes_requested: 0 },
        );
        snap.insert(
            key(10, 0xc030462b, 0x40),
            GpuStat { calls: 3, errors: 1, total_ns: 9000, bytes: 1 << 30, bytes_requested: 3 << 29 },
        );
        snap.insert(
            key(11, 0xc020462a, 0xc36f0108),
            GpuStat { calls: 5, errors: 0, total_ns: 5000, bytes: 0, bytes_requested: 0 },
        );
        let a = l.activity(&snap, None, 5.0);
        let p10 = &a[&10];
        assert_eq!(p10.summary.compute_contexts, 2);
        assert_eq!(p10.summary.memory_allocs, 2, "errors are not allocations");
        assert_eq!(p10.summary.memory_allocated_bytes, 1 << 30);
        assert_eq!(p10.summary.memory_requested_bytes, 3 << 29);
        assert_eq!(p10.summary.calls, 5);
        assert_eq!(p10.devices[0].ops[0].op, "RM_ALLOC NV01_MEMORY_LOCAL_USER");
        assert_eq!(a[&11].summary.submissions, 5);

        // Process 10 makes one more call; 11 is idle and must not appear.
        snap.get_mut(&key(10, 0xc030462b, 0xcbc0)).unwrap().calls = 3;
        let b = l.activity(&snap, None, 5.0);
        assert_eq!(b.len(), 1);
        assert_eq!(b[&10].summary.calls, 1);
        assert_eq!(b[&10].summary.compute_contexts, 1);
    }
}
