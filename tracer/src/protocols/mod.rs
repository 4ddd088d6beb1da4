//! Recognising what a client says first on a new TCP connection: mining
//! protocols (Stratum v1, XMRig/CryptoNote, EthereumStratum, eth-proxy,
//! getblocktemplate/getwork), chains' and storage networks' peer-to-peer
//! protocols (`chain`, `p2p`), an HTTP request (an inference API's, the
//! Engine API's, Arweave's), a TLS ClientHello (with its SNI name). Input
//! is hostile: every parser bounds-checks and gives up quietly on garbage.
//!
//! Sources: Stratum v1 and EthereumStratum/1.0.0 (NiceHash specification),
//! XMRig `src/base/net/stratum/Client.cpp` (login/submit/keepalived), eth-proxy
//! methods (`eth_submitLogin`, `eth_getWork`, `eth_submitWork`), RFC 8446 §4.1.2
//! and RFC 6066 §3 for the ClientHello and server_name extension.

pub mod chain;
pub mod datagram;
pub mod encrypted;
pub mod first_message;
pub mod p2p;
pub mod redact;
pub mod tls;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recognised {
    /// Mining: stratum, xmrig-stratum, ethereum-stratum, eth-proxy,
    /// solo-mining-rpc. Chains: monero-levin, bitcoin-p2p, handshake-p2p,
    /// ethereum-rlpx, cometbft, ethereum-engine-api. Storage: libp2p,
    /// storj-drpc, arweave. Others: inference-api, node-mining-control, zmtp, json-rpc, http,
    /// tls, or unknown.
    pub protocol: &'static str,
    /// The JSON-RPC method, HTTP Host, or TLS SNI name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The client's self-description (XMRig `agent`, Stratum subscribe's
    /// first parameter, HTTP User-Agent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Whether the protocol is a mining protocol.
    pub mining: bool,
    /// A TLS ClientHello's details and JA4.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<tls::ClientHello>,
    /// The chain network a peer-to-peer protocol names (mainnet, testnet,
    /// regtest, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<&'static str>,
    /// Named from the length, randomness and port of bytes an encrypted
    /// transport sends (BIP324, Stratum V2, brontide, SiaMux, discv5), not
    /// from bytes the protocol fixes: weaker evidence. Absent when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub inferred: bool,
}

impl Recognised {
    /// A protocol that is not a mining one, with what its bytes said.
    fn named(protocol: &'static str, detail: Option<String>) -> Self {
        Self { protocol, detail, agent: None, mining: false, tls: None, network: None, inferred: false }
    }
}

fn unknown() -> Recognised {
    Recognised::named("unknown", None)
}

/// Whether bytes look uniformly random, as an encrypted transport's do:
/// as many distinct byte values, and distinct differences between
/// neighbours (a counter has one), as `n` random bytes have, less five
/// standard deviations. Text and structured binary fall far short.
pub fn looks_random(b: &[u8]) -> bool {
    let b = &b[..b.len().min(1024)];
    if b.len() < 16 {
        return false;
    }
    let distinct = |values: &mut dyn Iterator<Item = u8>| {
        let mut seen = [false; 256];
        values.filter(|&v| !std::mem::replace(&mut seen[usize::from(v)], true)).count() as f64
    };
    // The number of distinct values among n uniform draws from 256: mean
    // and variance from the count of values never drawn.
    let need = |n: usize| {
        let (m, n) = (256.0f64, n as i32);
        let (q1, q2) = ((1.0 - 1.0 / m).powi(n), (1.0 - 2.0 / m).powi(n));
        let mean = m * (1.0 - q1);
        let var = (m * (m - 1.0) * q2 + m * q1 - m * m * q1 * q1).max(0.0);
        mean - 5.0 * var.sqrt()
    };
    distinct(&mut b.iter().copied()) >= need(b.len())
        && distinct(&mut b.windows(2).map(|w| w[1].wrapping_sub(w[0]))) >= need(b.len() - 1)
}

