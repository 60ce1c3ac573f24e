//! Commands that manage a running hub through its service API.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use clap::{Args, Subcommand, ValueEnum};
use ferrohub_runtime::client::ServiceClient;
use hub_wire::{
    AuthType, Authentication, CaUploadProperties, CaUploadRequest, CaVerifyRequest, Capabilities,
    Device, SendRequest, Status, X509Thumbprint,
};
use hyper::Method;
use serde_json::Value;

use super::ConfigArg;
use crate::certs::cert_dir;

/// Connection options shared by every admin command.
#[derive(Debug, Args, Clone)]
pub struct Conn {
    #[command(flatten)]
    config: ConfigArg,
    /// Shared-access policy to sign requests with.
    #[arg(long, default_value = "iothubowner")]
    policy: String,
    /// Address to dial [default: the HTTPS listen address, 127.0.0.1 when it is 0.0.0.0].
    #[arg(long, value_name = "HOST:PORT")]
    connect: Option<String>,
}

impl Conn {
    /// The hub configuration file these commands use.
    pub fn config_path(&self) -> PathBuf {
        self.config.config.clone()
    }

    pub fn client(&self) -> Result<ServiceClient> {
        let cfg = super::load(&self.config.config)?;
        let policy = cfg.policy(&self.policy).with_context(|| {
            format!(
                "{} has no policy {}",
                self.config.config.display(),
                self.policy
            )
        })?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(&policy.primary_key)
            .context("policy key is not base64")?;
        let ca = cfg.tls.ca.clone().with_context(|| {
            format!(
                "{} has no tls.ca: set it to the CA that issued the hub's server certificate",
                self.config.config.display()
            )
        })?;
        let tls = ferrohub_runtime::tls::client_config(&ca).map_err(|e| anyhow::anyhow!("{e}"))?;
        let addr = self.connect.clone().unwrap_or_else(|| {
            let l = cfg.listen.https;
            if l.ip().is_unspecified() {
                format!("127.0.0.1:{}", l.port())
            } else {
                l.to_string()
            }
        });
        Ok(ServiceClient::new(
            addr,
            cfg.hostname.clone(),
            policy.name.clone(),
            key,
            tls,
        ))
    }
}

pub(super) async fn call(
    client: &ServiceClient,
    method: Method,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Result<Value> {
    let resp = client.send(method, path, body, headers).await?.ok()?;
    Ok(resp.json())
}

pub(super) use hub_wire::body;

pub(super) fn enc(id: &str) -> String {
    iot_auth::percent_encode(id)
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AuthKind {
    /// Symmetric keys (generated unless given).
    Sas,
    /// A self-signed certificate's thumbprint.
    SelfSigned,
    /// A certificate chaining to a verified CA (CN = device id).
    Ca,
}

#[derive(Debug, Subcommand)]
pub enum DeviceCmd {
    /// Register a device.
    #[command(after_help = "Examples:\n  ferrohub hub device create dev1\n  \
        ferrohub hub device create thumb1 --auth self-signed --cert certs/self-signed-thumb1.cert.pem\n  \
        ferrohub hub device create x509dev --auth ca\n  ferrohub hub device create gw --edge\n  \
        ferrohub hub device create child1 --parent gw")]
    Create {
        id: String,
        #[command(flatten)]
        conn: Conn,
        #[arg(long, value_enum, default_value = "sas")]
        auth: AuthKind,
        /// Primary symmetric key (base64) [default: generated].
        #[arg(long)]
        primary_key: Option<String>,
        /// Secondary symmetric key (base64) [default: generated].
        #[arg(long)]
        secondary_key: Option<String>,
        /// Primary thumbprint (SHA-1 or SHA-256 hex), for --auth self-signed.
        #[arg(long)]
        primary_thumbprint: Option<String>,
        /// Secondary thumbprint.
        #[arg(long)]
        secondary_thumbprint: Option<String>,
        /// Take the primary thumbprint from this certificate (PEM).
        #[arg(long, value_name = "FILE")]
        cert: Option<PathBuf>,
        /// An IoT Edge device.
        #[arg(long)]
        edge: bool,
        /// Make this device a child of an edge device.
        #[arg(long, value_name = "EDGE_ID")]
        parent: Option<String>,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show a device.
    Show {
        id: String,
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        json: bool,
    },
    /// List devices.
    List {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        json: bool,
    },
    /// Delete a device (and its modules).
    Delete {
        id: String,
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        json: bool,
    },
    /// Make a device the child of an edge device (its deviceScope becomes the parent's), or
    /// remove the link with --none.
    #[command(
        after_help = "Examples:\n  ferrohub hub device set-parent child1 --parent gw\n  \
        ferrohub hub device set-parent child1 --none"
    )]
    SetParent {
        id: String,
        /// The edge device to be the parent.
        #[arg(
            long,
            value_name = "EDGE_ID",
            required_unless_present = "none",
            conflicts_with = "none"
        )]
        parent: Option<String>,
        /// Remove the parent link.
        #[arg(long)]
        none: bool,
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        json: bool,
    },
    /// Enable or disable a device; a disabled device is disconnected and refused.
    SetStatus {
        id: String,
        #[arg(value_parser = ["enabled", "disabled"])]
        status: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        json: bool,
    },
}

