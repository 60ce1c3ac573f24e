//! # ferrohub edge agent
//!
//! IoT Edge's `edgeAgent`: it follows the deployment the hub holds in the edge device's
//! `$edgeAgent` module twin, runs the modules it names as supervised local processes (or
//! containers through the docker/podman CLI), gives each its identity at the hub and the
//! environment an SDK module client expects, restarts them with back-off, captures their logs, and
//! reports what runs in the `$edgeAgent` reported properties.
//!
//! ```text
//!  hub ── $edgeAgent twin (MQTT) ──► twin ──► deployment::parse ──► plan ──► supervisor ──► processes
//!   ▲                                  ▲              (refused: reason reported)        │ logs/, workload/
//!   └── module identities (REST, the device's key) ◄── identities        reported ◄─────┘
//! ```
//!
//! Sans-IO where it can be: [`deployment`] (parsing and validation), [`plan`] (the reconciler),
//! [`backoff`] (restart decisions) and [`reported`] (the reported document and its patches) do no
//! I/O; [`supervisor`], [`twin`], [`identities`], [`workload`] and [`control`] do.
#![forbid(unsafe_code)]

mod agent;
pub mod backoff;
pub mod config;
pub mod control;
pub mod deployment;
pub mod hub_side;
pub mod identities;
pub mod launch;
pub mod plan;
pub mod reported;
pub mod supervisor;
pub mod twin;
pub mod workload;

pub use agent::{Agent, AgentError, EDGE_HUB, ListEntry};
pub use config::AgentConfig;
/// Module logs and their rotation: one implementation, shared with the gateway (which writes
/// its own log file when it runs without an agent).
pub use edge::logs;

/// Runs an agent with `config` until `shutdown` turns true.
pub async fn run(
    config: AgentConfig,
    clock: ferrohub_runtime::time::SharedClock,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), AgentError> {
    Agent::open(config, clock)?.run(shutdown).await
}
