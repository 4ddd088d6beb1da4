//! Real node software under the tracer: two of Debian's Monero daemons
//! (`monerod`, regtest) peering on loopback on ports no rule knows. The
//! node that dials sends its levin handshake, the one that accepts receives
//! it, and both trees are called blockchain nodes by protocol alone, with
//! no mining among their categories; each holds its chain database (LMDB),
//! told by its content. `cargo xtask test` installs monerod.
//!
//! Each node is also a declared workload (`[[declare]]`): the first, by its
//! path and its binary's hash, as the blockchain node it is (compliant);
//! the second, a copy of the same binary elsewhere, as an inference server
//! (its node is then an alert that names the declaration).

mod support;

use std::{
    os::unix::process::CommandExt as _,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use support::Tracer;

/// A monerod in a session of its own (so each is one tree).
fn monerod(exe: &std::path::Path, dir: &std::path::Path, port: u16, peer: Option<u16>) -> Child {
    let mut cmd = Command::new(exe);
    cmd.args(["--regtest", "--non-interactive", "--no-igd", "--allow-local-ip", "--log-level", "0"])
        .arg("--data-dir")
        .arg(dir.join(port.to_string()))
        .args(["--p2p-bind-ip", "127.0.0.1", "--p2p-bind-port", &port.to_string()])
        .args(["--rpc-bind-ip", "127.0.0.1", "--rpc-bind-port", &(port + 1).to_string()])
        .args(["--zmq-rpc-bind-port", &(port + 2).to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(p) = peer {
        cmd.args(["--add-exclusive-node", &format!("127.0.0.1:{p}")]);
    }
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        })
    };
    cmd.spawn().expect("monerod is not installed: `cargo xtask test` installs Debian's monero package")
}

/// Three consecutive free ports (P2P, RPC, ZMQ) from `from` on, where no
/// rule lists a port.
fn free_base(from: u16) -> u16 {
    (from..60000)
        .step_by(7)
        .find(|&p| (p..p + 3).all(|q| std::net::TcpListener::bind(("127.0.0.1", q)).is_ok()))
        .expect("free ports")
}

/// Where `monerod` is on PATH.
fn installed_monerod() -> std::path::PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("monerod"))
        .find(|p| p.is_file())
        .expect("monerod is not installed: `cargo xtask test` installs Debian's monero package")
}

fn sha256(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().expect("a hash").to_string()
}

#[test]
fn two_monerod_peers_are_nodes_by_their_protocol_on_any_port() {
    support::require_root();
    let dir = support::scratch("monerod");
    let installed = installed_monerod();
    let copy = dir.join("inference-server");
    std::fs::copy(&installed, &copy).expect("copying monerod");
    let rules = dir.join("declared.toml");
    std::fs::write(
        &rules,
        format!(
            "[[declare]]\nid = \"chain-team\"\ncategories = [\"blockchain_node\"]\n\
             match = {{ exe = [{:?}], exe_sha256 = [{:?}] }}\n\
             [[declare]]\nid = \"inference-team\"\ncategories = [\"ai_inference\"]\n\
             match = {{ exe = [{:?}] }}\n",
            installed.display().to_string(),
            sha256(&installed),
            copy.display().to_string()
        ),
    )
    .unwrap();
    let mut tracer = Tracer::start(&["--rules", rules.to_str().unwrap()]);
    let a_port = free_base(41000);
    let mut a = monerod(&installed, &dir, a_port, None);
    std::thread::sleep(Duration::from_millis(500));
    let b_port = free_base(a_port + 7);
    let mut b = monerod(&copy, &dir, b_port, Some(a_port));
    let (a_pid, b_pid) = (u64::from(a.id()), u64::from(b.id()));
    let node_verdict = |pid: u64| {
        move |r: &Value| {
            r["kind"] == "classification"
                && r["classification"]["key"] == pid.to_string()
                && r["classification"]["category"] == "blockchain_node"
        }
    };
    // Both verdicts, whichever comes first.
    let first =
        tracer.wait_for(Duration::from_secs(90), |r| node_verdict(a_pid)(r) || node_verdict(b_pid)(r));
    let other = if first["classification"]["key"] == a_pid.to_string() { b_pid } else { a_pid };
    tracer.wait_for(Duration::from_secs(60), node_verdict(other));
    // Its chain database (LMDB, data.mdb), told by its content at the
    // first look at a process that is not busy.
    tracer.wait_for(Duration::from_secs(30), |r| {
        node_verdict(a_pid)(r)
            && r["classification"]["evidence"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["indicator"] == "chain-database"))
    });
    // The declared node's verdict is compliant once its binary's hash is
    // known (the evidence found before it is re-examined).
    tracer.wait_for(Duration::from_secs(30), |r| {
        node_verdict(a_pid)(r) && r["classification"]["compliance"]["compliant"] == true
    });
    for node in [&mut a, &mut b] {
        let _ = node.kill();
        let _ = node.wait();
    }
    let records = tracer.stop();
    let _ = std::fs::remove_dir_all(&dir);

    let levin = |pid: u64, direction: &str| {
        records.iter().any(|r| {
            r["kind"] == "network.first_bytes"
                && r["process"]["pid"] == pid
                && r["first_bytes"]["direction"] == direction
                && r["first_bytes"]["protocol"] == "monero-levin"
                && r["first_bytes"]["detail"] == "handshake"
        })
    };
    assert!(levin(b_pid, "outbound"), "the dialing node's handshake");
    assert!(levin(a_pid, "inbound"), "the handshake the listening node received");
    for (pid, declared) in [(a_pid, "chain-team"), (b_pid, "inference-team")] {
        let verdicts: Vec<&Value> = records
            .iter()
            .filter(|r| r["kind"] == "classification" && r["classification"]["key"] == pid.to_string())
            .collect();
        let last = &verdicts.last().expect("a verdict")["classification"];
        let categories: Vec<&str> =
            last["categories"].as_array().unwrap().iter().filter_map(|c| c["category"].as_str()).collect();
        assert_eq!(categories, ["blockchain_node"], "{last:#}");
        assert_eq!(last["compliance"]["declaration"], declared, "{last:#}");
        if pid == a_pid {
            assert_eq!(last["alert"], false, "a node is not an alarm: {last:#}");
            assert_eq!(last["categories"][0]["declared"], "chain-team", "{last:#}");
            assert_eq!(
                last["compliance"]["summary"],
                "declared blockchain_node (chain-team), observed blockchain_node: compliant"
            );
        } else {
            assert_eq!(last["alert"], true, "a node where inference was declared: {last:#}");
            assert_eq!(last["categories"][0]["undeclared"], "inference-team", "{last:#}");
            assert_eq!(
                last["compliance"]["summary"],
                "declared ai_inference (inference-team), observed blockchain_node"
            );
        }
        let ids: Vec<&str> =
            last["evidence"].as_array().unwrap().iter().filter_map(|e| e["indicator"].as_str()).collect();
        assert!(
            ids.contains(&"chain-p2p-protocol") || ids.contains(&"chain-p2p-peer-inbound"),
            "by protocol, not by port: {ids:?}"
        );
    }
}
