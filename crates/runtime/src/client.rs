//! A small HTTPS client for the service APIs of the hub and the provisioning service (the CLI,
//! the provisioning service calling its hubs, identityd, the gateway and the edge agent, tests,
//! benchmarks): SAS policy tokens, JSON bodies, and the NDJSON events stream.

use std::sync::Arc;

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;

/// A request that could not be made or answered.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS with {addr}: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad request: {0}")]
    Request(String),
    #[error("{status}: {message}")]
    Api {
        status: StatusCode,
        code: String,
        message: String,
    },
}

/// A response with its body collected.
#[derive(Debug)]
pub struct ClientResponse {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl ClientResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Turns a non-2xx answer into `ClientError::Api` with the hub's error code and message.
    pub fn ok(self) -> Result<Self, ClientError> {
        if self.status.is_success() {
            return Ok(self);
        }
        let v = self.json();
        let message = v
            .get("Message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let code = message
            .strip_prefix("ErrorCode:")
            .and_then(|m| m.split(';').next())
            .unwrap_or("Unknown")
            .to_owned();
        let text = message
            .split_once(';')
            .map_or(message.clone(), |(_, t)| t.to_owned());
        Err(ClientError::Api {
            status: self.status,
            code,
            message: text,
        })
    }
}

/// Talks to one hub with one shared-access policy.
#[derive(Clone)]
pub struct ServiceClient {
    addr: String,
    hostname: String,
    /// The token's `sr`: the hub host name, or `{host}/devices/{id}` for a device's own token.
    resource: String,
    /// The token's `skn`: a shared-access policy, or none for a device's own token.
    policy: Option<String>,
    key: Vec<u8>,
    tls: tokio_rustls::TlsConnector,
    api_version: String,
    /// Sign tokens as if it were this unix time (tests against a hub on a fixed clock).
    token_time: Option<u64>,
    clock: Option<crate::time::SharedClock>,
    /// `Authorization` from the caller instead of a token signed here (`Some(None)`: none at all,
    /// for a client that authenticates with its TLS certificate).
    authorization: Option<Option<String>>,
    /// Idle keep-alive connections, shared by clones: many requests, few TLS handshakes.
    idle: Arc<std::sync::Mutex<Vec<Sender>>>,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Idle connections kept per client.
const MAX_IDLE: usize = 64;

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient")
            .field("addr", &self.addr)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl ServiceClient {
    /// `addr` is `host:port` to dial; `hostname` is the hub's name (TLS and token audience).
    pub fn new(
        addr: String,
        hostname: String,
        policy: String,
        key: Vec<u8>,
        tls: Arc<rustls::ClientConfig>,
    ) -> Self {
        Self {
            addr,
            resource: hostname.clone(),
            hostname,
            policy: Some(policy),
            key,
            tls: tokio_rustls::TlsConnector::from(tls),
            api_version: "2021-04-12".into(),
            token_time: None,
            clock: None,
            idle: Arc::default(),
            authorization: None,
        }
    }

    /// A client that signs with a device's own key (`sr={host}/devices/{id}`, no policy name):
    /// the hub lets a device manage its own modules and their twins with it.
    pub fn for_device(
        addr: String,
        hostname: String,
        device_id: &str,
        key: Vec<u8>,
        tls: Arc<rustls::ClientConfig>,
    ) -> Self {
        let mut client = Self::new(addr, hostname, String::new(), key, tls);
        client.resource = format!("{}/devices/{device_id}", client.hostname);
        client.policy = None;
        client
    }

    /// Sends this `Authorization` value (a token signed elsewhere, e.g. by a key service), or none
    /// at all when the TLS config carries a client certificate.
    #[must_use]
    pub fn with_authorization(mut self, value: Option<String>) -> Self {
        self.authorization = Some(value);
        self
    }

    /// Sends `api-version=version` instead of the hub's 2021-04-12 (the DPS service API uses
    /// 2021-10-01).
    #[must_use]
    pub fn with_api_version(mut self, version: &str) -> Self {
        self.api_version = version.to_owned();
        self
    }

    /// Signs tokens relative to `clock` (a server calling another server on its own clock).
    #[must_use]
    pub fn with_clock(mut self, clock: crate::time::SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Signs tokens relative to `unix_secs` instead of the wall clock.
    #[must_use]
    pub fn with_token_time(mut self, unix_secs: u64) -> Self {
        self.token_time = Some(unix_secs);
        self
    }

    fn token(&self) -> String {
        let clock_now = self
            .clock
            .as_ref()
            .and_then(|c| u64::try_from(c.now().unix_timestamp()).ok());
        #[allow(clippy::disallowed_methods)] // a client token's expiry is wall-clock by nature
        let now = self.token_time.or(clock_now).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
        iot_auth::sas::generate_sas_token(
            &self.resource,
            &self.key,
            self.policy.as_deref(),
            now + 3600,
        )
    }

    async fn connect(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ClientError> {
        let tcp = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: self.addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.hostname.clone())
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|source| ClientError::Tls {
                addr: self.addr.clone(),
                source,
            })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: &Bytes,
        headers: &[(&str, &str)],
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let uri = format!("{path}{sep}api-version={}", self.api_version);
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", &self.hostname)
            .header("content-type", "application/json; charset=utf-8");
        match &self.authorization {
            None => req = req.header("authorization", self.token()),
            Some(Some(v)) => req = req.header("authorization", v),
            Some(None) => {}
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(Full::new(body.clone()))
            .map_err(|e| ClientError::Request(e.to_string()))
    }

    /// Sends a request and collects the answer (any status), on an idle keep-alive connection
    /// when there is one.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<ClientResponse, ClientError> {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        self.send_bytes(method, path, bytes, headers).await
    }

    /// [`ServiceClient::send`] with a body sent as given (not necessarily JSON).
    pub async fn send_bytes(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> Result<ClientResponse, ClientError> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| {
            while let Some(s) = idle.pop() {
                if !s.is_closed() {
                    return Some(s);
                }
            }
            None
        });
        let request = self.request(method.clone(), path, &body, headers)?;
        let (mut sender, resp) = match pooled {
            Some(mut s) => match s.send_request(request).await {
                Ok(r) => (s, r),
                // The idle connection was closed by the server before it took the request:
                // send it again on a new one.
                Err(e) if e.is_canceled() || s.is_closed() => {
                    let mut s = self.connect().await?;
                    let r = s
                        .send_request(self.request(method, path, &body, headers)?)
                        .await?;
                    (s, r)
                }
                Err(e) => return Err(e.into()),
            },
            None => {
                let mut s = self.connect().await?;
                let r = s.send_request(request).await?;
                (s, r)
            }
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        if sender.ready().await.is_ok()
            && let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(sender);
        }
        Ok(ClientResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Opens a streaming GET (the events endpoint); the caller reads frames from the body.
    pub async fn stream(&self, path: &str) -> Result<Incoming, ClientError> {
        let mut sender = self.connect().await?;
        let resp = sender
            .send_request(self.request(Method::GET, path, &Bytes::new(), &[])?)
            .await?;
        if !resp.status().is_success() {
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            ClientResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            }
            .ok()?;
            return Err(ClientError::Request("unexpected status".into()));
        }
        Ok(resp.into_body())
    }
}
