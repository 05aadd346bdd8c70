//! Compact binary encodings of what the state machine keeps in sled: key
//! values, history records and watch events, plus the sled key layouts
//! (escaped keys, big-endian revisions) that keep scans in key/revision order.

use bytes::Bytes;

use super::types::{EventKind, KeyValue, Revision, WatchEvent};

/// A record that could not be decoded: the store's data is corrupt.
#[derive(Debug, thiserror::Error)]
#[error("corrupt {what} record")]
pub struct CodecError {
    pub what: &'static str,
}

const ESC: u8 = 0x00;
const ESC_ZERO: u8 = 0xFF;
const TERM: u8 = 0x01;

/// Escapes `key` so that a separator can follow it while keeping byte order
/// and prefixes: 0x00 becomes 0x00 0xFF; the terminator is 0x00 0x01.
pub fn escape_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2);
    for &b in key {
        out.push(b);
        if b == ESC {
            out.push(ESC_ZERO);
        }
    }
    out
}

fn unescape_key(escaped: &[u8]) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut it = escaped.iter();
    while let Some(&b) = it.next() {
        out.push(b);
        if b == ESC && it.next() != Some(&ESC_ZERO) {
            return Err(CodecError { what: "history key" });
        }
    }
    Ok(out)
}

/// The prefix of every history entry of exactly `key`.
pub fn history_key_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = escape_key(key);
    out.extend_from_slice(&[ESC, TERM]);
    out
}

/// History tree key: escaped key, terminator, big-endian revision.
pub fn history_key(key: &[u8], rev: Revision) -> Vec<u8> {
    let mut out = history_key_prefix(key);
    out.extend_from_slice(&rev_bytes(rev));
    out
}

/// Splits a history tree key into (key, revision).
pub fn parse_history_key(raw: &[u8]) -> Result<(Vec<u8>, Revision), CodecError> {
    let err = CodecError { what: "history key" };
    if raw.len() < 10 || raw[raw.len() - 10..raw.len() - 8] != [ESC, TERM] {
        return Err(err);
    }
    let rev = read_rev(&raw[raw.len() - 8..]).ok_or(err)?;
    let key = unescape_key(&raw[..raw.len() - 10])?;
    Ok((key, rev))
}

pub fn rev_bytes(rev: Revision) -> [u8; 8] {
    // Revisions are never negative; the cast keeps ordering for them.
    (rev.max(0) as u64).to_be_bytes()
}

pub fn read_rev(raw: &[u8]) -> Option<Revision> {
    let arr: [u8; 8] = raw.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(arr) as Revision)
}

/// Event tree key: big-endian revision, then the event's position in its txn.
pub fn event_key(rev: Revision, idx: u32) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&rev_bytes(rev));
    out[8..].copy_from_slice(&idx.to_be_bytes());
    out
}

/// TTL index key: big-endian expiry time (ms), then the key.
pub fn ttl_key(expires_at_ms: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&(expires_at_ms.max(0) as u64).to_be_bytes());
    out.extend_from_slice(key);
    out
}

pub fn parse_ttl_key(raw: &[u8]) -> Result<(i64, String), CodecError> {
    let err = || CodecError { what: "ttl key" };
    let at = read_rev(raw).ok_or_else(err)?;
    let key = String::from_utf8(raw[8..].to_vec()).map_err(|_| err())?;
    Ok((at, key))
}

struct Writer(Vec<u8>);

