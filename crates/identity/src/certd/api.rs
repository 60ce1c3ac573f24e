//! certd's HTTP API (aziot `2020-09-01`): routes and error statuses; the bodies are
//! [`crate::wire::certd`]'s. `issuer.privateKeyHandle` is accepted and ignored: the issuer's key
//! is the key pair named like `issuer.certId` (see the module docs).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};

use super::{API_VERSION, CertError, Certd, Operation};
use crate::http::{self, HttpError};
use crate::uds::Caller;
use crate::wire::certd::{CreateCertRequest, ImportCertRequest, PemResponse};

/// The certd routes; every request needs a [`Caller`] extension (added by [`crate::uds::serve`]).
pub fn router(certd: Arc<Certd>) -> Router {
    Router::new()
        .route(
            "/certificates",
            post(create).fallback(http::method_not_allowed),
        )
        .route(
            "/certificates/{id}",
            get(read)
                .put(import)
                .delete(delete)
                .fallback(http::method_not_allowed),
        )
        .fallback(http::not_found)
        .with_state(certd)
}

impl From<CertError> for HttpError {
    fn from(e: CertError) -> Self {
        match e {
            CertError::InvalidParameter { .. } | CertError::NotFound(_) => {
                HttpError::bad_request(e.to_string())
            }
            CertError::Unauthorized { .. } => HttpError::unauthorized(e.to_string()),
            CertError::Config(_)
            | CertError::Io { .. }
            | CertError::Key(_)
            | CertError::Internal(_) => HttpError::internal(e),
        }
    }
}

/// Runs `f` on the blocking pool (files, key store, signing).
async fn blocking<T: Send + 'static>(
    certd: &Arc<Certd>,
    f: impl FnOnce(&Certd) -> Result<T, CertError> + Send + 'static,
) -> Result<T, HttpError> {
    let certd = Arc::clone(certd);
    tokio::task::spawn_blocking(move || f(&certd))
        .await
        .map_err(HttpError::internal)?
        .map_err(HttpError::from)
}

async fn create(
    State(certd): State<Arc<Certd>>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    body: Bytes,
) -> Result<Response, HttpError> {
    http::api_version(&uri, &[API_VERSION])?;
    let req: CreateCertRequest = http::body(&body)?;
    certd.authorize(caller.uid, Operation::Create, &req.cert_id)?;
    if let Some(issuer) = &req.issuer {
        certd.authorize(caller.uid, Operation::UseAsIssuer, &issuer.cert_id)?;
    }
    let pem = blocking(&certd, move |c| {
        c.create_cert(
            &req.cert_id,
            &req.csr,
            req.issuer.as_ref().map(|i| i.cert_id.as_str()),
        )
    })
    .await?;
    Ok(http::json(StatusCode::CREATED, &PemResponse { pem }))
}

async fn import(
    State(certd): State<Arc<Certd>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    uri: Uri,
    body: Bytes,
) -> Result<Response, HttpError> {
    http::api_version(&uri, &[API_VERSION])?;
    let req: ImportCertRequest = http::body(&body)?;
    certd.authorize(caller.uid, Operation::Import, &id)?;
    let pem = blocking(&certd, move |c| c.import_pem(&id, &req.pem)).await?;
    Ok(http::json(StatusCode::CREATED, &PemResponse { pem }))
}

async fn read(
    State(certd): State<Arc<Certd>>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Response, HttpError> {
    http::api_version(&uri, &[API_VERSION])?;
    let pem = blocking(&certd, move |c| c.get_pem(&id)).await?;
    Ok(http::json(StatusCode::OK, &PemResponse { pem }))
}

async fn delete(
    State(certd): State<Arc<Certd>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Response, HttpError> {
    http::api_version(&uri, &[API_VERSION])?;
    certd.authorize(caller.uid, Operation::Delete, &id)?;
    blocking(&certd, move |c| c.delete(&id)).await?;
    Ok(http::no_content())
}
