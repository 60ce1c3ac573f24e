//! A bounds-checked cursor over one packet body: every read either succeeds or returns
//! [`DecodeError::UnexpectedEof`]; nothing indexes a slice unchecked.

use crate::error::DecodeError;

/// Reads MQTT fields front to back from a byte slice.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub(crate) const fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// How many bytes are left.
    pub(crate) const fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Whether every byte has been read.
    pub(crate) const fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::UnexpectedEof)?;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError::UnexpectedEof)?;
        self.pos = end;
        Ok(bytes)
    }

    /// Everything not read yet (possibly empty).
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let bytes = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        bytes
    }

    /// One byte.
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        match self.take(1)? {
            [b] => Ok(*b),
            _ => Err(DecodeError::UnexpectedEof),
        }
    }

    /// A big-endian two-byte integer.
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        match self.take(2)? {
            [hi, lo] => Ok(u16::from_be_bytes([*hi, *lo])),
            _ => Err(DecodeError::UnexpectedEof),
        }
    }

    /// Binary data with a two-byte length prefix.
    pub(crate) fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 string with a two-byte length prefix; U+0000 is refused as MQTT requires.
    pub(crate) fn string(&mut self) -> Result<&'a str, DecodeError> {
        let bytes = self.binary()?;
        let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
        if s.contains('\0') {
            return Err(DecodeError::InvalidUtf8);
        }
        Ok(s)
    }

    /// A non-zero packet identifier.
    pub(crate) fn packet_id(&mut self) -> Result<u16, DecodeError> {
        match self.u16()? {
            0 => Err(DecodeError::ProtocolViolation(
                "packet identifier must be non-zero",
            )),
            id => Ok(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_in_order() {
        let mut r = Reader::new(&[0x07, 0x12, 0x34, 0x00, 0x02, b'h', b'i', 0xAA]);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u16().unwrap(), 0x1234);
        assert_eq!(r.string().unwrap(), "hi");
        assert_eq!(r.remaining(), 1);
        assert_eq!(r.rest(), &[0xAA]);
        assert!(r.is_empty());
        assert_eq!(r.rest(), &[] as &[u8]);
    }

    #[test]
    fn every_read_past_the_end_is_unexpected_eof() {
        assert_eq!(Reader::new(&[]).u8(), Err(DecodeError::UnexpectedEof));
        assert_eq!(Reader::new(&[1]).u16(), Err(DecodeError::UnexpectedEof));
        assert_eq!(
            Reader::new(&[0, 3, b'a', b'b']).string(),
            Err(DecodeError::UnexpectedEof)
        );
        assert_eq!(
            Reader::new(&[0, 1]).binary(),
            Err(DecodeError::UnexpectedEof)
        );
        assert_eq!(
            Reader::new(&[1, 2]).take(usize::MAX),
            Err(DecodeError::UnexpectedEof)
        );
    }

    #[test]
    fn a_failed_read_consumes_nothing() {
        let mut r = Reader::new(&[0x01]);
        assert!(r.u16().is_err());
        assert_eq!(r.u8().unwrap(), 1);
    }

    #[test]
    fn strings_must_be_utf8_without_nul() {
        assert_eq!(
            Reader::new(&[0, 2, 0xC3, 0x28]).string(),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(
            Reader::new(&[0, 3, b'a', 0, b'b']).string(),
            Err(DecodeError::InvalidUtf8)
        );
        // An encoded UTF-16 surrogate (U+D800) is not UTF-8.
        assert_eq!(
            Reader::new(&[0, 3, 0xED, 0xA0, 0x80]).string(),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(
            Reader::new(&[0, 3, 0xE2, 0x82, 0xAC]).string().unwrap(),
            "€"
        );
    }

    #[test]
    fn packet_id_zero_is_refused() {
        assert!(matches!(
            Reader::new(&[0, 0]).packet_id(),
            Err(DecodeError::ProtocolViolation(_))
        ));
        assert_eq!(Reader::new(&[0xFF, 0xFF]).packet_id().unwrap(), u16::MAX);
    }
}
