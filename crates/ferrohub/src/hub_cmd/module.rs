//! `ferrohub hub module …`: module identities (like `az iot hub module-identity`).

use anyhow::Result;
use clap::Subcommand;
use hyper::Method;
use serde_json::Value;

use super::admin::{Conn, body, call, enc, warn_if_mqtt_unusable};

#[derive(Debug, Subcommand)]
pub enum ModuleCmd {
    /// Register a module of a device (SAS keys generated unless given).
    #[command(after_help = "Examples:\n  ferrohub hub module create gw filter\n  \
        ferrohub hub module create gw filter --gateway 127.0.0.4   # connection string for a module behind the gateway")]
    Create {
        device: String,
        module: String,
        #[command(flatten)]
        conn: Conn,
        /// Primary symmetric key (base64) [default: generated].
        #[arg(long)]
        primary_key: Option<String>,
        /// Print the connection string with `GatewayHostName=HOST` (an edge module).
        #[arg(long, value_name = "HOST")]
        gateway: Option<String>,
        /// Print the module as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a module and its connection string.
    #[command(after_help = "Example:\n  ferrohub hub module show gw filter --gateway 127.0.0.4")]
    Show {
        device: String,
        module: String,
        #[command(flatten)]
        conn: Conn,
        /// Print the connection string with `GatewayHostName=HOST`.
        #[arg(long, value_name = "HOST")]
        gateway: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List a device's modules.
    #[command(after_help = "Example:\n  ferrohub hub module list gw")]
    List {
        device: String,
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        json: bool,
    },
    /// Delete a module.
    #[command(after_help = "Example:\n  ferrohub hub module delete gw filter")]
    Delete {
        device: String,
        module: String,
        #[command(flatten)]
        conn: Conn,
    },
}

fn path(device: &str, module: &str) -> String {
    format!("/devices/{}/modules/{}", enc(device), enc(module))
}

pub async fn run(cmd: ModuleCmd) -> Result<()> {
    match cmd {
        ModuleCmd::Create {
            device,
            module,
            conn,
            primary_key,
            gateway,
            json,
        } => {
            let record =
                hub_wire::sas_module(&device, &module, Some(primary_key.unwrap_or_default()));
            let client = conn.client()?;
            let m = call(
                &client,
                Method::PUT,
                &path(&device, &module),
                Some(&body(&record)),
                &[],
            )
            .await?;
            warn_if_mqtt_unusable(&module);
            print_module(&m, json, &conn, gateway.as_deref())
        }
        ModuleCmd::Show {
            device,
            module,
            conn,
            gateway,
            json,
        } => {
            let client = conn.client()?;
            let m = call(&client, Method::GET, &path(&device, &module), None, &[]).await?;
            print_module(&m, json, &conn, gateway.as_deref())
        }
        ModuleCmd::List { device, conn, json } => {
            let client = conn.client()?;
            let list = call(
                &client,
                Method::GET,
                &format!("/devices/{}/modules", enc(&device)),
                None,
                &[],
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for m in list.as_array().into_iter().flatten() {
                    println!(
                        "{}\t{}\t{}",
                        m["moduleId"].as_str().unwrap_or_default(),
                        m["authentication"]["type"].as_str().unwrap_or_default(),
                        m["connectionState"].as_str().unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        ModuleCmd::Delete {
            device,
            module,
            conn,
        } => {
            let client = conn.client()?;
            client
                .send(
                    Method::DELETE,
                    &path(&device, &module),
                    None,
                    &[("If-Match", "*")],
                )
                .await?
                .ok()?;
            println!("deleted {device}/{module}");
            Ok(())
        }
    }
}

fn print_module(m: &Value, json: bool, conn: &Conn, gateway: Option<&str>) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(m)?);
        return Ok(());
    }
    let (device, module) = (
        m["deviceId"].as_str().unwrap_or_default(),
        m["moduleId"].as_str().unwrap_or_default(),
    );
    println!("moduleId:        {module}");
    println!("deviceId:        {device}");
    println!(
        "authentication:  {}",
        m["authentication"]["type"].as_str().unwrap_or_default()
    );
    println!(
        "connectionState: {}",
        m["connectionState"].as_str().unwrap_or_default()
    );
    if let Some(key) = m["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .filter(|k| !k.is_empty())
    {
        let host = super::load(&conn.config_path())?.hostname;
        let gw = gateway.map_or_else(String::new, |g| format!(";GatewayHostName={g}"));
        println!(
            "connection string: HostName={host};DeviceId={device};ModuleId={module};SharedAccessKey={key}{gw}"
        );
    }
    Ok(())
}
