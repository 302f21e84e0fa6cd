//! One event as a queue chunk keeps it: its CEF line and type label, and — since chunk format
//! 2 — what the live set needs to tell the SIEM later that the indicator expired, was revoked
//! or is still live: what the event was ([`Kind`]), the indicator's dedup key (which events
//! are versions of one indicator), its `last_seen` (when it expires), its `id` and, when the
//! line carries a cut copy of the value, the whole value (for `indicators export`).
//!
//! Layouts, per event, all integers little-endian:
//!
//! | format | fields |
//! |---|---|
//! | 1 | label length u16, label, CEF length u32, CEF |
//! | 2 | a head byte, then what it says is there, then format 1's fields |
//!
//! The head byte: bits 0–2 the [`Kind`]; bit 3 the id is a canonical UUID, stored as its 16
//! bytes (the key is then not stored: it is the hash of that id); bit 4 the key (u64) and the
//! id as text (length u16, bytes; empty when the indicator has none) follow; bit 5 the whole
//! value follows (length u32, bytes); bit 6 `last_seen` follows (epoch ms, i64). The SOC
//! Defenders API gives every indicator a UUID, so a typical event costs 25 bytes besides its
//! line: each byte stored costs ~2.5 ns of the backfill's CPU.
//!
//! Format 1 chunks were written before the live set existed; their events read as
//! [`Kind::Legacy`]. Records are checked when read: a damaged one is an error, never a panic.

use crate::encode::cef::prefix_within;

/// The chunk format this release writes.
pub const FORMAT: i64 = 2;

/// What an event tells the SIEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The first version of an indicator sent (or the first since it stopped being live).
    Add,
    /// A newer version of a live indicator.
    Update,
    /// A live indicator's `last_seen` is older than its lifetime.
    Expire,
    /// A live indicator became unwanted.
    Revoke,
    /// A live indicator sent again, for SIEM lists whose entries age out.
    Refresh,
    /// An addition or update queued by a release without the live set (chunk format 1): it
    /// is delivered like any other, but never joins the live set.
    Legacy,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Add => 0,
            Kind::Update => 1,
            Kind::Expire => 2,
            Kind::Revoke => 3,
            Kind::Refresh => 4,
            Kind::Legacy => 7,
        }
    }

    fn from_code(c: u8) -> Option<Kind> {
        Some(match c {
            0 => Kind::Add,
            1 => Kind::Update,
            2 => Kind::Expire,
            3 => Kind::Revoke,
            4 => Kind::Refresh,
            7 => Kind::Legacy,
            _ => return None,
        })
    }
}

/// An indicator's `id` as a record keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Id<'a> {
    /// A canonical (lowercase, hyphenated) UUID, as its 16 bytes.
    Uuid([u8; 16]),
    /// Any other id as given; empty when the indicator has none.
    Text(&'a str),
}

impl Id<'_> {
    /// `s` as a UUID when it is one in canonical form (so that it prints back byte for byte).
    pub fn uuid(s: &str) -> Option<[u8; 16]> {
        let b = s.as_bytes();
        if b.len() != 36 {
            return None;
        }
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut i = 0;
        while i < 36 {
            if matches!(i, 8 | 13 | 18 | 23) {
                if b[i] != b'-' {
                    return None;
                }
                i += 1;
                continue;
            }
            let hex = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            out[n] = (hex(b[i])? << 4) | hex(b[i + 1])?;
            n += 1;
            i += 2;
        }
        Some(out)
    }
}

impl std::fmt::Display for Id<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Id::Text(s) => f.write_str(s),
            Id::Uuid(b) => {
                for (i, byte) in b.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
        }
    }
}

const UUID_ID: u8 = 1 << 3;
const KEY_AND_TEXT_ID: u8 = 1 << 4;
const VALUE: u8 = 1 << 5;
const LAST_SEEN: u8 = 1 << 6;

/// One event's fields, borrowed from wherever they are (a page being committed, or a blob).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: Kind,
    /// The indicator's dedup key; `None` when read back from a record whose id is a UUID (the
    /// key is the hash of that id, see `Keyer::key_of_id`) and for [`Kind::Legacy`] events
    /// of format 1.
    pub key: Option<u64>,
    /// The indicator's `last_seen`, epoch milliseconds.
    pub last_seen_ms: Option<i64>,
    pub id: Id<'a>,
    /// The whole value when the line holds a cut copy of it, else empty.
    pub value: &'a str,
    /// The type as the source spelled it (the RFC 5424 MSGID).
    pub label: &'a str,
    pub cef: &'a str,
}

