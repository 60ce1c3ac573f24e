//! Devices, modules, query and statistics.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Target, admit, admit_device, if_match, json, json_body};
use crate::Hub;
use crate::config::Right;
use ferrohub_runtime::error::ApiError;
use hub_wire::model::{Device, Module};

type Result<T> = std::result::Result<T, ApiError>;

fn query_param<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

pub async fn list(State(hub): State<Arc<Hub>>, uri: Uri, headers: HeaderMap) -> Result<Response> {
    admit(&hub, &uri, &headers, Right::RegistryRead, Target::Hub)?;
    let top = match query_param(&uri, "top") {
        None => None,
        Some(t) => Some(
            t.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("top={t} is not a number")))?,
        ),
    };
    Ok(json(StatusCode::OK, &hub.registry.list_devices(top)?))
}

pub async fn bulk_unsupported(
    State(hub): State<Arc<Hub>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response> {
    admit(&hub, &uri, &headers, Right::RegistryWrite, Target::Hub)?;
    Err(ApiError::bad_request(
        "bulk registry operations are not supported by this hub; create devices one by one",
    ))
}

pub async fn get_device(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response> {
    admit(
        &hub,
        &uri,
        &headers,
        Right::RegistryRead,
        Target::Device(&id),
    )?;
    Ok(json(StatusCode::OK, &hub.registry.get_device(&id)?))
}

pub async fn put_device(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    admit(
        &hub,
        &uri,
        &headers,
        Right::RegistryWrite,
        Target::Device(&id),
    )?;
    let input: Device = json_body(&body)?;
    // The registry ends the sessions the write invalidates (disabled, credentials changed).
    let device = hub.registry.put_device(&id, input, &if_match(&headers))?;
    // The Python service SDK accepts only 200 here, for create and update alike.
    Ok(mqtt_warning(json(StatusCode::OK, &device), &[&id]))
}

/// Adds a `warning: 299 ferrohub "…"` header when an accepted id cannot be used over MQTT (it
/// holds a topic wildcard); the JSON body keeps the shape the SDKs parse.
fn mqtt_warning(mut resp: Response, ids: &[&str]) -> Response {
    if let Some(reason) = ids.iter().find_map(|id| pki::names::mqtt_unusable(id)) {
        tracing::info!(%reason, "Identity stored with an id MQTT cannot carry");
        if let Ok(v) = HeaderValue::from_str(&format!("299 ferrohub \"{reason}\"")) {
            resp.headers_mut().insert(axum::http::header::WARNING, v);
        }
    }
    resp
}

pub async fn delete_device(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response> {
    admit(
        &hub,
        &uri,
        &headers,
        Right::RegistryWrite,
        Target::Device(&id),
    )?;
    hub.registry.delete_device(&id, &if_match(&headers))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list_modules(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    axum::Extension(chain): axum::Extension<ferrohub_runtime::net::PeerChain>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response> {
    admit_device(
        &hub,
        &uri,
        &headers,
        Right::RegistryRead,
        Target::Device(&id),
        &chain,
    )?;
    Ok(json(StatusCode::OK, &hub.registry.list_modules(&id)?))
}

pub async fn get_module(
    State(hub): State<Arc<Hub>>,
    Path((id, mid)): Path<(String, String)>,
    axum::Extension(chain): axum::Extension<ferrohub_runtime::net::PeerChain>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response> {
    admit_device(
        &hub,
        &uri,
        &headers,
        Right::RegistryRead,
        Target::Module(&id, &mid),
        &chain,
    )?;
    Ok(json(StatusCode::OK, &hub.registry.get_module(&id, &mid)?))
}

pub async fn put_module(
    State(hub): State<Arc<Hub>>,
    Path((id, mid)): Path<(String, String)>,
    axum::Extension(chain): axum::Extension<ferrohub_runtime::net::PeerChain>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    admit_device(
        &hub,
        &uri,
        &headers,
        Right::RegistryWrite,
        Target::Module(&id, &mid),
        &chain,
    )?;
    let input: Module = json_body(&body)?;
    let (module, created) = hub
        .registry
        .put_module(&id, &mid, input, &if_match(&headers))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(mqtt_warning(json(status, &module), &[&id, &mid]))
}

pub async fn delete_module(
    State(hub): State<Arc<Hub>>,
    Path((id, mid)): Path<(String, String)>,
    axum::Extension(chain): axum::Extension<ferrohub_runtime::net::PeerChain>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response> {
    admit_device(
        &hub,
        &uri,
        &headers,
        Right::RegistryWrite,
        Target::Module(&id, &mid),
        &chain,
    )?;
    hub.registry.delete_module(&id, &mid, &if_match(&headers))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn device_stats(
    State(hub): State<Arc<Hub>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response> {
    admit(&hub, &uri, &headers, Right::RegistryRead, Target::Hub)?;
    Ok(json(StatusCode::OK, &hub.registry.statistics()?))
}

pub async fn service_stats(
    State(hub): State<Arc<Hub>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response> {
    admit(&hub, &uri, &headers, Right::ServiceConnect, Target::Hub)?;
    Ok(json(
        StatusCode::OK,
        &json!({ "connectedDeviceCount": hub.connections.count() }),
    ))
}

/// `POST /devices/query`, paged with `x-ms-max-item-count` / `x-ms-continuation`.
pub async fn query(
    State(hub): State<Arc<Hub>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    admit(&hub, &uri, &headers, Right::RegistryRead, Target::Hub)?;
    let input: Value = json_body(&body)?;
    let text = input
        .get("query")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("the body must be {\"query\": \"SELECT ...\"}"))?;
    let q = iot_query::parse(text).map_err(|e| ApiError::bad_request(format!("query: {e}")))?;
    let docs: Vec<Value> = match q.source {
        iot_query::Source::Devices => {
            let mut docs = Vec::new();
            for d in hub.registry.list_devices(None)? {
                docs.push(super::twins::device_document(
                    &d,
                    &hub.twins.get(&hub, &d.device_id)?,
                ));
            }
            docs
        }
        iot_query::Source::Modules => {
            let mut all = Vec::new();
            for d in hub.registry.list_devices(None)? {
                for m in hub.registry.list_modules(&d.device_id)? {
                    let twin = hub.twins.get(&hub, &m.client_id())?;
                    all.push(super::twins::module_document(&m, &twin));
                }
            }
            all
        }
        iot_query::Source::Jobs => Vec::new(),
    };
    let rows = q
        .run(&docs)
        .map_err(|e| ApiError::bad_request(format!("query: {e}")))?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let page = header("x-ms-max-item-count")
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
    let end = (start + page).min(rows.len());
    let slice = rows.get(start..end).unwrap_or_default();
    let mut resp = json(StatusCode::OK, &slice);
    let item_type = if matches!(q.select, iot_query::Select::All) {
        "twin"
    } else {
        "raw"
    };
    resp.headers_mut()
        .insert("x-ms-item-type", HeaderValue::from_static(item_type));
    // Only when more pages exist: the Node SDK loops while the header is present.
    if end < rows.len()
        && let Ok(v) = HeaderValue::from_str(&end.to_string())
    {
        resp.headers_mut().insert("x-ms-continuation", v);
    }
    Ok(resp)
}

/// `POST /devices/{id}/messages/deviceBound` (ferrohub extension): queue a cloud-to-device message.
pub async fn send_c2d(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    admit(
        &hub,
        &uri,
        &headers,
        Right::ServiceConnect,
        Target::Device(&id),
    )?;
    let req: hub_wire::SendRequest = json_body(&body)?;
    let msg = crate::c2d::send(&hub, &id, req)?;
    Ok(json(
        StatusCode::OK,
        &json!({ "messageId": msg.message_id, "sequenceNumber": msg.seq, "expiryTimeUtcMs": msg.expiry_ms }),
    ))
}

/// `DELETE /devices/{id}/commands`: purge the device's cloud-to-device queue.
pub async fn purge_c2d(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response> {
    admit(
        &hub,
        &uri,
        &headers,
        Right::ServiceConnect,
        Target::Device(&id),
    )?;
    hub.registry.get_device(&id)?;
    let n = hub.registry.store().c2d_purge(&id)?;
    Ok(json(
        StatusCode::OK,
        &json!({ "deviceId": id, "totalMessagesPurged": n }),
    ))
}
