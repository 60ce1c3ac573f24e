//! The hub's device session, free of sockets and protocol packets: who a client is
//! ([`auth`]), which senders a gateway's connection may speak for ([`forwarded`]).
//!
//! Protocol heads (today MQTT, see [`crate::mqtt`]) translate what their clients send into calls
//! here and the answers back into their own packets; an AMQP or HTTPS head calls the same code.

pub mod auth;
pub mod forwarded;
pub(crate) mod on_behalf;
