//! # ferrohub identity service
//!
//! Three daemons on one device, each an HTTP/1.1 API on a Unix socket, in the shapes of the Azure
//! IoT Identity Service so existing clients work unchanged:
//!
//! ```text
//!  module process ──uid──► identityd ──► keyd (keys never leave it; opaque handles)
//!                             │    └────► certd (certificates, CSR issuance, trust bundle)
//!                             └──► DPS / hub (provisioning, module identities)
//! ```
//!
//! The caller's uid comes from the socket's peer credentials ([`uds::Caller`]); each daemon
//! authorizes by uid against its `[[principal]]` entries. [`config`] turns the device's
//! super-config into the three daemon configs (`ferrohub config apply`).
#![forbid(unsafe_code)]

pub mod certd;
pub mod client;
pub mod config;
pub mod http;
pub mod identityd;
pub mod keyd;
pub mod uds;
pub mod wire;
