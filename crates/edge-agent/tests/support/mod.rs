//! An in-process hub with the edge device `gw`, its gateway, and an edge agent for it, all on
//! loopback; helpers to deploy manifests and wait for the agent's reported properties.

#![allow(dead_code, clippy::unwrap_used)] // tests: a panic is a test failure

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use edge_agent::AgentConfig;
use edge_agent::config::{Credentials, RestartSettings};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use test_support::gateway;
use test_support::hub::{HOST, KEY, TestHub};

pub struct Edge {
    pub t: TestHub,
    pub gw: gateway::Gw,
    pub dir: tempfile::TempDir,
    pub config: AgentConfig,
    pub agent: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

/// A hub, the edge device `gw`, its gateway, and an agent whose modules get `credentials`.
pub async fn start(credentials: Credentials) -> Edge {
    let t = TestHub::start().await;
    gateway::edge_device(&t).await;
    let gw = gateway::start(&t, &[]).await;
    let agent_key = t
        .client()
        .send(Method::GET, "/devices/gw/modules/$edgeAgent", None, &[])
        .await
        .unwrap()
        .json()["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = AgentConfig {
        edge_id: "gw".into(),
        hub_hostname: HOST.into(),
        hub_mqtt: t.mqtt.to_string(),
        hub_https: t.https.to_string(),
        hub_ca: t.root.clone(),
        edge_agent_key: agent_key,
        device_key: KEY.into(),
        data_dir: dir.path().join("agent"),
        gateway_hostname: HOST.into(),
        gateway_ca: gw.root.clone(),
        gateway_addr: Some(gw.addr.to_string()),
        edge_hub: None,
        module_credentials: credentials,
        restart: RestartSettings {
            base_ms: 50,
            max_secs: 1,
            stable_secs: 600,
        },
        logs: edge_agent::logs::LogSettings::default(),
        stop_grace_secs: 5,
    };
    let mut e = Edge {
        t,
        gw,
        dir,
        config,
        agent: None,
    };
    e.start_agent();
    e
}

impl Edge {
    pub fn start_agent(&mut self) {
        let clock: ferrohub_runtime::time::SharedClock = Arc::new(
            ferrohub_runtime::time::FixedClock(std::sync::Mutex::new(test_support::hub::now())),
        );
        let (stop, rx) = watch::channel(false);
        let config = self.config.clone();
        let task = tokio::spawn(async move {
            edge_agent::run(config, clock, rx).await.unwrap();
        });
        self.agent = Some((stop, task));
    }

    /// Stops the agent and waits until it has stopped its modules.
    pub async fn stop_agent(&mut self) {
        if let Some((stop, task)) = self.agent.take() {
            let _ = stop.send(true);
            task.await.unwrap();
        }
    }

    /// Validates `manifest` and writes it to the hub, as `ferrohub hub edge set-modules` does.
    pub async fn deploy(&self, manifest: &Value) {
        let m = edge_agent::deployment::parse_manifest(manifest).unwrap();
        edge_agent::hub_side::set_modules(&self.t.client(), "gw", &m)
            .await
            .unwrap();
    }

    /// Writes desired properties straight into a module twin (no validation).
    pub async fn write_desired(&self, module: &str, desired: &Value) {
        edge_agent::hub_side::write_desired(&self.t.client(), "gw", module, desired)
            .await
            .unwrap();
    }

    /// The `$edgeAgent` reported properties at the hub.
    pub async fn reported(&self) -> Value {
        self.t
            .client()
            .send(Method::GET, "/twins/gw/modules/$edgeAgent", None, &[])
            .await
            .unwrap()
            .json()["properties"]["reported"]
            .clone()
    }

    /// Polls the reported properties until `pred` holds (30 s at most; then fails with them).
    pub async fn wait_reported(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..600 {
            last = self.reported().await;
            if pred(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("reported properties never showed {what}: {last:#}");
    }

    /// Whether module `m` has an identity at the hub.
    pub async fn identity_exists(&self, m: &str) -> bool {
        let r = self
            .t
            .client()
            .send(Method::GET, &format!("/devices/gw/modules/{m}"), None, &[])
            .await
            .unwrap();
        assert!(
            r.status == StatusCode::OK || r.status == StatusCode::NOT_FOUND,
            "{:?}",
            r.status
        );
        r.status == StatusCode::OK
    }

    pub fn control(&self) -> edge_agent::control::Client {
        edge_agent::control::Client::new(&self.config.control_socket())
    }

    /// `edge list` through the control socket, as (name, status) pairs.
    pub async fn listed(&self) -> Vec<(String, String)> {
        self.control()
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.status))
            .collect()
    }

    pub async fn pid(&self, m: &str) -> Option<u32> {
        let list = self.control().list().await.ok()?;
        list.into_iter().find(|e| e.name == m)?.pid
    }

    pub fn module_dir(&self, m: &str) -> PathBuf {
        self.config.data_dir.join("modules").join(m)
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.config.log_path("edgeAgent")).unwrap_or_default()
    }
}

/// A process module: a shell script that records its environment in `env.txt` (in its working
/// directory), says so on standard output, and sleeps.
pub fn sleeper(dir: &Path, name: &str) -> Value {
    let script = dir.join(format!("{name}.sh"));
    std::fs::write(
        &script,
        "#!/bin/sh\nenv > env.txt\necho \"module $IOTEDGE_MODULEID started\"\nexec sleep 600\n",
    )
    .unwrap();
    json!({
        "type": "process", "status": "running", "restartPolicy": "always", "version": "1.0",
        "settings": {"command": "/bin/sh", "args": [script.display().to_string()]}
    })
}

/// A manifest with `modules` and the default route (`extra_routes` added).
pub fn manifest(modules: Value, routes: Value) -> Value {
    let mut r = json!({"route": "FROM /messages/* INTO $upstream"});
    if let (Some(r), Some(extra)) = (r.as_object_mut(), routes.as_object()) {
        r.extend(extra.clone());
    }
    json!({"modulesContent": {
        "$edgeAgent": {"properties.desired": {
            "schemaVersion": "1.1",
            "runtime": {"type": "docker", "settings": {}},
            "systemModules": {
                "edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5"}},
                "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always", "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5"}}
            },
            "modules": modules
        }},
        "$edgeHub": {"properties.desired": {
            "schemaVersion": "1.1", "routes": r,
            "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}
        }}
    }})
}

/// Whether process `pid` exists.
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits (30 s at most) until `cond` holds.
pub async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    for _ in 0..600 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}
