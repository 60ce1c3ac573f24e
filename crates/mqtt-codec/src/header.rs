//! The fixed header: packet type, flags and the variable-length remaining length.

use crate::error::DecodeError;
use crate::packets::QoS;

/// Largest value the 4-byte remaining-length field can express (268,435,455).
pub const MAX_REMAINING_LENGTH: usize = 0x0FFF_FFFF;

/// A decoded fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FixedHeader {
    /// Control packet type, 1 to 14.
    pub(crate) packet_type: u8,
    /// The low four bits of the first byte (already checked against the type).
    pub(crate) flags: u8,
    /// Length of the variable header plus payload.
    pub(crate) remaining: usize,
    /// Bytes taken by the fixed header itself (2 to 5).
    pub(crate) header_len: usize,
}

impl FixedHeader {
    /// Size of the whole packet, fixed header included.
    pub(crate) const fn packet_len(&self) -> usize {
        self.header_len + self.remaining
    }
}

/// Decodes the fixed header at the start of `buf`; `Ok(None)` when more bytes are needed.
///
/// The first byte is checked as soon as it is there, so garbage is refused without waiting.
pub(crate) fn decode_fixed_header(buf: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
    let Some((&first, rest)) = buf.split_first() else {
        return Ok(None);
    };
    let packet_type = first >> 4;
    let flags = first & 0x0F;
    check_flags(packet_type, flags)?;
    let Some((remaining, len_bytes)) = decode_remaining_length(rest)? else {
        return Ok(None);
    };
    Ok(Some(FixedHeader {
        packet_type,
        flags,
        remaining,
        header_len: 1 + len_bytes,
    }))
}

/// Checks the flag bits of the first byte against what `packet_type` requires.
fn check_flags(packet_type: u8, flags: u8) -> Result<(), DecodeError> {
    let required = match packet_type {
        0 | 15.. => return Err(DecodeError::InvalidPacketType(packet_type)),
        3 => return check_publish_flags(flags),
        6 | 8 | 10 => 0b0010,
        _ => 0b0000,
    };
    if flags == required {
        Ok(())
    } else {
        Err(DecodeError::InvalidFlags { packet_type, flags })
    }
}

/// PUBLISH flags: DUP (bit 3), QoS (bits 2-1), RETAIN (bit 0).
fn check_publish_flags(flags: u8) -> Result<(), DecodeError> {
    let qos = publish_qos(flags)?;
    if qos == QoS::AtMostOnce && flags & 0b1000 != 0 {
        return Err(DecodeError::ProtocolViolation(
            "DUP flag set on a QoS 0 PUBLISH",
        ));
    }
    Ok(())
}

/// The QoS encoded in PUBLISH fixed-header flags.
pub(crate) fn publish_qos(flags: u8) -> Result<QoS, DecodeError> {
    let bits = (flags >> 1) & 0b11;
    QoS::from_u8(bits).ok_or(DecodeError::InvalidQoS(bits))
}

/// Decodes the 1-4 byte remaining length at the start of `buf`: `(value, bytes used)`, or
/// `Ok(None)` when `buf` ends before the last byte of the field.
///
/// Non-minimal encodings (such as `0x80 0x00` for 0) are accepted, as MQTT 3.1.1 does not forbid
/// them; the encoder always writes the minimal form.
pub(crate) fn decode_remaining_length(buf: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value = 0usize;
    for (i, &byte) in buf.iter().take(4).enumerate() {
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        Err(DecodeError::MalformedRemainingLength)
    } else {
        Ok(None)
    }
}

/// Appends the minimal encoding of `value` (at most [`MAX_REMAINING_LENGTH`]).
pub(crate) fn write_remaining_length(mut value: usize, out: &mut Vec<u8>) {
    loop {
        let low = u8::try_from(value & 0x7F).unwrap_or_default();
        value >>= 7;
        if value == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// Bytes the remaining-length field takes for `value`.
pub(crate) const fn remaining_length_len(value: usize) -> usize {
    match value {
        0..=0x7F => 1,
        0x80..=0x3FFF => 2,
        0x4000..=0x1F_FFFF => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(value: usize) -> Vec<u8> {
        let mut out = Vec::new();
        write_remaining_length(value, &mut out);
        out
    }

    #[test]
    fn remaining_length_boundaries_from_the_spec() {
        // Table 2.4 of MQTT 3.1.1.
        let cases: &[(usize, &[u8])] = &[
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for &(value, bytes) in cases {
            assert_eq!(encoded(value), bytes, "encoding {value}");
            assert_eq!(
                remaining_length_len(value),
                bytes.len(),
                "length of {value}"
            );
            assert_eq!(
                decode_remaining_length(bytes),
                Ok(Some((value, bytes.len())))
            );
            for cut in 0..bytes.len() {
                assert_eq!(
                    decode_remaining_length(&bytes[..cut]),
                    Ok(None),
                    "{value} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn fifth_length_byte_is_malformed() {
        assert_eq!(
            decode_remaining_length(&[0xFF, 0xFF, 0xFF, 0xFF]),
            Err(DecodeError::MalformedRemainingLength)
        );
        assert_eq!(
            decode_remaining_length(&[0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(DecodeError::MalformedRemainingLength)
        );
    }

    #[test]
    fn non_minimal_lengths_are_accepted() {
        assert_eq!(decode_remaining_length(&[0x80, 0x00]), Ok(Some((0, 2))));
        assert_eq!(
            decode_remaining_length(&[0x81, 0x80, 0x00]),
            Ok(Some((1, 3)))
        );
    }

    #[test]
    fn flags_per_packet_type() {
        for packet_type in 1..=14u8 {
            let required = match packet_type {
                6 | 8 | 10 => 0b0010,
                _ => 0,
            };
            for flags in 0..16u8 {
                let result = decode_fixed_header(&[(packet_type << 4) | flags, 0]);
                if packet_type == 3 {
                    let qos = (flags >> 1) & 3;
                    assert_eq!(
                        result.is_ok(),
                        qos != 3 && !(qos == 0 && flags & 8 != 0),
                        "PUBLISH {flags:#06b}"
                    );
                } else if flags == required {
                    assert!(result.is_ok(), "type {packet_type} flags {flags:#06b}");
                } else {
                    assert_eq!(
                        result,
                        Err(DecodeError::InvalidFlags { packet_type, flags })
                    );
                }
            }
        }
    }

    #[test]
    fn reserved_types_are_refused_from_the_first_byte() {
        assert_eq!(
            decode_fixed_header(&[0x00]),
            Err(DecodeError::InvalidPacketType(0))
        );
        assert_eq!(
            decode_fixed_header(&[0xF0]),
            Err(DecodeError::InvalidPacketType(15))
        );
        assert_eq!(decode_fixed_header(&[]), Ok(None));
        assert_eq!(decode_fixed_header(&[0x30]), Ok(None));
    }
}
