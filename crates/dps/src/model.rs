//! The JSON documents of the provisioning service, in the shapes of the 2021-10-01 service API and
//! the 2019-03-31 device API (field names as Azure spells them).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Settings shared by individual enrollments and enrollment groups.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub attestation: AttestationMechanism,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// `static` allocation: the hub to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iot_hub_host_name: Option<String>,
    /// Tags and desired properties the device twin starts with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_twin: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default)]
    pub provisioning_status: ProvisioningStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprovision_policy: Option<ReprovisionPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date_time_utc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_date_time_utc: Option<String>,
    /// `hashed`, `geoLatency`, `static` (or `custom`, refused: no webhooks here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_policy: Option<String>,
    /// Candidate hubs (host names of linked hubs); empty = all linked hubs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub iot_hubs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_allocation_definition: Option<Value>,
    /// Adopt a device that already exists at the hub but was not created by this service
    /// (replacing its credentials and capabilities). Off: such a registration fails with 409.
    /// Not an Azure field.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_overwrite: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndividualEnrollment {
    pub registration_id: String,
    /// The hub device id (default: the registration id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_state: Option<RegistrationState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional_device_information: Option<Value>,
    #[serde(flatten)]
    pub settings: Settings,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentGroup {
    pub enrollment_group_id: String,
    #[serde(flatten)]
    pub settings: Settings,
}

