//! A minimal MQTT device client over TLS with an X.509 identity or a SAS token (quickstart and
//! bench), directly to the hub or through a transparent gateway (`*_via`).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use mqtt_codec::{Connect, ConnectReturnCode, Packet, Publish, QoS};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

type Stream = TlsStream<TcpStream>;

/// The server answered CONNECT with a refusal (find it with `anyhow::Error::downcast_ref`).
#[derive(Debug)]
pub struct Refused {
    pub client_id: String,
    pub code: ConnectReturnCode,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} was refused: {:?}", self.client_id, self.code)
    }
}

impl std::error::Error for Refused {}

/// A connected, authenticated device.
pub struct DeviceConn {
    pub rd: ReadHalf<Stream>,
    pub wr: WriteHalf<Stream>,
    pub buf: Vec<u8>,
    next_id: u16,
}

impl DeviceConn {
    /// TLS to `addr` as `host`, presenting `chain`/`key_pem`, then CONNECT as `client_id` (no password).
    pub async fn connect_x509(
        addr: SocketAddr,
        host: &str,
        roots: Arc<rustls::RootCertStore>,
        client_id: &str,
        chain: Vec<CertificateDer<'static>>,
        key_pem: &str,
    ) -> Result<Self> {
        let username = format!("{host}/{client_id}/?api-version=2021-04-12");
        Self::connect_x509_as(addr, host, roots, client_id, &username, chain, key_pem).await
    }

    /// Like [`DeviceConn::connect_x509`] with any MQTT username (the provisioning service wants
    /// `{idScope}/registrations/{registrationId}/api-version=...`).
    pub async fn connect_x509_as(
        addr: SocketAddr,
        host: &str,
        roots: Arc<rustls::RootCertStore>,
        client_id: &str,
        username: &str,
        chain: Vec<CertificateDer<'static>>,
        key_pem: &str,
    ) -> Result<Self> {
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("device key")?;
        let cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        Self::connect_with(addr, host, cfg, client_id, username, None).await
    }

    /// TLS without a client certificate, then CONNECT with a SAS token as the password.
    pub async fn connect_sas(
        addr: SocketAddr,
        host: &str,
        roots: Arc<rustls::RootCertStore>,
        client_id: &str,
        token: &str,
    ) -> Result<Self> {
        Self::connect_sas_via(addr, host, host, roots, client_id, token).await
    }

    /// A downstream device through a gateway: TLS to `addr` verifies `gateway_host` (its
    /// `GatewayHostName`), while the username names the hub (`hub_host`), as the SDKs do.
    pub async fn connect_sas_via(
        addr: SocketAddr,
        gateway_host: &str,
        hub_host: &str,
        roots: Arc<rustls::RootCertStore>,
        client_id: &str,
        token: &str,
    ) -> Result<Self> {
        let cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let username = format!("{hub_host}/{client_id}/?api-version=2021-04-12");
        Self::connect_with(addr, gateway_host, cfg, client_id, &username, Some(token)).await
    }

    /// Like [`DeviceConn::connect_sas_via`] with an X.509 identity.
    pub async fn connect_x509_via(
        addr: SocketAddr,
        gateway_host: &str,
        hub_host: &str,
        roots: Arc<rustls::RootCertStore>,
        client_id: &str,
        chain: Vec<CertificateDer<'static>>,
        key_pem: &str,
    ) -> Result<Self> {
        let username = format!("{hub_host}/{client_id}/?api-version=2021-04-12");
        Self::connect_x509_as(
            addr,
            gateway_host,
            roots,
            client_id,
            &username,
            chain,
            key_pem,
        )
        .await
    }

