//! SPDY/3.1 framing as kubectl's port-forward speaks it (moby/spdystream):
//! the control frames (SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING,
//! GOAWAY, HEADERS, WINDOW_UPDATE), DATA frames, and header blocks
//! compressed with one zlib context per direction and the SPDY/3 dictionary.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1).
pub const DICTIONARY: &[u8] = include_bytes!("spdy3.dict");
pub const VERSION: u16 = 3;
/// FLAG_FIN of DATA, SYN_STREAM, SYN_REPLY and HEADERS frames.
pub const FLAG_FIN: u8 = 0x01;
/// The RST_STREAM status this server sends.
pub const PROTOCOL_ERROR: u32 = 1;
/// The largest frame payload SPDY can carry (a 24-bit length).
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;
/// Header blocks larger than this once inflated are refused.
const MAX_HEADER_BLOCK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("invalid {kind} frame: {why}")]
    Invalid { kind: &'static str, why: String },
    #[error("cannot inflate a header block: {0}")]
    Inflate(String),
    #[error("cannot deflate a header block: {0}")]
    Deflate(String),
}

/// Header names (lowercase) and values (several values joined by NUL).
pub type Headers = Vec<(String, String)>;

/// One SPDY frame, unpacked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// `(flags, id, value)` entries.
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame type SPDY/3 does not define (to be ignored).
    Unknown {
        kind: u16,
    },
}

impl Frame {
    pub fn data(stream_id: u32, data: Bytes) -> Frame {
        Frame::Data { stream_id, flags: 0, data }
    }

    /// An empty DATA frame with FLAG_FIN: this side will send no more on the stream.
    pub fn fin(stream_id: u32) -> Frame {
        Frame::Data { stream_id, flags: FLAG_FIN, data: Bytes::new() }
    }
}

fn invalid(kind: &'static str, why: impl Into<String>) -> FrameError {
    FrameError::Invalid { kind, why: why.into() }
}

/// Reads frames from a byte stream (one zlib inflate context for its header blocks).
pub struct Decoder {
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder { inflate: Decompress::new(true) }
    }
}

impl Decoder {
    /// The next whole frame at the start of `buf` (consumed), or `None` until more bytes came.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let length = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < 8 + length {
            return Ok(None);
        }
        let mut frame = buf.split_to(8 + length).freeze();
        let first = frame.get_u32();
        let flags = frame.get_u8();
        frame.advance(3);
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data { stream_id: first & 0x7fff_ffff, flags, data: frame }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        self.control((first & 0xffff) as u16, flags, frame).map(Some)
    }

    fn control(&mut self, kind: u16, flags: u8, mut p: Bytes) -> Result<Frame, FrameError> {
        let need = |p: &Bytes, n: usize, name: &'static str| {
            if p.len() < n { Err(invalid(name, format!("{} bytes, need {n}", p.len()))) } else { Ok(()) }
        };
        Ok(match kind {
            1 => {
                need(&p, 10, "SYN_STREAM")?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let associated = p.get_u32() & 0x7fff_ffff;
                let priority = p.get_u8() >> 5;
                p.advance(1);
                let headers = self.headers(&p)?;
                Frame::SynStream { stream_id, associated, priority, flags, headers }
            }
            2 => {
                need(&p, 4, "SYN_REPLY")?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                Frame::SynReply { stream_id, flags, headers: self.headers(&p)? }
            }
            3 => {
                need(&p, 8, "RST_STREAM")?;
                Frame::RstStream { stream_id: p.get_u32() & 0x7fff_ffff, status: p.get_u32() }
            }
            4 => {
                need(&p, 4, "SETTINGS")?;
                let count = p.get_u32() as usize;
                if p.len() != count.saturating_mul(8) {
                    return Err(invalid("SETTINGS", format!("{count} entries in {} bytes", p.len())));
                }
                let entries = (0..count)
                    .map(|_| {
                        let word = p.get_u32();
                        ((word >> 24) as u8, word & 0x00ff_ffff, p.get_u32())
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            6 => {
                need(&p, 4, "PING")?;
                Frame::Ping { id: p.get_u32() }
            }
            7 => {
                need(&p, 8, "GOAWAY")?;
                Frame::GoAway { last_good: p.get_u32() & 0x7fff_ffff, status: p.get_u32() }
            }
            8 => {
                need(&p, 4, "HEADERS")?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                Frame::Headers { stream_id, flags, headers: self.headers(&p)? }
            }
            9 => {
                need(&p, 8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate { stream_id: p.get_u32() & 0x7fff_ffff, delta: p.get_u32() & 0x7fff_ffff }
            }
            other => Frame::Unknown { kind: other },
        })
    }

    fn headers(&mut self, compressed: &[u8]) -> Result<Headers, FrameError> {
        let block = self.inflate(compressed)?;
        parse_block(&block)
    }

    fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(FrameError::Inflate(format!("larger than {MAX_HEADER_BLOCK} bytes")));
                }
                out.reserve(out.len().max(256));
            }
            let before_in = self.inflate.total_in();
            let before_out = out.len();
            match self.inflate.decompress_vec(input, &mut out, FlushDecompress::Sync) {
                Ok(_) => {}
                Err(err) if err.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(DICTIONARY).map_err(|e| FrameError::Inflate(e.to_string()))?;
                }
                Err(err) => return Err(FrameError::Inflate(err.to_string())),
            }
            let used = (self.inflate.total_in() - before_in) as usize;
            input = &input[used..];
            // Done once all input is in and the output buffer was not the limit.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
            if used == 0 && out.len() == before_out && out.len() < out.capacity() {
                return Err(FrameError::Inflate("no progress".into()));
            }
        }
    }
}

