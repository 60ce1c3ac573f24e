//! The agent: follows the `$edgeAgent` desired properties, validates each deployment (and the
//! `$edgeHub` routes that come with it), reconciles the supervised modules and their identities
//! with it, and reports what runs. A refused deployment leaves the one in force running.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc, watch};
use tracing::warn;

use crate::config::{AGENT_LOG, AgentConfig, Credentials};
use crate::deployment::{self, Deployment, DeploymentError, ModuleSpec, SystemModule};
use crate::identities::{Identities, ModuleIdentity};
use crate::launch;
use crate::plan::{Action, plan};
use crate::reported::{self, DesiredStatus};
use crate::supervisor::{self, Desired, Launch, ModuleState, RuntimeStatus, Shared, Supervisor};
use edge::logs::RotatingLog;

/// The gateway's name as a module.
pub const EDGE_HUB: &str = edge::control::EDGE_HUB;
/// How often the agent retries modules that could not be set up and probes an external gateway.
const TICK: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot use {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] ferrohub_runtime::tls::TlsError),
    #[error("another agent is running on {0} (its control socket answers)")]
    AlreadyRunning(std::path::PathBuf),
}

/// What the agent applied and reports.
#[derive(Debug, Clone)]
struct Applied {
    /// The deployment in force (`None` before the first one).
    deployment: Option<Deployment>,
    /// The modules set up from it (those whose setup failed are missing, and retried).
    specs: BTreeMap<String, ModuleSpec>,
    desired_version: Option<u64>,
    status: DesiredStatus,
    /// Whether identities left over from earlier deployments were cleaned up at the hub.
    swept: bool,
}

pub use edge::control::ListEntry;

pub struct Agent {
    pub config: AgentConfig,
    clock: ferrohub_runtime::time::SharedClock,
    supervisor: Supervisor,
    identities: Identities,
    tls: Arc<rustls::ClientConfig>,
    started: OffsetDateTime,
    container_cli: Option<String>,
    applied: Mutex<Applied>,
    /// Workload sockets being served, by module (dropping the sender stops one).
    workloads: Mutex<BTreeMap<String, (ModuleIdentity, watch::Sender<bool>)>>,
    /// An external gateway answered its last probe.
    gateway_up: Mutex<Option<bool>>,
    hub_connected: Mutex<Option<watch::Receiver<bool>>>,
    changed: Arc<Notify>,
}

fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |source| AgentError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Agent {
    /// Prepares the data directory (0711: modules of other uids reach their own directory and
    /// workload socket in it, nothing else), kills module processes a killed agent left behind,
    /// and opens the agent's log.
    pub fn open(
        config: AgentConfig,
        clock: ferrohub_runtime::time::SharedClock,
    ) -> Result<Arc<Self>, AgentError> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = &config.data_dir;
        if std::os::unix::net::UnixStream::connect(config.control_socket()).is_ok() {
            return Err(AgentError::AlreadyRunning(dir.clone()));
        }
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
            .map_err(io_err(dir))?;
        for (sub, mode) in [
            ("state", 0o700),
            ("logs", 0o700),
            ("modules", 0o711),
            ("workload", 0o711),
        ] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(io_err(&p))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                .map_err(io_err(&p))?;
        }
        let log_path = config.log_path(AGENT_LOG);
        let events = RotatingLog::open(&log_path, config.logs).map_err(io_err(&log_path))?;
        let changed = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            clock: clock.clone(),
            backoff: config.restart.backoff(),
            logs: config.logs,
            data_dir: dir.clone(),
            stop_grace: Duration::from_secs(config.stop_grace_secs),
            changed: changed.clone(),
            events: Mutex::new(Some(events)),
        });
        for m in supervisor::reap_stale(dir) {
            shared.event(&format!(
                "Killed module {m}, left running by an earlier agent"
            ));
        }
        let tls = ferrohub_runtime::tls::client_config(&config.hub_ca)?;
        let identities = Identities::new(&config, tls.clone(), clock.clone());
        Ok(Arc::new(Self {
            started: clock.now(),
            clock,
            supervisor: Supervisor::new(shared),
            identities,
            tls,
            container_cli: launch::container_cli(),
            applied: Mutex::new(Applied {
                deployment: None,
                specs: BTreeMap::new(),
                desired_version: None,
                status: DesiredStatus {
                    code: 417,
                    description: DeploymentError::Empty.to_string(),
                },
                swept: false,
            }),
            workloads: Mutex::new(BTreeMap::new()),
            gateway_up: Mutex::new(None),
            hub_connected: Mutex::new(None),
            changed,
            config,
        }))
    }

    fn event(&self, text: &str) {
        self.supervisor.shared().event(text);
    }

    fn applied(&self) -> Applied {
        self.applied
            .lock()
            .map(|a| a.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    fn set_applied(&self, f: impl FnOnce(&mut Applied)) {
        if let Ok(mut a) = self.applied.lock() {
            f(&mut a);
        }
        self.changed.notify_one();
    }

    /// Runs until `shutdown`: the control socket, the hub session, the deployment last applied
    /// (so modules run while the hub is unreachable), then every deployment the hub sends.
    pub async fn run(
        self: Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), AgentError> {
        let sock = self.config.control_socket();
        let listener = crate::control::bind(&sock).map_err(io_err(&sock))?;
        tokio::spawn(crate::control::serve(
            listener,
            self.clone(),
            shutdown.clone(),
        ));
        self.event(&format!(
            "Agent started for edge device {}",
            self.config.edge_id
        ));
        if let Some(cached) = self.cached_desired() {
            self.apply(&cached, false).await;
        }
        let (desired_tx, mut desired_rx) = mpsc::unbounded_channel();
        let (reported_tx, reported_rx) = watch::channel(Value::Null);
        let (connected_tx, connected_rx) = watch::channel(false);
        if let Ok(mut c) = self.hub_connected.lock() {
            *c = Some(connected_rx);
        }
        tokio::spawn(crate::twin::run(
            self.twin_link(desired_tx, reported_rx, connected_tx),
            shutdown.clone(),
        ));
        let mut tick = tokio::time::interval(TICK);
        loop {
            reported_tx.send_if_modified(|r| {
                let next = self.report();
                if *r == next {
                    return false;
                }
                *r = next;
                true
            });
            tokio::select! {
                Some(d) = desired_rx.recv() => self.apply(&d, true).await,
                () = self.changed.notified() => {}
                _ = tick.tick() => self.tick().await,
                _ = shutdown.changed() => break,
            }
        }
        self.supervisor.shutdown().await;
        if let Ok(mut w) = self.workloads.lock() {
            w.clear();
        }
        self.event("Agent stopped");
        Ok(())
    }

    fn twin_link(
        &self,
        desired: mpsc::UnboundedSender<Value>,
        reported: watch::Receiver<Value>,
        connected: watch::Sender<bool>,
    ) -> crate::twin::TwinLink {
        let resource = format!(
            "{}/devices/{}/modules/$edgeAgent",
            self.config.hub_hostname, self.config.edge_id
        );
        let key = iot_auth::sas::decode_key(&self.config.edge_agent_key).unwrap_or_default();
        let clock = self.clock.clone();
        let token: crate::twin::TokenFn = Arc::new(move || {
            let now = u64::try_from(clock.now().unix_timestamp()).unwrap_or(0);
            iot_auth::sas::generate_sas_token(&resource, &key, None, now + 3600)
        });
        crate::twin::TwinLink {
            link: edge::upstream::HubLink {
                hostname: self.config.hub_hostname.clone(),
                addr: self.config.hub_mqtt.clone(),
                tls: self.tls.clone(),
                edge_id: self.config.edge_id.clone(),
            },
            client_id: format!("{}/$edgeAgent", self.config.edge_id),
            token,
            desired,
            reported,
            connected,
        }
    }

    fn cached_desired(&self) -> Option<Value> {
        let text = std::fs::read(self.config.data_dir.join("state/deployment.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Retries modules that could not be set up, probes an external gateway.
    async fn tick(&self) {
        if let Some(addr) = self
            .config
            .gateway_addr
            .as_ref()
            .filter(|_| self.config.edge_hub.is_none())
        {
            let up =
                tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                    .await
                    .is_ok_and(|r| r.is_ok());
            if let Ok(mut g) = self.gateway_up.lock()
                && *g != Some(up)
            {
                *g = Some(up);
                self.changed.notify_one();
            }
        }
        let a = self.applied();
        if let Some(d) = a.deployment
            && a.specs.len() < d.modules.len()
        {
            self.reconcile(&d).await;
        }
    }

    /// Validates `desired` (and, `online`, the `$edgeHub` routes at the hub) and reconciles the
    /// modules with it, or refuses it with the reason in the reported properties and the log.
    pub async fn apply(&self, desired: &Value, online: bool) {
        let version = desired.get("$version").and_then(Value::as_u64);
        match self.validate(desired, online).await {
            Err(e) => {
                let in_force = self.applied().deployment.is_some();
                if !matches!(e, DeploymentError::Empty) || in_force {
                    self.event(&format!(
                        "Refusing deployment version {}: {e}{}",
                        version.map_or_else(|| "?".into(), |v| v.to_string()),
                        if in_force {
                            "; the modules in force keep running"
                        } else {
                            ""
                        }
                    ));
                    warn!(error = %e, "Deployment refused");
                }
                self.set_applied(|a| {
                    a.desired_version = version;
                    a.status = DesiredStatus {
                        code: e.code(),
                        description: e.to_string(),
                    };
                });
            }
            Ok(d) => {
                self.event(&format!(
                    "Applying deployment version {}: {} module(s){}",
                    version.map_or_else(|| "?".into(), |v| v.to_string()),
                    d.modules.len(),
                    if online {
                        ""
                    } else {
                        " (the last one applied, from disk)"
                    }
                ));
                let failures = self.reconcile(&d).await;
                if online {
                    let _ = crate::identities::write_secret(
                        &self.config.data_dir.join("state/deployment.json"),
                        desired.to_string().as_bytes(),
                    );
                    self.sweep(&d).await;
                }
                self.set_applied(|a| {
                    a.desired_version = version;
                    a.status = match failures {
                        None => DesiredStatus {
                            code: 200,
                            description: String::new(),
                        },
                        Some(f) => DesiredStatus {
                            code: 500,
                            description: f,
                        },
                    };
                });
            }
        }
    }

    async fn validate(&self, desired: &Value, online: bool) -> Result<Deployment, DeploymentError> {
        let d = deployment::parse(desired)?;
        d.check_runtime(self.container_cli.is_some())?;
        if online {
            let read = tokio::time::timeout(TICK, self.identities.edge_hub_desired()).await;
            match read {
                Ok(Ok(hub)) => {
                    deployment::check_edge_hub(&hub)?;
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "Cannot read the $edgeHub twin to check its routes")
                }
                Err(_) => warn!(
                    "The hub did not answer for the $edgeHub twin; its routes are not checked"
                ),
            }
        }
        Ok(d)
    }

    /// Deletes identities of modules that left the deployment while the agent was not running
    /// (once per run).
    async fn sweep(&self, d: &Deployment) {
        if self.applied().swept {
            return;
        }
        match self.identities.managed().await {
            Ok(ids) => {
                for id in ids.iter().filter(|id| !d.modules.contains_key(*id)) {
                    match self.identities.remove(id).await {
                        Ok(()) => self.event(&format!(
                            "Removed the identity of module {id}: it is not in the deployment"
                        )),
                        Err(e) => {
                            warn!(module = %id, error = %e, "Cannot remove a module identity")
                        }
                    }
                }
                self.set_applied(|a| a.swept = true);
            }
            Err(e) => warn!(error = %e, "Cannot list the module identities"),
        }
    }

    /// Carries out the plan from the modules set up to `d`; returns what failed, if anything.
    async fn reconcile(&self, d: &Deployment) -> Option<String> {
        let current = self.applied().specs;
        // The gateway first, as IoT Edge starts edgeHub before the modules that use it.
        self.apply_edge_hub(d.edge_hub).await;
        let mut failures = Vec::new();
        for action in plan(&current, &d.modules) {
            if let Err(e) = self.execute(&action).await {
                self.event(&format!("Module {}: {e}", action.module()));
                failures.push(format!("module {}: {e}", action.module()));
            }
        }
        self.set_applied(|a| a.deployment = Some(d.clone()));
        (!failures.is_empty()).then(|| failures.join("; "))
    }

    async fn execute(&self, action: &Action) -> Result<(), String> {
        let spec = match action {
            Action::Remove(name) => {
                self.supervisor.remove(name).await;
                self.stop_workload(name);
                self.set_applied(|a| {
                    a.specs.remove(name);
                });
                self.identities
                    .remove(name)
                    .await
                    .map_err(|e| format!("stopped, but its identity stays at the hub: {e}"))?;
                self.event(&format!("Removed module {name} and its identity"));
                return Ok(());
            }
            Action::Create(s) | Action::Update(s) | Action::Start(s) | Action::Stop(s) => s,
        };
        let identity = self
            .identities
            .ensure(&spec.name)
            .await
            .map_err(|e| format!("no identity: {e}"))?;
        if self.config.module_credentials == Credentials::Workload {
            self.serve_workload(spec, &identity)
                .map_err(|e| format!("cannot serve its workload socket: {e}"))?;
        }
        let env = launch::module_env(&self.config, spec, &identity);
        let l = launch::launch(&self.config, spec, env, self.container_cli.as_deref());
        self.supervisor.set(
            &spec.name,
            Desired {
                launch: l,
                policy: spec.restart_policy,
                status: spec.status,
            },
        );
        self.set_applied(|a| {
            a.specs.insert(spec.name.clone(), spec.clone());
        });
        Ok(())
    }

    fn serve_workload(&self, spec: &ModuleSpec, identity: &ModuleIdentity) -> std::io::Result<()> {
        let Ok(mut w) = self.workloads.lock() else {
            return Ok(());
        };
        if w.get(&spec.name).is_some_and(|(id, _)| id == identity) {
            return Ok(());
        }
        let (tx, rx) = watch::channel(false);
        let path = launch::workload_socket(&self.config.data_dir, &spec.name);
        crate::workload::serve(
            &path,
            &spec.name,
            identity.clone(),
            self.config.gateway_ca.clone(),
            spec.user,
            rx,
        )?;
        w.insert(spec.name.clone(), (identity.clone(), tx));
        Ok(())
    }

    fn stop_workload(&self, name: &str) {
        if let Ok(mut w) = self.workloads.lock() {
            w.remove(name);
        }
        let _ = std::fs::remove_file(launch::workload_socket(&self.config.data_dir, name));
    }

    /// Runs the gateway as `edgeHub` when the agent is configured to and the deployment names it.
    async fn apply_edge_hub(&self, sys: Option<SystemModule>) {
        let Some(cmd) = &self.config.edge_hub else {
            return;
        };
        let Some(sys) = sys else {
            self.supervisor.remove(EDGE_HUB).await;
            return;
        };
        let dir = launch::module_dir(&self.config.data_dir, EDGE_HUB);
        self.supervisor.set(
            EDGE_HUB,
            Desired {
                launch: Launch {
                    program: cmd.command.clone(),
                    args: cmd.args.clone(),
                    env: std::env::vars().collect(),
                    dir,
                    user: None,
                    pre: None,
                },
                policy: sys.restart_policy,
                status: sys.status,
            },
        );
    }

    /// The state of the gateway as `edgeHub`, if the deployment names it.
    fn edge_hub_state(&self, a: &Applied) -> Option<(SystemModule, ModuleState)> {
        let sys = a.deployment.as_ref()?.edge_hub?;
        if self.config.edge_hub.is_some() {
            return Some((sys, self.supervisor.state(EDGE_HUB).unwrap_or_default()));
        }
        let up = self.gateway_up.lock().ok().and_then(|g| *g);
        let state = ModuleState {
            runtime_status: match up {
                Some(true) => RuntimeStatus::Running,
                Some(false) => RuntimeStatus::Failed,
                None => RuntimeStatus::Unknown,
            },
            description: "run outside the agent".into(),
            ..ModuleState::default()
        };
        Some((sys, state))
    }

    /// The reported properties now.
    pub fn report(&self) -> Value {
        let a = self.applied();
        let states = self.supervisor.states();
        let modules = a
            .specs
            .values()
            .map(|s| (s, states.get(&s.name).cloned().unwrap_or_default()))
            .collect();
        reported::build(&reported::Report {
            last_desired_version: a.desired_version,
            last_desired_status: &a.status,
            agent_started: self.started,
            edge_hub: self.edge_hub_state(&a),
            modules,
        })
    }

    /// Restarts a module (or `edgeHub` when the agent runs it); `false` if there is none.
    pub fn restart(&self, name: &str) -> bool {
        self.supervisor.restart(name)
    }

    /// What `edge list` shows: the agent, the gateway, then the modules.
    pub fn list(&self) -> Vec<ListEntry> {
        let a = self.applied();
        let now = self.clock.now();
        let connected = self
            .hub_connected
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|c| *c.borrow()))
            .unwrap_or(false);
        let mut out = vec![ListEntry {
            name: "edgeAgent".into(),
            status: "running".into(),
            description: format!(
                "Up {}{}",
                crate::control::since(self.started, now),
                if connected {
                    ""
                } else {
                    " (not connected to the hub)"
                }
            ),
            config: "ferrohub edge agent".into(),
            pid: Some(std::process::id()),
            restart_count: 0,
        }];
        if let Some((_, s)) = self.edge_hub_state(&a) {
            let config = self.config.edge_hub.as_ref().map_or_else(
                || "external gateway".to_owned(),
                |c| format!("{} {}", c.command, c.args.join(" ")),
            );
            out.push(crate::control::entry(EDGE_HUB, &s, config, now));
        }
        let states = self.supervisor.states();
        for spec in a.specs.values() {
            let s = states.get(&spec.name).cloned().unwrap_or_default();
            out.push(crate::control::entry(
                &spec.name,
                &s,
                spec.runner.describe(),
                now,
            ));
        }
        out
    }

    /// `lastDesiredVersion` and `lastDesiredStatus` (for `edge agent status`).
    pub fn status(&self) -> (Option<u64>, DesiredStatus) {
        let a = self.applied();
        (a.desired_version, a.status)
    }
}
