//! Deployments: the `$edgeAgent` desired properties (schema version, runtime, system modules,
//! modules) parsed into typed module specs and validated, and deployment manifests
//! (`modulesContent`, as `az iot edge set-modules --content` takes them). No I/O.
//!
//! A module:
//!
//! ```json
//! "ai_insights": {
//!   "type": "process", "status": "running", "restartPolicy": "always", "startupOrder": 1,
//!   "version": "1.0",
//!   "settings": {"command": "/usr/bin/python3", "args": ["ai.py"], "user": "1001:1001"},
//!   "env": {"LEVEL": {"value": "debug"}}
//! }
//! ```
//!
//! `type` is `process` (a local program: `settings.command`, optional `args`, `workingDir`,
//! `user`) or `docker` (`settings.image`, optional `createOptions`, run through the docker or
//! podman CLI). System modules (`systemModules.edgeAgent`, `systemModules.edgeHub`) take any
//! type and their images are ignored: ferrohub's own agent and gateway run.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// Why a deployment is refused; [`DeploymentError::code`] is what `lastDesiredStatus` reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeploymentError {
    /// The desired properties carry no deployment yet (no `schemaVersion`).
    #[error("no deployment yet: the $edgeAgent desired properties have no schemaVersion")]
    Empty,
    /// `schemaVersion` is not one this agent reads.
    #[error("unsupported $edgeAgent schemaVersion {0:?} (supported: 1.0, 1.1)")]
    SchemaVersion(String),
    /// A member has the wrong shape or value.
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    /// A module's `type` is neither `process` nor `docker`.
    #[error("module {module}: unknown module type {kind:?} (supported: process, docker)")]
    UnknownType { module: String, kind: String },
    /// The `$edgeHub` desired properties do not parse (routes, TTL, schema).
    #[error("$edgeHub: {0}")]
    EdgeHub(routes::ConfigError),
    /// A `docker` module on a device without a container CLI.
    #[error(
        "module {module}: type docker needs the docker or podman command, and neither is installed on this device"
    )]
    NoContainerRuntime { module: String },
    /// The manifest file's shape.
    #[error("deployment manifest: {0}")]
    Manifest(String),
}

impl DeploymentError {
    /// The `lastDesiredStatus.code` IoT Edge's agent reports for this refusal.
    pub fn code(&self) -> u16 {
        match self {
            Self::Empty => 417,
            Self::SchemaVersion(_) => 412,
            _ => 400,
        }
    }
}

fn invalid(path: impl Into<String>, reason: impl Into<String>) -> DeploymentError {
    DeploymentError::Invalid {
        path: path.into(),
        reason: reason.into(),
    }
}

/// The desired state of a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DesiredStatus {
    Running,
    Stopped,
}

impl DesiredStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
        }
    }
}

/// When a module that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Never,
    /// After a non-zero exit or a signal.
    OnFailure,
    /// As `OnFailure` (a process module has no health probe).
    OnUnhealthy,
    Always,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::OnFailure => "on-failure",
            Self::OnUnhealthy => "on-unhealthy",
            Self::Always => "always",
        }
    }
}

/// What runs a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runner {
    /// A local program.
    Process {
        command: String,
        args: Vec<String>,
        working_dir: Option<String>,
    },
    /// A container run with the docker or podman CLI.
    Docker {
        image: String,
        /// `createOptions` (with its `createOptions01`... continuations), as JSON text.
        create_options: Option<String>,
    },
}

impl Runner {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Process { .. } => "process",
            Self::Docker { .. } => "docker",
        }
    }

    /// What `edge list` shows as the module's config.
    pub fn describe(&self) -> String {
        match self {
            Self::Process { command, args, .. } => {
                let mut s = command.clone();
                for a in args {
                    s.push(' ');
                    s.push_str(a);
                }
                s
            }
            Self::Docker { image, .. } => image.clone(),
        }
    }
}

/// A uid (and optional gid) to run a module as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: Option<u32>,
}

/// One module of a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSpec {
    pub name: String,
    pub runner: Runner,
    /// `version` as given ("" when absent).
    pub version: String,
    pub status: DesiredStatus,
    pub restart_policy: RestartPolicy,
    /// Lower starts first; absent = 4294967295 (last), as in IoT Edge.
    pub startup_order: u32,
    pub env: BTreeMap<String, String>,
    pub user: Option<User>,
}

/// The settings of the gateway (`systemModules.edgeHub`): only status and restart policy apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemModule {
    pub status: DesiredStatus,
    pub restart_policy: RestartPolicy,
}

