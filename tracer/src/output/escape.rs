//! Turning kernel bytes (comm, paths, argv: any bytes but NUL) into JSON
//! strings safely and without loss.
//!
//! Valid UTF-8 is kept as is; JSON encoding then escapes control characters
//! (`\u001b`, …), so a hostile name cannot break a line or a terminal.
//! Bytes that are not UTF-8 are written as `\xNN` and, in such a string only,
//! a backslash as `\\`; the record marks the field as escaped, so the original
//! bytes can always be recovered.

use std::borrow::Cow;

/// Returns the string and whether it had to be escaped.
pub fn bytes_to_string(bytes: &[u8]) -> (Cow<'_, str>, bool) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (Cow::Borrowed(s), false),
        Err(_) => (Cow::Owned(escape_invalid(bytes)), true),
    }
}

fn escape_invalid(mut bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 8);
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                push_escaping_backslash(&mut out, s);
                return out;
            }
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                // SAFETY: from_utf8 said these bytes are valid.
                push_escaping_backslash(&mut out, unsafe { std::str::from_utf8_unchecked(valid) });
                let bad = e.error_len().unwrap_or(rest.len());
                for b in &rest[..bad] {
                    out.push_str(&format!("\\x{b:02x}"));
                }
                bytes = &rest[bad..];
            }
        }
    }
}

fn push_escaping_backslash(out: &mut String, s: &str) {
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
}

/// Inverse of the escaping, for replay and for tests.
pub fn unescape(s: &str, escaped: bool) -> Vec<u8> {
    if !escaped {
        return s.as_bytes().to_vec();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else if b[i] == b'\\'
            && b.get(i + 1) == Some(&b'x')
            && let Some(v) = s.get(i + 2..i + 4).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_utf8_passes_untouched() {
        let (s, esc) = bytes_to_string("naïve\\path".as_bytes());
        assert_eq!(s, "naïve\\path");
        assert!(!esc);
    }

    #[test]
    fn invalid_bytes_round_trip() {
        for raw in [&b"a\xff\\b"[..], b"\xc3", b"\xc3(\\x41", b"\x80\x80\x80", b"ok\xe2\x82"] {
            let (s, esc) = bytes_to_string(raw);
            assert!(esc);
            assert!(s.is_ascii() || std::str::from_utf8(s.as_bytes()).is_ok());
            assert_eq!(unescape(&s, true), raw, "{s}");
        }
    }

    #[test]
    fn control_characters_are_escaped_by_json() {
        let (s, _) = bytes_to_string(b"evil\x1b[2J\nname\r");
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains('\n') && !json.contains('\x1b') && !json.contains('\r'));
        assert_eq!(serde_json::from_str::<String>(&json).unwrap().as_bytes(), b"evil\x1b[2J\nname\r");
    }
}
