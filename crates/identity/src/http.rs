//! The HTTP conventions every daemon shares (aziot's `http-common`): `api-version` is required,
//! errors are `{"message": "..."}`, a method a route lacks is 400, bodies that do not parse are 422.

use axum::body::Bytes;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

/// An error answer: status and message (`{"message": "..."}`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
}

impl HttpError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not found")
    }
    /// 500 with a fixed text; the detail goes to the log only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "!!! internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        json(self.status, &serde_json::json!({ "message": self.message }))
    }
}

/// A JSON answer with `content-type: application/json`.
pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => HttpError::internal(e).into_response(),
    }
}

/// 204 No Content.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Checks `api-version` against the versions a daemon accepts; returns the version.
pub fn api_version<'a>(uri: &'a Uri, accepted: &[&str]) -> Result<&'a str, HttpError> {
    let version = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("api-version="))
        .ok_or_else(|| HttpError::bad_request("api-version not specified"))?;
    if accepted.contains(&version) {
        Ok(version)
    } else {
        Err(HttpError::bad_request(format!(
            "invalid api-version {version:?}"
        )))
    }
}

/// A query parameter, percent-decoded.
pub fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| iot_auth::percent_decode(v).unwrap_or_else(|| v.to_owned()))
    })
}

/// A JSON body: empty → 400 "missing request body", unparsable → 422 with the parser's message.
pub fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, HttpError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(HttpError::bad_request("missing request body"));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
}

/// For `MethodRouter::fallback`: a method the route does not implement.
pub async fn method_not_allowed() -> HttpError {
    HttpError::bad_request("method not allowed")
}

/// For `Router::fallback`.
pub async fn not_found() -> HttpError {
    HttpError::not_found()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions() {
        let ok: Uri = "/x?api-version=2020-09-01".parse().unwrap_or_default();
        assert_eq!(api_version(&ok, &["2020-09-01"]), Ok("2020-09-01"));
        let none: Uri = "/x".parse().unwrap_or_default();
        assert_eq!(
            api_version(&none, &["2020-09-01"]).map_err(|e| e.message),
            Err("api-version not specified".into())
        );
        let bad: Uri = "/x?api-version=1999-01-01".parse().unwrap_or_default();
        assert!(api_version(&bad, &["2020-09-01"]).is_err());
    }

    #[test]
    fn bodies() {
        let empty = Bytes::from_static(b"");
        assert_eq!(
            body::<serde_json::Value>(&empty).map_err(|e| e.status),
            Err(StatusCode::BAD_REQUEST)
        );
        let bad = Bytes::from_static(b"{nope");
        assert_eq!(
            body::<serde_json::Value>(&bad).map_err(|e| e.status),
            Err(StatusCode::UNPROCESSABLE_ENTITY)
        );
    }
}