pub async fn device(cmd: DeviceCmd) -> Result<()> {
    match cmd {
        DeviceCmd::Create {
            id,
            conn,
            auth,
            primary_key,
            secondary_key,
            primary_thumbprint,
            secondary_thumbprint,
            cert,
            edge,
            parent,
            disabled,
            json,
        } => {
            let client = conn.client()?;
            let thumb = match (&cert, primary_thumbprint) {
                (Some(file), _) => Some(cert_dir::load_cert(file)?.thumbprint_sha1()),
                (None, t) => t,
            };
            let authentication = match auth {
                AuthKind::Sas => Authentication::sas(
                    primary_key.or_else(|| Some(String::new())),
                    secondary_key.or_else(|| Some(String::new())),
                ),
                AuthKind::SelfSigned => {
                    let Some(t) = thumb else {
                        bail!("--auth self-signed needs --primary-thumbprint or --cert")
                    };
                    Authentication {
                        kind: Some(AuthType::SelfSigned),
                        symmetric_key: None,
                        x509_thumbprint: Some(X509Thumbprint {
                            primary_thumbprint: Some(t),
                            secondary_thumbprint,
                        }),
                    }
                }
                AuthKind::Ca => Authentication {
                    kind: Some(AuthType::CertificateAuthority),
                    ..Authentication::default()
                },
            };
            let device_scope = match &parent {
                Some(p) => Some(parent_scope(&client, p).await?),
                None => None,
            };
            let device = Device {
                device_id: id.clone(),
                status: if disabled {
                    Status::Disabled
                } else {
                    Status::Enabled
                },
                authentication,
                capabilities: Capabilities { iot_edge: edge },
                device_scope,
                ..Device::default()
            };
            let d = call(
                &client,
                Method::PUT,
                &format!("/devices/{}", enc(&id)),
                Some(&body(&device)),
                &[],
            )
            .await?;
            warn_if_mqtt_unusable(&id);
            print_device(&d, json, &conn)
        }
        DeviceCmd::Show { id, conn, json } => {
            let d = call(
                &conn.client()?,
                Method::GET,
                &format!("/devices/{}", enc(&id)),
                None,
                &[],
            )
            .await?;
            print_device(&d, json, &conn)
        }
        DeviceCmd::List { conn, json } => {
            let all = call(&conn.client()?, Method::GET, "/devices", None, &[]).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                println!(
                    "{:<32} {:<9} {:<21} {:<13} edge",
                    "deviceId", "status", "auth", "connection"
                );
                for d in all.as_array().into_iter().flatten() {
                    println!(
                        "{:<32} {:<9} {:<21} {:<13} {}",
                        d["deviceId"].as_str().unwrap_or_default(),
                        d["status"].as_str().unwrap_or_default(),
                        d["authentication"]["type"].as_str().unwrap_or_default(),
                        d["connectionState"].as_str().unwrap_or_default(),
                        d["capabilities"]["iotEdge"].as_bool().unwrap_or(false)
                    );
                }
            }
            Ok(())
        }
        DeviceCmd::Delete { id, conn, json } => {
            call(
                &conn.client()?,
                Method::DELETE,
                &format!("/devices/{}", enc(&id)),
                None,
                &[("if-match", "*")],
            )
            .await?;
            if json {
                let deleted = Value::Object(
                    [
                        ("deleted".to_owned(), Value::Bool(true)),
                        ("deviceId".to_owned(), Value::String(id)),
                    ]
                    .into_iter()
                    .collect(),
                );
                println!("{deleted}");
            } else {
                println!("Deleted device {id}");
            }
            Ok(())
        }
        DeviceCmd::SetParent {
            id,
            parent,
            none: _,
            conn,
            json,
        } => {
            let client = conn.client()?;
            let d = set_parent(&client, &id, parent.as_deref()).await?;
            print_device(&d, json, &conn)
        }
        DeviceCmd::SetStatus {
            id,
            status,
            reason,
            conn,
            json,
        } => {
            let client = conn.client()?;
            let path = format!("/devices/{}", enc(&id));
            let mut d: Device =
                serde_json::from_value(call(&client, Method::GET, &path, None, &[]).await?)?;
            d.status = serde_json::from_value(Value::String(status))?;
            d.status_reason = reason;
            let etag = format!("\"{}\"", d.etag);
            let d = call(
                &client,
                Method::PUT,
                &path,
                Some(&body(&d)),
                &[("if-match", &etag)],
            )
            .await?;
            print_device(&d, json, &conn)
        }
    }
}

