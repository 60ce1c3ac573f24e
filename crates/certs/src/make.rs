//! The commands that create a key and a certificate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use pki::{CertRequest, Certificate, KeyAlgorithm, PrivateKey, Profile};

use super::cert_dir::{self, LoadedIssuer, Output};
use super::{CertsCmd, IssuerOpts, KeyOpts};
use crate::clock;

/// What to create: profile, subject, file stem and issuer.
pub struct Plan {
    /// For messages: "root CA", "device certificate", ...
    pub what: &'static str,
    pub profile: Profile,
    pub cn: String,
    pub sans: Vec<String>,
    /// File name stem: `STEM.cert.pem`, `STEM.key.pem`, `STEM-full-chain.cert.pem`.
    pub stem: String,
    /// Whether to write `STEM-full-chain.cert.pem` (the certificate plus its issuers).
    pub full_chain: bool,
    /// The issuing CA and optional key path; `None` for self-signed profiles.
    pub issuer: Option<(String, Option<PathBuf>)>,
}

/// What was written.
pub struct Issued {
    pub cert: Certificate,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub chain_path: Option<PathBuf>,
    pub issuer: Option<String>,
    pub key_alg: &'static str,
}

pub fn run(dir: &Path, cmd: CertsCmd) -> Result<()> {
    let (plan, key) = plan_for(dir, cmd)?;
    let issued = issue_files(dir, &plan, &key)?;
    print_issued(&plan, &issued);
    Ok(())
}

fn issuer_of(dir: &Path, opts: IssuerOpts) -> Option<(String, Option<PathBuf>)> {
    let name = opts
        .issuer
        .unwrap_or_else(|| cert_dir::default_issuer(dir).to_owned());
    Some((name, opts.issuer_key))
}

fn plan_for(dir: &Path, cmd: CertsCmd) -> Result<(Plan, KeyOpts)> {
    Ok(match cmd {
        CertsCmd::RootCa { cn, key } => (
            Plan {
                what: "root CA",
                profile: Profile::RootCa,
                cn,
                sans: vec![],
                stem: "root-ca".into(),
                full_chain: false,
                issuer: None,
            },
            key,
        ),
        CertsCmd::IntermediateCa {
            cn,
            name,
            path_len,
            issuer,
            issuer_key,
            key,
        } => {
            check_stem(&name)?;
            (
                Plan {
                    what: "intermediate CA",
                    profile: Profile::IntermediateCa { path_len },
                    cn,
                    sans: vec![],
                    stem: name,
                    full_chain: true,
                    issuer: Some((issuer, issuer_key)),
                },
                key,
            )
        }
        CertsCmd::EdgeCa {
            name,
            cn,
            issuer,
            key,
        } => {
            check_stem(&name)?;
            let stem = format!("iot-edge-device-ca-{name}");
            (
                Plan {
                    what: "edge device CA",
                    profile: Profile::EdgeCa,
                    cn: cn.unwrap_or_else(|| stem.clone()),
                    sans: vec![],
                    stem,
                    full_chain: true,
                    issuer: issuer_of(dir, issuer),
                },
                key,
            )
        }
        CertsCmd::Device { id, issuer, key } => {
            let (device, module) = pki::names::split_identity(&id)?;
            let stem = match module {
                None => format!("iot-device-{device}"),
                Some(m) => format!("iot-module-{device}-{m}"),
            };
            (
                Plan {
                    what: if module.is_some() {
                        "module identity certificate"
                    } else {
                        "device identity certificate"
                    },
                    profile: Profile::DeviceClient,
                    cn: id,
                    sans: vec![],
                    stem,
                    full_chain: true,
                    issuer: issuer_of(dir, issuer),
                },
                key,
            )
        }
        CertsCmd::Server {
            hosts,
            name,
            issuer,
            key,
        } => {
            let stem = name.unwrap_or_else(|| format!("server-{}", hosts[0].replace(':', "_")));
            check_stem(&stem)?;
            (
                Plan {
                    what: "server certificate",
                    profile: Profile::Server,
                    cn: hosts[0].clone(),
                    sans: hosts,
                    stem,
                    full_chain: true,
                    issuer: issuer_of(dir, issuer),
                },
                key,
            )
        }
        CertsCmd::SelfSigned { id, key } => {
            pki::names::split_identity(&id)?;
            (
                Plan {
                    what: "self-signed device certificate",
                    profile: Profile::SelfSignedDevice,
                    stem: format!("self-signed-{}", id.replace('/', "-")),
                    cn: id,
                    sans: vec![],
                    full_chain: false,
                    issuer: None,
                },
                key,
            )
        }
        CertsCmd::VerificationCert {
            code,
            issuer,
            issuer_key,
            key,
        } => {
            if code.is_empty()
                || code.len() > 64
                || !code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                bail!(
                    "verification code {code:?} must be 1-64 letters, digits or hyphens, as the hub prints it"
                );
            }
            (
                Plan {
                    what: "proof-of-possession certificate",
                    profile: Profile::Verification,
                    stem: format!("verification-{code}"),
                    cn: code,
                    sans: vec![],
                    full_chain: false,
                    issuer: Some((issuer, issuer_key)),
                },
                key,
            )
        }
        CertsCmd::Inspect { .. } | CertsCmd::Verify(_) => {
            bail!("not a certificate-creating command")
        }
    })
}

