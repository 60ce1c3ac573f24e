//! On-disk record framing (see the crate documentation for the picture).

/// Bytes before the payload: `len`, `crc32`, `offset`, `timestamp_ms`.
pub(crate) const HEADER_LEN: usize = 24;

/// The fixed-size part of a record as read from disk (not yet checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Payload length in bytes.
    pub len: u32,
    /// CRC-32 (IEEE) over `offset`, `timestamp_ms` and the payload.
    pub crc: u32,
    pub offset: u64,
    pub timestamp_ms: u64,
}

impl Header {
    /// Decodes the 24 header bytes.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Header {
        let (len, rest) = bytes.split_at(4);
        let (crc, rest) = rest.split_at(4);
        let (offset, timestamp) = rest.split_at(8);
        Header {
            len: u32::from_le_bytes(len.try_into().expect("split_at(4) yields 4 bytes")),
            crc: u32::from_le_bytes(crc.try_into().expect("split_at(4) yields 4 bytes")),
            offset: u64::from_le_bytes(offset.try_into().expect("split_at(8) yields 8 bytes")),
            timestamp_ms: u64::from_le_bytes(
                timestamp.try_into().expect("24 - 16 = 8 bytes remain"),
            ),
        }
    }

    /// Header plus payload, in bytes.
    pub fn frame_len(&self) -> u64 {
        frame_len(self.len as usize)
    }

    /// Whether `payload` (of this header's length) matches the stored checksum.
    pub fn matches(&self, payload: &[u8]) -> bool {
        payload.len() == self.len as usize
            && checksum(self.offset, self.timestamp_ms, payload) == self.crc
    }
}

/// Size on disk of a record with a payload of `payload_len` bytes.
pub(crate) fn frame_len(payload_len: usize) -> u64 {
    HEADER_LEN as u64 + payload_len as u64
}

/// CRC-32 over the offset, the timestamp and the payload (everything after the crc field).
pub(crate) fn checksum(offset: u64, timestamp_ms: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&offset.to_le_bytes());
    h.update(&timestamp_ms.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Appends one framed record to `buf`. The caller has checked that the payload fits in `u32`.
pub(crate) fn encode(buf: &mut Vec<u8>, offset: u64, timestamp_ms: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len())
        .expect("payload length was checked against max_record_bytes (a u32)");
    buf.reserve(HEADER_LEN + payload.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&checksum(offset, timestamp_ms, payload).to_le_bytes());
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&timestamp_ms.to_le_bytes());
    buf.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_parse_round_trips() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, 1_700_000_000_123, b"hello");
        assert_eq!(buf.len() as u64, frame_len(5));
        let header: [u8; HEADER_LEN] = buf[..HEADER_LEN].try_into().unwrap();
        let h = Header::parse(&header);
        assert_eq!((h.len, h.offset, h.timestamp_ms), (5, 7, 1_700_000_000_123));
        assert!(h.matches(&buf[HEADER_LEN..]));
        assert!(!h.matches(b"hellO"));
        assert!(!h.matches(b"hell"));
    }

    #[test]
    fn layout_is_little_endian_len_crc_offset_timestamp() {
        let mut buf = Vec::new();
        encode(&mut buf, 0x0102, 0x0304, &[0xAA]);
        assert_eq!(&buf[0..4], &[1, 0, 0, 0]);
        assert_eq!(&buf[4..8], &checksum(0x0102, 0x0304, &[0xAA]).to_le_bytes());
        assert_eq!(&buf[8..16], &[2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&buf[16..24], &[4, 3, 0, 0, 0, 0, 0, 0]);
        assert_eq!(buf[24], 0xAA);
    }

    #[test]
    fn checksum_covers_offset_and_timestamp() {
        assert_ne!(checksum(1, 2, b"x"), checksum(2, 2, b"x"));
        assert_ne!(checksum(1, 2, b"x"), checksum(1, 3, b"x"));
    }
}
