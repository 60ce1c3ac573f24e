//! Azure-style connection strings: `Key=Value;Key=Value`.
//!
//! Values are taken verbatim (no decoding); each segment is split on its first `=` because
//! base64 keys end in `=` and SAS tokens contain more of them. Keys are case-sensitive, exactly
//! as the hub and the SDKs spell them.

use std::fmt;

/// `HostName` key.
pub const HOST_NAME: &str = "HostName";
/// `DeviceId` key.
pub const DEVICE_ID: &str = "DeviceId";
/// `ModuleId` key.
pub const MODULE_ID: &str = "ModuleId";
/// `SharedAccessKeyName` key (service policy name).
pub const SHARED_ACCESS_KEY_NAME: &str = "SharedAccessKeyName";
/// `SharedAccessKey` key (base64 symmetric key).
pub const SHARED_ACCESS_KEY: &str = "SharedAccessKey";
/// `SharedAccessSignature` key (a ready-made SAS token).
pub const SHARED_ACCESS_SIGNATURE: &str = "SharedAccessSignature";
/// `GatewayHostName` key (IoT Edge gateway to dial instead of `HostName`).
pub const GATEWAY_HOST_NAME: &str = "GatewayHostName";
/// `x509` key (`true` for certificate authentication).
pub const X509: &str = "x509";

/// Order in which [`ConnectionString`]'s `Display` writes the keys it knows; others follow in
/// insertion order.
const CANONICAL_ORDER: [&str; 8] = [
    HOST_NAME,
    DEVICE_ID,
    MODULE_ID,
    SHARED_ACCESS_KEY_NAME,
    SHARED_ACCESS_KEY,
    SHARED_ACCESS_SIGNATURE,
    GATEWAY_HOST_NAME,
    X509,
];

/// Keys whose values are secrets and never appear in `Debug` output.
const SECRET_KEYS: [&str; 2] = [SHARED_ACCESS_KEY, SHARED_ACCESS_SIGNATURE];

/// Errors from [`ConnectionString::parse`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionStringError {
    /// A non-empty segment has no `=`.
    #[error("connection string segment {index} has no `=`")]
    MissingEquals {
        /// Zero-based index of the offending segment.
        index: usize,
    },
    /// A segment has an empty key (`=value`).
    #[error("connection string segment {index} has an empty key")]
    EmptyKey {
        /// Zero-based index of the offending segment.
        index: usize,
    },
    /// The same key appears twice.
    #[error("connection string key `{0}` appears more than once")]
    DuplicateKey(String),
}

/// A parsed connection string. `Debug` redacts keys and signatures.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ConnectionString {
    entries: Vec<(String, String)>,
}

impl ConnectionString {
    /// Parses `Key=Value;Key=Value`. Surrounding whitespace of each segment is ignored and so are
    /// empty segments (e.g. a trailing `;`).
    pub fn parse(s: &str) -> Result<Self, ConnectionStringError> {
        let mut out = Self::default();
        for (index, segment) in s.split(';').enumerate() {
            let segment = segment.trim();
            if segment.is_empty() {
                continue;
            }
            let (key, value) = segment
                .split_once('=')
                .ok_or(ConnectionStringError::MissingEquals { index })?;
            if key.is_empty() {
                return Err(ConnectionStringError::EmptyKey { index });
            }
            if out.get(key).is_some() {
                return Err(ConnectionStringError::DuplicateKey(key.to_owned()));
            }
            out.entries.push((key.to_owned(), value.to_owned()));
        }
        Ok(out)
    }

    /// `HostName={host};SharedAccessKeyName={policy};SharedAccessKey={key}`.
    pub fn service(host: &str, policy: &str, key: &str) -> Self {
        let mut cs = Self::default();
        cs.set(HOST_NAME, host);
        cs.set(SHARED_ACCESS_KEY_NAME, policy);
        cs.set(SHARED_ACCESS_KEY, key);
        cs
    }

