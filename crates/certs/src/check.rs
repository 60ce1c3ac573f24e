//! `certs inspect` and `certs verify`.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use pki::{CertInfo, Certificate, ChainValidator, Purpose};
use time::OffsetDateTime;

use super::cert_dir;
use crate::clock;

pub fn inspect(file: &Path, json: bool) -> Result<()> {
    let infos: Vec<CertInfo> = cert_dir::load_certs(file)?
        .iter()
        .map(Certificate::info)
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&infos)?);
        return Ok(());
    }
    for (i, info) in infos.iter().enumerate() {
        if infos.len() > 1 {
            println!("[{i}]");
        }
        print_info(info);
    }
    Ok(())
}

fn print_info(i: &CertInfo) {
    println!("Subject:            {}", i.subject);
    println!("Issuer:             {}", i.issuer);
    println!("Serial:             {}", i.serial);
    println!("Not before:         {}", i.not_before);
    println!("Not after:          {}", i.not_after);
    println!("Key:                {}", i.key);
    println!("Signature:          {}", i.signature_algorithm);
    let ca = match (i.is_ca, i.path_len) {
        (true, Some(n)) => format!("CA:TRUE, pathLen {n}"),
        (true, None) => "CA:TRUE".to_owned(),
        (false, _) => "CA:FALSE".to_owned(),
    };
    println!("Basic constraints:  {ca}");
    if !i.key_usage.is_empty() {
        println!("Key usage:          {}", i.key_usage.join(", "));
    }
    if !i.extended_key_usage.is_empty() {
        println!("Extended key usage: {}", i.extended_key_usage.join(", "));
    }
    if !i.subject_alt_names.is_empty() {
        println!("Alt names:          {}", i.subject_alt_names.join(", "));
    }
    if let Some(s) = &i.subject_key_id {
        println!("Subject key id:     {s}");
    }
    if let Some(a) = &i.authority_key_id {
        println!("Authority key id:   {a}");
    }
    let exts: Vec<String> = i
        .extensions
        .iter()
        .map(|e| {
            if e.critical {
                format!("{} (critical)", e.name)
            } else {
                e.name.clone()
            }
        })
        .collect();
    println!("Extensions:         {}", exts.join(", "));
    println!("SHA-1 thumbprint:   {}", i.thumbprint_sha1);
    println!("SHA-256 thumbprint: {}", i.thumbprint_sha256);
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PurposeArg {
    /// TLS client (device identity): EKU clientAuth when an EKU is present.
    Client,
    /// TLS server (hub, gateway): EKU serverAuth when an EKU is present.
    Server,
    /// No purpose check.
    Any,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The certificate to validate; further certificates in the same file count as intermediates.
    leaf: PathBuf,
    /// Files with intermediate certificates.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    chain: Vec<PathBuf>,
    /// Trusted root (or intermediate) certificates.
    #[arg(long, value_name = "ROOT", required = true, num_args = 1..)]
    trust: Vec<PathBuf>,
    /// Validate at this time, RFC 3339 or unix seconds [default: now].
    #[arg(long, value_parser = clock::parse_time, value_name = "TIME")]
    at: Option<OffsetDateTime>,
    /// What the leaf is for.
    #[arg(long, value_enum, default_value = "any")]
    purpose: PurposeArg,
}

/// Returns `Ok(false)` when the chain is refused.
pub fn verify(args: &VerifyArgs) -> Result<bool> {
    let mut origin: Vec<(Certificate, PathBuf)> = Vec::new();
    let mut leaf_file = cert_dir::load_certs(&args.leaf)?.into_iter();
    let leaf = leaf_file
        .next()
        .ok_or_else(|| anyhow::anyhow!("{} is empty", args.leaf.display()))?;
    origin.push((leaf.clone(), args.leaf.clone()));
    let mut intermediates: Vec<Certificate> = Vec::new();
    for c in leaf_file {
        origin.push((c.clone(), args.leaf.clone()));
        intermediates.push(c);
    }
    for file in &args.chain {
        for c in cert_dir::load_certs(file)? {
            origin.push((c.clone(), file.clone()));
            intermediates.push(c);
        }
    }
    let mut anchors = Vec::new();
    for file in &args.trust {
        for c in cert_dir::load_certs(file)? {
            origin.push((c.clone(), file.clone()));
            anchors.push(c);
        }
    }
    let validator = match ChainValidator::new(anchors) {
        Ok(v) => v,
        Err(e) => bail!("unusable trust anchor: {e}"),
    };
    let purpose = match args.purpose {
        PurposeArg::Client => Purpose::ClientAuth,
        PurposeArg::Server => Purpose::ServerAuth,
        PurposeArg::Any => Purpose::Any,
    };
    let at = args.at.unwrap_or_else(clock::now);
    let file_of = |subject: &str| {
        origin
            .iter()
            .find(|(c, _)| c.subject() == subject)
            .map(|(_, p)| p.display().to_string())
            .unwrap_or_default()
    };
    match validator.verify(&leaf, &intermediates, at, purpose) {
        Ok(path) => {
            println!("{}: OK", args.leaf.display());
            for (i, c) in path.certs.iter().enumerate() {
                println!("  #{i} {} ({})", c.subject(), file_of(&c.subject()));
            }
            Ok(true)
        }
        Err(e) => {
            println!("{}: FAILED", args.leaf.display());
            println!("  {e}");
            let file = file_of(&e.subject);
            if !file.is_empty() {
                println!("  (certificate #{} is from {file})", e.index);
            }
            Ok(false)
        }
    }
}