    /// TLS to `addr` verifying `host` with `cfg` (its client certificate, if any), then CONNECT;
    /// a CONNACK other than accepted is a [`Refused`] error.
    pub async fn connect_with(
        addr: SocketAddr,
        host: &str,
        cfg: rustls::ClientConfig,
        client_id: &str,
        username: &str,
        password: Option<&str>,
    ) -> Result<Self> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        tcp.set_nodelay(true)?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from(host.to_owned())?, tcp)
            .await
            .with_context(|| format!("TLS handshake with {host} at {addr} failed"))?;
        let (rd, wr) = tokio::io::split(tls);
        let mut conn = Self {
            rd,
            wr,
            buf: Vec::with_capacity(16 * 1024),
            next_id: 1,
        };
        conn.send(&Packet::Connect(Box::new(Connect {
            protocol_name: "MQTT".into(),
            protocol_level: 4,
            clean_session: true,
            keep_alive: 60,
            client_id: client_id.to_owned(),
            will: None,
            username: Some(username.to_owned()),
            password: password.map(|p| p.as_bytes().to_vec()),
        })))
        .await?;
        match conn.recv().await? {
            Packet::ConnAck(a) if a.code == ConnectReturnCode::Accepted => Ok(conn),
            Packet::ConnAck(a) => Err(Refused {
                client_id: client_id.to_owned(),
                code: a.code,
            }
            .into()),
            other => bail!("{client_id}: expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, packet: &Packet) -> Result<()> {
        let mut out = Vec::with_capacity(256);
        mqtt_codec::encode(packet, &mut out)?;
        self.wr.write_all(&out).await?;
        Ok(())
    }

    pub async fn recv(&mut self) -> Result<Packet> {
        read_packet(&mut self.rd, &mut self.buf).await
    }

    /// A QoS 1 PUBLISH with the next packet id; returns that id.
    pub async fn publish(&mut self, topic: &str, payload: Vec<u8>) -> Result<u16> {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).filter(|n| *n != 0).unwrap_or(1);
        let p = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: topic.to_owned(),
            packet_id: Some(id),
            payload,
        };
        self.send(&Packet::Publish(p)).await?;
        Ok(id)
    }

    /// A QoS 0 PUBLISH (twin requests and method answers).
    pub async fn publish_qos0(&mut self, topic: &str, payload: Vec<u8>) -> Result<()> {
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.to_owned(),
            packet_id: None,
            payload,
        }))
        .await
    }

    /// Subscribes to `filter` (QoS 0) and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str) -> Result<()> {
        let packet_id = self.next_id;
        self.next_id = self.next_id.checked_add(1).filter(|n| *n != 0).unwrap_or(1);
        self.send(&Packet::Subscribe(mqtt_codec::Subscribe {
            packet_id,
            filters: vec![(filter.to_owned(), QoS::AtMostOnce)],
        }))
        .await?;
        match self.recv().await? {
            Packet::SubAck(a) if a.packet_id == packet_id => Ok(()),
            other => bail!("expected SUBACK {packet_id}, got {other:?}"),
        }
    }

    /// Publishes and waits for its PUBACK (the hub sends it once the message is durable).
    pub async fn publish_acked(&mut self, topic: &str, payload: Vec<u8>) -> Result<()> {
        let id = self.publish(topic, payload).await?;
        match self.recv().await? {
            Packet::PubAck(got) if got == id => Ok(()),
            other => bail!("expected PUBACK {id}, got {other:?}"),
        }
    }

    /// Publishes every message (QoS 1, all in flight at once) and waits for all their PUBACKs.
    pub async fn publish_all_acked(&mut self, messages: Vec<(String, Vec<u8>)>) -> Result<()> {
        let mut waiting = std::collections::HashSet::new();
        for (topic, payload) in messages {
            waiting.insert(self.publish(&topic, payload).await?);
        }
        while !waiting.is_empty() {
            match self.recv().await? {
                Packet::PubAck(id) => {
                    waiting.remove(&id);
                }
                Packet::Publish(_) | Packet::PingResp => {}
                other => bail!("expected PUBACKs, got {other:?}"),
            }
        }
        Ok(())
    }

    /// The next PUBLISH from the server (a method call, a twin answer or patch, a C2D message).
    pub async fn next_publish(&mut self) -> Result<Publish> {
        loop {
            match self.recv().await? {
                Packet::Publish(p) => return Ok(p),
                Packet::PingResp | Packet::PubAck(_) => {}
                other => bail!("expected a PUBLISH, got {other:?}"),
            }
        }
    }

    /// Answers a direct method call received on `request_topic`
    /// (`$iothub/methods/POST/{name}/?$rid={rid}`); returns the method name.
    pub async fn answer_method(
        &mut self,
        request_topic: &str,
        status: u16,
        payload: Vec<u8>,
    ) -> Result<String> {
        let (name, rid) = parse_method_topic(request_topic)
            .with_context(|| format!("{request_topic:?} is not a method request"))?;
        self.publish_qos0(
            &format!("$iothub/methods/res/{status}/?$rid={rid}"),
            payload,
        )
        .await?;
        Ok(name.to_owned())
    }

    pub async fn disconnect(mut self) {
        let _ = self.send(&Packet::Disconnect).await;
        let _ = self.wr.shutdown().await;
    }
}

/// `$iothub/methods/POST/{name}/?$rid={rid}` → (name, rid).
pub fn parse_method_topic(topic: &str) -> Option<(&str, &str)> {
    let rest = topic.strip_prefix("$iothub/methods/POST/")?;
    let (name, query) = rest.split_once("/?")?;
    let rid = query.split('&').find_map(|kv| kv.strip_prefix("$rid="))?;
    Some((name, rid))
}

pub async fn read_packet<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut Vec<u8>) -> Result<Packet> {
    loop {
        if let Some((p, n)) = mqtt_codec::decode(buf, 1 << 20)? {
            buf.drain(..n);
            return Ok(p);
        }
        if rd.read_buf(buf).await? == 0 {
            bail!("the server closed the connection");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn method_topics_parse() {
        assert_eq!(
            super::parse_method_topic("$iothub/methods/POST/reboot/?$rid=1f"),
            Some(("reboot", "1f"))
        );
        assert_eq!(
            super::parse_method_topic("$iothub/twin/res/200/?$rid=1"),
            None
        );
    }
}
