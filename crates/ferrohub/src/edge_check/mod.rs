//! `ferrohub edge check`: what `iotedge check` checks that applies to a ferrohub gateway, each
//! with its fix, in all three ways a gateway runs (agent, edge.toml, identity service). The
//! certificate name and chain checks are `ferrohub system check`'s
//! ([`crate::system_status::gateway_findings`]); the rest is here: expiry, the store's disk, the
//! hub's ports over TLS with the gateway's trust, `$edgeHub`'s authentication (an MQTT CONNECT as
//! the gateway makes it), the clock against the hub's `Date`, and whether the gateway answers.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use edge::control::{Client, GatewayStatus};

use crate::checks::Report;
use crate::edge_target::{Kind, Target, TargetArgs};

mod upstream;

/// Certificates expiring sooner than this are reported.
const EXPIRY_WARNING_DAYS: i64 = 7;
/// Free space below this fails the store check.
const MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The name children put in GatewayHostName [default: agent.toml's gateway_hostname, the
    /// super-config's hostname, or edge.toml's listen IP].
    #[arg(long, value_name = "HOST")]
    hostname: Option<String>,
    /// Print the checks as JSON: [{"id", "ok", "detail", "fix"}].
    #[arg(long)]
    json: bool,
}

/// The gateway as the checks see it, whichever way it runs.
struct Gw {
    path: PathBuf,
    identity: bool,
    edge_id: String,
    hub_hostname: String,
    hub_mqtt: String,
    hub_https: String,
    /// The CAs trusted for the hub, which children also trust for the gateway.
    trust: PathBuf,
    tls_cert: PathBuf,
    data_dir: PathBuf,
    hostname: Option<String>,
    store_limit: u64,
    token: Token,
    start: String,
}

/// How the `$edgeHub` SAS token is made.
enum Token {
    Key(String),
    Keyd(edge::identity_source::Daemons),
}

pub fn run(args: &CheckArgs) -> Result<bool> {
    let mut r = Report::new("Configuration");
    let rt = crate::hub_cmd::runtime()?;
    match Target::resolve(&args.target) {
        Ok(target) => rt.block_on(checks(&target, args, &mut r)),
        Err(e) => r.add(
            "config",
            false,
            format!(
                "the gateway configuration loads: {}",
                crate::hints::one_line(&e)
            ),
            "pass --config with the gateway's agent.toml, edge.toml or super-config (or --root \
             DIR); create one with `ferrohub edge init` or `ferrohub config mp`"
                .into(),
        ),
    }
    r.emit(args.json)?;
    Ok(r.failed() == 0)
}

async fn checks(target: &Target, args: &CheckArgs, r: &mut Report) {
    let (agent, resolved, agent_hostname) = match target {
        Target::Agent { config, path } => (
            Some((config, path)),
            agent_gateway(config, path, r),
            Some(config.gateway_hostname.clone()),
        ),
        _ => (None, None, None),
    };
    let gateway = match (&agent, &resolved) {
        (Some(_), gw) => gw.as_ref(),
        (None, _) => Some(target),
    };
    // Asked first: in identity mode the running gateway knows the hub's addresses.
    let status = match gateway {
        Some(t) => Client::new(&t.control_socket())
            .status()
            .await
            .ok()
            .and_then(|v| serde_json::from_value::<GatewayStatus>(v).ok()),
        None => None,
    };
    let hostname = args.hostname.clone().or(agent_hostname);
    let gw = match gateway {
        Some(t) => load(t, hostname, status.as_ref(), r).await,
        None => None,
    };
    r.section = "Gateway process";
    if let Some((config, path)) = agent {
        let answers = Client::new(&config.control_socket()).list().await;
        r.add(
            "agent-running",
            answers.is_ok(),
            format!(
                "the edge agent answers on {}",
                config.control_socket().display()
            ),
            format!("start it: ferrohub edge agent --config {}", path.display()),
        );
    }
    if let Some(t) = gateway {
        let fix = match agent {
            Some((_, path)) => format!(
                "the agent runs it once a deployment names edgeHub: see `ferrohub edge list` and \
                 `ferrohub edge logs edgeHub --config {}`",
                path.display()
            ),
            None => format!("start it: {}", t.start_command()),
        };
        running(t, status.as_ref(), fix, r);
    }
    let Some(gw) = gw else { return };
    let now = crate::clock::now();
    r.section = "Certificates";
    certificates(&gw, now, r);
    r.section = "Store";
    store(&gw, r);
    r.section = "Hub";
    upstream::checks(&gw, status.as_ref(), now, r).await;
}

