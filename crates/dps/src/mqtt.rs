//! The MQTT device endpoint: CONNECT with `{idScope}/registrations/{registrationId}/api-version=…`,
//! attestation at CONNECT (TLS client chain, or a SAS token as password), then register and poll
//! on `$dps/registrations/...`, answered on `$dps/registrations/res/{status}/?$rid=…`.

use std::sync::Arc;
use std::time::Duration;

use mqtt_codec::{
    ConnAck, ConnectReturnCode, Packet, PacketReader, Publish, QoS, SubAck, SubAckReturnCode,
};
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{Instrument as _, debug, info, warn};

use crate::Dps;
use crate::attest::{self, Credential};
use crate::model::{DeviceRegistration, OperationStatus};

/// Seconds devices are told to wait before polling an operation that is still assigning.
pub const RETRY_AFTER_SECS: u32 = 1;
const MAX_PACKET: usize = 64 * 1024;
const MAX_CONNECTIONS: usize = 20_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A topic a registering device publishes to.
#[derive(Debug, PartialEq, Eq)]
pub enum DpsTopic {
    Register { rid: String },
    Poll { rid: String, operation_id: String },
}

/// Parses `$dps/registrations/PUT/iotdps-register/?$rid=…` and
/// `$dps/registrations/GET/iotdps-get-operationstatus/?$rid=…&operationId=…`.
pub fn parse_topic(topic: &str) -> Option<DpsTopic> {
    let rest = topic.strip_prefix("$dps/registrations/")?;
    let (path, query) = rest.split_once('?')?;
    let param = |name: &str| {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
    };
    let rid = param("$rid").filter(|r| !r.is_empty())?;
    match path.trim_end_matches('/') {
        "PUT/iotdps-register" => Some(DpsTopic::Register { rid }),
        "GET/iotdps-get-operationstatus" => Some(DpsTopic::Poll {
            rid,
            operation_id: param("operationId")?,
        }),
        _ => None,
    }
}

/// `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]` (exactly one `$`: the Python
/// SDK splits the topic on it).
pub fn response_topic(status: u16, rid: &str, retry_after: Option<u32>) -> String {
    match retry_after {
        Some(s) => format!("$dps/registrations/res/{status}/?$rid={rid}&retry-after={s}"),
        None => format!("$dps/registrations/res/{status}/?$rid={rid}"),
    }
}

/// The registration id named by a DPS MQTT username for this ID scope.
pub fn registration_from_username<'a>(username: &'a str, scope: &str) -> Result<&'a str, String> {
    let rest = username
        .strip_prefix(scope)
        .and_then(|r| r.strip_prefix("/registrations/"))
        .ok_or_else(|| format!("username {username:?} is not {scope}/registrations/{{registrationId}}/... (unknown ID scope?)"))?;
    let (id, _) = rest.split_once('/').unwrap_or((rest, ""));
    crate::model::check_registration_id(id)?;
    Ok(id)
}

pub async fn serve(
    dps: Arc<Dps>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    while let Some((tcp, peer)) =
        ferrohub_runtime::net::accept_next(&listener, &mut shutdown, "dps-mqtt").await
    {
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(%peer, "Refusing connection: too many connections");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (dps, acceptor) = (dps.clone(), acceptor.clone());
        tokio::spawn(
            async move {
                let _permit = permit;
                let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
                // Nothing but the socket is held until the client sends its first bytes; then
                // the handshake and the session each get their own allocation in turn.
                if !ferrohub_runtime::net::first_bytes(&tcp, deadline).await {
                    debug!("Closing: nothing sent before the connect timeout");
                    return;
                }
                let Some(tls) =
                    Box::pin(ferrohub_runtime::net::handshake(&acceptor, tcp, deadline)).await
                else {
                    return;
                };
                let chain = ferrohub_runtime::net::peer_chain(&tls);
                Box::pin(connection(dps, tls, chain)).await;
            }
            .instrument(tracing::info_span!("dps-mqtt", %peer)),
        );
    }
    info!("DPS MQTT listener stopped");
}