fn check_stem(stem: &str) -> Result<()> {
    if stem.is_empty() || stem.contains('/') || stem.starts_with('.') {
        bail!(
            "{stem:?} cannot be used in a file name: no slashes, not empty, not starting with a dot"
        );
    }
    Ok(())
}

/// Creates the key and certificate of `plan` in `dir`, writing all files or none.
pub fn issue_files(dir: &Path, plan: &Plan, key_opts: &KeyOpts) -> Result<Issued> {
    let cert_path = dir.join(format!("{}.cert.pem", plan.stem));
    let key_path = dir.join(format!("{}.key.pem", plan.stem));
    let chain_path = plan
        .full_chain
        .then(|| dir.join(format!("{}-full-chain.cert.pem", plan.stem)));
    let mut all = vec![cert_path.clone(), key_path.clone()];
    all.extend(chain_path.clone());
    cert_dir::check_free(&all, key_opts.force)?;

    let issuer = plan
        .issuer
        .as_ref()
        .map(|(name, key)| LoadedIssuer::load(dir, name, key.as_deref()))
        .transpose()?;
    let key = generate_key(key_opts.key_alg)?;
    let mut req = CertRequest::new(
        plan.profile,
        plan.cn.clone(),
        key_opts.not_before.unwrap_or_else(clock::now),
    );
    if let Some(days) = key_opts.days {
        req.days = days;
    }
    req.subject_alt_names.clone_from(&plan.sans);
    let cert =
        pki::issue(&req, &key, issuer.as_ref().map(LoadedIssuer::signer)).with_context(|| {
            match &issuer {
                Some(i) => format!(
                    "cannot issue the {} with {}",
                    plan.what,
                    i.cert_path.display()
                ),
                None => format!("cannot create the {}", plan.what),
            }
        })?;

    let mut outputs = vec![
        Output::cert(cert_path.clone(), cert.to_pem()),
        Output::key(key_path.clone(), &key),
    ];
    if let Some(p) = &chain_path {
        let chain = issuer
            .as_ref()
            .map(|i| i.chain.as_slice())
            .unwrap_or_default();
        outputs.push(Output::cert(p.clone(), cert_dir::full_chain(&cert, chain)));
    }
    cert_dir::write_all(&outputs)?;
    Ok(Issued {
        cert,
        cert_path,
        key_path,
        chain_path,
        issuer: issuer.map(|i| i.cert.subject()),
        key_alg: key.algorithm_name(),
    })
}

/// Generates a key, with a spinner for RSA, which can take seconds.
fn generate_key(alg: KeyAlgorithm) -> Result<PrivateKey> {
    let slow = matches!(alg, KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa4096);
    let spinner = slow.then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_message(format!("generating {alg} key"));
        pb.enable_steady_tick(Duration::from_millis(100));
        pb
    });
    let key = PrivateKey::generate(alg).context("key generation failed")?;
    if let Some(pb) = spinner {
        pb.finish_and_clear();
    }
    Ok(key)
}

fn print_issued(plan: &Plan, issued: &Issued) {
    let info = issued.cert.info();
    let by = issued.issuer.as_deref().map_or_else(
        || " (self-signed)".to_owned(),
        |s| format!(", signed by {s}"),
    );
    println!("Created {} {}{by}", plan.what, info.subject);
    println!("  certificate:  {}", issued.cert_path.display());
    if let Some(p) = &issued.chain_path {
        println!("  full chain:   {}", p.display());
    }
    println!("  private key:  {} (mode 0600)", issued.key_path.display());
    println!("  key:          {}", issued.key_alg);
    println!("  valid:        {} to {}", info.not_before, info.not_after);
    if !info.subject_alt_names.is_empty() {
        println!("  names:        {}", info.subject_alt_names.join(", "));
    }
    println!("  SHA-1:        {}", info.thumbprint_sha1);
    println!("  SHA-256:      {}", info.thumbprint_sha256);
}
