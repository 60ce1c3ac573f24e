//! An in-process hub on ephemeral loopback ports, a minimal MQTT client over TLS, and the
//! certificates, devices and tokens the hub's tests present to it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferrohub_runtime::config::{Listen, Tls};
use ferrohub_runtime::etag::IfMatch;
use ferrohub_runtime::time::{FixedClock, SharedClock};
use hub::config::{AuthSettings, HubConfig, Limits, Policy, Right, Storage};
use hub::{Hub, Listeners};
use hub_wire::model::{AuthType, Authentication, Device, X509Thumbprint};
use mqtt_codec::Packet;
use pki::{CertRequest, Certificate, KeyAlgorithm, PrivateKey, Profile, Signer};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

pub const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
pub const HOST: &str = "localhost";

/// The hub's fixed test clock: 2027-01-15.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

/// 2020-01-01, the start of every test server certificate's validity.
pub fn start_2020() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_577_836_800).unwrap()
}

pub struct TestHub {
    pub hub: Arc<Hub>,
    pub mqtt: SocketAddr,
    pub https: SocketAddr,
    /// AMQP over TLS.
    pub amqp: SocketAddr,
    pub root: PathBuf,
    pub dir: tempfile::TempDir,
    pub clock: Arc<FixedClock>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Writes a CA and a server certificate for localhost / 127.0.0.1 into `dir`.
pub fn server_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    // Valid from 2020 for decades: TLS clients check it against real time, the hub's auth checks
    // run on the fixed test clock.
    let start = start_2020();
    let mut ca_req = CertRequest::new(Profile::RootCa, "Test Hub CA", start);
    ca_req.days = 20_000;
    let ca = pki::issue(&ca_req, &ca_key, None).unwrap();
    let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    let mut req = CertRequest::new(Profile::Server, HOST, start);
    req.days = 20_000;
    // hub1/hub2: names of extra hubs in the provisioning service's tests.
    req.subject_alt_names = vec![
        HOST.into(),
        "127.0.0.1".into(),
        "hub1".into(),
        "hub2".into(),
    ];
    let cert = pki::issue(
        &req,
        &key,
        Some(Signer {
            cert: &ca,
            key: &ca_key,
        }),
    )
    .unwrap();
    let (root, chain, key_path) = (
        dir.join("root.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&root, ca.to_pem()).unwrap();
    std::fs::write(&chain, cert.to_pem() + &ca.to_pem()).unwrap();
    std::fs::write(&key_path, key.to_pem()).unwrap();
    (root, chain, key_path)
}

pub fn config(dir: &Path, cert: PathBuf, key: PathBuf, root: PathBuf) -> HubConfig {
    HubConfig {
        hostname: HOST.into(),
        hostname_aliases: Vec::new(),
        listen: Listen::default(),
        tls: Tls {
            cert,
            key,
            ca: Some(root),
        },
        storage: Storage {
            registry: dir.join("registry.sqlite"),
            events: dir.join("events"),
            fsync: true,
            retention_hours: None,
            retention_mib: None,
        },
        auth: AuthSettings::default(),
        limits: Limits {
            max_packet_bytes: 64 * 1024,
            ..Limits::default()
        },
        policies: vec![Policy {
            name: "iothubowner".into(),
            primary_key: KEY.into(),
            secondary_key: KEY.into(),
            rights: vec![
                Right::RegistryRead,
                Right::RegistryWrite,
                Right::ServiceConnect,
                Right::DeviceConnect,
            ],
        }],
    }
}

impl TestHub {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut HubConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (root, cert, key) = server_pki(dir.path());
        let mut cfg = config(dir.path(), cert, key, root.clone());
        tweak(&mut cfg);
        Self::start_in(dir, cfg, root).await
    }

    pub async fn start_in(dir: tempfile::TempDir, cfg: HubConfig, root: PathBuf) -> Self {
        let clock = Arc::new(FixedClock(std::sync::Mutex::new(now())));
        let shared: SharedClock = clock.clone();
        let hub = Hub::open(cfg, shared).unwrap();
        let mqtt = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let https = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let amqp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (mqtt_addr, https_addr) = (mqtt.local_addr().unwrap(), https.local_addr().unwrap());
        let amqp_addr = amqp.local_addr().unwrap();
        let (stop, rx) = tokio::sync::watch::channel(false);
        let h = hub.clone();
        let task = tokio::spawn(async move {
            let amqp = Some(amqp);
            hub::run(h, Listeners { mqtt, https, amqp }, rx)
                .await
                .unwrap();
        });
        Self {
            hub,
            mqtt: mqtt_addr,
            https: https_addr,
            amqp: amqp_addr,
            root,
            dir,
            clock,
            stop,
            task,
        }
    }

    /// Stops the hub and returns its directory and config, for a restart.
    pub async fn stop(self) -> (tempfile::TempDir, HubConfig, PathBuf) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let cfg = self.hub.config.clone();
        drop(self.hub);
        (self.dir, cfg, self.root)
    }

