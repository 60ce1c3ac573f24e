//! `ferrohub hub twin …` and `ferrohub hub invoke-method`: device and module twins, direct
//! methods (like `az iot hub device-twin` and `az iot hub invoke-device-method`).

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use hub_wire::{DesiredPatch, MethodRequest, TwinPatch};
use hyper::Method;
use serde_json::Value;

use super::admin::{Conn, body, call, enc};

/// A device, or one of its modules.
#[derive(Debug, Args, Clone)]
pub struct Target {
    /// The device id.
    device: String,
    /// A module of the device.
    #[arg(long, short = 'm')]
    module: Option<String>,
}

impl Target {
    fn path(&self, suffix: &str) -> String {
        match &self.module {
            Some(m) => format!("/twins/{}/modules/{}{suffix}", enc(&self.device), enc(m)),
            None => format!("/twins/{}{suffix}", enc(&self.device)),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TwinCmd {
    /// Print a twin (tags, desired and reported properties, versions).
    #[command(after_help = "Examples:\n  ferrohub hub twin show dev1\n  \
        ferrohub hub twin show gw --module '$edgeHub'")]
    Show {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        conn: Conn,
    },
    /// Merge-patch desired properties and/or tags (JSON); prints the new twin.
    #[command(
        after_help = "Examples:\n  ferrohub hub twin update dev1 --desired '{\"telemetryInterval\": 5}'\n  \
        ferrohub hub twin update dev1 --tags '{\"site\": \"north\"}'\n  \
        ferrohub hub twin update gw --module '$edgeHub' --desired @edgehub-desired.json"
    )]
    Update {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        conn: Conn,
        /// Desired properties to merge: JSON text, or @FILE.
        #[arg(long, value_name = "JSON")]
        desired: Option<String>,
        /// Tags to merge: JSON text, or @FILE.
        #[arg(long, value_name = "JSON")]
        tags: Option<String>,
    },
}

/// `ferrohub hub invoke-method DEVICE NAME`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  ferrohub hub invoke-method dev1 reboot --payload '{\"delay\": 5}'\n  \
    ferrohub hub invoke-method gw getStatus --module filter --timeout 10"
)]
pub struct InvokeArgs {
    #[command(flatten)]
    target: Target,
    /// The method name.
    name: String,
    #[command(flatten)]
    conn: Conn,
    /// The payload (JSON text, or @FILE) [default: null].
    #[arg(long, value_name = "JSON")]
    payload: Option<String>,
    /// Seconds to wait for the answer (5-300).
    #[arg(long, default_value_t = 30)]
    timeout: u32,
    /// Seconds to wait for the device to be connected (0: it must be connected now).
    #[arg(long, default_value_t = 0)]
    connect_timeout: u32,
}

/// JSON from the command line: text, or `@FILE`.
fn json_arg(text: &str) -> Result<Value> {
    let text = match text.strip_prefix('@') {
        Some(file) => {
            std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
        }
        None => text.to_owned(),
    };
    serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))
}

pub async fn twin(cmd: TwinCmd) -> Result<()> {
    let (conn, method, path, body) = match cmd {
        TwinCmd::Show { target, conn } => (conn, Method::GET, target.path(""), None),
        TwinCmd::Update {
            target,
            conn,
            desired,
            tags,
        } => {
            anyhow::ensure!(
                desired.is_some() || tags.is_some(),
                "give --desired and/or --tags"
            );
            let patch = TwinPatch {
                properties: match desired {
                    Some(d) => Some(DesiredPatch {
                        desired: json_arg(&d)?,
                    }),
                    None => None,
                },
                tags: tags.as_deref().map(json_arg).transpose()?,
            };
            (conn, Method::PATCH, target.path(""), Some(body(&patch)))
        }
    };
    let client = conn.client()?;
    let headers: &[(&str, &str)] = if method == Method::PATCH {
        &[("If-Match", "*")]
    } else {
        &[]
    };
    let twin = call(&client, method, &path, body.as_ref(), headers).await?;
    println!("{}", serde_json::to_string_pretty(&twin)?);
    Ok(())
}

pub async fn invoke(a: InvokeArgs) -> Result<bool> {
    let payload = match &a.payload {
        Some(p) => json_arg(p)?,
        None => Value::Null,
    };
    let request = MethodRequest {
        method_name: a.name.clone(),
        payload,
        response_timeout_in_seconds: Some(u64::from(a.timeout)),
        connect_timeout_in_seconds: Some(u64::from(a.connect_timeout)),
    };
    let client = a.conn.client()?;
    let answer = call(
        &client,
        Method::POST,
        &a.target.path("/methods"),
        Some(&body(&request)),
        &[],
    )
    .await?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(answer["status"]
        .as_u64()
        .is_some_and(|s| (200..300).contains(&s)))
}
