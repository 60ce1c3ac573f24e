//! Decoding CONNECT, the one packet with optional fields and a protocol version.

use crate::error::DecodeError;
use crate::packets::{Connect, QoS, Will};
use crate::reader::Reader;
use crate::topic::is_valid_topic_name;

/// CONNECT flag bits (MQTT 3.1.1 section 3.1.2.3).
pub(crate) mod flag {
    pub(crate) const RESERVED: u8 = 0x01;
    pub(crate) const CLEAN_SESSION: u8 = 0x02;
    pub(crate) const WILL: u8 = 0x04;
    pub(crate) const WILL_QOS_SHIFT: u8 = 3;
    pub(crate) const WILL_QOS_MASK: u8 = 0x18;
    pub(crate) const WILL_RETAIN: u8 = 0x20;
    pub(crate) const PASSWORD: u8 = 0x40;
    pub(crate) const USERNAME: u8 = 0x80;
}

/// The protocol names the codec speaks: MQTT 3.1.1 and its predecessor 3.1.
pub(crate) const PROTOCOL_NAMES: [&str; 2] = ["MQTT", "MQIsdp"];

/// How many characters of an unknown protocol name an error keeps (for log lines).
const NAME_IN_ERROR_CHARS: usize = 32;

/// The fields after the variable header.
struct Payload {
    client_id: String,
    will: Option<Will>,
    username: Option<String>,
    password: Option<Vec<u8>>,
}

/// Decodes a CONNECT body.
///
/// Levels 3 (MQTT 3.1) and 4 (3.1.1) are decoded strictly. A CONNECT of any other level is still
/// returned, so the server can answer it with CONNACK return code 1: its payload is read with the
/// 3.1.1 layout when that works, and otherwise left out (empty client id, no will, user name or
/// password), since other versions (such as MQTT 5 with its properties) lay it out differently.
pub(crate) fn decode_connect(r: &mut Reader<'_>) -> Result<Connect, DecodeError> {
    let protocol_name = r.string()?;
    if !PROTOCOL_NAMES.contains(&protocol_name) {
        let shown = protocol_name.chars().take(NAME_IN_ERROR_CHARS).collect();
        return Err(DecodeError::InvalidProtocolName(shown));
    }
    let protocol_level = r.u8()?;
    let flags = r.u8()?;
    let keep_alive = r.u16()?;
    let payload = match decode_payload(flags, r) {
        Ok(payload) => payload,
        Err(e) if matches!(protocol_level, 3 | 4) => return Err(e),
        Err(_) => {
            r.rest();
            Payload {
                client_id: String::new(),
                will: None,
                username: None,
                password: None,
            }
        }
    };
    Ok(Connect {
        protocol_name: protocol_name.to_owned(),
        protocol_level,
        clean_session: flags & flag::CLEAN_SESSION != 0,
        keep_alive,
        client_id: payload.client_id,
        will: payload.will,
        username: payload.username,
        password: payload.password,
    })
}

/// Checks the connect flags and reads the payload they announce, to the last byte.
fn decode_payload(flags: u8, r: &mut Reader<'_>) -> Result<Payload, DecodeError> {
    if flags & flag::RESERVED != 0 {
        return Err(DecodeError::ProtocolViolation(
            "reserved CONNECT flag (bit 0) is set",
        ));
    }
    let has_will = flags & flag::WILL != 0;
    let will_qos_bits = (flags & flag::WILL_QOS_MASK) >> flag::WILL_QOS_SHIFT;
    let will_retain = flags & flag::WILL_RETAIN != 0;
    if !has_will && (will_qos_bits != 0 || will_retain) {
        return Err(DecodeError::ProtocolViolation(
            "will QoS or will retain set without the will flag",
        ));
    }
    let will_qos = QoS::from_u8(will_qos_bits).ok_or(DecodeError::InvalidQoS(will_qos_bits))?;
    let has_username = flags & flag::USERNAME != 0;
    let has_password = flags & flag::PASSWORD != 0;
    if has_password && !has_username {
        return Err(DecodeError::ProtocolViolation(
            "CONNECT password flag set without the user name flag",
        ));
    }
    let client_id = r.string()?.to_owned();
    let will = if has_will {
        let topic = r.string()?;
        if !is_valid_topic_name(topic) {
            return Err(DecodeError::ProtocolViolation(
                "will topic is empty or has a wildcard",
            ));
        }
        let payload = r.binary()?.to_vec();
        Some(Will {
            topic: topic.to_owned(),
            payload,
            qos: will_qos,
            retain: will_retain,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?.to_owned())
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?.to_vec())
    } else {
        None
    };
    super::finish(r, 1)?;
    Ok(Payload {
        client_id,
        will,
        username,
        password,
    })
}
