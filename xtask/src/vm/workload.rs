//! The fixed workload every kernel of the matrix is checked with, run the
//! same way on this host and inside each guest: an exec with argv, a TCP
//! exchange with known byte counts and a first message, a refused TCP
//! connect, a UDP send to a closed port, a DNS query to a loopback
//! responder, a CPU burner and a short-lived child with an exit code.
//! Each step runs in a child process of its own, started with a fixed
//! argv[0], so records can be matched across kernels by argv.
//!
//! `run_traced` starts the tracer on the workload's process (`--pid`),
//! releases the workload once the tracer reports `started`, and stops the
//! tracer when the workload is done: its records are the result.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Shutdown, TcpListener, TcpStream, UdpSocket},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// argv[0] of every workload process.
pub const ARG0: &str = "vm-workload";
pub const TCP_PORT: u16 = 47001;
/// Nothing listens here: the connect is refused.
pub const REFUSED_PORT: u16 = 47002;
pub const UDP_PORT: u16 = 47003;
/// Any 127/8 address is local; this one keeps clear of a host resolver.
pub const DNS_SERVER: &str = "127.0.53.53";
pub const DNS_NAME: &str = "vm-check.example";
pub const DNS_ANSWER: [u8; 4] = [10, 20, 30, 40];
/// The client's first message, then its bulk, then the server's reply.
pub const FIRST_MESSAGE: &[u8] = b"HELLO vm-check 1\n";
pub const CLIENT_BULK: usize = 4096;
pub const SERVER_REPLY: usize = 8192;
pub const UDP_PAYLOAD: &[u8] = b"udp-check";
pub const EXIT_CODE: i32 = 3;
pub const BURN: Duration = Duration::from_millis(1500);

/// One step of the workload, run as `xtask vm-workload ROLE`.
pub fn role(name: &str) -> Result<()> {
    match name {
        // The root: waits for a line on stdin (the tracer is ready), then
        // runs the steps one after another.
        "main" => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            let tcp = spawn("tcp-server")?;
            let dns = spawn("dns-server")?;
            wait_bound("/proc/net/tcp", &format!("0100007F:{TCP_PORT:04X}"), "0A")?;
            wait_bound("/proc/net/udp", "3535007F:0035", "07")?;
            run("tcp-client", 0)?;
            run("tcp-refused", 0)?;
            run("udp-send", 0)?;
            run("dns-client", 0)?;
            run("burn", 0)?;
            run("short", EXIT_CODE)?;
            for mut server in [tcp, dns] {
                let status = server.wait()?;
                if !status.success() {
                    bail!("a workload server failed: {status}");
                }
            }
            Ok(())
        }
        "tcp-server" => {
            let listener = TcpListener::bind(("127.0.0.1", TCP_PORT))?;
            let (mut conn, _) = listener.accept()?;
            let mut got = vec![0u8; FIRST_MESSAGE.len() + CLIENT_BULK];
            conn.read_exact(&mut got)?;
            conn.write_all(&vec![b'y'; SERVER_REPLY])?;
            conn.shutdown(Shutdown::Write)?;
            // Until the client has closed: its last read sees our close.
            let _ = conn.read(&mut [0u8; 1]);
            Ok(())
        }
        "tcp-client" => {
            let mut conn = TcpStream::connect(("127.0.0.1", TCP_PORT))?;
            conn.write_all(FIRST_MESSAGE)?;
            conn.write_all(&vec![b'x'; CLIENT_BULK])?;
            let mut reply = vec![0u8; SERVER_REPLY];
            conn.read_exact(&mut reply)?;
            Ok(())
        }
        "tcp-refused" => match TcpStream::connect(("127.0.0.1", REFUSED_PORT)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
            other => bail!("connect to the closed port {REFUSED_PORT}: expected refusal, got {other:?}"),
        },
        "udp-send" => {
            let sock = UdpSocket::bind("127.0.0.1:0")?;
            sock.connect(("127.0.0.1", UDP_PORT))?;
            sock.send(UDP_PAYLOAD)?;
            Ok(())
        }
        "dns-server" => {
            let sock = UdpSocket::bind((DNS_SERVER, 53))?;
            let mut buf = [0u8; 512];
            let (n, from) = sock.recv_from(&mut buf)?;
            sock.send_to(&dns_answer(&buf[..n])?, from)?;
            Ok(())
        }
        "dns-client" => {
            let sock = UdpSocket::bind("127.0.0.1:0")?;
            sock.connect((DNS_SERVER, 53))?;
            sock.send(&dns_query(DNS_NAME))?;
            sock.set_read_timeout(Some(Duration::from_secs(20)))?;
            let mut buf = [0u8; 512];
            let n = sock.recv(&mut buf)?;
            if buf[n - 4..n] != DNS_ANSWER {
                bail!("unexpected DNS answer");
            }
            Ok(())
        }
        "burn" => {
            let start = Instant::now();
            let mut x = 1u64;
            while start.elapsed() < BURN {
                for _ in 0..100_000 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                }
            }
            std::hint::black_box(x);
            Ok(())
        }
        "short" => std::process::exit(EXIT_CODE),
        other => bail!("unknown workload role {other}"),
    }
}

