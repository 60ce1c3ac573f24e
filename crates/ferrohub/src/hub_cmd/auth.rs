//! `ferrohub hub auth`: switch device or module SAS authentication off and on at a running hub
//! (`PUT /configuration/auth`), without editing hub.toml or restarting.

use anyhow::Result;
use clap::{Subcommand, ValueEnum};
use hub_wire::{AuthPatch, AuthState};
use hyper::Method;

use super::admin::{Conn, body, call};

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
            Some(AuthPatch {
                disable_device_sas: Some(switch == Switch::Off),
                disable_module_sas: None,
            }),
        ),
        AuthCmd::ModuleSas { switch, conn } => (
            conn,
            Some(AuthPatch {
                disable_device_sas: None,
                disable_module_sas: Some(switch == Switch::Off),
            }),
        ),
        AuthCmd::Show { conn } => (conn, None),
    };
    let client = conn.client()?;
    let path = "/configuration/auth";
    let state = match &patch {
        Some(p) => call(&client, Method::PUT, path, Some(&body(p)), &[]).await?,
        None => call(&client, Method::GET, path, None, &[]).await?,
    };
    let state: AuthState = serde_json::from_value(state)?;
    let on = |disabled: bool| if disabled { "off" } else { "on" };
    println!("device SAS: {}", on(state.disable_device_sas));
    println!("module SAS: {}", on(state.disable_module_sas));
    Ok(())
}
