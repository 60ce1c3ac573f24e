//! identityd's use of keyd: key handles for the device and module keys, derived module keys, and
//! SAS tokens signed inside keyd (the device key never enters identityd).

use crate::client::{UdsClient, UdsError};
use crate::wire::keyd::{
    B64, CreateKeyRequest, DeriveRequest, ExportResponse, HandleRequest, KeyHandleResponse,
    SignRequest, SignResponse,
};

const KEYD_API: &str = "api-version=2020-09-01";
/// The master key module keys are derived from (aziot's id).
pub const MASTER_KEY: &str = "aziot_identityd_master_id";

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
        let path = format!("/key/{}?{KEYD_API}", iot_auth::percent_encode(id));
        let v: KeyHandleResponse = self.keyd.get(&path).await?;
        Ok(v.key_handle)
    }

    /// The handle of an existing key pair.
    pub async fn key_pair_handle(&self, id: &str) -> Result<String, UdsError> {
        let path = format!("/keypair/{}?{KEYD_API}", iot_auth::percent_encode(id));
        let v: KeyHandleResponse = self.keyd.get(&path).await?;
        Ok(v.key_handle)
    }

    /// The master key's handle, created on first use.
    pub async fn master_handle(&self) -> Result<String, UdsError> {
        let body = CreateKeyRequest {
            key_bytes: None,
            key_id: MASTER_KEY.to_owned(),
            usage: "derive,sign".to_owned(),
        };
        let v: KeyHandleResponse = self.keyd.post(&format!("/key?{KEYD_API}"), &body).await?;
        Ok(v.key_handle)
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
        let body = DeriveRequest {
            base_key_handle: master.into(),
            derivation_data: B64(data.into_bytes()),
            owner_uid: owner,
        };
        let v: KeyHandleResponse = self
            .keyd
            .post(&format!("/derivedkey?{KEYD_API}"), &body)
            .await?;
        Ok(v.key_handle)
    }

    /// The bytes of a derived key, base64 (what the hub stores as the module's SAS key).
    pub async fn export(&self, handle: &str) -> Result<String, UdsError> {
        let v: ExportResponse = self
            .keyd
            .post(
                &format!("/derivedkey/export?{KEYD_API}"),
                &HandleRequest::new(handle),
            )
            .await?;
        Ok(v.key)
    }

    /// HMAC-SHA256 of `message` with the key behind `handle`, base64.
    pub async fn sign(&self, handle: &str, message: &[u8]) -> Result<String, UdsError> {
        let body = SignRequest::hmac_sha256(handle, message);
        let v: SignResponse = self.keyd.post(&format!("/sign?{KEYD_API}"), &body).await?;
        Ok(v.signature)
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
