//! Clients of the linked hubs' service APIs: DPS creates, updates, moves and deletes devices there
//! exactly as any service application would. A start-up probe tells the operator about a hub
//! whose TLS certificate is not trusted or whose key is refused before any device registers.

use std::path::PathBuf;
use std::time::Duration;

use ferrohub_runtime::client::{ClientError, ServiceClient};
use hub_wire::TwinPatch;
use hub_wire::model::Device;
use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::DpsError;
use crate::config::DpsConfig;

/// One linked hub.
pub struct LinkedHubClient {
    pub hostname: String,
    pub weight: u32,
    client: ServiceClient,
    /// Where the service dials it.
    addr: String,
    /// The CA file its TLS certificate must chain to.
    ca: PathBuf,
}

/// A hub call that failed: the hub's answer, or no answer.
#[derive(Debug, thiserror::Error)]
pub enum HubCallError {
    #[error("hub {hub} answered {status}: {body}")]
    Status {
        hub: String,
        status: StatusCode,
        body: String,
    },
    #[error("hub {hub} unreachable: {source}")]
    Unreachable { hub: String, source: ClientError },
    #[error("{0} is not a linked hub")]
    NotLinked(String),
}

pub struct LinkedHubs {
    pub hubs: Vec<LinkedHubClient>,
}

impl LinkedHubs {
    pub fn new(
        config: &DpsConfig,
        clock: &ferrohub_runtime::time::SharedClock,
    ) -> Result<Self, DpsError> {
        let mut hubs = Vec::new();
        for linked in &config.linked_hubs {
            let hostname = linked.hostname();
            let err = |message: String| DpsError::LinkedHub {
                hub: hostname.clone(),
                message,
            };
            let cs = iot_auth::ConnectionString::parse(&linked.connection_string)
                .map_err(|e| err(e.to_string()))?;
            let (Some(policy), Some(key)) = (cs.shared_access_key_name(), cs.shared_access_key())
            else {
                return Err(err(
                    "the connection string needs SharedAccessKeyName and SharedAccessKey".into(),
                ));
            };
            let key = iot_auth::sas::decode_key(key).map_err(|e| err(e.to_string()))?;
            let ca = linked
                .ca
                .as_ref()
                .or(config.tls.ca.as_ref())
                .ok_or_else(|| {
                    err("no CA to trust for its TLS certificate: set ca = \"...\"".into())
                })?;
            let tls = ferrohub_runtime::tls::client_config(ca)?;
            let addr = linked
                .address
                .clone()
                .unwrap_or_else(|| format!("{hostname}:443"));
            hubs.push(LinkedHubClient {
                client: ServiceClient::new(
                    addr.clone(),
                    hostname.clone(),
                    policy.to_owned(),
                    key,
                    tls,
                )
                .with_clock(clock.clone()),
                hostname,
                weight: linked.allocation_weight,
                addr,
                ca: ca.clone(),
            });
        }
        Ok(Self { hubs })
    }

    /// Calls every linked hub once (a read of a device that need not exist) and returns what is
    /// wrong with each that does not answer as it should within `wait`.
    pub async fn probe(&self, wait: Duration) -> Vec<HubProblem> {
        let mut problems = Vec::new();
        for h in &self.hubs {
            let call = self.get_device(&h.hostname, "ferrohub-dps-probe");
            let problem = match tokio::time::timeout(wait, call).await {
                Err(_) => Some(HubProblem::Unreachable {
                    hub: h.hostname.clone(),
                    addr: h.addr.clone(),
                    reason: format!("no answer within {} s", wait.as_secs()),
                }),
                Ok(Ok(_)) => None,
                Ok(Err(e)) => HubProblem::of(h, e),
            };
            problems.extend(problem);
        }
        problems
    }

    pub fn hostnames(&self) -> Vec<String> {
        self.hubs.iter().map(|h| h.hostname.clone()).collect()
    }

    fn hub(&self, hostname: &str) -> Result<&LinkedHubClient, HubCallError> {
        self.hubs
            .iter()
            .find(|h| h.hostname.eq_ignore_ascii_case(hostname))
            .ok_or_else(|| HubCallError::NotLinked(hostname.to_owned()))
    }

