//! The JSON the mappings read and write: a tree that borrows its strings
//! from the native record's text and keeps each object's members in one
//! vector. Parsing into `serde_json::Value` and building another Value
//! allocated for every key, string and map node, and cost several times
//! what writing the native record does; this allocates once per object or
//! array. Its semantics are Value's (a duplicate key reads as the last
//! value, members are written in key order, numbers are serde_json's
//! `Number`), so events come out byte for byte as Value wrote them.

use std::{borrow::Cow, fmt};

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, MapAccess, SeqAccess, Visitor},
    ser::{SerializeMap, SerializeSeq},
};
use serde_json::Number;

#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Obj<'a>),
    /// JSON text already written, copied out as it is: the leaves of a
    /// kept process part (`Obj::into_written`), never made by reading.
    Written(Box<str>),
    /// An object of a kept process part: its members, for another object
    /// to merge into, and its text, copied out whole where none does.
    Kept(Box<(Obj<'static>, Box<str>)>),
}

/// An object's members. Reading appends them as they come (a duplicate key
/// reads as its last value); `insert` replaces a key's value; `sort` puts
/// them in key order for writing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Obj<'a>(Vec<(Cow<'a, str>, Json<'a>)>);

impl<'a> Obj<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The last member named `key`; objects are small, so a scan beats a search.
    fn find(&self, key: &str) -> Option<usize> {
        self.0.iter().rposition(|(k, _)| same_key(k, key))
    }

    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.find(key).map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_some()
    }

    /// Sets `key`, replacing what it held.
    pub fn insert(&mut self, key: impl Into<Cow<'a, str>>, value: Json<'a>) {
        *self.slot(key) = value;
    }

    /// The value at `key`, made a null first if there was none.
    pub fn slot(&mut self, key: impl Into<Cow<'a, str>>) -> &mut Json<'a> {
        let key = key.into();
        let i = self.find(&key).unwrap_or_else(|| {
            // Mapped objects have a few to a dozen members: room for eight
            // at once, not four, then eight, then sixteen.
            if self.0.capacity() == 0 {
                self.0.reserve_exact(8);
            }
            self.0.push((key, Json::Null));
            self.0.len() - 1
        });
        &mut self.0[i].1
    }

    /// An object of `members` as read: a duplicate key is kept, and
    /// `Json::sort` resolves it to the last value, as reading does.
    pub fn from_members(members: Vec<(Cow<'a, str>, Json<'a>)>) -> Self {
        Self(members)
    }

    pub fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every member, duplicates included.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Json<'a>)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }
}

/// Key equality, compared by length and first byte before the bytes: the
/// keys of one object mostly differ there, and a call to memcmp for each
/// member scanned cost more than the scan.
#[inline]
fn same_key(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.as_bytes().first() == b.as_bytes().first() && a == b
}

impl<'a> Json<'a> {
    /// The member `key` of an object; none for anything else.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.as_object()?.get(key)
    }

    pub fn as_object(&self) -> Option<&Obj<'a>> {
        match self {
            Self::Object(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json<'a>]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Self::Object(_))
    }

    /// The members of an object, kept or not, for merging.
    fn members(&self) -> Option<&Obj<'_>> {
        match self {
            Self::Object(m) => Some(m),
            Self::Kept(k) => Some(&k.0),
            _ => None,
        }
    }

    /// Every object's members in key order (byte order, as Value's BTreeMap
    /// keeps them), each key once with the last value read, for writing.
    pub fn sort(&mut self) {
        match self {
            Self::Object(m) => m.sort(),
            Self::Array(a) => a.iter_mut().for_each(Self::sort),
            _ => {}
        }
    }
}

