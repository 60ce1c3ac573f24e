//! The edge agent against an in-process hub and gateway on loopback: deployments from the
//! `$edgeAgent` twin start, restart and remove real processes and their identities at the hub;
//! the agent reports what runs; invalid deployments are refused and the one in force keeps
//! running; modules get working credentials (connection string or workload socket).

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

mod support;

use test_support::hub as common;

use std::sync::atomic::Ordering;

use edge_agent::config::Credentials;
use serde_json::{Value, json};
use support::{alive, eventually, manifest, sleeper};

fn status_code(r: &Value) -> u64 {
    r["lastDesiredStatus"]["code"].as_u64().unwrap_or(0)
}

fn module<'a>(r: &'a Value, m: &str) -> &'a Value {
    &r["modules"][m]
}

/// Seed 000: before any deployment only the agent runs; an empty deployment brings up the
/// gateway with the default route, and `edge list` shows both system parts running.
#[tokio::test]
async fn an_empty_deployment_runs_the_gateway_with_the_default_route() {
    let e = support::start(Credentials::ConnectionString).await;
    let r = e
        .wait_reported("no deployment yet (417)", |r| status_code(r) == 417)
        .await;
    assert!(r["systemModules"]["edgeHub"].is_null(), "{r:#}");
    assert_eq!(e.listed().await, [("edgeAgent".into(), "running".into())]);

    e.deploy(&json!({})).await;
    let r = e
        .wait_reported("the empty deployment applied", |r| {
            status_code(r) == 200 && r["systemModules"]["edgeHub"]["runtimeStatus"] == "running"
        })
        .await;
    assert_eq!(r["systemModules"]["edgeAgent"]["runtimeStatus"], "running");
    assert_eq!(r["modules"], json!({}));
    assert!(r["lastDesiredVersion"].as_u64().unwrap() >= 2, "{r:#}");
    assert_eq!(
        e.listed().await,
        [
            ("edgeAgent".into(), "running".into()),
            ("edgeHub".into(), "running".into())
        ]
    );
    let gw = e.gw.gateway.clone();
    eventually("the gateway applies the default route", async || {
        gw.stats.desired_applied.load(Ordering::Relaxed) > 0
    })
    .await;
    let routes = gw.routes();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].name, "route");
    assert_eq!(routes[0].sink, routes::Sink::Upstream);
}

/// Deploy a module: it runs with its identity and the SDK environment, its output is logged;
/// killed, it is restarted and the restart reported; restarted on request; removed from the
/// deployment, it stops and its identity is deleted.
#[tokio::test]
async fn modules_are_deployed_restarted_and_removed() {
    let e = support::start(Credentials::ConnectionString).await;
    let m = sleeper(e.dir.path(), "m");
    e.deploy(&manifest(json!({"m": m}), json!({}))).await;
    let r = e
        .wait_reported("m running", |r| {
            status_code(r) == 200 && module(r, "m")["runtimeStatus"] == "running"
        })
        .await;
    let m_rep = module(&r, "m");
    assert_eq!(m_rep["restartCount"], 0);
    assert_eq!(m_rep["type"], "process");
    assert_eq!(m_rep["version"], "1.0");
    assert_ne!(m_rep["lastStartTimeUtc"], edge_agent::reported::NEVER);
    assert!(e.identity_exists("m").await);
    let identity =
        e.t.client()
            .send(hyper::Method::GET, "/devices/gw/modules/m", None, &[])
            .await
            .unwrap()
            .json();
    assert_eq!(identity["managedBy"], "iotEdge");
    let key = identity["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap();
    check_connection_string_env(&e, key).await;
    let log = e.config.log_path("m");
    eventually("m's output is in its log", async || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("module m started"))
    })
    .await;

    // Killed: restarted, and the restart reported.
    let pid = e.pid("m").await.unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let r = e
        .wait_reported("m restarted after SIGKILL", |r| {
            module(r, "m")["restartCount"] == 1 && module(r, "m")["runtimeStatus"] == "running"
        })
        .await;
    assert_eq!(module(&r, "m")["exitCode"], 137, "{r:#}");
    assert_ne!(
        module(&r, "m")["lastRestartTimeUtc"],
        edge_agent::reported::NEVER
    );
    let pid2 = e.pid("m").await.unwrap();
    assert_ne!(pid, pid2);
    assert!(
        e.agent_log()
            .contains("Restarting module m (it ended with signal 9; restart 1)")
    );

    // Restart on request (`ferrohub edge restart m`).
    e.control().restart("m").await.unwrap();
    e.wait_reported("m restarted on request", |r| {
        module(r, "m")["restartCount"] == 2 && module(r, "m")["runtimeStatus"] == "running"
    })
    .await;
    eventually("the old process is gone", async || !alive(pid2)).await;
    assert!(e.control().restart("nope").await.is_err());

    // Removed from the deployment: stopped, identity deleted.
    let pid3 = e.pid("m").await.unwrap();
    e.deploy(&manifest(json!({}), json!({}))).await;
    e.wait_reported("m gone", |r| {
        status_code(r) == 200 && r["modules"].as_object().is_some_and(|m| m.is_empty())
    })
    .await;
    eventually("m's process stops", async || !alive(pid3)).await;
    assert!(!e.identity_exists("m").await);
    assert!(e.agent_log().contains("Removed module m and its identity"));
}

