//! identityd's HTTP API (aziot's paths and JSON): identities of the caller, the device and its
//! modules, provisioning info, reprovisioning and the trust bundle. The bodies are
//! [`crate::wire::identityd`]'s.

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use tracing::warn;

use super::auth::{AuthId, Operation, authenticate, authorize, root_administers};
use super::device::{DeviceAuth, DeviceInfo, ProvisionError};
use super::modules::{ModuleError, ModuleRecord};
use super::{Identityd, Trigger};
use crate::http::{self, HttpError, json};
use crate::uds::Caller;
use crate::wire::identityd::{
    AZIOT, AuthInfo, AuthType, CreateModuleRequest, Identity, IdentityList, IdentitySpec,
    PayloadUri, ProvisioningInfo, TrustBundle,
};

const VERSIONS: [&str; 3] = ["2020-09-01", "2021-12-01", "2022-08-01"];

type Result<T> = std::result::Result<T, HttpError>;
type Idd = State<Arc<Identityd>>;

pub fn router(idd: Arc<Identityd>) -> Router {
    let m = http::method_not_allowed;
    Router::new()
        .route("/identities/identity", get(caller_identity).fallback(m))
        .route("/identities/device", post(device_identity).fallback(m))
        .route(
            "/identities/device/reprovision",
            post(reprovision).fallback(m),
        )
        .route("/identities/provisioning", get(provisioning).fallback(m))
        .route(
            "/identities/modules",
            get(list_modules).post(create_module).fallback(m),
        )
        .route(
            "/identities/modules/{id}",
            get(get_module)
                .put(update_module)
                .delete(delete_module)
                .fallback(m),
        )
        .route("/trust-bundle", get(trust_bundle).fallback(m))
        .route("/reload", post(reload).fallback(m))
        .fallback(http::not_found)
        .with_state(idd)
}

/// The api-version check and the operation check, with the refusal logged.
fn admit(idd: &Identityd, uri: &Uri, caller: Caller, op: &Operation) -> Result<AuthId> {
    http::api_version(uri, &VERSIONS)?;
    let who = authenticate(caller.uid, &idd.config().principals);
    if authorize(&who, op) || root_administers(caller.uid, op) {
        Ok(who)
    } else {
        warn!(uid = caller.uid, operation = ?op, "Refusing an identityd request: not authorized");
        Err(HttpError::unauthorized(format!(
            "user {} is not authorized to perform {op:?}",
            caller.uid
        )))
    }
}

fn device(idd: &Identityd) -> Result<DeviceInfo> {
    idd.device()
        .ok_or_else(|| HttpError::bad_request("device not found: the device is not provisioned"))
}

fn provision_error(e: ProvisionError) -> HttpError {
    match e {
        ProvisionError::Unprovisioned => HttpError::bad_request(e.to_string()),
        other => HttpError::new(StatusCode::NOT_FOUND, other.to_string()),
    }
}

fn module_error(e: ModuleError) -> HttpError {
    match e {
        ModuleError::NotFound(m) => HttpError::bad_request(format!("module not found: {m}")),
        ModuleError::Cloud(e) => provision_error(e),
        ModuleError::Hub(m) => HttpError::new(StatusCode::NOT_FOUND, format!("hub: {m}")),
    }
}

fn key_error(e: crate::client::UdsError) -> HttpError {
    HttpError::new(StatusCode::NOT_FOUND, format!("keyd: {e}"))
}

/// The `type` query parameter: only `aziot` identities (local identities are not supported).
fn check_type(t: Option<String>) -> Result<()> {
    match t.as_deref() {
        Some("aziot") => Ok(()),
        None => Err(HttpError::bad_request(
            "parameter \"type\" has an invalid value\ncaused by: missing parameter",
        )),
        Some(other) => Err(HttpError::bad_request(format!("invalid type: {other}"))),
    }
}

fn spec(d: &DeviceInfo, auth: Option<AuthInfo>) -> IdentitySpec {
    IdentitySpec {
        auth,
        device_id: d.device_id.clone(),
        gateway_host: d.local_gateway_hostname.clone(),
        gen_id: None,
        hub_name: d.hub_name.clone(),
        module_id: None,
    }
}

fn aziot(spec: IdentitySpec) -> Identity {
    Identity {
        spec,
        id_type: AZIOT.to_owned(),
    }
}

