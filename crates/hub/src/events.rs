//! The record stored in the events log for each device-to-cloud message, and its JSON-lines form
//! for consumers (`ferrohub hub events`, `GET /events`).

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// One telemetry message as the hub stored it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    pub device_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    pub enqueued_time: String,
    /// System properties: the message's own (`messageId`, `contentType`, ...) and the hub's stamps
    /// (`iothub-connection-device-id`, `iothub-connection-auth-method`, `iothub-enqueuedtime`, ...).
    pub system_properties: BTreeMap<String, String>,
    /// Application properties, percent-decoded. A property sent without `=` has the value null.
    pub properties: BTreeMap<String, Option<String>>,
    /// The body: text when it is UTF-8, else base64 (see `bodyEncoding`).
    pub body: String,
    /// `utf-8` or `base64`.
    pub body_encoding: String,
}

impl EventRecord {
    /// Stores `payload` as text when it is valid UTF-8, else as base64.
    pub fn set_body(&mut self, payload: &[u8]) {
        match std::str::from_utf8(payload) {
            Ok(s) => {
                self.body = s.to_owned();
                self.body_encoding = "utf-8".into();
            }
            Err(_) => {
                self.body = base64::engine::general_purpose::STANDARD.encode(payload);
                self.body_encoding = "base64".into();
            }
        }
    }

    /// The body bytes.
    pub fn body_bytes(&self) -> Vec<u8> {
        if self.body_encoding == "base64" {
            base64::engine::general_purpose::STANDARD
                .decode(&self.body)
                .unwrap_or_default()
        } else {
            self.body.as_bytes().to_vec()
        }
    }
}

/// What consumers read: the log offset and the record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumedEvent {
    pub offset: u64,
    #[serde(flatten)]
    pub event: EventRecord,
}

/// `iothub-connection-auth-method` as the hub stamps it.
pub fn auth_method_json(scope: &str, kind: &str) -> String {
    serde_json::json!({ "scope": scope, "type": kind, "issuer": "iothub" }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_as_text_or_base64() {
        let mut e = EventRecord {
            device_id: "d".into(),
            module_id: None,
            enqueued_time: "t".into(),
            system_properties: BTreeMap::new(),
            properties: BTreeMap::new(),
            body: String::new(),
            body_encoding: String::new(),
        };
        e.set_body(b"{\"t\":1}");
        assert_eq!(e.body_encoding, "utf-8");
        e.set_body(&[0xff, 0x00]);
        assert_eq!(e.body_encoding, "base64");
        assert_eq!(e.body_bytes(), vec![0xff, 0x00]);
        let line = serde_json::to_string(&ConsumedEvent {
            offset: 7,
            event: e.clone(),
        })
        .unwrap();
        let back: ConsumedEvent = serde_json::from_str(&line).unwrap();
        assert_eq!(back.event, e);
        assert!(line.contains("\"offset\":7") && line.contains("\"deviceId\":\"d\""));
    }
}