/// The environment an SDK's create_from_edge_environment reads, as module `m` recorded it.
async fn check_connection_string_env(e: &support::Edge, key: &str) {
    let env_file = e.module_dir("m").join("env.txt");
    eventually("m wrote its environment", async || env_file.exists()).await;
    let env = std::fs::read_to_string(&env_file).unwrap();
    let cs = format!(
        "EdgeHubConnectionString=HostName=localhost;DeviceId=gw;ModuleId=m;SharedAccessKey={key};GatewayHostName=localhost"
    );
    assert!(env.lines().any(|l| l == cs), "{env}");
    let ca = format!(
        "EdgeModuleCACertificateFile={}",
        e.config.gateway_ca.display()
    );
    assert!(env.lines().any(|l| l == ca), "{env}");
    assert!(env.contains("IOTEDGE_MODULEID=m\n") && env.contains("IOTEDGE_DEVICEID=gw\n"));
    assert!(!env.contains("IOTEDGE_WORKLOADURI"), "{env}");
}

/// An invalid deployment (unknown module type, invalid route, docker without a container CLI)
/// is refused with its reason reported and logged; the deployment in force keeps running.
#[tokio::test]
async fn invalid_deployments_are_refused_and_the_previous_keeps_running() {
    let e = support::start(Credentials::ConnectionString).await;
    let good = manifest(json!({"m": sleeper(e.dir.path(), "m")}), json!({}));
    e.deploy(&good).await;
    e.wait_reported("m running", |r| {
        module(r, "m")["runtimeStatus"] == "running"
    })
    .await;
    let pid = e.pid("m").await.unwrap();
    let agent_desired = |modules: Value| {
        let mut d = good["modulesContent"]["$edgeAgent"]["properties.desired"].clone();
        d["modules"] = modules;
        d
    };

    // An unknown module type.
    let mut wasm = sleeper(e.dir.path(), "w");
    wasm["type"] = json!("wasm");
    e.write_desired(
        "$edgeAgent",
        &agent_desired(json!({"m": sleeper(e.dir.path(), "m"), "w": wasm})),
    )
    .await;
    let r = e
        .wait_reported("the wasm module refused", |r| status_code(r) == 400)
        .await;
    let why = r["lastDesiredStatus"]["description"].as_str().unwrap();
    assert_eq!(
        why,
        "module w: unknown module type \"wasm\" (supported: process, docker)"
    );
    assert!(e.agent_log().contains("Refusing deployment version"));
    assert!(e.agent_log().contains(why));
    assert!(!e.identity_exists("w").await);

    // An invalid route, with a deployment that would add module n.
    e.write_desired(
        "$edgeHub",
        &json!({"schemaVersion": "1.1", "routes": {"bad": "FROM /messages/* INTO nowhere"}}),
    )
    .await;
    e.write_desired(
        "$edgeAgent",
        &agent_desired(json!({"m": sleeper(e.dir.path(), "m"), "n": sleeper(e.dir.path(), "n")})),
    )
    .await;
    let r = e
        .wait_reported("the bad route refused", |r| {
            status_code(r) == 400
                && r["lastDesiredStatus"]["description"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("$edgeHub: error parsing route bad"))
        })
        .await;
    assert!(module(&r, "n").is_null(), "{r:#}");
    assert!(!e.identity_exists("n").await);
    let gw = e.gw.gateway.clone();
    eventually("the gateway refuses the route too", async || {
        gw.stats.desired_refused.load(Ordering::Relaxed) > 0
    })
    .await;
    assert_eq!(gw.routes()[0].name, "route", "the routes in force stay");

    // Docker without docker or podman.
    if edge_agent::launch::container_cli().is_none() {
        e.write_desired("$edgeHub", &edge_agent::deployment::default_edge_hub())
            .await;
        let docker = json!({"type": "docker", "settings": {"image": "example/sensor:1"}});
        e.write_desired(
            "$edgeAgent",
            &agent_desired(json!({"m": sleeper(e.dir.path(), "m"), "c": docker})),
        )
        .await;
        let r = e
            .wait_reported("the docker module refused", |r| {
                r["lastDesiredStatus"]["description"]
                    .as_str()
                    .is_some_and(|d| d.contains("neither is installed"))
            })
            .await;
        assert_eq!(status_code(&r), 400);
    }

    // Through all of it, m kept running, untouched.
    let r = e.reported().await;
    assert_eq!(module(&r, "m")["runtimeStatus"], "running");
    assert_eq!(module(&r, "m")["restartCount"], 0);
    assert_eq!(e.pid("m").await, Some(pid));
    assert!(alive(pid));
}

