//! Types that cross the kernel/user boundary: ring-buffer records, the
//! counters the kernel keeps, and the configuration user space hands to the
//! programs before they load.
//!
//! Every type is `#[repr(C)]` with explicit padding so both sides agree on the
//! layout byte for byte; user space decodes records with `read_unaligned` on
//! these exact types.
#![no_std]

/// `TASK_COMM_LEN` in include/linux/sched.h.
pub const COMM_LEN: usize = 16;
/// Bytes of the exec'd file name kept (the path as given to execve).
pub const FILENAME_LEN: usize = 512;
/// Bytes of the NUL-separated argument block kept; longer argv is truncated
/// and flagged.
pub const ARGV_LEN: usize = 4096;
/// `sizeof(struct sockaddr_storage)`.
pub const SOCKADDR_LEN: usize = 128;

/// The kind of every ring-buffer record, first field of [`EventHeader`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Exec = 1,
    Fork = 2,
    Exit = 3,
    Connect = 4,
    GpuOpen = 5,
    /// setsid(2) succeeded: the process leads a new session (tree root).
    SetSid = 6,
    /// A DNS query or response (first bytes).
    Dns = 7,
    /// The first bytes a process sends on a new TCP connection.
    FirstBytes = 8,
    /// A TCP socket started listening.
    Listen = 9,
    /// A file of interest was opened (model files, MSRs, huge-page knobs).
    FileOpen = 10,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        Self::Exec,
        Self::Fork,
        Self::Exit,
        Self::Connect,
        Self::GpuOpen,
        Self::SetSid,
        Self::Dns,
        Self::FirstBytes,
        Self::Listen,
        Self::FileOpen,
    ];

    pub fn from_u32(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Exec),
            2 => Some(Self::Fork),
            3 => Some(Self::Exit),
            4 => Some(Self::Connect),
            5 => Some(Self::GpuOpen),
            6 => Some(Self::SetSid),
            7 => Some(Self::Dns),
            8 => Some(Self::FirstBytes),
            9 => Some(Self::Listen),
            10 => Some(Self::FileOpen),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Fork => "fork",
            Self::Exit => "exit",
            Self::Connect => "connect",
            Self::GpuOpen => "gpu_open",
            Self::SetSid => "setsid",
            Self::Dns => "dns",
            Self::FirstBytes => "first_bytes",
            Self::Listen => "listen",
            Self::FileOpen => "file_open",
        }
    }
}

/// Slots of the per-CPU `COUNTERS` array. Drops are indexed by event kind so
/// user space can report exactly which records were lost.
pub mod counter {
    /// `COUNTERS[DROPPED_BASE + kind]`: ring buffer full, record not written.
    pub const DROPPED_BASE: u32 = 0;
    /// A kernel read failed (bad user pointer, vanished task); the record was
    /// written with the field left empty, or skipped where noted.
    pub const READ_ERRORS: u32 = 16;
    /// Threads created (clone with CLONE_THREAD); counted, not reported.
    pub const THREADS_CREATED: u32 = 18;
    /// `--pid`: TRACED_TGIDS was full at a fork; that child's subtree is
    /// not followed.
    pub const TRACED_TGIDS_FULL: u32 = 20;
    /// A first write on a (process, fd) marked fresh whose fd no longer is
    /// the socket that connected (dup2, close_range, exec): not reported.
    pub const FIRST_BYTES_STALE: u32 = 21;
    /// A connect(2) whose sockaddr could not be read at entry (not
    /// resident, or a bad pointer): no record, no first bytes.
    pub const CONNECT_ADDR_UNREADABLE: u32 = 22;
    /// An open/rename whose path could not be read (not resident).
    pub const OPEN_PATH_UNREADABLE: u32 = 23;
    /// An open/rename whose path filled the path buffer: its end, which
    /// the watched suffixes are matched on, was not seen.
    pub const OPEN_PATH_TOO_LONG: u32 = 24;
    /// The kprobe fallback for socket lengths found its table of calls in
    /// flight full: that call's bytes are not counted.
    pub const SOCK_CALLS_FULL: u32 = 25;
    /// The kprobe fallback saw a thread enter a send or receive while its
    /// previous one had not returned: that return was missed (the kernel
    /// skips a kprobe program when another BPF program or a BPF map syscall
    /// holds the CPU), and its bytes are not counted.
    pub const SOCK_RETURNS_MISSED: u32 = 26;
    /// A packet of a connection's first message that did not follow the
    /// bytes before it (a lost segment's hole, or data before the
    /// handshake): the message ends there.
    pub const FIRST_BYTES_OUT_OF_ORDER: u32 = 27;
    /// A packet the socket-layer programs could not parse (an IP option or
    /// extension header they do not follow, a header cut short).
    pub const PACKETS_UNPARSED: u32 = 28;
    /// Packets (with payload) of sockets no process was seen owning: opened
    /// before the tracer started, or accepted without the peer's address
    /// asked for. Their bytes are not attributed.
    pub const PACKETS_UNOWNED: u32 = 29;
    /// The kernel could not allocate a socket's state (memory): its bytes
    /// are not counted.
    pub const SOCKET_STATE_FULL: u32 = 30;
    /// `COUNTERS[TABLE_INSERTED_BASE + table]`: keys the programs added to
    /// that table (see [`super::table`]).
    pub const TABLE_INSERTED_BASE: u32 = 32;
    /// `COUNTERS[TABLE_DELETED_BASE + table]`: keys the programs removed.
    pub const TABLE_DELETED_BASE: u32 = 48;
    pub const COUNT: u32 = 64;
}

