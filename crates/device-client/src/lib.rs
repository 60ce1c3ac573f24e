//! A device's side of the hub, for the commands that act as one (quickstart, `system check`'s
//! connect check, `edge check`, bench): [`DeviceConn`], MQTT over TLS with an X.509 identity or
//! a SAS token, directly or through a transparent gateway; and [`tls_probe`], TLS handshakes that
//! show whether a server chain works for a client trusting only the root.
#![forbid(unsafe_code)]

mod mqtt;
pub mod tls_probe;

pub use mqtt::{DeviceConn, Refused, parse_method_topic};