/// Whether the gateway answers on its control socket.
fn running(target: &Target, status: Option<&GatewayStatus>, fix: String, r: &mut Report) {
    let socket = target.control_socket();
    r.add(
        "gateway-running",
        status.is_some(),
        match status {
            Some(s) => format!(
                "the gateway runs (pid {}, since {}; {} client(s), {} message(s) waiting) and \
                 answers on {}",
                s.pid,
                s.started_at,
                s.clients_connected,
                s.store_backlog,
                socket.display()
            ),
            None => format!("the gateway answers on {}", socket.display()),
        },
        fix,
    );
}

/// The gateway an agent runs: the configuration named in its `edge_hub` command.
fn agent_gateway(config: &edge_agent::AgentConfig, path: &Path, r: &mut Report) -> Option<Target> {
    let args = config
        .edge_hub
        .as_ref()
        .map(|c| c.args.clone())
        .unwrap_or_default();
    let after = |flags: &[&str]| {
        args.windows(2)
            .find(|w| flags.contains(&w[0].as_str()))
            .map(|w| PathBuf::from(&w[1]))
    };
    let Some(file) = after(&["--config", "-c"]) else {
        r.add(
            "config",
            false,
            format!(
                "{} names no gateway configuration (external gateway)",
                path.display()
            ),
            "run `ferrohub edge check --config FILE` with the gateway's edge.toml or super-config \
             where the gateway runs"
                .into(),
        );
        return None;
    };
    let t = TargetArgs {
        config: Some(file),
        root: after(&["--root"]),
        data_dir: after(&["--data-dir"]),
    };
    match Target::resolve(&t) {
        Ok(target) => Some(target),
        Err(e) => {
            r.add(
                "config",
                false,
                format!(
                    "the gateway configuration loads: {}",
                    crate::hints::one_line(&e)
                ),
                format!("fix the edge_hub command in {}", path.display()),
            );
            None
        }
    }
}

/// The facts of a file-mode or identity-mode gateway; `None` (reported) when its configuration
/// does not load.
async fn load(
    target: &Target,
    hostname: Option<String>,
    status: Option<&GatewayStatus>,
    r: &mut Report,
) -> Option<Gw> {
    let gw = match target {
        Target::File { path, config } => Gw {
            path: path.clone(),
            identity: false,
            edge_id: config.edge_id.clone(),
            hub_hostname: config.hub_hostname.clone(),
            hub_mqtt: config.hub_mqtt.clone(),
            hub_https: config.hub_https.clone(),
            trust: config.hub_ca.clone(),
            tls_cert: config.tls_cert.clone(),
            data_dir: config.data_dir.clone(),
            hostname: hostname.or_else(|| {
                (!config.listen.ip().is_unspecified()).then(|| config.listen.ip().to_string())
            }),
            store_limit: config.store_max_mib.max(1) * 1024 * 1024,
            token: Token::Key(config.edge_hub_key.clone()),
            start: target.start_command(),
        },
        Target::Identity {
            path,
            root,
            data_dir,
        } => identity_gw(target, path, root, data_dir, hostname, status, r).await?,
        Target::Agent { .. } => return None,
    };
    r.add(
        "config",
        true,
        format!("{} loads", gw.path.display()),
        String::new(),
    );
    Some(gw)
}

