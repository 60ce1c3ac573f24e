//! `ferrohub certs`: the PKI toolkit that replaces the seeds' `certGen.sh` and openssl steps, and
//! the certificate directory the `init` commands and the quickstart issue their certificates in.
#![forbid(unsafe_code)]

pub mod cert_dir;
mod check;
mod make;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use pki::KeyAlgorithm;
use time::OffsetDateTime;

use ferrohub_runtime::clock;

pub use make::{Plan, issue_files};

#[derive(Debug, Args)]
#[command(
    after_help = "Example: a root, an intermediate and a device certificate\n  \
    ferrohub certs root-ca\n  ferrohub certs intermediate-ca\n  ferrohub certs device my-device\n  \
    ferrohub certs verify certs/iot-device-my-device-full-chain.cert.pem --trust certs/root-ca.cert.pem"
)]
pub struct CertsArgs {
    /// Directory holding the certificates and keys.
    #[arg(long, global = true, default_value = "./certs", value_name = "DIR")]
    pub dir: PathBuf,
    #[command(subcommand)]
    pub cmd: CertsCmd,
}

/// Options shared by every command that creates a key and a certificate.
#[derive(Debug, Args, Clone)]
pub struct KeyOpts {
    /// Key algorithm: p256, p384, rsa2048 or rsa4096.
    #[arg(long = "key-alg", default_value = "p256", value_parser = parse_alg, value_name = "ALG")]
    pub key_alg: KeyAlgorithm,
    /// Lifetime in days [default: root 3650, intermediate 1825, edge CA 90, others 365].
    #[arg(long, value_name = "N")]
    pub days: Option<u32>,
    /// Start of validity, RFC 3339 or unix seconds [default: now].
    #[arg(long, value_parser = clock::parse_time, value_name = "TIME")]
    pub not_before: Option<OffsetDateTime>,
    /// Overwrite files that already exist.
    #[arg(long)]
    pub force: bool,
}

/// Which CA signs the new certificate.
#[derive(Debug, Args, Clone)]
pub struct IssuerOpts {
    /// Issuing CA: a name in --dir (`root-ca`, `intermediate-ca`, `iot-edge-device-ca-NAME`) or a
    /// path to its .cert.pem [default: intermediate-ca if present, else root-ca].
    #[arg(long, value_name = "CA")]
    pub issuer: Option<String>,
    /// The issuer's private key [default: the .key.pem beside its certificate].
    #[arg(long, value_name = "FILE")]
    pub issuer_key: Option<PathBuf>,
}