impl Json<'_> {
    /// Appends the compact JSON text of this value, as serde_json writes it
    /// (members in the order they are in: `sort` first for Value's order).
    /// Straight into the buffer, and a string needing no escape (nearly
    /// all) is copied whole, found so eight bytes at a time, where
    /// serde_json's writer looks up each byte.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Self::Null => out.extend_from_slice(b"null"),
            Self::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            // Numbers as serde_json formats them (itoa, ryu); a Vec never fails.
            Self::Number(n) => serde_json::to_writer(&mut *out, n).expect("writing to memory"),
            Self::String(s) => write_str(out, s),
            Self::Written(t) => out.extend_from_slice(t.as_bytes()),
            Self::Kept(k) => out.extend_from_slice(k.1.as_bytes()),
            Self::Array(a) => {
                out.push(b'[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    v.write_json(out);
                }
                out.push(b']');
            }
            // Merged with nothing: the members as they are.
            Self::Object(m) => m.write_merged(&Obj::new(), out),
        }
    }
}

impl Obj<'_> {
    /// `Json::sort` of this object.
    pub fn sort(&mut self) {
        self.0.sort_by(|(a, _), (b, _)| a.cmp(b));
        self.0.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(&mut later.1, &mut kept.1);
            }
            same
        });
        self.0.iter_mut().for_each(|(_, v)| v.sort());
    }

    /// Appends this object merged with `under`, both sorted (`Json::sort`):
    /// members of either in key order; where both have a key, two objects
    /// are merged the same way and otherwise this one's value is written.
    /// What putting every value of `under` first and this one's after would
    /// have made, without building it.
    pub fn write_merged(&self, under: &Obj, out: &mut Vec<u8>) {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let (a, b) = (&self.0, &under.0);
        let (mut i, mut j) = (0, 0);
        out.push(b'{');
        while i < a.len() || j < b.len() {
            let order = match (a.get(i), b.get(j)) {
                (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
                (Some(_), None) => Less,
                _ => Greater,
            };
            let ((key, value), below) = match order {
                Less => (&a[i], None),
                Greater => (&b[j], None),
                Equal => (&a[i], Some(&b[j].1)),
            };
            if i + j > 0 {
                out.push(b',');
            }
            i += usize::from(order != Greater);
            j += usize::from(order != Less);
            write_str(out, key);
            out.push(b':');
            match (value.members(), below.and_then(Json::members)) {
                (Some(m), Some(u)) => m.write_merged(u, out),
                _ => value.write_json(out),
            }
        }
        out.push(b'}');
    }

    /// The same members, owned, every value already written: leaves as
    /// `Json::Written`, objects as `Json::Kept` (with their members, for
    /// merging): what is kept to be written many times is escaped once.
    pub fn into_written(self) -> Obj<'static> {
        let written = |v: Json| -> Json<'static> {
            match v {
                Json::Object(m) => {
                    let m = m.into_written();
                    let mut text = Vec::new();
                    m.write_merged(&Obj::new(), &mut text);
                    Json::Kept(Box::new((m, String::from_utf8(text).expect("JSON text is UTF-8").into())))
                }
                Json::Written(t) => Json::Written(t),
                Json::Kept(k) => Json::Kept(k),
                leaf => {
                    let mut text = Vec::new();
                    leaf.write_json(&mut text);
                    Json::Written(String::from_utf8(text).expect("JSON text is UTF-8").into())
                }
            }
        };
        Obj(self.0.into_iter().map(|(k, v)| (Cow::Owned(k.into_owned()), written(v))).collect())
    }
}

/// `s` as a JSON string: copied whole between quotes when nothing in it
/// needs an escape, else through serde_json's escaping. An event writes
/// some sixty strings, most of them keys of a few bytes: those are copied
/// with two overlapping word stores, not a call to memcpy each.
fn write_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    if needs_escape(b) {
        serde_json::to_writer(&mut *out, s).expect("writing to memory");
        return;
    }
    let (len, n) = (out.len(), b.len());
    out.reserve(n + 2);
    // SAFETY: `n + 2` bytes were reserved past `len`; every byte up to the
    // new length is written before it is set, and the word stores fall
    // within the first `n` bytes after the opening quote.
    unsafe {
        let dst = out.as_mut_ptr().add(len);
        dst.write(b'"');
        let body = dst.add(1);
        match n {
            8..=16 => copy_by_two_words::<u64>(b.as_ptr(), body, n),
            4..=7 => copy_by_two_words::<u32>(b.as_ptr(), body, n),
            _ => std::ptr::copy_nonoverlapping(b.as_ptr(), body, n),
        }
        body.add(n).write(b'"');
        out.set_len(len + n + 2);
    }
}

