//! The three daemon configs, as `ferrohub config apply` writes them. They name keys and
//! certificates only by well-known ids (`device-id`, `local-ca`, ...); file locations are in the
//! `preloaded_*` tables.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

fn default_max_requests() -> usize {
    crate::uds::DEFAULT_MAX_REQUESTS
}

/// keyd: `/etc/ferrohub/keyd/config.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeydConfig {
    /// Keys live in `{homedir}/keys/`.
    pub homedir: PathBuf,
    pub socket: PathBuf,
    #[serde(default = "default_max_requests")]
    pub max_requests: usize,
    /// Key id → `file:///path` (raw key bytes for symmetric keys, PKCS#8 PEM for key pairs).
    #[serde(default)]
    pub preloaded_keys: BTreeMap<String, String>,
    #[serde(default, rename = "principal")]
    pub principals: Vec<KeydPrincipal>,
}

/// Which key ids (globs: `*`, `?`) a uid may create, import, load or move.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeydPrincipal {
    pub uid: u32,
    pub keys: Vec<String>,
}

/// certd: `/etc/ferrohub/certd/config.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertdConfig {
    /// Certificates live in `{homedir}/certs/`.
    pub homedir: PathBuf,
    pub socket: PathBuf,
    #[serde(default = "default_max_requests")]
    pub max_requests: usize,
    /// keyd's home, read in-process to sign with issuer keys (`ferrohub identity run` hosts both).
    pub keyd_homedir: PathBuf,
    #[serde(default)]
    pub cert_issuance: CertIssuance,
    /// Cert id → `file:///path`, or a list of other cert ids concatenated on read (trust bundles).
    #[serde(default)]
    pub preloaded_certs: BTreeMap<String, PreloadedCert>,
    #[serde(default, rename = "principal")]
    pub principals: Vec<CertdPrincipal>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PreloadedCert {
    Uri(String),
    Ids(Vec<String>),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
// No `deny_unknown_fields` here: with `flatten` serde would refuse every per-cert entry (the
// flattened map's keys count as unknown); the per-cert options still deny unknown fields.
pub struct CertIssuance {
    /// The local CA: its cert id and key-pair id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ca: Option<LocalCa>,
    /// Per cert id: how `POST /certificates` without an issuer signs it.
    #[serde(flatten)]
    pub certs: BTreeMap<String, CertIssuanceOptions>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalCa {
    pub cert: String,
    pub pk: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertIssuanceOptions {
    /// `self_signed` (with the key pair of the same id) or `local_ca`.
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
}

/// Which cert ids a uid may create, import or delete (globs). Reading is open to every caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertdPrincipal {
    pub uid: u32,
    pub certs: Vec<String>,
}

/// identityd: `/etc/ferrohub/identityd/config.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitydConfig {
    /// This device's host name (what modules use as `GatewayHostName` when there is a gateway).
    pub hostname: String,
    /// Cached device and module identities, `prev_state`.
    pub homedir: PathBuf,
    pub socket: PathBuf,
    #[serde(default = "default_max_requests")]
    pub max_requests: usize,
    pub keyd_socket: PathBuf,
    pub certd_socket: PathBuf,
    #[serde(default)]
    pub prefer_module_identity_cache: bool,
    /// Cert id (in certd) of the CAs to trust for the hub's and DPS's TLS certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_bundle: Option<String>,
    /// `Dynamic` (default), `AlwaysOnStartup` or `OnErrorOnly`.
    #[serde(default = "dynamic")]
    pub auto_reprovisioning_mode: String,
    pub provisioning: Provisioning,
    #[serde(default, rename = "principal")]
    pub principals: Vec<Principal>,
}

fn dynamic() -> String {
    "Dynamic".into()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase", deny_unknown_fields)]
pub enum Provisioning {
    Manual {
        iothub_hostname: String,
        device_id: String,
        /// Where modules connect (`GatewayHostName`), default the hub.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        local_gateway_hostname: Option<String>,
        authentication: ManualAuth,
    },
    Dps {
        global_endpoint: String,
        scope_id: String,
        /// A JSON file sent as the registration payload.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<PathBuf>,
        attestation: DpsAttestation,
    },
    None,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum ManualAuth {
    /// The device key, a keyd key id.
    Sas { device_id_pk: String },
    /// Cert id (certd) and key-pair id (keyd).
    X509 {
        identity_cert: String,
        identity_pk: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum DpsAttestation {
    SymmetricKey {
        registration_id: String,
        /// keyd key id.
        symmetric_key: String,
    },
    X509 {
        /// Default: the identity certificate's CN.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        registration_id: Option<String>,
        identity_cert: String,
        identity_pk: String,
    },
}

/// A local process identified by uid. `idtype = ["module"]`: identityd keeps a hub module
/// identity named `name` for it; `["device"]`: it may read the device identity; none: the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    pub uid: u32,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idtype: Option<Vec<String>>,
}
