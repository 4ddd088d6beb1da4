//! The native record schema: one JSON object per line, self-describing.
//! Every record carries `schema`, `kind`, `host`, `time` (UTC, RFC 3339, ns)
//! and `mono_ns` (CLOCK_MONOTONIC); process records carry `process`.

use std::rc::Rc;

use serde::Serialize;

use super::{escape::bytes_to_string, formats::SharedProcess};
use crate::{
    kernel::{AttachStatus, KernelCounters},
    process::Process,
};

/// Bumped on any incompatible change to a record's fields.
pub const SCHEMA_VERSION: &str = "tracer.v1";

#[derive(Debug, Serialize)]
pub struct Record<'a> {
    pub schema: &'static str,
    pub kind: &'static str,
    pub host: &'a str,
    pub time: String,
    pub mono_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessEntry>,
    #[serde(flatten)]
    pub body: Body,
}

impl Record<'_> {
    /// The record's JSON line, the bytes `serde_json::to_vec` writes. A
    /// process whose text is already written is copied in, not written
    /// again: on a busy connection or a connect storm every record of a
    /// thread carries the same process, and writing it (escaping every
    /// string) was a third of a record's cost. With it, where that shared
    /// text is in the line (for `formats::write_shared`).
    pub fn to_line(&self) -> serde_json::Result<(Vec<u8>, Option<SharedProcess>)> {
        let Some(process) = self.process.as_ref().and_then(|p| p.json.clone()) else {
            return Ok((serde_json::to_vec(self)?, None));
        };
        let mut out = Vec::with_capacity(process.len() + 512);
        let strings = [
            ("{\"schema\":", self.schema),
            (",\"kind\":", self.kind),
            (",\"host\":", self.host),
            (",\"time\":", self.time.as_str()),
        ];
        for (key, value) in strings {
            out.extend_from_slice(key.as_bytes());
            serde_json::to_writer(&mut out, value)?;
        }
        out.extend_from_slice(b",\"mono_ns\":");
        serde_json::to_writer(&mut out, &self.mono_ns)?;
        let start = out.len();
        out.extend_from_slice(b",\"process\":");
        out.extend_from_slice(&process);
        let span = start..out.len();
        // The body is flattened into the record: written alone it is
        // `{"connect":{…}}`; its opening brace becomes the comma before its
        // member, its closing one closes the record.
        let body = out.len();
        serde_json::to_writer(&mut out, &self.body)?;
        out[body] = b',';
        Ok((out, Some(SharedProcess { span, text: process })))
    }
}

/// A record's process: its view, shared by the records of one thread while
/// nothing in it changes, and the view's JSON text where it was written
/// once for all of them.
#[derive(Debug, Clone)]
pub struct ProcessEntry {
    view: Rc<ProcessView>,
    json: Option<Rc<[u8]>>,
}

impl ProcessEntry {
    /// A view that later records will share: its text is written now.
    pub fn shared(view: ProcessView) -> Self {
        let json = serde_json::to_vec(&view).ok().map(Rc::from);
        Self { view: Rc::new(view), json }
    }
}

impl From<ProcessView> for ProcessEntry {
    fn from(view: ProcessView) -> Self {
        Self { view: Rc::new(view), json: None }
    }
}

impl std::ops::Deref for ProcessEntry {
    type Target = ProcessView;

    fn deref(&self) -> &ProcessView {
        &self.view
    }
}

impl Serialize for ProcessEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.view.serialize(s)
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    Exec(ExecView),
    Fork(ForkView),
    Exit(ExitView),
    Connect(ConnectView),
    Gpu(GpuBody),
    /// network.dns
    Dns(DnsView),
    /// network.first_bytes
    FirstBytes(FirstBytesView),
    /// network.listen
    Listen(ListenView),
    /// file.open
    #[serde(rename = "file")]
    FileOpen(FileOpenView),
    /// process.activity
    Activity(crate::ledger::ActivityView),
    /// tree.activity
    Tree(TreeView),
    /// container.activity
    Container(ContainerView),
    Health(HealthView),
    /// process.executable
    Executable(crate::process::executable::Executable),
}

