//! One upstream MQTT/TLS connection to the hub on behalf of a downstream device: client id and
//! username name the device, the username carries `auth-chain={device};{edge}`, the password is
//! the gateway's `$edgeHub` SAS token.

use std::sync::Arc;

use mqtt_codec::{Connect, ConnectReturnCode, Packet, Publish, QoS};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach the hub at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS with the hub: {0}")]
    Tls(std::io::Error),
    #[error("the hub refused {device}: {code:?}")]
    Refused {
        device: String,
        code: ConnectReturnCode,
    },
    #[error("the hub connection broke: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
}

pub struct Upstream {
    stream: TlsStream<TcpStream>,
    buf: Vec<u8>,
    next_id: u16,
}

/// Where and how to reach the hub.
#[derive(Clone)]
pub struct HubLink {
    pub hostname: String,
    pub addr: String,
    pub tls: Arc<rustls::ClientConfig>,
    pub edge_id: String,
}

impl Upstream {
    /// Connects for `device` with `token` (the `$edgeHub` SAS).
    pub async fn connect(link: &HubLink, device: &str, token: &str) -> Result<Self, UpstreamError> {
        let tcp =
            TcpStream::connect(&link.addr)
                .await
                .map_err(|source| UpstreamError::Connect {
                    addr: link.addr.clone(),
                    source,
                })?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(link.hostname.clone())
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(link.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(UpstreamError::Tls)?;
        let mut up = Self {
            stream,
            buf: Vec::with_capacity(8192),
            next_id: 1,
        };
        let username = format!(
            "{}/{device}/?api-version=2021-04-12&auth-chain={device};{}",
            link.hostname, link.edge_id
        );
        up.send(&Packet::Connect(Connect {
            protocol_name: "MQTT".into(),
            protocol_level: 4,
            clean_session: true,
            keep_alive: 300,
            client_id: device.to_owned(),
            will: None,
            username: Some(username),
            password: Some(token.as_bytes().to_vec()),
        }))
        .await?;
        match up.recv().await? {
            Packet::ConnAck(a) if a.code == ConnectReturnCode::Accepted => Ok(up),
            Packet::ConnAck(a) => Err(UpstreamError::Refused {
                device: device.to_owned(),
                code: a.code,
            }),
            other => Err(UpstreamError::Protocol(format!(
                "expected CONNACK, got {other:?}"
            ))),
        }
    }

    async fn send(&mut self, p: &Packet) -> Result<(), UpstreamError> {
        let mut out = Vec::with_capacity(256);
        mqtt_codec::encode(p, &mut out).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        self.stream.write_all(&out).await?;
        self.stream.flush().await?;
        Ok(())
    }

    async fn recv(&mut self) -> Result<Packet, UpstreamError> {
        loop {
            if let Some((p, n)) = mqtt_codec::decode(&self.buf, 1 << 20)
                .map_err(|e| UpstreamError::Protocol(e.to_string()))?
            {
                self.buf.drain(..n);
                return Ok(p);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(UpstreamError::Protocol(
                    "the hub closed the connection".into(),
                ));
            }
        }
    }

    /// Publishes every message at QoS 1 (all in flight at once) and waits until the hub has
    /// acknowledged each one (each is then durable at the hub).
    pub async fn publish_all(
        &mut self,
        messages: Vec<(String, Vec<u8>)>,
    ) -> Result<(), UpstreamError> {
        let mut waiting = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(messages.len() * 128);
        for (topic, payload) in messages {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).filter(|n| *n != 0).unwrap_or(1);
            let p = Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic,
                packet_id: Some(id),
                payload,
            });
            mqtt_codec::encode(&p, &mut out).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
            waiting.insert(id);
        }
        self.stream.write_all(&out).await?;
        self.stream.flush().await?;
        while !waiting.is_empty() {
            match self.recv().await? {
                Packet::PubAck(got) => {
                    waiting.remove(&got);
                }
                // Cloud-to-device, twin or method traffic is not relayed by this gateway yet.
                Packet::Publish(_) | Packet::PingResp => {}
                other => return Err(UpstreamError::Protocol(format!("unexpected {other:?}"))),
            }
        }
        Ok(())
    }
}
