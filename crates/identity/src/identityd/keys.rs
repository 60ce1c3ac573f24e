//! identityd's use of keyd: key handles for the device and module keys, derived module keys, and
//! SAS tokens signed inside keyd (the device key never enters identityd).

use base64::Engine as _;
use hyper::Method;
use serde_json::{Value, json};

use crate::client::{UdsClient, UdsError};

const KEYD_API: &str = "api-version=2020-09-01";
/// The master key module keys are derived from (aziot's id).
pub const MASTER_KEY: &str = "aziot_identityd_master_id";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn field(v: &Value, name: &str) -> Result<String, UdsError> {
    v[name]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| UdsError::Http {
            path: "keyd".into(),
            message: format!("answer without {name}: {v}"),
        })
}

/// keyd, as identityd uses it.
#[derive(Clone, Debug)]
pub struct Keys {
    keyd: UdsClient,
}

impl Keys {
    pub fn new(keyd: UdsClient) -> Self {
        Self { keyd }
    }

    /// The handle of an existing symmetric key (the device key is preloaded, never created here).
    pub async fn key_handle(&self, id: &str) -> Result<String, UdsError> {
        let v = self
            .keyd
            .call(
                Method::GET,
                &format!("/key/{}?{KEYD_API}", iot_auth::percent_encode(id)),
                None,
            )
            .await?;
        field(&v, "keyHandle")
    }

    /// The handle of an existing key pair.
    pub async fn key_pair_handle(&self, id: &str) -> Result<String, UdsError> {
        let v = self
            .keyd
            .call(
                Method::GET,
                &format!("/keypair/{}?{KEYD_API}", iot_auth::percent_encode(id)),
                None,
            )
            .await?;
        field(&v, "keyHandle")
    }

    /// The master key's handle, created on first use.
    pub async fn master_handle(&self) -> Result<String, UdsError> {
        let body = json!({"keyId": MASTER_KEY, "usage": "derive,sign"});
        let v = self
            .keyd
            .call(Method::POST, &format!("/key?{KEYD_API}"), Some(&body))
            .await?;
        field(&v, "keyHandle")
    }

    /// The derived key handle for a module: `HMAC(master, "{module}:{generationId}:{which}")`,
    /// usable only by uid `owner` (and root) when given, else by identityd's own uid.
    pub async fn module_key_handle(
        &self,
        module: &str,
        generation_id: &str,
        which: &str,
        owner: Option<u32>,
    ) -> Result<String, UdsError> {
        let master = self.master_handle().await?;
        let data = format!("{module}:{generation_id}:{which}");
        let mut body = json!({"baseKeyHandle": master, "derivationData": b64(data.as_bytes())});
        if let Some(uid) = owner {
            body["ownerUid"] = json!(uid);
        }
        let v = self
            .keyd
            .call(
                Method::POST,
                &format!("/derivedkey?{KEYD_API}"),
                Some(&body),
            )
            .await?;
        field(&v, "keyHandle")
    }

    /// The bytes of a derived key, base64 (what the hub stores as the module's SAS key).
    pub async fn export(&self, handle: &str) -> Result<String, UdsError> {
        let body = json!({"keyHandle": handle});
        let v = self
            .keyd
            .call(
                Method::POST,
                &format!("/derivedkey/export?{KEYD_API}"),
                Some(&body),
            )
            .await?;
        field(&v, "key")
    }

    /// HMAC-SHA256 of `message` with the key behind `handle`, base64.
    pub async fn sign(&self, handle: &str, message: &[u8]) -> Result<String, UdsError> {
        let body = json!({"keyHandle": handle, "algorithm": "HMAC-SHA256", "parameters": {"message": b64(message)}});
        let v = self
            .keyd
            .call(Method::POST, &format!("/sign?{KEYD_API}"), Some(&body))
            .await?;
        field(&v, "signature")
    }

    /// `SharedAccessSignature sr=…&sig=…&se=…[&skn=…]` for `resource`, signed in keyd.
    pub async fn sas_token(
        &self,
        handle: &str,
        resource: &str,
        expiry: u64,
        key_name: Option<&str>,
    ) -> Result<String, UdsError> {
        let sr = iot_auth::percent_encode(&resource.to_lowercase());
        let sig = self
            .sign(handle, format!("{sr}\n{expiry}").as_bytes())
            .await?;
        let mut token = format!(
            "SharedAccessSignature sr={sr}&sig={}&se={expiry}",
            iot_auth::percent_encode(&sig)
        );
        if let Some(k) = key_name {
            token.push_str("&skn=");
            token.push_str(k);
        }
        Ok(token)
    }
}
