//! Encoding: [`Packet`] to canonical bytes.
//!
//! Two passes: [`body_len`] checks every rule and sizes the body, then the writers, which
//! cannot fail, append the bytes. So an error never leaves a partial packet in the output.

mod connect;

use crate::error::EncodeError;
use crate::header::{MAX_REMAINING_LENGTH, remaining_length_len, write_remaining_length};
use crate::packets::{
    ConnAck, ConnectReturnCode, Packet, Publish, QoS, SubAck, Subscribe, Unsubscribe,
};
use crate::topic::is_valid_topic_name;

/// Appends the canonical encoding of `packet` to `out` (minimal remaining length, reserved bits
/// zero). On error nothing is appended.
///
/// # Errors
///
/// An [`EncodeError`] when the packet cannot be put on the wire as given: a string or binary
/// field over 65,535 bytes, a body over 268,435,455 bytes, a QoS 1/2 PUBLISH without packet
/// identifier (or QoS 0 with one), a zero packet identifier, U+0000 in a string, a wildcard in a
/// PUBLISH topic, an empty SUBSCRIBE, ... — everything [`crate::decode`] would refuse.
pub fn encode(packet: &Packet, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let remaining = checked_body_len(packet)?;
    out.reserve(1 + remaining_length_len(remaining) + remaining);
    out.push(first_byte(packet));
    write_remaining_length(remaining, out);
    write_body(packet, out);
    Ok(())
}

impl Packet {
    /// The number of bytes [`encode`] appends for this packet.
    ///
    /// # Errors
    ///
    /// The [`EncodeError`] that [`encode`] would return.
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        let remaining = checked_body_len(self)?;
        Ok(1 + remaining_length_len(remaining) + remaining)
    }
}

/// [`body_len`], within the limit of the remaining-length field.
fn checked_body_len(packet: &Packet) -> Result<usize, EncodeError> {
    let remaining = body_len(packet)?;
    if remaining > MAX_REMAINING_LENGTH {
        return Err(EncodeError::PacketTooLarge { remaining });
    }
    Ok(remaining)
}

/// The first byte: packet type and flags.
fn first_byte(packet: &Packet) -> u8 {
    let flags = match packet {
        Packet::Publish(p) => (u8::from(p.dup) << 3) | (p.qos.as_u8() << 1) | u8::from(p.retain),
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
        _ => 0,
    };
    (packet.packet_type() << 4) | flags
}

/// Checks the packet and returns the size of its variable header plus payload.
fn body_len(packet: &Packet) -> Result<usize, EncodeError> {
    match packet {
        Packet::Connect(c) => connect::body_len(c),
        Packet::ConnAck(a) => {
            if a.session_present && a.code != ConnectReturnCode::Accepted {
                return Err(EncodeError::Invalid(
                    "CONNACK with session present and a refusal code",
                ));
            }
            Ok(2)
        }
        Packet::Publish(p) => publish_len(p),
        Packet::PubAck(id)
        | Packet::PubRec(id)
        | Packet::PubRel(id)
        | Packet::PubComp(id)
        | Packet::UnsubAck(id) => {
            packet_id(*id, packet.name())?;
            Ok(2)
        }
        Packet::Subscribe(s) => subscribe_len(s),
        Packet::SubAck(s) => {
            packet_id(s.packet_id, "SUBACK")?;
            if s.return_codes.is_empty() {
                return Err(EncodeError::Invalid("SUBACK without any return code"));
            }
            Ok(2usize.saturating_add(s.return_codes.len()))
        }
        Packet::Unsubscribe(u) => unsubscribe_len(u),
        Packet::PingReq | Packet::PingResp | Packet::Disconnect => Ok(0),
    }
}

fn publish_len(p: &Publish) -> Result<usize, EncodeError> {
    let topic = str_len(&p.topic, "topic")?;
    if !is_valid_topic_name(&p.topic) {
        return Err(EncodeError::Invalid(
            "PUBLISH topic name is empty or has a wildcard",
        ));
    }
    let id_len = match (p.qos, p.packet_id) {
        (QoS::AtMostOnce, None) if p.dup => {
            return Err(EncodeError::Invalid("DUP flag on a QoS 0 PUBLISH"));
        }
        (QoS::AtMostOnce, None) => 0,
        (QoS::AtMostOnce, Some(_)) => return Err(EncodeError::UnexpectedPacketId),
        (qos, None) => return Err(EncodeError::MissingPacketId(qos.as_u8())),
        (_, Some(id)) => {
            packet_id(id, "PUBLISH")?;
            2
        }
    };
    Ok(topic.saturating_add(id_len).saturating_add(p.payload.len()))
}

