//! Clear-text credentials in the first bytes of a connection, masked before
//! the bytes go into a record's `preview`: the first write of every new TCP
//! connection on the host is captured, and some of them log in.
//!
//! What is masked: the values of HTTP credential headers (RFC 9110 §11.6.2
//! `Authorization`, §11.7.2 `Proxy-Authorization`, RFC 6265 `Cookie` and
//! `Set-Cookie`, and the common `X-Api-Key`/`X-Auth-Token`); `token=`- and
//! `password=`-like query values; Redis `AUTH` (RESP arrays and inline, and
//! `HELLO … AUTH user pass`); SMTP/POP3 `AUTH mechanism response` (RFC 4954),
//! FTP/POP3 `PASS`, IMAP `LOGIN user pass` and `AUTHENTICATE mechanism
//! response` (RFC 9051). A value cut off by the end of the capture is masked
//! to the end. Masking keeps the length, so offsets in the preview hold.

const HEADERS: &[&[u8]] =
    &[b"authorization", b"proxy-authorization", b"cookie", b"set-cookie", b"x-api-key", b"x-auth-token"];
/// Headers whose value starts with a scheme worth keeping (`Basic`, `Bearer`).
const WITH_SCHEME: &[&[u8]] = &[b"authorization", b"proxy-authorization"];
const SASL: &[&[u8]] = &[
    b"plain",
    b"login",
    b"cram-md5",
    b"digest-md5",
    b"xoauth2",
    b"oauthbearer",
    b"ntlm",
    b"gssapi",
    b"external",
    b"scram-sha-1",
    b"scram-sha-256",
];
const SECRET_KEYS: &[&[u8]] = &[b"token", b"password", b"passwd", b"secret", b"apikey", b"api_key"];

/// A copy of `payload` with secret values replaced by `*`, byte for byte.
pub fn redact(payload: &[u8]) -> Vec<u8> {
    let mut out = payload.to_vec();
    resp(&mut out);
    let mut start = 0;
    while start < out.len() {
        let end = out[start..].iter().position(|b| *b == b'\n').map_or(out.len(), |i| start + i);
        let line_end = if end > start && out[end - 1] == b'\r' { end - 1 } else { end };
        line(&mut out[start..line_end]);
        start = end + 1;
    }
    out
}

fn mask(bytes: &mut [u8]) {
    bytes.fill(b'*');
}

fn is(word: &[u8], name: &[u8]) -> bool {
    word.eq_ignore_ascii_case(name)
}

/// Offset of the first byte after `from` that is not a space or tab.
fn skip_blanks(line: &[u8], from: usize) -> usize {
    line[from..].iter().position(|b| *b != b' ' && *b != b'\t').map_or(line.len(), |i| from + i)
}

/// The end of the word at `from`.
fn word_end(line: &[u8], from: usize) -> usize {
    line[from..].iter().position(|b| *b == b' ').map_or(line.len(), |i| from + i)
}

