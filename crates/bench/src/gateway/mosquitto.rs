//! The mosquitto side of `ferrohub bench gateway`: two mosquitto processes on loopback, an "edge"
//! broker that bridges `devices/#` at QoS 1 over TLS to a "hub" broker, both with persistence on,
//! and a QoS 1 subscriber with a persistent session (clean session off) on the hub broker that
//! checks off arrivals. Children use the same client as against ferrohub; mosquitto runs with
//! `allow_anonymous true` (TLS server authentication only; the SAS password is not checked).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use mqtt_codec::{ConnectReturnCode, Packet, PacketReader, QoS, SubAckReturnCode, Subscribe};
use pki::{CertRequest, KeyAlgorithm, PrivateKey, Profile};
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{Arrivals, Chain, HOST, child_index, lock};
use crate::clock;
use crate::mosquitto::{COMMON, user_line};
use crate::process::{ServerProcess, free_port, tail};

/// What the gateway's two brokers add to [`COMMON`]: children connect with TLS server
/// authentication only, and the bridge keeps the gateway's upstream batch size in flight.
const GATEWAY: &str = "allow_anonymous true\nmax_inflight_messages 64\n";

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
struct SubStats {
    connects: u32,
    /// Reconnects where the hub broker had lost the subscriber's session (its messages are gone).
    session_lost: u32,
}

pub struct Mosquitto {
    edge: ServerProcess,
    hub: ServerProcess,
    roots: Arc<rustls::RootCertStore>,
    sub_stop: watch::Sender<bool>,
    sub_task: tokio::task::JoinHandle<SubStats>,
    dir: tempfile::TempDir,
}

/// Writes the two configurations; returns their paths (edge, hub).
fn write_configs(dir: &Path, edge_port: u16, hub_port: u16) -> Result<(PathBuf, PathBuf)> {
    let p = |n: &str| dir.join(n).display().to_string();
    let user = user_line()?;
    let listener = |port: u16, db: &str| -> Result<String> {
        std::fs::create_dir_all(dir.join(db))?;
        Ok(format!(
            "{user}{COMMON}{GATEWAY}persistence_location {}/\nlistener {port} 127.0.0.1\n\
             cafile {}\ncertfile {}\nkeyfile {}\n",
            p(db),
            p("ca.pem"),
            p("broker.pem"),
            p("broker.key")
        ))
    };
    let hub = listener(hub_port, "hub-db")?;
    let mut edge = listener(edge_port, "edge-db")?;
    // The bridge: QoS 1 out, TLS with the hub broker's certificate checked against the CA (and
    // its 127.0.0.1 address), a persistent session, reconnect after 1 s as ferrohub's forwarder
    // does (`restart_timeout 1` alone keeps 2.0.11's 5-30 s jitter; base 1 with cap 1 does not).
    write!(
        edge,
        "connection hub\naddress 127.0.0.1:{hub_port}\ntopic devices/# out 1\n\
         bridge_protocol_version mqttv311\nbridge_cafile {}\ncleansession false\n\
         clientid bench-edge-bridge\nrestart_timeout 1 1\n",
        p("ca.pem")
    )?;
    let (edge_conf, hub_conf) = (dir.join("edge.conf"), dir.join("hub.conf"));
    std::fs::write(&edge_conf, edge)?;
    std::fs::write(&hub_conf, hub)?;
    Ok((edge_conf, hub_conf))
}

impl Mosquitto {
    pub async fn start(bin: &Path, arrivals: Arrivals) -> Result<Self> {
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let ca_key = PrivateKey::generate(KeyAlgorithm::P256)?;
        let start = clock::now() - time::Duration::days(1);
        let ca = pki::issue(
            &CertRequest::new(Profile::RootCa, "Bench mosquitto CA", start),
            &ca_key,
            None,
        )?;
        std::fs::write(dir.path().join("ca.pem"), ca.to_pem())?;
        crate::server_cert(dir.path(), &ca, &ca_key, "broker")?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.to_rustls())?;
        let roots = Arc::new(roots);
        let (edge_port, hub_port) = (free_port()?, free_port()?);
        let (edge_conf, hub_conf) = write_configs(dir.path(), edge_port, hub_port)?;
        let broker = |conf: PathBuf, log: &str, port| {
            crate::mosquitto::process(bin, &conf, dir.path().join(log), port)
        };
        let mut hub = broker(hub_conf, "hub.log", hub_port);
        let mut edge = broker(edge_conf, "edge.log", edge_port);
        hub.start().await?;
        edge.start().await?;
        let (sub_stop, stop_rx) = watch::channel(false);
        let (ready_tx, mut ready) = watch::channel(false);
        let addr = SocketAddr::from(([127, 0, 0, 1], hub_port));
        let sub_task = tokio::spawn(subscriber(addr, roots.clone(), arrivals, ready_tx, stop_rx));
        tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r))
            .await
            .context("the subscriber could not subscribe at the hub broker within 10 s")??;
        Ok(Self {
            edge,
            hub,
            roots,
            sub_stop,
            sub_task,
            dir,
        })
    }
}

