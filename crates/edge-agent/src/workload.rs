//! The workload API, one Unix socket per module (`workload/{module}.sock`, mode 0600, owned by
//! the module's uid): what an SDK module client with `IOTEDGE_WORKLOADURI` calls.
//!
//! - `GET /trust-bundle` → `{"certificate": PEM}`: the CA to trust for the gateway;
//! - `POST /modules/{module}/genid/{generationId}/sign` with `{"keyId": "primary", "algo":
//!   "HMACSHA256", "data": BASE64}` → `{"digest": BASE64}`: HMAC-SHA256 with the module's key.
//!
//! A socket answers only for its own module (another module or generation id: 404), so a
//! module never sees its key and cannot sign as another module.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::deployment::User;
use crate::identities::ModuleIdentity;

struct Module {
    name: String,
    identity: ModuleIdentity,
    trust_bundle: PathBuf,
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"message": message}))).into_response()
}

async fn trust_bundle_of(State(m): State<Arc<Module>>) -> Response {
    match std::fs::read_to_string(&m.trust_bundle) {
        Ok(pem) => axum::Json(json!({"certificate": pem})).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot read the trust bundle: {e}"),
        ),
    }
}

async fn sign(
    State(m): State<Arc<Module>>,
    UrlPath((module, genid)): UrlPath<(String, String)>,
    body: Bytes,
) -> Response {
    if module != m.name
        || (!m.identity.generation_id.is_empty() && genid != m.identity.generation_id)
    {
        return error(
            StatusCode::NOT_FOUND,
            &format!("this socket serves module {} only", m.name),
        );
    }
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if req["keyId"].as_str() != Some("primary") || req["algo"].as_str() != Some("HMACSHA256") {
        return error(
            StatusCode::BAD_REQUEST,
            "expected keyId \"primary\" and algo \"HMACSHA256\"",
        );
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let (Some(data), Ok(key)) = (
        req["data"].as_str().and_then(|d| b64.decode(d).ok()),
        b64.decode(&m.identity.key),
    ) else {
        return error(StatusCode::BAD_REQUEST, "data must be base64");
    };
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
    let digest = aws_lc_rs::hmac::sign(&key, &data);
    axum::Json(json!({"digest": b64.encode(digest.as_ref())})).into_response()
}

/// Serves module `name`'s workload socket at `path` until `shutdown` turns true (or its sender
/// is dropped).
pub fn serve(
    path: &Path,
    name: &str,
    identity: ModuleIdentity,
    trust_bundle: PathBuf,
    user: Option<User>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let listener = identity::uds::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    if let Some(u) = user {
        std::os::unix::fs::chown(path, Some(u.uid), u.gid)?;
    }
    let module = Arc::new(Module {
        name: name.to_owned(),
        identity,
        trust_bundle,
    });
    let app = Router::new()
        .route("/trust-bundle", get(trust_bundle_of))
        .route("/modules/{module}/genid/{genid}/sign", post(sign))
        .with_state(module);
    tokio::spawn(identity::uds::serve(
        listener, app, 10, "workload", shutdown,
    ));
    Ok(())
}
