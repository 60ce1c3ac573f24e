//! `GET`/`PUT /configuration/auth`: device and module SAS authentication switched off and on
//! while the hub runs, kept in the registry across restarts (see [`crate::auth_switch`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;

use super::{Target, admit, json, json_body};
use crate::Hub;
use crate::config::Right;
use ferrohub_runtime::error::ApiError;
use hub_wire::AuthPatch;

/// `{"disableDeviceSas": bool, "disableModuleSas": bool}` as in force now.
pub async fn get_auth(
    State(hub): State<Arc<Hub>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admit(&hub, &uri, &headers, Right::RegistryRead, Target::Hub)?;
    Ok(json(StatusCode::OK, &hub.auth.state()))
}

/// Body: `{"disableDeviceSas": true}` and/or `{"disableModuleSas": false}`; answers the new
/// state. Needs `RegistryWrite` (an owner policy). New SAS connections are refused (or accepted)
/// at once; connections already open keep going until they reconnect.
pub async fn put_auth(
    State(hub): State<Arc<Hub>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admit(&hub, &uri, &headers, Right::RegistryWrite, Target::Hub)?;
    let patch: AuthPatch = json_body(&body)?;
    Ok(json(StatusCode::OK, &hub.auth.set(patch)?))
}