/// A DNS query or response seen on the wire.
#[derive(Debug, Serialize)]
pub struct DnsView {
    /// query or response.
    pub direction: &'static str,
    pub server: Option<String>,
    pub port: u16,
    /// Bytes of the message; `captured` of them were parsed.
    pub bytes: u32,
    pub captured: u32,
    #[serde(flatten)]
    pub message: Option<crate::dns::Message>,
    /// Why the message could not be parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a process said first on a TCP connection it opened.
#[derive(Debug, Serialize)]
pub struct FirstBytesView {
    pub address: Option<String>,
    pub port: Option<u16>,
    /// The name this process looked up that resolved to the address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
    /// The socket's fd, where the hook saw one (the syscall hooks; the
    /// socket-layer hooks see sockets, not fds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    /// outbound: what the process sent first on a connection it opened;
    /// inbound: what the peer sent first on one the process accepted.
    /// For UDP: the socket's first datagram sent (outbound) or received
    /// (inbound), one each.
    pub direction: &'static str,
    /// tcp (a connection's first message) or udp (a first datagram).
    pub transport: &'static str,
    /// Bytes of the first message's sends; `captured` of them are kept
    /// (up to 2047, over at most 4 sends).
    pub bytes: u32,
    pub captured: u32,
    /// Sends joined into the message.
    pub sends: u32,
    #[serde(flatten)]
    pub recognised: crate::protocols::Recognised,
    /// The captured bytes as text (non-UTF-8 bytes as \xNN), at most 96.
    pub preview: String,
    /// Fields whose bytes were not UTF-8 and are written escaped (as in
    /// `process.escaped`); absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub escaped: Vec<&'static str>,
}

/// A watched file opened: model weights, MSRs, the huge-page knob.
#[derive(Debug, Serialize)]
pub struct FileOpenView {
    pub path: String,
    pub write: bool,
    /// What saw it: `syscall` (an open or rename, --syscalls), `device`
    /// (the device hook), `sysctl` (the sysctl hook), `fd` or `map` (a busy
    /// process's open descriptors or memory map, looked at each interval).
    pub source: &'static str,
    /// Written elsewhere and renamed into place (an atomic save).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub renamed: bool,
    /// A rename's source path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub renamed_from_truncated: bool,
    /// open(2) flags (without the rename marker).
    pub flags: u32,
    /// Model weights told by their content (`safetensors`, `gguf`,
    /// `pytorch`) where the name does not say: `pytorch_model.bin`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<&'static str>,
    /// Fields whose bytes were not UTF-8 and are written escaped (as in
    /// `process.escaped`); absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub escaped: Vec<&'static str>,
}

/// A TCP socket this process started listening on.
#[derive(Debug, Serialize)]
pub struct ListenView {
    pub address: Option<String>,
    pub port: Option<u16>,
}

/// A process tree: the processes of one session (daemons, services, login
/// sessions and container inits start one with setsid).
#[derive(Debug, Serialize)]
pub struct TreeView {
    pub sid: u32,
    /// The session leader, when it is still known.
    pub leader: Option<ParentView>,
    pub active_processes: u32,
    pub activity: crate::ledger::ActivityView,
}

/// A cgroup, and the container it belongs to when its path names one.
#[derive(Debug, Serialize)]
pub struct ContainerView {
    pub cgroup: String,
    pub cgroup_id: Option<u64>,
    pub container_id: Option<String>,
    pub active_processes: u32,
    pub activity: crate::ledger::ActivityView,
}

/// `gpu` object of gpu.open and gpu.activity records.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum GpuBody {
    Open(crate::gpu::OpenView),
    Activity(crate::gpu::ActivityView),
}