/// The module's identity for `caller`, with a key handle only the caller's uid (and root) may use.
async fn module_identity(
    idd: &Identityd,
    d: &DeviceInfo,
    m: &ModuleRecord,
    caller: Caller,
) -> Result<Identity> {
    let gen_id = m.generation_id.clone().unwrap_or_default();
    let key_handle = idd
        .keys
        .module_key_handle(&m.module_id, &gen_id, "primary", Some(caller.uid))
        .await
        .map_err(key_error)?;
    let auth = AuthInfo {
        cert_id: None,
        key_handle,
        auth_type: AuthType::Sas,
    };
    Ok(aziot(IdentitySpec {
        gen_id: Some(gen_id),
        module_id: Some(m.module_id.clone()),
        ..spec(d, Some(auth))
    }))
}

async fn device_identity_of(idd: &Identityd, d: &DeviceInfo) -> Result<Identity> {
    let auth = match idd.auth() {
        Some(DeviceAuth::Sas { key_id }) => AuthInfo {
            cert_id: None,
            key_handle: idd.keys.key_handle(&key_id).await.map_err(key_error)?,
            auth_type: AuthType::Sas,
        },
        Some(DeviceAuth::X509 { cert_id, key_id }) => AuthInfo {
            key_handle: idd.keys.key_pair_handle(&key_id).await.map_err(key_error)?,
            cert_id: Some(cert_id),
            auth_type: AuthType::X509,
        },
        None => {
            return Err(HttpError::bad_request(
                "device not found: the device is not provisioned",
            ));
        }
    };
    Ok(aziot(spec(d, Some(auth))))
}

async fn caller_identity(
    State(idd): Idd,
    Extension(caller): Extension<Caller>,
    uri: Uri,
) -> Result<Response> {
    http::api_version(&uri, &VERSIONS)?;
    let who = authenticate(caller.uid, &idd.config().principals);
    if authorize(&who, &Operation::GetDevice) {
        return Ok(json(
            StatusCode::OK,
            &device_identity_of(&idd, &device(&idd)?).await?,
        ));
    }
    if let AuthId::HostProcess(p) = &who
        && authorize(&who, &Operation::GetModule(p.name.clone()))
    {
        let d = device(&idd)?;
        let m = idd.get_module(&d, &p.name).await.map_err(module_error)?;
        return Ok(json(
            StatusCode::OK,
            &module_identity(&idd, &d, &m, caller).await?,
        ));
    }
    warn!(
        uid = caller.uid,
        "Refusing GET /identities/identity: no principal for this uid"
    );
    Err(HttpError::unauthorized(format!(
        "user {} is not authorized to read an identity",
        caller.uid
    )))
}

async fn device_identity(
    State(idd): Idd,
    Extension(caller): Extension<Caller>,
    uri: Uri,
) -> Result<Response> {
    admit(&idd, &uri, caller, &Operation::GetDevice)?;
    Ok(json(
        StatusCode::OK,
        &device_identity_of(&idd, &device(&idd)?).await?,
    ))
}

async fn reprovision(
    State(idd): Idd,
    Extension(caller): Extension<Caller>,
    uri: Uri,
) -> Result<Response> {
    admit(&idd, &uri, caller, &Operation::ReprovisionDevice)?;
    idd.reprovision(Trigger::Api)
        .await
        .map_err(provision_error)?;
    Ok(http::no_content())
}

/// No authorization, as in aziot; keys are snake_case here.
async fn provisioning(State(idd): Idd, uri: Uri) -> Result<Response> {
    let v = http::api_version(&uri, &VERSIONS)?;
    if v == "2020-09-01" {
        return Err(HttpError::not_found());
    }
    use crate::config::daemons::{DpsAttestation, ManualAuth, Provisioning};
    let body = match idd.config().provisioning {
        Provisioning::None => ProvisioningInfo::None,
        Provisioning::Manual { authentication, .. } => ProvisioningInfo::Manual {
            auth: match authentication {
                ManualAuth::Sas { .. } => "sas",
                ManualAuth::X509 { .. } => "x509",
            }
            .to_owned(),
        },
        Provisioning::Dps {
            global_endpoint,
            scope_id,
            payload,
            attestation,
        } => {
            let (auth, registration_id) = match attestation {
                DpsAttestation::SymmetricKey {
                    registration_id, ..
                } => ("symmetric_key", Some(registration_id)),
                DpsAttestation::X509 {
                    registration_id, ..
                } => ("x509", registration_id),
            };
            ProvisioningInfo::Dps {
                auth: auth.to_owned(),
                endpoint: global_endpoint,
                scope_id,
                registration_id,
                payload: payload.map(|p| PayloadUri {
                    uri: format!("file://{}", p.display()),
                }),
            }
        }
    };
    Ok(json(StatusCode::OK, &body))
}