/// The kernel's LRU tables. An LRU evicts silently when it is full, so the
/// programs count every key they add and every key they remove, user space
/// counts its own removals, and what is neither live nor removed was
/// evicted: `evicted = inserted - deleted - live`.
pub mod table {
    pub const PROC_STATS: u32 = 0;
    pub const SYSCALL_COUNTS: u32 = 1;
    pub const FLOWS: u32 = 2;
    pub const LAST_RUNTIME: u32 = 3;
    pub const GPU_STATS: u32 = 4;
    pub const GPU_SEEN: u32 = 5;
    pub const CONNECTS_IN_FLIGHT: u32 = 6;
    pub const IOCTLS_IN_FLIGHT: u32 = 7;
    pub const DNS_RECV: u32 = 8;
    pub const DNS_SOCKETS: u32 = 9;
    pub const FRESH_SOCKETS: u32 = 10;
    pub const SOCKETS: u32 = 11;
    pub const MODEL_READS: u32 = 12;
    pub const COUNT: u32 = 13;
    /// Map names in the object, by table number.
    pub const MAPS: [&str; COUNT as usize] = [
        "PROC_STATS",
        "SYSCALL_COUNTS",
        "FLOWS",
        "LAST_RUNTIME",
        "GPU_STATS",
        "GPU_SEEN",
        "CONNECTS_IN_FLIGHT",
        "IOCTLS_IN_FLIGHT",
        "DNS_RECV",
        "DNS_SOCKETS",
        "FRESH_SOCKETS",
        "SOCKETS",
        "MODEL_READS",
    ];
    /// Their names in health (`kernel_tables`, `kernel_evictions`).
    pub const NAMES: [&str; COUNT as usize] = [
        "proc_stats",
        "syscall_counts",
        "flows",
        "last_runtime",
        "gpu_stats",
        "gpu_seen",
        "connects_in_flight",
        "ioctls_in_flight",
        "dns_recv",
        "dns_sockets",
        "fresh_sockets",
        "sockets",
        "model_reads",
    ];
}

/// Flags in [`ExecEvent::flags`].
pub mod exec_flags {
    pub const ARGV_TRUNCATED: u32 = 1;
    pub const FILENAME_TRUNCATED: u32 = 2;
    /// argv could not be read (no mm offsets, or the read faulted).
    pub const ARGV_UNAVAILABLE: u32 = 4;
}

/// Where a connect record came from.
pub mod connect_source {
    /// `connect(2)`: sys_enter_connect/sys_exit_connect, with the result.
    pub const SYSCALL: u8 = 1;
    /// `sock:inet_sock_set_state` CLOSE -> SYN_SENT outside `connect(2)`
    /// (io_uring, kernel callers). The handshake has started; no result yet.
    pub const SOCK_STATE: u8 = 2;
    /// The cgroup `connect4`/`connect6` hooks, in the caller's context, for
    /// `connect(2)` and io_uring alike; a TCP connect is reported when its
    /// handshake ends (`inet_sock_set_state`), with the result.
    pub const SOCKET: u8 = 3;
}