    /// Moves the hub's clock.
    pub fn set_time(&self, t: OffsetDateTime) {
        *self.clock.0.lock().unwrap() = t;
    }

    pub fn client(&self) -> ferrohub_runtime::client::ServiceClient {
        let tls = ferrohub_runtime::tls::client_config(&self.root).unwrap();
        let key = base64_decode(KEY);
        ferrohub_runtime::client::ServiceClient::new(
            self.https.to_string(),
            self.hub.config.hostname.clone(),
            "iothubowner".into(),
            key,
            tls,
        )
        .with_token_time(u64::try_from(now().unix_timestamp()).unwrap())
    }
}

pub fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// A device certificate chain and key to present at the TLS handshake.
pub struct ClientCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl ClientCert {
    pub fn new(certs: &[&Certificate], key: &PrivateKey) -> Self {
        Self {
            chain: certs.iter().map(|c| c.to_rustls()).collect(),
            key: PrivateKeyDer::from_pem_slice(key.to_pem().as_bytes()).unwrap(),
        }
    }
}

/// A TLS connection to `addr` trusting the PEM roots in `root`, as `localhost`, presenting
/// `cert` if given.
pub async fn tls_stream(
    addr: SocketAddr,
    root: &Path,
    cert: Option<ClientCert>,
) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(root).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let cfg = match cert {
        Some(c) => builder.with_client_auth_cert(c.chain, c.key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .unwrap()
}

/// The tests' MQTT client: the shared `mqtt_client::Client` over TLS, with answers shaped for
/// assertions (a closed connection is `None`, a refusal is a return code, not an error).
pub struct Mqtt {
    client: mqtt_client::Client<TlsStream<TcpStream>>,
}

impl Mqtt {
    pub async fn tls(hub: &TestHub, cert: Option<ClientCert>) -> Self {
        Self::tls_to(hub.mqtt, &hub.root, cert).await
    }

    /// TLS to `addr` trusting the PEM roots in `root`, as `localhost`.
    pub async fn tls_to(addr: SocketAddr, root: &Path, cert: Option<ClientCert>) -> Self {
        Self {
            client: mqtt_client::Client::new(tls_stream(addr, root, cert).await),
        }
    }

    /// The TLS stream, to inspect the session.
    pub fn stream(&self) -> &TlsStream<TcpStream> {
        self.client.get_ref()
    }

    /// The TLS stream, to write and read bytes that are not packets.
    pub fn stream_mut(&mut self) -> &mut TlsStream<TcpStream> {
        self.client.get_mut()
    }

    pub async fn send(&mut self, p: &Packet) {
        self.client.send(p).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let stream = self.stream_mut();
        stream.write_all(bytes).await.unwrap();
        stream.flush().await.unwrap();
    }

    /// The next packet, or None when the hub closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), self.client.recv());
        match read.await.unwrap() {
            Ok(p) => Some(p),
            Err(mqtt_client::ClientError::Read(mqtt_codec::ReadError::Decode(e))) => {
                panic!("malformed packet from the hub: {e}")
            }
            Err(_) => None,
        }
    }

    /// CONNECT as `client_id` with the standard username and `password`; returns the CONNACK code.
    pub async fn connect(
        &mut self,
        client_id: &str,
        password: Option<String>,
        clean: bool,
    ) -> (bool, mqtt_codec::ConnectReturnCode) {
        let username = format!("{HOST}/{client_id}/?api-version=2021-04-12&DeviceClientType=test");
        self.connect_as(client_id, &username, password, clean).await
    }

    /// CONNECT with any username; returns the CONNACK code.
    pub async fn connect_as(
        &mut self,
        client_id: &str,
        username: &str,
        password: Option<String>,
        clean: bool,
    ) -> (bool, mqtt_codec::ConnectReturnCode) {
        let mut login = mqtt_client::Login::new(client_id)
            .username(username)
            .clean_session(clean);
        if let Some(p) = password {
            login = login.password(p);
        }
        match self.client.login(&login).await {
            Ok(a) => (a.session_present, a.code),
            Err(e) => panic!("expected CONNACK, got {e}"),
        }
    }
}

