//! CA certificates: upload, generate a verification code, verify by proof of possession.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::{Target, admit, if_match, json, json_body};
use crate::Hub;
use crate::config::Right;
use ferrohub_runtime::cas::CaDescription;
use ferrohub_runtime::error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

pub async fn list(State(hub): State<Arc<Hub>>, uri: Uri, headers: HeaderMap) -> Result<Response> {
    admit(&hub, &uri, &headers, Right::RegistryRead, Target::Hub)?;
    let all: Vec<CaDescription> = hub.cas.list()?.iter().map(CaDescription::from).collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "value": all })))
}

pub async fn get(
    State(hub): State<Arc<Hub>>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response> {
    admit(&hub, &uri, &headers, Right::RegistryRead, Target::Hub)?;
    Ok(json(
        StatusCode::OK,
        &CaDescription::from(&hub.cas.get(&name)?),
    ))
}

/// Body: `{"properties": {"certificate": "<PEM or base64 DER>", "isVerified": false}}`
/// (a top-level `certificate` is accepted too).
pub async fn put(
    State(hub): State<Arc<Hub>>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    admit(&hub, &uri, &headers, Right::RegistryWrite, Target::Hub)?;
    let (cert, verified) = ferrohub_runtime::cas::upload_request(&json_body(&body)?)?;
    let record = hub
        .cas
        .upload(&name, &cert, verified, &if_match(&headers))?;
    Ok(json(StatusCode::OK, &CaDescription::from(&record)))
}

pub async fn delete(
    State(hub): State<Arc<Hub>>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response> {
    admit(&hub, &uri, &headers, Right::RegistryWrite, Target::Hub)?;
    hub.cas.delete(&name, &if_match(&headers))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn generate_code(
    State(hub): State<Arc<Hub>>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response> {
    admit(&hub, &uri, &headers, Right::RegistryWrite, Target::Hub)?;
    let (record, code) = hub
        .cas
        .generate_verification_code(&name, &if_match(&headers))?;
    let mut desc = CaDescription::from(&record);
    desc.properties.verification_code = Some(code);
    Ok(json(StatusCode::OK, &desc))
}

/// Body: `{"certificate": "<PEM of the verification certificate>"}`.
pub async fn verify(
    State(hub): State<Arc<Hub>>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    admit(&hub, &uri, &headers, Right::RegistryWrite, Target::Hub)?;
    let proof = ferrohub_runtime::cas::verify_request(&json_body(&body)?)?;
    let record = hub.cas.verify(&name, &if_match(&headers), &proof)?;
    Ok(json(StatusCode::OK, &CaDescription::from(&record)))
}