impl Chain for Mosquitto {
    fn edge(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.edge.port))
    }

    fn roots(&self) -> Arc<rustls::RootCertStore> {
        self.roots.clone()
    }

    fn password(&self, _i: usize) -> String {
        "not-checked".into()
    }

    async fn stop_upstream(&mut self) -> Result<()> {
        self.hub.stop().await
    }

    async fn start_upstream(&mut self) -> Result<()> {
        self.hub.start().await
    }

    async fn finish(mut self) -> Result<serde_json::Value> {
        let _ = self.sub_stop.send(true);
        let stats = tokio::time::timeout(Duration::from_secs(10), &mut self.sub_task)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        self.edge.stop().await?;
        self.hub.stop().await?;
        let conf = std::fs::read_to_string(self.dir.path().join("edge.conf")).unwrap_or_default();
        Ok(serde_json::json!({
            "subscriber": stats,
            "edge_config": conf,
            "edge_log_tail": tail(&self.edge.log, 20),
            "hub_log_tail": tail(&self.hub.log, 20),
        }))
    }
}

/// The hub broker's QoS 1 subscriber: reconnects (clean session off) until `stop`, checks off
/// every PUBLISH, acknowledges it, and counts reconnects that found no stored session.
async fn subscriber(
    addr: SocketAddr,
    roots: Arc<rustls::RootCertStore>,
    arrivals: Arrivals,
    ready: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) -> SubStats {
    let tls = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let mut stats = SubStats::default();
    while !*stop.borrow() {
        let r = session(addr, &tls, &arrivals, &mut stats, &ready, &mut stop).await;
        if r.is_err() && !*stop.borrow() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    stats
}

async fn session(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    arrivals: &Arrivals,
    stats: &mut SubStats,
    ready: &watch::Sender<bool>,
    stop: &mut watch::Receiver<bool>,
) -> Result<()> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let s = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(ServerName::try_from(HOST)?, tcp)
        .await?;
    let mut out = Vec::with_capacity(64 * 1024);
    let reader = crate::mqtt::packet_reader(64 * 1024);
    let mut client = mqtt_client::Client::with_reader(s, reader);
    let login = mqtt_client::Login::new("bench-hub-subscriber").clean_session(false);
    let present = match client.login(&login).await? {
        a if a.code == ConnectReturnCode::Accepted => a.session_present,
        other => bail!("the hub broker refused the subscriber: {other:?}"),
    };
    // A kept session: what the broker queued may follow the CONNACK, in the reader already.
    let (mut s, mut reader) = client.into_parts();
    if stats.connects > 0 && !present {
        stats.session_lost += 1;
    }
    stats.connects += 1;
    if !present {
        out.clear();
        mqtt_codec::encode(
            &Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters: vec![("devices/#".into(), QoS::AtLeastOnce)],
            }),
            &mut out,
        )?;
        s.write_all(&out).await?;
    } else {
        ready.send_replace(true);
    }
    loop {
        tokio::select! {
            more = reader.fill(&mut s) => if !more? { bail!("the hub broker closed the connection") },
            _ = stop.changed() => return Ok(()),
        }
        out.clear();
        take_packets(&mut reader, &mut out, arrivals, ready)?;
        if !out.is_empty() {
            s.write_all(&out).await?;
        }
    }
}

/// Decodes every complete packet read so far: checks off PUBLISHes and queues their PUBACKs in
/// `out`.
fn take_packets(
    reader: &mut PacketReader,
    out: &mut Vec<u8>,
    arrivals: &Arrivals,
    ready: &watch::Sender<bool>,
) -> Result<()> {
    let at = clock::instant();
    let mut t = lock(arrivals);
    while let Some(p) = reader.try_next()? {
        match p {
            Packet::Publish(p) => {
                let child = p
                    .topic
                    .strip_prefix("devices/")
                    .and_then(|t| t.split('/').next())
                    .and_then(child_index);
                t.record(child, &p.payload, at);
                if let Some(id) = p.packet_id {
                    mqtt_codec::encode(&Packet::PubAck(id), out)?;
                }
            }
            Packet::SubAck(a) => {
                if a.return_codes != [SubAckReturnCode::Success(QoS::AtLeastOnce)] {
                    bail!("the hub broker did not grant QoS 1: {a:?}");
                }
                ready.send_replace(true);
            }
            _ => {}
        }
    }
    Ok(())
}