async fn identity_gw(
    target: &Target,
    path: &Path,
    root: &Path,
    data_dir: &Path,
    hostname: Option<String>,
    status: Option<&GatewayStatus>,
    r: &mut Report,
) -> Option<Gw> {
    use identity::config::superconfig::SuperConfig;
    let fail = |r: &mut Report, detail: String, fix: String| {
        r.add("config", false, detail, fix);
        None
    };
    if crate::edge_target::kind_of(path).ok() != Some(Kind::SuperConfig) {
        return fail(
            r,
            format!("{} is not a super-config", path.display()),
            String::new(),
        );
    }
    let sc = match SuperConfig::load(path) {
        Ok(sc) => sc,
        Err(e) => {
            return fail(
                r,
                format!("{} does not load: {e}", path.display()),
                "fix it (`ferrohub config template` prints every section, commented)".into(),
            );
        }
    };
    let daemons = match edge::identity_source::Daemons::under(root) {
        Ok(d) => d,
        Err(e) => {
            return fail(
                r,
                format!("the identity service's configs load: {e}"),
                format!(
                    "ferrohub config apply -c {} --root {}",
                    path.display(),
                    root.display()
                ),
            );
        }
    };
    let (hub, mqtt, https) = match status {
        Some(s) => (s.hub.clone(), s.hub_mqtt.clone(), s.hub_https.clone()),
        None => match edge::identity_source::edge_identity(&daemons).await {
            Ok(id) => (
                id.hub_name.clone(),
                format!("{}:8883", id.hub_name),
                format!("{}:443", id.hub_name),
            ),
            Err(e) => {
                return fail(
                    r,
                    format!("identityd names the device and its hub: {e}"),
                    "start the identity service (`ferrohub identity run`) and see `ferrohub system \
                     check`"
                        .into(),
                );
            }
        },
    };
    let trust = match &sc.trust_bundle_cert {
        Some(uri) => identity::keyd::uri_path(uri).to_path_buf(),
        None => data_dir.join("hub-trust-bundle.pem"),
    };
    Some(Gw {
        path: path.to_owned(),
        identity: true,
        edge_id: status.map(|s| s.edge_id.clone()).unwrap_or_default(),
        hub_hostname: hub,
        hub_mqtt: mqtt,
        hub_https: https,
        trust,
        tls_cert: data_dir.join("tls").join("server-chain.pem"),
        data_dir: data_dir.to_owned(),
        hostname: hostname.or(Some(sc.hostname.clone())),
        store_limit: 1024 * 1024 * 1024,
        token: Token::Keyd(daemons),
        start: target.start_command(),
    })
}

fn read_chain(path: &Path) -> Result<Vec<pki::Certificate>, String> {
    let pem = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let chain = pki::Certificate::chain_from_pem(&pem).map_err(|e| e.to_string())?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(chain)
}

fn certificates(gw: &Gw, now: time::OffsetDateTime, r: &mut Report) {
    let chain = match read_chain(&gw.tls_cert) {
        Ok(c) => c,
        Err(e) => {
            let fix = if gw.identity {
                format!(
                    "start the gateway once (`{}`): it has certd issue its certificate",
                    gw.start
                )
            } else {
                format!(
                    "set tls_cert in {} to the gateway's full chain (`ferrohub edge init` \
                         writes gateway-HOST-full-chain.cert.pem)",
                    gw.path.display()
                )
            };
            r.add(
                "cert-present",
                false,
                format!("the gateway certificate: {e}"),
                fix,
            );
            return;
        }
    };
    r.add(
        "cert-present",
        true,
        format!(
            "the gateway certificate {} ({} certificate(s) in the chain)",
            gw.tls_cert.display(),
            chain.len()
        ),
        String::new(),
    );
    expiry(gw, &chain, now, r);
    let bundle = read_chain(&gw.trust).unwrap_or_default();
    let Some(host) = gw.hostname.clone() else {
        r.warn(
            "cert-hostname",
            "the host name children use is not known (the gateway listens on every address)".into(),
            "pass --hostname NAME (what children put in GatewayHostName) to check it against the \
             certificate"
                .into(),
        );
        return;
    };
    let mut findings = crate::system_status::gateway_findings(&chain, &host, &bundle, now);
    if !gw.identity && findings.len() == 2 {
        findings[0].next = format!(
            "children check GatewayHostName against this certificate: have them use a name it holds, \
             or issue one naming {host}: `ferrohub edge init --hostname {host} …` (after moving the \
             old gateway-*.cert.pem away) and restart `{}`",
            gw.start
        );
        findings[1].next = format!(
            "children trust {}: issue the gateway certificate from that root or an edge CA under it \
             (`ferrohub edge init --ca-dir DIR [--edge-ca NAME]`) and restart `{}`",
            gw.trust.display(),
            gw.start
        );
    }
    for (id, f) in ["cert-hostname", "cert-chain"].into_iter().zip(findings) {
        r.finding(id, f);
    }
}