fn command(role: &str) -> Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg0(ARG0).args(["vm-workload", role]);
    Ok(cmd)
}

fn spawn(role: &str) -> Result<std::process::Child> {
    command(role)?.spawn().with_context(|| format!("starting {role}"))
}

fn run(role: &str, code: i32) -> Result<()> {
    let status = command(role)?.status().with_context(|| format!("running {role}"))?;
    if status.code() != Some(code) {
        bail!("workload step {role}: {status}, expected exit code {code}");
    }
    Ok(())
}

/// Until a socket is bound at `local` (as /proc/net/{tcp,udp} spell it:
/// little-endian address, port) in state `st` (include/net/tcp_states.h:
/// 0A listening, 07 an unconnected UDP socket). Probed without connecting:
/// a connect would be a record of its own.
fn wait_bound(table: &str, local: &str, st: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        if text.lines().any(|l| {
            let mut f = l.split_whitespace();
            f.nth(1) == Some(local) && f.nth(1) == Some(st)
        }) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("no workload server bound at {local} in {table}")
}

/// A standard query for the A record of `name`, id 0x5644.
fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x56, 0x44, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The query turned into a response with one A record.
fn dns_answer(query: &[u8]) -> Result<Vec<u8>> {
    if query.len() < 12 {
        bail!("short DNS query");
    }
    let mut r = query.to_vec();
    r[2] = 0x81;
    r[3] = 0x80;
    r[7] = 1;
    // Name by pointer to the question, type A, class IN, TTL 60, 4 bytes.
    r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    r.extend_from_slice(&DNS_ANSWER);
    Ok(r)
}

/// Runs the workload under `tracer` and returns the tracer's stdout: the
/// records, ending with its final health record.
pub fn run_traced(tracer: &Path) -> Result<String> {
    let mut workload = command("main")?.stdin(Stdio::piped()).spawn().context("starting the workload")?;
    let mut tracer = Command::new(tracer)
        .args(["run", "--pid", &workload.id().to_string(), "--activity-interval", "2s"])
        .args(["--health-interval", "60s", "--no-nvml"])
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", tracer.display()))?;
    let mut out = BufReader::new(tracer.stdout.take().expect("piped"));
    let mut records = String::new();
    let mut line = String::new();
    while !records.contains("\"status\":\"started\"") {
        line.clear();
        if out.read_line(&mut line)? == 0 {
            let _ = workload.kill();
            bail!("the tracer exited before it started ({})", tracer.wait()?);
        }
        records.push_str(&line);
    }
    // Each step on stderr (a guest's console): a run that hangs shows where.
    eprintln!("workload: the tracer started");
    workload.stdin.take().expect("piped").write_all(b"go\n")?;
    let status = workload.wait()?;
    eprintln!("workload: done ({status})");
    // One more activity interval, so the last steps' counters are drained.
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: signalling our own child.
    unsafe { kill(tracer.id() as i32, 2) };
    out.read_to_string(&mut records)?;
    let tracer_status = tracer.wait()?;
    eprintln!("workload: the tracer stopped ({tracer_status})");
    if !status.success() {
        bail!("the workload failed: {status}");
    }
    if !tracer_status.success() {
        bail!("the tracer failed: {tracer_status}");
    }
    Ok(records)
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}