/// The uncompressed header block: a count, then length-prefixed names and values.
fn parse_block(mut block: &[u8]) -> Result<Headers, FrameError> {
    let read = |block: &mut &[u8]| -> Result<Vec<u8>, FrameError> {
        if block.len() < 4 {
            return Err(invalid("header block", "truncated length"));
        }
        let len = block.get_u32() as usize;
        if block.len() < len {
            return Err(invalid("header block", "truncated string"));
        }
        let (text, rest) = block.split_at(len);
        *block = rest;
        Ok(text.to_vec())
    };
    if block.len() < 4 {
        return Err(invalid("header block", "no pair count"));
    }
    let count = block.get_u32();
    let mut headers = Headers::new();
    for _ in 0..count {
        let name = String::from_utf8(read(&mut block)?).map_err(|_| invalid("header block", "name not UTF-8"))?;
        let value = String::from_utf8(read(&mut block)?).map_err(|_| invalid("header block", "value not UTF-8"))?;
        headers.push((name, value));
    }
    Ok(headers)
}

/// The value of header `name` (its first value when several are joined by NUL).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).and_then(|(_, v)| v.split('\0').next())
}

/// Writes frames (one zlib deflate context for its header blocks).
pub struct Encoder {
    deflate: Compress,
    primed: bool,
}

impl Default for Encoder {
    fn default() -> Encoder {
        Encoder { deflate: Compress::new(Compression::best(), true), primed: false }
    }
}

