//! `cargo xtask eval`: real workloads under the tracer, each labelled; prints
//! a confusion matrix, per-class precision and recall, and time to verdict.
//!
//! Every workload runs in its own session (so it is one process tree to the
//! classifier), on loopback only, with software from the registries this
//! machine reaches: py-scrypt's scrypt for proof-of-work, PyTorch (CPU
//! training, and a two-rank torch.distributed gloo job), numpy and
//! safetensors for the ML cases, hsd (Handshake's full node, npm) with four
//! local peers, Debian's gzip, coreutils, OpenSSL, nginx and wrk,
//! PostgreSQL and pgbench, cargo for a build. The pool and the scripts that drive them are
//! in xtask/eval/.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

unsafe extern "C" {
    #[link_name = "setsid"]
    fn libc_setsid() -> i32;
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

struct Case {
    name: &'static str,
    label: &'static str,
    /// argv; `{py}` is the eval venv's python, `{dir}` the case's work dir,
    /// `{work}` the eval's (with `blob`, 256 MiB of random bytes), `{pg}` a
    /// free port for PostgreSQL,
    /// `{eval}` xtask/eval, `{pool}` the pool's port, `{web}` nginx's port.
    argv: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "stratum-pool-port",
        label: "crypto_mining",
        argv: &["{py}", "{eval}/miner.py", "stratum", "{pool}", "8"],
    },
    Case {
        name: "xmrig-protocol-port-443-style",
        label: "crypto_mining",
        argv: &["{py}", "{eval}/miner.py", "xmrig", "{pool443}", "8"],
    },
    Case {
        name: "stratum-renamed-process",
        label: "crypto_mining",
        argv: &["{py}", "{eval}/miner.py", "stratum", "{pool443}", "8", "backupd"],
    },
    Case {
        name: "numpy-training-safetensors",
        label: "ai_training",
        argv: &["{py}", "{eval}/train.py", "{dir}", "8"],
    },
    Case {
        name: "pytorch-training",
        label: "ai_training",
        argv: &["{py}", "{eval}/torch_train.py", "{dir}", "8"],
    },
    Case {
        name: "pytorch-ddp-gloo-2-ranks",
        label: "ai_training",
        argv: &["{py}", "{eval}/torch_ddp.py", "{dir}", "8"],
    },
    Case {
        name: "inference-server",
        label: "ai_inference",
        argv: &["{py}", "{eval}/infer.py", "{dir}", "8"],
    },
    Case {
        name: "handshake-node",
        label: "blockchain_node",
        argv: &[
            "sh",
            "-c",
            "timeout 10 node {work}/node/node_modules/.bin/hsd --network=regtest --memory=true --listen=true \
             --host=127.0.0.2 --port=14038 --http-host=127.0.0.2 --ns-host=127.0.0.2 --rs-host=127.0.0.2 \
             --no-wallet --prefix={dir}/hsd --log-level=warning \
             --nodes=127.0.0.3:14038,127.0.0.4:14038,127.0.0.5:14038,127.0.0.6:14038; [ $? -eq 124 ]",
        ],
    },
    Case {
        name: "sha256sum-large-file",
        label: "ordinary",
        argv: &["sh", "-c", "sha256sum {work}/blob {work}/blob {work}/blob >/dev/null"],
    },
    Case {
        name: "gzip-large-file",
        label: "ordinary",
        argv: &["sh", "-c", "gzip -c -6 {work}/blob > {dir}/blob.gz"],
    },
    Case {
        name: "openssl-speed",
        label: "ordinary",
        argv: &["openssl", "speed", "-seconds", "6", "-multi", "2", "sha256"],
    },
    Case {
        name: "nginx-under-wrk",
        label: "ordinary",
        argv: &["sh", "-c", "wrk -t1 -c16 -d6s http://127.0.0.1:{web}/ >/dev/null"],
    },
    Case {
        name: "postgres-under-pgbench",
        label: "ordinary",
        argv: &["sh", "{eval}/pgbench.sh", "{dir}/pg", "{pg}", "6"],
    },
    Case {
        name: "cargo-build",
        label: "ordinary",
        // From a clean target directory, so it really compiles.
        argv: &[
            "sh",
            "-c",
            "rm -rf {dir}/target && cargo build --offline --quiet -p xtask --target-dir {dir}/target",
        ],
    },
];

