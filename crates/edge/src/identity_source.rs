//! Identity mode (`ferrohub edge -c /etc/ferrohub/config.toml`): the gateway's identity, keys and
//! certificate come from the identity service and the device super-config, not from `edge.toml`.
//!
//! ```text
//!  config.toml ── hostname, [edge_ca], trust_bundle_cert
//!  identityd ──── device (hub, device id); $edgeHub module (keys derived in keyd) → key handle
//!  keyd ───────── POST /sign with that handle → every $edgeHub SAS token (no key in this process)
//!  certd ──────── the server certificate from the edge CA (see [`crate::server_cert`])
//! ```
//!
//! The daemons' sockets are read from their configs under `root` (`{root}/etc/ferrohub/...`,
//! written by `ferrohub config apply`), as `ferrohub system status` finds them.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ferrohub_runtime::time::SharedClock;
use hyper::Method;
use identity::client::UdsClient;
use identity::config::superconfig::{EdgeCa, SuperConfig};
use identity::config::{CertdConfig, IdentitydConfig, KeydConfig};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::server_cert::{CertPlan, EdgeCaSource, QUICKSTART_CA_DAYS, ServerCerts};
use crate::{EdgeConfig, EdgeError, Gateway, relay};

/// The module whose identity the gateway uses at the hub.
pub const EDGE_HUB: &str = "$edgeHub";
const IDENTITYD_API: &str = "api-version=2021-12-01";

/// What `ferrohub edge -c config.toml` takes besides the super-config.
#[derive(Clone, Debug)]
pub struct IdentitySettings {
    /// The device super-config (`/etc/ferrohub/config.toml`).
    pub super_config: PathBuf,
    /// Prefix of `/etc/ferrohub`, `/run/ferrohub` and `/var/lib/ferrohub` (`/` normally).
    pub root: PathBuf,
    /// Where children connect.
    pub listen: SocketAddr,
    /// Local registry, store and TLS files; default `{root}/var/lib/ferrohub/edge`.
    pub data_dir: Option<PathBuf>,
    /// IP addresses added to the certificate's SANs (besides `hostname`).
    pub ips: Vec<IpAddr>,
    /// Routes (empty: `FROM /messages/* INTO $upstream`).
    pub routes: Vec<String>,
    pub store_ttl_hours: u64,
    /// The hub's MQTT and HTTPS addresses; default `{hub}:8883` and `{hub}:443`.
    pub hub_mqtt: Option<String>,
    pub hub_https: Option<String>,
}

impl IdentitySettings {
    /// The defaults for `super_config` under `/`.
    pub fn new(super_config: impl Into<PathBuf>) -> Self {
        Self {
            super_config: super_config.into(),
            root: PathBuf::from("/"),
            listen: SocketAddr::from(([0, 0, 0, 0], 8883)),
            data_dir: None,
            ips: Vec::new(),
            routes: Vec::new(),
            store_ttl_hours: 2,
            hub_mqtt: None,
            hub_https: None,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| {
            let paths = identity::config::apply::Paths::under(&self.root);
            paths.state_root.join("edge")
        })
    }
}

fn idd_error(what: &str, e: impl std::fmt::Display) -> EdgeError {
    EdgeError::Identity(format!("identityd ({what}): {e}"))
}

/// Clients for the three daemons, at the sockets their configs name.
#[derive(Clone, Debug)]
pub struct Daemons {
    pub identityd: UdsClient,
    pub keyd: UdsClient,
    pub certd: UdsClient,
}

impl Daemons {
    /// Reads `{root}/etc/ferrohub/{identityd,keyd,certd}/config.toml` and their drop-ins.
    pub fn under(root: &Path) -> Result<Self, EdgeError> {
        let paths = identity::config::apply::Paths::under(root);
        fn load<T: serde::de::DeserializeOwned>(
            paths: &identity::config::apply::Paths,
            svc: &str,
        ) -> Result<T, EdgeError> {
            identity::config::load_daemon(&paths.daemon_config(svc), &paths.dropin_dir(svc))
                .map_err(|e| {
                    EdgeError::Config(format!("{e} (run `ferrohub config apply -c config.toml`)"))
                })
        }
        let idd: IdentitydConfig = load(&paths, "identityd")?;
        let keyd: KeydConfig = load(&paths, "keyd")?;
        let certd: CertdConfig = load(&paths, "certd")?;
        Ok(Self {
            identityd: UdsClient::new(idd.socket),
            keyd: UdsClient::new(keyd.socket),
            certd: UdsClient::new(certd.socket),
        })
    }
}

