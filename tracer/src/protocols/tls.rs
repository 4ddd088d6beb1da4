//! A TLS ClientHello, read as far as the capture goes, and its JA4
//! fingerprint. A miner's TLS hides its messages but not how it says hello:
//! XMRig sends no SNI by default (even to a named pool) and no ALPN, with
//! OpenSSL's default cipher and extension lists.
//!
//! Sources: RFC 8446 §4.1.2 (ClientHello), RFC 6066 §3 (server_name),
//! RFC 7301 (ALPN), RFC 8701 (GREASE), and FoxIO's JA4 specification
//! (github.com/FoxIO-LLC/ja4, `technical_details/JA4.md`).

use serde::Serialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientHello {
    /// The highest version offered: 1.3 from supported_versions, else the
    /// hello's legacy version.
    pub version: &'static str,
    /// The server name asked for (absent: a raw address, or XMRig's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Application protocols offered, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<String>,
    /// Cipher suites and extension types, in order, GREASE left out.
    pub ciphers: Vec<u16>,
    pub extensions: Vec<u16>,
    /// supported_groups (named groups for key exchange).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<u16>,
    #[serde(skip)]
    signature_algorithms: Vec<u16>,
    /// JA4 (TCP). Computed on what was read: a cut hello is marked.
    pub ja4: String,
    /// The capture ended inside the hello: the lists may be short.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cut: bool,
}

/// RFC 8701: 0x0a0a, 0x1a1a, … 0xfafa.
fn grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

fn cap(s: &str) -> String {
    s.chars().take(128).collect()
}

/// Parses a TLS handshake record holding a ClientHello; `None` when the
/// bytes are not one. A capture cut inside the extensions still yields
/// what came before the cut.
pub fn parse(b: &[u8]) -> Option<ClientHello> {
    let mut r = Reader { b, at: 0 };
    if r.u8()? != 0x16 {
        return None;
    }
    r.skip(4)?; // record version, length
    if r.u8()? != 1 {
        return None;
    }
    r.skip(3)?; // handshake length
    let legacy = r.u16()?;
    r.skip(32)?; // random
    let sid = r.u8()? as usize;
    r.skip(sid)?;
    let suites_len = r.u16()? as usize;
    let suites = r.take(suites_len)?;
    let ciphers: Vec<u16> =
        suites.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).filter(|v| !grease(*v)).collect();
    let mut hello = ClientHello {
        version: "",
        sni: None,
        alpn: Vec::new(),
        ciphers,
        extensions: Vec::new(),
        groups: Vec::new(),
        signature_algorithms: Vec::new(),
        ja4: String::new(),
        cut: true,
    };
    let mut versions: Vec<u16> = Vec::new();
    let mut sni_present = false;
    // From here a cut capture still leaves a usable hello.
    let rest = (|| -> Option<()> {
        let comp = r.u8()? as usize;
        r.skip(comp)?;
        let ext_len = r.u16()? as usize;
        let end = r.at + ext_len;
        while r.at < end {
            let ty = r.u16()?;
            let len = r.u16()? as usize;
            if !grease(ty) {
                hello.extensions.push(ty);
            }
            let body = r.take(len)?;
            let mut e = Reader { b: body, at: 0 };
            match ty {
                0x0000 => {
                    sni_present = true;
                    e.skip(2)?;
                    if e.u8()? == 0 {
                        let n = e.u16()? as usize;
                        hello.sni = Some(cap(&String::from_utf8_lossy(e.take(n)?)));
                    }
                }
                0x0010 => {
                    let total = e.u16()? as usize;
                    let mut list = Reader { b: e.take(total)?, at: 0 };
                    while let Some(n) = list.u8() {
                        let Some(name) = list.take(n as usize) else { break };
                        if hello.alpn.len() < 16 {
                            hello.alpn.push(cap(&String::from_utf8_lossy(name)));
                        }
                    }
                }
                0x000a => hello.groups = e.list16(2)?.into_iter().filter(|v| !grease(*v)).collect(),
                0x000d => hello.signature_algorithms = e.list16(2)?,
                0x002b => versions = e.list16(1)?.into_iter().filter(|v| !grease(*v)).collect(),
                _ => {}
            }
        }
        hello.cut = false;
        Some(())
    })();
    let _ = rest;
    let top = versions.iter().copied().max().unwrap_or(legacy);
    hello.version = version_name(top);
    hello.ja4 = ja4(&hello, top, sni_present);
    Some(hello)
}

