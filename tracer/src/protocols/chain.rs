//! Blockchain peer-to-peer protocols, by what a node sends first on a
//! connection it opens: Monero's levin (every CryptoNote chain), the
//! Bitcoin family's v1 messages and Handshake's (hsd). Ports say little (nodes run on any); these
//! bytes say what the process is.
//!
//! Sources: monero `contrib/epee/include/net/levin_base.h` (the 33-byte
//! header), `src/p2p/p2p_protocol_defs.h` (commands), `src/cryptonote_config.h`
//! (network ids); bitcoin `src/protocol.h` (the 24-byte header),
//! `src/kernel/chainparams.cpp` and the forks' chainparams (magics), the P2P
//! reference for `version`'s fields; hsd `lib/net/framer.js` (9-byte header),
//! `lib/protocol/genesis.js` (magics).

/// What a chain protocol's first bytes say.
pub struct Chain {
    pub protocol: &'static str,
    /// The command (`handshake`, `version`, …).
    pub command: String,
    /// The network, where the bytes name it.
    pub network: Option<&'static str>,
    /// The node's self-description (Bitcoin's user agent).
    pub agent: Option<String>,
}

const LEVIN_SIGNATURE: [u8; 8] = [0x01, 0x21, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01];
/// Monero's network ids: the first 15 bytes, then 0x10 mainnet (and
/// regtest), 0x11 testnet, 0x12 stagenet.
const MONERO_NETWORK_ID: [u8; 15] =
    [0x12, 0x30, 0xf1, 0x71, 0x61, 0x04, 0x41, 0x61, 0x17, 0x31, 0x00, 0x82, 0x16, 0xa1, 0xa1];

pub fn levin(b: &[u8]) -> Option<Chain> {
    if !b.starts_with(&LEVIN_SIGNATURE) {
        return None;
    }
    let command = b.get(17..21).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    let command = match command {
        Some(1001) => "handshake".to_string(),
        Some(1002) => "timed_sync".to_string(),
        Some(1003) => "ping".to_string(),
        Some(1007) => "request_support_flags".to_string(),
        Some(n @ 2001..=2099) => format!("block protocol {n}"),
        Some(n) => format!("command {n}"),
        None => "unknown".to_string(),
    };
    let network = b.windows(16).find(|w| w[..15] == MONERO_NETWORK_ID).and_then(|w| match w[15] {
        0x10 => Some("mainnet"),
        0x11 => Some("testnet"),
        0x12 => Some("stagenet"),
        _ => None,
    });
    Some(Chain { protocol: "monero-levin", command, network, agent: None })
}

/// Bitcoin-family magics (wire order) and the network each names. Regtest's
/// is shared by Bitcoin, Litecoin and Dogecoin.
const MAGICS: &[([u8; 4], &str)] = &[
    ([0xf9, 0xbe, 0xb4, 0xd9], "bitcoin-mainnet"),
    ([0x0b, 0x11, 0x09, 0x07], "bitcoin-testnet3"),
    ([0x1c, 0x16, 0x3f, 0x28], "bitcoin-testnet4"),
    ([0x0a, 0x03, 0xcf, 0x40], "bitcoin-signet"),
    ([0xfa, 0xbf, 0xb5, 0xda], "regtest"),
    ([0xfb, 0xc0, 0xb6, 0xdb], "litecoin-mainnet"),
    ([0xfd, 0xd2, 0xc8, 0xf1], "litecoin-testnet"),
    ([0xc0, 0xc0, 0xc0, 0xc0], "dogecoin-mainnet"),
    ([0xfc, 0xc1, 0xb7, 0xdc], "dogecoin-testnet"),
    ([0xe3, 0xe1, 0xf3, 0xe8], "bitcoin-cash-mainnet"),
    ([0xf4, 0xe5, 0xf3, 0xf4], "bitcoin-cash-testnet3"),
    ([0xe2, 0xb7, 0xda, 0xaf], "bitcoin-cash-testnet4"),
    ([0xda, 0xb5, 0xbf, 0xfa], "bitcoin-cash-regtest"),
];

pub fn bitcoin(b: &[u8]) -> Option<Chain> {
    let magic: [u8; 4] = b.get(..4)?.try_into().ok()?;
    let network = MAGICS.iter().find(|(m, _)| *m == magic).map(|(_, n)| *n)?;
    let name = b.get(4..16)?;
    let len = name.iter().position(|&c| c == 0).unwrap_or(12);
    if len == 0 || !name[..len].iter().all(u8::is_ascii_lowercase) || name[len..].iter().any(|&c| c != 0) {
        return None;
    }
    let command = String::from_utf8_lossy(&name[..len]).into_owned();
    // version: version 4, services 8, time 8, two addresses of 26, nonce 8,
    // then the user agent as a var_str.
    let agent = (command == "version")
        .then(|| {
            let at = 24 + 4 + 8 + 8 + 26 + 26 + 8;
            let n = *b.get(at)? as usize;
            // A one-byte length is enough for any real agent (< 0xfd).
            (n < 0xfd).then(|| b.get(at + 1..at + 1 + n)).flatten()
        })
        .flatten()
        .map(|ua| String::from_utf8_lossy(ua).chars().take(128).collect());
    Some(Chain { protocol: "bitcoin-p2p", command, network: Some(network), agent })
}

