//! keyd's request and answer bodies (aziot keyd `2020-09-01`). Binary values are standard base64
//! ([`B64`]); handles are borrowed from the request body where the daemon can.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// Bytes carried as standard base64 in JSON (decoding failures are parse failures: 422).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct B64(pub Vec<u8>);

impl Serialize for B64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = B64;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<B64, E> {
                STANDARD
                    .decode(v)
                    .map(B64)
                    .map_err(|e| E::custom(format!("invalid base64: {e}")))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// The answer naming a key: `POST /key`, `GET /key/{id}`, `POST /keypair`, `GET /keypair/{id}`,
/// `POST /derivedkey`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyHandleResponse {
    pub key_handle: String,
}

/// A body that is just a handle: `DELETE /key`, `DELETE /keypair`, `POST /parameters/{name}`,
/// `POST /derivedkey/export`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandleRequest<'a> {
    #[serde(borrow)]
    pub key_handle: Cow<'a, str>,
}

impl<'a> HandleRequest<'a> {
    pub fn new(key_handle: &'a str) -> Self {
        Self {
            key_handle: Cow::Borrowed(key_handle),
        }
    }
}

/// `POST /key`: create a symmetric key, or import `keyBytes`. `usage` is a comma list of
/// `derive`, `sign` and `encrypt`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateKeyRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_bytes: Option<B64>,
    pub key_id: String,
    pub usage: String,
}

/// `POST /keypair`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateKeyPairRequest {
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_algorithms: Option<String>,
}

/// `POST /keypair/{to}`: move key pair `from` to `to`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveKeyPairRequest {
    pub from: String,
}

/// The answer of `POST /parameters/{name}`: a name (`algorithm`) or base64 bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParameterResponse {
    pub value: String,
}

/// `POST /derivedkey`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeriveRequest<'a> {
    #[serde(borrow)]
    pub base_key_handle: Cow<'a, str>,
    pub derivation_data: B64,
    /// The uid the derived handle is for (ferrohub's addition); the caller's by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_uid: Option<u32>,
}

/// The answer of `POST /derivedkey/export`: the key's bytes, base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportResponse {
    pub key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignAlgorithm {
    #[serde(rename = "ECDSA")]
    Ecdsa,
    #[serde(rename = "HMAC-SHA256")]
    HmacSha256,
}

/// ECDSA signs `digest`, HMAC-SHA256 signs `message`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SignParameters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<B64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<B64>,
}

/// `POST /sign`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignRequest<'a> {
    pub algorithm: SignAlgorithm,
    #[serde(borrow)]
    pub key_handle: Cow<'a, str>,
    #[serde(default)]
    pub parameters: SignParameters,
}

impl<'a> SignRequest<'a> {
    /// HMAC-SHA256 of `message` with a symmetric (or derived) key.
    pub fn hmac_sha256(key_handle: &'a str, message: &[u8]) -> Self {
        Self {
            algorithm: SignAlgorithm::HmacSha256,
            key_handle: Cow::Borrowed(key_handle),
            parameters: SignParameters {
                digest: None,
                message: Some(B64(message.to_vec())),
            },
        }
    }

    /// ECDSA over `digest` with a key pair.
    pub fn ecdsa(key_handle: &'a str, digest: &[u8]) -> Self {
        Self {
            algorithm: SignAlgorithm::Ecdsa,
            key_handle: Cow::Borrowed(key_handle),
            parameters: SignParameters {
                digest: Some(B64(digest.to_vec())),
                message: None,
            },
        }
    }
}

/// The answer of `POST /sign`: the signature, base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignResponse {
    pub signature: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EncryptAlgorithm {
    #[serde(rename = "AEAD")]
    Aead,
    #[serde(rename = "RSA-PKCS1")]
    RsaPkcs1,
    #[serde(rename = "RSA-NO-PADDING")]
    RsaNoPadding,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AeadParameters {
    #[serde(default)]
    pub aad: B64,
    pub iv: B64,
}

/// `POST /encrypt` (with `plaintext`) and `POST /decrypt` (with `ciphertext`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CryptRequest<'a> {
    pub algorithm: EncryptAlgorithm,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext: Option<B64>,
    #[serde(borrow)]
    pub key_handle: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<AeadParameters>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<B64>,
}

/// The answer of `POST /encrypt`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EncryptResponse {
    pub ciphertext: B64,
}

/// The answer of `POST /decrypt`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecryptResponse {
    pub plaintext: B64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_request_is_aziot_json() {
        let hmac = SignRequest::hmac_sha256("h", b"msg");
        assert_eq!(
            serde_json::to_string(&hmac).unwrap_or_default(),
            r#"{"algorithm":"HMAC-SHA256","keyHandle":"h","parameters":{"message":"bXNn"}}"#
        );
        let back: SignRequest<'_> = serde_json::from_str(
            r#"{"keyHandle":"k","algorithm":"ECDSA","parameters":{"digest":"AAE="}}"#,
        )
        .expect("parses");
        assert_eq!(back.algorithm, SignAlgorithm::Ecdsa);
        assert_eq!(back.parameters.digest, Some(B64(vec![0, 1])));
        assert!(serde_json::from_str::<B64>("\"not base64!\"").is_err());
    }

    #[test]
    fn optional_fields_are_left_out() {
        let derive = DeriveRequest {
            base_key_handle: "m".into(),
            derivation_data: B64(b"a".to_vec()),
            owner_uid: None,
        };
        assert_eq!(
            serde_json::to_string(&derive).unwrap_or_default(),
            r#"{"baseKeyHandle":"m","derivationData":"YQ=="}"#
        );
        let key = CreateKeyRequest {
            key_bytes: None,
            key_id: "k".into(),
            usage: "derive,sign".into(),
        };
        assert_eq!(
            serde_json::to_string(&key).unwrap_or_default(),
            r#"{"keyId":"k","usage":"derive,sign"}"#
        );
    }
}
