//! A UDP socket's first datagram each way: Ethereum's discovery (discv4,
//! checked by its own hash; discv5, whose header is masked, inferred from
//! length and port), and QUIC, whose Initial packet is decrypted with the
//! keys anyone can derive from its connection id (RFC 9001 §5.2) to read
//! the TLS ClientHello inside: ALPN `libp2p` is a libp2p node (IPFS,
//! Filecoin, Ethereum consensus), `h3` a web client.
//!
//! Sources: ethereum/devp2p `discv4.md` (hash ‖ signature ‖ type ‖ RLP,
//! hash = keccak256 of the rest), `discv5/discv5-wire.md` (63..1280 bytes,
//! masked with the recipient's id); RFC 9000 §17.2.2 (Initial packet),
//! RFC 9001 §5 (Initial secrets, header protection, AEAD), RFC 9369 §3
//! (QUIC v2's salt, labels and packet types); libp2p/specs `quic/README.md`
//! and `tls/tls.md` (ALPN `libp2p`, no SNI).

use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
use aes_gcm::{AeadInPlace, Aes128Gcm, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;
use sha3::{Digest, Keccak256};

use super::tls::{self, ClientHello};

/// What a first datagram says.
pub struct Datagram {
    pub protocol: &'static str,
    pub detail: Option<String>,
    pub tls: Option<ClientHello>,
    /// Named from length, randomness and port, not from bytes the
    /// protocol fixes.
    pub inferred: bool,
}

/// discv4: `hash(32) ‖ signature(65) ‖ type(1) ‖ RLP data`, at most 1280
/// bytes, and the hash is the Keccak-256 of everything after it, so a
/// random datagram passes with probability 2^-256. Needs the whole packet.
pub fn discv4(b: &[u8], total: u64) -> Option<Datagram> {
    if b.len() < 98 || total != b.len() as u64 || b.len() > 1280 {
        return None;
    }
    let kind = match b[97] {
        1 => "ping",
        2 => "pong",
        3 => "findnode",
        4 => "neighbors",
        5 => "enrrequest",
        6 => "enrresponse",
        _ => return None,
    };
    (Keccak256::digest(&b[32..]).as_slice() == &b[..32]).then(|| Datagram {
        protocol: "ethereum-discv4",
        detail: Some(kind.into()),
        tls: None,
        inferred: false,
    })
}

/// The UDP ports Ethereum's discovery runs on by default: geth's 30303,
/// the consensus clients' 9000 (Lighthouse, Teku, Nimbus, Lodestar) and
/// Prysm's 12000.
const DISCV5_PORTS: [u16; 3] = [30303, 9000, 12000];

/// discv5: its header is AES-CTR-masked with the recipient's node id, so
/// an observer sees 16 random bytes of IV and more random bytes: only the
/// length (63..1280) and the default ports say what it is.
pub fn discv5(b: &[u8], total: u64, port: Option<u16>) -> Option<Datagram> {
    let port = port?;
    ((63..=1280).contains(&total) && DISCV5_PORTS.contains(&port) && super::looks_random(b)).then(|| {
        Datagram {
            protocol: "ethereum-discv5",
            detail: Some(format!("{total} random-looking bytes to or from UDP port {port}")),
            tls: None,
            inferred: true,
        }
    })
}

/// QUIC versions whose Initial packets are read: v1 (RFC 9000) and v2
/// (RFC 9369), with their salts, HKDF label prefix and Initial type bits.
struct Version {
    id: u32,
    name: &'static str,
    salt: [u8; 20],
    labels: &'static str,
    initial_type: u8,
}

const VERSIONS: [Version; 2] = [
    Version {
        id: 0x0000_0001,
        name: "1",
        salt: [
            0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
            0xcc, 0xbb, 0x7f, 0x0a,
        ],
        labels: "quic",
        initial_type: 0,
    },
    Version {
        id: 0x6b33_43cf,
        name: "2",
        salt: [
            0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb,
            0xf9, 0xbd, 0x2e, 0xd9,
        ],
        labels: "quicv2",
        initial_type: 1,
    },
];

/// A QUIC long-header packet: a datagram's first. A client's first
/// datagram is an Initial whose ClientHello is read (decrypted and its
/// tag checked); a server's, or one this cannot read, is still QUIC.
pub fn quic(b: &[u8]) -> Option<Datagram> {
    let first = *b.first()?;
    if first & 0xc0 != 0xc0 {
        return None;
    }
    let id = u32::from_be_bytes(b.get(1..5)?.try_into().ok()?);
    let version = VERSIONS.iter().find(|v| v.id == id)?;
    let hello = client_hello(b, version);
    let libp2p = hello.as_ref().is_some_and(|h| h.alpn.iter().any(|a| a == "libp2p"));
    let detail = match &hello {
        Some(_) if libp2p => format!("quic-v{}", version.name),
        Some(h) => h.sni.clone().unwrap_or_else(|| format!("quic-v{} initial", version.name)),
        None => format!("quic-v{} long header (not a readable client Initial)", version.name),
    };
    Some(Datagram {
        protocol: if libp2p { "libp2p" } else { "quic" },
        detail: Some(detail),
        tls: hello,
        inferred: false,
    })
}

/// The ClientHello in a datagram's Initial packets (a datagram may carry
/// several, coalesced), from the CRYPTO frames' bytes that start at 0.
fn client_hello(datagram: &[u8], version: &Version) -> Option<ClientHello> {
    let mut plaintexts = Vec::new();
    let mut rest = datagram;
    while let Some(packet) = Initial::parse(rest, version) {
        rest = &rest[packet.end..];
        let Some(plain) = packet.decrypt(version) else { break };
        plaintexts.push(plain);
        if rest.first().is_none_or(|b| b & 0xc0 != 0xc0) {
            break;
        }
    }
    let mut segments = Vec::new();
    for plain in &plaintexts {
        crypto_frames(plain, &mut segments);
    }
    let crypto = contiguous(segments);
    let len = crypto.len();
    if len < 4 || crypto[0] != 1 {
        return None;
    }
    // As a TLS record, which is what the ClientHello parser reads.
    let mut record = vec![0x16, 0x03, 0x01, (len >> 8) as u8, len as u8];
    record.extend_from_slice(&crypto);
    let mut hello = tls::parse(&record)?;
    // JA4's first letter names the transport: q for QUIC.
    hello.ja4.replace_range(..1, "q");
    Some(hello)
}

/// One Initial packet's layout, before header protection is removed.
struct Initial<'a> {
    packet: &'a [u8],
    dcid: &'a [u8],
    /// Where the (protected) packet number starts.
    pn_at: usize,
    /// Where this packet ends in the datagram.
    end: usize,
}

