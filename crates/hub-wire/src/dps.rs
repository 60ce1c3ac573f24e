//! The one document of the provisioning service's device API that a device client builds: the
//! register request. It lives here rather than in the `dps` crate so that identityd (the device
//! side) can send it without linking the provisioning server; `dps::model` re-exports it for the
//! server's MQTT and HTTPS endpoints, which parse it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The body of a device's register request (`PUT …/registrations/{id}/register`, or the MQTT
/// `$dps/registrations/PUT/iotdps-register/` publish): `{"registrationId", "payload"}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRegistration {
    #[serde(default)]
    pub registration_id: Option<String>,
    /// The device's custom data, echoed in its registration state (`null` when it sends none).
    #[serde(default)]
    pub payload: Option<Value>,
    /// TPM attestation data; ferrohub does not support TPM, so a client never sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<Value>,
}

impl DeviceRegistration {
    /// The request of `registration_id`, with its custom `payload` (sent as `null` when absent).
    pub fn new(registration_id: &str, payload: Option<Value>) -> Self {
        Self {
            registration_id: Some(registration_id.to_owned()),
            payload,
            tpm: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_request_keeps_the_shape_devices_send() {
        let r = DeviceRegistration::new("dev-1", None);
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"registrationId": "dev-1", "payload": null})
        );
        let r = DeviceRegistration::new("dev-1", Some(json!({"site": "x"})));
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"registrationId": "dev-1", "payload": {"site": "x"}})
        );
        let parsed: DeviceRegistration = serde_json::from_value(json!({})).unwrap();
        assert_eq!(parsed, DeviceRegistration::default());
    }
}
