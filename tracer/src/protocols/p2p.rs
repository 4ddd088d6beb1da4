//! Peer-to-peer transports that chains and storage networks share, by what
//! their first message says before any encryption starts: libp2p's
//! multistream-select (IPFS, Filecoin, Ethereum consensus, Polkadot),
//! Storj's DRPC header, CometBFT's secret-connection key (Cosmos chains),
//! Ethereum's RLPx `auth` and ZeroMQ's greeting (monerod's and XMRig's
//! ZMQ). Ports say little; these bytes do.
//!
//! Sources: multiformats/multistream-select `README.md` (uvarint-length
//! lines), go-multistream `client.go` (header and first protocol in one
//! write); storj/common `rpc/connector.go` and storj/drpc `drpcmigrate`
//! (`DRPC!!!1`, `DRPC!N!1`); cometbft `p2p/conn/secret_connection.go` (a
//! length-delimited protobuf `BytesValue` holding the 32-byte ephemeral
//! key); ethereum/devp2p `rlpx.md` (EIP-8 `auth`: a 2-byte big-endian size,
//! then ECIES output starting with an uncompressed point, 0x04); ZMTP 3.x
//! (RFC 23/ZMTP: signature `ff`, 8 padding bytes, `7f`, major version).

/// What a peer-to-peer transport's first bytes say.
pub struct P2p {
    pub protocol: &'static str,
    pub detail: Option<String>,
}

const MULTISTREAM: &[u8] = b"\x13/multistream/1.0.0\n";

/// libp2p: the multistream header, then (usually in the same write) the
/// protocol the dialer proposes (`/noise`, `/tls/1.0.0`, `/yamux/1.0.0`).
pub fn multistream(b: &[u8]) -> Option<P2p> {
    let rest = b.strip_prefix(MULTISTREAM)?;
    // The next line: a one-byte uvarint length (protocol ids are short),
    // then the id with its newline.
    let proposed = rest.first().and_then(|&n| {
        let line = rest.get(1..1 + usize::from(n))?;
        let id = line.strip_suffix(b"\n")?;
        (n < 0x80 && id.first() == Some(&b'/') && id.iter().all(|c| c.is_ascii_graphic()))
            .then(|| String::from_utf8_lossy(id).into_owned())
    });
    Some(P2p { protocol: "libp2p", detail: proposed })
}

/// The whole length of a multistream opening: the header and, when it has
/// begun, the proposed protocol's line.
pub fn multistream_length(b: &[u8]) -> Option<u64> {
    let rest = b.strip_prefix(MULTISTREAM)?;
    Some(match rest.first() {
        Some(&n) if n < 0x80 => (MULTISTREAM.len() + 1 + usize::from(n)) as u64,
        _ => MULTISTREAM.len() as u64,
    })
}

/// Storj: the connection starts with an 8-byte header naming the transport
/// that follows (TLS, or Noise for `DRPC!N!1`).
pub fn drpc(b: &[u8]) -> Option<P2p> {
    let detail = match b.get(..8)? {
        b"DRPC!!!1" if b.get(8) == Some(&0x16) => "drpc over tls",
        b"DRPC!!!1" => "drpc",
        b"DRPC!N!1" => "drpc over noise",
        _ => return None,
    };
    Some(P2p { protocol: "storj-drpc", detail: Some(detail.into()) })
}

/// CometBFT (Tendermint) secret connection: the first write is exactly the
/// 32-byte X25519 ephemeral key, length-delimited (`22`) as a protobuf
/// `BytesValue` (field 1, `0a 20`): 35 bytes.
pub fn cometbft(b: &[u8], total: u64) -> Option<P2p> {
    (total == 35 && b.len() == 35 && b.starts_with(&[0x22, 0x0a, 0x20]))
        .then(|| P2p { protocol: "cometbft", detail: Some("secret connection".into()) })
}

