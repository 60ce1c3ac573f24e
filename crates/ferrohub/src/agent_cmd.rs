//! `ferrohub edge agent|list|logs|restart|check`: the edge agent (IoT Edge's edgeAgent), and the
//! commands that look at a gateway as `iotedge list|logs|restart|check` do (with or without the
//! agent: [`crate::edge_ops`], [`crate::edge_check`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use edge_agent::AgentConfig;
use edge_agent::config::{Command, Credentials};
use hyper::Method;

#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// The edge agent: applies the deployments the hub holds for this edge device, runs their
    /// modules and the gateway, reports what runs (`agent init` writes its configuration).
    Agent(AgentArgs),
    /// What runs: the agent, the gateway and the modules under an agent; the gateway alone
    /// (up since, hub connection, clients, store backlog) without one (like `iotedge list`).
    #[command(
        after_help = "Examples:\n  ferrohub edge list --config edge/agent.toml\n  \
        ferrohub edge list --config edge/edge.toml      # a gateway run without the agent\n  \
        sudo ferrohub edge list                         # identity service mode (/etc/ferrohub/config.toml)"
    )]
    List(crate::edge_target::TargetArgs),
    /// A module's logs (like `iotedge logs`): under an agent, any module's standard output and
    /// error and `edgeAgent`, the agent's own; without one, `edgeHub`, the gateway's log.
    #[command(
        after_help = "Examples:\n  ferrohub edge logs ai_insights --tail 20\n  \
        ferrohub edge logs edgeHub -f --config edge/agent.toml\n  \
        ferrohub edge logs edgeHub --tail 50 --config edge/edge.toml\n  ferrohub edge logs edgeAgent"
    )]
    Logs(LogsArgs),
    /// Restart a module now (like `iotedge restart`); counted in its restartCount. Without an
    /// agent, `edgeHub` restarts in place: the gateway stops as on SIGTERM and re-executes itself
    /// (same pid, so systemd sees no exit).
    #[command(
        after_help = "Examples:\n  ferrohub edge restart ai_insights --config edge/agent.toml\n  \
        ferrohub edge restart edgeHub --config edge/edge.toml"
    )]
    Restart(RestartArgs),
    /// Check the gateway as `iotedge check` does: configuration, certificates and their expiry,
    /// the host name children use, the store's disk, the hub's reachability, authentication and
    /// clock, and whether the gateway runs; each problem with its fix. Exits 1 when one fails.
    #[command(
        after_help = "Examples:\n  ferrohub edge check --config edge/edge.toml\n  \
        sudo ferrohub edge check                  # identity service mode\n  \
        ferrohub edge check --root /tmp/trial --json\n  \
        ferrohub edge check -c edge/edge.toml --hostname gw.local   # the name children use"
    )]
    Check(crate::edge_check::CheckArgs),
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
#[command(after_help = "Examples:\n  \
    ferrohub edge agent init --edge-config edge/edge.toml --config hub/hub.toml\n  \
    ferrohub edge agent --config edge/agent.toml     # runs until Ctrl-C\n  \
    ferrohub hub edge set-modules gw --content deployment.json --config hub/hub.toml\n  \
    ferrohub edge list --config edge/agent.toml")]
pub struct AgentArgs {
    /// The agent configuration to run.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<AgentSub>,
}

#[derive(Debug, Subcommand)]
pub enum AgentSub {
    /// Write agent.toml next to edge.toml: the `$edgeAgent` and edge device keys from the hub,
    /// where modules find the gateway, and the command that runs the gateway.
    #[command(after_help = "Examples:\n  \
        ferrohub edge agent init --edge-config edge/edge.toml --config hub/hub.toml\n  \
        ferrohub edge agent init --edge-config edge/edge.toml --gateway-hostname gw.local \\\n      \
        --credentials connection-string --config hub/hub.toml")]
    Init(InitArgs),
    /// Run the agent (same as `ferrohub edge agent --config FILE`).
    #[command(after_help = "Example:\n  ferrohub edge agent run --config edge/agent.toml")]
    Run(ConfigArg),
    /// Whether the agent runs, the deployment it applied, and its modules.
    #[command(after_help = "Example:\n  ferrohub edge agent status --config edge/agent.toml")]
    Status(ConfigArg),
    /// The agent's own log: deployments applied or refused, module starts, exits, restarts.
    #[command(after_help = "Example:\n  ferrohub edge agent logs --tail 50")]
    Logs(AgentLogsArgs),
}

/// `--config FILE` for the agent's commands.
#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// The agent configuration (agent.toml).
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        default_value = "edge/agent.toml"
    )]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The module (`edgeHub` for the gateway, `edgeAgent` for the agent).
    module: String,
    #[command(flatten)]
    opts: TailOpts,
    #[command(flatten)]
    target: crate::edge_target::TargetArgs,
}