/// Common prefix of every record. 72 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    pub kind: u32,
    /// Thread id of the task that produced the record.
    pub pid: u32,
    /// Process id (thread-group id).
    pub tgid: u32,
    /// Parent's tgid (`real_parent->tgid`), 0 when unknown.
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    /// `bpf_ktime_get_ns`: CLOCK_MONOTONIC.
    pub ktime_ns: u64,
    /// `group_leader->start_boottime`: with tgid, the process's unique id.
    pub start_boottime_ns: u64,
    /// cgroup v2 id of the task (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
    /// The session's host id (its leader's host pid), 0 when unknown: a
    /// setsid is seen on the process's next record, with no syscall hook.
    pub sid: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub header: EventHeader,
    pub flags: u32,
    pub filename_len: u16,
    pub argv_len: u16,
    /// Length of the full argument block, even when truncated.
    pub argv_full_len: u32,
    pub old_pid: u32,
    pub filename: [u8; FILENAME_LEN],
    pub argv: [u8; ARGV_LEN],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkEvent {
    /// The parent, i.e. the task calling fork/clone.
    pub header: EventHeader,
    pub child_pid: u32,
    pub child_tgid: u32,
    pub child_start_boottime_ns: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitEvent {
    pub header: EventHeader,
    /// `task->exit_code` as wait(2) encodes it: status << 8 | signal.
    pub exit_code: u32,
    pub _pad: u32,
    /// CPU time and waits of the process on the CPU it ended on, taken
    /// from that CPU's slot (which is freed) rather than moved to
    /// `PROC_STATS`: an ended process costs no table entry there.
    pub cpu_ns: u64,
    pub waits: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnectEvent {
    pub header: EventHeader,
    pub fd: i32,
    /// 0 or -errno from `connect(2)`; -EINPROGRESS for SOCK_STATE records.
    pub ret: i32,
    pub source: u8,
    /// SOCK_STREAM, SOCK_DGRAM, … from the socket; 0 when unknown.
    pub sock_type: u8,
    /// `sk->sk_protocol` (IPPROTO_*; 0 for unix sockets); 0 when unknown.
    pub protocol: u16,
    /// Bytes of `addr` that are valid.
    pub addrlen: u32,
    /// A `struct sockaddr` (in, in6 or un) exactly as the caller passed it.
    pub addr: [u8; SOCKADDR_LEN],
}

/// What `sys_enter_connect` keeps for `sys_exit_connect`, keyed by pid_tgid.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnectArgs {
    pub fd: i32,
    pub addrlen: u32,
    pub sock_type: u16,
    pub protocol: u16,
    /// 1: the connect hooks report this connect; only its first bytes and
    /// DNS socket are followed here.
    pub quiet: u32,
    pub addr: [u8; SOCKADDR_LEN],
}

/// Kernel struct field offsets, resolved from the running kernel's BTF in
/// user space (Rust BPF has no CO-RE relocations). `NO_OFFSET` disables the
/// enrichment that needs the field.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KernelOffsets {
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_group_leader: u32,
    pub task_start_boottime: u32,
    pub task_mm: u32,
    pub task_exit_code: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    /// fd -> file: task->files->fdt->fd[fd] (include/linux/fdtable.h).
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub file_inode: u32,
    pub file_private_data: u32,
    pub inode_mode: u32,
    /// socket -> sock: socket->sk, sk->sk_type, sk->sk_protocol.
    pub socket_sk: u32,
    pub sock_type: u32,
    pub sock_protocol: u32,
    /// inode.i_rdev: the device number of a device file.
    pub inode_rdev: u32,
    /// The peer of a socket: sock.__sk_common.skc_{family,dport,daddr,v6_daddr}.
    pub sk_family: u32,
    pub sk_dport: u32,
    pub sk_daddr: u32,
    pub sk_v6_daddr: u32,
    /// task_struct.se.sum_exec_runtime (ns on CPU) and task_struct.start_time
    /// (CLOCK_MONOTONIC at fork).
    pub task_sum_exec_runtime: u32,
    pub task_start_time: u32,
    /// The saved SSE control register of a `struct fpu`: from 5.16,
    /// fpu->fpstate (a pointer; `fpu_fpstate`) then
    /// fpstate.regs.xsave.i387.mxcsr (`fpu_mxcsr`); before, fpu_fpstate is
    /// NO_OFFSET and fpu_mxcsr is fpu.state.xsave.i387.mxcsr.
    pub fpu_fpstate: u32,
    pub fpu_mxcsr: u32,
    /// sock.sk_err: why a connection failed (ECONNREFUSED, ETIMEDOUT).
    pub sk_err: u32,
    /// The session: task_struct.signal, signal_struct.pids (an array by
    /// enum pid_type; PIDTYPE_SID is 3) and pid.numbers (numbers[0].nr is
    /// the host pid).
    pub task_signal: u32,
    pub signal_pids: u32,
    pub pid_numbers: u32,
    /// A written file's name: task_struct.flags (PF_KTHREAD), inode.i_dentry
    /// (its first alias), dentry.d_u (the alias node in the dentry) and
    /// dentry.d_name (a struct qstr).
    pub task_flags: u32,
    pub inode_dentries: u32,
    pub dentry_alias: u32,
    pub dentry_name: u32,
    /// address_space.host (the file's inode) and inode.i_size.
    pub mapping_host: u32,
    pub inode_size: u32,
    /// Where a temporarily named file is: dentry.d_parent, inode.i_ino,
    /// inode.i_sb and super_block.s_dev.
    pub dentry_parent: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    /// task_struct.se.prev_sum_exec_runtime (the runtime when the fair
    /// scheduler last picked the task: what it has run since is this
    /// slice) and task_struct.policy (SCHED_*).
    pub task_prev_sum_exec_runtime: u32,
    pub task_policy: u32,
}

