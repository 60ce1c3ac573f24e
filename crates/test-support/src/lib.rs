//! Test rigs shared by the workspace's integration tests, as a dev-dependency rather than one
//! crate's tests including another's files by path: an in-process hub on free loopback ports with
//! a minimal MQTT client and test certificates ([`hub`]), a provisioning service linked to such
//! hubs ([`dps`], feature `dps`), a gateway in front of a hub ([`gateway`], feature `edge`) and
//! free loopback addresses ([`net`]).
//!
//! Helpers that run the `ferrohub` binary stay in `crates/ferrohub/tests`: only that crate's tests
//! know the binary's path.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure

#[cfg(feature = "dps")]
pub mod dps;
#[cfg(feature = "edge")]
pub mod gateway;
pub mod hub;
pub mod net;
