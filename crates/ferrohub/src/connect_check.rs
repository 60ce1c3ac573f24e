//! `ferrohub system check`'s connection check: the device connects to its hub as it would (MQTT
//! over TLS, with its credential from the identity service), and when refused, asks the hub why
//! (`GET /devices/{id}/connectCheck`, a ferrohub extension: CONNACK only says "not authorized")
//! and names the command that fixes it.
//!
//! The credential never leaves the daemons: a SAS token is signed by keyd with the device's key
//! handle; an X.509 device presents certd's certificate and keyd signs the TLS handshake
//! ([`edge::keyd_signer`]).

use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use identity::client::UdsClient;
use identity::wire::identityd::{AuthInfo, AuthType, Identity};

use crate::system_status::Finding;
use device_client::{DeviceConn, Refused};

/// Where to reach the hub instead of `{gatewayHost}:8883` and `{hubName}:443`.
#[derive(Clone, Debug, Default)]
pub struct HubAddrs {
    pub mqtt: Option<String>,
    pub https: Option<String>,
}

/// The device as identityd gives it (`POST /identities/device`).
struct Spec {
    hub: String,
    gateway: String,
    device_id: String,
}

/// What the device presents: TLS settings (with its client certificate for X.509) and, for SAS,
/// the token that is its CONNECT password.
struct Presented {
    tls: Arc<rustls::ClientConfig>,
    token: Option<String>,
    /// The X.509 chain (leaf first), for the fixes that name its issuer or thumbprint.
    chain: Vec<pki::Certificate>,
}

/// The connection check's outcome: a finding, or why it could not be made (not a failure).
pub enum Outcome {
    Checked(Finding),
    Skipped(String),
}

/// Connects as the device described by `device` (identityd's answer) and explains a refusal.
/// `dps` says whether it was provisioned by DPS (then reprovisioning is a fix).
pub async fn check(
    device: &Identity,
    dps: bool,
    (keyd, certd): (&UdsClient, &UdsClient),
    bundle: &[pki::Certificate],
    addrs: &HubAddrs,
) -> Outcome {
    let s = &device.spec;
    let spec = Spec {
        hub: s.hub_name.clone(),
        gateway: s.gateway_host.clone(),
        device_id: s.device_id.clone(),
    };
    let presented = match present(&spec, s.auth.as_ref(), keyd, certd, bundle).await {
        Ok(p) => p,
        Err(Unusable::Skip(why)) => return Outcome::Skipped(why),
        Err(Unusable::Fail(why)) => {
            return Outcome::Checked(Finding {
                warning: false,
                ok: false,
                what: format!("the device's credential: {why}"),
                next: "see the identity service's log (`ferrohub system logs`) and `ferrohub \
                       system status`"
                    .into(),
            });
        }
    };
    let mqtt = addrs
        .mqtt
        .clone()
        .unwrap_or_else(|| format!("{}:8883", spec.gateway));
    let what = format!("{} connects to {mqtt} over MQTT", spec.device_id);
    match tokio::time::timeout(Duration::from_secs(20), connect(&spec, &presented, &mqtt)).await {
        Ok(Ok(())) => Outcome::Checked(Finding {
            warning: false,
            ok: true,
            what: format!("{what} (CONNACK accepted)"),
            next: String::new(),
        }),
        Ok(Err(e)) if e.downcast_ref::<Refused>().is_some() => {
            let code = e.downcast_ref::<Refused>().map(|r| r.code);
            let why = ask_hub(&spec, &presented, addrs).await;
            Outcome::Checked(refusal(&spec, &presented, dps, code, why))
        }
        Ok(Err(e)) => Outcome::Checked(Finding {
            warning: false,
            ok: false,
            what: format!("{what}: {e:#}"),
            next: format!(
                "the hub's MQTT port must be reachable from here: is the hub running, and port \
                 8883 of {} open (firewall)?",
                spec.gateway
            ),
        }),
        Err(_) => Outcome::Checked(Finding {
            warning: false,
            ok: false,
            what: format!("{what}: no answer within 20 s"),
            next: "check the network path to the hub and its port 8883".into(),
        }),
    }
}

enum Unusable {
    /// The check cannot present this credential (not a problem of the device).
    Skip(String),
    Fail(String),
}