pub const NO_OFFSET: u32 = u32::MAX;

impl KernelOffsets {
    pub const UNKNOWN: Self = Self {
        task_pid: NO_OFFSET,
        task_tgid: NO_OFFSET,
        task_real_parent: NO_OFFSET,
        task_group_leader: NO_OFFSET,
        task_start_boottime: NO_OFFSET,
        task_mm: NO_OFFSET,
        task_exit_code: NO_OFFSET,
        mm_arg_start: NO_OFFSET,
        mm_arg_end: NO_OFFSET,
        task_files: NO_OFFSET,
        files_fdt: NO_OFFSET,
        fdtable_max_fds: NO_OFFSET,
        fdtable_fd: NO_OFFSET,
        file_inode: NO_OFFSET,
        file_private_data: NO_OFFSET,
        inode_mode: NO_OFFSET,
        socket_sk: NO_OFFSET,
        sock_type: NO_OFFSET,
        sock_protocol: NO_OFFSET,
        inode_rdev: NO_OFFSET,
        sk_family: NO_OFFSET,
        sk_dport: NO_OFFSET,
        sk_daddr: NO_OFFSET,
        sk_v6_daddr: NO_OFFSET,
        task_sum_exec_runtime: NO_OFFSET,
        task_start_time: NO_OFFSET,
        fpu_fpstate: NO_OFFSET,
        fpu_mxcsr: NO_OFFSET,
        sk_err: NO_OFFSET,
        task_signal: NO_OFFSET,
        signal_pids: NO_OFFSET,
        pid_numbers: NO_OFFSET,
        task_flags: NO_OFFSET,
        inode_dentries: NO_OFFSET,
        dentry_alias: NO_OFFSET,
        dentry_name: NO_OFFSET,
        mapping_host: NO_OFFSET,
        inode_size: NO_OFFSET,
        dentry_parent: NO_OFFSET,
        inode_ino: NO_OFFSET,
        inode_sb: NO_OFFSET,
        sb_dev: NO_OFFSET,
        task_prev_sum_exec_runtime: NO_OFFSET,
        task_policy: NO_OFFSET,
    };
}

/// Offsets of the fields the programs read from classic tracepoint records,
/// parsed from tracefs `format` files in user space.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TracepointOffsets {
    pub exec_filename: u32,
    pub exec_old_pid: u32,
    pub exit_group_dead: u32,
    pub connect_fd: u32,
    pub connect_uservaddr: u32,
    pub connect_addrlen: u32,
    pub connect_ret: u32,
    pub sock_oldstate: u32,
    pub sock_newstate: u32,
    pub sock_dport: u32,
    pub sock_family: u32,
    pub sock_protocol: u32,
    pub sock_daddr: u32,
    pub sock_daddr_v6: u32,
    pub sock_sport: u32,
    pub sock_saddr: u32,
    pub sock_saddr_v6: u32,
    /// `inet_sock_set_state.skaddr`: the `struct sock` changing state.
    pub sock_skaddr: u32,
    pub ioctl_fd: u32,
    pub ioctl_cmd: u32,
    pub ioctl_arg: u32,
    pub ioctl_ret: u32,
    pub setsid_ret: u32,
    /// Syscall tracepoint records keep their arguments as `unsigned long
    /// args[6]` (kernel/trace/trace.h: syscall_trace_enter); argument i is at
    /// `syscall_arg0 + 8 * i`, and the exit record's return value at
    /// `syscall_ret`.
    pub syscall_arg0: u32,
    pub syscall_ret: u32,
    /// `sched_process_free.pid`: the tid whose task_struct is released.
    pub free_pid: u32,
}