/// The edge device and its `$edgeHub` credential, as identityd tells them.
#[derive(Clone, Debug)]
pub struct EdgeIdentity {
    pub hub_name: String,
    pub device_id: String,
    /// keyd's handle of the `$edgeHub` module key (derived in keyd, set at the hub by identityd).
    pub key_handle: String,
}

/// Asks identityd for the device, then for the `$edgeHub` module identity: created (or its keys
/// set) through identityd, so its key is one keyd derives; offline, identityd's cached module.
pub async fn edge_identity(d: &Daemons) -> Result<EdgeIdentity, EdgeError> {
    let device = d
        .identityd
        .call(
            Method::POST,
            &format!("/identities/device?{IDENTITYD_API}"),
            Some(&json!({"type": "aziot"})),
        )
        .await
        .map_err(|e| idd_error("device identity; is the device provisioned?", e))?;
    let spec = &device["spec"];
    let field = |v: &Value, name: &str| {
        v[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| idd_error("identity", format!("no {name} in {v}")))
    };
    let (hub_name, device_id) = (field(spec, "hubName")?, field(spec, "deviceId")?);
    let body = json!({"type": "aziot", "moduleId": EDGE_HUB});
    let created = d
        .identityd
        .call(
            Method::POST,
            &format!("/identities/modules?{IDENTITYD_API}"),
            Some(&body),
        )
        .await;
    let module = match created {
        Ok(m) => m,
        Err(e) => {
            warn!(error = %e, "Could not set up $edgeHub through identityd; using its cached identity");
            let path = format!(
                "/identities/modules/{}?{IDENTITYD_API}&type=aziot",
                iot_auth::percent_encode(EDGE_HUB)
            );
            d.identityd
                .call(Method::GET, &path, None)
                .await
                .map_err(|e| idd_error("$edgeHub module identity", e))?
        }
    };
    let key_handle = field(&module["spec"]["auth"], "keyHandle")?;
    Ok(EdgeIdentity {
        hub_name,
        device_id,
        key_handle,
    })
}

/// `$edgeHub` SAS tokens (an hour on `clock`) signed by keyd with `handle`.
pub fn token_fn(keyd: UdsClient, identity: &EdgeIdentity, clock: SharedClock) -> relay::TokenFn {
    let resource = format!(
        "{}/devices/{}/modules/{EDGE_HUB}",
        identity.hub_name, identity.device_id
    );
    let sr = Arc::new(iot_auth::percent_encode(&resource));
    let handle = Arc::new(identity.key_handle.clone());
    Arc::new(move || {
        let (keyd, sr, handle, clock) = (keyd.clone(), sr.clone(), handle.clone(), clock.clone());
        Box::pin(async move {
            let expiry = u64::try_from(clock.now().unix_timestamp()).unwrap_or(0) + 3600;
            let message = STANDARD.encode(format!("{sr}\n{expiry}"));
            let body = json!({"keyHandle": *handle, "algorithm": "HMAC-SHA256",
                              "parameters": {"message": message}});
            let v = keyd
                .call(Method::POST, "/sign?api-version=2020-09-01", Some(&body))
                .await
                .map_err(|e| format!("keyd: {e}"))?;
            let sig = v["signature"]
                .as_str()
                .ok_or_else(|| format!("keyd answered without a signature: {v}"))?;
            Ok(format!(
                "SharedAccessSignature sr={sr}&sig={}&se={expiry}",
                iot_auth::percent_encode(sig)
            ))
        })
    })
}

/// A gateway opened in identity mode, with its certificate manager.
pub struct IdentityGateway {
    pub gateway: Arc<Gateway>,
    pub certs: Arc<ServerCerts>,
    pub identity: EdgeIdentity,
}

