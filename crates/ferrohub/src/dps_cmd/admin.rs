//! The service API client of the CLI (connection, errors, paging) and the registration and CA
//! certificate commands.

use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow};
use base64::Engine as _;
use clap::{Args, Subcommand};
use dps::config::DpsConfig;
use ferrohub_runtime::client::{ClientError, ClientResponse, ServiceClient};
use hub_wire::{CaUploadProperties, CaUploadRequest, CaVerifyRequest, QueryRequest, body};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::ConfigArg;
use crate::certs::cert_dir;

/// The service API version of the provisioning service.
const API_VERSION: &str = "2021-10-01";

/// Connection options shared by every command that talks to a running service.
#[derive(Debug, Args, Clone)]
pub struct Conn {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Shared-access policy to sign requests with.
    #[arg(long, default_value = "provisioningserviceowner")]
    policy: String,
    /// Address to dial [default: the HTTPS listen address, 127.0.0.1 when it is 0.0.0.0].
    #[arg(long, value_name = "HOST:PORT")]
    connect: Option<String>,
}

/// A configuration and a client for its service API.
pub struct Session {
    pub cfg: DpsConfig,
    client: ServiceClient,
    config_path: PathBuf,
    policy: String,
    addr: String,
}

/// A non-2xx answer of the service.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: StatusCode,
    text: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for ApiFailure {}

/// Appends `hint` to a not-found answer; other errors pass unchanged.
pub fn if_not_found(e: anyhow::Error, hint: &str) -> anyhow::Error {
    match e.downcast_ref::<ApiFailure>() {
        Some(f) if f.status == StatusCode::NOT_FOUND => anyhow!("{f}; {hint}"),
        _ => e,
    }
}

impl Conn {
    pub fn open(&self) -> Result<Session> {
        let path = &self.config.config;
        let cfg = super::load(path)?;
        let policy = cfg.policy(&self.policy).with_context(|| {
            format!(
                "{} has no policy {} (it has: {}); pass one of those with --policy",
                path.display(),
                self.policy,
                super::policy_names(&cfg)
            )
        })?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(&policy.primary_key)
            .with_context(|| {
                format!(
                    "{}: policy {} key is not base64",
                    path.display(),
                    policy.name
                )
            })?;
        let ca = cfg.tls.ca.clone().with_context(|| {
            format!(
                "{} has no tls.ca: set it to the CA that issued the service's server certificate",
                path.display()
            )
        })?;
        let tls = ferrohub_runtime::tls::client_config(&ca).map_err(|e| anyhow!("{e}"))?;
        let addr = self.connect.clone().unwrap_or_else(|| {
            let l = cfg.listen.https;
            if l.ip().is_unspecified() {
                format!("127.0.0.1:{}", l.port())
            } else {
                l.to_string()
            }
        });
        let client = ServiceClient::new(
            addr.clone(),
            cfg.hostname.clone(),
            policy.name.clone(),
            key,
            tls,
        )
        .with_api_version(API_VERSION);
        Ok(Session {
            cfg,
            client,
            config_path: path.clone(),
            policy: self.policy.clone(),
            addr,
        })
    }
}

impl Session {
    /// Sends a request; a non-2xx answer becomes an error that names `what` and the next step.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
        what: &str,
    ) -> Result<ClientResponse> {
        let resp = match self.client.send(method, path, body, headers).await {
            Ok(r) => r,
            Err(e @ ClientError::Connect { .. }) => {
                return Err(anyhow!(
                    "{e}; is the provisioning service running? Start it with `ferrohub dps --config {}` \
                    (or pass --connect HOST:PORT)",
                    self.config_path.display()
                ));
            }
            Err(e @ ClientError::Tls { .. }) => {
                return Err(anyhow!(
                    "{e}; check that {} answers with a certificate issued by tls.ca of {}",
                    self.addr,
                    self.config_path.display()
                ));
            }
            Err(e) => return Err(e.into()),
        };
        if resp.status.is_success() {
            return Ok(resp);
        }
        Err(self.api_error(&resp, what))
    }

    /// [`Session::send`] and the JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value> {
        Ok(self.send(method, path, body, &[], what).await?.json())
    }

    fn api_error(&self, resp: &ClientResponse, what: &str) -> anyhow::Error {
        let message = error_message(&resp.json());
        let detail = if message.is_empty() {
            String::new()
        } else {
            format!(": {message}")
        };
        let text = match resp.status {
            StatusCode::NOT_FOUND => format!("{what} not found{detail}"),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => format!(
                "{} {what}{detail}; the service refused policy {} of {}: use a policy with the \
                rights this needs (--policy provisioningserviceowner has all of them)",
                resp.status,
                self.policy,
                self.config_path.display()
            ),
            status => format!("{status} {what}{detail}"),
        };
        ApiFailure {
            status: resp.status,
            text,
        }
        .into()
    }

    /// Every result of a `POST …/query`, following `x-ms-continuation` pages.
    pub async fn query_all(&self, path: &str, what: &str) -> Result<Vec<Value>> {
        let body = body(&QueryRequest { query: "*".into() });
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let headers: Vec<(&str, &str)> = token
                .as_deref()
                .map(|t| vec![("x-ms-continuation", t)])
                .unwrap_or_default();
            let resp = self
                .send(Method::POST, path, Some(&body), &headers, what)
                .await?;
            match resp.json() {
                Value::Array(items) => all.extend(items),
                Value::Null => {}
                other => all.push(other),
            }
            let next = resp
                .headers
                .get("x-ms-continuation")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .filter(|t| !t.is_empty());
            match next {
                None => return Ok(all),
                Some(t) if token.as_deref() == Some(t.as_str()) => {
                    return Err(anyhow!(
                        "the service returned the same continuation token twice while listing {what}"
                    ));
                }
                Some(t) => token = Some(t),
            }
        }
    }
}