impl<'a> Record<'a> {
    /// An addition or update with no live-set fields (see [`Kind::Legacy`]).
    pub fn legacy(label: &'a str, cef: &'a str) -> Record<'a> {
        Record {
            kind: Kind::Legacy,
            key: None,
            last_seen_ms: None,
            id: Id::Text(""),
            value: "",
            label,
            cef,
        }
    }

    /// Appends the record to a format [`FORMAT`] blob. Lengths are clamped at their field's
    /// limit on a character boundary, never wrapped (no real field comes near them: values
    /// and lines are capped far below).
    pub fn write(&self, buf: &mut Vec<u8>) {
        let uuid = match self.id {
            Id::Uuid(b) => Some(b),
            Id::Text(s) => Id::uuid(s),
        };
        let mut head = self.kind.code();
        head |= if uuid.is_some() {
            UUID_ID
        } else {
            KEY_AND_TEXT_ID
        };
        if !self.value.is_empty() {
            head |= VALUE;
        }
        if self.last_seen_ms.is_some() {
            head |= LAST_SEEN;
        }
        buf.push(head);
        match (uuid, self.id) {
            (Some(b), _) => buf.extend_from_slice(&b),
            (None, id) => {
                buf.extend_from_slice(&self.key.unwrap_or(0).to_le_bytes());
                let text = if let Id::Text(s) = id { s } else { "" };
                let text = prefix_within(text, u16::MAX as usize);
                buf.extend_from_slice(&(text.len() as u16).to_le_bytes());
                buf.extend_from_slice(text.as_bytes());
            }
        }
        if !self.value.is_empty() {
            let value = prefix_within(self.value, u32::MAX as usize);
            buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
            buf.extend_from_slice(value.as_bytes());
        }
        if let Some(ms) = self.last_seen_ms {
            buf.extend_from_slice(&ms.to_le_bytes());
        }
        let label = prefix_within(self.label, u16::MAX as usize);
        buf.extend_from_slice(&(label.len() as u16).to_le_bytes());
        buf.extend_from_slice(label.as_bytes());
        let line = prefix_within(self.cef, u32::MAX as usize);
        buf.extend_from_slice(&(line.len() as u32).to_le_bytes());
        buf.extend_from_slice(line.as_bytes());
    }

    /// The CEF bytes [`Record::write`] stores (what the queue's byte total counts).
    pub fn cef_len(&self) -> usize {
        prefix_within(self.cef, u32::MAX as usize).len()
    }
}

/// Why a blob cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    Truncated,
    NotUtf8,
    UnknownKind(u8),
    BadHead(u8),
    UnknownFormat(i64),
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Truncated => f.write_str("truncated record"),
            Damage::NotUtf8 => f.write_str("invalid UTF-8"),
            Damage::UnknownKind(k) => write!(f, "unknown event kind {k}"),
            Damage::BadHead(h) => write!(f, "impossible record head {h:#04x}"),
            Damage::UnknownFormat(v) => write!(f, "unknown chunk format {v}"),
        }
    }
}

/// Walks a chunk blob of either format, one record at a time, in order.
pub struct Reader<'a> {
    blob: &'a [u8],
    format: i64,
}

impl<'a> Reader<'a> {
    pub fn new(blob: &'a [u8], format: i64) -> Result<Reader<'a>, Damage> {
        if format != 1 && format != FORMAT {
            return Err(Damage::UnknownFormat(format));
        }
        Ok(Reader { blob, format })
    }

    /// What is left of the blob (the records not read yet).
    pub fn rest(&self) -> &'a [u8] {
        self.blob
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Damage> {
        if self.blob.len() < n {
            return Err(Damage::Truncated);
        }
        let (head, rest) = self.blob.split_at(n);
        self.blob = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Damage> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn text(&mut self, n: usize) -> Result<&'a str, Damage> {
        std::str::from_utf8(self.take(n)?).map_err(|_| Damage::NotUtf8)
    }

    fn short_text(&mut self) -> Result<&'a str, Damage> {
        let n = u16::from_le_bytes(self.array()?);
        self.text(n as usize)
    }

