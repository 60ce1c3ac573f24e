//! Enrollments, enrollment groups and registration records (service API, 2021-10-01 shape).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{admit, if_match, json, json_body};
use crate::Dps;
use crate::config::Right;
use crate::error::ApiError;
use crate::model::{
    EnrollmentGroup, IndividualEnrollment, ReprovisionPolicy, Settings, SymmetricKeyAttestation,
    check_registration_id,
};

type Result<T> = std::result::Result<T, ApiError>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Individual,
    Group,
}

/// Checks and completes submitted settings: keys generated, certificate info filled, defaults
/// set, etag and times stamped.
fn prepare(dps: &Dps, s: &mut Settings, existing: Option<&Settings>, kind: Kind) -> Result<()> {
    let a = &mut s.attestation;
    match a.kind.as_str() {
        "symmetricKey" => {
            let keys = a
                .symmetric_key
                .get_or_insert_with(SymmetricKeyAttestation::default);
            for k in [&mut keys.primary_key, &mut keys.secondary_key] {
                match k.as_deref() {
                    None | Some("") => *k = Some(gen_key()?),
                    Some(given) => {
                        let ok = iot_auth::sas::decode_key(given)
                            .is_ok_and(|b| (16..=64).contains(&b.len()));
                        if !ok {
                            return Err(ApiError::bad_request(
                                "symmetric keys must be base64 of 16 to 64 bytes",
                            ));
                        }
                    }
                }
            }
        }
        "x509" => prepare_x509(a, kind)?,
        "tpm" => {
            return Err(ApiError::bad_request(
                "TPM attestation is not supported by this service yet; use x509 or symmetricKey",
            ));
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "attestation type {other:?}: use x509 or symmetricKey"
            )));
        }
    }
    if let Some(p) = &s.allocation_policy
        && !matches!(p.as_str(), "hashed" | "geoLatency" | "static")
    {
        return Err(ApiError::bad_request(format!(
            "allocationPolicy {p:?}: use hashed, geoLatency or static (custom webhooks are not supported)"
        )));
    }
    let linked = dps.hubs.hostnames();
    for h in s.iot_hubs.iter().chain(s.iot_hub_host_name.iter()) {
        if !linked.iter().any(|l| l.eq_ignore_ascii_case(h)) {
            return Err(ApiError::bad_request(format!(
                "{h} is not a linked hub (linked: {})",
                linked.join(", ")
            )));
        }
    }
    if s.reprovision_policy.is_none() {
        s.reprovision_policy = Some(ReprovisionPolicy::default());
    }
    let now = ferrohub_runtime::time::rfc3339_millis(dps.clock.now());
    s.created_date_time_utc = existing
        .and_then(|e| e.created_date_time_utc.clone())
        .or_else(|| Some(now.clone()));
    s.last_updated_date_time_utc = Some(now);
    s.etag = Some(ferrohub_runtime::etag::new_etag());
    Ok(())
}

fn gen_key() -> Result<String> {
    hub_wire::model::gen_key().map_err(|e| ApiError::internal(e.to_string()))
}

fn prepare_x509(a: &mut crate::model::AttestationMechanism, kind: Kind) -> Result<()> {
    let x = a
        .x509
        .as_mut()
        .ok_or_else(|| ApiError::bad_request("x509 attestation needs an x509 object"))?;
    if kind == Kind::Individual && (x.signing_certificates.is_some() || x.ca_references.is_some()) {
        return Err(ApiError::bad_request(
            "an individual enrollment takes clientCertificates, not signing certificates or CA references",
        ));
    }
    if kind == Kind::Group && x.client_certificates.is_some() {
        return Err(ApiError::bad_request(
            "an enrollment group takes signingCertificates or caReferences, not clientCertificates",
        ));
    }
    let has_refs = x
        .ca_references
        .as_ref()
        .is_some_and(|r| r.primary.is_some() || r.secondary.is_some());
    let (certs, what) = match kind {
        Kind::Individual => (x.client_certificates.as_mut(), "clientCertificates"),
        Kind::Group => (x.signing_certificates.as_mut(), "signingCertificates"),
    };
    match certs {
        Some(certs) => {
            for slot in [&mut certs.primary, &mut certs.secondary]
                .into_iter()
                .flatten()
            {
                let pem = slot.certificate.as_deref().unwrap_or_default();
                let cert = crate::attest::parse_pem_or_der(pem).ok_or_else(|| {
                    ApiError::bad_request(format!("{what}: not a PEM or base64 DER certificate"))
                })?;
                slot.info = Some(crate::attest::certificate_info(&cert));
            }
        }
        None if kind == Kind::Group && has_refs => {}
        None => {
            return Err(ApiError::bad_request(format!(
                "x509 attestation needs {what}"
            )));
        }
    }
    Ok(())
}