/// The end of an IMAP string at `from`: quoted (with `\"` escapes) or an atom.
fn imap_string_end(line: &[u8], from: usize) -> usize {
    if line.get(from) != Some(&b'"') {
        return word_end(line, from);
    }
    let mut i = from + 1;
    while i < line.len() {
        match line[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    line.len()
}

fn line(line: &mut [u8]) {
    // An HTTP header.
    if let Some(colon) = line.iter().position(|b| *b == b':') {
        let name = line[..colon].trim_ascii();
        if HEADERS.iter().any(|h| is(name, h)) {
            let mut value = skip_blanks(line, colon + 1);
            if WITH_SCHEME.iter().any(|h| is(name, h)) {
                let end = word_end(line, value);
                if end < line.len() {
                    value = skip_blanks(line, end);
                }
            }
            mask(&mut line[value..]);
            return;
        }
    }
    // A login command: the words before the secret.
    let w0 = word_end(line, 0);
    let at1 = skip_blanks(line, w0);
    let w1 = word_end(line, at1);
    let at2 = skip_blanks(line, w1);
    let first = &line[..w0];
    let second = &line[at1..w1];
    let secret = if is(first, b"AUTH") && at1 < line.len() {
        if SASL.iter().any(|m| is(second, m)) { Some(at2) } else { Some(at1) }
    } else if is(first, b"PASS") && at1 < line.len() {
        Some(at1)
    } else if is(first, b"LOGIN") && at1 < line.len() {
        Some(skip_blanks(line, imap_string_end(line, at1)))
    } else if is(second, b"LOGIN") && at2 < line.len() {
        Some(skip_blanks(line, imap_string_end(line, at2)))
    } else if is(second, b"AUTHENTICATE") && at2 < line.len() {
        Some(skip_blanks(line, word_end(line, at2)))
    } else {
        None
    };
    if let Some(from) = secret {
        mask(&mut line[from..]);
        return;
    }
    query_values(line);
}

/// `access_token=…`, `password=…`: up to the next `&`, `;`, space or end.
fn query_values(line: &mut [u8]) {
    let mut i = 0;
    while let Some(eq) = line[i..].iter().position(|b| *b == b'=').map(|e| i + e) {
        let key_start = line[..eq]
            .iter()
            .rposition(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-'))
            .map_or(0, |k| k + 1);
        let key = &line[key_start..eq];
        let end = line[eq + 1..]
            .iter()
            .position(|b| matches!(b, b'&' | b';' | b' '))
            .map_or(line.len(), |e| eq + 1 + e);
        if SECRET_KEYS.iter().any(|k| key.len() >= k.len() && is(&key[key.len() - k.len()..], k)) {
            mask(&mut line[eq + 1..end]);
        }
        i = eq + 1;
    }
}

/// A RESP length line (`*N\r\n` or `$N\r\n` after its type byte): N and the
/// offset after it; None if cut off or not a length.
fn resp_number(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let digits = buf.get(from..)?.iter().take(10).take_while(|b| b.is_ascii_digit()).count();
    let n = std::str::from_utf8(&buf[from..from + digits]).ok()?.parse().ok()?;
    let end = from + digits;
    (buf.get(end..end + 2)? == b"\r\n").then_some((n, end + 2))
}

/// Redis commands as RESP arrays of bulk strings, pipelined one after another.
fn resp(buf: &mut [u8]) {
    let mut pos = 0;
    while buf.get(pos) == Some(&b'*') {
        let Some((n, mut p)) = resp_number(buf, pos + 1) else { return };
        let mut args: Vec<(usize, usize)> = Vec::new();
        for _ in 0..n.min(64) {
            if buf.get(p) != Some(&b'$') {
                break;
            }
            let Some((len, start)) = resp_number(buf, p + 1) else { break };
            let end = start.saturating_add(len);
            args.push((start, end.min(buf.len())));
            p = end.saturating_add(2);
            if end >= buf.len() {
                break;
            }
        }
        let auth = |i: usize| args.get(i).is_some_and(|&(s, e)| is(&buf[s..e], b"AUTH"));
        // AUTH [user] pass; HELLO proto AUTH user pass.
        let secret = if auth(0) {
            Some(if n >= 3 { 2 } else { 1 })
        } else {
            (1..args.len()).find(|&i| auth(i)).map(|i| i + 2)
        };
        if let Some(&(s, e)) = secret.and_then(|i| args.get(i)) {
            mask(&mut buf[s..e]);
        }
        if args.len() < n || p >= buf.len() {
            return;
        }
        pos = p;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte of `secret` in `msg`, and in every truncation of `msg`,
    /// comes out as `*`; the length never changes.
    fn assert_masked(msg: &[u8], secret: &[u8]) {
        let at = msg.windows(secret.len()).position(|w| w == secret).expect("secret in message");
        for n in 0..=msg.len() {
            let out = redact(&msg[..n]);
            assert_eq!(out.len(), n);
            for i in at..(at + secret.len()).min(n) {
                assert_eq!(
                    out[i],
                    b'*',
                    "byte {i} of {:?} cut at {n}: {:?}",
                    String::from_utf8_lossy(msg),
                    String::from_utf8_lossy(&out)
                );
            }
        }
    }

    #[test]
    fn http_basic_auth_as_curl_sends_it() {
        // curl -u u:hunter2 http://127.0.0.1:9/
        let msg = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:9\r\nAuthorization: Basic dTpodW50ZXIy\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
        assert_eq!(
            redact(msg),
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:9\r\nAuthorization: Basic ************\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"
        );
        assert_masked(msg, b"dTpodW50ZXIy");
    }

    #[test]
    fn other_credential_headers() {
        let msg = b"GET http://example.com/ HTTP/1.1\r\nproxy-authorization: Basic cHJveHk6cHc=\r\n\r\n";
        assert_masked(msg, b"cHJveHk6cHc=");
        let msg = b"POST /api HTTP/1.1\r\nHost: h\r\nCookie: session=9f8e7d; csrftoken=abc\r\n\r\n";
        assert_masked(msg, b"session=9f8e7d; csrftoken=abc");
        let msg = b"GET / HTTP/1.1\nX-Api-Key: sk-live-1234\n\n";
        assert_masked(msg, b"sk-live-1234");
        // Cut in the middle of a token: the rest of the buffer is the value.
        let msg =
            b"GET /v1/models HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIi";
        assert_masked(msg, b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIi");
        assert!(redact(msg).ends_with(b"Authorization: Bearer *****************************"));
    }

    #[test]
    fn redis_auth() {
        assert_eq!(
            redact(b"*2\r\n$4\r\nAUTH\r\n$7\r\nhunter2\r\n"),
            b"*2\r\n$4\r\nAUTH\r\n$7\r\n*******\r\n"
        );
        assert_masked(b"*2\r\n$4\r\nAUTH\r\n$7\r\nhunter2\r\n", b"hunter2");
        // Redis 6 ACL form: the user name stays.
        let msg = b"*3\r\n$4\r\nauth\r\n$7\r\ndefault\r\n$7\r\nhunter2\r\n*1\r\n$4\r\nPING\r\n";
        assert_eq!(
            redact(msg),
            b"*3\r\n$4\r\nauth\r\n$7\r\ndefault\r\n$7\r\n*******\r\n*1\r\n$4\r\nPING\r\n".to_vec()
        );
        assert_masked(msg, b"hunter2");
        let msg = b"*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$5\r\nalice\r\n$7\r\nhunter2\r\n";
        assert_masked(msg, b"hunter2");
        assert_masked(b"AUTH hunter2\r\nPING\r\n", b"hunter2");
    }

    #[test]
    fn mail_and_ftp_logins() {
        assert_masked(b"EHLO client\r\nAUTH PLAIN AHUAaHVudGVyMg==\r\n", b"AHUAaHVudGVyMg==");
        assert_eq!(redact(b"AUTH PLAIN AHUAaHVudGVyMg==\r\n"), b"AUTH PLAIN ****************\r\n");
        assert_masked(b"AUTH LOGIN dXNlcg==\r\n", b"dXNlcg==");
        assert_masked(b"USER anonymous\r\nPASS hunter2\r\n", b"hunter2");
        assert_masked(b"a1 LOGIN alice hunter2\r\n", b"hunter2");
        assert_eq!(redact(b"a1 LOGIN alice hunter2\r\n"), b"a1 LOGIN alice *******\r\n");
        assert_masked(b"A001 login \"alice\" \"hunter 2\"\r\n", b"hunter 2");
        assert_masked(b"a2 AUTHENTICATE PLAIN AGFsaWNlAGh1bnRlcjI=\r\n", b"AGFsaWNlAGh1bnRlcjI=");
    }

    #[test]
    fn query_credentials() {
        let msg = b"GET /v1/x?access_token=abc123&pretty HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_masked(msg, b"abc123");
        assert!(redact(msg).starts_with(b"GET /v1/x?access_token=******&pretty HTTP/1.1\r\n"));
    }

    #[test]
    fn hostile_bytes_keep_their_length() {
        let pieces: [&[u8]; 16] = [
            b"*",
            b"$",
            b"2",
            b"99999999999",
            b"\r\n",
            b"\n",
            b"AUTH",
            b" ",
            b"LOGIN",
            b"\"",
            b"\\",
            b"=",
            b"token",
            b"Authorization:",
            b"a1",
            b"\xff",
        ];
        let mut seed = 0x2545_f491_u32;
        for _ in 0..5000 {
            let mut msg = Vec::new();
            for _ in 0..(seed % 24) {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                msg.extend_from_slice(pieces[(seed >> 16) as usize % pieces.len()]);
            }
            assert_eq!(redact(&msg).len(), msg.len());
        }
    }

    #[test]
    fn everything_else_is_left_alone() {
        for msg in [
            &b"{\"id\":1,\"jsonrpc\":\"2.0\",\"method\":\"login\",\"params\":{\"login\":\"44AF\",\"pass\":\"x\"}}\n"[..],
            b"GET /authorization HTTP/1.1\r\nHost: auth.example\r\nUser-Agent: PASS\r\n\r\n",
            b"*1\r\n$4\r\nPING\r\n",
            b"*2\r\n$3\r\nGET\r\n$4\r\nAUTH\r\n",
            b"PASSIVE\r\nAUTHORS\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"",
            b"\xff\xfe*2\r\n$",
        ] {
            assert_eq!(redact(msg), msg, "{:?}", String::from_utf8_lossy(msg));
        }
    }
}