/// A parsed, validated `$edgeAgent` deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub schema_version: String,
    /// `systemModules.edgeHub`; `None`: the gateway is not part of this deployment.
    pub edge_hub: Option<SystemModule>,
    pub modules: BTreeMap<String, ModuleSpec>,
}

impl Deployment {
    /// The modules in start order (`startupOrder`, then name).
    pub fn start_order(&self) -> Vec<&ModuleSpec> {
        let mut v: Vec<&ModuleSpec> = self.modules.values().collect();
        v.sort_by(|a, b| (a.startup_order, &a.name).cmp(&(b.startup_order, &b.name)));
        v
    }

    /// Refuses `docker` modules when `container_cli` is false (neither docker nor podman).
    pub fn check_runtime(&self, container_cli: bool) -> Result<(), DeploymentError> {
        match self
            .modules
            .values()
            .find(|m| matches!(m.runner, Runner::Docker { .. }))
        {
            Some(m) if !container_cli => Err(DeploymentError::NoContainerRuntime {
                module: m.name.clone(),
            }),
            _ => Ok(()),
        }
    }
}

/// Module names IoT Edge reserves for its system modules.
const RESERVED: [&str; 2] = ["edgeAgent", "edgeHub"];

/// Parses and validates `$edgeAgent` desired properties (`$version` and other `$` members are
/// ignored).
pub fn parse(desired: &Value) -> Result<Deployment, DeploymentError> {
    let obj = desired
        .as_object()
        .ok_or_else(|| invalid("$edgeAgent", "the desired properties must be an object"))?;
    let schema_version = match obj.get("schemaVersion") {
        None | Some(Value::Null) => return Err(DeploymentError::Empty),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(DeploymentError::SchemaVersion(other.to_string())),
    };
    let mut parts = schema_version.split('.');
    if parts.next() != Some("1") || !matches!(parts.next(), Some("0" | "1")) {
        return Err(DeploymentError::SchemaVersion(schema_version));
    }
    if let Some(r) = obj.get("runtime")
        && !r.is_object()
    {
        return Err(invalid("runtime", "must be an object"));
    }
    let system = match obj.get("systemModules") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(invalid("systemModules", "must be an object")),
    };
    for name in system.keys() {
        if !RESERVED.contains(&name.as_str()) {
            return Err(invalid(
                format!("systemModules.{name}"),
                "unknown system module (there are edgeAgent and edgeHub)",
            ));
        }
    }
    let edge_hub = match system.get("edgeHub") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(SystemModule {
            status: status(m, "systemModules.edgeHub")?,
            restart_policy: restart_policy(m, "systemModules.edgeHub")?,
        }),
        Some(_) => return Err(invalid("systemModules.edgeHub", "must be an object")),
    };
    let modules = match obj.get("modules") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(invalid("modules", "must be an object")),
    };
    let mut out = BTreeMap::new();
    for (name, spec) in &modules {
        out.insert(name.clone(), module(name, spec)?);
    }
    Ok(Deployment {
        schema_version,
        edge_hub,
        modules: out,
    })
}

fn module(name: &str, spec: &Value) -> Result<ModuleSpec, DeploymentError> {
    let path = format!("modules.{name}");
    pki::names::check_module_id(name).map_err(|e| invalid(&path, e.to_string()))?;
    if name.starts_with('$') || RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err(invalid(&path, "this module name is reserved"));
    }
    let m = spec
        .as_object()
        .ok_or_else(|| invalid(&path, "a module must be an object"))?;
    let settings = match m.get("settings") {
        Some(Value::Object(s)) => s.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err(invalid(format!("{path}.settings"), "must be an object")),
    };
    let kind = match m.get("type") {
        Some(Value::String(t)) => t.as_str(),
        None | Some(Value::Null) => return Err(invalid(&path, "the module has no type")),
        Some(other) => {
            return Err(DeploymentError::UnknownType {
                module: name.to_owned(),
                kind: other.to_string(),
            });
        }
    };
    let runner = match kind {
        "process" => process(&settings, &path)?,
        "docker" => docker(&settings, &path)?,
        other => {
            return Err(DeploymentError::UnknownType {
                module: name.to_owned(),
                kind: other.to_owned(),
            });
        }
    };
    let version = match m.get("version") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(v)) => v.clone(),
        Some(_) => return Err(invalid(format!("{path}.version"), "must be a string")),
    };
    let startup_order = match m.get("startupOrder") {
        None | Some(Value::Null) => u32::MAX,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                invalid(
                    format!("{path}.startupOrder"),
                    "must be an integer from 0 to 4294967295",
                )
            })?,
    };
    Ok(ModuleSpec {
        name: name.to_owned(),
        runner,
        version,
        status: status(m, &path)?,
        restart_policy: restart_policy(m, &path)?,
        startup_order,
        env: env(m.get("env"), &path)?,
        user: user(settings.get("user"), &path)?,
    })
}

