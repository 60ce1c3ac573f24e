//! The device super-config, `/etc/ferrohub/config.toml`: the subset of aziot's
//! `/etc/aziot/config.toml` that ferrohub implements, as users write it.
//!
//! [`SuperConfig::parse`] checks it in three passes, each naming the file, the line and the key:
//! features ferrohub does not implement yet (TPM, EST, PKCS#11) are refused first, then the
//! document is deserialized into `deny_unknown_fields` structs (so typos are named), then each
//! value is checked and turned into the typed [`SuperConfig`]. [`super::apply`] maps that onto
//! the three daemon configs.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::daemons::Principal;
use super::{ConfigError, toml_error};

/// The checked super-config. Keys are `file:///` URIs; inline keys are already decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuperConfig {
    pub hostname: String,
    /// Modules' `GatewayHostName` (manual provisioning only).
    pub local_gateway_hostname: Option<String>,
    pub prefer_module_identity_cache: bool,
    /// CAs to trust for the hub's and DPS's TLS certificates (`file:///` URI).
    pub trust_bundle_cert: Option<String>,
    pub auto_reprovisioning_mode: ReprovisioningMode,
    pub max_requests: MaxRequests,
    pub provisioning: Provisioning,
    /// `[cert_issuance.local_ca]`.
    pub local_ca: Option<CertAndKey>,
    pub edge_ca: Option<EdgeCa>,
    pub principals: Vec<Principal>,
    /// `aziot_paths = true`: the daemons also listen on `/run/aziot/*.sock` and read principal
    /// files from `/etc/aziot/{keyd,certd,identityd}/config.d` (ferrohub's own key).
    pub aziot_paths: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum ReprovisioningMode {
    #[default]
    Dynamic,
    AlwaysOnStartup,
    OnErrorOnly,
}

impl ReprovisioningMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dynamic => "Dynamic",
            Self::AlwaysOnStartup => "AlwaysOnStartup",
            Self::OnErrorOnly => "OnErrorOnly",
        }
    }
}

/// `[aziot_max_requests]`: concurrent requests each daemon serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaxRequests {
    pub keyd: usize,
    pub certd: usize,
    pub identityd: usize,
}

impl Default for MaxRequests {
    fn default() -> Self {
        let n = crate::uds::DEFAULT_MAX_REQUESTS;
        Self {
            keyd: n,
            certd: n,
            identityd: n,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Provisioning {
    /// From `connection_string` or `iothub_hostname` + `device_id` + `[provisioning.authentication]`.
    Manual {
        iothub_hostname: String,
        device_id: String,
        authentication: ManualAuthentication,
    },
    Dps {
        /// `https://host[:port]`.
        global_endpoint: String,
        id_scope: String,
        payload: Option<PathBuf>,
        attestation: Attestation,
    },
    None,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManualAuthentication {
    Sas(SymmetricKey),
    X509(CertAndKey),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attestation {
    SymmetricKey {
        registration_id: String,
        key: SymmetricKey,
    },
    X509 {
        /// Default: the identity certificate's CN.
        registration_id: Option<String>,
        identity: CertAndKey,
    },
}

/// A symmetric key given inline (`value`, decoded here) or as a file of raw bytes (`uri`).
#[derive(Clone, PartialEq, Eq)]
pub enum SymmetricKey {
    Inline(Vec<u8>),
    Uri(String),
}

impl std::fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Inline(<redacted>)"),
            Self::Uri(u) => f.debug_tuple("Uri").field(u).finish(),
        }
    }
}

/// A certificate and its private key, both `file:///` URIs.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertAndKey {
    pub cert: String,
    pub pk: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EdgeCa {
    /// `[edge_ca] cert, pk`.
    Preloaded(CertAndKey),
    /// `[edge_ca] auto_generated_edge_ca_expiry_days`: a self-signed edge CA (quickstart).
    Quickstart { expiry_days: u32 },
}

/// A semantic problem with one key: `provisioning.attestation.registration_id: ...`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct Problem {
    /// Dotted key path (`principal[1].name`); empty for the whole document.
    pub key: String,
    pub message: String,
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        key: key.into(),
        message: message.into(),
    }
}

