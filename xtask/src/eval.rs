//! `cargo xtask eval`: real workloads under the tracer, each labelled; prints
//! a confusion matrix, per-class precision and recall, time to verdict from
//! the workload's start, development and held-out scores, and pass or fail
//! against stated targets (exits non-zero on a miss). A case whose workload
//! did not run as intended (exit status, the pool's log of logins and
//! shares, bytes exchanged with peers, checkpoints written) is reported as failed,
//! never as a verdict; every other tree or container that got a verdict
//! during a case is scored too.
//!
//! Every workload runs in its own session (so it is one process tree to the
//! classifier), on loopback only, with software from the registries this
//! machine reaches: py-scrypt's scrypt for proof-of-work, aioquic (HTTP/3, a look-alike of QUIC nodes), PyTorch (CPU
//! training, and a two-rank torch.distributed gloo job), numpy and
//! safetensors for the ML cases, hsd (Handshake's full node, npm) with four
//! local peers, js-libp2p with the IPFS DHT over TCP and QUIC (npm),
//! @ethereumjs/devp2p's discovery with four nodes (npm), Debian's gzip, coreutils, OpenSSL, nginx and wrk,
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
    #[link_name = "getsid"]
    fn libc_getsid(pid: i32) -> i32;
}

/// How the eval knows a workload ran as intended; one that did not proves
/// nothing and is reported as failed, never as a verdict.
#[derive(Clone, Copy)]
enum Ran {
    /// It exited 0.
    Exit,
    /// And the pool simulator logged a login and at least one share.
    PoolShares,
    /// And its session exchanged bytes both ways with a peer on one of
    /// these ports (a node's connects are non-blocking: their result says
    /// nothing; which node dials which is the nodes' choice).
    Peers(&'static [u16]),
    /// And it left a file ending so in its work dir (a checkpoint).
    Wrote(&'static str),
}

struct Case {
    name: &'static str,
    /// The category the case is, and any others it is at the same time (a
    /// node that mines is `blockchain_node` and also `crypto_mining`).
    label: &'static str,
    also: &'static [&'static str],
    ran: Ran,
    /// Added after the rules' weights were last chosen and never used to
    /// choose them (see rules/default.toml): scored apart, as the honest
    /// estimate of how the rules do on what they were not fitted to.
    held_out: bool,
    /// argv; `{py}` is the eval venv's python, `{dir}` the case's work dir,
    /// `{work}` the eval's (with `blob`, 256 MiB of random bytes), `{pg}` a
    /// free port for PostgreSQL,
    /// `{eval}` xtask/eval, `{pool}` the pool's port (`{pool443}` one on 443,
    /// `{pooltls}` one speaking TLS), `{web}` nginx's port, `{port8000}` 8000
    /// (or a free port when it is taken).
    argv: &'static [&'static str],
}

/// The P2P ports xtask/eval/monero_nodes.sh gives its three nodes.
const MONERO_P2P_PORTS: [u16; 3] = [47180, 47280, 47380];