async fn present(
    spec: &Spec,
    auth: Option<&AuthInfo>,
    keyd: &UdsClient,
    certd: &UdsClient,
    bundle: &[pki::Certificate],
) -> Result<Presented, Unusable> {
    let mut roots = rustls::RootCertStore::empty();
    for c in bundle {
        let _ = roots.add(c.to_rustls());
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let Some(auth) = auth else {
        return Err(Unusable::Skip(
            "identityd names no credential the check can use (None)".into(),
        ));
    };
    let handle = auth.key_handle.clone();
    match auth.auth_type {
        AuthType::Sas => {
            let expiry = u64::try_from(crate::clock::now().unix_timestamp()).unwrap_or(0) + 3600;
            let resource = format!("{}/devices/{}", spec.hub, spec.device_id);
            let token = identity::identityd::keys::Keys::new(keyd.clone())
                .sas_token(&handle, &resource, expiry, None)
                .await
                .map_err(|e| Unusable::Fail(format!("keyd did not sign a SAS token: {e}")))?;
            Ok(Presented {
                tls: Arc::new(builder.with_no_client_auth()),
                token: Some(token),
                chain: Vec::new(),
            })
        }
        AuthType::X509 => {
            let cert_id = auth.cert_id.as_deref().unwrap_or_default();
            let chain = crate::system_status::cert(certd, cert_id)
                .await
                .filter(|c| !c.is_empty())
                .ok_or_else(|| Unusable::Fail(format!("certd has no certificate {cert_id:?}")))?;
            let key = edge::keyd_signer::KeydKeyPair::from_handle(keyd, handle)
                .await
                .map_err(|e| {
                    Unusable::Skip(format!(
                        "the MQTT connection is tested with ECDSA P-256 device keys only ({e})"
                    ))
                })?;
            let ders = chain.iter().map(pki::Certificate::to_rustls).collect();
            let resolver = edge::keyd_signer::tls_client_key(ders, key);
            Ok(Presented {
                tls: Arc::new(builder.with_client_cert_resolver(resolver)),
                token: None,
                chain,
            })
        }
    }
}

async fn connect(spec: &Spec, p: &Presented, mqtt: &str) -> anyhow::Result<()> {
    let addr = tokio::net::lookup_host(mqtt)
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{mqtt} resolves to no address"))?;
    let username = format!("{}/{}/?api-version=2021-04-12", spec.hub, spec.device_id);
    let conn = DeviceConn::connect_with(
        addr,
        &spec.gateway,
        (*p.tls).clone(),
        &spec.device_id,
        &username,
        p.token.as_deref(),
    )
    .await?;
    conn.disconnect().await;
    Ok(())
}

/// The hub's reason: `Ok((reason, message))` from its connectCheck, `Err` when it cannot say.
async fn ask_hub(spec: &Spec, p: &Presented, addrs: &HubAddrs) -> Result<(String, String), String> {
    let https = addrs
        .https
        .clone()
        .unwrap_or_else(|| format!("{}:443", spec.hub));
    let client = ferrohub_runtime::client::ServiceClient::new(
        https.clone(),
        spec.hub.clone(),
        String::new(),
        Vec::new(),
        p.tls.clone(),
    )
    .with_authorization(p.token.clone());
    let path = format!(
        "/devices/{}/connectCheck",
        iot_auth::percent_encode(&spec.device_id)
    );
    let asked = client.send(Method::GET, &path, None, &[]);
    let r = tokio::time::timeout(Duration::from_secs(20), asked)
        .await
        .map_err(|_| format!("{https} did not answer within 20 s"))?
        .map_err(|e| format!("cannot ask {https}: {e}"))?;
    let v = r.json();
    match (r.status.as_u16(), v["reason"].as_str()) {
        (_, Some(reason)) => Ok((
            reason.to_owned(),
            v["message"].as_str().unwrap_or_default().to_owned(),
        )),
        (200, None) => Ok(("accepted_by_hub".into(), String::new())),
        (404, None) => Err(format!(
            "the hub at {https} does not offer ferrohub's connectCheck (not a ferrohub hub, or \
             an older one)"
        )),
        (status, None) => Err(format!("{https} answered {status}: {v}")),
    }
}

fn refusal(
    spec: &Spec,
    p: &Presented,
    dps: bool,
    code: Option<mqtt_codec::ConnectReturnCode>,
    why: Result<(String, String), String>,
) -> Finding {
    let id = &spec.device_id;
    let code = code.map(|c| format!("{c:?}")).unwrap_or_default();
    match why {
        Ok((reason, message)) => Finding {
            warning: false,
            ok: false,
            what: if message.is_empty() {
                format!("the hub refuses {id} at CONNECT ({code}; reason {reason})")
            } else {
                format!("the hub refuses {id} at CONNECT ({reason}): {message}")
            },
            next: crate::connect_fix::fix(
                &reason,
                &crate::connect_fix::Context {
                    device_id: id,
                    gateway: &spec.gateway,
                    hub: &spec.hub,
                    dps,
                    chain: &p.chain,
                    sas: p.token.is_some(),
                },
            ),
        },
        Err(e) => Finding {
            warning: false,
            ok: false,
            what: format!("the hub refuses {id} at CONNECT ({code}); it could not say why: {e}"),
            next: format!(
                "the hub's log names the reason (`Refusing connection client_id={id} … code=…`)"
            ),
        },
    }
}
