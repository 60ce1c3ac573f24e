//! keyd's HTTP API on its Unix socket, in the shape of aziot keyd (`2020-09-01`, `2021-05-01`).
//!
//! Routes that name a key id check the caller's uid against the principals (401 otherwise).
//! Routes that take a handle check the key it names the same way, except for a derived key's
//! handle, which is bound to the uid it was issued to: only that uid and root may use it (sign,
//! encrypt, decrypt, export), so a handle that leaks to another uid is useless there (401). The
//! caller of `POST /derivedkey` may name that uid with `"ownerUid"` (ferrohub's addition:
//! identityd asks for each module's handle on behalf of the module's uid); it defaults to the
//! caller. A derived handle carries its base key's handle, so the base handle must never be a
//! capability by itself. Binary values are standard base64.
//! The bodies are [`crate::wire::keyd`]'s.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use tokio::sync::watch;

use super::KeyError;
use super::crypto::{Parameter, ParameterValue};
use super::handle::KeyRef;
use super::service::{Keyd, SignMechanism};
use crate::config::KeydConfig;
use crate::http::{self, HttpError, method_not_allowed};
use crate::uds::{self, Caller};
use crate::wire::keyd::{
    AeadParameters, B64, CreateKeyPairRequest, CreateKeyRequest, CryptRequest, DecryptResponse,
    DeriveRequest, EncryptAlgorithm, EncryptResponse, ExportResponse, HandleRequest,
    KeyHandleResponse, MoveKeyPairRequest, ParameterResponse, SignAlgorithm, SignRequest,
    SignResponse,
};

/// The API versions keyd accepts, on every route.
pub const API_VERSIONS: &[&str] = &["2020-09-01", "2021-05-01"];

type Answer = Result<Response, HttpError>;

/// The routes, with `keyd` as state. Each request needs an `Extension<Caller>` (added by
/// [`uds::serve`], or by a test's layer).
pub fn router(keyd: Arc<Keyd>) -> Router {
    let na = method_not_allowed;
    Router::new()
        .route("/key", post(create_key).delete(delete_key).fallback(na))
        .route("/key/{keyId}", get(get_key).fallback(na))
        .route(
            "/keypair",
            post(create_key_pair).delete(delete_key_pair).fallback(na),
        )
        .route(
            "/keypair/{keyId}",
            get(get_key_pair).post(move_key_pair).fallback(na),
        )
        .route("/parameters/{name}", post(parameter).fallback(na))
        .route("/derivedkey", post(derive).fallback(na))
        .route("/derivedkey/export", post(export).fallback(na))
        .route("/sign", post(sign).fallback(na))
        .route("/encrypt", post(encrypt).fallback(na))
        .route("/decrypt", post(decrypt).fallback(na))
        .fallback(http::not_found)
        .with_state(keyd)
}

/// Opens keyd from `config` and serves it on `config.socket` until `shutdown` turns true.
pub async fn serve(config: KeydConfig, shutdown: watch::Receiver<bool>) -> std::io::Result<()> {
    let keyd = Keyd::open(&config).map_err(|e| match e {
        KeyError::Io(e) => e,
        other => std::io::Error::other(other.to_string()),
    })?;
    serve_with(keyd, &config, shutdown).await
}

/// Serves an opened keyd (whose store may be shared in-process, e.g. with certd).
pub async fn serve_with(
    keyd: Arc<Keyd>,
    config: &KeydConfig,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    serve_on(keyd, config, &[], shutdown).await
}

/// [`serve_with`], also listening on the sockets in `also` (e.g. `/run/aziot/keyd.sock`).
pub async fn serve_on(
    keyd: Arc<Keyd>,
    config: &KeydConfig,
    also: &[std::path::PathBuf],
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listeners = uds::bind_all(&config.socket, also)?;
    tracing::info!(socket = %config.socket.display(), also = ?also, "keyd listening");
    uds::serve_many(
        listeners,
        router(keyd),
        config.max_requests,
        "keyd",
        shutdown,
    )
    .await;
    Ok(())
}