/// Slots of the `CONTROL` array: switches user space sets while the
/// programs run (the `Config` global is fixed at load).
pub mod control {
    /// Shutdown: no more records are written, so what is in the ring is
    /// all there is to read before the final health record (detaching the
    /// programs takes the kernel much longer).
    pub const STOPPED: u32 = 0;
    /// Some GPU device is registered in GPU_DEVICES: without any, ioctls
    /// return before walking the fd. Set when a driver appears after start.
    pub const GPU_DEVICES: u32 = 1;
    /// The cgroup socket hooks are attached: they report inet connects, so
    /// connect(2)'s programs keep to unix sockets.
    pub const SOCKET_HOOKS: u32 = 2;
    /// The packet hooks are attached: first bytes and DNS come from them,
    /// so the syscall programs need not follow connects for those.
    pub const PACKET_HOOKS: u32 = 3;
    /// The BTF sched_switch program charges each fair-class slice from the
    /// task's own fields, so the exit hook charges the same way.
    pub const SLICE_CPU: u32 = 4;
    pub const COUNT: u32 = 5;
}

pub mod config_flags {
    /// Count syscalls per process and number, not only per process.
    pub const SYSCALL_HISTOGRAM: u32 = 1;
}

/// Everything user space decides before load, as one read-only global.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Our own tgid: the tracer never reports itself.
    pub tracer_tgid: u32,
    /// 1: only processes in `TRACED_TGIDS` (and their descendants) are traced.
    pub filter_tgids: u32,
    /// Non-zero: only tasks in this cgroup v2 or below it are traced.
    pub filter_cgroup_id: u64,
    /// The filter cgroup's depth below the cgroup2 root (the root is 0):
    /// a task is in its subtree when its ancestor at this level is it.
    pub filter_cgroup_level: u32,
    /// `config_flags::*`.
    pub flags: u32,
    /// CLOCK_MONOTONIC when the tracer started: threads born later are
    /// charged their whole CPU time.
    pub started_ns: u64,
    /// The kernel's clock tick (CONFIG_HZ): jiffies per second, how often
    /// the packet hooks move a socket's counts into the tables.
    pub hz: u64,
    /// Bytes waiting in the ring buffer at which a record wakes the reader
    /// (fewer: user space finds them on its next poll, see RING_POLL).
    pub wake_bytes: u64,
    pub kernel: KernelOffsets,
    pub tp: TracepointOffsets,
}

impl Config {
    pub const DEFAULT: Self = Self {
        tracer_tgid: 0,
        filter_tgids: 0,
        filter_cgroup_id: 0,
        filter_cgroup_level: 0,
        flags: 0,
        started_ns: 0,
        hz: 250,
        wake_bytes: 0,
        kernel: KernelOffsets::UNKNOWN,
        tp: TracepointOffsets {
            exec_filename: NO_OFFSET,
            exec_old_pid: NO_OFFSET,
            exit_group_dead: NO_OFFSET,
            connect_fd: NO_OFFSET,
            connect_uservaddr: NO_OFFSET,
            connect_addrlen: NO_OFFSET,
            connect_ret: NO_OFFSET,
            sock_oldstate: NO_OFFSET,
            sock_newstate: NO_OFFSET,
            sock_dport: NO_OFFSET,
            sock_family: NO_OFFSET,
            sock_protocol: NO_OFFSET,
            sock_daddr: NO_OFFSET,
            sock_daddr_v6: NO_OFFSET,
            sock_sport: NO_OFFSET,
            sock_saddr: NO_OFFSET,
            sock_saddr_v6: NO_OFFSET,
            sock_skaddr: NO_OFFSET,
            ioctl_fd: NO_OFFSET,
            ioctl_cmd: NO_OFFSET,
            ioctl_arg: NO_OFFSET,
            ioctl_ret: NO_OFFSET,
            setsid_ret: NO_OFFSET,
            syscall_arg0: NO_OFFSET,
            syscall_ret: NO_OFFSET,
            free_pid: NO_OFFSET,
        },
    };
}

/// Per-process activity the kernel accumulates (per CPU); user space reads
/// it on the activity interval.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcStats {
    /// On-CPU time from sched_switch.
    pub cpu_ns: u64,
    /// System calls entered (raw_syscalls:sys_enter).
    pub syscalls: u64,
    /// mmap calls asking for huge pages (MAP_HUGETLB).
    pub hugetlb_mmaps: u64,
    /// Bytes and calls from sock:sock_send_length / sock_recv_length.
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub tx_calls: u64,
    pub rx_calls: u64,
    /// FPU state saves (x86_fpu_regs_deactivated) that found the SSE
    /// rounding mode off its default: RandomX changes it all the time,
    /// ordinary programs almost never.
    pub fpu_rounding: u64,
    /// Context switches that were not preemptions: the threads blocked (on
    /// I/O, a lock, a sleep) or yielded. A hashing loop is almost only
    /// preempted; what makes syscalls waits on many of them.
    pub waits: u64,
}