impl Encoder {
    /// Appends `frame`'s bytes to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), FrameError> {
        let mut body = BytesMut::new();
        let (kind, flags) = match frame {
            Frame::Data { stream_id, flags, data } => {
                if data.len() > MAX_PAYLOAD {
                    return Err(invalid("DATA", format!("{} bytes do not fit one frame", data.len())));
                }
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32((u32::from(*flags) << 24) | data.len() as u32);
                out.put_slice(data);
                return Ok(());
            }
            Frame::SynStream { stream_id, associated, priority, flags, headers } => {
                body.put_u32(*stream_id);
                body.put_u32(*associated);
                body.put_u8(priority << 5);
                body.put_u8(0);
                self.headers(headers, &mut body)?;
                (1, *flags)
            }
            Frame::SynReply { stream_id, flags, headers } => {
                body.put_u32(*stream_id);
                self.headers(headers, &mut body)?;
                (2, *flags)
            }
            Frame::RstStream { stream_id, status } => {
                body.put_u32(*stream_id);
                body.put_u32(*status);
                (3, 0)
            }
            Frame::Settings { flags, entries } => {
                body.put_u32(entries.len() as u32);
                for (flag, id, value) in entries {
                    body.put_u32((u32::from(*flag) << 24) | (id & 0x00ff_ffff));
                    body.put_u32(*value);
                }
                (4, *flags)
            }
            Frame::Ping { id } => {
                body.put_u32(*id);
                (6, 0)
            }
            Frame::GoAway { last_good, status } => {
                body.put_u32(*last_good);
                body.put_u32(*status);
                (7, 0)
            }
            Frame::Headers { stream_id, flags, headers } => {
                body.put_u32(*stream_id);
                self.headers(headers, &mut body)?;
                (8, *flags)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                body.put_u32(*stream_id);
                body.put_u32(*delta);
                (9, 0)
            }
            Frame::Unknown { kind } => return Err(invalid("control", format!("cannot write unknown type {kind}"))),
        };
        if body.len() > MAX_PAYLOAD {
            return Err(invalid("control", "payload too large"));
        }
        out.put_u32(0x8000_0000 | (u32::from(VERSION) << 16) | kind);
        out.put_u32((u32::from(flags) << 24) | body.len() as u32);
        out.put_slice(&body);
        Ok(())
    }

    fn headers(&mut self, headers: &Headers, out: &mut BytesMut) -> Result<(), FrameError> {
        let mut block = BytesMut::new();
        block.put_u32(headers.len() as u32);
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            block.put_u32(name.len() as u32);
            block.put_slice(name.as_bytes());
            block.put_u32(value.len() as u32);
            block.put_slice(value.as_bytes());
        }
        if !self.primed {
            self.deflate.set_dictionary(DICTIONARY).map_err(|e| FrameError::Deflate(e.to_string()))?;
            self.primed = true;
        }
        let mut input = &block[..];
        let mut compressed = Vec::with_capacity(block.len() + 64);
        loop {
            if compressed.len() == compressed.capacity() {
                compressed.reserve(256);
            }
            let before = self.deflate.total_in();
            let status = self
                .deflate
                .compress_vec(input, &mut compressed, FlushCompress::Sync)
                .map_err(|e| FrameError::Deflate(e.to_string()))?;
            input = &input[(self.deflate.total_in() - before) as usize..];
            // A sync flush is complete when input is used up and output had room left.
            if input.is_empty() && compressed.len() < compressed.capacity() || status == Status::StreamEnd {
                break;
            }
        }
        out.put_slice(&compressed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(decoder: &mut Decoder, bytes: &[u8]) -> Vec<Frame> {
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = decoder.decode(&mut buf).expect("valid frames") {
            frames.push(frame);
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        frames
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        // The dictionary id zlib streams name it by (adler-32), as in Chromium's SPDY/3.
        let (mut a, mut b) = (1u32, 0u32);
        for byte in DICTIONARY {
            a = (a + u32::from(*byte)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
        assert_eq!(DICTIONARY.len(), 1423);
    }

    #[test]
    fn reads_syn_streams_compressed_by_zlib() {
        // kubectl's error and data streams of request 0 to port 8080, header
        // blocks deflated by zlib itself (Python's zlib.compressobj(9,
        // zdict=dictionary), Z_SYNC_FLUSH after each): the second block
        // refers back into the first, so one inflate context must read both.
        let wire = hex(concat!(
            "800300010000003d0000000100000000000078f9e3c6a7c202253a703a2b294a4dcc851625aca9",
            "a0808614cb45e01c6061606100a4398b20d198094ade8c0600000000ffff",
            "800300010000001800000003000000000000c2aa19540e2512d60b000000ffff",
        ));
        let mut decoder = Decoder::default();
        let frames = decode_all(&mut decoder, &wire);
        let headers = |kind: &str| -> Headers {
            vec![("streamtype".into(), kind.into()), ("port".into(), "8080".into()), ("requestid".into(), "0".into())]
        };
        assert_eq!(
            frames,
            [
                Frame::SynStream { stream_id: 1, associated: 0, priority: 0, flags: 0, headers: headers("error") },
                Frame::SynStream { stream_id: 3, associated: 0, priority: 0, flags: 0, headers: headers("data") },
            ]
        );
        assert_eq!(header(&headers("data"), "streamType"), Some("data"));
    }

    #[test]
    fn control_frames_round_trip() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 3,
                associated: 0,
                priority: 2,
                flags: FLAG_FIN,
                headers: vec![("streamtype".into(), "data".into()), ("port".into(), "80".into())],
            },
            Frame::SynReply { stream_id: 3, flags: 0, headers: Vec::new() },
            Frame::SynReply { stream_id: 5, flags: 0, headers: vec![("a".into(), "b\0c".into())] },
            Frame::RstStream { stream_id: 3, status: 3 },
            Frame::Settings { flags: 0, entries: vec![(1, 7, 65536), (0, 4, 100)] },
            Frame::Ping { id: 7 },
            Frame::GoAway { last_good: 5, status: 0 },
            Frame::Headers { stream_id: 5, flags: 0, headers: vec![("x".into(), "y".into())] },
            Frame::WindowUpdate { stream_id: 5, delta: 1024 },
            Frame::data(5, Bytes::from_static(b"hello")),
            Frame::fin(5),
        ];
        let (mut encoder, mut decoder) = (Encoder::default(), Decoder::default());
        let mut wire = BytesMut::new();
        for frame in &frames {
            encoder.encode(frame, &mut wire).expect("encode");
        }
        // Byte by byte: a frame is only returned once all of it arrived.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in wire.iter() {
            buf.put_u8(*byte);
            if let Some(frame) = decoder.decode(&mut buf).expect("decode") {
                got.push(frame);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn known_fixed_frames() {
        let mut wire = BytesMut::new();
        let mut encoder = Encoder::default();
        encoder.encode(&Frame::Ping { id: 1 }, &mut wire).expect("ping");
        encoder.encode(&Frame::fin(3), &mut wire).expect("fin");
        encoder.encode(&Frame::RstStream { stream_id: 3, status: 5 }, &mut wire).expect("rst");
        assert_eq!(
            &wire[..],
            &hex(concat!("800300060000000400000001", "0000000301000000", "80030003000000080000000300000005"))[..]
        );
    }

    #[test]
    fn refuses_what_is_not_spdy3() {
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::from(&hex("800200060000000400000001")[..]);
        assert!(matches!(decoder.decode(&mut buf), Err(FrameError::Version(2))));
        let mut short = BytesMut::from(&hex("80030003000000040000000300")[..]);
        assert!(matches!(decoder.decode(&mut short), Err(FrameError::Invalid { .. })));
        let mut unknown = BytesMut::from(&hex("8003000a00000000")[..]);
        assert_eq!(decoder.decode(&mut unknown).expect("ignored"), Some(Frame::Unknown { kind: 10 }));
    }
}
