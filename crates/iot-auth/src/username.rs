//! MQTT CONNECT usernames: `{host}/{device}[/{module}]/?api-version=..&DeviceClientType=..`.
//!
//! The parser is deliberately tolerant, mirroring what the IoT Edge hub accepts:
//!
//! * the username is split on `/`; when the last segment starts with `?`, three segments mean
//!   `{host}/{device}/?query` and four mean `{host}/{device}/{module}/?query`;
//! * older clients omit the `?`: a last segment containing `api-version=` is then the query;
//! * as an extra tolerance, a query whose values contain a raw `/` is accepted as long as the
//!   segment that opens it starts with `?`.
//!
//! Device and module ids are never percent-encoded in usernames; query values are.

use crate::pct;

/// Errors from [`parse_mqtt_username`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsernameError {
    /// The username does not have the `{host}/{device}[/{module}]/?{query}` shape.
    #[error("MQTT username is not of the form host/device[/module]/?api-version=...")]
    Malformed,
    /// The host, device id or module id segment is empty.
    #[error("MQTT username has an empty host, device id or module id")]
    EmptySegment,
    /// `api-version` is absent or empty.
    #[error("MQTT username has no api-version")]
    MissingApiVersion,
    /// A query value is not valid percent-encoding.
    #[error("MQTT username parameter `{0}` is not valid percent-encoding")]
    BadEncoding(String),
}

/// A parsed MQTT username.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MqttUsername {
    /// Host name the client believes it talks to (the hub's `HostName`, even via a gateway).
    pub host: String,
    /// Device id (literal, not percent-encoded).
    pub device_id: String,
    /// Module id for module clients.
    pub module_id: Option<String>,
    /// `api-version` (always non-empty).
    pub api_version: String,
    /// `DeviceClientType`, percent-decoded (the SDK user agent).
    pub client_type: Option<String>,
    /// `model-id` (IoT Plug and Play DTMI).
    pub model_id: Option<String>,
    /// `auth-chain` (IoT Edge nested authentication chain).
    pub auth_chain: Option<String>,
    /// Every query parameter in order, values percent-decoded, including the ones above and
    /// any the parser does not know. A parameter without `=` has an empty value.
    pub params: Vec<(String, String)>,
}

impl MqttUsername {
    /// The MQTT client id this identity must connect with: `{device}` or `{device}/{module}`.
    pub fn client_id(&self) -> String {
        match &self.module_id {
            Some(m) => format!("{}/{m}", self.device_id),
            None => self.device_id.clone(),
        }
    }

    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits a username into its identity segments (host, device, optional module) and raw query.
fn split_username(s: &str) -> Result<(Vec<&str>, &str), UsernameError> {
    let segments: Vec<&str> = s.split('/').collect();
    let last = segments.last().copied().unwrap_or_default();
    let n = segments.len();
    // Edge hub rule: the last segment starts with `?`.
    if let Some(query) = last.strip_prefix('?')
        && (n == 3 || n == 4)
    {
        return Ok((segments[..n - 1].to_vec(), query));
    }
    // Tolerance: a `?`-segment at position 2 or 3 followed by more `/`-separated text.
    if let Some(pos) = (2..n.min(4)).find(|&i| segments[i].starts_with('?')) {
        let offset: usize = segments[..pos].iter().map(|seg| seg.len() + 1).sum();
        let query = s.get(offset + 1..).unwrap_or_default();
        return Ok((segments[..pos].to_vec(), query));
    }
    // Older clients: no `?` before the query.
    if (n == 3 || n == 4) && last.contains("api-version=") {
        return Ok((segments[..n - 1].to_vec(), last));
    }
    Err(UsernameError::Malformed)
}

fn parse_query(query: &str) -> Result<Vec<(String, String)>, UsernameError> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let v = pct::decode(v).map_err(|_| UsernameError::BadEncoding(k.to_owned()))?;
            Ok((k.to_owned(), v))
        })
        .collect()
}