/// The message of an error body: DPS style (`message`) or hub style (`Message` with an
/// `ErrorCode:…;` prefix).
fn error_message(v: &Value) -> String {
    let raw = ["message", "Message"]
        .iter()
        .find_map(|k| v.get(k).and_then(Value::as_str))
        .unwrap_or_default();
    match raw.strip_prefix("ErrorCode:") {
        Some(rest) => rest.split_once(';').map_or(rest, |(_, m)| m).to_owned(),
        None => raw.to_owned(),
    }
}

/// An id in a URL path.
pub fn enc(id: &str) -> String {
    iot_auth::percent_encode(id)
}

/// Prints pretty JSON.
pub fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `field: value` lines for the fields that are present.
pub fn print_field(label: &str, v: &Value) {
    let text = match v {
        Value::Null => return,
        Value::String(s) if s.is_empty() => return,
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    println!("{:<17} {text}", format!("{label}:"));
}

#[derive(Debug, Subcommand)]
pub enum RegistrationCmd {
    /// Show a device's registration record (assigned hub, device id, status).
    #[command(after_help = "Example:\n  ferrohub dps registration show dev1 --config dps/dps.toml")]
    Show {
        registration_id: String,
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        json: bool,
    },
    /// Delete a registration record, so the device's next registration is a first one.
    #[command(
        after_help = "Example:\n  ferrohub dps registration delete dev1 --config dps/dps.toml"
    )]
    Delete {
        registration_id: String,
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        json: bool,
    },
}

pub async fn registration(cmd: RegistrationCmd) -> Result<()> {
    match cmd {
        RegistrationCmd::Show {
            registration_id: id,
            conn,
            json,
        } => {
            let what = format!("Registration {id}");
            let r = conn
                .open()?
                .call(
                    Method::GET,
                    &format!("/registrations/{}", enc(&id)),
                    None,
                    &what,
                )
                .await
                .map_err(|e| not_registered(e, &id))?;
            if json {
                return print_json(&r);
            }
            print_registration(&r);
        }
        RegistrationCmd::Delete {
            registration_id: id,
            conn,
            json,
        } => {
            let what = format!("Registration {id}");
            conn.open()?
                .send(
                    Method::DELETE,
                    &format!("/registrations/{}", enc(&id)),
                    None,
                    &[],
                    &what,
                )
                .await
                .map_err(|e| not_registered(e, &id))?;
            if json {
                println!("{}", json!({"registrationId": id, "deleted": true}));
            } else {
                println!("Deleted the registration record of {id}");
            }
        }
    }
    Ok(())
}

/// Adds what a missing registration record means.
fn not_registered(e: anyhow::Error, id: &str) -> anyhow::Error {
    if_not_found(
        e,
        &format!(
            "no device has registered as {id} (or its record was deleted); \
            check the id with `ferrohub dps enrollment list`"
        ),
    )
}

fn print_registration(r: &Value) {
    print_field("registrationId", &r["registrationId"]);
    print_field("status", &r["status"]);
    print_field("substatus", &r["substatus"]);
    print_field("assignedHub", &r["assignedHub"]);
    print_field("deviceId", &r["deviceId"]);
    print_field("enrollmentGroup", &r["enrollmentGroupId"]);
    print_field("created", &r["createdDateTimeUtc"]);
    print_field("lastUpdated", &r["lastUpdatedDateTimeUtc"]);
    print_field("errorCode", &r["errorCode"]);
    print_field("errorMessage", &r["errorMessage"]);
}

