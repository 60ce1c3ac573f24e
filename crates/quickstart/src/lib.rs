//! `ferrohub quickstart`: the seed scenario end to end on this machine, every step verified.
//!
//! Stages: PKI (seeds 000, 002, 003: the certificate hierarchy, the gateway's server chain from
//! the edge CA, device identities, a proof-of-possession certificate, chain validation and a real
//! TLS handshake); hub (an in-process hub on loopback, the intermediate CA verified by proof of
//! possession, two devices sending durable telemetry); provisioning and identity service (seeds
//! 002, 004: DPS linked to the hub, an X.509 enrollment group for edge devices, keyd/certd/
//! identityd provisioning the edge device, a module signing through keyd); gateway (seeds 000,
//! 001: the edge device as a transparent gateway with seed 000's routes, a CA-signed and a SAS
//! child sending through it, a direct method and a desired-property patch relayed to a child);
//! outage (the hub stopped while the children keep sending, every message counted at the hub once
//! it is back). Every run writes `DATA_DIR/quickstart.json` with what an SDK client needs;
//! `--keep-running` leaves the services up until Ctrl-C, `--azure-ports` binds 8883/443 on
//! 127.0.0.1 (hub), 127.0.0.2 (gateway) and 127.0.0.3 (DPS). Each step has a time limit; Ctrl-C
//! interrupts the running step and stops the services. The `ferrohub` binary parses
//! [`QuickstartArgs`] and hands them to [`run`].
#![forbid(unsafe_code)]

mod edge_stage;
mod hub_stage;
mod provision_stage;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use pki::{Certificate, ChainValidator, KeyAlgorithm, Profile, Purpose};
use serde_json::{Value, json};

use device_client::tls_probe;
use ferrohub_certs::cert_dir::{self, load_cert};
use ferrohub_certs::{KeyOpts, Plan, issue_files};
use ferrohub_runtime::clock;

use crate::edge_stage::{CHILD_SAS, EdgeStage};
use crate::hub_stage::{Addrs, HUB_HOST, HubStage};
use crate::provision_stage::{ProvisionStage, SCOPE};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cargo run --release -- quickstart --fresh\n  \
    ferrohub quickstart --keep-running           # then connect with DATA_DIR/quickstart.json\n  \
    sudo ferrohub quickstart --azure-ports --keep-running   # unmodified SDKs: ports 8883/443"
)]
pub struct QuickstartArgs {
    /// Where certificates and state go (reused between runs unless --fresh).
    #[arg(long, default_value = "./quickstart-data", value_name = "DIR")]
    data_dir: PathBuf,
    /// Start from nothing: delete DIR/certs and the services' data first.
    #[arg(long)]
    fresh: bool,
    /// Print details under each step.
    #[arg(long)]
    verbose: bool,
    /// Leave hub, DPS, identity service and gateway up after the steps, until Ctrl-C, and print
    /// how to connect SDK clients (also in DIR/quickstart.json).
    #[arg(long)]
    keep_running: bool,
    /// Bind the Azure ports so unmodified SDKs connect: hub 127.0.0.1:8883/443, gateway
    /// 127.0.0.2:8883, DPS 127.0.0.3:8883/443 (needs root or CAP_NET_BIND_SERVICE).
    #[arg(long)]
    azure_ports: bool,
}

/// The gateway certificate's CN: seed 001's downstream devices connect to it by this name.
const GATEWAY_HOST: &str = "localhost";
const EDGE_NAME: &str = "gateway";
const EDGE_DEVICE_ID: &str = "edge-gateway-01";
const CHILD_X509: &str = "child-x509";
const CHILD_THUMB: &str = "child-thumbprint";

struct StepResult {
    name: &'static str,
    ok: bool,
    skipped: bool,
    detail: String,
    took: Duration,
}

type StepFn<'a> = Box<dyn Fn(&Path) -> Result<String> + 'a>;

