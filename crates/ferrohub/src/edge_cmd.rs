//! `ferrohub edge init|run`: the transparent gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use hyper::{Method, StatusCode};
use pki::{KeyAlgorithm, Profile};
use serde_json::json;

use crate::certs::{KeyOpts, Plan, issue_files};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
#[command(after_help = "Examples:\n  ferrohub certs edge-ca gw\n  \
    ferrohub edge init --dir edge --edge-id gw --hostname 127.0.0.4 --listen 127.0.0.4:8883 \\\n      \
    --hub-config hub/hub.toml --ca-dir certs --edge-ca gw\n  \
    ferrohub hub device create child1 --parent gw --config hub/hub.toml\n  \
    ferrohub edge --config edge/edge.toml        # children connect with GatewayHostName=127.0.0.4")]
pub struct EdgeArgs {
    /// The gateway configuration to serve.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<EdgeCmd>,
}

#[derive(Debug, Subcommand)]
pub enum EdgeCmd {
    /// Register the edge device at the hub (if needed) and write DIR/edge.toml with a TLS server
    /// certificate issued by the edge CA.
    Init(InitArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[arg(long, default_value = "edge")]
    dir: PathBuf,
    /// The edge device's id at the hub (created as an IoT Edge device if missing).
    #[arg(long)]
    edge_id: String,
    /// The gateway's host name or IP: what children put in GatewayHostName (in its certificate).
    #[arg(long = "hostname", required = true, value_name = "HOST")]
    hostnames: Vec<String>,
    /// Where children connect.
    #[arg(long, default_value = "0.0.0.0:8883")]
    listen: SocketAddr,
    #[command(flatten)]
    hub: crate::hub_cmd::admin::Conn,
    /// The certificate directory holding the CA that issues the gateway's certificate.
    #[arg(long, default_value = "certs")]
    ca_dir: PathBuf,
    /// The edge CA's name in --ca-dir (from `ferrohub certs edge-ca NAME`) [default: root-ca].
    #[arg(long, value_name = "NAME")]
    edge_ca: Option<String>,
}

pub fn run(args: EdgeArgs) -> Result<bool> {
    match (args.cmd, args.config) {
        (Some(EdgeCmd::Init(a)), _) => crate::hub_cmd::runtime()?.block_on(init(a)).map(|()| true),
        (None, Some(config)) => serve(&config),
        (None, None) => {
            bail!("pass --config FILE to serve a gateway, or `ferrohub edge init` (see --help)")
        }
    }
}

async fn init(a: InitArgs) -> Result<()> {
    let client = a.hub.client()?;
    let hub_cfg = crate::hub_cmd::load(&a.hub.config_path())?;
    let dev = format!("/devices/{}", iot_auth::percent_encode(&a.edge_id));
    let r = client.send(Method::GET, &dev, None, &[]).await?;
    if r.status == StatusCode::NOT_FOUND {
        let body = json!({"deviceId": a.edge_id, "capabilities": {"iotEdge": true}});
        client
            .send(Method::PUT, &dev, Some(&body), &[])
            .await?
            .ok()?;
    } else if r.json()["capabilities"]["iotEdge"] != true {
        bail!(
            "{} exists at the hub but is not an IoT Edge device",
            a.edge_id
        );
    }
    let module = client
        .send(Method::GET, &format!("{dev}/modules/$edgeHub"), None, &[])
        .await?
        .ok()?
        .json();
    let key = module["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .context("$edgeHub has no SAS key")?
        .to_owned();
    let issuer = a.edge_ca.as_ref().map_or_else(
        || "root-ca".to_owned(),
        |n| format!("iot-edge-device-ca-{n}"),
    );
    let stem = format!("gateway-{}", a.hostnames[0].replace(':', "_"));
    if !a.ca_dir.join(format!("{stem}.cert.pem")).exists() {
        let plan = Plan {
            what: "gateway server certificate",
            profile: Profile::Server,
            cn: a.hostnames[0].clone(),
            sans: a.hostnames.clone(),
            stem: stem.clone(),
            full_chain: true,
            issuer: Some((issuer, None)),
        };
        issue_files(
            &a.ca_dir,
            &plan,
            &KeyOpts {
                key_alg: KeyAlgorithm::P256,
                days: None,
                not_before: None,
                force: false,
            },
        )?;
    }
    let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let addr = |l: SocketAddr| {
        if l.ip().is_unspecified() {
            format!("127.0.0.1:{}", l.port())
        } else {
            l.to_string()
        }
    };
    let config = edge::EdgeConfig {
        edge_id: a.edge_id.clone(),
        hub_hostname: hub_cfg.hostname.clone(),
        hub_mqtt: addr(hub_cfg.listen.mqtt),
        hub_https: addr(hub_cfg.listen.https),
        hub_ca: abs(hub_cfg
            .tls
            .ca
            .clone()
            .context("the hub config has no tls.ca")?),
        edge_hub_key: key,
        tls_cert: abs(a.ca_dir.join(format!("{stem}-full-chain.cert.pem"))),
        tls_key: abs(a.ca_dir.join(format!("{stem}.key.pem"))),
        data_dir: "data".into(),
        routes: vec!["FROM /messages/* INTO $upstream".into()],
        store_ttl_hours: 2,
        listen: a.listen,
        store_max_mib: 1024,
        store_full: edge::StoreFull::default(),
        metrics_listen: None,
    };
    let path = a.dir.join("edge.toml");
    crate::certs::store::write_all(&[crate::certs::store::Output {
        path: path.clone(),
        contents: format!(
            "# ferrohub edge gateway (created by `ferrohub edge init`)\n{}",
            toml::to_string_pretty(&config)?
        ),
        secret: true,
    }])?;
    println!(
        "Created {} for edge device {} (hub {})",
        path.display(),
        a.edge_id,
        hub_cfg.hostname
    );
    println!(
        "Children: `ferrohub hub device create CHILD --parent {}`; they connect with GatewayHostName={}",
        a.edge_id, a.hostnames[0]
    );
    println!("Start it with: ferrohub edge --config {}", path.display());
    Ok(())
}

fn serve(path: &std::path::Path) -> Result<bool> {
    let config = edge::EdgeConfig::load(path)?;
    crate::hub_cmd::runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        eprintln!(
            "edge gateway {} serving children on {} (Ctrl-C to stop)",
            config.edge_id,
            listener.local_addr()?
        );
        let gateway = edge::Gateway::open(config, Arc::new(hub::time::SystemClock))?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            crate::hub_cmd::wait_for_signal().await;
            let _ = tx.send(true);
        });
        gateway
            .run(listener, std::time::Duration::from_secs(300), rx)
            .await?;
        anyhow::Ok(true)
    })
}