#[derive(Debug, Args)]
pub struct AgentLogsArgs {
    #[command(flatten)]
    opts: TailOpts,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct TailOpts {
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Keep printing what is written (Ctrl-C to stop).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    /// The module to restart (`edgeHub` for the gateway).
    module: String,
    #[command(flatten)]
    target: crate::edge_target::TargetArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CredentialsArg {
    /// IOTEDGE_* variables and a workload socket per module (keys stay with the agent).
    Workload,
    /// EdgeHubConnectionString (with the module's key) and EdgeModuleCACertificateFile.
    ConnectionString,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The gateway's configuration (from `ferrohub edge init`).
    #[arg(long, value_name = "FILE", default_value = "edge/edge.toml")]
    edge_config: PathBuf,
    #[command(flatten)]
    hub: crate::hub_cmd::admin::Conn,
    /// Where to write agent.toml [default: the directory of --edge-config].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// What modules put in GatewayHostName [default: the gateway's listen IP].
    #[arg(long, value_name = "HOST")]
    gateway_hostname: Option<String>,
    /// The CA modules trust for the gateway [default: the hub CA of edge.toml, the root the
    /// gateway's certificate chains to].
    #[arg(long, value_name = "FILE")]
    gateway_ca: Option<PathBuf>,
    /// How modules get their credentials.
    #[arg(long, value_enum, default_value = "workload")]
    credentials: CredentialsArg,
    /// Do not run the gateway: it runs elsewhere (`ferrohub edge --config …`); the agent only
    /// checks that it listens.
    #[arg(long)]
    external_gateway: bool,
    /// Overwrite an existing agent.toml.
    #[arg(long)]
    force: bool,
}

pub fn run(cmd: AgentCmd) -> Result<bool> {
    match cmd {
        AgentCmd::Agent(a) => match (a.cmd, a.config) {
            (Some(AgentSub::Init(i)), _) => {
                crate::hub_cmd::runtime()?.block_on(init(i)).map(|()| true)
            }
            (Some(AgentSub::Run(c)), _) => serve(&c.config),
            (None, Some(config)) => serve(&config),
            (None, None) => bail!(
                "pass --config FILE to run the agent, or `ferrohub edge agent init` (see --help)"
            ),
            (Some(AgentSub::Status(c)), _) => system_status(&c.config),
            (Some(AgentSub::Logs(l)), _) => {
                let config = load(&l.config.config)?;
                crate::edge_ops::print_log(&config.log_path(edge_agent::config::AGENT_LOG), &l.opts)
            }
        },
        AgentCmd::List(t) => crate::edge_ops::list(&t),
        AgentCmd::Logs(l) => crate::edge_ops::logs(&l.module, &l.opts, &l.target),
        AgentCmd::Restart(r) => crate::edge_ops::restart(&r.module, &r.target),
        AgentCmd::Check(c) => crate::edge_check::run(&c),
    }
}

fn load(path: &Path) -> Result<AgentConfig> {
    crate::hints::require_config(path, crate::hints::ConfigKind::Agent)?;
    AgentConfig::load(path).with_context(
        || "cannot read the agent configuration (create it with `ferrohub edge agent init`)",
    )
}

async fn init(a: InitArgs) -> Result<()> {
    crate::hints::require_config(&a.edge_config, crate::hints::ConfigKind::Edge)?;
    let edge = edge::EdgeConfig::load(&a.edge_config)?;
    let dir = a.dir.clone().unwrap_or_else(|| {
        a.edge_config
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    });
    let path = dir.join("agent.toml");
    if path.exists() && !a.force {
        bail!("{} exists (--force to overwrite)", path.display());
    }
    let gateway_hostname = match a.gateway_hostname.clone() {
        Some(h) => h,
        None if !edge.listen.ip().is_unspecified() => edge.listen.ip().to_string(),
        None => bail!(
            "the gateway listens on {}: pass --gateway-hostname (what modules connect to)",
            edge.listen
        ),
    };
    let (device_key, edge_agent_key) = fetch_keys(&a.hub, &edge.edge_id).await?;
    let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let exe = std::env::current_exe().context("cannot find the ferrohub binary")?;
    let config = AgentConfig {
        edge_id: edge.edge_id.clone(),
        hub_hostname: edge.hub_hostname.clone(),
        hub_mqtt: edge.hub_mqtt.clone(),
        hub_https: edge.hub_https.clone(),
        hub_ca: abs(edge.hub_ca.clone()),
        edge_agent_key,
        device_key,
        data_dir: "agent".into(),
        gateway_hostname,
        gateway_ca: abs(a.gateway_ca.clone().unwrap_or(edge.hub_ca.clone())),
        gateway_addr: Some(local_addr(edge.listen)),
        edge_hub: (!a.external_gateway).then(|| Command {
            command: exe.display().to_string(),
            args: vec![
                "edge".into(),
                "--config".into(),
                abs(a.edge_config.clone()).display().to_string(),
            ],
        }),
        module_credentials: match a.credentials {
            CredentialsArg::Workload => Credentials::Workload,
            CredentialsArg::ConnectionString => Credentials::ConnectionString,
        },
        restart: Default::default(),
        logs: Default::default(),
        stop_grace_secs: 10,
    };
    crate::certs::cert_dir::write_all(&[crate::certs::cert_dir::Output {
        path: path.clone(),
        contents: format!(
            "# ferrohub edge agent (created by `ferrohub edge agent init`)\n{}",
            toml::to_string_pretty(&config)?
        ),
        secret: true,
    }])?;
    println!(
        "Created {} for edge device {}: modules connect to {}",
        path.display(),
        config.edge_id,
        config.gateway_hostname
    );
    println!(
        "Start it with: ferrohub edge agent --config {}",
        path.display()
    );
    Ok(())
}

/// The edge device's own key and its `$edgeAgent` module's key, read at the hub.
async fn fetch_keys(hub: &crate::hub_cmd::admin::Conn, edge_id: &str) -> Result<(String, String)> {
    let client = hub.client()?;
    let dev = format!("/devices/{}", iot_auth::percent_encode(edge_id));
    let key = |v: &serde_json::Value| {
        v["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
    };
    let device = client
        .send(Method::GET, &dev, None, &[])
        .await?
        .ok()?
        .json();
    let device_key = key(&device).with_context(|| {
        format!("{edge_id} has no SAS key: the agent manages its module identities with the device's key")
    })?;
    let agent = client
        .send(Method::GET, &format!("{dev}/modules/$edgeAgent"), None, &[])
        .await?
        .ok()
        .with_context(|| format!("{edge_id} has no $edgeAgent: is it an IoT Edge device?"))?
        .json();
    let agent_key = key(&agent).context("$edgeAgent has no SAS key")?;
    Ok((device_key, agent_key))
}

fn local_addr(l: SocketAddr) -> String {
    if l.ip().is_unspecified() {
        format!("127.0.0.1:{}", l.port())
    } else {
        l.to_string()
    }
}

fn serve(path: &Path) -> Result<bool> {
    let config = load(path)?;
    crate::hub_cmd::runtime()?.block_on(async move {
        eprintln!(
            "edge agent for {} following its deployment at {} (Ctrl-C to stop)",
            config.edge_id, config.hub_hostname
        );
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            crate::hub_cmd::wait_for_signal().await;
            let _ = tx.send(true);
        });
        edge_agent::run(config, Arc::new(ferrohub_runtime::time::SystemClock), rx).await?;
        anyhow::Ok(true)
    })
}

/// Prints rows as columns separated by at least three spaces.
pub fn print_table(rows: &[[String; 4]]) {
    let mut widths = [0usize; 4];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in rows {
        let line = format!(
            "{:w0$}   {:w1$}   {:w2$}   {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        println!("{}", line.trim_end());
    }
}

/// `ferrohub edge agent status` (and the agent's part of `ferrohub system status`): whether the
/// agent answers, the deployment it applied, its modules.
pub fn system_status(path: &Path) -> Result<bool> {
    let config = load(path)?;
    let client = edge_agent::control::Client::new(&config.control_socket());
    let rt = crate::hub_cmd::runtime()?;
    println!("edge agent (config {})", path.display());
    let status = match rt.block_on(client.status()) {
        Ok(s) => s,
        Err(e) => {
            println!(
                "  agent:         not running ({e})\n                 start it: ferrohub edge agent --config {}",
                path.display()
            );
            return Ok(false);
        }
    };
    println!(
        "  agent:         running (socket {})",
        config.control_socket().display()
    );
    println!(
        "  edge device:   {} on hub {}",
        config.edge_id, config.hub_hostname
    );
    let code = status["lastDesiredStatus"]["code"].as_u64().unwrap_or(0);
    println!(
        "  deployment:    version {} — {code} {}",
        status["lastDesiredVersion"],
        status["lastDesiredStatus"]["description"]
            .as_str()
            .filter(|d| !d.is_empty())
            .unwrap_or("applied")
    );
    let entries = rt.block_on(client.list()).unwrap_or_default();
    for e in entries {
        println!(
            "  {:<14} {} ({})",
            format!("{}:", e.name),
            e.status,
            e.description
        );
    }
    println!(
        "  logs:          {}",
        config.data_dir.join("logs").display()
    );
    Ok(code == 200)
}
