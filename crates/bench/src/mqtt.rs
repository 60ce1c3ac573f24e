//! The load generator's MQTT 3.1.1 client pieces, on the project's codec and rustls (aws-lc-rs):
//! TLS with a device certificate, TCP_NODELAY, CONNECT/CONNACK (through `mqtt_client`). Both servers get the same client:
//! TLS 1.3, X25519 only (OpenSSL 3.0 in mosquitto has no post-quantum hybrid; rustls would prefer
//! one with ferrohub), no session resumption (every connection is a full handshake).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use mqtt_client::{Client, Login};
use mqtt_codec::{Packet, PacketReader, Publish, QoS};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::DeviceCreds;
use super::process::ensure_loopback;

pub type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// The client TLS configuration for one device: its chain and key, the bench CA as the only root.
pub fn client_config(
    creds: &DeviceCreds,
    roots: Arc<rustls::RootCertStore>,
) -> Result<Arc<rustls::ClientConfig>> {
    let key = PrivateKeyDer::from_pem_slice(creds.key_pem.as_bytes()).context("device key")?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(creds.chain.clone(), key)?;
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

/// The bench clients' crypto: aws-lc-rs with X25519 as the only key exchange.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    Arc::new(provider)
}

/// What a connection negotiated, for the record.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Negotiated {
    pub protocol: String,
    pub cipher_suite: String,
    pub key_exchange: String,
}

pub fn negotiated(tls: &Tls) -> Negotiated {
    let c = tls.get_ref().1;
    Negotiated {
        protocol: format!("{:?}", c.protocol_version()),
        cipher_suite: c
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default(),
        key_exchange: c
            .negotiated_key_exchange_group()
            .map(|g| format!("{:?}", g.name()))
            .unwrap_or_default(),
    }
}

/// TCP (TCP_NODELAY) + TLS as `localhost` + CONNECT as `client_id` with the hub's username form
/// (mosquitto replaces the username by the certificate's CN); waits for CONNACK 0.
pub async fn connect_tls(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    client_id: &str,
    keep_alive: u16,
) -> Result<Tls> {
    ensure_loopback(addr)?;
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    tcp.set_nodelay(true)?;
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from("localhost")?, tcp)
        .await
        .with_context(|| format!("TLS handshake with {addr} failed"))?;
    mqtt_connect(tls, client_id, keep_alive, None).await
}

/// Plain TCP (TCP_NODELAY) + CONNECT, with a SAS token as the password for the hub's plain
/// listener (mosquitto's takes none).
pub async fn connect_plain(
    addr: SocketAddr,
    client_id: &str,
    keep_alive: u16,
    password: Option<String>,
) -> Result<TcpStream> {
    ensure_loopback(addr)?;
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    tcp.set_nodelay(true)?;
    mqtt_connect(tcp, client_id, keep_alive, password).await
}

async fn mqtt_connect<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    client_id: &str,
    keep_alive: u16,
    password: Option<String>,
) -> Result<S> {
    let login = Login {
        password: password.map(String::into_bytes),
        ..Login::new(client_id)
            .username(format!("localhost/{client_id}/?api-version=2021-04-12"))
            .keep_alive(keep_alive)
    };
    // A clean session that has subscribed to nothing: the server sends nothing after the
    // CONNACK unasked, so the client's reader holds no bytes and is dropped.
    let (s, _) = Client::connect(s, &login).await?.into_parts();
    Ok(s)
}

/// Sends DISCONNECT and closes the TLS session and the socket.
pub async fn disconnect<S: AsyncWrite + Unpin>(s: &mut S) {
    let mut out = Vec::with_capacity(2);
    if mqtt_codec::encode(&Packet::Disconnect, &mut out).is_ok() {
        let _ = s.write_all(&out).await;
    }
    let _ = s.shutdown().await;
}

/// A PUBLISH as bytes (appended to `out`).
pub fn encode_publish(
    out: &mut Vec<u8>,
    topic: &str,
    qos: QoS,
    id: u16,
    payload: Vec<u8>,
) -> Result<()> {
    mqtt_codec::encode(
        &Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.to_owned(),
            packet_id: (qos != QoS::AtMostOnce).then_some(id),
            payload,
        }),
        out,
    )?;
    Ok(())
}

/// The largest packet the bench's clients accept.
pub const MAX_PACKET: usize = 1 << 20;

/// A reader for a bench connection: its buffer is kept, bench clients read steadily.
pub fn packet_reader(capacity: usize) -> PacketReader {
    PacketReader::with_capacity(MAX_PACKET, capacity)
}

/// Reads one packet (keeping any bytes after it in `reader`); the end of the stream is an error.
pub async fn read_packet<R: AsyncRead + Unpin>(
    rd: &mut R,
    reader: &mut PacketReader,
) -> Result<Packet> {
    reader
        .next(rd)
        .await?
        .context("the server closed the connection")
}
