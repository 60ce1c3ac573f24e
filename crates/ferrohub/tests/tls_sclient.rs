//! Seed 001's gateway check: a TLS server using `ferrohub certs server` output (issued by the edge
//! CA, full chain presented) is accepted by `openssl s_client -CAfile root-ca.cert.pem
//! -verify_return_error` with "Verify return code: 0 (ok)", by host name and by IP address.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

mod common;

use std::io::Read as _;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::{certs_ok, hierarchy, p};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Serves TLS with `chain`/`key` for `connections` connections; returns the port.
fn serve(chain: &Path, key: &Path, connections: usize) -> u16 {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(chain)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for _ in 0..connections {
            let Ok((tcp, _)) = listener.accept() else {
                return;
            };
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut sink = Vec::new();
            let _ = tls.read_to_end(&mut sink);
        }
    });
    port
}

fn s_client(port: u16, root: &str, extra: &[&str]) -> String {
    let connect = format!("127.0.0.1:{port}");
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &connect,
            "-CAfile",
            root,
            "-verify_return_error",
            "-showcerts",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("openssl must be installed (scripts/test installs it)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn openssl_s_client_accepts_the_gateway_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    hierarchy(d);
    certs_ok(
        d,
        &[
            "server",
            "gateway.local",
            "127.0.0.1",
            "--issuer",
            "iot-edge-device-ca-gw",
        ],
    );
    let chain = d.join("server-gateway.local-full-chain.cert.pem");
    let key = d.join("server-gateway.local.key.pem");
    let root = p(d, "root-ca.cert.pem");
    let port = serve(&chain, &key, 3);

    let by_name = s_client(
        port,
        &root,
        &[
            "-servername",
            "gateway.local",
            "-verify_hostname",
            "gateway.local",
        ],
    );
    assert!(by_name.contains("Verify return code: 0 (ok)"), "{by_name}");
    assert_eq!(
        by_name.matches("BEGIN CERTIFICATE").count(),
        4,
        "full chain presented"
    );

    let by_ip = s_client(port, &root, &["-verify_ip", "127.0.0.1"]);
    assert!(by_ip.contains("Verify return code: 0 (ok)"), "{by_ip}");

    // The same server is refused for a name that is not in its SANs (seed 001's troubleshooting).
    let wrong = s_client(port, &root, &["-verify_hostname", "other.example"]);
    assert!(!wrong.contains("Verify return code: 0 (ok)"), "{wrong}");
    assert!(wrong.contains("hostname mismatch"), "{wrong}");
}

#[test]
fn openssl_s_client_refuses_an_untrusted_root() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    hierarchy(d);
    certs_ok(d, &["server", "localhost"]);
    let other = tempfile::tempdir().unwrap();
    certs_ok(other.path(), &["root-ca"]);
    let port = serve(
        &d.join("server-localhost-full-chain.cert.pem"),
        &d.join("server-localhost.key.pem"),
        1,
    );
    let text = s_client(port, &p(other.path(), "root-ca.cert.pem"), &[]);
    assert!(!text.contains("Verify return code: 0 (ok)"), "{text}");
}
