//! The gateway's local endpoints with a replaceable server certificate: when one is set
//! ([`Gateway::use_server_cert`]) the local hub's MQTT and HTTPS listeners take their certificate
//! from it at every handshake, so a renewal reaches new connections without dropping open ones.
//! Without one, the local hub serves the files named in `edge.toml`. The local hub's HTTPS API
//! is served only on the address `local_api_listen` names (none by default).

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::{EdgeError, Gateway};

impl Gateway {
    /// Serves children with `cert` (instead of the `tls_cert`/`tls_key` files) from the next
    /// [`Gateway::run`] on. Returns false when one was set already (the first one stays).
    pub fn use_server_cert(&self, cert: Arc<ferrohub_runtime::tls::ReloadableCert>) -> bool {
        self.server_cert.set(cert).is_ok()
    }

    /// The replaceable server certificate, when one is in use.
    pub fn server_cert(&self) -> Option<Arc<ferrohub_runtime::tls::ReloadableCert>> {
        self.server_cert.get().cloned()
    }
}

/// The local hub on `mqtt` (children) and, when `local_api_listen` is set, its HTTPS API on
/// `api`, until `shutdown`.
pub(crate) async fn serve_local(
    g: Arc<Gateway>,
    mqtt: TcpListener,
    api: Option<TcpListener>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), EdgeError> {
    let local = g.local.clone();
    const HTTPS: &[&[u8]] = &[b"h2", b"http/1.1"];
    let (mqtt_tls, api_tls) = match g.server_cert() {
        Some(cert) => (
            ferrohub_runtime::tls::device_server_config_reloadable(cert.clone(), &[])?,
            ferrohub_runtime::tls::device_server_config_reloadable(cert, HTTPS)?,
        ),
        None => {
            let (cert, key) = (&local.config.tls.cert, &local.config.tls.key);
            (
                ferrohub_runtime::tls::device_server_config(cert, key, &[])?,
                ferrohub_runtime::tls::device_server_config(cert, key, HTTPS)?,
            )
        }
    };
    let mismatches = g.stats.sni_mismatches.clone();
    let mqtt_tls = crate::sni::checked(mqtt_tls, mismatches.clone());
    let api_tls = crate::sni::checked(api_tls, mismatches);
    drop(g);
    info!(mqtt = ?mqtt.local_addr().ok(), local_api = ?api.as_ref().and_then(|l| l.local_addr().ok()),
          "Gateway serving children");
    let m = tokio::spawn(hub::mqtt::serve(
        local.clone(),
        mqtt,
        mqtt_tls,
        shutdown.clone(),
    ));
    let h = api.map(|api| {
        tokio::spawn(hub::api::serve(
            local.clone(),
            api,
            api_tls,
            shutdown.clone(),
        ))
    });
    let r = tokio::spawn(hub::housekeeping(local, shutdown));
    let _ = tokio::join!(m, r);
    if let Some(h) = h {
        let _ = h.await;
    }
    Ok(())
}