/// The services' data directories under DATA_DIR (removed by --fresh).
const DATA_DIRS: [&str; 5] = ["certs", "hub-data", "dps-data", "identity", "edge-data"];

pub fn run(args: &QuickstartArgs) -> Result<bool> {
    let dir = args.data_dir.join("certs");
    let hub = HubStage::new(prepare(args)?)?;
    let prov = ProvisionStage::new(&hub, &args.data_dir);
    let edge = EdgeStage::new(&hub, &args.data_dir, EDGE_DEVICE_ID, CHILD_X509);
    let info = |d: &Path| write_info(args, &hub, &prov, &edge, d);
    let mut steps = pki_steps();
    steps.extend(service_steps(&hub, &prov));
    steps.extend(edge_steps(&edge));
    let cleanup: Vec<(&'static str, StepFn<'_>)> = vec![
        ("Edge gateway stopped", Box::new(|_| edge.stop())),
        (
            "Provisioning and identity services stopped",
            Box::new(|_| prov.stop()),
        ),
        ("Hub stopped cleanly", Box::new(|_| hub.stop())),
    ];
    let mut results = Vec::new();
    // Fault injection for the test suite: the hub's server task is aborted (as if the hub crashed)
    // just before the named step.
    let crash_before = std::env::var("FERROHUB_QUICKSTART_CRASH_HUB_BEFORE").ok();
    for (name, step) in &steps {
        if crash_before.as_deref() == Some(*name) {
            hub.crash();
        }
        if hub.interrupted() {
            results.push(skipped(name));
        } else {
            results.push(run_step(name, step.as_ref(), &dir, args.verbose));
        }
    }
    // Written in every run, interrupted or not: what exists now, and where.
    results.push(run_step(
        "Connection details written to quickstart.json",
        &info,
        &dir,
        args.verbose,
    ));
    if args.keep_running && !hub.interrupted() {
        let path = args.data_dir.join("quickstart.json");
        if let Ok(v) = serde_json::from_slice::<Value>(&std::fs::read(&path).unwrap_or_default()) {
            print_connection_info(&v, &path);
        }
        println!("\nServices are up. Press Ctrl-C to stop them.");
        hub.wait_for_interrupt();
    }
    for (name, step) in &cleanup {
        results.push(run_step(name, step.as_ref(), &dir, args.verbose));
    }
    print_summary(&results, &args.data_dir);
    Ok(results.iter().all(|r| r.ok))
}

/// Checks the ports, clears the data with --fresh, says what is about to run; returns where the
/// services will listen.
fn prepare(args: &QuickstartArgs) -> Result<Addrs> {
    let addrs = if args.azure_ports {
        Addrs::azure()
    } else {
        Addrs::ephemeral()
    };
    addrs.preflight()?;
    if args.fresh {
        for d in DATA_DIRS.map(|d| args.data_dir.join(d)) {
            if d.exists() {
                std::fs::remove_dir_all(&d)
                    .with_context(|| format!("cannot remove {}", d.display()))?;
            }
        }
    }
    let dir = args.data_dir.join("certs");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    println!(
        "ferrohub quickstart: PKI, hub, provisioning, identity-service, gateway and outage stages \
         (seeds 000-004) in {}",
        args.data_dir.display()
    );
    println!(
        "{}\n",
        if args.azure_ports {
            "Azure ports: hub 127.0.0.1:8883/443, gateway 127.0.0.2:8883, DPS 127.0.0.3:8883/443."
        } else {
            "Ephemeral loopback ports (no root needed; --azure-ports for unmodified SDKs)."
        }
    );
    Ok(addrs)
}

