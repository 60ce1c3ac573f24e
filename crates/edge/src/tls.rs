//! The gateway's local endpoints with a replaceable server certificate: when one is set
//! ([`Gateway::use_server_cert`]) the local hub's MQTT and HTTPS listeners take their certificate
//! from it at every handshake, so a renewal reaches new connections without dropping open ones.
//! Without one, the local hub serves the files named in `edge.toml` ([`hub::run`]).

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::{EdgeError, Gateway};

impl Gateway {
    /// Serves children with `cert` (instead of the `tls_cert`/`tls_key` files) from the next
    /// [`Gateway::run`] on. Returns false when one was set already (the first one stays).
    pub fn use_server_cert(&self, cert: Arc<hub::tls::ReloadableCert>) -> bool {
        self.server_cert.set(cert).is_ok()
    }

    /// The replaceable server certificate, when one is in use.
    pub fn server_cert(&self) -> Option<Arc<hub::tls::ReloadableCert>> {
        self.server_cert.get().cloned()
    }
}

/// The local hub on `mqtt` (children) and `https` (internal), until `shutdown`.
pub(crate) async fn serve_local(
    g: Arc<Gateway>,
    mqtt: TcpListener,
    https: TcpListener,
    shutdown: watch::Receiver<bool>,
) -> Result<(), EdgeError> {
    let local = g.local.clone();
    let Some(cert) = g.server_cert() else {
        drop(g);
        return Ok(hub::run(local, hub::Listeners { mqtt, https }, shutdown).await?);
    };
    drop(g);
    let mqtt_tls = hub::tls::device_server_config_reloadable(cert.clone(), &[])?;
    let https_tls = hub::tls::device_server_config_reloadable(cert, &[b"h2", b"http/1.1"])?;
    info!(mqtt = ?mqtt.local_addr().ok(), "Gateway serving children (renewable certificate)");
    let m = tokio::spawn(hub::mqtt::serve(
        local.clone(),
        mqtt,
        mqtt_tls,
        shutdown.clone(),
    ));
    let h = tokio::spawn(hub::api::serve(
        local.clone(),
        https,
        https_tls,
        shutdown.clone(),
    ));
    let r = tokio::spawn(hub::housekeeping(local, shutdown));
    let _ = tokio::join!(m, h, r);
    Ok(())
}
