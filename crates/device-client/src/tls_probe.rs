//! A loopback TLS handshake that proves a server certificate chain works for a client that trusts
//! only the root: the check seed 001 does with `openssl s_client`, done in-process.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// What the client saw.
pub struct Probe {
    pub version: String,
    pub chain_len: usize,
}

/// Serves `chain`/`key` on 127.0.0.1 (ephemeral port) and connects as `server_name`, trusting `root`.
pub fn handshake(chain: &Path, key: &Path, root: &Path, server_name: &str) -> Result<Probe> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(chain)
        .with_context(|| format!("cannot read {}", chain.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad PEM in {}", chain.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("bad key {}", key.display()))?;
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the server certificate and key do not fit together")?;

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(root)
        .with_context(|| format!("cannot read {}", root.display()))?
    {
        roots
            .add(c?)
            .context("the root certificate is not usable as a trust anchor")?;
    }
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();

    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    let addr = listener.local_addr()?;
    let server = Arc::new(server);
    let serving = std::thread::spawn(move || -> Result<()> {
        let (tcp, _) = listener.accept()?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let conn = rustls::ServerConnection::new(server)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf)?;
        tls.write_all(b"pong")?;
        tls.flush()?;
        Ok(())
    });

    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|_| anyhow!("bad server name {server_name}"))?;
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ClientConnection::new(Arc::new(client), name)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"ping")
        .and_then(|()| tls.flush())
        .context("TLS handshake failed")?;
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).context("TLS handshake failed")?;
    let version = format!(
        "{:?}",
        tls.conn
            .protocol_version()
            .unwrap_or(rustls::ProtocolVersion::Unknown(0))
    );
    let chain_len = tls.conn.peer_certificates().map_or(0, <[_]>::len);
    serving
        .join()
        .map_err(|_| anyhow!("the probe server panicked"))?
        .context("the probe server failed")?;
    Ok(Probe { version, chain_len })
}

/// Whether `addr` (`host:port`) completes a TLS handshake for server name `host` trusting
/// exactly `roots` (`system check`); the error says what failed.
pub async fn reachable(host: &str, addr: &str, roots: &[pki::Certificate]) -> Result<(), String> {
    connect(addr, host, roots).await.map(drop)
}

/// A TLS connection to `addr` (`host:port`) verifying the server as `name` against exactly
/// `roots`; the error says what failed and what to look at.
pub async fn connect(
    addr: &str,
    name: &str,
    roots: &[pki::Certificate],
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let mut store = rustls::RootCertStore::empty();
    for c in roots {
        store.add(c.to_rustls()).map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(store)
        .with_no_client_auth();
    let server = ServerName::try_from(name.to_owned()).map_err(|e| format!("{name}: {e}"))?;
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| format!("connecting to {addr} timed out: check the network and the hub address"))?
    .map_err(|e| format!("cannot connect to {addr}: {e}: is the hub running and reachable?"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server, tcp)
        .await
        .map_err(|e| {
            format!("TLS with {addr} failed: {e}: does the trust bundle hold the hub's CA?")
        })
}