impl<'a> Initial<'a> {
    fn parse(b: &'a [u8], version: &Version) -> Option<Self> {
        let first = *b.first()?;
        if first & 0xc0 != 0xc0 || (first >> 4) & 0x03 != version.initial_type {
            return None;
        }
        if u32::from_be_bytes(b.get(1..5)?.try_into().ok()?) != version.id {
            return None;
        }
        let mut at = 5;
        let dcid_len = usize::from(*b.get(at)?);
        if dcid_len > 20 {
            return None;
        }
        let dcid = b.get(at + 1..at + 1 + dcid_len)?;
        at += 1 + dcid_len;
        let scid_len = usize::from(*b.get(at)?);
        at += 1 + scid_len;
        let (token_len, n) = varint(b.get(at..)?)?;
        at = at.checked_add(n)?.checked_add(usize::try_from(token_len).ok()?)?;
        let (length, n) = varint(b.get(at..)?)?;
        let pn_at = at + n;
        let end = pn_at.checked_add(usize::try_from(length).ok()?)?;
        // The sample for header protection starts 4 bytes into the packet
        // number field, and a whole packet must have been captured.
        if end > b.len() || pn_at + 4 + 16 > end {
            return None;
        }
        Some(Self { packet: &b[..end], dcid, pn_at, end })
    }

