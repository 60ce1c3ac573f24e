//! Why a packet could not be decoded or encoded.

use crate::packets::packet_type_name;

/// A protocol violation found while decoding: the connection should be closed.
///
/// Every variant names what was wrong so that an operator's log line says it
/// (`packet of 1048580 bytes exceeds the 65536-byte limit`, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The fixed header announces a packet (fixed header included) larger than the limit.
    /// Reported as soon as the fixed header is read, before the body is buffered.
    #[error("packet of {size} bytes exceeds the {max}-byte limit")]
    PacketTooLarge {
        /// Total size of the announced packet in bytes, fixed header included.
        size: usize,
        /// The `max_packet_size` passed to [`crate::decode`].
        max: usize,
    },
    /// The remaining-length field of the fixed header is longer than 4 bytes.
    #[error("malformed remaining length: continuation bit set on its 4th byte")]
    MalformedRemainingLength,
    /// The control packet type is 0 or 15 (reserved in MQTT 3.1.1).
    #[error("invalid control packet type {0} (reserved)")]
    InvalidPacketType(u8),
    /// The low four bits of the first byte are not the ones the packet type requires.
    #[error("invalid fixed-header flags {flags:#06b} for {} (type {packet_type})", packet_type_name(*.packet_type))]
    InvalidFlags {
        /// Control packet type (1 to 14).
        packet_type: u8,
        /// The low four bits of the first byte.
        flags: u8,
    },
    /// A QoS field holds a value other than 0, 1 or 2 (PUBLISH flags, will QoS, requested QoS).
    #[error("invalid QoS value {0}")]
    InvalidQoS(u8),
    /// A string is not well-formed UTF-8, or contains U+0000.
    #[error("string is not valid UTF-8 or contains U+0000")]
    InvalidUtf8,
    /// A field (or a length prefix) extends beyond the end of the packet.
    #[error("a field extends beyond the end of the packet")]
    UnexpectedEof,
    /// A packet with a fixed-size body has the wrong remaining length
    /// (e.g. PUBACK must have exactly 2, PINGREQ 0).
    #[error("remaining length {remaining} is invalid for {} (type {packet_type})", packet_type_name(*.packet_type))]
    InvalidRemainingLength {
        /// Control packet type.
        packet_type: u8,
        /// The remaining length of the fixed header.
        remaining: usize,
    },
    /// Bytes are left over after the last field of a packet.
    #[error("{count} unexpected byte(s) after the last field of {}", packet_type_name(*.packet_type))]
    TrailingBytes {
        /// Control packet type.
        packet_type: u8,
        /// How many bytes are left over.
        count: usize,
    },
    /// CONNECT names a protocol other than `"MQTT"` or `"MQIsdp"` (at most 32 characters kept).
    #[error("unknown protocol name {0:?} in CONNECT")]
    InvalidProtocolName(String),
    /// CONNACK carries a return code above 5.
    #[error("invalid CONNACK return code {0}")]
    InvalidConnectReturnCode(u8),
    /// SUBACK carries a return code other than 0, 1, 2 or 0x80.
    #[error("invalid SUBACK return code {0:#04x}")]
    InvalidSubAckReturnCode(u8),
    /// Any other rule of MQTT 3.1.1 broken (the text says which).
    #[error("protocol violation: {0}")]
    ProtocolViolation(&'static str),
}

/// A packet that cannot be put on the wire as given; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A string or binary field is longer than its 2-byte length prefix allows.
    #[error("{field} of {len} bytes exceeds the 65535-byte field limit")]
    FieldTooLong {
        /// Which field ("topic", "client id", "password", ...).
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The packet body is larger than the 268,435,455 bytes the remaining length can express.
    #[error("packet body of {remaining} bytes exceeds the 268435455-byte remaining-length limit")]
    PacketTooLarge {
        /// The body size that was asked for.
        remaining: usize,
    },
    /// A QoS 1 or 2 PUBLISH has no packet identifier.
    #[error("QoS {0} PUBLISH without a packet identifier")]
    MissingPacketId(u8),
    /// A QoS 0 PUBLISH has a packet identifier.
    #[error("QoS 0 PUBLISH with a packet identifier")]
    UnexpectedPacketId,
    /// A packet identifier is 0; MQTT requires non-zero identifiers.
    #[error("packet identifier 0 in {0} (identifiers must be non-zero)")]
    ZeroPacketId(&'static str),
    /// A string contains U+0000, which MQTT forbids.
    #[error("{0} contains U+0000")]
    NulInString(&'static str),
    /// Any other rule of MQTT 3.1.1 that the packet breaks (the text says which).
    #[error("invalid packet: {0}")]
    Invalid(&'static str),
}