/// The hub, provisioning and identity-service stages.
fn service_steps<'a>(
    hub: &'a HubStage,
    prov: &'a ProvisionStage<'a>,
) -> Vec<(&'static str, StepFn<'a>)> {
    vec![
        (
            "Hub started on loopback (in-process)",
            Box::new(|d| hub.start(d)),
        ),
        (
            "Intermediate CA uploaded, verified by proof of possession",
            Box::new(|d| hub.verify_ca(d)),
        ),
        (
            "Downstream devices registered at the hub",
            Box::new(|d| hub.register(d, CHILD_X509, CHILD_THUMB)),
        ),
        (
            "Telemetry from both devices, durable, read back",
            Box::new(|d| {
                let devices = [
                    (CHILD_X509, format!("iot-device-{CHILD_X509}")),
                    (CHILD_THUMB, format!("self-signed-{CHILD_THUMB}")),
                ];
                hub.telemetry(d, &devices)
            }),
        ),
        (
            "Provisioning service started, linked to the hub",
            Box::new(|d| prov.start(d)),
        ),
        (
            "Intermediate CA verified at the provisioning service",
            Box::new(|d| prov.verify_ca(d)),
        ),
        (
            "Enrollment group for edge devices (X.509, iotEdge)",
            Box::new(|_| prov.enroll()),
        ),
        (
            "Identity service provisions the edge device via DPS",
            Box::new(|d| prov.identity(d, EDGE_DEVICE_ID)),
        ),
        (
            "Module signs through keyd, sends telemetry",
            Box::new(|d| prov.module_telemetry(d, EDGE_DEVICE_ID)),
        ),
    ]
}

/// The gateway and outage stages.
fn edge_steps<'a>(edge: &'a EdgeStage<'a>) -> Vec<(&'static str, StepFn<'a>)> {
    vec![
        (
            "Children (X.509 CA-signed, SAS) in the edge device's scope",
            Box::new(|_| edge.register_children()),
        ),
        (
            "Edge gateway started (seed 000 routes, edge CA cert)",
            Box::new(|d| {
                let edge_ca = format!("iot-edge-device-ca-{EDGE_NAME}");
                edge.start(d, &format!("server-{GATEWAY_HOST}"), &edge_ca)
            }),
        ),
        (
            "Telemetry from both children through the gateway",
            Box::new(|d| edge.telemetry(d)),
        ),
        (
            "Direct method to a child through the gateway",
            Box::new(|d| edge.method(d)),
        ),
        (
            "Desired-property patch to a child through the gateway",
            Box::new(|d| edge.twin(d)),
        ),
        (
            "Hub stopped; the gateway keeps acknowledging",
            Box::new(|d| edge.outage(d)),
        ),
        (
            "Hub back on the same ports; every message arrives",
            Box::new(|d| edge.recovery(d)),
        ),
    ]
}

fn pki_steps<'a>() -> Vec<(&'static str, StepFn<'a>)> {
    vec![
        ("Root CA", Box::new(|d| ensure(d, root_plan()))),
        (
            "Intermediate CA",
            Box::new(|d| ensure(d, intermediate_plan())),
        ),
        (
            "Edge device CA (pathLen 0)",
            Box::new(|d| ensure(d, edge_ca_plan())),
        ),
        (
            "Gateway server certificate",
            Box::new(|d| ensure(d, gateway_plan())),
        ),
        (
            "Edge device identity (DPS registration id)",
            Box::new(|d| ensure(d, device_plan(EDGE_DEVICE_ID))),
        ),
        (
            "Downstream device, CA-signed",
            Box::new(|d| ensure(d, device_plan(CHILD_X509))),
        ),
        (
            "Downstream device, self-signed",
            Box::new(|d| ensure(d, self_signed_plan())),
        ),
        (
            "Proof of possession of the intermediate CA",
            Box::new(proof_of_possession),
        ),
        ("Chain validation of every leaf", Box::new(validate_all)),
        ("TLS handshake with the gateway chain", Box::new(tls_check)),
    ]
}

fn skipped(name: &'static str) -> StepResult {
    println!("- {name} (not run: interrupted)");
    StepResult {
        name,
        ok: false,
        skipped: true,
        detail: "not run: interrupted".into(),
        took: Duration::ZERO,
    }
}