/// Workload credentials: the module gets `IOTEDGE_*` and a socket of its own that signs with its
/// key (and only its key); a token signed there gets it into the gateway.
#[tokio::test]
async fn a_module_signs_through_its_workload_socket_and_connects_to_the_gateway() {
    let e = support::start(Credentials::Workload).await;
    e.deploy(&manifest(
        json!({"w": sleeper(e.dir.path(), "w")}),
        json!({}),
    ))
    .await;
    e.wait_reported("w running", |r| {
        module(r, "w")["runtimeStatus"] == "running"
    })
    .await;
    let env_file = e.module_dir("w").join("env.txt");
    eventually("w wrote its environment", async || env_file.exists()).await;
    let env = std::fs::read_to_string(&env_file).unwrap();
    let var = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing: {env}"))
            .to_owned()
    };
    assert!(!env.contains("EdgeHubConnectionString"), "{env}");
    let uri = var("IOTEDGE_WORKLOADURI");
    let socket = uri.strip_prefix("unix://").unwrap();
    let genid = var("IOTEDGE_MODULEGENERATIONID");
    assert!(!genid.is_empty());
    assert_eq!(var("IOTEDGE_IOTHUBHOSTNAME"), "localhost");
    assert_eq!(var("IOTEDGE_APIVERSION"), "2019-01-30");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let uds = identity::client::UdsClient::new(socket);
    let (status, bundle) = uds
        .send(
            hyper::Method::GET,
            "/trust-bundle?api-version=2019-01-30",
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        bundle["certificate"].as_str().unwrap(),
        std::fs::read_to_string(&e.config.gateway_ca).unwrap()
    );
    sign_and_connect(&e, &uds, &genid).await;
}