/// The answer for a [`KeyError`]. Key material never appears in these messages.
fn key_error(e: KeyError) -> HttpError {
    match e {
        KeyError::NotFound(_) => HttpError::bad_request("a parameter has an invalid value"),
        KeyError::InvalidParameter { name, message } => HttpError::bad_request(format!(
            "parameter {name:?} has an invalid value: {message}"
        )),
        KeyError::Io(e) => HttpError::internal(e),
        KeyError::Crypto(m) => HttpError::internal(m),
    }
}

/// A JSON body, borrowing strings from it where it can: empty → 400, unparsable → 422 (as
/// [`http::body`]).
fn parse<'a, T: Deserialize<'a>>(bytes: &'a Bytes) -> Result<T, HttpError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(HttpError::bad_request("missing request body"));
    }
    serde_json::from_slice(bytes).map_err(|e| unprocessable(e.to_string()))
}

fn unprocessable(message: impl Into<String>) -> HttpError {
    HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
}

/// Checks that the caller may name key `id`; logs refusals.
fn authorize(
    keyd: &Keyd,
    caller: Caller,
    operation: &'static str,
    id: &str,
) -> Result<(), HttpError> {
    if keyd.acl().allows(caller.uid, id) {
        return Ok(());
    }
    tracing::warn!(
        uid = caller.uid,
        pid = caller.pid,
        operation,
        key_id = id,
        "Unauthorized key access"
    );
    Err(HttpError::unauthorized(format!(
        "user {} is not authorized to access the key {id}",
        caller.uid
    )))
}

/// Checks that the caller may use the key behind `handle` (see the module docs).
fn authorize_handle(
    keyd: &Keyd,
    caller: Caller,
    operation: &'static str,
    handle: &str,
) -> Result<(), HttpError> {
    match keyd.resolve_bound(handle).map_err(key_error)? {
        (KeyRef::Key(id) | KeyRef::KeyPair(id), _) => authorize(keyd, caller, operation, &id),
        (KeyRef::Derived(..), owner) if caller.uid == 0 || owner == Some(caller.uid) => Ok(()),
        (KeyRef::Derived(..), owner) => {
            tracing::warn!(
                uid = caller.uid,
                pid = caller.pid,
                operation,
                issued_to = ?owner,
                "Refusing a derived key handle issued to another user; each process must use \
                 the handle identityd gives its own uid (GET /identities/identity)"
            );
            Err(HttpError::unauthorized(format!(
                "user {} is not authorized to use this key handle: it was issued to another user",
                caller.uid
            )))
        }
    }
}

fn path_id(p: Result<Path<String>, PathRejection>) -> Result<String, HttpError> {
    p.map(|Path(id)| id)
        .map_err(|e| HttpError::bad_request(e.body_text()))
}

fn handle_answer(key_handle: String) -> Response {
    http::json(StatusCode::OK, &KeyHandleResponse { key_handle })
}

/// `usage` is a comma list of `derive`, `sign` and `encrypt`.
fn check_usage(usage: &str) -> Result<(), HttpError> {
    let known = |u: &str| matches!(u.trim(), "derive" | "sign" | "encrypt");
    if !usage.is_empty() && usage.split(',').all(known) {
        Ok(())
    } else {
        Err(key_error(KeyError::InvalidParameter {
            name: "usage",
            message: format!("{usage:?} is not a list of derive, sign, encrypt"),
        }))
    }
}

async fn create_key(
    State(k): State<Arc<Keyd>>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    body: Bytes,
) -> Answer {
    http::api_version(&uri, API_VERSIONS)?;
    let req: CreateKeyRequest = parse(&body)?;
    check_usage(&req.usage)?;
    let (operation, handle) = match &req.key_bytes {
        Some(bytes) => {
            authorize(&k, caller, "import key", &req.key_id)?;
            ("import key", k.import_key(&req.key_id, &bytes.0))
        }
        None => {
            authorize(&k, caller, "create key", &req.key_id)?;
            ("create key", k.create_key(&req.key_id))
        }
    };
    let handle = handle.map_err(key_error)?;
    tracing::debug!(uid = caller.uid, operation, key_id = %req.key_id, "Key handle issued");
    Ok(handle_answer(handle))
}