pub(super) fn fail<T>(key: impl Into<String>, message: impl Into<String>) -> Result<T, Problem> {
    Err(problem(key, message))
}

/// `Ok` when `ok`, else a problem with `key`.
pub(super) fn check(ok: bool, key: &str, message: impl FnOnce() -> String) -> Result<(), Problem> {
    if ok { Ok(()) } else { fail(key, message()) }
}

pub(super) fn not_supported(key: impl Into<String>, what: &str) -> Problem {
    problem(key, format!("{what} is not supported by ferrohub yet"))
}

impl SuperConfig {
    /// Reads and checks a super-config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Checks a super-config; `path` is only used in errors, which also give the line.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let parse_error = |e: &toml::de::Error| ConfigError::Parse {
            path: path.into(),
            message: toml_error(text, e),
        };
        let doc = DeTable::parse(text).map_err(|e| parse_error(&e))?;
        let invalid = |p: Problem| ConfigError::Invalid {
            path: path.into(),
            message: match line_of(text, &doc, &p.key) {
                Some(line) => format!("line {line}: {p}"),
                None => p.to_string(),
            },
        };
        find_unsupported(doc.get_ref(), "").map_err(invalid)?;
        let raw: Raw = toml::from_str(text).map_err(|e| parse_error(&e))?;
        convert(raw).map_err(invalid)
    }
}