/// Tells the operator (on stderr, so `--json` output stays parseable) that an id the hub accepted
/// cannot be used over MQTT: it holds a topic wildcard.
pub(crate) fn warn_if_mqtt_unusable(id: &str) {
    if let Some(reason) = pki::names::mqtt_unusable(id) {
        eprintln!("warning: {reason}");
    }
}

/// The deviceScope of an edge device (what its children carry).
async fn parent_scope(client: &ServiceClient, parent: &str) -> Result<String> {
    let path = format!("/devices/{}", enc(parent));
    let edge: Device = serde_json::from_value(call(client, Method::GET, &path, None, &[]).await?)?;
    edge.device_scope.with_context(|| {
        format!("{parent} is not an edge device (it has no deviceScope); create it with --edge")
    })
}

async fn set_parent(client: &ServiceClient, id: &str, parent: Option<&str>) -> Result<Value> {
    let path = format!("/devices/{}", enc(id));
    let mut d: Device = serde_json::from_value(call(client, Method::GET, &path, None, &[]).await?)?;
    if d.capabilities.iot_edge {
        bail!(
            "{id} is an edge device: its deviceScope is its own; nested edge parents are set with parentScopes"
        );
    }
    d.device_scope = match parent {
        Some(p) => Some(parent_scope(client, p).await?),
        None => None,
    };
    d.parent_scopes = Vec::new();
    let etag = format!("\"{}\"", d.etag);
    call(
        client,
        Method::PUT,
        &path,
        Some(&body(&d)),
        &[("if-match", &etag)],
    )
    .await
}

