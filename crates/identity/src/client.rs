//! A small HTTP/1.1 client for the daemons' Unix sockets (identityd → keyd/certd, the CLI, tests).

use std::path::{Path, PathBuf};

use axum::body::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum UdsError {
    #[error("cannot connect to {path}: {source} (is the daemon running?)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Http { path: PathBuf, message: String },
    /// The daemon answered with an error status.
    #[error("{path} answered {status}: {message}")]
    Status {
        path: PathBuf,
        status: StatusCode,
        message: String,
    },
}

/// Talks to one daemon socket. Requests carry `api-version` as given in the path.
#[derive(Clone, Debug)]
pub struct UdsClient {
    path: PathBuf,
}

impl UdsClient {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends a request; returns the status and the JSON body (`Null` when empty or not JSON).
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), UdsError> {
        let (status, bytes) = self.send_raw(method, path_and_query, body).await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// Sends a request; returns the status and the body as bytes (e.g. `GET /metrics`).
    pub async fn send_raw(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Bytes), UdsError> {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        self.exchange(method, path_and_query, bytes).await
    }

    /// A typed request (see [`crate::wire`]): `body` as JSON, the answer parsed as `R` (an empty
    /// answer parses as JSON `null`, so `()` fits 204), an error status as [`UdsError::Status`].
    pub async fn request<B, R>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&B>,
    ) -> Result<R, UdsError>
    where
        B: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let http = |message: String| UdsError::Http {
            path: self.path.clone(),
            message,
        };
        let bytes = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).map_err(|e| http(e.to_string()))?),
            None => Bytes::new(),
        };
        let (status, answer) = self.exchange(method, path_and_query, bytes).await?;
        if !status.is_success() {
            let v: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
            return Err(UdsError::Status {
                path: self.path.clone(),
                status,
                message: v["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        let answer: &[u8] = if answer.iter().all(u8::is_ascii_whitespace) {
            b"null"
        } else {
            &answer
        };
        serde_json::from_slice(answer).map_err(|e| {
            http(format!(
                "unexpected answer to {path_and_query}: {e}: {}",
                String::from_utf8_lossy(answer)
            ))
        })
    }

    /// A typed `GET` (see [`UdsClient::request`]).
    pub async fn get<R: DeserializeOwned>(&self, path_and_query: &str) -> Result<R, UdsError> {
        self.request::<(), R>(Method::GET, path_and_query, None)
            .await
    }

    /// A typed `POST` (see [`UdsClient::request`]).
    pub async fn post<B, R>(&self, path_and_query: &str, body: &B) -> Result<R, UdsError>
    where
        B: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.request(Method::POST, path_and_query, Some(body)).await
    }

    async fn exchange(
        &self,
        method: Method,
        path_and_query: &str,
        bytes: Bytes,
    ) -> Result<(StatusCode, Bytes), UdsError> {
        let http = |message: String| UdsError::Http {
            path: self.path.clone(),
            message,
        };
        let stream = tokio::net::UnixStream::connect(&self.path)
            .await
            .map_err(|source| UdsError::Connect {
                path: self.path.clone(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(bytes))
            .map_err(|e| http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| http(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| http(e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }

    /// Like [`UdsClient::send`], turning an error status into [`UdsError::Status`].
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<Value, UdsError> {
        let (status, v) = self.send(method, path_and_query, body).await?;
        if status.is_success() {
            Ok(v)
        } else {
            Err(UdsError::Status {
                path: self.path.clone(),
                status,
                message: v["message"].as_str().unwrap_or_default().to_owned(),
            })
        }
    }
}
