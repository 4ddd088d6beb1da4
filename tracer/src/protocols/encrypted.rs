//! Encrypted transports whose first write is nothing but random-looking
//! bytes: Bitcoin's v2 transport (BIP324), Stratum V2's Noise handshake,
//! Handshake's brontide and SiaMux. No byte is fixed, so they are named by
//! the exact length each sends first, by randomness, and by the port, and
//! marked `inferred`: a weaker kind of evidence than a protocol's magic.
//!
//! Sources: bitcoin/bips `bip-0324.mediawiki` (a 64-byte ElligatorSwift key
//! and 0..4095 bytes of garbage: 64..4159 in all); stratum-mining/sv2-spec
//! `04-Protocol-Security.md` (Noise NX: the initiator's 64-byte key);
//! handshake-org/hsd `lib/net/brontide.js` (`ACT_ONE_SIZE = 80`);
//! SiaFoundation/mux `spec_v3.md` (a version byte and a 32-byte X25519
//! key: 33).

use super::looks_random;

/// What a random-looking first write is taken for.
pub struct Encrypted {
    pub protocol: &'static str,
    pub detail: String,
}

/// Bitcoin-family P2P ports (Bitcoin's networks; Core is the only v2
/// transport implementation in use).
const BITCOIN_PORTS: [u16; 5] = [8333, 18333, 38333, 48333, 18444];

/// A first write of `total` bytes, `b` of them captured, to or from
/// `port`: one of the transports above, or `None` when it is not random.
pub fn random_first_write(b: &[u8], total: u64, port: Option<u16>) -> Option<Encrypted> {
    if !(32..=4159).contains(&total) {
        return None;
    }
    let bitcoin_port = port.is_some_and(|p| BITCOIN_PORTS.contains(&p));
    let named =
        |protocol, what: &str| Some(Encrypted { protocol, detail: format!("{total} random bytes: {what}") });
    // SiaMux: the version byte is not random.
    if total == 33 && matches!(b.first(), Some(2 | 3)) && looks_random(&b[1..]) {
        return named("siamux", "a SiaMux version byte and an X25519 key");
    }
    if !looks_random(b) {
        return None;
    }
    match total {
        _ if bitcoin_port && total >= 64 => {
            named("bitcoin-p2p-v2", "a BIP324 key and garbage, on a Bitcoin port")
        }
        64 => named("stratum-v2", "a Noise NX key, as Stratum V2 sends (or BIP324 with no garbage)"),
        80 => named("handshake-brontide", "brontide's act one, as hsd sends"),
        _ => named(
            "random",
            "an encrypted transport with no plaintext framing (BIP324, obfs4, Shadowsocks, …)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes that look random (xorshift).
    pub fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn each_transport_by_its_length_and_port() {
        let name = |b: &[u8], port| random_first_write(b, b.len() as u64, port).map(|e| e.protocol);
        assert_eq!(name(&noise(64, 1), Some(34254)), Some("stratum-v2"));
        assert_eq!(name(&noise(64, 2), Some(8333)), Some("bitcoin-p2p-v2"));
        assert_eq!(name(&noise(80, 3), Some(44806)), Some("handshake-brontide"));
        assert_eq!(name(&noise(700, 4), Some(18444)), Some("bitcoin-p2p-v2"));
        assert_eq!(name(&noise(700, 5), Some(4000)), Some("random"));
        let mut sia = noise(33, 6);
        sia[0] = 3;
        assert_eq!(name(&sia, Some(9982)), Some("siamux"));
        // A capture cut short of the write still names it by the total.
        let big = noise(2047, 7);
        assert_eq!(random_first_write(&big, 4000, Some(8333)).map(|e| e.protocol), Some("bitcoin-p2p-v2"));
        assert!(random_first_write(&big, 5000, Some(8333)).is_none(), "longer than BIP324's most");
    }

    #[test]
    fn text_zeros_and_structured_binary_are_not_random() {
        let name = |b: &[u8]| random_first_write(b, b.len() as u64, Some(8333)).map(|e| e.protocol);
        assert_eq!(name(&[0u8; 64]), None);
        assert_eq!(name(b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/7.88.1\r\n\r\n"), None);
        for fixture in [
            "openssh-client-9.2p1-deb12u6-banner.bin",
            "psql-15.18-startup-sslmode-disable.bin",
            "redis-cli-7.0.15-ping.bin",
            "git-2.47.3-git-protocol-upload-pack.bin",
            "monerod-0.18-regtest-handshake.bin",
            "hsd-8.0.0-regtest-version.bin",
        ] {
            assert_eq!(name(&crate::testing::first_bytes_fixture(fixture)), None, "{fixture}");
        }
        // A counter, every byte distinct, is not random either.
        let counting: Vec<u8> = (0..64u8).collect();
        assert_eq!(name(&counting), None);
    }
}
