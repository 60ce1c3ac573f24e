//! # ferrohub runtime
//!
//! What every ferrohub server shares and none of them owns: the hub, the provisioning service,
//! the edge gateway, the edge agent and the on-device identity service all build on it, so none
//! of them links another server's code (the identity service does not link the hub's MQTT server,
//! REST API or SQLite).
//!
//! * [`time`]: the injected clock and the service API's time formats;
//! * [`clock`]: the commands' wall clock (now in whole seconds, `--not-before` style times);
//! * [`tls`]: server and client TLS configs, reloadable server certificates;
//! * [`net`]: accept loops, TLS handshakes by a deadline, HTTPS and `/metrics` serving;
//! * [`error`]: the HTTP error type every REST API answers with;
//! * [`etag`]: etags and the `If-Match` rule of writes;
//! * [`metrics`]: counters, latency histograms and the Prometheus text response;
//! * [`config`]: the `[listen]` and `[tls]` tables every server's config file has;
//! * [`store`]: the storage error and (feature `sqlite`) the durable SQLite open;
//! * [`cas`]: CA certificates with proof of possession over a [`cas::CaStore`];
//! * [`fsperm`]: private (0700/0600) directories and files;
//! * [`atomic`]: the one atomic, durable file write;
//! * [`datalock`]: one process per data directory;
//! * [`shutdown`]: waiting for SIGTERM or Ctrl-C;
//! * [`client`]: the HTTPS client of the service APIs.
#![forbid(unsafe_code)]

pub use ferrohub_fs::atomic;
pub mod cas;
pub mod client;
pub mod clock;
pub mod config;
pub use ferrohub_fs::datalock;
pub mod error;
pub mod etag;
pub use ferrohub_fs::fsperm;
pub mod metrics;
pub mod net;
pub mod shutdown;
pub mod store;
pub mod time;
pub mod tls;
