//! `ferrohub edge init|run`: the transparent gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use hyper::{Method, StatusCode};
use pki::{KeyAlgorithm, Profile};

use crate::certs::{KeyOpts, Plan, issue_files};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
#[command(
    after_help = "Two ways to run a gateway. With -c FILE, a file with `edge_id` is an edge.toml \
    (from `edge init`); anything else is the device super-config, and the gateway then takes its \
    identity and $edgeHub tokens from identityd and keyd, and its TLS certificate from certd (issued \
    from [edge_ca], or a quickstart CA made in keyd when [edge_ca] is absent; renewed at 2/3 of its life).\n\n\
    Examples:\n  \
    # identity service mode (seed 001): config.toml has hostname, trust_bundle_cert, [provisioning], [edge_ca]\n  \
    sudo ferrohub config apply -c /etc/ferrohub/config.toml && sudo ferrohub identity run &\n  \
    sudo ferrohub edge -c /etc/ferrohub/config.toml --listen 0.0.0.0:8883 --ip 192.168.1.20\n  \
    openssl s_client -connect GATEWAY:8883 -CAfile root-ca.cert.pem -showcerts   # Verify return code: 0 (ok)\n\n  \
    # file mode\n  \
    ferrohub certs edge-ca gw\n  \
    ferrohub edge init --dir edge --edge-id gw --hostname 127.0.0.4 --listen 127.0.0.4:8883 \\\n      \
    --config hub/hub.toml --ca-dir certs --edge-ca gw\n  \
    ferrohub hub device create child1 --parent gw --config hub/hub.toml\n  \
    ferrohub edge --config edge/edge.toml        # children connect with GatewayHostName=127.0.0.4"
)]
pub struct EdgeArgs {
    /// The gateway configuration to serve: an edge.toml, or the device super-config
    /// (/etc/ferrohub/config.toml) for identity service mode.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(subcommand)]
    cmd: Option<EdgeCmd>,
}

/// Settings of identity service mode (`-c config.toml`); edge.toml carries its own.
#[derive(Debug, Args)]
pub struct IdentityArgs {
    /// Prefix of /etc/ferrohub, /run/ferrohub and /var/lib/ferrohub (as `config apply --root`).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Where children connect [default: 0.0.0.0:8883].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Local registry, store and TLS files [default: ROOT/var/lib/ferrohub/edge].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// An IP address children may connect to, added to the certificate (repeatable).
    #[arg(long = "ip", value_name = "IP")]
    ips: Vec<std::net::IpAddr>,
    /// A route in IoT Edge's language (repeatable) [default: FROM /messages/* INTO $upstream].
    #[arg(long = "route", value_name = "ROUTE")]
    routes: Vec<String>,
    /// How long messages wait for the hub [default: 2].
    #[arg(long, value_name = "HOURS")]
    store_ttl_hours: Option<u64>,
    /// The hub's MQTT address [default: HUB:8883, HUB from identityd].
    #[arg(long, value_name = "HOST:PORT")]
    hub_mqtt: Option<String>,
    /// The hub's HTTPS address [default: HUB:443].
    #[arg(long, value_name = "HOST:PORT")]
    hub_https: Option<String>,
    /// How often the certificate's renewal time is checked [default: 60].
    #[arg(long, value_name = "SECONDS")]
    renew_check_secs: Option<u64>,
}

impl IdentityArgs {
    fn any(&self) -> bool {
        self.root.is_some()
            || self.listen.is_some()
            || self.data_dir.is_some()
            || !self.ips.is_empty()
            || !self.routes.is_empty()
            || self.store_ttl_hours.is_some()
            || self.hub_mqtt.is_some()
            || self.hub_https.is_some()
            || self.renew_check_secs.is_some()
    }
}

