//! The Debian `mosquitto` broker as the named peer of the side-by-side scenarios: its version, the
//! configuration "like ferrohub" (TLS, client certificates required and used as the identity,
//! persistence on, TCP_NODELAY) and the process itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::process::ServerProcess;

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

/// As root, mosquitto would switch to the `mosquitto` user, which cannot read the bench's files.
pub fn user_line() -> Result<&'static str> {
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self")?);
    Ok(if uid == 0 { "user root\n" } else { "" })
}

/// Settings every bench broker shares. Durability: mosquitto keeps messages in memory and writes
/// its whole database to `mosquitto.db` every `autosave_interval` seconds (and at a clean exit);
/// it acknowledges a QoS 1 PUBLISH before that. ferrohub acknowledges after fdatasync.
/// Without `set_tcp_nodelay` Nagle plus delayed ACK adds ~40 ms per TLS flight.
pub const COMMON: &str = "\
per_listener_settings false
persistence true
autosave_interval 1
autosave_on_changes false
set_tcp_nodelay true
max_queued_messages 0
max_queued_bytes 0
log_dest stderr
log_type error
log_type warning
log_type notice
";

/// TLS files a broker serves with.
pub struct TlsFiles {
    /// The CA that issued the device certificates (and the server certificate).
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// mosquitto configured like the hub's device endpoint: MQTT over TLS on `port`, a client
/// certificate required and chained to `tls.ca`, its CN used as the username, anonymous clients
/// refused, persistence on, no limit on QoS 1 messages in flight to a subscriber, and optionally a
/// plain listener on `plain_port` (for the idle scenario's without-TLS figure).
pub fn mtls_config(
    dir: &Path,
    port: u16,
    tls: &TlsFiles,
    plain_port: Option<u16>,
) -> Result<PathBuf> {
    let db = dir.join("mosquitto-db");
    std::fs::create_dir_all(&db)?;
    let mut conf = format!(
        "{}{COMMON}allow_anonymous false\nmax_inflight_messages 0\npersistence_location {}/\n\
         listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
         require_certificate true\nuse_identity_as_username true\n",
        user_line()?,
        db.display(),
        tls.ca.display(),
        tls.cert.display(),
        tls.key.display(),
    );
    if let Some(p) = plain_port {
        // Plain TCP has no certificate to take a username from.
        conf = conf.replace("allow_anonymous false", "allow_anonymous true");
        conf.push_str(&format!("listener {p} 127.0.0.1\n"));
    }
    let path = dir.join("mosquitto.conf");
    std::fs::write(&path, conf)?;
    Ok(path)
}

/// A mosquitto process for `conf`, logging to `log`, listening on `port`.
pub fn process(bin: &Path, conf: &Path, log: PathBuf, port: u16) -> ServerProcess {
    ServerProcess::new(
        bin,
        vec!["-c".into(), conf.display().to_string()],
        log,
        port,
    )
}

/// The mosquitto binary: `--mosquitto` if given, else on PATH or /usr/sbin.
pub fn find(bin: &Path) -> PathBuf {
    if bin.components().count() > 1 {
        return bin.to_owned();
    }
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|c| c.is_file())
    });
    on_path.unwrap_or_else(|| Path::new("/usr/sbin").join(bin))
}