/// Parses an MQTT CONNECT username as sent by the device and module SDKs.
///
/// ```
/// let u = iot_auth::username::parse_mqtt_username(
///     "myhub.local/dev1/mod1/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4",
/// ).unwrap();
/// assert_eq!(u.module_id.as_deref(), Some("mod1"));
/// assert_eq!(u.client_type.as_deref(), Some("azure-iot-device/1.18.4"));
/// ```
pub fn parse_mqtt_username(s: &str) -> Result<MqttUsername, UsernameError> {
    let (ids, query) = split_username(s)?;
    if ids.iter().any(|seg| seg.is_empty()) {
        return Err(UsernameError::EmptySegment);
    }
    let (host, device_id, module_id) = match ids.as_slice() {
        [h, d] => (*h, *d, None),
        [h, d, m] => (*h, *d, Some((*m).to_owned())),
        _ => return Err(UsernameError::Malformed),
    };
    let params = parse_query(query)?;
    let first = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let api_version = first("api-version")
        .filter(|v| !v.trim().is_empty())
        .ok_or(UsernameError::MissingApiVersion)?;
    Ok(MqttUsername {
        host: host.to_owned(),
        device_id: device_id.to_owned(),
        module_id,
        api_version,
        client_type: first("DeviceClientType"),
        model_id: first("model-id"),
        auth_chain: first("auth-chain"),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PY: &str = "myhub.local/dev1/?api-version=2019-10-01&DeviceClientType=azure-iot-device-iothub-py%2F2.14.0%28cpython%203.11%3BLinux%206.1%3Bx86_64%29";
    const NODE_MODULE: &str =
        "myhub.local/dev1/mod1/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4";

    #[test]
    fn python_device_username() {
        let u = parse_mqtt_username(PY).unwrap();
        assert_eq!(u.host, "myhub.local");
        assert_eq!(u.device_id, "dev1");
        assert_eq!(u.module_id, None);
        assert_eq!(u.api_version, "2019-10-01");
        assert_eq!(
            u.client_type.as_deref(),
            Some("azure-iot-device-iothub-py/2.14.0(cpython 3.11;Linux 6.1;x86_64)")
        );
        assert_eq!(u.client_id(), "dev1");
        assert_eq!(u.params.len(), 2);
    }

    #[test]
    fn node_module_username() {
        let u = parse_mqtt_username(NODE_MODULE).unwrap();
        assert_eq!(u.device_id, "dev1");
        assert_eq!(u.module_id.as_deref(), Some("mod1"));
        assert_eq!(u.api_version, "2021-04-12");
        assert_eq!(u.client_type.as_deref(), Some("azure-iot-device/1.18.4"));
        assert_eq!(u.client_id(), "dev1/mod1");
    }

    #[test]
    fn pnp_and_unknown_params() {
        let s = "h/d/?api-version=2020-09-30&DeviceClientType=x&model-id=dtmi%3Acom%3Aexample%3B1&auth-chain=a%3Bb&foo=bar&flag";
        let u = parse_mqtt_username(s).unwrap();
        assert_eq!(u.model_id.as_deref(), Some("dtmi:com:example;1"));
        assert_eq!(u.auth_chain.as_deref(), Some("a;b"));
        assert_eq!(u.param("foo"), Some("bar"));
        assert_eq!(u.param("flag"), Some(""));
        assert_eq!(u.param("nope"), None);
    }

    #[test]
    fn legacy_without_question_mark() {
        let u = parse_mqtt_username("h/d/api-version=2017-06-30&DeviceClientType=c").unwrap();
        assert_eq!((u.device_id.as_str(), u.module_id), ("d", None));
        let u = parse_mqtt_username("h/d/m/api-version=2017-06-30").unwrap();
        assert_eq!(u.module_id.as_deref(), Some("m"));
    }

    #[test]
    fn raw_slash_in_query_tolerated() {
        let u = parse_mqtt_username("h/d/?api-version=1&DeviceClientType=a/b/c").unwrap();
        assert_eq!(u.client_type.as_deref(), Some("a/b/c"));
        assert_eq!(u.module_id, None);
        let u = parse_mqtt_username("h/d/m/?api-version=1&DeviceClientType=a/b").unwrap();
        assert_eq!(u.module_id.as_deref(), Some("m"));
    }

    #[test]
    fn ids_with_question_marks() {
        let u = parse_mqtt_username("h/d/?m/?api-version=1").unwrap();
        assert_eq!(u.module_id.as_deref(), Some("?m"));
    }

    #[test]
    fn rejects_bad_usernames() {
        let e = |s: &str| parse_mqtt_username(s).unwrap_err();
        assert_eq!(
            e("h/d/?DeviceClientType=x"),
            UsernameError::MissingApiVersion
        );
        assert_eq!(e("h/d/?api-version="), UsernameError::MissingApiVersion);
        assert_eq!(
            e("h/d/?api-version=1&DeviceClientType=%zz"),
            UsernameError::BadEncoding("DeviceClientType".into())
        );
        assert_eq!(e("h/d"), UsernameError::Malformed);
        assert_eq!(e("h/d/x"), UsernameError::Malformed);
        assert_eq!(e("h/d/m/x/?api-version=1"), UsernameError::Malformed);
        assert_eq!(e("h//?api-version=1"), UsernameError::EmptySegment);
        assert_eq!(e("/d/?api-version=1"), UsernameError::EmptySegment);
        assert_eq!(e(""), UsernameError::Malformed);
    }
}