pub async fn get_enrollment(
    State(dps): State<Arc<Dps>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    admit(&dps, &headers, Right::EnrollmentRead)?;
    let mut e = dps
        .store
        .get_enrollment(&id)?
        .ok_or_else(|| enrollment_not_found(&id))?;
    e.registration_state = dps.store.get_registration(&id)?;
    Ok(json(StatusCode::OK, &e))
}

fn enrollment_not_found(id: &str) -> ApiError {
    ApiError::not_found("EnrollmentNotFound", format!("no enrollment {id:?}"))
}

pub async fn put_enrollment(
    State(dps): State<Arc<Dps>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    admit(&dps, &headers, Right::EnrollmentWrite)?;
    let mut e: IndividualEnrollment = json_body(&body)?;
    check_registration_id(&id).map_err(ApiError::bad_request)?;
    if !e.registration_id.eq_ignore_ascii_case(&id) {
        return Err(ApiError::bad_request(format!(
            "registrationId {:?} is not the {id:?} of the path",
            e.registration_id
        )));
    }
    if let Some(d) = &e.device_id {
        pki::names::check_device_id(d).map_err(|err| ApiError::bad_request(err.to_string()))?;
    }
    let existing = dps.store.get_enrollment(&id)?;
    check_etag(
        &headers,
        existing.as_ref().and_then(|x| x.settings.etag.as_deref()),
        &id,
    )?;
    prepare(
        &dps,
        &mut e.settings,
        existing.as_ref().map(|x| &x.settings),
        Kind::Individual,
    )?;
    e.registration_state = None;
    dps.store.put_enrollment(&e)?;
    Ok(json(StatusCode::OK, &e))
}

/// `If-Match` with an etag must match the stored one (412 otherwise); `*` or none always passes.
fn check_etag(headers: &HeaderMap, current: Option<&str>, id: &str) -> Result<()> {
    match if_match(headers) {
        ferrohub_runtime::etag::IfMatch::Etag(e) if Some(e.as_str()) != current => {
            Err(ApiError::precondition(format!(
                "{id} has etag {}, not {e}",
                current.unwrap_or("(none: it does not exist)")
            )))
        }
        _ => Ok(()),
    }
}