fn print_device(d: &Value, json: bool, conn: &Conn) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(d)?);
        return Ok(());
    }
    let id = d["deviceId"].as_str().unwrap_or_default();
    println!("deviceId:        {id}");
    println!(
        "status:          {}",
        d["status"].as_str().unwrap_or_default()
    );
    println!(
        "authentication:  {}",
        d["authentication"]["type"].as_str().unwrap_or_default()
    );
    println!(
        "connectionState: {}",
        d["connectionState"].as_str().unwrap_or_default()
    );
    println!(
        "iotEdge:         {}",
        d["capabilities"]["iotEdge"].as_bool().unwrap_or(false)
    );
    if let Some(scope) = d["deviceScope"].as_str() {
        println!("deviceScope:     {scope}");
    }
    if let Some(manager) = d["managedBy"].as_str() {
        println!("managedBy:       {manager}");
    }
    if let Some(key) = d["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .filter(|k| !k.is_empty())
    {
        let host = super::load(&conn.config.config)?.hostname;
        println!("connection string: HostName={host};DeviceId={id};SharedAccessKey={key}");
    }
    for t in [
        &d["authentication"]["x509Thumbprint"]["primaryThumbprint"],
        &d["authentication"]["x509Thumbprint"]["secondaryThumbprint"],
    ] {
        if let Some(t) = t.as_str() {
            println!("thumbprint:      {t}");
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum CaCmd {
    /// Upload a CA certificate (unverified unless --verified).
    #[command(
        after_help = "Example (seed 003's flow):\n  ferrohub hub ca upload my-ca --cert certs/root-ca.cert.pem\n  \
        ferrohub hub ca verification-code my-ca\n  ferrohub certs verification-cert --code CODE --issuer root-ca\n  \
        ferrohub hub ca verify my-ca --cert certs/verification-CODE.cert.pem"
    )]
    Upload {
        name: String,
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// Mark it verified without proof of possession (self-attestation).
        #[arg(long)]
        verified: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Generate the verification code for proof of possession.
    VerificationCode {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Verify the CA with a certificate whose CN is the code, signed by the CA's key.
    Verify {
        name: String,
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// List CA certificates.
    List {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        json: bool,
    },
    /// Delete a CA certificate.
    Delete {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn ca(cmd: CaCmd) -> Result<()> {
    match cmd {
        CaCmd::Upload {
            name,
            cert,
            verified,
            conn,
        } => {
            let pem = cert_dir::read_text(&cert)?;
            let upload = CaUploadRequest {
                properties: CaUploadProperties {
                    certificate: pem,
                    is_verified: verified,
                },
            };
            let r = call(
                &conn.client()?,
                Method::PUT,
                &format!("/certificates/{}", enc(&name)),
                Some(&body(&upload)),
                &[],
            )
            .await?;
            print_ca(&r);
        }
        CaCmd::VerificationCode { name, conn } => {
            let r = call(
                &conn.client()?,
                Method::POST,
                &format!("/certificates/{}/generateVerificationCode", enc(&name)),
                None,
                &[],
            )
            .await?;
            let code = r["properties"]["verificationCode"]
                .as_str()
                .unwrap_or_default();
            println!("{code}");
            eprintln!(
                "Next: ferrohub certs verification-cert --code {code} --issuer <the CA>; then ferrohub hub ca verify {name} --cert <that file>"
            );
        }
        CaCmd::Verify { name, cert, conn } => {
            let pem = cert_dir::read_text(&cert)?;
            let r = call(
                &conn.client()?,
                Method::POST,
                &format!("/certificates/{}/verify", enc(&name)),
                Some(&body(&CaVerifyRequest { certificate: pem })),
                &[],
            )
            .await?;
            print_ca(&r);
        }
        CaCmd::List { conn, json } => {
            let r = call(&conn.client()?, Method::GET, "/certificates", None, &[]).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for c in r["value"].as_array().into_iter().flatten() {
                    print_ca(c);
                }
            }
        }
        CaCmd::Delete { name, conn } => {
            call(
                &conn.client()?,
                Method::DELETE,
                &format!("/certificates/{}", enc(&name)),
                None,
                &[],
            )
            .await?;
            println!("Deleted CA certificate {name}");
        }
    }
    Ok(())
}

fn print_ca(r: &Value) {
    let p = &r["properties"];
    println!(
        "{}: {} (SHA-1 {}, expires {}) verified: {}",
        r["name"].as_str().unwrap_or_default(),
        p["subject"].as_str().unwrap_or_default(),
        p["thumbprint"].as_str().unwrap_or_default(),
        p["expiry"].as_str().unwrap_or_default(),
        p["isVerified"].as_bool().unwrap_or(false)
    );
}

#[derive(Debug, Subcommand)]
pub enum C2dCmd {
    /// Queue a message for a device (delivered when it is subscribed; kept until acknowledged or expired).
    #[command(
        after_help = "Example:\n  ferrohub hub c2d send dev1 --body '{\"led\":\"on\"}' --prop kind=command --config hub/hub.toml"
    )]
    Send {
        id: String,
        /// Message body (text).
        #[arg(long)]
        body: String,
        /// Application property KEY=VALUE (repeat for more).
        #[arg(long = "prop", value_name = "KEY=VALUE")]
        props: Vec<String>,
        /// Time to live in seconds [default: 3600].
        #[arg(long)]
        ttl: Option<u64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete every queued message of a device.
    Purge {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn c2d(cmd: C2dCmd) -> Result<()> {
    match cmd {
        C2dCmd::Send {
            id,
            body,
            props,
            ttl,
            conn,
        } => {
            let mut properties = std::collections::BTreeMap::new();
            for p in props {
                let Some((k, v)) = p.split_once('=') else {
                    bail!("--prop {p:?} is not KEY=VALUE")
                };
                properties.insert(k.to_owned(), v.to_owned());
            }
            let req = SendRequest {
                body,
                properties,
                ttl_seconds: ttl,
                ..SendRequest::default()
            };
            let r = call(
                &conn.client()?,
                Method::POST,
                &format!("/devices/{}/messages/deviceBound", enc(&id)),
                Some(&self::body(&req)),
                &[],
            )
            .await?;
            println!(
                "Queued message {} for {id}",
                r["messageId"].as_str().unwrap_or_default()
            );
        }
        C2dCmd::Purge { id, conn } => {
            let r = call(
                &conn.client()?,
                Method::DELETE,
                &format!("/devices/{}/commands", enc(&id)),
                None,
                &[],
            )
            .await?;
            println!("Purged {} messages for {id}", r["totalMessagesPurged"]);
        }
    }
    Ok(())
}