async fn list_modules(
    State(idd): Idd,
    Extension(caller): Extension<Caller>,
    uri: Uri,
) -> Result<Response> {
    admit(&idd, &uri, caller, &Operation::GetAllHubModules)?;
    check_type(http::query_param(&uri, "type"))?;
    let d = device(&idd)?;
    let modules = idd.list_modules(&d).await.map_err(module_error)?;
    let identities = modules
        .iter()
        .map(|m| {
            aziot(IdentitySpec {
                gen_id: m.generation_id.clone(),
                module_id: Some(m.module_id.clone()),
                ..spec(&d, None)
            })
        })
        .collect();
    Ok(json(StatusCode::OK, &IdentityList { identities }))
}

async fn create_module(
    State(idd): Idd,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    body: Bytes,
) -> Result<Response> {
    admit(&idd, &uri, caller, &Operation::CreateModule)?;
    let req: CreateModuleRequest = http::body(&body)?;
    check_type(req.id_type)?;
    let module = req
        .module_id
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| HttpError::bad_request("moduleId must not be empty"))?;
    let d = device(&idd)?;
    let m = idd.create_module(&d, module).await.map_err(module_error)?;
    Ok(json(
        StatusCode::OK,
        &module_identity(&idd, &d, &m, caller).await?,
    ))
}

fn module_id(id: &str) -> Result<&str> {
    Some(id.trim())
        .filter(|m| !m.is_empty())
        .ok_or_else(|| HttpError::bad_request("module id must not be empty"))
}

async fn get_module(
    State(idd): Idd,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Response> {
    admit(&idd, &uri, caller, &Operation::GetModule(id.clone()))?;
    check_type(http::query_param(&uri, "type"))?;
    let d = device(&idd)?;
    let m = idd
        .get_module(&d, module_id(&id)?)
        .await
        .map_err(module_error)?;
    Ok(json(
        StatusCode::OK,
        &module_identity(&idd, &d, &m, caller).await?,
    ))
}

async fn update_module(
    State(idd): Idd,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Response> {
    admit(&idd, &uri, caller, &Operation::UpdateModule)?;
    check_type(http::query_param(&uri, "type"))?;
    let d = device(&idd)?;
    let m = idd
        .update_module(&d, module_id(&id)?)
        .await
        .map_err(module_error)?;
    Ok(json(
        StatusCode::OK,
        &module_identity(&idd, &d, &m, caller).await?,
    ))
}

async fn delete_module(
    State(idd): Idd,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Response> {
    admit(&idd, &uri, caller, &Operation::DeleteModule)?;
    check_type(http::query_param(&uri, "type"))?;
    let d = device(&idd)?;
    idd.delete_module(&d, module_id(&id)?)
        .await
        .map_err(module_error)?;
    Ok(http::no_content())
}

/// The CAs this device trusts for the hub (certd's trust bundle), for modules' TLS.
async fn trust_bundle(
    State(idd): Idd,
    Extension(caller): Extension<Caller>,
    uri: Uri,
) -> Result<Response> {
    admit(&idd, &uri, caller, &Operation::GetTrustBundle)?;
    let pem = idd.cloud.trust_bundle_pem().await.map_err(key_error)?;
    Ok(json(StatusCode::OK, &TrustBundle { certificate: pem }))
}

/// `POST /reload` (ferrohub's addition for `ferrohub config apply`): re-read the config files and
/// reconcile. root and the host daemon only.
async fn reload(
    State(idd): Idd,
    Extension(caller): Extension<Caller>,
    uri: Uri,
) -> Result<Response> {
    admit(&idd, &uri, caller, &Operation::ReprovisionDevice)?;
    idd.reload_from_disk()
        .await
        .map_err(|e| HttpError::new(StatusCode::NOT_FOUND, e))?;
    Ok(http::no_content())
}
