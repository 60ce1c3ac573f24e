//! Errors at the DPS HTTP edge, in the provisioning service's error shape:
//! `{"errorCode": 404201, "trackingId": "...", "message": "...", "timestampUtc": "..."}` and an
//! `x-ms-error-code` header.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An API failure: HTTP status, a numeric DPS error code, a name and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {name}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: u32,
    pub name: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: u32,
        name: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            name,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, 400_004, "ArgumentInvalid", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, 401_002, "Unauthorized", message)
    }
    pub fn not_found(name: &'static str, message: impl Into<String>) -> Self {
        let code = match name {
            "DeviceRegistrationNotFound" => 404_202,
            "EnrollmentNotFound" => 404_201,
            _ => 404_200,
        };
        Self::new(StatusCode::NOT_FOUND, code, name, message)
    }
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            412_002,
            "PreconditionFailed",
            message,
        )
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            500_000,
            "InternalServerError",
            message,
        )
    }
}

/// The hub's CA service errors (proof of possession) keep their status and name.
impl From<ferrohub_runtime::error::ApiError> for ApiError {
    fn from(e: ferrohub_runtime::error::ApiError) -> Self {
        let code = u32::from(e.status.as_u16()) * 1000;
        Self::new(e.status, code, e.code, e.message)
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        if e.0.is_disk_full() {
            let message = e.0.disk_full_message();
            tracing::error!(error = %e, fix = %message, "DPS write refused: the disk is full");
            return Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                507_000,
                "InsufficientStorage",
                message,
            );
        }
        tracing::error!(error = %e, "DPS storage failed");
        Self::internal("internal storage error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "errorCode": self.code,
            "trackingId": "ferrohub",
            "message": format!("{}: {}", self.name, self.message),
            "info": {},
            "timestampUtc": ferrohub_runtime::time::now_rfc3339(),
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(self.name) {
            resp.headers_mut().insert("x-ms-error-code", v);
        }
        resp
    }
}