impl EnrollmentGroup {
    /// An enabled group with this attestation and every other setting at its default (what the
    /// service reads when a body leaves them out).
    pub fn new(enrollment_group_id: &str, attestation: AttestationMechanism) -> Self {
        Self {
            enrollment_group_id: enrollment_group_id.to_owned(),
            settings: Settings {
                attestation,
                ..Settings::default()
            },
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProvisioningStatus {
    #[default]
    Enabled,
    Disabled,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    #[serde(default)]
    pub iot_edge: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReprovisionPolicy {
    #[serde(default = "yes")]
    pub update_hub_assignment: bool,
    #[serde(default = "yes")]
    pub migrate_device_data: bool,
}

impl Default for ReprovisionPolicy {
    fn default() -> Self {
        Self {
            update_hub_assignment: true,
            migrate_device_data: true,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttestationMechanism {
    /// `x509`, `symmetricKey`, `tpm` or `none`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509: Option<X509Attestation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetric_key: Option<SymmetricKeyAttestation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<Value>,
}

impl AttestationMechanism {
    /// `{"type": "x509", "x509": …}`.
    pub fn x509(x509: X509Attestation) -> Self {
        Self {
            kind: "x509".into(),
            x509: Some(x509),
            ..Self::default()
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509Attestation {
    /// Individual enrollments: the device's own certificate(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificates: Option<X509Certificates>,
    /// Groups: an intermediate or root CA given inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_certificates: Option<X509Certificates>,
    /// Groups: names of CA certificates uploaded to the DPS and verified by proof of possession.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_references: Option<CaReferences>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509Certificates {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<X509CertificateWithInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<X509CertificateWithInfo>,
}

impl X509Attestation {
    /// A group trusting the CA certificate uploaded (and verified) under `name`.
    pub fn ca_reference(name: &str) -> Self {
        Self {
            ca_references: Some(CaReferences {
                primary: Some(name.to_owned()),
                secondary: None,
            }),
            ..Self::default()
        }
    }

    /// A group trusting the CA certificate given inline (PEM).
    pub fn signing_certificate(pem: String) -> Self {
        Self {
            signing_certificates: Some(X509Certificates::primary(pem)),
            ..Self::default()
        }
    }
}

impl X509Certificates {
    /// This certificate (PEM) as the primary, no secondary.
    pub fn primary(pem: String) -> Self {
        Self {
            primary: Some(X509CertificateWithInfo {
                certificate: Some(pem),
                info: None,
            }),
            secondary: None,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &X509CertificateWithInfo> {
        self.primary.iter().chain(self.secondary.iter())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509CertificateWithInfo {
    /// PEM (or base64 DER) as submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<X509CertificateInfo>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509CertificateInfo {
    pub subject_name: String,
    pub sha1_thumbprint: String,
    pub sha256_thumbprint: String,
    pub issuer_name: String,
    pub not_before_utc: String,
    pub not_after_utc: String,
    pub serial_number: String,
    pub version: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaReferences {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SymmetricKeyAttestation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_key: Option<String>,
}

/// A device's registration record (`DeviceRegistrationState`, also `registrationState` in the
/// device's operation status).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationState {
    pub registration_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date_time_utc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_hub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// `assigned`, `failed` or `disabled`.
    pub status: String,
    /// `initialAssignment`, `deviceDataMigrated`, `deviceDataReset`,
    /// `reprovisionedToInitialAssignment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substatus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_date_time_utc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Data returned to the device (the custom payload it sent, echoed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetric_key: Option<Value>,
    /// Which enrollment produced the assignment (not an Azure field; for reprovisioning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_group_id: Option<String>,
}

/// What a device's register or poll request gets back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    pub operation_id: String,
    /// `assigning`, `assigned` or `failed`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_state: Option<RegistrationState>,
}

/// The body of a device's register request: one type for identityd, which sends it, and the
/// device endpoints here, which parse it.
pub use hub_wire::dps::DeviceRegistration;

/// The registration id rules of the device API ([`pki::names::check_registration_id`]: up to
/// 128 letters, digits and `- . _ :`, starting and ending with a letter or digit).
/// Case-insensitive (stored lowercase).
pub fn check_registration_id(id: &str) -> Result<(), String> {
    pki::names::check_registration_id(id).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn enrollments_round_trip_in_the_azure_shape() {
        let doc = json!({
            "registrationId": "dev-1",
            "deviceId": "dev-1",
            "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "a", "secondaryKey": "b"}},
            "capabilities": {"iotEdge": true},
            "initialTwin": {"tags": {"site": "x"}, "properties": {"desired": {"rate": 5}}},
            "provisioningStatus": "disabled",
            "reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": false},
            "allocationPolicy": "hashed",
            "iotHubs": ["hub1"]
        });
        let e: IndividualEnrollment = serde_json::from_value(doc.clone()).unwrap();
        assert!(e.settings.capabilities.iot_edge);
        assert_eq!(e.settings.provisioning_status, ProvisioningStatus::Disabled);
        assert!(!e.settings.reprovision_policy.unwrap().migrate_device_data);
        assert_eq!(serde_json::to_value(&e).unwrap(), doc);
        let g: EnrollmentGroup = serde_json::from_value(json!({
            "enrollmentGroupId": "g",
            "attestation": {"type": "x509", "x509": {"caReferences": {"primary": "root"}}}
        }))
        .unwrap();
        assert_eq!(g.settings.provisioning_status, ProvisioningStatus::Enabled);
    }

    #[test]
    fn built_groups_are_the_groups_their_json_reads_as() {
        let by_ref = EnrollmentGroup::new(
            "g",
            AttestationMechanism::x509(X509Attestation::ca_reference("root")),
        );
        let json = json!({"enrollmentGroupId": "g",
            "attestation": {"type": "x509", "x509": {"caReferences": {"primary": "root"}}}});
        assert_eq!(by_ref, serde_json::from_value(json).unwrap());
        let inline = EnrollmentGroup::new(
            "b",
            AttestationMechanism::x509(X509Attestation::signing_certificate("PEM".into())),
        );
        let json = json!({"enrollmentGroupId": "b", "attestation": {"type": "x509",
            "x509": {"signingCertificates": {"primary": {"certificate": "PEM"}}}}});
        assert_eq!(inline, serde_json::from_value(json).unwrap());
    }

    #[test]
    fn registration_ids() {
        assert!(check_registration_id("sn-007:a.b_c").is_ok());
        for bad in ["", "-a", "a-", "a b", "a/b", &"x".repeat(129)] {
            assert!(check_registration_id(bad).is_err(), "{bad}");
        }
    }
}