/// Ethereum's RLPx EIP-8 `auth`: its size prefix says how long it is, it
/// is 384..483 bytes from go-ethereum (older 384..583; others pad
/// differently), and the ECIES output begins with an uncompressed point.
/// The rest is random, so the length must agree exactly: one in 256
/// random writes starts with 0x04 at byte 2, far fewer also match the size.
pub fn rlpx_auth(b: &[u8], total: u64) -> Option<P2p> {
    let size = u64::from(u16::from_be_bytes([*b.first()?, *b.get(1)?]));
    (b.get(2) == Some(&0x04) && (300..=700).contains(&(size + 2)) && total == size + 2)
        .then(|| P2p { protocol: "ethereum-rlpx", detail: Some("auth".into()) })
}

/// The whole length of an RLPx `auth`, from its size prefix.
pub fn rlpx_length(b: &[u8]) -> Option<u64> {
    let size = u64::from(u16::from_be_bytes([*b.first()?, *b.get(1)?]));
    (b.get(2) == Some(&0x04) && (298..=698).contains(&size)).then_some(size + 2)
}

/// ZeroMQ's greeting (ZMTP 3): signature `ff`, 8 bytes, `7f`, then the
/// major version. monerod publishes over ZMQ, and XMRig's solo mining
/// (`daemon+zmq://`) subscribes to it; other ZMQ users look the same.
pub fn zmtp(b: &[u8]) -> Option<P2p> {
    (b.len() >= 11 && b[0] == 0xff && b[9] == 0x7f && (1..=4).contains(&b[10]))
        .then(|| P2p { protocol: "zmtp", detail: Some(format!("ZMTP {}", b[10])) })
}

/// ZMTP 3 peers send the signature and major version (11 bytes), then
/// wait for the other side's before the rest of the greeting.
pub fn zmtp_length(b: &[u8]) -> Option<u64> {
    (b.len() >= 10 && b[0] == 0xff && b[9] == 0x7f).then_some(11)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multistream_with_and_without_the_proposed_protocol() {
        let noise = b"\x13/multistream/1.0.0\n\x07/noise\n";
        let p = multistream(noise).unwrap();
        assert_eq!((p.protocol, p.detail.as_deref()), ("libp2p", Some("/noise")));
        assert_eq!(multistream_length(noise), Some(28));
        let p = multistream(&noise[..20]).unwrap();
        assert_eq!(p.detail, None);
        assert_eq!(multistream_length(&noise[..20]), Some(20));
        // A cut or hostile second line gives no detail, never a panic.
        for n in 0..noise.len() {
            let _ = multistream(&noise[..n]);
        }
        assert_eq!(multistream(b"\x13/multistream/1.0.0\n\xff\xff").unwrap().detail, None);
        assert!(multistream(b"\x13/multistream/2.0.0\n").is_none());
    }

    #[test]
    fn drpc_cometbft_and_rlpx() {
        assert_eq!(drpc(b"DRPC!!!1\x16\x03\x01").unwrap().detail.as_deref(), Some("drpc over tls"));
        assert_eq!(drpc(b"DRPC!N!1").unwrap().detail.as_deref(), Some("drpc over noise"));
        assert!(drpc(b"DRPC!!!").is_none());
        let mut key = vec![0x22, 0x0a, 0x20];
        key.extend_from_slice(&[0x5a; 32]);
        assert!(cometbft(&key, 35).is_some());
        assert!(cometbft(&key, 36).is_none(), "a longer first write is something else");
        let mut auth = 400u16.to_be_bytes().to_vec();
        auth.push(0x04);
        auth.extend_from_slice(&[0x33; 399]);
        assert!(rlpx_auth(&auth, 402).is_some());
        assert_eq!(rlpx_length(&auth), Some(402));
        assert!(rlpx_auth(&auth, 500).is_none(), "the size must agree");
        assert!(rlpx_auth(&auth[..2], 2).is_none());
        assert!(zmtp(&[0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3]).is_some());
        assert!(zmtp(&[0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7e, 3]).is_none());
    }
}