fn string(
    s: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<String>, DeploymentError> {
    match s.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(v)) if !v.trim().is_empty() => Ok(Some(v.clone())),
        Some(_) => Err(invalid(
            format!("{path}.settings.{key}"),
            "must be a non-empty string",
        )),
    }
}

fn process(s: &Map<String, Value>, path: &str) -> Result<Runner, DeploymentError> {
    let command = string(s, "command", path)?.ok_or_else(|| {
        invalid(
            format!("{path}.settings.command"),
            "a process module needs the program to run",
        )
    })?;
    let args = match s.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid(format!("{path}.settings.args"), "must be strings"))?,
        Some(_) => {
            return Err(invalid(
                format!("{path}.settings.args"),
                "must be an array of strings",
            ));
        }
    };
    Ok(Runner::Process {
        command,
        args,
        working_dir: string(s, "workingDir", path)?,
    })
}

fn docker(s: &Map<String, Value>, path: &str) -> Result<Runner, DeploymentError> {
    let image = string(s, "image", path)?.ok_or_else(|| {
        invalid(
            format!("{path}.settings.image"),
            "a docker module needs an image",
        )
    })?;
    // Long createOptions are split into createOptions, createOptions01, createOptions02, ...
    let mut text = String::new();
    for i in 0..100 {
        let key = if i == 0 {
            "createOptions".to_owned()
        } else {
            format!("createOptions{i:02}")
        };
        match s.get(&key) {
            Some(Value::String(part)) => text.push_str(part),
            Some(Value::Object(o)) if i == 0 => text = Value::Object(o.clone()).to_string(),
            None | Some(Value::Null) => break,
            Some(_) => {
                return Err(invalid(
                    format!("{path}.settings.{key}"),
                    "must be a string",
                ));
            }
        }
    }
    let create_options = if text.trim().is_empty() {
        None
    } else {
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(_)) => Some(text),
            _ => {
                return Err(invalid(
                    format!("{path}.settings.createOptions"),
                    "must be a JSON object (as text)",
                ));
            }
        }
    };
    Ok(Runner::Docker {
        image,
        create_options,
    })
}

fn status(m: &Map<String, Value>, path: &str) -> Result<DesiredStatus, DeploymentError> {
    match m.get("status").and_then(Value::as_str) {
        None => match m.get("status") {
            None | Some(Value::Null) => Ok(DesiredStatus::Running),
            Some(_) => Err(invalid(format!("{path}.status"), "must be a string")),
        },
        Some("running") => Ok(DesiredStatus::Running),
        Some("stopped") => Ok(DesiredStatus::Stopped),
        Some(other) => Err(invalid(
            format!("{path}.status"),
            format!("{other:?} is not running or stopped"),
        )),
    }
}

fn restart_policy(m: &Map<String, Value>, path: &str) -> Result<RestartPolicy, DeploymentError> {
    match m.get("restartPolicy") {
        None | Some(Value::Null) => Ok(RestartPolicy::Always),
        Some(Value::String(p)) => match p.as_str() {
            "never" => Ok(RestartPolicy::Never),
            "on-failure" => Ok(RestartPolicy::OnFailure),
            "on-unhealthy" => Ok(RestartPolicy::OnUnhealthy),
            "always" => Ok(RestartPolicy::Always),
            other => Err(invalid(
                format!("{path}.restartPolicy"),
                format!("{other:?} is not never, on-failure, on-unhealthy or always"),
            )),
        },
        Some(_) => Err(invalid(format!("{path}.restartPolicy"), "must be a string")),
    }
}

/// `{"NAME": {"value": "x"}}` (IoT Edge's form) or `{"NAME": "x"}`.
fn env(v: Option<&Value>, path: &str) -> Result<BTreeMap<String, String>, DeploymentError> {
    let map = match v {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(invalid(format!("{path}.env"), "must be an object")),
    };
    let mut out = BTreeMap::new();
    for (name, value) in map {
        let at = format!("{path}.env.{name}");
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(invalid(at, "not a valid variable name"));
        }
        let value = match value {
            Value::Object(o) => o.get("value").cloned().unwrap_or(Value::Null),
            other => other.clone(),
        };
        let text = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err(invalid(at, "the value must be a string, number or boolean")),
        };
        if text.contains('\0') {
            return Err(invalid(at, "the value contains NUL"));
        }
        out.insert(name.clone(), text);
    }
    Ok(out)
}

