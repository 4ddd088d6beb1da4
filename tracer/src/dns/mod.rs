//! DNS messages captured by the kernel (the first bytes sent to or received
//! from port 53), parsed defensively: every read is bounds-checked, name
//! compression pointers may only point backwards and are limited in number,
//! and a malformed message is an error, never a panic (RFC 1035 §4.1).
//!
//! Also keeps, per process, which address each looked-up name resolved to,
//! so connects and peers can be shown with the name they came from.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Question {
    pub name: String,
    #[serde(rename = "type")]
    pub qtype: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    /// Address for A/AAAA, target name for CNAME, else null.
    pub data: Option<String>,
    pub ttl: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub id: u16,
    pub response: bool,
    /// NOERROR, NXDOMAIN, … (responses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcode: Option<String>,
    pub questions: Vec<Question>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<Answer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The message ends inside the header, a name or a record.
    Truncated,
    /// A label longer than 63 bytes, a name over 255, a bad label type.
    BadName,
    /// Compression pointers that loop or point forwards.
    BadPointer,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Truncated => "truncated message",
            Self::BadName => "malformed name",
            Self::BadPointer => "bad compression pointer",
        })
    }
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, ParseError> {
    b.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]])).ok_or(ParseError::Truncated)
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, ParseError> {
    b.get(at..at + 4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]])).ok_or(ParseError::Truncated)
}

/// Reads a (possibly compressed) name at `at`; returns it and the offset
/// just after it in the original position. Bytes outside [a-zA-Z0-9-_] are
/// written as \DDD, as dig does, so a hostile name stays one printable token.
fn name_at(b: &[u8], mut at: usize) -> Result<(String, usize), ParseError> {
    let mut out = String::new();
    let mut end = None;
    let mut jumps = 0;
    let mut wire_len = 0usize;
    loop {
        let len = *b.get(at).ok_or(ParseError::Truncated)? as usize;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    return Ok((if out.is_empty() { ".".into() } else { out }, end.unwrap_or(at + 1)));
                }
                let label = b.get(at + 1..at + 1 + len).ok_or(ParseError::Truncated)?;
                wire_len += len + 1;
                if wire_len > 255 {
                    return Err(ParseError::BadName);
                }
                if !out.is_empty() {
                    out.push('.');
                }
                for &c in label {
                    if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' {
                        out.push(c as char);
                    } else {
                        out.push_str(&format!("\\{c:03}"));
                    }
                }
                at += 1 + len;
            }
            0xc0 => {
                let target = (u16_at(b, at)? & 0x3fff) as usize;
                // Only backwards, and a bounded number of times: no loops.
                if target >= at || jumps >= 32 {
                    return Err(ParseError::BadPointer);
                }
                jumps += 1;
                end.get_or_insert(at + 2);
                at = target;
            }
            _ => return Err(ParseError::BadName),
        }
    }
}

fn type_name(t: u16) -> String {
    match t {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        65 => "HTTPS".into(),
        255 => "ANY".into(),
        n => format!("TYPE{n}"),
    }
}

fn rcode_name(r: u16) -> String {
    match r {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE{n}"),
    }
}

/// Parses a DNS message. Records past the captured bytes are not an error
/// for answers (the capture may be cut short); a truncated header or
/// question is.
pub fn parse(b: &[u8]) -> Result<Message, ParseError> {
    let id = u16_at(b, 0)?;
    let flags = u16_at(b, 2)?;
    let qdcount = u16_at(b, 4)?;
    let ancount = u16_at(b, 6)?;
    let response = flags & 0x8000 != 0;
    let mut at = 12;
    let mut questions = Vec::new();
    for _ in 0..qdcount.min(16) {
        let (name, next) = name_at(b, at)?;
        let qtype = u16_at(b, next)?;
        at = next + 4;
        questions.push(Question { name, qtype: type_name(qtype) });
    }
    let mut answers = Vec::new();
    for _ in 0..ancount.min(64) {
        let Ok((name, next)) = name_at(b, at) else { break };
        let (Ok(rtype), Ok(ttl), Ok(rdlen)) = (u16_at(b, next), u32_at(b, next + 4), u16_at(b, next + 8))
        else {
            break;
        };
        let rdata_at = next + 10;
        let Some(rdata) = b.get(rdata_at..rdata_at + rdlen as usize) else { break };
        let data = match (rtype, rdata.len()) {
            (1, 4) => Some(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]).to_string()),
            (28, 16) => {
                let mut o = [0u8; 16];
                o.copy_from_slice(rdata);
                Some(Ipv6Addr::from(o).to_string())
            }
            (5, _) => name_at(b, rdata_at).ok().map(|(n, _)| n),
            _ => None,
        };
        answers.push(Answer { name, rtype: type_name(rtype), data, ttl });
        at = rdata_at + rdlen as usize;
    }
    Ok(Message { id, response, rcode: response.then(|| rcode_name(flags & 0xf)), questions, answers })
}

/// Per process: address -> the name looked up that resolved to it. Bounded:
/// the oldest entries go first, and evictions are counted.
#[derive(Default)]
pub struct NameCache {
    by_process: HashMap<u32, HashMap<IpAddr, String>>,
    order: VecDeque<(u32, IpAddr)>,
    /// Entries of `order` whose process was forgotten.
    stale: usize,
    pub evicted: u64,
}

const NAME_CACHE_MAX: usize = 65_536;