fn subscribe_len(s: &Subscribe) -> Result<usize, EncodeError> {
    packet_id(s.packet_id, "SUBSCRIBE")?;
    if s.filters.is_empty() {
        return Err(EncodeError::Invalid("SUBSCRIBE without any topic filter"));
    }
    let mut len = 2usize;
    for (filter, _) in &s.filters {
        len = len.saturating_add(filter_len(filter)?).saturating_add(1);
    }
    Ok(len)
}

fn unsubscribe_len(u: &Unsubscribe) -> Result<usize, EncodeError> {
    packet_id(u.packet_id, "UNSUBSCRIBE")?;
    if u.filters.is_empty() {
        return Err(EncodeError::Invalid("UNSUBSCRIBE without any topic filter"));
    }
    let mut len = 2usize;
    for filter in &u.filters {
        len = len.saturating_add(filter_len(filter)?);
    }
    Ok(len)
}

/// A topic filter must be a non-empty string.
fn filter_len(filter: &str) -> Result<usize, EncodeError> {
    if filter.is_empty() {
        return Err(EncodeError::Invalid("empty topic filter"));
    }
    str_len(filter, "topic filter")
}

fn packet_id(id: u16, packet: &'static str) -> Result<(), EncodeError> {
    if id == 0 {
        Err(EncodeError::ZeroPacketId(packet))
    } else {
        Ok(())
    }
}

/// Encoded size of a string field (prefix included), after checking length and U+0000.
pub(crate) fn str_len(s: &str, field: &'static str) -> Result<usize, EncodeError> {
    if s.contains('\0') {
        return Err(EncodeError::NulInString(field));
    }
    bin_len(s.as_bytes(), field)
}

/// Encoded size of a binary field (prefix included), after checking its length.
pub(crate) fn bin_len(b: &[u8], field: &'static str) -> Result<usize, EncodeError> {
    if b.len() > usize::from(u16::MAX) {
        return Err(EncodeError::FieldTooLong {
            field,
            len: b.len(),
        });
    }
    Ok(2 + b.len())
}

/// Appends the body; the packet has passed [`body_len`].
fn write_body(packet: &Packet, out: &mut Vec<u8>) {
    match packet {
        Packet::Connect(c) => connect::write_body(c, out),
        Packet::ConnAck(ConnAck {
            session_present,
            code,
        }) => out.extend([u8::from(*session_present), code.as_u8()]),
        Packet::Publish(p) => {
            put_bin(p.topic.as_bytes(), out);
            if let Some(id) = p.packet_id {
                put_u16(id, out);
            }
            out.extend_from_slice(&p.payload);
        }
        Packet::PubAck(id)
        | Packet::PubRec(id)
        | Packet::PubRel(id)
        | Packet::PubComp(id)
        | Packet::UnsubAck(id) => {
            put_u16(*id, out);
        }
        Packet::Subscribe(Subscribe { packet_id, filters }) => {
            put_u16(*packet_id, out);
            for (filter, qos) in filters {
                put_bin(filter.as_bytes(), out);
                out.push(qos.as_u8());
            }
        }
        Packet::SubAck(SubAck {
            packet_id,
            return_codes,
        }) => {
            put_u16(*packet_id, out);
            out.extend(return_codes.iter().map(|c| c.as_u8()));
        }
        Packet::Unsubscribe(Unsubscribe { packet_id, filters }) => {
            put_u16(*packet_id, out);
            for filter in filters {
                put_bin(filter.as_bytes(), out);
            }
        }
        Packet::PingReq | Packet::PingResp | Packet::Disconnect => {}
    }
}

pub(crate) fn put_u16(value: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// Appends a length-prefixed field whose length was checked by [`bin_len`].
pub(crate) fn put_bin(bytes: &[u8], out: &mut Vec<u8>) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    put_u16(len, out);
    out.extend_from_slice(bytes.get(..usize::from(len)).unwrap_or(bytes));
}