const CASES: &[Case] = &[
    Case {
        name: "stratum-pool-port",
        label: "crypto_mining",
        also: &[],
        ran: Ran::PoolShares,
        held_out: false,
        argv: &["{py}", "{eval}/miner.py", "stratum", "{pool}", "8"],
    },
    Case {
        name: "xmrig-protocol-port-443-style",
        label: "crypto_mining",
        also: &[],
        ran: Ran::PoolShares,
        held_out: false,
        argv: &["{py}", "{eval}/miner.py", "xmrig", "{pool443}", "8"],
    },
    Case {
        name: "stratum-renamed-process",
        label: "crypto_mining",
        also: &[],
        ran: Ran::PoolShares,
        held_out: false,
        argv: &["{py}", "{eval}/miner.py", "stratum", "{pool443}", "8", "backupd"],
    },
    // The real RandomX (Debian's librandomx0) behind an XMRig-shaped client,
    // in the evasions an operator would try.
    Case {
        name: "randomx-xmrig-login-port-443-renamed",
        label: "crypto_mining",
        also: &[],
        ran: Ran::PoolShares,
        held_out: false,
        argv: &[
            "{py}",
            "{eval}/randomx_miner.py",
            "plain",
            "{pool443}",
            "12",
            "2",
            "{dir}",
            "systemd-journal",
        ],
    },
    Case {
        name: "randomx-offline-benchmark",
        label: "crypto_mining",
        also: &[],
        ran: Ran::Exit,
        held_out: false,
        argv: &["{py}", "{eval}/randomx_miner.py", "offline", "0", "12", "2", "{dir}", "nginx-worker"],
    },
    Case {
        name: "numpy-training-safetensors",
        label: "ai_training",
        also: &[],
        ran: Ran::Wrote(".safetensors"),
        held_out: false,
        argv: &["{py}", "{eval}/train.py", "{dir}", "8"],
    },
    Case {
        name: "pytorch-training",
        label: "ai_training",
        also: &[],
        ran: Ran::Wrote(".pt"),
        held_out: false,
        argv: &["{py}", "{eval}/torch_train.py", "{dir}", "8"],
    },
    Case {
        name: "pytorch-ddp-gloo-2-ranks",
        label: "ai_training",
        also: &[],
        ran: Ran::Wrote(".pt"),
        held_out: false,
        argv: &["{py}", "{eval}/torch_ddp.py", "{dir}", "8"],
    },
    Case {
        name: "inference-server",
        label: "ai_inference",
        also: &[],
        ran: Ran::Exit,
        held_out: false,
        argv: &["{py}", "{eval}/infer.py", "{dir}", "8"],
    },
    Case {
        name: "handshake-node",
        label: "blockchain_node",
        also: &[],
        ran: Ran::Peers(&[14038]),
        held_out: false,
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
        name: "ipfs-dht-node",
        label: "distributed_storage",
        also: &[],
        ran: Ran::Exit,
        held_out: true,
        argv: &["node", "{work}/libp2p/ipfs_dht.mjs", "8"],
    },
    Case {
        name: "ipfs-dht-node-over-quic",
        label: "distributed_storage",
        also: &[],
        ran: Ran::Exit,
        held_out: true,
        argv: &["node", "{work}/libp2p/ipfs_dht.mjs", "8", "quic"],
    },
    Case {
        name: "ethereum-discovery-4-nodes",
        label: "blockchain_node",
        also: &[],
        ran: Ran::Exit,
        held_out: true,
        argv: &["node", "{work}/ethereum/eth_discovery.mjs", "6", "40401", "40402", "40403", "40404"],
    },
    Case {
        name: "http3-client-and-server",
        label: "ordinary",
        also: &[],
        ran: Ran::Exit,
        held_out: true,
        argv: &["{py}", "{eval}/http3.py", "{dir}", "8"],
    },
    Case {
        name: "sha256sum-large-file",
        label: "ordinary",
        also: &[],
        ran: Ran::Exit,
        held_out: false,
        argv: &["sh", "-c", "sha256sum {work}/blob {work}/blob {work}/blob >/dev/null"],
    },
    Case {
        name: "gzip-large-file",
        label: "ordinary",
        also: &[],
        ran: Ran::Wrote(".gz"),
        held_out: false,
        argv: &["sh", "-c", "gzip -c -6 {work}/blob > {dir}/blob.gz"],
    },
    Case {
        name: "openssl-speed",
        label: "ordinary",
        also: &[],
        ran: Ran::Exit,
        held_out: false,
        argv: &["openssl", "speed", "-seconds", "6", "-multi", "2", "sha256"],
    },
    Case {
        name: "nginx-under-wrk",
        label: "ordinary",
        also: &[],
        ran: Ran::Exit,
        held_out: false,
        argv: &["sh", "-c", "wrk -t1 -c16 -d6s http://127.0.0.1:{web}/ >/dev/null"],
    },
    Case {
        name: "postgres-under-pgbench",
        label: "ordinary",
        also: &[],
        ran: Ran::Exit,
        held_out: false,
        argv: &["sh", "{eval}/pgbench.sh", "{dir}/pg", "{pg}", "6"],
    },
    Case {
        name: "cargo-build",
        label: "ordinary",
        also: &[],
        ran: Ran::Exit,
        held_out: false,
        // From a clean target directory, so it really compiles.
        argv: &[
            "sh",
            "-c",
            "rm -rf {dir}/target && cargo build --offline --quiet -p xtask --target-dir {dir}/target",
        ],
    },
    Case {
        name: "inference-server-pytorch-bin-port-8000",
        label: "ai_inference",
        also: &[],
        ran: Ran::Exit,
        held_out: false,
        argv: &["{py}", "{eval}/infer_torch.py", "{dir}", "8", "{port8000}"],
    },
    // Storage farmed for tokens, by what is on disk: Chia's own plotter.
    Case {
        name: "chia-plotter-chiapos",
        label: "distributed_storage",
        also: &[],
        ran: Ran::Wrote(".plot"),
        held_out: false,
        argv: &["{py}", "{eval}/chia_plotter.py", "{dir}", "21"],
    },
    // A node's database format, written by an ordinary ML data pipeline.
    Case {
        name: "lmdb-dataset-writer",
        label: "ordinary",
        also: &[],
        ran: Ran::Exit,
        held_out: false,
        argv: &["{py}", "{eval}/lmdb_dataset.py", "{dir}", "8"],
    },
    // Real nodes on ports no rule knows, and the mixed cases: a node that
    // mines, a training job with a miner beside it in the same tree.
    Case {
        name: "monero-nodes-3-regtest",
        label: "blockchain_node",
        also: &[],
        ran: Ran::Peers(&MONERO_P2P_PORTS),
        held_out: false,
        argv: &["sh", "{eval}/monero_nodes.sh", "{dir}", "20", "0"],
    },
    Case {
        name: "monero-node-solo-mining",
        label: "blockchain_node",
        also: &["crypto_mining"],
        // The miner's own port is the one its busy peers reach least.
        ran: Ran::Peers(&MONERO_P2P_PORTS),
        held_out: false,
        argv: &["sh", "{eval}/monero_nodes.sh", "{dir}", "75", "1"],
    },
    Case {
        name: "training-beside-a-randomx-miner",
        label: "ai_training",
        also: &["crypto_mining"],
        ran: Ran::PoolShares,
        held_out: false,
        argv: &[
            "sh",
            "-c",
            "{py} {eval}/torch_train.py {dir} 16 & {py} {eval}/randomx_miner.py plain {pool443} 16 1 {dir} data-loader; \
             s=$?; wait $! && exit $s",
        ],
    },
    // An inference server and a miner in one real container (runc): the
    // container's verdict must name both.
    Case {
        name: "inference-and-miner-in-one-container",
        label: "ai_inference",
        also: &["crypto_mining"],
        ran: Ran::PoolShares,
        held_out: false,
        argv: &[
            "sh",
            "{eval}/container.sh",
            "{dir}",
            "{py} {eval}/infer.py {dir} 16 & {py} {eval}/randomx_miner.py plain {pool443} 16 1 {dir} python3; \
             s=$?; wait $! && exit $s",
        ],
    },
    // Held out: added with no change to the rules after them.
    Case {
        name: "xmrig-renamed-kernel-thread",
        label: "crypto_mining",
        also: &[],
        ran: Ran::PoolShares,
        held_out: true,
        argv: &["{py}", "{eval}/miner.py", "xmrig", "{pool}", "8", "kworker/0:1"],
    },
    Case {
        name: "randomx-tls-to-ip-no-sni",
        label: "crypto_mining",
        also: &[],
        ran: Ran::PoolShares,
        held_out: true,
        argv: &["{py}", "{eval}/randomx_miner.py", "tls", "{pooltls}", "12", "2", "{dir}", "kworker/u4:2"],
    },
    Case {
        name: "randomx-throttled-one-thread",
        label: "crypto_mining",
        also: &[],
        ran: Ran::PoolShares,
        held_out: true,
        argv: &["{py}", "{eval}/randomx_miner.py", "plain", "{pool}", "12", "1", "{dir}", "backupd"],
    },
    // Benign look-alikes of the host-footprint evidence: a JIT (anonymous
    // executable memory, CPU-bound), floating-point number crunching, and a
    // long TLS connection with no SNI carrying small periodic messages.
    Case {
        name: "node-jit-cpu-loop",
        label: "ordinary",
        also: &[],
        ran: Ran::Exit,
        held_out: true,
        argv: &[
            "node",
            "-e",
            "let x = 0; const end = Date.now() + 8000; while (Date.now() < end) { for (let i = 0; i < 1e6; i++) x = Math.sqrt(x + i) * 1.0001; } console.log(x > 0)",
        ],
    },
    Case {
        name: "numpy-matmul-loop",
        label: "ordinary",
        also: &[],
        ran: Ran::Exit,
        held_out: true,
        argv: &[
            "{py}",
            "-c",
            "import time, numpy as np\na = np.random.rand(300, 300)\nend = time.time() + 8\nwhile time.time() < end:\n    a = (a @ a) / 300.0",
        ],
    },
    Case {
        name: "python-tls-heartbeat-to-ip",
        label: "ordinary",
        also: &[],
        ran: Ran::Exit,
        held_out: true,
        argv: &[
            "{py}",
            "-c",
            "import socket, ssl, time\nctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\ns = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {pooltls})))\nf = s.makefile('rwb')\nfor i in range(16):\n    f.write(b'{\"id\":%d,\"method\":\"status.ping\",\"params\":[]}\\n' % i); f.flush(); f.readline(); time.sleep(0.5)",
        ],
    },
    Case {
        name: "copy-model-weights-backup",
        label: "ordinary",
        also: &[],
        ran: Ran::Wrote(".safetensors"),
        // Held out until checkpoint-write was weakened because of it.
        held_out: false,
        // A backup job: reads and writes model-weight files, trains nothing.
        argv: &[
            "sh",
            "-c",
            "head -c 8388608 /dev/urandom > {dir}/model.safetensors && cp {dir}/model.safetensors \
             {dir}/backup.safetensors && sha256sum {dir}/backup.safetensors >/dev/null",
        ],
    },
    Case {
        name: "python-http-polling",
        label: "ordinary",
        also: &[],
        ran: Ran::Exit,
        held_out: true,
        // Small periodic requests from Python, as a monitoring agent makes.
        argv: &[
            "{py}",
            "-c",
            "import time, urllib.request\nfor _ in range(30):\n    urllib.request.urlopen('http://127.0.0.1:{web}/').read(); time.sleep(0.2)",
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
    /// Only cases whose name contains this.
    pub only: Option<String>,
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

/// The verdict for one tree in a capture, when the workload started and
/// was first given a verdict (the tracer's `mono_ns` of both), and the
/// verdicts any other scope got during the case.
struct Outcome {
    /// The primary category, and every category of the last verdict.
    category: String,
    categories: std::collections::BTreeSet<String>,
    confidence: f64,
    /// The first record of the workload's session: its start as the
    /// tracer saw it.
    started: Option<u64>,
    first_verdict: Option<u64>,
    first_mining_message: Option<u64>,
    /// When the tree was first called crypto_mining with confidence ≥ 0.8.
    confident_mining: Option<u64>,
    /// When a real miner says it hashed first (its `first-hash` file).
    first_hash: Option<u64>,
    evidence: Vec<String>,
    /// Remote port -> (bytes sent to it, bytes received from it), over the
    /// whole case: the two directions can fall in different reports.
    talked_to: BTreeMap<u64, (u64, u64)>,
    /// (scope, key) -> the last verdict's categories of every other tree
    /// or container ("+"-joined).
    others: BTreeMap<(String, String), String>,
    /// Why the case proves nothing, when it does not.
    failed: Option<String>,
}

/// The case's verdict: its tree's (the session it was started in), or, for
/// a case run in a container, the container's.
fn outcome(capture: &Path, sid: u32, container: Option<&str>) -> Result<Outcome> {
    let mut o = Outcome {
        category: "ordinary".into(),
        categories: Default::default(),
        confidence: 0.0,
        started: None,
        first_verdict: None,
        first_mining_message: None,
        confident_mining: None,
        first_hash: None,
        evidence: Vec::new(),
        talked_to: Default::default(),
        others: BTreeMap::new(),
        failed: None,
    };
    let key = sid.to_string();
    // The case's own trees: in a container, its processes' sessions are
    // the case's too, and scored with the container.
    let mut our_sessions: std::collections::BTreeSet<String> = [key.clone()].into();
    for line in BufReader::new(fs::File::open(capture)?).lines() {
        let r: Value = serde_json::from_str(&line?)?;
        let mono = r["mono_ns"].as_u64();
        let ours = r["process"]["session"].as_u64() == Some(u64::from(sid))
            || container.is_some_and(|id| r["process"]["container_id"].as_str() == Some(id));
        if ours {
            o.started = o.started.or(mono);
            if let Some(s) = r["process"]["session"].as_u64() {
                our_sessions.insert(s.to_string());
            }
        }
        if ours && r["kind"] == "network.first_bytes" && r["first_bytes"]["mining"] == true {
            o.first_mining_message = o.first_mining_message.or(mono);
        }
        if ours && r["kind"] == "process.activity" {
            for p in r["activity"]["network"]["peers"].as_array().into_iter().flatten() {
                let e = o.talked_to.entry(p["port"].as_u64().unwrap_or(0)).or_default();
                e.0 += p["tx_bytes"].as_u64().unwrap_or(0);
                e.1 += p["rx_bytes"].as_u64().unwrap_or(0);
            }
        }
        if r["kind"] != "classification" {
            continue;
        }
        let c = &r["classification"];
        let category = c["category"].as_str().unwrap_or("?").to_string();
        let categories: std::collections::BTreeSet<String> = match c["categories"].as_array() {
            Some(list) => list.iter().filter_map(|x| x["category"].as_str().map(str::to_string)).collect(),
            None => [category.clone()].into(),
        };
        let scored = match container {
            Some(id) => c["scope"] == "container" && c["key"].as_str() == Some(id),
            None => c["scope"] == "tree" && c["key"].as_str() == Some(key.as_str()),
        };
        if scored {
            o.category = category;
            o.categories = categories;
            o.confidence = c["confidence"].as_f64().unwrap_or(0.0);
            o.first_verdict = o.first_verdict.or(mono);
            let mining = c["categories"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["category"] == "crypto_mining")
                .and_then(|x| x["confidence"].as_f64())
                .or_else(|| (o.category == "crypto_mining").then_some(o.confidence));
            if mining.is_some_and(|m| m >= CONFIDENT) {
                o.confident_mining = o.confident_mining.or(mono);
            }
            o.evidence = c["evidence"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["indicator"].as_str().map(str::to_string))
                .collect();
        } else if !(c["scope"] == "tree" && c["key"].as_str().is_some_and(|k| our_sessions.contains(k))) {
            let scope = (
                c["scope"].as_str().unwrap_or("?").to_string(),
                c["key"].as_str().unwrap_or("?").to_string(),
            );
            o.others.insert(scope, joined(&categories));
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
    if !have("scrypt, numpy, safetensors, torch, chiapos, lmdb, aioquic") {
        eprintln!(
            "eval: installing scrypt, numpy, safetensors, torch, chiapos, lmdb, aioquic into the venv (a few GB, once)"
        );
        let ok = Command::new(&py)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "scrypt",
                "numpy",
                "safetensors",
                "torch",
                "chiapos",
                "lmdb",
                "aioquic",
            ])
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
    // Node resolves a module's imports from where the module is: each
    // script goes beside its packages.
    for (dir, packages, marker, script) in [
        ("libp2p", LIBP2P_PACKAGES, "@chainsafe/libp2p-quic", "ipfs_dht.mjs"),
        ("ethereum", ETHEREUM_PACKAGES, "@ethereumjs/devp2p", "eth_discovery.mjs"),
    ] {
        let at = work.join(dir);
        if !at.join("node_modules").join(marker).exists() {
            eprintln!("eval: installing {} from npm", packages.join(" "));
            fs::create_dir_all(&at)?;
            let ok = Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--prefix"])
                .arg(&at)
                .args(packages)
                .status()?
                .success();
            if !ok {
                bail!("could not install {} with npm", packages.join(" "));
            }
        }
        fs::copy(root.join("xtask/eval").join(script), at.join(script))?;
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
    Ok(py)
}

/// A real IPFS DHT node's stack, pinned: js-libp2p over TCP with Noise and
/// yamux or over QUIC, the IPFS Kademlia DHT, identify and ping.
const LIBP2P_PACKAGES: &[&str] = &[
    "libp2p@3.3.11",
    "@libp2p/tcp@11.0.28",
    "@chainsafe/libp2p-quic@2.1.1",
    "@chainsafe/libp2p-noise@17.0.0",
    "@chainsafe/libp2p-yamux@8.0.1",
    "@libp2p/identify@4.1.14",
    "@libp2p/ping@3.1.13",
    "@libp2p/kad-dht@16.4.5",
    "multiformats@14.0.5",
];

/// Ethereum's discovery (discv4) as its JavaScript execution client has it.
const ETHEREUM_PACKAGES: &[&str] = &["@ethereumjs/devp2p@10.0.0"];

pub fn run(opts: &Options) -> Result<()> {
    crate::setup::ensure_packages(&[
        "nginx",
        "wrk",
        "openssl",
        "python3-venv",
        "postgresql",
        "librandomx0",
        "monero",
        "curl",
        "runc",
    ])?;
    let work = opts.root.join("target/eval");
    fs::create_dir_all(&work)?;
    let py = prepare(&opts.root, &work)?;
    let eval_dir = opts.root.join("xtask/eval");

    let free_port = || std::net::TcpListener::bind("127.0.0.1:0").map(|l| l.local_addr().map(|a| a.port()));
    let pool_port = free_port()??;
    let pg_port = free_port()??;
    // The port inference servers default to, when it is free.
    let port8000 = if std::net::TcpListener::bind("127.0.0.1:8000").is_ok() { 8000 } else { free_port()?? };
    // A second pool on 443 when it is free: a miner on a non-mining port.
    let pool443 = if std::net::TcpListener::bind("127.0.0.1:443").is_ok() { 443 } else { free_port()?? };
    let mut pools = Helpers(Vec::new());
    let pool_log = work.join("pool.log");
    let _ = fs::remove_file(&pool_log);
    // And one speaking TLS, with a certificate made for the run.
    let pool_tls = free_port()??;
    let (cert, key) = (work.join("pool-cert.pem"), work.join("pool-key.pem"));
    crate::stdout_of(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=pool"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    )
    .context("making the TLS pool's certificate")?;
    for (port, tls) in [(pool_port, false), (pool443, false), (pool_tls, true)] {
        let mut pool = Command::new(&py);
        pool.arg(eval_dir.join("pool.py")).arg(port.to_string()).arg(&pool_log);
        if tls {
            pool.arg(&cert).arg(&key);
        }
        pools.0.push(pool.stdout(Stdio::null()).spawn().context("starting the pool simulator")?);
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
    for case in CASES.iter().filter(|c| opts.only.as_ref().is_none_or(|o| c.name.contains(o.as_str()))) {
        // From nothing: files an earlier run left (a model already saved,
        // say) would change what the workload does.
        let dir = work.join(case.name);
        let _ = fs::remove_dir_all(&dir);
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
                    .replace("{pooltls}", &pool_tls.to_string())
                    .replace("{pool}", &pool_port.to_string())
                    .replace("{web}", &nginx.port.to_string())
                    .replace("{pg}", &pg_port.to_string())
                    .replace("{port8000}", &port8000.to_string())
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
        let pool_before = fs::read_to_string(&pool_log).unwrap_or_default().len();
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
        let container = fs::read_to_string(dir.join("container-id")).ok().map(|t| t.trim().to_string());
        let mut o = outcome(&capture, sid, container.as_deref())?;
        o.first_hash = fs::read_to_string(dir.join("first-hash")).ok().and_then(|t| t.trim().parse().ok());
        let pool = fs::read_to_string(&pool_log).unwrap_or_default();
        let pool = pool.get(pool_before..).unwrap_or_default();
        o.failed = if !status.success() {
            Some(format!("exit {status}"))
        } else if o.started.is_none() {
            Some("the tracer recorded nothing of its session".into())
        } else {
            match case.ran {
                Ran::Exit => None,
                Ran::PoolShares => (!pool.contains(" login") || !pool.contains(" share"))
                    .then(|| "the pool saw no login and share from it".into()),
                Ran::Peers(ports) => (!ports.iter().any(|port| {
                    o.talked_to.get(&u64::from(*port)).is_some_and(|(tx, rx)| *tx > 0 && *rx > 0)
                }))
                .then(|| format!("no bytes both ways with a peer on {ports:?}")),
                Ran::Wrote(suffix) => {
                    let wrote = fs::read_dir(&dir)?
                        .filter_map(|e| e.ok())
                        .any(|e| e.file_name().to_string_lossy().ends_with(suffix));
                    (!wrote).then(|| format!("it wrote no *{suffix}"))
                }
            }
        };
        eprintln!(
            "eval: {:<32} label {:<14} verdict {:<14} ({:.2}) in {:.1}s, exit {status}{} [{}]",
            case.name,
            joined(&expected(case)),
            joined(&o.categories),
            o.confidence,
            ran.as_secs_f64(),
            o.failed.as_ref().map(|f| format!(", FAILED: {f}")).unwrap_or_default(),
            o.evidence.join(", ")
        );
        rows.push((case, o));
    }
    drop(nginx);
    drop(pools);
    // SAFETY: no preconditions. The pools and peers run in this session.
    let helpers = unsafe { libc_getsid(0) }.to_string();
    report(&rows, &helpers, &work)
}

/// What the eval must reach; `cargo xtask eval` fails when it misses one.
const TARGET_MINER_RECALL: f64 = 1.0;
const TARGET_OVERALL: f64 = 0.95;
const TARGET_TIME_TO_VERDICT_S: f64 = 10.0;
/// A real miner must be called one with this confidence within
/// TARGET_TIME_TO_VERDICT_S of its first hash.
const CONFIDENT: f64 = 0.8;

const CLASSES: [&str; 6] =
    ["crypto_mining", "blockchain_node", "ai_training", "ai_inference", "distributed_storage", "ordinary"];

fn seconds(from: Option<u64>, to: Option<u64>) -> Option<f64> {
    match (from, to) {
        (Some(a), Some(b)) if b >= a => Some((b - a) as f64 / 1e9),
        _ => None,
    }
}

/// Seconds from a real miner's first hash to a confident mining verdict; 0
/// when the verdict came first (its login spoke before it hashed).
fn to_confident(o: &Outcome) -> Option<f64> {
    match (o.first_hash, o.confident_mining) {
        (Some(hash), Some(verdict)) => Some(verdict.saturating_sub(hash) as f64 / 1e9),
        _ => None,
    }
}

/// The categories a case is (none for ordinary work).
fn expected(case: &Case) -> std::collections::BTreeSet<String> {
    std::iter::once(case.label)
        .chain(case.also.iter().copied())
        .filter(|c| *c != "ordinary")
        .map(str::to_string)
        .collect()
}

/// A set of categories as one label: "blockchain_node+crypto_mining", or
/// "ordinary" when empty.
fn joined(set: &std::collections::BTreeSet<String>) -> String {
    if set.is_empty() { "ordinary".into() } else { set.iter().cloned().collect::<Vec<_>>().join("+") }
}

/// Correct: the case ran as intended and its tree got exactly its
/// categories (a node that mines must be called both).
fn correct(case: &Case, o: &Outcome) -> bool {
    o.failed.is_none() && expected(case) == o.categories
}

fn report(rows: &[(&Case, Outcome)], helpers: &str, work: &Path) -> Result<()> {
    let mut out = String::new();
    writeln!(
        out,
        "| case | split | label | verdict | confidence | evidence | s from start | s from first mining message | s from first hash to ≥ {CONFIDENT} |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|")?;
    for (case, o) in rows {
        let verdict = match &o.failed {
            Some(why) => format!("FAILED ({why})"),
            None => joined(&o.categories),
        };
        let s = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        writeln!(
            out,
            "| {} | {} | {} | {} | {:.2} | {} | {} | {} | {} |",
            case.name,
            if case.held_out { "held-out" } else { "dev" },
            joined(&expected(case)),
            verdict,
            o.confidence,
            o.evidence.join(", "),
            s(seconds(o.started, o.first_verdict)),
            s(seconds(o.first_mining_message, o.first_verdict)),
            match o.first_hash {
                Some(_) => s(to_confident(o)).replace('-', "never"),
                None => "-".into(),
            },
        )?;
    }

    // The matrix holds the cases that ran; failed ones are listed above.
    // Multi-label: a row is a case's set of categories, a column the set its
    // tree was given; per class, precision and recall count membership.
    let ran: Vec<_> = rows.iter().filter(|(_, o)| o.failed.is_none()).collect();
    let mut sets: Vec<String> =
        ran.iter().flat_map(|(c, o)| [joined(&expected(c)), joined(&o.categories)]).collect();
    sets.sort();
    sets.dedup();
    let mut m: BTreeMap<(String, String), u32> = BTreeMap::new();
    for (case, o) in &ran {
        *m.entry((joined(&expected(case)), joined(&o.categories))).or_default() += 1;
    }
    let labels: Vec<&String> = sets.iter().filter(|l| m.keys().any(|(r, _)| r == *l)).collect();
    writeln!(
        out,
        "\nconfusion matrix of the cases that ran (rows: the case's categories, columns: the verdict's)\n"
    )?;
    write!(out, "| categories \\ verdict |")?;
    for c in &sets {
        write!(out, " {c} |")?;
    }
    writeln!(out)?;
    writeln!(out, "|---|{}", "---|".repeat(sets.len()))?;
    for l in &labels {
        write!(out, "| {l} |")?;
        for c in &sets {
            write!(out, " {} |", m.get(&((*l).clone(), c.clone())).copied().unwrap_or(0))?;
        }
        writeln!(out)?;
    }
    writeln!(out, "\n| class | precision | recall |")?;
    writeln!(out, "|---|---|---|")?;
    for c in CLASSES {
        let is = |set: &std::collections::BTreeSet<String>| {
            if c == "ordinary" { set.is_empty() } else { set.contains(c) }
        };
        let tp = ran.iter().filter(|(case, o)| is(&expected(case)) && is(&o.categories)).count();
        let predicted = ran.iter().filter(|(_, o)| is(&o.categories)).count();
        let actual = ran.iter().filter(|(case, _)| is(&expected(case))).count();
        if predicted == 0 && actual == 0 {
            continue;
        }
        let ratio = |n: usize| if n > 0 { format!("{:.2}", tp as f64 / n as f64) } else { "-".into() };
        writeln!(out, "| {c} | {} | {} |", ratio(predicted), ratio(actual))?;
    }

    // Every other tree and container that got a verdict during a case:
    // benign, unless it is the eval's own session (the pool simulators
    // and Handshake peers run there and are what they look like).
    let mut flagged_scopes = Vec::new();
    writeln!(out, "\nother scopes with a verdict during a case\n")?;
    writeln!(out, "| case | scope | key | verdict | scored |")?;
    writeln!(out, "|---|---|---|---|---|")?;
    for (case, o) in rows {
        for ((scope, key), category) in &o.others {
            let helper = scope == "tree" && key == helpers;
            let scored = if helper {
                "no: the eval's helpers (pool simulators, Handshake peers)"
            } else if category == "ordinary" {
                "yes: correct"
            } else {
                flagged_scopes.push(format!("{} {scope} {key}: {category}", case.name));
                "yes: FALSE POSITIVE"
            };
            writeln!(out, "| {} | {scope} | {key} | {category} | {scored} |", case.name)?;
        }
    }

    let split = |held_out: bool| -> (usize, usize) {
        let cases: Vec<_> = rows.iter().filter(|(c, _)| c.held_out == held_out).collect();
        (cases.iter().filter(|(c, o)| correct(c, o)).count(), cases.len())
    };
    let (dev_ok, dev_n) = split(false);
    let (ho_ok, ho_n) = split(true);
    let pct = |a: usize, b: usize| if b == 0 { 0.0 } else { 100.0 * a as f64 / b as f64 };
    writeln!(out, "\n| split | correct | cases | share |")?;
    writeln!(out, "|---|---|---|---|")?;
    writeln!(
        out,
        "| development (the rules were tuned on these) | {dev_ok} | {dev_n} | {:.0} % |",
        pct(dev_ok, dev_n)
    )?;
    writeln!(out, "| held-out | {ho_ok} | {ho_n} | {:.0} % |", pct(ho_ok, ho_n))?;

    // Mining must be among the categories of every case that mines, mixed
    // or not.
    let miners: Vec<_> = rows.iter().filter(|(c, _)| expected(c).contains("crypto_mining")).collect();
    // No mining case (a run filtered with --only): nothing to miss.
    let miner_recall = match miners.len() {
        0 => 1.0,
        n => {
            miners
                .iter()
                .filter(|(_, o)| o.failed.is_none() && o.categories.contains("crypto_mining"))
                .count() as f64
                / n as f64
        }
    };
    let benign_cases_flagged: Vec<_> = rows
        .iter()
        .filter(|(c, o)| expected(c).is_empty() && o.failed.is_none() && !o.categories.is_empty())
        .map(|(c, o)| format!("{}: {}", c.name, joined(&o.categories)))
        .collect();
    let failed: Vec<_> = rows.iter().filter(|(_, o)| o.failed.is_some()).map(|(c, _)| c.name).collect();
    let overall = (dev_ok + ho_ok) as f64 / rows.len().max(1) as f64;
    let slow: Vec<_> = rows
        .iter()
        // Real miners are timed from their first hash (below): a RandomX
        // cache takes seconds to build before anything is mined.
        .filter(|(c, o)| correct(c, o) && c.label != "ordinary" && o.first_hash.is_none())
        .filter_map(|(c, o)| {
            let s = seconds(o.started, o.first_verdict)?;
            (s > TARGET_TIME_TO_VERDICT_S).then(|| format!("{} ({s:.1} s)", c.name))
        })
        .collect();
    // Real miners (those that say when they hashed first): confident soon.
    let unsure: Vec<_> = rows
        .iter()
        .filter(|(c, _)| c.label == "crypto_mining" && c.argv.iter().any(|a| a.ends_with("randomx_miner.py")))
        .filter_map(|(c, o)| match to_confident(o) {
            Some(s) if s <= TARGET_TIME_TO_VERDICT_S => None,
            Some(s) => Some(format!("{} ({s:.1} s)", c.name)),
            None if o.first_hash.is_none() => Some(format!("{} (no first-hash: it never hashed)", c.name)),
            None => Some(format!("{} (never)", c.name)),
        })
        .collect();
    let checks = [
        (
            format!("every workload ran as intended ({} failed)", failed.len()),
            failed.is_empty(),
            failed.join(", "),
        ),
        (
            format!(
                "miner recall {:.0} % (target {:.0} %)",
                100.0 * miner_recall,
                100.0 * TARGET_MINER_RECALL
            ),
            miner_recall >= TARGET_MINER_RECALL,
            String::new(),
        ),
        (
            format!("benign flagged: {} (target 0)", benign_cases_flagged.len() + flagged_scopes.len()),
            benign_cases_flagged.is_empty() && flagged_scopes.is_empty(),
            [benign_cases_flagged.join(", "), flagged_scopes.join(", ")].join(" "),
        ),
        (
            format!("overall {:.0} % (target ≥ {:.0} %)", 100.0 * overall, 100.0 * TARGET_OVERALL),
            overall >= TARGET_OVERALL,
            String::new(),
        ),
        (
            format!("verdict within {TARGET_TIME_TO_VERDICT_S} s of the workload's start"),
            slow.is_empty(),
            slow.join(", "),
        ),
        (
            format!(
                "real miners: crypto_mining at confidence ≥ {CONFIDENT} within {TARGET_TIME_TO_VERDICT_S} s of the first hash"
            ),
            unsure.is_empty(),
            unsure.join(", "),
        ),
    ];
    writeln!(out, "\n| target | result |")?;
    writeln!(out, "|---|---|")?;
    for (what, ok, detail) in &checks {
        let detail = detail.trim();
        let detail = if detail.is_empty() { String::new() } else { format!(": {detail}") };
        writeln!(out, "| {what} | {}{detail} |", if *ok { "pass" } else { "MISS" })?;
    }
    print!("{out}");
    fs::write(work.join("eval.md"), &out)?;
    eprintln!("written to {}", work.join("eval.md").display());
    let missed: Vec<_> = checks.iter().filter(|c| !c.1).map(|c| c.0.as_str()).collect();
    if !missed.is_empty() {
        bail!("the eval missed {} target(s): {}", missed.len(), missed.join("; "));
    }
    Ok(())
}
