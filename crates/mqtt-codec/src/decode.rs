//! Decoding: bytes to [`Packet`].

pub(crate) mod connect;

use crate::error::DecodeError;
use crate::header::{FixedHeader, decode_fixed_header, publish_qos};
use crate::packets::{
    ConnAck, ConnectReturnCode, Packet, Publish, QoS, SubAck, SubAckReturnCode, Subscribe,
    Unsubscribe,
};
use crate::reader::Reader;
use crate::topic::is_valid_topic_name;

/// Decodes the packet at the start of `buf`.
///
/// - `Ok(None)`: `buf` holds only the beginning of a packet (or nothing); read more bytes and
///   call again with the longer buffer.
/// - `Ok(Some((packet, consumed)))`: the first `consumed` bytes of `buf` were one packet; drop
///   them and call again for the next one.
/// - `Err(_)`: the peer broke the protocol; close the connection.
///
/// `max_packet_size` bounds the whole packet, fixed header included. A larger packet is refused
/// with [`DecodeError::PacketTooLarge`] as soon as its fixed header (at most 5 bytes) is in
/// `buf`, so a caller that buffers until `decode` answers never holds more than the limit.
/// Likewise a bad first byte is refused as soon as it arrives.
///
/// # Errors
///
/// A [`DecodeError`] naming the violation. Strict prefixes of a valid packet never error.
pub fn decode(buf: &[u8], max_packet_size: usize) -> Result<Option<(Packet, usize)>, DecodeError> {
    let Some(header) = decode_fixed_header(buf)? else {
        return Ok(None);
    };
    let size = header.packet_len();
    if size > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    check_fixed_body_len(&header)?;
    let Some(body) = buf.get(header.header_len..size) else {
        return Ok(None);
    };
    let packet = decode_body(&header, body)?;
    Ok(Some((packet, size)))
}

/// Packets whose body has a fixed size are checked from the header alone.
fn check_fixed_body_len(header: &FixedHeader) -> Result<(), DecodeError> {
    let expected = match header.packet_type {
        2 | 4..=7 | 11 => 2,
        12..=14 => 0,
        _ => return Ok(()),
    };
    if header.remaining == expected {
        Ok(())
    } else {
        Err(DecodeError::InvalidRemainingLength {
            packet_type: header.packet_type,
            remaining: header.remaining,
        })
    }
}

/// Decodes the variable header and payload of a packet whose fixed header is `header`.
fn decode_body(header: &FixedHeader, body: &[u8]) -> Result<Packet, DecodeError> {
    let mut r = Reader::new(body);
    let packet = match header.packet_type {
        1 => Packet::Connect(Box::new(connect::decode_connect(&mut r)?)),
        2 => Packet::ConnAck(decode_connack(&mut r)?),
        3 => Packet::Publish(decode_publish(header.flags, &mut r)?),
        4 => Packet::PubAck(r.packet_id()?),
        5 => Packet::PubRec(r.packet_id()?),
        6 => Packet::PubRel(r.packet_id()?),
        7 => Packet::PubComp(r.packet_id()?),
        8 => Packet::Subscribe(decode_subscribe(&mut r)?),
        9 => Packet::SubAck(decode_suback(&mut r)?),
        10 => Packet::Unsubscribe(decode_unsubscribe(&mut r)?),
        11 => Packet::UnsubAck(r.packet_id()?),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => Packet::Disconnect,
        other => return Err(DecodeError::InvalidPacketType(other)),
    };
    finish(&r, header.packet_type)?;
    Ok(packet)
}

/// Refuses bytes left over after the last field.
pub(crate) fn finish(r: &Reader<'_>, packet_type: u8) -> Result<(), DecodeError> {
    match r.remaining() {
        0 => Ok(()),
        count => Err(DecodeError::TrailingBytes { packet_type, count }),
    }
}

fn decode_connack(r: &mut Reader<'_>) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::ProtocolViolation(
            "reserved CONNACK acknowledge flags are set",
        ));
    }
    let raw = r.u8()?;
    let code = ConnectReturnCode::from_u8(raw).ok_or(DecodeError::InvalidConnectReturnCode(raw))?;
    let session_present = flags & 0x01 != 0;
    if session_present && code != ConnectReturnCode::Accepted {
        return Err(DecodeError::ProtocolViolation(
            "CONNACK with session present and a refusal code",
        ));
    }
    Ok(ConnAck {
        session_present,
        code,
    })
}

fn decode_publish(flags: u8, r: &mut Reader<'_>) -> Result<Publish, DecodeError> {
    let qos = publish_qos(flags)?;
    let topic = r.string()?;
    if topic.is_empty() {
        return Err(DecodeError::ProtocolViolation("empty PUBLISH topic name"));
    }
    if !is_valid_topic_name(topic) {
        return Err(DecodeError::ProtocolViolation(
            "wildcard character in PUBLISH topic name",
        ));
    }
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce | QoS::ExactlyOnce => Some(r.packet_id()?),
    };
    Ok(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 0b0001 != 0,
        topic: topic.to_owned(),
        packet_id,
        payload: r.rest().to_vec(),
    })
}

/// A topic filter of SUBSCRIBE or UNSUBSCRIBE: any non-empty string (wildcard syntax is left to
/// the server, which may refuse one filter in its SUBACK).
fn topic_filter(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    match r.string()? {
        "" => Err(DecodeError::ProtocolViolation("empty topic filter")),
        filter => Ok(filter.to_owned()),
    }
}

fn decode_subscribe(r: &mut Reader<'_>) -> Result<Subscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = topic_filter(r)?;
        let requested = r.u8()?;
        let qos = QoS::from_u8(requested).ok_or(DecodeError::InvalidQoS(requested))?;
        filters.push((filter, qos));
    }
    if filters.is_empty() {
        return Err(DecodeError::ProtocolViolation(
            "SUBSCRIBE without any topic filter",
        ));
    }
    Ok(Subscribe { packet_id, filters })
}

fn decode_suback(r: &mut Reader<'_>) -> Result<SubAck, DecodeError> {
    let packet_id = r.packet_id()?;
    let return_codes = r
        .rest()
        .iter()
        .map(|&raw| SubAckReturnCode::from_u8(raw).ok_or(DecodeError::InvalidSubAckReturnCode(raw)))
        .collect::<Result<Vec<_>, _>>()?;
    if return_codes.is_empty() {
        return Err(DecodeError::ProtocolViolation(
            "SUBACK without any return code",
        ));
    }
    Ok(SubAck {
        packet_id,
        return_codes,
    })
}

fn decode_unsubscribe(r: &mut Reader<'_>) -> Result<Unsubscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(topic_filter(r)?);
    }
    if filters.is_empty() {
        return Err(DecodeError::ProtocolViolation(
            "UNSUBSCRIBE without any topic filter",
        ));
    }
    Ok(Unsubscribe { packet_id, filters })
}