/// What a UDP socket's first datagram one way says; `port` is the peer's.
pub fn recognise_datagram(payload: &[u8], total: u64, port: Option<u16>) -> Recognised {
    let found = datagram::discv4(payload, total)
        .or_else(|| datagram::quic(payload))
        .or_else(|| datagram::discv5(payload, total, port));
    match found {
        Some(d) => Recognised { tls: d.tls, inferred: d.inferred, ..Recognised::named(d.protocol, d.detail) },
        None => unknown(),
    }
}

const STRATUM_METHODS: &[&str] = &[
    "mining.subscribe",
    "mining.authorize",
    "mining.submit",
    "mining.configure",
    "mining.extranonce.subscribe",
    "mining.suggest_difficulty",
    "mining.notify",
    "mining.set_difficulty",
];
const ETH_PROXY_METHODS: &[&str] =
    &["eth_submitLogin", "eth_getWork", "eth_submitWork", "eth_submitHashrate"];
const XMRIG_METHODS: &[&str] = &["login", "submit", "keepalived", "getjob"];

/// The whole length of a message whose header gives its payload's length:
/// Bitcoin-family P2P (4-byte magic, a NUL-padded 12-byte ASCII command,
/// a little-endian u32 payload length, a checksum) and Monero's levin
/// (8-byte signature, a little-endian u64 body length, 33-byte header), and
/// Handshake's (4-byte magic, a command byte, a little-endian u32 length).
pub fn length_prefixed(b: &[u8]) -> Option<u64> {
    const LEVIN: [u8; 8] = [0x01, 0x21, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01];
    if b.starts_with(&LEVIN) && b.len() >= 16 {
        let body = u64::from_le_bytes(b[8..16].try_into().ok()?);
        return Some(33u64.saturating_add(body));
    }
    if let (Some(m), Some(len)) = (b.get(..4), b.get(5..9))
        && chain::HSD_MAGICS.iter().any(|(magic, _)| magic == m)
    {
        return Some(9 + u64::from(u32::from_le_bytes([len[0], len[1], len[2], len[3]])));
    }
    if let Some(len) =
        p2p::multistream_length(b).or_else(|| p2p::rlpx_length(b)).or_else(|| p2p::zmtp_length(b))
    {
        return Some(len);
    }
    let command = b.get(4..16)?;
    let name_len = command.iter().position(|&c| c == 0).unwrap_or(12);
    let ascii = name_len > 0 && command[..name_len].iter().all(u8::is_ascii_lowercase);
    if ascii && command[name_len..].iter().all(|&c| c == 0) && b.len() >= 24 {
        let len = u32::from_le_bytes(b[16..20].try_into().ok()?);
        return Some(24 + u64::from(len));
    }
    None
}

/// Names are capped so a hostile peer cannot make records huge.
fn cap(s: &str) -> String {
    s.chars().take(128).collect()
}

/// What a whole first message says (`recognise_message` with its length).
pub fn recognise(payload: &[u8]) -> Recognised {
    recognise_message(payload, payload.len() as u64, None)
}

/// What a first message says: `payload` is what was captured, `total` the
/// bytes its sends carried in all (protocols of random bytes are told by
/// their exact length), `port` the peer's.
pub fn recognise_message(payload: &[u8], total: u64, port: Option<u16>) -> Recognised {
    if payload.first() == Some(&0x16) {
        return tls(payload).unwrap_or_else(unknown);
    }
    if let Some(c) =
        chain::levin(payload).or_else(|| chain::bitcoin(payload)).or_else(|| chain::handshake(payload))
    {
        return Recognised {
            agent: c.agent,
            network: c.network,
            ..Recognised::named(c.protocol, Some(c.command))
        };
    }
    if let Some(p) = p2p::multistream(payload)
        .or_else(|| p2p::drpc(payload))
        .or_else(|| p2p::zmtp(payload))
        .or_else(|| p2p::rlpx_auth(payload, total))
        .or_else(|| p2p::cometbft(payload, total))
    {
        return Recognised::named(p.protocol, p.detail);
    }
    let trimmed = payload.iter().position(|b| !b.is_ascii_whitespace()).map_or(&[][..], |i| &payload[i..]);
    if trimmed.first() == Some(&b'{') {
        return json_rpc(trimmed);
    }
    http(payload)
        .or_else(|| {
            let e = encrypted::random_first_write(payload, total, port)?;
            Some(Recognised { inferred: true, ..Recognised::named(e.protocol, Some(e.detail)) })
        })
        .unwrap_or_else(unknown)
}