/// Handshake's magics (little-endian on the wire) and networks.
pub const HSD_MAGICS: &[([u8; 4], &str)] = &[
    ([0xd3, 0xf2, 0x6e, 0x5b], "mainnet"),
    ([0xd2, 0x0d, 0x52, 0xb1], "testnet"),
    ([0xcf, 0x95, 0x38, 0xae], "regtest"),
    ([0xdc, 0x8e, 0x64, 0x0e], "simnet"),
];

/// hsd: magic, a command byte (0 is VERSION), a little-endian u32 length;
/// the version's agent is `/hsd:VERSION/`.
pub fn handshake(b: &[u8]) -> Option<Chain> {
    let magic: [u8; 4] = b.get(..4)?.try_into().ok()?;
    let network = HSD_MAGICS.iter().find(|(m, _)| *m == magic).map(|(_, n)| *n)?;
    let command = match *b.get(4)? {
        0 => "version".to_string(),
        1 => "verack".to_string(),
        n => format!("command {n}"),
    };
    let agent = b.windows(5).position(|w| w == b"/hsd:").and_then(|at| {
        let rest = &b[at + 1..];
        let end = rest.iter().position(|&c| c == b'/')?;
        Some(String::from_utf8_lossy(&b[at..at + end + 2]).chars().take(128).collect())
    });
    Some(Chain { protocol: "handshake-p2p", command, network: Some(network), agent })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_monerod_handshake() {
        let b = crate::testing::first_bytes_fixture("monerod-0.18-regtest-handshake.bin");
        let c = levin(&b).expect("levin");
        assert_eq!(
            (c.protocol, c.command.as_str(), c.network),
            ("monero-levin", "handshake", Some("mainnet"))
        );
        assert!(crate::protocols::first_message::is_whole(&b));
        assert!(bitcoin(&b).is_none());
    }

    #[test]
    fn a_real_hsd_version() {
        let b = crate::testing::first_bytes_fixture("hsd-8.0.0-regtest-version.bin");
        let c = handshake(&b).expect("hsd");
        assert_eq!(
            (c.protocol, c.command.as_str(), c.network),
            ("handshake-p2p", "version", Some("regtest"))
        );
        assert_eq!(c.agent.as_deref(), Some("/hsd:8.0.0/"));
        assert!(crate::protocols::first_message::is_whole(&b));
        assert!(levin(&b).is_none() && bitcoin(&b).is_none());
    }

    /// Not a capture: no Bitcoin node could be run here (bcoin's native
    /// leveldown does not build; Bitcoin Core is not packaged). Built to
    /// the reference's byte layout of Bitcoin Core 27's `version`.
    #[test]
    fn a_bitcoin_version_as_the_reference_lays_it_out() {
        let mut b = vec![0xf9, 0xbe, 0xb4, 0xd9];
        b.extend_from_slice(b"version\0\0\0\0\0");
        b.extend_from_slice(&102u32.to_le_bytes());
        b.extend_from_slice(&[0xcc; 4]);
        b.extend_from_slice(&70016u32.to_le_bytes());
        b.extend_from_slice(&[0; 8 + 8 + 26 + 26 + 8]);
        b.push(16);
        b.extend_from_slice(b"/Satoshi:27.0.0/");
        b.extend_from_slice(&[0; 5]);
        assert_eq!(b.len(), 126);
        let c = bitcoin(&b).expect("bitcoin");
        assert_eq!(
            (c.command.as_str(), c.network, c.agent.as_deref()),
            ("version", Some("bitcoin-mainnet"), Some("/Satoshi:27.0.0/"))
        );
        assert!(crate::protocols::first_message::is_whole(&b));
    }

    #[test]
    fn cut_and_hostile_input() {
        for name in ["monerod-0.18-regtest-handshake.bin", "hsd-8.0.0-regtest-version.bin"] {
            let b = crate::testing::first_bytes_fixture(name);
            for n in 0..b.len() {
                let _ = (levin(&b[..n]), bitcoin(&b[..n]), handshake(&b[..n]));
            }
        }
        // A magic with a command that is not a name is not Bitcoin.
        let mut junk = vec![0xf9, 0xbe, 0xb4, 0xd9];
        junk.extend_from_slice(b"VERSION\0\0\0\0\0");
        assert!(bitcoin(&junk).is_none());
        for bytes in crate::testing::random_inputs(0x9e3779b97f4a7c15, 400, 20_000) {
            let _ = (levin(&bytes), bitcoin(&bytes), handshake(&bytes));
        }
    }
}