pub const DNS_CAPTURE: usize = 512;
/// Bytes kept of one send of a new connection's first message when the
/// send is short (most are): the small record.
pub const FIRST_BYTES: usize = 256;
/// Bytes kept of a connection's first message in all, over its first sends
/// (a real XMRig `login` is ~570 bytes, a post-quantum TLS ClientHello
/// ~1.8 KiB): also the payload of the large record.
pub const FIRST_BYTES_MAX: usize = 2048;
/// Sends gathered into a first message at most.
pub const FIRST_BYTES_SENDS: u32 = 4;

/// The peer of a connection, as the kernel knows it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Endpoint {
    /// AF_INET / AF_INET6.
    pub family: u16,
    /// Host order.
    pub port: u16,
    pub _pad: u32,
    /// 4 bytes for IPv4, 16 for IPv6, network order.
    pub addr: [u8; 16],
}

/// One of the first sends on a TCP connection this process opened (or
/// accepted: the peer's), or a UDP socket's first datagram each way: user
/// space joins a connection's sends into its first message. `N` is FIRST_BYTES or
/// FIRST_BYTES_MAX (the ring buffer's reservations have a fixed size).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FirstBytesEvent<const N: usize = FIRST_BYTES> {
    pub header: EventHeader,
    pub peer: Endpoint,
    pub fd: i32,
    /// Bytes of this send (may exceed what was captured).
    pub len: u32,
    pub captured: u32,
    /// Bytes the connection sent before this send.
    pub offset: u32,
    /// 1 when the kernel gathers no more sends for this connection.
    pub last: u8,
    /// 1 for a UDP datagram (always whole, always `last`).
    pub datagram: u8,
    pub _pad: u16,
    /// `first_bytes_direction::*`: whose first message this is.
    pub direction: u32,
    /// The connection, while it lives (the socket cookie; 0 from the
    /// syscall hooks, which key by fd).
    pub conn: u64,
    pub payload: [u8; N],
}

pub const PATH_LEN: usize = 256;

/// Which hook saw a `FileOpenEvent`.
pub mod file_source {
    /// open/openat/openat2/creat/rename (--syscalls).
    pub const SYSCALL: u32 = 0;
    /// The cgroup device hook: a device node opened.
    pub const DEVICE: u32 = 1;
    /// The cgroup sysctl hook: a /proc/sys knob written.
    pub const SYSCTL: u32 = 2;
    /// writeback_dirty_inode_enqueue: a file first written since it was
    /// last clean; the path is the file's name only.
    pub const WRITTEN: u32 = 3;
    /// mm_filemap_get_pages / mm_filemap_fault: a file of 256 KiB or more
    /// read or faulted in, once per process; the path is the name only.
    pub const READ: u32 = 4;
    /// writeback_dirty_inode_enqueue on a file with a temporary name
    /// (`.tmpXXXXXX`, `tmpXXXXXXXX`), which writers rename into
    /// place when it is whole (safetensors' save_file does): the path is
    /// the temporary name, `old_path` holds [`TempFile`], so that user space
    /// can find the name it is renamed to.
    pub const TEMP_WRITTEN: u32 = 5;
}

/// Ancestor directories a `TEMP_WRITTEN` event carries, and their bytes each.
pub const TEMP_DIRS: usize = 6;
pub const TEMP_DIR_NAME: usize = 40;

/// Where a temporarily named file is, in a `TEMP_WRITTEN` event's
/// `old_path`: its inode and device, and the names of its ancestor
/// directories below its file system's root (the parent first), each
/// NUL-terminated in its slot.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TempFile {
    pub ino: u64,
    /// super_block.s_dev: the kernel's dev_t (major << 20 | minor).
    pub dev: u32,
    /// Slots filled.
    pub depth: u16,
    /// 1 when the walk reached the file system's root (the slots are the
    /// whole path), 0 when there were more ancestors than slots.
    pub complete: u16,
    pub dirs: [[u8; TEMP_DIR_NAME]; TEMP_DIRS],
}

const _: () = assert!(core::mem::size_of::<TempFile>() <= PATH_LEN);

