//! A sans-IO codec for MQTT 3.1.1 (and the 3.1 `MQIsdp` CONNECT), as spoken by the Azure IoT
//! device SDKs.
//!
//! There is no I/O here: [`decode`] takes the bytes received so far and either returns one
//! packet with the number of bytes it used, asks for more bytes (`Ok(None)`), or names the
//! protocol violation; [`encode`] appends the canonical bytes of a packet to a buffer.
//!
//! Parsing goes through a bounds-checked reader, so no input can make the decoder panic, and a
//! packet larger than the caller's limit is refused from its fixed header, before its body is
//! buffered.
//!
//! ```
//! use mqtt_codec::{decode, encode, Packet, Publish, QoS};
//!
//! let publish = Packet::Publish(Publish {
//!     dup: false,
//!     qos: QoS::AtLeastOnce,
//!     retain: false,
//!     topic: "devices/dev1/messages/events/".to_owned(),
//!     packet_id: Some(7),
//!     payload: b"{\"t\":21.5}".to_vec(),
//! });
//! let mut wire = Vec::new();
//! encode(&publish, &mut wire)?;
//! encode(&Packet::PingReq, &mut wire)?;
//!
//! // A partial packet asks for more bytes.
//! assert_eq!(decode(&wire[..10], 64 * 1024)?, None);
//!
//! // Whole packets come out one at a time with the bytes they used.
//! let (first, used) = decode(&wire, 64 * 1024)?.ok_or("incomplete")?;
//! assert_eq!(first, publish);
//! let (second, _) = decode(&wire[used..], 64 * 1024)?.ok_or("incomplete")?;
//! assert_eq!(second, Packet::PingReq);
//!
//! // A packet over the limit is refused.
//! assert!(matches!(
//!     decode(&wire, 16),
//!     Err(mqtt_codec::DecodeError::PacketTooLarge { size: 45, max: 16 })
//! ));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! With the `tokio` feature, [`PacketReader`] reads whole packets from an async byte stream.
#![forbid(unsafe_code)]

mod decode;
mod encode;
mod error;
mod header;
mod packets;
mod reader;
#[cfg(feature = "tokio")]
mod stream;
mod topic;

pub use decode::decode;
pub use encode::encode;
pub use error::{DecodeError, EncodeError};
pub use header::MAX_REMAINING_LENGTH;
pub use packets::{
    ConnAck, Connect, ConnectReturnCode, Packet, Publish, QoS, SubAck, SubAckReturnCode, Subscribe,
    Unsubscribe, Will, packet_type_name,
};
#[cfg(feature = "tokio")]
pub use stream::{PacketReader, ReadError};
pub use topic::{is_valid_topic_filter, is_valid_topic_name};
