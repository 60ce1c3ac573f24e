//! A device's MQTT connection over TLS with an X.509 identity or a SAS token (quickstart, connect
//! check and bench), directly to the hub or through a transparent gateway (`*_via`): the TLS and
//! the IoT Hub username here, the MQTT itself in the shared `mqtt_client::Client`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use mqtt_client::{Client, ClientError, Login};
use mqtt_codec::{ConnectReturnCode, Packet, Publish, QoS};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
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
    client: Client<Stream>,
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
        let mut login = Login::new(client_id).username(username);
        if let Some(p) = password {
            login = login.password(p.as_bytes());
        }
        match Client::connect(tls, &login).await {
            Ok(client) => Ok(Self { client }),
            Err(ClientError::Refused { client_id, code }) => {
                Err(Refused { client_id, code }.into())
            }
            Err(e) => Err(anyhow::Error::new(e).context(format!("{client_id}: CONNECT"))),
        }
    }

    pub async fn send(&mut self, packet: &Packet) -> Result<()> {
        Ok(self.client.send(packet).await?)
    }

    pub async fn recv(&mut self) -> Result<Packet> {
        Ok(self.client.recv().await?)
    }

    /// A QoS 1 PUBLISH with the next packet id; returns that id.
    pub async fn publish(&mut self, topic: &str, payload: Vec<u8>) -> Result<u16> {
        let id = self
            .client
            .publish(topic, payload, QoS::AtLeastOnce)
            .await?;
        id.context("a QoS 1 PUBLISH without a packet id")
    }

    /// A QoS 0 PUBLISH (twin requests and method answers).
    pub async fn publish_qos0(&mut self, topic: &str, payload: Vec<u8>) -> Result<()> {
        self.client.publish(topic, payload, QoS::AtMostOnce).await?;
        Ok(())
    }

    /// Subscribes to `filter` (QoS 0) and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str) -> Result<()> {
        self.client.subscribe(&[(filter, QoS::AtMostOnce)]).await?;
        Ok(())
    }

    /// Publishes and waits for its PUBACK (the hub sends it once the message is durable).
    pub async fn publish_acked(&mut self, topic: &str, payload: Vec<u8>) -> Result<()> {
        Ok(self.client.publish_acked(topic, payload).await?)
    }

    /// Publishes every message (QoS 1, all in flight at once) and waits for all their PUBACKs.
    pub async fn publish_all_acked(&mut self, messages: Vec<(String, Vec<u8>)>) -> Result<()> {
        Ok(self.client.publish_all_acked(messages).await?)
    }

    /// The next PUBLISH from the server (a method call, a twin answer or patch, a C2D message).
    pub async fn next_publish(&mut self) -> Result<Publish> {
        Ok(self.client.next_publish().await?)
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

    pub async fn disconnect(self) {
        self.client.disconnect().await;
    }
}

/// `$iothub/methods/POST/{name}/?$rid={rid}` → (name, rid).
pub fn parse_method_topic(topic: &str) -> Option<(&str, &str)> {
    let rest = topic.strip_prefix("$iothub/methods/POST/")?;
    let (name, query) = rest.split_once("/?")?;
    let rid = query.split('&').find_map(|kv| kv.strip_prefix("$rid="))?;
    Some((name, rid))
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