pub async fn delete_enrollment(
    State(dps): State<Arc<Dps>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    admit(&dps, &headers, Right::EnrollmentWrite)?;
    let existing = dps
        .store
        .get_enrollment(&id)?
        .ok_or_else(|| enrollment_not_found(&id))?;
    check_etag(&headers, existing.settings.etag.as_deref(), &id)?;
    dps.store.delete_enrollment(&id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn enrollment_attestation(
    State(dps): State<Arc<Dps>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    admit(&dps, &headers, Right::EnrollmentRead)?;
    let e = dps
        .store
        .get_enrollment(&id)?
        .ok_or_else(|| enrollment_not_found(&id))?;
    Ok(json(StatusCode::OK, &e.settings.attestation))
}

pub async fn get_group(
    State(dps): State<Arc<Dps>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    admit(&dps, &headers, Right::EnrollmentRead)?;
    let g = dps
        .store
        .get_group(&id)?
        .ok_or_else(|| enrollment_not_found(&id))?;
    Ok(json(StatusCode::OK, &g))
}

pub async fn put_group(
    State(dps): State<Arc<Dps>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    admit(&dps, &headers, Right::EnrollmentWrite)?;
    let mut g: EnrollmentGroup = json_body(&body)?;
    check_registration_id(&id).map_err(ApiError::bad_request)?;
    if !g.enrollment_group_id.eq_ignore_ascii_case(&id) {
        return Err(ApiError::bad_request(format!(
            "enrollmentGroupId {:?} is not the {id:?} of the path",
            g.enrollment_group_id
        )));
    }
    let existing = dps.store.get_group(&id)?;
    check_etag(
        &headers,
        existing.as_ref().and_then(|x| x.settings.etag.as_deref()),
        &id,
    )?;
    prepare(
        &dps,
        &mut g.settings,
        existing.as_ref().map(|x| &x.settings),
        Kind::Group,
    )?;
    dps.store.put_group(&g)?;
    Ok(json(StatusCode::OK, &g))
}

pub async fn delete_group(
    State(dps): State<Arc<Dps>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    admit(&dps, &headers, Right::EnrollmentWrite)?;
    let existing = dps
        .store
        .get_group(&id)?
        .ok_or_else(|| enrollment_not_found(&id))?;
    check_etag(&headers, existing.settings.etag.as_deref(), &id)?;
    dps.store.delete_group(&id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn group_attestation(
    State(dps): State<Arc<Dps>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    admit(&dps, &headers, Right::EnrollmentRead)?;
    let g = dps
        .store
        .get_group(&id)?
        .ok_or_else(|| enrollment_not_found(&id))?;
    Ok(json(StatusCode::OK, &g.settings.attestation))
}

pub async fn get_registration(
    State(dps): State<Arc<Dps>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    admit(&dps, &headers, Right::RegistrationStatusRead)?;
    let r = dps.store.get_registration(&id)?.ok_or_else(|| {
        ApiError::not_found(
            "DeviceRegistrationNotFound",
            format!("no registration {id:?}"),
        )
    })?;
    Ok(json(StatusCode::OK, &r))
}

pub async fn delete_registration(
    State(dps): State<Arc<Dps>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    admit(&dps, &headers, Right::RegistrationStatusWrite)?;
    if !dps.store.delete_registration(&id)? {
        return Err(ApiError::not_found(
            "DeviceRegistrationNotFound",
            format!("no registration {id:?}"),
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn query_enrollments(
    State(dps): State<Arc<Dps>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    admit(&dps, &headers, Right::EnrollmentRead)?;
    check_query(&body)?;
    let all: Vec<Value> = dps
        .store
        .list_enrollments()?
        .iter()
        .filter_map(|e| serde_json::to_value(e).ok())
        .collect();
    page(&headers, &all, "enrollment")
}

pub async fn query_groups(
    State(dps): State<Arc<Dps>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    admit(&dps, &headers, Right::EnrollmentRead)?;
    check_query(&body)?;
    let all: Vec<Value> = dps
        .store
        .list_groups()?
        .iter()
        .filter_map(|g| serde_json::to_value(g).ok())
        .collect();
    page(&headers, &all, "enrollmentGroup")
}

pub async fn query_registrations(
    State(dps): State<Arc<Dps>>,
    Path(group): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    admit(&dps, &headers, Right::RegistrationStatusRead)?;
    let all: Vec<Value> = dps
        .store
        .list_registrations()?
        .iter()
        .filter(|r| {
            r.enrollment_group_id
                .as_deref()
                .is_some_and(|g| g.eq_ignore_ascii_case(&group))
        })
        .filter_map(|r| serde_json::to_value(r).ok())
        .collect();
    page(&headers, &all, "deviceRegistration")
}

/// The query language of the service is `*` (everything); anything else is refused clearly.
fn check_query(body: &Bytes) -> Result<()> {
    if body.is_empty() {
        return Ok(());
    }
    let v: Value = json_body(body)?;
    match v.get("query").and_then(Value::as_str).map(str::trim) {
        None | Some("*") | Some("") => Ok(()),
        Some(q)
            if q.eq_ignore_ascii_case("SELECT * FROM enrollments")
                || q.eq_ignore_ascii_case("SELECT * FROM enrollmentGroups") =>
        {
            Ok(())
        }
        Some(q) => Err(ApiError::bad_request(format!(
            "query {q:?}: only \"*\" is supported"
        ))),
    }
}

/// One page by `x-ms-max-item-count` / `x-ms-continuation`; the continuation header only when
/// more pages exist (the Node SDK loops while it is present).
fn page(headers: &HeaderMap, all: &[Value], item_type: &'static str) -> Result<Response> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let size = header("x-ms-max-item-count")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(100)
        .min(1000);
    let start = match header("x-ms-continuation") {
        Some(c) if !c.is_empty() => c
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request("bad x-ms-continuation"))?,
        _ => 0,
    };
    let end = (start + size).min(all.len());
    let mut resp = json(StatusCode::OK, &all.get(start..end).unwrap_or_default());
    resp.headers_mut()
        .insert("x-ms-item-type", HeaderValue::from_static(item_type));
    if end < all.len()
        && let Ok(v) = HeaderValue::from_str(&end.to_string())
    {
        resp.headers_mut().insert("x-ms-continuation", v);
    }
    Ok(resp)
}