/// An open of a file whose name ends in one of the watched suffixes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileOpenEvent {
    pub header: EventHeader,
    /// open(2) flags.
    pub flags: u32,
    /// Bytes of `path` (without the NUL).
    pub path_len: u32,
    /// A rename's source path: bytes of `old_path` (0 for an open).
    pub old_path_len: u32,
    /// Which hook saw it: `file_source::*`.
    pub source: u32,
    pub path: [u8; PATH_LEN],
    pub old_path: [u8; PATH_LEN],
}

/// A TCP socket entering LISTEN.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ListenEvent {
    pub header: EventHeader,
    pub local: Endpoint,
}

/// DNS message direction in [`DnsEvent`].
pub mod dns_direction {
    pub const QUERY: u8 = 1;
    pub const RESPONSE: u8 = 2;
}

/// The first bytes of a message sent to or received from port 53.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DnsEvent {
    pub header: EventHeader,
    pub direction: u8,
    pub _pad: u8,
    /// AF_INET / AF_INET6 of the server.
    pub family: u16,
    /// The server's port (53), host order.
    pub port: u16,
    pub _pad2: u16,
    /// Bytes of the whole message (may exceed what was captured).
    pub len: u32,
    /// Bytes in `payload`.
    pub captured: u32,
    pub addr: [u8; 16],
    pub payload: [u8; DNS_CAPTURE],
}

/// Per process and remote endpoint: the key of `FLOWS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub tgid: u32,
    /// AF_INET or AF_INET6; 0 for a socket with no peer (unconnected UDP).
    pub family: u16,
    /// IPPROTO_*.
    pub protocol: u16,
    /// Remote port, host order.
    pub port: u16,
    pub _pad: u16,
    /// Remote address: 4 bytes for IPv4, 16 for IPv6, network order.
    pub addr: [u8; 16],
    pub _pad2: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub tx_calls: u64,
    pub rx_calls: u64,
}

pub mod first_bytes_direction {
    /// What the process sent first on a connection it opened.
    pub const OUTBOUND: u32 = 0;
    /// What the peer sent first on a connection the process accepted.
    pub const INBOUND: u32 = 1;
}

/// A socket's owner and where its counting stands: the value of the
/// socket-local storage `SOCKET_STATE`. User space writes one for each
/// socket that existed before the programs were attached.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SocketState {
    /// `socket_flags::*`: read by every packet, written rarely.
    pub flags: u32,
    pub _pad: u32,
    /// The owner (`tgid`; 0: none seen yet) and the peer its bytes go to.
    pub flow: FlowKey,
    /// A listening socket's process (the header of its records), which
    /// its accepted connections inherit, or the process that accepted,
    /// or a UDP socket's (for its first datagrams). Unset (kind 0) for
    /// other sockets.
    pub owner: EventHeader,
    /// Each direction's last flush. Packets write here only then (about
    /// once a second for TCP), not per segment.
    pub tx: DirectionCounts,
    pub rx: DirectionCounts,
}

/// Where one direction of a socket stood at its last flush.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DirectionCounts {
    /// When, in jiffies.
    pub flushed: u64,
    /// TCP: the sequence number after the last byte counted.
    pub next: u32,
    /// TCP: the kernel's data-segment count.
    pub segs: u32,
}

pub mod socket_flags {
    /// `tx.next` / `rx.next` hold a position.
    pub const TX_SEQ: u32 = 1;
    pub const RX_SEQ: u32 = 2;
    /// `SOCKETS` holds something to report for this socket (a handshake,
    /// a first message, DNS): the packet hooks look there too.
    pub const REPORTS: u32 = 4;
    /// A TCP socket bound by a process the tracer saw (post_bind): a
    /// listener, whose accepted connections inherit this state (the map
    /// is cloned to them by the kernel).
    pub const LISTENER: u32 = 8;
    /// An accepted connection whose peer's first message is still to be
    /// captured.
    pub const ACCEPTED: u32 = 16;
    /// A UDP socket whose first datagram sent (received) is still to be
    /// reported, for the process in `owner`.
    pub const FIRST_DATAGRAM_OUT: u32 = 32;
    pub const FIRST_DATAGRAM_IN: u32 = 64;
}

/// CPU time charged on one CPU to a process and not yet collected: the
/// context-switch program keeps the few processes a CPU switches between in
/// a per-CPU array, so most switches touch no hash table. A slot given to
/// another process is logged in `EVICTED_SLOTS` for user space (or, when
/// that CPU's log is full, added to `PROC_STATS`); user space adds the
/// slots still held to what it reads of both.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSlot {
    /// 0: free.
    pub tgid: u32,
    pub _pad: u32,
    pub cpu_ns: u64,
    pub waits: u64,
}

