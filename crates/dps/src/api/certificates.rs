//! CA certificates with proof of possession, for X.509 enrollment groups (`caReferences`).
//! The same flow and shapes as the hub's (upload, verification code, verify).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ferrohub_runtime::cas::CaDescription;

use super::{admit, if_match, json, json_body};
use crate::Dps;
use crate::config::Right;
use crate::error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

pub async fn list(State(dps): State<Arc<Dps>>, headers: HeaderMap) -> Result<Response> {
    admit(&dps, &headers, Right::ServiceConfig)?;
    let all: Vec<CaDescription> = dps.cas.list()?.iter().map(CaDescription::from).collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "value": all })))
}

pub async fn get(
    State(dps): State<Arc<Dps>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    admit(&dps, &headers, Right::ServiceConfig)?;
    Ok(json(
        StatusCode::OK,
        &CaDescription::from(&dps.cas.get(&name)?),
    ))
}

pub async fn put(
    State(dps): State<Arc<Dps>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    admit(&dps, &headers, Right::ServiceConfig)?;
    let (cert, verified) = ferrohub_runtime::cas::upload_request(&json_body(&body)?)?;
    let record = dps
        .cas
        .upload(&name, &cert, verified, &if_match(&headers))?;
    Ok(json(StatusCode::OK, &CaDescription::from(&record)))
}

pub async fn delete(
    State(dps): State<Arc<Dps>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    admit(&dps, &headers, Right::ServiceConfig)?;
    dps.cas.delete(&name, &if_match(&headers))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn generate_code(
    State(dps): State<Arc<Dps>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    admit(&dps, &headers, Right::ServiceConfig)?;
    let (record, code) = dps
        .cas
        .generate_verification_code(&name, &if_match(&headers))?;
    let mut desc = CaDescription::from(&record);
    desc.properties.verification_code = Some(code);
    Ok(json(StatusCode::OK, &desc))
}

pub async fn verify(
    State(dps): State<Arc<Dps>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    admit(&dps, &headers, Right::ServiceConfig)?;
    let proof = ferrohub_runtime::cas::verify_request(&json_body(&body)?)?;
    let record = dps.cas.verify(&name, &if_match(&headers), &proof)?;
    Ok(json(StatusCode::OK, &CaDescription::from(&record)))
}
