//! The protobuf wire format: varints, fixed-width numbers and
//! length-delimited fields, read without copying.

use super::ProtobufError;

/// One field value as it appears on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireValue<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.pos).ok_or(ProtobufError::Malformed("truncated varint"))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtobufError::Malformed("varint longer than 10 bytes"))
    }

    /// The next varint of a packed run, or `None` at its end.
    pub fn varint_opt(&mut self) -> Result<Option<u64>, ProtobufError> {
        if self.pos >= self.bytes.len() { Ok(None) } else { self.varint().map(Some) }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], ProtobufError> {
        let end = self.pos.checked_add(len).filter(|end| *end <= self.bytes.len());
        let end = end.ok_or(ProtobufError::Malformed("a field runs past the end of its message"))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    /// The next (tag, value), or `None` at the end of the message.
    pub fn next(&mut self) -> Result<Option<(u32, WireValue<'a>)>, ProtobufError> {
        if self.pos >= self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).map_err(|_| ProtobufError::Malformed("field number out of range"))?;
        let value = match key & 7 {
            0 => WireValue::Varint(self.varint()?),
            1 => {
                let bytes = self.take(8)?;
                WireValue::Fixed64(u64::from_le_bytes(
                    bytes.try_into().map_err(|_| ProtobufError::Malformed("fixed64"))?,
                ))
            }
            2 => {
                let len =
                    usize::try_from(self.varint()?).map_err(|_| ProtobufError::Malformed("length out of range"))?;
                WireValue::Bytes(self.take(len)?)
            }
            5 => {
                let bytes = self.take(4)?;
                WireValue::Fixed32(u32::from_le_bytes(
                    bytes.try_into().map_err(|_| ProtobufError::Malformed("fixed32"))?,
                ))
            }
            _ => return Err(ProtobufError::Malformed("unsupported wire type")),
        };
        Ok(Some((tag, value)))
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn varint(mut value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    pub fn varint_field(tag: u32, value: u64) -> Vec<u8> {
        [varint(u64::from(tag) << 3), varint(value)].concat()
    }

    pub fn bytes_field(tag: u32, bytes: &[u8]) -> Vec<u8> {
        [varint((u64::from(tag) << 3) | 2), varint(bytes.len() as u64), bytes.to_vec()].concat()
    }

    #[test]
    fn reads_fields_and_rejects_truncation() {
        let message = [varint_field(1, 300), bytes_field(2, b"hi")].concat();
        let mut reader = Reader::new(&message);
        assert_eq!(reader.next().unwrap(), Some((1, WireValue::Varint(300))));
        assert_eq!(reader.next().unwrap(), Some((2, WireValue::Bytes(b"hi"))));
        assert_eq!(reader.next().unwrap(), None);
        let truncated = &message[..message.len() - 1];
        let mut reader = Reader::new(truncated);
        reader.next().unwrap();
        assert!(reader.next().is_err());
    }
}
