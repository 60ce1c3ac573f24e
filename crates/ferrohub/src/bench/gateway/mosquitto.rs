//! The mosquitto side of `ferrohub bench gateway`: two mosquitto processes on loopback, an "edge"
//! broker that bridges `devices/#` at QoS 1 over TLS to a "hub" broker, both with persistence on,
//! and a QoS 1 subscriber with a persistent session (clean session off) on the hub broker that
//! checks off arrivals. Children use the same client as against ferrohub; mosquitto runs with
//! `allow_anonymous true` (TLS server authentication only; the SAS password is not checked).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use mqtt_codec::{Connect, ConnectReturnCode, Packet, QoS, SubAckReturnCode, Subscribe};
use pki::{CertRequest, KeyAlgorithm, PrivateKey, Profile};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{Arrivals, Chain, HOST, child_index, lock};
use crate::clock;

/// `mosquitto -h`'s first line, e.g. `mosquitto version 2.0.11`.
pub fn version(bin: &Path) -> Result<String> {
    let out = Command::new(bin).arg("-h").output().with_context(|| {
        format!(
            "cannot run {} (install it: apt-get install mosquitto, or use --peer none)",
            bin.display()
        )
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next().unwrap_or_default().trim().to_owned();
    if !line.starts_with("mosquitto") {
        bail!("{} -h did not say which mosquitto it is", bin.display());
    }
    Ok(line)
}

/// Settings both brokers share. Durability: mosquitto keeps messages in memory and writes its
/// whole database to `mosquitto.db` every `autosave_interval` seconds (and at a clean exit); it
/// acknowledges a QoS 1 PUBLISH before that. ferrohub acknowledges after fdatasync.
const COMMON: &str = "\
per_listener_settings false
allow_anonymous true
persistence true
autosave_interval 1
autosave_on_changes false
set_tcp_nodelay true
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 64
log_dest stderr
log_type error
log_type warning
log_type notice
";

/// One mosquitto process and its configuration.
struct Broker {
    bin: PathBuf,
    conf: PathBuf,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    async fn start(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        let child = self.child.insert(child);
        let deadline = clock::instant() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                bail!(
                    "mosquitto -c {} exited ({status}):\n{log}",
                    self.conf.display()
                );
            }
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return Ok(());
            }
            if clock::instant() >= deadline {
                bail!("mosquitto did not listen on port {} within 10 s", self.port);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM (mosquitto saves its database on the way out), then waits for the exit.
    async fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = clock::instant() + Duration::from_secs(15);
        while child.try_wait()?.is_none() {
            if clock::instant() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("mosquitto did not stop within 15 s of SIGTERM; killed it");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
struct SubStats {
    connects: u32,
    /// Reconnects where the hub broker had lost the subscriber's session (its messages are gone).
    session_lost: u32,
}

pub struct Mosquitto {
    edge: Broker,
    hub: Broker,
    roots: Arc<rustls::RootCertStore>,
    sub_stop: watch::Sender<bool>,
    sub_task: tokio::task::JoinHandle<SubStats>,
    dir: tempfile::TempDir,
}

/// A free loopback port (the OS picks it; mosquitto binds it right after).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Writes the two configurations; returns their paths (edge, hub).
fn write_configs(dir: &Path, edge_port: u16, hub_port: u16) -> Result<(PathBuf, PathBuf)> {
    let p = |n: &str| dir.join(n).display().to_string();
    // As root, mosquitto would switch to the `mosquitto` user, which cannot read these files.
    let user = if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self")?) == 0 {
        "user root\n"
    } else {
        ""
    };
    let listener = |port: u16, db: &str| -> Result<String> {
        std::fs::create_dir_all(dir.join(db))?;
        Ok(format!(
            "{user}{COMMON}persistence_location {}/\nlistener {port} 127.0.0.1\n\
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
        super::ferrohub::server_cert(dir.path(), &ca, &ca_key, "broker")?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.to_rustls())?;
        let roots = Arc::new(roots);
        let (edge_port, hub_port) = (free_port()?, free_port()?);
        let (edge_conf, hub_conf) = write_configs(dir.path(), edge_port, hub_port)?;
        let broker = |conf: PathBuf, log: &str, port| Broker {
            bin: bin.to_owned(),
            conf,
            log: dir.path().join(log),
            port,
            child: None,
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
        let conf = std::fs::read_to_string(&self.edge.conf).unwrap_or_default();
        let _ = &self.dir;
        Ok(serde_json::json!({
            "subscriber": stats,
            "edge_config": conf,
            "edge_log_tail": tail(&self.edge.log),
            "hub_log_tail": tail(&self.hub.log),
        }))
    }
}

/// The last 20 lines of a broker's log.
fn tail(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(20);
    lines[from..].iter().map(|l| (*l).to_owned()).collect()
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
    let mut s = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(ServerName::try_from(HOST)?, tcp)
        .await?;
    let mut out = Vec::with_capacity(64 * 1024);
    mqtt_codec::encode(
        &Packet::Connect(Connect {
            protocol_name: "MQTT".into(),
            protocol_level: 4,
            clean_session: false,
            keep_alive: 60,
            client_id: "bench-hub-subscriber".into(),
            will: None,
            username: None,
            password: None,
        }),
        &mut out,
    )?;
    s.write_all(&out).await?;
    let mut buf = Vec::with_capacity(64 * 1024);
    let present = match crate::device_client::read_packet(&mut s, &mut buf).await? {
        Packet::ConnAck(a) if a.code == ConnectReturnCode::Accepted => a.session_present,
        other => bail!("the hub broker refused the subscriber: {other:?}"),
    };
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
            n = s.read_buf(&mut buf) => if n? == 0 { bail!("the hub broker closed the connection") },
            _ = stop.changed() => return Ok(()),
        }
        out.clear();
        take_packets(&mut buf, &mut out, arrivals, ready)?;
        if !out.is_empty() {
            s.write_all(&out).await?;
        }
    }
}

/// Decodes every complete packet in `buf`: checks off PUBLISHes and queues their PUBACKs in `out`.
fn take_packets(
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    arrivals: &Arrivals,
    ready: &watch::Sender<bool>,
) -> Result<()> {
    let at = clock::instant();
    let mut consumed = 0;
    let mut t = lock(arrivals);
    while let Some((p, n)) = mqtt_codec::decode(&buf[consumed..], 1 << 20)? {
        consumed += n;
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
    buf.drain(..consumed);
    Ok(())
}