    /// The packet's frames, if its tag checks with the client's Initial
    /// keys (a server's Initial, with other keys, fails here).
    fn decrypt(&self, version: &Version) -> Option<Vec<u8>> {
        let keys = Keys::client_initial(self.dcid, version)?;
        let sample: [u8; 16] = self.packet[self.pn_at + 4..self.pn_at + 20].try_into().ok()?;
        let mut mask = GenericArray::from(sample);
        aes::Aes128::new(&GenericArray::from(keys.hp)).encrypt_block(&mut mask);
        let mut header = self.packet[..self.pn_at].to_vec();
        header[0] ^= mask[0] & 0x0f;
        let pn_len = usize::from(header[0] & 0x03) + 1;
        let mut pn: u64 = 0;
        for i in 0..pn_len {
            let byte = self.packet[self.pn_at + i] ^ mask[1 + i];
            header.push(byte);
            pn = pn << 8 | u64::from(byte);
        }
        let mut nonce = keys.iv;
        for (i, byte) in pn.to_be_bytes().iter().enumerate() {
            nonce[4 + i] ^= byte;
        }
        let body = &self.packet[self.pn_at + pn_len..];
        let (text, tag) = body.split_at(body.len().checked_sub(16)?);
        let mut plain = text.to_vec();
        Aes128Gcm::new(&GenericArray::from(keys.key))
            .decrypt_in_place_detached(Nonce::from_slice(&nonce), &header, &mut plain, Tag::from_slice(tag))
            .ok()?;
        Some(plain)
    }
}

/// A client's Initial packet protection keys (RFC 9001 §5.2).
struct Keys {
    key: [u8; 16],
    iv: [u8; 12],
    hp: [u8; 16],
}

impl Keys {
    fn client_initial(dcid: &[u8], version: &Version) -> Option<Self> {
        let (initial, _) = Hkdf::<Sha256>::extract(Some(&version.salt), dcid);
        let initial = Hkdf::<Sha256>::from_prk(&initial).ok()?;
        let mut client = [0u8; 32];
        expand_label(&initial, "client in", &mut client)?;
        let client = Hkdf::<Sha256>::from_prk(&client).ok()?;
        let mut keys = Self { key: [0; 16], iv: [0; 12], hp: [0; 16] };
        let prefix = version.labels;
        expand_label(&client, &format!("{prefix} key"), &mut keys.key)?;
        expand_label(&client, &format!("{prefix} iv"), &mut keys.iv)?;
        expand_label(&client, &format!("{prefix} hp"), &mut keys.hp)?;
        Some(keys)
    }
}

/// TLS 1.3's HKDF-Expand-Label with an empty context (RFC 8446 §7.1).
fn expand_label(prk: &Hkdf<Sha256>, label: &str, out: &mut [u8]) -> Option<()> {
    let full = format!("tls13 {label}");
    let mut info = Vec::with_capacity(4 + full.len());
    info.extend_from_slice(&(out.len() as u16).to_be_bytes());
    info.push(full.len() as u8);
    info.extend_from_slice(full.as_bytes());
    info.push(0);
    prk.expand(&info, out).ok()
}

/// A QUIC variable-length integer (RFC 9000 §16): its value and size.
fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let len = 1usize << (first >> 6);
    let bytes = b.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for byte in &bytes[1..] {
        v = v << 8 | u64::from(*byte);
    }
    Some((v, len))
}

/// The CRYPTO stream's bytes from offset 0 for as long as the segments
/// leave no hole (clients may send them out of order).
fn contiguous(mut segments: Vec<(u64, &[u8])>) -> Vec<u8> {
    segments.sort_by_key(|(offset, _)| *offset);
    let mut crypto = Vec::new();
    for (offset, data) in segments {
        let Ok(at) = usize::try_from(offset) else { break };
        if at > crypto.len() {
            break;
        }
        let overlap = (crypto.len() - at).min(data.len());
        crypto.extend_from_slice(&data[overlap..]);
    }
    crypto
}

