//! certd's request and answer bodies (aziot certd `2020-09-01`).

use serde::{Deserialize, Serialize};

/// `POST /certificates`: issue `certId` for `csr`, by `issuer` (self-signed without one).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateCertRequest {
    pub cert_id: String,
    pub csr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<IssuerRef>,
}

/// The issuing certificate. certd accepts `privateKeyHandle` (any JSON; clients send the keyd
/// handle as a string) and ignores it: the issuer's key is the key pair named like `certId`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    pub cert_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_handle: Option<serde_json::Value>,
}

/// `PUT /certificates/{id}`: import a PEM chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportCertRequest {
    pub pem: String,
}

/// The answer of `POST /certificates`, `PUT` and `GET /certificates/{id}`: the PEM chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PemResponse {
    pub pem: String,
}
