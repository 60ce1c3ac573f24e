//! # iot-auth
//!
//! The string formats an Azure-IoT-compatible hub has to understand, without any I/O:
//!
//! * [`sas`]: `SharedAccessSignature` tokens — parse, verify (with clock skew), generate, and
//!   symmetric-key helpers (random keys, DPS group-key derivation).
//! * [`connection_string`]: `HostName=..;DeviceId=..;SharedAccessKey=..` strings.
//! * [`username`]: MQTT CONNECT usernames (`{host}/{device}[/{module}]/?api-version=..`).
//! * [`topic`]: device-facing MQTT topics, subscription filters and property bags.
//!
//! Time is always passed in as unix seconds; nothing here reads the clock. Types that hold a
//! key or signature redact it in their `Debug` output.
//!
//! ```
//! use iot_auth::sas::{Audience, SasToken, decode_key, generate_sas_token};
//! use iot_auth::topic::{PublishTopic, parse_publish_topic};
//!
//! let key = decode_key("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap();
//! let token = generate_sas_token("myhub.local/devices/dev1", &key, None, 1_700_000_000);
//! let parsed = SasToken::parse(&token).unwrap();
//! assert!(parsed.verify(&key, 1_699_999_000).is_ok());
//! assert_eq!(
//!     parsed.audience(),
//!     Audience::Device { host: "myhub.local".into(), device_id: "dev1".into() }
//! );
//!
//! let topic = parse_publish_topic("devices/dev1/messages/events/%24.ct=application%2Fjson").unwrap();
//! let PublishTopic::Telemetry { device_id, properties, .. } = topic else { unreachable!() };
//! assert_eq!(device_id, "dev1");
//! assert_eq!(properties.get("$.ct"), Some("application/json"));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod connection_string;
mod pct;
pub mod sas;
pub mod topic;
pub mod username;

pub use connection_string::{ConnectionString, ConnectionStringError};
pub use sas::{Audience, SasError, SasToken, derive_device_key, generate_key, generate_sas_token};
pub use topic::{
    PropertyBag, PublishTopic, Subscription, SystemProperty, TopicError, classify_subscription,
    parse_publish_topic,
};
pub use username::{MqttUsername, UsernameError, parse_mqtt_username};

/// Percent-encodes all but RFC 3986 unreserved characters (ids placed in URL paths or queries).
pub fn percent_encode(s: &str) -> String {
    pct::encode(s)
}

/// Percent-decodes `s` (`+` stays `+`); `None` for a malformed escape or invalid UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    pct::decode(s).ok()
}