/// An Initial packet's CRYPTO frames, as (offset, bytes). Frames an
/// Initial may carry are stepped over; anything else ends the walk.
fn crypto_frames<'a>(mut b: &'a [u8], segments: &mut Vec<(u64, &'a [u8])>) {
    // A ClientHello is a few KiB at most; a hostile offset is ignored.
    const MAX: u64 = 16 * 1024;
    while let Some(&kind) = b.first() {
        let Some(next) = (|| -> Option<&'a [u8]> {
            match kind {
                // PADDING, PING.
                0x00 | 0x01 => Some(&b[1..]),
                // ACK: largest, delay, range count, first range, ranges
                // (and ECN counts for 0x03).
                0x02 | 0x03 => {
                    let mut r = &b[1..];
                    let field = |r: &mut &[u8]| -> Option<u64> {
                        let (v, n) = varint(r)?;
                        *r = &r[n..];
                        Some(v)
                    };
                    field(&mut r)?;
                    field(&mut r)?;
                    let ranges = field(&mut r)?;
                    field(&mut r)?;
                    for _ in 0..ranges.min(64) * 2 + if kind == 0x03 { 3 } else { 0 } {
                        field(&mut r)?;
                    }
                    Some(r)
                }
                // CRYPTO: offset, length, data.
                0x06 => {
                    let (offset, n) = varint(&b[1..])?;
                    let (len, m) = varint(&b[1 + n..])?;
                    let start = 1 + n + m;
                    let data = b.get(start..start + usize::try_from(len).ok()?)?;
                    if offset.saturating_add(len) <= MAX && segments.len() < 64 {
                        segments.push((offset, data));
                    }
                    Some(&b[start + data.len()..])
                }
                _ => None,
            }
        })() else {
            return;
        };
        b = next;
    }
}

#[cfg(test)]
mod tests {
    use aes_gcm::AeadInPlace;

    use super::*;