/// One JSON-RPC object per line. The capture may cut it short, so the
/// method is also found by scanning when the object does not parse.
fn json_rpc(b: &[u8]) -> Recognised {
    let line = b.split(|&c| c == b'\n').next().unwrap_or(b);
    let parsed: Option<serde_json::Value> = serde_json::from_slice(line).ok();
    let method = match &parsed {
        Some(v) => v.get("method").and_then(|m| m.as_str()).map(str::to_string),
        None => scan_method(line),
    };
    let Some(method) = method else {
        return Recognised::named("json-rpc", None);
    };
    let params = parsed.as_ref().and_then(|v| v.get("params"));
    let (protocol, mining, agent) = if STRATUM_METHODS.contains(&method.as_str()) {
        let first = params.and_then(|p| p.get(0)).and_then(|a| a.as_str()).map(cap);
        let eth = params
            .and_then(|p| p.get(1))
            .and_then(|a| a.as_str())
            .is_some_and(|s| s.starts_with("EthereumStratum"));
        (if eth { "ethereum-stratum" } else { "stratum" }, true, first)
    } else if ETH_PROXY_METHODS.contains(&method.as_str()) {
        ("eth-proxy", true, None)
    } else if XMRIG_METHODS.contains(&method.as_str()) {
        // A capture cut inside the object still shows its fields: XMRig's
        // login puts `login` first in `params` and `agent` third.
        let agent = match parsed.as_ref() {
            Some(_) => params.and_then(|p| p.get("agent")).and_then(|a| a.as_str()).map(cap),
            None => scan_string(line, "agent"),
        };
        // `login` with a wallet-like `login` parameter is CryptoNote stratum.
        let looks_like_pool = method != "login"
            || match parsed.as_ref() {
                Some(_) => params.and_then(|p| p.get("login")).is_some(),
                None => find(line, b"\"params\":{\"login\":").is_some(),
            };
        ("xmrig-stratum", looks_like_pool, agent)
    } else {
        ("json-rpc", false, None)
    };
    Recognised { agent, mining, ..Recognised::named(protocol, Some(cap(&method))) }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `"method"` then `:` then a quoted string, in a truncated object.
fn scan_method(b: &[u8]) -> Option<String> {
    scan_string(b, "method")
}

/// `"key"` then `:` then a whole quoted string, in a truncated object.
fn scan_string(b: &[u8], key: &str) -> Option<String> {
    let text = String::from_utf8_lossy(b);
    let quoted = format!("\"{key}\"");
    let at = text.find(&quoted)? + quoted.len();
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(cap(&rest[..end]))
}

const HTTP_METHODS: &[&str] =
    &["GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT "];

/// JSON-RPC methods of solo mining against a node (BIP22/23 for the
/// Bitcoin family, monerod's `get_block_template`): mining infrastructure.
const SOLO_MINING_METHODS: &[&str] =
    &["getblocktemplate", "get_block_template", "getwork", "submitblock", "submit_block"];

/// Paths that model servers answer: OpenAI-compatible (vLLM, llama.cpp,
/// TGI's Messages API), TGI's own, Ollama's, KServe v2 / Triton's,
/// TensorFlow Serving's and TorchServe's.
fn inference_path(path: &str) -> bool {
    const EXACT: &[&str] = &[
        "/v1/completions",
        "/v1/chat/completions",
        "/v1/embeddings",
        "/generate",
        "/generate_stream",
        "/api/generate",
        "/api/chat",
        "/api/embed",
        "/api/embeddings",
    ];
    let path = path.split('?').next().unwrap_or(path);
    EXACT.contains(&path)
        || (path.starts_with("/v2/models/") && path.ends_with("/infer"))
        || (path.starts_with("/v1/models/") && path.ends_with(":predict"))
        || path.starts_with("/predictions/")
}

/// A header's value in an HTTP/1 request head (the request line skipped).
pub fn http_header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Whether the bytes begin an HTTP/1 request line.
pub fn starts_http_request(b: &[u8]) -> bool {
    HTTP_METHODS.iter().any(|m| b.starts_with(m.as_bytes()))
}

fn http(b: &[u8]) -> Option<Recognised> {
    // A capture may end inside a character: read what is valid.
    let text = match std::str::from_utf8(b) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(&b[..e.valid_up_to()]).ok()?,
    };
    let method = HTTP_METHODS.iter().find(|m| text.starts_with(**m))?.trim_end();
    let (head, body) = text.split_once("\r\n\r\n").map_or((text, None), |(h, b)| (h, Some(b)));
    let path = head.lines().next().and_then(|l| l.split(' ').nth(1)).unwrap_or("");
    let header = |name: &str| http_header(head, name).map(cap);
    let rpc_method = body.map(str::trim_start).filter(|b| b.starts_with('{')).and_then(|b| {
        let line = b.lines().next().unwrap_or(b);
        serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("method")?.as_str().map(cap))
            .or_else(|| scan_method(line.as_bytes()))
    });
    let rpc = rpc_method.as_deref().unwrap_or("");
    let (protocol, mining, detail) = if SOLO_MINING_METHODS.contains(&rpc) {
        ("solo-mining-rpc", true, rpc_method.clone())
    } else if header("x-mining-extensions").is_some() {
        // cpuminer's getwork/GBT header, sent with every request.
        ("solo-mining-rpc", true, rpc_method.clone().or_else(|| Some("X-Mining-Extensions".into())))
    } else if path == "/start_mining" || rpc == "start_mining" {
        // monerod's (and its forks') RPC telling the node itself to mine.
        ("node-mining-control", false, Some("start_mining".into()))
    } else if rpc.starts_with("engine_") {
        ("ethereum-engine-api", false, rpc_method.clone())
    } else if header("x-p2p-port").is_some() {
        // Arweave's nodes announce their own peer port on every request.
        ("arweave", false, Some(cap(path)))
    } else if method == "POST" && inference_path(path) {
        ("inference-api", false, Some(cap(&format!("{method} {path}"))))
    } else {
        ("http", false, header("host"))
    };
    Some(Recognised { agent: header("user-agent"), mining, ..Recognised::named(protocol, detail) })
}