/// `"1001"`, `"1001:1001"` or `1001` (numeric ids only).
fn user(v: Option<&Value>, path: &str) -> Result<Option<User>, DeploymentError> {
    let at = || {
        invalid(
            format!("{path}.settings.user"),
            "must be UID or UID:GID (numbers)",
        )
    };
    let text = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(at()),
    };
    let (uid, gid) = match text.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (text.as_str(), None),
    };
    let uid = uid.parse::<u32>().map_err(|_| at())?;
    let gid = match gid {
        Some(g) => Some(g.parse::<u32>().map_err(|_| at())?),
        None => None,
    };
    Ok(Some(User { uid, gid }))
}

/// The `$edgeHub` desired properties checked as the gateway will read them. Properties without a
/// `schemaVersion` are "not set": the gateway keeps its configured routes.
pub fn check_edge_hub(desired: &Value) -> Result<Option<routes::EdgeHubConfig>, DeploymentError> {
    if desired.get("schemaVersion").is_none_or(Value::is_null) {
        return Ok(None);
    }
    routes::parse_edgehub_desired(desired)
        .map(Some)
        .map_err(DeploymentError::EdgeHub)
}

/// `$edgeAgent` desired properties of the empty deployment: both system modules, no modules.
pub fn default_edge_agent() -> Value {
    json!({
        "schemaVersion": "1.1",
        "runtime": {"type": "docker", "settings": {}},
        "systemModules": default_system_modules(),
        "modules": {}
    })
}

fn default_system_modules() -> Value {
    json!({
        "edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5"}},
        "edgeHub": {
            "type": "docker", "status": "running", "restartPolicy": "always",
            "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5"}
        }
    })
}

/// `$edgeHub` desired properties of the empty deployment: the default route, a 2-hour TTL.
pub fn default_edge_hub() -> Value {
    json!({
        "schemaVersion": "1.1",
        "routes": {"route": "FROM /messages/* INTO $upstream"},
        "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}
    })
}

/// A deployment manifest, split into the desired properties of each module twin.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub edge_agent: Value,
    pub edge_hub: Value,
    /// Desired properties of the deployment's own modules' twins.
    pub modules: BTreeMap<String, Value>,
    /// The validated deployment (`edge_agent` parsed).
    pub deployment: Deployment,
}

/// Reads a manifest: `{"modulesContent": {...}}` or `{"content": {"modulesContent": {...}}}`,
/// each module as `{"properties.desired": {...}}` (Azure's form) or `{"properties":
/// {"desired": {...}}}`. A missing `$edgeAgent` or `$edgeHub`, or a manifest without
/// `modulesContent` (`{}`), gets the empty deployment's; a `$edgeAgent` without
/// `systemModules` gets both system modules. Both are validated; module twins may only be
/// given for modules of the deployment.
pub fn parse_manifest(v: &Value) -> Result<Manifest, DeploymentError> {
    let top = v
        .as_object()
        .ok_or_else(|| DeploymentError::Manifest("must be a JSON object".into()))?;
    let content = top.get("content").and_then(Value::as_object).unwrap_or(top);
    let modules_content = match content.get("modulesContent") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            return Err(DeploymentError::Manifest(
                "modulesContent must be an object".into(),
            ));
        }
    };
    let mut desired = BTreeMap::new();
    for (name, section) in &modules_content {
        let d = section
            .get("properties.desired")
            .or_else(|| section.get("properties").and_then(|p| p.get("desired")))
            .ok_or_else(|| {
                DeploymentError::Manifest(format!(
                    "modulesContent.{name} has no \"properties.desired\""
                ))
            })?;
        if !d.is_object() {
            return Err(DeploymentError::Manifest(format!(
                "modulesContent.{name}: the desired properties must be an object"
            )));
        }
        desired.insert(name.clone(), d.clone());
    }
    let mut edge_agent = desired
        .remove("$edgeAgent")
        .unwrap_or_else(default_edge_agent);
    if let Some(obj) = edge_agent.as_object_mut()
        && obj.get("systemModules").is_none_or(Value::is_null)
    {
        obj.insert("systemModules".into(), default_system_modules());
    }
    let edge_hub = desired.remove("$edgeHub").unwrap_or_else(default_edge_hub);
    let deployment = parse(&edge_agent)?;
    check_edge_hub(&edge_hub)?;
    for name in desired.keys() {
        if !deployment.modules.contains_key(name) {
            return Err(DeploymentError::Manifest(format!(
                "modulesContent.{name}: not a module of this deployment"
            )));
        }
    }
    Ok(Manifest {
        edge_agent,
        edge_hub,
        modules: desired,
        deployment,
    })
}

#[cfg(test)]
#[path = "deployment_tests.rs"]
mod tests;
