//! A child asking for a host name (TLS SNI) that the gateway's server certificate does not name:
//! seed 001's downstream `GatewayHostName` mismatch. The child fails its own certificate check;
//! the gateway logs it once with the names it has and the fix, and counts it.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::gateway as support;
use test_support::hub as common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::TestHub;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};

/// The log lines written while the test's subscriber is the default.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A TLS handshake with the gateway asking for `name`; whether the child accepted the certificate.
async fn handshake(gw: &support::Gw, name: &str) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&gw.root).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .is_ok()
}

fn mismatches(gw: &support::Gw) -> f64 {
    let text = edge::store::render(&gw.gateway);
    text.lines()
        .find_map(|l| l.strip_prefix("gateway_tls_sni_mismatch_total "))
        .unwrap_or_else(|| panic!("gateway_tls_sni_mismatch_total missing:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_child_asking_for_a_name_the_certificate_lacks_is_logged_and_counted() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let t = TestHub::start().await;
    support::edge_device(&t).await;
    let gw = support::start(&t, &[]).await;
    let _ = gw.connect("gw").await; // the gateway is up (and the name it has is accepted)

    assert!(
        handshake(&gw, common::HOST).await,
        "the certificate's own name"
    );
    assert_eq!(mismatches(&gw), 0.0);
    assert!(!log.text().contains("TLS SNI"), "{}", log.text());

    assert!(
        !handshake(&gw, "wrong-gateway.example").await,
        "the child refuses a certificate without its GatewayHostName"
    );
    assert_eq!(mismatches(&gw), 1.0);
    let text = log.text();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("TLS SNI")).collect();
    assert_eq!(lines.len(), 1, "one line per connection: {text}");
    let line = lines[0];
    assert!(
        line.contains("wrong-gateway.example")
            && line.contains(&format!("DNS:{}", common::HOST))
            && line.contains("GatewayHostName"),
        "{line}"
    );
    // The gateway keeps serving.
    assert!(handshake(&gw, common::HOST).await);
    let _ = gw.stop.send(true);
}
