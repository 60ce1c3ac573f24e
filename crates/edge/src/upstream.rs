//! One upstream MQTT/TLS connection to the hub for one identity behind the gateway. A
//! downstream device or module connects on its behalf: client id and username name it, the
//! username carries `auth-chain={identity};{edge}`, the password is the gateway's `$edgeHub` SAS
//! token. The gateway's own `$edgeHub` module connects as itself (no chain).

use std::sync::Arc;

use mqtt_client::{Client, ClientError, Incoming, Login, Outgoing};
use mqtt_codec::{ConnectReturnCode, Packet};
use rustls::pki_types::ServerName;
use tokio::io::{ReadHalf, WriteHalf};
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
    #[error("the hub refused {client}: {code:?}")]
    Refused {
        client: String,
        code: ConnectReturnCode,
    },
    #[error("the hub connection broke: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("the hub is not connected")]
    Offline,
    #[error("no $edgeHub token: {0}")]
    Token(String),
}

/// Where and how to reach the hub.
#[derive(Clone)]
pub struct HubLink {
    pub hostname: String,
    pub addr: String,
    pub tls: Arc<rustls::ClientConfig>,
    pub edge_id: String,
}

/// The read half of an upstream connection.
pub struct Reader(Incoming<ReadHalf<TlsStream<TcpStream>>>);

/// The write half of an upstream connection.
pub struct Writer(Outgoing<WriteHalf<TlsStream<TcpStream>>>);

impl From<ClientError> for UpstreamError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Io(e) | ClientError::Read(mqtt_codec::ReadError::Io(e)) => Self::Io(e),
            ClientError::Refused { client_id, code } => Self::Refused {
                client: client_id,
                code,
            },
            ClientError::Closed => Self::Protocol("the hub closed the connection".into()),
            other => Self::Protocol(other.to_string()),
        }
    }
}

/// Connects as `client_id` (`device` or `device/module`) with `token`. With `on_behalf`, the
/// username carries the auth chain to this gateway's edge device.
pub async fn connect(
    link: &HubLink,
    client_id: &str,
    on_behalf: bool,
    token: &str,
) -> Result<(Reader, Writer), UpstreamError> {
    let tcp = TcpStream::connect(&link.addr)
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
    let mut username = format!("{}/{client_id}/?api-version=2021-04-12", link.hostname);
    if on_behalf {
        username.push_str(&format!("&auth-chain={client_id};{}", link.edge_id));
    }
    let login = Login::new(client_id)
        .username(username)
        .password(token.as_bytes())
        .keep_alive(120);
    let (rd, wr) = Client::connect(stream, &login).await?.into_split();
    Ok((Reader(rd), Writer(wr)))
}

impl Writer {
    /// Writes the packets in one flush.
    pub async fn send(&mut self, packets: &[Packet]) -> Result<(), UpstreamError> {
        Ok(self.0.send(packets).await?)
    }

    /// Sends DISCONNECT and closes.
    pub async fn close(self) {
        self.0.close().await;
    }
}

impl Reader {
    /// The next packet from the hub (cancel safe).
    pub async fn recv(&mut self) -> Result<Packet, UpstreamError> {
        Ok(self.0.recv().await?)
    }
}