pub const CPU_SLOTS: usize = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSlots {
    pub slots: [CpuSlot; CPU_SLOTS],
    /// The slot the next process takes (round robin).
    pub next: u32,
    pub _pad: u32,
}

/// Entries in each CPU's log of slots it gave to another process
/// (`EVICTED_SLOTS` holds CPU n's from `n * EVICTED_PER_CPU`); a power of
/// two, so an entry's place is a mask. User space empties the logs at
/// every snapshot, every exit record and every 250 ms, so a CPU needs room
/// for what it evicts between two of those.
pub const EVICTED_PER_CPU: u32 = 1024;

/// One CPU's place in its log of evicted slots (`EVICTED_HEADS[cpu]`): the
/// kernel advances `written` after the entry is in place, user space
/// advances `taken` after it has read up to there. A full log
/// (`written - taken == EVICTED_PER_CPU`) sends the slot to `PROC_STATS`
/// instead, so nothing is lost. Each on its own cache line: CPUs write
/// their own only.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvictedHead {
    pub written: u64,
    pub taken: u64,
    pub _pad: [u64; 6],
}

/// A setsid(2) that succeeded; the header is the caller.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SetSidEvent {
    pub header: EventHeader,
    pub sid: u32,
    pub _pad: u32,
}

/// GPU device families the kernel side decodes arguments for. User space
/// maps device numbers to these in `GPU_DEVICES`.
pub mod gpu_vendor {
    /// nvidia.ko frontend: /dev/nvidiactl, /dev/nvidiaN, /dev/nvidia-modeset.
    pub const NVIDIA: u32 = 1;
    /// /dev/nvidia-uvm (raw-integer ioctl numbers).
    pub const NVIDIA_UVM: u32 = 2;
    /// /dev/kfd (ROCm).
    pub const AMD_KFD: u32 = 3;
    /// DRM nodes by driver.
    pub const AMDGPU: u32 = 4;
    pub const I915: u32 = 5;
    pub const XE: u32 = 6;
    /// Any other DRM or GPU-like device: counted by raw command.
    pub const OTHER: u32 = 7;
}

/// `GPU_DEVICES` key that matches every minor of a major.
pub const ANY_MINOR: u32 = 0xfffff;

/// Encodes a device number as the kernel stores it in `inode->i_rdev`
/// (include/linux/kdev_t.h: MINORBITS 20).
pub const fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & 0xfffff)
}

/// Per process, device and operation: the key of `GPU_STATS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GpuStatKey {
    pub tgid: u32,
    /// Kernel device number (`kernel_dev`).
    pub rdev: u32,
    /// The ioctl command; NVIDIA's NV_ESC_IOCTL_XFER_CMD is unwrapped to the
    /// command it carries.
    pub cmd: u32,
    /// What the argument says the operation is about: the RM class for
    /// NV_ESC_RM_ALLOC, the control command for NV_ESC_RM_CONTROL, the queue
    /// type for KFD CREATE_QUEUE; else 0.
    pub sub: u32,
}

/// Per-CPU counters under a `GpuStatKey`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuStat {
    pub calls: u64,
    /// ioctl returned < 0, or the driver's own status field was non-zero.
    pub errors: u64,
    /// Time inside the ioctl, enter to exit.
    pub total_ns: u64,
    /// Bytes the argument asked to allocate or map, successful calls only.
    pub bytes: u64,
    /// Bytes asked for by every call, failed ones included.
    pub bytes_requested: u64,
}

/// First ioctl of a process on a GPU device.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GpuOpenEvent {
    pub header: EventHeader,
    pub rdev: u32,
    pub vendor: u32,
    pub fd: i32,
    pub cmd: u32,
    /// As in `GpuStatKey::sub`.
    pub sub: u32,
    pub _pad: u32,
}

// No implicit padding: these cross to the kernel byte for byte.
const _: () =
    assert!(size_of::<KernelOffsets>().is_multiple_of(8) && size_of::<TracepointOffsets>().is_multiple_of(8));
const _: () =
    assert!(size_of::<Config>() == 48 + size_of::<KernelOffsets>() + size_of::<TracepointOffsets>());

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: plain `#[repr(C)]` data with explicit padding, valid for any
    // bit pattern.
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for ConnectArgs {}
    unsafe impl aya::Pod for GpuStatKey {}
    unsafe impl aya::Pod for GpuStat {}
    unsafe impl aya::Pod for ProcStats {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowStats {}
    unsafe impl aya::Pod for SocketState {}
    unsafe impl aya::Pod for CpuSlots {}
    unsafe impl aya::Pod for CpuSlot {}
    unsafe impl aya::Pod for EvictedHead {}
}