async fn connection<S>(dps: Arc<Dps>, stream: S, chain: Vec<CertificateDer<'static>>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut reader = PacketReader::new(MAX_PACKET);
    let Ok(Ok(Some(Packet::Connect(connect)))) =
        tokio::time::timeout(CONNECT_TIMEOUT, reader.next(&mut rd)).await
    else {
        debug!("Closing: no CONNECT");
        return;
    };
    ferrohub_runtime::metrics::inc(&dps.metrics.connections);
    let refuse = |code| {
        Packet::ConnAck(ConnAck {
            session_present: false,
            code,
        })
    };
    let username = connect.username.clone().unwrap_or_default();
    let registration_id = match registration_from_username(&username, &dps.config.id_scope) {
        Ok(id) if id.eq_ignore_ascii_case(&connect.client_id) => id.to_owned(),
        Ok(id) => {
            warn!(client_id = %connect.client_id, registration_id = id, "Refusing registration: client id is not the registration id");
            let _ = write(&mut wr, &refuse(ConnectReturnCode::IdentifierRejected)).await;
            return;
        }
        Err(reason) => {
            dps.metrics.auth_failure("bad_username");
            warn!(%reason, code = "bad_username", "Refusing registration");
            let _ = write(&mut wr, &refuse(ConnectReturnCode::NotAuthorized)).await;
            return;
        }
    };
    let password = connect.password.as_deref().map(String::from_utf8_lossy);
    let credential = match &password {
        Some(p) if !p.is_empty() => Credential::Sas(p),
        _ => Credential::Chain(&chain),
    };
    let attested = match attest::attest(&dps, &registration_id, credential) {
        Ok(a) => a,
        Err(refusal) => {
            dps.metrics.auth_failure(refusal.reason());
            warn!(%registration_id, reason = %refusal, code = refusal.reason(), "Refusing registration");
            let code = if refusal.status() == 503 {
                ConnectReturnCode::ServerUnavailable
            } else {
                ConnectReturnCode::NotAuthorized
            };
            let _ = write(&mut wr, &refuse(code)).await;
            return;
        }
    };
    if write(&mut wr, &refuse(ConnectReturnCode::Accepted))
        .await
        .is_err()
    {
        return;
    }
    info!(%registration_id, "Device connected for provisioning");
    let keep_alive = Duration::from_millis(u64::from(connect.keep_alive.max(1)) * 1500);
    let mut session = Session {
        dps,
        registration_id,
        attested: Some(attested),
    };
    loop {
        let packet = match tokio::time::timeout(keep_alive, reader.next(&mut rd)).await {
            Ok(Ok(Some(p))) => p,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                warn!(error = %e, "Closing provisioning connection");
                break;
            }
            Err(_) => {
                info!("Closing provisioning connection: keep-alive expired");
                break;
            }
        };
        let replies = match session.handle(packet) {
            Ok(Some(r)) => r,
            Ok(None) => {
                debug!("Device disconnected");
                break;
            }
            Err(reason) => {
                warn!(%reason, "Disconnecting device");
                break;
            }
        };
        for r in replies {
            if write(&mut wr, &r).await.is_err() {
                return;
            }
        }
    }
    let _ = wr.shutdown().await;
}

struct Session {
    dps: Arc<Dps>,
    registration_id: String,
    /// Taken by the first register request; a second one attests again from the stored state.
    attested: Option<attest::Attested>,
}

impl Session {
    /// The packets to send back; `None` after DISCONNECT; `Err` closes the connection.
    fn handle(&mut self, packet: Packet) -> Result<Option<Vec<Packet>>, String> {
        match packet {
            Packet::Subscribe(s) => {
                let codes = s
                    .filters
                    .iter()
                    .map(|(f, _)| {
                        if f.starts_with("$dps/registrations/res/") {
                            SubAckReturnCode::Success(QoS::AtMostOnce)
                        } else {
                            SubAckReturnCode::Failure
                        }
                    })
                    .collect();
                Ok(Some(vec![Packet::SubAck(SubAck {
                    packet_id: s.packet_id,
                    return_codes: codes,
                })]))
            }
            Packet::Publish(p) => self.publish(p).map(Some),
            Packet::PingReq => Ok(Some(vec![Packet::PingResp])),
            Packet::Unsubscribe(u) => Ok(Some(vec![Packet::UnsubAck(u.packet_id)])),
            Packet::PubAck(_) => Ok(Some(vec![])),
            Packet::Disconnect => Ok(None),
            other => Err(format!("unexpected packet {other:?}")),
        }
    }

