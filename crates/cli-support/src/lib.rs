//! What every `ferrohub` command shares, wherever it is implemented (the binary's front end, the
//! quickstart, the bench), so they start and word things alike:
//!
//! * [`runtime`]: the multi-threaded async runtime a command runs on;
//! * [`hints`]: the answers to newcomers' mistakes (a missing configuration, a privileged port,
//!   an error printed as one line).
#![forbid(unsafe_code)]

pub mod hints;

use anyhow::{Context as _, Result};

/// The async runtime a command runs on (all drivers enabled).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