fn parse_alg(s: &str) -> Result<KeyAlgorithm, String> {
    s.parse().map_err(|e: pki::PkiError| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum CertsCmd {
    /// Create a self-signed root CA (root-ca.cert.pem, root-ca.key.pem).
    #[command(
        after_help = "Example:\n  ferrohub certs root-ca --cn \"Contoso Root CA\" --days 3650"
    )]
    RootCa {
        /// Subject common name.
        #[arg(long, default_value = "ferrohub Root CA")]
        cn: String,
        #[command(flatten)]
        key: KeyOpts,
    },
    /// Create an intermediate CA signed by the root (NAME.cert.pem, NAME-full-chain.cert.pem, NAME.key.pem).
    #[command(
        after_help = "Example:\n  ferrohub certs intermediate-ca --cn \"Contoso Devices CA\" --issuer root-ca"
    )]
    IntermediateCa {
        /// Subject common name.
        #[arg(long, default_value = "ferrohub Intermediate CA")]
        cn: String,
        /// File name stem, for a second intermediate.
        #[arg(long, default_value = "intermediate-ca")]
        name: String,
        /// Maximum number of CA certificates allowed below this one.
        #[arg(long, value_name = "N")]
        path_len: Option<u8>,
        /// Issuing CA [default: root-ca].
        #[arg(long, default_value = "root-ca", value_name = "CA")]
        issuer: String,
        /// The issuer's private key [default: beside its certificate].
        #[arg(long, value_name = "FILE")]
        issuer_key: Option<PathBuf>,
        #[command(flatten)]
        key: KeyOpts,
    },
    /// Create an edge device CA (CA, pathLen 0) for a gateway's [edge_ca] setting.
    #[command(after_help = "Example:\n  ferrohub certs edge-ca my-gateway\n  \
        # then in config.toml:\n  # [edge_ca]\n  # cert = \"file:///path/certs/iot-edge-device-ca-my-gateway-full-chain.cert.pem\"\n  \
        # pk = \"file:///path/certs/iot-edge-device-ca-my-gateway.key.pem\"")]
    EdgeCa {
        /// Name used in the file names (iot-edge-device-ca-NAME.*).
        name: String,
        /// Subject common name [default: iot-edge-device-ca-NAME; keep it different from the gateway's host name].
        #[arg(long)]
        cn: Option<String>,
        #[command(flatten)]
        issuer: IssuerOpts,
        #[command(flatten)]
        key: KeyOpts,
    },
    /// Create a device (or DEVICE/MODULE) identity certificate with CN = the id and EKU clientAuth.
    #[command(after_help = "Examples:\n  ferrohub certs device my-device\n  \
        ferrohub certs device my-edge-device --issuer intermediate-ca   # DPS registration id = CN\n  \
        ferrohub certs device my-device/my-module")]
    Device {
        /// Device id, DPS registration id, or DEVICE/MODULE for a module identity.
        id: String,
        #[command(flatten)]
        issuer: IssuerOpts,
        #[command(flatten)]
        key: KeyOpts,
    },
    /// Create a TLS server certificate with DNS and IP subjectAltNames and EKU serverAuth.
    #[command(
        after_help = "Example:\n  ferrohub certs server gateway.local 127.0.0.1 --issuer iot-edge-device-ca-my-gateway"
    )]
    Server {
        /// Host names and IP addresses (the first is the CN).
        #[arg(required = true, value_name = "HOST")]
        hosts: Vec<String>,
        /// File name stem [default: server-FIRSTHOST].
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        issuer: IssuerOpts,
        #[command(flatten)]
        key: KeyOpts,
    },
    /// Create a self-signed device certificate for thumbprint authentication.
    #[command(after_help = "Example:\n  ferrohub certs self-signed my-device\n  \
        # register it with the printed SHA-1 or SHA-256 thumbprint")]
    SelfSigned {
        /// Device id (the CN).
        id: String,
        #[command(flatten)]
        key: KeyOpts,
    },
    /// Create the proof-of-possession certificate for a CA: CN = the hub's verification code.
    #[command(
        after_help = "Example:\n  ferrohub certs verification-cert --code 5C1A3B... --issuer root-ca"
    )]
    VerificationCert {
        /// The verification code the hub generated.
        #[arg(long)]
        code: String,
        /// The CA being verified (name in --dir or path to its .cert.pem).
        #[arg(long, value_name = "CA")]
        issuer: String,
        /// The CA's private key [default: beside its certificate].
        #[arg(long, value_name = "FILE")]
        issuer_key: Option<PathBuf>,
        #[command(flatten)]
        key: KeyOpts,
    },
    /// Show subject, issuer, validity, SANs, key, extensions and thumbprints of every cert in FILE.
    #[command(
        after_help = "Example:\n  ferrohub certs inspect certs/root-ca.cert.pem --json | jq -r '.[0].thumbprint_sha1'"
    )]
    Inspect {
        /// A PEM file with one or more certificates.
        file: PathBuf,
        /// Print JSON (an array, one object per certificate).
        #[arg(long)]
        json: bool,
    },
    /// Validate a certificate chain; prints OK or names the failing certificate and reason.
    #[command(
        after_help = "Example:\n  ferrohub certs verify certs/iot-device-dev1.cert.pem \
        --chain certs/intermediate-ca.cert.pem --trust certs/root-ca.cert.pem --purpose client\n\n\
        Exit status: 0 valid, 1 refused, 2 bad input."
    )]
    Verify(check::VerifyArgs),
}

/// Runs a `certs` command; `Ok(false)` means a verification was refused (exit status 1).
pub fn run(args: CertsArgs) -> Result<bool> {
    let dir = args.dir;
    match args.cmd {
        CertsCmd::Inspect { file, json } => check::inspect(&file, json).map(|()| true),
        CertsCmd::Verify(v) => check::verify(&v),
        other => make::run(&dir, other).map(|()| true),
    }
}