/// Copies `n` bytes, one to two words of `W`, as two words that overlap:
/// the first and the last.
///
/// # Safety
/// `src` is readable and `dst` writable for `n` bytes, `n` at least one `W`.
#[inline(always)]
unsafe fn copy_by_two_words<W: Copy>(src: *const u8, dst: *mut u8, n: usize) {
    let w = size_of::<W>();
    // SAFETY: both words lie within the `n` bytes, as the caller promises.
    unsafe {
        let (head, tail) = (src.cast::<W>().read_unaligned(), src.add(n - w).cast::<W>().read_unaligned());
        dst.cast::<W>().write_unaligned(head);
        dst.add(n - w).cast::<W>().write_unaligned(tail);
    }
}

/// Whether `b` holds a byte JSON escapes: a control character, `"` or `\`
/// (serde_json escapes those only). Eight bytes at a time: a byte below
/// 0x20, or equal to one of the two, sets its lane's top bit. The tail is
/// the string's last eight bytes again, and a string of four to seven (most
/// keys) its first and last four: loads that overlap test some bytes twice,
/// where a byte loop cost more than the rest of the writing.
fn needs_escape(b: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let zero_in = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let escapes = |v: u64| {
        let below_space = v.wrapping_sub(ONES * 0x20) & !v & HIGH;
        below_space | zero_in(v ^ (ONES * b'"' as u64)) | zero_in(v ^ (ONES * b'\\' as u64)) != 0
    };
    let at8 = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().expect("eight bytes"));
    let at4 = |i: usize| u64::from(u32::from_ne_bytes(b[i..i + 4].try_into().expect("four bytes")));
    let n = b.len();
    match n {
        8.. => (0..n / 8).any(|c| escapes(at8(c * 8))) || (!n.is_multiple_of(8) && escapes(at8(n - 8))),
        4..=7 => escapes(at4(0) | at4(n - 4) << 32),
        _ => b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\'),
    }
}

impl<'a> From<&'a str> for Json<'a> {
    fn from(s: &'a str) -> Self {
        Self::String(Cow::Borrowed(s))
    }
}

impl From<String> for Json<'_> {
    fn from(s: String) -> Self {
        Self::String(Cow::Owned(s))
    }
}

impl From<bool> for Json<'_> {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

macro_rules! from_number {
    ($($t:ty),*) => {$(
        impl From<$t> for Json<'_> {
            fn from(n: $t) -> Self {
                Self::Number(n.into())
            }
        }
    )*};
}
from_number!(u8, i32, u64, usize, i64);

impl<'a, T: Into<Json<'a>>> From<Vec<T>> for Json<'a> {
    fn from(items: Vec<T>) -> Self {
        Self::Array(items.into_iter().map(Into::into).collect())
    }
}

impl<'a> From<Obj<'a>> for Json<'a> {
    fn from(m: Obj<'a>) -> Self {
        Self::Object(m)
    }
}

impl<'a, K: Into<Cow<'a, str>>> FromIterator<(K, Json<'a>)> for Obj<'a> {
    fn from_iter<I: IntoIterator<Item = (K, Json<'a>)>>(items: I) -> Self {
        let mut m = Self::new();
        items.into_iter().for_each(|(k, v)| m.insert(k, v));
        m
    }
}

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => s.serialize_unit(),
            Self::Bool(b) => s.serialize_bool(*b),
            Self::Number(n) => n.serialize(s),
            Self::String(v) => s.serialize_str(v),
            Self::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                a.iter().try_for_each(|v| seq.serialize_element(v))?;
                seq.end()
            }
            Self::Object(m) => {
                let mut map = s.serialize_map(Some(m.0.len()))?;
                m.iter().try_for_each(|(k, v)| map.serialize_entry(k, v))?;
                map.end()
            }
            Self::Written(t) => {
                serde_json::from_str::<serde_json::Value>(t).map_err(serde::ser::Error::custom)?.serialize(s)
            }
            Self::Kept(k) => Self::Object(k.0.clone()).serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(n.into())
    }

    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(n.into())
    }

    fn visit_f64<E>(self, n: f64) -> Result<Self::Value, E> {
        Ok(Number::from_f64(n).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(s.into())
    }

    // Strings with escapes cannot be borrowed.
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(s.to_string().into())
    }

    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(s.into())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Json::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut m = Obj(Vec::with_capacity(8));
        while let Some(Key(k)) = map.next_key()? {
            m.0.push((k, map.next_value()?));
        }
        Ok(Json::Object(m))
    }
}