impl NameCache {
    /// Learns from a response: every A/AAAA answer maps to the question name.
    pub fn learn(&mut self, tgid: u32, msg: &Message) {
        let Some(question) = msg.questions.first() else { return };
        for a in &msg.answers {
            let Some(ip) = a.data.as_deref().and_then(|d| d.parse::<IpAddr>().ok()) else { continue };
            let names = self.by_process.entry(tgid).or_default();
            if names.insert(ip, question.name.clone()).is_none() {
                self.order.push_back((tgid, ip));
            }
        }
        while self.order.len() > NAME_CACHE_MAX {
            let Some((t, ip)) = self.order.pop_front() else { break };
            if self.by_process.get_mut(&t).and_then(|m| m.remove(&ip)).is_some() {
                self.evicted += 1;
            } else {
                self.stale = self.stale.saturating_sub(1);
            }
        }
    }

    pub fn name(&self, tgid: u32, ip: &IpAddr) -> Option<String> {
        self.by_process.get(&tgid)?.get(ip).cloned()
    }

    /// Names held, for the health record.
    pub fn len(&self) -> usize {
        self.order.len() - self.stale.min(self.order.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets a process's names. Its entries in the eviction order are
    /// left behind and compacted away once they are half of it: a pass
    /// over 65 536 entries per exit made exits quadratic.
    pub fn forget(&mut self, tgid: u32) {
        let Some(names) = self.by_process.remove(&tgid) else { return };
        self.stale += names.len();
        if self.stale > self.order.len() / 2 {
            let by_process = &self.by_process;
            self.order.retain(|(t, ip)| by_process.get(t).is_some_and(|m| m.contains_key(ip)));
            self.stale = 0;
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A query for `name` (type A) with id 0x1234.
    pub fn query(name: &str) -> Vec<u8> {
        let mut b = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            b.push(label.len() as u8);
            b.extend_from_slice(label.as_bytes());
        }
        b.extend_from_slice(&[0, 0, 1, 0, 1]);
        b
    }

    /// The response to `query(name)` with one A record, compressed name.
    pub fn response(name: &str, ip: [u8; 4]) -> Vec<u8> {
        let mut b = query(name);
        b[2] = 0x81;
        b[3] = 0x80;
        b[7] = 1;
        b.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        b.extend_from_slice(&ip);
        b
    }

    #[test]
    fn query_and_response() {
        let q = parse(&query("svc.tracer.test")).unwrap();
        assert!(!q.response);
        assert_eq!(q.questions, vec![Question { name: "svc.tracer.test".into(), qtype: "A".into() }]);
        let r = parse(&response("svc.tracer.test", [10, 1, 2, 3])).unwrap();
        assert_eq!(r.rcode.as_deref(), Some("NOERROR"));
        assert_eq!(r.answers[0].data.as_deref(), Some("10.1.2.3"));
        assert_eq!(r.answers[0].name, "svc.tracer.test");
        let mut cache = NameCache::default();
        cache.learn(7, &r);
        assert_eq!(cache.name(7, &"10.1.2.3".parse().unwrap()).as_deref(), Some("svc.tracer.test"));
        assert_eq!(cache.name(8, &"10.1.2.3".parse().unwrap()), None);
    }

    #[test]
    fn forgotten_processes_leave_the_cache_and_its_count() {
        let r = parse(&response("svc.tracer.test", [10, 1, 2, 3])).unwrap();
        let mut cache = NameCache::default();
        for tgid in 0..1000 {
            cache.learn(tgid, &r);
        }
        for tgid in 0..999 {
            cache.forget(tgid);
        }
        assert_eq!(cache.len(), 1);
        assert!(cache.order.len() < 1000, "stale order entries are compacted away");
        assert_eq!(cache.name(999, &"10.1.2.3".parse().unwrap()).as_deref(), Some("svc.tracer.test"));
        // Filling it again evicts the oldest live entries only, counted.
        for tgid in 1000..1000 + NAME_CACHE_MAX as u32 {
            cache.learn(tgid, &r);
        }
        assert_eq!((cache.len(), cache.evicted), (NAME_CACHE_MAX, 1));
        assert_eq!(cache.name(999, &"10.1.2.3".parse().unwrap()), None);
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        assert_eq!(parse(&[]), Err(ParseError::Truncated));
        assert_eq!(parse(&query("a.b")[..14]), Err(ParseError::Truncated));
        // A pointer to itself, and one pointing forwards.
        let mut looped = query("x");
        looped.truncate(12);
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse(&looped), Err(ParseError::BadPointer));
        let mut fwd = query("x");
        fwd.truncate(12);
        fwd.extend_from_slice(&[0xc0, 40, 0, 1, 0, 1]);
        assert_eq!(parse(&fwd), Err(ParseError::BadPointer));
        // A label type 0x40 (reserved) and an over-long name.
        let mut bad = query("x");
        bad[12] = 0x41;
        assert_eq!(parse(&bad), Err(ParseError::BadName));
        let long = vec!["a".repeat(63); 5].join(".");
        assert_eq!(parse(&query(&long)), Err(ParseError::BadName));
        // Random bytes never panic.
        for bytes in crate::testing::random_inputs(0x9e3779b97f4a7c15u64, 96, 20_000) {
            let _ = parse(&bytes);
        }
    }

    #[test]
    fn odd_bytes_in_names_are_escaped() {
        let mut q = query("ab");
        q[13] = b'\n';
        let m = parse(&q).unwrap();
        assert_eq!(m.questions[0].name, "\\010b");
    }

    #[test]
    fn answers_past_the_capture_are_dropped_not_fatal() {
        let r = response("a.example", [1, 2, 3, 4]);
        let m = parse(&r[..r.len() - 2]).unwrap();
        assert!(m.answers.is_empty());
        assert_eq!(m.questions[0].name, "a.example");
    }
}