impl Body {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Exec(_) => "process.exec",
            Self::Fork(_) => "process.fork",
            Self::Exit(_) => "process.exit",
            Self::Connect(_) => "network.connect",
            Self::Gpu(GpuBody::Open(_)) => "gpu.open",
            Self::Gpu(GpuBody::Activity(_)) => "gpu.activity",
            Self::Dns(_) => "network.dns",
            Self::FirstBytes(_) => "network.first_bytes",
            Self::Listen(_) => "network.listen",
            Self::FileOpen(_) => "file.open",
            Self::Activity(_) => "process.activity",
            Self::Tree(_) => "tree.activity",
            Self::Container(_) => "container.activity",
            Self::Health(_) => "tracer.health",
            Self::Executable(_) => "process.executable",
        }
    }
}

#[derive(Debug, Serialize, Clone)]
pub struct ParentView {
    pub entity_id: String,
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
}

#[derive(Debug, Serialize, Clone)]
pub struct ProcessView {
    pub entity_id: String,
    pub pid: u32,
    /// The thread that acted.
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
    pub exe: Option<String>,
    pub argv: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub argv_truncated: bool,
    pub cgroup_id: Option<u64>,
    pub cgroup: Option<String>,
    pub container_id: Option<String>,
    /// Session id: the process tree this process belongs to.
    pub session: Option<u32>,
    pub parent: Option<ParentView>,
    /// Entity ids from the grandparent up, as far as known.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<String>,
    /// Fields whose bytes were not UTF-8 and are written escaped (see README).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub escaped: Vec<&'static str>,
    /// /proc/PID is covered by a mount: the process hides from ps and top,
    /// and is described from the kernel's records alone.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hidden_from_proc: bool,
    /// SHA-256 of the executable, once known (process.executable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe_sha256: Option<String>,
}

impl ProcessView {
    /// Whether this view is the one `new` would make of these: every field
    /// compared with what it was made from. Only views with nothing
    /// escaped: their text is the bytes themselves.
    pub fn describes(&self, p: &Process, tid: u32, parents: &[&Process], cgroup: Option<&str>) -> bool {
        let same_bytes = |s: Option<&str>, b: Option<&[u8]>| s.map(str::as_bytes) == b;
        let parent_same = match (&self.parent, parents.first()) {
            (None, None) => true,
            (Some(v), Some(pp)) => {
                v.entity_id == pp.entity_id
                    && v.pid == pp.tgid
                    && same_bytes(v.exe.as_deref(), pp.exe.as_deref())
            }
            _ => false,
        };
        self.escaped.is_empty()
            && self.tid == tid
            && self.pid == p.tgid
            && self.entity_id == p.entity_id
            && self.ppid == p.ppid
            && self.uid == p.uid
            && self.comm.as_bytes() == p.comm.as_slice()
            && same_bytes(self.exe.as_deref(), p.exe.as_deref())
            && self.argv.len() == p.argv.len()
            && self.argv.iter().zip(&p.argv).all(|(a, b)| a.as_bytes() == b.as_slice())
            && self.argv_truncated == p.argv_truncated
            && self.cgroup_id == p.cgroup_id
            && self.cgroup.as_deref() == cgroup
            && self.container_id == p.container_id
            && self.session == p.sid
            && parent_same
            && self.ancestors.len() == parents.len().saturating_sub(1)
            && self.ancestors.iter().zip(parents.iter().skip(1)).all(|(a, p)| *a == p.entity_id)
            && self.hidden_from_proc == p.hidden_from_proc
            && self.exe_sha256 == p.exe_sha256
    }

