//! `ferrohub hub auth`: switch device or module SAS authentication off and on at a running hub
//! (`PUT /configuration/auth`), without editing hub.toml or restarting.

use anyhow::Result;
use clap::{Subcommand, ValueEnum};
use hyper::Method;
use serde_json::{Value, json};

use super::admin::{Conn, call};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Subcommand)]
pub enum AuthCmd {
    /// Allow (on) or refuse (off) SAS tokens for devices; X.509 devices are not affected.
    #[command(
        after_help = "Examples:\n  ferrohub hub auth device-sas off --config hub/hub.toml   # X.509 only from now on\n  \
        ferrohub hub auth device-sas on --config hub/hub.toml\n\n\
        Takes effect at once for new connections and is kept across restarts (in the registry; it\n\
        overrides hub.toml's [auth] disable_device_sas). Open connections keep going until they reconnect."
    )]
    DeviceSas {
        #[arg(value_enum)]
        switch: Switch,
        #[command(flatten)]
        conn: Conn,
    },
    /// Allow (on) or refuse (off) SAS tokens for modules.
    #[command(after_help = "Example:\n  ferrohub hub auth module-sas off --config hub/hub.toml")]
    ModuleSas {
        #[arg(value_enum)]
        switch: Switch,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show whether device and module SAS authentication is on.
    #[command(after_help = "Example:\n  ferrohub hub auth show --config hub/hub.toml")]
    Show {
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn run(cmd: AuthCmd) -> Result<()> {
    let (conn, patch) = match cmd {
        AuthCmd::DeviceSas { switch, conn } => (
            conn,
            Some(json!({ "disableDeviceSas": switch == Switch::Off })),
        ),
        AuthCmd::ModuleSas { switch, conn } => (
            conn,
            Some(json!({ "disableModuleSas": switch == Switch::Off })),
        ),
        AuthCmd::Show { conn } => (conn, None),
    };
    let client = conn.client()?;
    let state = match &patch {
        Some(body) => call(&client, Method::PUT, "/configuration/auth", Some(body), &[]).await?,
        None => call(&client, Method::GET, "/configuration/auth", None, &[]).await?,
    };
    let on = |v: &Value| if v == &Value::Bool(true) { "off" } else { "on" };
    println!("device SAS: {}", on(&state["disableDeviceSas"]));
    println!("module SAS: {}", on(&state["disableModuleSas"]));
    Ok(())
}