    /// `HostName={host};DeviceId={device_id};SharedAccessKey={key}`.
    pub fn device(host: &str, device_id: &str, key: &str) -> Self {
        let mut cs = Self::default();
        cs.set(HOST_NAME, host);
        cs.set(DEVICE_ID, device_id);
        cs.set(SHARED_ACCESS_KEY, key);
        cs
    }

    /// `HostName={host};DeviceId={device_id};ModuleId={module_id};SharedAccessKey={key}`.
    pub fn module(host: &str, device_id: &str, module_id: &str, key: &str) -> Self {
        let mut cs = Self::device(host, device_id, key);
        cs.set(MODULE_ID, module_id);
        cs
    }

    /// Sets (or replaces) `key`.
    pub fn set(&mut self, key: &str, value: &str) {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => value.clone_into(v),
            None => self.entries.push((key.to_owned(), value.to_owned())),
        }
    }

    /// Builder form of [`ConnectionString::set`].
    #[must_use]
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.set(key, value);
        self
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let pos = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(pos).1)
    }

    /// The value of `key` (case-sensitive).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All entries in insertion order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `HostName`.
    pub fn host_name(&self) -> Option<&str> {
        self.get(HOST_NAME)
    }

    /// `DeviceId`.
    pub fn device_id(&self) -> Option<&str> {
        self.get(DEVICE_ID)
    }

    /// `ModuleId`.
    pub fn module_id(&self) -> Option<&str> {
        self.get(MODULE_ID)
    }

    /// `SharedAccessKeyName`.
    pub fn shared_access_key_name(&self) -> Option<&str> {
        self.get(SHARED_ACCESS_KEY_NAME)
    }

    /// `SharedAccessKey` (base64).
    pub fn shared_access_key(&self) -> Option<&str> {
        self.get(SHARED_ACCESS_KEY)
    }

    /// `SharedAccessSignature` (a whole SAS token).
    pub fn shared_access_signature(&self) -> Option<&str> {
        self.get(SHARED_ACCESS_SIGNATURE)
    }

    /// `GatewayHostName`.
    pub fn gateway_host_name(&self) -> Option<&str> {
        self.get(GATEWAY_HOST_NAME)
    }

    /// Whether `x509=true` (case-insensitive value).
    pub fn x509(&self) -> bool {
        self.get(X509)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    /// Entries in `Display` order: known keys in canonical order, then the rest.
    fn ordered(&self) -> impl Iterator<Item = &(String, String)> {
        let known = CANONICAL_ORDER
            .iter()
            .filter_map(|name| self.entries.iter().find(|(k, _)| k == name));
        let unknown = self
            .entries
            .iter()
            .filter(|(k, _)| !CANONICAL_ORDER.contains(&k.as_str()));
        known.chain(unknown)
    }
}

/// Writes the full connection string, secrets included, with known keys in the order Azure
/// emits them (`HostName`, `DeviceId`, `ModuleId`, `SharedAccessKeyName`, `SharedAccessKey`,
/// `SharedAccessSignature`, `GatewayHostName`, `x509`), then any other keys.
impl fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.ordered().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in &self.entries {
            if SECRET_KEYS.contains(&k.as_str()) {
                map.entry(k, &"<redacted>");
            } else {
                map.entry(k, v);
            }
        }
        map.finish()
    }
}

impl std::str::FromStr for ConnectionString {
    type Err = ConnectionStringError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = "HostName=myhub.local;SharedAccessKeyName=iothubowner;SharedAccessKey=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    const DEVICE: &str = "HostName=myhub.local;DeviceId=dev1;SharedAccessKey=abc==";

