//! A minimal MQTT device client over TLS with an X.509 identity (quickstart and bench).

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
        let cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let username = format!("{host}/{client_id}/?api-version=2021-04-12");
        Self::connect_with(addr, host, cfg, client_id, &username, Some(token)).await
    }

    async fn connect_with(
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
            .context("TLS handshake with the hub failed")?;
        let (rd, wr) = tokio::io::split(tls);
        let mut conn = Self {
            rd,
            wr,
            buf: Vec::with_capacity(16 * 1024),
            next_id: 1,
        };
        conn.send(&Packet::Connect(Connect {
            protocol_name: "MQTT".into(),
            protocol_level: 4,
            clean_session: true,
            keep_alive: 60,
            client_id: client_id.to_owned(),
            will: None,
            username: Some(username.to_owned()),
            password: password.map(|p| p.as_bytes().to_vec()),
        }))
        .await?;
        match conn.recv().await? {
            Packet::ConnAck(a) if a.code == ConnectReturnCode::Accepted => Ok(conn),
            other => bail!("{client_id} was refused: {other:?}"),
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

    pub async fn disconnect(mut self) {
        let _ = self.send(&Packet::Disconnect).await;
        let _ = self.wr.shutdown().await;
    }
}

pub async fn read_packet<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut Vec<u8>) -> Result<Packet> {
    loop {
        if let Some((p, n)) = mqtt_codec::decode(buf, 1 << 20)? {
            buf.drain(..n);
            return Ok(p);
        }
        if rd.read_buf(buf).await? == 0 {
            bail!("the hub closed the connection");
        }
    }
}