fn run_step(
    name: &'static str,
    step: &dyn Fn(&Path) -> Result<String>,
    dir: &Path,
    verbose: bool,
) -> StepResult {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(name);
    pb.enable_steady_tick(Duration::from_millis(80));
    let start = clock::instant();
    let outcome = step(dir);
    let took = start.elapsed();
    let (ok, detail) = match outcome {
        Ok(d) => (true, d),
        Err(e) => (false, format!("{e:#}")),
    };
    pb.finish_and_clear();
    println!(
        "{} {name} ({} ms)",
        if ok { "✓" } else { "✗" },
        took.as_millis()
    );
    if verbose || !ok {
        for line in detail.lines() {
            println!("    {line}");
        }
    }
    StepResult {
        name,
        ok,
        skipped: false,
        detail,
        took,
    }
}

fn print_summary(results: &[StepResult], data: &Path) {
    println!("\n{:<58} {:>6} {:>8}  detail", "step", "result", "ms");
    for r in results {
        let first: String = r
            .detail
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(80)
            .collect();
        let mark = match (r.ok, r.skipped) {
            (true, _) => "✓",
            (false, true) => "-",
            (false, false) => "✗",
        };
        println!(
            "{:<58} {:>6} {:>8}  {first}",
            r.name,
            mark,
            r.took.as_millis()
        );
    }
    let passed = results.iter().filter(|r| r.ok).count();
    let total: Duration = results.iter().map(|r| r.took).sum();
    println!(
        "\n{passed} of {} steps verified in {:.1} s.",
        results.len(),
        total.as_secs_f64()
    );
    println!(
        "Files: {d}/certs (PKI), {d}/hub-data, {d}/dps-data, {d}/identity, {d}/edge-data, \
         {d}/quickstart.json (connection details)",
        d = data.display()
    );
}

/// `DATA_DIR/quickstart.json`: what a real SDK client needs to connect to the services of this
/// run (addresses are valid while they run, i.e. with --keep-running).
fn write_info(
    args: &QuickstartArgs,
    hub: &HubStage,
    prov: &ProvisionStage<'_>,
    edge: &EdgeStage<'_>,
    certs: &Path,
) -> Result<String> {
    let root = existing(certs, "root-ca.cert.pem")?;
    let addr = |a: Option<std::net::SocketAddr>| a.map(|a| a.to_string());
    let (hub_mqtt, hub_https) = hub.addresses().unzip();
    let (dps_mqtt, dps_https) = prov.addresses().unzip();
    let gw = edge.gateway_addr();
    let gw_host = &hub.addrs.gateway_host;
    let s_client = |a: Option<std::net::SocketAddr>| {
        a.map(|a| format!("openssl s_client -connect {a} -CAfile {root} -showcerts"))
    };
    let edge_stem = format!("iot-device-{EDGE_DEVICE_ID}");
    let (children, devices) = device_info(certs, edge, gw_host)?;
    let info = json!({
        "dataDir": std::path::absolute(&args.data_dir)?,
        "keepRunning": args.keep_running,
        "azurePorts": args.azure_ports,
        "note": if args.azure_ports {
            "The standard ports: unmodified SDKs connect with these connection strings while the quickstart runs with --keep-running."
        } else {
            "Ephemeral ports: ferrohub's own clients and openssl connect to them while the quickstart runs with --keep-running; unmodified SDKs need --azure-ports (fixed ports 8883/443)."
        },
        "rootCaFile": root,
        "hub": {
            "hostName": HUB_HOST,
            "mqtt": addr(hub_mqtt),
            "https": addr(hub_https),
            "serviceConnectionString": hub.service_connection_string(),
            "opensslCommand": s_client(hub_mqtt),
        },
        "dps": {
            "globalEndpoint": hub.addrs.dps_host,
            "mqtt": addr(dps_mqtt),
            "https": addr(dps_https),
            "idScope": SCOPE,
            "enrollmentGroupId": "edge-devices",
            "registrationId": EDGE_DEVICE_ID,
            "certFile": existing(certs, &format!("{edge_stem}-full-chain.cert.pem"))?,
            "keyFile": existing(certs, &format!("{edge_stem}.key.pem"))?,
        },
        "gateway": {
            "hostName": gw_host,
            "edgeDeviceId": EDGE_DEVICE_ID,
            "mqtt": addr(gw),
            "certFile": existing(certs, &format!("server-{GATEWAY_HOST}-full-chain.cert.pem"))?,
            "opensslCommand": s_client(gw),
        },
        "children": children,
        "devices": devices,
    });
    let path = args.data_dir.join("quickstart.json");
    // It holds keys: owner-only, like the key files.
    cert_dir::write_all(&[cert_dir::Output {
        path: path.clone(),
        contents: serde_json::to_string_pretty(&info)? + "\n",
        secret: true,
    }])?;
    Ok(format!(
        "{}: hub, DPS (ID scope {SCOPE}), gateway {gw_host}, 2 children with GatewayHostName",
        path.display()
    ))
}