    #[test]
    fn parses_service_string() {
        let cs = ConnectionString::parse(SERVICE).unwrap();
        assert_eq!(cs.host_name(), Some("myhub.local"));
        assert_eq!(cs.shared_access_key_name(), Some("iothubowner"));
        assert_eq!(
            cs.shared_access_key(),
            Some("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
        );
        assert_eq!(cs.device_id(), None);
        assert_eq!(cs.to_string(), SERVICE);
        assert_eq!(
            ConnectionString::service(
                "myhub.local",
                "iothubowner",
                "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
            ),
            cs
        );
    }

    #[test]
    fn parses_device_and_edge_strings() {
        let cs = ConnectionString::parse(DEVICE).unwrap();
        assert_eq!(cs.device_id(), Some("dev1"));
        assert_eq!(cs.shared_access_key(), Some("abc=="));
        assert_eq!(cs.to_string(), DEVICE);
        assert_eq!(ConnectionString::device("myhub.local", "dev1", "abc=="), cs);

        let edge = "DeviceId=d;HostName=h;ModuleId=m;SharedAccessKey=k=;GatewayHostName=gw;";
        let cs = ConnectionString::parse(edge).unwrap();
        assert_eq!(cs.module_id(), Some("m"));
        assert_eq!(cs.gateway_host_name(), Some("gw"));
        assert_eq!(
            cs.to_string(),
            "HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=k=;GatewayHostName=gw"
        );
    }

    #[test]
    fn sas_and_x509_values() {
        let s = "HostName=h;DeviceId=d;SharedAccessSignature=SharedAccessSignature sr=h%2Fdevices%2Fd&sig=a%3D&se=1";
        let cs = ConnectionString::parse(s).unwrap();
        assert_eq!(
            cs.shared_access_signature(),
            Some("SharedAccessSignature sr=h%2Fdevices%2Fd&sig=a%3D&se=1")
        );
        assert!(!cs.x509());
        let cs = ConnectionString::parse("HostName=h;DeviceId=d;x509=True").unwrap();
        assert!(cs.x509());
    }

    #[test]
    fn rejects_bad_strings() {
        assert_eq!(
            ConnectionString::parse("HostName=a;HostName=b"),
            Err(ConnectionStringError::DuplicateKey("HostName".into()))
        );
        assert_eq!(
            ConnectionString::parse("HostName=a;;junk"),
            Err(ConnectionStringError::MissingEquals { index: 2 })
        );
        assert_eq!(
            ConnectionString::parse("=x"),
            Err(ConnectionStringError::EmptyKey { index: 0 })
        );
        // Keys are case-sensitive: these are two different keys.
        let cs = ConnectionString::parse("hostname=a;HostName=b").unwrap();
        assert_eq!(cs.host_name(), Some("b"));
        assert_eq!(
            ConnectionString::parse("").unwrap(),
            ConnectionString::default()
        );
    }

    #[test]
    fn unknown_keys_follow_known_ones() {
        let cs = ConnectionString::parse("Foo=1;HostName=h").unwrap();
        assert_eq!(cs.to_string(), "HostName=h;Foo=1");
        let cs = cs.with("Foo", "2").with(DEVICE_ID, "d");
        assert_eq!(cs.to_string(), "HostName=h;DeviceId=d;Foo=2");
    }

    #[test]
    fn set_remove_and_from_str() {
        let mut cs: ConnectionString = DEVICE.parse().unwrap();
        assert_eq!(cs.remove(SHARED_ACCESS_KEY).as_deref(), Some("abc=="));
        assert_eq!(cs.remove(SHARED_ACCESS_KEY), None);
        cs.set(X509, "true");
        assert_eq!(
            cs.to_string(),
            "HostName=myhub.local;DeviceId=dev1;x509=true"
        );
        assert_eq!(cs.entries().count(), 3);
        let m = ConnectionString::module("h", "d", "m", "k");
        assert_eq!(
            m.to_string(),
            "HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=k"
        );
    }

    #[test]
    fn debug_redacts_secrets() {
        let cs = ConnectionString::parse(SERVICE).unwrap().with(
            SHARED_ACCESS_SIGNATURE,
            "SharedAccessSignature sr=x&sig=SECRET&se=1",
        );
        let dbg = format!("{cs:?}");
        assert!(dbg.contains("iothubowner"));
        assert!(!dbg.contains("MDEy"));
        assert!(!dbg.contains("SECRET"));
    }
}