/// Signs a token for `w` through its workload socket the way the SDK does (another module or
/// generation id is refused), and connects to the gateway as `gw/w` with it.
async fn sign_and_connect(e: &support::Edge, uds: &identity::client::UdsClient, genid: &str) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let expiry = common::expiry();
    let resource = "localhost%2Fdevices%2Fgw%2Fmodules%2Fw";
    let to_sign = format!("{resource}\n{expiry}");
    let sign = |module: &str, gen_id: &str| {
        let uds = uds.clone();
        let path = format!("/modules/{module}/genid/{gen_id}/sign?api-version=2019-01-30");
        let body = json!({"keyId": "primary", "algo": "HMACSHA256", "data": b64.encode(&to_sign)});
        async move {
            uds.send(hyper::Method::POST, &path, Some(&body))
                .await
                .unwrap()
        }
    };
    assert_eq!(sign("other", genid).await.0, 404, "another module's key");
    assert_eq!(sign("w", "wrong-genid").await.0, 404);
    let (status, signed) = sign("w", genid).await;
    assert_eq!(status, 200, "{signed}");
    let sig = signed["digest"].as_str().unwrap();
    let token = format!(
        "SharedAccessSignature sr={resource}&sig={}&se={expiry}",
        iot_auth::percent_encode(sig)
    );
    let mut accepted = false;
    for _ in 0..100 {
        let mut c = common::Mqtt::tls_to(e.gw.addr, &e.gw.root, None).await;
        let code = c.connect("gw/w", Some(token.clone()), true).await.1;
        if code == mqtt_codec::ConnectReturnCode::Accepted {
            accepted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(accepted, "the gateway refused w's workload-signed token");
}

/// The agent restarts while the hub is down: it stops its modules on the way out, and on the
/// way back in runs the deployment it applied last, with the identities it kept.
#[tokio::test]
async fn after_a_restart_without_the_hub_the_last_deployment_runs_again() {
    let mut e = support::start(Credentials::ConnectionString).await;
    e.deploy(&manifest(
        json!({"m": sleeper(e.dir.path(), "m")}),
        json!({}),
    ))
    .await;
    e.wait_reported("m running", |r| {
        module(r, "m")["runtimeStatus"] == "running"
    })
    .await;
    let pid = e.pid("m").await.unwrap();
    e.stop_agent().await;
    assert!(!alive(pid), "the agent stops its modules when it stops");
    assert!(e.agent_log().contains("Agent stopped"));

    let hub = std::mem::replace(&mut e.t, common::TestHub::start().await);
    let _stopped = hub.stop().await; // the agent's hub is gone
    let env_file = e.module_dir("m").join("env.txt");
    std::fs::remove_file(&env_file).unwrap();
    e.start_agent();
    eventually("m runs again without the hub", async || {
        e.control()
            .list()
            .await
            .is_ok_and(|l| l.iter().any(|m| m.name == "m" && m.status == "running"))
    })
    .await;
    eventually("m got its environment again", async || env_file.exists()).await;
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(env.contains("ModuleId=m;SharedAccessKey="), "{env}");
    assert!(e.agent_log().contains("(the last one applied, from disk)"));
    e.stop_agent().await;
}

/// `settings.user`: the module runs as that uid (the agent runs as root), in a directory of its
/// own, with a workload socket only that uid may use. Skipped when the tests do not run as root.
#[tokio::test]
async fn a_module_runs_as_its_own_uid() {
    if !rustix::process::getuid().is_root() {
        eprintln!("skipped: running a module as another uid needs root");
        return;
    }
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let e = support::start(Credentials::Workload).await;
    // The script's directory must be readable by that uid.
    std::fs::set_permissions(e.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut m = sleeper(e.dir.path(), "u");
    m["settings"]["user"] = json!("1001:1001");
    e.deploy(&manifest(json!({"u": m}), json!({}))).await;
    e.wait_reported("u running", |r| {
        module(r, "u")["runtimeStatus"] == "running"
    })
    .await;
    let pid = e.pid("u").await.unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some("1001"),
        "{uid_line}"
    );
    let env_file = e.module_dir("u").join("env.txt");
    eventually("u wrote into its directory", async || env_file.exists()).await;
    assert_eq!(std::fs::metadata(e.module_dir("u")).unwrap().uid(), 1001);
    assert_eq!(std::fs::metadata(&env_file).unwrap().uid(), 1001);
    let socket = edge_agent::launch::workload_socket(&e.config.data_dir, "u");
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (1001, 0o600));
}

/// A second agent on the same data directory refuses to start (it would take over the first
/// one's modules).
#[tokio::test]
async fn a_second_agent_on_the_same_directory_refuses_to_start() {
    let e = support::start(Credentials::ConnectionString).await;
    eventually("the first agent answers", async || {
        e.control().list().await.is_ok()
    })
    .await;
    let clock: ferrohub_runtime::time::SharedClock =
        std::sync::Arc::new(ferrohub_runtime::time::SystemClock);
    let second = edge_agent::Agent::open(e.config.clone(), clock);
    assert!(
        matches!(second, Err(edge_agent::AgentError::AlreadyRunning(_))),
        "a second agent started"
    );
}
