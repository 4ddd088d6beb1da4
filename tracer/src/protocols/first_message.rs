//! Joining a connection's first sends into its first message. The kernel
//! reports each of a new connection's first sends (up to
//! `tracer_common::FIRST_BYTES_SENDS`, `FIRST_BYTES_MAX` bytes in all) and
//! marks the one after which it stops; a message is whole here when its
//! own framing says so (a line's newline, a TLS record's length, a Bitcoin
//! or Monero header's payload length), when the kernel stopped, or when no
//! further send came within `WAIT_NS`. Sends that come after a message was
//! found whole are not part of it and are dropped quietly.

use std::collections::HashMap;

/// How long a message that is not yet whole waits for its next send.
pub const WAIT_NS: u64 = 500_000_000;

/// A first message, as joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<H> {
    /// The record header of the first send (its time, its process).
    pub header: H,
    pub fd: i32,
    /// Bytes the sends carried in all (may exceed `data`).
    pub bytes: u64,
    /// What was captured, in order.
    pub data: Vec<u8>,
    pub sends: u32,
    /// A send's record was lost (ring buffer full): `data` stops before it.
    pub gap: bool,
}

struct Pending<H> {
    message: Message<H>,
    /// Bytes the connection had sent when the last send arrived.
    sent: u64,
    first_ns: u64,
    /// Emitted already (its framing said whole); later sends are ignored
    /// until the kernel stops gathering.
    emitted: bool,
    /// The capture fell short of a send: nothing later lines up.
    cut: bool,
}

/// One send as the kernel reported it.
pub struct Send<'a, H> {
    pub header: H,
    pub tgid: u32,
    pub fd: i32,
    /// The connection (the socket hooks report fd -1 and this; the syscall
    /// hooks the fd and 0).
    pub conn: u64,
    pub now_ns: u64,
    pub len: u32,
    pub offset: u32,
    pub last: bool,
    pub payload: &'a [u8],
}

pub struct FirstMessages<H> {
    pending: HashMap<(u32, i32, u64), Pending<H>>,
}

impl<H> Default for FirstMessages<H> {
    fn default() -> Self {
        Self { pending: HashMap::new() }
    }
}

impl<H: Clone> FirstMessages<H> {
    /// Adds one send; returns the messages it completed (a new connection
    /// on the same fd completes the one before it).
    pub fn add(&mut self, send: Send<'_, H>) -> Vec<Message<H>> {
        let key = (send.tgid, send.fd, send.conn);
        let mut done = Vec::new();
        if send.offset == 0 {
            if let Some(old) = self.pending.remove(&key) {
                done.extend(old.finish());
            }
            self.pending.insert(
                key,
                Pending {
                    message: Message {
                        header: send.header,
                        fd: send.fd,
                        bytes: 0,
                        data: Vec::new(),
                        sends: 0,
                        gap: false,
                    },
                    sent: 0,
                    first_ns: send.now_ns,
                    emitted: false,
                    cut: false,
                },
            );
        }
        let Some(p) = self.pending.get_mut(&key) else {
            // A later send whose start was lost (its record dropped): the
            // message has a hole at its start and is not reported.
            return done;
        };
        if !p.emitted {
            let m = &mut p.message;
            if u64::from(send.offset) != p.sent {
                m.gap = true;
                p.cut = true;
            }
            if !p.cut {
                m.data.extend_from_slice(send.payload);
                p.cut = send.payload.len() < send.len as usize;
            }
            m.bytes += u64::from(send.len);
            m.sends += 1;
        }
        p.sent = u64::from(send.offset) + u64::from(send.len);
        let whole = !p.emitted && (p.cut || is_whole(&p.message.data));
        if whole || send.last {
            let p = if send.last { self.pending.remove(&key).expect("present") } else { return_emitted(p) };
            done.extend(p.finish());
        }
        done
    }

    /// Messages that waited longer than `WAIT_NS` for a next send, and
    /// emitted ones the kernel never closed.
    pub fn expired(&mut self, now_ns: u64) -> Vec<Message<H>> {
        let old: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, p)| now_ns.saturating_sub(p.first_ns) >= WAIT_NS)
            .map(|(k, _)| *k)
            .collect();
        old.into_iter().filter_map(|k| self.pending.remove(&k)).filter_map(Pending::finish).collect()
    }

    /// Everything still waiting (at shutdown).
    pub fn drain(&mut self) -> Vec<Message<H>> {
        self.pending.drain().filter_map(|(_, p)| p.finish()).collect()
    }

    pub fn waiting(&self) -> usize {
        self.pending.len()
    }
}

/// Emits a copy of the message and keeps a tombstone so that the kernel's
/// further sends on this connection are not taken for a new message.
fn return_emitted<H: Clone>(p: &mut Pending<H>) -> Pending<H> {
    p.emitted = true;
    Pending { message: p.message.clone(), sent: p.sent, first_ns: p.first_ns, emitted: false, cut: p.cut }
}

impl<H> Pending<H> {
    fn finish(self) -> Option<Message<H>> {
        (!self.emitted).then_some(self.message)
    }
}

