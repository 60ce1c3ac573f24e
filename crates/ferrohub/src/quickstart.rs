//! `ferrohub quickstart`: the seed scenario end to end on this machine.
//!
//! Today it runs the PKI stage (seeds 000, 002, 003: the certificate hierarchy, the gateway's
//! server chain, device identities, a proof-of-possession certificate, chain validation and a real
//! TLS handshake) and the hub stage (an in-process hub on loopback, the intermediate CA verified by
//! proof of possession, both downstream devices registered and sending durable telemetry). DPS,
//! the identity service and the gateway join as they land; the summary says which did not run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use pki::{Certificate, ChainValidator, KeyAlgorithm, Profile, Purpose};

use crate::certs::store::{self, load_cert};
use crate::certs::{KeyOpts, Plan, issue_files};
use crate::quickstart_hub::HubStage;
use crate::{clock, tls_probe};

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  cargo run --release -- quickstart --fresh")]
pub struct QuickstartArgs {
    /// Where certificates and state go (reused between runs unless --fresh).
    #[arg(long, default_value = "./quickstart-data", value_name = "DIR")]
    data_dir: PathBuf,
    /// Start from nothing: delete DIR/certs first.
    #[arg(long)]
    fresh: bool,
    /// Print details under each step.
    #[arg(long)]
    verbose: bool,
}

/// The gateway's host name: seed 001's downstream devices connect to it by this name.
const GATEWAY_HOST: &str = "localhost";
const EDGE_NAME: &str = "gateway";
const EDGE_DEVICE_ID: &str = "edge-gateway-01";
const CHILD_X509: &str = "child-x509";
const CHILD_THUMB: &str = "child-thumbprint";

struct StepResult {
    name: &'static str,
    ok: bool,
    detail: String,
    took: Duration,
}

type StepFn<'a> = Box<dyn Fn(&Path) -> Result<String> + 'a>;

pub fn run(args: &QuickstartArgs) -> Result<bool> {
    let dir = args.data_dir.join("certs");
    if args.fresh {
        for d in [
            dir.clone(),
            args.data_dir.join("hub-data"),
            args.data_dir.join("dps-data"),
            args.data_dir.join("identity"),
        ] {
            if d.exists() {
                std::fs::remove_dir_all(&d)
                    .with_context(|| format!("cannot remove {}", d.display()))?;
            }
        }
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    println!(
        "ferrohub quickstart: PKI, hub, provisioning and identity-service stages (seeds 000, 002, 003, 004) in {}",
        args.data_dir.display()
    );
    println!("The gateway and outage stages are not part of this build yet.\n");
    let hub = HubStage::new()?;
    let prov = crate::quickstart_provision::ProvisionStage::new(&hub, &args.data_dir);
    let children = [
        (CHILD_X509, format!("iot-device-{CHILD_X509}")),
        (CHILD_THUMB, format!("self-signed-{CHILD_THUMB}")),
    ];

    let steps: Vec<(&'static str, StepFn<'_>)> = vec![
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
            Box::new(|d| hub.telemetry(d, &children)),
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
        (
            "Provisioning and identity services stopped",
            Box::new(|_| prov.stop()),
        ),
        ("Hub stopped cleanly", Box::new(|_| hub.stop())),
    ];
    let mut results = Vec::new();
    for (name, step) in &steps {
        results.push(run_step(name, step.as_ref(), &dir, args.verbose));
    }
    print_summary(&results, &dir);
    Ok(results.iter().all(|r| r.ok))
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
        detail,
        took,
    }
}

fn print_summary(results: &[StepResult], dir: &Path) {
    println!("\n{:<58} {:>6} {:>8}  detail", "step", "result", "ms");
    for r in results {
        let first: String = r
            .detail
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(72)
            .collect();
        println!(
            "{:<58} {:>6} {:>8}  {first}",
            r.name,
            if r.ok { "✓" } else { "✗" },
            r.took.as_millis()
        );
    }
    let passed = results.iter().filter(|r| r.ok).count();
    println!(
        "\n{passed} of {} steps verified. Files: {}",
        results.len(),
        dir.display()
    );
    println!("Not run in this build: the gateway and outage stages.");
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
        sans: vec![GATEWAY_HOST.into(), "127.0.0.1".into(), "::1".into()],
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

/// Creates the plan's files, or reuses them from an earlier run when they are already there.
fn ensure(dir: &Path, plan: Plan) -> Result<String> {
    let cert_path = dir.join(format!("{}.cert.pem", plan.stem));
    if cert_path.exists() {
        let cert = load_cert(&cert_path)?;
        store::load_key(&dir.join(format!("{}.key.pem", plan.stem)))?.matches(&cert)?;
        return Ok(format!(
            "reused {} ({})\nSHA-1 {}",
            cert_path.display(),
            cert.subject(),
            cert.thumbprint_sha1()
        ));
    }
    let issued = issue_files(dir, &plan, &opts())?;
    Ok(format!(
        "created {} ({}, valid until {})\nSHA-1 {}",
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
        let chain: Vec<Certificate> = store::load_certs(&dir.join(&file))?;
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