/// This machine's host name: `/etc/hostname`, else `localhost`.
pub fn machine_hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .and_then(|t| t.lines().next().map(|l| l.trim().to_owned()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

// ---- Pass 1: features refused by name, wherever they appear. ----

/// Keys refused wherever they appear, and why.
const REFUSED: [(&str, &str); 4] = [
    ("tpm", "TPM"),
    ("aziot_keys", "configuring keyd's PKCS#11"),
    ("cert_issuance.est", "EST"),
    (
        "edge_ca.method",
        "issuing the edge CA (give cert and pk, or auto_generated_edge_ca_expiry_days)",
    ),
];

fn find_unsupported(table: &DeTable<'_>, prefix: &str) -> Result<(), Problem> {
    for (k, v) in table {
        let (name, value) = (k.get_ref(), v.get_ref());
        let key = match prefix {
            "" => name.to_string(),
            _ => format!("{prefix}.{name}"),
        };
        if let Some((_, what)) = REFUSED.iter().find(|(refused, _)| *refused == key) {
            return Err(not_supported(key, what));
        }
        match value {
            DeValue::String(s) if name == "method" && (s == "tpm" || s == "est") => {
                return Err(not_supported(key, &format!("method = {s:?}")));
            }
            DeValue::String(s) if s.starts_with("pkcs11:") => {
                return Err(not_supported(key, "a pkcs11: URI (PKCS#11 keys)"));
            }
            DeValue::Table(t) if name == "identity_cert" => {
                find_unsupported(t, &key)?;
                let what = "issuing the identity certificate (give a file:/// URI)";
                return Err(not_supported(key, what));
            }
            DeValue::Table(t) => find_unsupported(t, &key)?,
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let DeValue::Table(t) = item.get_ref() {
                        find_unsupported(t, &format!("{key}[{i}]"))?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The line of `key` (or of its nearest present parent), for error messages.
fn line_of(text: &str, doc: &Spanned<DeTable<'_>>, key: &str) -> Option<usize> {
    let key = key.split(' ').next().unwrap_or_default();
    let alias = key
        .strip_prefix("local_gateway_hostname")
        .map(|rest| format!("parent_hostname{rest}"));
    let start = span_start(doc.get_ref(), key)
        .or_else(|| alias.and_then(|a| span_start(doc.get_ref(), &a)))?;
    Some(text[..start.min(text.len())].matches('\n').count() + 1)
}

/// Where the deepest present part of a key path (`a.b[2].c`) starts.
fn span_start(root: &DeTable<'_>, key: &str) -> Option<usize> {
    let mut table = root;
    let mut found = None;
    for segment in key.split('.') {
        let (name, index) = match segment.split_once('[') {
            Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        let Some((k, v)) = table.iter().find(|(k, _)| k.get_ref() == name) else {
            break;
        };
        found = Some(k.span().start);
        let value = match (v.get_ref(), index) {
            (DeValue::Array(items), Some(i)) => {
                let Some(item) = items.get(i) else {
                    break;
                };
                found = Some(item.span().start);
                item.get_ref()
            }
            (value, _) => value,
        };
        match value {
            DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    found
}

// ---- Pass 2: the document as written. ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    hostname: Option<String>,
    #[serde(alias = "parent_hostname")]
    local_gateway_hostname: Option<String>,
    #[serde(default)]
    prefer_module_identity_cache: bool,
    trust_bundle_cert: Option<String>,
    #[serde(default)]
    auto_reprovisioning_mode: ReprovisioningMode,
    #[serde(default)]
    aziot_max_requests: MaxRequests,
    provisioning: RawProvisioning,
    #[serde(default)]
    cert_issuance: RawCertIssuance,
    edge_ca: Option<RawEdgeCa>,
    #[serde(default)]
    principal: Vec<Principal>,
    #[serde(default)]
    aziot_paths: bool,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Source {
    Manual,
    Dps,
    None,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvisioning {
    source: Source,
    connection_string: Option<String>,
    iothub_hostname: Option<String>,
    device_id: Option<String>,
    authentication: Option<RawCredentials>,
    global_endpoint: Option<String>,
    id_scope: Option<String>,
    payload: Option<RawUri>,
    attestation: Option<RawCredentials>,
}

/// `[provisioning.authentication]` and `[provisioning.attestation]`; which keys a method takes
/// is checked in pass 3.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredentials {
    method: String,
    registration_id: Option<String>,
    device_id_pk: Option<RawKey>,
    symmetric_key: Option<RawKey>,
    identity_cert: Option<String>,
    identity_pk: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    value: Option<String>,
    uri: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUri {
    uri: String,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertIssuance {
    local_ca: Option<CertAndKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEdgeCa {
    cert: Option<String>,
    pk: Option<String>,
    auto_generated_edge_ca_expiry_days: Option<u32>,
}

// ---- Pass 3: values checked, typed. ----

fn convert(raw: Raw) -> Result<SuperConfig, Problem> {
    let hostname = raw.hostname.unwrap_or_else(machine_hostname);
    check_hostname("hostname", &hostname)?;
    if let Some(gw) = &raw.local_gateway_hostname {
        check_hostname("local_gateway_hostname", gw)?;
    }
    let trust_bundle_cert = raw
        .trust_bundle_cert
        .map(|u| file_uri("trust_bundle_cert", &u))
        .transpose()?;
    let local_ca = raw
        .cert_issuance
        .local_ca
        .map(|c| cert_and_key("cert_issuance.local_ca", c.cert, c.pk))
        .transpose()?;
    let config = SuperConfig {
        hostname,
        local_gateway_hostname: raw.local_gateway_hostname,
        prefer_module_identity_cache: raw.prefer_module_identity_cache,
        trust_bundle_cert,
        auto_reprovisioning_mode: raw.auto_reprovisioning_mode,
        max_requests: raw.aziot_max_requests,
        provisioning: provisioning(raw.provisioning)?,
        local_ca,
        edge_ca: raw.edge_ca.map(edge_ca).transpose()?,
        principals: raw.principal,
        aziot_paths: raw.aziot_paths,
    };
    config.validate()?;
    Ok(config)
}

fn unknown_method<T>(parent: &str, method: &str, expected: &str) -> Result<T, Problem> {
    fail(
        format!("{parent}.method"),
        format!("unknown method {method:?}; expected {expected}"),
    )
}

fn required<T>(key: &str, value: Option<T>) -> Result<T, Problem> {
    value.ok_or_else(|| problem(key, "missing"))
}

/// Fails naming the first key in `set` that is present but not `allowed` in `context`.
fn only(parent: &str, ctx: &str, set: &[(&str, bool)], allowed: &[&str]) -> Result<(), Problem> {
    let extra = set.iter().find(|(name, is)| *is && !allowed.contains(name));
    extra.map_or(Ok(()), |(name, _)| {
        fail(format!("{parent}.{name}"), format!("not used with {ctx}"))
    })
}

impl RawProvisioning {
    fn only(&self, context: &str, allowed: &[&str]) -> Result<(), Problem> {
        let set = [
            ("connection_string", self.connection_string.is_some()),
            ("iothub_hostname", self.iothub_hostname.is_some()),
            ("device_id", self.device_id.is_some()),
            ("authentication", self.authentication.is_some()),
            ("global_endpoint", self.global_endpoint.is_some()),
            ("id_scope", self.id_scope.is_some()),
            ("payload", self.payload.is_some()),
            ("attestation", self.attestation.is_some()),
        ];
        only("provisioning", context, &set, allowed)
    }
}

impl RawCredentials {
    fn only(&self, parent: &str, allowed: &[&str]) -> Result<(), Problem> {
        let set = [
            ("registration_id", self.registration_id.is_some()),
            ("device_id_pk", self.device_id_pk.is_some()),
            ("symmetric_key", self.symmetric_key.is_some()),
            ("identity_cert", self.identity_cert.is_some()),
            ("identity_pk", self.identity_pk.is_some()),
        ];
        let context = format!("method = {:?}", self.method);
        only(parent, &context, &set, allowed)
    }
}

fn provisioning(raw: RawProvisioning) -> Result<Provisioning, Problem> {
    match raw.source {
        Source::Manual if raw.connection_string.is_some() => {
            let context = "connection_string (give it, or iothub_hostname, device_id and \
                           [provisioning.authentication])";
            raw.only(context, &["connection_string"])?;
            connection_string_provisioning(raw.connection_string.as_deref().unwrap_or_default())
        }
        Source::Manual => {
            let allowed = ["iothub_hostname", "device_id", "authentication"];
            raw.only("source = \"manual\"", &allowed)?;
            manual(raw)
        }
        Source::Dps => {
            let allowed = ["global_endpoint", "id_scope", "payload", "attestation"];
            raw.only("source = \"dps\"", &allowed)?;
            dps(raw)
        }
        Source::None => {
            raw.only("source = \"none\"", &[])?;
            Ok(Provisioning::None)
        }
    }
}

fn manual(raw: RawProvisioning) -> Result<Provisioning, Problem> {
    let iothub_hostname = required("provisioning.iothub_hostname", raw.iothub_hostname)?;
    check_hostname("provisioning.iothub_hostname", &iothub_hostname)?;
    let device_id = required("provisioning.device_id", raw.device_id)?;
    check_device_id("provisioning.device_id", &device_id)?;
    let k = "provisioning.authentication";
    let c = required(k, raw.authentication)?;
    let authentication = match c.method.as_str() {
        "sas" => {
            c.only(k, &["device_id_pk"])?;
            let pk = required(&format!("{k}.device_id_pk"), c.device_id_pk)?;
            ManualAuthentication::Sas(symmetric_key(&format!("{k}.device_id_pk"), pk)?)
        }
        "x509" => {
            c.only(k, &["identity_cert", "identity_pk"])?;
            ManualAuthentication::X509(identity(k, c.identity_cert, c.identity_pk)?)
        }
        other => return unknown_method(k, other, "\"sas\" or \"x509\""),
    };
    Ok(Provisioning::Manual {
        iothub_hostname,
        device_id,
        authentication,
    })
}

/// `HostName=...;DeviceId=...;SharedAccessKey=...` (the key padded or not).
fn connection_string_provisioning(cs: &str) -> Result<Provisioning, Problem> {
    let key = "provisioning.connection_string";
    let parsed = iot_auth::ConnectionString::parse(cs).map_err(|e| problem(key, e.to_string()))?;
    let expected = "a device connection string is HostName=...;DeviceId=...;SharedAccessKey=...";
    let known = |k: &str| matches!(k, "HostName" | "DeviceId" | "SharedAccessKey");
    if let Some((other, _)) = parsed.entries().find(|(k, _)| !known(k)) {
        return fail(key, format!("unexpected {other}; {expected}"));
    }
    let missing = |name: &str| problem(key, format!("no {name}; {expected}"));
    let host = parsed.host_name().ok_or_else(|| missing("HostName"))?;
    let device_id = parsed.device_id().ok_or_else(|| missing("DeviceId"))?;
    let sas = (parsed.shared_access_key()).ok_or_else(|| missing("SharedAccessKey"))?;
    check_hostname(&format!("{key} (HostName)"), host)?;
    check_device_id(&format!("{key} (DeviceId)"), device_id)?;
    let bytes = decode_key(&format!("{key} (SharedAccessKey)"), sas)?;
    Ok(Provisioning::Manual {
        iothub_hostname: host.to_owned(),
        device_id: device_id.to_owned(),
        authentication: ManualAuthentication::Sas(SymmetricKey::Inline(bytes)),
    })
}

fn dps(raw: RawProvisioning) -> Result<Provisioning, Problem> {
    let key = "provisioning.global_endpoint";
    let global_endpoint = required(key, raw.global_endpoint)?;
    let host = global_endpoint.strip_prefix("https://").unwrap_or_default();
    let https = !host.split('/').next().unwrap_or_default().is_empty();
    check(https, key, || {
        format!("{global_endpoint:?} is not an https:// URL")
    })?;
    let (key, id_scope) = (
        "provisioning.id_scope",
        required("provisioning.id_scope", raw.id_scope)?,
    );
    check(!id_scope.trim().is_empty(), key, || {
        "must not be empty".into()
    })?;
    let payload = raw
        .payload
        .map(|p| file_uri("provisioning.payload.uri", &p.uri))
        .transpose()?
        .map(|u| crate::keyd::uri_path(&u).to_path_buf());
    let c = required("provisioning.attestation", raw.attestation)?;
    Ok(Provisioning::Dps {
        global_endpoint,
        id_scope,
        payload,
        attestation: attestation(c)?,
    })
}

fn attestation(c: RawCredentials) -> Result<Attestation, Problem> {
    let k = "provisioning.attestation";
    let id_key = format!("{k}.registration_id");
    if let Some(id) = &c.registration_id {
        check_registration_id(&id_key, id)?;
    }
    match c.method.as_str() {
        "symmetric_key" => {
            c.only(k, &["registration_id", "symmetric_key"])?;
            let key = required(&format!("{k}.symmetric_key"), c.symmetric_key)?;
            Ok(Attestation::SymmetricKey {
                registration_id: required(&id_key, c.registration_id)?,
                key: symmetric_key(&format!("{k}.symmetric_key"), key)?,
            })
        }
        "x509" => {
            c.only(k, &["registration_id", "identity_cert", "identity_pk"])?;
            Ok(Attestation::X509 {
                registration_id: c.registration_id,
                identity: identity(k, c.identity_cert, c.identity_pk)?,
            })
        }
        other => unknown_method(k, other, "\"symmetric_key\" or \"x509\""),
    }
}

fn identity(parent: &str, cert: Option<String>, pk: Option<String>) -> Result<CertAndKey, Problem> {
    let cert = required(&format!("{parent}.identity_cert"), cert)?;
    let pk = required(&format!("{parent}.identity_pk"), pk)?;
    Ok(CertAndKey {
        cert: file_uri(&format!("{parent}.identity_cert"), &cert)?,
        pk: file_uri(&format!("{parent}.identity_pk"), &pk)?,
    })
}

fn cert_and_key(parent: &str, cert: String, pk: String) -> Result<CertAndKey, Problem> {
    Ok(CertAndKey {
        cert: file_uri(&format!("{parent}.cert"), &cert)?,
        pk: file_uri(&format!("{parent}.pk"), &pk)?,
    })
}

fn edge_ca(raw: RawEdgeCa) -> Result<EdgeCa, Problem> {
    let days = "edge_ca.auto_generated_edge_ca_expiry_days";
    let both = "give either cert and pk, or auto_generated_edge_ca_expiry_days, not both";
    match (raw.cert, raw.pk, raw.auto_generated_edge_ca_expiry_days) {
        (Some(cert), Some(pk), None) => Ok(EdgeCa::Preloaded(cert_and_key("edge_ca", cert, pk)?)),
        (None, None, Some(0)) => fail(days, "must be at least 1"),
        (None, None, Some(expiry_days)) => Ok(EdgeCa::Quickstart { expiry_days }),
        (_, _, Some(_)) => fail(days, both),
        (None, _, None) => fail("edge_ca.cert", "missing (give cert and pk)"),
        (Some(_), None, None) => fail("edge_ca.pk", "missing (give cert and pk)"),
    }
}

fn symmetric_key(key: &str, raw: RawKey) -> Result<SymmetricKey, Problem> {
    match (raw.value, raw.uri) {
        (Some(v), None) => decode_key(&format!("{key}.value"), &v).map(SymmetricKey::Inline),
        (None, Some(u)) => file_uri(&format!("{key}.uri"), &u).map(SymmetricKey::Uri),
        (Some(_), Some(_)) => fail(key, "give either value or uri, not both"),
        (None, None) => fail(
            key,
            "give value = \"<base64>\" or uri = \"file:///raw/key/file\"",
        ),
    }
}

/// Base64, padded or not.
fn decode_key(key: &str, b64: &str) -> Result<Vec<u8>, Problem> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    match GeneralPurpose::new(&base64::alphabet::STANDARD, config).decode(b64.trim()) {
        Ok(bytes) if !bytes.is_empty() => Ok(bytes),
        Ok(_) => fail(key, "the key is empty"),
        Err(e) => fail(key, format!("the key is not valid base64 ({e})")),
    }
}

/// `file:///abs/path` or `/abs/path` → `file:///abs/path`.
fn file_uri(key: &str, s: &str) -> Result<String, Problem> {
    if s.starts_with("pkcs11:") {
        return Err(not_supported(key, "a pkcs11: URI (PKCS#11 keys)"));
    }
    let path = s.strip_prefix("file://").unwrap_or(s);
    check(path.starts_with('/'), key, || {
        format!("{s:?} is not a file:/// URI or an absolute path")
    })?;
    Ok(format!("file://{path}"))
}

fn check_hostname(key: &str, h: &str) -> Result<(), Problem> {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    check(h.len() <= 255 && h.split('.').all(label_ok), key, || {
        format!("{h:?} is not a valid host name (letters, digits, '-' and '.')")
    })
}

/// IoT Hub device ids: up to 128 ASCII letters, digits and `- . % _ * ? ! ( ) , : = @ $ '`.
fn check_device_id(key: &str, id: &str) -> Result<(), Problem> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "-.%_*?!(),:=@$'".contains(c);
    check(
        (1..=128).contains(&id.len()) && id.chars().all(ok),
        key,
        || {
            format!(
                "{id:?} is not a valid device id (1 to 128 letters, digits and -.%_*?!(),:=@$')"
            )
        },
    )
}

/// DPS registration ids: up to 128 letters, digits and `- . _ :`, starting and ending with a
/// letter or digit.
fn check_registration_id(key: &str, id: &str) -> Result<(), Problem> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':');
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let valid = (1..=128).contains(&id.len())
        && id.chars().all(ok)
        && edge(id.chars().next())
        && edge(id.chars().last());
    check(valid, key, || {
        format!(
            "{id:?} is not a valid registration id (1 to 128 letters, digits, '-', '.', '_' \
             and ':', starting and ending with a letter or digit)"
        )
    })
}