fn version_name(v: u16) -> &'static str {
    match v {
        0x0304 => "1.3",
        0x0303 => "1.2",
        0x0302 => "1.1",
        0x0301 => "1.0",
        0x0300 => "ssl3",
        _ => "unknown",
    }
}

fn ja4_version(v: u16) -> &'static str {
    match v {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

/// The first 12 hex digits of the SHA-256 of `text`; zeros for nothing.
fn hash12(text: &str, empty: bool) -> String {
    if empty {
        return "000000000000".into();
    }
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

fn hex_list(v: &[u16]) -> String {
    v.iter().map(|x| format!("{x:04x}")).collect::<Vec<_>>().join(",")
}

fn ja4(h: &ClientHello, top: u16, sni: bool) -> String {
    let alpn = match h.alpn.first().map(String::as_bytes) {
        Some(a) if !a.is_empty() => {
            let (first, last) = (a[0], a[a.len() - 1]);
            if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
                format!("{}{}", first as char, last as char)
            } else {
                let hex: String = a.iter().map(|b| format!("{b:02x}")).collect();
                format!("{}{}", &hex[..1], &hex[hex.len() - 1..])
            }
        }
        _ => "00".into(),
    };
    let a = format!(
        "t{}{}{:02}{:02}{}",
        ja4_version(top),
        if sni { 'd' } else { 'i' },
        h.ciphers.len().min(99),
        h.extensions.len().min(99),
        alpn
    );
    let mut ciphers = h.ciphers.clone();
    ciphers.sort_unstable();
    let mut exts: Vec<u16> = h.extensions.iter().copied().filter(|e| *e != 0x0000 && *e != 0x0010).collect();
    exts.sort_unstable();
    let mut c = hex_list(&exts);
    if !h.signature_algorithms.is_empty() {
        c.push('_');
        c.push_str(&hex_list(&h.signature_algorithms));
    }
    format!("{a}_{}_{}", hash12(&hex_list(&ciphers), ciphers.is_empty()), hash12(&c, exts.is_empty()))
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_be_bytes([s[0], s[1]]))
    }
    /// A list of u16 with a `len_bytes`-byte length in front.
    fn list16(&mut self, len_bytes: usize) -> Option<Vec<u16>> {
        let n = if len_bytes == 1 { self.u8()? as usize } else { self.u16()? as usize };
        Some(self.take(n)?.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_default_hello_without_sni_matches_the_published_ja4() {
        // The reference computed this JA4 from the same client (OpenSSL 3.0
        // defaults, no SNI): XMRig's TLS as released.
        let h = parse(&crate::testing::first_bytes_fixture("openssl-s_client-noservername.bin"))
            .expect("a hello");
        assert_eq!(h.ja4, "t13i310900_e8f1e7e78f70_1f22a2ca17c4");
        assert_eq!((h.version, h.sni.as_deref(), h.alpn.len(), h.cut), ("1.3", None, 0, false));
        assert_eq!(h.ciphers.len(), 31);
        assert_eq!(h.extensions, vec![0x0b, 0x0a, 0x23, 0x16, 0x17, 0x0d, 0x2b, 0x2d, 0x33]);
    }

    #[test]
    fn curl_hello_has_sni_and_alpn() {
        let h = parse(&crate::testing::first_bytes_fixture("curl-https-localhost.bin")).expect("a hello");
        assert_eq!(h.sni.as_deref(), Some("localhost"));
        assert_eq!(h.alpn.first().map(String::as_str), Some("h2"));
        assert!(h.ja4.starts_with("t13d"), "{}", h.ja4);
        assert!(h.ja4.ends_with(&h.ja4[h.ja4.len() - 12..]));
    }

    #[test]
    fn a_cut_hello_keeps_what_came_before_the_cut() {
        let full = crate::testing::first_bytes_fixture("openssl-s_client-noservername.bin");
        let h = parse(&full[..150]).expect("the ciphers fit in 150 bytes");
        assert!(h.cut);
        assert_eq!(h.ciphers.len(), 31);
        for n in 0..full.len() {
            let _ = parse(&full[..n]);
        }
    }

    #[test]
    fn grease_is_left_out() {
        assert!(grease(0x0a0a) && grease(0xfafa) && !grease(0x0a1a) && !grease(0x1301));
    }
}