#[derive(Debug, Subcommand)]
pub enum EdgeCmd {
    /// Register the edge device at the hub (if needed) and write DIR/edge.toml with a TLS server
    /// certificate issued by the edge CA.
    Init(InitArgs),
    #[command(flatten)]
    Agent(crate::agent_cmd::AgentCmd),
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

impl EdgeArgs {
    /// Whether this runs a gateway (which sets up its own logging: see [`crate::edge_run`]).
    pub fn serves(&self) -> bool {
        self.cmd.is_none() && self.config.is_some()
    }
}

pub fn run(args: EdgeArgs) -> Result<bool> {
    match (args.cmd, args.config) {
        (Some(EdgeCmd::Init(a)), _) => crate::hub_cmd::runtime()?.block_on(init(a)).map(|()| true),
        (Some(EdgeCmd::Agent(c)), _) => crate::agent_cmd::run(c),
        (None, Some(config)) if is_edge_toml(&config)? => {
            if args.identity.any() {
                bail!(
                    "{} is an edge.toml; --root, --listen, --ip and the other identity-mode flags \
                     apply to a super-config only (edge.toml has its own settings)",
                    config.display()
                );
            }
            serve(&config)
        }
        (None, Some(config)) => serve_identity(&config, args.identity),
        (None, None) => {
            bail!(
                "pass -c FILE (an edge.toml, or the super-config for identity service mode), or `ferrohub edge init` (see --help)"
            )
        }
    }
}

async fn init(a: InitArgs) -> Result<()> {
    let client = a.hub.client()?;
    let hub_cfg = crate::hub_cmd::load(&a.hub.config_path())?;
    let dev = format!("/devices/{}", iot_auth::percent_encode(&a.edge_id));
    let r = client.send(Method::GET, &dev, None, &[]).await?;
    if r.status == StatusCode::NOT_FOUND {
        let edge = hub_wire::Device {
            device_id: a.edge_id.clone(),
            capabilities: hub_wire::Capabilities { iot_edge: true },
            ..hub_wire::Device::default()
        };
        client
            .send(Method::PUT, &dev, Some(&hub_wire::body(&edge)), &[])
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
        local_api_listen: None,
    };
    let path = a.dir.join("edge.toml");
    crate::certs::cert_dir::write_all(&[crate::certs::cert_dir::Output {
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
    crate::server_umask();
    let config = match edge::EdgeConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            crate::init_logging(None);
            return Err(e.into());
        }
    };
    let process = crate::edge_run::start(&config.data_dir)?;
    let rt = crate::hub_cmd::runtime()?;
    let restart = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))
            .map_err(crate::hints::bind_failed)?;
        eprintln!(
            "edge gateway {} serving children on {} (Ctrl-C to stop)",
            config.edge_id,
            listener.local_addr()?
        );
        let gateway = edge::Gateway::open(config, Arc::new(ferrohub_runtime::time::SystemClock))?;
        let stop = tokio::sync::watch::channel(false);
        crate::edge_run::serve(&process, gateway, listener, stop).await
    })?;
    crate::edge_run::finish(process, rt, restart)
}

/// Whether `path` is an edge.toml (it names `edge_id`) rather than a super-config.
fn is_edge_toml(path: &std::path::Path) -> Result<bool> {
    crate::hints::require_config(path, crate::hints::ConfigKind::Edge)?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not TOML", path.display()))?;
    Ok(table.contains_key("edge_id"))
}

/// `ferrohub edge -c config.toml`: identity, tokens and certificate from the identity service.
fn serve_identity(path: &std::path::Path, a: IdentityArgs) -> Result<bool> {
    crate::server_umask();
    let mut settings = edge::identity_source::IdentitySettings::new(path);
    if let Some(root) = a.root {
        settings.root = root;
    }
    if let Some(listen) = a.listen {
        settings.listen = listen;
    }
    settings.data_dir = a.data_dir;
    settings.ips = a.ips;
    settings.routes = a.routes;
    if let Some(hours) = a.store_ttl_hours {
        settings.store_ttl_hours = hours;
    }
    settings.hub_mqtt = a.hub_mqtt;
    settings.hub_https = a.hub_https;
    let every = std::time::Duration::from_secs(a.renew_check_secs.unwrap_or(60).max(1));
    let process = crate::edge_run::start(&settings.data_dir())?;
    let rt = crate::hub_cmd::runtime()?;
    let restart = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))
            .map_err(crate::hints::bind_failed)?;
        let clock: ferrohub_runtime::time::SharedClock =
            Arc::new(ferrohub_runtime::time::SystemClock);
        let opened = edge::identity_source::open(&settings, clock.clone(), clock)
            .await
            .with_context(|| format!("identity service mode with {}", path.display()))?;
        let certs = opened.certs.clone();
        let time = |t: Option<time::OffsetDateTime>| {
            t.map(ferrohub_runtime::time::rfc3339).unwrap_or_default()
        };
        eprintln!(
            "edge gateway {} (hub {}, identity service) serving children on {} (Ctrl-C to stop)\n  \
             certificate {}: expires {}, renewed at {}",
            opened.identity.device_id,
            opened.identity.hub_name,
            listener.local_addr()?,
            certs.chain_path().display(),
            time(certs.expiry()),
            time(certs.renews_at()),
        );
        if let Some(ca) = certs.quickstart_ca_path() {
            eprintln!("  quickstart edge CA: children must trust {}", ca.display());
        }
        let stop = tokio::sync::watch::channel(false);
        tokio::spawn(edge::server_cert::renewal_loop(
            certs,
            every,
            stop.1.clone(),
        ));
        crate::edge_run::serve(&process, opened.gateway, listener, stop).await
    })?;
    crate::edge_run::finish(process, rt, restart)
}