/// Helper processes (pools, peers) that must not outlive the run, even
/// when a case fails.
struct Helpers(Vec<Child>);

impl Drop for Helpers {
    fn drop(&mut self) {
        for p in &mut self.0 {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

pub struct Options {
    pub tracer: PathBuf,
    pub root: PathBuf,
}

fn wait_started(out: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if fs::read_to_string(out).is_ok_and(|s| s.contains("\"status\":\"started\"")) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("tracer did not start")
}

fn spawn_in_session(argv: &[String], dir: &Path, log: &Path) -> Result<Child> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(fs::File::create(log)?)
        .stderr(fs::File::create(log.with_extension("err"))?);
    // SAFETY: setsid is async-signal-safe; the child becomes its own tree.
    unsafe {
        cmd.pre_exec(|| {
            libc_setsid();
            Ok(())
        })
    };
    cmd.spawn().with_context(|| format!("starting {argv:?}"))
}

/// The verdict for one tree in a capture, when it was first given, and when
/// the first mining message was seen.
struct Outcome {
    category: String,
    confidence: f64,
    first_verdict: Option<u64>,
    first_mining_message: Option<u64>,
    evidence: Vec<String>,
}

fn outcome(capture: &Path, sid: u32) -> Result<Outcome> {
    let mut o = Outcome {
        category: "ordinary".into(),
        confidence: 0.0,
        first_verdict: None,
        first_mining_message: None,
        evidence: Vec::new(),
    };
    for line in BufReader::new(fs::File::open(capture)?).lines() {
        let r: Value = serde_json::from_str(&line?)?;
        let mono = r["mono_ns"].as_u64();
        if r["kind"] == "network.first_bytes"
            && r["first_bytes"]["mining"] == true
            && r["process"]["session"].as_u64() == Some(u64::from(sid))
        {
            o.first_mining_message = o.first_mining_message.or(mono);
        }
        let c = &r["classification"];
        if r["kind"] == "classification"
            && c["scope"] == "tree"
            && c["key"].as_str() == Some(sid.to_string().as_str())
        {
            o.category = c["category"].as_str().unwrap_or("?").to_string();
            o.confidence = c["confidence"].as_f64().unwrap_or(0.0);
            o.first_verdict = o.first_verdict.or(mono);
            o.evidence = c["evidence"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["indicator"].as_str().map(str::to_string))
                .collect();
        }
    }
    Ok(o)
}

fn prepare(root: &Path, work: &Path) -> Result<PathBuf> {
    let venv = work.join("venv");
    let py = venv.join("bin/python");
    if !py.exists() && !Command::new("python3").arg("-m").arg("venv").arg(&venv).status()?.success() {
        bail!("could not create a Python venv in {}", venv.display());
    }
    let have = |modules: &str| {
        Command::new(&py)
            .args(["-c", &format!("import {modules}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !have("scrypt, numpy, safetensors, torch") {
        eprintln!("eval: installing scrypt, numpy, safetensors, torch into the venv (a few GB, once)");
        let ok = Command::new(&py)
            .args(["-m", "pip", "install", "--quiet", "scrypt", "numpy", "safetensors", "torch"])
            .status()?
            .success();
        if !ok {
            bail!("could not install the Python packages into {}", venv.display());
        }
    }
    let hsd = work.join("node/node_modules/.bin/hsd");
    if !hsd.exists() {
        eprintln!("eval: installing hsd (Handshake's full node) from npm");
        fs::create_dir_all(work.join("node"))?;
        let ok = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(work.join("node"))
            .arg("hsd")
            .status()?
            .success();
        if !ok {
            bail!("could not install hsd with npm");
        }
    }
    let blob = work.join("blob");
    if !blob.exists() {
        // 256 MiB of incompressible-ish data, made once.
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("head -c 268435456 /dev/urandom > {}", blob.display()))
            .status()?
            .success();
        if !ok {
            bail!("could not make {}", blob.display());
        }
    }
    let _ = root;
    Ok(py)
}

pub fn run(opts: &Options) -> Result<()> {
    crate::setup::ensure_packages(&["nginx", "wrk", "openssl", "python3-venv", "postgresql"])?;
    let work = opts.root.join("target/eval");
    fs::create_dir_all(&work)?;
    let py = prepare(&opts.root, &work)?;
    let eval_dir = opts.root.join("xtask/eval");

    let free_port = || std::net::TcpListener::bind("127.0.0.1:0").map(|l| l.local_addr().map(|a| a.port()));
    let pool_port = free_port()??;
    let pg_port = free_port()??;
    // A second pool on 443 when it is free: a miner on a non-mining port.
    let pool443 = if std::net::TcpListener::bind("127.0.0.1:443").is_ok() { 443 } else { free_port()?? };
    let mut pools = Helpers(Vec::new());
    for port in [pool_port, pool443] {
        pools.0.push(
            Command::new(&py)
                .arg(eval_dir.join("pool.py"))
                .arg(port.to_string())
                .stdout(Stdio::null())
                .spawn()
                .context("starting the pool simulator")?,
        );
    }
    // Four Handshake peers (regtest, in memory) on their own loopback
    // addresses, for the node case to connect to.
    let hsd = work.join("node/node_modules/.bin/hsd");
    for i in 3..=6 {
        let host = format!("127.0.0.{i}");
        pools.0.push(
            Command::new("node")
                .arg(&hsd)
                .args(["--network=regtest", "--memory=true", "--listen=true", "--port=14038", "--no-wallet"])
                .args(["--log-level=warning"])
                .arg(format!("--host={host}"))
                .arg(format!("--http-host={host}"))
                .arg(format!("--ns-host={host}"))
                .arg(format!("--rs-host={host}"))
                .arg(format!("--prefix={}", work.join(format!("peer{i}")).display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting a Handshake peer")?,
        );
    }
    let nginx = crate::bench::Nginx::start(&work)?;
    std::thread::sleep(Duration::from_secs(5));

    let mut rows = Vec::new();
    for case in CASES {
        let dir = work.join(case.name);
        fs::create_dir_all(&dir)?;
        let argv: Vec<String> = case
            .argv
            .iter()
            .map(|a| {
                a.replace("{py}", py.to_str().unwrap_or_default())
                    .replace("{dir}", dir.to_str().unwrap_or_default())
                    .replace("{work}", work.to_str().unwrap_or_default())
                    .replace("{eval}", eval_dir.to_str().unwrap_or_default())
                    .replace("{pool443}", &pool443.to_string())
                    .replace("{pool}", &pool_port.to_string())
                    .replace("{web}", &nginx.port.to_string())
                    .replace("{pg}", &pg_port.to_string())
            })
            .collect();
        let capture = work.join(format!("{}.jsonl", case.name));
        let _ = fs::remove_file(&capture);
        let mut tracer = Command::new(&opts.tracer)
            .args(["record", "--activity-interval", "2s", "--health-interval", "1h", "--no-nvml", "-o"])
            .arg(&capture)
            .spawn()
            .context("starting the tracer")?;
        wait_started(&capture)?;
        let started = Instant::now();
        let mut child = spawn_in_session(&argv, &opts.root, &dir.join("workload.log"))?;
        let sid = child.id();
        let status = child.wait()?;
        let ran = started.elapsed();
        // One more report so the last interval is in.
        std::thread::sleep(Duration::from_millis(2500));
        // SAFETY: signalling our own child.
        unsafe { libc_kill(tracer.id() as i32, 2) };
        tracer.wait()?;
        let mut o = outcome(&capture, sid)?;
        if !status.success() {
            // A workload that failed proves nothing: it is not counted right.
            o.category = format!("workload failed ({status})");
        }
        eprintln!(
            "eval: {:<32} label {:<14} verdict {:<14} ({:.2}) in {:.1}s, exit {status} [{}]",
            case.name,
            case.label,
            o.category,
            o.confidence,
            ran.as_secs_f64(),
            o.evidence.join(", ")
        );
        rows.push((case, o));
    }
    drop(nginx);
    drop(pools);
    report(&rows, &work)
}

fn report(rows: &[(&Case, Outcome)], work: &Path) -> Result<()> {
    let classes = [
        "crypto_mining",
        "blockchain_node",
        "ai_training",
        "ai_inference",
        "distributed_storage",
        "ordinary",
    ];
    let present: Vec<&str> = classes
        .iter()
        .copied()
        .filter(|c| rows.iter().any(|(case, o)| case.label == *c || o.category == *c))
        .collect();
    let mut m: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    for (case, o) in rows {
        *m.entry((case.label, present.iter().copied().find(|c| *c == o.category).unwrap_or("ordinary")))
            .or_default() += 1;
    }
    let mut out = String::new();
    writeln!(out, "| case | label | verdict | confidence | evidence | time to verdict |")?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    for (case, o) in rows {
        let ttv = match (o.first_mining_message, o.first_verdict) {
            (Some(msg), Some(v)) if v >= msg => {
                format!("{:.2} s after the first mining message", (v - msg) as f64 / 1e9)
            }
            (_, Some(_)) => "at first evidence".into(),
            _ => "-".into(),
        };
        writeln!(
            out,
            "| {} | {} | {} | {:.2} | {} | {} |",
            case.name,
            case.label,
            o.category,
            o.confidence,
            o.evidence.join(", "),
            ttv
        )?;
    }
    writeln!(out, "\nconfusion matrix (rows: label, columns: verdict)\n")?;
    write!(out, "| label \\ verdict |")?;
    for c in &present {
        write!(out, " {c} |")?;
    }
    writeln!(out)?;
    writeln!(out, "|---|{}", "---|".repeat(present.len()))?;
    for l in &present {
        write!(out, "| {l} |")?;
        for c in &present {
            write!(out, " {} |", m.get(&(*l, *c)).copied().unwrap_or(0))?;
        }
        writeln!(out)?;
    }
    writeln!(out, "\n| class | precision | recall |")?;
    writeln!(out, "|---|---|---|")?;
    for c in &present {
        let tp = m.get(&(*c, *c)).copied().unwrap_or(0) as f64;
        let predicted: u32 = present.iter().map(|l| m.get(&(*l, *c)).copied().unwrap_or(0)).sum();
        let actual: u32 = present.iter().map(|v| m.get(&(*c, *v)).copied().unwrap_or(0)).sum();
        let p = if predicted > 0 { format!("{:.2}", tp / f64::from(predicted)) } else { "-".into() };
        let r = if actual > 0 { format!("{:.2}", tp / f64::from(actual)) } else { "-".into() };
        writeln!(out, "| {c} | {p} | {r} |")?;
    }
    let correct = rows.iter().filter(|(c, o)| c.label == o.category).count();
    writeln!(
        out,
        "\noverall: {correct} of {} correct ({:.0} %)",
        rows.len(),
        100.0 * correct as f64 / rows.len() as f64
    )?;
    print!("{out}");
    fs::write(work.join("eval.md"), &out)?;
    eprintln!("written to {}", work.join("eval.md").display());
    Ok(())
}
