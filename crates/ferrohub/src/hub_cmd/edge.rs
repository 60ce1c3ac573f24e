//! `ferrohub hub edge set-modules|status`: deployments for IoT Edge devices (like
//! `az iot edge set-modules`) and what their agents report.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::Value;

use super::admin::Conn;

#[derive(Debug, Subcommand)]
pub enum EdgeCmd {
    /// Validate a deployment manifest and write it to the edge device's `$edgeAgent`,
    /// `$edgeHub` (and module) twins; its edge agent applies it.
    #[command(after_help = "Examples:\n  \
        echo '{}' > empty.json                     # the empty deployment: the gateway, default route\n  \
        ferrohub hub edge set-modules gw --content empty.json --config hub/hub.toml\n  \
        ferrohub hub edge set-modules gw --content deployment.json\n\n\
        The manifest is Azure's: {\"modulesContent\": {\"$edgeAgent\": {\"properties.desired\": {...}},\n\
        \"$edgeHub\": {\"properties.desired\": {\"routes\": ...}}}} (see docs/agent.md). Nothing is\n\
        written when it is invalid; the reason is printed.")]
    SetModules(SetModulesArgs),
    /// What the edge device's agent reports: the deployment it applied and its modules.
    #[command(after_help = "Examples:\n  \
        ferrohub hub edge status gw --config hub/hub.toml\n  \
        ferrohub hub edge status gw --json      # the $edgeAgent reported properties")]
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct SetModulesArgs {
    /// The IoT Edge device.
    device: String,
    /// The deployment manifest (JSON).
    #[arg(long, value_name = "FILE")]
    content: PathBuf,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The IoT Edge device.
    device: String,
    /// Print the `$edgeAgent` reported properties as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

pub async fn run(cmd: EdgeCmd) -> Result<bool> {
    match cmd {
        EdgeCmd::SetModules(a) => set_modules(a).await.map(|()| true),
        EdgeCmd::Status(a) => status(a).await,
    }
}

async fn set_modules(a: SetModulesArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.content)
        .with_context(|| format!("cannot read {}", a.content.display()))?;
    let json: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", a.content.display()))?;
    let manifest = edge_agent::deployment::parse_manifest(&json)
        .with_context(|| format!("{} is not a valid deployment", a.content.display()))?;
    let routes = edge_agent::deployment::check_edge_hub(&manifest.edge_hub)?
        .map(|c| c.routes.iter().map(|r| r.name.clone()).collect::<Vec<_>>())
        .unwrap_or_default();
    let client = a.conn.client()?;
    edge_agent::hub_side::set_modules(&client, &a.device, &manifest).await?;
    let modules: Vec<&str> = manifest
        .deployment
        .start_order()
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    println!(
        "Deployment written for {}: {} module(s){}{}; routes: {}",
        a.device,
        modules.len(),
        if modules.is_empty() { "" } else { " " },
        modules.join(", "),
        if routes.is_empty() {
            "the gateway's own".to_owned()
        } else {
            routes.join(", ")
        }
    );
    println!(
        "Its edge agent applies it and reports in $edgeAgent: ferrohub hub edge status {}",
        a.device
    );
    Ok(())
}

async fn status(a: StatusArgs) -> Result<bool> {
    let client = a.conn.client()?;
    let twin = client
        .send(
            Method::GET,
            &format!(
                "/twins/{}/modules/$edgeAgent",
                iot_auth::percent_encode(&a.device)
            ),
            None,
            &[],
        )
        .await?
        .ok()
        .with_context(|| format!("{} has no $edgeAgent (is it an IoT Edge device?)", a.device))?
        .json();
    let reported = &twin["properties"]["reported"];
    if a.json {
        println!("{}", serde_json::to_string_pretty(reported)?);
        return Ok(true);
    }
    let desired_version = twin["properties"]["desired"]["$version"].as_u64();
    let Some(code) = reported["lastDesiredStatus"]["code"].as_u64() else {
        println!("{}: no report from its edge agent yet", a.device);
        return Ok(false);
    };
    println!(
        "{}: deployment version {} of {} — {code} {}",
        a.device,
        reported["lastDesiredVersion"],
        desired_version.map_or_else(|| "?".into(), |v| v.to_string()),
        reported["lastDesiredStatus"]["description"]
            .as_str()
            .filter(|d| !d.is_empty())
            .unwrap_or("applied"),
    );
    let mut rows = vec![["NAME", "STATUS", "RESTARTS", "LAST START"].map(String::from)];
    for section in ["systemModules", "modules"] {
        if let Some(m) = reported[section].as_object() {
            for (name, s) in m {
                rows.push([
                    name.clone(),
                    s["runtimeStatus"].as_str().unwrap_or("?").to_owned(),
                    s["restartCount"].to_string(),
                    s["lastStartTimeUtc"].as_str().unwrap_or("").to_owned(),
                ]);
            }
        }
    }
    crate::agent_cmd::print_table(&rows);
    Ok(code == 200)
}