    async fn call(
        &self,
        hostname: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<(StatusCode, Value), HubCallError> {
        let h = self.hub(hostname)?;
        let quoted = if_match.map(|e| format!("\"{e}\""));
        let headers: Vec<(&str, &str)> = quoted.iter().map(|e| ("if-match", e.as_str())).collect();
        let r = h
            .client
            .send(method, path, body, &headers)
            .await
            .map_err(|source| HubCallError::Unreachable {
                hub: h.hostname.clone(),
                source,
            })?;
        Ok((r.status, r.json()))
    }

    /// The device, or `None` when the hub does not have it.
    pub async fn get_device(
        &self,
        hostname: &str,
        id: &str,
    ) -> Result<Option<Value>, HubCallError> {
        let path = format!("/devices/{}", iot_auth::percent_encode(id));
        match self.call(hostname, Method::GET, &path, None, None).await? {
            (StatusCode::OK, v) => Ok(Some(v)),
            (StatusCode::NOT_FOUND, _) => Ok(None),
            (status, v) => Err(status_error(hostname, status, &v)),
        }
    }

    /// Creates the device (`if_match` `None`: the hub answers 409 if it exists) or replaces the
    /// version with that etag (412 if it changed).
    pub async fn put_device(
        &self,
        hostname: &str,
        id: &str,
        device: &Device,
        if_match: Option<&str>,
    ) -> Result<Value, HubCallError> {
        let path = format!("/devices/{}", iot_auth::percent_encode(id));
        let body = hub_wire::body(device);
        match self
            .call(hostname, Method::PUT, &path, Some(&body), if_match)
            .await?
        {
            (StatusCode::OK, v) => Ok(v),
            (status, v) => Err(status_error(hostname, status, &v)),
        }
    }

    /// Deletes the version of the device with this etag (412 if it changed).
    pub async fn delete_device(
        &self,
        hostname: &str,
        id: &str,
        etag: &str,
    ) -> Result<(), HubCallError> {
        let path = format!("/devices/{}", iot_auth::percent_encode(id));
        match self
            .call(hostname, Method::DELETE, &path, None, Some(etag))
            .await?
        {
            (StatusCode::NO_CONTENT | StatusCode::NOT_FOUND, _) => Ok(()),
            (status, v) => Err(status_error(hostname, status, &v)),
        }
    }

    pub async fn get_twin(&self, hostname: &str, id: &str) -> Result<Value, HubCallError> {
        let path = format!("/twins/{}", iot_auth::percent_encode(id));
        match self.call(hostname, Method::GET, &path, None, None).await? {
            (StatusCode::OK, v) => Ok(v),
            (status, v) => Err(status_error(hostname, status, &v)),
        }
    }

    /// `PUT` (replace tags and desired) or `PATCH` (merge) the twin.
    pub async fn write_twin(
        &self,
        hostname: &str,
        id: &str,
        twin: &TwinPatch,
        replace: bool,
    ) -> Result<(), HubCallError> {
        let path = format!("/twins/{}", iot_auth::percent_encode(id));
        let method = if replace { Method::PUT } else { Method::PATCH };
        let body = hub_wire::body(twin);
        match self
            .call(hostname, method, &path, Some(&body), Some("*"))
            .await?
        {
            (StatusCode::OK, _) => Ok(()),
            (status, v) => Err(status_error(hostname, status, &v)),
        }
    }
}

/// What the start-up probe found wrong with a linked hub (each message is one line).
#[derive(Debug, thiserror::Error)]
pub enum HubProblem {
    #[error(
        "linked hub {hub} ({addr}): its TLS certificate is not trusted ({reason}); the service \
         trusts only {ca}: give it the CA that issued the hub's certificate (e.g. the hub's \
         certs/root-ca.cert.pem) with `ferrohub dps init --hub-ca FILE`, or set ca = \"FILE\" \
         in that [[linked_hub]] of the config"
    )]
    Untrusted {
        hub: String,
        addr: String,
        ca: String,
        reason: String,
    },
    #[error(
        "linked hub {hub} ({addr}) refused the key of its connection string ({status}); copy the \
         hub's `ferrohub hub connection-string` into connection_string of that [[linked_hub]]"
    )]
    KeyRefused {
        hub: String,
        addr: String,
        status: StatusCode,
    },
    #[error(
        "linked hub {hub} ({addr}) is not reachable now ({reason}); devices assigned to it fail \
         to register until it is (check that it runs, and its address in that [[linked_hub]])"
    )]
    Unreachable {
        hub: String,
        addr: String,
        reason: String,
    },
}

impl HubProblem {
    fn of(h: &LinkedHubClient, e: HubCallError) -> Option<Self> {
        let (hub, addr) = (h.hostname.clone(), h.addr.clone());
        match e {
            HubCallError::Status { status, .. }
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN =>
            {
                Some(Self::KeyRefused { hub, addr, status })
            }
            HubCallError::Status { .. } | HubCallError::NotLinked(_) => None,
            HubCallError::Unreachable { source, .. } => Some(match untrusted(&source) {
                Some(reason) => Self::Untrusted {
                    hub,
                    addr,
                    ca: h.ca.display().to_string(),
                    reason,
                },
                None => Self::Unreachable {
                    hub,
                    addr,
                    reason: source.to_string(),
                },
            }),
        }
    }
}

/// The certificate error of a TLS handshake that failed on the hub's certificate.
fn untrusted(e: &ClientError) -> Option<String> {
    let ClientError::Tls { source, .. } = e else {
        return None;
    };
    match source.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(c) => Some(format!("{c:?}")),
        _ => None,
    }
}

fn status_error(hub: &str, status: StatusCode, body: &Value) -> HubCallError {
    HubCallError::Status {
        hub: hub.to_owned(),
        status,
        body: body.to_string(),
    }
}