/// The absolute path of `name` in `certs`, which must exist.
fn existing(certs: &Path, name: &str) -> Result<String> {
    let p = std::path::absolute(certs.join(name))?;
    if !p.exists() {
        bail!("{} is missing", p.display());
    }
    Ok(p.display().to_string())
}

/// The gateway's children (connection strings with `GatewayHostName`) and the device that
/// connects to the hub directly.
fn device_info(certs: &Path, edge: &EdgeStage<'_>, gw_host: &str) -> Result<(Value, Value)> {
    let via = format!(";GatewayHostName={gw_host}");
    let x509 = |id: &str, stem: &str, chain: &str, gateway: &str| -> Result<Value> {
        Ok(json!({
            "deviceId": id,
            "connectionString": format!("HostName={HUB_HOST};DeviceId={id};x509=true{gateway}"),
            "certFile": existing(certs, chain)?,
            "keyFile": existing(certs, &format!("{stem}.key.pem"))?,
        }))
    };
    let mut sas = json!({"deviceId": CHILD_SAS, "parent": EDGE_DEVICE_ID});
    if let Some(key) = edge.sas_key() {
        sas["connectionString"] = json!(format!(
            "HostName={HUB_HOST};DeviceId={CHILD_SAS};SharedAccessKey={key}{via}"
        ));
    }
    let stem = format!("iot-device-{CHILD_X509}");
    let chain = format!("{stem}-full-chain.cert.pem");
    let mut child_x509 = x509(CHILD_X509, &stem, &chain, &via)?;
    child_x509["parent"] = json!(EDGE_DEVICE_ID);
    let thumb = format!("self-signed-{CHILD_THUMB}");
    let direct = x509(CHILD_THUMB, &thumb, &format!("{thumb}.cert.pem"), "")?;
    Ok((json!([child_x509, sas]), json!([direct])))
}

fn print_connection_info(v: &Value, path: &Path) {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    println!(
        "\nConnect real SDK clients (trust {}):",
        s(&v["rootCaFile"])
    );
    println!(
        "  hub      {}  MQTT {}  HTTPS {}",
        s(&v["hub"]["hostName"]),
        s(&v["hub"]["mqtt"]),
        s(&v["hub"]["https"])
    );
    println!(
        "  gateway  {}  MQTT {}",
        s(&v["gateway"]["hostName"]),
        s(&v["gateway"]["mqtt"])
    );
    println!(
        "  DPS      {}  MQTT {}  HTTPS {}  ID scope {}",
        s(&v["dps"]["globalEndpoint"]),
        s(&v["dps"]["mqtt"]),
        s(&v["dps"]["https"]),
        s(&v["dps"]["idScope"])
    );
    println!("  service  {}", s(&v["hub"]["serviceConnectionString"]));
    for d in v["children"].as_array().into_iter().flatten() {
        println!("  {:<17}{}", s(&d["deviceId"]), s(&d["connectionString"]));
        if d["certFile"].is_string() {
            println!(
                "  {:<17}cert {}  key {}",
                "",
                s(&d["certFile"]),
                s(&d["keyFile"])
            );
        }
    }
    println!("  {}", s(&v["gateway"]["opensslCommand"]));
    println!("  {}", s(&v["hub"]["opensslCommand"]));
    println!(
        "All of it, and the self-signed and edge devices: {}",
        path.display()
    );
}

