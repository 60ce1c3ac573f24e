//! The one MQTT 3.1.1 client of the project: the quickstart's device client, the gateway's
//! upstream connections, the test rigs and the bench's control connections speak MQTT through
//! it, so CONNECT, packet ids, PUBACK/SUBACK matching and the read loop are written once.
//!
//! It runs over a stream that is already established (TCP, or TLS with or without a client
//! certificate): how to reach and authenticate the server is the caller's business. Reads go
//! through the codec's [`PacketReader`], so the packet-size limit and end-of-stream rules are the
//! servers' own.
//!
//! ```
//! # async fn demo(stream: tokio::io::DuplexStream) -> Result<(), mqtt_client::ClientError> {
//! use mqtt_client::{Client, Login};
//! use mqtt_codec::QoS;
//!
//! let login = Login::new("dev1").username("hub/dev1/?api-version=2021-04-12").password(b"sas");
//! let mut client = Client::connect(stream, &login).await?;
//! client.subscribe(&[("devices/dev1/messages/devicebound/#", QoS::AtLeastOnce)]).await?;
//! client.publish_acked("devices/dev1/messages/events/", b"{}".to_vec()).await?;
//! client.disconnect().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod client;
mod split;

pub use client::{Client, ClientError, Login, MAX_PACKET};
pub use split::{Incoming, Outgoing};