async fn get_key(
    State(k): State<Arc<Keyd>>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Answer {
    http::api_version(&uri, API_VERSIONS)?;
    let id = path_id(id)?;
    authorize(&k, caller, "load key", &id)?;
    Ok(handle_answer(k.key_handle(&id).map_err(key_error)?))
}

async fn delete_key(
    State(k): State<Arc<Keyd>>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    body: Bytes,
) -> Answer {
    http::api_version(&uri, API_VERSIONS)?;
    let req: HandleRequest<'_> = parse(&body)?;
    authorize_handle(&k, caller, "delete key", &req.key_handle)?;
    k.delete_key(&req.key_handle).map_err(key_error)?;
    Ok(http::no_content())
}

async fn create_key_pair(
    State(k): State<Arc<Keyd>>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    body: Bytes,
) -> Answer {
    http::api_version(&uri, API_VERSIONS)?;
    let req: CreateKeyPairRequest = parse(&body)?;
    authorize(&k, caller, "create key pair", &req.key_id)?;
    // Generating an RSA key takes long: off the async threads.
    let handle = tokio::task::spawn_blocking(move || {
        k.create_key_pair(&req.key_id, req.preferred_algorithms.as_deref())
    })
    .await
    .map_err(HttpError::internal)?
    .map_err(key_error)?;
    Ok(handle_answer(handle))
}

async fn get_key_pair(
    State(k): State<Arc<Keyd>>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Answer {
    http::api_version(&uri, API_VERSIONS)?;
    let id = path_id(id)?;
    authorize(&k, caller, "load key pair", &id)?;
    Ok(handle_answer(k.key_pair_handle(&id).map_err(key_error)?))
}

async fn move_key_pair(
    State(k): State<Arc<Keyd>>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    uri: Uri,
    body: Bytes,
) -> Answer {
    http::api_version(&uri, API_VERSIONS)?;
    let to = path_id(id)?;
    let req: MoveKeyPairRequest = parse(&body)?;
    authorize(&k, caller, "move key pair", &req.from)?;
    authorize(&k, caller, "move key pair", &to)?;
    k.move_key_pair(&req.from, &to).map_err(key_error)?;
    tracing::info!(uid = caller.uid, from = %req.from, to = %to, "Key pair moved");
    Ok(http::no_content())
}

async fn delete_key_pair(
    State(k): State<Arc<Keyd>>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    body: Bytes,
) -> Answer {
    http::api_version(&uri, API_VERSIONS)?;
    let req: HandleRequest<'_> = parse(&body)?;
    authorize_handle(&k, caller, "delete key pair", &req.key_handle)?;
    k.delete_key_pair(&req.key_handle).map_err(key_error)?;
    Ok(http::no_content())
}

async fn parameter(
    State(k): State<Arc<Keyd>>,
    Extension(caller): Extension<Caller>,
    name: Result<Path<String>, PathRejection>,
    uri: Uri,
    body: Bytes,
) -> Answer {
    http::api_version(&uri, API_VERSIONS)?;
    let p: Parameter = path_id(name)?.parse().map_err(key_error)?;
    let req: HandleRequest<'_> = parse(&body)?;
    authorize_handle(&k, caller, "read key pair parameter", &req.key_handle)?;
    let value = match k.parameter(&req.key_handle, p).map_err(key_error)? {
        ParameterValue::Name(n) => n.to_owned(),
        ParameterValue::Bytes(b) => STANDARD.encode(b),
    };
    Ok(http::json(StatusCode::OK, &ParameterResponse { value }))
}

async fn derive(
    State(k): State<Arc<Keyd>>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    body: Bytes,
) -> Answer {
    http::api_version(&uri, API_VERSIONS)?;
    let req: DeriveRequest<'_> = parse(&body)?;
    authorize_handle(&k, caller, "derive key", &req.base_key_handle)?;
    let owner = req.owner_uid.unwrap_or(caller.uid);
    let handle = k
        .derive_for(&req.base_key_handle, &req.derivation_data.0, owner)
        .map_err(key_error)?;
    tracing::debug!(uid = caller.uid, owner, "Derived key handle issued");
    Ok(handle_answer(handle))
}

async fn export(
    State(k): State<Arc<Keyd>>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    body: Bytes,
) -> Answer {
    http::api_version(&uri, API_VERSIONS)?;
    let req: HandleRequest<'_> = parse(&body)?;
    authorize_handle(&k, caller, "export key", &req.key_handle)?;
    let key = k.export_derived(&req.key_handle).map_err(key_error)?;
    Ok(http::json(
        StatusCode::OK,
        &ExportResponse {
            key: STANDARD.encode(key),
        },
    ))
}

async fn sign(
    State(k): State<Arc<Keyd>>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    body: Bytes,
) -> Answer {
    http::api_version(&uri, API_VERSIONS)?;
    let req: SignRequest<'_> = parse(&body)?;
    authorize_handle(&k, caller, "sign", &req.key_handle)?;
    let p = &req.parameters;
    let mechanism = match (&req.algorithm, &p.digest, &p.message) {
        (SignAlgorithm::Ecdsa, Some(d), _) => SignMechanism::Ecdsa { digest: &d.0 },
        (SignAlgorithm::HmacSha256, _, Some(m)) => SignMechanism::HmacSha256 { message: &m.0 },
        (SignAlgorithm::Ecdsa, None, _) => {
            return Err(unprocessable("ECDSA needs parameters.digest"));
        }
        (SignAlgorithm::HmacSha256, _, None) => {
            return Err(unprocessable("HMAC-SHA256 needs parameters.message"));
        }
    };
    let signature = k.sign(&req.key_handle, mechanism).map_err(key_error)?;
    Ok(http::json(
        StatusCode::OK,
        &SignResponse {
            signature: STANDARD.encode(signature),
        },
    ))
}

/// The AEAD parameters and the input named `field`, or why not.
fn aead_input<'r>(
    req: &'r CryptRequest<'_>,
    input: &'r Option<B64>,
    field: &str,
) -> Result<(&'r AeadParameters, &'r [u8]), HttpError> {
    if req.algorithm != EncryptAlgorithm::Aead {
        return Err(key_error(KeyError::InvalidParameter {
            name: "mechanism",
            message: "RSA encryption is not supported".into(),
        }));
    }
    let params = req
        .parameters
        .as_ref()
        .ok_or_else(|| unprocessable("AEAD needs parameters.iv"))?;
    let input = input
        .as_ref()
        .ok_or_else(|| unprocessable(format!("missing field `{field}`")))?;
    Ok((params, &input.0))
}

async fn encrypt(
    State(k): State<Arc<Keyd>>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    body: Bytes,
) -> Answer {
    http::api_version(&uri, API_VERSIONS)?;
    let req: CryptRequest<'_> = parse(&body)?;
    authorize_handle(&k, caller, "encrypt", &req.key_handle)?;
    let (p, plaintext) = aead_input(&req, &req.plaintext, "plaintext")?;
    let ciphertext = k
        .encrypt(&req.key_handle, &p.iv.0, &p.aad.0, plaintext)
        .map_err(key_error)?;
    let answer = EncryptResponse {
        ciphertext: B64(ciphertext),
    };
    Ok(http::json(StatusCode::OK, &answer))
}

async fn decrypt(
    State(k): State<Arc<Keyd>>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    body: Bytes,
) -> Answer {
    http::api_version(&uri, API_VERSIONS)?;
    let req: CryptRequest<'_> = parse(&body)?;
    authorize_handle(&k, caller, "decrypt", &req.key_handle)?;
    let (p, ciphertext) = aead_input(&req, &req.ciphertext, "ciphertext")?;
    let plaintext = k
        .decrypt(&req.key_handle, &p.iv.0, &p.aad.0, ciphertext)
        .map_err(key_error)?;
    let answer = DecryptResponse {
        plaintext: B64(plaintext),
    };
    Ok(http::json(StatusCode::OK, &answer))
}