fn opts() -> KeyOpts {
    KeyOpts {
        key_alg: KeyAlgorithm::P256,
        days: None,
        not_before: None,
        force: false,
    }
}

fn root_plan() -> Plan {
    Plan {
        what: "root CA",
        profile: Profile::RootCa,
        cn: "ferrohub Quickstart Root CA".into(),
        sans: vec![],
        stem: "root-ca".into(),
        full_chain: false,
        issuer: None,
    }
}

fn intermediate_plan() -> Plan {
    Plan {
        what: "intermediate CA",
        profile: Profile::IntermediateCa { path_len: None },
        cn: "ferrohub Quickstart Intermediate CA".into(),
        sans: vec![],
        stem: "intermediate-ca".into(),
        full_chain: true,
        issuer: Some(("root-ca".into(), None)),
    }
}

fn edge_ca_plan() -> Plan {
    let stem = format!("iot-edge-device-ca-{EDGE_NAME}");
    Plan {
        what: "edge device CA",
        profile: Profile::EdgeCa,
        cn: stem.clone(),
        sans: vec![],
        stem,
        full_chain: true,
        issuer: Some(("intermediate-ca".into(), None)),
    }
}

fn gateway_plan() -> Plan {
    Plan {
        what: "server certificate",
        profile: Profile::Server,
        cn: GATEWAY_HOST.into(),
        // 127.0.0.2: the gateway's address with --azure-ports.
        sans: vec![
            GATEWAY_HOST.into(),
            "127.0.0.1".into(),
            "127.0.0.2".into(),
            "::1".into(),
        ],
        stem: format!("server-{GATEWAY_HOST}"),
        full_chain: true,
        issuer: Some((format!("iot-edge-device-ca-{EDGE_NAME}"), None)),
    }
}

fn device_plan(id: &str) -> Plan {
    Plan {
        what: "device identity certificate",
        profile: Profile::DeviceClient,
        cn: id.into(),
        sans: vec![],
        stem: format!("iot-device-{id}"),
        full_chain: true,
        issuer: Some(("intermediate-ca".into(), None)),
    }
}

fn self_signed_plan() -> Plan {
    Plan {
        what: "self-signed device certificate",
        profile: Profile::SelfSignedDevice,
        cn: CHILD_THUMB.into(),
        sans: vec![],
        stem: format!("self-signed-{CHILD_THUMB}"),
        full_chain: false,
        issuer: None,
    }
}

/// Creates the plan's files, or reuses them from an earlier run when they are already there (a
/// server certificate missing one of the plan's names is issued again).
pub fn ensure(dir: &Path, plan: Plan) -> Result<String> {
    let cert_path = dir.join(format!("{}.cert.pem", plan.stem));
    let mut key_opts = opts();
    if cert_path.exists() {
        let cert = load_cert(&cert_path)?;
        cert_dir::load_key(&dir.join(format!("{}.key.pem", plan.stem)))?.matches(&cert)?;
        let names = cert.info().subject_alt_names;
        let has = |n: &String| {
            names
                .iter()
                .any(|s| s.split_once(':').map(|x| x.1) == Some(n))
        };
        if plan.sans.iter().all(has) {
            return Ok(format!(
                "reused {} ({})\nSHA-1 {}",
                cert_path.display(),
                cert.subject(),
                cert.thumbprint_sha1()
            ));
        }
        key_opts.force = true;
    }
    let issued = issue_files(dir, &plan, &key_opts)?;
    Ok(format!(
        "{} {} ({}, valid until {})\nSHA-1 {}",
        if key_opts.force {
            "issued again (the old one lacked a name this build serves on)"
        } else {
            "created"
        },
        issued.cert_path.display(),
        issued.cert.subject(),
        issued.cert.info().not_after,
        issued.cert.thumbprint_sha1()
    ))
}