#[derive(Debug, Subcommand)]
pub enum CaCmd {
    /// Upload a CA certificate (unverified unless --verified).
    #[command(
        after_help = "Example (proof of possession, then a group of devices signed by that CA):\n  \
        ferrohub dps ca upload my-ca --cert certs/root-ca.cert.pem\n  \
        ferrohub dps ca verification-code my-ca\n  ferrohub certs verification-cert --code CODE --issuer root-ca\n  \
        ferrohub dps ca verify my-ca --cert certs/verification-CODE.cert.pem\n  \
        ferrohub dps enrollment-group create my-group --ca-ref my-ca"
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
    #[command(after_help = "Example:\n  ferrohub dps ca verification-code my-ca")]
    VerificationCode {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Verify the CA with a certificate whose CN is the code, signed by the CA's key.
    #[command(
        after_help = "Example:\n  ferrohub dps ca verify my-ca --cert certs/verification-CODE.cert.pem"
    )]
    Verify {
        name: String,
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// List CA certificates.
    #[command(after_help = "Example:\n  ferrohub dps ca list --json")]
    List {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        json: bool,
    },
    /// Delete a CA certificate.
    #[command(after_help = "Example:\n  ferrohub dps ca delete my-ca")]
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
            cert_dir::load_cert(&cert)?;
            let pem = cert_dir::read_text(&cert)?;
            let body = body(&CaUploadRequest {
                properties: CaUploadProperties {
                    certificate: pem,
                    is_verified: verified,
                },
            });
            let what = format!("CA certificate {name}");
            let r = conn
                .open()?
                .call(Method::PUT, &cert_path(&name, ""), Some(&body), &what)
                .await?;
            print_ca(&r);
            if !verified {
                eprintln!("Next: ferrohub dps ca verification-code {name}");
            }
        }
        CaCmd::VerificationCode { name, conn } => {
            let path = cert_path(&name, "/generateVerificationCode");
            let r = with_etag(&conn.open()?, &name, Method::POST, &path, None).await?;
            let code = r["properties"]["verificationCode"]
                .as_str()
                .unwrap_or_default();
            println!("{code}");
            eprintln!(
                "Next: ferrohub certs verification-cert --code {code} --issuer <the CA>; then ferrohub dps ca verify {name} --cert <that file>"
            );
        }
        CaCmd::Verify { name, cert, conn } => {
            let body = body(&CaVerifyRequest {
                certificate: cert_dir::read_text(&cert)?,
            });
            let path = cert_path(&name, "/verify");
            let r = with_etag(&conn.open()?, &name, Method::POST, &path, Some(&body)).await?;
            print_ca(&r);
        }
        CaCmd::List { conn, json } => {
            let what = "CA certificates";
            let r = conn
                .open()?
                .call(Method::GET, "/certificates", None, what)
                .await?;
            if json {
                return print_json(&r);
            }
            let all = r["value"].as_array().cloned().unwrap_or_default();
            all.iter().for_each(print_ca);
            if all.is_empty() {
                eprintln!(
                    "No CA certificates; upload one with `ferrohub dps ca upload NAME --cert FILE`"
                );
            }
        }
        CaCmd::Delete { name, conn } => {
            let path = cert_path(&name, "");
            with_etag(&conn.open()?, &name, Method::DELETE, &path, None).await?;
            println!("Deleted CA certificate {name}");
        }
    }
    Ok(())
}

/// Sends a request about CA certificate `name` with `If-Match` of its current etag.
async fn with_etag(
    s: &Session,
    name: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Value> {
    let etag = ca_etag(s, name).await?;
    let what = format!("CA certificate {name}");
    let resp = s
        .send(method, path, body, &[("if-match", &etag)], &what)
        .await?;
    Ok(resp.json())
}

fn cert_path(name: &str, suffix: &str) -> String {
    format!("/certificates/{}{suffix}", enc(name))
}

/// The current etag of a CA certificate, quoted for `If-Match`.
async fn ca_etag(s: &Session, name: &str) -> Result<String> {
    let what = format!("CA certificate {name}");
    let r = s
        .call(Method::GET, &cert_path(name, ""), None, &what)
        .await
        .map_err(|e| if_not_found(e, "list them with `ferrohub dps ca list`"))?;
    Ok(match r["etag"].as_str() {
        Some(e) => format!("\"{}\"", e.trim_matches('"')),
        None => "*".into(),
    })
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
