//! Encoding CONNECT.

use super::{bin_len, put_bin, put_u16, str_len};
use crate::decode::connect::{PROTOCOL_NAMES, flag};
use crate::error::EncodeError;
use crate::packets::Connect;
use crate::topic::is_valid_topic_name;

/// Checks the CONNECT and returns its body size.
pub(super) fn body_len(c: &Connect) -> Result<usize, EncodeError> {
    if !PROTOCOL_NAMES.contains(&c.protocol_name.as_str()) {
        return Err(EncodeError::Invalid(
            "protocol name must be \"MQTT\" or \"MQIsdp\"",
        ));
    }
    if c.password.is_some() && c.username.is_none() {
        return Err(EncodeError::Invalid("CONNECT password without a user name"));
    }
    // Protocol name, then level, flags and keep-alive (4 bytes).
    let mut len = str_len(&c.protocol_name, "protocol name")? + 4;
    len += str_len(&c.client_id, "client id")?;
    if let Some(will) = &c.will {
        if !is_valid_topic_name(&will.topic) {
            return Err(EncodeError::Invalid(
                "will topic is empty or has a wildcard",
            ));
        }
        len += str_len(&will.topic, "will topic")?;
        len += bin_len(&will.payload, "will payload")?;
    }
    if let Some(username) = &c.username {
        len += str_len(username, "user name")?;
    }
    if let Some(password) = &c.password {
        len += bin_len(password, "password")?;
    }
    Ok(len)
}

/// The connect flags byte.
fn flags(c: &Connect) -> u8 {
    let mut flags = 0;
    if c.clean_session {
        flags |= flag::CLEAN_SESSION;
    }
    if let Some(will) = &c.will {
        flags |= flag::WILL | (will.qos.as_u8() << flag::WILL_QOS_SHIFT);
        if will.retain {
            flags |= flag::WILL_RETAIN;
        }
    }
    if c.username.is_some() {
        flags |= flag::USERNAME;
    }
    if c.password.is_some() {
        flags |= flag::PASSWORD;
    }
    flags
}

/// Appends the body of a CONNECT that passed [`body_len`].
pub(super) fn write_body(c: &Connect, out: &mut Vec<u8>) {
    put_bin(c.protocol_name.as_bytes(), out);
    out.push(c.protocol_level);
    out.push(flags(c));
    put_u16(c.keep_alive, out);
    put_bin(c.client_id.as_bytes(), out);
    if let Some(will) = &c.will {
        put_bin(will.topic.as_bytes(), out);
        put_bin(&will.payload, out);
    }
    if let Some(username) = &c.username {
        put_bin(username.as_bytes(), out);
    }
    if let Some(password) = &c.password {
        put_bin(password, out);
    }
}