impl Writer {
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(&(b.len() as u32).to_be_bytes());
        self.0.extend_from_slice(b);
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn kv(&mut self, kv: &KeyValue) {
        self.bytes(kv.key.as_bytes());
        self.bytes(&kv.value);
        self.i64(kv.create_revision);
        self.i64(kv.mod_revision);
        self.i64(kv.version);
        match kv.expires_at_ms {
            Some(at) => {
                self.u8(1);
                self.i64(at);
            }
            None => self.u8(0),
        }
    }
    fn opt_kv(&mut self, kv: Option<&KeyValue>) {
        match kv {
            Some(kv) => {
                self.u8(1);
                self.kv(kv);
            }
            None => self.u8(0),
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn err(&self) -> CodecError {
        CodecError { what: self.what }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(self.err());
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn i64(&mut self) -> Result<i64, CodecError> {
        let arr: [u8; 8] = self.take(8)?.try_into().map_err(|_| self.err())?;
        Ok(i64::from_be_bytes(arr))
    }
    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let arr: [u8; 4] = self.take(4)?.try_into().map_err(|_| self.err())?;
        self.take(u32::from_be_bytes(arr) as usize)
    }
    fn kv(&mut self) -> Result<KeyValue, CodecError> {
        let key = String::from_utf8(self.bytes()?.to_vec()).map_err(|_| self.err())?;
        let value = Bytes::copy_from_slice(self.bytes()?);
        let create_revision = self.i64()?;
        let mod_revision = self.i64()?;
        let version = self.i64()?;
        let expires_at_ms = match self.u8()? {
            0 => None,
            _ => Some(self.i64()?),
        };
        Ok(KeyValue { key, value, create_revision, mod_revision, version, expires_at_ms })
    }
    fn opt_kv(&mut self) -> Result<Option<KeyValue>, CodecError> {
        match self.u8()? {
            0 => Ok(None),
            _ => Ok(Some(self.kv()?)),
        }
    }
}

pub fn encode_kv(kv: &KeyValue) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(kv.key.len() + kv.value.len() + 40));
    w.kv(kv);
    w.0
}

pub fn decode_kv(raw: &[u8]) -> Result<KeyValue, CodecError> {
    Reader { buf: raw, what: "key value" }.kv()
}

/// A history record: the key's value as of a revision, `None` for a delete.
pub fn encode_history(kv: Option<&KeyValue>) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    w.opt_kv(kv);
    w.0
}

pub fn decode_history(raw: &[u8]) -> Result<Option<KeyValue>, CodecError> {
    Reader { buf: raw, what: "history" }.opt_kv()
}

pub fn encode_event(ev: &WatchEvent) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    w.u8(match ev.kind {
        EventKind::Put => 0,
        EventKind::Delete => 1,
    });
    w.kv(&ev.kv);
    w.opt_kv(ev.prev.as_ref());
    w.0
}

pub fn decode_event(raw: &[u8]) -> Result<WatchEvent, CodecError> {
    let mut r = Reader { buf: raw, what: "event" };
    let kind = match r.u8()? {
        0 => EventKind::Put,
        1 => EventKind::Delete,
        _ => return Err(r.err()),
    };
    let kv = r.kv()?;
    let prev = r.opt_kv()?;
    Ok(WatchEvent { kind, kv, prev })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, rev: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Bytes::from_static(b"v\0x"),
            create_revision: 1,
            mod_revision: rev,
            version: 2,
            expires_at_ms: Some(99),
        }
    }

    #[test]
    fn records_round_trip() {
        let a = kv("/a", 7);
        assert_eq!(decode_kv(&encode_kv(&a)).unwrap(), a);
        assert_eq!(decode_history(&encode_history(None)).unwrap(), None);
        let ev = WatchEvent { kind: EventKind::Delete, kv: a.clone(), prev: Some(kv("/a", 3)) };
        assert_eq!(decode_event(&encode_event(&ev)).unwrap(), ev);
        assert!(decode_kv(&encode_kv(&a)[..5]).is_err());
    }

    #[test]
    fn history_keys_sort_by_key_then_revision() {
        let mut keys = [
            history_key(b"a\0", 1),
            history_key(b"a", 300),
            history_key(b"a", 2),
            history_key(b"a\x01", 1),
            history_key(b"ab", 1),
        ];
        keys.sort();
        let parsed: Vec<_> = keys.iter().map(|k| parse_history_key(k).unwrap()).collect();
        assert_eq!(
            parsed,
            vec![
                (b"a".to_vec(), 2),
                (b"a".to_vec(), 300),
                (b"a\0".to_vec(), 1),
                (b"a\x01".to_vec(), 1),
                (b"ab".to_vec(), 1),
            ]
        );
        assert!(history_key(b"ab", 1).starts_with(&escape_key(b"a")));
        assert!(!history_key(b"ab", 1).starts_with(&history_key_prefix(b"a")));
    }
}