/// Reads the super-config, asks the daemons for the identity and the certificate, and opens the
/// gateway serving that certificate (renewable). `cert_clock` decides certificate renewal and
/// the quickstart CA's validity; `clock` is the gateway's (both the system clock normally).
pub async fn open(
    settings: &IdentitySettings,
    clock: SharedClock,
    cert_clock: SharedClock,
) -> Result<IdentityGateway, EdgeError> {
    let sc =
        SuperConfig::load(&settings.super_config).map_err(|e| EdgeError::Config(e.to_string()))?;
    let daemons = Daemons::under(&settings.root)?;
    let identity = edge_identity(&daemons).await?;
    let data_dir = settings.data_dir();
    let hub_ca = hub_trust_bundle(&sc, &daemons, &data_dir).await?;
    let plan = CertPlan {
        hostname: sc.hostname.clone(),
        ips: settings.ips.clone(),
        edge_ca: match &sc.edge_ca {
            Some(EdgeCa::Preloaded(_)) => EdgeCaSource::Preloaded,
            Some(EdgeCa::Quickstart { expiry_days }) => EdgeCaSource::Quickstart {
                expiry_days: *expiry_days,
            },
            None => EdgeCaSource::Quickstart {
                expiry_days: QUICKSTART_CA_DAYS,
            },
        },
        dir: data_dir.join("tls"),
    };
    let certs = ServerCerts::open(
        daemons.certd.clone(),
        daemons.keyd.clone(),
        plan,
        cert_clock,
    )
    .await?;
    let config: EdgeConfig = serde_json::from_value(json!({
        "edge_id": identity.device_id,
        "hub_hostname": identity.hub_name,
        "hub_mqtt": settings.hub_mqtt.clone().unwrap_or_else(|| format!("{}:8883", identity.hub_name)),
        "hub_https": settings.hub_https.clone().unwrap_or_else(|| format!("{}:443", identity.hub_name)),
        "hub_ca": hub_ca,
        "edge_hub_key": "",
        "tls_cert": certs.chain_path(),
        "tls_key": certs.key_path(),
        "data_dir": data_dir,
        "routes": settings.routes,
        "store_ttl_hours": settings.store_ttl_hours,
        "listen": settings.listen,
    }))
    .map_err(|e| EdgeError::Config(e.to_string()))?;
    let token = token_fn(daemons.keyd.clone(), &identity, clock.clone());
    let gateway = Gateway::open_with(config, clock, token)?;
    gateway.use_server_cert(certs.tls());
    info!(edge = %identity.device_id, hub = %identity.hub_name, hostname = %sc.hostname,
          "Gateway identity from the identity service");
    Ok(IdentityGateway {
        gateway,
        certs,
        identity,
    })
}

/// The CAs to trust for the hub: `trust_bundle_cert`, else identityd's trust bundle (written to
/// `{data_dir}/hub-trust-bundle.pem`).
async fn hub_trust_bundle(
    sc: &SuperConfig,
    d: &Daemons,
    data_dir: &Path,
) -> Result<PathBuf, EdgeError> {
    if let Some(uri) = &sc.trust_bundle_cert {
        return Ok(identity::keyd::uri_path(uri).to_path_buf());
    }
    let v = d
        .identityd
        .call(Method::GET, &format!("/trust-bundle?{IDENTITYD_API}"), None)
        .await
        .map_err(|e| idd_error("trust bundle", e))?;
    let pem = v["certificate"].as_str().unwrap_or_default();
    if pem.trim().is_empty() {
        return Err(EdgeError::Config(
            "no CA to trust for the hub: set trust_bundle_cert = \"file:///path/to/root-ca.pem\" \
             in config.toml and run `ferrohub config apply`"
                .into(),
        ));
    }
    let path = data_dir.join("hub-trust-bundle.pem");
    identity::identityd::write_atomic(&path, pem.as_bytes())
        .map_err(|e| EdgeError::Config(format!("{}: {e}", path.display())))?;
    Ok(path)
}