/// Whether the bytes so far hold a whole message by its own framing.
pub fn is_whole(b: &[u8]) -> bool {
    match b.first() {
        None => false,
        // TLS record: 5-byte header with a big-endian length.
        Some(0x16) => b.len() >= 5 && b.len() >= 5 + usize::from(u16::from_be_bytes([b[3], b[4]])),
        // A request's head ends at its blank line, its body after the
        // Content-Length it declares (a POST's JSON-RPC method is there).
        // Other text protocols (an SSH banner, SMTP, Redis inline) are
        // lines.
        Some(c) if c.is_ascii_uppercase() => match http_length(b) {
            Some(len) => b.len() as u64 >= len,
            None => b.ends_with(b"\n") && !crate::protocols::starts_http_request(b),
        },
        // JSON-RPC lines: a newline ends them.
        Some(b'{') => b.ends_with(b"\n"),
        _ => {
            if let Some(len) = crate::protocols::length_prefixed(b) {
                b.len() as u64 >= len
            } else {
                false
            }
        }
    }
}

/// An HTTP request's whole length, once its head is complete: the head
/// and the body its Content-Length declares (0 without one).
fn http_length(b: &[u8]) -> Option<u64> {
    let end = b.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&b[..end]);
    // One that does not parse: wait for the kernel or the timeout.
    let body = crate::protocols::http_header(&head, "content-length")
        .map_or(0, |v| v.parse::<u64>().unwrap_or(u64::MAX));
    Some((end as u64).saturating_add(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_is_whole_with_its_body() {
        let head = b"POST /json_rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n";
        assert!(!is_whole(head), "the body is to come");
        let mut whole = head.to_vec();
        whole.extend_from_slice(b"{\"method\":1}\n");
        assert!(!is_whole(&whole[..whole.len() - 1]));
        assert!(is_whole(&whole));
        assert!(is_whole(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!is_whole(b"GET / HTTP/1.1\r\nHost: x\r\n"), "the head goes on");
        assert!(!is_whole(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"));
    }

    fn send<'a>(fd: i32, offset: u32, len: u32, last: bool, payload: &'a [u8]) -> Send<'a, u32> {
        Send { header: offset, tgid: 7, fd, conn: 0, now_ns: 1_000, len, offset, last, payload }
    }

    #[test]
    fn a_line_split_over_sends_is_joined_at_its_newline() {
        let mut m = FirstMessages::default();
        assert!(m.add(send(3, 0, 10, false, b"{\"id\":1,\"m")).is_empty());
        let done = m.add(send(3, 10, 12, false, b"ethod\":\"x\"}\n"));
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].data, b"{\"id\":1,\"method\":\"x\"}\n");
        assert_eq!((done[0].sends, done[0].bytes, done[0].header), (2, 22, 0));
        // The kernel's next send on the connection is not a new message.
        assert!(m.add(send(3, 22, 5, true, b"{\"a\":")).is_empty());
        assert_eq!(m.waiting(), 0);
    }

    #[test]
    fn a_bitcoin_header_then_its_payload() {
        // magic, "version" padded to 12, payload length 4, checksum.
        let mut header = vec![0xf9, 0xbe, 0xb4, 0xd9];
        header.extend_from_slice(b"version\0\0\0\0\0");
        header.extend_from_slice(&4u32.to_le_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        let mut m = FirstMessages::default();
        assert!(m.add(send(4, 0, 24, false, &header)).is_empty());
        let done = m.add(send(4, 24, 4, false, b"\x01\x02\x03\x04"));
        assert_eq!(done[0].data.len(), 28);
    }

    #[test]
    fn a_cut_send_ends_the_message_and_a_lost_one_is_a_gap() {
        let mut m = FirstMessages::default();
        let done = m.add(send(5, 0, 3000, false, &[b'x'; 2047]));
        assert_eq!((done[0].data.len(), done[0].bytes), (2047, 3000));
        let mut m = FirstMessages::default();
        assert!(m.add(send(6, 0, 4, false, b"\x00\x01\x02\x03")).is_empty());
        // The send at offset 4 was lost.
        let done = m.add(send(6, 10, 4, true, b"\x04\x05\x06\x07"));
        assert!(done[0].gap);
        assert_eq!(done[0].data, b"\x00\x01\x02\x03");
        assert_eq!(done[0].bytes, 8);
    }

    #[test]
    fn binary_without_framing_waits_then_expires() {
        let mut m = FirstMessages::default();
        assert!(m.add(send(8, 0, 4, false, b"\x00\x01\x02\x03")).is_empty());
        assert!(m.expired(1_000 + WAIT_NS - 1).is_empty());
        let done = m.expired(1_000 + WAIT_NS);
        assert_eq!(done[0].data, b"\x00\x01\x02\x03");
        assert_eq!(m.waiting(), 0);
    }

    #[test]
    fn a_new_connection_on_the_same_fd_completes_the_old_one() {
        let mut m = FirstMessages::default();
        assert!(m.add(send(9, 0, 2, false, b"\x00\x01")).is_empty());
        let done = m.add(send(9, 0, 2, false, b"\x00\x02"));
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].data, b"\x00\x01");
        assert_eq!(m.drain()[0].data, b"\x00\x02");
    }

    #[test]
    fn tls_records_are_whole_at_their_length() {
        assert!(!is_whole(&[0x16, 3, 1, 0, 4, 1, 0]));
        assert!(is_whole(&[0x16, 3, 1, 0, 2, 1, 0]));
        assert!(!is_whole(&[0x16, 3]));
        assert!(!is_whole(b"GET / HTTP/1.1\r\n"[..10].as_ref()));
    }
}