/// A TLS ClientHello: its server name as `detail`, the rest in `tls`.
fn tls(b: &[u8]) -> Option<Recognised> {
    let hello = tls::parse(b)?;
    Some(Recognised { detail: hello.sni.clone(), tls: Some(hello), ..Recognised::named("tls", None) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratum_v1_subscribe_and_authorize() {
        let r =
            recognise(b"{\"id\": 1, \"method\": \"mining.subscribe\", \"params\": [\"cpuminer/2.5.1\"]}\n");
        assert_eq!((r.protocol, r.mining), ("stratum", true));
        assert_eq!(r.detail.as_deref(), Some("mining.subscribe"));
        assert_eq!(r.agent.as_deref(), Some("cpuminer/2.5.1"));
        let r = recognise(b"{\"params\":[\"wallet.rig\",\"x\"],\"id\":2,\"method\":\"mining.authorize\"}\n");
        assert_eq!(r.detail.as_deref(), Some("mining.authorize"));
    }

    #[test]
    fn ethereum_stratum_eth_proxy_and_xmrig() {
        let r = recognise(
            br#"{"id":1,"method":"mining.subscribe","params":["MinerName/1.0.0","EthereumStratum/1.0.0"]}"#,
        );
        assert_eq!(r.protocol, "ethereum-stratum");
        let r = recognise(br#"{"id":1,"jsonrpc":"2.0","method":"eth_submitLogin","params":["0xabc"]}"#);
        assert_eq!((r.protocol, r.mining), ("eth-proxy", true));
        let r = recognise(
            br#"{"id":1,"jsonrpc":"2.0","method":"login","params":{"login":"4Abc","pass":"x","agent":"XMRig/6.21.0 (Linux x86_64) libuv/1.44.2","rigid":""}}"#,
        );
        assert_eq!((r.protocol, r.mining), ("xmrig-stratum", true));
        assert_eq!(r.agent.as_deref(), Some("XMRig/6.21.0 (Linux x86_64) libuv/1.44.2"));
        // Ordinary JSON-RPC is not mining.
        let r = recognise(br#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#);
        assert_eq!((r.protocol, r.mining), ("json-rpc", false));
    }

    #[test]
    fn truncated_json_still_names_the_method() {
        let full = br#"{"id":1,"method":"mining.subscribe","params":["x"#;
        let r = recognise(full);
        assert_eq!((r.protocol, r.mining), ("stratum", true));
        assert_eq!(recognise(b"{\"id\":1,\"meth").protocol, "json-rpc");
    }

    #[test]
    fn http_host_and_agent() {
        let r = recognise(b"GET /jobs HTTP/1.1\r\nHost: pool.example:443\r\nUser-Agent: curl/8.0\r\n\r\n");
        assert_eq!(
            (r.protocol, r.detail.as_deref(), r.agent.as_deref()),
            ("http", Some("pool.example:443"), Some("curl/8.0"))
        );
    }

    /// A minimal ClientHello with server_name "pool.example".
    fn client_hello(name: &str) -> Vec<u8> {
        let mut ext = vec![0, 0];
        let list_len = (name.len() + 3) as u16;
        let ext_len = list_len + 2;
        ext.extend_from_slice(&ext_len.to_be_bytes());
        ext.extend_from_slice(&list_len.to_be_bytes());
        ext.push(0);
        ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
        ext.extend_from_slice(name.as_bytes());
        let mut hello = vec![3, 3];
        hello.extend_from_slice(&[7; 32]);
        hello.push(0);
        hello.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
        hello.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        hello.extend_from_slice(&ext);
        let mut hs = vec![1, 0];
        hs.extend_from_slice(&(hello.len() as u16).to_be_bytes());
        hs.extend_from_slice(&hello);
        let mut rec = vec![0x16, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn tls_sni() {
        let r = recognise(&client_hello("pool.example"));
        assert_eq!((r.protocol, r.detail.as_deref()), ("tls", Some("pool.example")));
        // Cut anywhere: never a panic; a cut before the name loses only it.
        let full = client_hello("pool.example");
        for n in 0..full.len() {
            let _ = recognise(&full[..n]);
        }
    }

    /// A real XMRig login (571 bytes): whole, and cut where the old
    /// 255-byte capture cut it.
    #[test]
    fn real_xmrig_login_whole_and_cut() {
        let login = crate::testing::first_bytes_fixture("xmrig-6.18.1-login.txt");
        let agent = Some("XMRig/6.18.1 (Linux x86_64) libuv/1.44.1 gcc/5.4.0");
        let r = recognise(&login);
        assert_eq!((r.protocol, r.mining, r.agent.as_deref()), ("xmrig-stratum", true, agent));
        assert!(first_message::is_whole(&login));
        let r = recognise(&login[..255]);
        assert_eq!((r.protocol, r.mining, r.agent.as_deref()), ("xmrig-stratum", true, agent));
        // Cut before the agent: still a CryptoNote login, with no agent.
        let r = recognise(&login[..100]);
        assert_eq!((r.protocol, r.mining, r.agent), ("xmrig-stratum", true, None));
        assert!(!first_message::is_whole(&login[..255]));
    }

    #[test]
    fn real_client_hellos_are_tls_with_ja4() {
        let r = recognise(&crate::testing::first_bytes_fixture("python-ssl-to-ip.bin"));
        assert_eq!((r.protocol, r.detail.as_deref()), ("tls", None));
        let hello = r.tls.expect("parsed");
        assert!(hello.ja4.starts_with("t13i"), "{}", hello.ja4);
        let r = recognise(&crate::testing::first_bytes_fixture("curl-https-localhost.bin"));
        assert_eq!(r.detail.as_deref(), Some("localhost"));
    }

    #[test]
    fn length_prefixed_messages() {
        let mut version = vec![0xf9, 0xbe, 0xb4, 0xd9];
        version.extend_from_slice(b"version\0\0\0\0\0");
        version.extend_from_slice(&102u32.to_le_bytes());
        version.extend_from_slice(&[0; 4]);
        assert_eq!(length_prefixed(&version), Some(126));
        let mut levin = vec![0x01, 0x21, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01];
        levin.extend_from_slice(&200u64.to_le_bytes());
        assert_eq!(length_prefixed(&levin), Some(233));
        assert_eq!(length_prefixed(b"GET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(length_prefixed(&[0xff; 30]), None);
    }

    /// Real first messages of chain, storage and mining software, captured
    /// as a listener received them (tests/fixtures/first_bytes/README.md).
    #[test]
    fn real_p2p_and_solo_mining_messages() {
        let fx = crate::testing::first_bytes_fixture;
        let whole = |name: &str| {
            let b = fx(name);
            assert!(first_message::is_whole(&b), "{name} is whole by its own framing");
            recognise(&b)
        };
        let r = whole("js-libp2p-3.3.11-noise-dial.bin");
        assert_eq!((r.protocol, r.detail.as_deref(), r.mining), ("libp2p", Some("/noise"), false));
        let r = whole("js-libp2p-3.3.11-tls-dial.bin");
        assert_eq!((r.protocol, r.detail.as_deref()), ("libp2p", Some("/tls/1.0.0")));
        for n in 1..=3 {
            let r = whole(&format!("ethereumjs-devp2p-10.0.0-rlpx-auth-{n}.bin"));
            assert_eq!((r.protocol, r.detail.as_deref()), ("ethereum-rlpx", Some("auth")));
        }
        // Cut short of its declared size, an auth is not claimed.
        let auth = fx("ethereumjs-devp2p-10.0.0-rlpx-auth-1.bin");
        // (Its bytes after the size are ECIES output: random, so it is an
        // unnamed encrypted transport.)
        let r = recognise_message(&auth[..200], 200, None);
        assert_eq!((r.protocol, r.inferred), ("random", true));
        let r = whole("xmrig-6.22.2-daemon-getblocktemplate.bin");
        assert_eq!(
            (r.protocol, r.detail.as_deref(), r.mining),
            ("solo-mining-rpc", Some("getblocktemplate"), true)
        );
        assert!(r.agent.as_deref().unwrap().starts_with("XMRig/6.22.2"));
        let r = whole("cpuminer-2.5.1-http-getblocktemplate.bin");
        assert_eq!(
            (r.protocol, r.mining, r.agent.as_deref()),
            ("solo-mining-rpc", true, Some("cpuminer/2.5.1"))
        );
        let r = whole("cpuminer-2.5.1-http-getwork.bin");
        assert_eq!((r.protocol, r.detail.as_deref(), r.mining), ("solo-mining-rpc", Some("getwork"), true));
        // The head alone (a client that sends the body apart): its header
        // still says mining.
        let gbt = fx("cpuminer-2.5.1-http-getblocktemplate.bin");
        let head = &gbt[..gbt.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4];
        assert!(!first_message::is_whole(head), "the body is still to come");
        assert_eq!((recognise(head).protocol, recognise(head).mining), ("solo-mining-rpc", true));
        let r = whole("cpuminer-2.5.1-stratum-subscribe.bin");
        assert_eq!((r.protocol, r.agent.as_deref()), ("stratum", Some("cpuminer/2.5.1")));
        let r = whole("xmrig-6.22.2-pool-login.bin");
        assert_eq!((r.protocol, r.mining), ("xmrig-stratum", true));
        let r = whole("xmrig-6.22.2-daemon-zmq-greeting.bin");
        assert_eq!((r.protocol, r.detail.as_deref(), r.mining), ("zmtp", Some("ZMTP 3"), false));
    }

    /// Look-alikes: real clients of ordinary services are none of these.
    #[test]
    fn real_ordinary_clients_are_not_p2p_or_mining() {
        for name in [
            "openssh-client-9.2p1-deb12u6-banner.bin",
            "psql-15.18-startup-sslmode-disable.bin",
            "redis-cli-7.0.15-ping.bin",
            "git-2.47.3-git-protocol-upload-pack.bin",
            "curl-https-localhost.bin",
        ] {
            let r = recognise(&crate::testing::first_bytes_fixture(name));
            assert!(!r.mining, "{name}: {r:?}");
            assert!(matches!(r.protocol, "unknown" | "tls" | "http"), "{name}: {r:?}");
        }
    }

    #[test]
    fn engine_api_arweave_and_inference_requests() {
        let post = |path: &str, headers: &str, body: &str| {
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let r = recognise(
            post(
                "/",
                "Authorization: Bearer e30\r\n",
                r#"{"jsonrpc":"2.0","method":"engine_forkchoiceUpdatedV3","params":[],"id":1}"#,
            )
            .as_bytes(),
        );
        assert_eq!(
            (r.protocol, r.detail.as_deref()),
            ("ethereum-engine-api", Some("engine_forkchoiceUpdatedV3"))
        );
        let r = recognise(b"GET /info HTTP/1.1\r\nx-p2p-port: 1984\r\nHost: x\r\n\r\n");
        assert_eq!((r.protocol, r.detail.as_deref()), ("arweave", Some("/info")));
        for path in [
            "/v1/chat/completions",
            "/v1/completions",
            "/generate",
            "/api/generate",
            "/v2/models/resnet/infer",
            "/v1/models/m:predict",
            "/predictions/m",
        ] {
            let r = recognise(post(path, "", "{}").as_bytes());
            assert_eq!(r.protocol, "inference-api", "{path}");
        }
        let r =
            recognise(post("/start_mining", "", r#"{"miner_address":"4A","threads_count":1}"#).as_bytes());
        assert_eq!((r.protocol, r.mining), ("node-mining-control", false));
        // A GET of the same path is not a request for inference; nor is
        // JSON-RPC with other methods.
        assert_eq!(recognise(b"GET /v1/completions HTTP/1.1\r\n\r\n").protocol, "http");
        assert_eq!(recognise(post("/", "", r#"{"method":"eth_blockNumber"}"#).as_bytes()).protocol, "http");
        // A body method is read only from the body, not from a header.
        assert_eq!(recognise(b"GET / HTTP/1.1\r\nX: {\"method\":\"getwork\"}\r\n\r\n").protocol, "http");
    }

    #[test]
    fn garbage_is_unknown() {
        assert_eq!(recognise(b"").protocol, "unknown");
        assert_eq!(recognise(b"\x00\x01\x02binary").protocol, "unknown");
        assert_eq!(recognise(&[0x16; 300]).protocol, "unknown");
        for bytes in crate::testing::random_inputs(0x2545f4914f6cdd1du64, 300, 20_000) {
            let _ = recognise(&bytes);
            let _ = recognise_datagram(&bytes, bytes.len() as u64, Some(9000));
        }
    }

    /// Real first datagrams (tests/fixtures/first_bytes/README.md): each is
    /// named by what it is, and none by what it is not.
    #[test]
    fn real_first_datagrams() {
        let fx = crate::testing::first_bytes_fixture;
        let datagram = |name: &str, port: u16| {
            let b = fx(name);
            recognise_datagram(&b, b.len() as u64, Some(port))
        };
        for (name, kind) in
            [("ping", "ping"), ("pong", "pong"), ("findnode", "findnode"), ("neighbours-empty", "neighbors")]
        {
            let r = datagram(&format!("ethereumjs-devp2p-10.0.0-discv4-{name}.bin"), 40404);
            assert_eq!((r.protocol, r.detail.as_deref(), r.inferred), ("ethereum-discv4", Some(kind), false));
        }
        for name in ["first-packet", "whoareyou", "handshake"] {
            let name = format!("chainsafe-discv5-11.0.0-{name}.bin");
            let r = datagram(&name, 9000);
            assert_eq!((r.protocol, r.inferred), ("ethereum-discv5", true), "{name}");
            // Its header is masked: off the default ports it is unnamed.
            assert_eq!(datagram(&name, 40404).protocol, "unknown", "{name}");
        }
        for name in
            ["chainsafe-libp2p-quic-2.1.1-quic-initial-libp2p.bin", "aioquic-1.7.2-quic-initial-libp2p.bin"]
        {
            let r = datagram(name, 40404);
            assert_eq!((r.protocol, r.detail.as_deref()), ("libp2p", Some("quic-v1")), "{name}");
            let hello = r.tls.unwrap();
            assert_eq!(hello.alpn, ["libp2p"], "{name}");
            assert!(hello.ja4.starts_with("q13") && !hello.cut, "{name}: {}", hello.ja4);
        }
        let r = datagram("aioquic-1.7.2-quic-initial-h3.bin", 443);
        assert_eq!((r.protocol, r.detail.as_deref()), ("quic", Some("localhost")));
        assert_eq!(r.tls.unwrap().alpn, ["h3"]);
        // DNS and TCP first messages are no datagram protocol.
        for name in
            ["monerod-0.18-regtest-handshake.bin", "curl-https-localhost.bin", "redis-cli-7.0.15-ping.bin"]
        {
            assert_eq!(datagram(name, 9000).protocol, "unknown", "{name}");
        }
    }

    /// Real first writes of encrypted transports: named by length and port,
    /// and marked inferred.
    #[test]
    fn real_random_first_writes() {
        let fx = crate::testing::first_bytes_fixture;
        let named = |name: &str, port: u16| {
            let b = fx(name);
            let r = recognise_message(&b, b.len() as u64, Some(port));
            assert!(r.inferred || r.protocol == "unknown", "{name}");
            r.protocol
        };
        assert_eq!(named("hsd-8.0.0-brontide-act-one.bin", 46806), "handshake-brontide");
        assert_eq!(named("noise_sv2-2.0.0-sv2-noise-e.bin", 34254), "stratum-v2");
        for n in 1..=3 {
            assert_eq!(
                named(&format!("rust-bip324-0.11.0-bip324-initiator-{n}.bin"), 8333),
                "bitcoin-p2p-v2"
            );
        }
        // Off Bitcoin's ports, BIP324 with no garbage is 64 bytes like
        // Stratum V2's key (a 1 in 4096 draw); with garbage, an unnamed
        // encrypted transport.
        assert_eq!(named("rust-bip324-0.11.0-bip324-initiator-1.bin", 4000), "stratum-v2");
        assert_eq!(named("rust-bip324-0.11.0-bip324-initiator-3.bin", 4000), "random");
        // Captured cut short (the kernel keeps 2047 bytes), BIP324 is
        // still named by its length.
        let long = fx("rust-bip324-0.11.0-bip324-initiator-2.bin");
        assert_eq!(
            recognise_message(&long[..2047], long.len() as u64, Some(8333)).protocol,
            "bitcoin-p2p-v2"
        );
        // Chia's TLS hello is Python's: TLS, with its JA4.
        let r = recognise(&fx("chia-blockchain-2.7.5-clienthello.bin"));
        assert_eq!((r.protocol, r.detail.as_deref()), ("tls", None));
        eprintln!("chia ja4 {}", r.tls.unwrap().ja4);
    }
}