    /// RFC 9001 Appendix A.1: the client's Initial keys for connection id
    /// 8394c8f03e515708.
    #[test]
    fn initial_keys_match_rfc_9001() {
        let dcid = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];
        let k = Keys::client_initial(&dcid, &VERSIONS[0]).unwrap();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(hex(&k.key), "1f369613dd76d5467730efcbe3b1a22d");
        assert_eq!(hex(&k.iv), "fa044b2f42a3fd3b46fb255c");
        assert_eq!(hex(&k.hp), "9f50449e04a0e810283a1e9933adedd2");
    }

    /// Protects an Initial the way a client does (the inverse of `decrypt`),
    /// for tests that need a packet with chosen frames.
    pub(crate) fn protect(dcid: &[u8], frames: &[u8], version: &Version) -> Vec<u8> {
        let keys = Keys::client_initial(dcid, version).unwrap();
        let mut payload = frames.to_vec();
        payload.resize(payload.len().max(1162), 0);
        let pn_len = 2usize;
        let length = pn_len + payload.len() + 16;
        let mut header = vec![0xc0 | (version.initial_type << 4) | (pn_len as u8 - 1)];
        header.extend_from_slice(&version.id.to_be_bytes());
        header.push(dcid.len() as u8);
        header.extend_from_slice(dcid);
        header.push(0); // no source connection id
        header.push(0); // no token
        header.extend_from_slice(&(0x4000u16 | length as u16).to_be_bytes());
        let pn_at = header.len();
        header.extend_from_slice(&[0, 2]); // packet number 2
        let mut nonce = keys.iv;
        nonce[11] ^= 2;
        let tag = Aes128Gcm::new(&GenericArray::from(keys.key))
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &header, &mut payload)
            .unwrap();
        let mut packet = header;
        packet.extend_from_slice(&payload);
        packet.extend_from_slice(&tag);
        let sample: [u8; 16] = packet[pn_at + 4..pn_at + 20].try_into().unwrap();
        let mut mask = GenericArray::from(sample);
        aes::Aes128::new(&GenericArray::from(keys.hp)).encrypt_block(&mut mask);
        packet[0] ^= mask[0] & 0x0f;
        for i in 0..pn_len {
            packet[pn_at + i] ^= mask[1 + i];
        }
        packet
    }

    /// A CRYPTO frame at `offset` holding `data`.
    fn crypto_frame(offset: u16, data: &[u8]) -> Vec<u8> {
        let mut f = vec![0x06];
        f.extend_from_slice(&(0x4000 | offset).to_be_bytes());
        f.extend_from_slice(&(0x4000 | data.len() as u16).to_be_bytes());
        f.extend_from_slice(data);
        f
    }

    /// The handshake message inside a real TLS record fixture.
    fn handshake_of(record: &[u8]) -> Vec<u8> {
        record[5..].to_vec()
    }

    #[test]
    fn a_client_initial_is_decrypted_and_its_hello_read_in_both_versions() {
        let hello = handshake_of(&crate::testing::first_bytes_fixture("curl-https-localhost.bin"));
        for version in &VERSIONS {
            // The hello split in two frames, the second first (as Chrome
            // orders them), with PING and PADDING around.
            let mut frames = vec![0x01];
            frames.extend(crypto_frame(100, &hello[100..]));
            frames.extend(crypto_frame(0, &hello[..100]));
            let packet = protect(&[7; 8], &frames, version);
            let d = quic(&packet).unwrap();
            assert_eq!(d.protocol, "quic");
            let h = d.tls.unwrap();
            assert_eq!(h.sni.as_deref(), Some("localhost"));
            assert!(h.ja4.starts_with("q13d"), "{}", h.ja4);
            assert!(!h.cut);
        }
    }

    #[test]
    fn damaged_or_foreign_quic_is_quic_without_a_hello_and_never_panics() {
        let hello = handshake_of(&crate::testing::first_bytes_fixture("curl-https-localhost.bin"));
        let mut packet = protect(&[9; 20], &crypto_frame(0, &hello), &VERSIONS[0]);
        let last = packet.len() - 1;
        packet[last] ^= 1; // the tag no longer checks
        let d = quic(&packet).unwrap();
        assert!(d.tls.is_none());
        for n in 0..packet.len().min(80) {
            let _ = quic(&packet[..n]);
        }
        for n in (80..packet.len()).step_by(97) {
            assert!(quic(&packet[..n]).is_none_or(|d| d.tls.is_none()));
        }
        // A real Initial with one byte changed anywhere: still no panic, and
        // a change after the header fails the tag.
        let real = crate::testing::first_bytes_fixture("aioquic-1.7.2-quic-initial-libp2p.bin");
        for at in 0..real.len() {
            let mut bent = real.clone();
            bent[at] ^= 0x5a;
            let d = quic(&bent);
            if (64..500).contains(&at) {
                assert!(d.is_none_or(|d| d.tls.is_none()), "byte {at}");
            }
        }
        assert!(quic(b"\xc0\x00\x00\x00\x01\xff").is_none_or(|d| d.tls.is_none()));
        assert!(quic(b"\x40\x00\x00\x00\x01").is_none(), "a short header is not a first datagram");
        assert!(quic(b"\xc0\x12\x34\x56\x78").is_none(), "an unknown version");
    }

    #[test]
    fn discv4_needs_its_hash_and_a_known_type() {
        let mut packet = vec![0u8; 32];
        packet.extend_from_slice(&[0x42; 65]);
        packet.push(1);
        packet.extend_from_slice(&[0xc5, 0x04, 0x82, 0x76, 0x5f, 0x80]);
        let hash = Keccak256::digest(&packet[32..]);
        packet[..32].copy_from_slice(&hash);
        let d = discv4(&packet, packet.len() as u64).unwrap();
        assert_eq!((d.protocol, d.detail.as_deref(), d.inferred), ("ethereum-discv4", Some("ping"), false));
        assert!(discv4(&packet, packet.len() as u64 + 1).is_none(), "a cut capture cannot be checked");
        let mut wrong = packet.clone();
        wrong[100] ^= 1;
        assert!(discv4(&wrong, wrong.len() as u64).is_none());
        let mut unknown = packet.clone();
        unknown[97] = 7;
        let hash = Keccak256::digest(&unknown[32..]);
        unknown[..32].copy_from_slice(&hash);
        assert!(discv4(&unknown, unknown.len() as u64).is_none());
    }
}