/// Registers device `id` with SAS ([`KEY`] as its primary key) and `status`.
pub fn sas_device(t: &TestHub, id: &str, status: hub_wire::model::Status) {
    use hub_wire::model::{Authentication, Device};
    let d = Device {
        device_id: id.into(),
        status,
        authentication: Authentication::sas(Some(KEY.into()), None),
        ..Default::default()
    };
    t.hub.registry.put_device(id, d, &IfMatch::Absent).unwrap();
}

/// CONNECT for `client_id` with the standard username, a clean session and `password`.
/// (The [`login`]'s own packet, for tests that alter it or pipeline packets behind it.)
pub fn connect_packet(client_id: &str, password: Option<String>) -> Packet {
    login(client_id, password).packet()
}

/// The login of `client_id` with the standard username, a clean session and `password`.
pub fn login(client_id: &str, password: Option<String>) -> mqtt_client::Login {
    mqtt_client::Login {
        password: password.map(String::into_bytes),
        ..mqtt_client::Login::new(client_id)
            .username(format!("{HOST}/{client_id}/?api-version=2021-04-12"))
    }
}

/// A QoS 1 PUBLISH of `body` on `topic`.
pub fn publish(topic: &str, packet_id: u16, body: &[u8]) -> Packet {
    Packet::Publish(mqtt_codec::Publish {
        dup: false,
        qos: mqtt_codec::QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        packet_id: Some(packet_id),
        payload: body.to_vec(),
    })
}

/// A device SAS token for `device` (or `device/modules/module`) signed with `key`.
pub fn device_token(resource: &str, key: &str, expiry: u64) -> String {
    iot_auth::sas::generate_sas_token(
        &format!("{HOST}/devices/{resource}"),
        &base64_decode(key),
        None,
        expiry,
    )
}

pub fn expiry() -> u64 {
    u64::try_from(now().unix_timestamp()).unwrap() + 3600
}

/// A tmpfs mounted for the test's lifetime (lazily unmounted on drop).
pub struct SmallDisk(pub PathBuf);

impl SmallDisk {
    pub fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Self(dir.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Fills the disk with a `filler` file until a write fails for lack of space.
    pub fn fill(&self, filler: &Path) {
        use std::io::Write as _;
        let mut f = std::fs::File::create(filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {}: {e}", filler.display()),
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Registers an X.509 device `id` of `kind` with `thumbs` (none for certificateAuthority).
pub fn x509_device(t: &TestHub, id: &str, kind: AuthType, thumbs: Vec<String>) {
    let d = Device {
        device_id: id.into(),
        authentication: Authentication {
            kind: Some(kind),
            symmetric_key: None,
            x509_thumbprint: Some(X509Thumbprint {
                primary_thumbprint: thumbs.first().cloned(),
                secondary_thumbprint: thumbs.get(1).cloned(),
            }),
        },
        ..Default::default()
    };
    t.hub.registry.put_device(id, d, &IfMatch::Absent).unwrap();
}

/// Every telemetry record the hub has stored, oldest first.
pub fn stored(t: &TestHub) -> Vec<hub::events::EventRecord> {
    t.hub
        .events
        .read(0, 10_000, 64 << 20)
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.payload).unwrap())
        .collect()
}

/// How often authentication failed for `reason` (`ferrohub_auth_failures_total`).
pub fn reason_count(t: &TestHub, reason: &str) -> u64 {
    t.hub
        .metrics
        .auth_failures
        .lock()
        .unwrap()
        .get(reason)
        .copied()
        .unwrap_or(0)
}

/// A device CA (a root) issuing device client certificates.
pub struct Pki {
    pub root: Certificate,
    pub root_key: PrivateKey,
}

impl Pki {
    pub fn new(cn: &str) -> Self {
        let root_key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
        let root = pki::issue(
            &CertRequest::new(Profile::RootCa, cn, now() - time::Duration::days(10)),
            &root_key,
            None,
        )
        .unwrap();
        Self { root, root_key }
    }

    /// A certificate for `cn` valid `days` from `not_before`, presented with the root.
    pub fn device(&self, cn: &str, not_before: OffsetDateTime, days: u32) -> ClientCert {
        let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
        let mut req = CertRequest::new(Profile::DeviceClient, cn, not_before);
        req.days = days;
        let cert = pki::issue(
            &req,
            &key,
            Some(Signer {
                cert: &self.root,
                key: &self.root_key,
            }),
        )
        .unwrap();
        ClientCert::new(&[&cert, &self.root], &key)
    }

    /// A certificate for `cn` valid now.
    pub fn valid(&self, cn: &str) -> ClientCert {
        self.device(cn, now() - time::Duration::days(1), 30)
    }
}