/// An object key, borrowed where it has no escapes (serde's own `Cow`
/// always copies).
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(s)))
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }

            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// Read, sorted and written as Value reads and writes it: key order,
    /// the last of duplicate keys, numbers, escapes; `write_json` writes
    /// what serde_json does.
    #[test]
    fn round_trips_as_value_does() {
        for text in [
            r#"{"b": 1, "a": [true, null, -2, 3.5, 1e300, -0], "a": {"z": "\u00e9\n\"", "y": {}}}"#,
            r#"[18446744073709551615, -9223372036854775808, 0.1, "x\/y", "\ud83d\ude00"]"#,
            r#""plain""#,
            "null",
        ] {
            let mut ours: Json = serde_json::from_str(text).unwrap();
            ours.sort();
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(
                serde_json::to_string(&ours).unwrap(),
                serde_json::to_string(&value).unwrap(),
                "{text}"
            );
        }
        for text in [
            r#"{"b": 1, "a": [true, null, -2, 3.5, 1e300, -0], "a": {"z": "\u00e9\n\"", "y": {}}}"#,
            r#"["x\/y", "\ud83d\ude00", "tab\there", "0123456\"89", "01234567\\", "\u001f", "\u007f", "ok é"]"#,
        ] {
            let mut ours: Json = serde_json::from_str(text).unwrap();
            ours.sort();
            let mut written = Vec::new();
            ours.write_json(&mut written);
            assert_eq!(String::from_utf8(written).unwrap(), serde_json::to_string(&ours).unwrap(), "{text}");
        }
        let borrowed: Json = serde_json::from_str(r#"{"k": "v"}"#).unwrap();
        assert!(matches!(borrowed.get("k"), Some(Json::String(Cow::Borrowed("v")))));
    }

    /// The word-at-a-time test finds every byte that needs an escape at
    /// every position of strings of every length up to three words, and
    /// none in strings without one (bytes just beside the escaped ranges).
    #[test]
    fn escapes_are_found_at_every_position() {
        let bytewise = |b: &[u8]| b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
        for len in 0..=24 {
            for fill in [b' ', b'a', b'!', b'#', b'[', b']', 0x7f, 0xff] {
                let clean = vec![fill; len];
                assert!(!needs_escape(&clean), "{len} × {fill:#x}");
                for at in 0..len {
                    for bad in (0..0x20).chain([b'"', b'\\']) {
                        let mut b = clean.clone();
                        b[at] = bad;
                        assert_eq!(needs_escape(&b), bytewise(&b), "{len} × {fill:#x}, {bad:#x} at {at}");
                    }
                }
            }
        }
    }

    /// Strings of every length a word copy covers, and either side of it,
    /// written as serde_json writes them, after whatever came before.
    #[test]
    fn strings_of_every_length_are_written_as_serde_json_writes_them() {
        let text: String = "abcdefghijklmnopqrstuvwxyz0123456789éü-_/.:".chars().cycle().take(60).collect();
        for len in 0..=40 {
            let s: String = text.chars().take(len).collect();
            for with in ["", "\"", "\n"] {
                let s = format!("{s}{with}");
                let mut out = b"[1,".to_vec();
                write_str(&mut out, &s);
                assert_eq!(out, format!("[1,{}", serde_json::to_string(&s).unwrap()).into_bytes(), "{s:?}");
            }
        }
    }

    #[test]
    fn a_borrowed_string_stays_borrowed() {
        let borrowed: Json = serde_json::from_str(r#"{"k": "v"}"#).unwrap();
        assert!(matches!(borrowed.get("k"), Some(Json::String(Cow::Borrowed("v")))));
    }
}
