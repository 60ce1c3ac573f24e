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

use ferrohub_runtime::time::SharedClock;
use identity::client::UdsClient;
use identity::config::superconfig::{EdgeCa, SuperConfig};
use identity::config::{CertdConfig, IdentitydConfig, KeydConfig};
use identity::wire::identityd::{CreateModuleRequest, Identity, IdentityTypeRequest, TrustBundle};
use identity::wire::keyd::{SignRequest, SignResponse};
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
    let device: Identity = d
        .identityd
        .post(
            &format!("/identities/device?{IDENTITYD_API}"),
            &IdentityTypeRequest::aziot(),
        )
        .await
        .map_err(|e| idd_error("device identity; is the device provisioned?", e))?;
    let (hub_name, device_id) = (device.spec.hub_name, device.spec.device_id);
    let created: Result<Identity, _> = d
        .identityd
        .post(
            &format!("/identities/modules?{IDENTITYD_API}"),
            &CreateModuleRequest::aziot(EDGE_HUB),
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
                .get(&path)
                .await
                .map_err(|e| idd_error("$edgeHub module identity", e))?
        }
    };
    let key_handle = module
        .spec
        .auth
        .map(|a| a.key_handle)
        .ok_or_else(|| idd_error("identity", "no keyHandle in the $edgeHub identity"))?;
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
            let body = SignRequest::hmac_sha256(&handle, format!("{sr}\n{expiry}").as_bytes());
            let v: SignResponse = keyd
                .post("/sign?api-version=2020-09-01", &body)
                .await
                .map_err(|e| format!("keyd: {e}"))?;
            Ok(format!(
                "SharedAccessSignature sr={sr}&sig={}&se={expiry}",
                iot_auth::percent_encode(&v.signature)
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
    let hub = &identity.hub_name;
    let config = EdgeConfig {
        edge_id: identity.device_id.clone(),
        hub_hostname: hub.clone(),
        hub_mqtt: (settings.hub_mqtt.clone()).unwrap_or_else(|| format!("{hub}:8883")),
        hub_https: (settings.hub_https.clone()).unwrap_or_else(|| format!("{hub}:443")),
        hub_ca,
        edge_hub_key: String::new(),
        tls_cert: certs.chain_path(),
        tls_key: certs.key_path(),
        data_dir,
        routes: settings.routes.clone(),
        store_ttl_hours: settings.store_ttl_hours,
        listen: settings.listen,
        store_max_mib: crate::default_store_mib(),
        store_full: crate::StoreFull::default(),
        metrics_listen: None,
        local_api_listen: None,
    };
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
    let v: TrustBundle = d
        .identityd
        .get(&format!("/trust-bundle?{IDENTITYD_API}"))
        .await
        .map_err(|e| idd_error("trust bundle", e))?;
    let pem = v.certificate.as_str();
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