    pub fn new(p: &Process, tid: u32, parents: &[&Process], cgroup: Option<String>) -> Self {
        let mut escaped = Vec::new();
        let mut text = |bytes: &[u8], field: &'static str| {
            let (s, esc) = bytes_to_string(bytes);
            if esc && !escaped.contains(&field) {
                escaped.push(field);
            }
            s.into_owned()
        };
        let comm = text(&p.comm, "comm");
        let exe = p.exe.as_deref().map(|e| text(e, "exe"));
        let argv = p.argv.iter().map(|a| text(a, "argv")).collect();
        let parent = parents.first().map(|pp| ParentView {
            entity_id: pp.entity_id.clone(),
            pid: pp.tgid,
            exe: pp.exe.as_deref().map(|e| bytes_to_string(e).0.into_owned()),
        });
        Self {
            entity_id: p.entity_id.clone(),
            pid: p.tgid,
            tid,
            ppid: p.ppid,
            uid: p.uid,
            comm,
            exe,
            argv,
            argv_truncated: p.argv_truncated,
            cgroup_id: p.cgroup_id,
            cgroup,
            container_id: p.container_id.clone(),
            session: p.sid,
            parent,
            ancestors: parents.iter().skip(1).map(|a| a.entity_id.clone()).collect(),
            escaped,
            hidden_from_proc: p.hidden_from_proc,
            exe_sha256: p.exe_sha256.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ExecView {
    /// The path as given to execve (may be relative).
    pub filename: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub filename_truncated: bool,
    /// Bytes of the full argument block, truncated or not.
    pub argv_bytes: u32,
    /// The pid before exec when a non-leader thread exec'd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_pid: Option<u32>,
    /// Fields whose bytes were not UTF-8 and are written escaped (as in
    /// `process.escaped`); absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub escaped: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct ForkView {
    pub child_pid: u32,
    pub child_entity_id: String,
}

#[derive(Debug, Serialize)]
pub struct ExitView {
    /// Exit status for a normal exit; null when killed by a signal.
    pub code: Option<u32>,
    pub signal: Option<u32>,
    pub core_dumped: bool,
    /// Lifetime totals while traced: CPU, syscalls, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<crate::ledger::AccountView>,
}

impl ExitView {
    /// Decodes `task->exit_code` as wait(2) does (WIFEXITED/WTERMSIG).
    pub fn from_raw(raw: u32) -> Self {
        let signal = raw & 0x7f;
        if signal == 0 {
            Self { code: Some((raw >> 8) & 0xff), signal: None, core_dumped: false, account: None }
        } else {
            Self { code: None, signal: Some(signal), core_dumped: raw & 0x80 != 0, account: None }
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ConnectView {
    /// inet, inet6, unix, or other (any other address family).
    pub family: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// tcp, udp, mptcp, sctp, icmp (ping sockets), … from the socket; null
    /// for unix sockets or when unknown.
    pub protocol: Option<String>,
    /// stream, dgram, seqpacket, raw; null when unknown.
    pub socket_type: Option<&'static str>,
    /// ok, in_progress, or the errno name (ECONNREFUSED, …).
    pub result: String,
    /// 0 or -errno as the kernel returned it.
    pub ret: i32,
    /// syscall (connect(2)) or sock_state (TCP open outside connect(2)).
    pub source: &'static str,
    /// The name this process looked up that resolved to the address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    /// Fields whose bytes were not UTF-8 and are written escaped (as in
    /// `process.escaped`); absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub escaped: Vec<&'static str>,
}

/// What SIGHUP did to the rules: reloaded, or kept because the file was bad.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RulesReloads {
    pub reloaded: u64,
    pub failed: u64,
    /// Why the last failed reload kept the rules in use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the rules in use were loaded.
    pub loaded_at: String,
}

#[derive(Debug, Serialize)]
pub struct HealthView {
    /// started, running or final.
    pub status: &'static str,
    pub uptime_s: f64,
    pub events_read: u64,
    pub events_by_kind: std::collections::BTreeMap<&'static str, u64>,
    /// Records the kernel could not write (ring buffer full), by kind.
    pub dropped: std::collections::BTreeMap<&'static str, u64>,
    pub dropped_total: u64,
    /// Records read but not decodable (never expected; counted, not fatal).
    pub decode_errors: u64,
    /// Records read but left out by the --comm filter.
    pub filtered_out: u64,
    /// Activity of processes that could not be identified.
    pub unattributed_activity: u64,
    /// DNS messages that could not be parsed (recorded with their error).
    pub dns_parse_errors: u64,
    /// Address-to-name entries evicted from the bounded DNS cache.
    pub dns_names_evicted: u64,
    /// Keys of the per-process counter tables (proc_stats, syscall_counts,
    /// flows) the kernel's LRU evicted: activity of a process or a peer
    /// since its last report that is lost.
    pub ledger_keys_evicted: u64,
    /// Process-table entries dropped because the process vanished unseen.
    pub process_table_pruned: u64,
    /// First writes on new connections whose buffer was not resident at
    /// syscall entry (recorded with captured 0).
    pub first_bytes_unreadable: u64,
    /// First messages missing a send whose record was lost (ring full):
    /// what was captured stops before it.
    pub first_bytes_gaps: u64,
    /// Executables identified (process.executable): files read, processes
    /// whose file was known, processes not looked at (queue full), and
    /// processes gone or unreadable before the look.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executables: Option<crate::process::executable::Counts>,
    /// Kernel memory the tracer's maps hold (preallocated, per possible CPU).
    pub kernel_maps: crate::kernel::MapMemory,
    /// Entries in the kernel tables that follow threads, processes and
    /// sockets, by table.
    pub kernel_tables: std::collections::BTreeMap<&'static str, u64>,
    /// Keys each kernel LRU table evicted since start (added by the
    /// programs, neither removed nor there now).
    pub kernel_evictions: std::collections::BTreeMap<&'static str, u64>,
    /// Evidence the kernel programs saw and could not report, by why.
    pub kernel_losses: std::collections::BTreeMap<&'static str, u64>,
    /// Records whose captured bytes are fewer than the bytes sent or
    /// received (first_bytes, dns): the part past the capture is not seen.
    pub truncated: std::collections::BTreeMap<&'static str, u64>,
    /// Files written under a temporary name (model_files.rs): written, and
    /// of them renamed_to_model, renamed_other, unresolved (not found where
    /// the kernel said, or not renamed within three reports), dropped (more
    /// than 1024 waiting). Absent when none.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub temp_files: std::collections::BTreeMap<&'static str, u64>,
    /// SIGHUP's rereading of the rules file (rules, allowlist,
    /// declarations). Absent until the first SIGHUP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules_reloads: Option<Box<RulesReloads>>,
    /// Records still in the ring when the shutdown's time to read them was
    /// up, by kind: counted, not processed (final record only).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub unread_at_shutdown: std::collections::BTreeMap<&'static str, u64>,
    pub kernel_read_errors: u64,
    pub threads_created: u64,
    /// GPU counter keys (process, device, ioctl) the kernel's LRU evicted:
    /// calls since that key's last report are lost.
    pub gpu_stats_full: u64,
    /// Devices whose ioctls are attributed as GPU activity.
    pub gpu_devices: Vec<String>,
    /// NVIDIA management library: absent, disabled, loaded (N GPUs) or the error.
    pub nvml: String,
    pub process_table_size: usize,
    /// Entries in the tracer's other tables (classifier, DNS names, cgroup
    /// paths, …) and in the kernel's per-process maps at the last report:
    /// what a long run must keep bounded.
    pub tables: std::collections::BTreeMap<&'static str, usize>,
    pub programs: Vec<AttachStatus>,
    pub programs_attached: usize,
    pub programs_failed: usize,
    pub programs_skipped: usize,
    pub syscall_hooks: usize,
    /// Inet sockets that existed at start, given their owners so their
    /// bytes are attributed (and those that could not be reached).
    pub sockets_adopted: crate::kernel::existing_sockets::Adopted,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_kernel_fields: Vec<String>,
    /// Per sink: records written or delivered, queued, dropped (and why).
    pub sinks: Vec<crate::output::sink::SinkStats>,
}

impl HealthView {
    pub fn dropped_map(c: &KernelCounters) -> std::collections::BTreeMap<&'static str, u64> {
        c.dropped.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

/// Names for `sk_protocol` (include/uapi/linux/in.h).
pub fn protocol_name(protocol: u16, family_is_inet: bool) -> Option<String> {
    if !family_is_inet {
        return None;
    }
    Some(match protocol {
        0 => return None,
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        262 => "mptcp".into(),
        n => format!("ipproto {n}"),
    })
}

/// Names for socket types (include/linux/net.h).
pub fn socket_type_name(sock_type: u8) -> Option<&'static str> {
    match sock_type {
        1 => Some("stream"),
        2 => Some("dgram"),
        3 => Some("raw"),
        5 => Some("seqpacket"),
        _ => None,
    }
}

/// errno names for the results connect(2) commonly returns.
pub fn errno_name(ret: i32) -> String {
    let name = match -ret {
        0 => "ok",
        1 => "EPERM",
        2 => "ENOENT",
        4 => "EINTR",
        9 => "EBADF",
        11 => "EAGAIN",
        13 => "EACCES",
        14 => "EFAULT",
        22 => "EINVAL",
        88 => "ENOTSOCK",
        97 => "EAFNOSUPPORT",
        98 => "EADDRINUSE",
        99 => "EADDRNOTAVAIL",
        101 => "ENETUNREACH",
        104 => "ECONNRESET",
        106 => "EISCONN",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        113 => "EHOSTUNREACH",
        114 => "EALREADY",
        115 => "in_progress",
        _ => return format!("errno {}", -ret),
    };
    name.to_string()
}

/// Formats nanoseconds since the Unix epoch as RFC 3339 UTC with 9 digits.
pub fn rfc3339_nanos(ns_since_epoch: u128) -> String {
    let secs = (ns_since_epoch / 1_000_000_000) as i64;
    let nanos = (ns_since_epoch % 1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil-from-days (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (hour, minute, second) = (sod / 3600, (sod / 60) % 60, sod % 60);
    if !(0..=9999).contains(&year) {
        return format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{nanos:09}Z");
    }
    // By hand: every record has a time, and `format!` was a tenth of the
    // time spent writing one.
    let mut out = *b"0000-00-00T00:00:00.000000000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year as u64);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, hour as u64);
    put(14, 2, minute as u64);
    put(17, 2, second as u64);
    put(20, 9, u64::from(nanos));
    // ASCII digits and punctuation only.
    String::from_utf8(out.to_vec()).expect("ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        // 2000-02-29T12:34:56.000000007Z, a leap day.
        assert_eq!(rfc3339_nanos(951_827_696_000_000_007), "2000-02-29T12:34:56.000000007Z");
        assert_eq!(rfc3339_nanos(1_795_219_200_123_000_000), "2026-11-21T00:00:00.123000000Z");
        // 2100 is no leap year; the last instant of year 9999; past it, five digits.
        assert_eq!(rfc3339_nanos(4_107_542_400_000_000_000), "2100-03-01T00:00:00.000000000Z");
        assert_eq!(rfc3339_nanos(253_402_300_799_999_999_999), "9999-12-31T23:59:59.999999999Z");
        assert_eq!(rfc3339_nanos(253_402_300_800_000_000_000), "10000-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn exit_codes_decode_like_wait() {
        let e = ExitView::from_raw(7 << 8);
        assert_eq!((e.code, e.signal, e.core_dumped), (Some(7), None, false));
        let e = ExitView::from_raw(9);
        assert_eq!((e.code, e.signal), (None, Some(9)));
        let e = ExitView::from_raw(0x80 | 11);
        assert_eq!((e.signal, e.core_dumped), (Some(11), true));
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(0), "ok");
        assert_eq!(errno_name(-111), "ECONNREFUSED");
        assert_eq!(errno_name(-115), "in_progress");
        assert_eq!(errno_name(-4095), "errno 4095");
    }
}