fn expiry(gw: &Gw, chain: &[pki::Certificate], now: time::OffsetDateTime, r: &mut Report) {
    let soonest = chain.iter().min_by_key(|c| c.not_after());
    let Some(c) = soonest else { return };
    let when = ferrohub_runtime::time::rfc3339(c.not_after());
    let fix = if gw.identity {
        format!(
            "restart `{}`: it renews the certificate through certd (an expired edge CA must \
                 be replaced in [edge_ca] first)",
            gw.start
        )
    } else {
        "issue a new gateway certificate (`ferrohub edge init`, after moving the old one away) and \
         restart the gateway"
            .into()
    };
    if c.not_after() <= now {
        r.add(
            "cert-expiry",
            false,
            format!("{} expired at {when}", c.subject()),
            fix,
        );
    } else if c.not_after() <= now + time::Duration::days(EXPIRY_WARNING_DAYS) {
        r.warn(
            "cert-expiry",
            format!("{} expires soon, at {when}", c.subject()),
            fix,
        );
    } else {
        r.add(
            "cert-expiry",
            true,
            format!("no certificate of the chain expires within {EXPIRY_WARNING_DAYS} days (first: {when})"),
            String::new(),
        );
    }
}

/// Free space where the store lives, and whether the gateway can write there.
fn store(gw: &Gw, r: &mut Report) {
    let dir = &gw.data_dir;
    let existing = dir
        .ancestors()
        .find(|d| d.exists())
        .unwrap_or(Path::new("/"));
    match rustix::fs::statvfs(existing) {
        Ok(s) => {
            let free = s.f_bavail.saturating_mul(s.f_frsize);
            let mib = |b: u64| b / (1024 * 1024);
            let detail = format!(
                "{} MiB free for the store in {} (its limit is {} MiB)",
                mib(free),
                existing.display(),
                mib(gw.store_limit)
            );
            let fix = "free space on that file system, or lower store_max_mib so the store stays \
                       within it";
            if free < MIN_FREE_BYTES {
                r.add("store-disk", false, detail, fix.into());
            } else if free < gw.store_limit {
                r.warn("store-disk", detail, fix.into());
            } else {
                r.add("store-disk", true, detail, String::new());
            }
        }
        Err(e) => r.add(
            "store-disk",
            false,
            format!("cannot read the free space of {}: {e}", existing.display()),
            "check that the data directory's file system is mounted".into(),
        ),
    }
    if !dir.exists() {
        r.warn(
            "store-writable",
            format!("{} does not exist yet", dir.display()),
            format!("the gateway creates it at its first start: `{}`", gw.start),
        );
        return;
    }
    let probe = dir.join(".check-write");
    let written = std::fs::write(&probe, b"").and_then(|()| std::fs::remove_file(&probe));
    r.add(
        "store-writable",
        written.is_ok(),
        match &written {
            Ok(()) => format!("{} is writable", dir.display()),
            Err(e) => format!("{} is not writable: {e}", dir.display()),
        },
        "run the check (and the gateway) as the user owning the data directory, e.g. with sudo"
            .into(),
    );
}