    fn publish(&mut self, p: Publish) -> Result<Vec<Packet>, String> {
        let mut out = Vec::new();
        if let (QoS::AtLeastOnce, Some(id)) = (p.qos, p.packet_id) {
            out.push(Packet::PubAck(id));
        }
        let topic =
            parse_topic(&p.topic).ok_or_else(|| format!("publish to {:?} refused", p.topic))?;
        let (status, rid, body, retry) = match topic {
            DpsTopic::Register { rid } => {
                let (status, body) = self.register(&p.payload);
                (
                    status,
                    rid,
                    body,
                    (status == 202).then_some(RETRY_AFTER_SECS),
                )
            }
            DpsTopic::Poll { rid, operation_id } => {
                match self
                    .dps
                    .operations
                    .poll(&operation_id, &self.registration_id)
                {
                    Some(s) => {
                        let status = if s.status == "assigning" { 202 } else { 200 };
                        (
                            status,
                            rid,
                            to_json(&s),
                            (status == 202).then_some(RETRY_AFTER_SECS),
                        )
                    }
                    None => (
                        404,
                        rid,
                        error_body(404_201, &format!("unknown operation {operation_id}")),
                        None,
                    ),
                }
            }
        };
        out.push(Packet::Publish(Publish::at_most_once(
            response_topic(status, &rid, retry),
            body.to_string(),
        )));
        Ok(out)
    }

    fn register(&mut self, body: &[u8]) -> (u16, Value) {
        let req: DeviceRegistration = if body.iter().all(u8::is_ascii_whitespace) {
            DeviceRegistration::default()
        } else {
            if let Err(e) = hub_wire::limits::check_json_depth(body) {
                return (400, error_body(400_004, &e));
            }
            match serde_json::from_slice(body) {
                Ok(r) => r,
                Err(e) => return (400, error_body(400_004, &format!("invalid JSON body: {e}"))),
            }
        };
        if let Some(id) = &req.registration_id
            && !id.eq_ignore_ascii_case(&self.registration_id)
        {
            return (
                400,
                error_body(
                    400_004,
                    &format!(
                        "registrationId {id:?} is not the connected {:?}",
                        self.registration_id
                    ),
                ),
            );
        }
        let attested = match self.attested.take() {
            Some(a) => a,
            None => return (409, error_body(409_000, "register once per connection")),
        };
        let status =
            crate::provision::begin(&self.dps, &self.registration_id, attested, req.payload);
        (202, to_json(&status))
    }
}

fn to_json(s: &OperationStatus) -> Value {
    serde_json::to_value(s).unwrap_or(Value::Null)
}

fn error_body(code: u32, message: &str) -> Value {
    json!({"errorCode": code, "trackingId": "ferrohub", "message": message, "timestampUtc": ferrohub_runtime::time::now_rfc3339()})
}

async fn write<W: AsyncWrite + Unpin>(wr: &mut W, packet: &Packet) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(256);
    mqtt_codec::encode(packet, &mut buf).map_err(std::io::Error::other)?;
    wr.write_all(&buf).await?;
    wr.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert_eq!(
            parse_topic("$dps/registrations/PUT/iotdps-register/?$rid=1"),
            Some(DpsTopic::Register { rid: "1".into() })
        );
        assert_eq!(
            parse_topic(
                "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=4.ab"
            ),
            Some(DpsTopic::Poll {
                rid: "2".into(),
                operation_id: "4.ab".into()
            })
        );
        assert_eq!(
            parse_topic("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2"),
            None
        );
        assert_eq!(parse_topic("$dps/registrations/PUT/iotdps-register/"), None);
        assert_eq!(parse_topic("devices/x/messages/events/"), None);
        let t = response_topic(202, "7", Some(1));
        assert_eq!(t, "$dps/registrations/res/202/?$rid=7&retry-after=1");
        assert_eq!(t.matches('$').count(), 2, "one in $dps, one before rid");
    }

    #[test]
    fn usernames() {
        let u = "0ne00000001/registrations/dev1/api-version=2019-03-31&ClientVersion=x%2F1";
        assert_eq!(registration_from_username(u, "0ne00000001"), Ok("dev1"));
        assert!(registration_from_username(u, "0ne00000002").is_err());
        assert!(
            registration_from_username("0ne00000001/registrations/-bad-/x", "0ne00000001").is_err()
        );
    }
}