/// Seed 003: the hub hands out a code, the CA owner signs a certificate with CN = code.
fn proof_of_possession(dir: &Path) -> Result<String> {
    let code = pki::pop::new_verification_code()?;
    let plan = Plan {
        what: "proof-of-possession certificate",
        profile: Profile::Verification,
        cn: code.clone(),
        sans: vec![],
        stem: format!("verification-{code}"),
        full_chain: false,
        issuer: Some(("intermediate-ca".into(), None)),
    };
    let issued = issue_files(dir, &plan, &opts())?;
    let ca = load_cert(&dir.join("intermediate-ca.cert.pem"))?;
    pki::pop::verify_possession(&ca, &issued.cert, &code, clock::now())?;
    // The check must also refuse a proof for another code.
    if pki::pop::verify_possession(&ca, &issued.cert, "NOT-THE-CODE", clock::now()).is_ok() {
        bail!("a proof for the wrong code was accepted");
    }
    Ok(format!(
        "code {code}: {} verified against {}",
        issued.cert_path.display(),
        ca.subject()
    ))
}

fn validate_all(dir: &Path) -> Result<String> {
    let root = load_cert(&dir.join("root-ca.cert.pem"))?;
    let validator =
        ChainValidator::new([root]).context("the root CA is not a usable trust anchor")?;
    let now = clock::now();
    let mut lines = Vec::new();
    let cases = [
        (
            format!("iot-device-{EDGE_DEVICE_ID}-full-chain.cert.pem"),
            Purpose::ClientAuth,
        ),
        (
            format!("iot-device-{CHILD_X509}-full-chain.cert.pem"),
            Purpose::ClientAuth,
        ),
        (
            format!("server-{GATEWAY_HOST}-full-chain.cert.pem"),
            Purpose::ServerAuth,
        ),
    ];
    for (file, purpose) in cases {
        let chain: Vec<Certificate> = cert_dir::load_certs(&dir.join(&file))?;
        let path = validator
            .verify(&chain[0], &chain[1..], now, purpose)
            .with_context(|| format!("{file} does not validate"))?;
        lines.push(format!(
            "{file}: OK, {} certificates to the root",
            path.certs.len()
        ));
    }
    // The self-signed device must not chain to the root: it authenticates by thumbprint.
    let selfie = load_cert(&dir.join(format!("self-signed-{CHILD_THUMB}.cert.pem")))?;
    if validator
        .verify(&selfie, &[], now, Purpose::ClientAuth)
        .is_ok()
    {
        bail!("the self-signed certificate validated against the root");
    }
    lines.push(format!(
        "self-signed-{CHILD_THUMB}: refused by the root as expected; thumbprint {}",
        selfie.thumbprint_sha1()
    ));
    Ok(lines.join("\n"))
}

fn tls_check(dir: &Path) -> Result<String> {
    let chain = dir.join(format!("server-{GATEWAY_HOST}-full-chain.cert.pem"));
    let key = dir.join(format!("server-{GATEWAY_HOST}.key.pem"));
    let probe = tls_probe::handshake(&chain, &key, &dir.join("root-ca.cert.pem"), GATEWAY_HOST)?;
    Ok(format!(
        "{} with {GATEWAY_HOST}, server presented {} certificates, client trusted only root-ca",
        probe.version, probe.chain_len
    ))
}
