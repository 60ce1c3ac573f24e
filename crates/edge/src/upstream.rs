//! One upstream MQTT/TLS connection to the hub for one identity behind the gateway. A
//! downstream device or module connects on its behalf: client id and username name it, the
//! username carries `auth-chain={identity};{edge}`, the password is the gateway's `$edgeHub` SAS
//! token. The gateway's own `$edgeHub` module connects as itself (no chain).

use std::sync::Arc;

use mqtt_codec::{Connect, ConnectReturnCode, Packet};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Largest packet accepted from the hub.
const MAX_PACKET: usize = 1 << 20;

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
pub struct Reader {
    rd: ReadHalf<TlsStream<TcpStream>>,
    buf: Vec<u8>,
}

/// The write half of an upstream connection.
pub struct Writer {
    wr: WriteHalf<TlsStream<TcpStream>>,
    buf: Vec<u8>,
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
    let (rd, wr) = tokio::io::split(stream);
    let mut reader = Reader {
        rd,
        buf: Vec::with_capacity(8192),
    };
    let mut writer = Writer {
        wr,
        buf: Vec::with_capacity(8192),
    };
    let mut username = format!("{}/{client_id}/?api-version=2021-04-12", link.hostname);
    if on_behalf {
        username.push_str(&format!("&auth-chain={client_id};{}", link.edge_id));
    }
    writer
        .send(&[Packet::Connect(Box::new(Connect {
            protocol_name: "MQTT".into(),
            protocol_level: 4,
            clean_session: true,
            keep_alive: 120,
            client_id: client_id.to_owned(),
            will: None,
            username: Some(username),
            password: Some(token.as_bytes().to_vec()),
        }))])
        .await?;
    match reader.recv().await? {
        Packet::ConnAck(a) if a.code == ConnectReturnCode::Accepted => Ok((reader, writer)),
        Packet::ConnAck(a) => Err(UpstreamError::Refused {
            client: client_id.to_owned(),
            code: a.code,
        }),
        other => Err(UpstreamError::Protocol(format!(
            "expected CONNACK, got {other:?}"
        ))),
    }
}

impl Writer {
    /// Writes the packets in one flush.
    pub async fn send(&mut self, packets: &[Packet]) -> Result<(), UpstreamError> {
        self.buf.clear();
        for p in packets {
            mqtt_codec::encode(p, &mut self.buf)
                .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        }
        self.wr.write_all(&self.buf).await?;
        self.wr.flush().await?;
        Ok(())
    }

    /// Sends DISCONNECT and closes.
    pub async fn close(mut self) {
        let _ = self.send(&[Packet::Disconnect]).await;
        let _ = self.wr.shutdown().await;
    }
}

impl Reader {
    /// The next packet from the hub.
    pub async fn recv(&mut self) -> Result<Packet, UpstreamError> {
        loop {
            if let Some((p, n)) = mqtt_codec::decode(&self.buf, MAX_PACKET)
                .map_err(|e| UpstreamError::Protocol(e.to_string()))?
            {
                self.buf.drain(..n);
                return Ok(p);
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Err(UpstreamError::Protocol(
                    "the hub closed the connection".into(),
                ));
            }
        }
    }
}
