//! The service API's error type is the runtime's (every server's REST API answers alike); what
//! the hub adds is how a registry storage failure is answered.

pub use ferrohub_runtime::error::ApiError;

use axum::http::StatusCode;

use crate::store::StoreError;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_disk_full() {
            let message = e.disk_full_message();
            tracing::error!(error = %e, fix = %message, "Registry write refused: the disk is full");
            return Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "InsufficientStorage",
                message,
            );
        }
        // The detail goes to the log, not to the caller.
        tracing::error!(error = %e, "Registry storage failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServerError",
            "internal storage error",
        )
    }
}