    fn long_text(&mut self) -> Result<&'a str, Damage> {
        let n = u32::from_le_bytes(self.array()?);
        self.text(n as usize)
    }

    /// The next record, or `None` at the end of the blob.
    pub fn next_record(&mut self) -> Result<Option<Record<'a>>, Damage> {
        if self.blob.is_empty() {
            return Ok(None);
        }
        let mut r = Record::legacy("", "");
        if self.format == FORMAT {
            let [head] = self.array()?;
            r.kind = Kind::from_code(head & 7).ok_or(Damage::UnknownKind(head & 7))?;
            match head & (UUID_ID | KEY_AND_TEXT_ID) {
                UUID_ID => r.id = Id::Uuid(self.array()?),
                KEY_AND_TEXT_ID => {
                    r.key = Some(u64::from_le_bytes(self.array()?));
                    r.id = Id::Text(self.short_text()?);
                }
                _ => return Err(Damage::BadHead(head)),
            }
            if head & VALUE != 0 {
                r.value = self.long_text()?;
            }
            if head & LAST_SEEN != 0 {
                r.last_seen_ms = Some(i64::from_le_bytes(self.array()?));
            }
            if head & 0x80 != 0 {
                return Err(Damage::BadHead(head));
            }
        }
        r.label = self.short_text()?;
        r.cef = self.long_text()?;
        Ok(Some(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "5f0c6a2e-1d2b-4c3a-9e8f-0a1b2c3d4e5f";

    fn record(kind: Kind) -> Record<'static> {
        Record {
            kind,
            key: Some(0x0123_4567_89ab_cdef),
            last_seen_ms: Some(1_748_781_000_000),
            id: Id::Text("ioc-1"),
            value: "",
            label: "ipv4",
            cef: "CEF:0|V|P|1|ipv4|Malicious IPv4 Indicator|5|src=192.0.2.1",
        }
    }

    fn read_all(blob: &[u8]) -> Vec<Record<'_>> {
        let mut reader = Reader::new(blob, FORMAT).unwrap();
        let mut out = Vec::new();
        while let Some(r) = reader.next_record().unwrap() {
            out.push(r);
        }
        out
    }

    #[test]
    fn every_kind_and_field_reads_back_as_written() {
        let mut blob = Vec::new();
        let mut written = Vec::new();
        for kind in [
            Kind::Add,
            Kind::Update,
            Kind::Expire,
            Kind::Revoke,
            Kind::Refresh,
            Kind::Legacy,
        ] {
            let mut r = record(kind);
            if kind == Kind::Revoke {
                r.last_seen_ms = None;
                r.id = Id::Text("");
                r.value = "https://example.org/ä/very/long";
            }
            r.write(&mut blob);
            written.push(r);
        }
        assert_eq!(read_all(&blob), written);
    }

    #[test]
    fn a_canonical_uuid_id_is_kept_in_16_bytes_without_the_key_and_prints_back_the_same() {
        let mut text_id = record(Kind::Add);
        text_id.id = Id::Text("5F0C6A2E-1D2B-4C3A-9E8F-0A1B2C3D4E5F"); // not canonical
        let mut uuid_id = record(Kind::Add);
        uuid_id.id = Id::Text(UUID);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        text_id.write(&mut a);
        uuid_id.write(&mut b);
        assert_eq!(a.len() - b.len(), 8 + 2 + 36 - 16);
        let back = read_all(&b)[0];
        assert_eq!(back.key, None, "derived from the id, not stored");
        assert_eq!(back.id.to_string(), UUID);
        assert_eq!((back.label, back.cef), (uuid_id.label, uuid_id.cef));
        assert_eq!(read_all(&a)[0], text_id);
        for not_uuid in ["", "ioc-1", &UUID[1..], &format!("{}g", &UUID[..35])] {
            assert_eq!(Id::uuid(not_uuid), None, "{not_uuid}");
        }
    }

    #[test]
    fn a_format_1_blob_reads_as_legacy_events() {
        let mut blob = Vec::new();
        for (label, cef) in [("ipv4", "line a"), ("url", "line ü")] {
            blob.extend_from_slice(&(label.len() as u16).to_le_bytes());
            blob.extend_from_slice(label.as_bytes());
            blob.extend_from_slice(&(cef.len() as u32).to_le_bytes());
            blob.extend_from_slice(cef.as_bytes());
        }
        let mut reader = Reader::new(&blob, 1).unwrap();
        let a = reader.next_record().unwrap().unwrap();
        assert_eq!(a, Record::legacy("ipv4", "line a"));
        let b = reader.next_record().unwrap().unwrap();
        assert_eq!(b, Record::legacy("url", "line ü"));
        assert_eq!(reader.next_record().unwrap(), None);
    }

    #[test]
    fn damage_is_an_error_at_every_cut_and_for_impossible_heads_and_formats() {
        let mut blob = Vec::new();
        record(Kind::Add).write(&mut blob);
        for cut in 1..blob.len() {
            let mut reader = Reader::new(&blob[..cut], FORMAT).unwrap();
            assert!(reader.next_record().is_err(), "cut at {cut}");
        }
        for (head, damage) in [
            (5, Damage::UnknownKind(5)),
            (
                KEY_AND_TEXT_ID | UUID_ID,
                Damage::BadHead(KEY_AND_TEXT_ID | UUID_ID),
            ),
            (0, Damage::BadHead(0)),
        ] {
            let mut bad = blob.clone();
            bad[0] = head;
            assert_eq!(
                Reader::new(&bad, FORMAT).unwrap().next_record(),
                Err(damage)
            );
        }
        assert!(matches!(
            Reader::new(&blob, 3),
            Err(Damage::UnknownFormat(3))
        ));
    }
}
